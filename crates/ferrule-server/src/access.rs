//! The access log with gunicorn's `--access-logformat` atoms and default format.
//!
//! `%({VAR}e)s` is the request's WSGI environ, as in gunicorn, never the process
//! environment (which holds the server's secrets). The environ is Python's: the bridge
//! looks the format's keys up after the app ran (so keys the app or a middleware
//! stored count) and hands the strings over with [`hand_environ_values`], only when
//! the format has such atoms.

use crate::clock::access_stamp;
use crate::finished::Finished;
use crate::listener::Peer;
use crate::sink::Sink;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::SystemTime;

thread_local! {
    /// The `{VAR}e` values of the request this thread handled last, in the order of
    /// [`AccessLog::environ_keys`] (None: not in the environ). A thread-local rather
    /// than a field of the exchange, so a format without such atoms costs a request
    /// nothing: the handler sets it right before it returns the exchange, and the
    /// record that follows on the same thread takes it.
    static ENVIRON_VALUES: RefCell<Vec<Option<String>>> = const { RefCell::new(Vec::new()) };
}

/// Hands the `{VAR}e` values of the request this thread is handling to its access-log
/// line (see [`AccessLog::environ_keys`]).
pub fn hand_environ_values(values: Vec<Option<String>>) {
    ENVIRON_VALUES.with(|v| *v.borrow_mut() = values);
}

/// gunicorn's default `--access-logformat`.
pub const DEFAULT_FORMAT: &str = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Remote,
    Dash,
    User,
    Time,
    RequestLine,
    Method,
    Path,
    Query,
    Protocol,
    Status,
    BytesB,
    BytesDash,
    Referer,
    Agent,
    Secs,
    Millis,
    Micros,
    DecimalSecs,
    Pid,
    /// `%(Q)s`: the queue wait in microseconds (`metrics/timing.rs`).
    QueueMicros,
    /// `%(F)s`: microseconds from the request's start to its response head.
    FirstByteMicros,
    ReqHeader(String),
    RespHeader(String),
    /// An index into the format's environ keys.
    Env(usize),
    /// Egress (`egress.rs`): the request's id, the destinations it reached, and the
    /// time it spent connecting.
    RequestId,
    Egress,
    EgressMs,
}

/// A parsed `--access-logformat`: checked once, when the settings are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessFormat {
    pieces: Vec<Piece>,
    environ_keys: Vec<String>,
}

impl AccessFormat {
    /// Unknown atoms are an error naming the atom.
    pub fn parse(format: &str) -> Result<AccessFormat, String> {
        let (pieces, environ_keys) = parse(format)?;
        Ok(AccessFormat {
            pieces,
            environ_keys,
        })
    }
}

pub struct AccessLog {
    pieces: Vec<Piece>,
    environ_keys: Vec<String>,
    sink: Arc<Sink>,
}

impl AccessLog {
    /// `sink` should report its losses in the error log ([`crate::sink::Report::ErrorLog`]).
    pub fn new(format: AccessFormat, sink: Arc<Sink>) -> AccessLog {
        if format.pieces.contains(&Piece::RequestId) {
            crate::egress::want_ids();
        }
        AccessLog {
            pieces: format.pieces,
            environ_keys: format.environ_keys,
            sink,
        }
    }

    /// The environ keys of the format's `%({VAR}e)s` atoms, each once, in the order
    /// [`hand_environ_values`] takes their values; empty for most formats (gunicorn's
    /// default has none).
    pub fn environ_keys(&self) -> &[String] {
        &self.environ_keys
    }

    /// Whether a `%({name}o)s` atom needs the response's fields.
    pub fn wants_response_headers(&self) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::RespHeader(_)))
    }

    /// Whether the format shows queue or first-byte times (requests are then timed).
    pub fn wants_timing(&self) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::QueueMicros | Piece::FirstByteMicros))
    }

    /// Reports the lines lost so far in the error log now (the server is stopping).
    pub(crate) fn report_losses(&self) {
        self.sink.report_now();
    }

    /// Writes the line of a finished request (`Exchange::finished`).
    pub(crate) fn record(&self, ex: &Finished<'_>) {
        let environ = match self.environ_keys.is_empty() {
            true => Vec::new(),
            false => ENVIRON_VALUES.with(|v| std::mem::take(&mut *v.borrow_mut())),
        };
        // A line that cannot be written is counted by the sink, never the request's problem.
        self.sink.write_line(self.format(ex, &environ).as_bytes());
    }

    fn format(&self, ex: &Finished<'_>, environ: &[Option<String>]) -> String {
        let o = ex.outcome;
        let elapsed = ex.started.elapsed();
        let text = |b: Option<&[u8]>| {
            b.map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_else(|| "-".into())
        };
        let mut s = String::with_capacity(128);
        for p in &self.pieces {
            match p {
                Piece::Text(t) => s.push_str(t),
                Piece::Remote => match ex.client {
                    Peer::Tcp(a) => s.push_str(&a.ip().to_canonical().to_string()),
                    Peer::Unix => s.push_str("unix"),
                },
                Piece::Dash => s.push('-'),
                Piece::User => s.push_str(
                    &basic_user(ex.header(b"authorization")).unwrap_or_else(|| "-".into()),
                ),
                Piece::Time => s.push_str(&access_stamp(SystemTime::now())),
                Piece::RequestLine => {
                    s.push_str(&String::from_utf8_lossy(ex.method));
                    s.push(' ');
                    s.push_str(&String::from_utf8_lossy(ex.target));
                    s.push(' ');
                    s.push_str(&String::from_utf8_lossy(ex.version_text()));
                }
                Piece::Method => s.push_str(&String::from_utf8_lossy(ex.method)),
                Piece::Path => s.push_str(&String::from_utf8_lossy(ex.path)),
                Piece::Query => s.push_str(&String::from_utf8_lossy(ex.query)),
                Piece::Protocol => s.push_str(&String::from_utf8_lossy(ex.version_text())),
                Piece::Status => s.push_str(&o.status.to_string()),
                Piece::BytesB => s.push_str(&o.body_bytes.to_string()),
                Piece::BytesDash if o.body_bytes == 0 => s.push('-'),
                Piece::BytesDash => s.push_str(&o.body_bytes.to_string()),
                Piece::Referer => s.push_str(&text(ex.header(b"referer"))),
                Piece::Agent => s.push_str(&text(ex.header(b"user-agent"))),
                Piece::Secs => s.push_str(&elapsed.as_secs().to_string()),
                Piece::Millis => s.push_str(&elapsed.as_millis().to_string()),
                Piece::Micros => s.push_str(&elapsed.as_micros().to_string()),
                Piece::DecimalSecs => s.push_str(&format!("{:.6}", elapsed.as_secs_f64())),
                Piece::Pid => s.push_str(&format!("<{}>", std::process::id())),
                Piece::QueueMicros => match ex.timing {
                    Some(t) => s.push_str(&t.queue.as_micros().to_string()),
                    None => s.push('-'),
                },
                Piece::FirstByteMicros => match ex.timing.and_then(|t| t.head_at) {
                    Some(at) => s.push_str(
                        &at.saturating_duration_since(ex.started)
                            .as_micros()
                            .to_string(),
                    ),
                    None => s.push('-'),
                },
                Piece::ReqHeader(h) => s.push_str(&text(ex.header(h.as_bytes()))),
                Piece::RespHeader(h) => s.push_str(&text(ex.response_header(h.as_bytes()))),
                Piece::Env(i) => match environ.get(*i) {
                    Some(Some(v)) => s.push_str(v),
                    _ => s.push('-'),
                },
                Piece::RequestId | Piece::Egress | Piece::EgressMs => egress_atom(p, &mut s),
            }
        }
        s.push('\n');
        s
    }
}

/// `%(request_id)s`, `%(egress)s`, `%(egress_ms)s`: from this thread's egress slot,
/// which holds the request just served; `-` when there is nothing.
/// Destinations `%(egress)s` names before it only counts the rest: an app that reaches
/// thousands of hosts in one request must not make a line of as many kilobytes.
const EGRESS_LISTED: usize = 32;

/// `a:1,b:2,…` for the first [`EGRESS_LISTED`] destinations, then `,+N more`.
fn egress_list(dests: &[String], s: &mut String) {
    for (i, d) in dests.iter().take(EGRESS_LISTED).enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(d);
    }
    if dests.len() > EGRESS_LISTED {
        let _ =
            std::fmt::Write::write_fmt(s, format_args!(",+{} more", dests.len() - EGRESS_LISTED));
    }
}

fn egress_atom(p: &Piece, s: &mut String) {
    use crate::egress::{egress_on, wanted, with_request_id, with_tally};
    if !wanted() {
        s.push('-');
        return;
    }
    if let Piece::RequestId = p {
        // Visible ASCII, so `from_utf8` (much cheaper than the lossy walk) holds.
        let text = |id: &[u8]| match std::str::from_utf8(id) {
            Ok(t) => s.push_str(t),
            Err(_) => s.push_str(&String::from_utf8_lossy(id)),
        };
        match with_request_id(text) {
            Some(()) => {}
            None => s.push('-'),
        }
        return;
    }
    with_tally(|t| match (p, t) {
        (Piece::Egress, Some((dests, _))) if !dests.is_empty() => egress_list(dests, s),
        (Piece::EgressMs, Some((_, ms))) if egress_on() => s.push_str(&format!("{ms:.3}")),
        _ => s.push('-'),
    });
}

fn parse(format: &str) -> Result<(Vec<Piece>, Vec<String>), String> {
    let mut out = Vec::new();
    let mut environ_keys: Vec<String> = Vec::new();
    let mut rest = format;
    while let Some(i) = rest.find("%(") {
        if i > 0 {
            out.push(Piece::Text(rest[..i].to_string()));
        }
        let after = &rest[i + 2..];
        let end = after
            .find(")s")
            .ok_or_else(|| format!("access-logformat: unclosed atom in {format:?}"))?;
        let atom = &after[..end];
        out.push(match atom {
            "h" => Piece::Remote,
            "l" => Piece::Dash,
            "u" => Piece::User,
            "t" => Piece::Time,
            "r" => Piece::RequestLine,
            "m" => Piece::Method,
            "U" => Piece::Path,
            "q" => Piece::Query,
            "H" => Piece::Protocol,
            "s" => Piece::Status,
            "B" => Piece::BytesB,
            "b" => Piece::BytesDash,
            "f" => Piece::Referer,
            "a" => Piece::Agent,
            "T" => Piece::Secs,
            "M" => Piece::Millis,
            "D" => Piece::Micros,
            "L" => Piece::DecimalSecs,
            "p" => Piece::Pid,
            "Q" => Piece::QueueMicros,
            "F" => Piece::FirstByteMicros,
            "request_id" => Piece::RequestId,
            "egress" => Piece::Egress,
            "egress_ms" => Piece::EgressMs,
            a if a.starts_with('{') && a.ends_with("}i") => {
                Piece::ReqHeader(a[1..a.len() - 2].to_string())
            }
            a if a.starts_with('{') && a.ends_with("}o") => {
                Piece::RespHeader(a[1..a.len() - 2].to_string())
            }
            a if a.starts_with('{') && a.ends_with("}e") => {
                let key = &a[1..a.len() - 2];
                match environ_keys.iter().position(|k| k == key) {
                    Some(i) => Piece::Env(i),
                    None => {
                        environ_keys.push(key.to_string());
                        Piece::Env(environ_keys.len() - 1)
                    }
                }
            }
            other => return Err(format!("access-logformat: unknown atom %({other})s")),
        });
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_string()));
    }
    Ok((out, environ_keys))
}

/// The user name of `Authorization: Basic`, as gunicorn's `%(u)s` shows it.
fn basic_user(auth: Option<&[u8]>) -> Option<String> {
    let auth = auth?;
    let b64 = auth
        .strip_prefix(b"Basic ")
        .or_else(|| auth.strip_prefix(b"basic "))?;
    let decoded = base64_decode(b64.trim_ascii())?;
    let text = String::from_utf8_lossy(&decoded).into_owned();
    Some(
        text.split_once(':')
            .map(|(u, _)| u.to_string())
            .unwrap_or(text),
    )
}

fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for &c in s.iter().take_while(|&&c| c != b'=') {
        acc = (acc << 6) | u32::from(val(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_default_format() {
        let (p, keys) = parse(DEFAULT_FORMAT).unwrap();
        assert!(keys.is_empty());
        assert_eq!(p[0], Piece::Remote);
        assert!(p.contains(&Piece::RequestLine));
        assert!(p.contains(&Piece::Agent));
        assert_eq!(
            parse("%({x-id}i)s %({Content-Type}o)s").unwrap().0[0],
            Piece::ReqHeader("x-id".into())
        );
        assert!(parse("%(zz)s").is_err());
        assert_eq!(parse("%(Q)s %(F)s").unwrap().0[2], Piece::FirstByteMicros);
        assert_eq!(
            parse("%(request_id)s %(egress)s %(egress_ms)s").unwrap().0,
            [
                Piece::RequestId,
                Piece::Text(" ".into()),
                Piece::Egress,
                Piece::Text(" ".into()),
                Piece::EgressMs
            ]
        );
        assert!(parse("%(h").is_err());
    }

    #[test]
    fn environ_atoms_name_each_key_once() {
        let (p, keys) = parse("%({A}e)s %({my.key}e)s %({A}e)s").unwrap();
        assert_eq!(keys, ["A", "my.key"]);
        assert_eq!(p[0], Piece::Env(0));
        assert_eq!(p[2], Piece::Env(1));
        assert_eq!(p[4], Piece::Env(0));
    }

    #[test]
    fn basic_auth_user() {
        assert_eq!(
            basic_user(Some(b"Basic YWxhZGRpbjpvcGVuc2VzYW1l")).as_deref(),
            Some("aladdin")
        );
        assert_eq!(basic_user(Some(b"Bearer x")), None);
    }

    #[test]
    fn a_long_egress_list_names_the_first_destinations_and_counts_the_rest() {
        let dests: Vec<String> = (0..40).map(|i| format!("10.0.0.{i}:80")).collect();
        let mut s = String::new();
        super::egress_list(&dests, &mut s);
        assert!(s.starts_with("10.0.0.0:80,10.0.0.1:80,"), "{s}");
        assert!(s.ends_with("10.0.0.31:80,+8 more"), "{s}");
        let mut short = String::new();
        super::egress_list(&dests[..2], &mut short);
        assert_eq!(short, "10.0.0.0:80,10.0.0.1:80");
    }
}
