//! A connection's socket, and the only place that reads from or writes to it.
//!
//! Everything above speaks to a [`Transport`]: reads end in an explicit
//! [`ReadOutcome`] (bytes, would block, end of stream), so no caller reads `Ok(0)` as
//! the peer's close; whether output still waits is a question (`has_pending_output`),
//! not a buffer to look into; `sendfile` answers [`Sendfile::Unsupported`] when the
//! bytes must be copied instead; corking, readiness waits and the descriptor epoll
//! watches are its methods. Plain TCP and unix sockets are its variants and make the
//! same system calls as before this module existed: `recv` into the buffer's spare
//! capacity, `send`, `writev`, `sendfile`, `poll`. Dispatch is a `match` on the
//! variant, inlined; there is no `dyn` on the read or write path.
//!
//! Reads: [`ReadOutcome::Data`] always carries at least one byte, and
//! [`ReadOutcome::WouldBlock`] means "nothing for the caller now, and epoll will
//! report when there may be": the socket itself said `EAGAIN`. A read that leaves
//! spare room in the buffer has emptied the transport (`Conn::read_some` records
//! that the connection is drained). `EINTR` is retried here.
//!
//! **TLS** is a variant, `Tls(Box<TlsStream>)` (the socket and rustls'
//! `ServerConnection`, `transport/tls.rs`), made by the handshake stage
//! (`handshake.rs`) on a connection accepted while TLS is on. Its `read_append` feeds
//! socket bytes to the session and copies out plaintext; records without plaintext
//! (the handshake, session tickets, KeyUpdate) make it read again, so it returns
//! `WouldBlock` only once the socket is empty and `Data(0)` never; it fills the
//! buffer's spare room before it leaves plaintext inside the session, so a short read
//! still means drained; a `close_notify` or the TCP end is `Eof`. Its `send`/
//! `write_vectored` encrypt and write records, and `has_pending_output` is true while
//! the session holds records the socket refused (it then takes no more plaintext:
//! `WouldBlock`); `sendfile` is `Unsupported` (the caller copies); `cork_handle` and
//! `fd` are the socket's (records are corked and polled like plain bytes);
//! `wait(Read)` returns at once while the session holds plaintext. The timeout's
//! answer ([`send_and_shut`], from another thread while the app's holds the session)
//! cannot be written raw into a TLS stream: a session's `raw_fd` is the socket's
//! complement, and `send_and_shut` only shuts such a socket. The **PROXY** protocol
//! preamble is a connection stage before both (`preamble.rs`), not a transport.
//! Neither touches the protocol drivers: they see only this module's API.

use crate::sys;
pub(crate) use crate::sys::Interest;
use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

pub(crate) mod tls;
pub(crate) use tls::{Socket, TlsStream};

/// An accepted connection's socket.
pub enum Transport {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// Boxed: a session is large, and plain connections should not pay its size.
    Tls(Box<TlsStream>),
}

/// What one read brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadOutcome {
    /// This many bytes (at least one) were appended to the buffer.
    Data(usize),
    /// Nothing now; epoll reports the next arrival (the socket is empty).
    WouldBlock,
    /// The peer ended its side: nothing more will come.
    Eof,
}

/// What one `sendfile` call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sendfile {
    /// This many bytes of the file went out; 0 at the end of the file.
    Sent(usize),
    /// The socket is full.
    WouldBlock,
    /// This transport cannot send a file's bytes unchanged: the caller copies them.
    /// It says so at its first call, before any byte went out.
    Unsupported,
}

impl Transport {
    /// The descriptor epoll watches for this connection (and `poll` waits on).
    #[inline]
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Transport::Tcp(s) => s.as_fd(),
            Transport::Unix(s) => s.as_fd(),
            Transport::Tls(t) => t.fd(),
        }
    }

    /// A TLS session (one compare: the environ's `wsgi.url_scheme`).
    #[inline]
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// The plain socket, to start a TLS session on (`handshake.rs`); a session is
    /// handed back unchanged.
    pub(crate) fn into_socket(self) -> Result<Socket, Transport> {
        match self {
            Transport::Tcp(s) => Ok(Socket::Tcp(s)),
            Transport::Unix(s) => Ok(Socket::Unix(s)),
            t @ Transport::Tls(_) => Err(t),
        }
    }

    /// The socket's number, for another thread that must name it while this
    /// connection is served: the timeout's answer (`Claims::time_out`, which writes
    /// with [`send_and_shut`]). A TLS session's is the number's complement (`!fd`,
    /// negative): bytes written raw would corrupt the stream, so the timeout may only
    /// shut that socket.
    #[inline]
    pub(crate) fn raw_fd(&self) -> RawFd {
        match self {
            Transport::Tls(t) => !t.fd().as_raw_fd(),
            _ => self.fd().as_raw_fd(),
        }
    }

    /// One non-blocking read into the spare capacity of `buf`, grown by `grow` bytes
    /// when fewer than `min_spare` are free (no zero-filling: `sys::read_append`).
    /// With `rx`, by `recvmsg`, keeping the kernel's receive time there (`Conn::rx`).
    #[inline(always)]
    pub(crate) fn read_append(
        &mut self,
        buf: &mut Vec<u8>,
        min_spare: usize,
        grow: usize,
        mut rx: Option<&mut u64>,
    ) -> io::Result<ReadOutcome> {
        if let Transport::Tls(t) = self {
            return t.read_append(buf, min_spare, grow, rx);
        }
        loop {
            let read = match rx.as_deref_mut() {
                None => sys::read_append(self.fd(), buf, min_spare, grow),
                Some(rx) => sys::read_append_stamped(self.fd(), buf, min_spare, grow, rx),
            };
            match read {
                Ok(0) => return Ok(ReadOutcome::Eof),
                Ok(n) => return Ok(ReadOutcome::Data(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(ReadOutcome::WouldBlock)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether bytes (or the end of stream) wait to be read, without taking them.
    pub(crate) fn has_bytes(&self) -> bool {
        match self {
            Transport::Tls(t) => t.has_bytes(),
            _ => sys::has_bytes(self.fd()),
        }
    }

    /// `send(2)`: a socket's own call, shorter in the kernel than `write(2)`'s file
    /// path; a closed peer is an error, never a SIGPIPE. `WouldBlock` when full.
    #[inline]
    pub(crate) fn send(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tls(t) => t.send(buf),
            _ => sys::send(self.fd(), buf),
        }
    }

    /// One `writev(2)` of several parts. `WouldBlock` when full.
    #[inline]
    pub(crate) fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        use std::io::Write;
        match self {
            Transport::Tcp(s) => s.write_vectored(bufs),
            Transport::Unix(s) => s.write_vectored(bufs),
            Transport::Tls(t) => t.write_vectored(bufs),
        }
    }

    /// Output accepted by the transport that has not reached the socket yet. A plain
    /// socket keeps nothing back; a TLS session may hold records.
    #[inline]
    pub(crate) fn has_pending_output(&self) -> bool {
        match self {
            Transport::Tls(t) => t.has_pending_output(),
            _ => false,
        }
    }

    /// Writes what the transport itself still holds (see `has_pending_output`) without
    /// waiting: true when nothing is left in it. A plain socket holds nothing.
    #[inline]
    pub(crate) fn flush(&mut self) -> io::Result<bool> {
        match self {
            Transport::Tls(t) => t.flush(),
            _ => Ok(true),
        }
    }

    /// Sends up to `count` bytes of the file `file` from `offset` without copying them
    /// through user space, advancing `offset` by what went out.
    pub(crate) fn sendfile(
        &self,
        file: RawFd,
        offset: &mut i64,
        count: usize,
    ) -> io::Result<Sendfile> {
        if self.is_tls() {
            return Ok(Sendfile::Unsupported);
        }
        loop {
            match sys::sendfile(self.fd(), file, offset, count) {
                Ok(n) => return Ok(Sendfile::Sent(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Sendfile::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until the socket is ready for `interest` or `timeout` passes; false on
    /// timeout.
    pub(crate) fn wait(&self, interest: Interest, timeout: Duration) -> io::Result<bool> {
        if let Transport::Tls(t) = self {
            if matches!(interest, Interest::Read) && t.readable_now() {
                return Ok(true);
            }
        }
        sys::wait_ready(self.fd(), interest, timeout)
    }

    /// The number by which the cork monitor names this socket (`cork.rs`), when it
    /// can be corked (TCP).
    #[inline]
    pub(crate) fn cork_handle(&self) -> Option<RawFd> {
        match self {
            Transport::Tcp(s) => Some(s.as_raw_fd()),
            Transport::Unix(_) => None,
            Transport::Tls(t) => t.cork_handle(),
        }
    }

    /// Sets or clears `TCP_CORK` (a no-op where it cannot cork).
    pub(crate) fn set_cork(&self, on: bool) {
        if let Some(fd) = self.cork_handle() {
            sys::set_cork(fd, on);
        }
    }

    /// Ends the writing side: the client sees the end of the answers.
    pub(crate) fn shut_write(&mut self) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.shutdown(Shutdown::Write),
            Transport::Unix(s) => s.shutdown(Shutdown::Write),
            Transport::Tls(t) => t.shut_write(),
        }
    }
}

/// The monitor's push of a socket a runner left corked, named by its
/// [`Transport::cork_handle`]: it may have closed (or its number been reused) since,
/// and then the call fails or uncorks a socket that was not corked; neither harms.
pub(crate) fn uncork(handle: RawFd) {
    sys::set_cork(handle, false);
}

/// Writes `buf` without waiting (as much as the socket takes at once) to the socket
/// named by [`Transport::raw_fd`], then ends its writing side: the answer of a request
/// over `--timeout`, written by another thread while the connection's own holds it.
/// A TLS socket (named by its complement) is only shut: the client sees the end
/// without an answer, as it would from an nginx whose upstream timed out mid-session.
pub(crate) fn send_and_shut(fd: RawFd, buf: &[u8]) {
    match fd < 0 {
        true => sys::send_and_shut(!fd, &[]),
        false => sys::send_and_shut(fd, buf),
    }
}

#[cfg(test)]
mod tests;
