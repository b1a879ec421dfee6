//! The lines a process has for syslog and not sent yet: bounded, so a syslog server
//! that is down or slow costs a request one lock and a copy, never a wait. When the
//! queue is full a line is dropped and counted; the sender thread reports the count in
//! the error log (`N syslog lines dropped since …: reason`) at once, then at most
//! every [`REPORT_EVERY`] while lines keep being dropped.

use crate::clock::log_stamp;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::frame::Stream;

/// Lines waiting for the sender, per process: about 1 MB of ordinary lines, several
/// seconds of a busy server's access log while the syslog server restarts.
pub const CAPACITY: usize = 4096;

/// How often a run of dropped lines is reported after its first report.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// One line for syslog, as the process logged it.
pub struct Entry {
    pub stream: Stream,
    pub severity: u8,
    pub time: SystemTime,
    pub msg: Vec<u8>,
}

/// Lines dropped and not reported yet.
struct Drops {
    lines: u64,
    since: SystemTime,
    reason: String,
}

struct Inner {
    entries: VecDeque<Entry>,
    /// The sender holds an entry it has not sent yet.
    sending: bool,
    /// The sender waits for an entry (a push wakes it only then: no syscall per line
    /// while it is busy).
    idle: bool,
    dropped: Option<Drops>,
    /// Why the sender cannot send now (the last connection error), for drop reports.
    problem: Option<String>,
    last_report: Option<Instant>,
    /// A [`Queue::finish`] ran out of time (the process is stopping): lines are no
    /// longer queued.
    gave_up: bool,
}

pub struct Queue {
    /// The process the queue and its sender belong to: a forked child makes its own.
    pub pid: u32,
    capacity: usize,
    inner: Mutex<Inner>,
    ready: Condvar,
    drained: Condvar,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Queue {
    pub fn new(pid: u32, capacity: usize) -> Queue {
        Queue {
            pid,
            capacity,
            inner: Mutex::new(Inner {
                entries: VecDeque::new(),
                sending: false,
                idle: false,
                dropped: None,
                problem: None,
                last_report: None,
                gave_up: false,
            }),
            ready: Condvar::new(),
            drained: Condvar::new(),
        }
    }

    /// Queues a line; false when the queue is full and the line was dropped (counted),
    /// or when a stopping process gave up on syslog (the report of its drops, and any
    /// later line, goes only beside syslog: not counted again).
    pub fn push(&self, entry: Entry) -> bool {
        let mut inner = lock(&self.inner);
        if inner.gave_up {
            return false;
        }
        if inner.entries.len() >= self.capacity {
            let reason = match &inner.problem {
                Some(p) => format!("queue of {} lines full: {p}", self.capacity),
                None => format!(
                    "queue of {} lines full: the syslog server is slow",
                    self.capacity
                ),
            };
            count(&mut inner, 1, reason);
            return false;
        }
        inner.entries.push_back(entry);
        if inner.idle {
            inner.idle = false;
            self.ready.notify_one();
        }
        true
    }

    /// The next line for the sender, waiting for one; reports drops when due.
    pub fn take(&self) -> Entry {
        let mut inner = lock(&self.inner);
        loop {
            inner = self.report_if_due(inner, false);
            if let Some(e) = inner.entries.pop_front() {
                inner.sending = true;
                return e;
            }
            inner.idle = true;
            self.drained.notify_all();
            let wait = match inner.dropped {
                Some(_) => REPORT_EVERY / 10,
                None => REPORT_EVERY,
            };
            inner = self
                .ready
                .wait_timeout(inner, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            inner.idle = false;
        }
    }

    /// The sender is done with the entry it took (sent or dropped).
    pub fn done(&self) {
        let mut inner = lock(&self.inner);
        inner.sending = false;
        inner.problem = None;
        let inner = self.report_if_due(inner, false);
        if inner.entries.is_empty() {
            self.drained.notify_all();
        }
    }

    /// The sender lost the line it took (a datagram not sent).
    pub fn lost(&self, reason: String) {
        count(&mut lock(&self.inner), 1, reason);
    }

    /// The sender cannot send now; waits `pause` (a reconnection back-off) while
    /// lines queue, reporting drops meanwhile.
    pub fn pause(&self, problem: String, pause: Duration) {
        let mut inner = lock(&self.inner);
        inner.problem = Some(problem);
        let until = Instant::now() + pause;
        loop {
            inner = self.report_if_due(inner, false);
            let now = Instant::now();
            if now >= until {
                return;
            }
            inner = self
                .drained
                .wait_timeout(inner, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits up to `within` for every queued line to be sent (the process is
    /// stopping), then reports what was dropped, the lines still queued included
    /// (taken out of the queue). Once a wait ran out, later calls (each log is
    /// finished, then the process) do not wait again.
    pub fn finish(&self, within: Duration) {
        let mut inner = lock(&self.inner);
        let deadline = match inner.gave_up {
            true => Instant::now(),
            false => Instant::now() + within,
        };
        while !inner.entries.is_empty() || (inner.sending && !inner.gave_up) {
            let now = Instant::now();
            if now >= deadline {
                // The line the sender holds is counted the first time only.
                let held = u64::from(inner.sending && !inner.gave_up);
                let left = inner.entries.len() as u64 + held;
                inner.entries.clear();
                inner.gave_up = true;
                let why = inner
                    .problem
                    .clone()
                    .unwrap_or_else(|| "the syslog server is slow".into());
                count(
                    &mut inner,
                    left,
                    format!("still queued when the log was closed: {why}"),
                );
                break;
            }
            inner = self
                .drained
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(self.report_if_due(inner, true));
    }

    /// Reports the dropped lines in the error log when due (the first of a run at
    /// once, then every REPORT_EVERY), without holding the lock while it writes.
    fn report_if_due<'a>(
        &'a self,
        mut inner: MutexGuard<'a, Inner>,
        now_anyway: bool,
    ) -> MutexGuard<'a, Inner> {
        if inner.dropped.is_none() {
            return inner;
        }
        let due = now_anyway
            || inner
                .last_report
                .is_none_or(|at| at.elapsed() >= REPORT_EVERY);
        if !due {
            return inner;
        }
        let Some(d) = inner.dropped.take() else {
            return inner;
        };
        inner.last_report = Some(Instant::now());
        drop(inner);
        crate::sink::warn_now(&notice(&d));
        lock(&self.inner)
    }

    /// Lines queued (tests).
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        lock(&self.inner).entries.len()
    }

    /// Lines dropped and not reported yet (tests).
    #[cfg(test)]
    pub fn unreported(&self) -> u64 {
        lock(&self.inner).dropped.as_ref().map_or(0, |d| d.lines)
    }
}

fn count(inner: &mut Inner, lines: u64, reason: String) {
    match inner.dropped.as_mut() {
        Some(d) => {
            d.lines += lines;
            d.reason = reason;
        }
        None => {
            inner.dropped = Some(Drops {
                lines,
                since: SystemTime::now(),
                reason,
            })
        }
    }
}

fn notice(d: &Drops) -> String {
    let plural = if d.lines == 1 { "" } else { "s" };
    format!(
        "{} syslog line{plural} dropped since {}: {}",
        d.lines,
        log_stamp(d.since),
        d.reason
    )
}
