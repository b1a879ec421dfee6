//! The egress log's line: one JSON object per attempt, keys in the contract's order.

use std::fmt::Write as _;
use std::net::IpAddr;

/// The request an attempt was made for (all `None` outside a request).
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestFields<'a> {
    pub request_id: Option<&'a str>,
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
}

/// One decided (or finished) attempt.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// Unix time of the attempt, seconds.
    pub ts: f64,
    pub pid: u32,
    pub request: RequestFields<'a>,
    pub udp: bool,
    pub addr: IpAddr,
    pub port: u16,
    pub host: Option<&'a str>,
    pub verdict: &'static str,
    pub rule: Option<&'a str>,
    pub ms: Option<f64>,
}

impl Line<'_> {
    /// Writes the line, newline included, into `out` (cleared first: callers reuse it).
    pub fn write(&self, out: &mut String) {
        out.clear();
        let _ = write!(
            out,
            "{{\"ts\": {:.6}, \"pid\": {}, \"request_id\": ",
            self.ts, self.pid
        );
        string_or_null(out, self.request.request_id);
        out.push_str(", \"method\": ");
        string_or_null(out, self.request.method);
        out.push_str(", \"path\": ");
        string_or_null(out, self.request.path);
        out.push_str(if self.udp {
            ", \"proto\": \"udp\""
        } else {
            ", \"proto\": \"tcp\""
        });
        let _ = write!(
            out,
            ", \"addr\": \"{}\", \"port\": {}, \"host\": ",
            self.addr, self.port
        );
        string_or_null(out, self.host);
        let _ = write!(out, ", \"verdict\": \"{}\", \"rule\": ", self.verdict);
        string_or_null(out, self.rule);
        out.push_str(", \"ms\": ");
        match self.ms {
            Some(ms) => {
                let _ = write!(out, "{ms:.3}");
            }
            None => out.push_str("null"),
        }
        out.push_str("}\n");
    }
}

fn string_or_null(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => json_string(out, s),
        None => out.push_str("null"),
    }
}

/// A JSON string: quotes, backslashes and control characters escaped; the rest as is
/// (UTF-8 is valid JSON).
pub(crate) fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_has_the_contract_keys_in_order() {
        let mut out = String::new();
        Line {
            ts: 1764767000.1234567,
            pid: 12,
            request: RequestFields {
                request_id: Some("ab"),
                method: Some("GET"),
                path: Some("/x\"y\\z\n\u{1}é"),
            },
            udp: false,
            addr: "::1".parse().unwrap(),
            port: 5432,
            host: None,
            verdict: "deny",
            rule: Some("[::1]:5432"),
            ms: None,
        }
        .write(&mut out);
        assert_eq!(
            out,
            "{\"ts\": 1764767000.123457, \"pid\": 12, \"request_id\": \"ab\", \"method\": \"GET\", \
             \"path\": \"/x\\\"y\\\\z\\n\\u0001é\", \"proto\": \"tcp\", \"addr\": \"::1\", \"port\": 5432, \
             \"host\": null, \"verdict\": \"deny\", \"rule\": \"[::1]:5432\", \"ms\": null}\n"
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 12);
        assert_eq!(v["path"], "/x\"y\\z\n\u{1}é");
    }

    #[test]
    fn nulls_outside_a_request_and_ms_with_three_decimals() {
        let mut out = String::from("old");
        Line {
            ts: 1.0,
            pid: 1,
            request: RequestFields::default(),
            udp: true,
            addr: "127.0.0.1".parse().unwrap(),
            port: 514,
            host: Some("logs.internal"),
            verdict: "allow",
            rule: None,
            ms: Some(0.41249),
        }
        .write(&mut out);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(v["request_id"].is_null() && v["method"].is_null() && v["path"].is_null());
        assert_eq!(v["proto"], "udp");
        assert_eq!(v["host"], "logs.internal");
        assert!(out.contains("\"ms\": 0.412}"), "{out}");
    }
}
