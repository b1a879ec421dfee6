//! Per-request timing: how long a request waited for a thread, for the queue
//! histogram, `--server-timing` and the `%(Q)s`/`%(F)s` access-log atoms. Kept only
//! when one of those asks for it, and with no clock read of its own: the wait starts
//! when a runner took the request's event (a new connection: its listener's) from
//! epoll (`Conn::queued`, set by the runner from the stamp it reads after each wait),
//! and ends at the request's start (`Exchange::started`, the runner's stamp), from
//! which the app is called without waiting.

use std::time::{Duration, Instant};

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

impl Timing {
    /// A request that started at `started`, queued since `queued` (None: it did not
    /// wait, as a pipelined request read right after the one before).
    pub(crate) fn start(queued: Option<Instant>, started: Instant) -> Timing {
        Timing {
            queue: queued.map_or(Duration::ZERO, |q| started.saturating_duration_since(q)),
            app_start: started,
            head_at: None,
        }
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
