//! `wsgi.input`: the request body as a file-like object, streamed from the socket.
//! The object is the request's [`Tx`]; its `read` methods call these functions.

use crate::blocking::ReleaseGil;
use crate::tx::{to_pyerr, Tx};
use ferrule_server::{Error, Exchange};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

/// Reads through the exchange, recording why a read failed so the response can say it.
fn with_body<R>(
    tx: &Bound<'_, Tx>,
    f: impl FnOnce(&mut Exchange, &ReleaseGil<'_>) -> Result<R, Error>,
) -> PyResult<R> {
    let mut t = tx.borrow_mut();
    let ex = t.exchange()?;
    match f(ex, &ReleaseGil(tx.py())) {
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
    blocking: &ReleaseGil<'_>,
    limit: Option<usize>,
    line: bool,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    loop {
        let want = limit.map_or(usize::MAX, |l| l - out.len());
        if want == 0 {
            break;
        }
        let avail = ex.fill_body(blocking)?;
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

/// `read()` reads the whole body; `read(n)` up to `n` bytes (fewer only at the end).
pub fn read<'py>(tx: &Bound<'py, Tx>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
    let py = tx.py();
    let data = with_body(tx, |ex, blocking| collect(ex, blocking, limit(size), false))?;
    Ok(PyBytes::new(py, &data))
}

pub fn readline<'py>(tx: &Bound<'py, Tx>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
    let py = tx.py();
    let data = with_body(tx, |ex, blocking| collect(ex, blocking, limit(size), true))?;
    Ok(PyBytes::new(py, &data))
}

pub fn readlines<'py>(tx: &Bound<'py, Tx>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
    let py = tx.py();
    let hint = limit(hint).filter(|&h| h > 0);
    let lines = PyList::empty(py);
    let mut total = 0;
    loop {
        let line = with_body(tx, |ex, blocking| collect(ex, blocking, None, true))?;
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

/// The next line for iteration; `None` at the end of the body.
pub fn next_line<'py>(tx: &Bound<'py, Tx>) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let line = with_body(tx, |ex, blocking| collect(ex, blocking, None, true))?;
    Ok((!line.is_empty()).then(|| PyBytes::new(tx.py(), &line)))
}
