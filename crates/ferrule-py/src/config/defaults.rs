//! Each setting's default, written once in the Rust `Default` impls and handed to
//! the Python settings table (`settings.py`) by `_ferrule.defaults()`.

use ferrule_server::config::{DEFAULT_FORWARDED_ALLOW_IPS, DEFAULT_UWSGI_ALLOW_IPS};
use ferrule_server::{Bind, ServerConfig};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The default of every setting the core reads, under the front end's names: the
/// Python settings table takes them from here, so each is written once, in the
/// `Default` impls of `ServerConfig` and `ParserConfig`.
#[pyfunction]
pub fn defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let s = ServerConfig::default();
    let p = &s.parser;
    let bind: Vec<String> = s
        .binds
        .iter()
        .map(|b| match b {
            Bind::Tcp(addr) => addr.to_string(),
            other => other.to_string(),
        })
        .collect();
    let d = PyDict::new(py);
    d.set_item("bind", bind)?;
    d.set_item("threads", s.threads)?;
    d.set_item("workers", s.workers)?;
    d.set_item("backlog", s.backlog)?;
    d.set_item("reuse_port", s.reuse_port)?;
    d.set_item("keep_alive", s.keep_alive.as_secs_f64())?;
    d.set_item("header_timeout", s.header_timeout.as_secs_f64())?;
    d.set_item("io_timeout", s.io_timeout.as_secs_f64())?;
    d.set_item("response_buffer_size", s.response_buffer_size)?;
    d.set_item("graceful_timeout", s.graceful_timeout.as_secs_f64())?;
    d.set_item("limit_request_line", p.limit_request_line)?;
    d.set_item("limit_request_fields", p.limit_request_fields)?;
    d.set_item("limit_request_field_size", p.limit_request_field_size)?;
    d.set_item("limit_request_body", p.limit_request_body)?;
    d.set_item("request_buffering", s.request_buffering)?;
    d.set_item("request_buffer_size", s.request_buffer_size)?;
    d.set_item("header_map", p.header_map.name())?;
    d.set_item("permit_obsolete_folding", p.permit_obsolete_folding)?;
    d.set_item("strip_header_spaces", p.strip_header_spaces)?;
    d.set_item("casefold_http_method", p.casefold_http_method)?;
    d.set_item(
        "permit_unconventional_http_method",
        p.permit_unconventional_http_method,
    )?;
    d.set_item("permit_missing_host", p.permit_missing_host)?;
    d.set_item("forwarded_allow_ips", DEFAULT_FORWARDED_ALLOW_IPS)?;
    d.set_item("script_name", s.script_name)?;
    d.set_item("protocol", s.protocol.name())?;
    d.set_item("uwsgi_allow_ips", DEFAULT_UWSGI_ALLOW_IPS)?;
    Ok(d)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::{Config, Settings};

    /// `defaults()` plus the settings only the front end defaults (the logs).
    pub(in crate::config) fn default_settings(py: Python<'_>) -> Bound<'_, PyDict> {
        let d = defaults(py).unwrap();
        d.set_item("log_level", "info").unwrap();
        d.set_item("error_logfile", "-").unwrap();
        d.set_item("access_logfile", py.None()).unwrap();
        d.set_item("access_logformat", "%(h)s").unwrap();
        d
    }

    pub(in crate::config) fn config(d: &Bound<'_, PyDict>) -> Result<Config, String> {
        d.extract::<Settings>()
            .map_err(|e| e.to_string())?
            .into_config()
    }

    #[test]
    fn the_exported_defaults_are_the_default_config() {
        Python::initialize();
        Python::attach(|py| {
            let got = config(&default_settings(py)).unwrap().server;
            assert_eq!(got, ServerConfig::default());
        });
    }
}
