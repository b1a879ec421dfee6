//! Egress from Python: turning it on in a worker (`ferrule/egress.py` calls
//! [`egress_start`] before the app is imported), the names the app resolves, and the
//! counters for metrics (`ferrule.egress_counts()`).

use crate::config::Config;
use crate::{ConfigError, EgressLogError};
use ferrule_server::egress::{self, EgressError};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use std::net::IpAddr;

fn to_py(e: EgressError) -> PyErr {
    match e {
        EgressError::Spec(_) => ConfigError::new_err(e.to_string()),
        EgressError::Log(..) => EgressLogError::new_err(e.to_string()),
        _ => PyOSError::new_err(e.to_string()),
    }
}

/// Turns egress on in this process with `config`'s settings; the number of rules, or
/// None when the settings ask for no egress (nothing is installed then).
#[pyfunction]
pub fn egress_start(py: Python<'_>, config: PyRef<'_, Config>) -> PyResult<Option<usize>> {
    let settings = config.egress.clone();
    drop(config);
    if !settings.is_on() {
        return Ok(None);
    }
    // Resolving the rules' host names may wait on DNS: not with the GIL held.
    py.detach(|| egress::start(&settings))
        .map(Some)
        .map_err(to_py)
}

/// The start-up warning when allow rules name hosts but DNS is denied (no
/// `nameserver` rule), or None.
#[pyfunction]
pub fn egress_dns_hint(config: PyRef<'_, Config>) -> Option<String> {
    egress::dns_hint(&config.egress)
}

/// The app resolved `name` to `addrs` (the wrapper of `socket.getaddrinfo`); an
/// empty `name`: the app asked for a literal address, whose name is forgotten.
/// Addresses that are not IP literals (a scope suffix) are skipped.
#[pyfunction]
pub fn egress_note_host(name: &str, addrs: Vec<String>) {
    let ips: Vec<IpAddr> = addrs.iter().filter_map(|a| a.parse().ok()).collect();
    if !ips.is_empty() {
        egress::note_host(name, &ips);
    }
}

/// `(proto, addr, port, host, verdict, count)` for every destination this process
/// tried, sorted; empty when egress is off.
#[pyfunction]
#[allow(clippy::type_complexity)]
pub fn egress_counts() -> Vec<(&'static str, String, u16, Option<String>, &'static str, u64)> {
    egress::counts()
        .into_iter()
        .map(|(k, n)| (k.proto, k.addr, k.port, k.host, k.verdict, n))
        .collect()
}
