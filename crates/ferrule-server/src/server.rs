//! The server's life: binding, the serving threads, the monitor, and shutdown.
//!
//! Serving threads wait on one shared epoll set; the connection a thread is woken
//! for is its own until it shelves it again (the table hands it out once), and that thread
//! reads, parses and runs the app for it (`driver/`): a request never changes
//! threads. `sched.rs` decides how many threads serve at once.

use crate::access::AccessLog;
use crate::backoff::Starved;
use crate::config::ServerConfig;
use crate::conn::error_answer;
use crate::cork::PUSH_AFTER;
use crate::driver::accept_all;
use crate::handler::Handler;
use crate::idle::IdleTrim;
use crate::listener::{bind_all, BindError, Local};
use crate::metrics::{Gauges, Observe};
use crate::runner;
use crate::shared::Shared;
use crate::sys::{thread_cpu_time, Poller, Waker};
use crate::tokens::{LISTENER, WAKE};
use ferrule_http::Version;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// On a graceful stop, a connection with nothing of a request in it is closed once it
/// has been quiet this long (since its last answer, or since it was accepted), and one
/// its client uses sooner gets its next request answered with `Connection: close`.
/// Closing a connection races with a request its client may be sending on it at that
/// moment, which is lost; a connection its client has not reached for in this long is
/// one it is unlikely to pick next (nginx's upstream cache hands out the most recently
/// used first), and the race is then the one every keep-alive timeout has (gunicorn's
/// default keep-alive is 2 s). Capped at half of `--graceful-timeout`.
const DRAIN_QUIET: Duration = Duration::from_secs(2);
/// Monitor tick while runners look blocked: how fast a blocking app gets threads.
const TICK_FAST: Duration = Duration::from_micros(250);
/// Longest monitor tick: while runners compute or wait for clients, the tick doubles
/// up to this, so the monitor rarely preempts a runner on a busy CPU.
const TICK_SLOW: Duration = Duration::from_millis(4);
/// With no request in flight for this long, the monitor dozes: it wakes to sweep, or
/// when a request starts (`Shared::rouse_monitor`), not every `TICK_SLOW`, so an idle
/// worker is not woken 250 times a second.
const DOZE_AFTER: Duration = Duration::from_millis(100);

/// A bound, running server.
pub struct Server {
    shared: Arc<Shared>,
}

impl Server {
    /// Binds every address; nothing is served until [`Server::start`].
    pub fn bind(config: ServerConfig, access: Option<AccessLog>) -> Result<Server, BindError> {
        Server::bind_observed(config, access, Observe::default())
    }

    /// [`Server::bind`] with metrics, statsd or `--server-timing` (`metrics.rs`).
    pub fn bind_observed(
        config: ServerConfig,
        access: Option<AccessLog>,
        mut observe: Observe,
    ) -> Result<Server, BindError> {
        observe.timed_log |= access.as_ref().is_some_and(AccessLog::wants_timing);
        observe.for_runners(config.threads);
        let listeners = bind_all(&config)?;
        for l in &listeners {
            // Set either way: a listener inherited across a reload keeps what it had.
            if let Err(e) = l.stamp_receipts(observe.stamps()) {
                tracing::warn!("queue wait: no kernel receive times ({e}); it counts from epoll");
            }
        }
        let io_err = |cause| BindError {
            bind: config.binds[0].bind.clone(),
            cause,
        };
        let poller = Poller::new().map_err(io_err)?;
        let waker = Waker::new().map_err(io_err)?;
        poller.add_level(waker.fd(), WAKE).map_err(io_err)?;
        for (i, l) in listeners.iter().enumerate() {
            poller
                .add_listener(l.fd(), LISTENER | i as u64)
                .map_err(io_err)?;
        }
        let shared = Shared::new(config, listeners, poller, waker, access, observe);
        Ok(Server {
            shared: Arc::new(shared),
        })
    }

    /// The addresses actually bound (with real ports for port 0).
    pub fn addresses(&self) -> &[Local] {
        &self.shared.locals
    }

    /// Each bound address as "Listening at" shows it (`https://` for a TLS listener).
    pub fn urls(&self) -> Vec<String> {
        let s = &self.shared;
        s.locals
            .iter()
            .zip(&s.listeners)
            .map(|(local, l)| local.url(l.is_tls()))
            .collect()
    }

    /// Starts the first serving thread and the monitor, which starts more on demand.
    pub fn start<H: Handler>(&mut self, handler: Arc<H>) -> io::Result<()> {
        let first = self.shared.sched.first();
        spawn_runner(&self.shared, &handler, first)?;
        let (s, h) = (self.shared.clone(), handler);
        spawn(&self.shared, "ferrule-monitor".into(), move || {
            monitor(&s, &h)
        })
    }

    /// Samples the gauges of this worker's metrics slot, if it has one (the serving
    /// loop calls it every second: reading each busy thread's `/proc` state costs more
    /// than the gauges are worth at a finer grain).
    pub fn sample_metrics(&self) {
        let s = &self.shared;
        let Some(slot) = &s.observe.slot else { return };
        let (running, blocked) = s.sched.app_threads();
        let (open, idle) = s.table.counts();
        slot.set_gauges(Gauges {
            running,
            blocked,
            open,
            idle,
        });
    }

    /// Says in this worker's metrics slot that it accepts connections (`/readyz`),
    /// once it serves; `stop` says it no longer does.
    pub fn mark_accepting(&self) {
        if let Some(slot) = &self.shared.observe.slot {
            slot.set_accepting(!self.shared.stopping());
        }
    }

    /// Requests answered so far (for `--max-requests`).
    pub fn requests_served(&self) -> u64 {
        self.shared.served.load(Ordering::Relaxed)
    }

    /// The longest any request in flight has been in the app without progress (for
    /// `--timeout`): waits on its client do not count, and each block of a streamed
    /// answer starts the count again (`progress.rs`).
    pub fn longest_stall(&self) -> Option<Duration> {
        self.shared
            .progress
            .longest_stall(&self.shared.sched, Instant::now())
    }

    /// Accepts have been refused for lack of descriptors for a while, with few of
    /// them held by connections: the app may leak them (the worker asks to be replaced).
    pub fn fd_starved(&self) -> Option<Starved> {
        self.shared.backoff.starved(&self.shared.table)
    }

    /// Answers `500` (with `Connection: close`) to each request in flight that has been
    /// in the app without progress for longer than `limit`, with nothing of its answer sent, and ends the writing
    /// side of its connection (`--timeout`). The app's thread may still be running it:
    /// what it sends later goes nowhere. Returns how many were answered.
    pub fn answer_overdue(&self, limit: Duration) -> usize {
        let s = &self.shared;
        let response = error_answer(500, Version::Http11, s.config.protocol);
        let answered = (0..s.sched.spawned())
            .filter(|&me| {
                let old = || {
                    s.progress
                        .stall(&s.sched, me, Instant::now())
                        .is_some_and(|stall| stall > limit)
                };
                s.claims.time_out(me, old, &response)
            })
            .count();
        if answered > 0 {
            s.gave_up.store(true, Ordering::SeqCst);
        }
        answered
    }

    /// Stops accepting (connections still queued in a shared listening socket stay
    /// there for the other workers) and drains: requests in flight finish and every
    /// request that arrives on an open connection is answered, the last one received
    /// with `Connection: close`; a connection is closed after such an answer, or once it
    /// has been quiet for `DRAIN_QUIET` with nothing of a request in it. All of it for
    /// up to `graceful`. Returns false when some requests were still running.
    pub fn stop(self, graceful: Duration) -> bool {
        let s = &self.shared;
        s.stopping.store(true, Ordering::SeqCst);
        // `/readyz` stops counting this worker before its listeners go.
        if let Some(slot) = &s.observe.slot {
            slot.set_accepting(false);
        }
        s.backoff.stop();
        for l in &s.listeners {
            let _ = s.poller.delete(l.fd());
        }
        // Listeners wake one worker per connection (EPOLLEXCLUSIVE): a wake-up this worker
        // got but had not taken from epoll is gone with the registration, and its
        // connection would wait in the queue for the next one to wake another worker.
        // Whatever is queued now is accepted here and served by the drain, unless
        // `--timeout` gave up on a request and every runner is inside one: then no
        // thread of this worker waited in epoll (so no wake-up was given to it), no
        // runner starts while stopping, and what it took would wait behind a request
        // that may never end, while the replacement the timeout asks for serves it
        // from the queue. Busy runners that are not stuck finish, and then serve it.
        if s.sched.has_idle_runner() || !s.gave_up.load(Ordering::SeqCst) {
            for idx in 0..s.listeners.len() {
                accept_all(s, idx);
            }
        }
        s.table.begin_drain(DRAIN_QUIET.min(graceful / 2));
        let _ = s.waker.wake();
        s.sched.stop();
        s.all_stopped.notify_all();
        let deadline = Instant::now() + graceful;
        let mut running = s.running();
        while *running > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(running);
                report_log_losses(s);
                return false;
            }
            running = s
                .all_stopped
                .wait_timeout(running, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(running);
        for t in std::mem::take(&mut *s.threads()) {
            let _ = t.join();
        }
        report_log_losses(s);
        true
    }
}

/// Says what the logs could not: suppressed lines and lost lines not reported yet,
/// which no later line of this process would carry.
fn report_log_losses(s: &Shared) {
    crate::log::flush_suppressed(true);
    if let Some(access) = &s.access {
        access.report_losses();
    }
    crate::log::report_losses();
}

/// Starts a thread that counts as running until `body` returns.
fn spawn(
    shared: &Arc<Shared>,
    name: String,
    body: impl FnOnce() + Send + 'static,
) -> io::Result<()> {
    *shared.running() += 1;
    let s = shared.clone();
    match std::thread::Builder::new().name(name).spawn(move || {
        body();
        s.thread_exited();
    }) {
        Ok(t) => {
            shared.forget_ended_threads();
            shared.threads().push(t);
            Ok(())
        }
        Err(e) => {
            shared.thread_exited();
            Err(e)
        }
    }
}

/// Starts thread `id` of the pool, which serves as a runner when `sched` allows it.
fn spawn_runner<H: Handler>(shared: &Arc<Shared>, handler: &Arc<H>, id: usize) -> io::Result<()> {
    let (s, h) = (shared.clone(), handler.clone());
    spawn(shared, format!("ferrule-{id}"), move || {
        h.run_thread(&mut || runner::run(&s, &*h, id))
    })
}

/// The monitor thread: adds a runner when all are blocked (see `sched.rs`), and
/// every `SWEEP_EVERY` closes connections past their deadline.
fn monitor<H: Handler>(shared: &Arc<Shared>, handler: &Arc<H>) {
    let mut last_sweep = Instant::now();
    let (mut last_busy, mut served) = (Instant::now(), 0);
    let mut tick = TICK_SLOW;
    let mut trim = IdleTrim::new();
    while !shared.drained() {
        let guard = shared.running();
        let wait = match last_busy.elapsed() >= DOZE_AFTER && !shared.stopping() && shared.doze() {
            true => SWEEP_EVERY.saturating_sub(last_sweep.elapsed()).max(tick),
            false => tick,
        };
        drop(
            shared
                .all_stopped
                .wait_timeout(guard, wait)
                .unwrap_or_else(|p| p.into_inner()),
        );
        shared.dozing.store(false, Ordering::SeqCst);
        if shared.observe.stamps() {
            shared.sched.refresh_wall();
        }
        // Busy: a request in flight now, or answered since the last tick.
        let now_served = shared.served.load(Ordering::Relaxed);
        if shared.sched.in_flight() || now_served != served {
            (last_busy, served) = (Instant::now(), now_served);
        }
        shared
            .held
            .release_stale(&shared.sched, Instant::now(), |c| shared.shelve(c, false));
        shared.backoff.tick(shared.watch(), Instant::now());
        if shared.stopping() {
            shared.table.sweep(&shared.config, shared.access.as_ref());
            continue;
        }
        let blocked_before = shared.sched.blocked_since_start();
        for id in shared.sched.maybe_grow(
            || match shared.ready_len() {
                0 => usize::from(shared.poller.pending()),
                n => n,
            },
            thread_cpu_time,
        ) {
            if let Err(e) = spawn_runner(shared, handler, id) {
                shared.sched.spawn_failed(id);
                tracing::error!("cannot start a thread: {e}");
            }
        }
        tick = if shared.sched.blocked_since_start() != blocked_before {
            TICK_FAST
        } else {
            (tick * 2).min(TICK_SLOW)
        };
        if shared.corks.push_stale(shared.sched.spawned()) {
            tick = tick.min(PUSH_AFTER);
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = Instant::now();
            shared.table.sweep(&shared.config, shared.access.as_ref());
            crate::log::flush_suppressed(false);
            trim.tick(shared, last_busy, last_sweep);
        }
    }
}
