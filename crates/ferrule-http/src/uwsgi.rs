//! The uwsgi request packet (nginx `uwsgi_pass`, Apache `mod_proxy_uwsgi`), sans-IO.
//!
//! A packet is a 4-byte header (modifier1, vars size as a little-endian u16,
//! modifier2), then that many bytes of variables, each `u16-LE key length, key,
//! u16-LE value length, value`. The body follows the packet and is not part of it:
//! the caller reads `content_length` bytes with a [`BodyDecoder`](crate::BodyDecoder)
//! of [`UwsgiPacket::body`]. The front server already parsed the HTTP request, so
//! nothing here looks inside keys or values except CONTENT_LENGTH, which frames the
//! body; which variables make the environ is the bridge's business.
//!
//! nginx builds the packet in `ngx_http_uwsgi_create_request`: the `uwsgi_param`s in
//! order (an `if_not_empty` one left out when empty, others sent empty), then every
//! request field as `HTTP_NAME` (upper case, `-` as `_`; repeated fields joined with
//! `, `, or `; ` for Cookie), then `uwsgi_string` raw (refused here as inconsistent
//! unless it is itself whole variables). It refuses a packet over 65535 bytes
//! itself, so every size the u16 can hold is accepted here.

use crate::framing::BodyKind;
use crate::span::Span;
use std::fmt;
use std::ops::Range;

/// Bytes of the packet header: modifier1, the vars size (u16 LE), modifier2.
pub const UWSGI_HEADER_LEN: usize = 4;

/// A parsed packet: where its variables are in the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UwsgiPacket {
    /// modifier2 as sent (nginx's `uwsgi_modifier2`, 0 unless configured); kept for logs.
    pub modifier2: u8,
    /// (key, value) spans into the buffer the packet was parsed from, in wire order.
    /// A key sent twice is here twice (the environ keeps the last: ferrule-py's
    /// `ready_rules.rs`, and `content_length` below).
    pub vars: Vec<(Span, Span)>,
    /// CONTENT_LENGTH (the last one sent), 0 when absent or empty.
    pub content_length: u64,
    /// Bytes of the packet, header included (4 + vars size): where the body starts.
    pub consumed: usize,
}

impl UwsgiPacket {
    /// The variables as `(key, value)` bytes, taken from `buf` (the buffer the packet
    /// was parsed from). A span outside `buf` (a different buffer passed) yields empty
    /// bytes rather than a panic.
    pub fn pairs<'a>(&'a self, buf: &'a [u8]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let get = move |s: Span| buf.get(s.range()).unwrap_or_default();
        self.vars.iter().map(move |&(k, v)| (get(k), get(v)))
    }

    /// How the body that follows the packet is delimited, for a `BodyDecoder`. The
    /// caller compares `content_length` with `limit_request_body` first, as the HTTP/1
    /// framing does for Content-Length, so an oversized body is refused before a read.
    pub fn body(&self) -> BodyKind {
        match self.content_length {
            0 => BodyKind::Empty,
            n => BodyKind::Length(n),
        }
    }
}

/// What is wrong inside the vars block (each a way the sizes fail to add up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inconsistency {
    /// Fewer than 2 bytes left where a key length should be.
    KeyLength,
    /// The key runs past the end of the vars block.
    Key,
    /// A key of length 0: no environ name can be empty.
    EmptyKey,
    /// Fewer than 2 bytes left where the value length should be.
    ValueLength,
    /// The value runs past the end of the vars block.
    Value,
}

/// Why a packet was refused. A packet has no HTTP answer of its own (the front server
/// makes one), so the driver logs this and closes the connection.
///
/// Its own type rather than variants of [`ParseError`](crate::ParseError): it carries
/// what a log line needs (the modifier, where the sizes broke) and names gunicorn's
/// uwsgi classes, not its HTTP ones; `From` gives the HTTP class for callers that
/// need one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UwsgiError {
    /// modifier1 is not 0 (a WSGI request); the value sent.
    UnsupportedModifier(u8),
    /// The vars block does not split into whole variables; `at` is the offset of the
    /// broken variable from the start of the packet.
    Inconsistent { at: usize, why: Inconsistency },
    /// CONTENT_LENGTH is not empty or decimal digits within u64.
    InvalidContentLength,
    /// A variable the request cannot do without was not sent (nginx sends it only
    /// with `include uwsgi_params`).
    MissingVar(&'static str),
    /// The packet is whole but breaks a rule HTTP/1 requests have too: a limit
    /// (`limit_request_line`, `_fields`, `_field_size`, `_body`), a method that is not
    /// a token, or a control character in the target or a field's value (which would
    /// reach the app and the access log raw). Answered with the status the HTTP error
    /// has, which the front server relays.
    Limit(crate::ParseError),
}

impl UwsgiError {
    /// gunicorn's name for the class (`gunicorn/uwsgi/errors.py`).
    pub fn name(self) -> &'static str {
        match self {
            UwsgiError::UnsupportedModifier(_) => "UnsupportedModifier",
            UwsgiError::Inconsistent { .. }
            | UwsgiError::InvalidContentLength
            | UwsgiError::MissingVar(_) => "InvalidUWSGIHeader",
            UwsgiError::Limit(e) => e.name(),
        }
    }

    /// The status a front server relays for it, when the request is answered rather
    /// than closed on: only a broken limit; a malformed packet gets no answer.
    pub fn status(self) -> Option<u16> {
        match self {
            UwsgiError::Limit(e) => Some(e.status()),
            _ => None,
        }
    }
}

impl fmt::Display for UwsgiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            // An HTTP request on a uwsgi bind: its method's first letter is modifier1.
            UwsgiError::UnsupportedModifier(m) if m.is_ascii_uppercase() => write!(
                f,
                "unsupported uwsgi modifier1 {m} ({:?}: an HTTP request on a bind that speaks \
                 --protocol uwsgi?)",
                m as char
            )?,
            UwsgiError::UnsupportedModifier(m) => write!(f, "unsupported uwsgi modifier1 {m}")?,
            UwsgiError::Inconsistent { at, why } => {
                let what = match why {
                    Inconsistency::KeyLength => "key length is cut off",
                    Inconsistency::Key => "key runs past the vars block",
                    Inconsistency::EmptyKey => "key is empty",
                    Inconsistency::ValueLength => "value length is cut off",
                    Inconsistency::Value => "value runs past the vars block",
                };
                write!(f, "inconsistent uwsgi packet: the var at byte {at}: {what}")?
            }
            UwsgiError::InvalidContentLength => write!(f, "invalid uwsgi CONTENT_LENGTH")?,
            UwsgiError::MissingVar(v) => write!(
                f,
                "the uwsgi packet has no {v} (does the front server's config include uwsgi_params?)"
            )?,
            UwsgiError::Limit(e) => return write!(f, "{e}"),
        }
        write!(f, " ({})", self.name())
    }
}

impl std::error::Error for UwsgiError {}

/// The nearest HTTP class, for a caller that keeps one error type: a request the
/// server will not take (modifier1) or a malformed head (the rest). Logs should
/// use the `UwsgiError` itself, which says more.
impl From<UwsgiError> for crate::ParseError {
    fn from(e: UwsgiError) -> Self {
        match e {
            UwsgiError::UnsupportedModifier(_) => crate::ParseError::InvalidRequestLine,
            UwsgiError::Limit(e) => e,
            _ => crate::ParseError::InvalidHeader,
        }
    }
}

/// Parses the packet at the start of `buf`: `Ok(None)` until all of it has arrived.
pub fn parse_uwsgi(buf: &[u8]) -> Result<Option<UwsgiPacket>, UwsgiError> {
    parse_uwsgi_into(buf, Vec::new())
}

/// [`parse_uwsgi`] with the vector the variables go into (cleared first): a server
/// passes the previous packet's `vars`, so a keep-alive connection allocates once.
pub fn parse_uwsgi_into(
    buf: &[u8],
    mut vars: Vec<(Span, Span)>,
) -> Result<Option<UwsgiPacket>, UwsgiError> {
    // modifier1 is refused on its first byte: nothing else can make the packet good.
    match buf.first() {
        None => return Ok(None),
        Some(&0) => {}
        Some(&m) => return Err(UwsgiError::UnsupportedModifier(m)),
    }
    let Some(&[_, lo, hi, modifier2]) = buf.get(..UWSGI_HEADER_LEN) else {
        return Ok(None);
    };
    let consumed = UWSGI_HEADER_LEN + usize::from(u16::from_le_bytes([lo, hi]));
    // Nothing is parsed until the whole block is here, so a packet arriving in many
    // reads costs one walk, not one per read.
    let Some(block) = buf.get(UWSGI_HEADER_LEN..consumed) else {
        return Ok(None);
    };
    vars.clear();
    let mut content_length = 0;
    let mut pos = 0;
    while pos < block.len() {
        let at = UWSGI_HEADER_LEN + pos;
        let broken = |why| UwsgiError::Inconsistent { at, why };
        let (key, next) =
            field(block, pos, Inconsistency::KeyLength, Inconsistency::Key).map_err(broken)?;
        if key.is_empty() {
            return Err(broken(Inconsistency::EmptyKey));
        }
        let (value, next) = field(
            block,
            next,
            Inconsistency::ValueLength,
            Inconsistency::Value,
        )
        .map_err(broken)?;
        pos = next;
        if block.get(key.clone()) == Some(&b"CONTENT_LENGTH"[..]) {
            let value = block.get(value.clone()).unwrap_or_default();
            content_length = parse_content_length(value)?;
        }
        vars.push((shift(key), shift(value)));
    }
    Ok(Some(UwsgiPacket {
        modifier2,
        vars,
        content_length,
        consumed,
    }))
}

/// One length-prefixed field of `block` at `pos`: its range in `block` and where the
/// next field starts; `cut` when the 2-byte length itself is cut off, `past` when the
/// bytes it announces run past the block.
fn field(
    block: &[u8],
    pos: usize,
    cut: Inconsistency,
    past: Inconsistency,
) -> Result<(Range<usize>, usize), Inconsistency> {
    let Some(&[lo, hi]) = block.get(pos..pos + 2) else {
        return Err(cut);
    };
    let start = pos + 2;
    let end = start + usize::from(u16::from_le_bytes([lo, hi]));
    if end > block.len() {
        return Err(past);
    }
    Ok((start..end, end))
}

/// A range of the vars block as a span of the packet's buffer (positions < 4 + 65536,
/// so `Span`'s u32 holds them).
fn shift(r: Range<usize>) -> Span {
    Span::at(UWSGI_HEADER_LEN + r.start, r.len())
}

/// Empty (nginx's `uwsgi_params` send it so for a request without a body) is 0; else
/// 1*DIGIT within u64: no sign, no spaces, no overflow. gunicorn reads a value
/// it cannot parse as 0, and so takes the body's bytes for the next packet.
fn parse_content_length(v: &[u8]) -> Result<u64, UwsgiError> {
    v.iter().try_fold(0u64, |n, &d| {
        let digit = d.is_ascii_digit().then(|| u64::from(d - b'0'));
        digit
            .and_then(|d| n.checked_mul(10)?.checked_add(d))
            .ok_or(UwsgiError::InvalidContentLength)
    })
}

mod encode;
pub(crate) mod fuzz;
mod head;
#[cfg(test)]
mod tests;

pub use encode::{uwsgi_packet, uwsgi_vars};
pub use head::{
    finish_uwsgi_head, is_var_of_field, uwsgi_client, uwsgi_error_response, uwsgi_head,
    uwsgi_response_framing, UwsgiHead,
};
