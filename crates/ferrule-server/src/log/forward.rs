//! Error-log records for Python logging: with a Python logging configuration
//! (`--log-config`, `logconfig_dict`), the lines the Rust side logs (epoll and runner
//! threads, the master's threads) become records of Python's `gunicorn.error` logger.
//!
//! Those threads must never wait for Python, so a record is put on a bounded queue
//! with `try_send` (it never waits for room: a full queue drops the record and counts
//! it) and a Python thread drains the queue with the GIL released while it waits.
//!
//! A forked worker gets a queue of its own ([`start`] again): the parent's drain
//! thread does not exist in the child, and a queue another thread was using at the
//! fork is not touched again. The queues are kept in a few fixed slots, so the one in
//! use is found with one atomic load and no lock.

use super::LogLevel;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Records waiting for the Python thread; beyond it they are dropped and counted
/// (a burst of thousands of lines a second is what the throttles are for).
pub const CAPACITY: usize = 4096;
/// Records one [`next`] returns at most, so the drain thread gives the GIL back often.
const BATCH: usize = 256;
/// Queues a process and the processes forked from it can start: the master, a worker,
/// and a few forks below (one each).
const SLOTS: usize = 8;

/// One error-log record on its way to Python.
#[derive(Debug)]
pub struct Record {
    pub level: LogLevel,
    pub message: String,
}

struct Queue {
    tx: SyncSender<Record>,
    /// Only this process's drain thread takes it.
    rx: Mutex<Receiver<Record>>,
}

static QUEUES: [OnceLock<Queue>; SLOTS] = [const { OnceLock::new() }; SLOTS];
/// The slot of this process's queue plus one; 0: records are written as lines.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);

fn current() -> Option<&'static Queue> {
    match ACTIVE.load(Ordering::Acquire) {
        0 => None,
        n => QUEUES.get(n - 1)?.get(),
    }
}

/// Sends this process's error-log records to a new queue for Python instead of the
/// error log. False when every slot is used (a fork of a fork of ...): lines then stay
/// on the Rust error log.
pub fn start() -> bool {
    for (i, slot) in QUEUES.iter().enumerate() {
        if slot.get().is_some() {
            continue; // this process's earlier queue, or its parent's
        }
        let (tx, rx) = sync_channel(CAPACITY);
        if slot
            .set(Queue {
                tx,
                rx: Mutex::new(rx),
            })
            .is_ok()
        {
            DROPPED.store(0, Ordering::Relaxed);
            ACTIVE.store(i + 1, Ordering::Release);
            return true;
        }
    }
    false
}

/// Error-log records are lines on the Rust error log again.
pub fn stop() {
    ACTIVE.store(0, Ordering::Release);
}

/// Whether records go to Python.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed) != 0
}

/// Queues a record; false when records are not forwarded (the caller writes a line).
/// Never waits: a full queue drops the record and counts it.
pub(crate) fn send(level: LogLevel, message: String) -> bool {
    let Some(queue) = current() else {
        return false;
    };
    match queue.tx.try_send(Record { level, message }) {
        Ok(()) => {}
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
    true
}

/// The next records, waiting up to `wait` for the first (the caller releases the GIL
/// around it); at most [`BATCH`]. Empty when nothing came or records are not forwarded.
pub fn next(wait: Duration) -> Vec<Record> {
    let Some(queue) = current() else {
        return Vec::new();
    };
    let rx = queue.rx.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = Vec::new();
    match rx.recv_timeout(wait) {
        Ok(r) => out.push(r),
        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return out,
    }
    while out.len() < BATCH {
        match rx.try_recv() {
            Ok(r) => out.push(r),
            Err(_) => break,
        }
    }
    out
}

/// The records dropped since the last call (the queue was full).
pub fn take_dropped() -> u64 {
    DROPPED.swap(0, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_queue_up_to_the_capacity_then_are_counted_as_dropped() {
        assert!(!send(LogLevel::Info, "before".into()), "not forwarding yet");
        assert!(start());
        for i in 0..CAPACITY + 5 {
            assert!(send(LogLevel::Warning, format!("line {i}")));
        }
        assert_eq!(take_dropped(), 5);
        assert_eq!(take_dropped(), 0);
        let first = next(Duration::ZERO);
        assert_eq!(first.len(), BATCH);
        assert_eq!(first[0].message, "line 0");
        assert_eq!(first[0].level, LogLevel::Warning);
        let mut total = first.len();
        loop {
            let more = next(Duration::ZERO);
            if more.is_empty() {
                break;
            }
            total += more.len();
        }
        assert_eq!(total, CAPACITY);
        // A fork's queue: a new slot, the old one untouched.
        assert!(start());
        assert!(send(LogLevel::Error, "child".into()));
        assert_eq!(next(Duration::ZERO)[0].message, "child");
        stop();
        assert!(!active());
        assert!(!send(LogLevel::Info, "after".into()));
    }
}
