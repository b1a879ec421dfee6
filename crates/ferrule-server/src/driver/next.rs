//! What a connection does after a request: one decision, for every driver.
//!
//! The exchange reports how the request left the connection ([`Ended`]: facts, not
//! choices); [`next`] turns that and the connection's state into a [`Next`] step, and
//! the driver acts on it. A connection whose answer waits for room in its socket
//! carries the step that follows the last byte in its stage (`Stage::Writing`'s
//! `then`), which `writing.rs` acts on once the answer is out.

use crate::conn::{Conn, Then};
use crate::exchange::Ended;

/// What a connection does once its request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// A pipelined request is in the buffer: serve it now.
    Pipelined,
    /// Nothing pipelined: shelved in epoll, which says when the next request
    /// arrives (that saves a read that would find nothing).
    Shelve,
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
/// pipelined): inlined into the driver's loop. `stopping` (the server drains) is
/// asked only for a connection that closes.
#[inline(always)]
pub(crate) fn next(conn: &Conn, ended: Ended, stopping: impl FnOnce() -> bool) -> Next {
    match ended {
        Ended::Reusable if conn.writing() => Next::WriteOut { then: Then::Serve },
        Ended::Reusable if !conn.buf.is_empty() => Next::Pipelined,
        Ended::Reusable if conn.has_pending_output() => Next::Hold,
        Ended::Reusable => Next::Shelve,
        Ended::Closing { more } => closing(conn, more && stopping()),
    }
}

/// The step after a uwsgi connection's one request: it closes once its answer is
/// out, or lingers when the front server sent more than was read (a body the app
/// left unread). nginx reads an answer without a length until the connection
/// closes, and a close with unread bytes would reset the connection, which can
/// destroy the answer before nginx has read it: lingering shuts the writing side
/// (the end of the answer) and drops what still comes until nginx closes.
pub(crate) fn after_uwsgi(conn: &Conn, ended: Ended) -> Next {
    match ended {
        Ended::Closing { more } => closing(conn, more),
        // The head never allows another request (`ferrule_http::uwsgi_head`).
        Ended::Reusable => closing(conn, false),
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

#[cfg(test)]
mod tests {
    use super::{next, Next};
    use crate::clock::Tick;
    use crate::conn::{Conn, Stage, Then};
    use crate::exchange::Ended;
    use crate::listener::Peer;
    use crate::transport::Transport;
    use std::net::{TcpListener, TcpStream};

    fn conn() -> Box<Conn> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        Conn::new(Transport::Tcp(server), Peer::Tcp(peer), 0)
    }

    #[test]
    fn each_state_after_a_request_has_one_step() {
        let closing = |more| Ended::Closing { more };
        // (buffered request bytes, held answer bytes, answer left to the server,
        //  how the request ended, stopping) -> step
        let table = [
            (false, false, false, Ended::Reusable, false, Next::Shelve),
            (true, false, false, Ended::Reusable, false, Next::Pipelined),
            (true, true, false, Ended::Reusable, false, Next::Pipelined),
            (false, true, false, Ended::Reusable, false, Next::Hold),
            (
                true,
                true,
                true,
                Ended::Reusable,
                true,
                Next::WriteOut { then: Then::Serve },
            ),
            (false, false, false, closing(false), true, Next::Close),
            (false, false, false, closing(true), false, Next::Close),
            (false, false, false, closing(true), true, Next::Linger),
            (
                true,
                false,
                true,
                closing(true),
                false,
                Next::WriteOut { then: Then::Close },
            ),
            (
                true,
                false,
                true,
                closing(true),
                true,
                Next::WriteOut { then: Then::Linger },
            ),
        ];
        for (i, (buffered, held, left, ended, stopping, want)) in table.into_iter().enumerate() {
            let mut c = conn();
            if buffered {
                c.buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
            }
            if held {
                c.out.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
            }
            if left {
                c.stage = Stage::Writing {
                    then: Then::Serve,
                    since: Tick::now(),
                };
            }
            assert_eq!(next(&c, ended, || stopping), want, "row {i}");
        }
    }

    #[test]
    fn a_uwsgi_connection_lingers_only_when_more_was_sent_than_read() {
        use super::after_uwsgi;
        let closing = |more| Ended::Closing { more };
        // (answer left to the server, how the request ended) -> step
        let table = [
            (false, closing(false), Next::Close),
            (false, closing(true), Next::Linger),
            (false, Ended::Reusable, Next::Close),
            (true, closing(false), Next::WriteOut { then: Then::Close }),
            (true, closing(true), Next::WriteOut { then: Then::Linger }),
        ];
        for (i, (left, ended, want)) in table.into_iter().enumerate() {
            let mut c = conn();
            if left {
                c.stage = Stage::Writing {
                    then: Then::Serve,
                    since: Tick::now(),
                };
            }
            assert_eq!(after_uwsgi(&c, ended), want, "row {i}");
        }
    }

    #[test]
    fn the_drain_is_asked_only_when_the_connection_closes() {
        let c = conn();
        let asked = std::cell::Cell::new(false);
        let step = next(&c, Ended::Reusable, || {
            asked.set(true);
            true
        });
        assert_eq!(step, Next::Shelve);
        assert!(!asked.get());
    }
}
