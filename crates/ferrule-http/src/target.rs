//! The request line: method, request-target forms (RFC 9112 §3.2) and version.

use crate::chars::{is_authority_char, is_target, is_token};
use crate::error::ParseError;
use crate::span::Span;

/// HTTP/1.x minor version as the server speaks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    /// `SERVER_PROTOCOL` and the status-line prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// Which of the four request-target forms was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query`
    Origin,
    /// `http://host/path?query`
    Absolute,
    /// `host:port`, CONNECT only
    Authority,
    /// `*`, OPTIONS only
    Asterisk,
}

/// Offsets of the target's parts, relative to the start of the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub form: TargetForm,
    pub raw: Span,
    pub path: Span,
    pub query: Span,
    pub fragment: Span,
}

/// Checks a method: always a token; unless unconventional methods are permitted,
/// 3 to 20 bytes with no lowercase letter and no `#` (gunicorn's rule, which stops
/// most garbage and TLS handshakes sent to a plain port at the first byte).
pub fn check_method(m: &[u8], permit_unconventional: bool) -> Result<(), ParseError> {
    if !permit_unconventional
        && (!(3..=20).contains(&m.len()) || m.iter().any(|&b| b.is_ascii_lowercase() || b == b'#'))
    {
        return Err(ParseError::InvalidRequestMethod);
    }
    if !is_token(m) {
        return Err(ParseError::InvalidRequestMethod);
    }
    Ok(())
}

/// Parses `HTTP/1.x`. Minor versions above 1 are answered as HTTP/1.1 (RFC 9110 §6.2).
pub fn parse_version(v: &[u8]) -> Result<Version, ParseError> {
    match v {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() => {
            Ok(if *minor == b'0' {
                Version::Http10
            } else {
                Version::Http11
            })
        }
        _ => Err(ParseError::InvalidHTTPVersion),
    }
}

/// Splits and validates the request-target found at `base..base+t.len()` of the head.
pub fn parse_target(method: &[u8], t: &[u8], base: usize) -> Result<Target, ParseError> {
    if t.is_empty() || !is_target(t) {
        return Err(ParseError::InvalidRequestLine);
    }
    let raw = Span::at(base, t.len());
    let empty = Span::at(base + t.len(), 0);
    if t == b"*" {
        if method != b"OPTIONS" {
            return Err(ParseError::InvalidRequestLine);
        }
        return Ok(Target {
            form: TargetForm::Asterisk,
            raw,
            path: raw,
            query: empty,
            fragment: empty,
        });
    }
    if method == b"CONNECT" {
        check_authority(t, true)?;
        return Ok(Target {
            form: TargetForm::Authority,
            raw,
            path: empty,
            query: empty,
            fragment: empty,
        });
    }
    let (form, path_start) = if t[0] == b'/' {
        (TargetForm::Origin, 0)
    } else {
        let scheme_end = absolute_scheme_end(t).ok_or(ParseError::InvalidRequestLine)?;
        let auth_start = scheme_end + 3;
        let auth_len = t[auth_start..]
            .iter()
            .position(|&b| matches!(b, b'/' | b'?' | b'#'))
            .unwrap_or(t.len() - auth_start);
        check_authority(&t[auth_start..auth_start + auth_len], false)?;
        (TargetForm::Absolute, auth_start + auth_len)
    };
    let rest = &t[path_start..];
    let hash = rest.iter().position(|&b| b == b'#').unwrap_or(rest.len());
    let qmark = rest[..hash].iter().position(|&b| b == b'?');
    let path_end = qmark.unwrap_or(hash);
    let at = |from: usize, to: usize| Span::at(base + path_start + from, to - from);
    let query = match qmark {
        Some(q) => at(q + 1, hash),
        None => at(hash, hash),
    };
    let fragment = if hash < rest.len() {
        at(hash + 1, rest.len())
    } else {
        at(rest.len(), rest.len())
    };
    Ok(Target {
        form,
        raw,
        path: at(0, path_end),
        query,
        fragment,
    })
}

/// The `host[:port]` of an absolute-form target, userinfo left out: RFC 9112 §3.2.2 has
/// it win over the Host field. Found again in the checked target (rare), so that
/// `Target` stays as small as the hot path wants it.
pub(crate) fn absolute_host(target: &Target, buf: &[u8]) -> Span {
    let raw = target.raw.range();
    let t = &buf[raw.start..target.path.range().start];
    let auth_start = t
        .windows(3)
        .position(|w| w == b"://")
        .map_or(t.len(), |i| i + 3);
    let at = t[auth_start..]
        .iter()
        .rposition(|&b| b == b'@')
        .map_or(auth_start, |i| auth_start + i + 1);
    Span::at(raw.start + at, t.len() - at)
}

/// Returns the scheme's length when `t` starts with `scheme "://"`.
fn absolute_scheme_end(t: &[u8]) -> Option<usize> {
    let colon = t.iter().position(|&b| b == b':')?;
    let scheme = &t[..colon];
    let ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    (ok && t[colon..].starts_with(b"://")).then_some(colon)
}

/// `[userinfo@]host[:port]`; CONNECT needs a port and no userinfo.
fn check_authority(a: &[u8], connect: bool) -> Result<(), ParseError> {
    let hostport = match a.iter().rposition(|&b| b == b'@') {
        Some(i) if !connect => {
            if !a[..i].iter().all(|&b| is_authority_char(b) || b == b':') {
                return Err(ParseError::InvalidRequestLine);
            }
            &a[i + 1..]
        }
        Some(_) => return Err(ParseError::InvalidRequestLine),
        None => a,
    };
    match host_port(hostport) {
        Some(Some(_)) => Ok(()),
        Some(None) if !connect => Ok(()),
        _ => Err(ParseError::InvalidRequestLine),
    }
}

/// A Host field value (RFC 9112 §3.2: `uri-host [":" port]` of RFC 3986): a reg-name
/// (unreserved, pct-encoded and sub-delims bytes), an IPv4 address or a bracketed IPv6
/// one, then an optional port of at most five digits. An empty value is valid (a
/// client sends one when the target has no authority).
pub(crate) fn is_host_value(v: &[u8]) -> bool {
    v.is_empty() || host_port(v).is_some()
}

/// Checks `host[:port]` (a non-empty host); `Some(port)` when it is valid, with
/// `Some(digits)` when a non-empty port is written.
fn host_port(hostport: &[u8]) -> Option<Option<&[u8]>> {
    let (host, port) = if hostport.first() == Some(&b'[') {
        let close = hostport.iter().position(|&b| b == b']')?;
        let inner = &hostport[1..close];
        if inner.is_empty()
            || !inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        match &hostport[close + 1..] {
            [] => (&hostport[..=close], None),
            [b':', port @ ..] => (&hostport[..=close], Some(port)),
            _ => return None,
        }
    } else {
        // One pass: reg-name bytes up to the first other byte, which must be the port's colon.
        let end = hostport
            .iter()
            .position(|&b| !is_authority_char(b))
            .unwrap_or(hostport.len());
        match &hostport[end..] {
            [] => (hostport, None),
            [b':', port @ ..] => (&hostport[..end], Some(port)),
            _ => return None,
        }
    };
    if host.is_empty() {
        return None;
    }
    match port {
        Some(p) if p.len() > 5 || !p.iter().all(u8::is_ascii_digit) => None,
        Some([]) | None => Some(None),
        Some(p) => Some(Some(p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(m: &str, t: &str) -> Result<(TargetForm, String, String, String), ParseError> {
        let tg = parse_target(m.as_bytes(), t.as_bytes(), 0)?;
        let s = |sp: Span| String::from_utf8_lossy(&t.as_bytes()[sp.range()]).into_owned();
        Ok((tg.form, s(tg.path), s(tg.query), s(tg.fragment)))
    }

    #[test]
    fn target_forms() {
        type Want = Result<(TargetForm, &'static str, &'static str, &'static str), ParseError>;
        let table: &[(&str, &str, Want)] = &[
            (
                "GET",
                "/a?b=1#c",
                Ok((TargetForm::Origin, "/a", "b=1", "c")),
            ),
            ("GET", "///x", Ok((TargetForm::Origin, "///x", "", ""))),
            ("GET", "/a#b?c", Ok((TargetForm::Origin, "/a", "", "b?c"))),
            (
                "GET",
                "http://h:80/p?q",
                Ok((TargetForm::Absolute, "/p", "q", "")),
            ),
            (
                "GET",
                "http://u:p@h/p",
                Ok((TargetForm::Absolute, "/p", "", "")),
            ),
            (
                "GET",
                "http://[::1]:8080/foo",
                Ok((TargetForm::Absolute, "/foo", "", "")),
            ),
            ("GET", "http://h", Ok((TargetForm::Absolute, "", "", ""))),
            ("OPTIONS", "*", Ok((TargetForm::Asterisk, "*", "", ""))),
            (
                "CONNECT",
                "example.com:443",
                Ok((TargetForm::Authority, "", "", "")),
            ),
            (
                "CONNECT",
                "[::1]:443",
                Ok((TargetForm::Authority, "", "", "")),
            ),
            ("GET", "*", Err(ParseError::InvalidRequestLine)),
            (
                "GET",
                "example.com:443",
                Err(ParseError::InvalidRequestLine),
            ),
            ("GET", "foo/bar", Err(ParseError::InvalidRequestLine)),
            ("PUT", "s://]ufd/:", Err(ParseError::InvalidRequestLine)),
            (
                "CONNECT",
                "example.com",
                Err(ParseError::InvalidRequestLine),
            ),
            ("GET", "/a\x01", Err(ParseError::InvalidRequestLine)),
        ];
        for (m, t, want) in table {
            let got = parts(m, t);
            let want =
                (*want).map(|(f, p, q, fr)| (f, p.to_string(), q.to_string(), fr.to_string()));
            assert_eq!(got, want, "{m} {t}");
        }
    }

    #[test]
    fn methods_and_versions() {
        assert!(check_method(b"GET", false).is_ok());
        assert!(check_method(b"-BLARGH", false).is_ok());
        assert!(check_method(b"-bl", false).is_err());
        assert!(check_method(b"-blargh", true).is_ok());
        assert!(check_method(b"GE", false).is_err());
        assert!(check_method(b"bla:rgh", true).is_err());
        assert_eq!(parse_version(b"HTTP/1.0"), Ok(Version::Http10));
        assert_eq!(parse_version(b"HTTP/1.1"), Ok(Version::Http11));
        assert_eq!(parse_version(b"HTTP/1.2"), Ok(Version::Http11));
        for bad in [
            &b"HTTP/2.0"[..],
            b"HTTP/0.99",
            b"HTTP/111",
            b"FTP/1.1",
            b"http/1.1",
        ] {
            assert_eq!(parse_version(bad), Err(ParseError::InvalidHTTPVersion));
        }
    }
}
