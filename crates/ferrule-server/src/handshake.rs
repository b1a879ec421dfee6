//! The TLS handshake: a stage before any protocol driver, like the PROXY preamble.
//!
//! With TLS on, every accepted connection starts in `Stage::Handshake`
//! (`driver::accept_all`, or after its PROXY header in `preamble.rs`), and
//! `driver::serve` hands it here: on the server thread epoll woke, never one that
//! runs Python, so a client that stalls mid-handshake costs a socket and a session,
//! and waits in epoll. The handshake must end within `--header-timeout` of the
//! accept (the table's sweep closes it otherwise, without an answer), the same clock
//! as the request head that follows.
//!
//! The first byte tells TLS from plain HTTP: a TLS record starts with 22 (handshake).
//! A plain HTTP request gets nginx's `400` saying it was sent to an HTTPS port, then
//! the connection lingers and closes; anything else is closed.

use crate::conn::{Conn, Stage};
use crate::shared::Shared;
use crate::transport::tls::Handshake;
use crate::transport::{ReadOutcome, TlsStream, Transport};

/// The first byte of a TLS record carrying a handshake message (the ClientHello).
pub(crate) const HANDSHAKE_RECORD: u8 = 0x16;

/// nginx's answer to plain HTTP on an HTTPS port, with the same words.
const PLAIN_HTTP: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain\r\n\
Content-Length: 46\r\n\
Connection: close\r\n\
\r\n\
The plain HTTP request was sent to HTTPS port\n";

/// Puts a connection in `Stage::Handshake`. The handshake and then the first head must
/// come within `--header-timeout` of the accept (or of the PROXY header's start).
pub(crate) fn expect(conn: &mut Conn) {
    conn.stage = Stage::Handshake;
    conn.head_since.get_or_insert_with(crate::clock::Tick::now);
}

/// Advances a connection's handshake. Returns it in `Stage::Open` once the session is
/// established (plaintext may already wait inside it); otherwise it waits in epoll for
/// the client's next flight, or is closed.
pub(crate) fn run(shared: &Shared, mut conn: Box<Conn>) -> Option<Box<Conn>> {
    if !conn.transport.is_tls() {
        conn = start(shared, conn)?;
    }
    let Transport::Tls(tls) = &mut conn.transport else {
        return Some(conn);
    };
    match tls.handshake(conn.rx.as_mut()) {
        Ok(Handshake::Done) => {
            conn.stage = Stage::Open;
            // The head's clock runs on from the accept: a slow handshake leaves less.
            conn.drained = false;
            Some(conn)
        }
        Ok(Handshake::Pending) => {
            conn.drained = true;
            if tls.has_pending_output() {
                // A flight larger than the socket takes (a long chain): the client
                // answers only once it has all of it, so room is what to wait for.
                let since = conn.head_since.unwrap_or_else(crate::clock::Tick::now);
                shared.shelve_for_room(conn, since + shared.config.header_timeout);
            } else {
                shared.shelve(conn, false);
            }
            None
        }
        Ok(Handshake::Closed) => {
            tracing::debug!("client closed the connection during the TLS handshake");
            shared.table.release(conn.token);
            None
        }
        Err(e) => {
            if crate::log::TLS_FAILURES.allow() {
                tracing::warn!("TLS handshake with {} failed: {e}", conn.peer);
            }
            shared.table.release(conn.token);
            None
        }
    }
}

/// Reads until the first byte tells TLS from plain HTTP, then starts the session
/// (fed with what was read) or answers plain HTTP.
fn start(shared: &Shared, mut conn: Box<Conn>) -> Option<Box<Conn>> {
    while conn.buf.is_empty() {
        match conn.read_some() {
            Ok(ReadOutcome::Data(_)) => {}
            Ok(ReadOutcome::WouldBlock) => {
                shared.shelve(conn, false);
                return None;
            }
            Ok(ReadOutcome::Eof) | Err(_) => {
                shared.table.release(conn.token);
                return None;
            }
        }
    }
    if conn.buf[0] != HANDSHAKE_RECORD {
        plain_http(shared, conn);
        return None;
    }
    let session = match &shared.config.tls {
        Some(tls) => rustls::ServerConnection::new(tls.config.clone()),
        None => Err(rustls::Error::General("TLS is not configured".into())),
    };
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot start a TLS session: {e}");
            shared.table.release(conn.token);
            return None;
        }
    };
    // The socket moves into the session; the box is not reallocated.
    let socket = match conn.transport.into_socket() {
        Ok(s) => s,
        Err(t) => {
            conn.transport = t;
            return Some(conn);
        }
    };
    match TlsStream::new(socket, session, &conn.buf) {
        Ok(stream) => conn.transport = Transport::Tls(Box::new(stream)),
        Err(e) => {
            // The socket closes with the failed session.
            tracing::debug!("invalid TLS record: {e}");
            shared.table.release(conn.token);
            return None;
        }
    }
    conn.buf.clear();
    Some(conn)
}

/// Plain HTTP on a TLS port: nginx's `400`, then the connection drains and closes
/// (closing with the request unread would reset it and could destroy the answer).
fn plain_http(shared: &Shared, mut conn: Box<Conn>) {
    if conn.buf[0].is_ascii_uppercase() {
        if crate::log::TLS_FAILURES.allow() {
            tracing::warn!("plain HTTP request from {} on a TLS port", conn.peer);
        }
        conn.refuse_with(400, PLAIN_HTTP, &shared.config, shared.access.as_ref());
        conn.linger();
        shared.shelve(conn, false);
    } else {
        tracing::debug!("neither TLS nor HTTP from {}: closed", conn.peer);
        shared.table.release(conn.token);
    }
}

#[cfg(test)]
mod tests {
    use super::PLAIN_HTTP;

    #[test]
    fn the_plain_http_answer_says_its_length() {
        let body = PLAIN_HTTP.split(|&b| b == b'\n').next_back();
        assert_eq!(body, Some(&b""[..]));
        let at = PLAIN_HTTP
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap()
            + 4;
        assert_eq!(PLAIN_HTTP.len() - at, 46);
    }
}
