use super::*;
use crate::{parse_head, ParserConfig};
use ForwardedError as E;

fn v4(s: &str, port: Option<u16>) -> Node {
    Node::Ip {
        ip: IpAddr::V4(s.parse().unwrap()),
        port,
    }
}

fn v6(s: &str, port: Option<u16>) -> Node {
    Node::Ip {
        ip: IpAddr::V6(s.parse().unwrap()),
        port,
    }
}

fn fwd(fields: &[&str]) -> Result<Vec<ForwardedElement>, ForwardedError> {
    parse_forwarded(fields.iter().map(|f| f.as_bytes()))
}

/// The `for` nodes of a one-field `Forwarded`.
fn fors(field: &str) -> Result<Vec<Option<Node>>, ForwardedError> {
    fwd(&[field]).map(|els| els.iter().map(|e| e.for_).collect())
}

/// A table row: a field value and what parsing it gives.
type Row<T> = (&'static str, Result<T, E>);

fn xff(fields: &[&str]) -> Result<Vec<Node>, ForwardedError> {
    parse_x_forwarded_for(fields.iter().map(|f| f.as_bytes()))
}

#[test]
fn forwarded_nodes() {
    let rows: &[Row<Node>] = &[
        // RFC 7239 §4 and §6 examples.
        ("for=192.0.2.43", Ok(v4("192.0.2.43", None))),
        (r#"for="192.0.2.43""#, Ok(v4("192.0.2.43", None))),
        (
            r#"for="192.0.2.43:47011""#,
            Ok(v4("192.0.2.43", Some(47011))),
        ),
        (
            r#"For="[2001:db8:cafe::17]:4711""#,
            Ok(v6("2001:db8:cafe::17", Some(4711))),
        ),
        (
            r#"for="[2001:db8:cafe::17]""#,
            Ok(v6("2001:db8:cafe::17", None)),
        ),
        (
            r#"for="[::ffff:192.0.2.1]""#,
            Ok(v6("::ffff:192.0.2.1", None)),
        ),
        (
            r#"FOR="[2001:DB8::A]:443""#,
            Ok(v6("2001:db8::a", Some(443))),
        ),
        ("for=unknown", Ok(Node::Unknown)),
        ("for=UNKNOWN", Ok(Node::Unknown)),
        (r#"for="unknown:80""#, Ok(Node::Unknown)),
        (r#"for="_gazonk""#, Ok(Node::Obfuscated)),
        ("for=_hidden", Ok(Node::Obfuscated)),
        ("for=_a.b-c_d", Ok(Node::Obfuscated)),
        (r#"for="_hidden:_port""#, Ok(Node::Obfuscated)),
        (r#"for="192.0.2.1:_port""#, Ok(v4("192.0.2.1", None))),
        (r#"for="[::1]:_p""#, Ok(v6("::1", None))),
        (r#"for="1.2.3.4:0""#, Ok(v4("1.2.3.4", Some(0)))),
        (r#"for="1.2.3.4:65535""#, Ok(v4("1.2.3.4", Some(65535)))),
        (r#"for="1.2.3.4:080""#, Ok(v4("1.2.3.4", Some(80)))),
        // A quoted-pair stands for its byte.
        (r#"for="\[::1\]:8\0""#, Ok(v6("::1", Some(80)))),
        // ':' and '[' are not token bytes: IPv6 and ports must be quoted (§6).
        ("for=192.0.2.43:80", Err(E::Syntax)),
        ("for=[::1]", Err(E::Syntax)),
        (r#"for="::1""#, Err(E::Node)),
        (r#"for="[::1""#, Err(E::Node)),
        (r#"for="[::1]x""#, Err(E::Node)),
        (r#"for="[1.2.3.4]""#, Err(E::Node)),
        (r#"for="[fe80::1%eth0]""#, Err(E::Node)),
        ("for=192.0.2.256", Err(E::Node)),
        ("for=192.0.2", Err(E::Node)),
        ("for=01.2.3.4", Err(E::Node)),
        ("for=example.com", Err(E::Node)),
        ("for=_", Err(E::Node)),
        ("for=_a+b", Err(E::Node)),
        (r#"for="""#, Err(E::Node)),
        (r#"for="1.2.3.4:65536""#, Err(E::Port)),
        (r#"for="1.2.3.4:""#, Err(E::Port)),
        (r#"for="1.2.3.4:123456""#, Err(E::Port)),
        (r#"for="1.2.3.4:8a""#, Err(E::Port)),
        (r#"for="[::1]:""#, Err(E::Port)),
        (r#"for="[::1]:-1""#, Err(E::Port)),
    ];
    for (field, want) in rows {
        let got = fors(field).map(|v| v[0].unwrap());
        assert_eq!(got, *want, "{field}");
    }
}

#[test]
fn forwarded_lists_and_pairs() {
    let a = Some(v4("192.0.2.43", None));
    let b = Some(v4("198.51.100.17", None));
    let rows: &[Row<Vec<Option<Node>>>] = &[
        ("for=192.0.2.43, for=198.51.100.17", Ok(vec![a, b])),
        ("for=192.0.2.43,for=198.51.100.17", Ok(vec![a, b])),
        ("for=192.0.2.43 \t,\t for=198.51.100.17 ", Ok(vec![a, b])),
        // Empty list elements and empty pairs are ignored.
        (", for=192.0.2.43,, ,for=198.51.100.17,", Ok(vec![a, b])),
        ("for=192.0.2.43;;proto=http;", Ok(vec![a])),
        ("", Ok(vec![])),
        (" , ", Ok(vec![])),
        // Lenient: OWS around ';'.
        ("for=192.0.2.43 ; proto=http", Ok(vec![a])),
        // An element without `for`, and unknown parameters (syntax checked only).
        (
            "proto=https;by=unknown, for=198.51.100.17",
            Ok(vec![None, b]),
        ),
        ("ext=1;for=192.0.2.43;x-y=\"a,b;c\"", Ok(vec![a])),
        ("host=example.com;for=192.0.2.43", Ok(vec![a])),
        ("host=example.com:8080;for=192.0.2.43", Err(E::Syntax)),
        (r#"host="[::1]:80";for=192.0.2.43"#, Ok(vec![a])),
        (r#"x="a\"b;c\\";for=192.0.2.43"#, Ok(vec![a])),
        (r#"x="a\"#, Err(E::Syntax)),
        // A comma inside quotes does not split the list.
        (r#"for=192.0.2.43;x="a, for=1.2.3.4""#, Ok(vec![a])),
        // Malformed pairs.
        ("for", Err(E::Syntax)),
        ("for=", Err(E::Syntax)),
        ("=192.0.2.43", Err(E::Syntax)),
        ("for =192.0.2.43", Err(E::Syntax)),
        ("for= 192.0.2.43", Err(E::Syntax)),
        ("for=192.0.2.43 proto=http", Err(E::Syntax)),
        ("for=192.0.2.43;proto", Err(E::Syntax)),
        (r#"for="192.0.2.43"x"#, Err(E::Syntax)),
        (r#"for="192.0.2.43"#, Err(E::Syntax)),
        (r#"for="192.0.2.43\"#, Err(E::Syntax)),
        ("for=\"1.2.3.4\x01\"", Err(E::Syntax)),
        ("for=\"1.2.3.4\x7f\"", Err(E::Syntax)),
        ("for=\"1\\\x00\"", Err(E::Syntax)),
        ("f\u{e9}r=1.2.3.4", Err(E::Syntax)),
        ("x=a\u{e9}", Err(E::Syntax)),
        // A malformed element anywhere fails the whole list.
        ("for=192.0.2.43, for=nope", Err(E::Node)),
        // One of each parameter per element; names are case-insensitive.
        ("for=192.0.2.43;FOR=198.51.100.17", Err(E::Duplicate)),
        ("by=_a;By=_b", Err(E::Duplicate)),
        ("host=a;host=b", Err(E::Duplicate)),
        ("proto=http;Proto=https", Err(E::Duplicate)),
        ("for=192.0.2.43, for=198.51.100.17;by=_x", Ok(vec![a, b])),
        ("ext=1;ext=2", Ok(vec![None])),
    ];
    for (field, want) in rows {
        assert_eq!(fors(field), *want, "{field:?}");
    }
}

#[test]
fn forwarded_proto_by_and_obs_text() {
    let one = |f: &str| fwd(&[f]).map(|v| v[0]);
    let el = one("for=192.0.2.60;proto=http;by=203.0.113.43").unwrap();
    assert_eq!(el.proto, Some(Proto::Http));
    assert_eq!(el.by, Some(v4("203.0.113.43", None)));
    assert_eq!(one("proto=HTTPS").unwrap().proto, Some(Proto::Https));
    assert_eq!(one("proto=\"https\"").unwrap().proto, Some(Proto::Https));
    assert_eq!(one("proto=wss").unwrap().proto, Some(Proto::Other));
    assert_eq!(one("proto=coap+tcp").unwrap().proto, Some(Proto::Other));
    assert_eq!(one("proto=1http"), Err(E::Proto));
    assert_eq!(one("proto=\"ht tp\""), Err(E::Proto));
    assert_eq!(one("proto=\"\""), Err(E::Proto));
    assert_eq!(
        one("by=\"[::1]:8080\"").unwrap().by,
        Some(v6("::1", Some(8080)))
    );
    assert_eq!(one("by=nope"), Err(E::Node));
    // obs-text is allowed in a quoted value the parser does not interpret.
    assert!(parse_forwarded([&b"x=\"\xff\xfe\";for=_a"[..]]).is_ok());
    assert_eq!(ParseError::from(E::Port), ParseError::InvalidHeader);
    assert!(E::Duplicate.to_string().ends_with("(InvalidHeader)"));
}

#[test]
fn several_fields_are_one_list() {
    let got = fwd(&["for=192.0.2.43", "", "for=\"[2001:db8::1]:80\", for=_x"]).unwrap();
    let nodes: Vec<Node> = got.iter().map(ForwardedElement::node).collect();
    assert_eq!(
        nodes,
        [
            v4("192.0.2.43", None),
            v6("2001:db8::1", Some(80)),
            Node::Obfuscated
        ]
    );
    assert_eq!(fwd(&["for=192.0.2.43", "for=\""]), Err(E::Syntax));
    let got = xff(&["1.2.3.4", "5.6.7.8, ::1"]).unwrap();
    assert_eq!(
        got,
        [v4("1.2.3.4", None), v4("5.6.7.8", None), v6("::1", None)]
    );
}

#[test]
fn field_values_from_a_head() {
    let raw = b"GET / HTTP/1.1\r\nHost: x\r\nforwarded: for=192.0.2.43\r\nX-Forwarded-For: 1.2.3.4\r\nFORWARDED: for=_b;proto=https\r\n\r\n";
    let head = parse_head(raw, &ParserConfig::default()).unwrap().unwrap();
    let els = parse_forwarded(field_values(&head, raw, b"Forwarded")).unwrap();
    assert_eq!(els.len(), 2);
    assert_eq!(els[1].proto, Some(Proto::Https));
    let xs = parse_x_forwarded_for(field_values(&head, raw, b"x-forwarded-for")).unwrap();
    assert_eq!(xs, [v4("1.2.3.4", None)]);
}

#[test]
fn x_forwarded_for() {
    let rows: &[Row<Vec<Node>>] = &[
        ("203.0.113.195", Ok(vec![v4("203.0.113.195", None)])),
        (
            "203.0.113.195, 70.41.3.18,150.172.238.178",
            Ok(vec![
                v4("203.0.113.195", None),
                v4("70.41.3.18", None),
                v4("150.172.238.178", None),
            ]),
        ),
        (" \t1.2.3.4:80 ,\t", Ok(vec![v4("1.2.3.4", Some(80))])),
        (
            "2001:db8:85a3::8a2e:370:7334",
            Ok(vec![v6("2001:db8:85a3::8a2e:370:7334", None)]),
        ),
        ("::1", Ok(vec![v6("::1", None)])),
        ("[::1]", Ok(vec![v6("::1", None)])),
        (
            "[2001:db8::1]:8443",
            Ok(vec![v6("2001:db8::1", Some(8443))]),
        ),
        ("::ffff:1.2.3.4", Ok(vec![v6("::ffff:1.2.3.4", None)])),
        (
            "unknown, 1.2.3.4",
            Ok(vec![Node::Unknown, v4("1.2.3.4", None)]),
        ),
        ("Unknown", Ok(vec![Node::Unknown])),
        ("[2001:DB8::A]:1", Ok(vec![v6("2001:db8::a", Some(1))])),
        (",,", Ok(vec![])),
        ("", Ok(vec![])),
        ("1.2.3.4 5.6.7.8", Err(E::Node)),
        ("1.2.3.4;5.6.7.8", Err(E::Node)),
        ("\"1.2.3.4\"", Err(E::Node)),
        ("for=1.2.3.4", Err(E::Node)),
        ("_hidden", Err(E::Node)),
        ("[unknown]", Err(E::Node)),
        ("[::1", Err(E::Node)),
        ("[::1]80", Err(E::Node)),
        ("[1.2.3.4]:80", Err(E::Node)),
        ("fe80::1%eth0", Err(E::Node)),
        ("1.2.3.4:", Err(E::Port)),
        ("1.2.3.4:65536", Err(E::Port)),
        ("1.2.3.4:_p", Err(E::Port)),
        ("[::1]:_p", Err(E::Port)),
        ("[::1]:+80", Err(E::Port)),
        ("1.2.3.4, bogus", Err(E::Node)),
        ("1.2.3", Err(E::Node)),
        ("::1:80:", Err(E::Node)),
    ];
    for (field, want) in rows {
        assert_eq!(xff(&[field]), *want, "{field:?}");
    }
}

#[test]
fn rightmost_untrusted_walk() {
    let trusted = |ip: IpAddr| match ip {
        IpAddr::V4(a) => a.is_private() || a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback(),
    };
    let pick = |field: &str| rightmost_untrusted(xff(&[field]).unwrap(), trusted);
    // The client forged an entry on the left; the proxies appended the real one.
    assert_eq!(
        pick("6.6.6.6, 203.0.113.9, 10.0.0.2"),
        Some(v4("203.0.113.9", None))
    );
    assert_eq!(
        pick("203.0.113.9:5000"),
        Some(v4("203.0.113.9", Some(5000)))
    );
    assert_eq!(pick("203.0.113.9, ::1"), Some(v4("203.0.113.9", None)));
    assert_eq!(pick("2001:db8::1, 10.0.0.1"), Some(v6("2001:db8::1", None)));
    // Everything trusted: the request began inside; the left-most entry.
    assert_eq!(pick("10.0.0.7, 10.0.0.2"), Some(v4("10.0.0.7", None)));
    assert_eq!(pick(""), None);
    // `unknown` stops the walk, even with an address further left.
    assert_eq!(pick("203.0.113.9, unknown, 10.0.0.2"), None);
    assert_eq!(pick("unknown, 203.0.113.9"), Some(v4("203.0.113.9", None)));
    let pick_fwd = |field: &str| {
        let els = fwd(&[field]).unwrap();
        rightmost_untrusted(els.iter().map(ForwardedElement::node), trusted)
    };
    assert_eq!(
        pick_fwd(r#"for=6.6.6.6, for="[2001:db8::5]:4711", for=10.0.0.2"#),
        Some(v6("2001:db8::5", Some(4711)))
    );
    assert_eq!(pick_fwd("for=203.0.113.9, for=_proxy1, for=10.0.0.2"), None);
    // An element without `for` names nobody: same as `unknown`.
    assert_eq!(pick_fwd("for=203.0.113.9, proto=https"), None);
    assert_eq!(
        pick_fwd("for=203.0.113.9;proto=https, for=127.0.0.1"),
        Some(v4("203.0.113.9", None))
    );
    // Nothing trusted: the right-most entry (the peer's own peer).
    assert_eq!(
        rightmost_untrusted(xff(&["1.1.1.1, 2.2.2.2"]).unwrap(), |_| false),
        Some(v4("2.2.2.2", None))
    );
}

#[test]
fn vouched_hop_walk() {
    let trusted = |ip: IpAddr| match ip {
        IpAddr::V4(a) => a.is_private() || a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback(),
    };
    let hop = |field: &str| {
        let els = fwd(&[field]).unwrap();
        vouched_hop(&els, ForwardedElement::node, trusted).copied()
    };
    // A CDN (10.0.0.5, trusted) took https from the client; the proxy behind it got http.
    let got = hop("for=6.6.6.6;proto=http, for=203.0.113.9;proto=https, for=10.0.0.5;proto=http");
    assert_eq!(got.and_then(|e| e.for_), Some(v4("203.0.113.9", None)));
    assert_eq!(got.and_then(|e| e.proto), Some(Proto::Https));
    // A hop with no address still carries the proto its (trusted) writer saw.
    let got = hop("for=203.0.113.9;proto=http, for=_hidden;proto=https");
    assert_eq!(
        got.map(|e| (e.for_, e.proto)),
        Some((Some(Node::Obfuscated), Some(Proto::Https)))
    );
    // Every hop trusted: the left-most.
    let got = hop("for=10.0.0.7;proto=https, for=10.0.0.2");
    assert_eq!(got.and_then(|e| e.proto), Some(Proto::Https));
    assert_eq!(hop(""), None);
    let none: &[Node] = &[];
    assert_eq!(vouched_hop(none, |n| *n, |_| true), None);
}
