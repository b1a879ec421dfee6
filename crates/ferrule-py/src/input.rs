//! `wsgi.input`: the request body as a file-like object, streamed from the socket.

use crate::park::ReleaseGil;
use crate::tx::{to_pyerr, Tx};
use ferrule_server::{Error, Exchange};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

#[pyclass(module = "ferrule._ferrule")]
pub struct Input {
    pub tx: Py<Tx>,
}

/// Reads through the exchange, recording why a read failed so the response can say it.
fn with_body<R>(
    py: Python<'_>,
    tx: &Py<Tx>,
    f: impl FnOnce(&mut Exchange, &ReleaseGil<'_>) -> Result<R, Error>,
) -> PyResult<R> {
    let mut t = tx.borrow_mut(py);
    let ex = t.exchange()?;
    match f(ex, &ReleaseGil(py)) {
        Ok(r) => Ok(r),
        Err(e) => {
            t.input_error = e.status();
            Err(to_pyerr(e))
        }
    }
}

/// Collects up to `limit` bytes (None: all), stopping after a newline when `line`.
fn collect(
    ex: &mut Exchange,
    park: &ReleaseGil<'_>,
    limit: Option<usize>,
    line: bool,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    loop {
        let want = limit.map_or(usize::MAX, |l| l - out.len());
        if want == 0 {
            break;
        }
        let avail = ex.fill_body(park)?;
        if avail.is_empty() {
            break;
        }
        let mut take = avail.len().min(want);
        let mut done = false;
        if line {
            if let Some(i) = avail[..take].iter().position(|&b| b == b'\n') {
                take = i + 1;
                done = true;
            }
        }
        out.extend_from_slice(&avail[..take]);
        ex.consume(take);
        if done {
            break;
        }
    }
    Ok(out)
}

fn limit(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pymethods]
impl Input {
    /// `read()` reads the whole body; `read(n)` up to `n` bytes (fewer only at the end).
    #[pyo3(signature = (size=None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let data = with_body(py, &self.tx, |ex, park| {
            collect(ex, park, limit(size), false)
        })?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let data = with_body(py, &self.tx, |ex, park| {
            collect(ex, park, limit(size), true)
        })?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let hint = limit(hint).filter(|&h| h > 0);
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = with_body(py, &self.tx, |ex, park| collect(ex, park, None, true))?;
            if line.is_empty() {
                break;
            }
            total += line.len();
            lines.append(PyBytes::new(py, &line))?;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = with_body(py, &self.tx, |ex, park| collect(ex, park, None, true))?;
        Ok((!line.is_empty()).then(|| PyBytes::new(py, &line)))
    }
}
