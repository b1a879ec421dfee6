//! `--protocol uwsgi` over real sockets: packets as nginx sends them, whole and one
//! byte at a time, what the app sees, the answers' framing, and every refusal.

#[path = "uwsgi_app.rs"]
mod app;

use app::{nginx, packet, send, send_in, start, text, Seen, UNREAD_ANSWER};
use ferrule_http::ParserConfig;
use ferrule_server::{AllowIps, Bind, Peer};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nX-App: 1\r\nContent-Length: 2\r\n\r\nok";

#[test]
fn a_packet_whole_or_byte_by_byte_reaches_the_app_with_its_variables() {
    let srv = start(|_| {});
    let vars = nginx("POST", "/caf%C3%A9/a%2Fb?q=1", "5");
    let raw = [packet(&vars), b"hello".to_vec()].concat();
    for slow in [false, true] {
        // No Date, Server or Connection of ferrule's; the length the app gave.
        assert_eq!(text(&send(srv.tcp(), &raw, slow)), text(OK), "slow {slow}");
    }
    let want = Seen {
        method: "POST".into(),
        path: "/caf%C3%A9/a%2Fb".into(),
        query: "q=1".into(),
        client: Peer::Tcp("203.0.113.9:50123".parse().unwrap()),
        vars: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: Ok(b"hello".to_vec()),
    };
    assert_eq!(srv.seen(), vec![want.clone(), want]);
}

#[test]
fn a_vars_block_near_64_kib_is_served_whole_or_in_pieces() {
    let srv = start(|_| {});
    let names: Vec<String> = (0..85).map(|i| format!("HTTP_X_FIELD_{i}")).collect();
    let value = "v".repeat(700);
    let mut vars = nginx("GET", "/", "");
    vars.extend(names.iter().map(|n| (n.as_str(), value.as_str())));
    let raw = packet(&vars);
    assert!(
        raw.len() > 60_000 && raw.len() <= 4 + 65535,
        "{}",
        raw.len()
    );
    // Whole, and in pieces that end inside the header, the names and the values.
    for step in [raw.len(), 97] {
        assert_eq!(
            text(&send_in(srv.tcp(), &raw, step)),
            text(OK),
            "step {step}"
        );
    }
    for seen in srv.seen() {
        assert_eq!(seen.vars.len(), vars.len());
        assert_eq!(seen.vars.last().map(|(_, v)| v.len()), Some(700));
    }
    assert_eq!(srv.seen().len(), 2);
}

#[test]
fn malformed_packets_are_closed_on_and_never_reach_the_app() {
    let srv = start(|_| {});
    let good = packet(&nginx("GET", "/", ""));
    let mut modifier = good.clone();
    modifier[0] = 5;
    let mut cut = good.clone();
    cut[1] = cut[1].wrapping_sub(1); // the last value runs past the block
    let no_method = packet(&[("SERVER_PROTOCOL", "HTTP/1.1"), ("HTTP_HOST", "x")]);
    let bad_length = packet(&[
        ("REQUEST_METHOD", "GET"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("CONTENT_LENGTH", "-1"),
    ]);
    for raw in [modifier, cut, no_method, bad_length] {
        assert_eq!(send(srv.tcp(), &raw, false), b"", "{raw:?}");
    }
    assert!(srv.seen().is_empty());
}

#[test]
fn a_broken_limit_is_answered_with_its_status_before_the_app() {
    let srv = start(|c| {
        c.parser = ParserConfig {
            limit_request_body: 4,
            limit_request_line: 20,
            ..ParserConfig::default()
        }
    });
    let raw = [packet(&nginx("POST", "/", "5")), b"hello".to_vec()].concat();
    let answer = text(&send(srv.tcp(), &raw, false));
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    // The front server adds its own: ferrule's would replace them (nginx passes both).
    assert!(
        !answer.contains("Date:") && !answer.contains("Server:") && !answer.contains("Connection:")
    );
    let raw = packet(&nginx("GET", "/a-long-path-for-the-limit", ""));
    assert!(send(srv.tcp(), &raw, false).starts_with(b"HTTP/1.1 414 "));
    assert!(srv.seen().is_empty());
}

#[test]
fn a_peer_outside_uwsgi_allow_from_is_refused_and_a_unix_peer_always_allowed() {
    let srv = start(|c| c.uwsgi_allow_ips = AllowIps::parse("10.0.0.0/8").unwrap());
    let raw = packet(&nginx("GET", "/", ""));
    let mut s = TcpStream::connect(srv.tcp()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&raw).unwrap();
    // Closed unread: the packet left in the socket may make it a reset.
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => assert_eq!(out, b""),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
    assert!(srv.seen().is_empty());
    let path = std::env::temp_dir().join(format!("ferrule-uwsgi-{}.sock", std::process::id()));
    let srv = start(|c| {
        c.uwsgi_allow_ips = AllowIps::parse("10.0.0.0/8").unwrap();
        c.binds = vec![Bind::Unix(path.clone()).into()];
    });
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&raw).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert_eq!(text(&out), text(OK));
    assert_eq!(srv.seen().len(), 1);
}

#[test]
fn a_packet_must_arrive_within_the_header_timeout() {
    let srv = start(|c| c.header_timeout = Duration::from_millis(300));
    let raw = packet(&nginx("GET", "/", ""));
    let mut s = TcpStream::connect(srv.tcp()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    s.write_all(&raw[..raw.len() / 2]).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert!(out.starts_with(b"HTTP/1.1 408 "), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(srv.seen().is_empty());
}

#[test]
fn streamed_blocks_go_out_as_produced_and_the_body_ends_with_the_connection() {
    let srv = start(|_| {});
    let mut s = TcpStream::connect(srv.tcp()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&packet(&nginx("GET", "/stream", ""))).unwrap();
    let mut got = Vec::new();
    for want in ["one,", "two,", "three"] {
        srv.go.send(()).unwrap();
        // Each block arrives before the app is told to make the next one.
        while !text(&got).ends_with(want) {
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "closed early: {}", text(&got));
            got.extend_from_slice(&buf[..n]);
        }
    }
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    let all = text(&[got, rest].concat());
    assert_eq!(all, "HTTP/1.1 200 OK\r\nX-App: 1\r\n\r\none,two,three");
}

#[test]
fn head_has_the_length_and_no_body_and_a_file_goes_out_whole() {
    let srv = start(|_| {});
    let out = send(srv.tcp(), &packet(&nginx("HEAD", "/", "")), false);
    assert_eq!(
        text(&out),
        "HTTP/1.1 200 OK\r\nX-App: 1\r\nContent-Length: 2\r\n\r\n"
    );
    let out = send(srv.tcp(), &packet(&nginx("GET", "/file", "")), false);
    let head = b"HTTP/1.1 200 OK\r\nX-App: 1\r\n\r\n";
    assert!(out.starts_with(head), "{}", text(&out[..64.min(out.len())]));
    assert_eq!(out[head.len()..], vec![b'f'; 100_000][..]);
}

#[test]
fn a_body_cut_short_is_an_error_on_wsgi_input_never_a_short_body() {
    let raw = [packet(&nginx("POST", "/", "10")), b"0123".to_vec()].concat();
    // Read by the app as it arrives: its read fails.
    let srv = start(|c| c.request_buffering = false);
    assert_eq!(send(srv.tcp(), &raw, false), b"");
    let seen = srv.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].body.is_err(), "{:?}", seen[0].body);
    // Read before the app runs: the app never sees it.
    let srv = start(|_| {});
    assert_eq!(send(srv.tcp(), &raw, false), b"");
    assert!(srv.seen().is_empty());
}

#[test]
fn a_body_the_app_leaves_unread_does_not_reset_its_answer() {
    let srv = start(|c| c.request_buffering = false);
    let body = vec![b'b'; 4 << 20];
    let mut s = TcpStream::connect(srv.tcp()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&packet(&nginx("POST", "/unread", "4194304")))
        .unwrap();
    let mut writer = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&body);
        let _ = writer.shutdown(Shutdown::Write);
    });
    // A close with the body unread would reset the connection, and a reset throws
    // away what of the answer the kernel has not sent yet.
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("the answer, not a reset");
    let head = b"HTTP/1.1 200 OK\r\nX-App: 1\r\nContent-Length: 8388608\r\n\r\n";
    assert!(out.starts_with(head), "{}", text(&out[..64.min(out.len())]));
    assert_eq!(out.len(), head.len() + UNREAD_ANSWER);
    sender.join().unwrap();
}
