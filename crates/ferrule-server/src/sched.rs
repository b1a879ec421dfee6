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

use crate::sys::ThreadState;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A busy runner whose CPU clock advanced faster than this share of wall time since
/// it was last sampled is computing, not blocked.
const COMPUTING_SHARE: f64 = 0.3;
/// Busy runners sampled per tick (all of them when there are this few).
const SAMPLE: usize = 8;
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
        Duration::from_nanos(self.nanos.saturating_sub(earlier.nanos))
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
    /// `RETIRE_AFTER` (shorter in tests).
    retire_after: Duration,
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
            clocks: (0..max).map(|_| Clock::default()).collect(),
            cursor: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            runner_count: AtomicUsize::new(0),
            last_all_blocked: AtomicU64::new(0),
            pressure: AtomicUsize::new(0),
            max,
            epoch: Instant::now(),
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

    /// Whether some runner is inside a request. Reads `idle` with SeqCst, the order
    /// of `start_request`'s decrement (see `Shared::rouse_monitor`).
    pub(crate) fn in_flight(&self) -> bool {
        let runners = self.counts().runners;
        self.idle.load(Ordering::SeqCst) < runners
    }

    /// `at` as nanoseconds since `epoch`, the unit of the stamps kept here.
    pub(crate) fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn now(&self) -> u64 {
        self.nanos(Instant::now())
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
    use std::ops::Range;

    /// CPU clocks for the test: clock id = thread number; `cpu` holds their times.
    fn clocks(cpu: &[AtomicU64]) -> impl Fn(i32) -> Option<Duration> + '_ {
        move |id| {
            Some(Duration::from_nanos(
                cpu[id as usize].load(Ordering::Relaxed),
            ))
        }
    }

    /// A scheduler for `n` threads, each registered with clock id = its number, whose
    /// epoch lies a second back (so "1 ns after start" is long ago), and their CPU times.
    fn up_a_second(n: usize) -> (Sched, Vec<AtomicU64>) {
        let mut s = Sched::new(n);
        s.epoch = Instant::now()
            .checked_sub(Duration::from_secs(1))
            .expect("uptime");
        for i in 0..n {
            s.register(i, i as i32, None);
        }
        (s, (0..n).map(|_| AtomicU64::new(0)).collect())
    }

    #[test]
    fn one_runner_until_all_are_blocked() {
        let (s, cpu) = up_a_second(4);
        let me = s.first();
        assert!(s.become_runner(0));
        assert!(!s.several_runners());
        // An idle runner: nothing to add.
        assert_eq!(s.maybe_grow(|| 1, clocks(&cpu)), ids(0..0));
        s.start_request(me, s.stamp());
        // Nothing waiting: nothing to add.
        assert_eq!(s.maybe_grow(|| 0, clocks(&cpu)), ids(0..0));
        // Computing: its CPU clock runs with the wall clock.
        for _ in 0..3 {
            cpu[0].fetch_add(10_000_000_000, Ordering::Relaxed);
            assert_eq!(s.maybe_grow(|| 1, clocks(&cpu)), ids(0..0));
        }
        // Blocked (the clock stands still) with work waiting, two ticks in a row: start thread 1.
        assert_eq!(s.maybe_grow(|| 1, clocks(&cpu)), ids(0..0));
        assert_eq!(s.maybe_grow(|| 1, clocks(&cpu)), ids(1..2));
        assert_eq!(s.allowed(), 2);
        // While runners were blocked lately, finishing a request does not park.
        assert!(s.become_runner(0));
        assert!(s.several_runners());
        s.start_request(1, s.stamp());
        assert!(!s.end_request(me, true, s.stamp()));
        assert!(!s.end_request(1, true, s.stamp()));
        // Once the blocking is old news, a runner that finds another idle parks.
        s.last_all_blocked.store(1, Ordering::Relaxed);
        s.start_request(1, s.stamp());
        assert!(s.end_request(1, true, s.stamp()));
        assert_eq!(s.allowed(), 1);
        assert!(!s.several_runners());
    }

    #[test]
    fn timers_are_precise_up_to_96_runners() {
        let (s, _) = up_a_second(PRECISE_TIMERS_UP_TO + 1);
        s.counts().allowed = PRECISE_TIMERS_UP_TO + 1;
        for _ in 0..PRECISE_TIMERS_UP_TO {
            assert!(s.become_runner(0));
            assert!(s.precise_timers());
        }
        assert!(s.become_runner(0));
        assert!(!s.precise_timers(), "one runner past the limit");
    }

    /// Ticks `s` with every busy runner blocked and `waiting` connections waiting
    /// until it starts threads (a few ticks: each new runner's first sample, `SAMPLE`
    /// runners a tick, then two ticks in a row of pressure); returns them.
    fn grow(s: &Sched, cpu: &[AtomicU64], waiting: usize) -> Vec<usize> {
        (0..8)
            .map(|_| s.maybe_grow(|| waiting, clocks(cpu)))
            .find(|r| !r.is_empty())
            .unwrap_or_default()
    }

    fn ids(r: Range<usize>) -> Vec<usize> {
        r.collect()
    }

    #[test]
    fn grows_by_the_waiting_connections_at_most_doubling() {
        let (s, cpu) = up_a_second(64);
        let me = s.first();
        assert!(s.become_runner(0));
        s.start_request(me, s.stamp());
        // 40 connections wait: 1 -> 2 -> 4 -> 8 -> 16 -> 32 runners, then the 8 left.
        let mut runners = 1;
        for (want, waiting) in [(2, 40), (4, 39), (8, 37), (16, 33), (32, 25), (40, 8)] {
            let started = grow(&s, &cpu, waiting);
            assert_eq!(started, ids(runners..want), "{waiting} waiting");
            for id in started {
                assert!(s.become_runner(0));
                s.start_request(id, s.stamp());
                runners += 1;
            }
            assert_eq!(s.allowed(), want);
        }
        // One connection waits: still an eighth more (5 of 40), the least a step adds.
        assert_eq!(grow(&s, &cpu, 1), ids(40..45));
    }

    #[test]
    fn a_runner_whose_request_was_slow_stays() {
        let (s, cpu) = up_a_second(4);
        let me = s.first();
        assert!(s.become_runner(0));
        let began = Instant::now();
        s.start_request(me, s.stamp_at(began));
        assert_eq!(grow(&s, &cpu, 1), ids(1..2));
        assert!(s.become_runner(0));
        // Runner 1 idles; the blocking is old news; runner 0's request took 5 ms.
        s.last_all_blocked.store(1, Ordering::Relaxed);
        let end = s.stamp_at(began + Duration::from_millis(5));
        assert!(!s.end_request(me, true, end));
        // A quick request with a runner idle: step back.
        s.start_request(me, s.stamp_at(began));
        let end = s.stamp_at(began + Duration::from_micros(50));
        assert!(s.end_request(me, true, end));
    }

    #[test]
    fn a_thread_parked_too_long_ends_and_its_number_is_reused() {
        let (mut s, cpu) = up_a_second(4);
        s.retire_after = Duration::from_millis(50);
        let me = s.first();
        assert!(s.become_runner(me));
        s.start_request(me, s.stamp());
        assert_eq!(grow(&s, &cpu, 1), ids(1..2));
        let s = std::sync::Arc::new(s);
        assert!(s.become_runner(1));
        // Thread 1 finishes quickly once the blocking is old news: it parks, then ends.
        s.last_all_blocked.store(1, Ordering::Relaxed);
        assert!(!s.end_request(me, false, s.stamp()));
        s.start_request(1, s.stamp());
        assert!(s.end_request(1, true, s.stamp()));
        let parked = {
            let s = s.clone();
            std::thread::spawn(move || {
                s.register(1, 1, ThreadState::open_current().ok());
                s.become_runner(1)
            })
        };
        assert!(!parked.join().unwrap(), "a parked thread did not end");
        assert!(s.state_of(1).is_none(), "its /proc file stayed open");
        assert_eq!(s.counts().live, 1);
        // The next thread started takes its number, not a new one.
        s.start_request(me, s.stamp());
        assert_eq!(grow(&s, &cpu, 1), ids(1..2));
        assert_eq!((s.spawned(), s.counts().live), (2, 2));
    }
}
