//! Server settings, parsed once into typed values by the front end.

use ferrule_http::ParserConfig;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
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
/// `[::1]:PORT`, `unix:PATH`. Host names are resolved; each address found is bound.
pub fn parse_bind(s: &str) -> Result<Vec<Bind>, String> {
    if let Some(path) = s.strip_prefix("unix:") {
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
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
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
        match s.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (s, "8000"),
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

/// Which peers may set `wsgi.url_scheme` through `X-Forwarded-Proto` and friends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowIps {
    Any,
    List(Vec<IpAddr>),
}

impl AllowIps {
    pub fn parse(s: &str) -> Result<AllowIps, String> {
        if s.trim() == "*" {
            return Ok(AllowIps::Any);
        }
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<IpAddr>()
                    .map_err(|_| format!("forwarded-allow-ips: {p:?} is not an IP address"))
            })
            .collect::<Result<_, _>>()
            .map(AllowIps::List)
    }

    /// Unix-socket peers are local, so they are trusted like 127.0.0.1.
    pub fn allows(&self, peer: Option<IpAddr>) -> bool {
        match (self, peer) {
            (AllowIps::Any, _) | (_, None) => true,
            (AllowIps::List(l), Some(ip)) => {
                l.contains(&ip)
                    || ip.to_canonical().is_loopback() && l.iter().any(|a| a.is_loopback())
            }
        }
    }
}

/// Everything the server needs, with the defaults documented in the README.
#[derive(Debug, Clone)]
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
    /// How long shutdown waits for requests in flight.
    pub graceful_timeout: Duration,
    pub parser: ParserConfig,
    pub forwarded_allow_ips: AllowIps,
    /// Value of `SCRIPT_NAME` (from the environment at start-up), stripped from paths.
    pub script_name: String,
    /// Reported in `wsgi.multiprocess`.
    pub workers: usize,
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
            graceful_timeout: Duration::from_secs(30),
            parser: ParserConfig::default(),
            forwarded_allow_ips: AllowIps::List(vec![
                [127, 0, 0, 1].into(),
                "::1".parse().expect("literal"),
            ]),
            script_name: String::new(),
            workers: 1,
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
        let a = AllowIps::parse("127.0.0.1, ::1").unwrap();
        assert!(a.allows(Some("127.0.0.1".parse().unwrap())));
        assert!(!a.allows(Some("10.0.0.1".parse().unwrap())));
        assert!(a.allows(None));
        assert!(AllowIps::parse("*")
            .unwrap()
            .allows(Some("10.0.0.1".parse().unwrap())));
        assert!(AllowIps::parse("nope").is_err());
    }
}
