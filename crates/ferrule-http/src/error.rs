//! The one error type of the HTTP layer.
//!
//! Each variant names the gunicorn error class it corresponds to, so the
//! conformance corpus can be checked by name and users switching from
//! gunicorn see the same words in their logs.

use std::fmt;

/// Why a request (head, body or trailer) was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The request line is not `METHOD SP TARGET SP VERSION CRLF`, or the target form is wrong.
    InvalidRequestLine,
    /// The method is not a token (or not conventional, unless permitted).
    InvalidRequestMethod,
    /// The version is not `HTTP/1.x`.
    InvalidHTTPVersion,
    /// A header line or value is malformed, or framing headers conflict.
    InvalidHeader,
    /// A header name is not a token, has an underscore under `header_map=refuse`, or is forbidden in a trailer.
    InvalidHeaderName,
    /// A header continuation line (obs-fold) arrived while folding is not permitted.
    ObsoleteFolding,
    /// The request line is longer than `limit_request_line`.
    LimitRequestLine,
    /// Too many header fields, a field too long, or the head too large.
    LimitRequestHeaders,
    /// A chunk size line is not hexadecimal digits.
    InvalidChunkSize,
    /// A chunk extension holds a bare CR or other control byte.
    InvalidChunkExtension,
    /// Chunk data is not followed by CRLF, or the last chunk's trailer section is not closed.
    ChunkMissingTerminator,
    /// The peer closed the connection inside a head or body.
    NoMoreData,
    /// Scheme headers from a trusted proxy contradict each other.
    InvalidSchemeHeaders,
    /// A transfer coding other than chunked, gzip, deflate, compress or identity.
    UnsupportedTransferCoding,
    /// The declared or received body is larger than the configured limit.
    BodyTooLarge,
    /// The Host field is not `host[:port]` (RFC 9112 §3.2). ferrule's own class: gunicorn
    /// does not check Host.
    InvalidHost,
    /// An HTTP/1.1 request without Host (RFC 9112 §3.2), unless `permit_missing_host`.
    /// ferrule's own class: gunicorn accepts such requests.
    MissingHost,
    /// The PROXY protocol header is malformed or missing (`proxy::ProxyError` says which).
    InvalidProxyLine,
}

impl ParseError {
    /// The status a server answers with, as gunicorn does (431 for header limits,
    /// 413 for body size, 501 for unknown codings, 400 for the rest).
    pub fn status(self) -> u16 {
        match self {
            // gunicorn 27 and nginx (RFC 9112 §3: a request-target longer than the
            // server will parse gets 414); gunicorn 26 answered 400.
            ParseError::LimitRequestLine => 414,
            ParseError::LimitRequestHeaders => 431,
            ParseError::BodyTooLarge => 413,
            ParseError::UnsupportedTransferCoding => 501,
            _ => 400,
        }
    }

    /// gunicorn's name for this error class.
    pub fn name(self) -> &'static str {
        match self {
            ParseError::InvalidRequestLine => "InvalidRequestLine",
            ParseError::InvalidRequestMethod => "InvalidRequestMethod",
            ParseError::InvalidHTTPVersion => "InvalidHTTPVersion",
            ParseError::InvalidHeader => "InvalidHeader",
            ParseError::InvalidHeaderName => "InvalidHeaderName",
            ParseError::ObsoleteFolding => "ObsoleteFolding",
            ParseError::LimitRequestLine => "LimitRequestLine",
            ParseError::LimitRequestHeaders => "LimitRequestHeaders",
            ParseError::InvalidChunkSize => "InvalidChunkSize",
            ParseError::InvalidChunkExtension => "InvalidChunkExtension",
            ParseError::ChunkMissingTerminator => "ChunkMissingTerminator",
            ParseError::NoMoreData => "NoMoreData",
            ParseError::InvalidSchemeHeaders => "InvalidSchemeHeaders",
            ParseError::UnsupportedTransferCoding => "UnsupportedTransferCoding",
            ParseError::BodyTooLarge => "BodyTooLarge",
            ParseError::InvalidHost => "InvalidHost",
            ParseError::MissingHost => "MissingHost",
            ParseError::InvalidProxyLine => "InvalidProxyLine",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            ParseError::InvalidRequestLine => "invalid request line",
            ParseError::InvalidRequestMethod => "invalid request method",
            ParseError::InvalidHTTPVersion => "invalid HTTP version",
            ParseError::InvalidHeader => "invalid header",
            ParseError::InvalidHeaderName => "invalid header name",
            ParseError::ObsoleteFolding => "obsolete line folding is not permitted",
            ParseError::LimitRequestLine => "request line too long",
            ParseError::LimitRequestHeaders => "request header fields too large",
            ParseError::InvalidChunkSize => "invalid chunk size",
            ParseError::InvalidChunkExtension => "invalid chunk extension",
            ParseError::ChunkMissingTerminator => "chunk missing terminator",
            ParseError::NoMoreData => "connection closed before the request was complete",
            ParseError::InvalidSchemeHeaders => "contradictory scheme headers",
            ParseError::UnsupportedTransferCoding => "unsupported transfer coding",
            ParseError::BodyTooLarge => "request body too large",
            ParseError::InvalidHost => "invalid Host",
            ParseError::MissingHost => "HTTP/1.1 request without Host",
            ParseError::InvalidProxyLine => "invalid PROXY protocol header",
        };
        write!(f, "{what} ({})", self.name())
    }
}

impl std::error::Error for ParseError {}
