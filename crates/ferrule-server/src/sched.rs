//! Which threads may serve: one by default, more only while all of them are blocked.
//!
//! A thread that runs Python needs the GIL, so two threads running Python at once
//! only take turns, and every turn costs a hand-off. ferrule therefore keeps one
//! *runner* (a thread allowed to wait for connections and run the app) and adds
//! more only when no runner is idle, requests are waiting, and the busy runners'
//! own CPU clocks stand still: they are blocked (database, HTTP call, sleep), not
//! computing. A runner that finishes a quick request while another runner is idle
//! parks itself, unless runners were all blocked lately, so the count falls back when
//! the blocking stops (a runner whose request was slow stays: a blocking app keeps as
//! many runners as it has requests in flight). Threads are started on demand, up to
//! the configured maximum.
//!
//! Here: the state and what a runner calls per request; the monitor's side (sampling
//! the busy runners' CPU clocks, adding runners) is `sched/monitor.rs`.

use crate::sys::ThreadState;
use crate::timing::WallClock;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

mod monitor;
#[cfg(test)]
mod tests;

/// Runners are kept while all of them were seen blocked this recently: a blocking
/// app would otherwise lose runners between its requests and wait to regain them.
pub(crate) const KEEP_AFTER_BLOCKED: Duration = Duration::from_millis(50);
/// A runner whose request took this long does not park: a hand-off of the GIL is
/// nothing beside such a request, while a runner too few makes the next request of
/// a blocking app wait for the monitor to add one back.
const KEEP_AFTER_SLOW: Duration = Duration::from_millis(1);

/// A thread parked this long (not needed as a runner) ends, and gives back its stack,
/// its interpreter state and its `/proc` file: a blocking app that needed 512 threads
/// for a burst does not keep 20 MB for them afterwards (`docs/ARCHITECTURE.md`,
/// *Memory after a burst*). Its number is reused by the next thread started.
pub(crate) const RETIRE_AFTER: Duration = Duration::from_secs(10);

/// Runners keep their timers precise (1 ns slack) up to this many; beyond it they take
/// the kernel's default slack (50 µs), which lets one interrupt fire several timers.
/// Precise timers make a blocked request resume sooner, but each timer is then an
/// interrupt of its own, which on a VM is an exit to the host. Measured with a sleeping
/// app (10 ms) on one CPU, alternating slices against the same server with each slack:
/// at 50 connections precise timers gave 0.5-0.9% more requests a second; at 100 the two
/// were within 1%; at 200 the default slack gave 3-6% more, with 0.51 timer interrupts
/// a request instead of 0.85 and 10% less CPU a request.
const PRECISE_TIMERS_UP_TO: usize = 96;

/// A reading of the monotonic clock with its offset from the scheduler's epoch. A
/// runner reads the clock once per request: the end of one request in a batch is the
/// start of the next (a clock read costs tens of nanoseconds on a VM).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp {
    pub(crate) at: Instant,
    nanos: u64,
}

impl Stamp {
    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub(crate) fn since(self, earlier: Stamp) -> Duration {
        Duration::from_nanos(self.nanos_since(earlier))
    }

    /// [`Stamp::since`] in nanoseconds.
    pub(crate) fn nanos_since(self, earlier: Stamp) -> u64 {
        self.nanos.saturating_sub(earlier.nanos)
    }
}

/// A thread's CPU clock, its last sample, and its scheduler state.
#[derive(Default)]
struct Clock {
    id: AtomicI32,
    wall: AtomicU64,
    cpu: AtomicU64,
    /// Replaced when a thread takes over the number of one that ended.
    state: Mutex<Option<ThreadState>>,
}

#[derive(Debug, Default)]
struct Counts {
    /// Runners allowed at once.
    allowed: usize,
    /// Threads currently runners.
    runners: usize,
    /// Thread numbers handed out: slots past this one were never used.
    spawned: usize,
    /// Threads alive (runners, parked, or starting).
    live: usize,
    /// Numbers of threads that ended (`RETIRE_AFTER`), reused first.
    free: Vec<usize>,
    stopping: bool,
}

pub(crate) struct Sched {
    counts: Mutex<Counts>,
    parked: Condvar,
    /// Per thread: nanoseconds since `epoch` when its current request began, 0 if none.
    busy: Vec<AtomicU64>,
    /// Per thread: its CPU clock, and the last (wall, CPU) sample of it in nanoseconds.
    clocks: Vec<Clock>,
    /// Where the next sample starts.
    cursor: AtomicUsize,
    /// Runners waiting for a connection (not inside a request).
    idle: AtomicUsize,
    /// `Counts::runners`, readable without the lock.
    runner_count: AtomicUsize,
    /// Nanoseconds since `epoch` when the monitor last saw every runner blocked.
    last_all_blocked: AtomicU64,
    /// Consecutive ticks on which every runner was blocked with work waiting.
    pressure: AtomicUsize,
    max: usize,
    epoch: Instant,
    /// The wall time of `epoch`, for the kernel's receive times (`timing.rs`).
    wall: WallClock,
    /// `RETIRE_AFTER` (shorter in tests).
    retire_after: Duration,
}

impl Sched {
    pub(crate) fn new(max: usize) -> Sched {
        let max = max.max(1);
        let epoch = Instant::now();
        Sched {
            counts: Mutex::new(Counts {
                allowed: 1,
                ..Counts::default()
            }),
            parked: Condvar::new(),
            busy: (0..max).map(|_| AtomicU64::new(0)).collect(),
            clocks: (0..max).map(|_| Clock::default()).collect(),
            cursor: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            runner_count: AtomicUsize::new(0),
            last_all_blocked: AtomicU64::new(0),
            pressure: AtomicUsize::new(0),
            max,
            epoch,
            wall: WallClock::new(epoch),
            retire_after: RETIRE_AFTER,
        }
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the first thread; returns its number.
    pub(crate) fn first(&self) -> usize {
        let mut c = self.counts();
        c.spawned = 1;
        c.live = 1;
        0
    }

    /// Records the CPU clock and state file of thread `me` (called by the thread itself).
    pub(crate) fn register(&self, me: usize, clock: i32, state: Option<ThreadState>) {
        self.clocks[me].id.store(clock, Ordering::Relaxed);
        *self.state_of(me) = state;
    }

    fn state_of(&self, me: usize) -> MutexGuard<'_, Option<ThreadState>> {
        self.clocks[me]
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until thread `me` may be a runner; false when the server stops, or when
    /// the thread has waited `RETIRE_AFTER` in vain and must end (its number is free).
    pub(crate) fn become_runner(&self, me: usize) -> bool {
        let mut c = self.counts();
        while c.runners >= c.allowed && !c.stopping {
            let (guard, wait) = self
                .parked
                .wait_timeout(c, self.retire_after)
                .unwrap_or_else(|p| p.into_inner());
            c = guard;
            if wait.timed_out() && c.runners >= c.allowed && !c.stopping {
                self.retire(&mut c, me);
                return false;
            }
        }
        if c.stopping {
            return false;
        }
        c.runners += 1;
        self.runner_count.store(c.runners, Ordering::Relaxed);
        drop(c);
        self.idle.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Runner `me` has waited `RETIRE_AFTER` for a connection in vain: unless it is the
    /// last runner, it stops being one and its thread ends (true).
    pub(crate) fn retire_idle_runner(&self, me: usize) -> bool {
        let mut c = self.counts();
        if c.runners <= 1 || c.stopping {
            return false;
        }
        c.runners -= 1;
        self.runner_count.store(c.runners, Ordering::Relaxed);
        c.allowed = c.allowed.saturating_sub(1).max(1);
        self.idle.fetch_sub(1, Ordering::SeqCst);
        self.retire(&mut c, me);
        true
    }

    /// Frees thread `me`'s number. Under the lock: no new thread gets the number
    /// before its state is cleared.
    fn retire(&self, c: &mut Counts, me: usize) {
        let clock = &self.clocks[me];
        *self.state_of(me) = None;
        clock.wall.store(0, Ordering::Relaxed);
        clock.cpu.store(0, Ordering::Relaxed);
        c.live -= 1;
        c.free.push(me);
    }

    /// Whether more than one thread is a runner: a hint, read without the lock.
    pub(crate) fn several_runners(&self) -> bool {
        self.runner_count.load(Ordering::Relaxed) > 1
    }

    /// Whether runners should keep their timers precise (see [`PRECISE_TIMERS_UP_TO`]):
    /// a hint, read without the lock.
    pub(crate) fn precise_timers(&self) -> bool {
        self.runner_count.load(Ordering::Relaxed) <= PRECISE_TIMERS_UP_TO
    }

    /// Reads the clock.
    pub(crate) fn stamp(&self) -> Stamp {
        self.stamp_at(Instant::now())
    }

    pub(crate) fn stamp_at(&self, at: Instant) -> Stamp {
        Stamp {
            at,
            nanos: self.nanos(at),
        }
    }

    /// Thread `me` starts a request.
    pub(crate) fn start_request(&self, me: usize, now: Stamp) {
        self.idle.fetch_sub(1, Ordering::SeqCst);
        self.busy[me].store(now.nanos.max(1), Ordering::Relaxed);
    }

    /// Nanoseconds from the wall time `rx` (a kernel's receive time) to `at`.
    #[inline]
    pub(crate) fn wall_nanos_since(&self, rx: u64, at: Stamp) -> u64 {
        self.wall.nanos_since(rx, at.nanos)
    }

    /// Follows the wall clock (the monitor, every tick, while receive times are used).
    pub(crate) fn refresh_wall(&self) {
        self.wall.refresh();
    }

    /// `at` as nanoseconds since `epoch`, the unit of the stamps kept here.
    pub(crate) fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn now(&self) -> u64 {
        self.nanos(Instant::now())
    }

    /// Thread `me` finished a request. Returns true when it should stop being a
    /// runner because another runner is already waiting for work, the request was
    /// quick, the runners have not all been blocked lately, and `may_park` (no
    /// queued work needs it).
    pub(crate) fn end_request(&self, me: usize, may_park: bool, now: Stamp) -> bool {
        let now = now.nanos;
        let started = self.busy[me].swap(0, Ordering::Relaxed);
        let slow = now.saturating_sub(started) >= KEEP_AFTER_SLOW.as_nanos() as u64;
        let last_blocked = self.last_all_blocked.load(Ordering::Relaxed);
        let blocked_lately = last_blocked != 0
            && now.saturating_sub(last_blocked) < KEEP_AFTER_BLOCKED.as_nanos() as u64;
        if may_park && !slow && !blocked_lately && self.idle.load(Ordering::SeqCst) > 0 {
            let mut c = self.counts();
            if c.runners > 1 {
                c.runners -= 1;
                self.runner_count.store(c.runners, Ordering::Relaxed);
                c.allowed = c.allowed.saturating_sub(1).max(1);
                return true;
            }
        }
        self.idle.fetch_add(1, Ordering::SeqCst);
        false
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
