//! ferrule's logs as Python logging records, when a Python logging configuration is
//! given (`--log-config`, `logconfig_dict`, `--log-config-json`; `ferrule/logconfig.py`):
//!
//! * access records: `gunicorn.access`'s `info(access_log_format, atoms)` on the thread
//!   that ran the request, with the GIL it holds for its batch, after the response was
//!   sent (as gunicorn does), `atoms` carrying gunicorn's keys and types;
//! * error records: the Rust side's lines go through a bounded queue
//!   (`ferrule_server::log::forward`) that a Python thread drains ([`next_error_records`]);
//! * [`error_line`]: the way back for Python's handler of ferrule's own error log.

use crate::config::Config;
use crate::text::latin1;
use ferrule_server::access::{named_atoms, AccessLog, AccessRecords, AtomView, Atoms, OwnedAtoms};
use ferrule_server::log::{self, forward, LogLevel};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where access records go once `access_to_python` was called in this process.
static PY_ACCESS: Mutex<Option<Arc<PyAccess>>> = Mutex::new(None);
/// Whether the handler keeps each request's environ for its record: one load per
/// request when off.
static KEEP_ENVIRON: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// A copy of the environ of the request this thread ran last (the app's changes
    /// included), taken by its record right after; the handler reuses the dict itself.
    static LAST_ENVIRON: RefCell<Option<Py<PyDict>>> = const { RefCell::new(None) };
}

struct PyAccess {
    /// `logging.getLogger("gunicorn.access").info`.
    info: Py<PyAny>,
    format: Py<PyString>,
    /// `ferrule.logconfig.SafeAtoms`: a dict that answers `-` for a missing atom and
    /// reads `{Header}i` in any case, as gunicorn's.
    atoms_type: Py<PyAny>,
    /// The named atoms' keys, in `named_atoms()`'s order, made once.
    names: Vec<Py<PyString>>,
}

/// The `{name}i`, `{name}o` and `{key}e` keys of this thread's last requests, made
/// once: the same few names come with every request, and a key made anew costs an
/// allocation, a lower-casing and a hash each time (callgrind: a third of a record).
#[derive(Default)]
struct Keys {
    request: HashMap<String, Py<PyString>>,
    response: HashMap<String, Py<PyString>>,
    environ: HashMap<String, Py<PyString>>,
}

/// Names kept per kind and thread at most: clients choose header names, so the cache
/// starts over rather than grow with them.
const KEYS_KEPT: usize = 256;

thread_local! {
    static KEYS: RefCell<Keys> = RefCell::new(Keys::default());
}

/// The atom key for `name` (`{x-custom}i`), from `cache` or made and kept.
fn key<'py>(
    py: Python<'py>,
    cache: &mut HashMap<String, Py<PyString>>,
    name: &str,
    suffix: char,
) -> Bound<'py, PyString> {
    if let Some(k) = cache.get(name) {
        return k.bind(py).clone();
    }
    if cache.len() >= KEYS_KEPT {
        cache.clear();
    }
    let mut text = String::with_capacity(name.len() + 3);
    text.push('{');
    text.push_str(&name.to_lowercase());
    text.push('}');
    text.push(suffix);
    let k = PyString::new(py, &text);
    cache.insert(name.to_string(), k.clone().unbind());
    k
}

/// gunicorn's `SafeAtoms` escapes the double quotes of text values.
fn escaped(s: &str) -> std::borrow::Cow<'_, str> {
    match s.contains('"') {
        true => s.replace('"', "\\\"").into(),
        false => s.into(),
    }
}

/// Keeps the first error of a series of `set_item`s.
fn keep(first: &mut PyResult<()>, result: PyResult<()>) {
    if first.is_ok() {
        *first = result;
    }
}

impl PyAccess {
    fn atoms<'py>(&self, py: Python<'py>, atoms: &dyn AtomView) -> PyResult<Bound<'py, PyDict>> {
        let dict = self.atoms_type.bind(py).call0()?.cast_into::<PyDict>()?;
        let elapsed = atoms.time();
        let mut failed = Ok(());
        atoms.named(&mut |i, name, text| {
            let Some(key) = self.names.get(i).map(|k| k.bind(py)) else {
                return;
            };
            // gunicorn's types: numbers for B, T, M, D; text for the rest (`s` too).
            let set = match name {
                "B" => dict.set_item(key, atoms.bytes()),
                "T" => dict.set_item(key, elapsed.as_secs()),
                "M" => dict.set_item(key, elapsed.as_millis() as u64),
                "D" => dict.set_item(key, elapsed.as_micros() as u64),
                _ => dict.set_item(key, escaped(text)),
            };
            keep(&mut failed, set);
        });
        KEYS.with(|keys| {
            let keys = &mut *keys.borrow_mut();
            atoms.request_headers(&mut |n, v| {
                let k = key(py, &mut keys.request, n, 'i');
                keep(&mut failed, dict.set_item(k, escaped(&latin1(v))));
            });
            atoms.response_headers(&mut |n, v| {
                let k = key(py, &mut keys.response, n, 'o');
                keep(&mut failed, dict.set_item(k, escaped(&latin1(v))));
            });
            if let Some(environ) = LAST_ENVIRON.with(|e| e.borrow_mut().take()) {
                for (name, value) in environ.bind(py).iter() {
                    let name = name.str()?;
                    let k = key(py, &mut keys.environ, name.to_str()?, 'e');
                    // The value itself, unless it has quotes to escape.
                    match value.cast::<PyString>() {
                        Ok(text) if text.to_str()?.contains('"') => {
                            dict.set_item(k, escaped(text.to_str()?))?
                        }
                        _ => dict.set_item(k, value)?,
                    }
                }
            }
            PyResult::Ok(())
        })?;
        failed?;
        Ok(dict)
    }
}

/// Records made on a thread that does not hold the GIL (the monitor's sweep answers a
/// 408): that thread must not wait for Python, so they wait here for the next record
/// made with the GIL or for the error-record drain thread, whichever comes first.
static LATER: Mutex<VecDeque<OwnedAtoms>> = Mutex::new(VecDeque::new());
/// Records [`LATER`] keeps at most; more are dropped and counted.
const LATER_KEPT: usize = 1024;
static LATER_DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl PyAccess {
    fn send(&self, py: Python<'_>, atoms: &dyn AtomView) {
        let sent = self
            .atoms(py, atoms)
            .and_then(|a| self.info.call1(py, (self.format.bind(py), a)));
        if let Err(e) = sent {
            // gunicorn logs the traceback in the error log; so does this.
            tracing::error!(
                "access record failed: {}",
                crate::errors::format_exception(py, &e)
            );
        }
    }

    /// Sends the records that waited in [`LATER`].
    fn send_later(&self, py: Python<'_>) {
        let waiting = std::mem::take(&mut *LATER.lock().unwrap_or_else(|p| p.into_inner()));
        for atoms in &waiting {
            self.send(py, atoms);
        }
        let dropped = LATER_DROPPED.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                "{dropped} access records dropped: too many made outside a request's thread"
            );
        }
    }
}

impl AccessRecords for PyAccess {
    fn record(&self, atoms: &Atoms<'_>) {
        if !crate::sys::holds_gil() {
            let mut later = LATER.lock().unwrap_or_else(|p| p.into_inner());
            match later.len() < LATER_KEPT {
                true => later.push_back(atoms.to_owned()),
                false => {
                    LATER_DROPPED.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        }
        // The runner holds the GIL for its batch: attaching is a counter check.
        Python::attach(|py| {
            if !LATER.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
                self.send_later(py);
            }
            self.send(py, atoms);
        });
    }
}

/// Sends the access records made outside a request's thread (the drain thread's turn).
fn send_later(py: Python<'_>) {
    if LATER.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
        return;
    }
    let access = PY_ACCESS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(access) = access {
        access.send_later(py);
    }
}

/// Keeps a copy of the request's environ for its access record, when records go to
/// Python (called by the handler after the app ran, before the environ is reused).
pub fn keep_environ(environ: &PyResult<Bound<'_, PyDict>>) {
    if !KEEP_ENVIRON.load(Ordering::Relaxed) {
        return;
    }
    if let Ok(env) = environ {
        if let Ok(copy) = env.copy() {
            LAST_ENVIRON.with(|e| *e.borrow_mut() = Some(copy.unbind()));
        }
    }
}

/// The access log `serve` runs with: the configured one, or, once `access_to_python`
/// was called, one that sends records to Python (opening `--access-logfile` all the
/// same, for Python's handler of it).
pub fn access_log(config: &Config) -> Result<Option<AccessLog>, String> {
    let lines = config.access_log()?;
    let records = PY_ACCESS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(match records {
        Some(records) => Some(AccessLog::to_records(records)),
        None => lines,
    })
}

/// Sends this process's access records to `info` (`gunicorn.access`'s) as
/// `info(format, atoms_type(**atoms))`; `None` turns that off. Applies to the next `serve`.
#[pyfunction]
#[pyo3(signature = (info, format=None, atoms_type=None))]
fn access_to_python(
    py: Python<'_>,
    info: Option<Py<PyAny>>,
    format: Option<Py<PyString>>,
    atoms_type: Option<Py<PyAny>>,
) -> PyResult<()> {
    let access = match (info, format, atoms_type) {
        (Some(info), Some(format), Some(atoms_type)) => Some(Arc::new(PyAccess {
            info,
            format,
            atoms_type,
            names: named_atoms()
                .map(|n| PyString::new(py, n).unbind())
                .collect(),
        })),
        (None, _, _) => None,
        _ => {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "access_to_python needs info, format and atoms_type",
            ))
        }
    };
    KEEP_ENVIRON.store(access.is_some(), Ordering::Relaxed);
    *PY_ACCESS.lock().unwrap_or_else(|p| p.into_inner()) = access;
    Ok(())
}

/// Sends this process's Rust error-log lines to a new queue for [`next_error_records`]
/// (each forked process calls it again for its own); False when that is not possible
/// and lines stay on the error log.
#[pyfunction]
fn errors_to_python() -> bool {
    forward::start()
}

/// Rust error-log lines go to the error log again.
#[pyfunction]
fn errors_to_rust() {
    forward::stop()
}

/// Python logging's level number for a gunicorn level.
fn levelno(level: LogLevel) -> u8 {
    match level {
        LogLevel::Debug => 10,
        LogLevel::Info => 20,
        LogLevel::Warning => 30,
        LogLevel::Error => 40,
        LogLevel::Critical => 50,
    }
}

/// The next error records as `([(levelno, message)], dropped)`, waiting up to `wait`
/// seconds (the GIL released) for the first; `dropped` counts the records lost to a
/// full queue since the last call.
#[pyfunction]
fn next_error_records(py: Python<'_>, wait: f64) -> (Vec<(u8, String)>, u64) {
    let wait = Duration::try_from_secs_f64(wait).unwrap_or(Duration::ZERO);
    let records = py.detach(|| forward::next(wait));
    send_later(py);
    let records = records
        .into_iter()
        .map(|r| (levelno(r.level), r.message))
        .collect();
    (records, forward::take_dropped())
}

/// Writes a line to ferrule's error log at `level` (its logger has judged the
/// level): Python logging's handler of ferrule's own error log, never forwarded back
/// to Python. Never raises for a failing log.
#[pyfunction]
fn error_line(py: Python<'_>, level: &str, message: &Bound<'_, PyString>) -> PyResult<()> {
    let level: LogLevel = level.parse().map_err(crate::ConfigError::new_err)?;
    let message = message.to_string_lossy();
    py.detach(|| log::write_line(level, &message));
    Ok(())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(access_to_python, m)?)?;
    m.add_function(wrap_pyfunction!(errors_to_python, m)?)?;
    m.add_function(wrap_pyfunction!(errors_to_rust, m)?)?;
    m.add_function(wrap_pyfunction!(next_error_records, m)?)?;
    m.add_function(wrap_pyfunction!(error_line, m)?)?;
    Ok(())
}
