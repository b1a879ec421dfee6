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
