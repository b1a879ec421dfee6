//! The request body of an [`Exchange`]: what the app reads of it, the reads from the
//! socket it needs (with `100 Continue` first when the client waits for it), and
//! the skip of an unread body so the connection can carry another request.

use super::{ClientWait, Exchange, Interim};
use crate::blocking::Blocking;
use crate::conn::Stage;
use crate::error::{Error, Phase};
use crate::transport::{Interest, ReadOutcome};

/// Unread body bytes the server reads from the socket and discards to keep a
/// connection alive (bytes already read ahead into memory are skipped at no cost).
const DRAIN_LIMIT: usize = 64 * 1024;

impl Exchange {
    /// Returns body bytes that have arrived, waiting for some if none have; an empty
    /// slice means the body has ended. Call [`Exchange::consume`] for what was used.
    pub fn fill_body(&mut self, blocking: &dyn Blocking) -> Result<&[u8], Error> {
        // A body read ahead into a file (`preread.rs`): its head says no body is left
        // in the socket, and the app reads the file.
        if let Stage::ReadAhead(Some(_)) = self.conn.stage {
            return match &mut self.conn.stage {
                Stage::ReadAhead(Some(spill)) => spill.fill(),
                _ => Ok(&[]),
            };
        }
        while self.avail.is_empty() && !self.body.is_done() {
            let step = self.body.decode(&self.conn.buf[self.pos..])?;
            let base = self.pos;
            self.pos += step.consumed;
            if !step.data.is_empty() {
                self.avail = base + step.data.start..base + step.data.end;
                break;
            }
            if step.consumed == 0 && !step.done {
                self.read_more(blocking)?;
            }
        }
        Ok(&self.conn.buf[self.avail.clone()])
    }

    /// Marks `n` bytes of what [`Exchange::fill_body`] returned as used.
    pub fn consume(&mut self, n: usize) {
        if let Stage::ReadAhead(Some(spill)) = &mut self.conn.stage {
            return spill.consume(n);
        }
        self.avail.start = (self.avail.start + n).min(self.avail.end);
    }

    fn read_more(&mut self, blocking: &dyn Blocking) -> Result<(), Error> {
        // `100 Continue` is 25 bytes before the app answers: a wait on it is rare (the
        // seat is lent to `interim` here, so such a wait is not marked as the client's).
        // Not once the answer is complete and waiting for the server to write it.
        if self.interim == Interim::ContinueOwed && !self.conn.writing() {
            self.interim = Interim::None;
            let msg: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
            let timeout = self.shared.config.io_timeout;
            let mut sent = Ok(());
            let conn = &mut self.conn;
            if !self.shared.interim(|| {
                sent = conn.send([msg], blocking, timeout, 0);
                sent.is_ok()
            }) {
                sent?;
                return Err(self.lost());
            }
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
                Ok(ReadOutcome::Eof) => return Err(Error::Parse(self.body.eof_error())),
                Ok(ReadOutcome::Data(_)) => return Ok(()),
                Ok(ReadOutcome::WouldBlock) => {
                    let t = &self.conn.transport;
                    let blocking =
                        ClientWait::new(blocking, &self.shared.progress, self.shared.me());
                    let ready = blocking.block(&mut || t.wait(Interest::Read, timeout))?;
                    if !ready {
                        return Err(Error::Timeout(Phase::Body));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Skips an unread body so the connection can be reused: what is in memory at
    /// once, what is still in the socket up to `DRAIN_LIMIT`.
    pub(super) fn drain(&mut self) -> bool {
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
            if step.consumed == 0 && !step.done {
                if self.pos == self.conn.buf.len() {
                    self.conn.buf.truncate(self.head.len);
                    self.pos = self.head.len;
                }
                // Bytes already in memory (a body read ahead) are skipped for free;
                // only what must still come from the socket is bounded.
                match self.conn.read_some() {
                    Ok(ReadOutcome::Data(n)) if n <= budget => budget -= n,
                    _ => return false,
                }
            }
        }
    }
}
