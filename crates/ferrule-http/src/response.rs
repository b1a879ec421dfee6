//! Response heads: validating what the app sends, choosing the body framing, and
//! serialising status line and fields into an output buffer.

use crate::chars::is_token;
use crate::target::Version;

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// The app declared `Content-Length` (or the server knows the whole body).
    Length(u64),
    /// HTTP/1.1 with unknown length.
    Chunked,
    /// HTTP/1.0 with unknown length: the end of the body is the end of the connection.
    Close,
    /// HEAD, 1xx, 204 and 304: headers only.
    NoBody,
}

/// What a response field means to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    ContentLength(u64),
    Server,
    Date,
    Other,
}

/// Why the app's status or headers were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    Status,
    HeaderName,
    HeaderValue,
    HopByHop,
    ContentLength,
}

impl std::fmt::Display for ResponseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResponseError::Status => {
                "status must be '<3 digits> <reason>' with no control characters"
            }
            ResponseError::HeaderName => "header name is not a valid token",
            ResponseError::HeaderValue => {
                "header value contains a control character (CR, LF, NUL...)"
            }
            ResponseError::HopByHop => {
                "hop-by-hop headers are not allowed from a WSGI app (PEP 3333)"
            }
            ResponseError::ContentLength => "Content-Length is not a non-negative integer",
        })
    }
}

impl std::error::Error for ResponseError {}

/// Checks a WSGI status string's bytes and returns the code.
pub fn parse_status(s: &[u8]) -> Result<u16, ResponseError> {
    match s {
        [a, b, c, b' ', reason @ ..]
            if a.is_ascii_digit()
                && b.is_ascii_digit()
                && c.is_ascii_digit()
                && !reason.is_empty()
                && reason
                    .iter()
                    .all(|&x| x == b'\t' || (x >= 0x20 && x != 0x7f)) =>
        {
            let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
            if code < 100 {
                return Err(ResponseError::Status);
            }
            Ok(code)
        }
        _ => Err(ResponseError::Status),
    }
}

/// Checks one response field and says what it means.
pub fn classify_field(name: &[u8], value: &[u8]) -> Result<FieldKind, ResponseError> {
    if !is_token(name) {
        return Err(ResponseError::HeaderName);
    }
    if !value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
    {
        return Err(ResponseError::HeaderValue);
    }
    const HOP: &[&[u8]] = &[
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    ];
    if HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
        return Err(ResponseError::HopByHop);
    }
    Ok(if name.eq_ignore_ascii_case(b"content-length") {
        let v = value.trim_ascii();
        if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
            return Err(ResponseError::ContentLength);
        }
        FieldKind::ContentLength(v.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
    } else if name.eq_ignore_ascii_case(b"server") {
        FieldKind::Server
    } else if name.eq_ignore_ascii_case(b"date") {
        FieldKind::Date
    } else {
        FieldKind::Other
    })
}

/// Chooses the framing for a response.
///
/// `known_len` is the body size when the server holds the whole body (a list
/// response or a file), used when the app did not declare Content-Length.
pub fn choose_framing(
    version: Version,
    head_request: bool,
    status: u16,
    declared: Option<u64>,
    known_len: Option<u64>,
) -> ResponseFraming {
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return ResponseFraming::NoBody;
    }
    match (declared.or(known_len), version) {
        (Some(n), _) => ResponseFraming::Length(n),
        (None, _) if head_request => ResponseFraming::NoBody,
        (None, Version::Http11) => ResponseFraming::Chunked,
        (None, Version::Http10) => ResponseFraming::Close,
    }
}

/// Writes `HTTP/1.x <status>\r\n`.
pub fn write_status_line(out: &mut Vec<u8>, version: Version, status: &[u8]) {
    out.extend_from_slice(version.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status);
    out.extend_from_slice(b"\r\n");
}

/// Writes `name: value\r\n`.
#[inline]
pub fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes the fields the server owns, then the blank line.
pub fn finish_head(
    out: &mut Vec<u8>,
    framing: ResponseFraming,
    declared: bool,
    keep_alive: bool,
    version: Version,
) {
    match framing {
        ResponseFraming::Length(n) if !declared => {
            write_field(
                out,
                b"Content-Length",
                itoa::Buffer::new().format(n).as_bytes(),
            );
        }
        ResponseFraming::Chunked => write_field(out, b"Transfer-Encoding", b"chunked"),
        _ => {}
    }
    match (keep_alive, version) {
        (false, _) => write_field(out, b"Connection", b"close"),
        (true, Version::Http10) => write_field(out, b"Connection", b"keep-alive"),
        (true, Version::Http11) => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends one chunk (size line, data, CRLF). Empty data writes nothing.
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let mut hex = [0u8; 16];
    let mut n = data.len();
    let mut i = hex.len();
    while n > 0 || i == hex.len() {
        i -= 1;
        hex[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
    }
    out.extend_from_slice(&hex[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A complete minimal response for errors the server answers itself.
pub fn error_response(status: u16, version: Version, date: &str) -> Vec<u8> {
    let reason = reason_phrase(status);
    let body = format!("{status} {reason}\n");
    format!(
        "{} {status} {reason}\r\nServer: ferrule\r\nDate: {date}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        version.as_str(),
        body.len()
    )
    .into_bytes()
}

/// Reason phrases for the statuses the server itself sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        400 => "Bad Request",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(parse_status(b"200 OK"), Ok(200));
        assert_eq!(parse_status(b"404 Not Found"), Ok(404));
        for bad in [
            &b"200"[..],
            b"200 ",
            b"20 OK",
            b"200 OK\r\n",
            b"abc OK",
            b"099 x",
        ] {
            assert_eq!(parse_status(bad), Err(ResponseError::Status), "{bad:?}");
        }
    }

    #[test]
    fn fields() {
        assert_eq!(
            classify_field(b"Content-Length", b"12"),
            Ok(FieldKind::ContentLength(12))
        );
        assert_eq!(
            classify_field(b"X-A", b"b\r\nc"),
            Err(ResponseError::HeaderValue)
        );
        assert_eq!(classify_field(b"X A", b"b"), Err(ResponseError::HeaderName));
        assert_eq!(
            classify_field(b"Connection", b"close"),
            Err(ResponseError::HopByHop)
        );
        assert_eq!(
            classify_field(b"content-length", b"-1"),
            Err(ResponseError::ContentLength)
        );
    }

    #[test]
    fn framing_choice() {
        use ResponseFraming::*;
        assert_eq!(
            choose_framing(Version::Http11, false, 200, None, None),
            Chunked
        );
        assert_eq!(
            choose_framing(Version::Http10, false, 200, None, None),
            Close
        );
        assert_eq!(
            choose_framing(Version::Http11, false, 200, Some(3), None),
            Length(3)
        );
        assert_eq!(
            choose_framing(Version::Http11, false, 200, None, Some(5)),
            Length(5)
        );
        assert_eq!(
            choose_framing(Version::Http11, true, 200, None, None),
            NoBody
        );
        assert_eq!(
            choose_framing(Version::Http11, true, 200, Some(9), None),
            Length(9)
        );
        assert_eq!(
            choose_framing(Version::Http11, false, 204, None, None),
            NoBody
        );
        assert_eq!(
            choose_framing(Version::Http11, false, 304, Some(3), None),
            NoBody
        );
    }

    #[test]
    fn chunks() {
        let mut out = Vec::new();
        write_chunk(&mut out, b"");
        write_chunk(&mut out, &[b'x'; 26]);
        assert!(out.starts_with(b"1a\r\nxx"));
        assert!(out.ends_with(b"x\r\n"));
    }
}
