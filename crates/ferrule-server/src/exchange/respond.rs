//! The response side of an [`Exchange`]: the head the app starts, its body blocks,
//! files, corking of streamed blocks, and the writes to the socket.

use super::{ClientWait, Exchange, Response};
use crate::blocking::Blocking;
use crate::conn::error_answer;
use crate::cork::CorkState;
use crate::date::add_server_fields;
use crate::error::{Error, Phase};
use crate::protocol::Protocol;
use crate::timing::{has_server_timing, server_timing_value, ServerTiming};
use crate::transport::{Interest, Sendfile};
use ferrule_http::{
    choose_framing, classify_field, finish_head, parse_status, write_chunk, write_status_line,
    CheckedField, FieldKind, ResponseFraming, LAST_CHUNK,
};
use std::time::Instant;

const OUTSIDE_HEAD: Error = Error::Protocol("header added outside a response head");

/// Bodies at least this large are written from the app's buffer instead of copied.
const ZERO_COPY_MIN: usize = 16 * 1024;

impl Exchange {
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
        if !matches!(self.response, Response::Building { .. }) {
            return Err(OUTSIDE_HEAD);
        }
        self.note_field(classify_field(name, value)?)?;
        ferrule_http::write_field(&mut self.out, name, value);
        Ok(())
    }

    /// Adds a field checked before (the app sent the very same field again).
    pub fn add_checked(&mut self, field: &CheckedField) -> Result<(), Error> {
        self.note_field(field.kind())?;
        self.out.extend_from_slice(field.line());
        Ok(())
    }

    /// Records what a field of the head being built means to the server.
    fn note_field(&mut self, kind: FieldKind) -> Result<(), Error> {
        let Response::Building {
            declared,
            server,
            date,
            ..
        } = &mut self.response
        else {
            return Err(OUTSIDE_HEAD);
        };
        match kind {
            FieldKind::ContentLength(n) => {
                if declared.replace(n).is_some_and(|old| old != n) {
                    return Err(Error::Protocol("two different Content-Length headers"));
                }
            }
            FieldKind::Server => *server = true,
            FieldKind::Date => *date = true,
            FieldKind::Other => {}
        }
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
        if self.shared.observe.server_timing != ServerTiming::Off {
            self.add_server_timing();
        }
        if self.protocol == Protocol::Uwsgi {
            return self.end_uwsgi_head(code, declared, known_len);
        }
        let head_req = self.method() == b"HEAD";
        let framing = choose_framing(self.head.version, head_req, code, declared, known_len);
        if matches!(framing, ResponseFraming::Close)
            || (self.shared.stopping() && !self.next_request_here())
        {
            self.keep_alive = false;
        }
        add_server_fields(&mut self.out, server, date);
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
        self.head_ended(code, framing, declared_kept);
        Ok(())
    }

    /// `--server-timing`: the queue wait and the app's time so far, unless the app
    /// sent its own field and the setting is `on` rather than `always`.
    #[cold]
    fn add_server_timing(&mut self) {
        let Some(t) = &mut self.timing else { return };
        let now = Instant::now();
        t.head_at = Some(now);
        let (queue, app) = (t.queue, now.saturating_duration_since(t.app_start));
        if self.shared.observe.server_timing == ServerTiming::On
            && has_server_timing(&self.out[self.mark..])
        {
            return;
        }
        let value = server_timing_value(queue, app);
        ferrule_http::write_field(&mut self.out, b"Server-Timing", value.as_bytes());
    }

    /// The head is complete in `out`: the body follows.
    #[inline(always)]
    pub(super) fn head_ended(&mut self, code: u16, framing: ResponseFraming, declared: bool) {
        if let Some(t) = &mut self.timing {
            if t.head_at.is_none() && self.shared.observe.head_time() {
                t.head_at = Some(Instant::now());
            }
        }
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
            declared,
            sent: 0,
        };
    }

    /// Bytes of a next request already arrived behind this one (pipelined): while the
    /// server drains, that request is answered too, and the last one closes.
    fn next_request_here(&self) -> bool {
        self.body.is_done() && self.conn.buf.len() > self.pos
    }

    /// Forgets a head that was being built (an app error before any body).
    pub fn abort_head(&mut self) {
        if matches!(self.response, Response::Building { .. }) {
            self.out.truncate(self.mark);
            self.response = Response::Pending;
        }
    }

    /// Sends body bytes. With `flush` false they may wait in the buffer for more.
    pub fn write_body(
        &mut self,
        data: &[u8],
        flush: bool,
        blocking: &dyn Blocking,
    ) -> Result<(), Error> {
        let Response::Body { framing, sent, .. } = &mut self.response else {
            return Err(Error::Protocol("body written before the head"));
        };
        // A block from the app: `--timeout` counts again from here.
        self.shared.progress.made(self.shared.me());
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
            self.claim()?;
            self.cork_before_block();
            // The block that fills the declared length ends the answer: what a full
            // socket does not take may go to the server's buffer (`Conn::send`).
            let spill = match self.response {
                Response::Body {
                    framing: ResponseFraming::Length(n),
                    sent,
                    ..
                } if sent == n => self.shared.config.response_buffer_size,
                _ => 0,
            };
            let out = std::mem::take(&mut self.out);
            let blocking = &ClientWait::new(blocking, &self.shared.progress, self.shared.me());
            let r = self.conn.send([&out, data, crlf], blocking, timeout, spill);
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
            self.flush_with(blocking, self.spill_if(complete))?;
            self.cork_after_block();
        }
        Ok(())
    }

    /// Whether a complete response may wait in the buffer (see `finish`).
    fn may_defer(&self) -> bool {
        self.defer && self.keep_alive && !self.shared.stopping()
    }

    /// Sends a regular file's bytes with sendfile(2). Returns `Ok(false)` when the
    /// framing needs the bytes copied (chunked), or the transport cannot send a file
    /// (it says so at its first call, before any byte), so the caller falls back to reads.
    pub fn send_file(
        &mut self,
        file: std::os::fd::RawFd,
        offset: u64,
        len: u64,
        blocking: &dyn Blocking,
    ) -> Result<bool, Error> {
        let Response::Body { framing, sent, .. } = self.response else {
            return Err(Error::Protocol("body written before the head"));
        };
        let len = match framing {
            ResponseFraming::Length(n) => len.min(n - sent),
            ResponseFraming::NoBody => 0,
            // The body ends with the connection: the file's bytes go as they are.
            ResponseFraming::Close => len,
            ResponseFraming::Chunked => return Ok(false),
        };
        self.claim()?;
        self.shared.progress.made(self.shared.me());
        self.flush(blocking)?;
        let (mut off, end) = (offset as i64, (offset + len) as i64);
        let timeout = self.shared.config.io_timeout;
        let transport = &self.conn.transport;
        // The whole copy happens with the lock let go: it may take a while, at the
        // client's pace (a wait `--timeout` does not count).
        let mut result: Result<bool, Error> = Ok(true);
        let blocking = ClientWait::new(blocking, &self.shared.progress, self.shared.me());
        blocking.block(&mut || {
            while off < end {
                let count = (end - off) as usize;
                match transport.sendfile(file, &mut off, count) {
                    Ok(Sendfile::Sent(0)) => {
                        result = Err(Error::Protocol("file shorter than its length"));
                        break;
                    }
                    Ok(Sendfile::Sent(_)) => {}
                    Ok(Sendfile::WouldBlock) => {
                        if !transport.wait(Interest::Write, timeout)? {
                            result = Err(Error::Timeout(Phase::Send));
                            break;
                        }
                    }
                    Ok(Sendfile::Unsupported) => {
                        result = Ok(false);
                        break;
                    }
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
        result
    }

    /// Writes whatever is buffered.
    #[inline]
    pub fn flush(&mut self, blocking: &dyn Blocking) -> Result<(), Error> {
        self.flush_with(blocking, 0)
    }

    /// The most bytes of a complete answer a full socket may leave to the server.
    #[inline]
    fn spill_if(&self, complete: bool) -> usize {
        match complete {
            true => self.shared.config.response_buffer_size,
            false => 0,
        }
    }

    /// Writes whatever is buffered; `spill` as in `Conn::send`.
    #[inline]
    fn flush_with(&mut self, blocking: &dyn Blocking, spill: usize) -> Result<(), Error> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.claim()?;
        let out = std::mem::take(&mut self.out);
        let timeout = self.shared.config.io_timeout;
        let blocking = &ClientWait::new(blocking, &self.shared.progress, self.shared.me());
        let r = self.conn.send([&out], blocking, timeout, spill);
        self.out = out;
        self.out.clear();
        self.mark = 0;
        r
    }

    /// Ends the body (last chunk) and flushes. A body shorter than its declared
    /// length is logged by the caller and the connection is closed.
    pub fn finish(&mut self, blocking: &dyn Blocking) -> Result<(), Error> {
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
            // serving thread writes it after them, in one burst (`driver/http1.rs`).
            return Ok(());
        }
        let r = self.flush_with(blocking, self.shared.config.response_buffer_size);
        self.uncork();
        r
    }

    /// Answers with an error status the server writes itself (400, 408, 413, 500...).
    pub fn respond_error(&mut self, status: u16, blocking: &dyn Blocking) -> Result<(), Error> {
        if self.head_sent() {
            return Err(Error::Protocol("response head already sent"));
        }
        self.keep_alive = false;
        self.out.truncate(self.mark);
        let answer = error_answer(status, self.head.version, self.protocol);
        self.out.extend_from_slice(&answer);
        self.outcome.status = status;
        self.response = Response::Done;
        self.flush_with(blocking, self.shared.config.response_buffer_size)
    }

    /// Says the connection must close after this response.
    pub fn close_after(&mut self) {
        self.keep_alive = false;
    }
}
