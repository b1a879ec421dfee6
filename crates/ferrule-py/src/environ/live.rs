//! The last request's environ, built on again by the next request of the thread.
//!
//! Copying the template and freeing the copy is over a tenth of a plain request's
//! cost (callgrind: about 1,300 instructions of 8,100 with 8 clients). An app that
//! neither kept its environ nor changed it leaves a dict that no one else can see and
//! that holds exactly what `build` put in: the next request changes only the values
//! that differ, adds its own header keys and deletes the last request's other ones.
//!
//! Both conditions are read off CPython, not trusted: nothing but this thread refers
//! to the dict (its reference count is the caller's one), and its version tag
//! (PEP 509) is the one it had when `build` finished, which CPython changes on every
//! store and delete. An app that changed it (Flask stores `werkzeug.request` in it)
//! gets a new copy of the template each time, as without this module. Pythons without
//! a version tag (3.14 on) always copy.

use super::{Absent, Sticky, STICKY};
use crate::sys;
use ferrule_server::egress::{MadeId, RequestId};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// What this thread knows of the environ it built last, and that dict itself while
/// it may be built on again.
#[derive(Default)]
pub struct Live {
    /// The last environ, given back unchanged and unreferenced ([`Live::offer`]).
    dict: Option<Py<PyDict>>,
    /// Its version tag when `build` finished; `None` when it is not to be reused.
    version: Option<u64>,
    /// Its values of the [`Sticky`] keys, in [`Sticky::items`] order (HTTP_HOST: the
    /// placeholder `None` when the dict has no such key).
    stored: [Option<Py<PyAny>>; STICKY],
    /// The address of its `wsgi.input` (the dict's reference keeps it alive).
    input: usize,
    /// The keys it has beyond the template's: CONTENT_TYPE, CONTENT_LENGTH, HTTP_*.
    extras: Vec<Py<PyString>>,
    /// An empty list whose room the next request's keys take (no allocation).
    spare: Vec<Py<PyString>>,
    /// Its `ferrule.request_id` str, while `dict` holds it (egress): refilled in place
    /// for the next request when no one else refers to it. Not an extra key: every
    /// request of the process sets it, so it stays in a built-on dict.
    request_id: Option<Py<PyString>>,
    /// The made id that str holds (`None`: a forwarded one, or not known), so the
    /// next made id rewrites only the characters that differ.
    made: Option<MadeId>,
    /// This build set `request_id` (else [`Live::finish`] forgets it: the dict may
    /// not hold it, uwsgi's environs get theirs after `finish`).
    request_id_set: bool,
}

impl Live {
    /// The last environ, if it may be built on. Otherwise the next environ is a new
    /// copy, which has none of the last one's extra keys. The tag is read again: the
    /// dict is tracked by the garbage collector, so code that walks `gc.get_objects()`
    /// could reach it between requests.
    pub fn take<'py>(&mut self, py: Python<'py>) -> Option<Bound<'py, PyDict>> {
        let version = self.version.take();
        let dict = self.dict.take().map(|d| d.into_bound(py));
        let dict = dict.filter(|d| sys::dict_version(d) == version);
        if dict.is_none() {
            // Dropped as `Bound`s: plain decrefs, without pyo3's GIL check.
            self.extras.drain(..).for_each(|k| drop(k.into_bound(py)));
            if let Some(id) = self.request_id.take() {
                drop(id.into_bound(py));
            }
        }
        dict
    }

    /// Sets `dict["ferrule.request_id"]` to request `id`'s text (`forwarded`:
    /// the kept `X-Request-ID`, for [`RequestId::Forwarded`]). A built-on dict still
    /// holds the str this set last (its unchanged version tag says no one stored
    /// anything since): when only the dict and this record refer to it, a made id
    /// after a made id rewrites its last two characters in place (no new str, no dict
    /// store), the usual case; [`Live::set_request_id_again`] does the rest. Inlined
    /// into `build_in` (a call's register saves were a fifth of its cost).
    #[inline(always)]
    pub fn set_request_id(
        &mut self,
        dict: &Bound<'_, PyDict>,
        id: RequestId,
        forwarded: &[u8],
    ) -> PyResult<()> {
        if let (RequestId::Made(made), Some(last), Some(last_made)) =
            (id, &self.request_id, self.made)
        {
            if let Some(tail) = made.tail_after(last_made) {
                if sys::refill_ascii_tail(last.bind(dict.py()), MadeId::LEN, tail) {
                    self.made = Some(made);
                    self.request_id_set = true;
                    return Ok(());
                }
            }
        }
        self.set_request_id_again(dict, id, forwarded)
    }

    /// [`Live::set_request_id`] when more than the tail changes: the whole text
    /// rewritten in place when the str is still only ours, else a new str. Kept out
    /// of line: the usual case stays small enough to inline.
    #[cold]
    #[inline(never)]
    fn set_request_id_again(
        &mut self,
        dict: &Bound<'_, PyDict>,
        id: RequestId,
        forwarded: &[u8],
    ) -> PyResult<()> {
        let py = dict.py();
        let (made, text) = match id {
            RequestId::Made(made) => (Some(made), Some(made.text())),
            RequestId::Forwarded => (None, None),
        };
        let text = text.as_ref().map_or(forwarded, |t| &t[..]);
        // Unknown until this succeeds.
        self.made = None;
        let refilled = self
            .request_id
            .as_ref()
            .is_some_and(|last| sys::refill_ascii(last.bind(py), text));
        if !refilled {
            let s = sys::ascii_str(py, text)?;
            dict.set_item(intern!(py, "ferrule.request_id"), &s)?;
            if let Some(last) = self.request_id.replace(s.unbind()) {
                drop(last.into_bound(py));
            }
        }
        self.made = made;
        self.request_id_set = true;
        Ok(())
    }

    /// Stores this request's [`Sticky`] values that differ from the dict's; a request
    /// without Host deletes HTTP_HOST.
    pub fn update<'py>(&mut self, dict: &Bound<'py, PyDict>, values: Sticky<'py>) -> PyResult<()> {
        values.store_changed(dict, &mut self.stored, Absent::Delete)
    }

    /// Records a new copy of the template, whose values of the [`Sticky`] keys are
    /// `stored` (the template's; a request without Host stored the placeholder, and
    /// its copy has no HTTP_HOST, as `update` expects) and whose `wsgi.input` is the
    /// object at `input`.
    pub fn adopt(&mut self, py: Python<'_>, stored: &[Option<Py<PyAny>>; STICKY], input: usize) {
        self.input = input;
        for (mine, theirs) in self.stored.iter_mut().zip(stored) {
            let new = theirs.as_ref().map(|v| v.clone_ref(py));
            let _old = std::mem::replace(mine, new).map(|o| o.into_bound(py));
        }
    }

    /// Makes `tx`, at `addr`, the dict's `wsgi.input` unless it already is.
    pub fn set_input(&mut self, dict: &Bound<'_, PyDict>, tx: &Bound<'_, PyAny>) -> PyResult<()> {
        let addr = tx.as_ptr() as usize;
        if self.input != addr {
            dict.set_item(intern!(dict.py(), "wsgi.input"), tx)?;
            self.input = addr;
        }
        Ok(())
    }

    /// The list to collect this request's extra keys in: empty, with room.
    pub fn start_extras(&mut self) -> Vec<Py<PyString>> {
        std::mem::take(&mut self.spare)
    }

    /// Deletes the last request's extra keys that this one (`keys`) did not set, and
    /// marks the dict as built: its version now is the one [`Live::offer`] expects.
    pub fn finish(&mut self, dict: &Bound<'_, PyDict>, keys: Vec<Py<PyString>>) -> PyResult<()> {
        let py = dict.py();
        if !std::mem::take(&mut self.request_id_set) {
            if let Some(id) = self.request_id.take() {
                drop(id.into_bound(py));
            }
        }
        let mut old = std::mem::replace(&mut self.extras, keys);
        for key in old.drain(..) {
            let key = key.into_bound(py);
            if !self.extras.iter().any(|k| k.as_ptr() == key.as_ptr()) {
                dict.del_item(&key)?;
            }
        }
        self.spare = old;
        self.version = sys::dict_version(dict);
        Ok(())
    }

    /// Whether the last environ had `key` among its extra keys (asked after
    /// [`Live::take`] gave it back, before [`Live::finish`]).
    pub fn has_extra(&self, key: &Bound<'_, PyString>) -> bool {
        self.extras.iter().any(|k| k.as_ptr() == key.as_ptr())
    }

    /// The environ just built must not be built on: it set a key the template has
    /// (a front server's variable named like one), which the next request's extras
    /// would not restore. The next request copies the template.
    pub fn forget(&mut self) {
        self.version = None;
    }

    /// Takes back the environ `build` made last, once the request is over: kept if no
    /// one else refers to it and it is as `build` left it.
    pub fn offer(&mut self, dict: Bound<'_, PyDict>) {
        let unchanged = self.version.is_some() && sys::dict_version(&dict) == self.version;
        if unchanged && self.dict.is_none() && sys::refcnt(dict.as_any()) == 1 {
            self.dict = Some(dict.unbind());
        } else {
            self.version = None;
        }
    }

    /// Whether the kept dict's `wsgi.input` is the object at `addr`.
    pub fn holds(&self, addr: usize) -> bool {
        self.dict.is_some() && self.input == addr
    }
}
