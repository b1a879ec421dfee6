//! Listening sockets, TCP or Unix, and the addresses of both ends. What they accept
//! is a [`Transport`] (`transport.rs`).

use crate::config::Bind;
use crate::protocol::Protocol;
use crate::sys;
use crate::transport::Transport;
use socket2::{Domain, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// A listening socket and the protocol its connections speak.
pub struct Listener {
    socket: Bound,
    protocol: Protocol,
    /// Its connections start with a TLS handshake (`handshake.rs`).
    tls: bool,
}

/// The socket itself.
enum Bound {
    Tcp(TcpListener),
    /// The path, and whether this process created it (and so removes it).
    Unix(UnixListener, PathBuf, bool),
}

/// Why a bind failed, worded for the person starting the server.
#[derive(Debug)]
pub struct BindError {
    pub bind: Bind,
    pub cause: io::Error,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.cause.kind() {
            io::ErrorKind::AddrInUse => write!(
                f,
                "cannot listen at {}: address already in use (is another server running?)",
                self.bind
            ),
            io::ErrorKind::PermissionDenied => {
                write!(f, "cannot listen at {}: permission denied", self.bind)
            }
            _ => write!(f, "cannot listen at {}: {}", self.bind, self.cause),
        }
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

impl Listener {
    /// Binds `bind` for HTTP/1 (see [`Listener::speaking`]). An IPv6 address keeps the
    /// system's dual-stack default (Linux: `[::]` takes IPv4 too, as gunicorn's does).
    pub fn bind(bind: &Bind, backlog: i32, reuse_port: bool) -> Result<Listener, BindError> {
        Listener::bind_v6_only(bind, backlog, reuse_port, false)
    }

    /// As [`Listener::bind`]; `v6_only` makes an IPv6 socket refuse IPv4, so that an
    /// IPv4 bind of the same port beside it does not collide with it.
    fn bind_v6_only(
        bind: &Bind,
        backlog: i32,
        reuse_port: bool,
        v6_only: bool,
    ) -> Result<Listener, BindError> {
        Ok(Listener {
            socket: Bound::bind(bind, backlog, reuse_port, v6_only)?,
            protocol: Protocol::Http1,
            tls: false,
        })
    }

    /// The listener, its connections speaking `protocol`.
    pub fn speaking(self, protocol: Protocol) -> Listener {
        Listener { protocol, ..self }
    }

    /// The listener, its connections starting with a TLS handshake when `tls`.
    pub fn with_tls(self, tls: bool) -> Listener {
        Listener { tls, ..self }
    }
}

impl Bound {
    fn bind(
        bind: &Bind,
        backlog: i32,
        reuse_port: bool,
        v6_only: bool,
    ) -> Result<Bound, BindError> {
        let err = |cause| BindError {
            bind: bind.clone(),
            cause,
        };
        match bind {
            Bind::Tcp(addr) => {
                let sock =
                    Socket::new(Domain::for_address(*addr), Type::STREAM, None).map_err(err)?;
                sock.set_reuse_address(true).map_err(err)?;
                if reuse_port {
                    sock.set_reuse_port(true).map_err(err)?;
                }
                if addr.is_ipv6() && v6_only {
                    sock.set_only_v6(true).map_err(err)?;
                }
                sock.bind(&(*addr).into()).map_err(err)?;
                sock.listen(backlog).map_err(err)?;
                sock.set_nonblocking(true).map_err(err)?;
                tune_tcp(&sock).map_err(err)?;
                Ok(Bound::Tcp(sock.into()))
            }
            Bind::Unix(path) => {
                clear_stale_socket(path).map_err(err)?;
                let l = UnixListener::bind(path).map_err(err)?;
                l.set_nonblocking(true).map_err(err)?;
                Ok(Bound::Unix(l, path.clone(), true))
            }
            Bind::Fd(n) => {
                let sock = sys::inherited_listener(*n).map_err(err)?;
                sock.set_nonblocking(true).map_err(err)?;
                match sock.local_addr().map_err(err)?.as_socket() {
                    Some(_) => {
                        tune_tcp(&sock).map_err(err)?;
                        Ok(Bound::Tcp(sock.into()))
                    }
                    None => {
                        let l: UnixListener = sock.into();
                        let path = l
                            .local_addr()
                            .ok()
                            .and_then(|a| a.as_pathname().map(PathBuf::from))
                            .unwrap_or_default();
                        // Whoever created the socket file removes it.
                        Ok(Bound::Unix(l, path, false))
                    }
                }
            }
        }
    }
}

impl Listener {
    /// Gives up the socket without closing it, for a process that binds for others
    /// (the master binds, workers inherit the descriptor).
    pub fn into_raw_fd(self) -> i32 {
        use std::os::fd::AsRawFd;
        let fd = self.fd().as_raw_fd();
        std::mem::forget(self);
        fd
    }

    /// Accepts one connection, or `WouldBlock`. `accept4` makes the stream
    /// non-blocking, and it inherits `TCP_NODELAY` from the listener (`tune_tcp`):
    /// a new connection costs one system call here, not three.
    pub fn accept(&self) -> io::Result<(Transport, Peer)> {
        const FLAGS: i32 = nix::libc::SOCK_NONBLOCK | nix::libc::SOCK_CLOEXEC;
        let (sock, addr) = socket2::SockRef::from(&self.fd()).accept4(FLAGS)?;
        match self.socket {
            Bound::Tcp(_) => match addr.as_socket() {
                Some(addr) => Ok((Transport::Tcp(sock.into()), Peer::Tcp(addr))),
                None => Err(io::Error::other("a TCP listener accepted a non-IP peer")),
            },
            Bound::Unix(..) => Ok((Transport::Unix(sock.into()), Peer::Unix)),
        }
    }

    /// The address clients reach (with the real port when 0 was asked for).
    pub fn local(&self) -> Local {
        match &self.socket {
            Bound::Tcp(l) => match l.local_addr() {
                Ok(a) => Local::Tcp(a),
                Err(_) => Local::Unix(PathBuf::new()),
            },
            Bound::Unix(_, p, _) => Local::Unix(p.clone()),
        }
    }

    /// The protocol its connections speak (`--protocol`, the same for every bind).
    #[inline]
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Whether its connections speak TLS (a certificate, and a bind that is not `http://`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Whether the connections it accepts keep the kernel's receive times of their
    /// bytes (`sys::receive_time`; TCP only: a unix stream socket has none).
    pub fn stamp_receipts(&self, on: bool) -> io::Result<()> {
        match &self.socket {
            Bound::Tcp(l) => crate::sys::set_receive_times(l.as_fd(), on),
            Bound::Unix(..) => Ok(()),
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        match &self.socket {
            Bound::Tcp(l) => l.as_fd(),
            Bound::Unix(l, _, _) => l.as_fd(),
        }
    }
}

/// Makes way for a unix socket at `path`. A socket file left by a server that is
/// gone would make bind fail: a socket nobody listens on (connect is refused) is
/// removed. Anything else stays: a socket a live server answers on is "address
/// already in use", and a path that is not a socket (a file, a directory, a symbolic
/// link) is an error naming what it is, as gunicorn refuses one.
fn clear_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let kind = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta.file_type(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !kind.is_socket() {
        let what = match kind {
            k if k.is_dir() => "a directory",
            k if k.is_symlink() => "a symbolic link",
            k if k.is_file() => "a regular file",
            _ => "a special file",
        };
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "the path is {what}, not a socket; ferrule replaces only a stale socket \
                 (remove it or choose another path)"
            ),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(io::ErrorKind::AddrInUse.into()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        // Permission denied and the like: bind would fail the same way, and says so.
        Err(_) => Ok(()),
    }
}

/// Options of a TCP listener (inherited ones too: the master's, systemd's).
/// `TCP_NODELAY` is inherited by accepted sockets, so no connection pays a
/// `setsockopt` of its own. `TCP_DEFER_ACCEPT` (nginx's `deferred`, uWSGI's default)
/// reports a connection once its request has arrived, so the accepting thread reads it
/// at once instead of registering the socket and waiting for it in epoll; a client
/// that sends nothing is handed over after about a second and then gets the head's
/// deadline as before.
fn tune_tcp(sock: &Socket) -> io::Result<()> {
    sock.set_nodelay(true)?;
    sys::set_defer_accept(sock.as_fd(), 1)
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Bound::Unix(_, path, true) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    Unix,
}

impl Peer {
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Peer::Tcp(a) => Some(a.ip().to_canonical()),
            Peer::Unix => None,
        }
    }
}

/// As log lines show a peer: its address without the port (as gunicorn's do), or `unix`.
impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip() {
            Some(ip) => write!(f, "{ip}"),
            None => f.write_str("unix"),
        }
    }
}

/// The server's address a connection arrived at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Shown in logs as the bind it came from is: `http://ADDR` or `unix:PATH`.
impl std::fmt::Display for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Local::Tcp(a) => write!(f, "http://{a}"),
            Local::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Local {
    /// The "Listening at" form: `https://ADDR` for a TLS listener on TCP, `http://ADDR`
    /// beside it for a plain one. A unix socket stays `unix:PATH` either way (what
    /// the master reads back to remove the file on exit).
    pub fn url(&self, tls: bool) -> String {
        match self {
            Local::Tcp(a) if tls => format!("https://{a}"),
            _ => self.to_string(),
        }
    }
}

/// Binds every address of `config` (for a server, or for a master whose workers
/// inherit the sockets).
pub fn bind_all(config: &crate::config::ServerConfig) -> Result<Vec<Listener>, BindError> {
    config
        .binds
        .iter()
        .map(|b| {
            let v6_only = beside_ipv4(&b.bind, config.binds.iter().map(|e| &e.bind));
            Listener::bind_v6_only(&b.bind, config.backlog, config.reuse_port, v6_only).map(|l| {
                l.speaking(config.protocol)
                    .with_tls(config.tls.is_some() && b.tls.wanted(true))
            })
        })
        .collect()
}

/// Whether `bind` is IPv6 and an IPv4 address of the same port is bound too
/// (`-b 0.0.0.0:80 -b [::]:80`): then the IPv6 socket must be IPv6-only, or the two
/// collide (gunicorn fails there with "Connection in use").
fn beside_ipv4<'a>(bind: &Bind, all: impl Iterator<Item = &'a Bind>) -> bool {
    let Bind::Tcp(addr) = bind else { return false };
    addr.is_ipv6()
        && addr.port() != 0
        && all
            .into_iter()
            .any(|other| matches!(other, Bind::Tcp(o) if o.is_ipv4() && o.port() == addr.port()))
}

#[cfg(test)]
mod tests {
    use super::{Listener, Peer};
    use crate::config::Bind;
    use crate::transport::Transport;
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    fn listen() -> (Listener, std::net::SocketAddr) {
        let l = Listener::bind(&Bind::Tcp("127.0.0.1:0".parse().unwrap()), 16, false).unwrap();
        let super::Local::Tcp(addr) = l.local() else {
            panic!("not TCP")
        };
        (l, addr)
    }

    /// Waits up to `limit` for the listener to report a connection, and accepts it.
    fn accept_within(l: &Listener, limit: Duration) -> Option<(Transport, Peer)> {
        match crate::sys::wait_ready(l.fd(), crate::sys::Interest::Read, limit) {
            Ok(true) => Some(l.accept().unwrap()),
            Ok(false) => None,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_tcp_connection_is_accepted_once_its_first_bytes_arrive() {
        let (l, addr) = listen();
        let mut client = TcpStream::connect(addr).unwrap();
        assert!(
            accept_within(&l, Duration::from_millis(200)).is_none(),
            "accepted before it sent anything"
        );
        client.write_all(b"GET").unwrap();
        let (stream, peer) = accept_within(&l, Duration::from_secs(2)).expect("not accepted");
        assert_eq!(peer, Peer::Tcp(client.local_addr().unwrap()));
        let Transport::Tcp(mut s) = stream else {
            panic!("not TCP")
        };
        assert!(s.nodelay().unwrap(), "TCP_NODELAY not inherited");
        let mut buf = [0u8; 8];
        assert_eq!(s.read(&mut buf).unwrap(), 3);
        let again = s.read(&mut buf).unwrap_err();
        assert_eq!(again.kind(), ErrorKind::WouldBlock, "accepted blocking");
    }

    fn unix_bind(path: &std::path::Path) -> Result<Listener, super::BindError> {
        Listener::bind(&Bind::Unix(path.to_path_buf()), 16, false)
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ferrule-listener-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_stale_unix_socket_is_replaced() {
        let dir = scratch("stale");
        let path = dir.join("s.sock");
        // A listener whose process is gone: the file stays, connect is refused.
        let gone = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(gone);
        assert!(path.exists());
        let l = unix_bind(&path).expect("a stale socket was not replaced");
        std::os::unix::net::UnixStream::connect(&path).expect("not listening");
        drop(l);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_live_unix_socket_is_address_in_use() {
        let dir = scratch("live");
        let path = dir.join("s.sock");
        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let e = unix_bind(&path).err().expect("bound over a live server");
        assert_eq!(e.cause.kind(), ErrorKind::AddrInUse);
        assert!(e.to_string().contains("address already in use"), "{e}");
        std::os::unix::net::UnixStream::connect(&path).expect("the live server lost its socket");
        drop(live);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_path_that_is_not_a_socket_is_left_alone() {
        let dir = scratch("other");
        let file = dir.join("data.txt");
        std::fs::write(&file, b"precious").unwrap();
        let sub = dir.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        for (path, what) in [
            (&file, "a regular file"),
            (&sub, "a directory"),
            (&link, "a symbolic link"),
        ] {
            let e = unix_bind(path).err().expect("bound over a non-socket");
            let text = e.to_string();
            assert!(
                text.contains(what) && text.contains(&path.display().to_string()),
                "{text}"
            );
            assert!(!text.contains('\n'), "{text}");
        }
        assert_eq!(std::fs::read(&file).unwrap(), b"precious");
        assert!(sub.is_dir() && link.is_symlink());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_ipv6_bind_is_ipv6_only_just_when_ipv4_has_its_port() {
        let tcp = |a: &str| Bind::Tcp(a.parse().unwrap());
        let v4 = tcp("0.0.0.0:8000");
        let v6 = tcp("[::]:8000");
        let other_port = tcp("0.0.0.0:8001");
        let unix = Bind::Unix("/tmp/x.sock".into());
        assert!(super::beside_ipv4(&v6, [&v4, &v6].into_iter()));
        assert!(!super::beside_ipv4(
            &v6,
            [&v6, &other_port, &unix].into_iter()
        ));
        assert!(!super::beside_ipv4(&v4, [&v4, &v6].into_iter()));
        // Port 0 is a different port for every socket.
        let any6 = tcp("[::]:0");
        assert!(!super::beside_ipv4(
            &any6,
            [&tcp("0.0.0.0:0"), &any6].into_iter()
        ));
    }
}
