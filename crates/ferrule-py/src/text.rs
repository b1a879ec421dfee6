//! Latin-1 conversions, the WSGI rule for bytes that travel as `str`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyString;
use std::borrow::Cow;

/// The text whose code points are the bytes: how WSGI carries bytes as `str`
/// (PEP 3333 "native strings"). ASCII, the usual case, is borrowed as is.
#[inline]
pub fn latin1(b: &[u8]) -> Cow<'_, str> {
    if b.is_ascii() {
        if let Ok(s) = std::str::from_utf8(b) {
            return Cow::Borrowed(s);
        }
    }
    Cow::Owned(b.iter().map(|&c| char::from(c)).collect())
}

/// A native string of the bytes ([`latin1`]).
#[inline]
pub fn latin1_str<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyString> {
    PyString::new(py, &latin1(b))
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

#[cfg(test)]
mod tests {
    use super::latin1;

    #[test]
    fn latin1_is_one_code_point_per_byte() {
        let table: &[(&[u8], &str)] = &[
            (b"", ""),
            (b"/plain", "/plain"),
            (b"caf\xe9", "caf\u{e9}"),
            ("café".as_bytes(), "caf\u{c3}\u{a9}"),
            (b"\x00\x7f\x80\xff", "\u{0}\u{7f}\u{80}\u{ff}"),
        ];
        for &(bytes, want) in table {
            assert_eq!(latin1(bytes), want, "{bytes:?}");
        }
    }
}
