//! `--log-syslog-to` and `--log-syslog-facility`, read as gunicorn reads them
//! (`glogging.parse_syslog_address`, `SYSLOG_FACILITIES`): pure, checked once.

use std::fmt;
use std::path::PathBuf;

/// Where syslog lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogAddr {
    /// `udp://HOST:PORT` (port 514 when left out): one datagram per line.
    Udp { host: String, port: u16 },
    /// `tcp://HOST:PORT`: a stream, octet counted (RFC 6587).
    Tcp { host: String, port: u16 },
    /// `unix://PATH`, `unix://PATH#dgram`, `unix://PATH#stream`.
    Unix { path: PathBuf, kind: UnixKind },
}

/// The socket type of a `unix://` address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnixKind {
    /// No `#TYPE`: a datagram socket, else a stream one (what Python's SysLogHandler,
    /// and so gunicorn, tries).
    Either,
    Dgram,
    Stream,
}

/// The default port of `udp://` and `tcp://` addresses without one (gunicorn's).
pub const DEFAULT_PORT: u16 = 514;

impl SyslogAddr {
    /// gunicorn's forms; the error names the setting and says what to fix.
    pub fn parse(text: &str) -> Result<SyslogAddr, String> {
        let bad = |why: &str| {
            format!(
                "log-syslog-to: {text:?} {why} (udp://HOST:PORT, tcp://HOST:PORT, unix://PATH, \
                 unix://PATH#dgram or unix://PATH#stream)"
            )
        };
        if let Some(rest) = text.strip_prefix("unix://") {
            let (path, kind) = match rest.split_once('#') {
                None => (rest, UnixKind::Either),
                Some((path, "dgram")) => (path, UnixKind::Dgram),
                Some((path, "stream")) => (path, UnixKind::Stream),
                Some(_) => return Err(bad("has a socket type other than #dgram or #stream")),
            };
            if path.is_empty() {
                return Err(bad("has no path"));
            }
            return Ok(SyslogAddr::Unix {
                path: PathBuf::from(path),
                kind,
            });
        }
        let (rest, tcp) = match (text.strip_prefix("udp://"), text.strip_prefix("tcp://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err(bad("does not start with udp://, tcp:// or unix://")),
        };
        let (host, port) = host_port(rest).map_err(|why| bad(&why))?;
        Ok(match tcp {
            true => SyslogAddr::Tcp { host, port },
            false => SyslogAddr::Udp { host, port },
        })
    }

    /// Whether lines are written to a byte stream (and so need framing between them).
    pub fn is_stream(&self) -> bool {
        matches!(
            self,
            SyslogAddr::Tcp { .. }
                | SyslogAddr::Unix {
                    kind: UnixKind::Stream,
                    ..
                }
        )
    }
}

/// `HOST:PORT`, `[V6]:PORT`, `HOST` (port 514) or empty (localhost:514), as gunicorn.
fn host_port(text: &str) -> Result<(String, u16), String> {
    let (host, port) = match text.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| "has a '[' without its ']'".to_string())?;
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err("has something other than :PORT after ']'".into()),
                },
            }
        }
        None => match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        },
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("has {p:?} as its port (a number from 1 to 65535)")),
        },
    };
    let host = match host {
        "" => "localhost".to_string(),
        h => h.to_ascii_lowercase(),
    };
    Ok((host, port))
}

impl fmt::Display for SyslogAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bracket = |h: &str| match h.contains(':') {
            true => format!("[{h}]"),
            false => h.to_string(),
        };
        match self {
            SyslogAddr::Udp { host, port } => write!(f, "udp://{}:{port}", bracket(host)),
            SyslogAddr::Tcp { host, port } => write!(f, "tcp://{}:{port}", bracket(host)),
            SyslogAddr::Unix { path, kind } => {
                let suffix = match kind {
                    UnixKind::Either => "",
                    UnixKind::Dgram => "#dgram",
                    UnixKind::Stream => "#stream",
                };
                write!(f, "unix://{}{suffix}", path.display())
            }
        }
    }
}

/// gunicorn's facility names and their codes (`security` is `auth`, as there).
pub const FACILITIES: [(&str, u8); 21] = [
    ("auth", 4),
    ("authpriv", 10),
    ("cron", 9),
    ("daemon", 3),
    ("ftp", 11),
    ("kern", 0),
    ("lpr", 6),
    ("mail", 2),
    ("news", 7),
    ("security", 4),
    ("syslog", 5),
    ("user", 1),
    ("uucp", 8),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// A facility name (any case) as its code.
pub fn facility(name: &str) -> Result<u8, String> {
    let lower = name.to_ascii_lowercase();
    FACILITIES
        .iter()
        .find(|(n, _)| *n == lower)
        .map(|(_, code)| *code)
        .ok_or_else(|| {
            let names: Vec<&str> = FACILITIES.iter().map(|(n, _)| *n).collect();
            format!(
                "log-syslog-facility must be one of {} (got {name:?})",
                names.join(", ")
            )
        })
}
