//! The error log: gunicorn's line format, to stderr or a file, through `tracing`.

use crate::clock::log_stamp;
use crate::logfile::LogFile;
use std::fmt;
use std::path::Path;
use std::time::SystemTime;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// `--log-level` values, gunicorn's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl std::str::FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warning" | "warn" => Ok(LogLevel::Warning),
            "error" => Ok(LogLevel::Error),
            "critical" => Ok(LogLevel::Critical),
            _ => Err(format!(
                "log-level must be one of debug, info, warning, error, critical (got {s:?})"
            )),
        }
    }
}

impl LogLevel {
    fn max(self) -> Level {
        match self {
            LogLevel::Debug => Level::DEBUG,
            LogLevel::Info => Level::INFO,
            LogLevel::Warning => Level::WARN,
            LogLevel::Error | LogLevel::Critical => Level::ERROR,
        }
    }
}

struct GunicornFormat;

impl<S, N> FormatEvent<S, N> for GunicornFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARNING",
            Level::INFO => "INFO",
            _ => "DEBUG",
        };
        write!(
            w,
            "[{}] [{}] [{level}] ",
            log_stamp(SystemTime::now()),
            std::process::id()
        )?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Installs the error log. `path` None or `-` means stderr. Calling it again is a no-op.
pub fn init(level: LogLevel, path: Option<&Path>) -> Result<(), String> {
    let builder = tracing_subscriber::fmt()
        .event_format(GunicornFormat)
        .with_max_level(level.max());
    let result = match path {
        Some(p) if p != Path::new("-") => {
            let file =
                LogFile::open(p).map_err(|e| format!("error-logfile {}: {e}", p.display()))?;
            builder.with_writer(file).try_init()
        }
        _ => builder.with_writer(std::io::stderr).try_init(),
    };
    // A second init (tests, or ferrule.run called twice) keeps the first logger.
    let _ = result;
    Ok(())
}

/// Logs a message from the Python side at a gunicorn level.
pub fn emit(level: LogLevel, msg: &str) {
    match level {
        LogLevel::Debug => tracing::debug!("{msg}"),
        LogLevel::Info => tracing::info!("{msg}"),
        LogLevel::Warning => tracing::warn!("{msg}"),
        LogLevel::Error | LogLevel::Critical => tracing::error!("{msg}"),
    }
}
