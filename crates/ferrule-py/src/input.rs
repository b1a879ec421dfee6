//! `wsgi.input`: the request body as a file-like object, streamed from the socket.
//! The object is the request's `Tx` (`tx.rs`), whose `read` methods call these
//! functions through [`Body`]: this module does not know the request object, so the
//! dependency points one way (`tx` → `input`).

use crate::blocking::ReleaseGil;
use ferrule_server::{Error, Exchange};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

/// A request whose body can be read (the request object).
pub trait Body<'py> {
    fn py(&self) -> Python<'py>;
    /// Up to `limit` bytes (None: all), stopping after a newline when `line`, read by
    /// [`collect`]; a failed read is recorded so the response can say why.
    fn take(&self, limit: Option<usize>, line: bool) -> PyResult<Vec<u8>>;
}

/// Collects up to `limit` bytes (None: all), stopping after a newline when `line`.
pub fn collect(
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
pub fn read<'py>(body: &impl Body<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
    let data = body.take(limit(size), false)?;
    Ok(PyBytes::new(body.py(), &data))
}

pub fn readline<'py>(body: &impl Body<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
    let data = body.take(limit(size), true)?;
    Ok(PyBytes::new(body.py(), &data))
}

pub fn readlines<'py>(body: &impl Body<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
    let py = body.py();
    let hint = limit(hint).filter(|&h| h > 0);
    let lines = PyList::empty(py);
    let mut total = 0;
    loop {
        let line = body.take(None, true)?;
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
pub fn next_line<'py>(body: &impl Body<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let line = body.take(None, true)?;
    Ok((!line.is_empty()).then(|| PyBytes::new(body.py(), &line)))
}
