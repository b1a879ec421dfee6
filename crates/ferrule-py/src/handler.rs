//! Calling the app and sending what it returns (PEP 3333's server side).

use crate::blocking::ReleaseGil;
use crate::environ::{Environ, LoggedKeys};
use crate::errors::format_exception;
use crate::file_wrapper::{regular_file, FileWrapper};
use crate::sys;
use crate::text::type_name;
use crate::tx::Tx;
use ferrule_server::egress;
use ferrule_server::{Error, Exchange, Handler};
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use std::cell::RefCell;

pub struct Wsgi {
    app: Py<PyAny>,
    environ: Environ,
    /// The access log's `{VAR}e` keys (usually none).
    logged: LoggedKeys,
}

/// Why sending a response stopped.
enum Failure {
    /// The app (or its iterable) raised, or broke the protocol.
    App(PyErr),
    /// The client went away or was too slow; nothing the app did wrong.
    Transport(Error),
}

impl From<PyErr> for Failure {
    fn from(e: PyErr) -> Self {
        Failure::App(e)
    }
}

impl Wsgi {
    pub fn new(app: Py<PyAny>, environ: Environ, logged: LoggedKeys) -> Wsgi {
        Wsgi {
            app,
            environ,
            logged,
        }
    }

    /// The access log's `{VAR}e` values, read where gunicorn reads them: after the
    /// response was sent (or the app raised), before the iterable's `close()`.
    fn logged_values(
        &self,
        py: Python<'_>,
        environ: &PyResult<Bound<'_, PyDict>>,
    ) -> Option<Vec<Option<String>>> {
        match environ {
            Ok(env) if !self.logged.is_empty() => Some(self.logged.values(py, env)),
            _ => None,
        }
    }

    fn call(&self, py: Python<'_>, ex: Box<Exchange>) -> Option<Box<Exchange>> {
        // Egress attribution and `request_id`: one load when neither is on.
        let begun = egress::wanted().then(|| {
            egress::begin(
                ex.method(),
                self.environ.egress_path(&ex),
                ex.trusted_request_id(),
            )
        });
        let id = begun.as_ref().map(|(id, _)| *id);
        // uwsgi environs are built elsewhere and get the id below.
        let uwsgi_id = id.filter(|_| ex.protocol() == ferrule_server::Protocol::Uwsgi);
        let (tx, start_response) = match request_object(py, ex) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::error!("cannot allocate the request: {e}");
                if let Some((_, serving)) = begun {
                    serving.end();
                }
                return None;
            }
        };
        let environ = self.environ.build(py, &tx, id);
        if let (Some(_), Ok(env)) = (uwsgi_id, &environ) {
            // HTTP/1 environs have it already (`Environ::build`).
            let key = intern!(py, "ferrule.request_id");
            let set = egress::with_request_id(|id| env.set_item(key, sys::ascii_str(py, id)?));
            if let Some(Err(e)) = set {
                tracing::error!("cannot set ferrule.request_id: {e}");
            }
        }
        let result = match &environ {
            Ok(environ) => self.app.bind(py).call1((environ, &start_response)),
            Err(e) => Err(e.clone_ref(py)),
        };
        let (outcome, logged) = match &result {
            Ok(iterable) => {
                let sent = send_iterable(py, &tx, iterable);
                let logged = self.logged_values(py, &environ);
                close_iterable(py, iterable);
                (sent, logged)
            }
            Err(e) => (
                Err(Failure::App(e.clone_ref(py))),
                self.logged_values(py, &environ),
            ),
        };
        drop(result);
        crate::records::keep_environ(&environ);
        if let Some((_, serving)) = begun {
            serving.end();
        }
        let mut t = tx.borrow_mut();
        let input_error = t.input_error;
        let mut ex = t.ex.take()?;
        drop(t);
        if let Err(failure) = outcome {
            fail(py, &mut ex, failure, input_error);
        }
        let environ_refs = self.environ.release(environ.ok(), &tx);
        keep_for_reuse(tx, start_response, environ_refs);
        if let Some(values) = logged {
            ferrule_server::access::hand_environ_values(values);
        }
        Some(ex)
    }
}

thread_local! {
    /// A finished request object and its `start_response` that nobody else refers to,
    /// reused by this thread's next request: two allocations and deallocations less per
    /// request (callgrind: about 140 instructions each of a plain app's 9,000).
    static SPARE: RefCell<Option<(Py<Tx>, Py<PyAny>)>> = const { RefCell::new(None) };
}

/// The request object for `ex` and its bound `start_response`: this thread's spare
/// ones, or new ones.
fn request_object(
    py: Python<'_>,
    ex: Box<Exchange>,
) -> PyResult<(Bound<'_, Tx>, Bound<'_, PyAny>)> {
    // Returned as `Bound`s: dropping one is a plain decref, without pyo3's check of
    // the thread's GIL state.
    if let Some((tx, start_response)) = SPARE.with(|s| s.borrow_mut().take()) {
        let tx = tx.into_bound(py);
        if let Ok(mut t) = tx.try_borrow_mut() {
            *t = Tx::new(ex);
            drop(t);
            return Ok((tx, start_response.into_bound(py)));
        }
    }
    let tx = Bound::new(py, Tx::new(ex))?;
    let start_response = tx.getattr(intern!(py, "start_response"))?;
    Ok((tx, start_response))
}

/// Keeps `tx` and `start_response` as this thread's spares if no one else refers to
/// them: the app, its environ and its iterable are gone (only `start_response` itself
/// and the `environ_refs` references of the thread's own environs refer to `tx`
/// besides this reference), and the class takes no weak references, so no one can
/// tell they are used again.
fn keep_for_reuse(tx: Bound<'_, Tx>, start_response: Bound<'_, PyAny>, environ_refs: isize) {
    let others = sys::refcnt(tx.as_any()) - 1;
    if others == 1 + environ_refs && sys::refcnt(&start_response) == 1 {
        SPARE.with(|s| *s.borrow_mut() = Some((tx.unbind(), start_response.unbind())));
    }
}

impl Handler for Wsgi {
    fn run_thread(&self, serve: &mut (dyn FnMut() + Send)) {
        // Attach this thread to the interpreter once; it holds the GIL only while
        // it runs Python, never while it waits for connections.
        Python::attach(|py| py.detach(serve));
    }

    fn handle(&self, ex: Box<Exchange>) -> Option<Box<Exchange>> {
        // Inside `hold` the GIL is already held: this only counts a nesting level.
        Python::attach(|py| self.call(py, ex))
    }

    fn hold(&self, batch: &mut dyn FnMut(&dyn ferrule_server::Blocking)) {
        // One GIL acquisition for every request ready at once. Waits for a full
        // socket release it (`ReleaseGil`), and the app's own blocking calls do too.
        Python::attach(|py| batch(&ReleaseGil(py)))
    }
}

/// Logs a failed request and answers it, if its head is not out yet.
fn fail(py: Python<'_>, ex: &mut Exchange, failure: Failure, input_error: Option<u16>) {
    let target = String::from_utf8_lossy(ex.raw_target()).into_owned();
    let blocking = ReleaseGil(py);
    match failure {
        Failure::Transport(e) => {
            tracing::debug!("{target}: {e}");
            ex.close_after();
            if let Some(status) = e.status().filter(|_| !ex.head_sent()) {
                let _ = ex.respond_error(status, &blocking);
            }
        }
        Failure::App(err) => {
            let status = match input_error {
                Some(status) => {
                    if ferrule_server::log::INVALID_REQUESTS.allow() {
                        tracing::warn!("bad request body for {target}: {}", err.value(py));
                    }
                    status
                }
                None => {
                    tracing::error!(
                        target: ferrule_server::log::EXCEPTION,
                        "Error handling request {target}\n{}",
                        format_exception(py, &err)
                    );
                    500
                }
            };
            if ex.head_sent() {
                // Part of the response is out: cut the connection so the client
                // sees an incomplete response rather than a wrong one.
                ex.close_after();
            } else {
                ex.abort_head();
                if let Err(e) = ex.respond_error(status, &blocking) {
                    tracing::debug!("{target}: {e}");
                }
            }
        }
    }
}

/// Calls `close()` on the app's iterable, as PEP 3333 requires in every case.
fn close_iterable(py: Python<'_>, iterable: &Bound<'_, PyAny>) {
    // Lists and tuples have no close(); asking would raise and clear an AttributeError.
    if iterable.is_exact_instance_of::<PyList>() || iterable.is_exact_instance_of::<PyTuple>() {
        return;
    }
    match iterable.hasattr(intern!(py, "close")) {
        Ok(true) => {
            if let Err(e) = iterable.call_method0(intern!(py, "close")) {
                tracing::error!(
                    target: ferrule_server::log::EXCEPTION,
                    "Error closing the response iterable\n{}",
                    format_exception(py, &e)
                );
            }
        }
        Ok(false) => {}
        Err(e) => tracing::error!("{e}"),
    }
}

/// Runs `f` on the exchange; a server error becomes a transport failure.
fn with_ex<R>(
    tx: &Bound<'_, Tx>,
    f: impl FnOnce(&mut Exchange) -> Result<R, Error>,
) -> Result<R, Failure> {
    let mut t = tx.borrow_mut();
    let started = t.started;
    let ex = t.exchange()?;
    if !started && !ex.head_sent() {
        return Err(Failure::App(PyRuntimeError::new_err(
            "the app returned a body without calling start_response()",
        )));
    }
    f(ex).map_err(|e| match e {
        Error::Response(_) | Error::Protocol(_) => Failure::App(crate::errors::to_pyerr(e)),
        other => Failure::Transport(other),
    })
}

fn as_bytes<'a, 'py>(item: &'a Bound<'py, PyAny>) -> Result<&'a Bound<'py, PyBytes>, Failure> {
    item.cast::<PyBytes>().map_err(|_| {
        Failure::App(PyTypeError::new_err(format!(
            "the app's iterable must yield bytes, got {}",
            type_name(item)
        )))
    })
}

fn send_iterable(
    py: Python<'_>,
    tx: &Bound<'_, Tx>,
    iterable: &Bound<'_, PyAny>,
) -> Result<(), Failure> {
    let blocking = ReleaseGil(py);
    if let Ok(fw) = iterable.cast::<FileWrapper>() {
        if send_file(py, tx, &fw.borrow())? {
            return Ok(());
        }
    }
    // A list or tuple is all there is: send it in one write, with its length.
    if let Ok(list) = iterable.cast::<PyList>() {
        return send_items(tx, list.iter(), &blocking);
    }
    if let Ok(tuple) = iterable.cast::<PyTuple>() {
        return send_items(tx, tuple.iter(), &blocking);
    }
    // Anything else is streamed: each block is sent before the next is asked for.
    for item in iterable.try_iter()? {
        let item = item?;
        let data = as_bytes(&item)?.as_bytes();
        if data.is_empty() {
            continue;
        }
        with_ex(tx, |ex| {
            if !ex.head_sent() {
                ex.end_head(None)?;
            }
            ex.write_body(data, true, &blocking)
        })?;
    }
    with_ex(tx, |ex| {
        if !ex.head_sent() {
            ex.end_head(Some(0))?;
        }
        ex.finish(&blocking)
    })
}

/// Sends the items of a list or tuple with their total length. They are held, not
/// read again from the list, which the app's other threads could change while a full
/// socket has the GIL released. A single item, the usual case, is held without an
/// allocation.
fn send_items<'py>(
    tx: &Bound<'py, Tx>,
    mut items: impl ExactSizeIterator<Item = Bound<'py, PyAny>>,
    blocking: &ReleaseGil<'_>,
) -> Result<(), Failure> {
    let one;
    let many: Vec<Bound<'py, PyAny>>;
    let items: &[Bound<'py, PyAny>] = match (items.len(), items.next()) {
        (1, Some(item)) => {
            one = item;
            std::slice::from_ref(&one)
        }
        (_, first) => {
            many = first.into_iter().chain(items).collect();
            &many
        }
    };
    let mut total = 0u64;
    for item in items {
        total += as_bytes(item)?.as_bytes().len() as u64;
    }
    with_ex(tx, |ex| {
        if !ex.head_sent() {
            ex.end_head(Some(total))?;
        }
        for item in items {
            if let Ok(b) = item.cast::<PyBytes>() {
                ex.write_body(b.as_bytes(), false, blocking)?;
            }
        }
        ex.finish(blocking)
    })
}

/// sendfile for a real file; `Ok(false)` means iterate the wrapper instead.
fn send_file(py: Python<'_>, tx: &Bound<'_, Tx>, fw: &FileWrapper) -> Result<bool, Failure> {
    let filelike = fw.filelike.bind(py);
    let Some((fd, offset, size)) = regular_file(py, filelike)? else {
        return Ok(false);
    };
    let blocking = ReleaseGil(py);
    with_ex(tx, |ex| {
        if !ex.head_sent() {
            ex.end_head(Some(size))?;
        }
        if !ex.send_file(fd, offset, size, &blocking)? {
            return Ok(false);
        }
        ex.finish(&blocking)?;
        Ok(true)
    })
}
