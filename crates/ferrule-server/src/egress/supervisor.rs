//! The supervisor thread: takes each trapped call, judges it, and answers it.
//!
//! Calls of this process's threads are copied and performed here with the copy
//! (`perform.rs`); a call on a blocking socket is handed to a pool of up to
//! [`POOL_MAX`] threads so the supervisor never waits on the network (a datagram
//! socket's connect, and its send when it would not wait, are done here), and a
//! non-blocking connect that returns `EINPROGRESS` is watched (a duplicate of its
//! socket in an epoll set; `SO_ERROR` is never read, it would clear the app's error)
//! until it is writable or failed, or [`WATCH_LIMIT`] passed, for its `ms`. Calls of
//! child processes (the filter is inherited across fork and exec) cannot be
//! performed here (another descriptor table): their copy is judged and a
//! permitted one continued by the kernel, which re-reads the address; that is a
//! record, not a guarantee, for children.

use super::attribution::{slot_of, Slot};
use super::perform::Call;
use super::record::{Line, RequestFields};
use super::{Egress, Verdict};
use crate::metrics::without_log_counts; // a unix statsd send would wait for the supervisor
use crate::sys::remote::{dup_of, is_blocking, socket_type};
use crate::sys::seccomp::{
    answer, close_listener_on_fork, next_notice, still_waiting, Answer, Notice,
};
use nix::libc;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// Most pool threads performing calls on blocking sockets at once. Each one stands
/// for an app thread blocked in that call anyway, so the bound is the app's threads,
/// not a queue: with a small pool, connects to a destination that does not answer
/// would hold every other connect of the worker behind them.
const POOL_MAX: usize = 512;
/// A pool thread only performs one system call: a small stack.
const POOL_STACK: usize = 256 * 1024;
/// How long a non-blocking connect is watched for its `ms`.
const WATCH_LIMIT: Duration = Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One destination of a trapped call, judged.
pub(crate) struct Attempt {
    ts: f64,
    pid: u32,
    /// The request's slot and sequence number, for its tally.
    slot: Option<(Arc<Slot>, u64)>,
    /// request_id, method, path.
    request: Option<[String; 3]>,
    udp: bool,
    dest: SocketAddr,
    host: Option<String>,
    verdict: Verdict,
    rule: Option<String>,
}

/// A call handed to the pool.
struct Job {
    id: u64,
    call: Call,
    attempts: Vec<Attempt>,
}

/// Connects being watched by token (a duplicate of the socket, the attempt, its
/// start), and the last token given.
type Watched = (HashMap<u64, (OwnedFd, Attempt, Instant)>, u64);

struct Shared {
    eg: Arc<Egress>,
    listener: OwnedFd,
    jobs: Mutex<(VecDeque<Job>, usize, usize)>, // queue, threads, idle
    more: Condvar,
    watch: Epoll,
    watched: Mutex<Watched>,
}

pub(crate) fn spawn(eg: Arc<Egress>, listener: OwnedFd) -> std::io::Result<()> {
    close_listener_on_fork(listener.as_raw_fd());
    let shared = Arc::new(Shared {
        eg,
        listener,
        jobs: Mutex::new((VecDeque::new(), 0, 0)),
        more: Condvar::new(),
        watch: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
        watched: Mutex::new((HashMap::new(), 0)),
    });
    let s = shared.clone();
    std::thread::Builder::new()
        .name("ferrule-egress".into())
        .spawn(move || without_log_counts(|| supervise(&s)))?;
    std::thread::Builder::new()
        .name("ferrule-egress-watch".into())
        .spawn(move || without_log_counts(|| watch(&shared)))?;
    Ok(())
}

fn supervise(s: &Arc<Shared>) {
    let fd = s.listener.as_raw_fd();
    let me = s.eg.pid as i32;
    loop {
        let n = match next_notice(fd) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("egress supervisor stopped: {e}");
                return;
            }
        };
        let own = slot_of(n.tid).is_some()
            || std::path::Path::new(&format!("/proc/self/task/{}", n.tid)).exists();
        if !own {
            foreign(s, fd, n);
            continue;
        }
        let mut call = match Call::copy(me, n.nr, n.args) {
            Ok(c) => c,
            Err(e) => {
                let _ = answer(fd, n.id, Answer::Errno(e));
                continue;
            }
        };
        let dests = call.destinations();
        let udp = match dests.is_empty() {
            true => false,
            false => match socket_type(call.fd()) {
                Ok(t) => t != libc::SOCK_STREAM,
                Err(e) => {
                    let _ = answer(fd, n.id, Answer::Errno(e));
                    continue;
                }
            },
        };
        let attempts: Vec<Attempt> = dests.iter().map(|d| s.eg.judge(n.tid, udp, *d)).collect();
        if attempts.iter().any(|a| a.verdict == Verdict::Deny) {
            let _ = answer(fd, n.id, Answer::Errno(libc::EACCES));
            for a in attempts.iter().filter(|a| a.verdict == Verdict::Deny) {
                s.eg.finish(a, None);
            }
            continue;
        }
        let started = Instant::now();
        let performed = match is_blocking(call.fd()).unwrap_or(false) {
            false => Some(call.perform(me, false)),
            // A datagram socket's connect never waits, and its send rarely: tried
            // here without waiting; only one that would wait goes to the pool.
            true if datagram(&call, udp, dests.is_empty()) => match call.perform(me, true) {
                Err(libc::EAGAIN) => None,
                r => Some(r),
            },
            true => None,
        };
        let Some(result) = performed else {
            let job = Job {
                id: n.id,
                call,
                attempts,
            };
            hand_to_pool(s, job);
            continue;
        };
        let tcp_connect = call.is_connect() && !udp;
        // The duplicate to watch is made before the answer: once answered, the app may
        // close the descriptor, or reuse its number for another socket.
        let watched = match (tcp_connect, result) {
            (true, Err(libc::EINPROGRESS)) => dup_of(call.fd()).ok(),
            _ => None,
        };
        let _ = answer(fd, n.id, to_answer(result));
        match (attempts.into_iter().next(), tcp_connect, result) {
            (Some(a), true, Err(libc::EINPROGRESS)) => watch_connect(s, watched, a, started),
            (Some(a), true, _) => s.eg.finish(&a, Some(ms_since(started))),
            (first, _, _) => {
                if let Some(a) = first {
                    s.eg.finish(&a, None);
                }
            }
        }
    }
}

/// Whether `call`'s socket is not a stream (`udp`: known from its destinations).
fn datagram(call: &Call, udp: bool, no_dest: bool) -> bool {
    match no_dest {
        false => udp,
        true => socket_type(call.fd()).is_ok_and(|t| t != libc::SOCK_STREAM),
    }
}

fn to_answer(r: Result<i64, i32>) -> Answer {
    match r {
        Ok(v) => Answer::Value(v),
        Err(e) => Answer::Errno(e),
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// A call of another process (a child): judged on a copy, then continued or denied.
fn foreign(s: &Shared, fd: RawFd, n: Notice) {
    let call = Call::copy(n.tid, n.nr, n.args);
    if !still_waiting(fd, n.id) {
        return;
    }
    let Ok(call) = call else {
        // Unreadable (a bad pointer, or a child the worker may not read after a user
        // switch): with rules it cannot be judged, so it is refused; a log-only
        // setup lets the kernel run it (and report a bad pointer itself).
        let how = match s.eg.policy.is_empty() {
            true => Answer::Continue,
            false => Answer::Errno(libc::EACCES),
        };
        let _ = answer(fd, n.id, how);
        return;
    };
    let udp = !call.is_connect();
    let mut attempts: Vec<Attempt> = call
        .destinations()
        .iter()
        .map(|d| s.eg.judge(-1, udp, *d))
        .collect();
    for a in &mut attempts {
        a.pid = n.tid as u32;
    }
    let denied = attempts.iter().any(|a| a.verdict == Verdict::Deny);
    let how = if denied {
        Answer::Errno(libc::EACCES)
    } else {
        Answer::Continue
    };
    let _ = answer(fd, n.id, how);
    for a in attempts
        .iter()
        .filter(|a| !denied || a.verdict == Verdict::Deny)
    {
        s.eg.finish(a, None);
    }
}

fn hand_to_pool(s: &Arc<Shared>, job: Job) {
    let mut jobs = lock(&s.jobs);
    jobs.0.push_back(job);
    if jobs.2 == 0 && jobs.1 < POOL_MAX {
        jobs.1 += 1;
        let s2 = s.clone();
        let spawned = std::thread::Builder::new()
            .name("ferrule-egress-pool".into())
            .stack_size(POOL_STACK)
            .spawn(move || without_log_counts(|| pool(&s2)));
        if let Err(e) = spawned {
            jobs.1 -= 1;
            tracing::error!("egress: cannot start a pool thread: {e}");
            if jobs.1 == 0 {
                // Nobody would answer: the caller gets the error rather than a hang.
                while let Some(j) = jobs.0.pop_front() {
                    let _ = answer(s.listener.as_raw_fd(), j.id, Answer::Errno(libc::EAGAIN));
                }
            }
        }
    } else {
        s.more.notify_one();
    }
}

fn pool(s: &Shared) {
    let me = s.eg.pid as i32;
    loop {
        let mut job = {
            let mut jobs = lock(&s.jobs);
            loop {
                if let Some(j) = jobs.0.pop_front() {
                    break j;
                }
                jobs.2 += 1;
                jobs = s.more.wait(jobs).unwrap_or_else(|p| p.into_inner());
                jobs.2 -= 1;
            }
        };
        let started = Instant::now();
        let result = job.call.perform(me, false);
        let _ = answer(s.listener.as_raw_fd(), job.id, to_answer(result));
        let ms = match job.call.is_connect() && job.attempts.first().is_some_and(|a| !a.udp) {
            true => Some(ms_since(started)),
            false => None,
        };
        for a in &job.attempts {
            s.eg.finish(a, ms);
        }
    }
}

fn watch_connect(s: &Shared, dup: Option<OwnedFd>, a: Attempt, started: Instant) {
    let Some(dup) = dup else {
        s.eg.finish(&a, None);
        return;
    };
    let mut w = lock(&s.watched);
    w.1 += 1;
    let token = w.1;
    let ev = EpollEvent::new(EpollFlags::EPOLLOUT | EpollFlags::EPOLLONESHOT, token);
    match s.watch.add(&dup, ev) {
        Ok(()) => {
            w.0.insert(token, (dup, a, started));
        }
        Err(_) => s.eg.finish(&a, None),
    }
}

fn watch(s: &Shared) {
    let mut events = [EpollEvent::empty(); 64];
    loop {
        let n = s
            .watch
            .wait(&mut events, EpollTimeout::from(1000u16))
            .unwrap_or(0);
        let mut w = lock(&s.watched);
        for ev in &events[..n] {
            if let Some((fd, a, started)) = w.0.remove(&ev.data()) {
                let _ = s.watch.delete(&fd);
                s.eg.finish(&a, Some(ms_since(started)));
            }
        }
        let late: Vec<u64> =
            w.0.iter()
                .filter(|(_, v)| v.2.elapsed() > WATCH_LIMIT)
                .map(|(k, _)| *k)
                .collect();
        for k in late {
            if let Some((fd, a, _)) = w.0.remove(&k) {
                let _ = s.watch.delete(&fd);
                s.eg.finish(&a, None);
            }
        }
    }
}

impl Egress {
    /// Judges one destination of a call by thread `tid` (`-1`: not ours).
    fn judge(&self, tid: i32, udp: bool, dest: SocketAddr) -> Attempt {
        let ts = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let ip = dest.ip().to_canonical();
        let dest = SocketAddr::new(ip, dest.port());
        let mut name = String::new();
        let host = self.hosts.name_into(ip, &mut name).then_some(name);
        let (verdict, rule) = self.policy.judge(ip, dest.port(), host.as_deref());
        let rule = rule.map(str::to_string);
        let (mut slot, mut request) = (None, None);
        if let Some(sl) = (tid > 0).then(|| slot_of(tid)).flatten() {
            if let Some((fields, seq)) = sl.request(self.pid as i32) {
                let shown = match &host {
                    Some(h) => format!("{h}:{}", dest.port()),
                    None => dest.to_string(),
                };
                sl.lock().note_dest(seq, &shown);
                request = Some(fields);
                slot = Some((sl, seq));
            }
        }
        Attempt {
            ts,
            pid: self.pid,
            slot,
            request,
            udp,
            dest,
            host,
            verdict,
            rule,
        }
    }

    /// Counts the attempt, writes its line and tells its request (`ms`: the
    /// connect's time). Called after the caller was answered: none of this delays it.
    fn finish(&self, a: &Attempt, ms: Option<f64>) {
        let proto = if a.udp { "udp" } else { "tcp" };
        let host = a.host.as_deref();
        self.counts
            .add(proto, a.dest.ip(), a.dest.port(), host, a.verdict);
        crate::metrics::egress_attempt(a.udp, a.verdict == Verdict::Deny, a.dest, host);
        if let (Some((slot, seq)), Some(ms)) = (&a.slot, ms) {
            slot.lock().add_ms(*seq, ms);
        }
        let Some(log) = &self.log else { return };
        let request = match &a.request {
            Some([id, m, p]) => RequestFields {
                request_id: Some(id),
                method: Some(m),
                path: Some(p),
            },
            None => RequestFields::default(),
        };
        let mut out = String::with_capacity(256);
        Line {
            ts: a.ts,
            pid: a.pid,
            request,
            udp: a.udp,
            addr: a.dest.ip(),
            port: a.dest.port(),
            host: a.host.as_deref(),
            verdict: a.verdict.as_str(),
            rule: a.rule.as_deref(),
            ms: if a.udp || a.verdict == Verdict::Deny {
                None
            } else {
                ms
            },
        }
        .write(&mut out);
        log.write_line(out.as_bytes());
    }
}
