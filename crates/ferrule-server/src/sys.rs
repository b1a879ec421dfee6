//! The only module that talks to the kernel directly: epoll, eventfd, poll, recv,
//! send, sendfile and socket options, mostly through nix's safe wrappers. `unsafe` is used
//! for: reading into a buffer's spare capacity (zero-filling 16 KiB per read cost more
//! than the rest of a request), borrowing a descriptor number from Python's
//! file_wrapper, taking ownership of an inherited listening socket (`fd://N`), and
//! the TCP options nix has no wrapper for (`TCP_CORK`, which the monitor clears on a
//! socket named by number, and `TCP_DEFER_ACCEPT`).

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

/// Takes ownership of an inherited descriptor after checking it is a listening
/// stream socket, so a wrong `fd://N` is an error and not a stranger's file closed.
pub fn inherited_listener(fd: i32) -> io::Result<socket2::Socket> {
    use nix::sys::socket::{getsockopt, sockopt};
    // SAFETY: the descriptor is only borrowed for the checks, while it is open (fcntl
    // has just said so); ownership is taken below only when the checks pass.
    let borrowed = unsafe {
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD)?;
        BorrowedFd::borrow_raw(fd)
    };
    let listening = getsockopt(&borrowed, sockopt::AcceptConn)?;
    let stream = getsockopt(&borrowed, sockopt::SockType)? == nix::sys::socket::SockType::Stream;
    if !(listening && stream) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a listening stream socket",
        ));
    }
    use std::os::fd::FromRawFd;
    // SAFETY: `fd` is open, is a listening socket, and was handed to this process to
    // serve on (by systemd or the master); nothing else in the process owns it.
    Ok(unsafe { socket2::Socket::from_raw_fd(fd) })
}

/// Sets or clears `TCP_CORK` on a socket named by number. The monitor calls it for a
/// socket a runner is serving, which may have been closed (or its number reused) in
/// the meantime: the call then fails, or uncorks a socket that is not corked, which
/// sends what it holds; neither does harm. Errors are ignored for the same reason.
pub fn set_cork(fd: std::os::fd::RawFd, on: bool) {
    let _ = set_tcp_option(fd, nix::libc::TCP_CORK, on.into());
}

/// Sets `TCP_DEFER_ACCEPT` on a listening socket: a connection is reported only once
/// its first bytes have arrived (or after about `secs` without any).
pub fn set_defer_accept(fd: BorrowedFd<'_>, secs: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let secs = nix::libc::c_int::try_from(secs).unwrap_or(nix::libc::c_int::MAX);
    set_tcp_option(fd.as_raw_fd(), nix::libc::TCP_DEFER_ACCEPT, secs)
}

/// An integer option at the TCP level, for the options nix has no wrapper for.
fn set_tcp_option(
    fd: std::os::fd::RawFd,
    option: nix::libc::c_int,
    value: nix::libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `&value`, a live local
    // of that size; a stale descriptor number only makes the call fail or act on
    // another socket's option, not on memory.
    let rc = unsafe {
        nix::libc::setsockopt(
            fd,
            nix::libc::IPPROTO_TCP,
            option,
            (&value as *const nix::libc::c_int).cast(),
            std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Whether bytes (or the end of stream) wait in a socket, without taking them.
pub fn has_bytes(fd: BorrowedFd<'_>) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut one = [0u8; 1];
    recv(
        fd.as_raw_fd(),
        &mut one,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    )
    .is_ok()
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

/// `send(2)`; a closed peer is an `EPIPE` error, never a SIGPIPE.
pub fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    nix::sys::socket::send(
        fd.as_raw_fd(),
        buf,
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
    )
    .map_err(io::Error::from)
}

/// Writes `buf` to a socket named by number without waiting (as much as it takes at
/// once), then ends the writing side: the answer of a request over `--timeout`
/// (`claims.rs`), whose caller holds the socket open meanwhile.
pub fn send_and_shut(fd: std::os::fd::RawFd, mut buf: &[u8]) {
    use nix::sys::socket::{send, shutdown, MsgFlags, Shutdown};
    while !buf.is_empty() {
        match send(fd, buf, MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT) {
            Ok(n) if n > 0 => buf = &buf[n..],
            Err(nix::errno::Errno::EINTR) => {}
            _ => break,
        }
    }
    let _ = shutdown(fd, Shutdown::Write);
}

/// Reads from `fd` into the spare capacity of `buf`, growing it by `grow` bytes when
/// fewer than `min_spare` are free. Returns the bytes read (0 at end of stream).
pub fn read_append(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    min_spare: usize,
    grow: usize,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    if buf.capacity() - buf.len() < min_spare {
        buf.reserve(grow);
    }
    let spare = buf.spare_capacity_mut();
    // SAFETY: `spare` points to `spare.len()` writable bytes owned by `buf`; recv(2)
    // writes at most that many and never reads them. recv rather than read: the
    // socket call skips the file layer's checks.
    let n = unsafe { nix::libc::recv(fd.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: recv(2) initialised the first `n` bytes of the spare capacity, and
    // `n <= spare.len()`, so the new length is within the allocation.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Returns the allocator's free memory to the system, pages inside its arenas
/// included (`malloc_trim(0)`; `idle.rs` says why). False when there was nothing to
/// return, or the C library has no such call.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointer, only the padding to keep at the top of
        // the heap; it locks each arena itself, so concurrent allocations are safe.
        unsafe { nix::libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The process's descriptor limit (`RLIMIT_NOFILE`): (soft, hard).
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    use nix::sys::resource::{getrlimit, Resource};
    Ok(getrlimit(Resource::RLIMIT_NOFILE)?)
}

/// The CPU-time clock of the calling thread, as other threads can read it: the
/// kernel's encoding of a per-thread scheduler clock, which is what glibc's
/// `pthread_getcpuclockid` returns.
pub fn current_thread_cpu_clock() -> i32 {
    let tid = nix::unistd::gettid().as_raw();
    (!tid << 3) | 6
}

/// Sets the calling thread's timer slack: 1 ns when `precise`, else the kernel's
/// default for the thread (50 µs unless its creator changed it). The slack is how late
/// the kernel may fire the thread's timers so that it can fire several with one
/// interrupt. Runner threads run the app, so this is what its `time.sleep` and poll
/// timeouts get; threads it starts inherit it. `Sched::precise_timers` says which.
/// Failure only leaves the setting as it was.
pub fn timer_slack(precise: bool) {
    // PR_SET_TIMERSLACK with 0 restores the thread's default.
    let _ = nix::sys::prctl::set_timerslack(if precise { 1 } else { 0 });
}

/// A thread's `/proc` stat file, opened by the thread itself and read by others, to
/// tell a blocked thread (sleeping in I/O) from a runnable one that is only waiting
/// for a CPU (preempted, or its virtual CPU stolen by the host).
pub struct ThreadState(std::fs::File);

impl ThreadState {
    /// Opens the calling thread's stat file.
    pub fn open_current() -> io::Result<ThreadState> {
        std::fs::File::open("/proc/thread-self/stat").map(ThreadState)
    }

    /// Whether the thread is running or runnable (state `R`).
    pub fn runnable(&self) -> bool {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 512];
        let Ok(n) = self.0.read_at(&mut buf, 0) else {
            return false;
        };
        let text = &buf[..n];
        // "tid (comm) S ...": the state follows the last ')', as comm may hold ')'.
        match text.iter().rposition(|&b| b == b')') {
            Some(i) => text.get(i + 2) == Some(&b'R'),
            None => false,
        }
    }
}

/// CPU time used so far by the thread whose clock is `clock`.
pub fn thread_cpu_time(clock: i32) -> Option<Duration> {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::from_raw(clock))
        .ok()
        .map(Duration::from)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_slack_sets_the_calling_threads_slack_and_restores_its_default() {
        let ours = nix::sys::prctl::get_timerslack().unwrap();
        let t = std::thread::spawn(|| {
            let default = nix::sys::prctl::get_timerslack().unwrap();
            timer_slack(true);
            let precise = nix::sys::prctl::get_timerslack().unwrap();
            timer_slack(false);
            (
                precise,
                nix::sys::prctl::get_timerslack().unwrap() == default,
            )
        });
        assert_eq!(t.join().unwrap(), (1, true));
        assert_eq!(
            nix::sys::prctl::get_timerslack().unwrap(),
            ours,
            "other threads keep theirs"
        );
    }

    #[test]
    fn thread_state_tells_running_from_sleeping() {
        assert!(ThreadState::open_current().unwrap().runnable());
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (stx, srx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            stx.send(ThreadState::open_current().unwrap()).unwrap();
            let _ = rx.recv(); // blocks: state S
        });
        let state = srx.recv().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while state.runnable() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(!state.runnable());
        drop(tx);
        t.join().unwrap();
    }

    #[test]
    fn thread_cpu_clock_reads_this_thread() {
        let clock = current_thread_cpu_clock();
        let a = thread_cpu_time(clock).unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(thread_cpu_time(clock).unwrap() > a);
    }
}
