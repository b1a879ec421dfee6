//! Threads, the shared epoll set, the connection table and shutdown.
//!
//! Every thread is alike: it waits on the one epoll set, and the connection it is
//! woken for is its own until it parks it again (one-shot registration). It reads,
//! parses and runs the app for that connection itself, so a request never changes
//! threads; an app that blocks holds one thread while the others keep serving.

use crate::access::AccessLog;
use crate::config::ServerConfig;
use crate::conn::Conn;
use crate::error::{Error, Phase};
use crate::exchange::{with_date, Exchange};
use crate::listener::{BindError, Listener, Local};
use crate::sys::{empty_event, Poller, Waker};
use ferrule_http::{error_response, parse_head, secure_scheme, Version};
use slab::Slab;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Runs requests. The Python bridge implements it; tests implement it in Rust.
pub trait Handler: Send + Sync + 'static {
    /// Runs a thread's whole serving loop, inside whatever context the handler needs
    /// (the Python bridge attaches the thread to the interpreter once, here).
    fn run_thread(&self, serve: &mut (dyn FnMut() + Send)) {
        serve()
    }

    /// Answers one request. Returning `None` closes the connection.
    fn handle(&self, ex: Exchange) -> Option<Exchange>;
}

const WAKE: u64 = u64::MAX;
const LISTENER: u64 = 1 << 63;
const SWEEP_EVERY: Duration = Duration::from_millis(500);

struct Slot {
    generation: u32,
    /// `None` while a thread is serving the connection.
    conn: Option<Conn>,
    deadline: Instant,
    idle_since: Instant,
}

pub struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) locals: Vec<Local>,
    listeners: Vec<Listener>,
    poller: Poller,
    waker: Waker,
    slots: Mutex<Slab<Slot>>,
    generation: AtomicU32,
    stopping: AtomicBool,
    pub(crate) access: Option<AccessLog>,
    running: Mutex<usize>,
    all_stopped: Condvar,
    in_flight: AtomicUsize,
}

impl Shared {
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    fn slots(&self) -> MutexGuard<'_, Slab<Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A bound, running server.
pub struct Server {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds every address; nothing is served until [`Server::start`].
    pub fn bind(config: ServerConfig, access: Option<AccessLog>) -> Result<Server, BindError> {
        let listeners = config
            .binds
            .iter()
            .map(|b| Listener::bind(b, config.backlog))
            .collect::<Result<Vec<_>, _>>()?;
        let io_err = |cause| BindError {
            bind: config.binds[0].clone(),
            cause,
        };
        let poller = Poller::new().map_err(io_err)?;
        let waker = Waker::new().map_err(io_err)?;
        poller.add_level(waker.fd(), WAKE).map_err(io_err)?;
        for (i, l) in listeners.iter().enumerate() {
            poller
                .add_oneshot(l.fd(), LISTENER | i as u64)
                .map_err(io_err)?;
        }
        let locals = listeners.iter().map(Listener::local).collect();
        let shared = Shared {
            config,
            locals,
            listeners,
            poller,
            waker,
            slots: Mutex::new(Slab::with_capacity(1024)),
            generation: AtomicU32::new(1),
            stopping: AtomicBool::new(false),
            access,
            running: Mutex::new(0),
            all_stopped: Condvar::new(),
            in_flight: AtomicUsize::new(0),
        };
        Ok(Server {
            shared: Arc::new(shared),
            threads: Vec::new(),
        })
    }

    /// The addresses actually bound (with real ports for port 0).
    pub fn addresses(&self) -> &[Local] {
        &self.shared.locals
    }

    /// Starts the serving threads and the timeout sweeper.
    pub fn start<H: Handler>(&mut self, handler: Arc<H>) -> io::Result<()> {
        let n = self.shared.config.threads.max(1);
        *self
            .shared
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = n + 1;
        for i in 0..n {
            let (shared, handler) = (self.shared.clone(), handler.clone());
            let t = std::thread::Builder::new()
                .name(format!("ferrule-{i}"))
                .spawn(move || {
                    handler.run_thread(&mut || worker_loop(&shared, &*handler));
                    shared.thread_exited();
                })?;
            self.threads.push(t);
        }
        let shared = self.shared.clone();
        self.threads.push(
            std::thread::Builder::new()
                .name("ferrule-sweeper".into())
                .spawn(move || {
                    sweeper(&shared);
                    shared.thread_exited();
                })?,
        );
        Ok(())
    }

    /// Stops accepting, closes idle connections, lets requests in flight finish for up
    /// to `graceful`, then returns. Returns false when some requests were still running.
    pub fn stop(self, graceful: Duration) -> bool {
        let s = &self.shared;
        s.stopping.store(true, Ordering::SeqCst);
        for l in &s.listeners {
            let _ = s.poller.delete(l.fd());
        }
        let _ = s.waker.wake();
        s.all_stopped.notify_all();
        drop(std::mem::take(&mut *s.slots()));
        let deadline = Instant::now() + graceful;
        let mut running = s.running.lock().unwrap_or_else(|p| p.into_inner());
        while *running > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            running = s
                .all_stopped
                .wait_timeout(running, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(running);
        for t in self.threads {
            let _ = t.join();
        }
        true
    }

    /// Requests being answered right now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }
}

impl Shared {
    fn thread_exited(&self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        *running -= 1;
        self.all_stopped.notify_all();
    }

    /// Puts a connection in the table (new) or back (served), and arms it.
    fn park(&self, mut conn: Conn, new: bool) {
        let now = Instant::now();
        let deadline = match conn.head_since {
            Some(t) => t + self.config.header_timeout,
            None if new => now + self.config.header_timeout,
            None => now + self.config.keep_alive,
        };
        let mut slots = self.slots();
        if self.stopping() {
            return;
        }
        if new {
            let generation = self.generation.fetch_add(1, Ordering::Relaxed);
            let entry = slots.vacant_entry();
            conn.token = (u64::from(generation) << 32) | entry.key() as u64;
            let r = self.poller.add_oneshot(conn.stream.fd(), conn.token);
            if r.is_ok() {
                entry.insert(Slot {
                    generation,
                    conn: Some(conn),
                    deadline,
                    idle_since: now,
                });
            }
            return;
        }
        let idx = (conn.token & 0xffff_ffff) as usize;
        let token = conn.token;
        if let Some(slot) = slots.get_mut(idx) {
            if self.poller.rearm(conn.stream.fd(), token).is_ok() {
                slot.conn = Some(conn);
                slot.deadline = deadline;
                slot.idle_since = now;
            } else {
                slots.remove(idx);
            }
        }
    }

    /// Takes the connection an event was for; `None` if it was closed meanwhile.
    fn take(&self, token: u64) -> Option<Conn> {
        let mut slots = self.slots();
        let slot = slots.get_mut((token & 0xffff_ffff) as usize)?;
        if u64::from(slot.generation) != token >> 32 {
            return None;
        }
        slot.conn.take()
    }

    /// Forgets a connection that is closing.
    fn release(&self, token: u64) {
        let mut slots = self.slots();
        let idx = (token & 0xffff_ffff) as usize;
        if slots
            .get(idx)
            .is_some_and(|s| u64::from(s.generation) == token >> 32)
        {
            slots.remove(idx);
        }
    }
}

fn worker_loop(shared: &Arc<Shared>, handler: &dyn Handler) {
    let mut events = [empty_event(); 4];
    while !shared.stopping() {
        let n = match shared.poller.wait(&mut events[..1], Duration::from_secs(1)) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("epoll wait failed: {e}");
                return;
            }
        };
        for ev in &events[..n] {
            match ev.data() {
                WAKE => {}
                t if t & LISTENER != 0 => accept_all(shared, (t & !LISTENER) as usize),
                t => {
                    if let Some(conn) = shared.take(t) {
                        serve(shared, handler, conn);
                    }
                }
            }
        }
    }
}

fn accept_all(shared: &Shared, idx: usize) {
    let listener = &shared.listeners[idx];
    for _ in 0..256 {
        match listener.accept() {
            Ok((stream, peer)) => shared.park(Conn::new(stream, peer, idx), true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    || e.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(e) => {
                // Out of file descriptors and the like: log, and let the backlog hold them.
                tracing::error!("accept failed: {e}");
                break;
            }
        }
    }
    if !shared.stopping() {
        let _ = shared.poller.rearm(listener.fd(), LISTENER | idx as u64);
    }
}

/// Serves a connection until it has no complete request left, then parks or closes it.
fn serve(shared: &Arc<Shared>, handler: &dyn Handler, mut conn: Conn) {
    let cfg = &shared.config.parser;
    let min_line = cfg.request_line_limit().min(cfg.field_size_limit()) + 1;
    loop {
        if conn.worth_parsing(min_line) {
            match parse_head(&conn.buf, cfg) {
                Ok(Some(head)) => {
                    let trusted = shared.config.forwarded_allow_ips.allows(conn.peer.ip());
                    let https = if trusted {
                        match secure_scheme(&head, &conn.buf) {
                            Ok(v) => v.unwrap_or(false),
                            Err(e) => return reject(shared, conn, e.into()),
                        }
                    } else {
                        false
                    };
                    let token = conn.token;
                    shared.in_flight.fetch_add(1, Ordering::Relaxed);
                    let ex = handler.handle(Exchange::new(conn, head, shared.clone(), https));
                    shared.in_flight.fetch_sub(1, Ordering::Relaxed);
                    let Some(ex) = ex else {
                        return shared.release(token);
                    };
                    if ex.outcome().length_mismatch {
                        tracing::error!(
                            "{}: the app's body did not match its Content-Length; connection closed",
                            String::from_utf8_lossy(ex.raw_target())
                        );
                    }
                    if let Some(log) = &shared.access {
                        log.record(&ex);
                    }
                    match ex.into_conn() {
                        Some(c) => conn = c,
                        None => return shared.release(token),
                    }
                    conn.reset_scan();
                    continue;
                }
                Ok(None) => {}
                Err(e) => return reject(shared, conn, e.into()),
            }
        }
        match conn.read_some() {
            Ok(0) => {
                if !conn.buf.is_empty() {
                    tracing::debug!("client closed the connection in the middle of a request head");
                }
                return shared.release(conn.token);
            }
            Ok(_) => {
                conn.head_since.get_or_insert_with(Instant::now);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return shared.park(conn, false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!("read failed: {e}");
                return shared.release(conn.token);
            }
        }
    }
}

/// Answers a request the server refuses before the app sees it, logs why, and closes.
fn reject(shared: &Shared, mut conn: Conn, e: Error) {
    let peer = match conn.peer.ip() {
        Some(ip) => ip.to_string(),
        None => "unix".to_string(),
    };
    tracing::warn!("invalid request from {peer}: {e}");
    if let Some(status) = e.status() {
        let bytes = with_date(|d| error_response(status, Version::Http11, d));
        // Best effort: the socket is non-blocking and the answer is small.
        let _ = conn.stream.write(&bytes);
    }
    shared.release(conn.token);
}

/// Closes connections that were idle longer than keep-alive or slower than the
/// header timeout; frees the buffers of idle ones.
fn sweeper(shared: &Shared) {
    let mut guard = shared.running.lock().unwrap_or_else(|p| p.into_inner());
    while !shared.stopping() {
        guard = shared
            .all_stopped
            .wait_timeout(guard, SWEEP_EVERY)
            .unwrap_or_else(|p| p.into_inner())
            .0;
        if shared.stopping() {
            break;
        }
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut slots = shared.slots();
            let keys: Vec<usize> = slots
                .iter()
                .filter(|(_, s)| s.conn.is_some() && s.deadline <= now)
                .map(|(k, _)| k)
                .collect();
            for k in keys {
                if let Some(conn) = slots.remove(k).conn {
                    expired.push(conn);
                }
            }
            for (_, slot) in slots.iter_mut() {
                if let Some(c) = slot.conn.as_mut() {
                    if now.duration_since(slot.idle_since) > Duration::from_secs(1) {
                        c.shrink_if_idle();
                    }
                }
            }
        }
        for mut conn in expired {
            if !conn.buf.is_empty() {
                tracing::warn!(
                    "closing a connection that did not send a complete request head in time"
                );
                let bytes = with_date(|d| {
                    error_response(
                        Error::Timeout(Phase::Head).status().unwrap_or(408),
                        Version::Http11,
                        d,
                    )
                });
                let _ = conn.stream.write(&bytes);
            }
        }
    }
}
