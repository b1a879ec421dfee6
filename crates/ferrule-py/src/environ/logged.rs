//! The environ values the access log shows (`%({VAR}e)s`), read as gunicorn reads
//! them: from the request's environ once the app has run (so keys the app or a
//! middleware stored, such as `REMOTE_USER` or `werkzeug.request`, count), never from
//! the process environment.
//!
//! gunicorn builds its atoms from `environ.items()` with lower-cased keys and looks
//! the atom up lower-cased: the key matches whatever its case. A `str` value has its
//! `"` escaped as `\"`, any other object is written as `str(obj)`, a missing key as
//! `-`.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// The format's `{VAR}e` keys; empty (and never looked at) for most formats.
pub struct LoggedKeys(Vec<Key>);

struct Key {
    name: Py<PyString>,
    lower: String,
}

impl LoggedKeys {
    pub fn new(py: Python<'_>, keys: &[String]) -> LoggedKeys {
        LoggedKeys(
            keys.iter()
                .map(|k| Key {
                    name: PyString::intern(py, k).unbind(),
                    lower: k.to_lowercase(),
                })
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each key's value in `env`, in order (None: not there).
    pub fn values(&self, py: Python<'_>, env: &Bound<'_, PyDict>) -> Vec<Option<String>> {
        self.0
            .iter()
            .map(|k| match env.get_item(k.name.bind(py)) {
                Ok(Some(v)) => text(&v),
                _ => any_case(env, &k.lower).and_then(|v| text(&v)),
            })
            .collect()
    }
}

/// The value of the last key equal to `lower` but for case, as gunicorn's lower-cased
/// atoms dict keeps the last one.
fn any_case<'py>(env: &Bound<'py, PyDict>, lower: &str) -> Option<Bound<'py, PyAny>> {
    let mut found = None;
    for (k, v) in env.iter() {
        let Ok(k) = k.cast_into::<PyString>() else {
            continue;
        };
        if k.to_string_lossy().to_lowercase() == lower {
            found = Some(v);
        }
    }
    found
}

/// How gunicorn's `%s` shows a value; None (`-`) when `str()` raises. Quotes stay as
/// they are: the text line escapes them (`access/atoms.rs`), the JSON line its own way.
fn text(v: &Bound<'_, PyAny>) -> Option<String> {
    match v.cast::<PyString>() {
        Ok(s) => Some(s.to_string_lossy().into_owned()),
        Err(_) => v.str().ok().map(|s| s.to_string_lossy().into_owned()),
    }
}
