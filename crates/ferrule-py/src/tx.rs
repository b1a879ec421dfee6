//! The per-request objects an app holds: `start_response`, the `write` callable and
//! the transaction they share, which owns the connection while the app runs.

use crate::park::ReleaseGil;
use crate::text::{latin1_bytes, type_name};
use ferrule_server::{Error, Exchange};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

/// One request's state, shared by `start_response`, `write` and `wsgi.input`.
#[pyclass(module = "ferrule._ferrule")]
pub struct Tx {
    /// The connection, until the request is over (then objects the app kept fail cleanly).
    /// Boxed: the exchange moves in and out of this object once per request.
    pub ex: Option<Box<Exchange>>,
    /// `start_response` has been called (and not undone by `exc_info`).
    pub started: bool,
    /// The status a failed body read calls for (400, 408, 413), if one failed.
    pub input_error: Option<u16>,
}

impl Tx {
    pub fn exchange(&mut self) -> PyResult<&mut Exchange> {
        self.ex
            .as_deref_mut()
            .ok_or_else(|| PyRuntimeError::new_err("this request is already finished"))
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

/// The `start_response` callable.
#[pyclass(module = "ferrule._ferrule")]
pub struct StartResponse {
    pub tx: Py<Tx>,
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__(
        &self,
        py: Python<'_>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Writer> {
        let mut tx = self.tx.borrow_mut(py);
        let started = tx.started;
        let ex = tx.exchange()?;
        match exc_info.filter(|e| !e.is_none()) {
            Some(info) => {
                if ex.head_sent() {
                    // PEP 3333: too late to change the response; re-raise the app's error.
                    let value = info.get_item(1)?;
                    return Err(PyErr::from_value(value));
                }
                ex.abort_head();
            }
            None if started => {
                return Err(PyRuntimeError::new_err(
                    "start_response() called a second time without exc_info",
                ));
            }
            None => {}
        }
        let headers = headers.downcast::<PyList>().map_err(|_| {
            PyTypeError::new_err(format!(
                "headers must be a list, got {}",
                type_name(headers)
            ))
        })?;
        ex.begin_head(&latin1_bytes(status, "status")?)
            .map_err(to_pyerr)?;
        let result = add_headers(ex, headers);
        if result.is_err() {
            ex.abort_head();
        }
        result?;
        tx.started = true;
        Ok(Writer {
            tx: self.tx.clone_ref(py),
        })
    }
}

fn add_headers(ex: &mut Exchange, headers: &Bound<'_, PyList>) -> PyResult<()> {
    for item in headers.iter() {
        let pair = item.downcast::<PyTuple>().map_err(|_| {
            PyTypeError::new_err(format!(
                "each header must be a (name, value) tuple, got {}",
                type_name(&item)
            ))
        })?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err(
                "each header must be a (name, value) tuple",
            ));
        }
        let (name_obj, value_obj) = (pair.get_item(0)?, pair.get_item(1)?);
        let name = latin1_bytes(&name_obj, "header name")?;
        let value = latin1_bytes(&value_obj, "header value")?;
        ex.add_header(&name, &value).map_err(|e| {
            PyValueError::new_err(format!("header {:?}: {e}", String::from_utf8_lossy(&name)))
        })?;
    }
    Ok(())
}

/// The legacy `write(data)` callable returned by `start_response`.
#[pyclass(module = "ferrule._ferrule")]
pub struct Writer {
    tx: Py<Tx>,
}

#[pymethods]
impl Writer {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = data.downcast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!("write() takes bytes, got {}", type_name(data)))
        })?;
        let mut tx = self.tx.borrow_mut(py);
        let ex = tx.exchange()?;
        if !ex.head_sent() {
            ex.end_head(None).map_err(to_pyerr)?;
        }
        ex.write_body(data.as_bytes(), true, &ReleaseGil(py))
            .map_err(to_pyerr)
    }
}
