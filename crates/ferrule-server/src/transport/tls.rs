//! `Transport::Tls`: a rustls server session over an accepted TCP or unix socket.
//!
//! Every method keeps the contract `transport.rs` states for all transports. Reads
//! feed socket bytes to the session and copy out plaintext, reading again past
//! records that carry none (handshake, tickets, KeyUpdate), and stop only when the
//! caller's spare room is full or the socket is empty: a short read still means
//! drained. Writes encrypt into the session and write its records; a session still
//! holding records the socket refused takes no more plaintext (`WouldBlock`), so a
//! slow reader bounds it at rustls' buffer limit. The handshake itself is driven by
//! `handshake.rs` before any protocol driver sees the connection.

use super::ReadOutcome;
use crate::sys;
use rustls::ServerConnection;
use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;

/// The socket under a session: what a listener accepted.
pub(crate) enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Socket::Tcp(s) => s.as_fd(),
            Socket::Unix(s) => s.as_fd(),
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read(buf),
            Socket::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    /// `send(2)`, so a closed peer is an error and never a SIGPIPE.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sys::send(self.fd(), buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The socket as rustls reads it, remembering whether the last read was short (took
/// less than the room it was given), and keeping the kernel's receive time of the
/// raw bytes in `rx` when given one (`Conn::rx`).
struct Measured<'a> {
    socket: &'a mut Socket,
    short: bool,
    rx: Option<&'a mut u64>,
}

impl Read for Measured<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.rx.as_deref_mut() {
            None => self.socket.read(buf)?,
            Some(rx) => sys::recv_stamped(self.socket.fd(), buf, rx)?,
        };
        self.short = n < buf.len();
        Ok(n)
    }
}

/// A TLS connection: the socket and its rustls session.
pub struct TlsStream {
    socket: Socket,
    session: ServerConnection,
    /// The last read left plaintext inside the session (the caller's room was full).
    leftover: bool,
    /// `close_notify` was queued: it is not sent twice (`shut_write`, then the drop).
    closing: bool,
}

/// Where a handshake stands after [`TlsStream::handshake`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    Done,
    /// More bytes from the client are needed; the socket is empty.
    Pending,
    /// The client closed before the handshake ended.
    Closed,
}

impl TlsStream {
    /// Starts a session on `socket`, fed with `early`: bytes already read from it
    /// (the ClientHello's start, read to tell TLS from plain HTTP).
    pub(crate) fn new(
        socket: Socket,
        mut session: ServerConnection,
        early: &[u8],
    ) -> io::Result<TlsStream> {
        let mut rest = early;
        while !rest.is_empty() {
            session.read_tls(&mut rest)?;
        }
        Ok(TlsStream {
            socket,
            session,
            leftover: false,
            closing: false,
        })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.socket.fd()
    }

    /// Advances the handshake on what the socket holds, writing the session's answers
    /// (`rx`: see [`Measured`]; the client's first request may come with its Finished).
    pub(crate) fn handshake(&mut self, mut rx: Option<&mut u64>) -> io::Result<Handshake> {
        loop {
            self.process()?;
            if !self.session.is_handshaking() {
                self.flush()?;
                return Ok(Handshake::Done);
            }
            let mut from = Measured {
                socket: &mut self.socket,
                short: false,
                rx: rx.as_deref_mut(),
            };
            match self.session.read_tls(&mut from) {
                Ok(0) => return Ok(Handshake::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Handshake::Pending),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Decrypts what was fed to the session and writes what it must answer (handshake
    /// flights, alerts, tickets): best effort, the socket being non-blocking. An
    /// invalid record is an error, after its alert went out.
    fn process(&mut self) -> io::Result<()> {
        let state = self.session.process_new_packets();
        let _ = self.flush();
        match state {
            Ok(_) => Ok(()),
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }

    /// The transport contract's read (see the module comment).
    pub(crate) fn read_append(
        &mut self,
        buf: &mut Vec<u8>,
        min_spare: usize,
        grow: usize,
        mut rx: Option<&mut u64>,
    ) -> io::Result<ReadOutcome> {
        if buf.capacity() - buf.len() < min_spare {
            buf.reserve(grow);
        }
        let start = buf.len();
        let end = buf.capacity();
        let mut drained = false;
        loop {
            let eof = self.take_plaintext(buf, end)?;
            let got = buf.len() - start;
            if buf.len() == end {
                return Ok(ReadOutcome::Data(got));
            }
            if eof {
                return Ok(match got {
                    0 => ReadOutcome::Eof,
                    n => ReadOutcome::Data(n),
                });
            }
            let empty = match got {
                0 => ReadOutcome::WouldBlock,
                n => ReadOutcome::Data(n),
            };
            if drained {
                return Ok(empty);
            }
            let mut from = Measured {
                socket: &mut self.socket,
                short: false,
                rx: rx.as_deref_mut(),
            };
            match self.session.read_tls(&mut from) {
                // The TCP end: the session answers `UnexpectedEof` (no close_notify)
                // at the next `take_plaintext`, which ends the stream like a close.
                Ok(0) => self.process()?,
                Ok(_) => {
                    // A read shorter than the room emptied the socket, as a plain
                    // read's does: no second `recv` only to be told EAGAIN.
                    drained = from.short;
                    self.process()?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(empty),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Copies the session's plaintext into `buf` up to `end` bytes; true at the end of
    /// the stream (close_notify, or the socket's end without one: gunicorn's default
    /// `suppress_ragged_eofs` treats both alike).
    fn take_plaintext(&mut self, buf: &mut Vec<u8>, end: usize) -> io::Result<bool> {
        let mut reader = self.session.reader();
        loop {
            match reader.fill_buf() {
                Ok([]) => return Ok(true),
                Ok(chunk) => {
                    let n = chunk.len().min(end - buf.len());
                    buf.extend_from_slice(&chunk[..n]);
                    reader.consume(n);
                    if buf.len() == end {
                        self.leftover = true;
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.leftover = false;
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(true),
                Err(e) => return Err(e),
            }
        }
    }

    /// Plaintext is waiting in the session, or bytes (or the end) in the socket.
    pub(crate) fn has_bytes(&self) -> bool {
        self.leftover || sys::has_bytes(self.fd())
    }

    /// Plaintext is waiting in the session: a wait for reading returns at once.
    pub(crate) fn readable_now(&self) -> bool {
        self.leftover
    }

    /// Encrypts what of `bufs` the session takes and writes its records; `WouldBlock`
    /// while records the socket refused are still inside it.
    pub(crate) fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        if !self.flush()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.session.writer().write_vectored(bufs)?;
        self.flush()?;
        Ok(n)
    }

    pub(crate) fn send(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    /// The session holds records the socket has not taken.
    pub(crate) fn has_pending_output(&self) -> bool {
        self.session.wants_write()
    }

    /// Writes the session's records without waiting: true when none is left.
    pub(crate) fn flush(&mut self) -> io::Result<bool> {
        while self.session.wants_write() {
            match self.session.write_tls(&mut self.socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    pub(crate) fn cork_handle(&self) -> Option<RawFd> {
        match &self.socket {
            Socket::Tcp(s) => Some(std::os::fd::AsRawFd::as_raw_fd(s)),
            Socket::Unix(_) => None,
        }
    }

    /// The established session, for what the environ says of it (`client_cert.rs`).
    pub(crate) fn session(&self) -> &ServerConnection {
        &self.session
    }

    /// Sends `close_notify` (best effort) and ends the socket's writing side.
    pub(crate) fn shut_write(&mut self) -> io::Result<()> {
        self.close_notify();
        match &self.socket {
            Socket::Tcp(s) => s.shutdown(Shutdown::Write),
            Socket::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }

    fn close_notify(&mut self) {
        if !self.closing {
            self.closing = true;
            self.session.send_close_notify();
            let _ = self.flush();
        }
    }
}

impl Drop for TlsStream {
    /// Every close tells the client the stream ended here (not truncated): a graceful
    /// stop, `Connection: close` and an idle timeout alike.
    fn drop(&mut self) {
        if !self.session.is_handshaking() {
            self.close_notify();
        }
    }
}

#[cfg(test)]
mod tests;
