//! statsd's `log.LEVEL` counters, as gunicorn's statsd logger sends them
//! (`instrument/statsd.py`): `log.critical`, `log.error`, `log.warning` and
//! `log.exception`, one per error-log line of that level (a line with an app's
//! traceback counts as `log.exception` only, as gunicorn's `Logger.exception` does).
//!
//! Counted where every line passes (`log.rs`: Rust's lines and Python's, which reach
//! it through `_ferrule.log_message`), as each line is written: lines below
//! `--log-level` are not counted (gunicorn counts the calls, written or not).
//! Sent at once on the process's statsd socket, which never blocks (`statsd.rs`).

use super::statsd::Statsd;
use std::cell::Cell;
use std::sync::OnceLock;

/// The process's statsd client for what is not a request: the master's (`workers`
/// gauge, its log lines), inherited by each worker it forks; or, with no master, the
/// serving process's own.
static STATSD: OnceLock<Statsd> = OnceLock::new();

thread_local! {
    /// This thread sends no `log.*` datagram: the egress supervisor's threads, whose
    /// own socket calls must not be trapped (a unix statsd socket's `sendto` would
    /// be), and a thread already sending one (statsd's drop report is a log line).
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Which counter a line adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogCounter {
    Critical,
    Error,
    Warning,
    Exception,
}

impl LogCounter {
    fn name(self) -> &'static str {
        match self {
            LogCounter::Critical => "log.critical",
            LogCounter::Error => "log.error",
            LogCounter::Warning => "log.warning",
            LogCounter::Exception => "log.exception",
        }
    }
}

/// Makes `statsd` the process's client (the first one set stays: a worker keeps the
/// master's it inherited).
pub fn use_process_statsd(statsd: Statsd) {
    let _ = STATSD.set(statsd);
}

/// The process's statsd client, once set.
pub fn process_statsd() -> Option<&'static Statsd> {
    STATSD.get()
}

/// Whether the process has its statsd client (a serving process without a master
/// opens one for its log lines).
pub fn has_process_statsd() -> bool {
    STATSD.get().is_some()
}

/// This thread's log lines are not counted (see [`QUIET`]).
fn no_log_counts_on_this_thread() {
    QUIET.with(|q| q.set(true));
}

/// Runs `f`, a thread's body, with no log line of the thread counted.
pub fn without_log_counts(f: impl FnOnce()) {
    no_log_counts_on_this_thread();
    f()
}

/// A line of `counter`'s level was written to the error log.
pub fn log_line(counter: LogCounter) {
    let Some(s) = STATSD.get() else { return };
    QUIET.with(|q| {
        if !q.replace(true) {
            s.increment(counter.name());
            q.set(false);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{StatsdSettings, StatsdTarget};
    use std::net::UdpSocket;
    use std::time::Duration;

    #[test]
    fn each_level_is_sent_as_gunicorn_names_it_and_quiet_threads_send_none() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let target = StatsdTarget::Udp(rx.local_addr().unwrap());
        use_process_statsd(Statsd::open(StatsdSettings::new(target, "", "")).unwrap());
        std::thread::spawn(|| {
            no_log_counts_on_this_thread();
            log_line(LogCounter::Error);
        })
        .join()
        .unwrap();
        let mut got = Vec::new();
        for c in [
            LogCounter::Critical,
            LogCounter::Error,
            LogCounter::Warning,
            LogCounter::Exception,
        ] {
            log_line(c);
            let mut buf = [0u8; 256];
            let n = rx.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert_eq!(
            got,
            [
                "gunicorn.log.critical:1|c|@1.0",
                "gunicorn.log.error:1|c|@1.0",
                "gunicorn.log.warning:1|c|@1.0",
                "gunicorn.log.exception:1|c|@1.0",
            ]
        );
    }
}
