//! Rate limiting for log lines a client (or the OS) can cause at will: a fuzzer's
//! malformed requests, a slowloris's timed-out heads, a failing `accept`.
//!
//! Each kind of message is a [`Throttle`] (a `static`): at most [`PER_SECOND`] lines a
//! second are written; the rest are counted, and one line says how many were not
//! logged, when the flood ends (a second without any) or every [`SUMMARY_EVERY_SECS`] while
//! it lasts, as HAProxy and journald do. At `--log-level debug` nothing is suppressed.

use nix::time::{clock_gettime, ClockId};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use tracing::Level;

/// Lines of one kind written per second before the rest are only counted.
pub const PER_SECOND: u32 = 10;

/// During a long flood, how often the count of suppressed lines is written.
pub const SUMMARY_EVERY_SECS: u64 = 10;

/// One kind of log line, rate limited.
pub struct Throttle {
    /// How the summary names the suppressed lines: "invalid requests".
    what: &'static str,
    level: Level,
    /// The current second (high 32 bits) and the lines written in it (low 32 bits).
    second: AtomicU64,
    /// Lines suppressed since the last summary.
    suppressed: AtomicU64,
    /// When the first of those was suppressed (milliseconds, 0: none).
    since_ms: AtomicU64,
    /// Whether [`flush_suppressed`] knows this throttle.
    registered: AtomicBool,
}

/// Throttles that suppressed something at least once, for [`flush_suppressed`].
static REGISTERED: Mutex<Vec<&'static Throttle>> = Mutex::new(Vec::new());

/// Milliseconds on the coarse monotonic clock (read from memory, no syscall).
fn now_ms() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE) {
        Ok(t) => (t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000).max(1),
        Err(_) => 1,
    }
}

impl Throttle {
    /// `what` names the lines in the summary ("invalid requests"); `level` is the
    /// level they (and so the summary) are logged at.
    pub const fn new(what: &'static str, level: Level) -> Throttle {
        Throttle {
            what,
            level,
            second: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            since_ms: AtomicU64::new(0),
            registered: AtomicBool::new(false),
        }
    }

    /// Whether to write the next line of this kind; false counts it as suppressed.
    pub fn allow(&'static self) -> bool {
        if tracing::enabled!(Level::DEBUG) {
            return true;
        }
        self.allow_at(now_ms())
    }

    fn allow_at(&'static self, now: u64) -> bool {
        let sec = now / 1000;
        let mut cur = self.second.load(Ordering::Relaxed);
        loop {
            let (cur_sec, written) = (cur >> 32, cur as u32);
            // A thread whose clock read is a little older counts in the current second.
            let next = if cur_sec >= sec {
                if written >= PER_SECOND {
                    self.suppress(now);
                    return false;
                }
                cur + 1
            } else {
                (sec << 32) | 1
            };
            match self
                .second
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) if cur_sec < sec => {
                    // A new second: a flood that goes on says how much it hid.
                    self.summarize_if(now, |since| {
                        now.saturating_sub(since) >= SUMMARY_EVERY_SECS * 1000
                    });
                    return true;
                }
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    fn suppress(&'static self, now: u64) {
        let _ = self
            .since_ms
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        if !self.registered.swap(true, Ordering::Relaxed) {
            REGISTERED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(self);
        }
    }

    /// Writes the summary when lines were suppressed and `due(since_ms)` says so.
    fn summarize_if(&self, now: u64, due: impl Fn(u64) -> bool) {
        let since = self.since_ms.load(Ordering::Relaxed);
        if since == 0 || !due(since) {
            return;
        }
        // The swap makes each suppressed line counted in exactly one summary.
        let n = self.suppressed.swap(0, Ordering::Relaxed);
        self.since_ms.store(0, Ordering::Relaxed);
        if n > 0 {
            self.write_summary(n, now.saturating_sub(since));
        }
    }

    fn write_summary(&self, n: u64, over_ms: u64) {
        let secs = over_ms.div_ceil(1000).max(1);
        let msg = format!(
            "{}: {n} more in the last {secs} s, not logged one by one (at most {PER_SECOND} a second are; --log-level debug logs each)",
            self.what
        );
        match self.level {
            Level::ERROR => tracing::error!("{msg}"),
            Level::WARN => tracing::warn!("{msg}"),
            _ => tracing::info!("{msg}"),
        }
    }

    /// The summary once the flood is over: a whole second went by without a line of
    /// this kind, or `force` (the server is stopping).
    fn flush(&self, now: u64, force: bool) {
        // Quiet: no line in the whole of the last second.
        let quiet = (self.second.load(Ordering::Relaxed) >> 32) + 1 < now / 1000;
        if force || quiet {
            self.summarize_if(now, |_| true);
        } else {
            self.summarize_if(now, |since| {
                now.saturating_sub(since) >= SUMMARY_EVERY_SECS * 1000
            });
        }
    }
}

/// Writes the summaries that are due (the server's monitor calls this a few times a
/// second, so the count of a flood that ended appears within about a second); `force`
/// writes every pending one (at stop).
pub fn flush_suppressed(force: bool) {
    let throttles: Vec<&'static Throttle> =
        REGISTERED.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let now = now_ms();
    for t in throttles {
        t.flush(now, force);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_per_second_lines_then_counted() {
        static T: Throttle = Throttle::new("test lines", Level::WARN);
        let base = 1_000_000;
        let allowed = (0..100).filter(|_| T.allow_at(base + 10)).count();
        assert_eq!(allowed, PER_SECOND as usize);
        assert_eq!(
            T.suppressed.load(Ordering::Relaxed),
            100 - PER_SECOND as u64
        );
        // The next second writes again; the count waits for the flood to end.
        assert!(T.allow_at(base + 1010));
        assert_eq!(
            T.suppressed.load(Ordering::Relaxed),
            100 - PER_SECOND as u64
        );
        // Once a whole second went by without one, the flush takes the count (once).
        T.flush(base + 2500, false);
        assert_eq!(
            T.suppressed.load(Ordering::Relaxed),
            100 - PER_SECOND as u64
        );
        T.flush(base + 3500, false);
        assert_eq!(T.suppressed.load(Ordering::Relaxed), 0);
        assert_eq!(T.since_ms.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_long_flood_is_summarized_every_ten_seconds() {
        static T: Throttle = Throttle::new("test lines", Level::WARN);
        let base = 5_000_000;
        for s in 0..25u64 {
            for _ in 0..20 {
                T.allow_at(base + s * 1000);
            }
            // Still flooding: the flush writes nothing before ten seconds.
            T.flush(base + s * 1000 + 1, false);
            let pending = T.suppressed.load(Ordering::Relaxed);
            assert!(
                pending <= (20 - u64::from(PER_SECOND)) * 10,
                "{s}: {pending}"
            );
        }
    }

    #[test]
    fn flush_during_a_flood_waits_and_force_takes_all() {
        static T: Throttle = Throttle::new("test lines", Level::WARN);
        let base = 9_000_000;
        for _ in 0..50 {
            T.allow_at(base);
        }
        T.flush(base + 100, false);
        assert_eq!(
            T.suppressed.load(Ordering::Relaxed),
            50 - u64::from(PER_SECOND)
        );
        T.flush(base + 200, true);
        assert_eq!(T.suppressed.load(Ordering::Relaxed), 0);
    }
}
