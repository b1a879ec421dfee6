//! Numeric settings: each one's range, and the checks that turn a Python value into
//! a typed one or one line naming the setting (never a panic, whatever the number).

use pyo3::prelude::*;
use pyo3::types::PyBool;
use std::time::Duration;

/// Most threads per worker: each has slots allocated at start-up, and one process
/// cannot run more (every thread's stack is a mapping, `vm.max_map_count` is 65530).
pub const MAX_THREADS: i64 = 65536;
/// Most worker processes: the kernel's ceiling on process ids (`PID_MAX_LIMIT`).
pub const MAX_WORKERS: i64 = 1 << 22;
/// `listen(2)` takes an int; the kernel caps it at `net.core.somaxconn` anyway.
pub(super) const MAX_BACKLOG: i64 = i32::MAX as i64;
/// A wait longer than this is "never" in practice; capping it keeps `Instant + wait`
/// from overflowing (a panic) anywhere in the server. About 100 years.
pub(super) const LONGEST_WAIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A number of seconds: finite, >= 0, at most u64::MAX (what a `Duration` holds).
pub(super) fn seconds(name: &str, v: &Bound<'_, PyAny>) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{name} must be a number of seconds >= 0, at most {} (got {v})",
            u64::MAX
        )
    };
    if v.is_instance_of::<PyBool>() {
        return Err(bad());
    }
    let secs = v.extract::<f64>().map_err(|_| bad())?;
    // try_from_secs_f64 refuses NaN, negatives and values past u64::MAX seconds.
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if secs.is_finite() => Ok(d.min(LONGEST_WAIT)),
        _ => Err(bad()),
    }
}

/// An integer from `min` to `max`; the message keeps the `>= min` form below `min`.
pub(super) fn integer(name: &str, v: &Bound<'_, PyAny>, min: i64, max: i64) -> Result<i64, String> {
    let n = match v.is_instance_of::<PyBool>() {
        true => None,
        false => v.extract::<i64>().ok(),
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        Some(n) if n < min => Err(format!("{name} must be an integer >= {min} (got {n})")),
        _ => Err(format!(
            "{name} must be an integer >= {min}, at most {max} (got {v})"
        )),
    }
}

/// A count or size held in a `usize`: `min` to `max`, at most i64::MAX (`usize` on
/// 64-bit targets; a 32-bit one refuses what it cannot hold).
pub(super) fn count(name: &str, v: &Bound<'_, PyAny>, min: i64, max: i64) -> Result<usize, String> {
    let max = max.min(i64::try_from(usize::MAX).unwrap_or(i64::MAX));
    let n = integer(name, v, min, max)?;
    usize::try_from(n).map_err(|_| format!("{name} must be an integer >= {min} (got {n})"))
}

/// Sizes and limits have no ceiling of their own: the front end's i64 is it.
pub(super) const ANY: i64 = i64::MAX;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::defaults::tests::{config, default_settings};

    #[test]
    fn bad_numbers_are_refused_naming_the_setting() {
        Python::initialize();
        Python::attach(|py| {
            let seconds = [
                "keep_alive",
                "header_timeout",
                "io_timeout",
                "graceful_timeout",
            ];
            let integers = [
                "threads",
                "workers",
                "backlog",
                "response_buffer_size",
                "limit_request_line",
                "limit_request_fields",
                "limit_request_field_size",
                "limit_request_body",
                "request_buffer_size",
            ];
            let bad = "[1e300, -1, float('nan'), float('inf'), float('-inf'), 10**20, -10**20, True, '3', None]";
            let bad = py
                .eval(&std::ffi::CString::new(bad).unwrap(), None, None)
                .unwrap();
            for key in seconds.iter().chain(&integers) {
                for value in bad.try_iter().unwrap() {
                    let value = value.unwrap();
                    let d = default_settings(py);
                    d.set_item(*key, &value).unwrap();
                    let err = match config(&d) {
                        Ok(_) => panic!("{key} = {value} was accepted"),
                        Err(e) => e,
                    };
                    let name = key.replace('_', "-");
                    let name = name.replace("field-size", "field_size");
                    assert!(err.contains(&name), "{key} = {value}: {err}");
                    assert!(!err.contains('\n'), "{key} = {value}: {err}");
                }
            }
            // Past every real need, but what the types hold: accepted, waits capped.
            let d = default_settings(py);
            d.set_item("keep_alive", 1e18).unwrap();
            d.set_item("graceful_timeout", u64::MAX as f64 / 2.0)
                .unwrap();
            let server = config(&d).unwrap().server;
            assert_eq!(server.keep_alive, LONGEST_WAIT);
            assert_eq!(server.graceful_timeout, LONGEST_WAIT);
            let d = default_settings(py);
            d.set_item("threads", MAX_THREADS + 1).unwrap();
            assert!(config(&d)
                .err()
                .is_some_and(|e| e.contains("at most 65536")));
            d.set_item("threads", MAX_THREADS).unwrap();
            assert!(config(&d).is_ok());
        });
    }
}
