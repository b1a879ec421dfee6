//! The environ of a request whose variables came ready-made (`Exchange::ready_vars`:
//! a uwsgi packet, issue 23): the values `ready_rules.rs` gives, as Python strings.
//!
//! Built like an HTTP/1 request's (`environ.rs`): the [`Sticky`] keys come from the
//! variables through the thread's recent strings, the dict is the last request's
//! built on again (`live.rs`) or a copy of the template, and the other variables are
//! the request's extra keys. A front server sends the same variables in the same
//! order request after request, mostly with the same values (DOCUMENT_ROOT,
//! REQUEST_SCHEME, SERVER_PORT, HTTP_ACCEPT...), so the strings of the other
//! variables are kept by position ([`ReadySlots`]): a name or value that repeats at
//! its place is the very same string, found with a byte compare, and a kept environ
//! that already holds it is not stored into again.

use super::ready_rules::{ready_environ, ReadyEnviron};
use super::sticky::Sticky;
use super::strings::Recents;
use super::{Environ, ThreadTemplate};
use crate::text::{latin1, latin1_str};
use crate::tx::Tx;
use ferrule_http::Version;
use ferrule_server::Exchange;
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// Variables kept by position; the ones past it are converted each request.
const SLOTS_MAX: usize = 128;

/// Longest value a slot keeps; longer ones are converted each request.
const VALUE_MAX: usize = 256;

impl Environ {
    /// The environ for `ex`, whose variables `vars` came ready-made
    /// (`Exchange::ready_vars`; `build_in` sends such a request here).
    /// A request without REQUEST_METHOD or SERVER_PROTOCOL raises: it cannot reach the
    /// app (the uwsgi driver refuses such a packet before).
    pub(super) fn build_ready<'py, 'a>(
        &self,
        py: Python<'py>,
        tx: &Bound<'py, Tx>,
        local: &mut ThreadTemplate,
        ex: &Exchange,
        vars: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let ready = ready_environ(vars, &self.script_name)
            .map_err(|missing| PyRuntimeError::new_err(missing.to_string()))?;
        let https = ready.https || ex.is_https();
        let values = self.ready_sticky(py, ex, &ready, https, &mut local.recent);
        let (env, reused) = match local.live.take(py) {
            Some(env) => {
                local.live.update(&env, values)?;
                local.live.set_input(&env, tx.as_any())?;
                (env, true)
            }
            None => (
                self.copy_template(py, tx, local, values, ready.host.is_some())?,
                false,
            ),
        };
        let mut keys = local.live.start_extras();
        let mut keep = true;
        // A mount the front server sent (`uwsgi_param SCRIPT_NAME`) is this request's
        // value of a template key: an extra key while it is sent. Once it is not, the
        // template's value is stored back, and the next request starts from a copy.
        let script_key = intern!(py, "SCRIPT_NAME");
        let mounted = ready.script_name != self.script_name.as_slice();
        if mounted || (reused && local.live.has_extra(script_key)) {
            env.set_item(script_key, latin1_str(py, ready.script_name))?;
            keys.push(script_key.clone().unbind());
            keep &= mounted;
        }
        keep &= local.ready.store(&env, &ready.other, reused, &mut keys)?;
        local.live.finish(&env, keys)?;
        if !keep {
            local.live.forget();
        }
        Ok(env)
    }

    /// This request's values of the [`Sticky`] keys, from the variables.
    fn ready_sticky<'py>(
        &self,
        py: Python<'py>,
        ex: &Exchange,
        ready: &ReadyEnviron<'_>,
        https: bool,
        recent: &mut Recents,
    ) -> Sticky<'py> {
        let method = match self.methods.iter().find(|(m, _)| *m == ready.method) {
            Some((_, s)) => s.bind(py).clone(),
            None => latin1_str(py, ready.method),
        };
        let protocol = match ready.protocol {
            b"HTTP/1.1" => self.words.protocol(py, Version::Http11),
            b"HTTP/1.0" => self.words.protocol(py, Version::Http10),
            other => recent.protocol.get(py, other),
        };
        let (name, port) = ready.server(ex.local(), https);
        let (addr, remote_port) = ready.remote(ex.client());
        let remote_port = match std::str::from_utf8(&remote_port).map(str::parse::<u16>) {
            // The canonical digits only: "080" stays as sent.
            Ok(Ok(p)) if itoa::Buffer::new().format(p).as_bytes() == &*remote_port => {
                recent.remote_port.get(py, p)
            }
            _ => latin1_str(py, &remote_port),
        };
        let host = match ready.host {
            Some(h) => recent.host_header.get(py, h).into_any(),
            None => py.None().into_bound(py),
        };
        Sticky {
            method: method.into_any(),
            path: recent.path.get(py, ready.path).into_any(),
            query: recent.query.get(py, ready.query).into_any(),
            protocol: protocol.into_any(),
            scheme: self.words.scheme(py, https).into_any(),
            server_name: recent.server_name.get(py, &name).into_any(),
            server_port: recent.server_port.get(py, &port).into_any(),
            remote_addr: recent.remote_addr.get(py, &addr).into_any(),
            remote_port: remote_port.into_any(),
            host,
        }
    }
}

/// One thread's strings of the other variables of the last packet, by position.
#[derive(Default)]
pub struct ReadySlots {
    slots: Vec<Slot>,
    /// How many slots the last packet used, and whether a name repeats among them
    /// (then the last of the name wins in the dict, and nothing is skipped).
    used: usize,
    repeats: bool,
}

struct Slot {
    name: Vec<u8>,
    key: Py<PyString>,
    /// The value's bytes and string; `None` when it was too long to keep.
    value: Option<(Vec<u8>, Py<PyString>)>,
}

impl ReadySlots {
    /// Stores the variables into `env` and their keys into `keys`. `reused`: `env` is
    /// the last environ built on this thread (`live.rs`), which holds the last
    /// packet's values: one that is unchanged at its place is not stored again.
    /// Returns false when a variable is named like a key of the template (`wsgi.*`,
    /// SERVER_SOFTWARE): the environ must not be built on (`Live::forget`).
    fn store(
        &mut self,
        env: &Bound<'_, PyDict>,
        other: &[(&[u8], &[u8])],
        reused: bool,
        keys: &mut Vec<Py<PyString>>,
    ) -> PyResult<bool> {
        let py = env.py();
        // The same names in the same places as the last packet (a few byte compares)?
        let relaid = other.len() != self.used
            || other
                .iter()
                .zip(&self.slots)
                .any(|((name, _), slot)| *name != slot.name.as_slice());
        if relaid {
            self.used = other.len();
            self.repeats = (1..other.len()).any(|i| other[..i].iter().any(|o| o.0 == other[i].0));
        }
        // Only then does the kept dict hold each slot's last value under its name.
        let skip = reused && !relaid && !self.repeats;
        let mut keep = true;
        for (i, &(name, value)) in other.iter().enumerate() {
            keep &= !(name.starts_with(b"wsgi.") || name == b"SERVER_SOFTWARE");
            if i >= SLOTS_MAX {
                let key = key_of(py, name);
                env.set_item(&key, latin1_str(py, value))?;
                keys.push(key.unbind());
                continue;
            }
            if i == self.slots.len() {
                self.slots.push(Slot {
                    name: name.to_vec(),
                    key: key_of(py, name).unbind(),
                    value: None,
                });
            }
            let slot = &mut self.slots[i];
            if slot.name != name {
                slot.name.clear();
                slot.name.extend_from_slice(name);
                // Dropped as `Bound`s: plain decrefs, without pyo3's GIL check.
                let _old =
                    std::mem::replace(&mut slot.key, key_of(py, name).unbind()).into_bound(py);
            }
            let key = slot.key.bind(py);
            match &slot.value {
                Some((last, _)) if skip && last.as_slice() == value => {}
                Some((last, s)) if last.as_slice() == value => env.set_item(key, s.bind(py))?,
                _ => {
                    let s = latin1_str(py, value);
                    env.set_item(key, &s)?;
                    let kept = (value.len() <= VALUE_MAX).then(|| (value.to_vec(), s.unbind()));
                    let _old =
                        std::mem::replace(&mut slot.value, kept).map(|(_, old)| old.into_bound(py));
                }
            }
            keys.push(key.clone().unbind());
        }
        Ok(keep)
    }
}

/// The interned key of a variable: one object per name, so that `live.rs` tells a
/// key set again (a name sent twice, or at another place) by identity.
fn key_of<'py>(py: Python<'py>, name: &[u8]) -> Bound<'py, PyString> {
    PyString::intern(py, &latin1(name))
}
