//! Readiness: the shared epoll set, the shutdown eventfd, and poll(2) for one
//! descriptor (a blocked reader or writer, `transport.rs`).

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

/// A shared epoll set. Connections are registered edge-triggered once, the first time
/// they wait, for the rest of their life (no `epoll_ctl` per request); the connection
/// table decides which thread owns a connection. Listeners are one-shot, so one thread
/// accepts at a time.
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

    /// Registers a connection edge-triggered: one event per arrival of new bytes, and
    /// with `write` also one when its full socket has room again.
    pub fn add_edge(&self, fd: BorrowedFd<'_>, token: u64, write: bool) -> io::Result<()> {
        Ok(self.epoll.add(fd, edge_event(token, write))?)
    }

    /// Changes a connection's registration (`add_edge`); epoll reports at once what is
    /// ready already, so nothing that happened before is missed.
    pub fn modify_edge(&self, fd: BorrowedFd<'_>, token: u64, write: bool) -> io::Result<()> {
        Ok(self.epoll.modify(fd, &mut edge_event(token, write))?)
    }

    /// Registers a listening socket level-triggered and exclusive: when several worker
    /// processes share it, a new connection wakes one of them, not all.
    pub fn add_listener(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, token);
        Ok(self.epoll.add(fd, ev)?)
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

fn edge_event(token: u64, write: bool) -> EpollEvent {
    let mut flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLET | EpollFlags::EPOLLRDHUP;
    if write {
        flags |= EpollFlags::EPOLLOUT;
    }
    EpollEvent::new(flags, token)
}

/// Whether an event reports the peer's end of stream, a hang-up or an error.
pub fn ends_stream(e: &Event) -> bool {
    e.events()
        .intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
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
