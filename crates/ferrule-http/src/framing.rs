//! What the head means for the connection: how the body is delimited, whether the
//! connection stays open, and the few fields that may appear only once.
//!
//! Every rule here exists to stop request smuggling: a front server and ferrule must
//! never disagree about where one request ends and the next begins.

use crate::chars::trim_ows;
use crate::config::ParserConfig;
use crate::error::ParseError;
use crate::head::{Head, Span};
use crate::target::Version;

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
    pub host: Option<Span>,
    pub content_type: Option<Span>,
    pub content_length: Option<Span>,
}

/// Derives the framing from the parsed headers.
pub(crate) fn analyse(head: &Head, buf: &[u8], cfg: &ParserConfig) -> Result<Framing, ParseError> {
    let mut f = Framing::default();
    let mut length: Option<u64> = None;
    let mut te_seen = false;
    let mut chunked = false;
    let (mut close, mut keep) = (false, false);
    for h in &head.headers {
        let name = head.get(buf, h.name);
        let value = head.get(buf, h.value);
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => once(&mut f.host, h.value)?,
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
        if head.version == Version::Http10 || length.is_some() {
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
    f.expect_continue &= head.version == Version::Http11;
    f.keep_alive = !close && (head.version == Version::Http11 || keep);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::parse_head;

    fn framing(raw: &str) -> Result<Framing, ParseError> {
        parse_head(raw.as_bytes(), &ParserConfig::default()).map(|h| h.expect("complete").framing)
    }

    #[test]
    fn body_kinds() {
        let table: &[(&str, Result<BodyKind, ParseError>)] = &[
            ("GET / HTTP/1.1\r\n\r\n", Ok(BodyKind::Empty)),
            ("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", Ok(BodyKind::Empty)),
            ("POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n", Ok(BodyKind::Length(12))),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", Ok(BodyKind::Chunked)),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Ok(BodyKind::Chunked)),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n", Ok(BodyKind::Chunked)),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", Err(ParseError::InvalidHeader)),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", Err(ParseError::InvalidHeader)),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", Err(ParseError::InvalidHeader)),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\n", Err(ParseError::InvalidHeader)),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: br, chunked\r\n\r\n", Err(ParseError::UnsupportedTransferCoding)),
            ("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", Err(ParseError::InvalidHeader)),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Err(ParseError::InvalidHeader)),
            ("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", Err(ParseError::InvalidHeader)),
            ("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", Err(ParseError::InvalidHeader)),
            ("POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n", Err(ParseError::InvalidHeader)),
            ("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", Err(ParseError::InvalidHeader)),
        ];
        for (raw, want) in table {
            assert_eq!(framing(raw).map(|f| f.body), *want, "{raw:?}");
        }
    }

    #[test]
    fn keep_alive() {
        let table = [
            ("GET / HTTP/1.1\r\n\r\n", true),
            ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            (
                "GET / HTTP/1.1\r\nConnection: Upgrade, Close\r\n\r\n",
                false,
            ),
            ("GET / HTTP/1.0\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        ];
        for (raw, want) in table {
            assert_eq!(framing(raw).unwrap().keep_alive, want, "{raw:?}");
        }
    }

    #[test]
    fn body_limit_is_413() {
        let cfg = ParserConfig {
            limit_request_body: 10,
            ..ParserConfig::default()
        };
        let raw = b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n";
        assert_eq!(parse_head(raw, &cfg), Err(ParseError::BodyTooLarge));
        assert_eq!(ParseError::BodyTooLarge.status(), 413);
    }
}
