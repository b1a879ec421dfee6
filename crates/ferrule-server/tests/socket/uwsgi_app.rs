//! The app, server and client of `socket/uwsgi.rs`: a Rust handler that records what
//! it saw of each uwsgi request, and packets written as nginx writes them.

use ferrule_server::{
    Bind, Exchange, Handler, InPlace, Local, Peer, Protocol, Server, ServerConfig,
};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the app saw of a request.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Seen {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) query: String,
    pub(super) client: Peer,
    pub(super) vars: Vec<(String, String)>,
    /// The body, or the error its read ended with.
    pub(super) body: Result<Vec<u8>, String>,
}

/// Answers by path (and not at all when reading the body failed): `/stream` three blocks of unknown length, each after the test
/// says go; `/file` the file in `file` with sendfile, its length unknown;
/// `/unread` 8 MB (more than a socket's buffers hold) without reading the body;
/// anything else `ok` with a length.
pub(super) struct App {
    seen: Mutex<Vec<Seen>>,
    go: Mutex<Receiver<()>>,
    file: PathBuf,
}

/// The size of `/unread`'s answer.
pub(super) const UNREAD_ANSWER: usize = 8 << 20;

pub(super) fn text(b: &[u8]) -> String {
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
            "/unread" => {
                ex.end_head(Some(UNREAD_ANSWER as u64)).ok()?;
                ex.write_body(&vec![b'u'; UNREAD_ANSWER], true, &InPlace)
                    .ok()?;
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

pub(super) struct Running {
    server: Option<Server>,
    pub(super) addr: Local,
    app: Arc<App>,
    pub(super) go: Sender<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop(Duration::from_secs(2));
        }
        let _ = std::fs::remove_file(&self.app.file);
    }
}

pub(super) fn start(tweak: impl FnOnce(&mut ServerConfig)) -> Running {
    let mut cfg = ServerConfig {
        binds: vec![Bind::Tcp("127.0.0.1:0".parse().unwrap()).into()],
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
    pub(super) fn tcp(&self) -> SocketAddr {
        match &self.addr {
            Local::Tcp(a) => *a,
            other => panic!("{other:?}"),
        }
    }

    pub(super) fn seen(&self) -> Vec<Seen> {
        self.app.seen.lock().unwrap().clone()
    }
}

pub(super) type Vars<'a> = &'a [(&'a str, &'a str)];

/// A packet of `vars` (modifier1 0), as nginx encodes it.
pub(super) fn packet(vars: Vars) -> Vec<u8> {
    let block = ferrule_http::uwsgi_vars(vars.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
    ferrule_http::uwsgi_packet(&block.expect("test fields fit a u16")).expect("test vars fit a u16")
}

/// nginx's `uwsgi_params` for `method uri` with a body of `len` bytes, then the
/// request's fields.
pub(super) fn nginx(
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
pub(super) fn send(addr: SocketAddr, raw: &[u8], slow: bool) -> Vec<u8> {
    send_in(addr, raw, if slow { 1 } else { raw.len() })
}

/// [`send`] in pieces of `step` bytes, each its own write.
pub(super) fn send_in(addr: SocketAddr, raw: &[u8], step: usize) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for piece in raw.chunks(step.max(1)) {
        s.write_all(piece).unwrap();
        if piece.len() < raw.len() {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("an answer or a close");
    out
}
