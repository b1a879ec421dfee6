//! A TLS handshake whose server flight does not fit the socket (a long certificate
//! chain, a server send buffer capped small, clients with tiny receive buffers that
//! stop reading): the server waits for room in epoll (`handshake::run` →
//! `shelve_for_room`), without holding a thread and without spinning, and every
//! handshake completes once its client reads.
//!
//! A test binary of its own: the process's CPU time is then this server's and its
//! clients', which is how "no busy loop" is measured.

#![allow(clippy::disallowed_methods)] // the CPU measuring window sleeps

use ferrule_server::{Bind, Exchange, Handler, InPlace, Server, ServerConfig, TlsSettings};
use rustls::pki_types::ServerName;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::IntoRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Answers every request `200 ok`.
struct Ok200;

impl Handler for Ok200 {
    fn handle(&self, mut ex: Box<Exchange>) -> Option<Box<Exchange>> {
        ex.begin_head(b"200 OK").ok()?;
        ex.add_header(b"Content-Length", b"2").ok()?;
        ex.end_head(None).ok()?;
        ex.write_body(b"ok", true, &InPlace).ok()?;
        ex.finish(&InPlace).ok()?;
        Some(ex)
    }
}

// The certificate file is the leaf then the CA 100 times: a flight of about 40 KB.
#[allow(dead_code)] // the client certificate is for the other TLS tests
#[path = "support/certs.rs"]
mod certs;
use certs::Certs;

/// A server on a listening socket whose send buffer is capped at 4 KB (accepted
/// sockets inherit the cap, and with it no autotuning), with two threads.
fn server(certs: &Certs) -> (Server, SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let files = certs.files();
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener.set_send_buffer_size(4096).unwrap();
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(64).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let cfg = ServerConfig {
        binds: vec![Bind::Fd(listener.into_raw_fd()).into()],
        threads: 2,
        tls: Some(TlsSettings::load(&files).expect("load")),
        header_timeout: Duration::from_secs(30),
        ..ServerConfig::default()
    };
    let mut server = Server::bind(cfg, None).expect("bind");
    server.start(Arc::new(Ok200)).expect("start");
    (server, addr)
}

/// A client with a 2 KB receive buffer that has sent its ClientHello and reads nothing.
fn stalled(
    certs: &Certs,
    addr: SocketAddr,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(2048).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut sock: TcpStream = sock.into();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(certs.client(), name).unwrap();
    while conn.wants_write() {
        conn.write_tls(&mut sock).unwrap();
    }
    rustls::StreamOwned::new(conn, sock)
}

/// One request; the status line.
fn status(c: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>) -> String {
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines().next().unwrap_or_default().to_string()
}

fn cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let us = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    us(u.user_time()) + us(u.system_time())
}

#[test]
fn a_flight_larger_than_the_socket_waits_for_room() {
    let certs = Certs::new("room").with_long_chain(100);
    let (server, addr) = server(&certs);
    // More stalled handshakes than the server has threads.
    let mut clients: Vec<_> = (0..6).map(|_| stalled(&certs, addr)).collect();
    for c in &clients {
        // Blocks until the server's flight starts to arrive; what has arrived is what
        // the sockets hold, far from all of it.
        let mut peek = vec![0u8; 65536];
        let queued = c.sock.peek(&mut peek).unwrap();
        assert!(queued > 0 && queued < 30_000, "{queued} bytes queued");
    }
    // While they wait: the server's threads are not held (a normal client is served)
    // and not spinning (the process is nearly idle over half a second).
    let before = cpu_time();
    let began = Instant::now();
    let window = Duration::from_millis(500);
    let mut normal = {
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(certs.client(), name).unwrap();
        rustls::StreamOwned::new(conn, sock)
    };
    assert_eq!(status(&mut normal), "HTTP/1.1 200 OK");
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "the normal client took {:?}",
        began.elapsed()
    );
    // A measuring window, not a synchronisation: nothing is waited for here.
    std::thread::sleep(window.saturating_sub(began.elapsed()));
    let used = cpu_time() - before;
    assert!(
        used < Duration::from_millis(150),
        "{used:?} of CPU in {window:?} while handshakes wait"
    );
    // Once the clients read, every handshake completes.
    for c in &mut clients {
        assert_eq!(status(c), "HTTP/1.1 200 OK");
    }
    server.stop(Duration::from_secs(2));
}
