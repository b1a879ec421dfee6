//! The environ of a request whose variables came ready-made (`Exchange::ready_vars`:
//! a uwsgi packet, issue 23): the values `ready_rules.rs` gives, as Python strings.
//!
//! It starts from a copy of the thread's template, as an HTTP/1 request's does, and
//! stores every value into the copy, not into the template: the template's values stay
//! the ones the HTTP/1 path keeps there (`sticky.rs`). Nothing is cached, and the next
//! request does not build on this environ (`live.rs` knows the keys an HTTP/1 request
//! sets, not the variables a front server sends); both can come when uwsgi is measured.

use super::ready_rules::ready_environ;
use super::sticky::Sticky;
use super::{Environ, ThreadTemplate};
use crate::text::latin1_str;
use crate::tx::Tx;
use ferrule_server::Exchange;
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

impl Environ {
    /// The environ for `ex`, whose variables `vars` came ready-made
    /// (`Exchange::ready_vars`; `build_in` sends such a request here).
    /// A request without REQUEST_METHOD or SERVER_PROTOCOL raises: it cannot reach the
    /// app (the protocol driver should have refused the packet).
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
        // Whatever environ the last request left is not built on (see the module's
        // comment); `take` forgets it, and nothing here makes this one kept.
        drop(local.live.take(py));
        let https = ready.https || ex.is_https();
        let (server_name, server_port) = ready.server(ex.local(), https);
        let (remote_addr, remote_port) = ready.remote(ex.client());
        let text = |b: &[u8]| latin1_str(py, b).into_any();
        let values = Sticky {
            method: text(ready.method),
            path: text(ready.path),
            query: text(ready.query),
            protocol: text(ready.protocol),
            scheme: self.words.scheme(py, https).into_any(),
            server_name: text(&server_name),
            server_port: text(&server_port),
            remote_addr: text(&remote_addr),
            remote_port: text(&remote_port),
            host: match ready.host {
                Some(host) => text(host),
                None => py.None().into_bound(py),
            },
        };
        let env = local.template.bind(py).copy()?;
        env.set_item(intern!(py, "wsgi.input"), tx)?;
        for (key, value) in values.items(py) {
            match value.is_none() {
                // The template's HTTP_HOST, placeholder or the last request's.
                true => env.del_item(key)?,
                false => env.set_item(key, value)?,
            }
        }
        if ready.script_name != self.script_name.as_slice() {
            env.set_item(intern!(py, "SCRIPT_NAME"), text(ready.script_name))?;
        }
        for (name, value) in &ready.other {
            env.set_item(text(name), text(value))?;
        }
        Ok(env)
    }
}
