//! `--statsd-host`: gunicorn's statsd metrics, sent by each worker over a
//! non-blocking datagram socket, so a statsd that is down, slow or absent never
//! delays a request: a datagram the socket does not take at once is dropped and
//! counted (reported in the error log, at most once a minute).
//!
//! Names and types are gunicorn's (`instrument/statsd.py`): `gunicorn.requests`
//! counter, `gunicorn.request.duration` timer in milliseconds,
//! `gunicorn.request.status.NNN` counter, `gunicorn.workers` gauge (the master), and
//! `gunicorn.log.LEVEL` counters; behind `--statsd-prefix` joined with one dot, with
//! `|#TAGS` (`--dogstatsd-tags`) after each. A request's three lines go in one
//! datagram, separated by newlines (statsd, Telegraf and the Datadog agent read
//! several metrics a datagram).

use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// gunicorn's default statsd port.
const DEFAULT_PORT: u16 = 8125;
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// Where statsd listens: resolved once, when the settings are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsdTarget {
    Udp(SocketAddr),
    Unix(PathBuf),
}

impl StatsdTarget {
    /// `HOST:PORT`, `HOST` (port 8125) or `unix:PATH`, as gunicorn reads them.
    pub fn parse(text: &str) -> Result<StatsdTarget, String> {
        let what = || format!("statsd-host: {text:?} is not HOST:PORT or unix:PATH");
        if let Some(path) = text.strip_prefix("unix:") {
            // gunicorn reads `unix:8125` as the host named unix (a regression it keeps).
            if !path.is_empty() && path.parse::<u16>().is_err() {
                return Ok(StatsdTarget::Unix(path.into()));
            }
        }
        let with_port = match text.rsplit_once(':') {
            Some((_, port)) if port.parse::<u16>().is_ok() && !text.ends_with(']') => {
                text.to_string()
            }
            _ if text.contains(':') && !text.starts_with('[') => {
                format!("[{text}]:{DEFAULT_PORT}")
            }
            _ => format!("{text}:{DEFAULT_PORT}"),
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("{}: {e}", what()))?
            .next()
            .ok_or_else(what)?;
        Ok(StatsdTarget::Udp(addr))
    }
}

/// The statsd settings, checked once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsdSettings {
    pub target: StatsdTarget,
    /// `--statsd-prefix` with gunicorn's one trailing dot (empty: none).
    pub prefix: String,
    /// `--dogstatsd-tags` as given (comma-separated `key:value`).
    pub tags: String,
}

impl StatsdSettings {
    pub fn new(target: StatsdTarget, prefix: &str, tags: &str) -> StatsdSettings {
        // gunicorn: sub(r"^(.+[^.]+)\.*$", "\g<1>.", prefix)
        let trimmed = prefix.trim_end_matches('.');
        let prefix = match trimmed.is_empty() {
            true => prefix.to_string(),
            false => format!("{trimmed}."),
        };
        StatsdSettings {
            target,
            prefix,
            tags: tags.to_string(),
        }
    }
}

enum Sock {
    /// Connected once, as gunicorn's is: each datagram is a plain `send`, which egress's
    /// filter does not trap (a `sendto` with an address would be judged every time).
    Udp(UdpSocket),
    Unix(UnixDatagram, PathBuf),
}

/// A process's statsd client.
pub struct Statsd {
    sock: Sock,
    settings: StatsdSettings,
    dropped: AtomicU64,
    /// When drops were last reported.
    reported: Mutex<Option<Instant>>,
}

impl Statsd {
    /// A non-blocking socket toward the target (made in each process that sends).
    pub fn open(settings: StatsdSettings) -> io::Result<Statsd> {
        let sock = match &settings.target {
            StatsdTarget::Udp(addr) => {
                let local: SocketAddr = match addr {
                    SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
                    SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
                };
                let s = UdpSocket::bind(local)?;
                s.connect(addr)?;
                s.set_nonblocking(true)?;
                Sock::Udp(s)
            }
            StatsdTarget::Unix(path) => {
                let s = UnixDatagram::unbound()?;
                s.set_nonblocking(true)?;
                Sock::Unix(s, path.clone())
            }
        };
        Ok(Statsd {
            sock,
            settings,
            dropped: AtomicU64::new(0),
            reported: Mutex::new(None),
        })
    }

    fn line(&self, out: &mut String, name: &str, value: std::fmt::Arguments<'_>, kind: &str) {
        use std::fmt::Write;
        if !out.is_empty() {
            out.push('\n');
        }
        let _ = write!(
            out,
            "{}gunicorn.{name}:{value}|{kind}",
            self.settings.prefix
        );
        if !self.settings.tags.is_empty() {
            out.push_str("|#");
            out.push_str(&self.settings.tags);
        }
    }

    /// A request answered: `requests`, `request.duration` (ms) and `request.status.NNN`.
    pub(crate) fn request(&self, status: u16, duration: Duration) {
        let mut msg = String::with_capacity(160);
        let ms = duration.as_secs_f64() * 1e3;
        self.line(&mut msg, "requests", format_args!("1"), "c|@1.0");
        self.line(&mut msg, "request.duration", format_args!("{ms:.3}"), "ms");
        self.line(
            &mut msg,
            &format!("request.status.{status}"),
            format_args!("1"),
            "c|@1.0",
        );
        self.send(msg.as_bytes());
    }

    /// A gauge (`workers`, from the master).
    pub fn gauge(&self, name: &str, value: u64) {
        let mut msg = String::with_capacity(64);
        self.line(&mut msg, name, format_args!("{value}"), "g");
        self.send(msg.as_bytes());
    }

    /// A counter of one (`log.error` and the other `log.LEVEL` counters).
    pub fn increment(&self, name: &str) {
        let mut msg = String::with_capacity(64);
        self.line(&mut msg, name, format_args!("1"), "c|@1.0");
        self.send(msg.as_bytes());
    }

    fn send(&self, msg: &[u8]) {
        let sent = match &self.sock {
            Sock::Udp(s) => s.send(msg),
            Sock::Unix(s, path) => s.send_to(msg, path),
        };
        if let Err(e) = sent {
            self.dropped.fetch_add(1, Relaxed);
            self.report(&e);
        }
    }

    /// Says in the error log how many datagrams were dropped, at most once a minute.
    fn report(&self, last_error: &io::Error) {
        let Ok(mut last) = self.reported.try_lock() else {
            return;
        };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < REPORT_EVERY) {
            return;
        }
        *last = Some(now);
        let n = self.dropped.swap(0, Relaxed);
        let why = match last_error.kind() {
            io::ErrorKind::PermissionDenied => {
                "refused by the egress policy: allow the statsd address"
            }
            _ => "the receiver is unreachable or slow",
        };
        tracing::warn!("statsd: {n} datagram(s) dropped ({why}: {last_error})");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_prefix() {
        assert_eq!(
            StatsdTarget::parse("127.0.0.1:9125").unwrap(),
            StatsdTarget::Udp("127.0.0.1:9125".parse().unwrap())
        );
        assert_eq!(
            StatsdTarget::parse("127.0.0.1").unwrap(),
            StatsdTarget::Udp("127.0.0.1:8125".parse().unwrap())
        );
        assert_eq!(
            StatsdTarget::parse("unix:/run/statsd.sock").unwrap(),
            StatsdTarget::Unix("/run/statsd.sock".into())
        );
        assert!(StatsdTarget::parse("host.invalid:x").is_err());
        let t = StatsdTarget::Unix("/x".into());
        assert_eq!(StatsdSettings::new(t.clone(), "app", "").prefix, "app.");
        assert_eq!(StatsdSettings::new(t.clone(), "app...", "").prefix, "app.");
        assert_eq!(StatsdSettings::new(t, "", "").prefix, "");
    }

    #[test]
    fn request_lines_reach_a_listener() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = StatsdTarget::Udp(rx.local_addr().unwrap());
        let s = Statsd::open(StatsdSettings::new(target, "web", "env:prod")).unwrap();
        s.request(404, Duration::from_micros(1500));
        let mut buf = [0u8; 512];
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            "web.gunicorn.requests:1|c|@1.0|#env:prod\n\
             web.gunicorn.request.duration:1.500|ms|#env:prod\n\
             web.gunicorn.request.status.404:1|c|@1.0|#env:prod"
        );
    }
}
