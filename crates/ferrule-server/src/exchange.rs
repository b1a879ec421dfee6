//! One request and its response on one connection.
//!
//! An [`Exchange`] owns the connection while the app runs, so the app's reads of
//! `wsgi.input` and its writes go straight to the socket from the thread that
//! runs the app: no hand-off to another thread, no copy of the body. Waits on the
//! socket go through a [`Park`], which lets the Python side release the GIL.

use crate::conn::Conn;
use crate::cork::CorkState;
use crate::error::{Error, Phase};
use crate::listener::{Local, Peer};
use crate::server::Shared;
use crate::sys::{self, Interest};
use ferrule_http::{
    choose_framing, classify_field, error_response, finish_head, parse_status, write_chunk,
    write_status_line, BodyDecoder, DateCache, FieldKind, Head, ResponseFraming, Version,
    LAST_CHUNK,
};
use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

/// Gives a caller the chance to drop a lock while the thread waits on the socket.
pub trait Park {
    fn park(&self, wait: &mut (dyn FnMut() -> io::Result<bool> + Send)) -> io::Result<bool>;
}

/// Waits in place (for callers that hold no lock).
pub struct NoPark;

impl Park for NoPark {
    fn park(&self, wait: &mut (dyn FnMut() -> io::Result<bool> + Send)) -> io::Result<bool> {
        wait()
    }
}

thread_local! {
    static DATE: RefCell<DateCache> = RefCell::new(DateCache::default());
}

/// Appends the current `Date` value.
pub(crate) fn with_date<R>(f: impl FnOnce(&str) -> R) -> R {
    DATE.with(|d| f(d.borrow_mut().get(crate::clock::coarse_wall())))
}

/// Most slices one `send` call writes: head, body, chunk trailer.
const MAX_PARTS: usize = 3;
/// Bodies at least this large are written from the app's buffer instead of copied.
const ZERO_COPY_MIN: usize = 16 * 1024;
/// Unread body bytes the server reads and discards to keep a connection alive.
const DRAIN_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Response {
    /// Nothing decided yet.
    Pending,
    /// Status line and fields are being written into `out`.
    Building {
        code: u16,
        declared: Option<u64>,
        server: bool,
        date: bool,
    },
    /// The head is out (or queued); body bytes follow.
    Body {
        framing: ResponseFraming,
        declared: bool,
        sent: u64,
    },
    /// The response is complete.
    Done,
}

/// How a response ended, for the access log and the connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    pub status: u16,
    pub body_bytes: u64,
    /// The app sent fewer or more bytes than its Content-Length.
    pub length_mismatch: bool,
}

pub struct Exchange {
    conn: Conn,
    head: Head,
    shared: Arc<Shared>,
    /// Next byte of `conn.buf` the body decoder has not seen.
    pos: usize,
    /// Decoded body bytes not yet handed to the app.
    avail: Range<usize>,
    body: BodyDecoder,
    continue_pending: bool,
    out: Vec<u8>,
    response: Response,
    keep_alive: bool,
    https: bool,
    pub(crate) started: Instant,
    outcome: Outcome,
    /// Bytes at the front of `out` that belong to earlier responses not yet written.
    mark: usize,
    /// This response may wait in `out` after it is complete (other connections are
    /// ready, and its thread writes everything in one burst after serving them).
    defer: bool,
    /// A copy of the response head, kept only when the access log shows response fields.
    response_head: Option<Vec<u8>>,
    /// The runner serving this request (its slot in `Shared::corks`).
    me: usize,
    cork: CorkState,
}

impl Exchange {
    pub(crate) fn new(
        mut conn: Conn,
        head: Head,
        shared: Arc<Shared>,
        (https, defer): (bool, bool),
        me: usize,
        started: Instant,
    ) -> Exchange {
        let out = std::mem::take(&mut conn.out);
        let mark = out.len();
        let body = BodyDecoder::new(head.framing.body, &shared.config.parser);
        let pos = head.len;
        Exchange {
            continue_pending: head.framing.expect_continue && !body.is_done(),
            keep_alive: head.framing.keep_alive,
            conn,
            shared,
            pos,
            avail: pos..pos,
            body,
            out,
            response: Response::Pending,
            https,
            started,
            outcome: Outcome::default(),
            mark,
            defer,
            response_head: None,
            head,
            me,
            cork: CorkState::Idle,
        }
    }

    /// Before a streamed block is written: the second block corks the socket, and a
    /// held cork the monitor pushed meanwhile ends corking for this response.
    fn cork_before_block(&mut self) {
        let Some(fd) = self.conn.stream.tcp_fd() else {
            self.cork = CorkState::Off;
            return;
        };
        match self.cork {
            CorkState::FirstSent => {
                sys::set_cork(fd, true);
                self.cork = CorkState::Held;
            }
            CorkState::Held if !self.shared.corks.take(self.me) => self.cork = CorkState::Off,
            _ => {}
        }
    }

    /// After a streamed block is written, before the app produces the next one.
    fn cork_after_block(&mut self) {
        match (self.cork, self.conn.stream.tcp_fd()) {
            (CorkState::Idle, _) => self.cork = CorkState::FirstSent,
            (CorkState::Held, Some(fd)) => self.shared.corks.hold(self.me, fd),
            _ => {}
        }
    }

    /// At the end of a response: sends what the cork holds, unless the monitor did.
    fn uncork(&mut self) {
        if let (CorkState::Held, Some(fd)) = (self.cork, self.conn.stream.tcp_fd()) {
            if self.shared.corks.take(self.me) {
                sys::set_cork(fd, false);
            }
        }
        self.cork = CorkState::Off;
    }

    // ---- the request ----

    fn bytes(&self, span: ferrule_http::Span) -> &[u8] {
        self.head.get(&self.conn.buf, span)
    }

    pub fn method(&self) -> &[u8] {
        self.bytes(self.head.method)
    }
    pub fn raw_target(&self) -> &[u8] {
        self.bytes(self.head.target.raw)
    }
    pub fn path(&self) -> &[u8] {
        self.bytes(self.head.target.path)
    }
    pub fn query(&self) -> &[u8] {
        self.bytes(self.head.target.query)
    }
    pub fn version(&self) -> Version {
        self.head.version
    }
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.head
            .headers
            .iter()
            .map(|h| (self.bytes(h.name), self.bytes(h.value)))
    }
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
    pub fn host(&self) -> Option<&[u8]> {
        self.head.framing.host.map(|s| self.bytes(s))
    }
    pub fn content_type(&self) -> Option<&[u8]> {
        self.head.framing.content_type.map(|s| self.bytes(s))
    }
    pub fn content_length(&self) -> Option<&[u8]> {
        self.head.framing.content_length.map(|s| self.bytes(s))
    }
    pub fn peer(&self) -> Peer {
        self.conn.peer
    }
    pub fn local(&self) -> &Local {
        &self.shared.locals[self.conn.listener]
    }
    pub fn is_https(&self) -> bool {
        self.https
    }
    pub fn config(&self) -> &crate::ServerConfig {
        &self.shared.config
    }
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// A field of the response sent, when the access log asked for them to be kept.
    pub fn response_header(&self, name: &[u8]) -> Option<&[u8]> {
        let head = self.response_head.as_deref()?;
        head.split(|&b| b == b'\n').skip(1).find_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            line[..colon]
                .eq_ignore_ascii_case(name)
                .then(|| line[colon + 1..].trim_ascii())
        })
    }

    // ---- the request body ----

    /// Returns body bytes that have arrived, waiting for some if none have; an empty
    /// slice means the body has ended. Call [`Exchange::consume`] for what was used.
    pub fn fill_body(&mut self, park: &dyn Park) -> Result<&[u8], Error> {
        while self.avail.is_empty() && !self.body.is_done() {
            let step = self.body.decode(&self.conn.buf[self.pos..])?;
            let base = self.pos;
            self.pos += step.consumed;
            if !step.data.is_empty() {
                self.avail = base + step.data.start..base + step.data.end;
                break;
            }
            if step.consumed == 0 && !step.done {
                self.read_more(park)?;
            }
        }
        Ok(&self.conn.buf[self.avail.clone()])
    }

    /// Marks `n` bytes of what [`Exchange::fill_body`] returned as used.
    pub fn consume(&mut self, n: usize) {
        self.avail.start = (self.avail.start + n).min(self.avail.end);
    }

    fn read_more(&mut self, park: &dyn Park) -> Result<(), Error> {
        if self.continue_pending {
            self.continue_pending = false;
            let msg: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
            send(&mut self.conn, &[msg], park, self.shared.config.io_timeout)?;
        }
        // Body bytes already handed out are dropped so the buffer does not grow with the body.
        if self.pos == self.conn.buf.len() && self.pos > self.head.len {
            self.conn.buf.truncate(self.head.len);
            self.pos = self.head.len;
            self.avail = self.pos..self.pos;
        }
        let timeout = self.shared.config.io_timeout;
        loop {
            match self.conn.read_some() {
                Ok(0) => return Err(Error::Parse(self.body.eof_error())),
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let fd = self.conn.stream.fd();
                    let ready = park.park(&mut || sys::wait_ready(fd, Interest::Read, timeout))?;
                    if !ready {
                        return Err(Error::Timeout(Phase::Body));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    // ---- the response ----

    /// True once the status line and fields are committed: `exc_info` must then re-raise.
    pub fn head_sent(&self) -> bool {
        matches!(self.response, Response::Body { .. } | Response::Done)
    }

    /// Starts a head with the app's status (`"200 OK"`).
    pub fn begin_head(&mut self, status: &[u8]) -> Result<(), Error> {
        if self.head_sent() {
            return Err(Error::Protocol("response head already sent"));
        }
        let code = parse_status(status)?;
        self.out.truncate(self.mark);
        write_status_line(&mut self.out, self.head.version, status);
        self.response = Response::Building {
            code,
            declared: None,
            server: false,
            date: false,
        };
        Ok(())
    }

    /// Adds one of the app's fields after checking it.
    pub fn add_header(&mut self, name: &[u8], value: &[u8]) -> Result<(), Error> {
        let Response::Building {
            declared,
            server,
            date,
            ..
        } = &mut self.response
        else {
            return Err(Error::Protocol("header added outside a response head"));
        };
        match classify_field(name, value)? {
            FieldKind::ContentLength(n) => {
                if declared.replace(n).is_some_and(|old| old != n) {
                    return Err(Error::Protocol("two different Content-Length headers"));
                }
            }
            FieldKind::Server => *server = true,
            FieldKind::Date => *date = true,
            FieldKind::Other => {}
        }
        ferrule_http::write_field(&mut self.out, name, value);
        Ok(())
    }

    /// Ends the head. `known_len` is the body size when the server already holds all of it.
    pub fn end_head(&mut self, known_len: Option<u64>) -> Result<(), Error> {
        let Response::Building {
            code,
            declared,
            server,
            date,
        } = self.response
        else {
            return Err(Error::Protocol("end of a head that was not begun"));
        };
        let head_req = self.method() == b"HEAD";
        let framing = choose_framing(self.head.version, head_req, code, declared, known_len);
        if matches!(framing, ResponseFraming::Close) || self.shared.stopping() {
            self.keep_alive = false;
        }
        if !server {
            ferrule_http::write_field(&mut self.out, b"Server", b"ferrule");
        }
        if !date {
            with_date(|d| ferrule_http::write_field(&mut self.out, b"Date", d.as_bytes()));
        }
        // Declared lengths are kept for HEAD and for 304 (they describe the GET).
        let declared_kept = declared.is_some();
        let framing = match (framing, declared) {
            (ResponseFraming::Length(n), None) if head_req => {
                ferrule_http::write_field(
                    &mut self.out,
                    b"Content-Length",
                    itoa::Buffer::new().format(n).as_bytes(),
                );
                ResponseFraming::NoBody
            }
            (ResponseFraming::Length(_), Some(_)) if head_req => ResponseFraming::NoBody,
            (f, _) => f,
        };
        finish_head(
            &mut self.out,
            framing,
            declared_kept,
            self.keep_alive,
            self.head.version,
        );
        if self
            .shared
            .access
            .as_ref()
            .is_some_and(|a| a.wants_response_headers())
        {
            self.response_head = Some(self.out.clone());
        }
        self.outcome.status = code;
        self.response = Response::Body {
            framing,
            declared: declared_kept,
            sent: 0,
        };
        Ok(())
    }

    /// Forgets a head that was being built (an app error before any body).
    pub fn abort_head(&mut self) {
        if matches!(self.response, Response::Building { .. }) {
            self.out.truncate(self.mark);
            self.response = Response::Pending;
        }
    }

    /// Sends body bytes. With `flush` false they may wait in the buffer for more.
    pub fn write_body(&mut self, data: &[u8], flush: bool, park: &dyn Park) -> Result<(), Error> {
        let Response::Body { framing, sent, .. } = &mut self.response else {
            return Err(Error::Protocol("body written before the head"));
        };
        let data = match *framing {
            ResponseFraming::Length(n) => {
                let room = n - *sent;
                if data.len() as u64 > room {
                    self.outcome.length_mismatch = true;
                    self.keep_alive = false;
                }
                &data[..data.len().min(room as usize)]
            }
            ResponseFraming::NoBody => &[][..],
            _ => data,
        };
        *sent += data.len() as u64;
        self.outcome.body_bytes += data.len() as u64;
        let chunked = *framing == ResponseFraming::Chunked;
        let timeout = self.shared.config.io_timeout;
        if data.len() >= ZERO_COPY_MIN {
            let crlf: &[u8] = if chunked { b"\r\n" } else { b"" };
            if chunked {
                self.out
                    .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            }
            self.cork_before_block();
            let out = std::mem::take(&mut self.out);
            let r = send(&mut self.conn, &[&out, data, crlf], park, timeout);
            self.out = out;
            self.out.clear();
            self.mark = 0;
            self.cork_after_block();
            return r;
        }
        if chunked {
            write_chunk(&mut self.out, data);
        } else {
            self.out.extend_from_slice(data);
        }
        // A block that completes the declared length is the whole response, not a
        // block the app is still following up: it may wait like any complete one.
        let complete = matches!(self.response, Response::Body { framing: ResponseFraming::Length(n), sent, .. } if sent == n);
        if flush && !(complete && self.may_defer()) {
            self.cork_before_block();
            self.flush(park)?;
            self.cork_after_block();
        }
        Ok(())
    }

    /// Whether a complete response may wait in the buffer (see `finish`).
    fn may_defer(&self) -> bool {
        self.defer && self.keep_alive && !self.shared.stopping()
    }

    /// Sends a regular file's bytes with sendfile(2). Returns `Ok(false)` when the
    /// framing needs the bytes copied (chunked), so the caller falls back to reads.
    pub fn send_file(
        &mut self,
        file: std::os::fd::RawFd,
        offset: u64,
        len: u64,
        park: &dyn Park,
    ) -> Result<bool, Error> {
        let Response::Body { framing, sent, .. } = self.response else {
            return Err(Error::Protocol("body written before the head"));
        };
        let len = match framing {
            ResponseFraming::Length(n) => len.min(n - sent),
            ResponseFraming::NoBody => 0,
            _ => return Ok(false),
        };
        self.flush(park)?;
        let (mut off, end) = (offset as i64, (offset + len) as i64);
        let timeout = self.shared.config.io_timeout;
        let sock = self.conn.stream.fd();
        // The whole copy happens with the lock parked: it may take a while.
        let mut result: Result<(), Error> = Ok(());
        park.park(&mut || {
            while off < end {
                let count = (end - off) as usize;
                match sys::sendfile(sock, file, &mut off, count) {
                    Ok(0) => {
                        result = Err(Error::Protocol("file shorter than its length"));
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if !sys::wait_ready(sock, Interest::Write, timeout)? {
                            result = Err(Error::Timeout(Phase::Send));
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        result = Err(e.into());
                        break;
                    }
                }
            }
            Ok(true)
        })?;
        let done = (off - offset as i64) as u64;
        if let Response::Body { sent, .. } = &mut self.response {
            *sent += done;
        }
        self.outcome.body_bytes += done;
        result.map(|()| true)
    }

    /// Writes whatever is buffered.
    pub fn flush(&mut self, park: &dyn Park) -> Result<(), Error> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let r = send(&mut self.conn, &[&out], park, self.shared.config.io_timeout);
        self.out = out;
        self.out.clear();
        self.mark = 0;
        r
    }

    /// Ends the body (last chunk) and flushes. A body shorter than its declared
    /// length is logged by the caller and the connection is closed.
    pub fn finish(&mut self, park: &dyn Park) -> Result<(), Error> {
        if let Response::Body { framing, sent, .. } = self.response {
            match framing {
                ResponseFraming::Chunked => self.out.extend_from_slice(LAST_CHUNK),
                ResponseFraming::Length(n) if sent < n => {
                    self.outcome.length_mismatch = true;
                    self.keep_alive = false;
                }
                _ => {}
            }
            self.response = Response::Done;
        }
        let corked = self.cork == CorkState::Held;
        if self.may_defer() && !corked {
            // The whole response is here and other connections are ready: the
            // serving thread writes it after them, in one burst (`serve.rs`).
            return Ok(());
        }
        let r = self.flush(park);
        self.uncork();
        r
    }

    /// Answers with an error status the server writes itself (400, 408, 413, 500...).
    pub fn respond_error(&mut self, status: u16, park: &dyn Park) -> Result<(), Error> {
        if self.head_sent() {
            return Err(Error::Protocol("response head already sent"));
        }
        self.keep_alive = false;
        self.out.truncate(self.mark);
        with_date(|d| {
            self.out
                .extend_from_slice(&error_response(status, self.head.version, d))
        });
        self.outcome.status = status;
        self.response = Response::Done;
        self.flush(park)
    }

    /// Says the connection must close after this response.
    pub fn close_after(&mut self) {
        self.keep_alive = false;
    }

    /// Hands the connection back for the next request, or `None` when it must close.
    /// A response left in the buffer (see `finish`) travels with the connection.
    pub(crate) fn into_conn(mut self: Box<Self>, park: &dyn Park) -> Option<Conn> {
        let reusable =
            matches!(self.response, Response::Done) && self.keep_alive && !self.shared.stopping();
        if !reusable || !self.drain() {
            let _ = self.flush(park);
            return None;
        }
        let used = self.pos;
        self.conn.buf.drain(..used);
        self.conn.out = std::mem::take(&mut self.out);
        self.conn.scanned = 0;
        Some(self.conn)
    }

    /// Reads and discards a small unread body so the connection can be reused.
    fn drain(&mut self) -> bool {
        let mut budget = DRAIN_LIMIT;
        loop {
            self.avail = self.pos..self.pos;
            if self.body.is_done() {
                return true;
            }
            let Ok(step) = self.body.decode(&self.conn.buf[self.pos..]) else {
                return false;
            };
            self.pos += step.consumed;
            if step.data.len() > budget {
                return false;
            }
            budget -= step.data.len();
            if step.consumed == 0 && !step.done {
                if self.pos == self.conn.buf.len() {
                    self.conn.buf.truncate(self.head.len);
                    self.pos = self.head.len;
                }
                match self.conn.read_some() {
                    Ok(n) if n > 0 => {}
                    _ => return false,
                }
            }
        }
    }
}

/// Writes every part (at most [`MAX_PARTS`]), waiting (parked) while the socket is
/// full. One part left goes out with `send(2)`, several with one `writev(2)`; nothing
/// is allocated.
fn send(
    conn: &mut Conn,
    parts: &[&[u8]],
    park: &dyn Park,
    timeout: std::time::Duration,
) -> Result<(), Error> {
    let mut left: [&[u8]; MAX_PARTS] = [&[]; MAX_PARTS];
    let mut count = 0;
    for p in parts.iter().filter(|p| !p.is_empty()) {
        left[count] = p;
        count += 1;
    }
    let mut first = 0;
    while first < count {
        let result = if first + 1 == count {
            conn.stream.send(left[first])
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_PARTS];
            for (s, p) in slices.iter_mut().zip(&left[first..count]) {
                *s = IoSlice::new(p);
            }
            conn.stream.write_vectored(&slices[..count - first])
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
                let fd = conn.stream.fd();
                if !park.park(&mut || sys::wait_ready(fd, Interest::Write, timeout))? {
                    return Err(Error::Timeout(Phase::Send));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl Conn {
    /// Writes responses left in `out` (waiting, without any lock held, while the
    /// socket is full). False when the client is gone or too slow.
    pub(crate) fn flush_out(&mut self, timeout: std::time::Duration, park: &dyn Park) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let out = std::mem::take(&mut self.out);
        let ok = send(self, &[&out], park, timeout).is_ok();
        self.out = out;
        self.out.clear();
        ok
    }

    /// One non-blocking read into the buffer. Records whether the socket is known to be
    /// empty now: edge-triggered epoll reports only bytes that arrive later.
    pub(crate) fn read_some(&mut self) -> io::Result<usize> {
        let got = sys::read_append(self.stream.fd(), &mut self.buf, 4096, 16 * 1024);
        self.drained = match &got {
            // A read that filled the buffer may have left more behind.
            Ok(_) => self.buf.len() < self.buf.capacity(),
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        };
        got
    }
}
