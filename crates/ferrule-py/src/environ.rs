//! Building the PEP 3333 `environ` for a request.
//!
//! Constant keys live in a template dict that is copied per request (one C-level
//! dict copy); key names are interned once; header names are turned into `HTTP_*`
//! keys once and cached.

use crate::input::Input;
use crate::text::latin1_str;
use crate::tx::Tx;
use ferrule_http::{percent, Version};
use ferrule_server::{Exchange, Local, Peer};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::collections::HashMap;
use std::sync::Mutex;

/// Header names cached before new ones are converted per request (bounds memory
/// against clients that send random names).
const HEADER_CACHE_MAX: usize = 512;

pub struct Environ {
    template: Py<PyDict>,
    methods: Vec<(&'static [u8], Py<PyString>)>,
    header_keys: Mutex<HashMap<Vec<u8>, Py<PyString>>>,
    script_name: Vec<u8>,
}

impl Environ {
    pub fn new(
        py: Python<'_>,
        cfg: &ferrule_server::ServerConfig,
        errors: PyObject,
        file_wrapper: PyObject,
    ) -> PyResult<Environ> {
        let t = PyDict::new(py);
        t.set_item("wsgi.version", (1, 0))?;
        t.set_item("wsgi.errors", errors)?;
        t.set_item("wsgi.multithread", cfg.threads > 1)?;
        t.set_item("wsgi.multiprocess", cfg.workers > 1)?;
        t.set_item("wsgi.run_once", false)?;
        t.set_item("wsgi.input_terminated", true)?;
        t.set_item("wsgi.file_wrapper", file_wrapper)?;
        t.set_item("SCRIPT_NAME", &cfg.script_name)?;
        t.set_item(
            "SERVER_SOFTWARE",
            concat!("ferrule/", env!("CARGO_PKG_VERSION")),
        )?;
        let methods = [
            &b"GET"[..],
            b"POST",
            b"HEAD",
            b"PUT",
            b"DELETE",
            b"PATCH",
            b"OPTIONS",
        ]
        .into_iter()
        .map(|m| {
            (
                m,
                PyString::intern(py, std::str::from_utf8(m).unwrap_or("GET")).unbind(),
            )
        })
        .collect();
        Ok(Environ {
            template: t.unbind(),
            methods,
            header_keys: Mutex::new(HashMap::new()),
            script_name: cfg.script_name.as_bytes().to_vec(),
        })
    }

    /// The environ for the request in `tx`.
    pub fn build<'py>(&self, py: Python<'py>, tx: &Py<Tx>) -> PyResult<Bound<'py, PyDict>> {
        let env = self.template.bind(py).copy()?;
        let mut t = tx.borrow_mut(py);
        let ex = t.exchange()?;
        let method = ex.method();
        match self.methods.iter().find(|(m, _)| *m == method) {
            Some((_, s)) => env.set_item(intern!(py, "REQUEST_METHOD"), s.bind(py))?,
            None => env.set_item(intern!(py, "REQUEST_METHOD"), latin1_str(py, method))?,
        }
        let raw_path = ex.path();
        let decoded = percent::decode(raw_path);
        let mut path = decoded.as_deref().unwrap_or(raw_path);
        if !self.script_name.is_empty() && path.starts_with(&self.script_name) {
            path = &path[self.script_name.len()..];
        }
        env.set_item(intern!(py, "PATH_INFO"), latin1_str(py, path))?;
        env.set_item(intern!(py, "QUERY_STRING"), latin1_str(py, ex.query()))?;
        let proto = match ex.version() {
            Version::Http10 => intern!(py, "HTTP/1.0"),
            Version::Http11 => intern!(py, "HTTP/1.1"),
        };
        env.set_item(intern!(py, "SERVER_PROTOCOL"), proto)?;
        let scheme = if ex.is_https() {
            intern!(py, "https")
        } else {
            intern!(py, "http")
        };
        env.set_item(intern!(py, "wsgi.url_scheme"), scheme)?;
        if let Some(ct) = ex.content_type() {
            env.set_item(intern!(py, "CONTENT_TYPE"), latin1_str(py, ct))?;
        }
        if let Some(cl) = ex.content_length() {
            env.set_item(intern!(py, "CONTENT_LENGTH"), latin1_str(py, cl))?;
        }
        self.server_and_remote(py, &env, ex)?;
        self.headers(py, &env, ex)?;
        drop(t);
        env.set_item(
            intern!(py, "wsgi.input"),
            Input {
                tx: tx.clone_ref(py),
            },
        )?;
        Ok(env)
    }

    fn server_and_remote(
        &self,
        py: Python<'_>,
        env: &Bound<'_, PyDict>,
        ex: &Exchange,
    ) -> PyResult<()> {
        let default_port = if ex.is_https() { "443" } else { "80" };
        let (name, port): (String, String) = match ex.host() {
            Some(host) => {
                let host = String::from_utf8_lossy(host);
                match split_host(&host) {
                    (h, Some(p)) => (h.to_string(), p.to_string()),
                    (h, None) => (h.to_string(), default_port.to_string()),
                }
            }
            None => match ex.local() {
                Local::Tcp(a) => (a.ip().to_string(), a.port().to_string()),
                Local::Unix(_) => ("localhost".into(), default_port.into()),
            },
        };
        env.set_item(intern!(py, "SERVER_NAME"), name)?;
        env.set_item(intern!(py, "SERVER_PORT"), port)?;
        match ex.peer() {
            Peer::Tcp(a) => {
                env.set_item(
                    intern!(py, "REMOTE_ADDR"),
                    a.ip().to_canonical().to_string(),
                )?;
                env.set_item(intern!(py, "REMOTE_PORT"), a.port().to_string())?;
            }
            Peer::Unix => {
                env.set_item(intern!(py, "REMOTE_ADDR"), "")?;
                env.set_item(intern!(py, "REMOTE_PORT"), "")?;
            }
        }
        Ok(())
    }

    /// `HTTP_*` keys; repeated fields are joined with "," as gunicorn does.
    fn headers(&self, py: Python<'_>, env: &Bound<'_, PyDict>, ex: &Exchange) -> PyResult<()> {
        let mut cache = self.header_keys.lock().unwrap_or_else(|p| p.into_inner());
        for (name, value) in ex.headers() {
            if name.eq_ignore_ascii_case(b"content-type")
                || name.eq_ignore_ascii_case(b"content-length")
            {
                continue;
            }
            let key = match cache.get(name) {
                Some(k) => k.clone_ref(py),
                None => {
                    let k = header_key(py, name);
                    if cache.len() < HEADER_CACHE_MAX {
                        cache.insert(name.to_vec(), k.clone_ref(py));
                    }
                    k
                }
            };
            let key = key.bind(py);
            let value = latin1_str(py, value);
            match env.get_item(key)? {
                Some(prev) => {
                    let joined = format!("{},{}", prev.extract::<String>()?, value.to_cow()?);
                    env.set_item(key, joined)?;
                }
                None => env.set_item(key, value)?,
            }
        }
        Ok(())
    }
}

fn header_key(py: Python<'_>, name: &[u8]) -> Py<PyString> {
    let mut key = String::with_capacity(5 + name.len());
    key.push_str("HTTP_");
    key.extend(name.iter().map(|&b| {
        if b == b'-' {
            '_'
        } else {
            b.to_ascii_uppercase() as char
        }
    }));
    PyString::intern(py, &key).unbind()
}

/// Splits `host[:port]`, keeping IPv6 brackets.
fn split_host(host: &str) -> (&str, Option<&str>) {
    if host.starts_with('[') {
        return match host.find("]:") {
            Some(i) => (&host[..=i], Some(&host[i + 2..])),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host, None),
    }
}

#[cfg(test)]
mod tests {
    use super::split_host;

    #[test]
    fn hosts() {
        assert_eq!(split_host("example.com"), ("example.com", None));
        assert_eq!(
            split_host("example.com:8080"),
            ("example.com", Some("8080"))
        );
        assert_eq!(split_host("[::1]:80"), ("[::1]", Some("80")));
        assert_eq!(split_host("[::1]"), ("[::1]", None));
    }
}
