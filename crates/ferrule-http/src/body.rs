//! Request body decoding: Content-Length and chunked, sans-IO.
//!
//! The caller hands the decoder whatever bytes follow the head; the decoder says how
//! many it consumed and which of them are body data. Chunk data is never copied: the
//! returned range points into the caller's buffer.

use crate::chars::{is_field_value, is_token, trim_ows};
use crate::config::ParserConfig;
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
    Trailers { lines: usize },
    Done,
}

/// Decodes one request body.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    kind: Kind,
    received: u64,
    limit: u64,
    field_limit: usize,
    fields_limit: usize,
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
            field_limit: cfg.field_size_limit(),
            fields_limit: cfg.fields_limit(),
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
            Kind::Chunked(Chunk::Trailers { lines: 0 }) => ParseError::ChunkMissingTerminator,
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
                Kind::Chunked(state) => {
                    chunk_step(state, &input[pos..], self.field_limit, self.fields_limit)?
                }
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
    field_limit: usize,
    fields_limit: usize,
) -> Result<(usize, Range<usize>), ParseError> {
    match *state {
        Chunk::Size => {
            let Some(lf) = memchr(b'\n', input) else {
                return if input.len() > MAX_CHUNK_LINE {
                    Err(ParseError::InvalidChunkSize)
                } else {
                    Ok((0, 0..0))
                };
            };
            let line = input[..lf]
                .strip_suffix(b"\r")
                .ok_or(ParseError::InvalidChunkSize)?;
            let size = chunk_size(line)?;
            *state = if size == 0 {
                Chunk::Trailers { lines: 0 }
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
        Chunk::Trailers { lines } => {
            let Some(lf) = memchr(b'\n', input) else {
                return if input.len() > field_limit {
                    Err(ParseError::LimitRequestHeaders)
                } else {
                    Ok((0, 0..0))
                };
            };
            let line = input[..lf]
                .strip_suffix(b"\r")
                .ok_or(ParseError::ChunkMissingTerminator)?;
            if line.is_empty() {
                *state = Chunk::Done;
                return Ok((lf + 1, 0..0));
            }
            if line.len() + 2 > field_limit || lines + 1 > fields_limit {
                return Err(ParseError::LimitRequestHeaders);
            }
            check_trailer(line)?;
            *state = Chunk::Trailers { lines: lines + 1 };
            Ok((lf + 1, 0..0))
        }
        Chunk::Done => Ok((0, 0..0)),
    }
}

/// `1*HEXDIG [ ";" extensions ]`, with no white space before the extensions.
fn chunk_size(line: &[u8]) -> Result<u64, ParseError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ParseError::InvalidChunkSize);
    }
    let ext = &line[digits..];
    match ext.first() {
        None => {}
        Some(b';') if ext.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)) => {}
        Some(b';') => return Err(ParseError::InvalidChunkExtension),
        Some(_) => return Err(ParseError::InvalidChunkSize),
    }
    let significant = line[..digits].iter().skip_while(|&&b| b == b'0').count();
    if significant > 15 {
        return Err(ParseError::InvalidChunkSize);
    }
    Ok(line[..digits].iter().fold(0u64, |n, &b| {
        (n << 4) | u64::from((b as char).to_digit(16).unwrap_or(0))
    }))
}

fn check_trailer(line: &[u8]) -> Result<(), ParseError> {
    let colon = memchr(b':', line).ok_or(ParseError::InvalidHeader)?;
    let name = &line[..colon];
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes, as a socket reader would.
    fn decode_all(
        kind: BodyKind,
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, usize), ParseError> {
        let mut d = BodyDecoder::new(kind, &ParserConfig::default());
        let (mut out, mut pos, mut avail) = (Vec::new(), 0, 0);
        while !d.is_done() {
            let s = d.decode(&input[pos..avail])?;
            out.extend_from_slice(&input[pos..avail][s.data.clone()]);
            pos += s.consumed;
            if s.consumed == 0 && !s.done {
                if avail == input.len() {
                    return Err(d.eof_error());
                }
                avail = (avail + step).min(input.len());
            }
        }
        Ok((out, pos))
    }

    #[test]
    fn chunked_table() {
        let ok: &[(&[u8], &[u8])] = &[
            (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
            (b"5; a=b; c\r\nhello\r\n000\r\n\r\n", b"hello"),
            (b"A\r\n0123456789\r\n0\r\nVary: *\r\n\r\n", b"0123456789"),
            (b"5;foo=\"bar baz\"\r\nhello\r\n0\r\n\r\n", b"hello"),
        ];
        for (input, want) in ok {
            for step in [1, 3, input.len()] {
                let (body, used) = decode_all(BodyKind::Chunked, input, step).unwrap();
                assert_eq!(&body[..], *want);
                assert_eq!(used, input.len());
            }
        }
        let bad: &[(&[u8], ParseError)] = &[
            (b"6_0\r\n", ParseError::InvalidChunkSize),
            (b"0 \r\n\r\n", ParseError::InvalidChunkSize),
            (b" 0\r\n\r\n", ParseError::InvalidChunkSize),
            (b"-5\r\nhello\r\n", ParseError::InvalidChunkSize),
            (b"5\n;\r\nhello", ParseError::InvalidChunkSize),
            (
                b"5;ext=val\rue\r\nhello\r\n0\r\n\r\n",
                ParseError::InvalidChunkExtension,
            ),
            (b"5\r\nhelloX\r\n", ParseError::ChunkMissingTerminator),
            (b"0\r\n", ParseError::ChunkMissingTerminator),
            (b"0\r\nHost: x\r\n\r\n", ParseError::InvalidHeaderName),
            (b"10000000000000000\r\n", ParseError::InvalidChunkSize),
            (b"5\r\nhel", ParseError::NoMoreData),
        ];
        for (input, want) in bad {
            for step in [1, input.len()] {
                assert_eq!(
                    decode_all(BodyKind::Chunked, input, step).unwrap_err(),
                    *want,
                    "{input:?}"
                );
            }
        }
    }

    #[test]
    fn length_bodies_stop_at_the_length() {
        let (body, used) = decode_all(BodyKind::Length(5), b"helloGET / HTTP/1.1", 2).unwrap();
        assert_eq!((&body[..], used), (&b"hello"[..], 5));
        let (body, used) = decode_all(BodyKind::Empty, b"GET", 1).unwrap();
        assert_eq!((body.len(), used), (0, 0));
    }

    #[test]
    fn chunked_limit() {
        let cfg = ParserConfig {
            limit_request_body: 4,
            ..ParserConfig::default()
        };
        let mut d = BodyDecoder::new(BodyKind::Chunked, &cfg);
        assert_eq!(d.decode(b"5\r\nhello\r\n"), Err(ParseError::BodyTooLarge));
    }
}
