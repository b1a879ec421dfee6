//! What a worker gives back once a burst is over.
//!
//! Connections allocate their buffers (16 KiB to read into, the response's, the
//! fields') on whichever thread serves them, from glibc's per-thread arenas. When a
//! burst of thousands of connections ends, those blocks are freed, but most of them
//! sit between blocks still in use, where `free` cannot hand the pages back: only
//! the free space at an arena's top is returned. Measured with the hello app and
//! `wrk -c5000 -d3s` bursts: idle RSS 15.8 MB before, then 35, 50, 58, 65, 70, 76 MB
//! after each burst, with no connection left open; `malloc_trim(0)` (which also
//! releases free pages inside arenas) brought it back to 17 MB. So once the worker has
//! been idle for `TRIM_AFTER`, the monitor trims, if connections came, requests were
//! answered or threads ended (`sched::RETIRE_AFTER`: their stacks and interpreter
//! state go back) since the last trim: never on the request path, and at most once per
//! `TRIM_EVERY`.

use crate::shared::Shared;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long without a request in flight before the worker trims.
pub(crate) const TRIM_AFTER: Duration = Duration::from_secs(1);
/// Least time between two trims (a trim takes each arena's lock in turn).
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// The monitor's record of the last trim.
pub(crate) struct IdleTrim {
    last: Option<Instant>,
    served: u64,
    opened: u32,
    threads: usize,
}

impl IdleTrim {
    pub(crate) fn new() -> IdleTrim {
        IdleTrim {
            last: None,
            served: 0,
            opened: 0,
            threads: 0,
        }
    }

    /// Called on each monitor tick with when the worker was last busy.
    pub(crate) fn tick(&mut self, shared: &Shared, last_busy: Instant, now: Instant) {
        if now.saturating_duration_since(last_busy) < TRIM_AFTER
            || self
                .last
                .is_some_and(|t| now.duration_since(t) < TRIM_EVERY)
        {
            return;
        }
        let served = shared.served.load(Ordering::Relaxed);
        let opened = shared.table.opened();
        let threads = shared.sched.live();
        if (served, opened, threads) == (self.served, self.opened, self.threads) {
            return;
        }
        (self.served, self.opened, self.threads) = (served, opened, threads);
        self.last = Some(now);
        shared.forget_ended_threads();
        shared.table.shrink();
        let released = crate::sys::release_free_memory();
        tracing::debug!(
            "idle: returned free memory to the system in {:?} (released: {released})",
            now.elapsed()
        );
    }
}
