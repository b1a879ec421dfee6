//! One worker's counters in the shared region: fixed-size arrays of atomics, so a
//! worker adds to them with relaxed atomics (no lock, no allocation) and the master
//! reads or folds them while the worker runs or after it died.
//!
//! Layout (in 64-bit words): requests by method and status, rejected requests by
//! status, the duration and queue histograms (one word per bucket, not cumulative,
//! then the sum in nanoseconds), bytes sent and received; then the gauges the worker
//! refreshes every second, which are not folded when it is gone.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Methods with a label of their own; any other is `OTHER` (a client choosing method
/// names must not grow the series without bound).
pub const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];
pub(crate) const N_METHODS: usize = METHODS.len() + 1;
/// Statuses 100 to 999 (what a status line may carry); index `status - 100`.
pub(crate) const N_STATUS: usize = 900;
/// Upper bounds of the histograms' buckets, in seconds (both histograms): from
/// 100 µs, where a hello request lies, to 10 s; anything longer is `+Inf`.
pub const BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
const BOUNDS_NS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];
/// Per power of two `p`: how many bounds lie below `2^p`, and the next bound (or
/// `u64::MAX` past the last). Consecutive bounds are at least twice apart, so at most
/// one lies in `[2^p, 2^(p+1))` and a value's bucket is that count or one more
/// (`bucket`): one load and one compare instead of a search, and no bounds check.
const OCTAVES: [(u64, usize); 64] = {
    let mut out = [(0u64, 0usize); 64];
    let mut p = 0;
    while p < 64 {
        let mut n = 0;
        while n < BOUNDS_NS.len() && BOUNDS_NS[n] < 1u64 << p {
            n += 1;
        }
        let next = if n < BOUNDS_NS.len() {
            BOUNDS_NS[n]
        } else {
            u64::MAX
        };
        out[p] = (next, n);
        p += 1;
    }
    out
};

/// The bucket of `ns`: how many bounds are below it (`+Inf` after the last).
#[inline(always)]
fn bucket(ns: u64) -> usize {
    // `ns | 1` has at most 63 leading zeros: the index is below 64.
    let (next, below) = OCTAVES[63 - (ns | 1).leading_zeros() as usize];
    below + usize::from(next < ns)
}

/// Words of a histogram: a bucket per bound, `+Inf`, the sum.
pub(crate) const HIST: usize = BOUNDS.len() + 2;

pub(crate) const REQUESTS: usize = 0;
pub(crate) const REJECTED: usize = REQUESTS + N_METHODS * N_STATUS;
pub(crate) const DURATION: usize = REJECTED + N_STATUS;
pub(crate) const QUEUE: usize = DURATION + HIST;
pub(crate) const SENT: usize = QUEUE + HIST;
pub(crate) const RECEIVED: usize = SENT + 1;
/// Words that count (folded into the retired totals when a worker is gone).
pub(crate) const COUNTERS: usize = RECEIVED + 1;
/// Gauges: threads in a request, running or blocked; connections open, idle; 1 while
/// the worker accepts.
pub(crate) const RUNNING: usize = COUNTERS;
pub(crate) const BLOCKED: usize = RUNNING + 1;
pub(crate) const OPEN: usize = BLOCKED + 1;
pub(crate) const IDLE: usize = OPEN + 1;
pub(crate) const ACCEPTING: usize = IDLE + 1;
/// A slot's words, rounded up to whole cache lines so two workers never share one.
pub(crate) const WORDS: usize = (ACCEPTING + 1).div_ceil(8) * 8;

/// A worker's part of the shared region.
#[derive(Clone, Copy)]
pub struct Slot {
    /// A fixed-size array: the words named by constants need no bounds check.
    pub(crate) words: &'static [AtomicU64; WORDS],
}

/// What the worker samples every 100 ms (`Slot::set_gauges`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Threads inside a request whose thread is runnable.
    pub running: u64,
    /// Threads inside a request waiting (I/O, a lock, a sleep).
    pub blocked: u64,
    pub open: u64,
    /// Connections waiting for their next request.
    pub idle: u64,
}

/// The label index of a method (the order of [`METHODS`]; a match on the bytes
/// compiles to a switch on the length, cheaper than comparing with each name).
#[inline(always)]
pub(crate) fn method_index(method: &[u8]) -> usize {
    // Most requests are GETs: one length and one 3-byte compare before the switch.
    if method == b"GET" {
        return 0;
    }
    other_method_index(method)
}

fn other_method_index(method: &[u8]) -> usize {
    match method {
        b"GET" => 0,
        b"HEAD" => 1,
        b"POST" => 2,
        b"PUT" => 3,
        b"DELETE" => 4,
        b"PATCH" => 5,
        b"OPTIONS" => 6,
        b"CONNECT" => 7,
        b"TRACE" => 8,
        _ => METHODS.len(),
    }
}

#[inline(always)]
fn status_index(status: u16) -> usize {
    usize::from(status.clamp(100, 999) - 100)
}

impl Slot {
    #[inline(always)]
    fn add(&self, i: usize, n: u64) {
        self.words[i].fetch_add(n, Relaxed);
    }

    /// A request the app answered: its series and bytes (its times follow, `timed`).
    #[inline(always)]
    pub(crate) fn answered(&self, a: &Answered<'_>) {
        let series = REQUESTS + method_index(a.method) * N_STATUS + status_index(a.status);
        self.add(series, 1);
        self.add(SENT, a.sent);
        self.add(RECEIVED, a.received);
    }

    /// The times of `k` requests a runner answered back to back: `each` nanoseconds
    /// long, the first after waiting `queue` (the others waited for it, not for a
    /// thread).
    #[inline(always)]
    pub(crate) fn timed(&self, k: u32, each: u64, queue: u64) {
        let k = u64::from(k);
        self.add(DURATION + bucket(each), k);
        self.add(DURATION + BOUNDS.len() + 1, each * k);
        self.add(QUEUE + bucket(queue), 1);
        self.add(QUEUE + BOUNDS.len() + 1, queue);
        if k > 1 {
            self.add(QUEUE, k - 1);
        }
    }

    /// A request the server answered itself before the app (400, 408, 413, 431, 503...).
    pub(crate) fn rejected(&self, status: u16) {
        self.add(REJECTED + status_index(status), 1);
    }

    pub fn set_gauges(&self, g: Gauges) {
        self.words[RUNNING].store(g.running, Relaxed);
        self.words[BLOCKED].store(g.blocked, Relaxed);
        self.words[OPEN].store(g.open, Relaxed);
        self.words[IDLE].store(g.idle, Relaxed);
    }

    /// Whether this worker accepts connections (`/readyz`).
    pub fn set_accepting(&self, yes: bool) {
        self.words[ACCEPTING].store(u64::from(yes), Relaxed);
    }
}

/// What a finished request adds to its worker's slot (`Exchange::answered`); its
/// times come from the runner (`Slot::timed`).
pub(crate) struct Answered<'a> {
    pub(crate) method: &'a [u8],
    pub(crate) status: u16,
    /// The request's start, the origin of its duration (as of `%(D)s`).
    pub(crate) started: Instant,
    pub(crate) sent: u64,
    pub(crate) received: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_fold_to_other() {
        assert_eq!(method_index(b"GET"), 0);
        assert_eq!(method_index(b"TRACE"), 8);
        assert_eq!(method_index(b"BREW"), METHODS.len());
        for (i, m) in METHODS.iter().enumerate() {
            assert_eq!(method_index(m.as_bytes()), i);
        }
        assert_eq!(status_index(100), 0);
        assert_eq!(status_index(999), 899);
    }

    #[test]
    fn buckets_match_a_search() {
        for w in BOUNDS_NS.windows(2) {
            assert!(w[1] >= 2 * w[0], "bounds must be at least twice apart");
        }
        let mut probes = vec![0, 1, u64::MAX];
        for &b in &BOUNDS_NS {
            probes.extend([b - 1, b, b + 1]);
        }
        probes.extend((0..64).map(|p| 1u64 << p));
        probes.extend((0..10_000u64).map(|i| i * 1_234_567));
        for ns in probes {
            assert_eq!(bucket(ns), BOUNDS_NS.partition_point(|&b| b < ns), "{ns}");
        }
    }

    #[test]
    fn bounds_match() {
        for (s, ns) in BOUNDS.iter().zip(BOUNDS_NS) {
            assert_eq!((s * 1e9).round() as u64, ns);
        }
        assert_eq!(WORDS % 8, 0);
    }
}
