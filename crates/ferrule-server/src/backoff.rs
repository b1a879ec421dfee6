//! Accepting while the process is out of descriptors (or the kernel out of socket
//! memory).
//!
//! Listeners are level-triggered: a connection that `accept` refuses with `EMFILE`
//! stays in the backlog and reports the listener ready again at once, so retrying
//! would spin on the CPU and the error log. Instead the listener leaves epoll for
//! `PAUSE` (nginx disables accept events for 500 ms), the kernel's backlog holds the
//! new connections meanwhile, and the connections already open are served as usual.
//! The monitor re-arms it, and reports once per `REPORT_EVERY` how many accepts were
//! refused. A run of refusals with few connections of the worker's own points at an
//! app that leaks descriptors: [`Backoff::starved`] tells the worker, which asks to
//! be replaced.

use crate::listener::Listener;
use crate::sys::Poller;
use crate::table::Table;
use crate::tokens::LISTENER;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a listener stays out of epoll after a refused accept.
pub(crate) const PAUSE: Duration = Duration::from_millis(500);
/// How often a run of refusals is reported.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Whether an accept error is a lack of resources that retrying at once cannot fix.
pub(crate) fn is_exhaustion(e: &io::Error) -> bool {
    use nix::libc::{EMFILE, ENFILE, ENOBUFS, ENOMEM};
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}

/// The state of the accept back-off, shared by runners (which refuse) and the monitor
/// (which re-arms and reports).
pub(crate) struct Backoff {
    /// Some refusal is not reported as over yet: the cheap check for runners and the
    /// monitor, which take the lock only then.
    troubled: AtomicBool,
    /// A connection was accepted since the monitor last looked (only set while
    /// troubled): the current run of refusals has ended.
    accepted: AtomicBool,
    state: Mutex<State>,
}

struct State {
    /// Per listener: when it goes back into epoll, while it is out.
    resume_at: Vec<Option<Instant>>,
    /// Accepts refused since the last report, and in the whole episode.
    refused: u64,
    total: u64,
    /// When accepts started failing with `EMFILE` without one succeeding since.
    since: Option<Instant>,
    last_report: Instant,
    /// The server stops: listeners stay out of epoll for good.
    stopped: bool,
    /// What the last refusal lacked, for the report.
    lack: &'static str,
}

/// A run of refused accepts while the worker holds few connections itself.
#[derive(Debug, Clone, Copy)]
pub struct Starved {
    /// How long accepts have failed without one succeeding.
    pub during: Duration,
    pub connections: usize,
    /// The soft `RLIMIT_NOFILE`.
    pub limit: u64,
}

impl Backoff {
    pub(crate) fn new(listeners: usize) -> Backoff {
        Backoff {
            troubled: AtomicBool::new(false),
            accepted: AtomicBool::new(false),
            state: Mutex::new(State {
                resume_at: vec![None; listeners],
                refused: 0,
                total: 0,
                since: None,
                last_report: Instant::now(),
                stopped: false,
                lack: "file descriptors",
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection was accepted: one load unless accepts were failing.
    pub(crate) fn accepted(&self) {
        if self.troubled.load(Ordering::Relaxed) {
            self.accepted.store(true, Ordering::Relaxed);
        }
    }

    /// Listener `idx` refused a connection for lack of resources: it leaves epoll until
    /// the monitor puts it back. The first refusal of an episode is logged at once.
    pub(crate) fn refused(&self, watch: Watch<'_>, idx: usize, e: &io::Error) {
        let mut st = self.state();
        let now = Instant::now();
        if let Some(slot) = st.resume_at.get_mut(idx) {
            if slot.is_none() {
                // Already out when the server stops; the error changes nothing then.
                let _ = watch.poller.delete(watch.listeners[idx].fd());
                *slot = Some(now + PAUSE);
            }
        }
        // Only this process's own limit says the process holds too many; a system-wide
        // shortage (ENFILE, socket memory) is not cured by replacing the worker.
        if e.raw_os_error() == Some(nix::libc::EMFILE) {
            st.since.get_or_insert(now);
        }
        st.total += 1;
        st.lack = match e.raw_os_error() {
            Some(nix::libc::EMFILE | nix::libc::ENFILE) => "file descriptors",
            _ => "memory for sockets",
        };
        if self.troubled.swap(true, Ordering::Relaxed) {
            st.refused += 1;
            return;
        }
        st.last_report = now;
        tracing::error!(
            "cannot accept connections: {e}; the listener pauses for {} ms at a time while \
             this lasts, and the {} open connections are served (file descriptor limit: {})",
            PAUSE.as_millis(),
            watch.table.len(),
            limit_text(),
        );
    }

    /// The monitor's part, on each tick: puts paused listeners back into epoll when
    /// their pause is over, and reports. One load while accepts succeed.
    pub(crate) fn tick(&self, watch: Watch<'_>, now: Instant) {
        if !self.troubled.load(Ordering::Relaxed) {
            return;
        }
        let mut st = self.state();
        if self.accepted.swap(false, Ordering::Relaxed) {
            st.since = None;
        }
        let stopped = st.stopped;
        for (idx, slot) in st.resume_at.iter_mut().enumerate() {
            if slot.is_some_and(|at| at <= now) && !stopped {
                *slot = None;
                let fd = watch.listeners[idx].fd();
                if let Err(e) = watch.poller.add_listener(fd, LISTENER | idx as u64) {
                    tracing::error!("cannot watch a listening socket again: {e}");
                }
            }
        }
        if now.duration_since(st.last_report) < REPORT_EVERY {
            return;
        }
        st.last_report = now;
        if st.refused > 0 {
            let refused = std::mem::take(&mut st.refused);
            tracing::error!(
                "out of {}: {refused} accept attempts refused in the last {} s; \
                 open connections: {}; limit: {}",
                st.lack,
                REPORT_EVERY.as_secs(),
                watch.table.len(),
                limit_text(),
            );
        } else if st.resume_at.iter().all(Option::is_none) {
            tracing::info!(
                "accepting connections again ({} accept attempts were refused)",
                std::mem::take(&mut st.total)
            );
            st.since = None;
            self.troubled.store(false, Ordering::Relaxed);
        }
    }

    /// The server stops: nothing is put back into epoll from now on.
    pub(crate) fn stop(&self) {
        self.state().stopped = true;
    }

    /// Accepts have failed for a while, and the worker holds fewer connections than
    /// half its descriptor limit: something else holds the descriptors (the app).
    pub(crate) fn starved(&self, table: &Table) -> Option<Starved> {
        if !self.troubled.load(Ordering::Relaxed) {
            return None;
        }
        let since = self.state().since?;
        let limit = crate::sys::nofile_limit().map_or(u64::MAX, |(soft, _)| soft);
        let connections = table.len();
        (u64::try_from(connections).unwrap_or(u64::MAX) < limit / 2).then(|| Starved {
            during: since.elapsed(),
            connections,
            limit,
        })
    }
}

/// What the back-off acts on: the listeners, the epoll set that watches them, and
/// the connection table (its size goes in the reports).
#[derive(Clone, Copy)]
pub(crate) struct Watch<'a> {
    pub(crate) poller: &'a Poller,
    pub(crate) listeners: &'a [Listener],
    pub(crate) table: &'a Table,
}

fn limit_text() -> String {
    match crate::sys::nofile_limit() {
        Ok((soft, _)) => soft.to_string(),
        Err(_) => "unknown".into(),
    }
}
