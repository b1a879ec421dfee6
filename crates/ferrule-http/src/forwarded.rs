//! `wsgi.url_scheme` from a trusted proxy's headers (gunicorn's `secure_scheme_headers`).

use crate::error::ParseError;
use crate::head::Head;

/// The default table: a header, and the value that means "the client used https".
pub const SECURE_SCHEME_HEADERS: &[(&[u8], &[u8])] = &[
    (b"x-forwarded-protocol", b"ssl"),
    (b"x-forwarded-proto", b"https"),
    (b"x-forwarded-ssl", b"on"),
];

/// Returns `Some(true)` for https, `Some(false)` for http, `None` when no scheme
/// header is present. Headers that disagree are an error: one of them is forged.
pub fn secure_scheme(head: &Head, buf: &[u8]) -> Result<Option<bool>, ParseError> {
    let mut verdict = None;
    for h in &head.headers {
        let name = head.get(buf, h.name);
        for (header, secure_value) in SECURE_SCHEME_HEADERS {
            if name.eq_ignore_ascii_case(header) {
                let secure = head.get(buf, h.value).eq_ignore_ascii_case(secure_value);
                if verdict.is_some_and(|v| v != secure) {
                    return Err(ParseError::InvalidSchemeHeaders);
                }
                verdict = Some(secure);
            }
        }
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_head, ParserConfig};

    fn scheme(raw: &str) -> Result<Option<bool>, ParseError> {
        let head = parse_head(raw.as_bytes(), &ParserConfig::default())
            .unwrap()
            .unwrap();
        secure_scheme(&head, raw.as_bytes())
    }

    #[test]
    fn table() {
        assert_eq!(scheme("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Ok(None));
        assert_eq!(
            scheme("GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\n\r\n"),
            Ok(Some(true))
        );
        assert_eq!(
            scheme("GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: http\r\n\r\n"),
            Ok(Some(false))
        );
        assert_eq!(
            scheme("GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n\r\n"),
            Err(ParseError::InvalidSchemeHeaders)
        );
    }
}
