//! Which request a thread is serving, for the supervisor: a slot per serving thread,
//! registered once in a thread id → slot map. Also the request's egress tally
//! (destinations, connect time) the access log shows, and `request_id`.
//!
//! The request path takes no lock and allocates nothing: a thread keeps its request's
//! `forwarded id | method | path` bytes in its own buffer and publishes where they are
//! with a few atomic stores. The supervisor copies them with `process_vm_readv` only
//! while that thread is stopped inside a trapped system call, which it entered after
//! those stores and leaves only when answered: the bytes cannot change under the copy.
//! The tally, which the supervisor also updates after answering (a watched connect's
//! end), is under a lock only the supervisor and the access-log atoms take.
//!
//! What only a trapped call needs is made then, not per request: a made id's text
//! (the process's key and the sequence number, [`MadeId`]) and the target path's
//! percent-decoding into PATH_INFO ([`Path::Target`]). The environ rewrites only the
//! id's changed characters in its str ([`MadeId::tail_after`]).
//!
//! Nothing here runs unless ids are wanted ([`wanted`]): egress is on, or the access
//! log shows `%(request_id)s`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ferrule_http::percent;

use super::request_id::{draw_key, forwarded_id, MadeId, RequestId};

/// Egress is on in this process (the supervisor runs).
static EGRESS_ON: AtomicBool = AtomicBool::new(false);
/// Request ids are made (egress on, or the access log shows them).
static IDS: AtomicBool = AtomicBool::new(false);
/// The last request's sequence number in this process (0: none yet).
static SEQ: AtomicU64 = AtomicU64::new(0);
/// SCRIPT_NAME, which PATH_INFO leaves out of a target path ([`set_mount`]).
static MOUNT: Mutex<Vec<u8>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A request's egress tally: kept by sequence number, so that a late note about an
/// earlier request of the thread (a watched connect's end) changes nothing.
#[derive(Default)]
pub(crate) struct Tally {
    seq: u64,
    /// The distinct destinations, `dests[..used]`; the rest is room kept.
    dests: Vec<String>,
    used: usize,
    /// Milliseconds spent in TCP connects.
    connect_ms: f64,
}

impl Tally {
    /// Whether a note about request `seq` counts: a later request than the tally's
    /// starts a new tally; an earlier one is stale.
    fn take(&mut self, seq: u64) -> bool {
        if seq > self.seq {
            self.seq = seq;
            self.used = 0;
            self.connect_ms = 0.0;
        }
        seq == self.seq
    }

    /// Adds `dest` (first attempt order, each once) to the tally of request `seq`:
    /// when the attempt is decided, so the access-log line has it even when the
    /// connect's end is seen later.
    pub(crate) fn note_dest(&mut self, seq: u64, dest: &str) {
        if !self.take(seq) || self.dests[..self.used].iter().any(|d| d == dest) {
            return;
        }
        match self.dests.get_mut(self.used) {
            Some(room) => {
                room.clear();
                room.push_str(dest);
            }
            None => self.dests.push(dest.to_string()),
        }
        self.used += 1;
    }

    /// Adds a finished connect's milliseconds to request `seq`'s time connecting.
    pub(crate) fn add_ms(&mut self, seq: u64, ms: f64) {
        if self.take(seq) {
            self.connect_ms += ms;
        }
    }
}

pub(crate) struct Slot {
    /// The request being served (0: none). Stored by the slot's thread only.
    seq: AtomicU64,
    /// Where that thread's `forwarded id | method | path` bytes are, and their three
    /// lengths (no forwarded id: the id is made from `seq`; a GET: not copied, the
    /// method's length is [`GET`]).
    at: AtomicUsize,
    lens: [AtomicUsize; 3],
    /// The path is the target's, to be decoded into PATH_INFO ([`Path::Target`]).
    target: AtomicBool,
    tally: Mutex<Tally>,
}

impl Slot {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Tally> {
        lock(&self.tally)
    }

    /// The request this slot serves now: (request_id, method, path, seq). Call only
    /// while the slot's thread is stopped in a trapped call (see the module's text);
    /// `pid` is this process's.
    pub(crate) fn request(&self, pid: i32) -> Option<([String; 3], u64)> {
        let seq = self.seq.load(Ordering::Acquire);
        if seq == 0 {
            return None;
        }
        let at = self.at.load(Ordering::Relaxed);
        let [a, b, c] = [0, 1, 2].map(|i| self.lens[i].load(Ordering::Relaxed));
        let (b, get) = match b {
            GET => (0, true),
            b => (b, false),
        };
        let mut bytes = vec![0u8; a + b + c];
        crate::sys::remote::read_from(pid, at as u64, &mut bytes).ok()?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let (id, rest) = bytes.split_at(a);
        let (method, path) = rest.split_at(b);
        let method = if get { b"GET" } else { method };
        let id = match a {
            0 => text(&MadeId::new(seq).text()),
            _ => text(id),
        };
        let path = match self.target.load(Ordering::Relaxed) {
            true => text(&path_info(path)),
            false => text(path),
        };
        Some(([id, text(method), path], seq))
    }
}

/// A slot's method length for a GET, whose method is not copied: one compare instead
/// of a `memcpy` call for most requests (a table of several methods cost what the
/// copy did).
const GET: usize = usize::MAX;

/// A request being served on this thread, from [`begin`] to [`Serving::end`]: its
/// slot, so that the end needs no second look-up of the thread's slot (a cdylib's
/// thread-local costs a `__tls_get_addr` call).
#[must_use = "a request begun must be ended"]
pub struct Serving(Arc<Slot>);

impl Serving {
    /// Ends this thread's request: later attempts from the thread have no request.
    /// The tally stays for the access-log line that follows.
    #[inline]
    pub fn end(self) {
        self.0.seq.store(0, Ordering::Release);
    }
}

/// Serving threads' slots by thread id.
static SLOTS: Mutex<Option<HashMap<i32, Arc<Slot>>>> = Mutex::new(None);

/// This thread's slot; unregistered when the thread ends (its id may be reused).
struct Mine {
    tid: i32,
    slot: Arc<Slot>,
    /// The current (or last) request's sequence number.
    seq: u64,
    /// Its `forwarded id | method | path`, read by this thread (the access log) and,
    /// through [`Slot`], by the supervisor; room kept between requests.
    buf: Vec<u8>,
    /// The forwarded id's length (0: a made id).
    id_len: usize,
}

/// The request's path for the record.
#[derive(Clone, Copy, Debug)]
pub enum Path<'a> {
    /// The target's path, raw: PATH_INFO is its percent-decoded form below the mount
    /// ([`set_mount`]), made only when a trapped call needs it.
    Target(&'a [u8]),
    /// PATH_INFO as it is (a front server's variable).
    Info(&'a [u8]),
}

impl Drop for Mine {
    fn drop(&mut self) {
        if let Some(map) = lock(&SLOTS).as_mut() {
            map.remove(&self.tid);
        }
    }
}

thread_local! {
    static MINE: RefCell<Option<Mine>> = const { RefCell::new(None) };
}

/// The slot of thread `tid`, if it serves requests.
pub(crate) fn slot_of(tid: i32) -> Option<Arc<Slot>> {
    lock(&SLOTS).as_ref()?.get(&tid).cloned()
}

/// Turns egress on for this process: request ids are made from now on, with a key
/// drawn after the fork, so workers differ.
pub(crate) fn enable_egress() {
    EGRESS_ON.store(true, Ordering::Relaxed);
    want_ids();
}

/// Whether egress is on in this process.
pub fn egress_on() -> bool {
    EGRESS_ON.load(Ordering::Relaxed)
}

/// Request ids are wanted (the access log shows them): draws this process's key
/// ([`draw_key`]).
pub fn want_ids() {
    draw_key();
    IDS.store(true, Ordering::Relaxed);
}

/// Whether [`begin`] should be called for each request.
#[inline]
pub fn wanted() -> bool {
    IDS.load(Ordering::Relaxed)
}

/// Sets the SCRIPT_NAME that PATH_INFO leaves out of a target path (the environ's).
pub fn set_mount(script_name: &[u8]) {
    let mut mount = lock(&MOUNT);
    mount.clear();
    mount.extend_from_slice(script_name);
}

/// PATH_INFO of a target path: percent-decoded (a `%` without two hex digits stays),
/// then without the mount when it starts with it: the environ's rule (ferrule-py's
/// `environ/rules.rs`), applied here only when a trapped call asks.
fn path_info(path: &[u8]) -> Vec<u8> {
    let decoded = percent::decode(path).unwrap_or_else(|| path.to_vec());
    let mount = lock(&MOUNT);
    match decoded.strip_prefix(mount.as_slice()) {
        Some(rest) => rest.to_vec(),
        None => decoded,
    }
}

/// Starts a request on this thread: its id (a trusted peer's `X-Request-ID`, else one
/// made of the process's random key and a sequence number, so distinct across
/// processes and restarts), method and path. No lock, no allocation once the buffer
/// has grown to the thread's longest request, no text made for the id, a GET's method
/// not copied.
pub fn begin(method: &[u8], path: Path<'_>, forwarded: Option<&[u8]>) -> (RequestId, Serving) {
    MINE.with(|m| {
        let mut m = m.borrow_mut();
        let mine = m.get_or_insert_with(register);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed) + 1;
        mine.seq = seq;
        mine.buf.clear();
        let (id, id_len) = match forwarded_id(forwarded) {
            Some(fwd) => {
                mine.buf.extend_from_slice(fwd);
                (RequestId::Forwarded, fwd.len())
            }
            None => (RequestId::Made(MadeId::new(seq)), 0),
        };
        mine.id_len = id_len;
        let (target, path) = match path {
            Path::Target(p) => (true, p),
            Path::Info(p) => (false, p),
        };
        let method_len = if method == b"GET" {
            GET
        } else {
            mine.buf.extend_from_slice(method);
            method.len()
        };
        mine.buf.extend_from_slice(path);
        // Published after the bytes (the buffer may have moved while growing).
        let slot = &mine.slot;
        slot.at.store(mine.buf.as_ptr() as usize, Ordering::Relaxed);
        slot.lens[0].store(id_len, Ordering::Relaxed);
        slot.lens[1].store(method_len, Ordering::Relaxed);
        slot.lens[2].store(path.len(), Ordering::Relaxed);
        slot.target.store(target, Ordering::Relaxed);
        slot.seq.store(seq, Ordering::Release);
        (id, Serving(slot.clone()))
    })
}

// Once per thread: kept out of `begin`, which is inlined into every request.
#[cold]
#[inline(never)]
fn register() -> Mine {
    let tid = nix::unistd::gettid().as_raw();
    let slot = Arc::new(Slot {
        seq: AtomicU64::new(0),
        at: AtomicUsize::new(0),
        lens: Default::default(),
        target: AtomicBool::new(false),
        tally: Mutex::new(Tally::default()),
    });
    lock(&SLOTS)
        .get_or_insert_with(HashMap::new)
        .insert(tid, slot.clone());
    Mine {
        tid,
        slot,
        seq: 0,
        buf: Vec::with_capacity(256),
        id_len: 0,
    }
}

/// Calls `f` with this thread's last request's destinations and connect
/// milliseconds (`None` when this thread has no slot).
pub fn with_tally<R>(f: impl FnOnce(Option<(&[String], f64)>) -> R) -> R {
    MINE.with(|m| match m.borrow().as_ref() {
        Some(mine) => {
            let t = mine.slot.lock();
            if t.seq == mine.seq {
                f(Some((&t.dests[..t.used], t.connect_ms)))
            } else {
                f(Some((&[], 0.0)))
            }
        }
        None => f(None),
    })
}

/// Calls `f` with this thread's current (or last) request id: visible ASCII.
pub fn with_request_id<R>(f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    MINE.with(|m| {
        m.borrow().as_ref().map(|mine| match mine.id_len {
            0 => f(&MadeId::new(mine.seq).text()),
            n => f(&mine.buf[..n]),
        })
    })
}

#[cfg(test)]
#[path = "attribution_tests.rs"]
mod tests;
