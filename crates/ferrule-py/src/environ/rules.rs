//! The PEP 3333 rules that turn an HTTP/1 request into environ values, as pure
//! functions over bytes and `&str`: no Python object in or out, so the tables below
//! test them without an app. The builder (`request.rs`) calls them on every request
//! and only makes (and caches) the Python strings of their results; the end-to-end
//! tests (`tests/e2e/test_pep3333.py`) check the same rules through a socket.
//!
//! Values arrive as the parser checked them: a Host or absolute-form authority is
//! valid `uri-host [":" port]` (docs/http.md "Host"), header names are tokens, and
//! names with `_` reached the request only under `--header-map dangerous` (the parser
//! drops or refuses them otherwise).

use ferrule_http::{percent, Version};
use ferrule_server::{Local, Peer};
use std::borrow::Cow;
use std::net::IpAddr;

/// `wsgi.url_scheme`: the listener's scheme, or the one a trusted front server named
/// (`secure_scheme_headers`); the server decides which, and says `https` or not.
#[inline]
pub fn url_scheme(https: bool) -> &'static str {
    if https {
        "https"
    } else {
        "http"
    }
}

/// SERVER_PROTOCOL.
#[inline]
pub fn server_protocol(version: Version) -> &'static str {
    match version {
        Version::Http10 => "HTTP/1.0",
        Version::Http11 => "HTTP/1.1",
    }
}

/// The target's path with its `%XX` escapes decoded (a `%` without two hex digits
/// stays, as in gunicorn); borrowed when there is none, the usual case.
#[inline]
pub fn decode_path(raw: &[u8]) -> Cow<'_, [u8]> {
    match percent::decode(raw) {
        Some(decoded) => Cow::Owned(decoded),
        None => Cow::Borrowed(raw),
    }
}

/// PATH_INFO: the decoded path without SCRIPT_NAME when it starts with it. The
/// prefix is a byte prefix, not a path segment (`/app` leaves `lication` of
/// `/application`), as gunicorn and uWSGI strip it.
#[inline]
pub fn strip_script_name<'a>(path: &'a [u8], script_name: &[u8]) -> &'a [u8] {
    path.strip_prefix(script_name).unwrap_or(path)
}

/// PATH_INFO below a front server's mount (`uwsgi_param SCRIPT_NAME /app`): the path
/// without SCRIPT_NAME only when SCRIPT_NAME is a whole-segment prefix, so `/app`
/// mounts `/app` and `/app/x` but not `/application`, which stays whole. A trailing
/// `/` of SCRIPT_NAME is not part of the prefix (`/app/` leaves `/x` of `/app/x`).
#[inline]
pub fn strip_mount<'a>(path: &'a [u8], script_name: &[u8]) -> &'a [u8] {
    let mount = script_name.strip_suffix(b"/").unwrap_or(script_name);
    match path.strip_prefix(mount) {
        Some(rest) if rest.is_empty() || rest.first() == Some(&b'/') => rest,
        _ => path,
    }
}

/// The host SERVER_NAME and SERVER_PORT come from: the absolute-form target's, else
/// Host's (`Framing::host`). An empty Host (valid, RFC 9112 §3.2) names none: PEP 3333
/// wants SERVER_NAME non-empty, so the listening address is used instead.
#[inline]
pub fn named_host(host: Option<&[u8]>) -> Option<&[u8]> {
    host.filter(|h| !h.is_empty())
}

/// Splits a host into SERVER_NAME and the port written in it, if any; IPv6 keeps its
/// brackets.
pub fn split_host(host: &[u8]) -> (&[u8], Option<&[u8]>) {
    if host.first() == Some(&b'[') {
        return match host.windows(2).position(|w| w == b"]:") {
            Some(i) => (&host[..=i], Some(&host[i + 2..])),
            None => (host, None),
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(i) => (&host[..i], Some(&host[i + 1..])),
        None => (host, None),
    }
}

/// SERVER_PORT when the host names no port: the scheme's.
#[inline]
pub fn default_port(https: bool) -> &'static str {
    if https {
        "443"
    } else {
        "80"
    }
}

/// SERVER_NAME and SERVER_PORT when the request names no host: the listening address,
/// or `localhost` and the scheme's port on a unix socket.
pub fn listener_server(local: &Local, https: bool) -> (String, Cow<'static, str>) {
    match local {
        Local::Tcp(a) => (
            a.ip().to_string(),
            Cow::Owned(itoa::Buffer::new().format(a.port()).to_owned()),
        ),
        Local::Unix(_) => ("localhost".to_owned(), Cow::Borrowed(default_port(https))),
    }
}

/// REMOTE_ADDR's address (an IPv4-mapped IPv6 address as IPv4) and REMOTE_PORT; `None`
/// on a unix socket, where both are empty strings, as gunicorn sets them.
#[inline]
pub fn remote(peer: Peer) -> Option<(IpAddr, u16)> {
    match peer {
        Peer::Tcp(a) => Some((a.ip().to_canonical(), a.port())),
        Peer::Unix => None,
    }
}

/// Whether a field's value reaches the environ from the framing rather than as an
/// `HTTP_*` key: CONTENT_TYPE and CONTENT_LENGTH (without the prefix, PEP 3333) and
/// HTTP_HOST (the absolute-form target's authority wins over the field, docs/http.md).
#[inline]
pub fn from_framing(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"content-type")
        || name.eq_ignore_ascii_case(b"content-length")
        || name.eq_ignore_ascii_case(b"host")
}

/// The `HTTP_*` key of a field name: upper case, `-` as `_`. A name with `_` (only
/// under `--header-map dangerous`) keeps it, so `X_A` and `X-A` share a key and are
/// joined like a repeated field.
pub fn header_key(name: &[u8]) -> String {
    let mut key = String::with_capacity(5 + name.len());
    key.push_str("HTTP_");
    key.extend(name.iter().map(|&b| match b {
        b'-' => '_',
        b => char::from(b.to_ascii_uppercase()),
    }));
    key
}

/// A repeated field's value: the values joined with `,`, in order, as gunicorn joins
/// them (RFC 9110 §5.3 makes that the same field, but for Set-Cookie, which is a
/// response field).
pub fn join_field(prev: &str, value: &str) -> String {
    let mut joined = String::with_capacity(prev.len() + 1 + value.len());
    joined.push_str(prev);
    joined.push(',');
    joined.push_str(value);
    joined
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_mount_is_a_whole_segment_and_a_script_name_a_byte_prefix() {
        // (path, SCRIPT_NAME, strip_mount, strip_script_name)
        let table: &[(&str, &str, &str, &str)] = &[
            ("/app/x", "/app", "/x", "/x"),
            ("/app", "/app", "", ""),
            ("/application", "/app", "/application", "lication"),
            ("/app/x", "/app/", "/x", "x"),
            ("/other", "/app", "/other", "/other"),
            ("/x", "", "/x", "/x"),
            ("/x", "/", "/x", "x"),
            ("", "/app", "", ""),
        ];
        for &(path, script, mount, prefix) in table {
            let (p, s) = (path.as_bytes(), script.as_bytes());
            assert_eq!(strip_mount(p, s), mount.as_bytes(), "{path} {script}");
            assert_eq!(
                strip_script_name(p, s),
                prefix.as_bytes(),
                "{path} {script}"
            );
        }
    }

    fn lossy(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    /// The rule as a whole, in the steps `request.rs` takes them with its caches.
    fn server_name_port(host: Option<&[u8]>, local: &Local, https: bool) -> (String, String) {
        match named_host(host) {
            Some(h) => {
                let (name, port) = split_host(h);
                let port = port.unwrap_or(default_port(https).as_bytes());
                (lossy(name), lossy(port))
            }
            None => {
                let (name, port) = listener_server(local, https);
                (name, port.into_owned())
            }
        }
    }

    #[test]
    fn path_info() {
        let table: &[(&[u8], &[u8], &[u8])] = &[
            // (raw path, SCRIPT_NAME, PATH_INFO)
            (b"/", b"", b"/"),
            (b"/plain/path", b"", b"/plain/path"),
            (b"/a%20b", b"", b"/a b"),
            (b"/a%2Fb", b"", b"/a/b"),
            (b"/caf%C3%A9", b"", "/café".as_bytes()),
            (b"/%e9", b"", b"/\xe9"),
            (b"/100%", b"", b"/100%"),
            (b"/%zz%4", b"", b"/%zz%4"),
            (b"/app/x", b"/app", b"/x"),
            (b"/app", b"/app", b""),
            (b"/other", b"/app", b"/other"),
            (b"/application", b"/app", b"lication"),
            (b"/%61pp/x", b"/app", b"/x"),
        ];
        for &(raw, script, want) in table {
            let decoded = decode_path(raw);
            assert_eq!(strip_script_name(&decoded, script), want, "{raw:?}");
        }
        assert!(matches!(decode_path(b"/no/escape"), Cow::Borrowed(_)));
    }

    #[test]
    fn server_name_and_port() {
        let tcp = Local::Tcp("127.0.0.1:8000".parse().unwrap());
        let tcp6 = Local::Tcp("[::1]:8443".parse().unwrap());
        let unix = Local::Unix(PathBuf::from("/run/ferrule.sock"));
        // (host, listener, https, SERVER_NAME, SERVER_PORT)
        type Row<'a> = (Option<&'a [u8]>, &'a Local, bool, &'a str, &'a str);
        let table: &[Row] = &[
            (Some(b"example.com"), &tcp, false, "example.com", "80"),
            (Some(b"example.com"), &tcp, true, "example.com", "443"),
            (Some(b"example.com:8080"), &tcp, true, "example.com", "8080"),
            (Some(b"[::1]:81"), &tcp, false, "[::1]", "81"),
            (Some(b"[::1]"), &tcp, true, "[::1]", "443"),
            (
                Some(b"[2001:db8::1]:8080"),
                &tcp,
                true,
                "[2001:db8::1]",
                "8080",
            ),
            (Some(b"a.example:"), &tcp, false, "a.example", ""),
            (Some(b"10.0.0.1:0"), &unix, false, "10.0.0.1", "0"),
            (Some(b""), &tcp, false, "127.0.0.1", "8000"),
            (None, &tcp, true, "127.0.0.1", "8000"),
            (None, &tcp6, false, "::1", "8443"),
            (None, &unix, false, "localhost", "80"),
            (Some(b""), &unix, true, "localhost", "443"),
        ];
        for &(host, local, https, name, port) in table {
            let got = server_name_port(host, local, https);
            assert_eq!(got, (name.into(), port.into()), "{host:?} {local} {https}");
        }
    }

    #[test]
    fn remote_addr_and_port() {
        let tcp = |s: &str| Peer::Tcp(s.parse().unwrap());
        let table: &[(Peer, Option<(&str, u16)>)] = &[
            (tcp("192.0.2.7:51000"), Some(("192.0.2.7", 51000))),
            (tcp("[::ffff:192.0.2.7]:1"), Some(("192.0.2.7", 1))),
            (tcp("[2001:db8::1]:443"), Some(("2001:db8::1", 443))),
            (tcp("[::1]:65535"), Some(("::1", 65535))),
            (Peer::Unix, None),
        ];
        for &(peer, want) in table {
            let got = remote(peer).map(|(ip, port)| (ip.to_string(), port));
            assert_eq!(
                got,
                want.map(|(ip, port)| (ip.to_owned(), port)),
                "{peer:?}"
            );
        }
    }

    #[test]
    fn header_keys() {
        let table: &[(&[u8], Option<&str>)] = &[
            (b"Content-Type", None),
            (b"CONTENT-LENGTH", None),
            (b"host", None),
            (b"Accept", Some("HTTP_ACCEPT")),
            (b"x-forwarded-for", Some("HTTP_X_FORWARDED_FOR")),
            (b"X_Under", Some("HTTP_X_UNDER")),
            (b"Content-MD5", Some("HTTP_CONTENT_MD5")),
            (b"Hostname", Some("HTTP_HOSTNAME")),
            (b"X-1.0~!", Some("HTTP_X_1.0~!")),
        ];
        for &(name, want) in table {
            let got = (!from_framing(name)).then(|| header_key(name));
            assert_eq!(got.as_deref(), want, "{name:?}");
        }
        assert_eq!(join_field("a", "b"), "a,b");
        assert_eq!(join_field("a, b", ""), "a, b,");
        assert_eq!(join_field("", "c"), ",c");
    }

    #[test]
    fn scheme_and_protocol() {
        assert_eq!(url_scheme(false), "http");
        assert_eq!(url_scheme(true), "https");
        assert_eq!(server_protocol(Version::Http10), "HTTP/1.0");
        assert_eq!(server_protocol(Version::Http11), "HTTP/1.1");
    }
}
