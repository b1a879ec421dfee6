//! Which request a thread is serving, for the supervisor: a slot per serving thread,
//! registered once in a thread id → slot map, refilled per request without
//! allocating (its strings and list keep their room). Also the request's egress
//! tally (destinations, connect time) the access log shows, and `request_id`.
//!
//! Nothing here runs unless ids are wanted ([`wanted`]): egress is on, or the access
//! log shows `%(request_id)s`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Egress is on in this process (the supervisor runs).
static EGRESS_ON: AtomicBool = AtomicBool::new(false);
/// Request ids are made (egress on, or the access log shows them).
static IDS: AtomicBool = AtomicBool::new(false);
/// This process's random key for request ids, and their sequence.
static KEY: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static SEQ: AtomicU64 = AtomicU64::new(0);

/// Longest `X-Request-ID` kept from a trusted peer.
const MAX_FORWARDED_ID: usize = 200;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a serving thread is doing, read by the supervisor.
#[derive(Default)]
pub(crate) struct Current {
    pub(crate) seq: u64,
    /// Visible ASCII (generated, or a checked `X-Request-ID`).
    pub(crate) request_id: Vec<u8>,
    /// As sent (bytes: made text only when an attempt is recorded).
    pub(crate) method: Vec<u8>,
    pub(crate) path: Vec<u8>,
    /// The distinct destinations, `dests[..used]`; the rest is room kept.
    dests: Vec<String>,
    used: usize,
    /// Milliseconds spent in TCP connects.
    connect_ms: f64,
}

impl Current {
    /// Adds `dest` (first attempt order, each once) to the tally of request `seq`,
    /// if this slot still serves it: when the attempt is decided, so the access-log
    /// line has it even when the connect's end is seen later.
    pub(crate) fn note_dest(&mut self, seq: u64, dest: &str) {
        if seq != self.seq || self.dests[..self.used].iter().any(|d| d == dest) {
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
        if seq == self.seq {
            self.connect_ms += ms;
        }
    }
}

pub(crate) struct Slot {
    current: Mutex<Current>,
    /// A request is being served (`current` is its own); outside the lock so that
    /// ending a request costs one store.
    active: AtomicBool,
}

impl Slot {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Current> {
        lock(&self.current)
    }

    /// The request this slot serves now: (request_id, method, path, seq).
    pub(crate) fn request(&self) -> Option<([String; 3], u64)> {
        let c = self.lock();
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Some(([text(&c.request_id), text(&c.method), text(&c.path)], c.seq))
    }
}

/// Serving threads' slots by thread id.
static SLOTS: Mutex<Option<HashMap<i32, Arc<Slot>>>> = Mutex::new(None);

/// This thread's slot; unregistered when the thread ends (its id may be reused).
struct Mine {
    tid: i32,
    slot: Arc<Slot>,
    /// The current request's id again, read by this thread only (the environ, the
    /// access log) without the slot's lock.
    id: Vec<u8>,
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
/// drawn here (after the fork, so workers differ).
pub(crate) fn enable_egress() {
    EGRESS_ON.store(true, Ordering::Relaxed);
    want_ids();
}

/// Whether egress is on in this process.
pub fn egress_on() -> bool {
    EGRESS_ON.load(Ordering::Relaxed)
}

/// Request ids are wanted (the access log shows them): draws this process's key.
pub fn want_ids() {
    let mut bytes = [0u8; 16];
    if let Err(e) = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
    {
        // Still distinct per process: the pid and the time stand in.
        tracing::warn!("/dev/urandom: {e}; request ids use the pid and the time");
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = (t ^ (u128::from(std::process::id()) << 96)).to_le_bytes();
    }
    let (a, b) = bytes.split_at(8);
    KEY[0].store(
        u64::from_le_bytes(a.try_into().unwrap_or_default()),
        Ordering::Relaxed,
    );
    KEY[1].store(
        u64::from_le_bytes(b.try_into().unwrap_or_default()),
        Ordering::Relaxed,
    );
    IDS.store(true, Ordering::Relaxed);
}

/// Whether [`begin`] should be called for each request.
#[inline]
pub fn wanted() -> bool {
    IDS.load(Ordering::Relaxed)
}

/// splitmix64's finaliser: a bijection, so distinct sequence numbers give distinct ids.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Every byte as two lowercase hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [DIGITS[i >> 4], DIGITS[i & 0xf]];
        i += 1;
    }
    t
};

/// Writes `v` as 16 lowercase hex digits into `out` (a byte at a time from a table:
/// `format!` costs several times more, on every request).
fn put_hex(out: &mut [u8], v: u64) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(v.to_be_bytes()) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
    }
}

/// A kept `X-Request-ID`: 1-200 visible ASCII characters.
fn usable_id(id: &[u8]) -> bool {
    (1..=MAX_FORWARDED_ID).contains(&id.len()) && id.iter().all(|b| b.is_ascii_graphic())
}

/// Starts a request on this thread: its id (a trusted peer's `X-Request-ID`, else 32
/// lowercase hex characters), method and path, and an empty tally.
pub fn begin(method: &[u8], path: &[u8], forwarded_id: Option<&[u8]>) {
    MINE.with(|m| {
        let mut m = m.borrow_mut();
        let mine = m.get_or_insert_with(register);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        mine.id.clear();
        match forwarded_id.filter(|id| usable_id(id)) {
            Some(id) => mine.id.extend_from_slice(id),
            None => {
                let mut hex = [0u8; 32];
                put_hex(&mut hex[..16], KEY[0].load(Ordering::Relaxed) ^ mix(seq));
                put_hex(
                    &mut hex[16..],
                    KEY[1].load(Ordering::Relaxed) ^ mix(seq ^ 0x5bd1_e995),
                );
                mine.id.extend_from_slice(&hex);
            }
        }
        let mut c = mine.slot.lock();
        c.seq = seq;
        c.request_id.clear();
        c.request_id.extend_from_slice(&mine.id);
        c.method.clear();
        c.method.extend_from_slice(method);
        c.path.clear();
        c.path.extend_from_slice(path);
        c.used = 0;
        c.connect_ms = 0.0;
        drop(c);
        mine.slot.active.store(true, Ordering::Release);
    });
}

/// Ends this thread's request: later attempts from the thread have no request. The
/// tally stays for the access-log line that follows.
pub fn end() {
    MINE.with(|m| {
        if let Some(mine) = m.borrow().as_ref() {
            mine.slot.active.store(false, Ordering::Release);
        }
    });
}

fn register() -> Mine {
    let tid = nix::unistd::gettid().as_raw();
    let slot = Arc::new(Slot {
        current: Mutex::new(Current::default()),
        active: AtomicBool::new(false),
    });
    lock(&SLOTS)
        .get_or_insert_with(HashMap::new)
        .insert(tid, slot.clone());
    Mine {
        tid,
        slot,
        id: Vec::with_capacity(MAX_FORWARDED_ID),
    }
}

/// Calls `f` with this thread's last request's destinations and connect
/// milliseconds (`None` when this thread has no slot).
pub fn with_tally<R>(f: impl FnOnce(Option<(&[String], f64)>) -> R) -> R {
    MINE.with(|m| match m.borrow().as_ref() {
        Some(mine) => {
            let c = mine.slot.lock();
            f(Some((&c.dests[..c.used], c.connect_ms)))
        }
        None => f(None),
    })
}

/// Calls `f` with this thread's current (or last) request id: visible ASCII.
pub fn with_request_id<R>(f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    MINE.with(|m| m.borrow().as_ref().map(|mine| f(&mine.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_carries_its_request_and_tally_and_is_reused() {
        want_ids();
        begin(b"GET", b"/a", None);
        let tid = nix::unistd::gettid().as_raw();
        let slot = slot_of(tid).expect("registered");
        let ([id, method, path], seq) = slot.request().expect("active");
        assert_eq!((method.as_str(), path.as_str()), ("GET", "/a"));
        assert_eq!(id.len(), 32);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        slot.lock().note_dest(seq, "db:5432");
        slot.lock().add_ms(seq, 1.5);
        slot.lock().note_dest(seq, "db:5432");
        slot.lock().add_ms(seq, 0.5);
        slot.lock().note_dest(seq, "[::1]:80");
        slot.lock().note_dest(seq + 1000, "stale:1");
        slot.lock().add_ms(seq + 1000, 9.0);
        assert_eq!(with_request_id(|r| r == id.as_bytes()), Some(true));
        with_tally(|t| {
            let (dests, ms) = t.unwrap();
            assert_eq!(dests, ["db:5432", "[::1]:80"]);
            assert_eq!(ms, 2.0);
        });
        end();
        assert!(slot.request().is_none());
        begin(b"POST", b"/b", Some(b"trace-1"));
        assert_eq!(slot.request().unwrap().0[0], "trace-1");
        let c = slot.lock();
        assert_eq!(c.used, 0);
        assert_eq!(c.dests.len(), 2, "room kept for the next request");
        drop(c);
        begin(b"GET", b"/", Some(b"has space"));
        assert_ne!(slot.lock().request_id, b"has space");
    }

    #[test]
    fn hex_is_lowercase_and_big_endian() {
        let mut out = [0u8; 16];
        put_hex(&mut out, 0x0123_4567_89ab_cdef);
        assert_eq!(&out, b"0123456789abcdef");
        put_hex(&mut out, u64::MAX);
        assert_eq!(&out, b"ffffffffffffffff");
    }

    #[test]
    fn ids_are_distinct_across_threads() {
        want_ids();
        let ids: Vec<String> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let mut seen = Vec::new();
                    for _ in 0..50 {
                        begin(b"GET", b"/", None);
                        with_request_id(|id| seen.push(String::from_utf8_lossy(id).into_owned()));
                    }
                    seen
                })
            })
            .flat_map(|h| h.join().unwrap())
            .collect();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
    }
}
