//! Corking a streamed response's blocks (`cork.rs` has why and the monitor's side):
//! what an [`Exchange`] does before and after each block and at the end.

use super::Exchange;
use crate::cork::CorkState;

impl Exchange {
    /// Before a streamed block is written: the second block corks the socket, and a
    /// held cork the monitor pushed meanwhile ends corking for this response.
    pub(super) fn cork_before_block(&mut self) {
        if self.conn.transport.cork_handle().is_none() {
            self.cork = CorkState::Off;
            return;
        }
        match self.cork {
            CorkState::FirstSent => {
                self.conn.transport.set_cork(true);
                self.cork = CorkState::Held;
            }
            CorkState::Held if !self.shared.corks.take(self.shared.me()) => {
                self.cork = CorkState::Off
            }
            _ => {}
        }
    }

    /// After a streamed block is written, before the app produces the next one.
    pub(super) fn cork_after_block(&mut self) {
        match (self.cork, self.conn.transport.cork_handle()) {
            (CorkState::Idle, _) => self.cork = CorkState::FirstSent,
            (CorkState::Held, Some(fd)) => self.shared.corks.hold(self.shared.me(), fd),
            _ => {}
        }
    }

    /// At the end of a response: sends what the cork holds, unless the monitor did.
    pub(super) fn uncork(&mut self) {
        if self.cork == CorkState::Held && self.shared.corks.take(self.shared.me()) {
            self.conn.transport.set_cork(false);
        }
        self.cork = CorkState::Off;
    }
}
