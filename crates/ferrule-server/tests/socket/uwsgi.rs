//! `--protocol uwsgi` over real sockets: packets as nginx sends them, whole and one
//! byte at a time, what the app sees, the answers' framing, and every refusal.

use ferrule_http::ParserConfig;
use ferrule_server::{
    AllowIps, Bind, Exchange, Handler, InPlace, Local, Peer, Protocol, Server, ServerConfig,
};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the app saw of a request.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    path: String,
    query: String,
    client: Peer,
    vars: Vec<(String, String)>,
    /// The body, or the error its read ended with.
    body: Result<Vec<u8>, String>,
}

/// Answers by path (and not at all when reading the body failed): `/stream` three blocks of unknown length, each after the test
/// says go; `/file` the file in `file` with sendfile, its length unknown;
/// `/unread` without reading the body; anything else `ok` with a length.
struct App {
    seen: Mutex<Vec<Seen>>,
    go: Mutex<Receiver<()>>,
    file: PathBuf,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl App {
    fn read_body(ex: &mut Exchange) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            match ex.fill_body(&InPlace) {
                Ok([]) => return Ok(body),
                Ok(b) => {
                    let n = b.len();
                    body.extend_from_slice(b);
                    ex.consume(n);
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

impl Handler for App {
    fn handle(&self, mut ex: Box<Exchange>) -> Option<Box<Exchange>> {
        let path = text(ex.path());
        let body = match path.as_str() {
            "/unread" => Ok(Vec::new()),
            _ => Self::read_body(&mut ex),
        };
        let vars = ex.ready_vars()?.iter().map(|(n, v)| (text(n), text(v)));
        let seen = Seen {
            method: text(ex.method()),
            path: path.clone(),
            query: text(ex.query()),
            client: ex.client(),
            vars: vars.collect(),
            body,
        };
        let failed = seen.body.is_err();
        self.seen.lock().unwrap().push(seen);
        if failed {
            // What an app does whose read of wsgi.input raised: no answer.
            return None;
        }
        ex.begin_head(b"200 OK").ok()?;
        ex.add_header(b"X-App", b"1").ok()?;
        match path.as_str() {
            "/stream" => {
                ex.end_head(None).ok()?;
                for part in [&b"one,"[..], b"two,", b"three"] {
                    let go = self
                        .go
                        .lock()
                        .unwrap()
                        .recv_timeout(Duration::from_secs(10));
                    go.ok()?;
                    ex.write_body(part, true, &InPlace).ok()?;
                }
            }
            "/file" => {
                let f = std::fs::File::open(&self.file).ok()?;
                let len = f.metadata().ok()?.len();
                ex.end_head(None).ok()?;
                assert!(
                    ex.send_file(f.as_raw_fd(), 0, len, &InPlace).ok()?,
                    "copied"
                );
            }
            _ => {
                ex.end_head(Some(2)).ok()?;
                ex.write_body(b"ok", true, &InPlace).ok()?;
            }
        }
        ex.finish(&InPlace).ok()?;
        Some(ex)
    }
}

struct Running {
    server: Option<Server>,
    addr: Local,
    app: Arc<App>,
    go: Sender<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop(Duration::from_secs(2));
        }
        let _ = std::fs::remove_file(&self.app.file);
    }
}

fn start(tweak: impl FnOnce(&mut ServerConfig)) -> Running {
    let mut cfg = ServerConfig {
        binds: vec![Bind::Tcp("127.0.0.1:0".parse().unwrap())],
        threads: 4,
        protocol: Protocol::Uwsgi,
        ..ServerConfig::default()
    };
    tweak(&mut cfg);
    let mut server = Server::bind(cfg, None).expect("bind");
    let addr = server.addresses()[0].clone();
    let (go, wait) = channel();
    static STARTED: AtomicUsize = AtomicUsize::new(0);
    let n = STARTED.fetch_add(1, Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!("ferrule-uwsgi-{}-{n}", std::process::id()));
    std::fs::write(&file, vec![b'f'; 100_000]).unwrap();
    let app = Arc::new(App {
        seen: Mutex::default(),
        go: Mutex::new(wait),
        file,
    });
    server.start(app.clone()).expect("start");
    Running {
        server: Some(server),
        addr,
        app,
        go,
    }
}

impl Running {
    fn tcp(&self) -> SocketAddr {
        match &self.addr {
            Local::Tcp(a) => *a,
            other => panic!("{other:?}"),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.app.seen.lock().unwrap().clone()
    }
}

type Vars<'a> = &'a [(&'a str, &'a str)];

/// A packet of `vars` (modifier1 0), as nginx encodes it.
fn packet(vars: Vars) -> Vec<u8> {
    let mut block = Vec::new();
    for (k, v) in vars {
        for f in [k.as_bytes(), v.as_bytes()] {
            block.extend_from_slice(&(f.len() as u16).to_le_bytes());
            block.extend_from_slice(f);
        }
    }
    let mut out = vec![0];
    out.extend_from_slice(&(block.len() as u16).to_le_bytes());
    out.push(0);
    out.extend_from_slice(&block);
    out
}

/// nginx's `uwsgi_params` for `method uri` with a body of `len` bytes, then the
/// request's fields.
fn nginx(
    method: &'static str,
    uri: &'static str,
    len: &'static str,
) -> Vec<(&'static str, &'static str)> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    vec![
        ("QUERY_STRING", query),
        ("REQUEST_METHOD", method),
        (
            "CONTENT_TYPE",
            if len.is_empty() { "" } else { "text/plain" },
        ),
        ("CONTENT_LENGTH", len),
        ("REQUEST_URI", uri),
        ("PATH_INFO", path),
        ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("REMOTE_ADDR", "203.0.113.9"),
        ("REMOTE_PORT", "50123"),
        ("SERVER_PORT", "80"),
        ("SERVER_NAME", "example.com"),
        ("HTTP_HOST", "example.com"),
        ("HTTP_USER_AGENT", "curl/8.5.0"),
    ]
}

/// Sends `raw` (byte by byte when `slow`), half-closes, and reads until the server
/// closes.
fn send(addr: SocketAddr, raw: &[u8], slow: bool) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    if slow {
        for b in raw {
            s.write_all(&[*b]).unwrap();
            std::thread::sleep(Duration::from_micros(50));
        }
    } else {
        s.write_all(raw).unwrap();
    }
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("an answer or a close");
    out
}

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
        c.binds = vec![Bind::Unix(path.clone())];
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
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("the answer, not a reset");
    assert_eq!(text(&out), text(OK));
    sender.join().unwrap();
}
