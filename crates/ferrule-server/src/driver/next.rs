//! What a connection does after a request: one decision, for every driver.
//!
//! The exchange reports how the request left the connection ([`Ended`]: facts, not
//! choices); [`next`] turns that and the connection's state into a [`Next`] step, and
//! the driver acts on it. A connection whose answer waits for room in its socket
//! carries the step that follows the last byte in its stage (`Stage::Writing`'s
//! `then`), which `writing.rs` acts on once the answer is out.

use crate::conn::{Conn, Then};
use crate::exchange::Ended;
use crate::shared::Shared;

/// What a connection does once its request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// A pipelined request is in the buffer: serve it now.
    Pipelined,
    /// Nothing pipelined: epoll says when the next request arrives, which saves a
    /// read that would find nothing.
    Park,
    /// Its complete answer waits in its buffer (deferred by `Exchange::finish`): the
    /// runner holds it and writes it with others (`held.rs`).
    Hold,
    /// Its answer waits for room in the socket (`writing.rs`); `then` follows the
    /// last byte. Pipelined requests wait until it is out.
    WriteOut { then: Then },
    /// Draining, and the client sent more after the request whose answer said
    /// close: that answer must not be reset (`Conn::linger`).
    Linger,
    /// Closes now.
    Close,
}

/// The step after a request. A few compares on the usual path (`Reusable`, nothing
/// pipelined): inlined into the driver's loop.
#[inline(always)]
pub(crate) fn next(conn: &Conn, ended: Ended, shared: &Shared) -> Next {
    match ended {
        Ended::Reusable if conn.writing() => Next::WriteOut { then: Then::Serve },
        Ended::Reusable if !conn.buf.is_empty() => Next::Pipelined,
        Ended::Reusable if !conn.out.is_empty() => Next::Hold,
        Ended::Reusable => Next::Park,
        Ended::Closing { more } => closing(conn, more && shared.stopping()),
    }
}

/// A connection that cannot carry another request: it lingers when the server
/// drains and its client sent more, else closes; either once its answer is out.
#[cold]
fn closing(conn: &Conn, linger: bool) -> Next {
    match (conn.writing(), linger) {
        (true, true) => Next::WriteOut { then: Then::Linger },
        (true, false) => Next::WriteOut { then: Then::Close },
        (false, true) => Next::Linger,
        (false, false) => Next::Close,
    }
}
