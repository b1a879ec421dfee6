//! `--access-logformat json`: one JSON object per request, with a readable key for
//! each of gunicorn's atoms (the table in `docs/logging.md`), each value the atom's own
//! ([`write_atom`]), escaped once here.
//!
//! - Numbers (status, bytes, durations, pid) are JSON numbers; what the text line
//!   shows as `-` for absent is `null`.
//! - Bytes that are not UTF-8 (a client's header) become U+FFFD, as in the text line;
//!   control characters, `"` and `\` are escaped (`\n`, `\u0000`, ...).
//! - `json:{X-Request-ID}i,{REMOTE_USER}e,{Content-Type}o` adds request fields,
//!   environ keys and response fields, keyed `req.x-request-id`, `env.REMOTE_USER`,
//!   `resp.content-type`; `trace={X-B3-TraceId}i` chooses the key.

use super::atoms::{parse, push_num, write_atom, Piece};
use crate::clock::{civil, per_second, StampCache};
use crate::finished::Finished;
use std::cell::RefCell;
use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The keys of the line, in its order, each with the gunicorn atom whose value it
/// shows. Left out: `l` (always `-`), `b` (`B` with `-` for 0), `T`, `M`, `L` (`D` in
/// other units).
pub(crate) const KEYS: [(&str, &str); 19] = [
    ("time", "t"),
    ("remote_addr", "h"),
    ("user", "u"),
    ("request", "r"),
    ("method", "m"),
    ("path", "U"),
    ("query", "q"),
    ("protocol", "H"),
    ("status", "s"),
    ("bytes", "B"),
    ("referer", "f"),
    ("user_agent", "a"),
    ("duration_us", "D"),
    ("pid", "p"),
    ("queue_us", "Q"),
    ("ttfb_us", "F"),
    ("request_id", "request_id"),
    ("egress", "egress"),
    ("egress_ms", "egress_ms"),
];

/// How a value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A string; `null` when absent.
    Text,
    /// A JSON number; `null` when absent.
    Number,
    /// ISO 8601 in UTC with its offset: `2026-12-03T16:04:07.123+00:00`.
    Time,
    /// The worker's pid as a number (the text atom is `<pid>`).
    Pid,
}

/// One key of the line: `,"key":` ready to copy, and how its atom's value is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field {
    prefix: String,
    kind: Kind,
}

/// Whether `format` asks for the JSON line: `json`, or `json:` and the added atoms.
pub(crate) fn wanted(format: &str) -> bool {
    format == "json" || format.starts_with("json:")
}

/// A parsed `json[:extra,...]` format.
pub(crate) struct Parsed {
    pub(crate) fields: Vec<Field>,
    /// One per field, in order.
    pub(crate) pieces: Vec<Piece>,
    /// The environ keys the pieces index.
    pub(crate) environ_keys: Vec<String>,
}

pub(crate) fn parse_json(format: &str) -> Result<Parsed, String> {
    let extra = format.strip_prefix("json").unwrap_or_default();
    let extra = extra.strip_prefix(':').unwrap_or(extra);
    let mut keys: Vec<String> = Vec::new();
    let mut atoms = String::new();
    let mut kinds = Vec::new();
    for (key, atom) in KEYS {
        keys.push(key.to_string());
        let _ = write!(atoms, "%({atom})s");
        kinds.push(match atom {
            "t" => Kind::Time,
            "p" => Kind::Pid,
            "s" | "B" | "D" | "Q" | "F" | "egress_ms" => Kind::Number,
            _ => Kind::Text,
        });
    }
    for item in extra.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, atom) = match item.split_once('=') {
            Some((k, a)) if !k.trim().is_empty() => (Some(k.trim()), a.trim()),
            _ => (None, item),
        };
        let bad = || {
            format!(
                "access-logformat: {item:?} in {format:?} is not {{NAME}}i, {{NAME}}o or \
                 {{KEY}}e (optionally key=...)"
            )
        };
        let inner = atom.strip_prefix('{').ok_or_else(bad)?;
        let (name, which) = inner.rsplit_once('}').ok_or_else(bad)?;
        let key = match (key, which) {
            (Some(k), "i" | "o" | "e") => k.to_string(),
            (None, "i") => format!("req.{}", name.to_ascii_lowercase()),
            (None, "o") => format!("resp.{}", name.to_ascii_lowercase()),
            (None, "e") => format!("env.{name}"),
            _ => return Err(bad()),
        };
        if name.is_empty() || name.contains(['(', ')']) {
            return Err(bad());
        }
        if keys.contains(&key) {
            return Err(format!(
                "access-logformat: the key {key:?} is in {format:?} twice"
            ));
        }
        keys.push(key);
        let _ = write!(atoms, "%({atom})s");
        kinds.push(Kind::Text);
    }
    let (pieces, environ_keys) = parse(&atoms)?;
    let fields = keys
        .iter()
        .zip(kinds)
        .enumerate()
        .map(|(i, (key, kind))| {
            let mut prefix = String::from(if i == 0 { "{" } else { "," });
            string(key, &mut prefix);
            prefix.push(':');
            Field { prefix, kind }
        })
        .collect();
    Ok(Parsed {
        fields,
        pieces,
        environ_keys,
    })
}

/// Appends the JSON line of a finished request (with its `\n`) to `out`.
pub(crate) fn write_line(
    fields: &[Field],
    pieces: &[Piece],
    ex: &Finished<'_>,
    environ: &[Option<String>],
    elapsed: Duration,
    out: &mut String,
) {
    // One value at a time; a user agent is often over 100 bytes.
    let mut value = String::with_capacity(256);
    for (field, piece) in fields.iter().zip(pieces) {
        out.push_str(&field.prefix);
        match field.kind {
            Kind::Time => iso_stamp(SystemTime::now(), out),
            Kind::Pid => push_num(std::process::id(), out),
            // The value itself: a value that is `-` is a string, absent is null.
            Kind::Text if matches!(piece, Piece::Env(_)) => match piece_env(piece, environ) {
                Some(v) => string(v, out),
                None => out.push_str("null"),
            },
            Kind::Number | Kind::Text => {
                value.clear();
                write_atom(piece, ex, environ, elapsed, &mut value);
                match field.kind {
                    _ if value == "-" && absent(piece, ex) => out.push_str("null"),
                    Kind::Number => out.push_str(&value),
                    _ => string(&value, out),
                }
            }
        }
    }
    out.push_str("}\n");
}

fn piece_env<'a>(piece: &Piece, environ: &'a [Option<String>]) -> Option<&'a str> {
    match piece {
        Piece::Env(i) => environ.get(*i)?.as_deref(),
        _ => None,
    }
}

/// Whether an atom that shows `-` shows it for absent, rather than a field or environ
/// value that is `-` itself.
fn absent(piece: &Piece, ex: &Finished<'_>) -> bool {
    match piece {
        Piece::Referer => ex.header(b"referer").is_none(),
        Piece::Agent => ex.header(b"user-agent").is_none(),
        Piece::ReqHeader(h) => ex.header(h.as_bytes()).is_none(),
        Piece::RespHeader(h) => ex.response_header(h.as_bytes()).is_none(),
        _ => true,
    }
}

/// `text` as a JSON string: `"`, `\` and control characters (and DEL) escaped.
fn string(text: &str, out: &mut String) {
    out.push('"');
    let mut rest = text;
    // Bytes, not chars: each of these is one byte in UTF-8 and never inside another char.
    let special = |b: u8| b < b' ' || b == b'"' || b == b'\\' || b == 0x7f;
    while let Some(i) = rest.bytes().position(special) {
        out.push_str(&rest[..i]);
        let c = rest.as_bytes()[i];
        match c {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                let _ = write!(out, "\\u{c:04x}");
            }
        }
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

thread_local! {
    /// `"2026-12-03T16:04:07` of the current second, made once a second per thread.
    static ISO_SECOND: StampCache = const { RefCell::new((u64::MAX, String::new())) };
}

/// `"2026-12-03T16:04:07.123+00:00"`: UTC like the text line's `%(t)s`, with
/// milliseconds.
fn iso_stamp(t: SystemTime, out: &mut String) {
    per_second(&ISO_SECOND, t, iso_second, |second| out.push_str(second));
    let ms = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_millis();
    for digit in [ms / 100, ms / 10 % 10, ms % 10] {
        out.push(char::from(b'0' + digit as u8));
    }
    out.push_str("+00:00\"");
}

fn iso_second(t: SystemTime) -> String {
    let c = civil(t);
    format!(
        "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
