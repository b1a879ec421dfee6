//! Destinations a sink writes to: the process's stdout and stderr here, log files in
//! `logfile.rs`; and the end of a line a full disk cut short ([`Torn`]), which every
//! destination that writes to a file keeps.

use super::lock;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Mutex;

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

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;

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
}
