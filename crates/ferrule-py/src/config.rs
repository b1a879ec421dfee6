//! Settings from the Python front end, checked and turned into typed values once.

pub mod defaults;
mod numbers;
pub mod observe;
mod syslog;

use observe::ObserveSettings;
#[cfg(test)]
mod tls_tests;

use numbers::{count, integer, seconds, ANY, MAX_BACKLOG, MAX_THREADS, MAX_WORKERS};

use crate::{ConfigError, EgressLogError, TlsError};
use ferrule_http::{HeaderMap, ParserConfig, ProxyMode, SchemeHeaders};
use ferrule_server::access::{AccessFormat, AccessLog};
use ferrule_server::egress::{self, EgressLog, EgressSettings};
use ferrule_server::log::LogLevel;
use ferrule_server::logfile::LogFile;
use ferrule_server::sink::{Destination, Report, Sink, Stdout};
use ferrule_server::syslog::{Stream, SyslogDest, SyslogSettings};
use ferrule_server::{
    check_tls_binds, cipher_suites, parse_bind, AllowIps, Bind, CertReqs, Endpoint, Protocol,
    RemoteAddrFrom, ServerConfig, TlsFiles, TlsSettings,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use syslog::syslog_settings;

/// The settings as the front end passes them: a dict with these keys. Numbers are
/// taken as Python objects and checked here, so a value too large for an i64 (or
/// not a number at all, from `ferrule.run(...)` keywords) is the same one-line
/// `ConfigError` as any other bad value.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct Settings<'py> {
    bind: Vec<String>,
    threads: Bound<'py, PyAny>,
    workers: Bound<'py, PyAny>,
    backlog: Bound<'py, PyAny>,
    reuse_port: bool,
    keep_alive: Bound<'py, PyAny>,
    header_timeout: Bound<'py, PyAny>,
    io_timeout: Bound<'py, PyAny>,
    response_buffer_size: Bound<'py, PyAny>,
    graceful_timeout: Bound<'py, PyAny>,
    limit_request_line: Bound<'py, PyAny>,
    limit_request_fields: Bound<'py, PyAny>,
    limit_request_field_size: Bound<'py, PyAny>,
    limit_request_body: Bound<'py, PyAny>,
    request_buffering: bool,
    request_buffer_size: Bound<'py, PyAny>,
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
    proxy_protocol: String,
    proxy_allow_ips: String,
    // Trusted proxies' headers.
    secure_scheme_headers: Bound<'py, PyAny>,
    forwarded_remote_addr: String,
    protocol: String,
    uwsgi_allow_ips: String,
    // TLS: files read once, here in the master (`TlsSettings::load`).
    certfile: Option<String>,
    keyfile: Option<String>,
    ca_certs: Option<String>,
    cert_reqs: Bound<'py, PyAny>,
    // TLS settings beside the certificate.
    ciphers: Option<String>,
    // Metrics (`metrics.rs`); absent keys keep them off (`ferrule.run` callers).
    #[pyo3(default)]
    metrics_bind: Option<String>,
    #[pyo3(default)]
    statsd_host: Option<String>,
    #[pyo3(default)]
    statsd_prefix: String,
    #[pyo3(default)]
    dogstatsd_tags: String,
    #[pyo3(default)]
    server_timing: Option<String>,
    // Egress (issue 25): on when a log or any rule is given.
    egress_log: Option<String>,
    egress_deny: Vec<String>,
    egress_allow: Vec<String>,
    // Syslog (gunicorn's `syslog*` settings, `syslog.rs`); absent keys keep it off.
    #[pyo3(default)]
    syslog: bool,
    #[pyo3(default)]
    syslog_addr: Option<String>,
    #[pyo3(default)]
    syslog_facility: Option<String>,
    #[pyo3(default)]
    syslog_format: Option<String>,
    /// `syslog_prefix`, or the process name: the front end works it out.
    #[pyo3(default)]
    syslog_name: Option<String>,
    #[pyo3(default)]
    disable_redirect_access_to_syslog: bool,
}

/// Where the error log goes and how much of it.
#[derive(Clone)]
pub struct LogSettings {
    pub level: LogLevel,
    pub path: Option<PathBuf>,
    pub syslog: Option<SyslogSettings>,
}

impl LogSettings {
    /// Starts the error log of this process; a no-op once started.
    pub fn init(&self) -> Result<(), String> {
        ferrule_server::log::init(self.level, self.path.as_deref(), self.syslog.as_ref())
    }
}

impl Settings<'_> {
    /// The TLS files named, if any (gunicorn: a key in the certificate file when
    /// `keyfile` is not given); checked before any is read.
    fn tls_files(&self) -> Result<Option<TlsFiles>, String> {
        let nonempty = |s: &Option<String>| s.clone().filter(|p| !p.is_empty());
        let cert_reqs = integer("cert-reqs", &self.cert_reqs, 0, 2)?;
        let cert_reqs = CertReqs::from_int(cert_reqs).unwrap_or_default();
        let Some(certfile) = nonempty(&self.certfile) else {
            if nonempty(&self.keyfile).is_some() {
                return Err("keyfile: needs certfile (the certificate it is the key of)".into());
            }
            return Ok(None);
        };
        let keyfile = nonempty(&self.keyfile).unwrap_or_else(|| certfile.clone());
        Ok(Some(TlsFiles {
            certfile: PathBuf::from(certfile),
            keyfile: PathBuf::from(keyfile),
            ca_certs: nonempty(&self.ca_certs).map(PathBuf::from),
            cert_reqs,
            ciphers: nonempty(&self.ciphers)
                .as_deref()
                .map(cipher_suites)
                .transpose()?,
        }))
    }

    /// Checks every value; the error names the setting and says what is wrong.
    fn into_config(self) -> Result<Config, String> {
        let mut binds = Vec::new();
        for b in &self.bind {
            binds.extend(parse_bind(b)?);
        }
        if binds.is_empty() {
            return Err("bind: at least one address is needed".into());
        }
        // An `https://` bind needs a certificate.
        check_tls_binds(
            &binds,
            self.certfile.as_deref().is_some_and(|c| !c.is_empty()),
        )?;
        let parser = ParserConfig {
            limit_request_line: count("limit-request-line", &self.limit_request_line, 0, ANY)?,
            limit_request_fields: count(
                "limit-request-fields",
                &self.limit_request_fields,
                0,
                ANY,
            )?,
            limit_request_field_size: count(
                "limit-request-field_size",
                &self.limit_request_field_size,
                0,
                ANY,
            )?,
            limit_request_body: integer("limit-request-body", &self.limit_request_body, 0, ANY)?
                .unsigned_abs(),
            header_map: self.header_map.parse::<HeaderMap>()?,
            permit_obsolete_folding: self.permit_obsolete_folding,
            strip_header_spaces: self.strip_header_spaces,
            casefold_http_method: self.casefold_http_method,
            permit_unconventional_http_method: self.permit_unconventional_http_method,
            permit_missing_host: self.permit_missing_host,
        };
        let server = ServerConfig {
            binds,
            backlog: i32::try_from(integer("backlog", &self.backlog, 1, MAX_BACKLOG)?)
                .unwrap_or(i32::MAX),
            reuse_port: self.reuse_port,
            threads: count("threads", &self.threads, 1, MAX_THREADS)?,
            workers: count("workers", &self.workers, 1, MAX_WORKERS)?,
            keep_alive: seconds("keep-alive", &self.keep_alive)?,
            header_timeout: seconds("header-timeout", &self.header_timeout)?,
            io_timeout: seconds("io-timeout", &self.io_timeout)?,
            response_buffer_size: count(
                "response-buffer-size",
                &self.response_buffer_size,
                0,
                ANY,
            )?,
            graceful_timeout: seconds("graceful-timeout", &self.graceful_timeout)?,
            parser,
            forwarded_allow_ips: AllowIps::parse(&self.forwarded_allow_ips)
                .map_err(|e| format!("forwarded-allow-ips: {e}"))?,
            script_name: self.script_name.trim_end_matches('/').to_string(),
            request_buffering: self.request_buffering,
            request_buffer_size: count("request-buffer-size", &self.request_buffer_size, 0, ANY)?,
            request_buffer_dir: None,
            proxy_protocol: proxy_mode(&self.proxy_protocol)?,
            proxy_allow_ips: AllowIps::parse(&self.proxy_allow_ips)
                .map_err(|e| format!("proxy-allow-from: {e}"))?,
            secure_scheme_headers: scheme_headers(&self.secure_scheme_headers)?,
            forwarded_remote_addr: self.forwarded_remote_addr.parse::<RemoteAddrFrom>()?,
            protocol: self.protocol.parse::<Protocol>()?,
            uwsgi_allow_ips: AllowIps::parse(&self.uwsgi_allow_ips)
                .map_err(|e| format!("uwsgi-allow-from: {e}"))?,
            tls: None,
            // Checked even without TLS: a list that selects nothing stops start-up (and
            // --check-config) now, not when a certificate is added.
            ciphers: self.ciphers.as_deref().map(cipher_suites).transpose()?,
        };
        let syslog = syslog_settings(
            self.syslog,
            self.syslog_addr.as_deref(),
            self.syslog_facility.as_deref(),
            self.syslog_format.as_deref(),
            self.syslog_name.as_deref(),
            self.disable_redirect_access_to_syslog,
        )?;
        let access_to_syslog = syslog.as_ref().is_some_and(|s| s.access);
        let logs = LogSettings {
            level: self.log_level.parse()?,
            path: self.error_logfile.filter(|p| p != "-").map(PathBuf::from),
            syslog,
        };
        let target = match self.access_logfile.as_deref() {
            None if access_to_syslog => Some(AccessTarget::Nowhere),
            None => None,
            Some("-") => Some(AccessTarget::Stdout),
            Some(path) => Some(AccessTarget::File(PathBuf::from(path))),
        };
        // Checked even with no access log, so `--check-config` finds a bad format that
        // a later `--access-logfile` (or a Python logging config) would trip over.
        let format = AccessFormat::parse(&self.access_logformat)?;
        let access = match target {
            None => None,
            Some(target) => {
                // Opened once here so an unwritable path stops start-up (or a reload)
                // with its name, rather than failing in every worker.
                target.dest()?;
                Some((target, format))
            }
        };
        let observe = ObserveSettings::parse(
            self.metrics_bind.as_deref(),
            self.statsd_host.as_deref(),
            &self.statsd_prefix,
            &self.dogstatsd_tags,
            self.server_timing.as_deref().unwrap_or("off"),
        )?;
        let egress = EgressSettings {
            log: self.egress_log.map(|p| match p.as_str() {
                "-" => EgressLog::Stdout,
                _ => EgressLog::File(PathBuf::from(p)),
            }),
            deny: self.egress_deny,
            allow: self.egress_allow,
        };
        // SPECs checked here, in the master (and by --check-config and a reload).
        egress::check(&egress).map_err(|e| e.to_string())?;
        Ok(Config {
            server,
            logs,
            access,
            observe,
            egress,
        })
    }
}

/// `--proxy-protocol`'s values as the front end normalises them (`validators.py`).
pub(crate) const PROXY_MODES: [(&str, Option<ProxyMode>); 4] = [
    ("off", None),
    ("v1", Some(ProxyMode::V1)),
    ("v2", Some(ProxyMode::V2)),
    ("auto", Some(ProxyMode::Auto)),
];

fn proxy_mode(value: &str) -> Result<Option<ProxyMode>, String> {
    match PROXY_MODES.iter().find(|(name, _)| *name == value) {
        Some((_, mode)) => Ok(*mode),
        None => Err(format!(
            "proxy-protocol must be one of off, v1, v2, auto (got {value:?})"
        )),
    }
}

/// `secure_scheme_headers`: a dict of header names to the value that means https.
fn scheme_headers(value: &Bound<'_, PyAny>) -> Result<SchemeHeaders, String> {
    let dict = value
        .cast::<PyDict>()
        .map_err(|_| format!("secure_scheme_headers: must be a dict (got {value})"))?;
    let mut pairs = Vec::with_capacity(dict.len());
    for (k, v) in dict.iter() {
        match (k.extract::<String>(), v.extract::<String>()) {
            (Ok(k), Ok(v)) => pairs.push((k, v)),
            _ => {
                return Err(format!(
                    "secure_scheme_headers: must map header names to the string that means https \
                     (got {k}: {v})"
                ))
            }
        }
    }
    SchemeHeaders::new(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Where the access log goes (beside syslog, when it takes access lines).
#[derive(Clone)]
enum AccessTarget {
    Stdout,
    File(PathBuf),
    /// No file: syslog only.
    Nowhere,
}

impl AccessTarget {
    fn dest(&self) -> Result<Option<Box<dyn Destination>>, String> {
        Ok(match self {
            AccessTarget::Stdout => Some(Box::new(Stdout)),
            AccessTarget::File(path) => {
                Some(Box::new(LogFile::open(path).map_err(|e| {
                    format!("access-logfile {}: {e}", path.display())
                })?))
            }
            AccessTarget::Nowhere => None,
        })
    }

    /// The sink counts lines it cannot write and reports them in the error log.
    fn open(&self, syslog: Option<&SyslogSettings>) -> Result<Sink, String> {
        let beside = self.dest()?;
        let dest: Box<dyn Destination> = match (syslog.filter(|s| s.access), beside) {
            // The error log's syslog (one sender per process); its own when the
            // error log was started without one.
            (Some(settings), beside) => Box::new(SyslogDest::new(
                ferrule_server::syslog::installed()
                    .unwrap_or_else(|| ferrule_server::syslog::install(settings)),
                Stream::Access,
                beside,
            )),
            (None, Some(beside)) => beside,
            (None, None) => return Err("access log: no destination".into()),
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
    pub observe: ObserveSettings,
    /// Turned on in each worker, before the app is imported (`egress_start`).
    pub egress: EgressSettings,
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
        let sink = Arc::new(target.open(self.logs.syslog.as_ref())?);
        *ACCESS_SINK.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink.clone());
        Ok(Some(AccessLog::new(format.clone(), sink)))
    }
}

#[pymethods]
impl Config {
    #[new]
    fn py_new(settings: Settings) -> PyResult<Config> {
        let tls = settings.tls_files().map_err(ConfigError::new_err)?;
        let mut config = settings.into_config().map_err(ConfigError::new_err)?;
        // Opened once here so an unusable file stops start-up (exit 3) with its name,
        // rather than failing in every worker.
        if let Some(EgressLog::File(path)) = &config.egress.log {
            LogFile::open(path).map_err(|e| {
                EgressLogError::new_err(format!("egress-log {}: {e}", path.display()))
            })?;
        }
        if let Some(files) = tls {
            // Read here, once: the master checks the files before it forks, and
            // its workers inherit the loaded configuration.
            let loaded = TlsSettings::load(&files).map_err(|e| TlsError::new_err(e.to_string()))?;
            config.server.tls = Some(loaded);
        }
        Ok(config)
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
        // The i-th descriptor is the i-th bind (the master binds them in order; a
        // systemd unit lists its sockets in the binds' order) and keeps its scheme.
        let tls = |i: usize| {
            config
                .server
                .binds
                .get(i)
                .map(|e| e.tls)
                .unwrap_or_default()
        };
        config.server.binds = fds
            .into_iter()
            .enumerate()
            .map(|(i, fd)| Endpoint {
                bind: Bind::Fd(fd),
                tls: tls(i),
            })
            .collect();
        Ok(config)
    }
}
