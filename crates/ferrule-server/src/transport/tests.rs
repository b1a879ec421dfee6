//! The outcomes callers act on, over real sockets (a socketpair, TCP loopback).

use super::{Interest, ReadOutcome, Sendfile, Transport};
use std::io::{IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn unix_pair() -> (Transport, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    (Transport::Unix(ours), theirs)
}

fn tcp_pair() -> (Transport, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    (Transport::Tcp(server), client)
}

fn read(t: &mut Transport, buf: &mut Vec<u8>) -> ReadOutcome {
    t.read_append(buf, 4096, 16 * 1024, None).unwrap()
}

#[test]
fn a_read_is_data_would_block_or_end_of_stream() {
    for (mut t, mut peer) in [
        {
            let (t, p) = unix_pair();
            (t, Box::new(p) as Box<dyn Write>)
        },
        {
            let (t, p) = tcp_pair();
            (t, Box::new(p) as Box<dyn Write>)
        },
    ] {
        let mut buf = Vec::new();
        assert_eq!(read(&mut t, &mut buf), ReadOutcome::WouldBlock);
        assert!(!t.wait(Interest::Read, Duration::ZERO).unwrap());
        peer.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        assert!(t.wait(Interest::Read, Duration::from_secs(5)).unwrap());
        assert!(t.has_bytes());
        assert_eq!(read(&mut t, &mut buf), ReadOutcome::Data(16));
        assert_eq!(buf, b"GET / HTTP/1.1\r\n");
        assert!(buf.capacity() - buf.len() >= 4096, "grown as asked");
        assert_eq!(read(&mut t, &mut buf), ReadOutcome::WouldBlock);
        drop(peer);
        assert!(t.wait(Interest::Read, Duration::from_secs(5)).unwrap());
        assert_eq!(read(&mut t, &mut buf), ReadOutcome::Eof);
        assert_eq!(buf.len(), 16, "the end of stream appends nothing");
    }
}

#[test]
fn writes_reach_the_peer_and_a_full_socket_would_block() {
    let (mut t, mut peer) = unix_pair();
    assert_eq!(t.send(b"HTTP/1.1 ").unwrap(), 9);
    let parts = [IoSlice::new(b"200 OK\r\n"), IoSlice::new(b"\r\n")];
    assert_eq!(t.write_vectored(&parts).unwrap(), 10);
    assert!(!t.has_pending_output(), "a plain socket keeps nothing back");
    let mut got = [0u8; 19];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"HTTP/1.1 200 OK\r\n\r\n");
    let block = vec![0u8; 64 * 1024];
    let full = (0..10_000).find_map(|_| t.send(&block).err());
    let full = full.expect("the socket never filled");
    assert_eq!(full.kind(), std::io::ErrorKind::WouldBlock);
    assert!(!t.wait(Interest::Write, Duration::ZERO).unwrap());
}

#[test]
fn sendfile_sends_a_files_bytes_and_says_when_the_file_ends() {
    let (t, mut peer) = unix_pair();
    let path = std::env::temp_dir().join(format!("ferrule-transport-{}", std::process::id()));
    std::fs::write(&path, b"0123456789").unwrap();
    let file = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    use std::os::fd::AsRawFd;
    let mut off = 2;
    assert_eq!(
        t.sendfile(file.as_raw_fd(), &mut off, 5).unwrap(),
        Sendfile::Sent(5)
    );
    assert_eq!(off, 7);
    assert_eq!(
        t.sendfile(file.as_raw_fd(), &mut off, 100).unwrap(),
        Sendfile::Sent(3)
    );
    assert_eq!(
        t.sendfile(file.as_raw_fd(), &mut off, 100).unwrap(),
        Sendfile::Sent(0)
    );
    let mut got = [0u8; 8];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"23456789");
}

#[test]
fn only_tcp_can_cork_and_shutting_the_writing_side_ends_the_peers_stream() {
    let (unix, _peer) = unix_pair();
    assert_eq!(unix.cork_handle(), None);
    unix.set_cork(true); // a no-op, not an error
    let (mut tcp, mut peer) = tcp_pair();
    assert_eq!(tcp.cork_handle(), Some(tcp.raw_fd()));
    tcp.set_cork(true);
    tcp.set_cork(false);
    super::uncork(tcp.raw_fd());
    tcp.shut_write().unwrap();
    let mut rest = Vec::new();
    peer.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn the_timeouts_answer_goes_out_and_ends_the_writing_side() {
    let (t, mut peer) = tcp_pair();
    super::send_and_shut(t.raw_fd(), b"HTTP/1.1 500 Internal Server Error\r\n\r\n");
    let mut got = Vec::new();
    peer.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"HTTP/1.1 500 Internal Server Error\r\n\r\n");
}
