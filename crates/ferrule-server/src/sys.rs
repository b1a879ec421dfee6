//! The only module that talks to the kernel directly: epoll, eventfd, poll and
//! sendfile, through nix's safe wrappers. The one `unsafe` block borrows a file
//! descriptor number that came from Python (`wsgi.file_wrapper`).

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

/// A shared epoll set. Connections are registered one-shot, so an event hands a
/// connection to exactly one thread, which re-arms it when it parks it again.
pub struct Poller {
    epoll: Epoll,
}

/// What a waiting thread was woken for.
pub type Event = EpollEvent;

impl Poller {
    pub fn new() -> io::Result<Poller> {
        Ok(Poller {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
        })
    }

    /// Registers `fd` for one readiness report (EPOLLIN, one-shot).
    pub fn add_oneshot(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let ev = EpollEvent::new(
            EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT | EpollFlags::EPOLLRDHUP,
            token,
        );
        Ok(self.epoll.add(fd, ev)?)
    }

    /// Re-arms a one-shot registration.
    pub fn rearm(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let mut ev = EpollEvent::new(
            EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT | EpollFlags::EPOLLRDHUP,
            token,
        );
        Ok(self.epoll.modify(fd, &mut ev)?)
    }

    /// Registers `fd` level-triggered (the shutdown eventfd wakes every thread).
    pub fn add_level(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        Ok(self
            .epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))?)
    }

    pub fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        Ok(self.epoll.delete(fd)?)
    }

    /// Whether some registered descriptor is ready (nothing is taken from the set).
    pub fn pending(&self) -> bool {
        wait_ready(self.epoll.0.as_fd(), Interest::Read, Duration::ZERO).unwrap_or(false)
    }

    /// Waits for events; an interrupted wait returns no events.
    pub fn wait(&self, events: &mut [Event], timeout: Duration) -> io::Result<usize> {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        match self.epoll.wait(events, EpollTimeout::from(ms)) {
            Ok(n) => Ok(n),
            Err(Errno::EINTR) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}

pub fn empty_event() -> Event {
    EpollEvent::empty()
}

/// A counter that stays readable once written: wakes every waiting thread at shutdown.
pub struct Waker {
    fd: EventFd,
}

impl Waker {
    pub fn new() -> io::Result<Waker> {
        Ok(Waker {
            fd: EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?,
        })
    }

    pub fn wake(&self) -> io::Result<()> {
        self.fd.write(1)?;
        Ok(())
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Which readiness a blocked reader or writer waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    Read,
    Write,
}

/// Waits until `fd` is ready or `timeout` passes; `Ok(false)` on timeout.
pub fn wait_ready(fd: BorrowedFd<'_>, interest: Interest, timeout: Duration) -> io::Result<bool> {
    let flags = match interest {
        Interest::Read => PollFlags::POLLIN,
        Interest::Write => PollFlags::POLLOUT,
    };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        let mut fds = [PollFd::new(fd, flags)];
        match nix::poll::poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// CPU time used by the whole process so far.
pub fn process_cpu_time() -> Duration {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// Sends up to `count` bytes of the file `file` from `offset` on the socket without
/// copying them through user space. Returns bytes sent (0 at end of file).
pub fn sendfile(
    sock: BorrowedFd<'_>,
    file: std::os::fd::RawFd,
    offset: &mut i64,
    count: usize,
) -> io::Result<usize> {
    // SAFETY: `file` is the descriptor of a Python file object that the caller holds a
    // reference to for the whole call, so it stays open; the borrow does not outlive
    // this function and the descriptor is never closed through it.
    let file = unsafe { BorrowedFd::borrow_raw(file) };
    let mut off: nix::libc::off_t = *offset;
    let n = nix::sys::sendfile::sendfile(sock, file, Some(&mut off), count)?;
    *offset = off;
    Ok(n)
}
