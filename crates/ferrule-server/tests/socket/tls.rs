//! TLS over loopback sockets with a rustls client: handshake, keep-alive and
//! pipelining in one session, a stalled handshake beside a normal one, plain HTTP
//! to the TLS port, a ClientHello to a plain port, and close_notify at the end.
//! The certificates are made here (rcgen): a CA and a `localhost` leaf it signs.

use super::{start, Running};
use ferrule_http::ParserConfig;
use ferrule_server::{TlsFiles, TlsSettings};
use rustls::pki_types::ServerName;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../support/certs.rs"]
mod certs;
pub(crate) use certs::Certs;

fn tls_server(certs: &Certs) -> Running {
    let settings = TlsSettings::load(&certs.files()).expect("load");
    start(ParserConfig::default(), |c| c.tls = Some(settings))
}

type Client = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(certs: &Certs, addr: SocketAddr) -> Client {
    connect_with(certs.client(), addr)
}

fn connect_with(cfg: Arc<rustls::ClientConfig>, addr: SocketAddr) -> Client {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// Reads one `Content-Length` answer from `r`, returning its head and body.
fn read_answer(r: &mut impl Read) -> (String, Vec<u8>) {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(
            r.read(&mut byte).unwrap(),
            1,
            "closed inside a head: {got:?}"
        );
        got.push(byte[0]);
    }
    let head = String::from_utf8(got).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    (head, body)
}

#[test]
fn handshake_keep_alive_and_pipelining() {
    let certs = Certs::new("keepalive");
    let srv = tls_server(&certs);
    let mut c = connect(&certs, srv.addr);
    // Two pipelined requests in one write, then a third on the same session.
    c.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    for _ in 0..2 {
        let (head, body) = read_answer(&mut c);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, b"ok");
    }
    c.write_all(b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap();
    let (head, _) = read_answer(&mut c);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(c.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let seen = srv.handler.seen.lock().unwrap();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/a", "/b", "/c"]);
    assert_eq!(seen[2].body, b"hello");
}

#[test]
fn stalled_handshakes_do_not_delay_a_normal_one() {
    let certs = Certs::new("stalled");
    let srv = tls_server(&certs);
    // More stalled clients than the server has threads (4), each mid-ClientHello.
    let stalled: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut s = TcpStream::connect(srv.addr).unwrap();
            s.write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01]).unwrap();
            s
        })
        .collect();
    let began = Instant::now();
    let mut c = connect(&certs, srv.addr);
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (head, _) = read_answer(&mut c);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "took {:?}",
        began.elapsed()
    );
    drop(stalled);
}

#[test]
fn plain_http_to_the_tls_port_is_told_so() {
    let certs = Certs::new("plain");
    let srv = tls_server(&certs);
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let text = String::from_utf8(got).unwrap();
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.ends_with("The plain HTTP request was sent to HTTPS port\n"));
    assert!(srv.handler.seen.lock().unwrap().is_empty());
}

#[test]
fn a_client_hello_to_a_plain_port_is_closed_without_an_answer() {
    let certs = Certs::new("hello-plain");
    let srv = start(ParserConfig::default(), |_| {});
    let mut c = connect(&certs, srv.addr);
    let err = c
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap_err();
    // The handshake cannot complete: the server closed instead of answering.
    assert!(
        matches!(
            err.kind(),
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::InvalidData
        ),
        "{err:?}"
    );
    assert!(srv.handler.seen.lock().unwrap().is_empty());
}

#[test]
fn the_last_answer_ends_with_close_notify() {
    let certs = Certs::new("close-notify");
    let srv = tls_server(&certs);
    let mut c = connect(&certs, srv.addr);
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    // `read_to_end` over rustls fails with UnexpectedEof when the TCP stream ends
    // without close_notify: success means the server sent it.
    c.read_to_end(&mut got).unwrap();
    let text = String::from_utf8(got).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("ok"), "{text}");
}

/// One request; the status line, or the error that ended the session.
fn status(mut c: Client) -> Result<String, std::io::Error> {
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut got = Vec::new();
    c.read_to_end(&mut got)?;
    let text = String::from_utf8_lossy(&got).into_owned();
    Ok(text.lines().next().unwrap_or_default().to_string())
}

#[test]
fn client_certificates_required_or_optional() {
    let certs = Certs::new("mtls");
    for (reqs, without_cert_served) in [
        (ferrule_server::CertReqs::Required, false),
        (ferrule_server::CertReqs::Optional, true),
    ] {
        let files = TlsFiles {
            ca_certs: Some(certs.dir.join("ca.pem")),
            cert_reqs: reqs,
            ..certs.files()
        };
        let settings = TlsSettings::load(&files).expect("load");
        let srv = start(ParserConfig::default(), |c| c.tls = Some(settings));
        let with = status(connect_with(certs.client_with(true), srv.addr));
        assert_eq!(
            with.unwrap(),
            "HTTP/1.1 200 OK",
            "{reqs:?} with a certificate"
        );
        let without = status(connect_with(certs.client_with(false), srv.addr));
        match without_cert_served {
            true => assert_eq!(without.unwrap(), "HTTP/1.1 200 OK"),
            false => assert!(
                without.is_err(),
                "{reqs:?} served a client without a certificate"
            ),
        }
    }
}

#[test]
fn a_proxy_header_comes_before_the_handshake() {
    let certs = Certs::new("proxy");
    let settings = TlsSettings::load(&certs.files()).expect("load");
    let srv = start(ParserConfig::default(), |c| {
        c.tls = Some(settings);
        c.proxy_protocol = Some(ferrule_http::ProxyMode::V1);
        c.proxy_allow_ips = ferrule_server::AllowIps::parse("127.0.0.1").unwrap();
    });
    let mut sock = TcpStream::connect(srv.addr).unwrap();
    sock.write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 443\r\n")
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(certs.client(), name).unwrap();
    let c = rustls::StreamOwned::new(conn, sock);
    assert_eq!(status(c).unwrap(), "HTTP/1.1 200 OK");
    let clients = srv.handler.clients.lock().unwrap().clone();
    assert_eq!(
        clients,
        [ferrule_server::Peer::Tcp(
            "203.0.113.7:5555".parse().unwrap()
        )]
    );
}

#[test]
fn a_handshake_must_end_within_the_header_timeout() {
    let certs = Certs::new("slow");
    let settings = TlsSettings::load(&certs.files()).expect("load");
    let srv = start(ParserConfig::default(), |c| {
        c.tls = Some(settings);
        c.header_timeout = Duration::from_millis(300);
    });
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let began = Instant::now();
    // The start of a ClientHello, and no more.
    s.write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01]).unwrap();
    let mut got = Vec::new();
    let end = s.read_to_end(&mut got);
    assert!(
        matches!(&end, Ok(0)) || matches!(&end, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "{end:?}"
    );
    assert!(got.is_empty(), "answered {got:?}");
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
}

#[test]
fn a_long_chain_completes_its_handshake() {
    // The leaf, then the CA 100 times: a flight of about 40 KB (under the client's
    // 64 KB limit for one message), to a client with a tiny receive buffer. (Loopback
    // socket buffers still take it whole: the wait for room is `tests/tls_room.rs`.)
    let certs = Certs::new("long-chain").with_long_chain(100);
    let settings = TlsSettings::load(&certs.files()).expect("load");
    let srv = start(ParserConfig::default(), |c| {
        c.tls = Some(settings);
        c.header_timeout = Duration::from_secs(20);
    });
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(2048).unwrap();
    sock.connect(&srv.addr.into()).unwrap();
    let sock: TcpStream = sock.into();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let began = Instant::now();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(certs.client(), name).unwrap();
    let c = rustls::StreamOwned::new(conn, sock);
    assert_eq!(status(c).unwrap(), "HTTP/1.1 200 OK");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "took {:?}",
        began.elapsed()
    );
}
