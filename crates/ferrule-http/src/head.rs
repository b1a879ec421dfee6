//! The request head parser: a pure function over a byte buffer.
//!
//! `parse_head` is called with everything received so far. It returns `Ok(None)`
//! while the head is incomplete and within limits, the parsed [`Head`] once the
//! blank line has arrived, or the first error. The head refers to its bytes by
//! [`Span`]s, so nothing is copied; the caller keeps the bytes.

use crate::chars::{is_field_value, is_token, trim_ows};
use crate::config::{HeaderMap, ParserConfig};
use crate::error::ParseError;
use crate::framing::{self, Framing};
use crate::span::{Bytes, Header, Span};
use crate::target::{check_method, parse_target, parse_version, Target, TargetForm, Version};
use memchr::memchr;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head, blank line included, counted from the buffer's start.
    pub len: usize,
    pub method: Span,
    pub target: Target,
    pub version: Version,
    /// Fields in wire order; names with `_` are already gone under `header_map=drop`.
    pub headers: Vec<Header>,
    pub framing: Framing,
    /// Bytes that are not in the buffer: folded values and a case-folded method.
    pub(crate) owned: Vec<u8>,
}

impl Head {
    /// A head with no request line and no fields: what stands for a request the server
    /// refused before it had a head to parse (its access-log line shows `-`).
    pub fn empty() -> Head {
        Head {
            len: 0,
            method: Span::default(),
            target: Target {
                form: TargetForm::Origin,
                raw: Span::default(),
                path: Span::default(),
                query: Span::default(),
                fragment: Span::default(),
            },
            version: Version::Http11,
            headers: Vec::new(),
            framing: Framing::default(),
            owned: Vec::new(),
        }
    }

    /// The bytes of `span`, taken from `buf` (the buffer the head was parsed from) or the side buffer.
    #[inline]
    pub fn get<'a>(&'a self, buf: &'a [u8], span: Span) -> &'a [u8] {
        self.bytes(buf).get(span)
    }

    fn bytes<'a>(&'a self, buf: &'a [u8]) -> Bytes<'a> {
        Bytes {
            buf,
            owned: &self.owned,
        }
    }
}

/// Parses the head at the start of `buf`. Empty lines before the request line are
/// skipped; they count against the request-line limit (see [`parse_head_after`]).
pub fn parse_head(buf: &[u8], cfg: &ParserConfig) -> Result<Option<Head>, ParseError> {
    parse_head_after(buf, 0, cfg, Vec::with_capacity(16))
}

/// [`parse_head`] with the vector the fields go into (cleared first): a server passes
/// the previous request's `Head::headers`, so a keep-alive request allocates nothing.
pub fn parse_head_into(
    buf: &[u8],
    cfg: &ParserConfig,
    headers: Vec<Header>,
) -> Result<Option<Head>, ParseError> {
    parse_head_after(buf, 0, cfg, headers)
}

/// How many bytes at the start of `buf` are whole empty lines (CRLF), which RFC 9112
/// §2.2 lets a server ignore before a request line. A server drops them from its
/// buffer as they arrive and passes their count to [`parse_head_after`], so each byte
/// is looked at once however long a client keeps sending them.
#[inline]
pub fn empty_lines(buf: &[u8]) -> usize {
    let mut n = 0;
    while buf[n..].starts_with(b"\r\n") {
        n += 2;
    }
    n
}

/// [`parse_head_into`] for a buffer whose first `skipped` bytes of empty lines the
/// caller already dropped ([`empty_lines`]). Empty lines, CRLFs included, and the
/// request line together must fit in the request-line limit (as gunicorn and nginx
/// bound them): a client sending nothing but empty lines is refused with
/// `LimitRequestLine` after about `limit_request_line` bytes.
pub fn parse_head_after(
    buf: &[u8],
    skipped: usize,
    cfg: &ParserConfig,
    mut headers: Vec<Header>,
) -> Result<Option<Head>, ParseError> {
    headers.clear();
    let start = empty_lines(buf);
    let line_limit = cfg.request_line_limit();
    let Some(lf) = memchr(b'\n', &buf[start..]).map(|i| start + i) else {
        // The line may still end with the CR that is already here.
        return if skipped + buf.len() > line_limit + 1 {
            Err(ParseError::LimitRequestLine)
        } else {
            Ok(None)
        };
    };
    let line = match buf[start..lf].strip_suffix(b"\r") {
        Some(l) => l,
        None => return Err(ParseError::InvalidRequestLine),
    };
    if skipped + start + line.len() > line_limit {
        return Err(ParseError::LimitRequestLine);
    }
    let mut owned = Vec::new();
    let (method, target, version) = request_line(line, start, cfg, &mut owned)?;
    let mut pos = lf + 1;
    // Size of the field being built, CRLF included, for limits across folded lines.
    let mut field_len = 0usize;
    let mut last_dropped = false;
    let mut count = 0usize;
    let field_limit = cfg.field_size_limit();
    loop {
        let Some(lf) = memchr(b'\n', &buf[pos..]).map(|i| pos + i) else {
            return if buf.len() - pos > field_limit {
                Err(ParseError::LimitRequestHeaders)
            } else {
                Ok(None)
            };
        };
        let line = match buf[pos..lf].strip_suffix(b"\r") {
            Some(l) => l,
            None => return Err(ParseError::InvalidHeader),
        };
        let line_start = pos;
        pos = lf + 1;
        if line.is_empty() {
            break;
        }
        if matches!(line[0], b' ' | b'\t') {
            if !cfg.permit_obsolete_folding {
                return Err(ParseError::ObsoleteFolding);
            }
            if count == 0 {
                return Err(ParseError::InvalidHeader);
            }
            field_len += line.len() + 2;
            if field_len > field_limit {
                return Err(ParseError::LimitRequestHeaders);
            }
            if !last_dropped {
                let last = headers.last_mut().ok_or(ParseError::InvalidHeader)?;
                fold(buf, last, trim_ows(line), &mut owned)?;
            }
            continue;
        }
        field_len = line.len() + 2;
        if field_len > field_limit {
            return Err(ParseError::LimitRequestHeaders);
        }
        count += 1;
        if count > cfg.fields_limit() {
            return Err(ParseError::LimitRequestHeaders);
        }
        let colon = memchr(b':', line).ok_or(ParseError::InvalidHeader)?;
        let mut name = &line[..colon];
        if cfg.strip_header_spaces {
            name = trim_ows(name);
        }
        if !is_token(name) {
            return Err(ParseError::InvalidHeaderName);
        }
        let raw_value = &line[colon + 1..];
        let value = trim_ows(raw_value);
        if !is_field_value(value) {
            return Err(ParseError::InvalidHeader);
        }
        last_dropped = name.contains(&b'_') && cfg.header_map != HeaderMap::Dangerous;
        if last_dropped && cfg.header_map == HeaderMap::Refuse {
            return Err(ParseError::InvalidHeaderName);
        }
        if !last_dropped {
            let value_off = value.as_ptr() as usize - raw_value.as_ptr() as usize;
            headers.push(Header {
                name: Span::at(line_start, name.len()),
                value: Span::at(line_start + colon + 1 + value_off, value.len()),
            });
        }
    }
    let mut head = Head {
        len: pos,
        method,
        target,
        version,
        headers,
        framing: Framing::default(),
        owned,
    };
    head.framing = framing::analyse(
        &head.headers,
        head.bytes(buf),
        head.version,
        &head.target,
        cfg,
    )?;
    Ok(Some(head))
}

fn request_line(
    line: &[u8],
    base: usize,
    cfg: &ParserConfig,
    owned: &mut Vec<u8>,
) -> Result<(Span, Target, Version), ParseError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(m), Some(t), Some(v), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::InvalidRequestLine);
    };
    if m.is_empty() || t.is_empty() || v.is_empty() {
        return Err(ParseError::InvalidRequestLine);
    }
    check_method(m, cfg.permit_unconventional_http_method)?;
    let method = if cfg.casefold_http_method && m.iter().any(u8::is_ascii_lowercase) {
        let at = owned.len();
        owned.extend(m.iter().map(u8::to_ascii_uppercase));
        Span::owned(at, m.len())
    } else {
        Span::at(base, m.len())
    };
    let upper;
    let m_for_target = if method.is_owned() {
        upper = owned[method.range()].to_vec();
        &upper[..]
    } else {
        m
    };
    let target = parse_target(m_for_target, t, base + m.len() + 1)?;
    let version = parse_version(v)?;
    Ok((method, target, version))
}

/// Appends a continuation line to a field's value, joined by one space.
fn fold(buf: &[u8], h: &mut Header, more: &[u8], owned: &mut Vec<u8>) -> Result<(), ParseError> {
    if !is_field_value(more) {
        return Err(ParseError::InvalidHeader);
    }
    if !h.value.is_owned() {
        let at = owned.len();
        owned.extend_from_slice(&buf[h.value.range()]);
        h.value = Span::owned(at, h.value.range().len());
    }
    if h.value.range().end != owned.len() {
        // Another value was folded after this one; move this one to the end.
        let copy = owned[h.value.range()].to_vec();
        let at = owned.len();
        owned.extend_from_slice(&copy);
        h.value = Span::owned(at, copy.len());
    }
    if !more.is_empty() {
        if !h.value.is_empty() {
            owned.push(b' ');
        }
        owned.extend_from_slice(more);
    }
    let start = h.value.range().start;
    h.value = Span::owned(start, owned.len() - start);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_field_vector_gives_the_same_head() {
        let cfg = ParserConfig::default();
        let first = b"GET /a HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n";
        let second = b"POST /b HTTP/1.1\r\nHost: y\r\nContent-Length: 0\r\n\r\n";
        let used = parse_head(first, &cfg).unwrap().unwrap().headers;
        assert_eq!(used.len(), 3);
        let reused = parse_head_into(second, &cfg, used).unwrap().unwrap();
        let fresh = parse_head(second, &cfg).unwrap().unwrap();
        assert_eq!(reused.headers.len(), 2);
        for (a, b) in reused.headers.iter().zip(&fresh.headers) {
            assert_eq!(reused.get(second, a.name), fresh.get(second, b.name));
            assert_eq!(reused.get(second, a.value), fresh.get(second, b.value));
        }
        assert_eq!(reused.framing, fresh.framing);
    }

    fn small_line_limit() -> ParserConfig {
        ParserConfig {
            limit_request_line: 20,
            ..ParserConfig::default()
        }
    }

    #[test]
    fn empty_lines_count_against_the_request_line_limit() {
        let cfg = small_line_limit();
        let req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"; // a request line of 14 bytes
        let table: &[(usize, Result<bool, ParseError>)] = &[
            (0, Ok(true)),
            (1, Ok(true)),
            (3, Ok(true)), // 6 + 14 = 20: at the limit
            (4, Err(ParseError::LimitRequestLine)),
            (500, Err(ParseError::LimitRequestLine)),
        ];
        for (n, want) in table {
            let raw = "\r\n".repeat(*n) + req;
            let got = parse_head(raw.as_bytes(), &cfg).map(|h| h.is_some());
            assert_eq!(got, *want, "{n} empty lines");
            if let Ok(Some(head)) = parse_head(raw.as_bytes(), &cfg) {
                assert_eq!(head.len, raw.len());
                assert_eq!(head.get(raw.as_bytes(), head.method), b"GET");
            }
        }
        // Nothing but empty lines: refused once they alone pass the limit.
        for (n, want) in [(10, Ok(false)), (11, Err(ParseError::LimitRequestLine))] {
            let raw = "\r\n".repeat(n);
            let got = parse_head(raw.as_bytes(), &cfg).map(|h| h.is_some());
            assert_eq!(got, want, "{n} empty lines alone");
        }
        // Only CRLF makes an empty line (RFC 9112 §2.2 allows no bare LF here).
        for raw in [
            "\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "\r\r\nGET / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                parse_head(raw.as_bytes(), &cfg),
                Err(ParseError::InvalidRequestLine),
                "{raw:?}"
            );
        }
    }

    /// A server drops empty lines as they arrive (`empty_lines`) and tells the parser how
    /// many it dropped: whatever the pieces, the answer is the whole buffer's, and no
    /// byte of an empty line is kept or looked at again.
    #[test]
    fn dropping_empty_lines_as_they_arrive_gives_the_whole_buffers_answer() {
        let cfg = small_line_limit();
        for n in 0..14 {
            for tail in ["GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET /", "\r", ""] {
                let raw = ("\r\n".repeat(n) + tail).into_bytes();
                let whole = parse_head(&raw, &cfg).map(|h| h.map(|h| h.len));
                for step in 1..=5 {
                    let (mut buf, mut skipped, mut fed) = (Vec::new(), 0, 0);
                    let got = loop {
                        let end = (fed + step).min(raw.len());
                        buf.extend_from_slice(&raw[fed..end]);
                        fed = end;
                        let drop = empty_lines(&buf);
                        buf.drain(..drop);
                        skipped += drop;
                        if fed <= 2 * n {
                            assert!(buf.len() <= 1, "kept {} bytes of empty lines", buf.len());
                        }
                        match parse_head_after(&buf, skipped, &cfg, Vec::new()) {
                            Ok(None) if fed < raw.len() => continue,
                            r => break r.map(|h| h.map(|h| skipped + h.len)),
                        }
                    };
                    assert_eq!(got, whole, "{n} empty lines, then {tail:?}, by {step}");
                }
            }
        }
    }
}
