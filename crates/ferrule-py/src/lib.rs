//! The Python extension `ferrule._ferrule`: an export list, and `serve`.
//!
//! Internal errors become Python exceptions here, at the boundary, and nowhere else.

mod config;
mod environ;
mod errors;
mod file_wrapper;
mod handler;
mod input;
mod park;
mod text;
mod tx;

use ferrule_server::log::{self, LogLevel};
use ferrule_server::{Local, Server};
use pyo3::create_exception;
use pyo3::exceptions::{PyKeyboardInterrupt, PyOSError, PyValueError};
use pyo3::prelude::*;
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
    BindError,
    PyOSError,
    "A listening address could not be bound."
);

/// Least time a quick stop gives threads to leave: idle ones leave at once.
const QUICK_STOP: Duration = Duration::from_secs(1);

/// Binds, serves `app` until a signal handler raises (KeyboardInterrupt: quick stop,
/// anything else: graceful stop). `ready` is called with the bound addresses once
/// the server accepts connections.
///
/// Returns True when every thread finished; False when requests were abandoned, in
/// which case the caller must leave with `os._exit`: those threads still belong to
/// the interpreter and must not meet its finalisation.
#[pyfunction]
#[pyo3(signature = (app, settings, ready=None))]
fn serve(
    py: Python<'_>,
    app: PyObject,
    settings: config::Settings,
    ready: Option<PyObject>,
) -> PyResult<bool> {
    let (cfg, logs, access) = settings.into_config().map_err(ConfigError::new_err)?;
    log::init(logs.level, logs.path.as_deref()).map_err(ConfigError::new_err)?;
    let graceful = cfg.graceful_timeout;
    let threads = cfg.threads;
    let environ = environ::Environ::new(
        py,
        &cfg,
        Py::new(py, errors::ErrorStream)?.into_any(),
        py.get_type::<file_wrapper::FileWrapper>()
            .into_any()
            .unbind(),
    )?;
    let mut server = Server::bind(cfg, access).map_err(|e| BindError::new_err(e.to_string()))?;
    let addresses: Vec<String> = server
        .addresses()
        .iter()
        .map(|l| match l {
            Local::Tcp(a) => format!("http://{a}"),
            Local::Unix(p) => format!("unix:{}", p.display()),
        })
        .collect();
    tracing::info!("Starting ferrule {}", env!("CARGO_PKG_VERSION"));
    for a in &addresses {
        tracing::info!("Listening at: {a} ({})", std::process::id());
    }
    tracing::info!("Using {threads} threads");
    server.start(Arc::new(handler::Wsgi::new(app, environ)))?;
    if let Some(ready) = ready {
        ready.call1(py, (addresses,))?;
    }
    loop {
        py.allow_threads(|| std::thread::park_timeout(Duration::from_millis(100)));
        if let Err(signal) = py.check_signals() {
            let quick = signal.is_instance_of::<PyKeyboardInterrupt>(py);
            let wait = if quick { QUICK_STOP } else { graceful };
            tracing::info!(
                "Shutting down: {}",
                if quick { "quick" } else { "graceful" }
            );
            let clean = py.allow_threads(|| server.stop(wait));
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

/// Writes a line to the error log (used by the front end before and after `serve`).
#[pyfunction]
fn log_message(level: &str, message: &str) -> PyResult<()> {
    let level: LogLevel = level.parse().map_err(ConfigError::new_err)?;
    log::emit(level, message);
    Ok(())
}

#[pymodule]
fn _ferrule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(serve, m)?)?;
    m.add_function(wrap_pyfunction!(log_message, m)?)?;
    m.add_class::<file_wrapper::FileWrapper>()?;
    m.add("ConfigError", m.py().get_type::<ConfigError>())?;
    m.add("BindError", m.py().get_type::<BindError>())?;
    Ok(())
}
