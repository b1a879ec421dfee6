//! Clocks: a cheap coarse clock for deadlines and the `Date` field, and UTC calendar
//! fields for log timestamps (no time-zone database needed).

use nix::time::{clock_gettime, ClockId};
use std::cell::RefCell;
use std::ops::Add;
use std::thread::LocalKey;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point on the coarse monotonic clock, in milliseconds.
///
/// Deadlines (header timeout, keep-alive) need milliseconds, not nanoseconds, and
/// `CLOCK_MONOTONIC_COARSE` is read from memory without touching the TSC, which on a
/// VM costs tens of nanoseconds per `Instant::now()`; a request used to read it 8 times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Tick(u64);

impl Tick {
    pub(crate) fn now() -> Tick {
        // This clock exists on every Linux since 2.6.32; it cannot fail.
        match clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE) {
            Ok(t) => Tick(t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000),
            Err(_) => Tick(0),
        }
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub(crate) fn since(self, earlier: Tick) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Tick {
    type Output = Tick;
    fn add(self, d: Duration) -> Tick {
        Tick(
            self.0
                .saturating_add(d.as_millis().min(u64::MAX as u128) as u64),
        )
    }
}

/// Whole seconds since 1970 from the coarse wall clock (a few milliseconds behind at
/// most): enough for the `Date` field, which has one-second resolution.
pub(crate) fn coarse_unix_secs() -> u64 {
    match clock_gettime(ClockId::CLOCK_REALTIME_COARSE) {
        Ok(t) => t.tv_sec().max(0) as u64,
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// Year, month (1-12), day, hour, minute, second.
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

pub fn civil(t: SystemTime) -> Civil {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: (rem % 3600 / 60) as u32,
        second: (rem % 60) as u32,
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `2026-11-23 21:07:11 +0000`, gunicorn's error-log stamp.
pub fn log_stamp(t: SystemTime) -> String {
    let c = civil(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} +0000",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// A thread's stamp of one second: the second since the epoch and its text.
pub(crate) type StampCache = RefCell<(u64, String)>;

/// Hands `f` the text `make` gives for `t`'s second, made once a second per thread
/// (`cache`): a log line's stamp is otherwise seven numbers formatted per request.
pub(crate) fn per_second<R>(
    cache: &'static LocalKey<StampCache>,
    t: SystemTime,
    make: fn(SystemTime) -> String,
    f: impl FnOnce(&str) -> R,
) -> R {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    cache.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, make(t));
        }
        f(&c.1)
    })
}

/// `[23/Nov/2026:21:07:11 +0000]`, the access log's `%(t)s`.
pub fn access_stamp(t: SystemTime) -> String {
    let c = civil(t);
    let mon = MONTHS[(c.month as usize).saturating_sub(1) % 12];
    format!(
        "[{:02}/{mon}/{:04}:{:02}:{:02}:{:02} +0000]",
        c.day, c.year, c.hour, c.minute, c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn coarse_clocks_move_with_the_precise_ones() {
        let (t0, i0) = (Tick::now(), std::time::Instant::now());
        assert!(t0 + Duration::from_millis(5) > t0);
        assert_eq!(t0.since(t0 + Duration::from_secs(1)), Duration::ZERO);
        let wall = coarse_unix_secs();
        let precise = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        assert!(precise.abs_diff(wall) <= 1, "{precise} against {wall}");
        let late = Tick::now().since(t0);
        assert!(late <= i0.elapsed() + Duration::from_millis(20));
    }

    #[test]
    fn known_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_468_031); // 2026-11-23 21:07:11 UTC
        assert_eq!(log_stamp(t), "2026-11-23 21:07:11 +0000");
        assert_eq!(access_stamp(t), "[23/Nov/2026:21:07:11 +0000]");
        assert_eq!(
            log_stamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29 00:00:00 +0000"
        );
    }
}
