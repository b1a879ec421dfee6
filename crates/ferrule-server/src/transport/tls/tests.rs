//! The read contract over a real session: small rooms filled exactly, the rest kept in
//! the session (and `wait(Read)` saying so), bytes in order, never `Data(0)`; then an
//! answer and `close_notify` at the shut.

use super::{Handshake, Socket, TlsStream};
use crate::transport::{Interest, ReadOutcome, Transport};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

fn configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der: CertificateDer<'static> = cert.der().clone();
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![der.clone()],
            PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

#[test]
fn reads_fill_the_room_and_keep_the_rest_in_the_session() {
    let (server_cfg, client_cfg) = configs();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let sock = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let payload = sent.clone();
    let client = std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(client_cfg, name).unwrap();
        let mut s = rustls::StreamOwned::new(conn, sock);
        s.write_all(&payload).unwrap();
        let mut answer = Vec::new();
        // Ok only when the stream ends with close_notify.
        s.read_to_end(&mut answer).unwrap();
        answer
    });
    let session = rustls::ServerConnection::new(server_cfg).unwrap();
    let mut tls = TlsStream::new(Socket::Tcp(server), session, &[]).unwrap();
    loop {
        match tls.handshake(None).unwrap() {
            Handshake::Done => break,
            Handshake::Pending => {
                crate::sys::wait_ready(tls.fd(), Interest::Read, Duration::from_secs(10)).unwrap();
            }
            Handshake::Closed => panic!("client closed during the handshake"),
        }
    }
    let mut t = Transport::Tls(Box::new(tls));
    let mut got = Vec::new();
    let mut kept = 0;
    while got.len() < sent.len() {
        let mut buf = Vec::with_capacity(1000);
        match t.read_append(&mut buf, 1000, 1000, None).unwrap() {
            ReadOutcome::Data(n) => {
                assert!(n > 0 && n == buf.len());
                if buf.len() == buf.capacity() && t.wait(Interest::Read, Duration::ZERO).unwrap() {
                    kept += 1;
                }
                got.extend_from_slice(&buf);
            }
            ReadOutcome::WouldBlock => {
                assert!(t.wait(Interest::Read, Duration::from_secs(10)).unwrap());
            }
            ReadOutcome::Eof => panic!("end of stream after {} bytes", got.len()),
        }
    }
    assert!(got == sent, "bytes lost or out of order");
    assert!(kept > 0, "a full room never left plaintext in the session");
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let mut left = &answer[..];
    while !left.is_empty() {
        match t.send(left) {
            Ok(n) => left = &left[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                t.wait(Interest::Write, Duration::from_secs(10)).unwrap();
            }
            Err(e) => panic!("{e}"),
        }
    }
    while !t.flush().unwrap() {
        t.wait(Interest::Write, Duration::from_secs(10)).unwrap();
    }
    t.shut_write().unwrap();
    assert_eq!(client.join().unwrap(), answer);
}
