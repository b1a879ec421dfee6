//! Metrics and per-request timing (`docs/observability.md`).
//!
//! - `slot.rs`: one worker's counters in memory shared with the master;
//! - `registry.rs`: the master's view: slots, retired workers, restarts;
//! - `expose.rs`: the Prometheus text; `endpoint.rs`: `--metrics-bind`, a thread of
//!   the master;
//! - `egress_table.rs`: every worker's egress counters, in shared memory;
//! - `statsd.rs`: gunicorn's statsd metrics, sent by each worker; `log_counts.rs`:
//!   its `log.LEVEL` counters;
//! - the crate's `timing.rs`: queue and app times, `--server-timing`.
//!
//! A worker records a finished request here ([`Observe::answered`]) right after its
//! access-log line.

mod egress_table;
mod endpoint;
mod expose;
mod log_counts;
mod registry;
mod slot;
mod statsd;

pub use crate::timing::ServerTiming;
pub use egress_table::EgressTable;
pub use endpoint::{close_in_child, start as start_endpoint, MetricsBind};
pub use expose::{egress_counters, render, EgressCount};
pub use log_counts::{
    has_process_statsd, log_line, process_statsd, use_process_statsd, without_log_counts,
    LogCounter,
};
pub use registry::{Registry, Totals, REASONS};
pub use slot::{Gauges, Slot, BOUNDS, METHODS};
pub use statsd::{Statsd, StatsdSettings, StatsdTarget};

use crate::sched::{Sched, Stamp};
use crate::timing::Timing;
pub(crate) use slot::Answered;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// This process's slot, once a worker (or `ferrule.run()` with `--metrics-bind`) has
/// one. Process-wide because a process is one worker: requests the server refuses
/// itself are counted from code that has no server state at hand (`Conn::answer_error`).
static SLOT: OnceLock<Slot> = OnceLock::new();

/// Makes `slot` this process's; false if it already has one.
pub fn use_slot(slot: Slot) -> bool {
    SLOT.set(slot).is_ok()
}

pub fn this_slot() -> Option<Slot> {
    SLOT.get().copied()
}

/// The egress counters this process adds to (`--metrics-bind`), made by the master.
static EGRESS: OnceLock<EgressTable> = OnceLock::new();

/// Makes `table` the one this process's egress attempts are counted in.
pub fn use_egress_table(table: EgressTable) {
    let _ = EGRESS.set(table);
}

/// An egress attempt (the supervisor, after answering its caller): counted under
/// `host:port` when the app resolved a name (a name is what an operator knows, and
/// one name's many addresses stay one series), else `addr:port`.
pub(crate) fn egress_attempt(
    udp: bool,
    deny: bool,
    dest: std::net::SocketAddr,
    host: Option<&str>,
) {
    if let Some(t) = EGRESS.get() {
        let destination = match host {
            Some(h) => format!("{h}:{}", dest.port()),
            None => dest.to_string(),
        };
        t.add(udp, deny, &destination);
    }
}

/// A request the server answered itself, before the app.
pub(crate) fn rejected(status: u16) {
    if let Some(slot) = SLOT.get() {
        slot.rejected(status);
    }
}

/// What a worker's server observes about each request.
///
/// A request is counted in two steps, neither reading the clock: the driver adds its
/// series and bytes when it is answered ([`Observe::answered`]) and notes it for its
/// runner; the runner, after serving the connection, adds the duration and the
/// queue wait from its own stamps ([`Observe::ended`]). Several pipelined requests
/// served in one go share the time equally (and the first one the wait).
#[derive(Default)]
pub struct Observe {
    pub slot: Option<Slot>,
    pub statsd: Option<Statsd>,
    pub server_timing: ServerTiming,
    /// The access log shows queue or first-byte times (`%(Q)s`, `%(F)s`).
    pub timed_log: bool,
    /// Per runner, touched only by its own thread (relaxed loads and stores, no
    /// locked operation): what [`Observe::ended`] turns into times.
    runners: Box<[PerRunner]>,
}

/// A runner's requests since its last [`Observe::ended`]. A cache line each: runners
/// write theirs every request.
#[derive(Default)]
#[repr(align(64))]
struct PerRunner {
    /// Requests answered.
    answered: AtomicU32,
    /// The kernel's receive time (wall ns; 0: none) of the first request admitted.
    arrived: AtomicU64,
}

impl Observe {
    pub fn new(slot: Option<Slot>, statsd: Option<Statsd>, server_timing: ServerTiming) -> Observe {
        Observe {
            slot,
            statsd,
            server_timing,
            ..Observe::default()
        }
    }

    /// Room for `threads` runners (`Server::bind_observed`).
    pub(crate) fn for_runners(&mut self, threads: usize) {
        self.runners = (0..threads.max(1)).map(|_| PerRunner::default()).collect();
    }

    /// Whether reads on TCP connections keep the kernel's receive time: something
    /// shows the queue wait (the metrics' histogram, `--server-timing`, the access
    /// log's `%(Q)s` or `%(F)s`). Otherwise reads stay plain `recv`s.
    #[inline]
    pub(crate) fn stamps(&self) -> bool {
        self.slot.is_some() || self.timed()
    }

    /// A request admitted at `started` by runner `me`, from a connection whose newest
    /// bytes reached the kernel at `rx` (`Conn::rx`) and whose event was taken at
    /// `queued` (`Conn::queued`): takes both for its wait, keeping the receive time for
    /// the histogram ([`Observe::ended`]); its times when requests are timed. A request
    /// whose bytes were read with the one before it (pipelined) has no time of its
    /// own: it waited for that one, not for a thread.
    #[inline]
    pub(crate) fn admit(
        &self,
        me: usize,
        rx: &mut Option<u64>,
        queued: &mut Option<Instant>,
        started: Instant,
        sched: &Sched,
    ) -> Option<Timing> {
        let rx = rx.as_mut().map_or(0, std::mem::take);
        if rx != 0 {
            if let Some(r) = self.runners.get(me) {
                if r.arrived.load(Relaxed) == 0 {
                    r.arrived.store(rx, Relaxed);
                }
            }
        }
        self.timed().then(|| {
            let waited = match rx {
                0 => 0,
                rx => sched.wall_nanos_since(rx, sched.stamp_at(started)),
            };
            Timing {
                queue: queued
                    .take()
                    .map_or(Duration::ZERO, |q| started.saturating_duration_since(q))
                    .max(Duration::from_nanos(waited)),
                app_start: started,
                head_at: None,
            }
        })
    }

    /// Whether requests carry their times (`timing.rs`): `--server-timing` or the
    /// access log reads them. The counters take theirs from the runner's stamps.
    #[inline]
    pub(crate) fn timed(&self) -> bool {
        self.server_timing != ServerTiming::Off || self.timed_log
    }

    /// Whether the response head's time is kept (Server-Timing's `app`, `%(F)s`).
    #[inline]
    pub(crate) fn head_time(&self) -> bool {
        self.server_timing != ServerTiming::Off || self.timed_log
    }

    /// Whether anything counts finished requests.
    #[inline]
    pub(crate) fn counts(&self) -> bool {
        self.slot.is_some() || self.statsd.is_some()
    }

    /// A finished request, answered by the app on runner `me` (`Exchange::answered`).
    /// Inlined into the drivers: a call's saved registers cost as much as the adds.
    #[inline(always)]
    pub(crate) fn answered(&self, me: usize, a: &Answered<'_>) {
        if let Some(slot) = &self.slot {
            slot.answered(a);
            if let Some(r) = self.runners.get(me) {
                // Only runner `me` writes its count: a load and a store, no locked op.
                r.answered
                    .store(r.answered.load(Relaxed).wrapping_add(1), Relaxed);
            }
        }
        if self.statsd.is_some() {
            // By value: `a` itself never leaves the registers.
            self.to_statsd(a.status, a.started);
        }
    }

    #[cold]
    #[inline(never)]
    fn to_statsd(&self, status: u16, started: Instant) {
        if let Some(statsd) = &self.statsd {
            // A datagram a request anyway: its clock read is the small part.
            statsd.request(status, started.elapsed());
        }
    }

    /// Runner `me` served a connection from `started` to `end`, having taken its
    /// event from epoll at `seen`: the requests it answered get their times (the
    /// first one's wait from its bytes' receive time when the kernel gave one).
    #[inline]
    pub(crate) fn ended(&self, me: usize, seen: Stamp, started: Stamp, end: Stamp, sched: &Sched) {
        let Some(slot) = &self.slot else { return };
        let Some(r) = self.runners.get(me) else {
            return;
        };
        // Cleared even when nothing was answered: an admitted request the app never
        // answered must not lend its time to the next one.
        let rx = r.arrived.load(Relaxed);
        if rx != 0 {
            r.arrived.store(0, Relaxed);
        }
        let k = r.answered.load(Relaxed);
        if k == 0 {
            return;
        }
        r.answered.store(0, Relaxed);
        let mut queue = started.nanos_since(seen);
        if rx != 0 {
            queue = queue.max(sched.wall_nanos_since(rx, started));
        }
        let took = end.nanos_since(started);
        // Nearly always one request: no division then.
        let each = match k {
            1 => took,
            k => took / u64::from(k),
        };
        slot.timed(k, each, queue)
    }
}
