use super::*;
use ferrule_http::{parse_head, ParserConfig, SchemeHeaders};

fn config(allow: &str, from: RemoteAddrFrom) -> ServerConfig {
    ServerConfig {
        forwarded_allow_ips: AllowIps::parse(allow).unwrap(),
        forwarded_remote_addr: from,
        ..ServerConfig::default()
    }
}

fn tcp(s: &str) -> Peer {
    Peer::Tcp(s.parse().unwrap())
}

/// The verdict for `fields` from `peer` (whose connection's client is the peer).
fn judge_fields(cfg: &ServerConfig, peer: Peer, fields: &str) -> Result<Forwarding, ParseError> {
    let raw = format!("GET / HTTP/1.1\r\nHost: x\r\n{fields}\r\n");
    let head = parse_head(raw.as_bytes(), &ParserConfig::default())
        .unwrap()
        .unwrap();
    judge(cfg, &peer, &peer, &head, raw.as_bytes())
}

const PROXY: &str = "127.0.0.1:40000";

fn https(cfg: &ServerConfig, fields: &str) -> Result<bool, ParseError> {
    judge_fields(cfg, tcp(PROXY), fields).map(|f| f.https)
}

#[test]
fn scheme_from_the_table_and_forwarded_proto() {
    let cfg = config("127.0.0.1", RemoteAddrFrom::Off);
    let bad = Err(ParseError::InvalidSchemeHeaders);
    let rows: &[(&str, Result<bool, ParseError>)] = &[
        ("", Ok(false)),
        ("X-Forwarded-Proto: https\r\n", Ok(true)),
        ("Forwarded: for=203.0.113.9;proto=https\r\n", Ok(true)),
        ("Forwarded: proto=https\r\n", Ok(true)),
        ("Forwarded: for=203.0.113.9;proto=http\r\n", Ok(false)),
        // `ws`/`wss` and others say nothing about http or https.
        ("Forwarded: for=203.0.113.9;proto=wss\r\n", Ok(false)),
        // Both present: they must agree, as gunicorn's own headers must.
        (
            "X-Forwarded-Proto: https\r\nForwarded: for=203.0.113.9;proto=https\r\n",
            Ok(true),
        ),
        (
            "X-Forwarded-Proto: http\r\nForwarded: for=203.0.113.9;proto=https\r\n",
            bad,
        ),
        (
            "X-Forwarded-Proto: https\r\nForwarded: for=203.0.113.9;proto=http\r\n",
            bad,
        ),
        // Forwarded without proto leaves the table's verdict alone.
        (
            "X-Forwarded-Proto: https\r\nForwarded: for=203.0.113.9\r\n",
            Ok(true),
        ),
        // The client's own element on the left is not the hop the proxy wrote.
        (
            "Forwarded: for=6.6.6.6;proto=https, for=203.0.113.9;proto=http\r\n",
            Ok(false),
        ),
        // Malformed: ignored (and logged); the table still speaks.
        ("Forwarded: for=nonsense;proto=https\r\n", Ok(false)),
        (
            "X-Forwarded-Proto: https\r\nForwarded: proto=https;proto=http\r\n",
            Ok(true),
        ),
    ];
    for (fields, want) in rows {
        assert_eq!(https(&cfg, fields), *want, "{fields:?}");
    }
}

#[test]
fn forwarded_proto_follows_the_trusted_hops() {
    // A CDN at 10.0.0.5 (trusted) took https; the proxy behind it received http.
    let fields = "Forwarded: for=203.0.113.9;proto=https, for=10.0.0.5;proto=http\r\n";
    assert_eq!(
        https(&config("127.0.0.1", RemoteAddrFrom::Off), fields),
        Ok(false)
    );
    let cdn = config("127.0.0.1, 10.0.0.0/8", RemoteAddrFrom::Off);
    assert_eq!(https(&cdn, fields), Ok(true));
}

#[test]
fn a_custom_or_empty_table() {
    let mut cfg = config("127.0.0.1", RemoteAddrFrom::Off);
    cfg.secure_scheme_headers = SchemeHeaders::new([("X-Scheme", "https")]).unwrap();
    assert_eq!(https(&cfg, "X-Scheme: https\r\n"), Ok(true));
    assert_eq!(https(&cfg, "X-Forwarded-Proto: https\r\n"), Ok(false));
    assert_eq!(https(&cfg, "Forwarded: proto=https\r\n"), Ok(true));
    // Empty: neither the table nor Forwarded sets the scheme, and nothing disagrees.
    cfg.secure_scheme_headers = SchemeHeaders::new([]).unwrap();
    for fields in [
        "X-Forwarded-Proto: https\r\n",
        "Forwarded: proto=https\r\n",
        "X-Forwarded-Proto: http\r\nX-Forwarded-Ssl: on\r\nForwarded: proto=https\r\n",
    ] {
        assert_eq!(https(&cfg, fields), Ok(false), "{fields:?}");
    }
}

#[test]
fn untrusted_peers_get_nothing() {
    let cfg = config("10.0.0.1", RemoteAddrFrom::XForwardedFor);
    let got = judge_fields(
        &cfg,
        tcp("127.0.0.1:5000"),
        "X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\nX-Forwarded-For: 203.0.113.9\r\n",
    );
    assert_eq!(got, Ok(UNTOUCHED));
    // A unix socket's peer is local, and trusted like 127.0.0.1.
    let got = judge_fields(&cfg, Peer::Unix, "X-Forwarded-For: 203.0.113.9\r\n");
    assert_eq!(
        got.map(|f| f.client),
        Ok(Some(Box::new(tcp("203.0.113.9:0"))))
    );
}

/// REMOTE_ADDR and port for `fields` from the proxy at 10.0.0.2:40000.
fn client(cfg: &ServerConfig, fields: &str) -> Option<String> {
    let f = judge_fields(cfg, tcp("10.0.0.2:40000"), fields).unwrap();
    f.client.map(|p| match *p {
        Peer::Tcp(a) => a.to_string(),
        Peer::Unix => "unix".into(),
    })
}

#[test]
fn remote_addr_from_x_forwarded_for() {
    let cfg = config("10.0.0.0/8", RemoteAddrFrom::XForwardedFor);
    let rows: &[(&str, Option<&str>)] = &[
        ("", None),
        (
            "X-Forwarded-For: 203.0.113.9\r\n",
            Some("203.0.113.9:40000"),
        ),
        // The client forged the left-most entry; two proxies appended theirs.
        (
            "X-Forwarded-For: 6.6.6.6, 203.0.113.9, 10.0.0.7\r\n",
            Some("203.0.113.9:40000"),
        ),
        // Several fields are one list.
        (
            "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 203.0.113.9, 10.0.0.7\r\n",
            Some("203.0.113.9:40000"),
        ),
        (
            "X-Forwarded-For: [2001:db8::1]:4711\r\n",
            Some("[2001:db8::1]:4711"),
        ),
        // Every entry trusted: the left-most.
        (
            "X-Forwarded-For: 10.1.1.1, 10.0.0.7\r\n",
            Some("10.1.1.1:40000"),
        ),
        // `unknown` keeps the connection's client.
        ("X-Forwarded-For: 203.0.113.9, unknown\r\n", None),
        // Malformed: ignored (and logged).
        ("X-Forwarded-For: 203.0.113.9, bogus\r\n", None),
        // The other list is not read.
        ("Forwarded: for=203.0.113.9\r\n", None),
    ];
    for (fields, want) in rows {
        assert_eq!(client(&cfg, fields).as_deref(), *want, "{fields:?}");
    }
}

#[test]
fn remote_addr_from_forwarded() {
    let cfg = config("10.0.0.0/8", RemoteAddrFrom::Forwarded);
    let rows: &[(&str, Option<&str>)] = &[
        (
            "Forwarded: for=6.6.6.6, for=\"[2001:db8::5]:4711\";proto=https, for=10.0.0.7\r\n",
            Some("[2001:db8::5]:4711"),
        ),
        ("Forwarded: for=_hidden, for=10.0.0.7\r\n", None),
        ("Forwarded: for=203.0.113.9;for=1.1.1.1\r\n", None),
        ("X-Forwarded-For: 203.0.113.9\r\n", None),
    ];
    for (fields, want) in rows {
        assert_eq!(client(&cfg, fields).as_deref(), *want, "{fields:?}");
    }
    // Its proto decides the scheme at the same time.
    let f = judge_fields(
        &cfg,
        tcp("10.0.0.2:1"),
        "Forwarded: for=203.0.113.9;proto=https\r\n",
    );
    assert_eq!(f.map(|f| f.https), Ok(true));
}

#[test]
fn any_peer_trusted_takes_one_hop() {
    // `*` names no proxy address, so the right-most entry is the client.
    let cfg = config("*", RemoteAddrFrom::XForwardedFor);
    assert_eq!(
        client(&cfg, "X-Forwarded-For: 6.6.6.6, 203.0.113.9\r\n").as_deref(),
        Some("203.0.113.9:40000")
    );
    assert_eq!(
        client(&cfg, "X-Forwarded-For: 127.0.0.1\r\n").as_deref(),
        Some("127.0.0.1:40000")
    );
}

#[test]
fn the_remote_addr_setting_parses() {
    for (text, want) in [
        ("off", RemoteAddrFrom::Off),
        ("X-Forwarded-For", RemoteAddrFrom::XForwardedFor),
        (" forwarded ", RemoteAddrFrom::Forwarded),
    ] {
        assert_eq!(text.parse::<RemoteAddrFrom>(), Ok(want));
        assert_eq!(want.name().parse::<RemoteAddrFrom>(), Ok(want));
    }
    let e = "x-real-ip".parse::<RemoteAddrFrom>().unwrap_err();
    assert!(e.contains("off, x-forwarded-for or forwarded"), "{e}");
}
