//! Metrics and per-request timing (`docs/observability.md`).
//!
//! - `slot.rs`: one worker's counters in memory shared with the master;
//! - `registry.rs`: the master's view: slots, retired workers, restarts;
//! - `expose.rs`: the Prometheus text; `endpoint.rs`: `--metrics-bind`, a thread of
//!   the master;
//! - `statsd.rs`: gunicorn's statsd metrics, sent by each worker;
//! - the crate's `timing.rs`: queue and app times, `--server-timing`.
//!
//! A worker records a finished request here ([`Observe::answered`]) right after its
//! access-log line.

mod endpoint;
mod expose;
mod registry;
mod slot;
mod statsd;

pub use crate::timing::ServerTiming;
pub use endpoint::{close_in_child, start as start_endpoint, MetricsBind};
pub use expose::{egress_counters, render, EgressCount};
pub use registry::{Registry, Totals, REASONS};
pub use slot::{Gauges, Slot, BOUNDS, METHODS};
pub use statsd::{Statsd, StatsdSettings, StatsdTarget};

use crate::sched::Stamp;
pub(crate) use slot::Answered;
use slot::Counted;
use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

thread_local! {
    /// The request this thread answered last, counted once its end is known: the
    /// runner's stamp after `serve` returns ([`Observe::ended`]), which it reads anyway.
    /// Its duration and queue wait are then differences of the runner's stamps (no
    /// clock read, no `Instant` arithmetic); a pipelined request followed by another
    /// in the same `serve` reads the clock for its end and counts no wait.
    static PENDING: Cell<Option<Counted>> = const { Cell::new(None) };
}

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

/// A request the server answered itself, before the app.
pub(crate) fn rejected(status: u16) {
    if let Some(slot) = SLOT.get() {
        slot.rejected(status);
    }
}

/// What a worker's server observes about each request.
#[derive(Default)]
pub struct Observe {
    pub slot: Option<Slot>,
    pub statsd: Option<Statsd>,
    pub server_timing: ServerTiming,
    /// The access log shows queue or first-byte times (`%(Q)s`, `%(F)s`).
    pub timed_log: bool,
}

impl Observe {
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

    /// A finished request, answered by the app (`Exchange::answered`): counted at
    /// its end ([`Observe::ended`]).
    pub(crate) fn answered(&self, a: &Answered<'_>) {
        let counted = Counted::of(a);
        if let Some(before) = PENDING.replace(Some(counted)) {
            // Pipelined: the one before ended when this one was answered.
            let took = Instant::now().saturating_duration_since(before.started);
            self.count(&before, took.as_nanos() as u64, 0);
        }
    }

    /// The runner served a connection from `started` to `end`, having taken its
    /// event from epoll at `seen`: the last request answered is counted.
    #[inline]
    pub(crate) fn ended(&self, seen: Stamp, started: Stamp, end: Stamp) {
        if !self.counts() {
            return;
        }
        let Some(last) = PENDING.take() else { return };
        if last.started == started.at {
            self.count(&last, end.nanos_since(started), started.nanos_since(seen));
        } else {
            // The last of several pipelined requests: it started at its parse.
            let took = end.at.saturating_duration_since(last.started);
            self.count(&last, took.as_nanos() as u64, 0);
        }
    }

    /// Counts a request that took `duration` nanoseconds after waiting `queue`.
    fn count(&self, c: &Counted, duration: u64, queue: u64) {
        if let Some(slot) = &self.slot {
            slot.request(c, duration, queue);
        }
        if let Some(statsd) = &self.statsd {
            statsd.request(c.status, Duration::from_nanos(duration));
        }
    }
}
