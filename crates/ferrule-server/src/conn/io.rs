//! A connection's reads and writes, all through its transport (`transport.rs`): the one read a
//! request takes at a time, answers written whole or left to the server, and the
//! error answers and closing the server does itself.

use super::{Conn, Stage, Then};
use crate::blocking::Blocking;
use crate::clock::Tick;
use crate::date::with_date;
use crate::error::{Error, Phase};
use crate::protocol::Protocol;
use crate::transport::{Interest, ReadOutcome};
use ferrule_http::{error_response, uwsgi_error_response, Version};
use std::io::{self, IoSlice};
use std::time::Duration;

/// An answer the server writes itself: over uwsgi without the `Date`, `Server` and
/// `Connection` a front server adds or does not want (`exchange/uwsgi.rs`).
pub(crate) fn error_answer(status: u16, version: Version, protocol: Protocol) -> Vec<u8> {
    match protocol {
        Protocol::Http1 => with_date(|d| error_response(status, version, d)),
        Protocol::Uwsgi => uwsgi_error_response(status),
    }
}

impl Conn {
    /// Nothing of a next request has arrived, neither in the buffer nor in the socket
    /// (asks the kernel: used only while stopping).
    pub(crate) fn silent(&self) -> bool {
        self.buf.is_empty() && !self.transport.has_bytes()
    }

    /// Shuts the writing side (the client sees the end of the answers) and starts
    /// dropping what the client sends (`Stage::Lingering`).
    pub(crate) fn linger(&mut self) {
        let _ = self.transport.shut_write();
        self.buf.clear();
        self.head_since = None;
        self.stage = Stage::Lingering;
    }

    /// Writes every part, waiting through `blocking` while the socket is full. One part
    /// left goes out with `send(2)`, several with one `writev(2)`; nothing is
    /// allocated (the parts are an array, so their number is known when compiling).
    ///
    /// `spill` is non-zero only for the rest of a complete answer: when the socket is
    /// full and at most `spill` bytes are left, they are copied into `out` (they may be
    /// the app's buffers) and the connection turns `Stage::Writing`, for the server
    /// to write without this thread (`Shared::flush_and_shelve`).
    pub(crate) fn send<const N: usize>(
        &mut self,
        parts: [&[u8]; N],
        blocking: &dyn Blocking,
        timeout: Duration,
        spill: usize,
    ) -> Result<(), Error> {
        let mut left: [&[u8]; N] = [&[]; N];
        let mut count = 0;
        for p in parts.into_iter().filter(|p| !p.is_empty()) {
            left[count] = p;
            count += 1;
        }
        let mut first = 0;
        while first < count {
            let result = if first + 1 == count {
                self.transport.send(left[first])
            } else {
                let mut slices = [IoSlice::new(&[]); N];
                for (s, p) in slices.iter_mut().zip(&left[first..count]) {
                    *s = IoSlice::new(p);
                }
                self.transport.write_vectored(&slices[..count - first])
            };
            match result {
                Ok(0) => return Err(Error::Disconnected),
                Ok(mut n) => {
                    while n > 0 {
                        if n >= left[first].len() {
                            n -= left[first].len();
                            first += 1;
                        } else {
                            left[first] = &left[first][n..];
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if spill > 0 && self.spill(&left[first..count], spill) {
                        return Ok(());
                    }
                    let t = &self.transport;
                    if !blocking.block(&mut || t.wait(Interest::Write, timeout))? {
                        return Err(Error::Timeout(Phase::Send));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Keeps the unsent rest of a complete answer for the server to write, when it is
    /// at most `bound` bytes (`send`). Runs only when the socket is full.
    #[cold]
    fn spill(&mut self, rest: &[&[u8]], bound: usize) -> bool {
        let len: usize = rest.iter().map(|p| p.len()).sum();
        // A body read ahead (`ReadAhead`) is over once the answer is complete.
        if len > bound || !matches!(self.stage, Stage::Open | Stage::ReadAhead(_)) {
            return false;
        }
        self.out.reserve_exact(len);
        for p in rest {
            self.out.extend_from_slice(p);
        }
        self.stage = Stage::Writing {
            then: Then::Serve,
            since: Tick::now(),
        };
        true
    }

    /// Whether answers wait to be written: in `out`, or inside the transport (a TLS
    /// session's records). Callers ask this rather than look at `out`.
    #[inline]
    pub(crate) fn has_pending_output(&self) -> bool {
        !self.out.is_empty() || self.transport.has_pending_output()
    }

    /// Writes responses left in `out` (waiting through `blocking` while the socket is
    /// full). False when the client is gone or too slow.
    pub(crate) fn flush_out(&mut self, timeout: Duration, blocking: &dyn Blocking) -> bool {
        if !self.out.is_empty() {
            let out = std::mem::take(&mut self.out);
            let ok = self.send([&out], blocking, timeout, 0).is_ok();
            self.out = out;
            self.out.clear();
            if !ok {
                return false;
            }
        }
        // What the transport still holds (a TLS session's records), waiting for room.
        loop {
            match self.transport.flush() {
                Ok(true) => return true,
                Ok(false) => {
                    let t = &self.transport;
                    match blocking.block(&mut || t.wait(Interest::Write, timeout)) {
                        Ok(true) => {}
                        _ => return false,
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// Writes what `out` holds without waiting: true when all of it went, false when
    /// the socket is full (the rest stays at the front of `out`).
    pub(crate) fn try_flush_out(&mut self) -> io::Result<bool> {
        let mut sent = 0;
        let done = loop {
            if sent == self.out.len() {
                // The usual end: no `drain` to shift nothing. Then what the transport
                // itself holds (nothing, for a plain socket).
                self.out.clear();
                return self.transport.flush();
            }
            match self.transport.send(&self.out[sent..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.out.drain(..sent);
        done
    }

    /// One non-blocking read into the buffer. Records whether the socket is known to be
    /// empty now: edge-triggered epoll reports only bytes that arrive later.
    pub(crate) fn read_some(&mut self) -> io::Result<ReadOutcome> {
        // Two calls, so the inlined read without receive times is the plain `recv` path.
        let got = match &mut self.rx {
            None => self
                .transport
                .read_append(&mut self.buf, 4096, 16 * 1024, None),
            Some(_) if self.fresh => {
                self.fresh = false;
                self.transport
                    .read_append(&mut self.buf, 4096, 16 * 1024, None)
            }
            Some(rx) => self
                .transport
                .read_append(&mut self.buf, 4096, 16 * 1024, Some(rx)),
        };
        self.drained = match &got {
            // A read that filled the buffer may have left more behind.
            Ok(ReadOutcome::Data(_) | ReadOutcome::Eof) => self.buf.len() < self.buf.capacity(),
            Ok(ReadOutcome::WouldBlock) => true,
            Err(_) => false,
        };
        got
    }
}

#[cfg(test)]
mod tests {
    use super::Conn;
    use crate::listener::Peer;
    use crate::transport::{ReadOutcome, Transport};
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    /// Reads `conn` until bytes come (the socket is non-blocking), within 10 s.
    fn read_until_data(conn: &mut Conn) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match conn.read_some().unwrap() {
                ReadOutcome::Data(_) => return,
                ReadOutcome::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "no bytes came");
                    std::thread::yield_now();
                }
                ReadOutcome::Eof => panic!("closed"),
            }
        }
    }

    #[test]
    fn a_fresh_read_skips_the_receive_time_and_the_next_one_keeps_it() {
        use std::net::{TcpListener, TcpStream};
        use std::os::fd::AsFd;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        crate::sys::set_receive_times(l.as_fd(), true).unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, peer) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        let mut conn = Conn::new(Transport::Tcp(s), Peer::Tcp(peer), 0);
        conn.rx = Some(0);
        // The kernel may stamp nothing in the first moments after stamping is turned
        // on (`receive_time.rs`): stamped reads are retried until one has a time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            conn.fresh = true;
            client.write_all(b"a").unwrap();
            read_until_data(&mut conn);
            assert_eq!(conn.rx, Some(0), "a fresh read keeps no time");
            assert!(!conn.fresh, "only the one read after the wait is fresh");
            client.write_all(b"b").unwrap();
            read_until_data(&mut conn);
            if conn.rx != Some(0) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never stamped");
        }
        assert!(conn.buf.ends_with(b"ab"), "every byte was read");
    }

    #[test]
    fn a_read_records_whether_the_socket_is_known_to_be_empty() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut conn = Conn::new(Transport::Unix(ours), Peer::Unix, 0);
        conn.drained = false;
        assert_eq!(conn.read_some().unwrap(), ReadOutcome::WouldBlock);
        assert!(conn.drained);
        // More than the buffer's spare room: a read that fills it may leave more.
        peer.write_all(&[b'x'; 64 * 1024]).unwrap();
        let ReadOutcome::Data(n) = conn.read_some().unwrap() else {
            panic!("no data")
        };
        assert_eq!(n, conn.buf.capacity());
        assert!(!conn.drained);
        // At most one read per 4 KiB: each leaves at least that much room.
        for _ in 0..16 {
            match conn.read_some().unwrap() {
                ReadOutcome::Data(_) => {
                    assert_eq!(conn.drained, conn.buf.len() < conn.buf.capacity())
                }
                outcome => {
                    assert_eq!(outcome, ReadOutcome::WouldBlock);
                    break;
                }
            }
        }
        assert!(conn.drained, "the socket is empty");
        assert_eq!(conn.buf.len(), 64 * 1024);
        drop(peer);
        assert_eq!(conn.read_some().unwrap(), ReadOutcome::Eof);
        assert_eq!(conn.buf.len(), 64 * 1024);
    }
}
