//! The PROXY protocol preamble (HAProxy's `proxy-protocol.txt`, v1 text and v2 binary):
//! what a load balancer sends once, first on the connection, to say who the client is.
//!
//! `parse_proxy` is called with everything received so far, like `parse_head`: `Ok(None)`
//! while a header is still arriving, the header and the bytes it used once complete (the
//! HTTP head that follows in the same buffer is parsed next), or the first error. The
//! spec forbids guessing, so bytes that cannot begin a header are an error
//! ([`ProxyError::Missing`]), never "no header": the caller decides what a connection
//! without one gets (from a peer outside `--proxy-allow-from`: plain HTTP).
//!
//! Errors are this module's own enum rather than `ParseError` variants: each says why
//! for the log line, while the HTTP layer knows a single class, gunicorn's
//! `InvalidProxyLine` (`From<ProxyError> for ParseError`), so `ParseError` stays one
//! variant per gunicorn name.

mod v1;
mod v2;

use crate::error::ParseError;
use std::fmt;
use std::net::SocketAddr;

/// Which header versions a listener accepts (gunicorn's `--proxy-protocol` values;
/// `off` is the caller not calling [`parse_proxy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    V1,
    V2,
    /// Either, told apart by the first byte (`P` or CR); never "none".
    Auto,
}

/// What a complete header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The client (`src`) and the address it connected to (`dst`), both of one family.
    /// v2 DGRAM is accepted too (the spec allows it); the addresses mean the same.
    Client { src: SocketAddr, dst: SocketAddr },
    /// v1 `UNKNOWN`, or v2 PROXY with AF_UNSPEC or AF_UNIX: the proxy cannot name the
    /// client in IP terms, so the socket's own peer is kept.
    Unknown,
    /// v2 LOCAL: the proxy's own connection (a health check); the socket's peer is kept.
    Local,
}

impl ProxyHeader {
    /// The address to use as the client's, or `None` to keep the socket's peer.
    pub fn client(&self) -> Option<SocketAddr> {
        match *self {
            ProxyHeader::Client { src, .. } => Some(src),
            ProxyHeader::Unknown | ProxyHeader::Local => None,
        }
    }
}

/// Why a PROXY header was rejected. Every variant becomes `InvalidProxyLine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// The first bytes begin no header of the accepted version(s): neither "PROXY"
    /// nor v2's 12-byte signature.
    Missing,
    /// v1: no CRLF within 107 bytes.
    V1TooLong,
    /// v1: not `PROXY SP proto SP src SP dst SP sport SP dport CRLF` with single spaces,
    /// an unknown protocol, or a bare CR or LF.
    V1Syntax,
    /// v1: an address that std's parser for the announced family rejects.
    V1Address,
    /// v1: a port that is not 1–5 decimal digits within 0–65535 without a leading zero.
    V1Port,
    /// v2: the version nibble is not 2.
    V2Version,
    /// v2: a command other than LOCAL (0) or PROXY (1).
    V2Command,
    /// v2: a family/protocol byte the spec does not define.
    V2Family,
    /// v2: the length is shorter than the family's address block.
    V2Length,
    /// v2: a TLV after the addresses runs past the header.
    V2Tlv,
    /// v2: a PP2_TYPE_CRC32C TLV that is not 4 bytes or does not match the header.
    V2Checksum,
}

impl ProxyError {
    /// What went wrong, for the log line.
    pub fn reason(self) -> &'static str {
        match self {
            ProxyError::Missing => "no PROXY protocol header",
            ProxyError::V1TooLong => "PROXY v1 line without CRLF within 107 bytes",
            ProxyError::V1Syntax => "malformed PROXY v1 line",
            ProxyError::V1Address => "bad address in PROXY v1 line",
            ProxyError::V1Port => "bad port in PROXY v1 line",
            ProxyError::V2Version => "PROXY v2 header with a version other than 2",
            ProxyError::V2Command => "PROXY v2 header with an unknown command",
            ProxyError::V2Family => "PROXY v2 header with an unknown family or protocol",
            ProxyError::V2Length => "PROXY v2 header too short for its addresses",
            ProxyError::V2Tlv => "PROXY v2 TLV running past the header",
            ProxyError::V2Checksum => "PROXY v2 header failing its CRC32c",
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (InvalidProxyLine)", self.reason())
    }
}

impl std::error::Error for ProxyError {}

impl From<ProxyError> for ParseError {
    fn from(_: ProxyError) -> ParseError {
        ParseError::InvalidProxyLine
    }
}

/// Parses the PROXY header at the start of `buf`: `Ok(None)` while it is incomplete,
/// the header and its length in bytes once complete, or the error.
pub fn parse_proxy(
    buf: &[u8],
    mode: ProxyMode,
) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    match mode {
        ProxyMode::V1 => v1::parse(buf),
        ProxyMode::V2 => v2::parse(buf),
        // The signatures differ in their first byte, so one byte decides.
        ProxyMode::Auto => match buf.first() {
            None => Ok(None),
            Some(b'P') => v1::parse(buf),
            Some(b'\r') => v2::parse(buf),
            Some(_) => Err(ProxyError::Missing),
        },
    }
}

/// Whether `buf` begins with a PROXY signature, v1's `PROXY ` or v2's 12 bytes, whatever
/// follows: `Some(true)` once one is complete, `Some(false)` once `buf` can begin
/// neither, `None` while it is a strict prefix of one (an empty `buf` included). A
/// server uses it on a peer that may not send a header, to refuse one that does.
pub fn proxy_signature(buf: &[u8]) -> Option<bool> {
    let mut undecided = false;
    for sig in [v1::SIG, &v2::SIG[..]] {
        let n = buf.len().min(sig.len());
        if buf[..n] == sig[..n] {
            if n == sig.len() {
                return Some(true);
            }
            undecided = true;
        }
    }
    (!undecided).then_some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every strict prefix of `bytes` is `Ok(None)`; the whole gives the header and its length.
    pub(super) fn arrives(bytes: &[u8], mode: ProxyMode) -> Option<(ProxyHeader, usize)> {
        for k in 0..bytes.len() {
            assert_eq!(
                parse_proxy(&bytes[..k], mode),
                Ok(None),
                "prefix {k} of {bytes:?}"
            );
        }
        parse_proxy(bytes, mode).expect("complete header")
    }

    #[test]
    fn auto_decides_by_the_first_byte() {
        let v1 = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET";
        let v2 = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00GET";
        let one = parse_proxy(v1, ProxyMode::Auto).unwrap().unwrap();
        assert_eq!(one, parse_proxy(v1, ProxyMode::V1).unwrap().unwrap());
        assert_eq!(one.1, v1.len() - 3);
        assert_eq!(
            parse_proxy(v2, ProxyMode::Auto),
            Ok(Some((ProxyHeader::Local, 16)))
        );
        // Each mode refuses the other version, and Auto refuses what is neither.
        assert_eq!(parse_proxy(v2, ProxyMode::V1), Err(ProxyError::Missing));
        assert_eq!(parse_proxy(v1, ProxyMode::V2), Err(ProxyError::Missing));
        for bytes in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /",
            b"PROXy",
            b"\r\n\r\nGET",
            b"\n",
            b"\x16\x03\x01",
        ] {
            assert_eq!(
                parse_proxy(bytes, ProxyMode::Auto),
                Err(ProxyError::Missing)
            );
        }
        // A prefix that could still become either (or one) header is incomplete.
        for bytes in [&b""[..], b"P", b"PROX", b"\r", b"\r\n\r\n\0"] {
            assert_eq!(parse_proxy(bytes, ProxyMode::Auto), Ok(None));
        }
    }

    #[test]
    fn signatures_are_told_as_they_arrive() {
        // (bytes, answer)
        let table: &[(&[u8], Option<bool>)] = &[
            (b"", None),
            (b"P", None),
            (b"PROXY", None),
            (b"PROXY ", Some(true)),
            (b"PROXY TCP4 garbage", Some(true)),
            (b"PROXy ", Some(false)),
            (b"PROXYZ", Some(false)),
            (b"POST / HTTP/1.1\r\n", Some(false)),
            (b"PROPFIND /", Some(false)),
            (b"\r", None),
            (b"\r\n\r\n\0\r\nQUIT", None),
            (b"\r\n\r\n\0\r\nQUIT\n", Some(true)),
            (b"\r\n\r\n\0\r\nQUIT\n\x21", Some(true)),
            (b"\r\nGET / HTTP/1.1\r\n", Some(false)),
            (b"\x16\x03\x01", Some(false)),
            (b"\x00\x10\x00\x00", Some(false)),
        ];
        for (bytes, want) in table {
            assert_eq!(proxy_signature(bytes), *want, "{bytes:?}");
        }
    }

    #[test]
    fn errors_become_invalid_proxy_line() {
        let e: ParseError = ProxyError::V2Tlv.into();
        assert_eq!(e, ParseError::InvalidProxyLine);
        assert_eq!((e.name(), e.status()), ("InvalidProxyLine", 400));
        assert!(ProxyError::V1Port.to_string().contains("port"));
    }

    #[test]
    fn client_is_the_source() {
        let src: SocketAddr = "[::1]:5".parse().unwrap();
        let dst: SocketAddr = "[::2]:6".parse().unwrap();
        assert_eq!(ProxyHeader::Client { src, dst }.client(), Some(src));
        assert_eq!(ProxyHeader::Local.client(), None);
        assert_eq!(ProxyHeader::Unknown.client(), None);
    }

    /// A few thousand mutations of valid headers through the fuzz entry, deterministic
    /// (xorshift), every run: as `fuzz_one`'s test does for requests.
    #[test]
    fn mutated_headers_agree_byte_by_byte() {
        let v2 = |ver_cmd: u8, fam: u8, rest: &[u8]| {
            let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
            h.extend_from_slice(&[ver_cmd, fam, 0, rest.len() as u8]);
            h.extend_from_slice(rest);
            h
        };
        let v4 = [10, 0, 0, 1, 127, 0, 0, 1, 0x12, 0x34, 0, 80, 0x04, 0, 1, 7];
        let seeds: Vec<Vec<u8>> = vec![
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET".to_vec(),
            b"PROXY TCP6 ::1 2001:db8::ff00:42:8329 65535 1\r\n".to_vec(),
            b"PROXY UNKNOWN ::1 ::2 1 2\r\n".to_vec(),
            v2(0x21, 0x11, &v4),
            v2(0x21, 0x22, &[1; 40]),
            v2(0x20, 0x00, &[]),
            v2(0x21, 0x00, &[5, 6]),
        ];
        let mutations = crate::mutate::Mutations {
            alphabet: b"\r\n :.0159afP\x00\x0c\x11\x21\x24\xff",
            count: 6_000,
            max_edits: 3,
            bump: false,
            state: 0x2545_f491_4f6c_dd1d,
        };
        let mut seen = [0usize; 3]; // complete, incomplete, error
        mutations.run(&seeds, |_, data| {
            crate::fuzz_proxy(data);
            seen[match parse_proxy(data, ProxyMode::Auto) {
                Ok(Some(_)) => 0,
                Ok(None) => 1,
                Err(_) => 2,
            }] += 1;
        });
        // The mutations reach every outcome, not only errors.
        assert!(seen.iter().all(|&n| n > 300), "{seen:?}");
    }
}
