//! The error log: gunicorn's line format, to stderr or a file, through `tracing`.
//!
//! Lines go through a [`Sink`], so a closed stderr or a full disk loses lines (counted
//! and reported later) instead of failing the caller. Lines a client can cause at will
//! go through a [`Throttle`] first (`throttle.rs`).

use crate::logfile::LogFile;
use crate::logline::{line, prefix};
use crate::metrics::{log_line, LogCounter};
use crate::sink::{Destination, Report, Sink, Stderr, ERROR_LOG};
use crate::syslog::{Stream, SyslogDest, SyslogSettings};
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Registry};

pub mod forward;
mod throttle;
pub use throttle::{flush_suppressed, Throttle, PER_SECOND, SUMMARY_EVERY_SECS};

/// Requests refused before the app saw them (bad bytes, a bad body): a fuzzer makes
/// thousands a second.
pub static INVALID_REQUESTS: Throttle = Throttle::new("invalid requests", Level::WARN);

/// uwsgi connections refused because their peer is not in `--uwsgi-allow-from`: a
/// scanner makes one per connection.
pub static REFUSED_UWSGI_PEERS: Throttle =
    Throttle::new("uwsgi connections refused for their peer", Level::WARN);

/// Connections closed with a request head still incomplete (`--header-timeout`): a
/// slowloris makes one per connection.
pub static SLOW_HEADS: Throttle = Throttle::new(
    "connections closed for an incomplete request head",
    Level::WARN,
);

/// Connections closed with a request body read ahead still incomplete (`--io-timeout`
/// between reads, `preread.rs`): a slow uploader makes one per connection.
pub static SLOW_BODIES: Throttle = Throttle::new(
    "connections closed for a request body that stopped arriving",
    Level::WARN,
);

/// Connections closed at their PROXY protocol preamble (`preamble.rs`): no header, a
/// malformed one, or one from a peer that may not send it; a scanner makes one each.
pub static PROXY_REFUSALS: Throttle =
    Throttle::new("connections refused at their PROXY header", Level::WARN);

/// TLS handshakes that failed, and plain HTTP sent to a TLS port (`handshake.rs`);
/// also TLS ClientHellos sent to a plain port (`driver/http1.rs`).
pub static TLS_FAILURES: Throttle = Throttle::new("failed TLS handshakes", Level::WARN);

/// Request bodies too large for memory that could not be written to a temporary file
/// (`preread.rs`): a full disk fails every one until it has room.
pub static SPILL_FAILURES: Throttle = Throttle::new(
    "request bodies that could not be written to a temporary file",
    Level::ERROR,
);

/// The target of a line that carries an app's traceback: statsd counts it as
/// `log.exception`, not `log.error` (gunicorn's `Logger.exception`).
pub const EXCEPTION: &str = "ferrule::exception";

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
    fn of(level: Level) -> LogLevel {
        match level {
            Level::ERROR => LogLevel::Error,
            Level::WARN => LogLevel::Warning,
            Level::INFO => LogLevel::Info,
            _ => LogLevel::Debug,
        }
    }

    /// gunicorn's name for it, as the error log's lines show it.
    fn name(self) -> &'static str {
        match self {
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warning => "WARNING",
            LogLevel::Error => "ERROR",
            LogLevel::Critical => "CRITICAL",
        }
    }

    fn filter(self) -> LevelFilter {
        match self {
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Warning => LevelFilter::WARN,
            LogLevel::Error => LevelFilter::ERROR,
            // tracing has no level above ERROR: at critical it is off, and the critical
            // lines, which pass any level, are written by `emit` itself.
            LogLevel::Critical => LevelFilter::OFF,
        }
    }
}

/// Changes the level of the running error log.
static LEVEL: OnceLock<reload::Handle<LevelFilter, Registry>> = OnceLock::new();

/// Hands `tracing` a writer that never fails: each event is one `write_all` of a whole
/// line, which the sink writes or counts as lost.
struct ErrorWriter(Arc<Sink>);

struct EventWriter<'a>(&'a Sink);

impl io::Write for EventWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_line(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for ErrorWriter {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> EventWriter<'a> {
        EventWriter(&self.0)
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
            Level::ERROR => {
                log_line(match event.metadata().target() {
                    EXCEPTION => LogCounter::Exception,
                    _ => LogCounter::Error,
                });
                "ERROR"
            }
            Level::WARN => {
                log_line(LogCounter::Warning);
                "WARNING"
            }
            Level::INFO => "INFO",
            _ => "DEBUG",
        };
        if forward::active() {
            // To Python logging: the message alone (its formatter makes the line), and
            // nothing for the writer to write.
            let mut msg = String::new();
            ctx.field_format()
                .format_fields(Writer::new(&mut msg), event)?;
            forward::send(LogLevel::of(*event.metadata().level()), msg);
            return Ok(());
        }
        w.write_str(&prefix(level))?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Installs the error log. `path` None or `-` means stderr; with `syslog` its lines go
/// there too (`syslog.rs`). Calling it again is a no-op (tests, or `ferrule.run`
/// called twice, keep the first logger).
pub fn init(
    level: LogLevel,
    path: Option<&Path>,
    syslog: Option<&SyslogSettings>,
) -> Result<(), String> {
    if ERROR_LOG.get().is_some() {
        return Ok(());
    }
    let dest: Box<dyn Destination> = match path {
        Some(p) if p != Path::new("-") => {
            Box::new(LogFile::open(p).map_err(|e| format!("error-logfile {}: {e}", p.display()))?)
        }
        _ => Box::new(Stderr),
    };
    let dest: Box<dyn Destination> = match syslog {
        Some(settings) => Box::new(SyslogDest::new(
            crate::syslog::install(settings),
            Stream::Error,
            Some(dest),
        )),
        None => dest,
    };
    let sink = Arc::new(Sink::new("error log", dest, Report::Inline));
    let (filter, handle) = reload::Layer::new(level.filter());
    let format = tracing_subscriber::fmt::layer()
        .event_format(GunicornFormat)
        .with_writer(ErrorWriter(sink.clone()))
        .log_internal_errors(false);
    if tracing_subscriber::registry()
        .with(filter)
        .with(format)
        .try_init()
        .is_ok()
    {
        let _ = ERROR_LOG.set(sink);
        let _ = LEVEL.set(handle);
    }
    Ok(())
}

/// Reports the error log's lost lines now, if it can (the process is stopping).
pub fn report_losses() {
    if let Some(sink) = ERROR_LOG.get() {
        sink.report_now();
    }
}

/// Changes the level of the error log (a reload with a new `--log-level`).
pub fn set_level(level: LogLevel) {
    if let Some(handle) = LEVEL.get() {
        let _ = handle.reload(level.filter());
    }
}

/// Logs an exception from the Python side (`Logger.exception`, a traceback in
/// `msg`): an ERROR line counted as `log.exception`.
pub fn emit_exception(msg: &str) {
    if ERROR_LOG.get().is_none() {
        return emit(LogLevel::Error, msg);
    }
    tracing::error!(target: EXCEPTION, "{msg}");
}

/// Logs a message from the Python side at a gunicorn level.
/// Before [`init`] (an app logging while it is imported, before `ferrule.run`), lines
/// at info and above go to stderr in the same format rather than nowhere.
pub fn emit(level: LogLevel, msg: &str) {
    if ERROR_LOG.get().is_none() {
        if level != LogLevel::Debug {
            let name = match level {
                LogLevel::Info => "INFO",
                LogLevel::Warning => "WARNING",
                LogLevel::Critical => "CRITICAL",
                _ => "ERROR",
            };
            Stderr.write_line(line(name, msg).as_bytes()).ok();
        }
        return;
    }
    match level {
        LogLevel::Debug => tracing::debug!("{msg}"),
        LogLevel::Info => tracing::info!("{msg}"),
        LogLevel::Warning => tracing::warn!("{msg}"),
        LogLevel::Error => tracing::error!("{msg}"),
        // gunicorn's [CRITICAL]: above every level, so written whatever the level is.
        LogLevel::Critical => {
            log_line(LogCounter::Critical);
            if !forward::send(level, msg.to_string()) {
                write_line(level, msg);
            }
        }
    }
}

/// Writes a line to the error log at `level` whatever the log's level and whether
/// records go to Python: for Python logging's handler of ferrule's error log (its
/// logger has judged the level, and the record must not go round to Python again).
pub fn write_line(level: LogLevel, msg: &str) {
    let text = line(level.name(), msg);
    match ERROR_LOG.get() {
        Some(sink) => {
            sink.write_line(text.as_bytes());
        }
        None => {
            Stderr.write_line(text.as_bytes()).ok();
        }
    }
}
