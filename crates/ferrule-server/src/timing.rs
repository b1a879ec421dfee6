//! Per-request timing: how long a request waited for a thread, for the queue
//! histogram, `--server-timing` and the `%(Q)s`/`%(F)s` access-log atoms. Kept only
//! when one of those asks for it, and with no clock read of its own per request.
//!
//! The wait ends at the request's start (`Exchange::started`, the runner's stamp),
//! from which the app is called without waiting. It starts when the bytes that
//! completed the request's head reached the kernel: the receive time of the newest
//! segment of the read that completed it (`SO_TIMESTAMPNS`, `sys::receive_time`,
//! kept in `Conn::rx`), so it covers the time a request sat in the socket while every
//! thread was inside the app. Where the kernel gives no time (unix sockets), it starts
//! when a runner took the request's event (a new connection: its listener's) from
//! epoll (`Conn::queued`, set by the runner from the stamp it reads after each wait).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `--server-timing`: off (the default), on (unless the app sent its own
/// `Server-Timing`), always (appended to the app's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerTiming {
    #[default]
    Off,
    On,
    Always,
}

impl ServerTiming {
    pub fn parse(text: &str) -> Result<ServerTiming, String> {
        match text.to_ascii_lowercase().as_str() {
            "off" | "false" | "no" | "0" | "" => Ok(ServerTiming::Off),
            "on" | "true" | "yes" | "1" => Ok(ServerTiming::On),
            "always" => Ok(ServerTiming::Always),
            _ => Err(format!("server-timing: {text:?} is not off, on or always")),
        }
    }
}

/// A request's times, kept in its exchange.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Waiting for a thread: from its event taken from epoll to the request's start.
    pub(crate) queue: Duration,
    /// The request's start: its head is parsed (microseconds) and the app called.
    pub(crate) app_start: Instant,
    /// When the response head was complete (its first byte leaves with it).
    pub(crate) head_at: Option<Instant>,
}

/// `CLOCK_REALTIME` (the kernel's receive times) against `Instant` (the runners'
/// stamps): the wall time at an origin (the scheduler's epoch), refreshed by the
/// monitor every tick, so a request reads no clock for it and a step of the wall
/// clock is followed within a tick.
pub(crate) struct WallClock {
    origin: Instant,
    /// Nanoseconds since the Unix epoch at `origin`.
    at_origin: AtomicU64,
}

impl WallClock {
    pub(crate) fn new(origin: Instant) -> WallClock {
        let c = WallClock {
            origin,
            at_origin: AtomicU64::new(0),
        };
        c.refresh();
        c
    }

    pub(crate) fn refresh(&self) {
        let now = Instant::now();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let since = now.saturating_duration_since(self.origin).as_nanos() as u64;
        self.at_origin.store(wall.saturating_sub(since), Relaxed);
    }

    /// Nanoseconds from the wall time `rx` to `nanos` after the origin (0 if `rx` is
    /// later).
    #[inline]
    pub(crate) fn nanos_since(&self, rx: u64, nanos: u64) -> u64 {
        (self.at_origin.load(Relaxed) + nanos).saturating_sub(rx)
    }
}

/// The field's value, in milliseconds with three decimals: `queue;dur=0.012, app;dur=3.400`.
pub(crate) fn server_timing_value(queue: Duration, app: Duration) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!("queue;dur={:.3}, app;dur={:.3}", ms(queue), ms(app))
}

/// Whether a head being built (`head`, from its status line) has a `Server-Timing` field.
pub(crate) fn has_server_timing(head: &[u8]) -> bool {
    const NAME: &[u8] = b"\nserver-timing:";
    head.windows(NAME.len())
        .any(|w| w.eq_ignore_ascii_case(NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_times_become_waits() {
        let origin = Instant::now();
        let c = WallClock::new(origin);
        let now = origin.elapsed().as_nanos() as u64;
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let waited = c.nanos_since(wall - 600_000_000, now);
        assert!((590_000_000..610_000_000).contains(&waited), "{waited}");
        assert_eq!(c.nanos_since(wall + 1_000_000_000, now), 0);
    }

    #[test]
    fn parses_and_formats() {
        assert_eq!(ServerTiming::parse("ON").unwrap(), ServerTiming::On);
        assert_eq!(ServerTiming::parse("always").unwrap(), ServerTiming::Always);
        assert_eq!(ServerTiming::parse("off").unwrap(), ServerTiming::Off);
        assert!(ServerTiming::parse("sometimes").is_err());
        assert_eq!(
            server_timing_value(Duration::from_micros(120), Duration::from_micros(3400)),
            "queue;dur=0.120, app;dur=3.400"
        );
        assert!(has_server_timing(
            b"HTTP/1.1 200 OK\r\nServer-Timing: db;dur=2\r\n"
        ));
        assert!(!has_server_timing(
            b"HTTP/1.1 200 OK\r\nX-Server-Timing: 1\r\n"
        ));
    }
}
