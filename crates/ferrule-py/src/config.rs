//! Settings from the Python front end, checked and turned into typed values once.

use crate::ConfigError;
use ferrule_http::{HeaderMap, ParserConfig};
use ferrule_server::access::{AccessFormat, AccessLog};
use ferrule_server::log::LogLevel;
use ferrule_server::logfile::LogFile;
use ferrule_server::sink::{Report, Sink, Stdout};
use ferrule_server::{parse_bind, AllowIps, Bind, ServerConfig};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The settings as the front end passes them: a dict with these keys.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct Settings {
    bind: Vec<String>,
    threads: i64,
    workers: i64,
    backlog: i64,
    reuse_port: bool,
    keep_alive: f64,
    header_timeout: f64,
    io_timeout: f64,
    response_buffer_size: i64,
    graceful_timeout: f64,
    limit_request_line: i64,
    limit_request_fields: i64,
    limit_request_field_size: i64,
    limit_request_body: i64,
    request_buffering: bool,
    request_buffer_size: i64,
    header_map: String,
    permit_obsolete_folding: bool,
    strip_header_spaces: bool,
    casefold_http_method: bool,
    permit_unconventional_http_method: bool,
    permit_missing_host: bool,
    forwarded_allow_ips: String,
    log_level: String,
    error_logfile: Option<String>,
    access_logfile: Option<String>,
    access_logformat: String,
    script_name: String,
}

/// Where the error log goes and how much of it.
#[derive(Clone)]
pub struct LogSettings {
    pub level: LogLevel,
    pub path: Option<PathBuf>,
}

impl LogSettings {
    /// Starts the error log of this process; a no-op once started.
    pub fn init(&self) -> Result<(), String> {
        ferrule_server::log::init(self.level, self.path.as_deref())
    }
}

fn seconds(name: &str, v: f64) -> Result<Duration, String> {
    // from_secs_f64 panics above u64::MAX seconds (1e300 from a config file).
    match Duration::try_from_secs_f64(v) {
        Ok(d) if v.is_finite() => Ok(d),
        _ => Err(format!(
            "{name} must be a number of seconds >= 0, at most {} (got {v:?})",
            u64::MAX
        )),
    }
}

fn count(name: &str, v: i64, min: i64) -> Result<usize, String> {
    if v < min {
        return Err(format!("{name} must be an integer >= {min} (got {v})"));
    }
    Ok(v as usize)
}

impl Settings {
    /// Checks every value; the error names the setting and says what is wrong.
    fn into_config(self) -> Result<Config, String> {
        let mut binds = Vec::new();
        for b in &self.bind {
            binds.extend(parse_bind(b)?);
        }
        if binds.is_empty() {
            return Err("bind: at least one address is needed".into());
        }
        let parser = ParserConfig {
            limit_request_line: count("limit-request-line", self.limit_request_line, 0)?,
            limit_request_fields: count("limit-request-fields", self.limit_request_fields, 0)?,
            limit_request_field_size: count(
                "limit-request-field_size",
                self.limit_request_field_size.max(0),
                0,
            )?,
            limit_request_body: count("limit-request-body", self.limit_request_body, 0)? as u64,
            header_map: self.header_map.parse::<HeaderMap>()?,
            permit_obsolete_folding: self.permit_obsolete_folding,
            strip_header_spaces: self.strip_header_spaces,
            casefold_http_method: self.casefold_http_method,
            permit_unconventional_http_method: self.permit_unconventional_http_method,
            permit_missing_host: self.permit_missing_host,
        };
        let server = ServerConfig {
            binds,
            backlog: i32::try_from(count("backlog", self.backlog, 1)?).unwrap_or(i32::MAX),
            reuse_port: self.reuse_port,
            threads: count("threads", self.threads, 1)?,
            workers: count("workers", self.workers, 1)?,
            keep_alive: seconds("keep-alive", self.keep_alive)?,
            header_timeout: seconds("header-timeout", self.header_timeout)?,
            io_timeout: seconds("io-timeout", self.io_timeout)?,
            response_buffer_size: count("response-buffer-size", self.response_buffer_size, 0)?,
            graceful_timeout: seconds("graceful-timeout", self.graceful_timeout)?,
            parser,
            forwarded_allow_ips: AllowIps::parse(&self.forwarded_allow_ips)?,
            script_name: self.script_name.trim_end_matches('/').to_string(),
            request_buffering: self.request_buffering,
            request_buffer_size: count("request-buffer-size", self.request_buffer_size, 0)?,
            request_buffer_dir: None,
        };
        let logs = LogSettings {
            level: self.log_level.parse()?,
            path: self.error_logfile.filter(|p| p != "-").map(PathBuf::from),
        };
        let access = match self.access_logfile {
            None => None,
            Some(path) => {
                let format = AccessFormat::parse(&self.access_logformat)?;
                let target = match path.as_str() {
                    "-" => AccessTarget::Stdout,
                    _ => AccessTarget::File(PathBuf::from(path)),
                };
                // Opened once here so an unwritable path stops start-up (or a reload)
                // with its name, rather than failing in every worker.
                target.open()?;
                Some((target, format))
            }
        };
        Ok(Config {
            server,
            logs,
            access,
        })
    }
}

/// Where the access log goes.
#[derive(Clone)]
enum AccessTarget {
    Stdout,
    File(PathBuf),
}

impl AccessTarget {
    /// The sink counts lines it cannot write and reports them in the error log.
    fn open(&self) -> Result<Sink, String> {
        let dest: Box<dyn ferrule_server::sink::Destination> = match self {
            AccessTarget::Stdout => Box::new(Stdout),
            AccessTarget::File(path) => Box::new(
                LogFile::open(path)
                    .map_err(|e| format!("access-logfile {}: {e}", path.display()))?,
            ),
        };
        Ok(Sink::new("access log", dest, Report::ErrorLog))
    }
}

/// The settings, checked once into typed values. The front end makes one with
/// `Config(settings)` at start-up and on each reload, where a bad value is one error
/// naming the setting; `bind` and `serve` take it as it is.
#[pyclass(frozen, module = "ferrule._ferrule")]
#[derive(Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub logs: LogSettings,
    access: Option<(AccessTarget, AccessFormat)>,
}

/// The access log this process serves with, for Python logging's `gunicorn.access`.
static ACCESS_SINK: Mutex<Option<Arc<Sink>>> = Mutex::new(None);

/// Writes a whole line to this process's access log; false when there is none or the
/// line was lost (and counted).
pub fn access_line(line: &[u8]) -> bool {
    let sink = ACCESS_SINK
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    sink.is_some_and(|s| s.write_line(line))
}

impl Config {
    /// Opens the access log for this process, if there is one.
    pub fn access_log(&self) -> Result<Option<AccessLog>, String> {
        let Some((target, format)) = &self.access else {
            return Ok(None);
        };
        let sink = Arc::new(target.open()?);
        *ACCESS_SINK.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink.clone());
        Ok(Some(AccessLog::new(format.clone(), sink)))
    }
}

#[pymethods]
impl Config {
    #[new]
    fn py_new(settings: Settings) -> PyResult<Config> {
        settings.into_config().map_err(ConfigError::new_err)
    }

    /// The same settings serving the inherited listening descriptors `fds` instead of
    /// binding: a worker serves the sockets its master bound.
    fn inherit(&self, fds: Vec<i32>) -> PyResult<Config> {
        if fds.is_empty() {
            return Err(ConfigError::new_err(
                "inherit: no listening descriptor given",
            ));
        }
        let mut config = self.clone();
        config.server.binds = fds.into_iter().map(Bind::Fd).collect();
        Ok(config)
    }
}
