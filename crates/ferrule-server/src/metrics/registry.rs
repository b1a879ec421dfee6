//! The master's side of the metrics: the shared region (one slot per worker
//! position), the totals of workers that are gone, and what only the master knows
//! (workers, restarts by reason). The exposition thread (`endpoint.rs`) reads it.
//!
//! Exact across workers: a worker adds to its own slot; when the master reaps it, it
//! folds the slot into `retired` and zeroes it before the position is reused, under
//! the same lock the scrape takes, so no request is counted twice or lost.

use super::egress_table::EgressTable;
use super::slot::{Slot, ACCEPTING, COUNTERS, IDLE, OPEN, WORDS};
use crate::sys::shared_words;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

/// Why a worker was replaced (`ferrule_worker_restarts_total{reason}`).
pub const REASONS: [&str; 6] = [
    "max-requests",
    "memory",
    "timeout",
    "crash",
    "reload",
    "descriptors",
];

pub struct Registry {
    region: &'static [AtomicU64],
    slots: usize,
    retired: Mutex<Vec<u64>>,
    restarts: [AtomicU64; REASONS.len()],
    workers: AtomicU64,
    egress: EgressTable,
}

/// What a scrape sees: the counters summed over live slots and retired workers, the
/// gauges over live slots.
pub struct Totals {
    pub(crate) words: Vec<u64>,
    pub(crate) restarts: [u64; REASONS.len()],
    pub(crate) workers: u64,
    /// Every worker's egress counters (`egress_table.rs`).
    pub(crate) egress: Vec<super::expose::EgressCount>,
}

impl Registry {
    /// Maps `slots` slots; call before forking the workers that use them.
    pub fn new(slots: usize) -> io::Result<Registry> {
        Ok(Registry {
            region: shared_words(slots.max(1) * WORDS)?,
            slots: slots.max(1),
            retired: Mutex::new(vec![0; COUNTERS]),
            restarts: Default::default(),
            workers: AtomicU64::new(0),
            egress: EgressTable::new()?,
        })
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Position `i`'s slot, if there is one.
    pub fn slot(&self, i: usize) -> Option<Slot> {
        let words = self.region.get(i * WORDS..(i + 1) * WORDS)?;
        Some(Slot {
            words: words.try_into().ok()?,
        })
    }

    /// The egress counters every worker adds to.
    pub fn egress_table(&self) -> EgressTable {
        self.egress
    }

    fn retired(&self) -> MutexGuard<'_, Vec<u64>> {
        self.retired.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The worker at position `i` is gone: its counts join the retired totals and its
    /// slot is zeroed for the next worker.
    pub fn retire(&self, i: usize) {
        let Some(slot) = self.slot(i) else { return };
        let mut retired = self.retired();
        for (total, w) in retired.iter_mut().zip(&slot.words[..COUNTERS]) {
            *total += w.swap(0, Relaxed);
        }
        for w in &slot.words[COUNTERS..] {
            w.store(0, Relaxed);
        }
    }

    /// Counts a replacement; false for a reason not in [`REASONS`].
    pub fn restart(&self, reason: &str) -> bool {
        match REASONS.iter().position(|r| *r == reason) {
            Some(i) => {
                self.restarts[i].fetch_add(1, Relaxed);
                true
            }
            None => false,
        }
    }

    /// Worker processes alive (`ferrule_workers`).
    pub fn set_workers(&self, n: u64) {
        self.workers.store(n, Relaxed);
    }

    /// At least one worker accepts connections (`/readyz`).
    pub fn ready(&self) -> bool {
        (0..self.slots).any(|i| self.region[i * WORDS + ACCEPTING].load(Relaxed) != 0)
    }

    pub fn totals(&self) -> Totals {
        let retired = self.retired();
        let mut words = retired.clone();
        words.resize(WORDS, 0);
        for i in 0..self.slots {
            let slot = &self.region[i * WORDS..(i + 1) * WORDS];
            for (t, w) in words.iter_mut().zip(slot) {
                *t += w.load(Relaxed);
            }
        }
        drop(retired);
        // Idle connections are counted among the open ones by the worker too; a
        // sample taken between the two stores must not show more idle than open.
        words[IDLE] = words[IDLE].min(words[OPEN]);
        Totals {
            words,
            restarts: std::array::from_fn(|i| self.restarts[i].load(Relaxed)),
            workers: self.workers.load(Relaxed),
            egress: self.egress.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::slot::{Answered, DURATION, REQUESTS, SENT};
    use super::*;

    fn answered(status: u16) -> Answered<'static> {
        Answered {
            method: b"GET",
            status,
            started: std::time::Instant::now(),
            sent: 5,
            received: 40,
        }
    }

    #[test]
    fn retired_counts_stay_once() {
        let r = Registry::new(2).unwrap();
        let (a, b) = (r.slot(0).unwrap(), r.slot(1).unwrap());
        for _ in 0..3 {
            a.answered(&answered(200));
        }
        b.answered(&answered(200));
        a.set_accepting(true);
        assert!(r.ready());
        assert_eq!(r.totals().words[REQUESTS + 100], 4);
        r.retire(0);
        assert!(!r.ready());
        assert_eq!(r.totals().words[REQUESTS + 100], 4);
        assert_eq!(r.totals().words[SENT], 20);
        // Three pipelined requests of 300 µs in all: three of 100 µs.
        a.timed(3, 100_000, 0);
        let t = r.totals();
        assert_eq!(t.words[DURATION], 3);
        assert_eq!(
            t.words[DURATION + super::super::slot::BOUNDS.len() + 1],
            300_000
        );
        a.answered(&answered(200));
        assert_eq!(r.totals().words[REQUESTS + 100], 5);
        assert!(r.slot(2).is_none());
        assert!(r.restart("crash") && !r.restart("boredom"));
        assert_eq!(r.totals().restarts[3], 1);
    }
}
