//! What a finished request leaves behind: the record the access log reads (and,
//! later, metrics), filled by the exchange from whatever protocol carried it, so the
//! log knows nothing of exchanges or connections.

use crate::listener::Peer;
use ferrule_http::{Head, Version};
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
}

impl Finished<'_> {
    /// A field of the request (the first of that name).
    pub(crate) fn header(&self, name: &[u8]) -> Option<&[u8]> {
        let bytes = |span| self.head.get(self.buf, span);
        self.head
            .headers
            .iter()
            .find(|h| bytes(h.name).eq_ignore_ascii_case(name))
            .map(|h| bytes(h.value))
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
