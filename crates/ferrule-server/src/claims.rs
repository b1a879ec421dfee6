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

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Mutex;

/// A slot's value: the runner's number in the top 32 bits (so an exchange finds its slot
/// from the value alone), 30 bits counting the runner's requests (so a value names one
/// request), and a state in the low two bits.
pub(crate) const OURS: u64 = 0;
pub(crate) const OPEN: u64 = 1;
/// Only in an exchange's copy: the timeout answered.
pub(crate) const LOST: u64 = 2;
const TIMED_OUT: u64 = 3;
pub(crate) const STATE: u64 = 3;
const SEQ: u64 = 0x3fff_ffff;

struct Slot {
    value: AtomicU64,
    /// The socket of the request the value names while it is open.
    fd: AtomicI32,
}

pub(crate) struct Claims {
    slots: Vec<Slot>,
    /// Held while the timeout writes its answer; an app's side that lost its answer
    /// takes it once before its socket may close.
    writing: Mutex<()>,
}

impl Claims {
    pub(crate) fn new(runners: usize) -> Claims {
        Claims {
            slots: (0..runners.max(1))
                .map(|_| Slot {
                    value: AtomicU64::new(0),
                    fd: AtomicI32::new(-1),
                })
                .collect(),
            writing: Mutex::new(()),
        }
    }

    /// Runner `me` starts a request on socket `fd` with nothing of its answer sent;
    /// returns the value that names it.
    pub(crate) fn open(&self, me: usize, fd: RawFd) -> u64 {
        let Some(slot) = self.slots.get(me) else {
            return ((me as u64) << 32) | OURS;
        };
        // Only runner `me` stores here: plain loads and stores, no read-modify-write.
        let seq = ((slot.value.load(Ordering::Relaxed) >> 2) + 1) & SEQ;
        slot.fd.store(fd, Ordering::Relaxed);
        let value = ((me as u64) << 32) | (seq << 2) | OPEN;
        slot.value.store(value, Ordering::Release);
        value
    }

    /// The app's side takes the answer of the request `open` names: true when it is
    /// its to send, false when the timeout answered it (after that write ended).
    #[inline]
    pub(crate) fn take(&self, open: u64) -> bool {
        let Some(slot) = self.slots.get((open >> 32) as usize) else {
            return true;
        };
        let won = slot
            .value
            .compare_exchange(open, open & !STATE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !won {
            self.wait_for_writer();
        }
        won
    }

    #[cold]
    fn wait_for_writer(&self) {
        drop(self.writing.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Gives back an answer taken only for an interim response (`100 Continue`).
    pub(crate) fn reopen(&self, open: u64) {
        self.slots[(open >> 32) as usize]
            .value
            .store(open, Ordering::Release);
    }

    /// Answers `response` on the socket of runner `me`'s request if that request is
    /// still the one `old` says is over the limit and nothing of its answer was sent;
    /// then ends the socket's writing side. True when it answered.
    pub(crate) fn time_out(&self, me: usize, old: impl Fn() -> bool, response: &[u8]) -> bool {
        let slot = &self.slots[me];
        let value = slot.value.load(Ordering::Acquire);
        // The age is read after the slot: a request that ended since has either a
        // new value (the exchange below fails) or an age that is young again.
        if value & STATE != OPEN || !old() {
            return false;
        }
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let taken = slot
            .value
            .compare_exchange(
                value,
                value | TIMED_OUT,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if taken {
            // Still this request's socket: the runner starts no other request, and the
            // app's side closes none, before it has settled this one (after
            // `_writing` is released).
            crate::transport::send_and_shut(slot.fd.load(Ordering::Relaxed), response);
        }
        taken
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
            !claims.take(open),
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
        assert!(claims.take(first));
        assert!(!claims.time_out(0, || true, b"500"));
        // The runner's next request on the same socket has another value: a timeout
        // that read the first one cannot take the second.
        let second = claims.open(0, server.as_raw_fd());
        assert_ne!(first, second);
        assert!(!claims.take(first));
        claims.reopen(second);
        assert!(claims.take(second));
    }
}
