//! Egress (issue 25): what the app's process reaches outside, and a policy that
//! stops what it must not reach.
//!
//! A seccomp filter (`sys/seccomp.rs`) traps every thread's `connect`, `sendto` with
//! an address, `sendmsg` and `sendmmsg`. The supervisor thread copies each trapped
//! call out of the caller's memory (`perform.rs`), judges the copy (`policy.rs`),
//! and performs the allowed ones itself, with the copy, answering with their result;
//! a denied one is answered `EACCES` and never happens. Calls on blocking sockets are
//! performed by a small pool, non-blocking connects watched to their end
//! (`supervisor.rs`), so the supervisor never blocks. Each attempt becomes one JSON
//! line (`record.rs`), is counted (`counts.rs`), and is told to the request its
//! thread is serving (`attribution.rs`); the names the app resolved come from the
//! Python side (`hosts.rs`).

mod attribution;
mod counts;
mod hosts;
mod perform;
mod policy;
mod record;
mod request_id;
mod rules;
mod supervisor;

pub use attribution::{
    begin, egress_on, set_mount, want_ids, wanted, with_request_id, with_tally, Path, Serving,
};
pub use counts::Key;
pub use policy::{Policy, Verdict};
pub use request_id::{forwarded_id, MadeId, RequestId};
pub use rules::Rule;

use crate::logfile::LogFile;
use crate::sink::{Report, Sink, Stdout};
use crate::sys::seccomp::{install_filter, EGRESS_ARCH};
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// Where the egress log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressLog {
    Stdout,
    File(PathBuf),
}

/// The egress settings of a worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressSettings {
    pub log: Option<EgressLog>,
    pub deny: Vec<String>,
    pub allow: Vec<String>,
}

impl EgressSettings {
    /// Egress is on when a log or any rule is given.
    pub fn is_on(&self) -> bool {
        self.log.is_some() || !self.deny.is_empty() || !self.allow.is_empty()
    }
}

/// Why egress could not be turned on.
#[derive(Debug)]
pub enum EgressError {
    /// A SPEC that cannot be parsed (the message names it).
    Spec(String),
    /// The log file cannot be opened.
    Log(PathBuf, io::Error),
    /// The filter cannot be installed.
    Install(io::Error),
    /// Not x86_64 or aarch64.
    Arch,
    /// Already on in this process.
    AlreadyOn,
}

impl fmt::Display for EgressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EgressError::Spec(e) => write!(f, "{e}"),
            EgressError::Log(p, e) => write!(f, "cannot open the egress log {}: {e}", p.display()),
            EgressError::Install(e) => write!(f, "cannot install the egress filter: {e}"),
            EgressError::Arch => write!(f, "egress needs Linux on x86_64 or aarch64"),
            EgressError::AlreadyOn => write!(f, "egress is already on in this process"),
        }
    }
}

impl std::error::Error for EgressError {}

/// A process's egress state, for the supervisor and its helpers.
pub(crate) struct Egress {
    policy: Policy,
    hosts: hosts::Hosts,
    counts: counts::Counts,
    log: Option<Arc<Sink>>,
    pid: u32,
}

static EGRESS: OnceLock<Arc<Egress>> = OnceLock::new();

/// Checks the SPECs (`--check-config`); the number of rules.
pub fn check(settings: &EgressSettings) -> Result<usize, EgressError> {
    Ok(Policy::parse(&settings.deny, &settings.allow)
        .map_err(EgressError::Spec)?
        .len())
}

/// The start-up warning for allow rules that name hosts while DNS is denied
/// ([`Policy::dns_hint`]); `None` when there is nothing to say or the SPECs are bad
/// (which [`check`] reports).
pub fn dns_hint(settings: &EgressSettings) -> Option<String> {
    Policy::parse(&settings.deny, &settings.allow)
        .ok()?
        .dns_hint()
}

/// Turns egress on in this process: every thread's outbound attempts are judged,
/// recorded and counted from now on. The number of rules.
pub fn start(settings: &EgressSettings) -> Result<usize, EgressError> {
    if EGRESS.get().is_some() {
        return Err(EgressError::AlreadyOn);
    }
    if !EGRESS_ARCH {
        return Err(EgressError::Arch);
    }
    let mut policy = Policy::parse(&settings.deny, &settings.allow).map_err(EgressError::Spec)?;
    // Before the filter: the resolver's sends would wait for a supervisor not yet running.
    policy.resolve();
    let log = match &settings.log {
        None => None,
        Some(EgressLog::Stdout) => Some(Box::new(Stdout) as Box<dyn crate::sink::Destination>),
        Some(EgressLog::File(p)) => {
            Some(Box::new(LogFile::open(p).map_err(|e| EgressError::Log(p.clone(), e))?) as Box<_>)
        }
    };
    let rules = policy.len();
    let eg = Arc::new(Egress {
        policy,
        hosts: hosts::Hosts::default(),
        counts: counts::Counts::default(),
        log: log.map(|d| Arc::new(Sink::new("egress log", d, Report::ErrorLog))),
        pid: std::process::id(),
    });
    let listener: Option<OwnedFd> = match install_filter() {
        Ok(fd) => Some(fd),
        Err(e) if unfiltered_for_bench(&e) => None,
        Err(e) => return Err(EgressError::Install(e)),
    };
    let _ = EGRESS.set(eg.clone());
    attribution::enable_egress();
    if let Some(listener) = listener {
        supervisor::spawn(eg, listener).map_err(EgressError::Install)?;
    }
    Ok(rules)
}

/// The variable that lets a benchmark under valgrind (which does not implement
/// seccomp(2)) count the per-request cost egress adds in user space.
const BENCH_UNFILTERED: &str = "FERRULE_BENCH_EGRESS_UNFILTERED";

/// Whether to go on without the filter: only when the kernel side cannot exist here
/// (`seccomp(2)` is `ENOSYS`: valgrind) *and* [`BENCH_UNFILTERED`] asks for it, so it
/// can never switch off a policy that could have been installed; said loudly.
fn unfiltered_for_bench(e: &io::Error) -> bool {
    let wanted = e.raw_os_error() == Some(nix::libc::ENOSYS)
        && std::env::var_os(BENCH_UNFILTERED).is_some_and(|v| v == "1");
    if wanted {
        tracing::error!(
            "egress: {BENCH_UNFILTERED}=1 and seccomp(2) is not implemented here: NO egress \
             filter, nothing is judged or logged (request ids only, for measuring)"
        );
    }
    wanted
}

/// The app resolved `name` to `addrs` (the Python `getaddrinfo` wrapper).
pub fn note_host(name: &str, addrs: &[IpAddr]) {
    if let Some(eg) = EGRESS.get() {
        eg.hosts.note(name, addrs);
    }
}

/// The attempts counted so far in this process (empty when egress is off).
pub fn counts() -> Vec<(Key, u64)> {
    EGRESS
        .get()
        .map(|eg| eg.counts.snapshot())
        .unwrap_or_default()
}

#[cfg(test)]
#[path = "egress/filter_tests.rs"]
mod filter_tests;
