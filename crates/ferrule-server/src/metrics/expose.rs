//! `/metrics` in the Prometheus text format 0.0.4, from a scrape's [`Totals`].
//! Series of `ferrule_requests_total` and `ferrule_rejected_requests_total` appear
//! once they count something (9,000 zero series would help no one).

use super::registry::{Totals, REASONS};
use super::slot::{
    BLOCKED, BOUNDS, DURATION, HIST, IDLE, METHODS, N_METHODS, N_STATUS, OPEN, QUEUE, RECEIVED,
    REJECTED, REQUESTS, RUNNING, SENT,
};
use std::fmt::Write;

/// One egress counter, summed over every worker (`egress_table.rs`): connection
/// attempts to a destination with the policy's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressCount {
    pub proto: &'static str,
    /// `host:port` when the app resolved a name, else `addr:port`, or `other`.
    pub destination: String,
    pub verdict: &'static str,
    pub count: u64,
}

/// A label value with `\`, `"` and line ends escaped (the text format's rule).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes `ferrule_egress_attempts_total{proto,destination,verdict}` (nothing while
/// egress counted nothing).
pub fn egress_counters(out: &mut String, counts: &[EgressCount]) {
    if counts.is_empty() {
        return;
    }
    header(
        out,
        "ferrule_egress_attempts_total",
        "counter",
        "Outgoing connection attempts by destination and verdict.",
    );
    for c in counts {
        let _ = writeln!(
            out,
            "ferrule_egress_attempts_total{{proto=\"{}\",destination=\"{}\",verdict=\"{}\"}} {}",
            c.proto,
            label(&c.destination),
            c.verdict,
            c.count
        );
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, help: &str, words: &[u64]) {
    header(out, name, "histogram", help);
    let mut cumulative = 0u64;
    for (i, bound) in BOUNDS.iter().enumerate() {
        cumulative += words[i];
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    cumulative += words[BOUNDS.len()];
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let sum = words[BOUNDS.len() + 1] as f64 / 1e9;
    let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
}

fn gauge(out: &mut String, name: &str, help: &str, series: &[(&str, u64)]) {
    header(out, name, "gauge", help);
    for (labels, v) in series {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

pub fn render(t: &Totals) -> String {
    let w = &t.words;
    let mut out = String::with_capacity(8 * 1024);
    header(
        &mut out,
        "ferrule_requests_total",
        "counter",
        "Requests the app answered, by method (others: OTHER) and status.",
    );
    for m in 0..N_METHODS {
        let method = METHODS.get(m).copied().unwrap_or("OTHER");
        for s in 0..N_STATUS {
            let n = w[REQUESTS + m * N_STATUS + s];
            if n > 0 {
                let status = s + 100;
                let _ = writeln!(
                    out,
                    "ferrule_requests_total{{method=\"{method}\",status=\"{status}\"}} {n}"
                );
            }
        }
    }
    histogram(
        &mut out,
        "ferrule_request_duration_seconds",
        "From the request's start (its event taken, or its head parsed when pipelined) to its end.",
        &w[DURATION..DURATION + HIST],
    );
    histogram(
        &mut out,
        "ferrule_request_queue_seconds",
        "Waiting for a thread: from the request's bytes reaching the kernel (unix sockets: its event taken from epoll) to the app's call.",
        &w[QUEUE..QUEUE + HIST],
    );
    let (running, blocked) = (w[RUNNING], w[BLOCKED]);
    gauge(
        &mut out,
        "ferrule_requests_in_flight",
        "Requests inside the app (sampled every second per worker).",
        &[("", running + blocked)],
    );
    gauge(
        &mut out,
        "ferrule_app_threads",
        "Threads inside a request: runnable, or waiting (I/O, lock, sleep).",
        &[
            ("{state=\"running\"}", running),
            ("{state=\"blocked\"}", blocked),
        ],
    );
    gauge(
        &mut out,
        "ferrule_connections",
        "Client connections: open, and of those idle between requests.",
        &[("{state=\"open\"}", w[OPEN]), ("{state=\"idle\"}", w[IDLE])],
    );
    gauge(
        &mut out,
        "ferrule_workers",
        "Worker processes alive.",
        &[("", t.workers)],
    );
    header(
        &mut out,
        "ferrule_worker_restarts_total",
        "counter",
        "Workers replaced, by reason.",
    );
    for (reason, n) in REASONS.iter().zip(t.restarts) {
        let _ = writeln!(
            out,
            "ferrule_worker_restarts_total{{reason=\"{reason}\"}} {n}"
        );
    }
    header(
        &mut out,
        "ferrule_rejected_requests_total",
        "counter",
        "Requests answered by the server before the app (400, 408, 413, 431, 503...).",
    );
    for s in 0..N_STATUS {
        let n = w[REJECTED + s];
        if n > 0 {
            let status = s + 100;
            let _ = writeln!(
                out,
                "ferrule_rejected_requests_total{{status=\"{status}\"}} {n}"
            );
        }
    }
    header(
        &mut out,
        "ferrule_bytes_sent_total",
        "counter",
        "Response body bytes sent (as %(B)s).",
    );
    let _ = writeln!(out, "ferrule_bytes_sent_total {}", w[SENT]);
    header(
        &mut out,
        "ferrule_bytes_received_total",
        "counter",
        "Request bytes received: heads, and bodies as decoded.",
    );
    let _ = writeln!(out, "ferrule_bytes_received_total {}", w[RECEIVED]);
    egress_counters(&mut out, &t.egress);
    out
}

#[cfg(test)]
mod tests {
    use super::super::registry::Registry;
    use super::super::slot::Answered;
    use super::*;

    #[test]
    fn renders_counts_and_buckets() {
        let r = Registry::new(1).unwrap();
        let s = r.slot(0).unwrap();
        s.answered(&Answered {
            method: b"BREW",
            status: 418,
            started: std::time::Instant::now(),
            sent: 7,
            received: 30,
        });
        s.timed(1, 3_000_000, 50_000);
        s.rejected(431);
        let text = render(&r.totals());
        assert!(text.contains("ferrule_requests_total{method=\"OTHER\",status=\"418\"} 1\n"));
        assert!(text.contains("ferrule_request_duration_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("ferrule_request_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("ferrule_request_queue_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(text.contains("ferrule_request_duration_seconds_count 1\n"));
        assert!(text.contains("ferrule_rejected_requests_total{status=\"431\"} 1\n"));
        assert!(text.contains("ferrule_bytes_sent_total 7\n"));
        assert!(!text.contains("egress"));
    }

    #[test]
    fn egress_labels_are_escaped() {
        let mut out = String::new();
        egress_counters(
            &mut out,
            &[EgressCount {
                proto: "tcp",
                destination: "db\"x\\:5432".into(),
                verdict: "deny",
                count: 3,
            }],
        );
        assert!(out.ends_with(
            "ferrule_egress_attempts_total{proto=\"tcp\",destination=\"db\\\"x\\\\:5432\",\
             verdict=\"deny\"} 3\n"
        ));
    }
}
