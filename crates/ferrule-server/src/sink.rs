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

use crate::clock::log_stamp;
use crate::logfile::LogFile;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// Something a log line can be written to, whole or not at all as far as the caller
/// can tell. Future destinations (syslog, a Python handler) implement this.
pub trait Destination: Send + Sync {
    fn write_line(&self, line: &[u8]) -> io::Result<()>;

    /// Writes the end of a line a full disk cut short, if one waits ([`Torn`]); an
    /// error when it still cannot be written (the process is about to stop).
    fn finish(&self) -> io::Result<()> {
        Ok(())
    }
}

/// The process's standard output (the access log's `-`).
pub struct Stdout;

/// The process's standard error (the error log's default).
pub struct Stderr;

/// The end of a line on descriptor 1 or 2 that a failed write cut short.
static STDOUT_TORN: Mutex<Torn> = Mutex::new(Torn::new());
static STDERR_TORN: Mutex<Torn> = Mutex::new(Torn::new());

impl Destination for Stdout {
    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        // The lock keeps lines whole against other Rust writers; the write goes
        // straight to descriptor 1, so a failed line never lingers in a buffer.
        let out = io::stdout().lock();
        lock(&STDOUT_TORN).write_line(line, |b| write_some(out.as_fd(), b))
    }

    fn finish(&self) -> io::Result<()> {
        self.write_line(b"")
    }
}

impl Destination for Stderr {
    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        let err = io::stderr().lock();
        lock(&STDERR_TORN).write_line(line, |b| write_some(err.as_fd(), b))
    }

    fn finish(&self) -> io::Result<()> {
        self.write_line(b"")
    }
}

/// One `write(2)`; a pipe whose reader is gone fails at once with EPIPE (Python, and
/// so every ferrule process, ignores SIGPIPE).
fn write_some(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    nix::unistd::write(fd, buf).map_err(io::Error::from)
}

/// The unwritten end of a line that a failed write cut short (a full disk takes the
/// part that fits in the file's last block), written before the next line.
pub struct Torn(Vec<u8>);

impl Torn {
    pub const fn new() -> Torn {
        Torn(Vec::new())
    }

    /// Writes the end of a torn line, then `line` (empty: only that end), with
    /// `write` (one `write(2)`).
    /// Ok when `line` is whole in the file or its end is kept here; an error when
    /// nothing of it got there (a lost line).
    pub fn write_line(
        &mut self,
        line: &[u8],
        mut write: impl FnMut(&[u8]) -> io::Result<usize>,
    ) -> io::Result<()> {
        while !self.0.is_empty() {
            match write(&self.0) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => drop(self.0.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let mut done = 0;
        while done < line.len() {
            match write(&line[done..]) {
                Ok(0) if done == 0 => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) if n > 0 => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if done == 0 => return Err(e),
                // Part of it is in the file: the rest goes before the next line.
                _ => {
                    self.0.extend_from_slice(&line[done..]);
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

impl Default for Torn {
    fn default() -> Torn {
        Torn::new()
    }
}

impl Destination for Arc<LogFile> {
    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        LogFile::write_line(self, line)
    }

    fn finish(&self) -> io::Result<()> {
        LogFile::write_line(self, b"")
    }
}

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
                .write_line(crate::log::line("WARNING", &notice).as_bytes())
                .is_ok(),
            Report::Into(errors) => errors.warn(&notice),
            Report::ErrorLog => crate::log::warn_now(&notice),
        };
        if delivered {
            *guard = None;
            self.failing.store(false, Ordering::Relaxed);
        }
    }

    /// Writes an error-log warning, saying whether it got there (another sink's loss
    /// notice, which that sink keeps until it does).
    pub(crate) fn warn(&self, msg: &str) -> bool {
        self.write_line(crate::log::line("WARNING", msg).as_bytes())
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
                let text = crate::log::line("WARNING", &notice);
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
                    _ => crate::log::warn_now(&notice),
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

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;

    /// Fails with `errno` while `broken` is set; keeps what it was given otherwise.
    struct Flaky {
        broken: AtomicBool,
        errno: Errno,
        lines: Mutex<Vec<String>>,
    }

    impl Destination for Arc<Flaky> {
        fn write_line(&self, line: &[u8]) -> io::Result<()> {
            if self.broken.load(Ordering::Relaxed) {
                return Err(self.errno.into());
            }
            lock(&self.lines).push(String::from_utf8_lossy(line).into_owned());
            Ok(())
        }
    }

    fn flaky(errno: Errno) -> Arc<Flaky> {
        Arc::new(Flaky {
            broken: AtomicBool::new(false),
            errno,
            lines: Mutex::new(Vec::new()),
        })
    }

    #[test]
    fn lost_lines_are_counted_and_reported_before_the_next_line() {
        let dest = flaky(Errno::ENOSPC);
        let sink = Sink::new("error log", Box::new(dest.clone()), Report::Inline);
        assert!(sink.write_line(b"one\n"));
        dest.broken.store(true, Ordering::Relaxed);
        for _ in 0..3 {
            assert!(!sink.write_line(b"lost\n"));
        }
        assert!(sink.is_failing());
        dest.broken.store(false, Ordering::Relaxed);
        assert!(sink.write_line(b"two\n"));
        assert!(sink.write_line(b"three\n"));
        assert!(!sink.is_failing());
        let lines = lock(&dest.lines).clone();
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(lines[0], "one\n");
        assert!(lines[1].contains("[WARNING] 3 error log lines lost since "));
        assert!(lines[1].ends_with(": No space left on device (os error 28)\n"));
        assert_eq!(&lines[2..], ["two\n", "three\n"]);
    }

    #[test]
    fn one_lost_line_is_singular_and_a_new_loss_starts_a_new_count() {
        let dest = flaky(Errno::EPIPE);
        let sink = Sink::new("error log", Box::new(dest.clone()), Report::Inline);
        dest.broken.store(true, Ordering::Relaxed);
        assert!(!sink.write_line(b"a\n"));
        dest.broken.store(false, Ordering::Relaxed);
        assert!(sink.write_line(b"b\n"));
        dest.broken.store(true, Ordering::Relaxed);
        assert!(!sink.write_line(b"c\n"));
        assert!(!sink.write_line(b"d\n"));
        dest.broken.store(false, Ordering::Relaxed);
        assert!(sink.write_line(b"e\n"));
        let lines = lock(&dest.lines).clone();
        assert!(
            lines[0].contains(" 1 error log line lost since "),
            "{lines:?}"
        );
        assert!(lines[0].ends_with(": Broken pipe (os error 32)\n"));
        assert_eq!(lines[1], "b\n");
        assert!(
            lines[2].contains(" 2 error log lines lost since "),
            "{lines:?}"
        );
        assert_eq!(lines[3], "e\n");
    }

    #[test]
    fn a_loss_inherited_from_a_parent_process_is_not_reported() {
        let dest = flaky(Errno::EIO);
        let sink = Sink::new("error log", Box::new(dest.clone()), Report::Inline);
        *lock(&sink.loss) = Some(Loss {
            lines: 5,
            since: SystemTime::now(),
            reason: "x".into(),
            pid: std::process::id().wrapping_add(1),
        });
        sink.failing.store(true, Ordering::Relaxed);
        assert!(sink.write_line(b"child\n"));
        assert_eq!(*lock(&dest.lines), ["child\n"]);
        assert!(!sink.is_failing());
    }

    #[test]
    fn an_access_log_keeps_its_count_until_the_error_log_takes_the_notice() {
        let disk = flaky(Errno::ENOSPC);
        let errors = Arc::new(Sink::new(
            "error log",
            Box::new(disk.clone()),
            Report::Inline,
        ));
        let access = flaky(Errno::ENOSPC);
        let sink = Sink::new(
            "access log",
            Box::new(access.clone()),
            Report::Into(errors.clone()),
        );
        disk.broken.store(true, Ordering::Relaxed);
        access.broken.store(true, Ordering::Relaxed);
        assert!(!errors.write_line(b"error 1\n"));
        assert!(!sink.write_line(b"GET /1\n"));
        assert!(!sink.write_line(b"GET /2\n"));
        // The access log works again, the error log not yet: the count is kept (and
        // the notice that could not be written is an error-log line lost).
        access.broken.store(false, Ordering::Relaxed);
        assert!(sink.write_line(b"GET /3\n"));
        assert!(sink.is_failing());
        disk.broken.store(false, Ordering::Relaxed);
        assert!(errors.write_line(b"error 2\n"));
        assert!(sink.write_line(b"GET /4\n"));
        assert!(!sink.is_failing());
        // The access log itself only ever holds access lines.
        assert_eq!(*lock(&access.lines), ["GET /3\n", "GET /4\n"]);
        let errs = lock(&disk.lines).clone();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(
            errs[0].contains(" 2 error log lines lost since "),
            "{errs:?}"
        );
        assert_eq!(errs[1], "error 2\n");
        assert!(
            errs[2].contains("[WARNING] 2 access log lines lost since "),
            "{errs:?}"
        );
    }

    #[test]
    fn a_pipe_without_reader_fails_at_once_with_epipe() {
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(r);
        let err = Torn::new()
            .write_line(b"line\n", |b| write_some(w.as_fd(), b))
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(Errno::EPIPE as i32));
    }

    #[test]
    fn a_line_cut_short_is_finished_before_the_next_and_only_untouched_lines_are_lost() {
        // A file with room for 10 more bytes, then none until `room` grows.
        let mut file: Vec<u8> = b"old\n".to_vec();
        let mut room = 10usize;
        let write = |file: &mut Vec<u8>, room: &mut usize, b: &[u8]| -> io::Result<usize> {
            if *room == 0 {
                return Err(Errno::ENOSPC.into());
            }
            let n = b.len().min(*room);
            file.extend_from_slice(&b[..n]);
            *room -= n;
            Ok(n)
        };
        let mut torn = Torn::new();
        // Cut short: not lost, its end is kept.
        assert!(torn
            .write_line(b"first line\n", |b| write(&mut file, &mut room, b))
            .is_ok());
        assert_eq!(file, b"old\nfirst line");
        // Nothing of this one gets there: lost.
        let e = torn
            .write_line(b"second line\n", |b| write(&mut file, &mut room, b))
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(Errno::ENOSPC as i32));
        room = 100;
        assert!(torn
            .write_line(b"third line\n", |b| write(&mut file, &mut room, b))
            .is_ok());
        assert_eq!(file, b"old\nfirst line\nthird line\n");
    }

    #[test]
    fn a_loss_is_reported_at_stop_even_while_the_sink_still_fails() {
        let disk = flaky(Errno::ENOSPC);
        let errors = Arc::new(Sink::new(
            "error log",
            Box::new(disk.clone()),
            Report::Inline,
        ));
        let access = flaky(Errno::ENOSPC);
        let sink = Sink::new(
            "access log",
            Box::new(access.clone()),
            Report::Into(errors.clone()),
        );
        access.broken.store(true, Ordering::Relaxed);
        assert!(!sink.write_line(b"GET /1\n"));
        assert!(!sink.write_line(b"GET /2\n"));
        sink.report_now();
        assert!(!sink.is_failing());
        let errs = lock(&disk.lines).clone();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("[WARNING] 2 access log lines lost since "),
            "{errs:?}"
        );
        // Nothing more to say.
        sink.report_now();
        assert_eq!(lock(&disk.lines).len(), 1);
    }
}
