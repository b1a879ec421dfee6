//! Coalescing the blocks of a streamed response in the kernel (`TCP_CORK`) without
//! holding any of them for long.
//!
//! A generator's blocks written one `writev` each cost a TCP segment and a wake-up of
//! the client per block; corked, the kernel sends full segments. PEP 3333 allows a
//! server to hold a block only if transmission continues while the app produces the
//! next one, so each runner records the socket it holds corked, and the monitor
//! pushes (uncorks) any held longer than [`PUSH_AFTER`]. The runner then stops
//! corking that response: its app is a slow streamer (server-sent events, say).
//! The first block of a response is never corked, so a one-block answer pays nothing.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longest a corked block waits for the app's next block before it is sent.
pub(crate) const PUSH_AFTER: Duration = Duration::from_millis(1);

/// Where a response is in its corking.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CorkState {
    /// No block written yet.
    #[default]
    Idle,
    /// One block went out as it is; the next one corks the socket.
    FirstSent,
    /// The socket is corked and this runner's slot names it.
    Held,
    /// The monitor pushed the blocks (the app was slow), or the socket cannot cork.
    Off,
}

/// Per-runner record of the socket it holds corked (its `Transport::cork_handle`),
/// which the monitor reads.
pub(crate) struct Corks {
    fds: Box<[AtomicI32]>,
    since: Box<[AtomicU64]>,
    epoch: Instant,
}

impl Corks {
    pub(crate) fn new(runners: usize) -> Corks {
        Corks {
            fds: (0..runners).map(|_| AtomicI32::new(-1)).collect(),
            since: (0..runners).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Runner `me` wrote a block to corked socket `fd` and goes back to the app.
    pub(crate) fn hold(&self, me: usize, fd: RawFd) {
        self.since[me].store(self.now(), Ordering::Relaxed);
        self.fds[me].store(fd, Ordering::Release);
    }

    /// Clears runner `me`'s record; true when it was still held (not pushed by the
    /// monitor), in which case the runner is responsible for uncorking.
    pub(crate) fn take(&self, me: usize) -> bool {
        self.fds[me].swap(-1, Ordering::AcqRel) != -1
    }

    /// The monitor's part: uncorks sockets held longer than `PUSH_AFTER`, looking at
    /// the first `runners` slots (threads started). Returns whether any socket is
    /// still held (the monitor then ticks fast enough).
    pub(crate) fn push_stale(&self, runners: usize) -> bool {
        let now = self.now();
        let mut held = false;
        for (fd, since) in self.fds.iter().zip(self.since.iter()).take(runners) {
            let f = fd.load(Ordering::Acquire);
            if f < 0 {
                continue;
            }
            let age = now.saturating_sub(since.load(Ordering::Relaxed));
            if age > PUSH_AFTER.as_nanos() as u64
                && fd
                    .compare_exchange(f, -1, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                crate::transport::uncork(f);
            } else {
                held = true;
            }
        }
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Above any descriptor limit, so no socket is touched.
    const NOT_OPEN: RawFd = 1 << 30;

    #[test]
    #[allow(clippy::disallowed_methods)] // the test waits out PUSH_AFTER
    fn a_held_cork_is_pushed_once_stale_and_the_runner_learns_it() {
        let corks = Corks::new(2);
        corks.hold(1, NOT_OPEN); // no such descriptor: the push is a failed syscall
        assert!(corks.push_stale(2), "fresh: still held");
        std::thread::sleep(PUSH_AFTER * 3);
        assert!(!corks.push_stale(2), "stale: pushed");
        assert!(!corks.take(1), "the runner sees the monitor pushed it");
        corks.hold(0, NOT_OPEN);
        assert!(corks.take(0), "the runner uncorks it itself");
    }
}
