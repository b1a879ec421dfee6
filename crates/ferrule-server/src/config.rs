//! Server settings, parsed once into typed values by the front end.

use crate::protocol::Protocol;
use crate::tls_settings::TlsSettings;
use ferrule_http::{ParserConfig, ProxyMode, SchemeHeaders};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Tcp(SocketAddr),
    Unix(PathBuf),
    /// A listening socket this process inherited (`fd://N`: systemd, or the master).
    Fd(i32),
}

impl std::fmt::Display for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bind::Tcp(a) => write!(f, "http://{a}"),
            Bind::Unix(p) => write!(f, "unix:{}", p.display()),
            Bind::Fd(n) => write!(f, "fd://{n}"),
        }
    }
}

/// Parses gunicorn's bind syntax: `HOST:PORT`, `HOST` (port 8000), `:PORT`,
/// `[::1]:PORT`, `tcp://HOST:PORT`, `unix:PATH`, `unix://PATH`. Host names are
/// resolved; each address found is bound.
pub fn parse_bind(s: &str) -> Result<Vec<Bind>, String> {
    if let Some(path) = s
        .strip_prefix("unix://")
        .or_else(|| s.strip_prefix("unix:"))
    {
        if path.is_empty() {
            return Err(format!("bind {s:?}: unix: needs a path"));
        }
        return Ok(vec![Bind::Unix(PathBuf::from(path))]);
    }
    if let Some(n) = s.strip_prefix("fd://") {
        return match n.parse::<i32>() {
            Ok(n) if n >= 0 => Ok(vec![Bind::Fd(n)]),
            _ => Err(format!("bind {s:?}: fd:// needs a descriptor number")),
        };
    }
    let addr = s.strip_prefix("tcp://").unwrap_or(s);
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("bind {s:?}: missing ']'"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p,
            None if after.is_empty() => "8000",
            None => return Err(format!("bind {s:?}: expected ':PORT' after ']'")),
        };
        (h, port)
    } else {
        match addr.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (addr, "8000"),
        }
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("bind {s:?}: port {port:?} is not a number from 0 to 65535"))?;
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![Bind::Tcp(SocketAddr::new(ip, port))]);
    }
    let addrs: Vec<Bind> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("bind {s:?}: cannot resolve {host:?}: {e}"))?
        .map(Bind::Tcp)
        .collect();
    if addrs.is_empty() {
        return Err(format!("bind {s:?}: {host:?} has no address"));
    }
    Ok(addrs)
}

/// Which peers a setting trusts: addresses and networks, as gunicorn 27's
/// `--forwarded-allow-ips` (who may set `wsgi.url_scheme` through `X-Forwarded-Proto`
/// and friends) and `--proxy-allow-from` (who must send a PROXY header). Errors do not
/// name the setting: the caller adds its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowIps {
    Any,
    List(Vec<Net>),
}

/// An address and a prefix length: `10.0.0.0/8`, or `10.1.2.3` (a /32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// Parses `ADDR` or `ADDR/LEN`. Like Python's `ip_network` (strict), bits set
    /// past the prefix are an error: `10.0.0.1/8` is a typo for an address or a network.
    pub fn parse(s: &str) -> Result<Net, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0 to {max}"))?,
        };
        let net = Net { addr, prefix };
        if bits(addr) & !net.mask() != 0 {
            return Err(format!(
                "{s:?} has host bits set (a network is written like 10.0.0.0/8)"
            ));
        }
        Ok(net)
    }

    fn mask(&self) -> u128 {
        let width = if self.addr.is_ipv4() { 32 } else { 128 };
        let ones = u128::MAX
            .checked_shl(width - u32::from(self.prefix))
            .unwrap_or(0);
        ones & (u128::MAX >> (128 - width))
    }

    /// An IPv4-mapped IPv6 peer (`::ffff:10.0.0.1`, a dual-stack listener) is
    /// matched in its IPv4 form.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && bits(ip) & self.mask() == bits(self.addr)
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl AllowIps {
    pub fn parse(s: &str) -> Result<AllowIps, String> {
        let items: Vec<&str> = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if items.contains(&"*") {
            return Ok(AllowIps::Any);
        }
        items
            .into_iter()
            .map(Net::parse)
            .collect::<Result<_, _>>()
            .map(AllowIps::List)
    }

    /// Unix-socket peers (`None`) are local, so they are trusted like 127.0.0.1.
    pub fn allows(&self, peer: Option<IpAddr>) -> bool {
        match (self, peer) {
            (AllowIps::Any, _) | (_, None) => true,
            (AllowIps::List(l), Some(ip)) => l.iter().any(|n| n.contains(ip)),
        }
    }
}

/// gunicorn's default for `--forwarded-allow-ips`: the local host.
pub const DEFAULT_FORWARDED_ALLOW_IPS: &str = "127.0.0.1,::1";

/// gunicorn's default for `--proxy-allow-from`: the local host.
pub const DEFAULT_PROXY_ALLOW_IPS: &str = "127.0.0.1,::1";
/// `--forwarded-remote-addr`: the list that names the client, if any. One list, named by
/// the operator: a proxy that does not write a list passes the client's own through, so
/// "whichever is present" would let clients choose their address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RemoteAddrFrom {
    /// REMOTE_ADDR is the peer (or the PROXY protocol's client): gunicorn's behaviour.
    #[default]
    Off,
    XForwardedFor,
    Forwarded,
}

impl RemoteAddrFrom {
    pub fn name(self) -> &'static str {
        match self {
            RemoteAddrFrom::Off => "off",
            RemoteAddrFrom::XForwardedFor => "x-forwarded-for",
            RemoteAddrFrom::Forwarded => "forwarded",
        }
    }
}

impl FromStr for RemoteAddrFrom {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(RemoteAddrFrom::Off),
            "x-forwarded-for" => Ok(RemoteAddrFrom::XForwardedFor),
            "forwarded" => Ok(RemoteAddrFrom::Forwarded),
            _ => Err(format!(
                "forwarded-remote-addr: must be off, x-forwarded-for or forwarded (got {s:?})"
            )),
        }
    }
}
/// The default of `--uwsgi-allow-from`: the local host (nginx on the same machine).
pub const DEFAULT_UWSGI_ALLOW_IPS: &str = "127.0.0.1,::1";

/// Everything the server needs. `Default` is the one place each setting's default is
/// written: the Python front end reads them through `_ferrule.defaults()`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub binds: Vec<Bind>,
    pub backlog: i32,
    /// SO_REUSEPORT on TCP listeners (`--reuse-port`).
    pub reuse_port: bool,
    /// Most threads running the app at once; they are started only as needed (`sched.rs`).
    pub threads: usize,
    /// How long an idle keep-alive connection is kept.
    pub keep_alive: Duration,
    /// How long a client may take to send a whole request head.
    pub header_timeout: Duration,
    /// How long a read of the body or a write of the response may wait.
    pub io_timeout: Duration,
    /// Most bytes of a complete answer the server keeps and writes itself when the
    /// client reads slowly, so the app's thread is free at once; 0: the thread writes.
    pub response_buffer_size: usize,
    /// How long shutdown waits for requests in flight.
    pub graceful_timeout: Duration,
    pub parser: ParserConfig,
    pub forwarded_allow_ips: AllowIps,
    /// Value of `SCRIPT_NAME` (from the environment at start-up), stripped from paths.
    pub script_name: String,
    /// Reported in `wsgi.multiprocess`.
    pub workers: usize,
    /// Read a request's body before the app runs (`--request-buffering`, `preread.rs`).
    pub request_buffering: bool,
    /// Bodies up to this many bytes are held in memory; larger ones go to a file.
    pub request_buffer_size: usize,
    /// Where those files go; `None`: `$TMPDIR`, else `/tmp`.
    pub request_buffer_dir: Option<PathBuf>,
    /// The PROXY header versions a connection from `proxy_allow_ips` must start with
    /// (`--proxy-protocol`, `preamble.rs`); `None`: off, every connection's bytes go
    /// straight to its protocol's driver.
    pub proxy_protocol: Option<ProxyMode>,
    /// The socket peers that must send a PROXY header (`--proxy-allow-from`); others are
    /// served as they come, and refused if they send one.
    pub proxy_allow_ips: AllowIps,
    // Trusted proxies' headers (`forwarding.rs`), for `forwarded_allow_ips` peers.
    /// gunicorn's `secure_scheme_headers`; empty: no header (nor `Forwarded: proto`)
    /// sets the scheme.
    pub secure_scheme_headers: SchemeHeaders,
    /// `--forwarded-remote-addr`: the list that sets REMOTE_ADDR, if any.
    pub forwarded_remote_addr: RemoteAddrFrom,
    /// What every bind speaks (`--protocol`, gunicorn's meaning).
    pub protocol: Protocol,
    /// TCP peers that may send uwsgi requests (`--uwsgi-allow-from`); a unix-socket
    /// peer always may (the socket file's permissions say who).
    pub uwsgi_allow_ips: AllowIps,
    /// TLS on every bind (`--certfile`/`--keyfile`, gunicorn's meaning); `None`: plain.
    pub tls: Option<TlsSettings>,
}

impl ServerConfig {
    /// The directory for request bodies larger than `request_buffer_size`.
    pub(crate) fn temp_dir(&self) -> PathBuf {
        self.request_buffer_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            binds: vec![Bind::Tcp(SocketAddr::from(([127, 0, 0, 1], 8000)))],
            backlog: 2048,
            reuse_port: false,
            threads: 512,
            keep_alive: Duration::from_secs(75),
            header_timeout: Duration::from_secs(30),
            io_timeout: Duration::from_secs(30),
            response_buffer_size: 1 << 20,
            graceful_timeout: Duration::from_secs(30),
            parser: ParserConfig::default(),
            forwarded_allow_ips: AllowIps::parse(DEFAULT_FORWARDED_ALLOW_IPS).expect("literal"),
            script_name: String::new(),
            workers: 1,
            request_buffering: true,
            request_buffer_size: 1 << 20,
            request_buffer_dir: None,
            proxy_protocol: None,
            proxy_allow_ips: AllowIps::parse(DEFAULT_PROXY_ALLOW_IPS).expect("literal"),
            secure_scheme_headers: SchemeHeaders::default(),
            forwarded_remote_addr: RemoteAddrFrom::Off,
            protocol: Protocol::Http1,
            uwsgi_allow_ips: AllowIps::parse(DEFAULT_UWSGI_ALLOW_IPS).expect("literal"),
            tls: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds() {
        let tcp = |s: &str| match parse_bind(s).unwrap().as_slice() {
            [Bind::Tcp(a)] => a.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(tcp("127.0.0.1:9000"), "127.0.0.1:9000");
        assert_eq!(tcp("[::1]:9000"), "[::1]:9000");
        assert_eq!(tcp(":9000"), "0.0.0.0:9000");
        assert_eq!(tcp("127.0.0.1"), "127.0.0.1:8000");
        assert_eq!(tcp("tcp://127.0.0.1:9000"), "127.0.0.1:9000");
        assert_eq!(tcp("tcp://[::1]:9000"), "[::1]:9000");
        assert_eq!(tcp("tcp://127.0.0.1"), "127.0.0.1:8000");
        assert_eq!(
            parse_bind("unix:///tmp/x.sock").unwrap(),
            vec![Bind::Unix("/tmp/x.sock".into())]
        );
        assert!(parse_bind("unix://").is_err());
        assert_eq!(
            parse_bind("unix:/tmp/x.sock").unwrap(),
            vec![Bind::Unix("/tmp/x.sock".into())]
        );
        assert!(parse_bind("localhost:http").is_err());
        assert!(parse_bind("[::1:80").is_err());
        assert!(parse_bind("unix:").is_err());
        assert_eq!(parse_bind("fd://3").unwrap(), vec![Bind::Fd(3)]);
        assert!(parse_bind("fd://x").is_err());
        assert!(!parse_bind("localhost:0").unwrap().is_empty());
    }

    #[test]
    fn allow_ips() {
        // (list, peer, trusted)
        let table: &[(&str, &str, bool)] = &[
            ("127.0.0.1, ::1", "127.0.0.1", true),
            ("127.0.0.1, ::1", "::1", true),
            ("127.0.0.1, ::1", "10.0.0.1", false),
            // An exact address means exactly that address, loopback or not.
            ("127.0.0.1", "127.0.0.2", false),
            ("127.0.0.2", "127.0.0.1", false),
            ("::1", "127.0.0.1", false),
            ("127.0.0.1", "::1", false),
            // A dual-stack listener sees IPv4 peers as IPv4-mapped IPv6.
            ("127.0.0.1", "::ffff:127.0.0.1", true),
            ("10.0.0.0/8", "::ffff:10.9.8.7", true),
            ("10.0.0.0/8", "10.255.255.255", true),
            ("10.0.0.0/8", "11.0.0.0", false),
            ("192.168.1.0/24", "192.168.1.77", true),
            ("192.168.1.0/24", "192.168.2.1", false),
            ("fd00::/8", "fd12:3456::1", true),
            ("fd00::/8", "fe80::1", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("::/0", "2001:db8::1", true),
            ("10.0.0.1/32", "10.0.0.1", true),
            ("10.0.0.1/32", "10.0.0.2", false),
            ("2001:db8::/32, 10.0.0.0/8", "2001:db8:1::5", true),
            ("*", "203.0.113.9", true),
            ("10.0.0.1, *", "203.0.113.9", true),
            ("", "127.0.0.1", false),
        ];
        for (list, peer, want) in table {
            let allow = AllowIps::parse(list).unwrap();
            let got = allow.allows(Some(peer.parse().unwrap()));
            assert_eq!(got, *want, "{list:?} trusts {peer}?");
        }
        assert!(AllowIps::parse("10.0.0.1").unwrap().allows(None));
        for bad in [
            "nope",
            "10.0.0.1/8",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0.0/x",
            "10.0.0.0/",
            "fd00::1/8",
        ] {
            assert!(AllowIps::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
