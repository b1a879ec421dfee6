//! Building the PEP 3333 `environ` for a request.
//!
//! Constant keys live in a template dict that is copied per request (one C-level
//! dict copy); key names are interned once; header names are turned into `HTTP_*`
//! keys once and cached.
//!
//! The template also holds every key that each request sets, with a `None` that
//! `build` always replaces, and room for more: replacing a value in the copy is a
//! lookup, while inserting a key the copy has no room for rebuilds its hash table.

use crate::text::latin1_str;
use crate::tx::Tx;
use ferrule_http::{percent, Version};
use ferrule_server::{Exchange, Local, Peer};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use rustc_hash::FxHashMap as HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Entries each cache keeps; past that, values are converted per request (bounds
/// memory against clients that send random header names or Host values).
const CACHE_MAX: usize = 512;

/// Keys inserted into the template and deleted again, so its copies have a 64-slot
/// table with room for 14 header keys. CPython copies a dict's table as is while at
/// most a third of its entries are deleted (`dict_copy`): 9 of 28 here. Measured
/// under callgrind: a request with 8 headers costs 730 instructions less than with a
/// 32-slot template (which must grow), one with only `Host` 110 more (bigger copy).
const HEADROOM: usize = 9;

/// Python strings made once and reused: `HTTP_*` keys by header name, SERVER_NAME and
/// SERVER_PORT by Host value, REMOTE_ADDR by peer address. FxHash: the maps are small
/// and bounded (`CACHE_MAX`), so a client choosing colliding names gains nothing.
#[derive(Default)]
struct Caches {
    header_keys: HashMap<Vec<u8>, Py<PyString>>,
    hosts: HashMap<Vec<u8>, HostParts>,
    peers: HashMap<IpAddr, Py<PyString>>,
}

/// SERVER_NAME and the port written in Host, if any. The default port depends on
/// each request's scheme, so it is not cached with the Host value.
type HostParts = (Py<PyString>, Option<Py<PyString>>);

pub struct Environ {
    template: Py<PyDict>,
    methods: Vec<(&'static [u8], Py<PyString>)>,
    caches: Mutex<Caches>,
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
        for (key, none) in PerRequest::placeholders(py).items(py) {
            t.set_item(key, none)?;
        }
        for i in 0..HEADROOM {
            t.set_item(format!("ferrule.headroom.{i}"), py.None())?;
        }
        for i in 0..HEADROOM {
            t.del_item(format!("ferrule.headroom.{i}"))?;
        }
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
            caches: Mutex::new(Caches::default()),
            script_name: cfg.script_name.as_bytes().to_vec(),
        })
    }

    /// The environ for the request in `tx`.
    pub fn build<'py>(&self, py: Python<'py>, tx: &Py<Tx>) -> PyResult<Bound<'py, PyDict>> {
        let env = self.template.bind(py).copy()?;
        let mut t = tx.borrow_mut(py);
        let ex = t.exchange()?;
        let method = ex.method();
        let method = match self.methods.iter().find(|(m, _)| *m == method) {
            Some((_, s)) => s.bind(py).clone(),
            None => latin1_str(py, method),
        };
        let raw_path = ex.path();
        let decoded = percent::decode(raw_path);
        let mut path = decoded.as_deref().unwrap_or(raw_path);
        if !self.script_name.is_empty() && path.starts_with(&self.script_name) {
            path = &path[self.script_name.len()..];
        }
        let protocol = match ex.version() {
            Version::Http10 => intern!(py, "HTTP/1.0"),
            Version::Http11 => intern!(py, "HTTP/1.1"),
        };
        let scheme = match ex.is_https() {
            true => intern!(py, "https"),
            false => intern!(py, "http"),
        };
        if let Some(ct) = ex.content_type() {
            env.set_item(intern!(py, "CONTENT_TYPE"), latin1_str(py, ct))?;
        }
        if let Some(cl) = ex.content_length() {
            env.set_item(intern!(py, "CONTENT_LENGTH"), latin1_str(py, cl))?;
        }
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        let (server_name, server_port) = self.server(py, ex, &mut caches);
        let (remote_addr, remote_port) = remote(py, ex, &mut caches);
        self.headers(py, &env, ex, &mut caches)?;
        drop(caches);
        let values = PerRequest {
            method: method.into_any(),
            path: latin1_str(py, path).into_any(),
            query: latin1_str(py, ex.query()).into_any(),
            protocol: protocol.clone().into_any(),
            scheme: scheme.clone().into_any(),
            server_name: server_name.into_bound(py).into_any(),
            server_port: server_port.into_bound(py).into_any(),
            remote_addr: remote_addr.into_any(),
            remote_port: remote_port.into_any(),
            input: tx.bind(py).clone().into_any(),
        };
        drop(t);
        for (key, value) in values.items(py) {
            env.set_item(key, value)?;
        }
        Ok(env)
    }

    /// SERVER_NAME and SERVER_PORT: from Host, else the listening address.
    fn server(
        &self,
        py: Python<'_>,
        ex: &Exchange,
        caches: &mut Caches,
    ) -> (Py<PyString>, Py<PyString>) {
        let default_port = match ex.is_https() {
            true => intern!(py, "443"),
            false => intern!(py, "80"),
        };
        match ex.host() {
            Some(host) => {
                let make = || {
                    let text = String::from_utf8_lossy(host);
                    let (h, p) = split_host(&text);
                    let port = p.map(|p| PyString::new(py, p).unbind());
                    (PyString::new(py, h).unbind(), port)
                };
                let (name, port) = cached(&mut caches.hosts, host, make, |(n, p)| {
                    (n.clone_ref(py), p.as_ref().map(|p| p.clone_ref(py)))
                });
                (name, port.unwrap_or_else(|| default_port.clone().unbind()))
            }
            None => match ex.local() {
                Local::Tcp(a) => (
                    PyString::new(py, &a.ip().to_string()).unbind(),
                    PyString::new(py, itoa::Buffer::new().format(a.port())).unbind(),
                ),
                Local::Unix(_) => (
                    PyString::new(py, "localhost").unbind(),
                    default_port.clone().unbind(),
                ),
            },
        }
    }

    /// `HTTP_*` keys; repeated fields are joined with "," as gunicorn does.
    fn headers(
        &self,
        py: Python<'_>,
        env: &Bound<'_, PyDict>,
        ex: &Exchange,
        caches: &mut Caches,
    ) -> PyResult<()> {
        let cache = &mut caches.header_keys;
        // Keys are interned, so a repeated field has the very same key object (kept
        // alive by the dict): the addresses of the keys set so far tell a repeat
        // without a dict lookup per field. Past `SEEN` fields, every field looks.
        const SEEN: usize = 16;
        let mut seen = [0usize; SEEN];
        let mut count = 0;
        for (name, value) in ex.headers() {
            if name.eq_ignore_ascii_case(b"content-type")
                || name.eq_ignore_ascii_case(b"content-length")
            {
                continue;
            }
            let key = cached(cache, name, || header_key(py, name), |k| k.clone_ref(py));
            let key = key.bind(py);
            let value = latin1_str(py, value);
            let addr = key.as_ptr() as usize;
            let maybe_repeat = count >= SEEN || seen[..count].contains(&addr);
            match maybe_repeat
                .then(|| env.get_item(key))
                .transpose()?
                .flatten()
            {
                Some(prev) => {
                    let joined = format!("{},{}", prev.extract::<String>()?, value.to_cow()?);
                    env.set_item(key, joined)?;
                }
                None => env.set_item(key, value)?,
            }
            if count < SEEN {
                seen[count] = addr;
                count += 1;
            }
        }
        Ok(())
    }
}

/// REMOTE_ADDR and REMOTE_PORT; empty for a Unix socket, as gunicorn sets them.
fn remote<'py>(
    py: Python<'py>,
    ex: &Exchange,
    caches: &mut Caches,
) -> (Bound<'py, PyString>, Bound<'py, PyString>) {
    match ex.peer() {
        Peer::Tcp(a) => {
            let ip = a.ip().to_canonical();
            let make = || PyString::new(py, &ip.to_string()).unbind();
            let addr = cached(&mut caches.peers, &ip, make, |s| s.clone_ref(py));
            let port = PyString::new(py, itoa::Buffer::new().format(a.port()));
            (addr.into_bound(py), port)
        }
        Peer::Unix => (intern!(py, "").clone(), intern!(py, "").clone()),
    }
}

/// The keys every request sets. The template holds them all as placeholders (from
/// [`PerRequest::placeholders`]) and `build` replaces them all; both go through
/// [`PerRequest::items`], so no key can be in one list and missing from the other.
struct PerRequest<'py> {
    method: Bound<'py, PyAny>,
    path: Bound<'py, PyAny>,
    query: Bound<'py, PyAny>,
    protocol: Bound<'py, PyAny>,
    scheme: Bound<'py, PyAny>,
    server_name: Bound<'py, PyAny>,
    server_port: Bound<'py, PyAny>,
    remote_addr: Bound<'py, PyAny>,
    remote_port: Bound<'py, PyAny>,
    input: Bound<'py, PyAny>,
}

impl<'py> PerRequest<'py> {
    fn placeholders(py: Python<'py>) -> PerRequest<'py> {
        let none = || py.None().into_bound(py);
        PerRequest {
            method: none(),
            path: none(),
            query: none(),
            protocol: none(),
            scheme: none(),
            server_name: none(),
            server_port: none(),
            remote_addr: none(),
            remote_port: none(),
            input: none(),
        }
    }

    fn items(self, py: Python<'py>) -> [(&'py Bound<'py, PyString>, Bound<'py, PyAny>); 10] {
        [
            (intern!(py, "REQUEST_METHOD"), self.method),
            (intern!(py, "PATH_INFO"), self.path),
            (intern!(py, "QUERY_STRING"), self.query),
            (intern!(py, "SERVER_PROTOCOL"), self.protocol),
            (intern!(py, "wsgi.url_scheme"), self.scheme),
            (intern!(py, "SERVER_NAME"), self.server_name),
            (intern!(py, "SERVER_PORT"), self.server_port),
            (intern!(py, "REMOTE_ADDR"), self.remote_addr),
            (intern!(py, "REMOTE_PORT"), self.remote_port),
            (intern!(py, "wsgi.input"), self.input),
        ]
    }
}

/// The value cached for `key`, or a new one from `make`, kept while the cache has
/// fewer than `CACHE_MAX` entries. `copy` makes the caller's own reference.
fn cached<K, Q, V>(
    map: &mut HashMap<K, V>,
    key: &Q,
    make: impl FnOnce() -> V,
    copy: impl Fn(&V) -> V,
) -> V
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: ToOwned<Owned = K> + std::hash::Hash + Eq + ?Sized,
{
    if let Some(v) = map.get(key) {
        return copy(v);
    }
    let v = make();
    if map.len() < CACHE_MAX {
        map.insert(key.to_owned(), copy(&v));
    }
    v
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
