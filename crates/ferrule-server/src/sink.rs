//! Where log lines go, and what happens when writing them fails.
//!
//! A log write that fails (a closed pipe, a full disk, an I/O error) never fails a
//! request or ends a process: the line is dropped and counted, and once writing works
//! again one line says how many were lost, since when and why:
//!
//! `[2026-12-02 17:35:31 +0000] [8061] [WARNING] 12 error log lines lost since 2026-12-02 17:35:20 +0000: No space left on device (os error 28)`
//!
//! Nothing is retried and nothing waits, so a failing sink costs one failed `write(2)`
//! per line. The error log reports its own losses in itself, before the first line
//! that gets through; the access log reports its losses in the error log, so access
//! log parsers only ever see access lines. Losses not reported yet when the server
//! stops are reported then ([`Sink::report_now`]), not lost with the process.
//!
//! A disk that fills up cuts the line being written short (the part that fits in the
//! file's last block is written). That line is not lost: the rest of it is kept
//! ([`Torn`]) and written before anything else once the disk takes it, so the file
//! holds whole lines only (a line another process appends meanwhile can still land
//! in the middle: nothing short of a lock per line prevents that).
//!
//! Destinations (stdout, stderr) and [`Torn`] are in `sink/dest.rs`, log files in
//! `logfile.rs`; the error-log line format in `logline.rs`.

use crate::clock::log_stamp;
use crate::logline;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

mod dest;
#[cfg(test)]
mod tests;

pub use dest::{Destination, Stderr, Stdout, Torn};

/// Where a sink reports the lines it lost.
#[derive(Clone)]
pub enum Report {
    /// In itself, as an error-log line before the first line that gets through.
    Inline,
    /// In the process's error log, after the first line that gets through.
    ErrorLog,
    /// In another sink that takes error-log lines, as `ErrorLog` does.
    Into(Arc<Sink>),
}

/// Lines lost since the last one written.
#[derive(Debug)]
struct Loss {
    lines: u64,
    since: SystemTime,
    reason: String,
    /// A forked child inherits its parent's count; the parent reports those lines.
    pid: u32,
}

impl Loss {
    fn notice(&self, name: &str) -> String {
        let plural = if self.lines == 1 { "" } else { "s" };
        format!(
            "{} {name} line{plural} lost since {}: {}",
            self.lines,
            log_stamp(self.since),
            self.reason
        )
    }
}

/// A log destination that counts what it could not write and says so later.
pub struct Sink {
    name: &'static str,
    dest: Box<dyn Destination>,
    report: Report,
    /// Set while `loss` holds lines: the only thing the usual write looks at.
    failing: AtomicBool,
    loss: Mutex<Option<Loss>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The error log of this process, once `log::init` ran: where [`Report::ErrorLog`]
/// sends its notices.
pub(crate) static ERROR_LOG: OnceLock<Arc<Sink>> = OnceLock::new();

/// Writes a warning straight to the error log (not through `tracing`), saying whether
/// it got there (see [`Sink::warn`]).
pub(crate) fn warn_now(msg: &str) -> bool {
    match ERROR_LOG.get() {
        Some(sink) => sink.warn(msg),
        None => Sink::new("error log", Box::new(Stderr), Report::Inline).warn(msg),
    }
}

impl Sink {
    /// `name` is how notices call it: "error log", "access log".
    pub fn new(name: &'static str, dest: Box<dyn Destination>, report: Report) -> Sink {
        Sink {
            name,
            dest,
            report,
            failing: AtomicBool::new(false),
            loss: Mutex::new(None),
        }
    }

    /// Writes one line (with its newline); false when it was lost (and counted).
    pub fn write_line(&self, line: &[u8]) -> bool {
        if self.failing.load(Ordering::Relaxed) {
            return self.write_after_loss(line);
        }
        match self.dest.write_line(line) {
            Ok(()) => true,
            Err(e) => {
                self.count(lock(&self.loss), 1, &e);
                false
            }
        }
    }

    /// Whether lines are being lost right now.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Reports the lines lost so far now, whether or not this sink works again (the
    /// server is stopping: no later line would carry the notice). The error log's
    /// notice goes in itself if it can; the access log's in the error log.
    pub fn report_now(&self) {
        if let Err(e) = self.dest.finish() {
            // The start of a line is in the file and its end never will be: lost.
            self.count(lock(&self.loss), 1, &e);
        }
        if !self.is_failing() {
            return;
        }
        let mut guard = lock(&self.loss);
        let notice = match guard.as_ref() {
            Some(l) if l.pid == std::process::id() => l.notice(self.name),
            _ => return,
        };
        let delivered = match &self.report {
            Report::Inline => self
                .dest
                .write_line(logline::line("WARNING", &notice).as_bytes())
                .is_ok(),
            Report::Into(errors) => errors.warn(&notice),
            Report::ErrorLog => warn_now(&notice),
        };
        if delivered {
            *guard = None;
            self.failing.store(false, Ordering::Relaxed);
        }
    }

    /// Writes an error-log warning, saying whether it got there (another sink's loss
    /// notice, which that sink keeps until it does).
    pub(crate) fn warn(&self, msg: &str) -> bool {
        self.write_line(logline::line("WARNING", msg).as_bytes())
    }

    fn count(&self, mut loss: MutexGuard<'_, Option<Loss>>, lines: u64, e: &io::Error) {
        match loss.as_mut() {
            Some(l) => l.lines += lines,
            None => {
                *loss = Some(Loss {
                    lines,
                    since: SystemTime::now(),
                    reason: e.to_string(),
                    pid: std::process::id(),
                })
            }
        }
        self.failing.store(true, Ordering::Relaxed);
    }

    /// The slow path, while lines are being lost: one writer at a time tries, and the
    /// first line that gets through carries the notice.
    fn write_after_loss(&self, line: &[u8]) -> bool {
        let mut guard = lock(&self.loss);
        let loss = match guard.take() {
            Some(l) if l.pid == std::process::id() => l,
            _ => {
                self.failing.store(false, Ordering::Relaxed);
                drop(guard);
                return self.write_line(line);
            }
        };
        let notice = loss.notice(self.name);
        *guard = Some(loss);
        match self.report {
            Report::Inline => {
                let text = logline::line("WARNING", &notice);
                if let Err(e) = self.dest.write_line(text.as_bytes()) {
                    self.count(guard, 1, &e);
                    return false;
                }
                *guard = None;
                self.failing.store(false, Ordering::Relaxed);
                match self.dest.write_line(line) {
                    Ok(()) => true,
                    Err(e) => {
                        self.count(guard, 1, &e);
                        false
                    }
                }
            }
            Report::ErrorLog | Report::Into(_) => {
                if let Err(e) = self.dest.write_line(line) {
                    self.count(guard, 1, &e);
                    return false;
                }
                let delivered = match &self.report {
                    Report::Into(errors) => errors.warn(&notice),
                    _ => warn_now(&notice),
                };
                // Kept for later while the error log cannot take the notice.
                if delivered {
                    *guard = None;
                    self.failing.store(false, Ordering::Relaxed);
                }
                true
            }
        }
    }
}
