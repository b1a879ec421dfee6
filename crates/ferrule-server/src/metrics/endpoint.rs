//! `--metrics-bind`: a small HTTP/1 server on one thread of the master, which never
//! runs Python, so probes and scrapes are answered while every worker is busy or
//! being replaced. One request per connection (`Connection: close`); a client gets
//! `IO_TIMEOUT` to send its request line, so a stalled one delays a scrape by at most
//! that.
//!
//! A busy address stops start-up, except in a new master started for a binary
//! upgrade (USR2): the old master still serves it, so the new one tries again every
//! second until the old one is gone. Workers close their inherited copy of the
//! socket at once ([`close_in_child`]).
//!
//! `/metrics` (text format 0.0.4), `/healthz` (200 while the master lives),
//! `/readyz` (200 while at least one worker accepts, else 503), anything else 404;
//! methods other than GET and HEAD get 405.

use super::expose::render;
use super::registry::Registry;
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest request head read: a probe's is a few dozen bytes.
const MAX_HEAD: usize = 8 * 1024;

/// Where the endpoint listens, checked when the settings are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsBind {
    Tcp(String),
    Unix(std::path::PathBuf),
}

impl MetricsBind {
    /// `HOST:PORT` (`[::1]:9100`) or `unix:PATH`; the error says what to fix.
    pub fn parse(text: &str) -> Result<MetricsBind, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(
                    "metrics-bind: unix: needs a path (unix:/run/ferrule-metrics.sock)".into(),
                );
            }
            return Ok(MetricsBind::Unix(path.into()));
        }
        match text.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(MetricsBind::Tcp(text.to_string()))
            }
            _ => Err(format!(
                "metrics-bind: {text:?} is not HOST:PORT or unix:PATH (e.g. 127.0.0.1:9100)"
            )),
        }
    }
}

impl std::fmt::Display for MetricsBind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsBind::Tcp(a) => write!(f, "http://{a}"),
            MetricsBind::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The endpoint's listening descriptor in this process (-1: none).
static LISTENING_FD: AtomicI32 = AtomicI32::new(-1);

/// In a process just forked from the master: closes its copy of the endpoint's
/// socket (the thread that owned it does not exist here).
pub fn close_in_child() {
    let fd: RawFd = LISTENING_FD.swap(-1, Ordering::Relaxed);
    if fd >= 0 {
        let _ = nix::unistd::close(fd);
    }
}

/// How often a new master of an upgrade tries the address its old master holds.
const RETRY_EVERY: Duration = Duration::from_secs(1);

enum Listening {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Binds `bind` and serves it on a thread of its own for the rest of the process.
/// With `upgrading` (this is the new master of a binary upgrade), an address in use
/// is tried again every second on that thread instead of failing.
pub fn start(bind: &MetricsBind, registry: Arc<Registry>, upgrading: bool) -> io::Result<()> {
    let listening = match listen(bind) {
        Ok(l) => Some(l),
        Err(e) if upgrading && e.kind() == io::ErrorKind::AddrInUse => {
            tracing::info!(
                "metrics-bind {bind}: in use by the old master; serving it once it leaves"
            );
            None
        }
        Err(e) => return Err(e),
    };
    let bind = bind.clone();
    std::thread::Builder::new()
        .name("ferrule-metrics".into())
        .spawn(move || {
            let listening = match listening {
                Some(l) => l,
                None => loop {
                    // Nothing wakes this thread early: it lives as long as the master.
                    std::thread::park_timeout(RETRY_EVERY);
                    if let Ok(l) = listen(&bind) {
                        break l;
                    }
                },
            };
            serve(&listening, &registry)
        })?;
    Ok(())
}

fn listen(bind: &MetricsBind) -> io::Result<Listening> {
    let listening = match bind {
        MetricsBind::Tcp(addr) => Listening::Tcp(TcpListener::bind(addr.as_str())?),
        MetricsBind::Unix(path) => {
            // A socket file left by an earlier run (gunicorn's binds do the same).
            if std::fs::symlink_metadata(path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                let _ = std::fs::remove_file(path);
            }
            Listening::Unix(UnixListener::bind(path)?)
        }
    };
    LISTENING_FD.store(
        match &listening {
            Listening::Tcp(l) => l.as_raw_fd(),
            Listening::Unix(l) => l.as_raw_fd(),
        },
        Ordering::Relaxed,
    );
    Ok(listening)
}

fn serve(listening: &Listening, registry: &Registry) {
    loop {
        let answered = match listening {
            Listening::Tcp(l) => l.accept().and_then(|(s, _)| {
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                answer(s, registry)
            }),
            Listening::Unix(l) => l.accept().and_then(|(s, _)| {
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                answer(s, registry)
            }),
        };
        // A client that vanished or stalled is its own problem; the next one is served.
        // Not logged: this thread runs while the master forks, and a worker must not
        // inherit the log's lock held by it (it takes no lock a worker uses).
        let _ = answered;
    }
}

fn answer(mut s: impl Read + Write, registry: &Registry) -> io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        let n = s.read(&mut buf)?;
        if n == 0 || head.len() + n > MAX_HEAD {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = line.trim_ascii().split(|&b| b == b' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let (status, ctype, body) = route(method, path, registry);
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != b"HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    s.write_all(&out)
}

fn route(method: &[u8], path: &[u8], registry: &Registry) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != b"GET" && method != b"HEAD" {
        return ("405 Method Not Allowed", TEXT, "GET or HEAD\n".into());
    }
    match path {
        b"/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(&registry.totals()),
        ),
        b"/healthz" => ("200 OK", TEXT, "ok\n".into()),
        b"/readyz" if registry.ready() => ("200 OK", TEXT, "ready\n".into()),
        b"/readyz" => (
            "503 Service Unavailable",
            TEXT,
            "no worker accepts connections\n".into(),
        ),
        _ => (
            "404 Not Found",
            TEXT,
            "/metrics, /healthz or /readyz\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_parse() {
        assert_eq!(
            MetricsBind::parse("127.0.0.1:9100").unwrap(),
            MetricsBind::Tcp("127.0.0.1:9100".into())
        );
        assert!(MetricsBind::parse("[::1]:9100").is_ok());
        assert_eq!(
            MetricsBind::parse("unix:/tmp/m.sock").unwrap(),
            MetricsBind::Unix("/tmp/m.sock".into())
        );
        assert!(MetricsBind::parse("9100").is_err());
        assert!(MetricsBind::parse("host:http").is_err());
        assert!(MetricsBind::parse("unix:").is_err());
    }

    #[test]
    fn a_busy_address_fails_unless_upgrading_then_is_taken_once_free() {
        use std::io::{Read, Write};
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let bind = MetricsBind::Tcp(held.local_addr().unwrap().to_string());
        let r = Arc::new(Registry::new(1).unwrap());
        let e = start(&bind, r.clone(), false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        start(&bind, r, true).unwrap();
        drop(held);
        let addr = held_addr(&bind);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let answer = loop {
            assert!(std::time::Instant::now() < deadline, "never bound");
            if let Ok(mut c) = std::net::TcpStream::connect(&addr) {
                c.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
                let mut out = String::new();
                if c.read_to_string(&mut out).is_ok() && !out.is_empty() {
                    break out;
                }
            }
            std::thread::park_timeout(Duration::from_millis(50));
        };
        assert!(
            answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("ok\n"),
            "{answer}"
        );
    }

    fn held_addr(bind: &MetricsBind) -> String {
        match bind {
            MetricsBind::Tcp(a) => a.clone(),
            MetricsBind::Unix(_) => unreachable!(),
        }
    }

    #[test]
    fn routes() {
        let r = Registry::new(1).unwrap();
        assert_eq!(route(b"GET", b"/healthz", &r).0, "200 OK");
        assert_eq!(route(b"GET", b"/readyz", &r).0, "503 Service Unavailable");
        r.slot(0).unwrap().set_accepting(true);
        assert_eq!(route(b"GET", b"/readyz", &r).0, "200 OK");
        assert_eq!(route(b"GET", b"/nope", &r).0, "404 Not Found");
        assert_eq!(route(b"POST", b"/metrics", &r).0, "405 Method Not Allowed");
        assert!(route(b"GET", b"/metrics", &r)
            .2
            .contains("ferrule_workers 0\n"));
    }
}
