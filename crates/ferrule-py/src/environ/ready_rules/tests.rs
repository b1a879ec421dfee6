//! Table tests of `ready_rules.rs`.

use super::*;
use std::path::PathBuf;

/// What nginx's own `uwsgi_params` send for `GET /caf%C3%A9/x?q=1` over TCP.
const NGINX: &[(&str, &str)] = &[
    ("QUERY_STRING", "q=1"),
    ("REQUEST_METHOD", "GET"),
    ("CONTENT_TYPE", ""),
    ("CONTENT_LENGTH", ""),
    ("REQUEST_URI", "/caf%C3%A9/x?q=1"),
    ("PATH_INFO", "/café/x"),
    ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
    ("SERVER_PROTOCOL", "HTTP/1.1"),
    ("REQUEST_SCHEME", "http"),
    ("REMOTE_ADDR", "203.0.113.9"),
    ("REMOTE_PORT", "50123"),
    ("SERVER_PORT", "80"),
    ("SERVER_NAME", "example.com"),
    ("HTTP_HOST", "example.com"),
    ("HTTP_ACCEPT", "*/*"),
];

fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> Vec<(&'a [u8], &'a [u8])> {
    pairs
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect()
}

fn with<'a>(extra: &'a [(&'a str, &'a str)]) -> Vec<(&'a [u8], &'a [u8])> {
    let mut all = vars(NGINX);
    all.extend(vars(extra));
    all
}

fn names<'a>(env: &ReadyEnviron<'a>) -> Vec<&'a [u8]> {
    env.other.iter().map(|(n, _)| *n).collect()
}

#[test]
fn nginx_uwsgi_params() {
    let env = ready_environ(vars(NGINX), b"").unwrap();
    assert_eq!(env.method, b"GET");
    assert_eq!(env.path, "/café/x".as_bytes(), "not decoded again");
    assert_eq!(env.script_name, b"");
    assert_eq!((env.query, env.protocol), (&b"q=1"[..], &b"HTTP/1.1"[..]));
    assert!(!env.https);
    assert_eq!(env.host, Some(&b"example.com"[..]));
    let unknown: &[&[u8]] = &[
        b"REQUEST_URI",
        b"DOCUMENT_ROOT",
        b"REQUEST_SCHEME",
        b"HTTP_ACCEPT",
    ];
    assert_eq!(
        names(&env),
        unknown,
        "empty CONTENT_* left out, the rest passes"
    );
    let unix = Local::Unix(PathBuf::from("/run/f.sock"));
    let server = env.server(&unix, false);
    assert_eq!((&*server.0, &*server.1), (&b"example.com"[..], &b"80"[..]));
    let remote = env.remote(Peer::Unix);
    assert_eq!(
        (&*remote.0, &*remote.1),
        (&b"203.0.113.9"[..], &b"50123"[..])
    );
}

#[test]
fn script_name_and_path_info() {
    // (SCRIPT_NAME sent, PATH_INFO sent, --script-name, SCRIPT_NAME, PATH_INFO)
    type Row<'a> = (Option<&'a str>, Option<&'a str>, &'a str, &'a str, &'a str);
    let table: &[Row] = &[
        (Some("/app"), Some("/app/x"), "", "/app", "/x"),
        (Some("/app"), Some("/app"), "", "/app", ""),
        (
            Some("/app"),
            Some("/application"),
            "",
            "/app",
            "/application",
        ),
        (Some("/app"), Some("/app/"), "", "/app", "/"),
        // A trailing `/` is the mount without it: SCRIPT_NAME + PATH_INFO rebuilds the path.
        (Some("/app/"), Some("/app/x"), "", "/app", "/x"),
        (Some("/"), Some("/x"), "", "", "/x"),
        (Some("/app"), Some("/other"), "", "/app", "/other"),
        (Some("/app"), Some("/%61pp/x"), "", "/app", "/%61pp/x"),
        (None, Some("/mnt/x"), "/mnt", "/mnt", "/x"),
        (Some(""), Some("/mnt/x"), "/mnt", "", "/mnt/x"),
        (Some("/app"), None, "", "/app", ""),
        (None, None, "", "", ""),
    ];
    for &(sent, path, configured, script, want) in table {
        let mut pairs = vec![("REQUEST_METHOD", "GET"), ("SERVER_PROTOCOL", "HTTP/1.0")];
        pairs.extend(sent.map(|s| ("SCRIPT_NAME", s)));
        pairs.extend(path.map(|p| ("PATH_INFO", p)));
        let env = ready_environ(vars(&pairs), configured.as_bytes()).unwrap();
        let got = (env.script_name, env.path);
        assert_eq!(got, (script.as_bytes(), want.as_bytes()), "{pairs:?}");
    }
}

#[test]
fn scheme_from_https() {
    for (https, want) in [
        ("on", true),
        ("ON", true),
        ("1", true),
        ("true", true),
        ("off", false),
        ("", false),
    ] {
        let sent = [("HTTPS", https)];
        let env = ready_environ(with(&sent), b"").unwrap();
        assert_eq!(env.https, want, "HTTPS={https:?}");
        assert!(names(&env).contains(&&b"HTTPS"[..]), "HTTPS passes through");
    }
    // uWSGI's UWSGI_SCHEME wins over HTTPS, in either order.
    for (sent, want) in [
        (&[("UWSGI_SCHEME", "https")][..], true),
        (&[("HTTPS", "on"), ("UWSGI_SCHEME", "http")][..], false),
        (&[("UWSGI_SCHEME", "HTTPS"), ("HTTPS", "off")][..], true),
    ] {
        let env = ready_environ(with(sent), b"").unwrap();
        assert_eq!(env.https, want, "{sent:?}");
    }
}

#[test]
fn content_type_and_length() {
    let sent = [("CONTENT_TYPE", "text/plain"), ("CONTENT_LENGTH", "5")];
    let env = ready_environ(with(&sent), b"").unwrap();
    let got: Vec<_> = env
        .other
        .iter()
        .filter(|(n, _)| n.starts_with(b"CONTENT_"))
        .collect();
    let want: &[(&[u8], &[u8])] = &[(b"CONTENT_TYPE", b"text/plain"), (b"CONTENT_LENGTH", b"5")];
    assert_eq!(got, want.iter().collect::<Vec<_>>());
    // nginx also forwards the fields as HTTP_CONTENT_*: not in the environ, as over HTTP/1.
    let sent = [
        ("HTTP_CONTENT_TYPE", "text/plain"),
        ("HTTP_CONTENT_LENGTH", "5"),
    ];
    let env = ready_environ(with(&sent), b"").unwrap();
    assert!(!names(&env).iter().any(|n| n.starts_with(b"HTTP_CONTENT")));
}

#[test]
fn server_falls_back_as_http1_does() {
    let tcp = Local::Tcp("10.0.0.2:9000".parse().unwrap());
    // (SERVER_NAME, SERVER_PORT, HTTP_HOST, https, want)
    type Row<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        bool,
        (&'a str, &'a str),
    );
    let table: &[Row] = &[
        (
            Some("a.example"),
            Some("8080"),
            Some("b.example"),
            false,
            ("a.example", "8080"),
        ),
        (
            Some(""),
            Some("81"),
            Some("b.example:82"),
            false,
            ("b.example", "81"),
        ),
        (None, None, Some("b.example:82"), true, ("b.example", "82")),
        (None, None, Some("[::1]"), true, ("[::1]", "443")),
        (Some("a.example"), None, None, false, ("a.example", "9000")),
        (None, None, Some(""), false, ("10.0.0.2", "9000")),
        (None, None, None, true, ("10.0.0.2", "9000")),
    ];
    for &(name, port, host, https, want) in table {
        let mut pairs = vec![("REQUEST_METHOD", "GET"), ("SERVER_PROTOCOL", "HTTP/1.1")];
        pairs.extend(name.map(|v| ("SERVER_NAME", v)));
        pairs.extend(port.map(|v| ("SERVER_PORT", v)));
        pairs.extend(host.map(|v| ("HTTP_HOST", v)));
        let env = ready_environ(vars(&pairs), b"").unwrap();
        let (n, p) = env.server(&tcp, https);
        assert_eq!(
            (&*n, &*p),
            (want.0.as_bytes(), want.1.as_bytes()),
            "{pairs:?}"
        );
    }
}

#[test]
fn remote_is_the_clients() {
    let nginx = Peer::Tcp("127.0.0.1:40000".parse().unwrap());
    // (REMOTE_ADDR, REMOTE_PORT, socket peer, want)
    type Row<'a> = (Option<&'a str>, Option<&'a str>, Peer, (&'a str, &'a str));
    let table: &[Row] = &[
        (Some("203.0.113.9"), Some("5"), nginx, ("203.0.113.9", "5")),
        (Some("unix:"), Some(""), nginx, ("unix:", "")),
        (Some("2001:db8::1"), None, nginx, ("2001:db8::1", "40000")),
        (None, None, nginx, ("127.0.0.1", "40000")),
        (None, None, Peer::Unix, ("", "")),
    ];
    for &(addr, port, peer, want) in table {
        let mut pairs = vec![("REQUEST_METHOD", "GET"), ("SERVER_PROTOCOL", "HTTP/1.1")];
        pairs.extend(addr.map(|v| ("REMOTE_ADDR", v)));
        pairs.extend(port.map(|v| ("REMOTE_PORT", v)));
        let env = ready_environ(vars(&pairs), b"").unwrap();
        let (a, p) = env.remote(peer);
        assert_eq!(
            (&*a, &*p),
            (want.0.as_bytes(), want.1.as_bytes()),
            "{pairs:?}"
        );
    }
}

#[test]
fn repeated_and_missing() {
    let twice = [
        ("REQUEST_METHOD", "POST"),
        ("HTTP_X_A", "1"),
        ("HTTP_X_A", "2"),
    ];
    let env = ready_environ(with(&twice), b"").unwrap();
    assert_eq!(env.method, b"POST", "the last one counts");
    let a: Vec<_> = env
        .other
        .iter()
        .filter(|(n, _)| *n == b"HTTP_X_A")
        .map(|p| p.1)
        .collect();
    assert_eq!(
        a,
        [&b"1"[..], b"2"],
        "both kept in order; the dict keeps the last"
    );
    let cleared = [("CONTENT_TYPE", "a/b"), ("CONTENT_TYPE", "")];
    let env = ready_environ(with(&cleared), b"").unwrap();
    assert!(!names(&env).contains(&&b"CONTENT_TYPE"[..]));
    // A later value after an empty one counts again.
    let reset = [("CONTENT_TYPE", ""), ("CONTENT_TYPE", "c/d")];
    let env = ready_environ(with(&reset), b"").unwrap();
    assert!(names(&env).contains(&&b"CONTENT_TYPE"[..]));
    let only_method = vars(&[("REQUEST_METHOD", "GET")]);
    assert_eq!(
        ready_environ(only_method, b""),
        Err(Missing("SERVER_PROTOCOL"))
    );
    let only_protocol = vars(&[("SERVER_PROTOCOL", "HTTP/1.1")]);
    assert_eq!(
        ready_environ(only_protocol, b""),
        Err(Missing("REQUEST_METHOD"))
    );
    assert_eq!(
        Missing("REQUEST_METHOD").to_string(),
        "the front server sent no REQUEST_METHOD"
    );
}
