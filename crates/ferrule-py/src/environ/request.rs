//! One HTTP/1 request's environ values as Python strings: what `rules.rs` says, made
//! through the caches of `strings.rs` so that a value that repeats is the very same
//! string (which lets `environ.rs` skip storing it).

use super::rules;
use super::rules::split_host;
use super::sticky::Sticky;
use super::strings::{self, cached, header_key, Recents, Strings};
use super::Environ;
use crate::text::latin1_str;
use ferrule_server::Exchange;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::sync::Mutex;

impl Environ {
    /// This request's values of the [`Sticky`] keys.
    pub(super) fn sticky<'py>(
        &self,
        py: Python<'py>,
        ex: &Exchange,
        recent: &mut Recents,
    ) -> Sticky<'py> {
        let method = ex.method();
        let method = match self.methods.iter().find(|(m, _)| *m == method) {
            Some((_, s)) => s.bind(py).clone(),
            None => latin1_str(py, method),
        };
        let decoded = rules::decode_path(ex.path());
        let path = rules::strip_script_name(&decoded, &self.script_name);
        let protocol = self.words.protocol(py, ex.version());
        let scheme = self.words.scheme(py, ex.is_https());
        let host = ex.host().map(|value| recent.host_header.get(py, value));
        let (server_name, server_port) = match (&host, &recent.server) {
            (Some(h), Some(last)) if last.host.is(h) && last.https == ex.is_https() => {
                (last.name.clone_ref(py), last.port.clone_ref(py))
            }
            _ => {
                let (name, port) = self.server(py, ex);
                // An empty Host names no server: SERVER_NAME came from the listener,
                // which another request with the same Host may not share.
                let named = rules::named_host(ex.host()).is_some();
                if let Some(h) = host.as_ref().filter(|_| named) {
                    let last = strings::LastServer {
                        host: h.clone().unbind(),
                        https: ex.is_https(),
                        name: name.clone_ref(py),
                        port: port.clone_ref(py),
                    };
                    // Dropped as `Bound`s: plain decrefs, without pyo3's GIL check.
                    if let Some(old) = recent.server.replace(last) {
                        drop((old.host.into_bound(py), old.name.into_bound(py)));
                        drop(old.port.into_bound(py));
                    }
                }
                (name, port)
            }
        };
        let (remote_addr, remote_port) = remote(py, ex, &self.caches, recent);
        let host = match host {
            Some(h) => h.into_any(),
            None => py.None().into_bound(py),
        };
        Sticky {
            method: method.into_any(),
            path: recent.path.get(py, path).into_any(),
            query: recent.query.get(py, ex.query()).into_any(),
            protocol: protocol.into_any(),
            scheme: scheme.into_any(),
            server_name: server_name.into_bound(py).into_any(),
            server_port: server_port.into_bound(py).into_any(),
            remote_addr: remote_addr.into_any(),
            remote_port: remote_port.into_any(),
            host,
        }
    }

    /// SERVER_NAME and SERVER_PORT (`rules.rs`), the name and the port written in a
    /// Host value cached by that value.
    fn server(&self, py: Python<'_>, ex: &Exchange) -> (Py<PyString>, Py<PyString>) {
        let https = ex.is_https();
        match rules::named_host(ex.host()) {
            Some(host) => {
                // The parser let only ASCII through; lossy is for the rule's sake.
                let make = || {
                    let (h, p) = split_host(host);
                    let text = |b| String::from_utf8_lossy(b);
                    let port = p.map(|p| PyString::new(py, &text(p)).unbind());
                    (PyString::new(py, &text(h)).unbind(), port)
                };
                let (name, port) = cached(&mut self.caches().hosts, host, make, |(n, p)| {
                    (n.clone_ref(py), p.as_ref().map(|p| p.clone_ref(py)))
                });
                let port = port.unwrap_or_else(|| self.words.default_port(py, https).unbind());
                (name, port)
            }
            None => {
                let (name, port) = rules::listener_server(ex.local(), https);
                (
                    PyString::new(py, &name).unbind(),
                    PyString::new(py, &port).unbind(),
                )
            }
        }
    }

    /// `HTTP_*` keys; repeated fields are joined with "," as gunicorn does.
    pub(super) fn headers(
        &self,
        py: Python<'_>,
        env: &Bound<'_, PyDict>,
        ex: &Exchange,
        keys: &mut Vec<Py<PyString>>,
    ) -> PyResult<()> {
        // Keys are interned, so a repeated field has the very same key object: the
        // keys set so far (`keys`) tell a repeat without a dict lookup per field. A
        // lookup would not do: a kept environ has the last request's fields.
        let mut strings = None;
        for (name, value) in ex.headers() {
            // Host is a `Sticky` key; the parser takes one Host field at most.
            if rules::from_framing(name) {
                continue;
            }
            let make = || header_key(py, name);
            // Locked once, by the first field that needs a key (none but Host: never).
            let strings = strings.get_or_insert_with(|| self.caches());
            let key = cached(&mut strings.header_keys, name, make, |k| k.clone_ref(py));
            let key = &key.into_bound(py);
            let value = latin1_str(py, value);
            let repeat = keys.iter().any(|k| k.as_ptr() == key.as_ptr());
            match repeat.then(|| env.get_item(key)).transpose()?.flatten() {
                Some(prev) => {
                    let prev = prev.cast_into::<PyString>()?;
                    env.set_item(key, rules::join_field(&prev.to_cow()?, &value.to_cow()?))?;
                }
                None => {
                    env.set_item(key, value)?;
                    keys.push(key.clone().unbind());
                }
            }
        }
        Ok(())
    }
}

/// REMOTE_ADDR and REMOTE_PORT; empty for a Unix socket, as gunicorn sets them.
fn remote<'py>(
    py: Python<'py>,
    ex: &Exchange,
    strings: &Mutex<Strings>,
    recent: &mut Recents,
) -> (Bound<'py, PyString>, Bound<'py, PyString>) {
    match rules::remote(ex.client()) {
        Some((ip, port)) => {
            let addr = match &recent.peer {
                Some((last, s)) if *last == ip => s.clone_ref(py),
                _ => {
                    let make = || PyString::new(py, &ip.to_string()).unbind();
                    let mut strings = strings.lock().unwrap_or_else(|p| p.into_inner());
                    let addr = cached(&mut strings.peers, &ip, make, |s| s.clone_ref(py));
                    let old = recent.peer.replace((ip, addr.clone_ref(py)));
                    // Dropped as a `Bound`: a plain decref, without pyo3's GIL check.
                    drop(old.map(|(_, s)| s.into_bound(py)));
                    addr
                }
            };
            (addr.into_bound(py), recent.remote_port.get(py, port))
        }
        None => (intern!(py, "").clone(), intern!(py, "").clone()),
    }
}
