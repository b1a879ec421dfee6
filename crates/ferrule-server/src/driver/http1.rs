//! One connection on one thread: accept, read, parse, run the handler, repeat while
//! requests are pipelined, then park the connection in epoll or close it.

use super::read_ahead::{self, body_arrived, Arrived};
use crate::backoff::is_exhaustion;
use crate::blocking::Park;
use crate::clock::Tick;
use crate::conn::{Conn, Stage, KEEP_BUF};
use crate::error::Error;
use crate::exchange::{Admit, Exchange};
use crate::handler::Handler;
use crate::preread::PreRead;
use crate::shared::Shared;
use ferrule_http::{parse_head_after, secure_scheme};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Accepts every pending connection of listener `idx` and registers them.
pub(crate) fn accept_all(shared: &Shared, idx: usize) {
    let listener = &shared.listeners[idx];
    for _ in 0..256 {
        match listener.accept() {
            Ok((stream, peer)) => {
                shared.backoff.accepted();
                shared.park(Conn::new(stream, peer, idx), true)
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

/// Serves a connection until it has no complete request left, then parks or closes
/// it. Returns it instead when its last response waits in its buffer (deferred by
/// `Exchange::finish` because other connections are ready): the caller holds it
/// (`held.rs`) and writes it with the others.
///
/// `holding` says the calling thread already holds responses back. Nothing is held
/// back while there are several runners: they exist because the app blocks, and a
/// response held while the next request blocks would wait for the whole block.
pub(crate) fn serve(
    shared: &Arc<Shared>,
    handler: &dyn Handler,
    mut conn: Box<Conn>,
    holding: bool,
    me: usize,
    started: Instant,
    park: &dyn Park,
) -> Option<Box<Conn>> {
    // The first request starts when the event was taken; pipelined ones read the clock.
    let mut started = Some(started);
    let cfg = &shared.config.parser;
    let min_line = cfg.request_line_limit().min(cfg.field_size_limit()) + 1;
    if matches!(conn.stage, Stage::Lingering) {
        linger(shared, conn);
        return None;
    }
    loop {
        // False while a body is read ahead (`Conn::read_ahead`): no check of its own.
        if conn.worth_parsing(min_line) {
            conn.skip_empty_lines();
            let fields = match std::mem::take(&mut conn.fields) {
                v if v.capacity() == 0 => Vec::with_capacity(16),
                v => v,
            };
            match parse_head_after(&conn.buf, conn.blank, cfg, fields) {
                Ok(Some(mut head)) => {
                    let trusted = shared.config.forwarded_allow_ips.allows(conn.peer.ip());
                    let https = match trusted.then(|| secure_scheme(&head, &conn.buf)) {
                        Some(Ok(v)) => v.unwrap_or(false),
                        Some(Err(e)) => {
                            reject(shared, &mut conn, e.into(), park);
                            return None;
                        }
                        None => false,
                    };
                    if read_ahead::needed(&mut head, &mut conn, &shared.config) {
                        // The body is read first, without a thread; judged from here on.
                        let pre = PreRead::new(&head, &mut conn.buf, &shared.config);
                        conn.read_ahead(pre);
                        // What came with the head first; then reads (or a complete
                        // chunked body parsed once more).
                        match body_arrived(shared, &mut conn, park) {
                            Arrived::More | Arrived::Complete => continue,
                            Arrived::Failed => return None,
                        }
                    }
                    let token = conn.token;
                    let admit = Admit {
                        https,
                        defer: (holding || shared.ready_len() > 0)
                            && !shared.sched.several_runners(),
                        me,
                        started: started.take().unwrap_or_else(Instant::now),
                    };
                    let ex = Exchange::new(conn, head, shared.clone(), admit);
                    // gunicorn's default `pre_request` logs this at debug; the level
                    // check costs one load when debug is off.
                    tracing::debug!(
                        "{} {}",
                        String::from_utf8_lossy(ex.method()),
                        String::from_utf8_lossy(ex.path())
                    );
                    let ex = handler.handle(ex);
                    let Some(ex) = ex else {
                        shared.table.release(token);
                        return None;
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
                    shared.served.fetch_add(1, Ordering::Relaxed);
                    match ex.into_conn(park) {
                        Ok(c) => conn = c,
                        // Its answer waits for room in the socket (`writing.rs`).
                        Err(Some(c)) if c.writing() => {
                            shared.flush_and_park(c, park);
                            return None;
                        }
                        Err(Some(c)) if shared.stopping() => {
                            // Draining, and the client sent more after the request
                            // whose answer said close: that answer must not be reset.
                            let mut c = c;
                            c.linger();
                            shared.park(c, false);
                            return None;
                        }
                        Err(_) => {
                            shared.table.release(token);
                            return None;
                        }
                    }
                    conn.reset_scan();
                    conn.served = true;
                    if conn.buf.capacity() > KEEP_BUF || !matches!(conn.stage, Stage::Open) {
                        // After a body read ahead: its file closes, its room is given back.
                        conn.after_read_ahead();
                    }
                    if conn.writing() {
                        // Pipelined requests wait until this answer is out (`writing.rs`).
                        shared.flush_and_park(conn, park);
                        return None;
                    }
                    if conn.buf.is_empty() {
                        if !conn.out.is_empty() {
                            return Some(conn);
                        }
                        // Nothing pipelined: epoll says when the next request arrives,
                        // which saves a read that would find nothing.
                        shared.park(conn, false);
                        return None;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    reject(shared, &mut conn, e.into(), park);
                    return None;
                }
            }
        }
        match conn.read_some() {
            Ok(0) => {
                if matches!(conn.stage, Stage::Body(_)) {
                    tracing::debug!("client closed the connection in the middle of a request body");
                } else if !conn.buf.is_empty() {
                    tracing::debug!("client closed the connection in the middle of a request head");
                }
                close(shared, &mut conn, park);
                return None;
            }
            Ok(_) => {
                conn.head_since.get_or_insert_with(Tick::now);
                if let Stage::Body(_) = conn.stage {
                    // Only the new bytes of the body are judged.
                    match body_arrived(shared, &mut conn, park) {
                        Arrived::More => {}
                        Arrived::Complete => continue,
                        Arrived::Failed => return None,
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Responses to pipelined requests go out before the connection waits.
                shared.flush_and_park(conn, park);
                return None;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!("read failed: {e}");
                shared.table.release(conn.token);
                return None;
            }
        }
    }
}

/// Reads and drops what a lingering connection's client sends (`Stage::Lingering`),
/// and closes it once the client has closed its side; the drain's quiet period
/// closes it otherwise (`Table::begin_drain`).
fn linger(shared: &Shared, mut conn: Box<Conn>) {
    loop {
        match conn.read_some() {
            Ok(0) => break,
            Ok(_) => conn.buf.clear(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                shared.park(conn, false);
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    shared.table.release(conn.token);
}

/// Closes a connection after writing what is still owed to it.
fn close(shared: &Shared, conn: &mut Conn, park: &dyn Park) {
    conn.flush_out(shared.config.io_timeout, park);
    shared.table.release(conn.token);
}

/// Answers a request the server refuses before the app sees it, logs why, and closes.
fn reject(shared: &Shared, conn: &mut Conn, e: Error, park: &dyn Park) {
    // Answers to earlier pipelined requests come first.
    conn.flush_out(shared.config.io_timeout, park);
    // A fuzzer makes thousands a second: a few are logged, the rest counted.
    if crate::log::INVALID_REQUESTS.allow() {
        let peer = match conn.peer.ip() {
            Some(ip) => ip.to_string(),
            None => "unix".to_string(),
        };
        tracing::warn!("invalid request from {peer}: {e}");
    }
    if let Some(status) = e.status() {
        conn.answer_error(status);
    }
    shared.table.release(conn.token);
}
