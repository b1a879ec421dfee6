//! Socket calls: reads into a buffer's spare capacity, send, sendfile, shutdown, and
//! the socket options nix has no wrapper for (`TCP_CORK`, `TCP_DEFER_ACCEPT`). Only
//! `transport.rs` and `listener.rs` call these.

use std::io;
use std::os::fd::BorrowedFd;

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
/// (`Claims::time_out`), whose caller holds the socket open meanwhile.
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
