//! Who answers a request: the app, or `--timeout` with a 500.
//!
//! When a request runs past `--timeout` before any byte of its answer was sent, the
//! worker answers it `500` itself, from the thread that noticed the timeout, while the
//! app's thread may still be running it. Each runner has a slot saying which socket its
//! current request is on and whether its answer is still open. The app's side takes the
//! answer with one compare-and-swap before its first byte (`Exchange::claim`); the
//! timeout takes it with the same compare-and-swap, so exactly one of them writes.
//! The app's side also settles the slot before its socket can close, and waits while
//! the timeout's write is under way, so that write never reaches a socket whose number
//! was meanwhile reused.

use crate::server::Shared;
use crate::sys;
use std::ops::Deref;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A slot's low two bits. Above them, 30 bits count the runner's requests (so a value
/// names one request), and the top 32 bits hold the socket's descriptor.
const OPEN: u64 = 1;
const APP: u64 = 2;
const TIMED_OUT: u64 = 3;
const STATE: u64 = 3;
const SEQ: u64 = 0x3fff_ffff;

pub(crate) struct Claims {
    slots: Vec<AtomicU64>,
    /// Held while the timeout writes its answer; an app's side that lost its answer
    /// takes it once before its socket may close.
    writing: Mutex<()>,
}

impl Claims {
    pub(crate) fn new(runners: usize) -> Claims {
        Claims {
            slots: (0..runners.max(1)).map(|_| AtomicU64::new(0)).collect(),
            writing: Mutex::new(()),
        }
    }

    /// Runner `me` starts a request on socket `fd` with nothing of its answer sent;
    /// returns the value that names it.
    fn open(&self, me: usize, fd: RawFd) -> u64 {
        let slot = &self.slots[me];
        // Only runner `me` stores here: a plain load and store, no read-modify-write.
        let seq = ((slot.load(Ordering::Relaxed) >> 2) + 1) & SEQ;
        let value = (u64::from(fd as u32) << 32) | (seq << 2) | OPEN;
        slot.store(value, Ordering::Release);
        value
    }

    /// The app's side takes the answer of the request `open` names: true when it is
    /// its to send, false when the timeout answered it (after that write ended).
    fn take(&self, me: usize, open: u64) -> bool {
        let won = self.slots[me]
            .compare_exchange(open, open ^ OPEN | APP, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !won {
            drop(self.writing.lock().unwrap_or_else(|p| p.into_inner()));
        }
        won
    }

    /// Gives back an answer taken only for an interim response (`100 Continue`).
    fn reopen(&self, me: usize, open: u64) {
        self.slots[me].store(open, Ordering::Release);
    }

    /// Answers `response` on the socket of runner `me`'s request if that request is
    /// still the one `old` says is over the limit and nothing of its answer was sent;
    /// then ends the socket's writing side. True when it answered.
    pub(crate) fn time_out(&self, me: usize, old: impl Fn() -> bool, response: &[u8]) -> bool {
        let slot = &self.slots[me];
        let value = slot.load(Ordering::Acquire);
        // The age is read after the slot: a request that ended since has either a
        // new value (the exchange below fails) or an age that is young again.
        if value & STATE != OPEN || !old() {
            return false;
        }
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let taken = slot
            .compare_exchange(
                value,
                value | TIMED_OUT,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if taken {
            // The app's side cannot close this socket before `_writing` is released.
            sys::send_and_shut((value >> 32) as u32 as RawFd, response);
        }
        taken
    }
}

/// What an exchange holds of its runner's slot, in one word: the value naming its
/// request while the timeout may still take the answer (state bits `OPEN`), `OURS` once
/// the app's side has it (also when earlier answers wait in the connection's buffer: a
/// 500 written before them would answer the wrong request), `LOST` once the timeout
/// answered. An open value has a sequence number of 1 or more, so it is never 0 or 2.
const OURS: u64 = 0;
const LOST: u64 = APP;

/// The server's shared state as an exchange holds it, with the claim on its answer.
/// Dropping it settles the claim, so an exchange dropped anywhere never closes its
/// socket while the timeout writes to it: it is the first field of `Exchange` and
/// fields drop in order.
pub(crate) struct Seat {
    shared: Arc<Shared>,
    answer: u64,
    /// The runner serving the request (its slot here and in `Shared::corks`).
    pub(crate) me: usize,
}

impl Seat {
    /// `fresh`: nothing of an earlier answer waits to be written on this connection.
    pub(crate) fn new(shared: Arc<Shared>, me: usize, fd: RawFd, fresh: bool) -> Seat {
        let answer = match fresh {
            true => shared.claims.open(me, fd),
            false => OURS,
        };
        Seat { shared, answer, me }
    }

    /// Takes the answer for the app before its first byte goes out: false when the
    /// timeout has answered instead.
    #[inline]
    pub(crate) fn claim(&mut self) -> bool {
        if self.answer != OURS {
            self.settle();
        }
        self.answer == OURS
    }

    #[cold]
    fn settle(&mut self) {
        if self.answer & STATE == OPEN {
            self.answer = match self.shared.claims.take(self.me, self.answer) {
                true => OURS,
                false => LOST,
            };
        }
    }

    /// Like `claim`, for an interim response: the final answer stays open.
    pub(crate) fn interim(&mut self, send: impl FnOnce() -> bool) -> bool {
        match self.answer {
            OURS => send(),
            LOST => false,
            open => {
                if !self.shared.claims.take(self.me, open) {
                    self.answer = LOST;
                    return false;
                }
                let ok = send();
                self.shared.claims.reopen(self.me, open);
                ok
            }
        }
    }
}

impl Deref for Seat {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Drop for Seat {
    #[inline]
    fn drop(&mut self) {
        self.claim();
    }
}

#[cfg(test)]
mod tests {
    use super::Claims;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (client, listener.accept().unwrap().0)
    }

    #[test]
    fn the_timeout_answers_an_open_request_and_the_app_then_loses_it() {
        let claims = Claims::new(2);
        let (mut client, server) = pair();
        let open = claims.open(1, server.as_raw_fd());
        assert!(
            !claims.time_out(1, || false, b"late"),
            "young request answered"
        );
        assert!(
            !claims.time_out(0, || true, b"idle"),
            "idle runner answered"
        );
        assert!(claims.time_out(1, || true, b"500"));
        assert!(!claims.time_out(1, || true, b"again"), "answered twice");
        assert!(
            !claims.take(1, open),
            "the app wrote after the timeout's answer"
        );
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(
            got, b"500",
            "the writing side was not shut after the answer"
        );
    }

    #[test]
    fn an_answer_the_app_took_or_a_later_request_is_not_timed_out() {
        let claims = Claims::new(1);
        let (_client, server) = pair();
        let first = claims.open(0, server.as_raw_fd());
        assert!(claims.take(0, first));
        assert!(!claims.time_out(0, || true, b"500"));
        // The runner's next request on the same socket has another value: a timeout
        // that read the first one cannot take the second.
        let second = claims.open(0, server.as_raw_fd());
        assert_ne!(first, second);
        assert!(!claims.take(0, first));
        claims.reopen(0, second);
        assert!(claims.take(0, second));
    }
}
