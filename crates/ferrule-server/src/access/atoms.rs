//! The access log's atoms: what each `%(x)s` stands for ([`Piece`]), the format parser,
//! and each atom's value for a finished request ([`write_atom`]).

use crate::clock::{access_stamp, per_second, StampCache};
use crate::finished::Finished;
use crate::listener::Peer;
use std::cell::RefCell;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
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

/// The atoms with a name (gunicorn's, in its order, then ferrule's), each with the piece it
/// stands for: one table for the format parser, the JSON line and Python's `record.args`.
pub(crate) const NAMED: [(&str, Piece); 24] = [
    ("h", Piece::Remote),
    ("l", Piece::Dash),
    ("u", Piece::User),
    ("t", Piece::Time),
    ("r", Piece::RequestLine),
    ("m", Piece::Method),
    ("U", Piece::Path),
    ("q", Piece::Query),
    ("H", Piece::Protocol),
    ("s", Piece::Status),
    ("B", Piece::BytesB),
    ("b", Piece::BytesDash),
    ("f", Piece::Referer),
    ("a", Piece::Agent),
    ("T", Piece::Secs),
    ("M", Piece::Millis),
    ("D", Piece::Micros),
    ("L", Piece::DecimalSecs),
    ("p", Piece::Pid),
    ("Q", Piece::QueueMicros),
    ("F", Piece::FirstByteMicros),
    ("request_id", Piece::RequestId),
    ("egress", Piece::Egress),
    ("egress_ms", Piece::EgressMs),
];

fn named(atom: &str) -> Option<&'static Piece> {
    NAMED.iter().find(|(n, _)| *n == atom).map(|(_, p)| p)
}

/// Appends one atom's value for a finished request to `s`, as the access line shows it
/// (`-` for what is absent). `environ` holds the values of the format's `{VAR}e` keys;
/// `elapsed` is the request's time, read once for the whole line.
pub(crate) fn write_atom(
    p: &Piece,
    ex: &Finished<'_>,
    environ: &[Option<String>],
    elapsed: Duration,
    s: &mut String,
) {
    let o = ex.outcome;
    let text = |b: Option<&[u8]>, s: &mut String| match b {
        Some(v) => s.push_str(&String::from_utf8_lossy(v)),
        None => s.push('-'),
    };
    match p {
        Piece::Text(t) => s.push_str(t),
        Piece::Remote => match ex.client {
            Peer::Tcp(a) => push_ip(a.ip(), s),
            Peer::Unix => s.push_str("unix"),
        },
        Piece::Dash => s.push('-'),
        // A request refused before its line arrived whole (`refused.rs`).
        Piece::RequestLine | Piece::Method | Piece::Path | Piece::Query | Piece::Protocol
            if !ex.has_request_line() =>
        {
            s.push('-')
        }
        Piece::User => {
            s.push_str(&basic_user(ex.header(b"authorization")).unwrap_or_else(|| "-".into()))
        }
        Piece::Time => per_second(&TEXT_STAMP, SystemTime::now(), access_stamp, |t| {
            s.push_str(t)
        }),
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
        Piece::Status => push_num(o.status, s),
        Piece::BytesB => push_num(o.body_bytes, s),
        Piece::BytesDash if o.body_bytes == 0 => s.push('-'),
        Piece::BytesDash => push_num(o.body_bytes, s),
        Piece::Referer => text(ex.header(b"referer"), s),
        Piece::Agent => text(ex.header(b"user-agent"), s),
        Piece::Secs => push_num(elapsed.as_secs(), s),
        Piece::Millis => push_num(elapsed.as_millis(), s),
        Piece::Micros => push_num(elapsed.as_micros(), s),
        Piece::DecimalSecs => s.push_str(&format!("{:.6}", elapsed.as_secs_f64())),
        Piece::Pid => {
            s.push('<');
            push_num(std::process::id(), s);
            s.push('>');
        }
        Piece::QueueMicros => match ex.timing {
            Some(t) => push_num(t.queue.as_micros(), s),
            None => s.push('-'),
        },
        Piece::FirstByteMicros => match ex.timing.and_then(|t| t.head_at) {
            Some(at) => push_num(at.saturating_duration_since(ex.started).as_micros(), s),
            None => s.push('-'),
        },
        Piece::ReqHeader(h) => text(ex.header(h.as_bytes()), s),
        Piece::RespHeader(h) => text(ex.response_header(h.as_bytes()), s),
        // Quotes are escaped by the text line (`AccessLog::format`), as for every atom.
        Piece::Env(i) => match environ.get(*i) {
            Some(Some(v)) => s.push_str(v),
            _ => s.push('-'),
        },
        // The thread's egress slot holds its last request served, not this one.
        Piece::RequestId | Piece::Egress | Piece::EgressMs if ex.refused => s.push('-'),
        Piece::RequestId | Piece::Egress | Piece::EgressMs => egress_atom(p, s),
    }
}

thread_local! {
    /// `%(t)s` of the current second: formatted once a second per thread, not per line.
    static TEXT_STAMP: StampCache = const { RefCell::new((u64::MAX, String::new())) };
}

/// A number in decimal, without `fmt`'s machinery (a line has several).
pub(crate) fn push_num(n: impl itoa::Integer, s: &mut String) {
    s.push_str(itoa::Buffer::new().format(n));
}

/// `%(h)s`: an IPv4 address (or an IPv4-mapped IPv6 one) by its four numbers, which
/// costs a tenth of `Display`; IPv6 through `Display`.
fn push_ip(ip: IpAddr, s: &mut String) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                push_num(octet, s);
            }
        }
        IpAddr::V6(v6) => {
            let _ = std::fmt::Write::write_fmt(s, format_args!("{v6}"));
        }
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

pub(crate) fn parse(format: &str) -> Result<(Vec<Piece>, Vec<String>), String> {
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
        out.push(match (named(atom), atom) {
            (Some(p), _) => p.clone(),
            (None, a) if a.starts_with('{') && a.ends_with("}i") => {
                Piece::ReqHeader(a[1..a.len() - 2].to_string())
            }
            (None, a) if a.starts_with('{') && a.ends_with("}o") => {
                Piece::RespHeader(a[1..a.len() - 2].to_string())
            }
            (None, a) if a.starts_with('{') && a.ends_with("}e") => {
                let key = &a[1..a.len() - 2];
                match environ_keys.iter().position(|k| k == key) {
                    Some(i) => Piece::Env(i),
                    None => {
                        environ_keys.push(key.to_string());
                        Piece::Env(environ_keys.len() - 1)
                    }
                }
            }
            (None, other) => return Err(format!("access-logformat: unknown atom %({other})s")),
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
    use crate::access::DEFAULT_FORMAT;

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
    fn client_addresses_as_display_shows_them() {
        for (ip, want) in [
            ("192.0.2.7", "192.0.2.7"),
            ("0.0.0.0", "0.0.0.0"),
            ("255.255.255.255", "255.255.255.255"),
            ("::ffff:10.1.2.3", "10.1.2.3"),
            ("2001:db8::1", "2001:db8::1"),
            ("::1", "::1"),
        ] {
            let mut s = String::new();
            push_ip(ip.parse().unwrap(), &mut s);
            assert_eq!(s, want);
        }
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
