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

pub(crate) use slot::Answered;
use slot::Counted;
use std::cell::Cell;
use std::sync::OnceLock;
use std::time::Instant;

thread_local! {
    /// The request this thread answered last, counted once its end is known: the
    /// runner's stamp after `serve` returns ([`Observe::ended`]), which it reads anyway,
    /// so counting a request reads no clock. A pipelined request after it in the
    /// same `serve` reads one.
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
    /// Whether requests are timed ([`Timing`]): something reads the times.
    #[inline]
    pub(crate) fn timed(&self) -> bool {
        self.slot.is_some() || self.server_timing != ServerTiming::Off || self.timed_log
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
            self.count(before, Instant::now());
        }
    }

    /// The runner's stamp after the requests of a connection were served: the end of
    /// the last one, which is now counted.
    #[inline]
    pub(crate) fn ended(&self, at: Instant) {
        if self.counts() {
            if let Some(last) = PENDING.take() {
                self.count(last, at);
            }
        }
    }

    fn count(&self, c: Counted, end: Instant) {
        let duration = end.saturating_duration_since(c.started);
        if let Some(slot) = &self.slot {
            slot.request(&c, duration);
        }
        if let Some(statsd) = &self.statsd {
            statsd.request(c.status, duration);
        }
    }
}
