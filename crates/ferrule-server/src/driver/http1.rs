//! The HTTP/1 driver: read, parse, run the handler, repeat while requests are
//! pipelined, then shelve the connection in epoll or close it.

use super::next::{next, Next};
use super::read_ahead::{self, body_arrived, read_more, Arrived, Read};
use crate::blocking::Blocking;
use crate::conn::{Conn, Stage, KEEP_BUF};
use crate::error::Error;
use crate::exchange::{Admit, Ended, Exchange};
use crate::forwarding::{self, Forwarding};
use crate::handler::Handler;
use crate::preread::PreRead;
use crate::protocol::Protocol;
use crate::shared::Shared;
use ferrule_http::parse_head_after;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Serves a connection until it has no complete request left, then shelves or
/// closes it. Returns it instead when its last response waits in its buffer (deferred by
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
    blocking: &dyn Blocking,
) -> Option<Box<Conn>> {
    // The first request starts when the event was taken; pipelined ones read the clock.
    let mut started = Some(started);
    let cfg = &shared.config.parser;
    let min_line = cfg.request_line_limit().min(cfg.field_size_limit()) + 1;
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
                    if read_ahead::needed(&mut head, &mut conn, &shared.config) {
                        // The body is read first, without a thread; judged from here on.
                        let pre = PreRead::new(&head, &mut conn.buf, &shared.config);
                        conn.read_ahead(pre);
                        // What came with the head first; then reads (or a complete
                        // chunked body parsed once more).
                        match body_arrived(shared, &mut conn, blocking) {
                            Arrived::More | Arrived::Complete => continue,
                            Arrived::Failed => return None,
                        }
                    }
                    // Judged once, when the request is admitted (a head whose body was
                    // read ahead is parsed again).
                    let forwarding = forwarding::judge(
                        &shared.config,
                        &conn.peer,
                        &conn.client,
                        &head,
                        &conn.buf,
                    );
                    let Forwarding { https, client } = match forwarding {
                        Ok(f) => f,
                        Err(e) => {
                            reject(shared, &mut conn, e.into(), blocking);
                            return None;
                        }
                    };
                    let token = conn.token;
                    let admit = Admit {
                        https: https || conn.transport.is_tls(),
                        defer: (holding || shared.ready_len() > 0)
                            && !shared.sched.several_runners(),
                        me,
                        started: started.take().unwrap_or_else(Instant::now),
                        client,
                        protocol: Protocol::Http1,
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
                    if shared.observe.counts() {
                        shared.observe.answered(me, &ex.answered());
                    }
                    shared.served.fetch_add(1, Ordering::Relaxed);
                    let (c, ended) = ex.into_conn(blocking);
                    conn = c;
                    if let Ended::Reusable = ended {
                        conn.reset_scan();
                        conn.served = true;
                        if conn.buf.capacity() > KEEP_BUF || !matches!(conn.stage, Stage::Open) {
                            // After a body read ahead: its file closes, its room is given back.
                            conn.after_read_ahead();
                        }
                    }
                    match next(&conn, ended, || shared.stopping()) {
                        Next::Pipelined => continue,
                        Next::Shelve => shared.shelve(conn, false),
                        Next::Hold => return Some(conn),
                        Next::WriteOut { then } => {
                            conn.then(then);
                            shared.flush_and_shelve(conn, blocking);
                        }
                        Next::Linger => {
                            conn.linger();
                            shared.shelve(conn, false);
                        }
                        Next::Close => {
                            drop(conn);
                            shared.table.release(token);
                        }
                    }
                    return None;
                }
                // A uwsgi packet starts with modifier1 0 and may hold no line end for
                // the parser to wait for: refused now rather than at the header timeout
                // (nginx `uwsgi_pass` to an HTTP bind), and said so. Checked only on a
                // head that is incomplete or refused.
                Ok(None) | Err(_) if conn.buf.first() == Some(&0) => {
                    not_http(shared, &mut conn, blocking);
                    return None;
                }
                Ok(None) => {}
                Err(e) => {
                    reject(shared, &mut conn, e.into(), blocking);
                    return None;
                }
            }
        }
        match read_more(shared, &mut conn, blocking) {
            Read::More => {}
            Read::Gone => return None,
            Read::Eof => {
                if matches!(conn.stage, Stage::Body(_)) {
                    tracing::debug!("client closed the connection in the middle of a request body");
                } else if !conn.buf.is_empty() {
                    tracing::debug!("client closed the connection in the middle of a request head");
                }
                close(shared, &mut conn, blocking);
                return None;
            }
            Read::WouldBlock => {
                // Responses to pipelined requests go out before the connection waits.
                shared.flush_and_shelve(conn, blocking);
                return None;
            }
        }
    }
}

/// Closes a connection after writing what is still owed to it.
fn close(shared: &Shared, conn: &mut Conn, blocking: &dyn Blocking) {
    conn.flush_out(shared.config.io_timeout, blocking);
    shared.table.release(conn.token);
}

/// A uwsgi packet on an HTTP bind: 400 (nginx relays it at once, instead of a 408 after
/// the header timeout) and a log line that names the likely fix.
#[cold]
fn not_http(shared: &Shared, conn: &mut Conn, blocking: &dyn Blocking) {
    conn.flush_out(shared.config.io_timeout, blocking);
    if crate::log::INVALID_REQUESTS.allow() {
        tracing::warn!(
            "invalid request from {}: it starts with a 0 byte, as a uwsgi packet does; this bind \
             speaks HTTP (run with --protocol uwsgi behind nginx uwsgi_pass)",
            conn.client
        );
    }
    conn.refuse(400, &shared.config, shared.access.as_ref());
    shared.table.release(conn.token);
}

/// Answers a request the server refuses before the app sees it, logs why, and closes.
fn reject(shared: &Shared, conn: &mut Conn, e: Error, blocking: &dyn Blocking) {
    // Answers to earlier pipelined requests come first.
    conn.flush_out(shared.config.io_timeout, blocking);
    if conn.buf.first() == Some(&crate::handshake::HANDSHAKE_RECORD) && !conn.transport.is_tls() {
        // A TLS client on a plain port: an HTTP answer would mean nothing to it.
        if crate::log::TLS_FAILURES.allow() {
            tracing::warn!("TLS ClientHello from {} on a plain port: closed", conn.peer);
        }
        shared.table.release(conn.token);
        return;
    }
    // A fuzzer makes thousands a second: a few are logged, the rest counted.
    if crate::log::INVALID_REQUESTS.allow() {
        let peer = match conn.client.ip() {
            Some(ip) => ip.to_string(),
            None => "unix".to_string(),
        };
        tracing::warn!("invalid request from {peer}: {e}");
    }
    if let Some(status) = e.status() {
        conn.refuse(status, &shared.config, shared.access.as_ref());
    }
    shared.table.release(conn.token);
}
