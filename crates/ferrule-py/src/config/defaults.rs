//! Each setting's default, written once in the Rust `Default` impls and handed to
//! the Python settings table (`settings.py`) by `_ferrule.defaults()`.

use crate::config::PROXY_MODES;
use ferrule_server::config::{
    DEFAULT_FORWARDED_ALLOW_IPS, DEFAULT_PROXY_ALLOW_IPS, DEFAULT_UWSGI_ALLOW_IPS,
};
use ferrule_server::ServerConfig;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The default of every setting the core reads, under the front end's names: the
/// Python settings table takes them from here, so each is written once, in the
/// `Default` impls of `ServerConfig` and `ParserConfig`.
#[pyfunction]
pub fn defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let s = ServerConfig::default();
    let p = &s.parser;
    let bind: Vec<String> = s.binds.iter().map(ToString::to_string).collect();
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
    let proxy_protocol = PROXY_MODES
        .iter()
        .find(|(_, mode)| *mode == s.proxy_protocol)
        .map(|(name, _)| *name);
    d.set_item("proxy_protocol", proxy_protocol)?;
    d.set_item("proxy_allow_ips", DEFAULT_PROXY_ALLOW_IPS)?;
    let scheme = PyDict::new(py);
    for (name, value) in s.secure_scheme_headers.pairs() {
        scheme.set_item(
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(value),
        )?;
    }
    d.set_item("secure_scheme_headers", scheme)?;
    d.set_item("forwarded_remote_addr", s.forwarded_remote_addr.name())?;
    d.set_item("protocol", s.protocol.name())?;
    d.set_item("uwsgi_allow_ips", DEFAULT_UWSGI_ALLOW_IPS)?;
    // Syslog (`syslog.rs`).
    d.set_item("syslog_addr", ferrule_server::syslog::DEFAULT_ADDR)?;
    d.set_item("syslog_facility", ferrule_server::syslog::DEFAULT_FACILITY)?;
    d.set_item("syslog_format", ferrule_server::syslog::DEFAULT_FORMAT)?;
    Ok(d)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::{Config, Settings};

    /// `defaults()` plus the settings only the front end defaults (the logs, TLS).
    pub(in crate::config) fn default_settings(py: Python<'_>) -> Bound<'_, PyDict> {
        let d = defaults(py).unwrap();
        d.set_item("log_level", "info").unwrap();
        d.set_item("error_logfile", "-").unwrap();
        d.set_item("access_logfile", py.None()).unwrap();
        d.set_item("access_logformat", "%(h)s").unwrap();
        for file in ["certfile", "keyfile", "ca_certs"] {
            d.set_item(file, py.None()).unwrap();
        }
        d.set_item("cert_reqs", 0).unwrap();
        // The core keeps the suites a list selects, not the list; no list is its default.
        d.set_item("ciphers", py.None()).unwrap();
        d.set_item("egress_log", py.None()).unwrap();
        d.set_item("egress_deny", Vec::<String>::new()).unwrap();
        d.set_item("egress_allow", Vec::<String>::new()).unwrap();
        d
    }

    pub(in crate::config) fn config(d: &Bound<'_, PyDict>) -> Result<Config, String> {
        d.extract::<Settings>()
            .map_err(|e| e.to_string())?
            .into_config()
    }

    #[test]
    fn egress_settings_are_typed_and_a_bad_spec_is_one_line() {
        Python::initialize();
        Python::attach(|py| {
            let d = default_settings(py);
            assert!(!config(&d).unwrap().egress.is_on());
            d.set_item("egress_deny", vec!["metadata", "10.0.0.0/8:5432"])
                .unwrap();
            d.set_item("egress_log", "-").unwrap();
            let c = config(&d).unwrap();
            assert!(c.egress.is_on());
            assert_eq!(c.egress.deny.len(), 2);
            d.set_item("egress_allow", vec!["db.internal:99999"])
                .unwrap();
            let e = config(&d).err().unwrap();
            assert!(
                e.contains("\"db.internal:99999\"") && !e.contains('\n'),
                "{e}"
            );
        });
    }

    #[test]
    fn proxy_protocol_settings() {
        use ferrule_server::AllowIps;
        Python::initialize();
        Python::attach(|py| {
            let d = default_settings(py);
            for (name, mode) in PROXY_MODES {
                d.set_item("proxy_protocol", name).unwrap();
                d.set_item("proxy_allow_ips", "10.0.0.0/8, ::1").unwrap();
                let got = config(&d).unwrap().server;
                assert_eq!(got.proxy_protocol, mode);
                assert_eq!(
                    got.proxy_allow_ips,
                    AllowIps::parse("10.0.0.0/8,::1").unwrap()
                );
            }
            d.set_item("proxy_protocol", "v3").unwrap();
            let e = config(&d).err().unwrap();
            assert!(e.starts_with("proxy-protocol must be one of"), "{e}");
            d.set_item("proxy_protocol", "auto").unwrap();
            d.set_item("proxy_allow_ips", "10.0.0.1/8").unwrap();
            let e = config(&d).err().unwrap();
            assert!(e.starts_with("proxy-allow-from: \"10.0.0.1/8\""), "{e}");
        });
    }

    #[test]
    fn tls_files_are_checked_before_any_is_read() {
        Python::initialize();
        Python::attach(|py| {
            let d = default_settings(py);
            let files = |d: &Bound<'_, PyDict>| d.extract::<Settings>().unwrap().tls_files();
            assert!(files(&d).unwrap().is_none());
            d.set_item("keyfile", "k.pem").unwrap();
            assert!(files(&d)
                .unwrap_err()
                .starts_with("keyfile: needs certfile"));
            // gunicorn: without keyfile, the key is in the certificate file.
            d.set_item("keyfile", py.None()).unwrap();
            d.set_item("certfile", "both.pem").unwrap();
            let got = files(&d).unwrap().unwrap();
            assert_eq!(got.keyfile, std::path::PathBuf::from("both.pem"));
            d.set_item("cert_reqs", 3).unwrap();
            assert!(files(&d).unwrap_err().contains("cert-reqs"));
        });
    }

    #[test]
    fn the_exported_defaults_are_the_default_config() {
        Python::initialize();
        Python::attach(|py| {
            let got = config(&default_settings(py)).unwrap().server;
            assert_eq!(got, ServerConfig::default());
        });
    }

    #[test]
    fn scheme_headers_and_the_remote_addr_list_are_typed_once() {
        use ferrule_http::SchemeHeaders;
        use ferrule_server::RemoteAddrFrom;
        Python::initialize();
        Python::attach(|py| {
            let d = default_settings(py);
            let table = PyDict::new(py);
            table.set_item("X-Scheme", "https").unwrap();
            d.set_item("secure_scheme_headers", table).unwrap();
            d.set_item("forwarded_remote_addr", "X-Forwarded-For")
                .unwrap();
            let got = config(&d).unwrap().server;
            let want = SchemeHeaders::new([("X-Scheme", "https")]).unwrap();
            assert_eq!(got.secure_scheme_headers, want);
            assert_eq!(got.forwarded_remote_addr, RemoteAddrFrom::XForwardedFor);
            d.set_item("secure_scheme_headers", PyDict::new(py))
                .unwrap();
            assert!(config(&d).unwrap().server.secure_scheme_headers.is_empty());
            // Each bad value is one line naming the setting.
            let bad = "[{'X Scheme': 'https'}, {'X-Scheme': 1}, {1: 'on'}, {'X-Scheme': ' on'}, ['X-Scheme']]";
            let bad = py
                .eval(&std::ffi::CString::new(bad).unwrap(), None, None)
                .unwrap();
            for value in bad.try_iter().unwrap() {
                let d = default_settings(py);
                d.set_item("secure_scheme_headers", value.unwrap()).unwrap();
                let err = config(&d).err().unwrap_or_default();
                assert!(err.starts_with("secure_scheme_headers: "), "{err}");
            }
            let d = default_settings(py);
            d.set_item("forwarded_remote_addr", "x-real-ip").unwrap();
            let err = config(&d).err().unwrap_or_default();
            assert!(err.starts_with("forwarded-remote-addr: "), "{err}");
        });
    }
}
