//! The keys every request sets, kept in the thread's template (and in a kept environ,
//! `live.rs`) between requests: a value that is the very same object as the one the
//! dict holds is not stored again (see `environ.rs`).

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// What storing HTTP_HOST's placeholder (`None`, a request without Host) does to a dict.
#[derive(Clone, Copy)]
pub enum Absent {
    /// Stores it: the template keeps every key, and its copies delete HTTP_HOST.
    Placeholder,
    /// Deletes the key: a kept environ is the request's own (`live.rs`).
    Delete,
}

/// The keys every request sets but `wsgi.input` (see `build_in`), kept in the template
/// between requests (see the module's comment). Both the placeholders and each request's values go
/// through [`Sticky::items`], so no key can be in one list and missing from the other.
pub struct Sticky<'py> {
    pub method: Bound<'py, PyAny>,
    pub path: Bound<'py, PyAny>,
    pub query: Bound<'py, PyAny>,
    pub protocol: Bound<'py, PyAny>,
    pub scheme: Bound<'py, PyAny>,
    pub server_name: Bound<'py, PyAny>,
    pub server_port: Bound<'py, PyAny>,
    pub remote_addr: Bound<'py, PyAny>,
    pub remote_port: Bound<'py, PyAny>,
    /// HTTP_HOST: in nearly every request, and the same through a front server. A
    /// request without Host stores the placeholder, and its copy loses the key.
    pub host: Bound<'py, PyAny>,
}

pub const STICKY: usize = 10;

impl<'py> Sticky<'py> {
    pub fn placeholders(py: Python<'py>) -> Sticky<'py> {
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
    pub fn store_changed(
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

    pub fn items(
        self,
        py: Python<'py>,
    ) -> [(&'py Bound<'py, PyString>, Bound<'py, PyAny>); STICKY] {
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
