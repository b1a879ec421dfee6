//! What goes on the wire: a log line as a syslog message (RFC 3164 as gunicorn sends
//! it, or RFC 5424), and the message framed for its transport. Pure functions.

use crate::clock::civil;
use std::time::{SystemTime, UNIX_EPOCH};

/// `--log-syslog-format` (ferrule's own; gunicorn sends RFC 3164 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyslogFormat {
    /// gunicorn's bytes (Python's SysLogHandler): `<PRI>IDENT: [PID] MESSAGE\0`.
    #[default]
    Rfc3164,
    /// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID - - MESSAGE`.
    Rfc5424,
}

impl std::str::FromStr for SyslogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "rfc3164" => Ok(SyslogFormat::Rfc3164),
            "rfc5424" => Ok(SyslogFormat::Rfc5424),
            _ => Err(format!(
                "log-syslog-format must be rfc3164 or rfc5424 (got {s:?})"
            )),
        }
    }
}

/// Which log a line comes from: the last word of gunicorn's ident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Error,
    Access,
}

impl Stream {
    pub fn word(self) -> &'static str {
        match self {
            Stream::Error => "error",
            Stream::Access => "access",
        }
    }
}

/// Syslog severities of gunicorn's levels (Python's `SysLogHandler.priority_map`).
pub const CRITICAL: u8 = 2;
pub const ERROR: u8 = 3;
pub const WARNING: u8 = 4;
pub const INFO: u8 = 6;
pub const DEBUG: u8 = 7;

/// An error-log line (`[2026-12-03 16:00:47 +0000] [42] [INFO] Booting\n`, `logline.rs`)
/// as its severity and message. A line of another shape is sent whole at info.
pub fn split_error_line(line: &[u8]) -> (u8, &[u8]) {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let parsed = (|| {
        let rest = skip_bracketed(line)?; // the time
        let rest = skip_bracketed(rest)?; // the pid: the sender writes its own
        let level_end = rest.iter().position(|&b| b == b']')?;
        let level = rest.strip_prefix(b"[")?.get(..level_end - 1)?;
        let msg = rest.get(level_end + 1..)?;
        let severity = match level {
            b"CRITICAL" => CRITICAL,
            b"ERROR" => ERROR,
            b"WARNING" => WARNING,
            b"INFO" => INFO,
            b"DEBUG" => DEBUG,
            _ => return None,
        };
        Some((severity, msg.strip_prefix(b" ").unwrap_or(msg)))
    })();
    parsed.unwrap_or((INFO, line))
}

/// The rest of `text` after a leading `[...] `.
fn skip_bracketed(text: &[u8]) -> Option<&[u8]> {
    let end = text.strip_prefix(b"[")?.iter().position(|&b| b == b']')?;
    text.get(end + 2..)?.strip_prefix(b" ")
}

/// What every message of a process shares.
#[derive(Debug, Clone)]
pub struct Origin {
    pub format: SyslogFormat,
    pub facility: u8,
    /// gunicorn's `gunicorn.<prefix or proc_name>` (`.error` or `.access` follows).
    pub name: String,
    pub pid: u32,
    /// RFC 5424's HOSTNAME.
    pub host: String,
}

/// RFC 5424's longest APP-NAME.
const APP_NAME_MAX: usize = 48;

impl Origin {
    /// One message, unframed; RFC 3164 ends with gunicorn's NUL.
    pub fn message(&self, stream: Stream, severity: u8, time: SystemTime, msg: &[u8]) -> Vec<u8> {
        let pri = u16::from(self.facility) * 8 + u16::from(severity.min(7));
        let mut out = Vec::with_capacity(msg.len() + self.name.len() + 64);
        out.extend_from_slice(format!("<{pri}>").as_bytes());
        match self.format {
            SyslogFormat::Rfc3164 => {
                out.extend_from_slice(
                    format!("{}.{}: [{}] ", self.name, stream.word(), self.pid).as_bytes(),
                );
                out.extend_from_slice(msg);
                out.push(0);
            }
            SyslogFormat::Rfc5424 => {
                let app = printable(&format!("{}.{}", self.name, stream.word()), APP_NAME_MAX);
                let host = printable(&self.host, 255);
                let stamp = rfc3339(time);
                out.extend_from_slice(
                    format!("1 {stamp} {host} {app} {} - - ", self.pid).as_bytes(),
                );
                out.extend_from_slice(msg);
            }
        }
        out
    }
}

/// An RFC 5424 header field: printable US-ASCII, at most `max` bytes, `-` when empty.
fn printable(text: &str, max: usize) -> String {
    let kept: String = text
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    match kept.is_empty() {
        true => "-".into(),
        false => kept,
    }
}

/// `2026-12-03T16:00:47.123456Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let c = civil(t);
    let micros = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_micros());
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// How messages are told apart on a transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One message per datagram (UDP, unix dgram), as the message is.
    Datagram,
    /// TCP: `LEN SP MESSAGE` (RFC 6587 octet counting), without the NUL.
    OctetCounted,
    /// A unix stream socket: the message and a NUL, as Python's SysLogHandler sends.
    NulTerminated,
}

/// `msg` ready to be written on a transport with this framing.
pub fn frame(framing: Framing, mut msg: Vec<u8>) -> Vec<u8> {
    match framing {
        Framing::Datagram => msg,
        Framing::OctetCounted => {
            if msg.last() == Some(&0) {
                msg.pop();
            }
            let mut out = format!("{} ", msg.len()).into_bytes();
            out.extend_from_slice(&msg);
            out
        }
        Framing::NulTerminated => {
            if msg.last() != Some(&0) {
                msg.push(0);
            }
            msg
        }
    }
}
