//! What a finished request leaves behind: the record the access log reads (and,
//! later, metrics), filled by the exchange from whatever protocol carried it, so the
//! log knows nothing of exchanges or connections.

use crate::listener::Peer;
use crate::protocol::Protocol;
use crate::timing::Timing;
use ferrule_http::{is_var_of_field, Head, Version};
use std::time::Instant;

/// How a response ended, for the access log and the connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    pub status: u16,
    pub body_bytes: u64,
    /// The app sent fewer or more bytes than its Content-Length.
    pub length_mismatch: bool,
}

/// A finished request, borrowed from its exchange: built only when something reads it.
pub(crate) struct Finished<'a> {
    pub(crate) method: &'a [u8],
    /// The request target as sent.
    pub(crate) target: &'a [u8],
    pub(crate) path: &'a [u8],
    pub(crate) query: &'a [u8],
    pub(crate) version: Version,
    /// What carried it: a uwsgi request's fields are its variables (`HTTP_*`).
    pub(crate) protocol: Protocol,
    pub(crate) client: Peer,
    pub(crate) outcome: Outcome,
    /// When the request's event was taken, or its head parsed when pipelined.
    pub(crate) started: Instant,
    /// The request's fields, as spans of `buf` (an HTTP/1 head; a protocol whose
    /// fields come otherwise gets a variant here).
    pub(crate) head: &'a Head,
    pub(crate) buf: &'a [u8],
    /// A copy of the response head, kept only when the access log shows response fields.
    pub(crate) response_head: Option<&'a [u8]>,
    /// Queue and app times, when something reads them (`Observe::timed`).
    pub(crate) timing: Option<Timing>,
    /// The server answered it itself, before the app (`refused.rs`): nothing of the
    /// thread's last request (its id, its egress) belongs to it.
    pub(crate) refused: bool,
    /// The version as its client sent it, for a refused request: it may be one the
    /// server does not speak. None: `version`.
    pub(crate) sent_version: Option<&'a [u8]>,
}

impl Finished<'_> {
    /// A field of the request (the first of that name; a uwsgi request's `HTTP_*`
    /// variable, of which the front server sends one per name).
    pub(crate) fn header(&self, name: &[u8]) -> Option<&[u8]> {
        let bytes = |span| self.head.get(self.buf, span);
        let named = |var: &[u8]| match self.protocol {
            Protocol::Http1 => var.eq_ignore_ascii_case(name),
            Protocol::Uwsgi => is_var_of_field(var, name),
        };
        self.head
            .headers
            .iter()
            .find(|h| named(bytes(h.name)))
            .map(|h| bytes(h.value))
    }

    /// Whether a request line was read: false only for a request the server refused
    /// before one arrived whole (its access line shows `-` for `%(r)s`, as nginx's).
    pub(crate) fn has_request_line(&self) -> bool {
        !self.method.is_empty()
    }

    /// The protocol version the client sent (`%(H)s`): a uwsgi request's
    /// SERVER_PROTOCOL, which may be `HTTP/2.0` when the front server speaks HTTP/2.
    pub(crate) fn version_text(&self) -> &[u8] {
        if let Some(v) = self.sent_version {
            return v;
        }
        match self.protocol {
            Protocol::Http1 => self.version.as_str().as_bytes(),
            Protocol::Uwsgi => {
                let bytes = |span| self.head.get(self.buf, span);
                self.head
                    .headers
                    .iter()
                    .rev()
                    .find(|h| bytes(h.name) == b"SERVER_PROTOCOL")
                    .map_or(b"-", |h| bytes(h.value))
            }
        }
    }

    /// A field of the response sent, when the access log asked for them to be kept.
    pub fn response_header(&self, name: &[u8]) -> Option<&[u8]> {
        let head = self.response_head?;
        head.split(|&b| b == b'\n').skip(1).find_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            line[..colon]
                .eq_ignore_ascii_case(name)
                .then(|| line[colon + 1..].trim_ascii())
        })
    }
}
