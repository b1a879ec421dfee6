//! One request and its response on one connection.
//!
//! An [`Exchange`] owns the connection while the app runs, so the app's reads of
//! `wsgi.input` and its writes go straight to the socket from the thread that
//! runs the app: no hand-off to another thread, no copy of the body. Waits on the
//! socket go through a [`Blocking`], which lets the Python side release the GIL.
//!
//! This file holds the request's fields and the hand-back of the connection;
//! `exchange/body.rs` the request body, `exchange/respond.rs` the response side.

use crate::blocking::Blocking;
use crate::config::ServerConfig;
use crate::conn::Conn;
use crate::cork::CorkState;
use crate::error::Error;
use crate::finished::{Finished, Outcome};
use crate::listener::{Local, Peer};
use crate::metrics::Answered;
use crate::progress::Progress;
use crate::protocol::{Protocol, ReadyVars};
use crate::shared::Shared;
use crate::timing::Timing;
use ferrule_http::{BodyDecoder, Head, ResponseFraming, Version};
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

mod body;
mod corking;
mod respond;
mod seat;
mod uwsgi;
use seat::Seat;

/// A runner's wait on its client: `--timeout` does not count it (`progress.rs`).
pub(crate) struct ClientWait<'a> {
    blocking: &'a dyn Blocking,
    progress: &'a Progress,
    me: usize,
}

impl<'a> ClientWait<'a> {
    pub(crate) fn new(blocking: &'a dyn Blocking, progress: &'a Progress, me: usize) -> Self {
        ClientWait {
            blocking,
            progress,
            me,
        }
    }
}

impl Blocking for ClientWait<'_> {
    fn block(&self, wait: &mut (dyn FnMut() -> io::Result<bool> + Send)) -> io::Result<bool> {
        self.progress.waiting(self.me);
        let ready = self.blocking.block(wait);
        self.progress.made(self.me);
        ready
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Response {
    /// Nothing decided yet.
    Pending,
    /// Status line and fields are being written into `out`.
    Building {
        code: u16,
        declared: Option<u64>,
        server: bool,
        date: bool,
    },
    /// The head is out (or queued); body bytes follow.
    Body {
        framing: ResponseFraming,
        declared: bool,
        sent: u64,
    },
    /// The response is complete.
    Done,
}

/// An interim answer owed before the body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interim {
    /// None (not asked for, or sent).
    None,
    /// The client sent `Expect: 100-continue` and waits for it before its body.
    ContinueOwed,
}

/// How a request left its connection: facts for `driver/next.rs`, which decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Its answer is complete and the connection can carry another request.
    Reusable,
    /// It cannot. `more`: its answer went out whole and the client has sent more
    /// than this request (so closing now could reset that answer).
    Closing { more: bool },
}

/// What the runner knows about a request beyond its head.
pub(crate) struct Admit {
    /// Trusted forwarding headers say the client used https.
    pub https: bool,
    /// The response may wait in the connection's buffer for the runner's burst.
    pub defer: bool,
    /// The runner serving the request (its slot in `Shared::corks`).
    pub me: usize,
    /// When the request's event was taken, or its head parsed when pipelined.
    pub started: Instant,
    /// Whom a trusted proxy's list says this request came from
    /// (`--forwarded-remote-addr`); `None`: the connection's client. Boxed: a pointer
    /// costs the common request one store, a `Peer` a copy through `Admit` and the box.
    pub client: Option<Box<Peer>>,
    /// The protocol that carried the request (`Protocol::Uwsgi`: its head's fields
    /// are the packet's variables, and its answer is framed for the front server).
    pub protocol: Protocol,
}

pub struct Exchange {
    /// First: it drops first, before `conn` closes the socket (`exchange/seat.rs`).
    shared: Seat,
    conn: Box<Conn>,
    head: Head,
    /// Next byte of `conn.buf` the body decoder has not seen.
    pos: usize,
    /// Decoded body bytes not yet handed to the app.
    avail: Range<usize>,
    body: BodyDecoder,
    /// Whether `100 Continue` is owed before the body is read.
    interim: Interim,
    out: Vec<u8>,
    response: Response,
    // `keep_alive`, `https` and `defer` stay flags: facts about this request (what its
    // head and its answer allow, its scheme) and the runner's choice for its answer,
    // each set on its own; the response's progress is `response`, the connection's
    // next step `driver/next.rs`'s `Next`.
    /// The connection may carry another request after this answer: the head allowed
    /// it, and nothing since (the app's `Connection: close`, an error) took it back.
    keep_alive: bool,
    https: bool,
    pub(crate) started: Instant,
    outcome: Outcome,
    /// Bytes at the front of `out` that belong to earlier responses not yet written.
    mark: usize,
    /// This response may wait in `out` after it is complete (other connections are
    /// ready, and its thread writes everything in one burst after serving them).
    defer: bool,
    /// A copy of the response head, kept only when the access log shows response fields.
    response_head: Option<Vec<u8>>,
    cork: CorkState,
    /// `Admit::client`: REMOTE_ADDR and `%(h)s` when set, else the connection's client.
    client: Option<Box<Peer>>,
    /// The protocol that carried the request (see `Admit::protocol`).
    protocol: Protocol,
    /// Queue and app times, when `--server-timing` or the access log read them.
    pub(crate) timing: Option<Timing>,
}

impl Exchange {
    // Inlined into `serve` (its one caller), so the head moves straight into the box
    // (callgrind: a call costs a copy of the head, about 30 instructions a request).
    #[inline(always)]
    pub(crate) fn new(
        mut conn: Box<Conn>,
        head: Head,
        shared: Arc<Shared>,
        admit: Admit,
    ) -> Box<Exchange> {
        let Admit {
            https,
            defer,
            me,
            started,
            client,
            protocol,
        } = admit;
        let out = std::mem::take(&mut conn.out);
        let mark = out.len();
        let shared = Seat::new(shared, me);
        let body = BodyDecoder::new(head.framing.body, &shared.config.parser);
        let pos = head.len;
        let fd = conn.transport.raw_fd();
        let timing =
            shared
                .observe
                .admit(me, &mut conn.rx, &mut conn.queued, started, &shared.sched);
        // Built in its box: the exchange travels through Python as a pointer.
        let mut ex = Box::new(Exchange {
            interim: match head.framing.expect_continue && !body.is_done() {
                true => Interim::ContinueOwed,
                false => Interim::None,
            },
            keep_alive: head.framing.keep_alive,
            conn,
            shared,
            pos,
            avail: pos..pos,
            body,
            out,
            response: Response::Pending,
            https,
            started,
            outcome: Outcome::default(),
            mark,
            defer,
            response_head: None,
            head,
            cork: CorkState::Idle,
            client,
            protocol,
            timing,
        });
        // Only now, so nothing between the box and its fields can fail.
        if mark == 0 {
            ex.shared.open(fd);
        }
        ex
    }

    // ---- the request ----

    fn bytes(&self, span: ferrule_http::Span) -> &[u8] {
        self.head.get(&self.conn.buf, span)
    }

    pub fn method(&self) -> &[u8] {
        self.bytes(self.head.method)
    }
    pub fn raw_target(&self) -> &[u8] {
        self.bytes(self.head.target.raw)
    }
    pub fn path(&self) -> &[u8] {
        self.bytes(self.head.target.path)
    }
    pub fn query(&self) -> &[u8] {
        self.bytes(self.head.target.query)
    }
    pub fn version(&self) -> Version {
        self.head.version
    }
    /// The request's fields in wire order; a uwsgi request's are its variables.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.head
            .headers
            .iter()
            .map(|h| (self.bytes(h.name), self.bytes(h.value)))
    }
    #[inline]
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        // Lengths first, from the spans: most fields are not the one asked for
        // (`X-Request-ID` is looked for on every request while egress is on).
        self.head
            .headers
            .iter()
            .find(|h| {
                h.name.range().len() == name.len() && self.bytes(h.name).eq_ignore_ascii_case(name)
            })
            .map(|h| self.bytes(h.value))
    }
    pub fn host(&self) -> Option<&[u8]> {
        self.head.framing.host.map(|s| self.bytes(s))
    }
    pub fn content_type(&self) -> Option<&[u8]> {
        self.head.framing.content_type.map(|s| self.bytes(s))
    }
    pub fn content_length(&self) -> Option<&[u8]> {
        self.head.framing.content_length.map(|s| self.bytes(s))
    }
    /// The `X-Request-ID` field, when the connection's peer is in
    /// `--forwarded-allow-ips` (egress's `request_id`).
    #[inline(always)]
    pub fn trusted_request_id(&self) -> Option<&[u8]> {
        // The field first: most requests have none, and the list is not looked at.
        let id = match self.protocol {
            Protocol::Http1 => self.header(b"x-request-id"),
            Protocol::Uwsgi => self.header(b"HTTP_X_REQUEST_ID"),
        }?;
        let config = &self.shared.config;
        config
            .forwarded_allow_ips
            .allows(self.conn.peer.ip())
            .then_some(id)
    }
    /// The protocol that carried the request.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
    /// The request's variables when its protocol delivered them ready-made (uwsgi);
    /// `None` for HTTP/1, whose environ the bridge derives from the head.
    #[inline]
    pub fn ready_vars(&self) -> Option<ReadyVars<'_>> {
        match self.protocol {
            Protocol::Http1 => None,
            Protocol::Uwsgi => Some(ReadyVars::new(&self.head, &self.conn.buf)),
        }
    }
    /// Whom the request came from (`Conn::client`, or a trusted proxy's list with
    /// `--forwarded-remote-addr`), not necessarily the socket's peer.
    pub fn client(&self) -> Peer {
        // The address picked first, then one copy (a copy in each arm costs more).
        *self.client.as_deref().unwrap_or(&self.conn.client)
    }
    pub fn local(&self) -> &Local {
        &self.shared.locals[self.conn.listener]
    }
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The TLS session this request came over, if any: protocol, suite, client
    /// certificate (`SSL_*` in the environ).
    pub fn tls(&self) -> Option<crate::client_cert::TlsFacts<'_>> {
        match &self.conn.transport {
            crate::transport::Transport::Tls(t) => {
                Some(crate::client_cert::TlsFacts::new(t.session()))
            }
            _ => None,
        }
    }
    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// What the finished request leaves for the access log (and, later, metrics).
    pub(crate) fn finished(&self) -> Finished<'_> {
        Finished {
            method: self.method(),
            target: self.raw_target(),
            path: self.path(),
            query: self.query(),
            version: self.version(),
            protocol: self.protocol,
            client: self.client(),
            outcome: self.outcome,
            started: self.started,
            head: &self.head,
            buf: &self.conn.buf,
            response_head: self.response_head.as_deref(),
            timing: self.timing,
            refused: false,
            sent_version: None,
        }
    }

    /// What the metrics count of the finished request (`Observe::answered`).
    pub(crate) fn answered(&self) -> Answered<'_> {
        Answered {
            method: self.method(),
            status: self.outcome.status,
            started: self.started,
            sent: self.outcome.body_bytes,
            received: self.head.len as u64 + self.body.received(),
        }
    }

    /// Hands the connection back, with how the request left it (`driver/next.rs`
    /// decides what follows). A response left in the buffer (see `finish`) travels
    /// with the connection.
    pub(crate) fn into_conn(mut self: Box<Self>, blocking: &dyn Blocking) -> (Box<Conn>, Ended) {
        // While the server drains, a response that said keep-alive (its head went out
        // before the drain, or a pipelined request follows) keeps the connection: its
        // next request is answered with `Connection: close`.
        let reusable =
            matches!(self.response, Response::Done) && self.keep_alive && self.claim().is_ok();
        if !reusable || !self.drain() {
            let sent = self.flush(blocking).is_ok() && matches!(self.response, Response::Done);
            // The kernel is asked only while draining, the one time it matters.
            let more = sent
                && (self.conn.buf.len() > self.pos
                    || !self.body.is_done()
                    || (self.shared.stopping() && self.conn.transport.has_bytes()));
            return (self.conn, Ended::Closing { more });
        }
        let used = self.pos;
        self.conn.buf.drain(..used);
        self.conn.fields = std::mem::take(&mut self.head.headers);
        // A spilled answer is already in the connection's buffer (`Conn::send`).
        if !self.conn.writing() {
            self.conn.out = std::mem::take(&mut self.out);
        }
        self.conn.scanned = 0;
        (self.conn, Ended::Reusable)
    }

    /// Takes the answer before its first byte goes out (`exchange/seat.rs`); fails when the
    /// request ran past `--timeout` and the server answered 500 in its place.
    #[inline]
    fn claim(&mut self) -> Result<(), Error> {
        match self.shared.claim() {
            true => Ok(()),
            false => Err(self.lost()),
        }
    }

    /// The timeout answered this request: what the app sends goes nowhere.
    #[cold]
    fn lost(&mut self) -> Error {
        self.keep_alive = false;
        self.outcome.status = 500;
        self.out.clear();
        self.mark = 0;
        Error::Overdue
    }
}
