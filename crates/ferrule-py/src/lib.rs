//! The Python extension `ferrule._ferrule`: an export list, and `serve`.
//!
//! Internal errors become Python exceptions here, at the boundary, and nowhere else.

mod blocking;
mod config;
mod egress;
mod environ;
mod errors;
mod fields;
mod file_wrapper;
mod handler;
mod input;
mod metrics;
mod records;
// The only module allowed unsafe code (workspace lint `unsafe_code = "deny"`).
#[allow(unsafe_code)]
mod sys;
mod text;
mod tx;

use ferrule_server::log::{self, LogLevel};
use ferrule_server::{bind_all, Server};
use pyo3::create_exception;
use pyo3::exceptions::{PyKeyboardInterrupt, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyFloat;
use std::sync::Arc;
use std::time::Duration;

create_exception!(
    _ferrule,
    ConfigError,
    PyValueError,
    "A setting has a value ferrule cannot use."
);
create_exception!(
    _ferrule,
    TlsError,
    PyOSError,
    "A TLS certificate, key or CA file cannot be used."
);
create_exception!(
    _ferrule,
    EgressLogError,
    PyOSError,
    "The egress log file cannot be opened."
);
create_exception!(
    _ferrule,
    BindError,
    PyOSError,
    "A listening address could not be bound."
);

/// Least time a quick stop gives threads to leave: idle ones leave at once.
const QUICK_STOP: Duration = Duration::from_secs(1);

/// How often the serving loop looks at signals and calls `tick`.
const LOOP_EVERY: Duration = Duration::from_millis(100);
/// Loops between two samples of the metrics' gauges (one a second).
const SAMPLE_EVERY: u64 = 10;

/// Binds, serves `app` until a signal handler raises (KeyboardInterrupt: quick stop,
/// anything else: graceful stop) or `tick` returns True (graceful stop). `ready` is
/// called with the bound addresses once the server accepts connections. `tick` is
/// called about every 100 ms with (requests answered, the longest a request in
/// flight has been in the app without progress, in seconds, or None, and while
/// accepts fail for lack of descriptors with few connections open: (seconds it has
/// lasted, connections, descriptor limit), else None); the worker process uses it for
/// its heartbeat, timeouts and recycling; it returns a number of seconds to stop
/// answering 500 to the requests stuck for longer than that (`--timeout`). `worker` says a master
/// started this process (its log lines differ).
///
/// Returns True when every thread finished; False when requests were abandoned, in
/// which case the caller must leave with `os._exit`: those threads still belong to
/// the interpreter and must not meet its finalisation.
#[pyfunction]
#[pyo3(signature = (app, config, ready=None, tick=None, worker=false))]
fn serve(
    py: Python<'_>,
    app: Py<PyAny>,
    config: PyRef<'_, config::Config>,
    ready: Option<Py<PyAny>>,
    tick: Option<Py<PyAny>>,
    worker: bool,
) -> PyResult<bool> {
    let access = records::access_log(&config).map_err(ConfigError::new_err)?;
    config.logs.init().map_err(ConfigError::new_err)?;
    let cfg = config.server.clone();
    if !worker {
        metrics::open_single(&config)?;
    }
    let observe = config.observe.observe();
    drop(config);
    let graceful = cfg.graceful_timeout;
    let threads = cfg.threads;
    let uwsgi = cfg.protocol == ferrule_server::Protocol::Uwsgi;
    let environ = environ::Environ::new(
        py,
        &cfg,
        Py::new(py, errors::ErrorStream)?.into_any(),
        py.get_type::<file_wrapper::FileWrapper>()
            .into_any()
            .unbind(),
    )?;
    let logged =
        environ::LoggedKeys::new(py, access.as_ref().map_or(&[][..], |a| a.environ_keys()));
    let mut server = Server::bind_observed(cfg, access, observe)
        .map_err(|e| BindError::new_err(e.to_string()))?;
    let addresses: Vec<String> = server.addresses().iter().map(ToString::to_string).collect();
    if worker {
        tracing::info!("Booting worker with pid: {}", std::process::id());
    } else {
        tracing::info!("Starting ferrule {}", env!("CARGO_PKG_VERSION"));
        for a in server.urls() {
            // A uwsgi bind says so: `curl` against it gets no HTTP answer.
            let a = match a.strip_prefix("http://") {
                Some(rest) if uwsgi => format!("uwsgi://{rest}"),
                None if uwsgi => format!("{a} (uwsgi)"),
                _ => a,
            };
            tracing::info!("Listening at: {a} ({})", std::process::id());
        }
        tracing::info!("Using {threads} threads");
    }
    server.start(Arc::new(handler::Wsgi::new(app, environ, logged)))?;
    if let Some(ready) = ready {
        ready.call1(py, (addresses,))?;
    }
    server.mark_accepting();
    let mut round = 0u64;
    loop {
        if round % SAMPLE_EVERY == 0 {
            server.sample_metrics();
        }
        round += 1;
        py.detach(|| std::thread::park_timeout(LOOP_EVERY));
        let stop = match py.check_signals() {
            Err(signal) => Some(signal.is_instance_of::<PyKeyboardInterrupt>(py)),
            Ok(()) => match &tick {
                None => None,
                Some(tick) => {
                    let age = server.longest_stall().map(|d| d.as_secs_f64());
                    let starved = server
                        .fd_starved()
                        .map(|s| (s.during.as_secs_f64(), s.connections, s.limit));
                    match tick.call1(py, (server.requests_served(), age, starved)) {
                        Ok(v) if v.bind(py).is_exact_instance_of::<PyFloat>() => {
                            answer_overdue(py, &server, v.extract(py)?);
                            Some(false)
                        }
                        Ok(v) if v.is_truthy(py)? => Some(false),
                        Ok(_) => None,
                        Err(e) => {
                            // A failing tick must not take the worker down mid-request.
                            tracing::error!("worker tick failed: {e}");
                            None
                        }
                    }
                }
            },
        };
        if let Some(quick) = stop {
            let wait = if quick { QUICK_STOP } else { graceful };
            tracing::info!(
                "Shutting down: {}",
                if quick { "quick" } else { "graceful" }
            );
            let clean = py.detach(|| server.stop(wait));
            if !clean {
                tracing::warn!(
                    "requests still running after {}s were abandoned",
                    wait.as_secs_f64()
                );
            }
            return Ok(clean);
        }
    }
}

/// `tick` returned a number: requests that ran longer than that many seconds timed
/// out (`--timeout`). Those with nothing of their answer sent get a 500 now, before
/// the graceful stop that follows waits for them.
fn answer_overdue(py: Python<'_>, server: &Server, limit: f64) {
    let Ok(limit) = Duration::try_from_secs_f64(limit) else {
        return;
    };
    let answered = py.detach(|| server.answer_overdue(limit));
    if answered > 0 {
        tracing::warn!(
            "answered 500 to {answered} request(s) stuck in the app for more than {}s",
            limit.as_secs_f64()
        );
    }
}

/// Binds every address in `config` for worker processes to inherit, and returns
/// (descriptor, address shown in logs) pairs. The descriptors stay open in this
/// process, so connections queued on them survive any one worker.
#[pyfunction]
fn bind(config: PyRef<'_, config::Config>) -> PyResult<Vec<(i32, String)>> {
    let listeners = bind_all(&config.server).map_err(|e| BindError::new_err(e.to_string()))?;
    Ok(listeners
        .into_iter()
        .map(|l| {
            let url = l.local().url(l.is_tls());
            (l.into_raw_fd(), url)
        })
        .collect())
}

/// Starts the error log before `serve` (the master logs too); a no-op once started.
#[pyfunction]
fn init_logging(config: PyRef<'_, config::Config>) -> PyResult<()> {
    config.logs.init().map_err(ConfigError::new_err)
}

/// Sends the syslog lines this process still has queued, waiting at most a second
/// (a process about to exit; its last lines, "Shutting down", would go with it).
#[pyfunction]
fn finish_syslog(py: Python<'_>) {
    py.detach(ferrule_server::syslog::finish_installed);
}

/// Changes the error log's level in this process (a reload with a new `--log-level`);
/// workers forked afterwards start with it.
#[pyfunction]
fn set_log_level(level: &str) -> PyResult<()> {
    log::set_level(level.parse().map_err(ConfigError::new_err)?);
    Ok(())
}

/// Reopens the log files of this process (SIGUSR1, after logrotate).
#[pyfunction]
fn reopen_logs() -> PyResult<()> {
    ferrule_server::logfile::reopen_all().map_err(|e| PyOSError::new_err(e.to_string()))
}

/// Counts in statsd's `log.*` a line that Python logging handles itself (a hook's
/// `server.log` under a Python logging configuration): the error log's own lines are
/// counted where they are written.
#[pyfunction]
fn count_log(level: &str) {
    use ferrule_server::metrics::{log_line, LogCounter};
    let counter = match level {
        "critical" => LogCounter::Critical,
        "error" => LogCounter::Error,
        "warning" => LogCounter::Warning,
        "exception" => LogCounter::Exception,
        _ => return,
    };
    log_line(counter);
}

/// Writes a line to the error log (the front end, `server.log`, Python logging's
/// `gunicorn.error`). Never raises for a failing log: the line is counted as lost.
#[pyfunction]
fn log_message(
    py: Python<'_>,
    level: &str,
    message: &Bound<'_, pyo3::types::PyString>,
) -> PyResult<()> {
    // `Logger.exception`: an ERROR line that statsd counts as `log.exception`.
    if level == "exception" {
        let message = message.to_string_lossy();
        py.detach(|| log::emit_exception(&message));
        return Ok(());
    }
    let level: LogLevel = level.parse().map_err(ConfigError::new_err)?;
    // Lone surrogates (a file name that is not UTF-8) become U+FFFD: logging never raises.
    let message = message.to_string_lossy();
    // A pipe whose reader is slow may block the write: not with the GIL held.
    py.detach(|| log::emit(level, &message));
    Ok(())
}

/// Writes a line to this process's access log, if it serves with one (Python
/// logging's `gunicorn.access`); False when there is none or the line was lost.
#[pyfunction]
fn access_message(py: Python<'_>, message: &Bound<'_, pyo3::types::PyString>) -> bool {
    let line = format!("{}\n", message.to_string_lossy().trim_end_matches('\n'));
    py.detach(|| config::access_line(line.as_bytes()))
}

#[pymodule]
fn _ferrule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(serve, m)?)?;
    m.add_function(wrap_pyfunction!(log_message, m)?)?;
    m.add_function(wrap_pyfunction!(count_log, m)?)?;
    m.add_function(wrap_pyfunction!(access_message, m)?)?;
    m.add_function(wrap_pyfunction!(bind, m)?)?;
    m.add_function(wrap_pyfunction!(init_logging, m)?)?;
    m.add_function(wrap_pyfunction!(reopen_logs, m)?)?;
    m.add_function(wrap_pyfunction!(set_log_level, m)?)?;
    m.add_function(wrap_pyfunction!(finish_syslog, m)?)?;
    m.add_function(wrap_pyfunction!(config::defaults::defaults, m)?)?;
    metrics::register(m)?;
    records::register(m)?;
    m.add_function(wrap_pyfunction!(egress::egress_start, m)?)?;
    m.add_function(wrap_pyfunction!(egress::egress_dns_hint, m)?)?;
    m.add_function(wrap_pyfunction!(egress::egress_note_host, m)?)?;
    m.add_function(wrap_pyfunction!(egress::egress_counts, m)?)?;
    m.add_class::<config::Config>()?;
    m.add_class::<file_wrapper::FileWrapper>()?;
    m.add("ConfigError", m.py().get_type::<ConfigError>())?;
    m.add("TlsError", m.py().get_type::<TlsError>())?;
    m.add("BindError", m.py().get_type::<BindError>())?;
    m.add("EgressLogError", m.py().get_type::<EgressLogError>())?;
    Ok(())
}
