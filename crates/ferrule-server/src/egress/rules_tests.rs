use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// (SPEC, ip, port, host, matches)
const TABLE: &[(&str, &str, u16, Option<&str>, bool)] = &[
    ("127.0.0.1", "127.0.0.1", 80, None, true),
    ("127.0.0.1", "127.0.0.2", 80, None, false),
    ("127.0.0.1:5432", "127.0.0.1", 5432, None, true),
    ("127.0.0.1:5432", "127.0.0.1", 5433, None, false),
    ("10.0.0.0/8", "10.200.3.4", 1, None, true),
    ("10.0.0.0/8", "11.0.0.1", 1, None, false),
    ("10.1.2.3/8", "10.9.9.9", 1, None, true),
    ("10.0.0.0/8:443", "10.0.0.1", 443, None, true),
    ("10.0.0.0/8:443", "10.0.0.1", 80, None, false),
    ("0.0.0.0/0", "203.0.113.9", 1, None, true),
    ("0.0.0.0/0", "::1", 1, None, false),
    ("::1", "::1", 9, None, true),
    ("::1", "127.0.0.1", 9, None, false),
    ("[::1]:9", "::1", 9, None, true),
    ("[::1]:9", "::1", 10, None, false),
    ("[::1]", "::1", 10, None, true),
    ("2001:db8::/32", "2001:db8:1::5", 1, None, true),
    ("2001:db8::/32", "2001:db9::5", 1, None, false),
    ("[2001:db8::/32]:53", "2001:db8::5", 53, None, true),
    ("::ffff:192.0.2.1", "192.0.2.1", 1, None, true),
    ("db.internal", "192.0.2.7", 5432, Some("db.internal"), true),
    ("db.internal", "192.0.2.7", 5432, Some("DB.Internal"), true),
    ("db.internal", "192.0.2.7", 5432, None, false),
    (
        "db.internal:5432",
        "192.0.2.7",
        5432,
        Some("db.internal"),
        true,
    ),
    (
        "db.internal:5432",
        "192.0.2.7",
        5433,
        Some("db.internal"),
        false,
    ),
    (
        "*.example.com",
        "192.0.2.1",
        443,
        Some("api.example.com"),
        true,
    ),
    (
        "*.example.com",
        "192.0.2.1",
        443,
        Some("a.b.example.com"),
        true,
    ),
    (
        "*.example.com",
        "192.0.2.1",
        443,
        Some("example.com"),
        false,
    ),
    (
        "*.example.com",
        "192.0.2.1",
        443,
        Some("badexample.com"),
        false,
    ),
    ("*.example.com", "192.0.2.1", 443, None, false),
    (
        "*.example.com:443",
        "192.0.2.1",
        80,
        Some("api.example.com"),
        false,
    ),
    ("metadata", "169.254.169.254", 80, None, true),
    ("metadata", "fd00:ec2::254", 80, None, true),
    ("metadata", "100.100.100.200", 80, None, true),
    (
        "metadata",
        "192.0.2.1",
        80,
        Some("metadata.google.internal"),
        true,
    ),
    ("metadata", "169.254.169.253", 80, None, false),
    ("METADATA", "169.254.169.254", 80, None, true),
    ("private", "10.1.1.1", 1, None, true),
    ("private", "172.16.0.1", 1, None, true),
    ("private", "172.31.255.255", 1, None, true),
    ("private", "172.32.0.1", 1, None, false),
    ("private", "192.168.1.1", 1, None, true),
    ("private", "fd12::1", 1, None, true),
    ("private", "fe80::1", 1, None, true),
    ("private", "169.254.169.254", 1, None, true),
    ("private", "8.8.8.8", 1, None, false),
    ("private", "127.0.0.1", 1, None, false),
];

#[test]
fn every_form_matches_as_the_table_says() {
    for &(spec, addr, port, host, want) in TABLE {
        let rule = Rule::parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!(
            rule.matches(ip(addr), port, host),
            want,
            "{spec} against {addr}:{port} {host:?}"
        );
        assert_eq!(rule.text(), spec);
    }
}

#[test]
fn nameserver_is_the_resolvers_on_port_53_once_they_are_read() {
    let mut rule = Rule::parse("NameServer").unwrap();
    assert_eq!(rule.text(), "NameServer");
    assert!(!rule.matches(ip("192.0.2.53"), 53, None), "none read yet");
    rule.set_resolvers(&[ip("192.0.2.53"), ip("::1")]);
    for (addr, port, want) in [
        ("192.0.2.53", 53, true),
        ("::1", 53, true),
        ("192.0.2.53", 853, false),
        ("192.0.2.54", 53, false),
    ] {
        assert_eq!(rule.matches(ip(addr), port, None), want, "{addr}:{port}");
    }
    assert!(!rule.names_hosts());
    assert!(Rule::parse("db.internal").unwrap().names_hosts());
    assert!(Rule::parse("*.example.com").unwrap().names_hosts());
}

#[test]
fn bad_specs_say_what_is_wrong() {
    for (spec, says) in [
        ("", "empty"),
        ("10.0.0.0/33", "prefix length"),
        ("nameserver:853", "takes no port"),
        ("::1/129", "prefix length"),
        ("10.0.0.0/x", "prefix length"),
        ("300.1.1.1", "not a valid IP"),
        ("10.0.0", "not a valid IP"),
        ("1.2.3.4:0", "port"),
        ("1.2.3.4:65536", "port"),
        ("1.2.3.4:http", "port"),
        ("[::1", "']'"),
        ("[::1]x", "after ']'"),
        ("bad host!", "not an IP address, a CIDR"),
        ("*.", "not an IP address, a CIDR"),
        ("a..b", "not an IP address, a CIDR"),
        ("nothere/8", "not an IP address"),
    ] {
        let e = Rule::parse(spec).unwrap_err();
        assert!(e.contains(says), "{spec:?}: {e}");
    }
}

#[test]
fn lists_split_on_commas_and_name_the_bad_spec() {
    let rules = parse_all(&["metadata, private", "10.0.0.1:80"]).unwrap();
    let texts: Vec<&str> = rules.iter().map(Rule::text).collect();
    assert_eq!(texts, ["metadata", "private", "10.0.0.1:80"]);
    let e = parse_all(&["10.0.0.1,10.0.0.0/40"]).unwrap_err();
    assert!(e.starts_with("\"10.0.0.0/40\": "), "{e}");
}

#[test]
fn an_empty_item_is_refused_not_skipped() {
    for value in ["", " ", "10.0.0.1,,10.0.0.2", "10.0.0.1,"] {
        let e = parse_all(&[value]).unwrap_err();
        assert!(e.contains("an empty rule"), "{value:?}: {e}");
    }
}
