//! ferrule-server over real loopback sockets, with a Rust handler in place of Python:
//! the gunicorn corpus whole and one byte at a time, and connection behaviour.
#![allow(clippy::disallowed_methods)] // tests may sleep

#[path = "../../ferrule-http/tests/support/corpus.rs"]
mod corpus;
#[path = "socket/proxy.rs"]
mod proxy;
#[path = "socket/stopping.rs"]
mod stopping;
#[path = "socket/tls.rs"]
mod tls;
#[path = "socket/uwsgi.rs"]
mod uwsgi;

use corpus::{config, expected, first_without_host, latin1, Seen, DEVIATIONS};
use ferrule_http::ParserConfig;
use ferrule_server::{Exchange, Handler, InPlace, Local, Server, ServerConfig};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Records every request whose body was read completely, answers `200 ok`.
/// `/sleep` waits 300 ms first, `/spin` computes for 50 ms; `/stream` answers in
/// chunks of unknown length.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
    /// `Exchange::client` of each of those requests.
    clients: Mutex<Vec<ferrule_server::Peer>>,
}

impl Handler for Recorder {
    fn handle(&self, mut ex: Box<Exchange>) -> Option<Box<Exchange>> {
        let mut body = Vec::new();
        loop {
            match ex.fill_body(&InPlace) {
                Ok([]) => break,
                Ok(b) => {
                    let n = b.len();
                    body.extend_from_slice(b);
                    ex.consume(n);
                }
                Err(e) => {
                    match e.status() {
                        Some(status) => drop(ex.respond_error(status, &InPlace)),
                        None => ex.close_after(),
                    }
                    return Some(ex);
                }
            }
        }
        let seen = Seen {
            method: latin1(ex.method()),
            path: latin1(ex.path()),
            query: latin1(ex.query()),
            fragment: String::new(),
            headers: ex
                .headers()
                .map(|(n, v)| (latin1(n).to_ascii_uppercase(), latin1(v)))
                .collect(),
            body,
        };
        let path = seen.path.clone();
        self.seen.lock().unwrap().push(seen);
        self.clients.lock().unwrap().push(ex.client());
        if path == "/sleep" {
            std::thread::sleep(Duration::from_millis(300));
        }
        if path == "/spin" {
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(50) {
                std::hint::spin_loop();
            }
        }
        ex.begin_head(b"200 OK").ok()?;
        if path == "/stream" {
            ex.end_head(None).ok()?;
            for part in [&b"one,"[..], b"two,", b"three"] {
                ex.write_body(part, true, &InPlace).ok()?;
            }
        } else {
            ex.add_header(b"Content-Length", b"2").ok()?;
            ex.end_head(None).ok()?;
            ex.write_body(b"ok", true, &InPlace).ok()?;
        }
        ex.finish(&InPlace).ok()?;
        Some(ex)
    }
}

struct Running {
    server: Option<Server>,
    addr: SocketAddr,
    handler: Arc<Recorder>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop(Duration::from_secs(2));
        }
    }
}

fn start(parser: ParserConfig, tweak: impl FnOnce(&mut ServerConfig)) -> Running {
    let mut cfg = ServerConfig {
        binds: vec![ferrule_server::Bind::Tcp("127.0.0.1:0".parse().unwrap()).into()],
        threads: 4,
        parser,
        ..ServerConfig::default()
    };
    tweak(&mut cfg);
    let mut server = Server::bind(cfg, None).expect("bind");
    let addr = match &server.addresses()[0] {
        Local::Tcp(a) => *a,
        other => panic!("{other:?}"),
    };
    let handler = Arc::new(Recorder::default());
    server.start(handler.clone()).expect("start");
    Running {
        server: Some(server),
        addr,
        handler,
    }
}

/// Sends `raw` (byte by byte when `slow`), half-closes, and reads until the server closes.
fn exchange(addr: SocketAddr, raw: &[u8], slow: bool) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    if slow {
        for b in raw {
            if s.write_all(&[*b]).is_err() {
                break; // the server may close early on a rejected request
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    } else {
        let _ = s.write_all(raw);
    }
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    // After the client's end of stream the server owes an answer or a close at once;
    // waiting for the read timeout means it lost track of the connection.
    if let Err(e) = s.read_to_end(&mut out) {
        assert!(
            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "the server neither answered nor closed after the client's end of stream"
        );
    }
    out
}

/// The status codes of the responses in `bytes`, in order.
fn statuses(bytes: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(bytes);
    text.match_indices("HTTP/1.")
        .filter_map(|(i, _)| text.get(i + 9..i + 12).and_then(|c| c.parse().ok()))
        .collect()
}

/// Cases where ferrule answers another status than the corpus's `gunicorn_status`,
/// which was recorded with gunicorn 26.
fn status_deviation(id: &str) -> Option<u16> {
    match id {
        // A request line over --limit-request-line: 414, as gunicorn 27 and nginx answer
        // (RFC 9112 §3); gunicorn 26 answered 400.
        "invalid/006" => Some(414),
        _ => None,
    }
}

#[test]
fn corpus_over_a_socket_whole_and_byte_by_byte() {
    let mut failures = Vec::new();
    for case in corpus::cases() {
        let cfg = config(&case.cfg);
        let trust_all = case.cfg.get("forwarded_allow_ips").is_some();
        for slow in [false, true] {
            let srv = start(cfg.clone(), |c| {
                if trust_all {
                    c.forwarded_allow_ips = ferrule_server::AllowIps::Any;
                }
            });
            let reply = exchange(srv.addr, &case.raw, slow);
            let codes = statuses(&reply);
            let seen = std::mem::take(&mut *srv.handler.seen.lock().unwrap());
            // The reference model (the sans-IO parser): requests accepted before any error.
            let (model, model_err) = corpus::run(&case.raw, &cfg, case.raw.len().max(1), trust_all);
            let deviation = DEVIATIONS.iter().any(|(d, _)| *d == case.id);
            let ok = if case.kind == "valid" && !deviation {
                let want: Vec<Seen> = corpus::connect_has_no_path(
                    case.expect["requests"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(expected)
                        .collect(),
                );
                if case.id == "valid/099" {
                    // Its body is cut short: the app never runs on a partial request.
                    seen.is_empty() && codes.is_empty()
                } else {
                    let strip = |v: Vec<Seen>| {
                        v.into_iter()
                            .map(|mut r| {
                                r.fragment.clear();
                                r
                            })
                            .collect::<Vec<_>>()
                    };
                    let n = want.len();
                    strip(seen.clone()) == strip(want) && codes == vec![200; n]
                }
            } else {
                // Rejected: no byte of the bad request reaches the app (only complete
                // requests before it may), and it gets gunicorn's status, or, where
                // gunicorn sends none (errors inside a body), a 4xx or a plain close.
                let before = model.len()
                    - usize::from(
                        model_err.is_some()
                            && case.kind == "invalid"
                            && !model.is_empty()
                            && model.len() > seen.len(),
                    );
                let want_status = case.expect["gunicorn_status"].as_u64().map(|s| s as u16);
                let status_ok = match (want_status, codes.last().copied()) {
                    (_, Some(got)) if deviation => got == 400,
                    (Some(w), Some(got)) => got == status_deviation(&case.id).unwrap_or(w),
                    (Some(_), None) => false,
                    (None, got) => got.is_none_or(|g| (400..500).contains(&g)),
                };
                seen.len() <= before
                    && status_ok
                    && codes.iter().filter(|&&c| c == 200).count() == seen.len()
            };
            if !ok {
                failures.push(format!(
                    "{} (slow={slow}): statuses {codes:?}, app saw {} request(s), model {} {:?}",
                    case.id,
                    seen.len(),
                    model.len(),
                    model_err
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// ferrule's default (no `--permit-missing-host`) over a socket: the corpus's valid
/// cases with an HTTP/1.1 request without Host get the requests before it answered and
/// a 400 for it, which the app never sees.
#[test]
fn corpus_without_permit_missing_host_over_a_socket() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in corpus::cases() {
        let deviation = DEVIATIONS.iter().any(|(d, _)| *d == case.id);
        let first = match first_without_host(&case.expect) {
            Some(k) if case.kind == "valid" && !deviation => k,
            _ => continue,
        };
        let mut cfg = config(&case.cfg);
        cfg.permit_missing_host = false;
        let trust_all = case.cfg.get("forwarded_allow_ips").is_some();
        let srv = start(cfg, |c| {
            if trust_all {
                c.forwarded_allow_ips = ferrule_server::AllowIps::Any;
            }
        });
        let codes = statuses(&exchange(srv.addr, &case.raw, false));
        let seen = std::mem::take(&mut *srv.handler.seen.lock().unwrap());
        let want: Vec<Seen> = case.expect["requests"]
            .as_array()
            .unwrap()
            .iter()
            .take(first)
            .map(expected)
            .collect();
        let paths = |v: &[Seen]| v.iter().map(|r| r.path.clone()).collect::<Vec<_>>();
        let mut want_codes = vec![200; first];
        want_codes.push(400);
        checked += 1;
        if codes != want_codes || paths(&seen) != paths(&want) {
            failures.push(format!(
                "{}: statuses {codes:?}, app saw {} request(s); expected {want_codes:?}",
                case.id,
                seen.len()
            ));
        }
    }
    assert!(checked >= 20, "only {checked} cases");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn request(addr: SocketAddr, raw: &[u8]) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(raw).unwrap();
    let mut buf = vec![0; 65536];
    let n = s.read(&mut buf).unwrap_or(0);
    buf.truncate(n);
    (s, buf)
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let srv = start(ParserConfig::default(), |_| {});
    let raw = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let reply = exchange(srv.addr, raw, false);
    assert_eq!(statuses(&reply), vec![200, 200, 200]);
    let paths: Vec<String> = srv
        .handler
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(paths, ["/a", "/b", "/c"]);
    assert!(String::from_utf8_lossy(&reply).ends_with("Connection: close\r\n\r\nok"));
}

#[test]
fn http10_closes_unless_keep_alive_is_asked_for() {
    let srv = start(ParserConfig::default(), |_| {});
    let reply = exchange(
        srv.addr,
        b"GET / HTTP/1.0\r\n\r\nGET /never HTTP/1.0\r\n\r\n",
        false,
    );
    assert_eq!(statuses(&reply), vec![200]);
    let reply = exchange(
        srv.addr,
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /two HTTP/1.0\r\n\r\n",
        false,
    );
    assert_eq!(statuses(&reply), vec![200, 200]);
    assert!(String::from_utf8_lossy(&reply).contains("Connection: keep-alive"));
}

#[test]
fn unknown_length_is_chunked_on_http11_and_close_delimited_on_http10() {
    let srv = start(ParserConfig::default(), |_| {});
    let reply = String::from_utf8(exchange(
        srv.addr,
        b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        false,
    ))
    .unwrap();
    assert!(reply.contains("Transfer-Encoding: chunked\r\n"), "{reply}");
    assert!(
        reply.ends_with("4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\n\r\n"),
        "{reply}"
    );
    let reply =
        String::from_utf8(exchange(srv.addr, b"GET /stream HTTP/1.0\r\n\r\n", false)).unwrap();
    assert!(!reply.contains("Transfer-Encoding"), "{reply}");
    assert!(reply.ends_with("\r\n\r\none,two,three"), "{reply}");
}

#[test]
fn a_slow_head_gets_408_and_an_idle_connection_is_closed() {
    let srv = start(ParserConfig::default(), |c| {
        c.header_timeout = Duration::from_millis(300);
        c.keep_alive = Duration::from_millis(300);
    });
    let started = Instant::now();
    let (mut s, first) = request(srv.addr, b"GET / HTTP/1.1\r\nHost: x\r\n");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let all = [first, rest].concat();
    assert_eq!(statuses(&all), vec![408]);
    assert!(started.elapsed() < Duration::from_secs(3));
    // An idle keep-alive connection is closed without a response.
    let (mut s, first) = request(srv.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(statuses(&first), vec![200]);
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap_or(0), 0);
}

/// A listener reports a connection once its first bytes arrive (`TCP_DEFER_ACCEPT`), so
/// one that sends nothing is accepted only when the kernel gives up waiting (about a
/// second); the head deadline then closes it as before.
#[test]
fn a_connection_that_never_sends_is_closed_all_the_same() {
    let srv = start(ParserConfig::default(), |c| {
        c.header_timeout = Duration::from_millis(300);
    });
    let started = Instant::now();
    let mut silent = TcpStream::connect(srv.addr).unwrap();
    // Meanwhile another connection is served at once.
    let (_, reply) = request(
        srv.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(statuses(&reply), vec![200]);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "waited for the silent one"
    );
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    assert_eq!(silent.read_to_end(&mut got).unwrap(), 0, "{got:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
}

#[test]
fn expect_100_continue_is_sent_only_when_the_body_is_read() {
    let srv = start(ParserConfig::default(), |_| {});
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").unwrap();
    let n = s.read(&mut buf).unwrap();
    assert_eq!(statuses(&buf[..n]), vec![200]);
    assert_eq!(srv.handler.seen.lock().unwrap()[0].body, b"hello");
}

#[test]
fn body_over_the_limit_is_413_before_the_app_sees_it() {
    let parser = ParserConfig {
        limit_request_body: 4,
        ..ParserConfig::default()
    };
    let srv = start(parser, |_| {});
    let reply = exchange(
        srv.addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        false,
    );
    assert_eq!(statuses(&reply), vec![413]);
    let reply = exchange(
        srv.addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        false,
    );
    assert_eq!(statuses(&reply), vec![413]);
    assert!(srv.handler.seen.lock().unwrap().is_empty());
}

#[test]
fn a_blocked_request_does_not_stall_others() {
    let srv = start(ParserConfig::default(), |_| {});
    let addr = srv.addr;
    let slow = std::thread::spawn(move || {
        exchange(
            addr,
            b"GET /sleep HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            false,
        )
    });
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let reply = exchange(
        srv.addr,
        b"GET /fast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        false,
    );
    assert_eq!(statuses(&reply), vec![200]);
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(statuses(&slow.join().unwrap()), vec![200]);
}

/// Opens a keep-alive connection.
fn keep_alive(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads one `Content-Length: 2` response from a keep-alive connection.
fn read_ok(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"\r\n\r\nok") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

#[test]
fn an_answer_is_not_held_back_while_the_next_request_blocks() {
    let srv = start(ParserConfig::default(), |_| {});
    let [mut busy, mut fast, mut slow] = [(); 3].map(|_| keep_alive(srv.addr));
    std::thread::sleep(Duration::from_millis(20));
    // While the one runner computes, a quick request and a blocking one arrive; it
    // then finds both ready at once and serves them in that order.
    busy.write_all(b"GET /spin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(10));
    let sent = Instant::now();
    fast.write_all(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    slow.write_all(b"GET /sleep HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(statuses(&read_ok(&mut fast)), vec![200]);
    let waited = sent.elapsed();
    assert!(waited < Duration::from_millis(200), "{waited:?}");
    assert_eq!(statuses(&read_ok(&mut busy)), vec![200]);
    assert_eq!(statuses(&read_ok(&mut slow)), vec![200]);
}

#[test]
fn graceful_stop_lets_the_request_in_flight_finish() {
    let mut srv = start(ParserConfig::default(), |_| {});
    let addr = srv.addr;
    let slow = std::thread::spawn(move || {
        exchange(addr, b"GET /sleep HTTP/1.1\r\nHost: x\r\n\r\n", false)
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(srv.server.take().unwrap().stop(Duration::from_secs(5)));
    let reply = String::from_utf8(slow.join().unwrap()).unwrap();
    assert_eq!(statuses(reply.as_bytes()), vec![200]);
    assert!(reply.contains("Connection: close"), "{reply}");
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after stop"
    );
}

#[test]
fn graceful_stop_answers_kept_alive_connections_and_closes_them_when_quiet() {
    let mut srv = start(ParserConfig::default(), |_| {});
    let addr = srv.addr;
    let [mut idle, mut used] = [(); 2].map(|_| keep_alive(addr));
    for s in [&mut idle, &mut used] {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(statuses(&read_ok(s)), vec![200]);
    }
    let slow = std::thread::spawn(move || {
        exchange(addr, b"GET /sleep HTTP/1.1\r\nHost: x\r\n\r\n", false)
    });
    std::thread::sleep(Duration::from_millis(50));
    let server = srv.server.take().unwrap();
    let stopped = Instant::now();
    // Graceful timeout 2 s: a quiet connection is closed after 1 s.
    let stopper = std::thread::spawn(move || server.stop(Duration::from_secs(2)));
    std::thread::sleep(Duration::from_millis(50));
    // A connection the client goes on using: pipelined requests are all answered, and
    // the last one says the connection closes.
    used.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    used.read_to_end(&mut got).unwrap();
    let text = String::from_utf8_lossy(&got);
    assert_eq!(statuses(&got), vec![200, 200], "{text}");
    assert_eq!(text.matches("Connection: close").count(), 1, "{text}");
    assert!(
        text.rfind("Connection: close") > text.rfind("HTTP/1.1 200"),
        "{text}"
    );
    // The idle one is closed without an answer once quiet, not at once.
    let mut buf = [0u8; 64];
    assert_eq!(idle.read(&mut buf).unwrap_or(usize::MAX), 0);
    let quiet = stopped.elapsed();
    assert!(quiet > Duration::from_millis(800), "{quiet:?}");
    assert_eq!(statuses(&slow.join().unwrap()), vec![200]);
    assert!(stopper.join().unwrap());
    assert!(stopped.elapsed() < Duration::from_millis(1900));
}

#[test]
fn a_request_sent_after_the_last_answer_of_a_drain_does_not_reset_that_answer() {
    let mut srv = start(ParserConfig::default(), |_| {});
    let addr = srv.addr;
    let mut c = keep_alive(addr);
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(statuses(&read_ok(&mut c)), vec![200]);
    let server = srv.server.take().unwrap();
    let stopper = std::thread::spawn(move || server.stop(Duration::from_secs(4)));
    std::thread::sleep(Duration::from_millis(50));
    // The next request arrives while the app sleeps (300 ms): the answer to /sleep is
    // the last (it says close), and /b is left unread in the socket.
    c.write_all(b"GET /sleep HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    c.write_all(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let mut got = Vec::new();
    let end = c.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(end.is_ok(), "{end:?} after {text}");
    assert_eq!(statuses(&got), vec![200], "{text}");
    assert!(text.contains("Connection: close"), "{text}");
    drop(c);
    assert!(stopper.join().unwrap());
}

/// A client sending nothing but empty lines (50 MB of CRLF) gets 414 once they pass
/// the request-line limit and is closed: the server stops reading after a few
/// kilobytes, and another client is answered meanwhile.
#[test]
fn a_flood_of_empty_lines_is_refused_at_the_request_line_limit() {
    let srv = start(ParserConfig::default(), |_| {});
    let mut flood = TcpStream::connect(srv.addr).unwrap();
    flood
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let writer = flood.try_clone().unwrap();
    let started = Instant::now();
    let sender = std::thread::spawn(move || {
        let mut writer = writer;
        writer
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let chunk = b"\r\n".repeat(32 * 1024);
        let mut sent = 0usize;
        // Bounded in bytes (50 MB) and time (10 s).
        while sent < 50 << 20 && started.elapsed() < Duration::from_secs(10) {
            match writer.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        sent
    });
    // Another client is served while the flood goes on.
    let (_other, reply) = request(
        srv.addr,
        b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(statuses(&reply), vec![200]);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match flood.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                // A reset after the answer: the client was still sending.
                assert!(
                    !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                    "the server neither answered nor closed: {e}"
                );
                break;
            }
        }
    }
    assert_eq!(
        statuses(&got),
        vec![414],
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let sent = sender.join().unwrap();
    // Socket buffers hold a few MB at most; the rest was refused by the closed socket.
    assert!(
        sent < 20 << 20,
        "the server kept reading: {sent} bytes taken"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let paths: Vec<String> = srv
        .handler
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(paths, ["/other"]);
}

/// Empty lines before a request line are ignored (RFC 9112 §2.2), also when they
/// arrive one byte at a time and between pipelined requests; with the request line
/// they must fit in `limit_request_line`.
#[test]
fn empty_lines_before_a_request_are_ignored_up_to_the_limit() {
    let srv = start(
        ParserConfig {
            limit_request_line: 40,
            ..ParserConfig::default()
        },
        |_| {},
    );
    let req = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"; // a request line of 15 bytes
    let ok = format!("{}{req}{}{req}", "\r\n".repeat(12), "\r\n".repeat(12));
    for slow in [false, true] {
        assert_eq!(
            statuses(&exchange(srv.addr, ok.as_bytes(), slow)),
            vec![200, 200]
        );
    }
    let over = format!("{req}{}{req}", "\r\n".repeat(13));
    for slow in [false, true] {
        assert_eq!(
            statuses(&exchange(srv.addr, over.as_bytes(), slow)),
            vec![200, 414]
        );
    }
}
