//! Latin-1 conversions, the WSGI rule for bytes that travel as `str`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyString;
use std::borrow::Cow;

/// A native string whose code points are the bytes (ASCII needs no copy of logic).
pub fn latin1_str<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyString> {
    if b.is_ascii() {
        if let Ok(s) = std::str::from_utf8(b) {
            return PyString::new(py, s);
        }
    }
    let s: String = b.iter().map(|&c| c as char).collect();
    PyString::new(py, &s)
}

/// The bytes of a native string that must be latin-1 (status and header fields);
/// ASCII, the usual case, is borrowed as is. `what` names the value in errors.
pub fn latin1_bytes<'a>(s: &'a Bound<'_, PyAny>, what: &str) -> PyResult<Cow<'a, [u8]>> {
    let s = s.cast::<PyString>().map_err(|_| {
        PyValueError::new_err(format!("{what} must be a str, got {}", type_name(s)))
    })?;
    let text = s.to_str()?;
    if text.is_ascii() {
        return Ok(Cow::Borrowed(text.as_bytes()));
    }
    text.chars()
        .map(|c| {
            u8::try_from(u32::from(c))
                .map_err(|_| PyValueError::new_err(format!("{what} {text:?} is not latin-1")))
        })
        .collect::<PyResult<Vec<u8>>>()
        .map(Cow::Owned)
}

pub fn type_name(o: &Bound<'_, PyAny>) -> String {
    o.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}
