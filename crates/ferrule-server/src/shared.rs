//! The server's state every thread shares: listeners, epoll, the connection table,
//! the scheduler and the per-runner slots. It holds state and small accessors; what
//! acts on it lives above it (`writing.rs`, the drivers, `runner.rs`, `server.rs`).

use crate::access::AccessLog;
use crate::backoff::{Backoff, Watch};
use crate::claims::Claims;
use crate::config::ServerConfig;
use crate::conn::Conn;
use crate::cork::Corks;
use crate::held::Held;
use crate::listener::{Listener, Local};
use crate::metrics::Observe;
use crate::progress::Progress;
use crate::sched::Sched;
use crate::sys::{Poller, Waker};
use crate::table::Table;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Events taken from epoll per wait: answering ready connections back to back keeps
/// the clients' side busy, which makes each wake-up on their side cheaper.
pub(crate) const BATCH: usize = 64;

pub struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) locals: Vec<Local>,
    pub(crate) listeners: Vec<Listener>,
    pub(crate) poller: Poller,
    pub(crate) waker: Waker,
    pub(crate) table: Table,
    /// Pauses accepting while out of descriptors (`backoff.rs`).
    pub(crate) backoff: Backoff,
    pub(crate) stopping: AtomicBool,
    /// `--timeout` gave up on a request of this worker (`Server::answer_overdue`).
    pub(crate) gave_up: AtomicBool,
    /// Requests answered.
    pub(crate) served: AtomicU64,
    pub(crate) access: Option<AccessLog>,
    /// Metrics, statsd and `--server-timing` (`metrics.rs`).
    pub(crate) observe: Observe,
    /// Threads alive, and the condition the monitor ticks on and stop waits on.
    pub(crate) running: Mutex<usize>,
    pub(crate) all_stopped: Condvar,
    /// The monitor dozes (see `DOZE_AFTER`).
    pub(crate) dozing: AtomicBool,
    pub(crate) sched: Sched,
    /// Per runner: when its request last made progress, for `--timeout` (`progress.rs`).
    pub(crate) progress: Progress,
    /// Per runner: who answers its current request, the app or `--timeout` (`claims.rs`).
    pub(crate) claims: Claims,
    /// Streamed responses held corked, per runner (`cork.rs`).
    pub(crate) corks: Corks,
    /// Complete responses held back to be written in a burst, per runner (`held.rs`).
    pub(crate) held: Held,
    /// Ready events taken from epoll in a batch and not yet handled.
    pub(crate) ready: Mutex<VecDeque<u64>>,
    pub(crate) ready_len: AtomicUsize,
    pub(crate) threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    pub(crate) fn new(
        config: ServerConfig,
        listeners: Vec<Listener>,
        poller: Poller,
        waker: Waker,
        access: Option<AccessLog>,
        observe: Observe,
    ) -> Shared {
        let backoff = Backoff::new(listeners.len());
        Shared {
            locals: listeners.iter().map(Listener::local).collect(),
            listeners,
            poller,
            waker,
            table: Table::new(),
            backoff,
            stopping: AtomicBool::new(false),
            gave_up: AtomicBool::new(false),
            served: AtomicU64::new(0),
            access,
            observe,
            running: Mutex::new(0),
            all_stopped: Condvar::new(),
            dozing: AtomicBool::new(false),
            sched: Sched::new(config.threads),
            progress: Progress::new(config.threads),
            claims: Claims::new(config.threads),
            corks: Corks::new(config.threads),
            held: Held::new(config.threads),
            ready: Mutex::new(VecDeque::with_capacity(BATCH)),
            ready_len: AtomicUsize::new(0),
            threads: Mutex::new(Vec::new()),
            config,
        }
    }

    /// What the accept back-off acts on (`backoff.rs`).
    pub(crate) fn watch(&self) -> Watch<'_> {
        Watch {
            poller: &self.poller,
            listeners: &self.listeners,
            table: &self.table,
        }
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Stopping, and no connection is left to serve.
    pub(crate) fn drained(&self) -> bool {
        self.stopping() && self.table.is_empty()
    }

    fn ready(&self) -> MutexGuard<'_, VecDeque<u64>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn pop_ready(&self) -> Option<u64> {
        if self.ready_len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut q = self.ready();
        let t = q.pop_front();
        self.ready_len.store(q.len(), Ordering::Release);
        t
    }

    pub(crate) fn push_ready(&self, tokens: impl Iterator<Item = u64>) {
        let mut q = self.ready();
        q.extend(tokens);
        self.ready_len.store(q.len(), Ordering::Release);
    }

    pub(crate) fn ready_len(&self) -> usize {
        self.ready_len.load(Ordering::Acquire)
    }

    /// Shelves `conn` until its socket is ready: registered in epoll and the table,
    /// or queued as ready at once when it may hold bytes no event will announce
    /// (`Table::shelve`). `new`: just accepted.
    pub(crate) fn shelve(&self, conn: Box<Conn>, new: bool) {
        // Also while stopping: a connection shelved then is one the drain still serves.
        if let Some(token) = self.table.shelve(&self.poller, conn, new, &self.config) {
            self.push_ready(std::iter::once(token));
        }
    }

    /// Shelves a connection whose handshake flight did not fit in its socket: it waits
    /// for room as well as for bytes (the client answers only once it has the whole
    /// flight), until `deadline`.
    #[cold]
    pub(crate) fn shelve_for_room(&self, conn: Box<Conn>, deadline: crate::clock::Tick) {
        if let Some(token) = self.table.shelve_writing(&self.poller, conn, deadline) {
            self.push_ready(std::iter::once(token));
        }
    }

    pub(crate) fn running(&self) -> MutexGuard<'_, usize> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn threads(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.threads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the monitor if it dozes: the request that just started may block, and
    /// only the monitor adds runners. Costs one load when it is awake.
    pub(crate) fn rouse_monitor(&self) {
        // SeqCst, paired with `doze`: the runner's `start_request` comes before this
        // load, the monitor's store before its `in_flight`, so one of them sees the other.
        if self.dozing.load(Ordering::SeqCst) && self.dozing.swap(false, Ordering::SeqCst) {
            // The monitor holds this lock until it waits, so the notice cannot come early.
            let _running = self.running();
            self.all_stopped.notify_all();
        }
    }

    /// Announces that the monitor dozes; false when a request is in flight after all.
    pub(crate) fn doze(&self) -> bool {
        self.dozing.store(true, Ordering::SeqCst);
        if self.sched.in_flight() || self.ready_len() > 0 {
            self.dozing.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Detaches the threads that ended after idling (`sched::RETIRE_AFTER`): a thread
    /// nobody joins or detaches keeps its stack.
    pub(crate) fn forget_ended_threads(&self) {
        self.threads().retain(|t| !t.is_finished());
    }

    pub(crate) fn thread_exited(&self) {
        *self.running() -= 1;
        self.all_stopped.notify_all();
    }
}
