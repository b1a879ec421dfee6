//! An exchange's hold on the server's shared state and its claim on the answer
//! (the slots themselves are in `claims.rs`).

use crate::claims::{LOST, OPEN, OURS, STATE};
use crate::shared::Shared;
use std::ops::Deref;
use std::os::fd::RawFd;
use std::sync::Arc;

/// The server's shared state as an exchange holds it, with its claim on the answer: a
/// copy of its runner's slot value (`OPEN` while the timeout may still take the answer,
/// `OURS` once the app's side has it, also when earlier answers wait in the
/// connection's buffer, since a 500 written before them would answer the wrong
/// request; `LOST` once the timeout answered). Dropping it settles the claim, so an
/// exchange dropped anywhere never closes its socket while the timeout writes to it:
/// it is the first field of `Exchange` and fields drop in order.
pub(crate) struct Seat {
    shared: Arc<Shared>,
    answer: u64,
}

impl Seat {
    /// Runner `me`'s seat, its answer not open to the timeout yet (see `open`).
    #[inline]
    pub(crate) fn new(shared: Arc<Shared>, me: usize) -> Seat {
        Seat {
            shared,
            answer: ((me as u64) << 32) | OURS,
        }
    }

    /// Opens the answer to the timeout: the request is on socket `fd` and nothing of
    /// an earlier answer waits to be written on its connection.
    #[inline]
    pub(crate) fn open(&mut self, fd: RawFd) {
        self.answer = self.shared.claims.open(self.me(), fd);
    }

    /// The runner serving the request (its slot here and in `Shared::corks`).
    #[inline]
    pub(crate) fn me(&self) -> usize {
        (self.answer >> 32) as usize
    }

    /// Takes the answer for the app before its first byte goes out: false when the
    /// timeout has answered instead.
    #[inline]
    pub(crate) fn claim(&mut self) -> bool {
        match self.answer & STATE {
            OURS => true,
            OPEN => {
                let won = self.shared.claims.take(self.answer);
                self.answer = (self.answer & !STATE) | if won { OURS } else { LOST };
                won
            }
            _ => false,
        }
    }

    /// Like `claim`, for an interim response: the final answer stays open.
    pub(crate) fn interim(&mut self, send: impl FnOnce() -> bool) -> bool {
        match self.answer & STATE {
            OPEN => {
                if !self.shared.claims.take(self.answer) {
                    self.answer = (self.answer & !STATE) | LOST;
                    return false;
                }
                let ok = send();
                self.shared.claims.reopen(self.answer);
                ok
            }
            OURS => send(),
            _ => false,
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
