//! Request body decoding: Content-Length and chunked, sans-IO.
//!
//! The caller hands the decoder whatever bytes follow the head; the decoder says how
//! many it consumed and which of them are body data. Chunk data is never copied: the
//! returned range points into the caller's buffer.

use crate::chars::{is_field_value, is_tchar, is_token, trim_ows};
use crate::config::{HeaderMap, ParserConfig};
use crate::error::ParseError;
use crate::framing::BodyKind;
use memchr::memchr;
use std::ops::Range;

/// Longest chunk-size line accepted (size, extensions and CRLF).
const MAX_CHUNK_LINE: usize = 4096;

/// Trailer fields that would change how the request is framed, routed or authorised
/// if a component merged them into the head; they are refused (RFC 9110 §6.5.1).
const FORBIDDEN_TRAILERS: &[&[u8]] = &[
    b"content-length",
    b"transfer-encoding",
    b"host",
    b"trailer",
    b"te",
    b"connection",
    b"keep-alive",
    b"upgrade",
    b"expect",
    b"authorization",
    b"proxy-authorization",
    b"cookie",
    b"set-cookie",
    b"content-encoding",
    b"content-range",
    b"range",
    b"max-forwards",
];

/// One step of decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Bytes of the input that have been used up (data included).
    pub consumed: usize,
    /// Body bytes found, as a range of the input.
    pub data: Range<usize>,
    /// The body has ended; nothing more belongs to this request.
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    /// Field lines seen, and the size of the last field so far (folded lines add to it).
    Trailers {
        fields: usize,
        field_len: usize,
    },
    Done,
}

/// Decodes one request body.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    kind: Kind,
    received: u64,
    limit: u64,
    fields: FieldRules,
}

/// The head's field rules, which trailer lines follow too (RFC 9112 §7.1.2).
#[derive(Debug, Clone, Copy)]
struct FieldRules {
    size: usize,
    count: usize,
    fold: bool,
    strip: bool,
    refuse_underscore: bool,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Length(u64),
    Chunked(Chunk),
}

impl BodyDecoder {
    pub fn new(body: BodyKind, cfg: &ParserConfig) -> BodyDecoder {
        let kind = match body {
            BodyKind::Empty => Kind::Length(0),
            BodyKind::Length(n) => Kind::Length(n),
            BodyKind::Chunked => Kind::Chunked(Chunk::Size),
        };
        BodyDecoder {
            kind,
            received: 0,
            limit: cfg.limit_request_body,
            fields: FieldRules {
                size: cfg.field_size_limit(),
                count: cfg.fields_limit(),
                fold: cfg.permit_obsolete_folding,
                strip: cfg.strip_header_spaces,
                refuse_underscore: cfg.header_map == HeaderMap::Refuse,
            },
        }
    }

    /// True once every byte of the body (and its trailers) has been consumed.
    pub fn is_done(&self) -> bool {
        matches!(self.kind, Kind::Length(0) | Kind::Chunked(Chunk::Done))
    }

    /// Body bytes delivered so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Bytes still expected, when the body has a declared length.
    pub fn remaining(&self) -> Option<u64> {
        match self.kind {
            Kind::Length(n) => Some(n),
            Kind::Chunked(_) => None,
        }
    }

    /// The error to report when the peer closes before the body is complete.
    pub fn eof_error(&self) -> ParseError {
        match self.kind {
            // gunicorn's answer when a chunk's CRLF or the trailer section's end never came.
            Kind::Chunked(Chunk::DataEnd | Chunk::Trailers { .. }) => {
                ParseError::ChunkMissingTerminator
            }
            _ => ParseError::NoMoreData,
        }
    }

    /// Decodes from the front of `input`, returning at most one run of data.
    ///
    /// A step that consumes nothing and is not done needs more input.
    pub fn decode(&mut self, input: &[u8]) -> Result<Step, ParseError> {
        let mut pos = 0;
        loop {
            let step = match &mut self.kind {
                Kind::Length(0) => {
                    return Ok(Step {
                        consumed: pos,
                        data: pos..pos,
                        done: true,
                    })
                }
                Kind::Length(n) => {
                    let take = (*n).min((input.len() - pos) as u64) as usize;
                    *n -= take as u64;
                    self.received += take as u64;
                    return Ok(Step {
                        consumed: pos + take,
                        data: pos..pos + take,
                        done: *n == 0,
                    });
                }
                Kind::Chunked(state) => chunk_step(state, &input[pos..], &self.fields)?,
            };
            let (used, data) = step;
            let data = pos + data.start..pos + data.end;
            pos += used;
            if !data.is_empty() {
                self.received += data.len() as u64;
                if self.limit > 0 && self.received > self.limit {
                    return Err(ParseError::BodyTooLarge);
                }
                return Ok(Step {
                    consumed: pos,
                    data,
                    done: false,
                });
            }
            if self.is_done() {
                return Ok(Step {
                    consumed: pos,
                    data: pos..pos,
                    done: true,
                });
            }
            if used == 0 {
                return Ok(Step {
                    consumed: pos,
                    data: pos..pos,
                    done: false,
                });
            }
        }
    }
}

/// Advances the chunked state machine once; returns bytes used and a data range.
fn chunk_step(
    state: &mut Chunk,
    input: &[u8],
    rules: &FieldRules,
) -> Result<(usize, Range<usize>), ParseError> {
    match *state {
        Chunk::Size => {
            // The length is judged before the line's end is, and the same way with or
            // without its LF, so whole and byte-by-byte delivery get the same answer.
            let lf = memchr(b'\n', input);
            if lf.unwrap_or(input.len()) >= MAX_CHUNK_LINE {
                return Err(ParseError::InvalidChunkSize);
            }
            let Some(lf) = lf else {
                return Ok((0, 0..0));
            };
            let Some(line) = input[..lf].strip_suffix(b"\r") else {
                // A bare LF ends no line (§7.1 says CRLF); nginx would end the line
                // there, so accepting it would let the two frame the body differently.
                return Err(match memchr(b';', &input[..lf]) {
                    Some(_) => ParseError::InvalidChunkExtension,
                    None => ParseError::InvalidChunkSize,
                });
            };
            let size = chunk_size(line)?;
            *state = if size == 0 {
                Chunk::Trailers {
                    fields: 0,
                    field_len: 0,
                }
            } else {
                Chunk::Data(size)
            };
            Ok((lf + 1, 0..0))
        }
        Chunk::Data(n) => {
            let take = n.min(input.len() as u64) as usize;
            *state = if take as u64 == n {
                Chunk::DataEnd
            } else {
                Chunk::Data(n - take as u64)
            };
            Ok((take, 0..take))
        }
        Chunk::DataEnd => match input {
            [b'\r', b'\n', ..] => {
                *state = Chunk::Size;
                Ok((2, 0..0))
            }
            [] | [b'\r'] => Ok((0, 0..0)),
            _ => Err(ParseError::ChunkMissingTerminator),
        },
        Chunk::Trailers { fields, field_len } => {
            let Some(lf) = memchr(b'\n', input) else {
                return if input.len() > rules.size {
                    Err(ParseError::LimitRequestHeaders)
                } else {
                    Ok((0, 0..0))
                };
            };
            let line = &input[..lf];
            if line == b"\r" {
                *state = Chunk::Done;
                return Ok((lf + 1, 0..0));
            }
            if line.is_empty() {
                // gunicorn waits for CRLF CRLF here and so answers this at EOF.
                return Err(ParseError::ChunkMissingTerminator);
            }
            // CRLF included; a folded line adds to the field it continues.
            let folded = matches!(line.first(), Some(b' ' | b'\t'));
            if usize::from(folded) * field_len + lf + 1 > rules.size {
                return Err(ParseError::LimitRequestHeaders);
            }
            let line = line.strip_suffix(b"\r").ok_or(ParseError::InvalidHeader)?;
            *state = trailer_line(line, fields, field_len, rules)?;
            Ok((lf + 1, 0..0))
        }
        Chunk::Done => Ok((0, 0..0)),
    }
}

/// `chunk-size [ chunk-ext ]`: hex digits, then nothing or `BWS ";"` and extensions.
fn chunk_size(line: &[u8]) -> Result<u64, ParseError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let (size, ext) = line.split_at(digits);
    if size.is_empty() {
        return Err(ParseError::InvalidChunkSize);
    }
    // White space only as the BWS before `;`: `0 ` alone is refused (gunicorn's chunked_09).
    if !ext.is_empty() {
        if skip_bws(ext).first() != Some(&b';') {
            return Err(ParseError::InvalidChunkSize);
        }
        chunk_ext(ext)?;
    }
    // Below 2^60, so adding sizes up never overflows; nobody sends a chunk that large.
    let significant = size.iter().skip_while(|&&b| b == b'0').count();
    if significant > 15 {
        return Err(ParseError::InvalidChunkSize);
    }
    Ok(size.iter().fold(0u64, |n, &b| {
        (n << 4) | u64::from((b as char).to_digit(16).unwrap_or(0))
    }))
}

/// `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`, checked, then
/// ignored (§7.1.1). Held to the grammar as the rest of the message is: a client that
/// sends extensions at all can send well-formed ones, and no control byte gets through.
fn chunk_ext(mut s: &[u8]) -> Result<(), ParseError> {
    const BAD: ParseError = ParseError::InvalidChunkExtension;
    while !s.is_empty() {
        s = match skip_bws(s) {
            [b';', rest @ ..] => token(skip_bws(rest)).ok_or(BAD)?,
            _ => return Err(BAD),
        };
        // BWS is taken only before `=`: trailing white space is refused like `0 `.
        if let [b'=', rest @ ..] = skip_bws(s) {
            s = match skip_bws(rest) {
                [b'"', rest @ ..] => quoted(rest).ok_or(BAD)?,
                value => token(value).ok_or(BAD)?,
            };
        }
    }
    Ok(())
}

/// What follows a token at the front of `s`, if there is one.
fn token(s: &[u8]) -> Option<&[u8]> {
    let n = s.iter().take_while(|&&b| is_tchar(b)).count();
    s.get(n..).filter(|_| n > 0)
}

/// What follows the rest of a quoted-string whose opening quote is taken; `None` if it
/// is unterminated or holds a control byte (qdtext and quoted-pair, RFC 9110 §5.6.4).
fn quoted(mut s: &[u8]) -> Option<&[u8]> {
    loop {
        s = match s {
            [b'"', rest @ ..] => return Some(rest),
            [b'\\', b, rest @ ..] if is_field_value(&[*b]) => rest,
            [b'\\', ..] => return None,
            [b, rest @ ..] if is_field_value(&[*b]) => rest,
            _ => return None,
        };
    }
}

fn skip_bws(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

/// Checks one trailer line by the head's field rules (`head.rs`: folding, limits,
/// names, values, `header_map`), plus the names no trailer may carry.
fn trailer_line(
    line: &[u8],
    fields: usize,
    field_len: usize,
    rules: &FieldRules,
) -> Result<Chunk, ParseError> {
    if let [b' ' | b'\t', ..] = line {
        if !rules.fold {
            return Err(ParseError::ObsoleteFolding);
        }
        if field_len == 0 || !is_field_value(trim_ows(line)) {
            return Err(ParseError::InvalidHeader);
        }
        return Ok(Chunk::Trailers {
            fields,
            field_len: field_len + line.len() + 2,
        });
    }
    if fields + 1 > rules.count {
        return Err(ParseError::LimitRequestHeaders);
    }
    let colon = memchr(b':', line).ok_or(ParseError::InvalidHeader)?;
    let mut name = &line[..colon];
    if rules.strip {
        name = trim_ows(name);
    }
    if !is_token(name)
        || FORBIDDEN_TRAILERS
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f))
    {
        return Err(ParseError::InvalidHeaderName);
    }
    if !is_field_value(trim_ows(&line[colon + 1..])) {
        return Err(ParseError::InvalidHeader);
    }
    if rules.refuse_underscore && name.contains(&b'_') {
        return Err(ParseError::InvalidHeaderName);
    }
    Ok(Chunk::Trailers {
        fields: fields + 1,
        field_len: line.len() + 2,
    })
}

#[cfg(test)]
mod tests;
