//! `--proxy-protocol` over loopback sockets: gunicorn's 8 `pp_*` cases whole and one
//! byte at a time, keep-alive and pipelining after one header, and every refusal
//! (no header, a header from a peer outside `--proxy-allow-from`, the wrong version,
//! malformed, too slow). A refused connection is closed without an answer and the app
//! sees nothing of it.

use super::corpus::{self, config, connect_has_no_path, expected, Seen};
use super::{exchange, start, statuses, Running};
use ferrule_http::{ParserConfig, ProxyMode};
use ferrule_server::{AllowIps, Peer};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn proxied(
    mode: ProxyMode,
    allow: &str,
    tweak: impl FnOnce(&mut ferrule_server::ServerConfig),
) -> Running {
    start(ParserConfig::default(), |c| {
        c.proxy_protocol = Some(mode);
        c.proxy_allow_ips = AllowIps::parse(allow).unwrap();
        tweak(c);
    })
}

fn tcp(s: &str) -> Peer {
    Peer::Tcp(s.parse().unwrap())
}

/// What the app saw: the paths and the clients they came from.
fn seen(srv: &Running) -> (Vec<String>, Vec<Peer>) {
    let paths = srv
        .handler
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.path.clone())
        .collect();
    (paths, srv.handler.clients.lock().unwrap().clone())
}

/// The `pp_*` cases: (id, bytes, expectation).
fn pp_cases() -> Vec<(String, Vec<u8>, Value)> {
    let dir = corpus::corpus_dir();
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index.json"))
            .expect("index.json");
    let mut out = Vec::new();
    for case in index["cases"].as_array().expect("cases") {
        let (Some(kind), Some(name)) = (case["kind"].as_str(), case["name"].as_str()) else {
            continue;
        };
        if !name.starts_with("pp_") {
            continue;
        }
        let id = format!("{kind}/{name}");
        let raw = std::fs::read(dir.join(format!("{id}.http"))).expect("case bytes");
        let json = std::fs::read(dir.join(format!("{id}.json"))).expect("case json");
        out.push((id, raw, serde_json::from_slice(&json).expect("case json")));
    }
    out
}

/// The client each valid case's header names (as `proxy_corpus.rs` reads them).
fn header_source(id: &str) -> Option<Peer> {
    Some(match id {
        "valid/pp_01" | "valid/pp_02" => tcp("192.168.0.1:56324"),
        "valid/pp_04" => tcp("192.168.1.10:12345"),
        "valid/pp_05" => tcp("[2001:db8::1]:54321"),
        _ => return None,
    })
}

#[test]
fn gunicorn_proxy_cases_over_a_socket_whole_and_byte_by_byte() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for (id, raw, exp) in pp_cases() {
        let parser = config(&exp["cfg"]);
        let want: Vec<Seen> = match exp["requests"].as_array() {
            Some(r) => connect_has_no_path(r.iter().map(expected).collect()),
            None => Vec::new(),
        };
        // valid/pp_03 has no header: refused from an allowed peer (the spec forbids
        // guessing), served from one outside --proxy-allow-from (see proxy_corpus.rs).
        let allows: &[&str] = match id.as_str() {
            "valid/pp_03" => &["127.0.0.1,::1", "10.0.0.0/8"],
            _ => &["127.0.0.1,::1"],
        };
        for allow in allows {
            for slow in [false, true] {
                checked += 1;
                let srv = start(parser.clone(), |c| {
                    c.proxy_protocol = Some(ProxyMode::Auto);
                    c.proxy_allow_ips = AllowIps::parse(allow).unwrap();
                });
                let reply = exchange(srv.addr, &raw, slow);
                let got = std::mem::take(&mut *srv.handler.seen.lock().unwrap());
                let clients = std::mem::take(&mut *srv.handler.clients.lock().unwrap());
                let loopback = Peer::Tcp(SocketAddr::new([127, 0, 0, 1].into(), 0));
                let ok = match (id.starts_with("valid/"), header_source(&id)) {
                    (true, Some(src)) => {
                        got == want
                            && statuses(&reply) == vec![200; want.len()]
                            && clients.iter().all(|c| *c == src)
                    }
                    // No header: plain HTTP from a peer outside the list, from the
                    // socket's own address.
                    (true, None) if *allow == "10.0.0.0/8" => {
                        got == want
                            && statuses(&reply) == vec![200; want.len()]
                            && clients.iter().all(|c| c.ip() == loopback.ip())
                    }
                    // Refused: closed without an answer, nothing reached the app.
                    _ => got.is_empty() && reply.is_empty(),
                };
                if !ok {
                    failures.push(format!(
                        "{id} (allow {allow}, slow={slow}): reply {:?}, app saw {} request(s) from {clients:?}",
                        String::from_utf8_lossy(&reply),
                        got.len()
                    ));
                }
            }
        }
    }
    assert_eq!(checked, 2 * 9, "the corpus has 8 PROXY cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// One header, then requests pipelined in its packet and more after their answers:
/// every one comes from the header's client.
#[test]
fn the_header_applies_to_every_request_on_the_connection() {
    let srv = proxied(ProxyMode::Auto, "127.0.0.1", |_| {});
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let get = |p: &str| format!("GET /{p} HTTP/1.1\r\nHost: x\r\n\r\n");
    let first = format!(
        "PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n{}{}",
        get("a"),
        get("b")
    );
    s.write_all(first.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    while statuses(&got).len() < 2 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    s.write_all(get("c").as_bytes()).unwrap();
    s.write_all(b"GET /d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert_eq!(statuses(&[got, rest].concat()), vec![200; 4]);
    let (paths, clients) = seen(&srv);
    assert_eq!(paths, ["/a", "/b", "/c", "/d"]);
    assert_eq!(clients, vec![tcp("[2001:db8::7]:40000"); 4]);
}

/// v2 binary headers: TCP4 with TLVs skipped; LOCAL and AF_UNSPEC (and v1 UNKNOWN)
/// keep the socket's own peer.
#[test]
fn v2_headers_and_those_that_keep_the_socket_peer() {
    let srv = proxied(ProxyMode::Auto, "127.0.0.1", |_| {});
    let v2 = |ver_cmd: u8, fam: u8, rest: &[u8]| {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.extend_from_slice(&[ver_cmd, fam, 0, rest.len() as u8]);
        h.extend_from_slice(rest);
        h
    };
    let mut addrs = vec![203, 0, 113, 9, 127, 0, 0, 1, 0xd4, 0x31, 0x1f, 0x90];
    // PP2_TYPE_ALPN "h2", PP2_TYPE_AUTHORITY "example.com", PP2_TYPE_NOOP.
    addrs.extend_from_slice(&[0x01, 0, 2, b'h', b'2', 0x02, 0, 11]);
    addrs.extend_from_slice(b"example.com");
    addrs.extend_from_slice(&[0x04, 0, 0]);
    let close = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for (header, want) in [
        (v2(0x21, 0x11, &addrs), Some(tcp("203.0.113.9:54321"))),
        (v2(0x20, 0x00, &[]), None),
        (v2(0x21, 0x00, &[9; 4]), None),
        (b"PROXY UNKNOWN whatever follows\r\n".to_vec(), None),
    ] {
        for slow in [false, true] {
            srv.handler.clients.lock().unwrap().clear();
            let reply = exchange(srv.addr, &[&header[..], close].concat(), slow);
            assert_eq!(statuses(&reply), vec![200], "{header:?}");
            let clients = srv.handler.clients.lock().unwrap().clone();
            match want {
                Some(src) => assert_eq!(clients, vec![src]),
                // The socket's peer: loopback, from an ephemeral port.
                None => assert!(
                    matches!(clients[..], [Peer::Tcp(a)] if a.ip().is_loopback() && a.port() != 0),
                    "{clients:?}"
                ),
            }
        }
    }
}

/// Each refusal closes the connection without a byte of answer, and the app sees none.
#[test]
fn refusals_close_without_an_answer() {
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let v1 = [
        b"PROXY TCP4 10.1.2.3 10.0.0.1 5555 80\r\n".as_slice(),
        request,
    ]
    .concat();
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[10, 1, 2, 3, 10, 0, 0, 1, 0x15, 0xb3, 0, 80]);
    v2.extend_from_slice(request);
    // (mode, allow-from, bytes, why)
    let cases: Vec<(ProxyMode, &str, Vec<u8>, &str)> = vec![
        (
            ProxyMode::Auto,
            "127.0.0.1",
            request.to_vec(),
            "no header from an allowed peer",
        ),
        (
            ProxyMode::Auto,
            "10.0.0.0/8",
            v1.clone(),
            "a v1 header from a peer outside the list",
        ),
        (
            ProxyMode::Auto,
            "10.0.0.0/8",
            v2.clone(),
            "a v2 header from a peer outside the list",
        ),
        (
            ProxyMode::V1,
            "127.0.0.1",
            v2.clone(),
            "v2 where v1 is expected",
        ),
        (
            ProxyMode::V2,
            "127.0.0.1",
            v1.clone(),
            "v1 where v2 is expected",
        ),
        (
            ProxyMode::Auto,
            "127.0.0.1",
            b"PROXY TCP4 10.1.2.3 10.0.0.1 5555 80\n\r\n".to_vec(),
            "a v1 line without CRLF",
        ),
        (
            ProxyMode::Auto,
            "127.0.0.1",
            [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat(),
            "a v1 line over 107 bytes",
        ),
        (
            ProxyMode::Auto,
            "127.0.0.1",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0cshort".to_vec(),
            "a v2 length past the data",
        ),
    ];
    for (mode, allow, bytes, why) in cases {
        for slow in [false, true] {
            let srv = proxied(mode, allow, |_| {});
            let reply = exchange(srv.addr, &bytes, slow);
            assert!(
                reply.is_empty(),
                "{why}: answered {:?}",
                String::from_utf8_lossy(&reply)
            );
            assert!(seen(&srv).0.is_empty(), "{why}: the app saw a request");
        }
    }
    // The same peer outside the list, without a header, is served as it comes.
    let srv = proxied(ProxyMode::Auto, "10.0.0.0/8", |_| {});
    let reply = exchange(
        srv.addr,
        b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        true,
    );
    assert_eq!(statuses(&reply), vec![200]);
    assert_eq!(seen(&srv).0, ["/plain"]);
}

/// A header that does not arrive within --header-timeout (part of one, or nothing)
/// closes the connection without an answer.
#[test]
fn the_header_must_arrive_within_the_header_timeout() {
    let srv = proxied(ProxyMode::Auto, "127.0.0.1", |c| {
        c.header_timeout = Duration::from_millis(300);
    });
    for first in [
        &b"PROXY TCP4 10.1"[..],
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c",
        b"",
    ] {
        let started = Instant::now();
        let mut s = TcpStream::connect(srv.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(first).unwrap();
        let mut got = Vec::new();
        // Closed (maybe reset, as its bytes were not read); a read timeout is a failure.
        if let Err(e) = s.read_to_end(&mut got) {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset,
                "{first:?}: {e}"
            );
        }
        assert!(got.is_empty(), "{first:?}: answered {got:?}");
        let waited = started.elapsed();
        // A silent connection is accepted only when TCP_DEFER_ACCEPT gives up (~1 s).
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(8),
            "{first:?}: {waited:?}"
        );
    }
    assert!(seen(&srv).0.is_empty());
}
