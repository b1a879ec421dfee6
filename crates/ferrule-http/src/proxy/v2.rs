//! PROXY v2: a 16-byte binary header (signature, version/command, family/protocol,
//! big-endian length), then `length` bytes of addresses and TLVs (spec section 2.2).

use super::{ProxyError, ProxyHeader};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

pub(super) const SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const FIXED: usize = 16;

pub(super) fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if buf.iter().zip(SIG).any(|(a, b)| a != b) {
        return Err(ProxyError::Missing);
    }
    let Some(&[.., ver_cmd, fam, len_hi, len_lo]) = buf.get(..FIXED) else {
        return Ok(None);
    };
    // Everything but the TLVs is checked from the fixed part, before waiting for the
    // rest: a wrong header fails as soon as it can be told wrong.
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::V2Version);
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ProxyError::V2Command),
    };
    // LOCAL: "discard the protocol block including the family which is ignored".
    let addr_len = if local { 0 } else { address_len(fam)? };
    let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    if len < addr_len {
        return Err(ProxyError::V2Length);
    }
    let total = FIXED + len;
    let Some(header) = buf.get(..total) else {
        return Ok(None);
    };
    if local {
        return Ok(Some((ProxyHeader::Local, total)));
    }
    // AF_UNSPEC: the receiver "should ignore address information", TLVs included.
    if fam == 0x00 {
        return Ok(Some((ProxyHeader::Unknown, total)));
    }
    let tlvs = FIXED + addr_len;
    check_tlvs(header, tlvs)?;
    let addrs = header.get(FIXED..tlvs).ok_or(ProxyError::V2Length)?;
    let parsed = match fam >> 4 {
        1 => inet(addrs),
        2 => inet6(addrs),
        // AF_UNIX: a path on the proxy's host says nothing about the client.
        _ => Some(ProxyHeader::Unknown),
    };
    Ok(Some((parsed.ok_or(ProxyError::V2Length)?, total)))
}

/// The address block's size for a family/protocol byte; only STREAM (1) and DGRAM (2)
/// under AF_INET, AF_INET6 and AF_UNIX, and UNSPEC/UNSPEC, are defined.
fn address_len(fam: u8) -> Result<usize, ProxyError> {
    match fam {
        0x00 => Ok(0),
        0x11 | 0x12 => Ok(12),
        0x21 | 0x22 => Ok(36),
        0x31 | 0x32 => Ok(216),
        _ => Err(ProxyError::V2Family),
    }
}

const PP2_TYPE_CRC32C: u8 = 0x03;

/// Walks the TLVs from `at` to the header's end exactly (type, big-endian u16 length,
/// value). None is interpreted except PP2_TYPE_CRC32C, which a receiver that supports
/// it "MUST" verify; it costs one pass over a header that is sent once per connection.
fn check_tlvs(header: &[u8], mut at: usize) -> Result<(), ProxyError> {
    while let Some(rest) = header.get(at..).filter(|r| !r.is_empty()) {
        let Some((&[kind, hi, lo], _)) = rest.split_first_chunk::<3>() else {
            return Err(ProxyError::V2Tlv);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        let (value, end) = (at + 3, at + 3 + len);
        if end > header.len() {
            return Err(ProxyError::V2Tlv);
        }
        if kind == PP2_TYPE_CRC32C {
            check_crc(header, value, len)?;
        }
        at = end;
    }
    Ok(())
}

/// The CRC32c (big-endian, as HAProxy writes it) of the whole header with its own
/// four bytes zeroed.
fn check_crc(header: &[u8], value: usize, len: usize) -> Result<(), ProxyError> {
    let (before, rest) = header
        .split_at_checked(value)
        .ok_or(ProxyError::V2Checksum)?;
    let Some((sent, after)) = rest.split_first_chunk::<4>().filter(|_| len == 4) else {
        return Err(ProxyError::V2Checksum);
    };
    let all = before.iter().chain(&[0; 4]).chain(after);
    if crc32c(all.copied()) == u32::from_be_bytes(*sent) {
        Ok(())
    } else {
        Err(ProxyError::V2Checksum)
    }
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit: no table for
/// a check made at most once per connection.
fn crc32c(bytes: impl Iterator<Item = u8>) -> u32 {
    let mut crc = !0u32;
    for b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82f6_3b78 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// src addr, dst addr, src port, dst port, all big-endian.
fn inet(block: &[u8]) -> Option<ProxyHeader> {
    let (src, rest) = block.split_first_chunk::<4>()?;
    let (dst, rest) = rest.split_first_chunk::<4>()?;
    let (sport, rest) = rest.split_first_chunk::<2>()?;
    let (dport, _) = rest.split_first_chunk::<2>()?;
    Some(ProxyHeader::Client {
        src: SocketAddr::from((Ipv4Addr::from(*src), u16::from_be_bytes(*sport))),
        dst: SocketAddr::from((Ipv4Addr::from(*dst), u16::from_be_bytes(*dport))),
    })
}

fn inet6(block: &[u8]) -> Option<ProxyHeader> {
    let (src, rest) = block.split_first_chunk::<16>()?;
    let (dst, rest) = rest.split_first_chunk::<16>()?;
    let (sport, rest) = rest.split_first_chunk::<2>()?;
    let (dport, _) = rest.split_first_chunk::<2>()?;
    Some(ProxyHeader::Client {
        src: SocketAddr::from((Ipv6Addr::from(*src), u16::from_be_bytes(*sport))),
        dst: SocketAddr::from((Ipv6Addr::from(*dst), u16::from_be_bytes(*dport))),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::arrives;
    use super::super::{parse_proxy, ProxyMode};
    use super::*;

    /// A v2 header: signature, the two bytes, the length of `rest`, `rest`.
    fn v2(ver_cmd: u8, fam: u8, rest: &[u8]) -> Vec<u8> {
        let mut h = SIG.to_vec();
        h.extend_from_slice(&[ver_cmd, fam]);
        h.extend_from_slice(&(rest.len() as u16).to_be_bytes());
        h.extend_from_slice(rest);
        h
    }

    const V4: &[u8] = &[192, 168, 1, 1, 10, 0, 0, 1, 0xdb, 0xf0, 0x01, 0xbb];

    fn v6() -> Vec<u8> {
        let mut a = vec![0x20, 0x01, 0x0d, 0xb8];
        a.extend_from_slice(&[0; 11]);
        a.push(1);
        a.extend_from_slice(&[0; 15]);
        a.push(1);
        a.extend_from_slice(&[0x30, 0x39, 0x00, 0x50]);
        a
    }

    fn client(src: &str, dst: &str) -> ProxyHeader {
        ProxyHeader::Client {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
        }
    }

    #[test]
    fn valid_headers_byte_by_byte() {
        let c4 = client("192.168.1.1:56304", "10.0.0.1:443");
        let c6 = client("[2001:db8::1]:12345", "[::1]:80");
        let tlvs = [
            &[0x01, 0x00, 0x02, b'h', b'2'][..], // ALPN
            &[0x04, 0x00, 0x00],                 // NOOP, empty
            &[0xe0, 0x00, 0x01, 0xff],           // custom
        ]
        .concat();
        let with = |a: &[u8], t: &[u8]| [a, t].concat();
        let cases: Vec<(Vec<u8>, ProxyHeader)> = vec![
            (v2(0x21, 0x11, V4), c4),
            (v2(0x21, 0x12, V4), c4),
            (v2(0x21, 0x11, &with(V4, &tlvs)), c4),
            (v2(0x21, 0x21, &v6()), c6),
            (v2(0x21, 0x22, &with(&v6(), &tlvs)), c6),
            (v2(0x21, 0x31, &[7; 216]), ProxyHeader::Unknown),
            (
                v2(0x21, 0x32, &with(&[0; 216], &tlvs)),
                ProxyHeader::Unknown,
            ),
            (v2(0x21, 0x00, &[]), ProxyHeader::Unknown),
            // UNSPEC's block is ignored, whatever it holds.
            (v2(0x21, 0x00, &[1, 2]), ProxyHeader::Unknown),
            (v2(0x20, 0x00, &[]), ProxyHeader::Local),
            // LOCAL ignores the family and the block too.
            (v2(0x20, 0x11, V4), ProxyHeader::Local),
            (v2(0x20, 0x99, &[1]), ProxyHeader::Local),
            (
                v2(0x21, 0x11, &[0; 65535]),
                client("0.0.0.0:0", "0.0.0.0:0"),
            ),
        ];
        for (mut bytes, want) in cases {
            let n = bytes.len();
            let step = if n > 1000 { n - 20 } else { 0 };
            for mode in [ProxyMode::V2, ProxyMode::Auto] {
                if step == 0 {
                    assert_eq!(arrives(&bytes, mode), Some((want, n)), "{bytes:?}");
                } else {
                    assert_eq!(parse_proxy(&bytes[..step], mode), Ok(None));
                    assert_eq!(parse_proxy(&bytes, mode), Ok(Some((want, n))));
                }
            }
            bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
            assert_eq!(parse_proxy(&bytes, ProxyMode::V2), Ok(Some((want, n))));
        }
    }

    #[test]
    fn crc32c_tlv_is_verified() {
        assert_eq!(crc32c(b"123456789".iter().copied()), 0xe306_9283);
        let mut h = v2(
            0x21,
            0x11,
            &[V4, &[0x04, 0, 1, 9, 0x03, 0, 4, 0, 0, 0, 0]].concat(),
        );
        let sum = crc32c(h.iter().copied()).to_be_bytes();
        let at = h.len() - 4;
        h[at..].copy_from_slice(&sum);
        let c4 = client("192.168.1.1:56304", "10.0.0.1:443");
        assert_eq!(arrives(&h, ProxyMode::V2), Some((c4, h.len())));
        // Every flipped bit after the command (LOCAL ignores the block) is caught, but
        // in the CRC TLV's type (a TLV of another type is not checked).
        for i in (13..h.len()).filter(|&i| i != at - 3) {
            let mut bad = h.clone();
            bad[i] ^= 0x01;
            let got = parse_proxy(&bad, ProxyMode::V2);
            assert!(got.is_err() || got == Ok(None), "{i}: {got:?}");
        }
        let mut bad = h.clone();
        bad[17] ^= 0x01; // the source address
        assert_eq!(
            parse_proxy(&bad, ProxyMode::V2),
            Err(ProxyError::V2Checksum)
        );
        let short = v2(0x21, 0x11, &[V4, &[0x03, 0, 3, 0, 0, 0]].concat());
        assert_eq!(
            parse_proxy(&short, ProxyMode::V2),
            Err(ProxyError::V2Checksum)
        );
    }

    #[test]
    fn invalid_headers() {
        use ProxyError::*;
        let cases: Vec<(Vec<u8>, ProxyError)> = vec![
            (v2(0x11, 0x11, V4), V2Version),
            (v2(0x31, 0x11, V4), V2Version),
            (v2(0x01, 0x11, V4), V2Version),
            (v2(0x22, 0x11, V4), V2Command),
            (v2(0x2f, 0x11, V4), V2Command),
            (v2(0x21, 0x10, V4), V2Family),
            (v2(0x21, 0x13, V4), V2Family),
            (v2(0x21, 0x41, V4), V2Family),
            (v2(0x21, 0x01, V4), V2Family),
            (v2(0x21, 0x11, &V4[..11]), V2Length),
            (v2(0x21, 0x21, V4), V2Length),
            (v2(0x21, 0x31, &[0; 215]), V2Length),
            (v2(0x21, 0x11, &[V4, &[0x01]].concat()), V2Tlv),
            (v2(0x21, 0x11, &[V4, &[0x01, 0x00]].concat()), V2Tlv),
            (
                v2(0x21, 0x11, &[V4, &[0x01, 0x00, 0x02, b'h']].concat()),
                V2Tlv,
            ),
            (
                v2(0x21, 0x21, &[&v6()[..], &[0x04, 0xff, 0xff]].concat()),
                V2Tlv,
            ),
            (b"\r\n\r\n\0\r\nquit\n\x21\x11\x00\x0c".to_vec(), Missing),
        ];
        for (bytes, want) in &cases {
            for mode in [ProxyMode::V2, ProxyMode::Auto] {
                assert_eq!(parse_proxy(bytes, mode), Err(*want), "{bytes:?}");
            }
        }
        // Everything but a TLV overrun is known from the 16 fixed bytes.
        for (bytes, want) in &cases[..12] {
            assert_eq!(parse_proxy(&bytes[..FIXED], ProxyMode::V2), Err(*want));
        }
        // A length past the data is incomplete, never read beyond the buffer.
        let short = v2(0x21, 0x11, V4);
        assert_eq!(
            parse_proxy(&short[..short.len() - 1], ProxyMode::V2),
            Ok(None)
        );
    }
}
