//! PROXY v1: one text line, `PROXY TCP4|TCP6 src dst sport dport\r\n` or
//! `PROXY UNKNOWN ...\r\n`, at most 107 bytes with its CRLF (spec section 2.1).

use super::{ProxyError, ProxyHeader};
use crate::chars::port_number;
use memchr::memchr2;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// "PROXY" says version 1 (spec section 2.2's detection); the space is the line's first rule.
pub(super) const SIG: &[u8] = b"PROXY ";
/// The spec's longest line, CRLF included: a receiver may give up after it.
pub(super) const MAX_LINE: usize = 107;

pub(super) fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    // Compared as far as it has arrived, so a wrong byte fails at once.
    if let Some(at) = buf.iter().zip(SIG).position(|(a, b)| a != b) {
        return Err(if at < 5 {
            ProxyError::Missing
        } else {
            ProxyError::V1Syntax
        });
    }
    let window = buf.get(..MAX_LINE).unwrap_or(buf);
    // The line ends at the first CR or LF, which must be a CRLF within the window.
    let Some(end) = memchr2(b'\r', b'\n', window) else {
        return too_long_or_more(buf);
    };
    match window.get(end..end + 2) {
        Some(b"\r\n") => {}
        Some(_) => return Err(ProxyError::V1Syntax),
        None if window.get(end) == Some(&b'\r') => return too_long_or_more(buf),
        None => return Err(ProxyError::V1Syntax),
    }
    // The signature holds no CR or LF, so the line is at least that long.
    let line = window.get(SIG.len()..end).ok_or(ProxyError::V1Syntax)?;
    let mut fields = line.split(|&b| b == b' ');
    let v6 = match fields.next() {
        // The rest of the line is to be ignored (the spec's words), spaces or not.
        Some(b"UNKNOWN") => return Ok(Some((ProxyHeader::Unknown, end + 2))),
        Some(b"TCP4") => false,
        Some(b"TCP6") => true,
        _ => return Err(ProxyError::V1Syntax),
    };
    // split yields empty fields for doubled spaces, which then fail to parse.
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ProxyError::V1Syntax);
    };
    let src = SocketAddr::new(address(src, v6)?, port(sport)?);
    let dst = SocketAddr::new(address(dst, v6)?, port(dport)?);
    Ok(Some((ProxyHeader::Client { src, dst }, end + 2)))
}

/// Without a complete CRLF: an error once 107 bytes are there, else wait for more.
fn too_long_or_more(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if buf.len() >= MAX_LINE {
        Err(ProxyError::V1TooLong)
    } else {
        Ok(None)
    }
}

/// std's parsers are strict where the spec is: no leading zeros in IPv4 octets
/// (octal confusion), no zone ids, and TCP6 does not take a dotted IPv4 address.
fn address(field: &[u8], v6: bool) -> Result<IpAddr, ProxyError> {
    let text = std::str::from_utf8(field).map_err(|_| ProxyError::V1Address)?;
    let ip = if v6 {
        text.parse::<Ipv6Addr>().map(IpAddr::V6)
    } else {
        text.parse::<Ipv4Addr>().map(IpAddr::V4)
    };
    ip.map_err(|_| ProxyError::V1Address)
}

/// Decimal digits only (`u16::from_str` would also take a leading `+`), and no leading
/// zero: the spec forbids them "to avoid any possible confusion with octal numbers".
fn port(field: &[u8]) -> Result<u16, ProxyError> {
    let leading_zero = field.len() > 1 && field.first() == Some(&b'0');
    match port_number(field) {
        Some(n) if !leading_zero => Ok(n),
        _ => Err(ProxyError::V1Port),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::arrives;
    use super::super::{parse_proxy, ProxyMode};
    use super::*;

    fn client(src: &str, dst: &str) -> ProxyHeader {
        ProxyHeader::Client {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
        }
    }

    #[test]
    fn valid_lines_byte_by_byte() {
        let v6max = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
                     ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        let unknown_max = format!("PROXY UNKNOWN {}\r\n", "x".repeat(MAX_LINE - 16));
        let cases: &[(&str, ProxyHeader)] = &[
            (
                "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
                client("192.168.0.1:56324", "192.168.0.11:443"),
            ),
            (
                "PROXY TCP4 0.0.0.0 255.255.255.255 0 80\r\n",
                client("0.0.0.0:0", "255.255.255.255:80"),
            ),
            (
                "PROXY TCP6 ::1 2001:db8::ff00:42:8329 65535 1\r\n",
                client("[::1]:65535", "[2001:db8::ff00:42:8329]:1"),
            ),
            (
                "PROXY TCP6 ::ffff:10.0.0.1 ::FFFF:10.0.0.2 1 2\r\n",
                client("[::ffff:10.0.0.1]:1", "[::ffff:10.0.0.2]:2"),
            ),
            (
                v6max,
                client(
                    "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                    "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                ),
            ),
            ("PROXY UNKNOWN\r\n", ProxyHeader::Unknown),
            ("PROXY UNKNOWN ::1 ::2 1 2\r\n", ProxyHeader::Unknown),
            (
                "PROXY UNKNOWN  what\x00ever\u{ff} \r\n",
                ProxyHeader::Unknown,
            ),
            (&unknown_max, ProxyHeader::Unknown),
        ];
        for (line, want) in cases {
            assert!(line.len() <= MAX_LINE, "{line}");
            let mut bytes = line.as_bytes().to_vec();
            for mode in [ProxyMode::V1, ProxyMode::Auto] {
                assert_eq!(arrives(&bytes, mode), Some((*want, line.len())), "{line:?}");
            }
            // What follows the line is the next layer's, not counted.
            bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
            assert_eq!(
                parse_proxy(&bytes, ProxyMode::V1),
                Ok(Some((*want, line.len())))
            );
        }
    }

    #[test]
    fn invalid_lines() {
        use ProxyError::*;
        let long_unknown = format!("PROXY UNKNOWN {}\r\n", "x".repeat(MAX_LINE - 15));
        let no_crlf = format!("PROXY UNKNOWN {}", "x".repeat(200));
        let cases: &[(&str, ProxyError)] = &[
            ("PROXY TCP4 192.168.0.1 192.16...\r\n", V1Syntax),
            (
                "PROXY TCP4 192.168.0.1 192.168.0.11 65iii 100000\r\n",
                V1Port,
            ),
            ("PROXY TCP4 not-an-ip 192.168.0.11 56324 443\r\n", V1Address),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", V1Syntax),
            ("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", V1Syntax),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", V1Syntax),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", V1Syntax),
            ("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", V1Syntax),
            ("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", V1Syntax),
            ("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", V1Syntax),
            ("PROXY UNKNOWNX\r\n", V1Syntax),
            ("PROXY \r\n", V1Syntax),
            ("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", V1Address),
            ("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", V1Address),
            ("PROXY TCP4 ::1 5.6.7.8 1 2\r\n", V1Address),
            ("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", V1Address),
            ("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", V1Address),
            ("PROXY TCP6 [::1] ::1 1 2\r\n", V1Address),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", V1Port),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", V1Port),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", V1Port),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 000080\r\n", V1Port),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 0080\r\n", V1Port),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 00 1\r\n", V1Port),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n", V1Port),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 0x50\r\n", V1Port),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", V1Syntax),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", V1Syntax),
            ("PROXY UNKNOWN a\nb\r\n", V1Syntax),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", V1Syntax),
            (&long_unknown, V1TooLong),
            (&no_crlf, V1TooLong),
            ("PROXY\r\n", V1Syntax),
            ("PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", V1Syntax),
            ("PROXy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", Missing),
            ("GET / HTTP/1.1\r\n", Missing),
        ];
        for (line, want) in cases {
            for mode in [ProxyMode::V1, ProxyMode::Auto] {
                let got = parse_proxy(line.as_bytes(), mode);
                assert_eq!(got, Err(*want), "{line:?}");
            }
        }
        // Too long is known at 107 bytes, whatever comes after.
        assert_eq!(
            parse_proxy(&no_crlf.as_bytes()[..MAX_LINE - 1], ProxyMode::V1),
            Ok(None)
        );
        assert_eq!(
            parse_proxy(&no_crlf.as_bytes()[..MAX_LINE], ProxyMode::V1),
            Err(V1TooLong)
        );
        // A CR as the 107th byte cannot be followed by its LF in time.
        let cr_last = format!("PROXY UNKNOWN {}\r", "x".repeat(MAX_LINE - 15));
        assert_eq!(cr_last.len(), MAX_LINE);
        assert_eq!(
            parse_proxy(cr_last.as_bytes(), ProxyMode::V1),
            Err(V1TooLong)
        );
    }
}
