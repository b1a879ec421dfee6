//! The uwsgi driver (`--protocol uwsgi`: nginx `uwsgi_pass`, Apache
//! `mod_proxy_uwsgi`). A connection carries one request: nginx and Apache open one
//! per request and never reuse it (nginx's uwsgi module has no upstream keep-alive).
//!
//! - A TCP peer outside `--uwsgi-allow-from` is refused and logged before a byte of
//!   it is read; a unix-socket peer always may send (its file's permissions say who).
//! - The packet must arrive within `--header-timeout` (`Conn::head_since`, as an HTTP
//!   head). It is parsed once whole (`parse_uwsgi_into`; an incomplete one costs a
//!   length check per read) and made into a `Head` whose spans point into the
//!   connection's buffer (`ferrule_http::uwsgi_head`), so the request takes the path
//!   an HTTP/1 request takes: request buffering (`read_ahead.rs`), the exchange, the
//!   body decoder behind `wsgi.input`, the access log.
//! - A packet that is not a WSGI request (modifier1 other than 0), whose sizes do not
//!   add up, or without REQUEST_METHOD or SERVER_PROTOCOL is logged and the connection
//!   closed without an answer (nginx answers its client 502): nothing reaches the
//!   app. One that breaks a limit HTTP/1 heads have is answered with that status
//!   (413 for a CONTENT_LENGTH over `--limit-request-body`), which nginx relays.
//! - `Conn::client` becomes the REMOTE_ADDR and REMOTE_PORT the front server sent, so
//!   the access log's `%(h)s` is the client, not the front server.
//! - The answer is framed for the front server (`exchange/uwsgi.rs`), and the
//!   connection closes after it (`next::after_uwsgi`).

use super::next::{after_uwsgi, Next};
use super::read_ahead::{self, body_arrived, read_more, Arrived, Read};
use crate::blocking::Blocking;
use crate::conn::{Conn, Stage};
use crate::exchange::{Admit, Exchange};
use crate::handler::Handler;
use crate::listener::Peer;
use crate::preread::PreRead;
use crate::protocol::Protocol;
use crate::shared::Shared;
use ferrule_http::{parse_uwsgi_into, uwsgi_client, uwsgi_head, Head, Span, UwsgiError};
use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Room for an answer's head and a small body.
const ANSWER_ROOM: usize = 1024;

thread_local! {
    /// The packet's variable spans, reused by every request this thread parses (a
    /// connection carries one, so the connection cannot keep the vector).
    static VARS: Cell<Vec<(Span, Span)>> = const { Cell::new(Vec::new()) };
}

/// Serves a uwsgi connection: reads its packet (and body, when buffered), runs the
/// app, and closes or lingers. The signature is `http1::serve`'s; a uwsgi answer is
/// never held back for a burst (the connection closes after it), so this returns
/// `None`.
pub(crate) fn serve(
    shared: &Arc<Shared>,
    handler: &dyn Handler,
    mut conn: Box<Conn>,
    me: usize,
    started: Instant,
    blocking: &dyn Blocking,
) -> Option<Box<Conn>> {
    loop {
        // New bytes since the last look; none while a body is read ahead
        // (`Conn::read_ahead` sets `scanned` past any length).
        if conn.scanned < conn.buf.len() {
            conn.scanned = conn.buf.len();
            match packet(&mut conn, shared) {
                Ok(Some(mut head)) => {
                    if read_ahead::needed(&mut head, &mut conn, &shared.config) {
                        // The body is read first, without a thread; then the packet
                        // is parsed once more and served (`Stage::ReadAhead`).
                        let pre = PreRead::new(&head, &mut conn.buf, &shared.config);
                        conn.read_ahead(pre);
                        match body_arrived(shared, &mut conn, blocking) {
                            Arrived::More | Arrived::Complete => continue,
                            Arrived::Failed => return None,
                        }
                    }
                    run(shared, handler, conn, head, me, started, blocking);
                    return None;
                }
                Ok(None) => {}
                Err(e) => {
                    refuse(shared, conn, e);
                    return None;
                }
            }
        }
        match read_more(shared, &mut conn, blocking) {
            Read::More => {}
            Read::Gone => return None,
            Read::Eof => {
                if matches!(conn.stage, Stage::Body(_)) {
                    // Its client went away during an upload it relayed: not a protocol error.
                    tracing::debug!(
                        "front server closed the connection in the middle of a request body"
                    );
                } else if !conn.buf.is_empty() {
                    cut_short(&conn);
                }
                shared.table.release(conn.token);
                return None;
            }
            Read::WouldBlock => {
                shared.shelve(conn, false);
                return None;
            }
        }
    }
}

/// Whether a new connection's socket peer may send uwsgi requests; a refused one
/// is logged, and the caller (`accept_all`, before any byte is read, so before a
/// PROXY header could move its bytes into the buffer) drops it.
pub(super) fn allowed(shared: &Shared, conn: &Conn) -> bool {
    let ip = conn.peer.ip();
    if shared.config.uwsgi_allow_ips.allows(ip) {
        return true;
    }
    if crate::log::REFUSED_UWSGI_PEERS.allow() {
        let ip = ip.map_or_else(|| "unix".to_string(), |ip| ip.to_string());
        tracing::warn!("uwsgi connection from {ip} refused: not in --uwsgi-allow-from");
    }
    false
}

/// The packet at the front of the buffer as a head, once it is whole; the client
/// the front server names becomes the connection's.
fn packet(conn: &mut Conn, shared: &Shared) -> Result<Option<Head>, UwsgiError> {
    let Some(packet) = parse_uwsgi_into(&conn.buf, VARS.take())? else {
        return Ok(None);
    };
    let fields = std::mem::take(&mut conn.fields);
    let made = uwsgi_head(&conn.buf, &packet, &shared.config.parser, fields);
    if made.is_err() {
        // A refusal's log line names the client the front server named.
        if let Some(addr) = uwsgi_client(&conn.buf, &packet) {
            conn.client = Peer::Tcp(addr);
        }
    }
    VARS.set(packet.vars);
    let made = made?;
    if let Some(addr) = made.client {
        conn.client = Peer::Tcp(addr);
    }
    Ok(Some(made.head))
}

/// Runs the app on the request and ends the connection.
fn run(
    shared: &Arc<Shared>,
    handler: &dyn Handler,
    mut conn: Box<Conn>,
    head: Head,
    me: usize,
    started: Instant,
    blocking: &dyn Blocking,
) {
    let token = conn.token;
    // A new connection's answer buffer is empty: one allocation now instead of the
    // several of growing it field by field (callgrind: about 1,000 instructions).
    conn.out.reserve(ANSWER_ROOM);
    let admit = Admit {
        // HTTPS among the variables says so (the bridge's `ready_rules.rs`).
        https: false,
        // Written at once: the connection closes after it, nothing to burst with.
        defer: false,
        me,
        started,
        // REMOTE_ADDR/REMOTE_PORT already made `Conn::client` the front server's client.
        client: None,
        protocol: Protocol::Uwsgi,
    };
    let ex = Exchange::new(conn, head, shared.clone(), admit);
    tracing::debug!(
        "{} {}",
        String::from_utf8_lossy(ex.method()),
        String::from_utf8_lossy(ex.path())
    );
    let Some(ex) = handler.handle(ex) else {
        shared.table.release(token);
        return;
    };
    if ex.outcome().length_mismatch {
        tracing::error!(
            "{}: the app's body did not match its Content-Length; connection closed",
            String::from_utf8_lossy(ex.raw_target())
        );
    }
    if let Some(log) = &shared.access {
        log.record(&ex.finished());
    }
    if shared.observe.counts() {
        shared.observe.answered(me, &ex.answered());
    }
    shared.served.fetch_add(1, Ordering::Relaxed);
    let (mut conn, ended) = ex.into_conn(blocking);
    match after_uwsgi(&conn, ended) {
        Next::WriteOut { then } => {
            conn.then(then);
            shared.flush_and_shelve(conn, blocking);
        }
        Next::Linger => {
            conn.linger();
            shared.shelve(conn, false);
        }
        // `after_uwsgi` gives no other step; each of them would end it too.
        Next::Close | Next::Pipelined | Next::Shelve | Next::Hold => {
            drop(conn);
            shared.table.release(token);
        }
    }
}

/// Logs a packet the front server stopped sending (a front server writes a packet
/// whole: a cut one is a broken peer, or not a uwsgi client at all).
#[cold]
fn cut_short(conn: &Conn) {
    if crate::log::INVALID_REQUESTS.allow() {
        let peer = match conn.peer.ip() {
            Some(ip) => ip.to_string(),
            None => "unix".to_string(),
        };
        let got = conn.buf.len();
        match conn.buf.get(1..3) {
            Some(&[lo, hi]) => {
                let want = 4 + usize::from(u16::from_le_bytes([lo, hi]));
                tracing::warn!(
                    "invalid uwsgi request from {peer}: the connection closed after {got} bytes of a {want}-byte packet"
                )
            }
            _ => tracing::warn!(
                "invalid uwsgi request from {peer}: the connection closed inside a packet's 4-byte header"
            ),
        }
    }
}

/// Refuses a packet before the app sees it: a broken limit is answered with its
/// status (then the connection lingers, so the answer is not reset by what the
/// front server still sends); a malformed packet is closed on without an answer.
fn refuse(shared: &Shared, mut conn: Box<Conn>, e: UwsgiError) {
    // A fuzzer makes thousands a second: a few are logged, the rest counted.
    if crate::log::INVALID_REQUESTS.allow() {
        // The front server's client once the packet named one, else the socket's peer.
        let client = match conn.client.ip() {
            Some(ip) => ip.to_string(),
            None => "unix".to_string(),
        };
        tracing::warn!("invalid uwsgi request from {client}: {e}");
    }
    match e.status() {
        Some(status) => {
            conn.refuse(status, &shared.config, shared.access.as_ref());
            conn.linger();
            shared.shelve(conn, false);
        }
        None => shared.table.release(conn.token),
    }
}
