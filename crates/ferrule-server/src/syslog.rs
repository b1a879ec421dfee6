//! Syslog, gunicorn's `--log-syslog`: the error log's lines, and the access log's
//! unless `--disable-redirect-access-to-syslog`, also go to a syslog server, beside
//! their files or stderr/stdout.
//!
//! A line is copied into a bounded queue ([`queue::CAPACITY`] lines) and sent by one
//! thread per process, so a syslog server that is down or slow never makes a request
//! wait: when the queue is full the line is dropped, counted and reported in the error
//! log. A thread does not survive `fork`: each process (the master, each worker) makes
//! its own queue and sender with its first line ([`Syslog::queue`]).
//!
//! Addresses and facilities in `syslog/addr.rs`, the bytes on the wire in
//! `syslog/frame.rs`, the queue in `syslog/queue.rs`, the sender in `syslog/link.rs`.

use crate::sink::Destination;
use std::cell::RefCell;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

mod addr;
mod frame;
mod link;
mod queue;
#[cfg(test)]
mod tests;

pub use addr::{facility, SyslogAddr, UnixKind, DEFAULT_PORT, FACILITIES};
pub use frame::{frame, rfc3339, split_error_line, Framing, Origin, Stream, SyslogFormat};
pub use queue::CAPACITY;

/// `--log-syslog-to`'s default (the issue's; gunicorn's own on Linux is
/// `udp://localhost:514`), `--log-syslog-facility`'s and `--log-syslog-format`'s.
pub const DEFAULT_ADDR: &str = "unix:///dev/log";
pub const DEFAULT_FACILITY: &str = "user";
pub const DEFAULT_FORMAT: &str = "rfc3164";

/// The syslog settings, checked once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogSettings {
    pub addr: SyslogAddr,
    pub facility: u8,
    pub format: SyslogFormat,
    /// gunicorn's `gunicorn.<syslog_prefix or proc_name>` (`.error`/`.access` follows).
    pub name: String,
    /// Access lines too (not `--disable-redirect-access-to-syslog`).
    pub access: bool,
}

impl SyslogSettings {
    /// `prefix`: `--log-syslog-prefix`, or the process name (`:` become `.`, as gunicorn).
    pub fn parse(
        addr: &str,
        facility_name: &str,
        format: &str,
        prefix: &str,
        access: bool,
    ) -> Result<SyslogSettings, String> {
        Ok(SyslogSettings {
            addr: SyslogAddr::parse(addr)?,
            facility: facility(facility_name)?,
            format: format.parse()?,
            name: format!("gunicorn.{}", prefix.replace(':', ".")),
            access,
        })
    }
}

/// This process's syslog, once the error log installed it.
static INSTALLED: OnceLock<Arc<Syslog>> = OnceLock::new();

/// The syslog the error log sends to, if any: where access lines go too.
pub fn installed() -> Option<Arc<Syslog>> {
    INSTALLED.get().cloned()
}

/// Makes the syslog of this process (and its forks); the first one stays.
pub fn install(settings: &SyslogSettings) -> Arc<Syslog> {
    INSTALLED
        .get_or_init(|| {
            if let Err(e) = crate::sys::around_fork(hold_for_fork, release_after_fork) {
                crate::sink::warn_now(&format!(
                    "syslog: pthread_atfork failed ({e}); a fork while a thread logs may \
                     leave the child without syslog"
                ));
            }
            Arc::new(Syslog::new(settings.clone(), queue::CAPACITY))
        })
        .clone()
}

type Current = Option<Arc<queue::Queue>>;

thread_local! {
    /// The installed syslog's queue lock, held by the forking thread across a fork.
    static HELD_FOR_FORK: RefCell<Option<MutexGuard<'static, Current>>> =
        const { RefCell::new(None) };
}

/// Before a fork: takes the lock of the installed syslog's queue, so that no other
/// thread holds it at the fork (the child would wait for it forever).
extern "C" fn hold_for_fork() {
    if let Some(s) = INSTALLED.get() {
        let guard = s.current.lock().unwrap_or_else(|p| p.into_inner());
        let _ = HELD_FOR_FORK.try_with(|h| *h.borrow_mut() = Some(guard));
    }
}

/// After a fork, in the parent and in the child: lets the lock go.
extern "C" fn release_after_fork() {
    let _ = HELD_FOR_FORK.try_with(|h| h.borrow_mut().take());
}

pub struct Syslog {
    settings: SyslogSettings,
    host: String,
    capacity: usize,
    /// This process's queue; a forked child finds its parent's and makes its own.
    /// The installed one's lock is held across forks ([`hold_for_fork`]).
    current: Mutex<Current>,
}

impl Syslog {
    pub fn new(settings: SyslogSettings, capacity: usize) -> Syslog {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        Syslog {
            settings,
            host,
            capacity,
            current: Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &SyslogSettings {
        &self.settings
    }

    /// This process's queue, made (with its sender thread) on first use in a process.
    fn queue(&self) -> Arc<queue::Queue> {
        let pid = std::process::id();
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = current.as_ref().filter(|q| q.pid == pid) {
            return q.clone();
        }
        // The parent's queue (if any) is left alone: its lock may have been held by a
        // thread that does not exist here (its sender).
        let q = Arc::new(queue::Queue::new(pid, self.capacity));
        let origin = Origin {
            format: self.settings.format,
            facility: self.settings.facility,
            name: self.settings.name.clone(),
            pid,
            host: self.host.clone(),
        };
        let (sender_q, addr) = (q.clone(), self.settings.addr.clone());
        let spawned = std::thread::Builder::new()
            .name("ferrule-syslog".into())
            .spawn(move || link::run(sender_q, addr, origin));
        *current = Some(q.clone());
        drop(current); // the warning below is a line for this syslog too
        if let Err(e) = spawned {
            // No sender: every line is dropped, counted and reported by `finish`.
            crate::sink::warn_now(&format!(
                "syslog: no sender thread ({e}); lines are dropped"
            ));
        }
        q
    }

    /// Queues one line (without its newline); never waits for the server.
    pub fn send(&self, stream: Stream, severity: u8, msg: &[u8]) -> bool {
        self.queue().push(queue::Entry {
            stream,
            severity,
            time: SystemTime::now(),
            msg: msg.to_vec(),
        })
    }

    /// Waits up to `within` for the queued lines to go out, then reports the lines
    /// dropped (the process is stopping).
    pub fn finish(&self, within: Duration) {
        let q = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(q) = q.filter(|q| q.pid == std::process::id()) {
            q.finish(within);
        }
    }
}

/// Sends what this process still has queued for syslog, waiting at most
/// [`FINISH_WITHIN`] (a process about to exit); nothing when syslog is off.
pub fn finish_installed() {
    if let Some(s) = INSTALLED.get() {
        s.finish(FINISH_WITHIN);
    }
}

/// How long a stopping process waits for its queued syslog lines.
pub const FINISH_WITHIN: Duration = Duration::from_secs(1);

/// A log destination that also sends each line to syslog: the error log's (its stderr
/// or file beside) and the access log's (a file or stdout beside, or nothing).
pub struct SyslogDest {
    syslog: Arc<Syslog>,
    stream: Stream,
    beside: Option<Box<dyn Destination>>,
}

impl SyslogDest {
    pub fn new(syslog: Arc<Syslog>, stream: Stream, beside: Option<Box<dyn Destination>>) -> Self {
        SyslogDest {
            syslog,
            stream,
            beside,
        }
    }
}

impl Destination for SyslogDest {
    /// The line beside decides what the sink counts; syslog counts its own drops.
    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        let written = match &self.beside {
            Some(d) => d.write_line(line),
            None => Ok(()),
        };
        if !line.is_empty() {
            let (severity, msg) = match self.stream {
                Stream::Error => split_error_line(line),
                Stream::Access => (frame::INFO, line.strip_suffix(b"\n").unwrap_or(line)),
            };
            self.syslog.send(self.stream, severity, msg);
        }
        written
    }

    fn finish(&self) -> io::Result<()> {
        self.syslog.finish(FINISH_WITHIN);
        match &self.beside {
            Some(d) => d.finish(),
            None => Ok(()),
        }
    }
}
