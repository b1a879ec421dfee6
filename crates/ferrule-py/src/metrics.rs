//! Metrics from Python's side: the functions the master (`python/ferrule/metrics.py`)
//! and the workers call (the settings are `config/observe.rs`). The
//! registry lives in the master, made before the first fork; each worker inherits it
//! and writes to its own slot (`ferrule_server::metrics`).

use crate::config::Config;
use crate::BindError;
use ferrule_server::metrics::{
    close_in_child, log_line, process_statsd, start_endpoint, use_egress_table, use_process_statsd,
    use_slot, LogCounter, Registry, Statsd,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::sync::{Arc, OnceLock};

/// The master's registry, inherited by every worker forked after it was made.
static REGISTRY: OnceLock<Arc<Registry>> = OnceLock::new();

/// Makes the registry with `slots` worker positions and starts the `--metrics-bind`
/// endpoint; returns its address for the log, or None without `--metrics-bind`.
/// Opens the master's statsd client when `--statsd-host` is set. Call once, in the
/// master, before forking. `upgrading`: this is the new master of a binary upgrade,
/// whose old master still holds the address (`endpoint.rs`).
pub fn open(config: &Config, slots: usize, upgrading: bool) -> PyResult<Option<String>> {
    if let Some(s) = config.observe.statsd.clone() {
        // The master's client: the `workers` gauge and `log.*` counters (workers
        // inherit it for theirs).
        if let Ok(s) = Statsd::open(s) {
            use_process_statsd(s);
        }
    }
    let Some(bind) = &config.observe.bind else {
        return Ok(None);
    };
    if REGISTRY.get().is_some() {
        return Ok(Some(bind.to_string()));
    }
    let registry = Arc::new(Registry::new(slots).map_err(|e| BindError::new_err(e.to_string()))?);
    start_endpoint(bind, registry.clone(), upgrading)
        .map_err(|e| BindError::new_err(format!("metrics-bind {bind}: {e}")))?;
    let _ = REGISTRY.set(registry);
    Ok(Some(bind.to_string()))
}

/// Makes `--metrics-bind` work without a master (`ferrule.run()`): one slot, this
/// process's.
pub fn open_single(config: &Config) -> PyResult<()> {
    if config.observe.bind.is_some() && open(config, 1, false)?.is_some() {
        if let Some(r) = REGISTRY.get() {
            if let Some(s) = r.slot(0) {
                use_slot(s);
            }
            use_egress_table(r.egress_table());
            // No master: this process is the one worker.
            r.set_workers(1);
        }
    }
    Ok(())
}

#[pyfunction]
#[pyo3(name = "metrics_open", signature = (config, slots, upgrading=false))]
pub fn py_open(
    config: PyRef<'_, Config>,
    slots: usize,
    upgrading: bool,
) -> PyResult<Option<String>> {
    open(&config, slots, upgrading)
}

/// In a new worker: closes the endpoint's socket inherited from the master, and
/// sends its counts to slot `slot`, if it has one, and its egress counts to the
/// shared table.
#[pyfunction]
#[pyo3(name = "metrics_attach")]
pub fn attach(slot: Option<usize>) {
    close_in_child();
    if let Some(r) = REGISTRY.get() {
        if let Some(s) = slot.and_then(|i| r.slot(i)) {
            use_slot(s);
        }
        use_egress_table(r.egress_table());
    }
}

/// In the master, once the worker at `slot` was reaped: its counts join the totals
/// of workers gone and the slot is cleared for the next one.
#[pyfunction]
#[pyo3(name = "metrics_retire")]
pub fn retire(slot: usize) {
    if let Some(r) = REGISTRY.get() {
        r.retire(slot);
    }
}

/// A worker was replaced for `reason` (one of `ferrule_server::metrics::REASONS`).
#[pyfunction]
#[pyo3(name = "metrics_restart")]
pub fn restart(reason: &str) -> PyResult<()> {
    match REGISTRY.get() {
        Some(r) if !r.restart(reason) => Err(PyValueError::new_err(format!(
            "unknown restart reason {reason:?}"
        ))),
        _ => Ok(()),
    }
}

/// Worker processes alive: `ferrule_workers` and statsd's `gunicorn.workers` gauge.
#[pyfunction]
#[pyo3(name = "metrics_workers")]
pub fn workers(n: u64) {
    if let Some(r) = REGISTRY.get() {
        r.set_workers(n);
    }
    if let Some(s) = process_statsd() {
        s.gauge("workers", n);
    }
}

/// The registry's slots (0 without `--metrics-bind`).
#[pyfunction]
#[pyo3(name = "metrics_slots")]
pub fn slots() -> usize {
    REGISTRY.get().map_or(0, |r| r.slots())
}

/// Counts a log line of `level` (critical, error, warning, exception) in statsd's
/// `gunicorn.log.LEVEL`, for a line that does not pass the Rust error log (those
/// that do are counted there, `ferrule_server::metrics::log_line`).
#[pyfunction]
#[pyo3(name = "statsd_log")]
pub fn statsd_log(level: &str) -> PyResult<()> {
    let counter = match level {
        "critical" => LogCounter::Critical,
        "error" => LogCounter::Error,
        "warning" => LogCounter::Warning,
        "exception" => LogCounter::Exception,
        _ => {
            return Err(PyValueError::new_err(format!(
                "no statsd log counter {level:?}"
            )))
        }
    };
    log_line(counter);
    Ok(())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_open, m)?)?;
    m.add_function(wrap_pyfunction!(attach, m)?)?;
    m.add_function(wrap_pyfunction!(retire, m)?)?;
    m.add_function(wrap_pyfunction!(restart, m)?)?;
    m.add_function(wrap_pyfunction!(workers, m)?)?;
    m.add_function(wrap_pyfunction!(slots, m)?)?;
    m.add_function(wrap_pyfunction!(statsd_log, m)?)?;
    Ok(())
}
