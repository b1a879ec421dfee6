//! The monitor's side of the scheduler: whether requests are in flight and for how
//! long, and when to add runners (the busy ones are blocked, not computing).

use super::Sched;
use crate::sys::ThreadState;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A busy runner whose CPU clock advanced faster than this share of wall time since
/// it was last sampled is computing, not blocked.
const COMPUTING_SHARE: f64 = 0.3;
/// Busy runners sampled per tick (all of them when there are this few).
const SAMPLE: usize = 8;

impl Sched {
    /// Whether some runner is inside a request. Reads `idle` with SeqCst, the order
    /// of `start_request`'s decrement (see `Shared::rouse_monitor`).
    pub(crate) fn in_flight(&self) -> bool {
        let runners = self.counts().runners;
        self.idle.load(Ordering::SeqCst) < runners
    }

    /// Threads inside a request: (runnable, waiting), for the metrics' gauges. A
    /// thread whose `/proc` state cannot be read counts as runnable.
    pub(crate) fn app_threads(&self) -> (u64, u64) {
        let (mut running, mut blocked) = (0, 0);
        for i in 0..self.spawned() {
            if self.busy[i].load(Ordering::Relaxed) == 0 {
                continue;
            }
            match self.state_of(i).as_ref().is_none_or(ThreadState::runnable) {
                true => running += 1,
                false => blocked += 1,
            }
        }
        (running, blocked)
    }

    /// Whether some runner waits for work (in epoll, not inside a request): a
    /// connection accepted now has a thread to serve it.
    pub(crate) fn has_idle_runner(&self) -> bool {
        self.idle.load(Ordering::SeqCst) > 0
    }

    /// When thread `me`'s current request began (nanoseconds since `epoch`), if it is in one.
    pub(crate) fn request_start(&self, me: usize) -> Option<u64> {
        match self.busy.get(me)?.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// How long thread `me`'s current request has run at `now`, if it is in one.
    pub(crate) fn request_age(&self, me: usize, now: Instant) -> Option<Duration> {
        match self.busy[me].load(Ordering::Relaxed) {
            0 => None,
            t => Some(Duration::from_nanos(self.nanos(now).saturating_sub(t))),
        }
    }

    /// Called by the monitor each tick. Adds runners when, on two ticks in a row, no
    /// runner was idle, connections were waiting (`pending` counts at least how many),
    /// and no sampled busy runner was computing (`cpu_of` reads a thread CPU clock).
    /// Adds one runner per waiting connection, at most doubling the count (and at
    /// least an eighth of it), so a blocking app that 50 clients hit at once reaches
    /// 50 runners within 10-20 ms (each new runner is sampled once before the next
    /// step). Returns the numbers of threads to start (parked ones are woken), those of
    /// threads that ended first.
    pub(crate) fn maybe_grow(
        &self,
        pending: impl FnOnce() -> usize,
        cpu_of: impl Fn(i32) -> Option<Duration>,
    ) -> Vec<usize> {
        // An idle runner takes the next connection itself: nothing counts as waiting.
        let waiting = match self.idle.load(Ordering::SeqCst) {
            0 => pending(),
            _ => 0,
        };
        if waiting == 0 || self.computing(&cpu_of) {
            self.pressure.store(0, Ordering::Relaxed);
            return Vec::new();
        }
        self.last_all_blocked.store(self.now(), Ordering::Relaxed);
        if self.pressure.fetch_add(1, Ordering::Relaxed) < 1 {
            return Vec::new();
        }
        self.pressure.store(0, Ordering::Relaxed);
        let mut c = self.counts();
        if c.stopping || c.runners < c.allowed || c.allowed >= self.max {
            return Vec::new();
        }
        let add = waiting
            .min(c.allowed)
            .max(c.allowed / 8)
            .max(1)
            .min(self.max - c.allowed);
        c.allowed += add;
        let parked = c.live - c.runners;
        for _ in 0..add.min(parked) {
            self.parked.notify_one();
        }
        let new = add.saturating_sub(parked);
        c.live += new;
        (0..new)
            .map(|_| match c.free.pop() {
                Some(id) => id,
                None => {
                    c.spawned += 1;
                    c.spawned - 1
                }
            })
            .collect()
    }

    /// Thread `me`, returned by `maybe_grow`, could not be started.
    pub(crate) fn spawn_failed(&self, me: usize) {
        let mut c = self.counts();
        c.live -= 1;
        c.free.push(me);
    }

    /// Threads alive (runners, parked, or starting).
    pub(crate) fn live(&self) -> usize {
        self.counts().live
    }

    /// Thread numbers handed out so far: slots past this one are unused.
    pub(crate) fn spawned(&self) -> usize {
        self.counts().spawned
    }

    /// Whether a sampled busy runner is computing: it used the CPU for more than
    /// `COMPUTING_SHARE` of the time since its last sample, or it is runnable (its
    /// clock stood still only because it waited for a CPU). A runner sampled for the
    /// first time counts as computing, so a decision rests on a measured interval.
    fn computing(&self, cpu_of: &impl Fn(i32) -> Option<Duration>) -> bool {
        let spawned = self.spawned();
        let now = self.now();
        let start = self.cursor.fetch_add(SAMPLE, Ordering::Relaxed);
        let mut computing = false;
        for k in 0..spawned.min(SAMPLE) {
            let i = (start + k) % spawned;
            if self.busy[i].load(Ordering::Relaxed) == 0 {
                continue;
            }
            let clock = &self.clocks[i];
            let Some(cpu) = cpu_of(clock.id.load(Ordering::Relaxed)) else {
                continue;
            };
            let cpu = cpu.as_nanos() as u64;
            let (wall0, cpu0) = (
                clock.wall.swap(now, Ordering::Relaxed),
                clock.cpu.swap(cpu, Ordering::Relaxed),
            );
            let elapsed = now.saturating_sub(wall0);
            if wall0 == 0
                || elapsed == 0
                || cpu.saturating_sub(cpu0) as f64 > COMPUTING_SHARE * elapsed as f64
                || self.state_of(i).as_ref().is_some_and(ThreadState::runnable)
            {
                computing = true;
            }
        }
        computing
    }

    /// When the monitor last saw every runner blocked (changes tell it to tick fast).
    pub(crate) fn blocked_since_start(&self) -> u64 {
        self.last_all_blocked.load(Ordering::Relaxed)
    }
}
