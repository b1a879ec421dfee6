//! Python strings made once and reused by `environ`: a string the app gets again is
//! not built again, and an unchanged value lets the template keep its entry (see
//! `environ.rs`).

use super::rules;
use crate::text::latin1_str;
use pyo3::prelude::*;
use pyo3::types::PyString;
use rustc_hash::FxHashMap as HashMap;
use std::net::IpAddr;

/// Entries each cache keeps; past that, values are converted per request (bounds
/// memory against clients that send random header names or Host values).
const CACHE_MAX: usize = 512;

/// Longest value a [`Recent`] keeps; longer ones are converted each time.
const RECENT_MAX: usize = 256;

/// `HTTP_*` keys by header name, SERVER_NAME and SERVER_PORT by Host value,
/// REMOTE_ADDR by peer address; shared by the threads. FxHash: the maps are small
/// and bounded (`CACHE_MAX`), so a client choosing colliding names gains nothing.
#[derive(Default)]
pub struct Strings {
    pub header_keys: HashMap<Vec<u8>, Py<PyString>>,
    pub hosts: HashMap<Vec<u8>, HostParts>,
    pub peers: HashMap<IpAddr, Py<PyString>>,
}

/// The last string of the fields that often repeat from one request to the next;
/// one set per thread.
#[derive(Default)]
pub struct Recents {
    pub path: Recent,
    pub query: Recent,
    pub remote_port: Ports,
    pub host_header: Recent,
    /// SERVER_NAME and SERVER_PORT for the last Host string (by identity: `host_header`
    /// hands out the same string while the bytes repeat) and scheme: no map lookup.
    pub server: Option<LastServer>,
    /// REMOTE_ADDR for the last peer address.
    pub peer: Option<(IpAddr, Py<PyString>)>,
    /// Variables a front server sent (uwsgi, `ready.rs`): SERVER_PROTOCOL other than
    /// HTTP/1.x (HTTP/2.0 through nginx), SERVER_NAME, SERVER_PORT, REMOTE_ADDR.
    pub protocol: Recent,
    pub server_name: Recent,
    pub server_port: Recent,
    pub remote_addr: Recent,
}

/// See [`Recents::server`].
pub struct LastServer {
    pub host: Py<PyString>,
    pub https: bool,
    pub name: Py<PyString>,
    pub port: Py<PyString>,
}

/// SERVER_NAME and the port written in Host, if any. The default port depends on
/// each request's scheme, so it is not cached with the Host value.
pub type HostParts = (Py<PyString>, Option<Py<PyString>>);

/// The string made for the last value of one field, reused while the bytes repeat:
/// comparing a few bytes costs less than making and freeing a string, and the very
/// same object is what lets `build` skip storing the value.
#[derive(Default)]
pub struct Recent(Option<(Vec<u8>, Py<PyString>)>);

impl Recent {
    pub fn get<'py>(&mut self, py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
        if let Some((last, s)) = &self.0 {
            if last.as_slice() == bytes {
                return s.bind(py).clone();
            }
        }
        let s = latin1_str(py, bytes);
        if bytes.len() <= RECENT_MAX {
            match &mut self.0 {
                Some((last, old)) => {
                    last.clear();
                    last.extend_from_slice(bytes);
                    // Dropped as a `Bound`: a plain decref, without pyo3's GIL check.
                    let _old = std::mem::replace(old, s.clone().unbind()).into_bound(py);
                }
                None => self.0 = Some((bytes.to_vec(), s.clone().unbind())),
            }
        }
        s
    }
}

/// Slots of [`Ports`].
const PORTS: usize = 64;

/// REMOTE_PORT strings by port, one slot per port modulo [`PORTS`]. A client's port is
/// the same for every request of its connection, but the requests of several
/// connections (a load balancer's, a front server's) interleave, so a [`Recent`] would
/// make a new string for nearly every one of them.
pub struct Ports([Option<(u16, Py<PyString>)>; PORTS]);

impl Default for Ports {
    fn default() -> Self {
        Ports([const { None }; PORTS])
    }
}

impl Ports {
    pub fn get<'py>(&mut self, py: Python<'py>, port: u16) -> Bound<'py, PyString> {
        let slot = &mut self.0[usize::from(port) % PORTS];
        if let Some((p, s)) = slot {
            if *p == port {
                return s.bind(py).clone();
            }
        }
        let s = PyString::new(py, itoa::Buffer::new().format(port));
        // The string it replaces is dropped as a `Bound`: a plain decref.
        let _old = slot
            .replace((port, s.clone().unbind()))
            .map(|(_, old)| old.into_bound(py));
        s
    }
}

/// The value cached for `key`, or a new one from `make`, kept while the cache has
/// fewer than `CACHE_MAX` entries. `copy` makes the caller's own reference.
pub fn cached<K, Q, V>(
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

/// The interned `HTTP_*` key of a header name.
pub fn header_key(py: Python<'_>, name: &[u8]) -> Py<PyString> {
    PyString::intern(py, &rules::header_key(name)).unbind()
}
