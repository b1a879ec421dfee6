//! Building the PEP 3333 `environ` for a request.
//!
//! Constant keys live in a template dict that is copied per request (one C-level
//! dict copy); key names are interned once; header names are turned into `HTTP_*`
//! keys once and cached (`strings.rs`).
//!
//! The template also holds every key that each request sets, with the value the
//! last request stored there. A request whose value is the very same object (the
//! same method, Host, client, or path as the one before: `strings.rs` hands out the
//! same string for the same bytes) skips the store; a changed value is stored into
//! the template before the copy. Either way the copy has the right value, and a
//! skipped store saves a dict lookup and insert (about 190 instructions each).
//! `wsgi.input` is the request object, which the thread reuses while the app keeps
//! no part of a request (`handler.rs`): the template keeps it too, and stores a new
//! one only when the object changed. The template's reference is one the reuse check
//! counts ([`Environ::release`]).
//!
//! Each runner thread has its own template (a copy of the one made at start-up), so
//! no lock is held across a copy: the copy can run Python code (a new dict may start
//! a garbage collection, whose finalizers may let another thread take the GIL), and a
//! thread waiting for such a lock would hold the GIL that the holder needs.
//!
//! The template has room for more keys: replacing a value in the copy is a lookup,
//! while inserting a key the copy has no room for rebuilds its hash table.
//!
//! The copy is skipped altogether while apps leave their environ alone: the next
//! request builds on the last one's (`live.rs`).

mod live;
mod logged;
mod strings;

pub use logged::LoggedKeys;

use crate::text::latin1_str;
use crate::tx::Tx;
use ferrule_http::{percent, Version};
use ferrule_server::{Exchange, Local, Peer};
use live::Live;
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use strings::{cached, header_key, split_host, Recents, Strings};

/// Keys inserted into the template and deleted again, so its copies have a 64-slot
/// table with room for 14 header keys (Host's among them). CPython copies a dict's
/// table as is while at most a third of its entries are deleted (`dict_copy`): 9 of 29
/// here. Measured under callgrind: a request with 8 headers costs 730 instructions
/// less than with a 32-slot template (which must grow), one with only `Host` 110 more
/// (bigger copy).
const HEADROOM: usize = 9;

pub struct Environ {
    /// Tells this `Environ`'s thread templates from those of an earlier one.
    id: u64,
    /// The template each thread copies once.
    template: Py<PyDict>,
    methods: Vec<(&'static [u8], Py<PyString>)>,
    /// Every use holds the GIL, and nothing that can run Python code happens while
    /// it is locked; the mutex only makes `Environ` shareable.
    caches: Mutex<Strings>,
    script_name: Vec<u8>,
}

/// One runner thread's template, the values it holds, and its recent strings.
struct ThreadTemplate {
    environ: u64,
    template: Py<PyDict>,
    /// The template's values of the [`Sticky`] keys, in [`Sticky::items`] order
    /// (`None` until the first request stores them).
    stored: [Option<Py<PyAny>>; STICKY],
    /// The address of the request object the template's `wsgi.input` holds (0 for its
    /// placeholder). The template's reference keeps that object alive, so no other
    /// object can have the address meanwhile.
    input: usize,
    recent: Recents,
    /// The last environ, when the next request may build on it (`live.rs`).
    live: Live,
}

thread_local! {
    static TEMPLATE: RefCell<Option<ThreadTemplate>> = const { RefCell::new(None) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl Environ {
    pub fn new(
        py: Python<'_>,
        cfg: &ferrule_server::ServerConfig,
        errors: Py<PyAny>,
        file_wrapper: Py<PyAny>,
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
        // Placeholders: each request replaces them (so the copy never inserts them).
        for (key, none) in Sticky::placeholders(py).items(py) {
            t.set_item(key, none)?;
        }
        t.set_item(intern!(py, "wsgi.input"), py.None())?;
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
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            template: t.unbind(),
            methods,
            caches: Mutex::new(Strings::default()),
            script_name: cfg.script_name.as_bytes().to_vec(),
        })
    }

    /// The environ for the request in `tx`.
    pub fn build<'py>(&self, py: Python<'py>, tx: &Bound<'py, Tx>) -> PyResult<Bound<'py, PyDict>> {
        TEMPLATE.with(|cell| {
            // Only `build` borrows it, and nothing in `build` builds another environ.
            let mut slot = cell
                .try_borrow_mut()
                .map_err(|_| PyRuntimeError::new_err("environ built inside another"))?;
            let local = match &mut *slot {
                Some(local) if local.environ == self.id => local,
                stale => stale.insert(ThreadTemplate {
                    environ: self.id,
                    template: self.template.bind(py).copy()?.unbind(),
                    stored: Default::default(),
                    input: 0,
                    recent: Recents::default(),
                    live: Live::default(),
                }),
            };
            self.build_in(py, tx, local)
        })
    }

    fn build_in<'py>(
        &self,
        py: Python<'py>,
        tx: &Bound<'py, Tx>,
        local: &mut ThreadTemplate,
    ) -> PyResult<Bound<'py, PyDict>> {
        let mut t = tx.borrow_mut();
        let ex = t.exchange()?;
        let values = self.sticky(py, ex, &mut local.recent);
        let env = match local.live.take(py) {
            Some(env) => {
                local.live.update(&env, values)?;
                local.live.set_input(&env, tx.as_any())?;
                env
            }
            None => self.copy_template(py, tx, local, values, ex.host().is_some())?,
        };
        let mut keys = local.live.start_extras();
        if let Some(ct) = ex.content_type() {
            let key = intern!(py, "CONTENT_TYPE");
            env.set_item(key, latin1_str(py, ct))?;
            keys.push(key.clone().unbind());
        }
        if let Some(cl) = ex.content_length() {
            let key = intern!(py, "CONTENT_LENGTH");
            env.set_item(key, latin1_str(py, cl))?;
            keys.push(key.clone().unbind());
        }
        self.headers(py, &env, ex, &mut keys)?;
        local.live.finish(&env, keys)?;
        Ok(env)
    }

    /// A new copy of the template, with this request's [`Sticky`] values stored
    /// into the template first where they changed.
    fn copy_template<'py>(
        &self,
        py: Python<'py>,
        tx: &Bound<'py, Tx>,
        local: &mut ThreadTemplate,
        values: Sticky<'py>,
        host: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let template = local.template.bind(py);
        values.store_changed(template, &mut local.stored, Absent::Placeholder)?;
        let input = tx.as_ptr() as usize;
        if local.input != input {
            template.set_item(intern!(py, "wsgi.input"), tx)?;
            local.input = input;
        }
        let env = template.copy()?;
        if !host {
            // The template's HTTP_HOST is the placeholder (see `Sticky::host`).
            env.del_item(intern!(py, "HTTP_HOST"))?;
        }
        local.live.adopt(py, &local.stored, input);
        Ok(env)
    }

    /// Ends `tx`'s request on this thread: gives back the environ `build` made for it,
    /// if it made one, which the next request may build on (`live.rs`). Returns how
    /// many references to `tx` this thread's environs then hold (the template's
    /// `wsgi.input`, the kept environ's): references that are not the app's.
    pub fn release(&self, env: Option<Bound<'_, PyDict>>, tx: &Bound<'_, Tx>) -> isize {
        let addr = tx.as_ptr() as usize;
        TEMPLATE.with(|cell| {
            let Ok(mut slot) = cell.try_borrow_mut() else {
                return 0;
            };
            match slot.as_mut() {
                Some(local) if local.environ == self.id => {
                    if let Some(env) = env {
                        local.live.offer(env);
                    }
                    isize::from(local.input == addr) + isize::from(local.live.holds(addr))
                }
                _ => 0,
            }
        })
    }

    fn caches(&self) -> std::sync::MutexGuard<'_, Strings> {
        self.caches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This request's values of the [`Sticky`] keys.
    fn sticky<'py>(&self, py: Python<'py>, ex: &Exchange, recent: &mut Recents) -> Sticky<'py> {
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
        let host = ex.host().map(|value| recent.host_header.get(py, value));
        let (server_name, server_port) = match (&host, &recent.server) {
            (Some(h), Some(last)) if last.host.is(h) && last.https == ex.is_https() => {
                (last.name.clone_ref(py), last.port.clone_ref(py))
            }
            _ => {
                let (name, port) = self.server(py, ex);
                // An empty Host names no server: SERVER_NAME came from the listener,
                // which another request with the same Host may not share.
                let named = ex.host().is_some_and(|h| !h.is_empty());
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
            protocol: protocol.clone().into_any(),
            scheme: scheme.clone().into_any(),
            server_name: server_name.into_bound(py).into_any(),
            server_port: server_port.into_bound(py).into_any(),
            remote_addr: remote_addr.into_any(),
            remote_port: remote_port.into_any(),
            host,
        }
    }

    /// SERVER_NAME and SERVER_PORT: from the host the request is for (the absolute-form
    /// target's, else Host: `Framing::host`), else the listening address. The parser
    /// checked its syntax; an empty Host (valid, RFC 9112 §3.2) counts as none, since
    /// PEP 3333 wants SERVER_NAME non-empty.
    fn server(&self, py: Python<'_>, ex: &Exchange) -> (Py<PyString>, Py<PyString>) {
        let default_port = match ex.is_https() {
            true => intern!(py, "443"),
            false => intern!(py, "80"),
        };
        match ex.host().filter(|h| !h.is_empty()) {
            Some(host) => {
                let make = || {
                    let text = String::from_utf8_lossy(host);
                    let (h, p) = split_host(&text);
                    let port = p.map(|p| PyString::new(py, p).unbind());
                    (PyString::new(py, h).unbind(), port)
                };
                let (name, port) = cached(&mut self.caches().hosts, host, make, |(n, p)| {
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
        keys: &mut Vec<Py<PyString>>,
    ) -> PyResult<()> {
        // Keys are interned, so a repeated field has the very same key object: the
        // keys set so far (`keys`) tell a repeat without a dict lookup per field. A
        // lookup would not do: a kept environ has the last request's fields.
        let mut strings = None;
        for (name, value) in ex.headers() {
            // Host is a `Sticky` key; the parser takes one Host field at most.
            if name.eq_ignore_ascii_case(b"content-type")
                || name.eq_ignore_ascii_case(b"content-length")
                || name.eq_ignore_ascii_case(b"host")
            {
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
                    let joined = format!("{},{}", prev.extract::<String>()?, value.to_cow()?);
                    env.set_item(key, joined)?;
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
    match ex.peer() {
        Peer::Tcp(a) => {
            let ip = a.ip().to_canonical();
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
            (addr.into_bound(py), recent.remote_port.get(py, a.port()))
        }
        Peer::Unix => (intern!(py, "").clone(), intern!(py, "").clone()),
    }
}

/// What storing HTTP_HOST's placeholder (`None`, a request without Host) does to a dict.
#[derive(Clone, Copy)]
enum Absent {
    /// Stores it: the template keeps every key, and its copies delete HTTP_HOST.
    Placeholder,
    /// Deletes the key: a kept environ is the request's own (`live.rs`).
    Delete,
}

/// The keys every request sets but `wsgi.input` (see `build_in`), kept in the template
/// between requests (see the module's comment). Both the placeholders and each request's values go
/// through [`Sticky::items`], so no key can be in one list and missing from the other.
struct Sticky<'py> {
    method: Bound<'py, PyAny>,
    path: Bound<'py, PyAny>,
    query: Bound<'py, PyAny>,
    protocol: Bound<'py, PyAny>,
    scheme: Bound<'py, PyAny>,
    server_name: Bound<'py, PyAny>,
    server_port: Bound<'py, PyAny>,
    remote_addr: Bound<'py, PyAny>,
    remote_port: Bound<'py, PyAny>,
    /// HTTP_HOST: in nearly every request, and the same through a front server. A
    /// request without Host stores the placeholder, and its copy loses the key.
    host: Bound<'py, PyAny>,
}

const STICKY: usize = 10;

impl<'py> Sticky<'py> {
    fn placeholders(py: Python<'py>) -> Sticky<'py> {
        let none = || py.None().into_bound(py);
        Sticky {
            method: none(),
            path: none(),
            query: none(),
            protocol: none(),
            scheme: none(),
            server_name: none(),
            server_port: none(),
            remote_addr: none(),
            remote_port: none(),
            host: none(),
        }
    }

    /// Stores into `dict` the values that are not the very same objects as the ones
    /// `stored` says it holds, and records them there.
    fn store_changed(
        self,
        dict: &Bound<'py, PyDict>,
        stored: &mut [Option<Py<PyAny>>; STICKY],
        absent: Absent,
    ) -> PyResult<()> {
        let py = dict.py();
        for ((key, value), stored) in self.items(py).into_iter().zip(stored) {
            if stored.as_ref().is_some_and(|s| value.is(s)) {
                continue;
            }
            match absent {
                Absent::Delete if value.is_none() => dict.del_item(key)?,
                _ => dict.set_item(key, &value)?,
            }
            // Dropped as a `Bound`: a plain decref, without pyo3's GIL check.
            let _old = stored.replace(value.unbind()).map(|o| o.into_bound(py));
        }
        Ok(())
    }

    fn items(self, py: Python<'py>) -> [(&'py Bound<'py, PyString>, Bound<'py, PyAny>); STICKY] {
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
            (intern!(py, "HTTP_HOST"), self.host),
        ]
    }
}
