//! The sender thread's connection to the syslog server, and its loop.
//!
//! A stream (TCP, unix stream) that fails is closed and made again after a back-off
//! (0.1 s, doubling to [`BACKOFF_MAX`]); the line it was sending is sent on the new
//! connection, and lines wait in the queue meanwhile. A datagram that cannot be sent
//! is dropped and counted (UDP has no delivery to wait for), and the socket is made
//! again for the next line.

use super::addr::{SyslogAddr, UnixKind};
use super::frame::{frame, Framing, Origin};
use super::queue::{Queue, CAPACITY};
use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::Arc;
use std::time::Duration;

pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A TCP connect or a write that takes longer fails (and the stream is made again).
const STREAM_TIMEOUT: Duration = Duration::from_secs(5);

enum Socket {
    Udp(UdpSocket),
    Tcp(TcpStream),
    UnixDgram(UnixDatagram),
    UnixStream(UnixStream),
}

impl Socket {
    fn framing(&self) -> Framing {
        match self {
            Socket::Udp(_) | Socket::UnixDgram(_) => Framing::Datagram,
            Socket::Tcp(_) => Framing::OctetCounted,
            Socket::UnixStream(_) => Framing::NulTerminated,
        }
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Socket::Udp(s) => s.send(bytes).map(drop),
            Socket::UnixDgram(s) => s.send(bytes).map(drop),
            Socket::Tcp(s) => s.write_all(bytes),
            Socket::UnixStream(s) => s.write_all(bytes),
        }
    }
}

/// Makes the socket for `addr` (names resolved at each attempt).
fn connect(addr: &SyslogAddr) -> io::Result<Socket> {
    match addr {
        SyslogAddr::Udp { host, port } => {
            let mut last = None;
            for a in (host.as_str(), *port).to_socket_addrs()? {
                let local = match a {
                    std::net::SocketAddr::V4(_) => "0.0.0.0:0",
                    std::net::SocketAddr::V6(_) => "[::]:0",
                };
                // Connected once, so each line is a plain send(2) with no address.
                match UdpSocket::bind(local).and_then(|s| s.connect(a).map(|()| s)) {
                    Ok(s) => return Ok(Socket::Udp(s)),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| no_address(host)))
        }
        SyslogAddr::Tcp { host, port } => {
            let mut last = None;
            for a in (host.as_str(), *port).to_socket_addrs()? {
                match TcpStream::connect_timeout(&a, STREAM_TIMEOUT) {
                    Ok(s) => {
                        s.set_write_timeout(Some(STREAM_TIMEOUT))?;
                        s.set_nodelay(true)?;
                        return Ok(Socket::Tcp(s));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| no_address(host)))
        }
        SyslogAddr::Unix { path, kind } => {
            let dgram = || {
                let s = UnixDatagram::unbound()?;
                s.connect(path)?;
                Ok(Socket::UnixDgram(s))
            };
            let stream = || {
                let s = UnixStream::connect(path)?;
                s.set_write_timeout(Some(STREAM_TIMEOUT))?;
                Ok(Socket::UnixStream(s))
            };
            match kind {
                UnixKind::Dgram => dgram(),
                UnixKind::Stream => stream(),
                UnixKind::Either => dgram().or_else(|_: io::Error| stream()),
            }
        }
    }
}

fn no_address(host: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))
}

/// The sender thread: takes lines from `queue` and sends them to `addr`, forever (the
/// process ends it).
pub fn run(queue: Arc<Queue>, addr: SyslogAddr, origin: Origin) {
    let mut socket: Option<Socket> = None;
    let mut backoff = BACKOFF_MIN;
    // Whether the error log says the server cannot be reached (once per outage).
    let mut unreachable = false;
    loop {
        let entry = queue.take();
        let msg = origin.message(entry.stream, entry.severity, entry.time, &entry.msg);
        loop {
            let sock = match socket.as_mut() {
                Some(s) => s,
                None => match connect(&addr) {
                    Ok(s) => {
                        backoff = BACKOFF_MIN;
                        if std::mem::take(&mut unreachable) {
                            tracing::info!("syslog: connected to {addr} again");
                        }
                        socket.insert(s)
                    }
                    Err(e) => {
                        if !std::mem::replace(&mut unreachable, true) {
                            tracing::warn!(
                                "syslog: cannot connect to {addr} ({e}); lines wait in a queue of \
                                 {CAPACITY} and the connection is retried"
                            );
                        }
                        queue.pause(format!("{addr}: {e}"), backoff);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                },
            };
            let framing = sock.framing();
            match sock.send(&frame(framing, msg.clone())) {
                Ok(()) => break,
                Err(e) => {
                    socket = None;
                    if framing == Framing::Datagram {
                        queue.lost(format!("{addr}: {e}"));
                        break;
                    }
                    // A stream: the line goes on the next connection.
                    queue.pause(format!("{addr}: {e}"), backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        queue.done();
    }
}
