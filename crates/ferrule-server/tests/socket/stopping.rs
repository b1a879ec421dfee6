//! A worker that stops while every runner is inside a request: after `--timeout` gave
//! up on one (a stuck app), connections queued on the shared listening socket are left
//! there for the next worker, not taken by one that has no thread to serve them;
//! otherwise it takes them and serves them once a request ends. Two servers on one
//! socket stand for two workers of a master.

use ferrule_server::{Bind, Exchange, Handler, InPlace, Server, ServerConfig};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::IntoRawFd;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Bounds every wait of the test: nothing here takes more than a fraction of it.
const PATIENCE: Duration = Duration::from_secs(10);

/// `/stuck` blocks until `release` (or `PATIENCE`), telling `entered` it got there;
/// anything else is answered `200` with the server's name as the body.
struct Stuck {
    name: &'static str,
    /// (entered, released)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl Stuck {
    fn new(name: &'static str) -> Stuck {
        Stuck {
            name,
            state: Mutex::new((false, false)),
            changed: Condvar::new(),
        }
    }

    fn wait_until(&self, what: impl Fn(&(bool, bool)) -> bool) {
        let guard = self.state.lock().unwrap();
        let (guard, waited) = self
            .changed
            .wait_timeout_while(guard, PATIENCE, |s| !what(s))
            .unwrap();
        assert!(
            !waited.timed_out(),
            "waited {PATIENCE:?} in vain: {guard:?}"
        );
    }

    fn release(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

impl Handler for Stuck {
    fn handle(&self, mut ex: Box<Exchange>) -> Option<Box<Exchange>> {
        if ex.path() == b"/stuck" {
            self.state.lock().unwrap().0 = true;
            self.changed.notify_all();
            // Released at the test's end; a failed assertion leaves it to PATIENCE.
            let guard = self.state.lock().unwrap();
            drop(
                self.changed
                    .wait_timeout_while(guard, PATIENCE, |s| !s.1)
                    .unwrap(),
            );
        }
        ex.begin_head(b"200 OK").ok()?;
        let len = self.name.len().to_string();
        ex.add_header(b"Content-Length", len.as_bytes()).ok()?;
        ex.end_head(None).ok()?;
        ex.write_body(self.name.as_bytes(), true, &InPlace).ok()?;
        ex.finish(&InPlace).ok()?;
        Some(ex)
    }
}

/// A server on a copy of `listener`, with `threads` runners at most.
fn worker(listener: &TcpListener, threads: usize, handler: &std::sync::Arc<Stuck>) -> Server {
    let fd = listener.try_clone().unwrap().into_raw_fd();
    let cfg = ServerConfig {
        binds: vec![Bind::Fd(fd).into()],
        threads,
        ..ServerConfig::default()
    };
    let mut server = Server::bind(cfg, None).expect("bind");
    server.start(handler.clone()).expect("start");
    server
}

fn send(listener: &TcpListener, path: &str) -> TcpStream {
    let mut c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    c.set_read_timeout(Some(PATIENCE / 2)).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    c
}

#[test]
fn a_worker_stopping_with_every_runner_stuck_leaves_queued_connections_to_the_next() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let old = std::sync::Arc::new(Stuck::new("old"));
    let first = worker(&listener, 1, &old);
    let _stuck = send(&listener, "/stuck");
    old.wait_until(|s| s.0);
    // Its one runner is in the app (and one runner is all it may have): this
    // connection waits in the socket's queue, as one does behind a stuck worker.
    let mut queued = send(&listener, "/");
    // `--timeout` gives up on the stuck request, and the worker stops; the stop gives
    // up on it too after its graceful time; by then it has done whatever it does with
    // the queue.
    assert_eq!(first.answer_overdue(Duration::ZERO), 1);
    let started = Instant::now();
    assert!(
        !first.stop(Duration::from_millis(300)),
        "the stuck request finished"
    );
    assert!(started.elapsed() < PATIENCE);
    let new = std::sync::Arc::new(Stuck::new("new"));
    let second = worker(&listener, 1, &new);
    let mut got = Vec::new();
    let read = queued.read_to_end(&mut got);
    old.release();
    let text = String::from_utf8_lossy(&got);
    assert!(
        read.is_ok() && text.starts_with("HTTP/1.1 200") && text.ends_with("new"),
        "the queued connection was not served by the next worker: {read:?} {text:?}"
    );
    assert!(second.stop(Duration::from_secs(2)));
}

#[test]
fn a_worker_stopping_with_busy_runners_not_given_up_on_serves_queued_connections() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let old = std::sync::Arc::new(Stuck::new("old"));
    let first = worker(&listener, 1, &old);
    let _busy = send(&listener, "/stuck");
    old.wait_until(|s| s.0);
    let mut queued = send(&listener, "/");
    // A plain TERM (a HUP's replacement, the whole server stopping): the request in the
    // app ends within the graceful time, and the queued connection is not lost.
    let stopper = std::thread::spawn(move || first.stop(PATIENCE));
    old.release();
    let mut got = Vec::new();
    let read = queued.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(
        read.is_ok() && text.starts_with("HTTP/1.1 200") && text.ends_with("old"),
        "the queued connection was not served by the stopping worker: {read:?} {text:?}"
    );
    assert!(stopper.join().unwrap());
}
