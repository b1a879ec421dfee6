//! `wsgi.errors`, the logging of app exceptions, and the exceptions the app sees for
//! server errors.

use ferrule_server::log::{emit, LogLevel};
use ferrule_server::Error;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;

/// `wsgi.errors`: text written here goes to the error log.
#[pyclass(module = "ferrule._ferrule")]
pub struct ErrorStream;

#[pymethods]
impl ErrorStream {
    /// Lone surrogates (a file name that is not UTF-8) become U+FFFD rather than an
    /// exception in the app.
    fn write(&self, s: &Bound<'_, PyString>) -> usize {
        let s = s.to_string_lossy();
        let text = s.trim_end_matches('\n');
        if !text.is_empty() {
            emit(LogLevel::Error, text);
        }
        s.len()
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(line?.cast::<PyString>()?);
        }
        Ok(())
    }

    fn flush(&self) {}
}

/// The exception with its traceback, as Python prints it.
pub fn format_exception(py: Python<'_>, err: &PyErr) -> String {
    let formatted = py
        .import("traceback")
        .and_then(|tb| {
            tb.call_method1(
                "format_exception",
                (err.get_type(py), err.value(py), err.traceback(py)),
            )
        })
        .and_then(|lines| lines.extract::<Vec<String>>());
    match formatted {
        Ok(lines) => lines.concat().trim_end().to_string(),
        Err(_) => err.to_string(),
    }
}

/// Turns a server error into the exception the app sees.
pub fn to_pyerr(e: Error) -> PyErr {
    match e {
        Error::Response(r) => PyValueError::new_err(r.to_string()),
        Error::Protocol(p) => PyRuntimeError::new_err(p),
        other => PyOSError::new_err(other.to_string()),
    }
}
