//! The HTTP/1 driver's part in request buffering (`preread.rs`): whether a request's
//! body is read before the app runs, and what each arrival of its bytes makes of it.

use crate::blocking::Blocking;
use crate::clock::Tick;
use crate::config::ServerConfig;
use crate::conn::{Conn, Stage};
use crate::error::Error;
use crate::shared::Shared;
use crate::transport::ReadOutcome;
use ferrule_http::{BodyKind, Head};

/// Whether a request must have its body read before the app runs. One compare for
/// a request without a body, two with all of it in the buffer (the usual paths).
///
/// A body read ahead into a file has left the buffer: what follows its head there is
/// a pipelined request, however long, so that case always goes to `decide`.
#[inline(always)]
pub(crate) fn needed(head: &mut Head, conn: &mut Conn, cfg: &ServerConfig) -> bool {
    match head.framing.body {
        BodyKind::Empty => false,
        BodyKind::Length(n)
            if ((conn.buf.len() - head.len) as u64) >= n
                && !matches!(conn.stage, Stage::ReadAhead(Some(_))) =>
        {
            false
        }
        _ => decide(head, conn, cfg),
    }
}

/// The body is not all in the buffer: it was read ahead into a file (the head is
/// told so: the exchange then decodes nothing from the socket and reads the file), a
/// chunked one was read ahead into the buffer, or it is read now unless buffering is
/// off or the client waits for `100 Continue` (the app decides before it is sent).
#[cold]
#[inline(never)]
fn decide(head: &mut Head, conn: &mut Conn, cfg: &ServerConfig) -> bool {
    match conn.stage {
        Stage::ReadAhead(Some(_)) => {
            head.framing.body = BodyKind::Empty;
            false
        }
        Stage::ReadAhead(None) => false,
        _ => cfg.request_buffering && !head.framing.expect_continue,
    }
}

/// What the bytes that arrived made of a body read before the app runs.
pub(crate) enum Arrived {
    /// More is needed.
    More,
    /// The body is complete: the head at the front of the buffer is parsed once more
    /// and served (`Stage::ReadAhead`), through the one path every request takes.
    Complete,
    /// The connection was answered and closed.
    Failed,
}

/// Judges what arrived of a body being read before the app runs (`preread.rs`).
// Out of line and cold: `serve`'s usual path stays as it was without buffering.
#[cold]
#[inline(never)]
pub(crate) fn body_arrived(
    shared: &Shared,
    conn: &mut Box<Conn>,
    blocking: &dyn Blocking,
) -> Arrived {
    let Stage::Body(pre) = &mut conn.stage else {
        return Arrived::More;
    };
    let judged = match pre.advance(&mut conn.buf, &shared.config) {
        Ok(true) => pre.take_spill().map(Some),
        Ok(false) => Ok(None),
        Err(e) => Err(e),
    };
    match judged {
        Ok(None) => Arrived::More,
        Ok(Some(spill)) => {
            conn.stage = Stage::ReadAhead(spill.map(Box::new));
            conn.reset_scan();
            Arrived::Complete
        }
        Err(e) => {
            let target = String::from_utf8_lossy(pre.target(&conn.buf)).into_owned();
            fail(shared, conn, e, &target, blocking);
            Arrived::Failed
        }
    }
}

/// Ends a request whose body could not be read before the app: a bad body gets its
/// 4xx and the warning the app's failed read would have logged, a server fault (no
/// room for a temporary file) a 500 and an error line.
#[cold]
fn fail(shared: &Shared, conn: &mut Conn, e: Error, target: &str, blocking: &dyn Blocking) {
    conn.flush_out(shared.config.io_timeout, blocking);
    // Both are rate limited: a client can send bad bodies at will, and a full disk
    // fails every spill until it has room.
    let status = match &e {
        Error::Io(io) => {
            if crate::log::SPILL_FAILURES.allow() {
                tracing::error!("request body for {target}: {io}");
            }
            Some(500)
        }
        _ => {
            if crate::log::INVALID_REQUESTS.allow() {
                tracing::warn!("bad request body for {target}: {e}");
            }
            e.status()
        }
    };
    if let Some(status) = status {
        conn.refuse(status, &shared.config, shared.access.as_ref());
    }
    shared.table.release(conn.token);
}

/// What a driver's read of its connection brought (`read_more`).
pub(crate) enum Read {
    /// New bytes, judged when they belong to a body read ahead: look at the buffer again.
    More,
    /// The peer closed its side.
    Eof,
    /// Nothing more for now: the driver shelves the connection.
    WouldBlock,
    /// The connection is released (a failed read, or a body read ahead that failed).
    Gone,
}

/// One read for a driver that has no complete request yet (HTTP/1's and uwsgi's loops
/// share it): a head's clock starts with its first bytes, and a body read ahead judges
/// only the new ones. What the end of stream and an empty socket mean is the driver's.
#[inline]
pub(crate) fn read_more(shared: &Shared, conn: &mut Box<Conn>, blocking: &dyn Blocking) -> Read {
    match conn.read_some() {
        Ok(ReadOutcome::Eof) => Read::Eof,
        Ok(ReadOutcome::Data(_)) => {
            conn.head_since.get_or_insert_with(Tick::now);
            if let Stage::Body(_) = conn.stage {
                if let Arrived::Failed = body_arrived(shared, conn, blocking) {
                    return Read::Gone;
                }
            }
            Read::More
        }
        Ok(ReadOutcome::WouldBlock) => Read::WouldBlock,
        Err(e) => {
            tracing::debug!("read failed: {e}");
            shared.table.release(conn.token);
            Read::Gone
        }
    }
}
