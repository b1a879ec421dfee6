//! A client connection between requests: its transport, the bytes received so far,
//! and the clock that decides when it has waited too long. Its reads and writes are
//! in `conn/io.rs`.

use crate::clock::Tick;
use crate::listener::Peer;
use crate::preread::{PreRead, SpillReader};
use crate::transport::Transport;
use ferrule_http::{Header, ProxyMode};
use memchr::memrchr;

mod io;
pub(crate) use io::error_answer;

/// A read buffer larger than this is trimmed after its request (`Conn::after_read_ahead`).
pub(crate) const KEEP_BUF: usize = 64 * 1024;

/// Where a connection is in its life.
pub(crate) enum Stage {
    /// Serving requests.
    Open,
    /// A request's head is parsed and its body is being read before the app sees it
    /// (`preread.rs`); it waits in epoll between reads, `--io-timeout` at a time.
    Body(Box<PreRead>),
    /// That body is complete: the head at the front of the buffer is parsed once more
    /// and its request served; a body too large for memory waits in its file.
    ReadAhead(Option<Box<SpillReader>>),
    /// Draining: its last answer said `Connection: close` and went out, but the client
    /// had already sent more. Its writing side is shut and what arrives is read and
    /// dropped until the client closes: closing with unread bytes would reset the
    /// connection, and a reset can destroy that answer before the client has read it.
    Lingering,
    /// `--proxy-protocol`: no driver has seen a byte yet; the PROXY header (or, from a
    /// peer that may not send one, enough bytes to tell it did not) comes first
    /// (`preamble.rs`).
    Preamble(Preamble),
    /// TLS: the session is being established before any driver sees a byte
    /// (`handshake.rs`), after the PROXY header when both are on.
    Handshake,
    /// A complete answer the socket did not take at once waits in `out`, and the server
    /// writes it as epoll reports room (`--response-buffer-size`): a slow reader holds
    /// this buffer, not an app thread. `since` is the last write that made progress,
    /// from which `--io-timeout` counts; `then` is what follows the last byte.
    Writing { then: Then, since: Tick },
}

/// What a connection's first bytes must be under `--proxy-protocol`, decided from its
/// socket peer when it is accepted (`preamble.rs` reads them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Preamble {
    /// A PROXY header of these versions: the peer is in `--proxy-allow-from`.
    Header(ProxyMode),
    /// No PROXY header: the peer is outside `--proxy-allow-from`.
    Forbidden,
}

/// What a connection does once its buffered answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Then {
    /// Reads its next (or pipelined) request.
    Serve,
    /// Closes (the answer said `Connection: close`, or the request was not reusable).
    Close,
    /// Draining, and the client sent more: shuts the writing side and lingers.
    Linger,
}

pub struct Conn {
    /// Its socket: every read and write goes through it.
    pub(crate) transport: Transport,
    /// The socket's other end: what `--forwarded-allow-ips`, `--proxy-allow-from` and
    /// `--uwsgi-allow-from` are checked against.
    pub(crate) peer: Peer,
    /// Whom the requests on this connection come from: the socket's peer, or the
    /// source a front server stated for the whole connection (a PROXY header).
    /// REMOTE_ADDR and the access log's `%(h)s` show it.
    pub(crate) client: Peer,
    /// Index of the listener it came from.
    pub(crate) listener: usize,
    /// Slot in the connection table, with its generation.
    pub(crate) token: u64,
    /// Bytes received and not yet used by a finished request.
    pub(crate) buf: Vec<u8>,
    /// The response buffer, kept between requests so it is allocated once.
    pub(crate) out: Vec<u8>,
    /// The last request's field vector, reused by the next parse.
    pub(crate) fields: Vec<Header>,
    /// Prefix of `buf` already offered to the parser.
    pub(crate) scanned: usize,
    /// Start of the last incomplete line in `buf`.
    pub(crate) line_start: usize,
    /// Bytes of empty lines dropped from the front of `buf` before the current request
    /// line: they count against the request-line limit (`skip_empty_lines`).
    pub(crate) blank: usize,
    /// When the first byte of the current head arrived.
    pub(crate) head_since: Option<Tick>,
    // The three flags below stay flags: each is a fact from its own source (the last
    // read, epoll's event, the requests answered), set independently of the others.
    // Where the connection is in its life is `stage`; what it does after a request
    // is one `Next` (`driver/next.rs`).
    /// The last read left the socket empty, so epoll will report the next bytes.
    pub(crate) drained: bool,
    /// Epoll reported the peer's end of stream (or an error): a short read then does
    /// not mean an event will follow, so the connection is read until it says so.
    pub(crate) peer_done: bool,
    /// At least one request was answered: when idle, it is a keep-alive connection.
    pub(crate) served: bool,
    pub(crate) stage: Stage,
    /// Since when the request about to be served waited for a thread: when a runner
    /// took its event (or its listener's) from epoll; set by the runner only when
    /// requests are timed (`timing.rs`), else None.
    pub(crate) queued: Option<std::time::Instant>,
    /// The kernel's receive time of the newest bytes read (ns since the Unix epoch,
    /// `sys::receive_time`), 0 once taken by a request; None when reads are not
    /// stamped (no queue wait is asked for, or not TCP: `timing.rs`).
    pub(crate) rx: Option<u64>,
    /// Its event came out of an epoll wait that blocked while no other request ran
    /// (`Runner::poll`): its bytes arrived during the wait, so they waited for nothing
    /// but the wake-up, and the next read skips their receive time (`recvmsg` and its
    /// control message cost ~50 instructions a request; `timing.rs`).
    pub(crate) fresh: bool,
}

impl Conn {
    /// Boxed: between requests a connection moves from the table to a runner, into the
    /// request's exchange and back (several moves a request), and a box moves as a pointer.
    pub(crate) fn new(transport: Transport, peer: Peer, listener: usize) -> Box<Conn> {
        Box::new(Conn {
            transport,
            peer,
            client: peer,
            listener,
            token: 0,
            buf: Vec::new(),
            out: Vec::new(),
            fields: Vec::new(),
            scanned: 0,
            line_start: 0,
            blank: 0,
            head_since: None,
            // Read at once: a new connection is served before it is registered (table.rs).
            drained: true,
            peer_done: false,
            served: false,
            stage: Stage::Open,
            queued: None,
            rx: None,
            fresh: false,
        })
    }

    /// Whether the bytes that arrived since the last look can change the parser's
    /// answer: a new line ended, or the current line outgrew the smallest line limit.
    /// This keeps a client that sends one byte at a time from costing a full parse per byte.
    pub(crate) fn worth_parsing(&mut self, min_line_limit: usize) -> bool {
        if self.scanned >= self.buf.len() {
            return false;
        }
        let fresh = &self.buf[self.scanned..];
        let found = memrchr(b'\n', fresh).map(|i| self.scanned + i + 1);
        self.scanned = self.buf.len();
        match found {
            Some(end) => {
                self.line_start = end;
                true
            }
            // A buffer starting with a 0 byte (a uwsgi packet on an HTTP bind) is looked
            // at now: it may never hold a line end (`driver/http1.rs` refuses it).
            None => {
                self.buf.len() - self.line_start > min_line_limit || self.buf.first() == Some(&0)
            }
        }
    }

    /// Drops the empty lines at the front of the buffer (RFC 9112 §2.2 lets a server
    /// ignore them) and counts them in `blank`, which the parser adds to the request
    /// line's length: so each of their bytes is looked at once, the buffer does not grow
    /// while a client sends nothing else, and it is refused past the limit. A buffer that
    /// does not start with CR pays one compare.
    #[inline]
    pub(crate) fn skip_empty_lines(&mut self) {
        if self.buf.first() != Some(&b'\r') {
            return;
        }
        let n = ferrule_http::empty_lines(&self.buf);
        if n > 0 {
            self.buf.drain(..n);
            self.blank += n;
            self.scanned = self.scanned.saturating_sub(n);
            self.line_start = self.line_start.saturating_sub(n);
        }
    }

    /// Forgets parser progress after a request used the front of the buffer.
    pub(crate) fn reset_scan(&mut self) {
        self.scanned = 0;
        self.line_start = 0;
        self.blank = 0;
        self.head_since = if self.buf.is_empty() {
            None
        } else {
            Some(Tick::now())
        };
    }

    /// Starts reading a request's body before the app runs (`preread.rs`). The head
    /// parser has nothing to look at until it is complete: `worth_parsing` says no
    /// without a check of its own, and `reset_scan` ends this.
    pub(crate) fn read_ahead(&mut self, pre: Box<PreRead>) {
        self.stage = Stage::Body(pre);
        self.scanned = usize::MAX;
    }

    /// After a request whose body was read ahead (or that needed a large buffer):
    /// the body's file closes, and most of a large buffer is given back, so an idle
    /// connection does not keep a body's worth of memory.
    #[cold]
    #[inline(never)]
    pub(crate) fn after_read_ahead(&mut self) {
        if matches!(self.stage, Stage::ReadAhead(_)) {
            self.stage = Stage::Open;
        }
        if self.buf.capacity() > KEEP_BUF {
            if self.buf.is_empty() {
                self.buf = Vec::new();
            } else {
                self.buf.shrink_to(self.buf.len().max(KEEP_BUF / 4));
            }
        }
    }

    /// Releases the buffer of an idle connection, so thousands of idle keep-alive
    /// clients cost a socket each and no memory.
    pub(crate) fn shrink_if_idle(&mut self) {
        // A buffered answer still being written is not idle (and `out` holds it).
        if self.buf.is_empty() && self.buf.capacity() > 0 && !self.writing() {
            self.buf = Vec::new();
            self.out = Vec::new();
            self.fields = Vec::new();
        }
    }

    /// Its answer waits in `out` for the server to write (`Stage::Writing`).
    pub(crate) fn writing(&self) -> bool {
        matches!(self.stage, Stage::Writing { .. })
    }

    /// The socket is full and what `out` holds is left to the server (`writing.rs`).
    pub(crate) fn buffer_rest(&mut self) {
        match &mut self.stage {
            Stage::Writing { since, .. } => *since = Tick::now(),
            stage => {
                *stage = Stage::Writing {
                    then: Then::Serve,
                    since: Tick::now(),
                }
            }
        }
    }

    /// A write of the buffered answer made progress: `--io-timeout` counts anew.
    pub(crate) fn progressed(&mut self) {
        if let Stage::Writing { since, .. } = &mut self.stage {
            *since = Tick::now();
        }
    }

    /// Says what a connection whose answer waits in `out` does after it (a no-op
    /// for one whose answer went out).
    pub(crate) fn then(&mut self, next: Then) {
        if let Stage::Writing { then, .. } = &mut self.stage {
            *then = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Conn;
    use crate::listener::Peer;
    use crate::transport::Transport;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn a_large_buffer_is_given_back_after_its_request() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let mut conn = Conn::new(Transport::Tcp(server), Peer::Tcp(peer), 0);
        conn.buf = Vec::with_capacity(2 << 20);
        conn.stage = super::Stage::ReadAhead(None);
        conn.after_read_ahead();
        assert_eq!(conn.buf.capacity(), 0);
        assert!(matches!(conn.stage, super::Stage::Open));
        // A pipelined request that followed keeps its bytes, in a small buffer.
        conn.buf = Vec::with_capacity(2 << 20);
        conn.buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
        conn.after_read_ahead();
        assert_eq!(conn.buf, b"GET / HTTP/1.1\r\n");
        assert!(conn.buf.capacity() <= super::KEEP_BUF / 4 + 64);
    }

    #[test]
    fn a_write_that_does_not_wait_keeps_what_a_full_socket_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let mut conn = Conn::new(Transport::Tcp(server), Peer::Tcp(peer), 0);
        // More than loopback socket buffers hold while the client reads nothing.
        let body: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
        conn.out = body.clone();
        assert!(
            !conn.try_flush_out().unwrap(),
            "the socket took 64 MB at once"
        );
        let left = conn.out.len();
        assert!(0 < left && left < body.len());
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            client.read_to_end(&mut got).unwrap();
            got
        });
        while !conn.try_flush_out().unwrap() {
            std::thread::yield_now();
        }
        assert!(conn.out.is_empty());
        drop(conn);
        assert!(reader.join().unwrap() == body, "bytes lost or out of order");
    }
}
