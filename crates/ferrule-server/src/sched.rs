//! Which threads may serve: one by default, more only while all of them are blocked.
//!
//! A thread that runs Python needs the GIL, so two threads running Python at once
//! only take turns, and every turn costs a hand-off. ferrule therefore keeps one
//! *runner* (a thread allowed to wait for connections and run the app) and adds
//! another only when every runner has been inside a request for a while, requests
//! are waiting, and the process is not busy on the CPU: the runners are blocked
//! (database, HTTP call, sleep), not computing. A runner that finishes a request
//! while another runner is already idle parks itself, so the count falls back when
//! the blocking stops. Threads are started on demand, up to the configured maximum.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Above this share of one CPU over the last tick, runners are computing, not blocked.
pub(crate) const BUSY_CPU_SHARE: f64 = 0.85;
/// Runners are kept while all of them were seen blocked this recently: a blocking
/// app would otherwise lose runners between its requests and wait to regain them.
pub(crate) const KEEP_AFTER_BLOCKED: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
struct Counts {
    /// Runners allowed at once.
    allowed: usize,
    /// Threads currently runners.
    runners: usize,
    /// Threads started.
    spawned: usize,
    stopping: bool,
}

pub(crate) struct Sched {
    counts: Mutex<Counts>,
    parked: Condvar,
    /// Per thread: nanoseconds since `epoch` when its current request began, 0 if none.
    busy: Vec<AtomicU64>,
    /// Runners waiting for a connection (not inside a request).
    idle: AtomicUsize,
    /// Nanoseconds since `epoch` when the monitor last saw every runner blocked.
    last_all_blocked: AtomicU64,
    /// Consecutive ticks on which every runner was blocked with work waiting.
    pressure: AtomicUsize,
    max: usize,
    epoch: Instant,
}

impl Sched {
    pub(crate) fn new(max: usize) -> Sched {
        let max = max.max(1);
        Sched {
            counts: Mutex::new(Counts {
                allowed: 1,
                ..Counts::default()
            }),
            parked: Condvar::new(),
            busy: (0..max).map(|_| AtomicU64::new(0)).collect(),
            idle: AtomicUsize::new(0),
            last_all_blocked: AtomicU64::new(0),
            pressure: AtomicUsize::new(0),
            max,
            epoch: Instant::now(),
        }
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the first thread; returns its number.
    pub(crate) fn first(&self) -> usize {
        let mut c = self.counts();
        c.spawned = 1;
        0
    }

    /// Blocks until thread `me` may be a runner; false when the server stops.
    pub(crate) fn become_runner(&self) -> bool {
        let mut c = self.counts();
        while c.runners >= c.allowed && !c.stopping {
            c = self.parked.wait(c).unwrap_or_else(|p| p.into_inner());
        }
        if c.stopping {
            return false;
        }
        c.runners += 1;
        drop(c);
        self.idle.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Thread `me` starts a request.
    pub(crate) fn start_request(&self, me: usize) {
        self.idle.fetch_sub(1, Ordering::SeqCst);
        let now = self.epoch.elapsed().as_nanos() as u64;
        self.busy[me].store(now.max(1), Ordering::Relaxed);
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Thread `me` finished a request. Returns true when it should stop being a
    /// runner because another runner is already waiting for work and the runners
    /// have not all been blocked lately.
    pub(crate) fn end_request(&self, me: usize) -> bool {
        self.busy[me].store(0, Ordering::Relaxed);
        let blocked_lately = self
            .now()
            .saturating_sub(self.last_all_blocked.load(Ordering::Relaxed))
            < KEEP_AFTER_BLOCKED.as_nanos() as u64
            && self.last_all_blocked.load(Ordering::Relaxed) != 0;
        if !blocked_lately && self.idle.load(Ordering::SeqCst) > 0 {
            let mut c = self.counts();
            if c.runners > 1 {
                c.runners -= 1;
                c.allowed = c.allowed.saturating_sub(1).max(1);
                return true;
            }
        }
        self.idle.fetch_add(1, Ordering::SeqCst);
        false
    }

    /// Called by the monitor each tick with the process's CPU share over the tick.
    /// Adds runners when, on two ticks in a row, no runner was idle, connections were
    /// waiting (`pending`) and the CPU share was low: the runners are blocked, not
    /// computing. Adds an eighth of the current count (at least one), so a heavily
    /// blocking app reaches the concurrency it needs quickly. Returns the numbers of
    /// threads to start (parked threads are woken here).
    pub(crate) fn maybe_grow(
        &self,
        pending: impl FnOnce() -> bool,
        cpu_share: f64,
    ) -> Range<usize> {
        if self.idle.load(Ordering::SeqCst) > 0 || cpu_share > BUSY_CPU_SHARE || !pending() {
            self.pressure.store(0, Ordering::Relaxed);
            return 0..0;
        }
        self.last_all_blocked.store(self.now(), Ordering::Relaxed);
        if self.pressure.fetch_add(1, Ordering::Relaxed) < 1 {
            return 0..0;
        }
        self.pressure.store(0, Ordering::Relaxed);
        let mut c = self.counts();
        if c.stopping || c.runners < c.allowed || c.allowed >= self.max {
            return 0..0;
        }
        let add = (c.allowed / 8).max(1).min(self.max - c.allowed);
        c.allowed += add;
        let parked = c.spawned - c.runners;
        for _ in 0..add.min(parked) {
            self.parked.notify_one();
        }
        let start = c.spawned;
        c.spawned += add.saturating_sub(parked);
        start..c.spawned
    }

    /// Whether any request is running (the monitor ticks fast only then).
    pub(crate) fn any_busy(&self) -> bool {
        let spawned = self.counts().spawned;
        self.busy[..spawned]
            .iter()
            .any(|b| b.load(Ordering::Relaxed) != 0)
    }

    /// Wakes every parked thread so it can see the server stopping.
    pub(crate) fn stop(&self) {
        self.counts().stopping = true;
        self.parked.notify_all();
    }

    /// Runners now allowed.
    #[cfg(test)]
    fn allowed(&self) -> usize {
        self.counts().allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_runner_until_all_are_blocked() {
        let mut s = Sched::new(4);
        // Pretend the server has been up a while, so "1 ns after start" is long ago.
        s.epoch = Instant::now()
            .checked_sub(Duration::from_secs(1))
            .expect("uptime");
        let me = s.first();
        assert!(s.become_runner());
        // An idle runner: nothing to add.
        assert_eq!(s.maybe_grow(|| true, 0.0), 0..0);
        assert_eq!(s.maybe_grow(|| true, 0.0), 0..0);
        s.start_request(me);
        // Computing (high CPU share), or nothing waiting: nothing to add.
        assert_eq!(s.maybe_grow(|| true, 0.95), 0..0);
        assert_eq!(s.maybe_grow(|| true, 0.95), 0..0);
        assert_eq!(s.maybe_grow(|| false, 0.0), 0..0);
        assert_eq!(s.maybe_grow(|| false, 0.0), 0..0);
        // Blocked with work waiting, two ticks in a row: start thread 1.
        assert_eq!(s.maybe_grow(|| true, 0.0), 0..0);
        assert_eq!(s.maybe_grow(|| true, 0.0), 1..2);
        assert_eq!(s.allowed(), 2);
        // While runners were blocked lately, finishing a request does not park.
        assert!(s.become_runner());
        s.start_request(1);
        assert!(!s.end_request(me));
        assert!(!s.end_request(1));
        // Once the blocking is old news, a runner that finds another idle parks.
        s.last_all_blocked.store(1, Ordering::Relaxed);
        s.start_request(1);
        assert!(s.end_request(1));
        assert_eq!(s.allowed(), 1);
    }
}
