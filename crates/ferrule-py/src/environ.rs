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
//!
//! Beside this file: `rules.rs`, the PEP 3333 rules as pure functions with their
//! tables; `request.rs`, an HTTP/1 request's values as Python strings by those rules;
//! `sticky.rs`, the keys kept in the template; `strings.rs`, the strings reused;
//! `live.rs`, the environ built on again; `logged.rs`, the access log's `{VAR}e`;
//! `ready_rules.rs` and `ready.rs`, the same for the variables a front server sent
//! ready-made (uwsgi).

mod live;
mod logged;
mod ready;
mod ready_rules;
mod request;
mod rules;
mod sticky;
mod strings;
mod tls;

pub use logged::LoggedKeys;

use crate::text::latin1_str;
use crate::tx::Tx;
use ferrule_http::Version;
use ferrule_server::egress;
use live::Live;
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use ready::ReadySlots;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use sticky::{Absent, Sticky, STICKY};
use strings::{Recents, Strings};

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
    words: Words,
    /// With TLS on: each TLS request gets the session's `SSL_*` keys.
    tls: Option<tls::TlsWords>,
    /// HTTPS=on is in the template (every bind is TLS); else a TLS request sets it.
    https_in_template: bool,
}

/// The strings of the values that are one of two words (`rules.rs` names them), made
/// once: the same object every request is what lets the template keep its entry.
struct Words {
    schemes: [Py<PyString>; 2],
    protocols: [Py<PyString>; 2],
    default_ports: [Py<PyString>; 2],
}

impl Words {
    fn new(py: Python<'_>) -> Words {
        let two = |word: fn(bool) -> &'static str| {
            [false, true].map(|b| PyString::intern(py, word(b)).unbind())
        };
        Words {
            schemes: two(rules::url_scheme),
            protocols: two(|http11| {
                rules::server_protocol(match http11 {
                    false => Version::Http10,
                    true => Version::Http11,
                })
            }),
            default_ports: two(rules::default_port),
        }
    }

    #[inline]
    fn scheme<'py>(&self, py: Python<'py>, https: bool) -> Bound<'py, PyString> {
        self.schemes[usize::from(https)].bind(py).clone()
    }

    #[inline]
    fn protocol<'py>(&self, py: Python<'py>, version: Version) -> Bound<'py, PyString> {
        // Exhaustive: a new version needs its string here.
        let i = match version {
            Version::Http10 => 0,
            Version::Http11 => 1,
        };
        self.protocols[i].bind(py).clone()
    }

    #[inline]
    fn default_port<'py>(&self, py: Python<'py>, https: bool) -> Bound<'py, PyString> {
        self.default_ports[usize::from(https)].bind(py).clone()
    }
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
    /// A front server's other variables, by position (`ready.rs`).
    ready: ReadySlots,
}

thread_local! {
    static TEMPLATE: RefCell<Option<ThreadTemplate>> = const { RefCell::new(None) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl Environ {
    /// The request's path for egress's record (which starts before the environ is
    /// built): the target's, which the record decodes into PATH_INFO below this
    /// environ's SCRIPT_NAME ([`Environ::new`] tells egress) only if a call is
    /// trapped; for uwsgi, the PATH_INFO variable below the SCRIPT_NAME mount.
    pub fn egress_path<'a>(&self, ex: &'a ferrule_server::Exchange) -> egress::Path<'a> {
        if ex.protocol() == ferrule_server::Protocol::Uwsgi {
            let (mut path, mut mount) = (&b""[..], self.script_name.as_slice());
            for (name, value) in ex.headers() {
                match name {
                    b"PATH_INFO" => path = value,
                    b"SCRIPT_NAME" => mount = value,
                    _ => {}
                }
            }
            return egress::Path::Info(rules::strip_mount(path, mount));
        }
        egress::Path::Target(ex.path())
    }

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
        if every_bind_tls(cfg) && cfg.protocol == ferrule_server::Protocol::Http1 {
            // Every bind is TLS (gunicorn's meaning, no `http://` bind beside): Apache
            // mod_ssl's key, in the template, so a request pays nothing for it.
            t.set_item("HTTPS", "on")?;
        }
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
        // What egress's record strips off a target path to make PATH_INFO.
        egress::set_mount(cfg.script_name.as_bytes());
        Ok(Environ {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            template: t.unbind(),
            methods,
            caches: Mutex::new(Strings::default()),
            script_name: cfg.script_name.as_bytes().to_vec(),
            words: Words::new(py),
            tls: cfg.tls.as_ref().map(|_| tls::TlsWords::new(py)),
            https_in_template: every_bind_tls(cfg),
        })
    }

    /// The environ for the request in `tx`; with `id` (egress or the access log want
    /// ids), its `ferrule.request_id`.
    pub fn build<'py>(
        &self,
        py: Python<'py>,
        tx: &Bound<'py, Tx>,
        id: Option<egress::RequestId>,
    ) -> PyResult<Bound<'py, PyDict>> {
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
                    ready: ReadySlots::default(),
                }),
            };
            self.build_in(py, tx, local, id)
        })
    }

    fn build_in<'py>(
        &self,
        py: Python<'py>,
        tx: &Bound<'py, Tx>,
        local: &mut ThreadTemplate,
        id: Option<egress::RequestId>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let mut t = tx.borrow_mut();
        let ex = t.exchange()?;
        // A protocol that brought its variables ready-made (uwsgi): no head to derive
        // them from (one compare for HTTP/1).
        if let Some(vars) = ex.ready_vars() {
            return self.build_ready(py, tx, local, ex, vars.iter());
        }
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
        if let Some(words) = &self.tls {
            words.set_keys(py, &env, ex, &mut keys, !self.https_in_template)?;
        }
        // The request id, before `finish`: a store after it would stop the next
        // request from building on this environ.
        if let Some(id) = id {
            let forwarded = match id {
                egress::RequestId::Forwarded => egress::forwarded_id(ex.trusted_request_id()),
                egress::RequestId::Made(_) => None,
            };
            local
                .live
                .set_request_id(&env, id, forwarded.unwrap_or_default())?;
        }
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
}

/// Whether every listener serves TLS: a certificate, and no bind that says `http`.
fn every_bind_tls(cfg: &ferrule_server::ServerConfig) -> bool {
    cfg.tls.is_some() && cfg.binds.iter().all(|e| e.tls.wanted(true))
}
