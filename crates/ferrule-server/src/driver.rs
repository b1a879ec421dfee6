//! Protocol drivers: what turns a connection's bytes into requests for the app.
//!
//! A connection is accepted here and served by the driver of its listener's
//! [`Protocol`] (`serve`, the one dispatch). Drivers are siblings (`http1.rs`,
//! `uwsgi.rs`; HTTP/2 slots in beside them). A driver provides one function like
//! `http1::serve`, which, on the thread epoll woke for the connection:
//! - reads through the connection (`Conn`, never the socket) until it has a request,
//!   or shelves the connection in epoll (`Shared::shelve`) when nothing more came;
//! - builds an [`Exchange`](crate::exchange::Exchange) for each request (its head;
//!   a uwsgi head's fields are the packet's variables, `ReadyVars`) and runs the
//!   [`Handler`] on it;
//! - leaves the access-log record (`Exchange::finished`) and counts the request;
//! - takes the connection back from the exchange and acts on the `Next` step that
//!   `driver/next.rs` decides for it (`next::next`, `next::after_uwsgi`), the one
//!   place that says what a connection does after a request;
//! - answers a request it refuses itself and closes (`Conn::answer_error`).
//!
//! Before any driver, a connection under `--proxy-protocol` reads its PROXY header
//! (`Stage::Preamble`, `preamble.rs`), whatever protocol follows it; then a TLS
//! connection's handshake (`Stage::Handshake`, `handshake.rs`).
//!
//! A connection that lingers (its writing side shut while the server drains) is the
//! same for every protocol: this file drops what its client sends.

mod http1;
mod next;
mod read_ahead;
mod uwsgi;

use crate::backoff::is_exhaustion;
use crate::blocking::Blocking;
use crate::conn::{Conn, Stage};
use crate::handler::Handler;
use crate::handshake;
use crate::preamble;
use crate::protocol::Protocol;
use crate::shared::Shared;
use crate::transport::{ReadOutcome, Transport};
use std::io;
use std::sync::Arc;
use std::time::Instant;

/// Accepts every pending connection of listener `idx` and registers them.
pub(crate) fn accept_all(shared: &Shared, idx: usize) {
    let listener = &shared.listeners[idx];
    for _ in 0..256 {
        match listener.accept() {
            Ok((stream, peer)) => {
                shared.backoff.accepted();
                let mut conn = Conn::new(stream, peer, idx);
                if shared.observe.stamps() && matches!(conn.transport, Transport::Tcp(_)) {
                    conn.rx = Some(0); // its listener's option made it stamp (`timing.rs`)
                }
                if listener.protocol() == Protocol::Uwsgi && !uwsgi::allowed(shared, &conn) {
                    continue;
                }
                if let Some(mode) = shared.config.proxy_protocol {
                    preamble::expect(&mut conn, mode, &shared.config.proxy_allow_ips);
                } else if listener.is_tls() {
                    handshake::expect(&mut conn);
                }
                shared.shelve(conn, true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    || e.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(e) if is_exhaustion(&e) => {
                // Out of descriptors: the backlog holds the connections meanwhile.
                shared.backoff.refused(shared.watch(), idx, &e);
                break;
            }
            Err(e) => {
                tracing::error!("accept failed: {e}");
                break;
            }
        }
    }
}

/// Serves a connection with the driver of its listener's protocol. Returns it when
/// its last answer waits in its buffer (see `http1::serve`).
#[inline(always)]
pub(crate) fn serve(
    shared: &Arc<Shared>,
    handler: &dyn Handler,
    conn: Box<Conn>,
    holding: bool,
    me: usize,
    started: Instant,
    blocking: &dyn Blocking,
) -> Option<Box<Conn>> {
    // The stages no driver handles are tested together (adjacent variants) and
    // handled out of line: a keep-alive request pays what it paid for `Lingering` alone.
    let conn = if matches!(
        conn.stage,
        Stage::Lingering | Stage::Preamble(_) | Stage::Handshake
    ) {
        before_driver(shared, conn)?
    } else {
        conn
    };
    match shared.listeners[conn.listener].protocol() {
        Protocol::Http1 => http1::serve(shared, handler, conn, holding, me, started, blocking),
        Protocol::Uwsgi => uwsgi::serve(shared, handler, conn, me, started, blocking),
    }
}

/// The stages no driver handles: a lingering connection's bytes are dropped; the PROXY
/// header comes before any protocol's first byte (`preamble.rs`), then the TLS
/// handshake (`handshake.rs`), and the connection is returned to its driver after them.
#[cold]
#[inline(never)]
fn before_driver(shared: &Shared, conn: Box<Conn>) -> Option<Box<Conn>> {
    if let Stage::Lingering = conn.stage {
        linger(shared, conn);
        return None;
    }
    let conn = match conn.stage {
        Stage::Preamble(_) => preamble::read(shared, conn)?,
        _ => conn,
    };
    match conn.stage {
        Stage::Handshake => handshake::run(shared, conn),
        _ => Some(conn),
    }
}

/// Reads and drops what a lingering connection's client sends (`Stage::Lingering`),
/// and closes it once the client has closed its side; the drain's quiet period
/// closes it otherwise (`Table::begin_drain`).
fn linger(shared: &Shared, mut conn: Box<Conn>) {
    loop {
        match conn.read_some() {
            Ok(ReadOutcome::Eof) | Err(_) => break,
            Ok(ReadOutcome::Data(_)) => conn.buf.clear(),
            Ok(ReadOutcome::WouldBlock) => {
                shared.shelve(conn, false);
                return;
            }
        }
    }
    shared.table.release(conn.token);
}
