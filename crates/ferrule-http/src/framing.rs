//! What the head means for the connection: how the body is delimited, whether the
//! connection stays open, and the few fields that may appear only once.
//!
//! Every rule here exists to stop request smuggling: a front server and ferrule must
//! never disagree about where one request ends and the next begins.

use crate::chars::trim_ows;
use crate::config::ParserConfig;
use crate::error::ParseError;
use crate::span::{Bytes, Header, Span};
use crate::target::{absolute_host, is_host_value, Target, TargetForm, Version};

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyKind {
    /// No body (no Content-Length, no Transfer-Encoding, or Content-Length: 0).
    #[default]
    Empty,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// The connection-level meaning of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Framing {
    pub body: BodyKind,
    /// The client allows the connection to be reused after this request.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1.
    pub expect_continue: bool,
    /// The host the request is for: the absolute-form target's `host[:port]` when the
    /// target has one (RFC 9112 §3.2.2: it wins over Host), else the Host field.
    pub host: Option<Span>,
    pub content_type: Option<Span>,
    pub content_length: Option<Span>,
}

/// Derives the framing from the parsed fields, version and target of a head.
pub(crate) fn analyse(
    headers: &[Header],
    bytes: Bytes<'_>,
    version: Version,
    target: &Target,
    cfg: &ParserConfig,
) -> Result<Framing, ParseError> {
    let mut f = Framing::default();
    let mut length: Option<u64> = None;
    let mut te_seen = false;
    let mut chunked = false;
    let (mut close, mut keep) = (false, false);
    for h in headers {
        let name = bytes.get(h.name);
        let value = bytes.get(h.value);
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                once(&mut f.host, h.value)?;
                if !is_host_value(value) {
                    return Err(ParseError::InvalidHost);
                }
            }
            6 if name.eq_ignore_ascii_case(b"expect") => {
                f.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for token in value.split(|&b| b == b',').map(trim_ows) {
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            12 if name.eq_ignore_ascii_case(b"content-type") => once(&mut f.content_type, h.value)?,
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                once(&mut f.content_length, h.value)?;
                length = Some(parse_length(value)?);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                te_seen = true;
                codings(value, &mut chunked)?;
            }
            _ => {}
        }
    }
    f.body = if chunked {
        if version == Version::Http10 || length.is_some() {
            return Err(ParseError::InvalidHeader);
        }
        BodyKind::Chunked
    } else if te_seen {
        // A Transfer-Encoding whose last coding is not chunked cannot be delimited
        // (RFC 9112 §6.3), and "identity" next to Content-Length is a smuggling classic.
        return Err(ParseError::InvalidHeader);
    } else {
        match length {
            None | Some(0) => BodyKind::Empty,
            Some(n) => BodyKind::Length(n),
        }
    };
    if let BodyKind::Length(n) = f.body {
        if cfg.limit_request_body > 0 && n > cfg.limit_request_body {
            return Err(ParseError::BodyTooLarge);
        }
    }
    if f.host.is_none() && version == Version::Http11 && !cfg.permit_missing_host {
        // RFC 9112 §3.2, as nginx and Apache answer; gunicorn accepts it.
        return Err(ParseError::MissingHost);
    }
    if target.form == TargetForm::Absolute {
        f.host = Some(absolute_host(target, bytes.buf));
    }
    f.expect_continue &= version == Version::Http11;
    f.keep_alive = !close && (version == Version::Http11 || keep);
    Ok(f)
}

fn once(slot: &mut Option<Span>, v: Span) -> Result<(), ParseError> {
    if slot.replace(v).is_some() {
        return Err(ParseError::InvalidHeader);
    }
    Ok(())
}

/// Content-Length is 1*DIGIT: no sign, no spaces, no list form, no overflow.
fn parse_length(v: &[u8]) -> Result<u64, ParseError> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::InvalidHeader);
    }
    Ok(v.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// Walks one Transfer-Encoding field: chunked at most once and last; identity is a no-op
/// before it; compression codings are allowed before chunked only.
fn codings(v: &[u8], chunked: &mut bool) -> Result<(), ParseError> {
    for c in v.split(|&b| b == b',').map(trim_ows) {
        if c.eq_ignore_ascii_case(b"chunked") {
            if *chunked {
                return Err(ParseError::InvalidHeader);
            }
            *chunked = true;
        } else if c.eq_ignore_ascii_case(b"identity")
            || c.eq_ignore_ascii_case(b"gzip")
            || c.eq_ignore_ascii_case(b"x-gzip")
            || c.eq_ignore_ascii_case(b"deflate")
            || c.eq_ignore_ascii_case(b"compress")
        {
            if *chunked {
                return Err(ParseError::InvalidHeader);
            }
        } else {
            return Err(ParseError::UnsupportedTransferCoding);
        }
    }
    Ok(())
}
