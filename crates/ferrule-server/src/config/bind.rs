//! `--bind`: gunicorn's address syntax, and beyond gunicorn a scheme that says whether a
//! bind speaks TLS, so one server can have a plain health-check port beside its TLS one.
//!
//! | written | address | TLS |
//! |---|---|---|
//! | `HOST:PORT`, `tcp://HOST:PORT`, `unix:PATH`, `fd://N` | as gunicorn | with `--certfile` (gunicorn: every bind) |
//! | `https://HOST:PORT`, `https+unix:PATH`, `https+fd://N` | the same | always (needs `--certfile`) |
//! | `http://HOST:PORT`, `http+unix:PATH`, `http+fd://N` | the same | never, even with `--certfile` |
//!
//! `https://` and `http://` are what a URL says (Granian's and uvicorn's users read their
//! servers' "Listening at" lines this way); `http+unix` is the scheme requests-unixsocket
//! and Docker's clients use for HTTP over a unix socket.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

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

/// Whether a bind speaks TLS, as its scheme says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BindTls {
    /// No scheme: TLS when `--certfile` is given (gunicorn's meaning).
    #[default]
    WithCertfile,
    /// `http://`, `http+unix:`, `http+fd://`.
    Plain,
    /// `https://`, `https+unix:`, `https+fd://`.
    Tls,
}

impl BindTls {
    /// Whether the bind speaks TLS, given whether a certificate is configured.
    pub fn wanted(self, certificate: bool) -> bool {
        match self {
            BindTls::WithCertfile => certificate,
            BindTls::Plain => false,
            BindTls::Tls => true,
        }
    }
}

/// A bind and whether it speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub bind: Bind,
    pub tls: BindTls,
}

impl From<Bind> for Endpoint {
    fn from(bind: Bind) -> Endpoint {
        Endpoint {
            bind,
            tls: BindTls::WithCertfile,
        }
    }
}

/// As written on the command line: `parse_bind` reads it back as the same endpoint.
impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.tls {
            BindTls::WithCertfile => {
                return match &self.bind {
                    Bind::Tcp(a) => write!(f, "{a}"),
                    other => write!(f, "{other}"),
                }
            }
            BindTls::Plain => "http",
            BindTls::Tls => "https",
        };
        match &self.bind {
            Bind::Tcp(a) => write!(f, "{scheme}://{a}"),
            other => write!(f, "{scheme}+{other}"),
        }
    }
}

/// Refuses a bind that must speak TLS when no certificate is configured.
pub fn check_tls_binds(binds: &[Endpoint], certificate: bool) -> Result<(), String> {
    match binds
        .iter()
        .find(|e| e.tls.wanted(certificate) && !certificate)
    {
        Some(e) => Err(format!(
            "bind {:?}: https needs --certfile and --keyfile (or write http:// for a plain bind)",
            e.to_string()
        )),
        None => Ok(()),
    }
}

/// Parses gunicorn's bind syntax: `HOST:PORT`, `HOST` (port 8000), `:PORT`,
/// `[::1]:PORT`, `tcp://HOST:PORT`, `unix:PATH`, `unix://PATH`, `fd://N`; and the
/// schemes above. Host names are resolved; each address found is bound.
pub fn parse_bind(s: &str) -> Result<Vec<Endpoint>, String> {
    let with = |tls: BindTls, binds: Vec<Bind>| {
        binds
            .into_iter()
            .map(|bind| Endpoint { bind, tls })
            .collect()
    };
    for (scheme, tls) in [("https", BindTls::Tls), ("http", BindTls::Plain)] {
        let Some(rest) = s.strip_prefix(scheme) else {
            continue;
        };
        if let Some(url) = rest.strip_prefix("://") {
            // A URL's trailing slash is habit, not a path.
            let addr = url.strip_suffix('/').unwrap_or(url);
            if addr.is_empty() {
                return Err(format!("bind {s:?}: {scheme}:// needs HOST:PORT"));
            }
            return Ok(with(tls, tcp_address(s, addr)?));
        }
        if let Some(inner) = rest.strip_prefix('+') {
            if !(inner.starts_with("unix:") || inner.starts_with("fd://")) {
                return Err(format!(
                    "bind {s:?}: {scheme}+ is followed by unix:PATH or fd://N"
                ));
            }
            return Ok(with(tls, address(s, inner)?));
        }
    }
    Ok(with(BindTls::WithCertfile, address(s, s)?))
}

/// `addr` without a scheme; errors quote the whole bind `s`.
fn address(s: &str, addr: &str) -> Result<Vec<Bind>, String> {
    if let Some(path) = addr
        .strip_prefix("unix://")
        .or_else(|| addr.strip_prefix("unix:"))
    {
        if path.is_empty() {
            return Err(format!("bind {s:?}: unix: needs a path"));
        }
        return Ok(vec![Bind::Unix(PathBuf::from(path))]);
    }
    if let Some(n) = addr.strip_prefix("fd://") {
        return match n.parse::<i32>() {
            Ok(n) if n >= 0 => Ok(vec![Bind::Fd(n)]),
            _ => Err(format!("bind {s:?}: fd:// needs a descriptor number")),
        };
    }
    tcp_address(s, addr.strip_prefix("tcp://").unwrap_or(addr))
}

fn tcp_address(s: &str, addr: &str) -> Result<Vec<Bind>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Endpoint {
        match parse_bind(s).unwrap().as_slice() {
            [e] => e.clone(),
            other => panic!("{s:?}: {other:?}"),
        }
    }

    #[test]
    fn gunicorn_syntax() {
        let tcp = |s: &str| match one(s) {
            Endpoint {
                bind: Bind::Tcp(a),
                tls: BindTls::WithCertfile,
            } => a.to_string(),
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
            one("unix:///tmp/x.sock"),
            Bind::Unix("/tmp/x.sock".into()).into()
        );
        assert_eq!(
            one("unix:/tmp/x.sock"),
            Bind::Unix("/tmp/x.sock".into()).into()
        );
        assert_eq!(one("fd://3"), Bind::Fd(3).into());
        for bad in ["unix://", "unix:", "localhost:http", "[::1:80", "fd://x"] {
            assert!(parse_bind(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(!parse_bind("localhost:0").unwrap().is_empty());
    }

    #[test]
    fn schemes() {
        let table: &[(&str, Bind, BindTls)] = &[
            (
                "https://0.0.0.0:8443",
                Bind::Tcp("0.0.0.0:8443".parse().unwrap()),
                BindTls::Tls,
            ),
            (
                "https://[::1]:8443/",
                Bind::Tcp("[::1]:8443".parse().unwrap()),
                BindTls::Tls,
            ),
            (
                "https://:8443",
                Bind::Tcp("0.0.0.0:8443".parse().unwrap()),
                BindTls::Tls,
            ),
            (
                "https://127.0.0.1",
                Bind::Tcp("127.0.0.1:8000".parse().unwrap()),
                BindTls::Tls,
            ),
            (
                "http://0.0.0.0:8080",
                Bind::Tcp("0.0.0.0:8080".parse().unwrap()),
                BindTls::Plain,
            ),
            (
                "https+unix:/run/app.sock",
                Bind::Unix("/run/app.sock".into()),
                BindTls::Tls,
            ),
            (
                "https+unix:///run/app.sock",
                Bind::Unix("/run/app.sock".into()),
                BindTls::Tls,
            ),
            (
                "http+unix:/run/health.sock",
                Bind::Unix("/run/health.sock".into()),
                BindTls::Plain,
            ),
            ("https+fd://3", Bind::Fd(3), BindTls::Tls),
            ("http+fd://4", Bind::Fd(4), BindTls::Plain),
        ];
        for (s, bind, tls) in table {
            let e = one(s);
            assert_eq!((&e.bind, e.tls), (bind, *tls), "{s:?}");
            // What is displayed (errors, defaults) reads back as the same endpoint.
            assert_eq!(one(&e.to_string()), e, "{s:?} shown as {e}");
        }
        assert!(parse_bind("https://localhost:0")
            .unwrap()
            .iter()
            .all(|e| e.tls == BindTls::Tls));
        for bad in [
            "https://unix:/x.sock",
            "https://fd://3",
            "https+tcp://127.0.0.1:1",
            "https+127.0.0.1:1",
            "http+unix:",
            "https://",
            "https://127.0.0.1:8443/app",
            "httpx://127.0.0.1:1",
        ] {
            let e = parse_bind(bad).expect_err(bad);
            assert!(e.starts_with(&format!("bind {bad:?}")), "{e}");
        }
    }

    #[test]
    fn tls_wanted() {
        let binds: Vec<Endpoint> = ["127.0.0.1:1", "http://127.0.0.1:2", "https+unix:/s"]
            .iter()
            .map(|s| one(s))
            .collect();
        let with_cert: Vec<bool> = binds.iter().map(|e| e.tls.wanted(true)).collect();
        assert_eq!(with_cert, [true, false, true]);
        let without: Vec<bool> = binds.iter().map(|e| e.tls.wanted(false)).collect();
        assert_eq!(without, [false, false, true]);
        assert!(check_tls_binds(&binds, true).is_ok());
        let e = check_tls_binds(&binds, false).unwrap_err();
        assert_eq!(
            e,
            "bind \"https+unix:/s\": https needs --certfile and --keyfile \
             (or write http:// for a plain bind)"
        );
        assert!(check_tls_binds(&binds[..2], false).is_ok());
    }
}
