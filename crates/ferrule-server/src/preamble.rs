//! The PROXY protocol preamble (`--proxy-protocol`): the header a load balancer sends
//! once, first on a connection, to say whom the connection is for.
//!
//! With the setting on, every accepted connection starts in `Stage::Preamble`
//! (`driver::accept_all`), and `driver::serve` hands it here before any protocol driver
//! sees a byte: the preamble comes before an HTTP head, a uwsgi packet or a TLS
//! ClientHello alike, so nothing here assumes what follows it. Once the header is
//! complete, `Conn::client` becomes its source (UNKNOWN and LOCAL keep the socket's
//! peer), its bytes leave the buffer, and the connection's driver runs at once on what
//! followed them in the same packets: a keep-alive request later pays nothing for it.
//!
//! Who must send a header is judged on `Conn::peer`, the socket's other end, against
//! `--proxy-allow-from`. An allowed peer must (HAProxy's spec forbids guessing, so a
//! connection without one is refused); any other peer speaks for itself and a header
//! from it is refused, since it would be a client naming someone else's address.
//! Unix-socket peers count as allowed, as in gunicorn: only local processes reach them,
//! and HAProxy can send a header over one. A refused connection is closed without an
//! answer (the protocol after the header is unknown), with a rate-limited log line.

use crate::config::AllowIps;
use crate::conn::{Conn, Preamble, Stage};
use crate::listener::Peer;
use crate::log::PROXY_REFUSALS;
use crate::shared::Shared;
use crate::transport::ReadOutcome;
use ferrule_http::{parse_proxy, proxy_signature, ProxyError, ProxyHeader, ProxyMode};
use std::fmt;

/// What the bytes received so far say about the preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Too few bytes to tell.
    Incomplete,
    /// A complete header of this many bytes: the protocol starts after it.
    Header(ProxyHeader, usize),
    /// No header, from a peer that may send none: the protocol starts at the first byte.
    Plain,
    Refused(Refusal),
}

/// Why a connection is closed at its preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// From an allowed peer: no header, or a malformed one.
    Invalid(ProxyError),
    /// From an allowed peer: a header of the version `--proxy-protocol` does not take.
    Version(ProxyMode),
    /// A header from a peer outside `--proxy-allow-from`.
    Forbidden,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Invalid(e) => write!(f, "{}", e.reason()),
            Refusal::Version(ProxyMode::V1) => {
                f.write_str("a PROXY v2 header, and --proxy-protocol is v1")
            }
            Refusal::Version(ProxyMode::V2) => {
                f.write_str("a PROXY v1 header, and --proxy-protocol is v2")
            }
            // `auto` takes either version, so `judge` never refuses one for it.
            Refusal::Version(ProxyMode::Auto) => f.write_str("a PROXY header of another version"),
            Refusal::Forbidden => {
                f.write_str("a PROXY header from a peer outside --proxy-allow-from")
            }
        }
    }
}

/// Whether a connection from `peer` must send a header or may not.
pub(crate) fn for_peer(mode: ProxyMode, allow: &AllowIps, peer: &Peer) -> Preamble {
    match allow.allows(peer.ip()) {
        true => Preamble::Header(mode),
        false => Preamble::Forbidden,
    }
}

/// Judges the bytes received so far (sans-IO, so the rules are table-tested).
pub(crate) fn judge(buf: &[u8], preamble: Preamble) -> Verdict {
    match preamble {
        Preamble::Forbidden => match proxy_signature(buf) {
            None => Verdict::Incomplete,
            Some(true) => Verdict::Refused(Refusal::Forbidden),
            Some(false) => Verdict::Plain,
        },
        Preamble::Header(mode) => match parse_proxy(buf, mode) {
            Ok(None) => Verdict::Incomplete,
            Ok(Some((header, len))) => Verdict::Header(header, len),
            // Not the expected version: the other one (said so in the log line), or nothing.
            Err(ProxyError::Missing) => match proxy_signature(buf) {
                None => Verdict::Incomplete,
                Some(true) => Verdict::Refused(Refusal::Version(mode)),
                Some(false) => Verdict::Refused(Refusal::Invalid(ProxyError::Missing)),
            },
            Err(e) => Verdict::Refused(Refusal::Invalid(e)),
        },
    }
}

/// Puts a just-accepted connection in `Stage::Preamble`. Its header must arrive within
/// `--header-timeout` of the accept, which also bounds a client that sends nothing.
pub(crate) fn expect(conn: &mut Conn, mode: ProxyMode, allow: &AllowIps) {
    conn.stage = Stage::Preamble(for_peer(mode, allow, &conn.peer));
    conn.head_since = Some(crate::clock::Tick::now());
}

/// Reads a connection's preamble. Returns it in `Stage::Open` once its protocol's first
/// byte is at the front of its buffer (or yet to come); otherwise it waits in epoll for
/// more, or is closed.
pub(crate) fn read(shared: &Shared, mut conn: Box<Conn>) -> Option<Box<Conn>> {
    let Stage::Preamble(preamble) = conn.stage else {
        return Some(conn);
    };
    loop {
        if !conn.buf.is_empty() {
            match judge(&conn.buf, preamble) {
                Verdict::Incomplete => {}
                Verdict::Header(header, len) => {
                    if let Some(src) = header.client() {
                        conn.client = Peer::Tcp(src);
                    }
                    conn.buf.drain(..len);
                    return Some(begin(shared, conn));
                }
                Verdict::Plain => return Some(begin(shared, conn)),
                Verdict::Refused(why) => {
                    if PROXY_REFUSALS.allow() {
                        tracing::warn!("refused a connection from {}: {why}", conn.peer);
                    }
                    shared.table.release(conn.token);
                    return None;
                }
            }
        }
        match conn.read_some() {
            Ok(ReadOutcome::Data(_)) => {}
            Ok(ReadOutcome::WouldBlock) => {
                shared.shelve(conn, false);
                return None;
            }
            Ok(ReadOutcome::Eof) => {
                if !conn.buf.is_empty() {
                    tracing::debug!("client closed the connection in the middle of its preamble");
                }
                shared.table.release(conn.token);
                return None;
            }
            Err(e) => {
                tracing::debug!("read failed: {e}");
                shared.table.release(conn.token);
                return None;
            }
        }
    }
}

/// The preamble is over: the TLS handshake (fed from the front of the buffer), or the
/// protocol's driver parses from there.
fn begin(shared: &Shared, mut conn: Box<Conn>) -> Box<Conn> {
    conn.stage = Stage::Open;
    conn.reset_scan();
    if shared.config.tls.is_some() {
        crate::handshake::expect(&mut conn);
    }
    conn
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    const V2_SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

    fn v2(ver_cmd: u8, fam: u8, rest: &[u8]) -> Vec<u8> {
        let mut h = V2_SIG.to_vec();
        h.extend_from_slice(&[ver_cmd, fam, 0, rest.len() as u8]);
        h.extend_from_slice(rest);
        h
    }

    fn client(src: &str, dst: &str) -> ProxyHeader {
        ProxyHeader::Client {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
        }
    }

    #[test]
    fn the_rules_of_the_preamble() {
        use Preamble::{Forbidden, Header};
        use ProxyMode::{Auto, V1, V2};
        use Verdict::{Incomplete, Plain, Refused};
        let v1_line = b"PROXY TCP4 10.1.2.3 10.0.0.1 5555 80\r\nGET / HTTP/1.1\r\n".to_vec();
        let v1_len = v1_line.len() - b"GET / HTTP/1.1\r\n".len();
        let tcp4 = v2(0x21, 0x11, &[10, 1, 2, 3, 10, 0, 0, 1, 0x15, 0xb3, 0, 80]);
        let mut with_tlvs = v2(
            0x21,
            0x11,
            &[
                10, 1, 2, 3, 10, 0, 0, 1, 0x15, 0xb3, 0, 80, 0x04, 0, 2, 7, 7,
            ],
        );
        with_tlvs.extend_from_slice(b"GET");
        let local = v2(0x20, 0x00, &[]);
        let unspec = v2(0x21, 0x00, &[1, 2]);
        let long_v1 = [b"PROXY TCP6 ".as_slice(), &[b'1'; 100]].concat();
        let version_3 = v2(0x31, 0x11, &[0; 12]);
        let header = |h, n| Verdict::Header(h, n);
        let src = "10.1.2.3:5555";
        let dst = "10.0.0.1:80";
        // (bytes, preamble, verdict)
        let table: Vec<(&[u8], Preamble, Verdict)> = vec![
            // From an allowed peer: the header, whatever follows it.
            (&v1_line, Header(Auto), header(client(src, dst), v1_len)),
            (&v1_line, Header(V1), header(client(src, dst), v1_len)),
            (&tcp4, Header(Auto), header(client(src, dst), 28)),
            (&tcp4, Header(V2), header(client(src, dst), 28)),
            (&with_tlvs, Header(V2), header(client(src, dst), 33)),
            (&local, Header(Auto), header(ProxyHeader::Local, 16)),
            (&unspec, Header(Auto), header(ProxyHeader::Unknown, 18)),
            (
                b"PROXY UNKNOWN\r\n",
                Header(V1),
                header(ProxyHeader::Unknown, 15),
            ),
            (b"PROXY TCP4 10.1", Header(Auto), Incomplete),
            (&tcp4[..20], Header(V2), Incomplete),
            // ... and nothing else: no header is refused, never guessed.
            (
                b"GET / HTTP/1.1\r\n",
                Header(Auto),
                Refused(Refusal::Invalid(ProxyError::Missing)),
            ),
            (
                b"\x16\x03\x01\x02\x00",
                Header(V2),
                Refused(Refusal::Invalid(ProxyError::Missing)),
            ),
            // The wrong version for the mode, said so once its signature is complete.
            (&tcp4, Header(V1), Refused(Refusal::Version(V1))),
            (&tcp4[..6], Header(V1), Incomplete),
            (&v1_line, Header(V2), Refused(Refusal::Version(V2))),
            // Malformed.
            (
                b"PROXY TCP4 10.1.2.300 10.0.0.1 1 2\r\n",
                Header(Auto),
                Refused(Refusal::Invalid(ProxyError::V1Address)),
            ),
            (
                b"PROXY TCP4 10.1.2.3 10.0.0.1 1 65536\r\n",
                Header(Auto),
                Refused(Refusal::Invalid(ProxyError::V1Port)),
            ),
            (
                &long_v1,
                Header(Auto),
                Refused(Refusal::Invalid(ProxyError::V1TooLong)),
            ),
            (
                &version_3,
                Header(Auto),
                Refused(Refusal::Invalid(ProxyError::V2Version)),
            ),
            // From a peer outside the list: served as it comes, a header refused.
            (b"GET / HTTP/1.1\r\n", Forbidden, Plain),
            (b"POST /", Forbidden, Plain),
            (b"PROPFIND /", Forbidden, Plain),
            (b"\x16\x03\x01", Forbidden, Plain),
            (b"PROX", Forbidden, Incomplete),
            (b"\r\n\r\n", Forbidden, Incomplete),
            (&v1_line, Forbidden, Refused(Refusal::Forbidden)),
            (b"PROXY ", Forbidden, Refused(Refusal::Forbidden)),
            (&local, Forbidden, Refused(Refusal::Forbidden)),
        ];
        for (bytes, preamble, want) in table {
            assert_eq!(
                judge(bytes, preamble),
                want,
                "{preamble:?} {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn who_must_send_a_header() {
        let allow = AllowIps::parse("127.0.0.1,::1,10.0.0.0/8").unwrap();
        let peer = |s: &str| Peer::Tcp(s.parse::<SocketAddr>().unwrap());
        let mode = ProxyMode::Auto;
        let must = Preamble::Header(mode);
        assert_eq!(for_peer(mode, &allow, &peer("127.0.0.1:9")), must);
        assert_eq!(for_peer(mode, &allow, &peer("[::1]:9")), must);
        // A dual-stack listener's IPv4 peer.
        assert_eq!(for_peer(mode, &allow, &peer("[::ffff:10.2.3.4]:9")), must);
        assert_eq!(
            for_peer(mode, &allow, &peer("192.0.2.1:9")),
            Preamble::Forbidden
        );
        // Unix-socket peers are local: allowed, so they must send one.
        assert_eq!(for_peer(mode, &allow, &Peer::Unix), must);
        let any = AllowIps::parse("*").unwrap();
        assert_eq!(for_peer(mode, &any, &peer("192.0.2.1:9")), must);
    }

    #[test]
    fn refusals_say_why() {
        let said = |r: Refusal| r.to_string();
        assert!(said(Refusal::Version(ProxyMode::V1)).contains("v2 header"));
        assert!(said(Refusal::Version(ProxyMode::V2)).contains("v1 header"));
        assert!(said(Refusal::Forbidden).contains("--proxy-allow-from"));
        assert_eq!(
            said(Refusal::Invalid(ProxyError::Missing)),
            "no PROXY protocol header"
        );
    }
}
