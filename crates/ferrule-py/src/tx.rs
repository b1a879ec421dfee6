//! The request's one Python object: the app gets it as `wsgi.input` and as the `write`
//! callable `start_response` returns, and `start_response` is its bound method. One
//! object instead of three: each allocation costs about as much as parsing a short
//! request head. It owns the connection while the app runs.

use crate::blocking::ReleaseGil;
use crate::errors::to_pyerr;
use crate::fields;
use crate::input::{self, Body};
use crate::text::type_name;
use ferrule_server::Exchange;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

/// One request's state, and `start_response`, `write` and `wsgi.input`.
#[pyclass(module = "ferrule._ferrule", name = "Request")]
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
    pub fn new(ex: Box<Exchange>) -> Tx {
        Tx {
            ex: Some(ex),
            started: false,
            input_error: None,
        }
    }

    pub fn exchange(&mut self) -> PyResult<&mut Exchange> {
        self.ex
            .as_deref_mut()
            .ok_or_else(|| PyRuntimeError::new_err("this request is already finished"))
    }
}

impl<'py> Body<'py> for Bound<'py, Tx> {
    fn py(&self) -> Python<'py> {
        Bound::py(self)
    }

    /// Reads through the exchange, recording why a read failed so the response can
    /// say it.
    fn take(&self, limit: Option<usize>, line: bool) -> PyResult<Vec<u8>> {
        let mut t = self.borrow_mut();
        let ex = t.exchange()?;
        match input::collect(ex, &ReleaseGil(Bound::py(self)), limit, line) {
            Ok(r) => Ok(r),
            Err(e) => {
                t.input_error = e.status();
                Err(to_pyerr(e))
            }
        }
    }
}

#[pymethods]
impl Tx {
    /// `start_response(status, headers, exc_info=None)`. The app gets it as this object's
    /// bound method, kept with the object between requests (`handler.rs`): a builtin
    /// method is called through vectorcall, without the argument tuple a call of the
    /// object itself needs. Returns `write`, which is this object.
    #[pyo3(signature = (status, headers=None, exc_info=None))]
    fn start_response(
        slf: &Bound<'_, Self>,
        status: &Bound<'_, PyAny>,
        headers: Option<&Bound<'_, PyAny>>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Tx>> {
        let headers = headers.ok_or_else(|| {
            PyTypeError::new_err("start_response() takes a status and a list of headers")
        })?;
        start_response(&mut slf.borrow_mut(), status, headers, exc_info)?;
        Ok(slf.clone().unbind())
    }

    /// The legacy `write(data)` callable `start_response` returns.
    fn __call__(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        write(slf.py(), &mut slf.borrow_mut(), data)
    }

    // `wsgi.input` (see input.rs).

    #[pyo3(signature = (size=None))]
    fn read<'py>(slf: &Bound<'py, Self>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        input::read(slf, size)
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(slf: &Bound<'py, Self>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        input::readline(slf, size)
    }

    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(slf: &Bound<'py, Self>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        input::readlines(slf, hint)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        input::next_line(slf)
    }
}

fn start_response(
    tx: &mut Tx,
    status: &Bound<'_, PyAny>,
    headers: &Bound<'_, PyAny>,
    exc_info: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
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
    let headers = headers.cast::<PyList>().map_err(|_| {
        PyTypeError::new_err(format!(
            "headers must be a list, got {}",
            type_name(headers)
        ))
    })?;
    let result = fields::begin_head(ex, status, headers);
    if result.is_err() {
        ex.abort_head();
    }
    result?;
    tx.started = true;
    Ok(())
}

/// The legacy `write(data)`: sends the head if it is not out, then `data`.
fn write(py: Python<'_>, tx: &mut Tx, data: &Bound<'_, PyAny>) -> PyResult<()> {
    if !tx.started {
        return Err(PyRuntimeError::new_err(
            "write() called before start_response()",
        ));
    }
    let data = data.cast::<PyBytes>().map_err(|_| {
        PyTypeError::new_err(format!("write() takes bytes, got {}", type_name(data)))
    })?;
    let ex = tx.exchange()?;
    if !ex.head_sent() {
        ex.end_head(None).map_err(to_pyerr)?;
    }
    ex.write_body(data.as_bytes(), true, &ReleaseGil(py))
        .map_err(to_pyerr)
}
