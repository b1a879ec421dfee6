//! What `--timeout` measures: how long a request has been in the app without making
//! progress.
//!
//! `--timeout` is for an app that is stuck. Time a runner spends waiting on its client
//! (a body arriving slowly, a slow reader's full socket) is governed by `--io-timeout`
//! and does not count; a streamed answer that keeps producing blocks is never stuck.
//! So each runner keeps a mark that its own thread moves on every sign of progress (a
//! block of the answer, the end of a wait on the client) and flags while it waits on
//! the client. Moving it costs a load and a store, no clock read; the clock is read by
//! the one thread that asks (the worker's tick, about every 100 ms), which dates a
//! change of mark when it sees it. That is precise to one look, and `--timeout` is
//! counted in seconds.

use crate::sched::Sched;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Set in a mark while its runner waits on the client.
const WAITING: u64 = 1;

pub(crate) struct Progress {
    /// Per runner: moves by at least one at each sign of progress; odd while waiting.
    marks: Vec<AtomicU64>,
    /// Per runner, what the last look saw.
    seen: Mutex<Vec<Seen>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    /// The request it saw (its start in the scheduler's nanoseconds; 0 none).
    request: u64,
    mark: u64,
    /// When the request last made progress, as far as the looks tell.
    since: u64,
}

impl Progress {
    pub(crate) fn new(runners: usize) -> Progress {
        let n = runners.max(1);
        Progress {
            marks: (0..n).map(|_| AtomicU64::new(0)).collect(),
            seen: Mutex::new(vec![Seen::default(); n]),
        }
    }

    /// Runner `me` made progress: its app produced a block, or a wait on its client
    /// ended. Only runner `me` stores its mark: a load and a store, no read-modify-write.
    #[inline]
    pub(crate) fn made(&self, me: usize) {
        if let Some(m) = self.marks.get(me) {
            let v = m.load(Ordering::Relaxed);
            m.store((v | WAITING) + 1, Ordering::Relaxed);
        }
    }

    /// Runner `me` starts waiting on its client (until the next [`Progress::made`]).
    pub(crate) fn waiting(&self, me: usize) {
        if let Some(m) = self.marks.get(me) {
            let v = m.load(Ordering::Relaxed);
            m.store(v | WAITING, Ordering::Relaxed);
        }
    }

    fn seen(&self) -> MutexGuard<'_, Vec<Seen>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long runner `me`'s request has gone without progress at `now`, dating a
    /// change of its mark to this look; `None` outside a request or while it waits on
    /// its client.
    fn look(&self, sched: &Sched, me: usize, now: u64, seen: &mut Seen) -> Option<u64> {
        let request = sched.request_start(me)?;
        let mark = self.marks.get(me)?.load(Ordering::Relaxed);
        if seen.request != request {
            // First look at this request: nothing tells when it last moved, so it
            // counts from its start (the next look, 100 ms on, dates any change).
            *seen = Seen {
                request,
                mark,
                since: request,
            };
        } else if seen.mark != mark {
            seen.mark = mark;
            seen.since = now;
        }
        (mark & WAITING == 0).then(|| now.saturating_sub(seen.since))
    }

    /// The longest any request in flight has gone without progress at `now`.
    pub(crate) fn longest_stall(&self, sched: &Sched, now: Instant) -> Option<Duration> {
        let now = sched.nanos(now);
        let mut seen = self.seen();
        (0..sched.spawned().min(seen.len()))
            .filter_map(|me| self.look(sched, me, now, &mut seen[me]))
            .max()
            .map(Duration::from_nanos)
    }

    /// How long runner `me`'s request has gone without progress at `now`.
    pub(crate) fn stall(&self, sched: &Sched, me: usize, now: Instant) -> Option<Duration> {
        let now = sched.nanos(now);
        let mut seen = self.seen();
        let seen = seen.get_mut(me)?;
        self.look(sched, me, now, seen).map(Duration::from_nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn runner() -> (Sched, Progress, usize, Instant) {
        let s = Sched::new(2);
        let me = s.first();
        assert!(s.become_runner(me));
        (s, Progress::new(2), me, Instant::now())
    }

    #[test]
    fn a_request_counts_from_its_start_until_it_moves() {
        let (s, p, me, t0) = runner();
        assert_eq!(p.longest_stall(&s, t0), None);
        s.start_request(me, s.stamp_at(t0));
        assert_eq!(p.longest_stall(&s, t0 + ms(60)), Some(ms(60)));
        // A block of the answer: the next look dates it, and the count starts again.
        p.made(me);
        assert_eq!(p.longest_stall(&s, t0 + ms(100)), Some(ms(0)));
        assert_eq!(p.longest_stall(&s, t0 + ms(120)), Some(ms(20)));
        assert_eq!(p.stall(&s, me, t0 + ms(150)), Some(ms(50)));
    }

    #[test]
    fn waiting_on_the_client_does_not_count() {
        let (s, p, me, t0) = runner();
        s.start_request(me, s.stamp_at(t0));
        p.waiting(me);
        assert_eq!(p.longest_stall(&s, t0 + ms(10)), None);
        assert_eq!(p.stall(&s, me, t0 + ms(60_000)), None);
        p.made(me);
        assert_eq!(p.stall(&s, me, t0 + ms(60_100)), Some(ms(0)));
        // A wait inside a wait ends twice; the mark still moves, and counts again.
        p.waiting(me);
        p.waiting(me);
        assert_eq!(p.stall(&s, me, t0 + ms(60_200)), None);
        p.made(me);
        p.made(me);
        assert_eq!(p.stall(&s, me, t0 + ms(60_300)), Some(ms(0)));
        assert_eq!(p.stall(&s, me, t0 + ms(60_400)), Some(ms(100)));
    }

    #[test]
    fn a_new_request_is_not_dated_by_the_last_one() {
        let (s, p, me, t0) = runner();
        s.start_request(me, s.stamp_at(t0));
        assert_eq!(p.stall(&s, me, t0 + ms(10)), Some(ms(10)));
        p.made(me);
        assert_eq!(p.stall(&s, me, t0 + ms(15)), Some(ms(0)));
        s.end_request(me, false, s.stamp_at(t0 + ms(20)));
        assert_eq!(p.stall(&s, me, t0 + ms(30)), None);
        s.start_request(me, s.stamp_at(t0 + ms(40)));
        assert_eq!(p.stall(&s, me, t0 + ms(70)), Some(ms(30)));
    }
}
