//! The error log's line format, gunicorn's: `[2026-11-23 21:07:11 +0000] [42] [INFO] `.
//! Shared by the `tracing` formatter (`log.rs`) and the lines a sink writes itself
//! (its loss notices, `sink.rs`).

use crate::clock::log_stamp;
use std::time::SystemTime;

/// The start of an error-log line: `[2026-11-23 21:07:11 +0000] [42] [INFO] `.
pub(crate) fn prefix(level: &str) -> String {
    format!(
        "[{}] [{}] [{level}] ",
        log_stamp(SystemTime::now()),
        std::process::id()
    )
}

/// A whole error-log line, for lines written without `tracing`.
pub(crate) fn line(level: &str, msg: &str) -> String {
    format!("{}{msg}\n", prefix(level))
}
