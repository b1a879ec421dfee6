//! The connection table: connections waiting in epoll between requests, keyed by
//! the token their epoll registration carries, with the deadline that ends their wait.
//!
//! A new connection is served before it is registered: its request has usually arrived
//! by the time it is accepted (TCP listeners defer accept, `listener.rs`), and one that
//! closes after its answer then never costs an `epoll_ctl`. It is registered the first
//! time it waits. Registrations are edge-triggered and never re-armed, so an event can
//! arrive while a thread is serving its connection. The table remembers it (`missed`),
//! and shelving that connection then hands it straight back as ready instead of waiting
//! for an event that already came.
//!
//! A connection whose answer the server writes out (`Stage::Writing`, `writing.rs`)
//! is registered for writability too (`shelve_writing`), with `--io-timeout` as its
//! deadline, counted from the last write that made progress.

use crate::access::AccessLog;
use crate::clock::Tick;
use crate::config::ServerConfig;
use crate::conn::{Conn, Preamble, Stage};
use crate::error::{Error, Phase};
use crate::sys::Poller;
use slab::Slab;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Slots allocated up front (and kept when the table shrinks after a burst).
const INITIAL_SLOTS: usize = 1024;
/// Idle connections keep their read buffer this long, then free it.
const SHRINK_AFTER: Duration = Duration::from_secs(1);

struct Slot {
    generation: u32,
    /// `None` while a thread is serving the connection.
    conn: Option<Box<Conn>>,
    /// An event came while the connection was being served.
    missed: bool,
    /// Registered in epoll; a new connection is not until it first waits.
    registered: bool,
    /// Registered for writability as well (since its answer was first buffered).
    writes: bool,
    deadline: Tick,
    idle_since: Tick,
}

pub(crate) struct Table {
    slots: Mutex<Slab<Slot>>,
    generation: AtomicU32,
    /// The quiet period of a graceful stop in nanoseconds, 0 before one. Set by
    /// `begin_drain`, read by `shelve`, both under the `slots` lock, so a connection
    /// shelved after the drain began gets its deadline cut too.
    quiet: AtomicU64,
}

impl Table {
    pub(crate) fn new() -> Table {
        Table {
            slots: Mutex::new(Slab::with_capacity(INITIAL_SLOTS)),
            generation: AtomicU32::new(1),
            quiet: AtomicU64::new(0),
        }
    }

    fn slots(&self) -> MutexGuard<'_, Slab<Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts a connection in the table (`new`) or back. Returns its token when it must
    /// be served without waiting: a new one (its request is likely there already), or
    /// one with bytes in its socket that no event will announce. A connection that
    /// waits is registered then, the first time; the registration reports bytes that
    /// came before it, so none are missed.
    pub(crate) fn shelve(
        &self,
        poller: &Poller,
        mut conn: Box<Conn>,
        new: bool,
        cfg: &ServerConfig,
    ) -> Option<u64> {
        if let Stage::Writing { since, .. } = conn.stage {
            return self.shelve_writing(poller, conn, since + cfg.io_timeout);
        }
        let now = Tick::now();
        let mut deadline = match conn.head_since {
            // Reading a body before the app runs: --io-timeout between reads.
            Some(_) if matches!(conn.stage, Stage::Body(_)) => now + cfg.io_timeout,
            Some(t) => t + cfg.header_timeout,
            // Not one request yet: the first must start within the head's time.
            None if new || !conn.served => now + cfg.header_timeout,
            None => now + cfg.keep_alive,
        };
        let mut slots = self.slots();
        let quiet = self.quiet.load(Ordering::Relaxed);
        if quiet != 0 && conn.buf.is_empty() {
            // Draining: a connection with nothing of a request is closed once it has
            // been quiet this long (`begin_drain`).
            deadline = deadline.min(now + Duration::from_nanos(quiet));
        }
        if new {
            // 30 bits: the top two bits of a token mark listeners and end-of-stream.
            let generation = self.generation.fetch_add(1, Ordering::Relaxed) & 0x3fff_ffff;
            let entry = slots.vacant_entry();
            conn.token = (u64::from(generation) << 32) | entry.key() as u64;
            let token = conn.token;
            entry.insert(Slot {
                generation,
                conn: Some(conn),
                missed: false,
                registered: false,
                writes: false,
                deadline,
                idle_since: now,
            });
            return Some(token);
        }
        let token = conn.token;
        let idx = (token & 0xffff_ffff) as usize;
        let again = !conn.drained || conn.peer_done;
        let slot = slots.get_mut(idx)?;
        if !slot.registered && !again {
            if let Err(e) = poller.add_edge(conn.transport.fd(), token, false) {
                tracing::error!("cannot wait for a connection in epoll, closing it: {e}");
                slots.remove(idx);
                return None;
            }
            slot.registered = true;
        }
        slot.conn = Some(conn);
        slot.deadline = deadline;
        slot.idle_since = now;
        (std::mem::take(&mut slot.missed) || again).then_some(token)
    }

    /// Shelves a connection whose answer waits for room in its socket (`writing.rs`):
    /// registered for writability too, with `deadline` (`--io-timeout` after its last
    /// progress), not cut by a drain's quiet period, and not handed back for bytes it
    /// has to read. The writability stays registered afterwards: edge-triggered, it
    /// reports only a socket that was full and has room again, which then costs one
    /// look at the connection at most. A TLS handshake whose flight the socket refused
    /// waits here too (`Shared::shelve_for_room`), with the head's deadline.
    #[cold]
    pub(crate) fn shelve_writing(
        &self,
        poller: &Poller,
        conn: Box<Conn>,
        deadline: Tick,
    ) -> Option<u64> {
        let mut slots = self.slots();
        let token = conn.token;
        let idx = (token & 0xffff_ffff) as usize;
        let slot = slots.get_mut(idx)?;
        if !slot.writes {
            let fd = conn.transport.fd();
            let done = match slot.registered {
                false => poller.add_edge(fd, token, true),
                true => poller.modify_edge(fd, token, true),
            };
            if let Err(e) = done {
                tracing::error!("cannot wait for a connection in epoll, closing it: {e}");
                slots.remove(idx);
                return None;
            }
            slot.registered = true;
            slot.writes = true;
        }
        slot.conn = Some(conn);
        slot.deadline = deadline;
        slot.idle_since = Tick::now();
        std::mem::take(&mut slot.missed).then_some(token)
    }

    /// Takes the connection an event was for; `None` if it was closed meanwhile, or
    /// if a thread is serving it (which then learns of the event when it shelves it).
    pub(crate) fn take(&self, token: u64) -> Option<Box<Conn>> {
        let mut slots = self.slots();
        let slot = slots.get_mut((token & 0xffff_ffff) as usize)?;
        if u64::from(slot.generation) != token >> 32 {
            return None;
        }
        let conn = slot.conn.take();
        slot.missed = conn.is_none();
        conn
    }

    /// Forgets a connection that is closing.
    pub(crate) fn release(&self, token: u64) {
        let mut slots = self.slots();
        let idx = (token & 0xffff_ffff) as usize;
        if slots
            .get(idx)
            .is_some_and(|s| u64::from(s.generation) == token >> 32)
        {
            slots.remove(idx);
        }
    }

    /// A counter of connections put in the table (wraps): whether any came since.
    pub(crate) fn opened(&self) -> u32 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Frees the slots' storage when no connection is left (after a burst): tokens
    /// still in flight carry a generation no new slot has, so they stay harmless.
    pub(crate) fn shrink(&self) {
        let mut slots = self.slots();
        if slots.is_empty() && slots.capacity() > INITIAL_SLOTS {
            *slots = Slab::with_capacity(INITIAL_SLOTS);
        }
    }

    /// Connections shelved or being served.
    pub(crate) fn len(&self) -> usize {
        self.slots().len()
    }

    /// No connection is shelved or being served.
    /// Connections open, and of those the ones waiting in epoll with nothing of a
    /// request received (idle keep-alive), for the metrics' gauges.
    pub(crate) fn counts(&self) -> (u64, u64) {
        let slots = self.slots();
        let idle = slots
            .iter()
            .filter(|(_, s)| {
                s.conn
                    .as_ref()
                    .is_some_and(|c| c.buf.is_empty() && matches!(c.stage, Stage::Open))
            })
            .count();
        (slots.len() as u64, idle as u64)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slots().is_empty()
    }

    /// Graceful stop: from now on a connection that holds nothing of a request is
    /// closed once it has been quiet for `quiet` (since its last request, or since it
    /// was accepted), never sooner: a client may be sending a request on it right now,
    /// and a connection its client uses gets that request answered, with `Connection:
    /// close`, instead. Connections inside a request keep their deadlines.
    pub(crate) fn begin_drain(&self, quiet: Duration) {
        let mut slots = self.slots();
        self.quiet
            .store((quiet.as_nanos() as u64).max(1), Ordering::Relaxed);
        for (_, s) in slots.iter_mut() {
            if s.conn
                .as_ref()
                .is_some_and(|c| c.buf.is_empty() && !c.writing())
            {
                s.deadline = s.deadline.min(s.idle_since + quiet);
            }
        }
    }

    /// Closes connections past their deadline (408 to those inside a head or a body
    /// read before the app runs) and frees the buffers of connections idle for a while.
    /// A 408 is a refused request (`refused.rs`): counted and in the access log.
    pub(crate) fn sweep(&self, config: &ServerConfig, access: Option<&AccessLog>) {
        let now = Tick::now();
        let mut expired = Vec::new();
        {
            let mut slots = self.slots();
            let draining = self.quiet.load(Ordering::Relaxed) != 0;
            let keys: Vec<usize> = slots
                .iter()
                .filter(|(_, s)| {
                    s.conn.as_ref().is_some_and(|c| {
                        // Draining, bytes of a request that came at the last moment
                        // are served (their event is on its way), not cut off. An
                        // answer being written has only its own deadline.
                        let arriving = || draining && c.buf.is_empty() && !c.silent();
                        s.deadline <= now && (c.writing() || !arriving())
                    })
                })
                .map(|(k, _)| k)
                .collect();
            for k in keys {
                if let Some(conn) = slots.remove(k).conn {
                    expired.push(conn);
                }
            }
            for (_, slot) in slots.iter_mut() {
                if let Some(c) = slot.conn.as_mut() {
                    if now.since(slot.idle_since) > SHRINK_AFTER {
                        c.shrink_if_idle();
                    }
                }
            }
        }
        for mut conn in expired {
            if conn.writing() {
                tracing::debug!(
                    "closing a connection whose client did not read its answer in time"
                );
                continue;
            }
            if matches!(conn.stage, Stage::Body(_)) {
                if crate::log::SLOW_BODIES.allow() {
                    tracing::warn!(
                        "closing a connection that sent nothing of its request body for --io-timeout"
                    );
                }
                conn.refuse(
                    Error::Timeout(Phase::Body).status().unwrap_or(408),
                    config,
                    access,
                );
                continue;
            }
            // Closed without an answer: what protocol follows a PROXY header is unknown,
            // and nothing can be said outside a TLS session still being set up.
            if matches!(conn.stage, Stage::Handshake) {
                continue;
            }
            if let Stage::Preamble(Preamble::Header(_)) = conn.stage {
                if !conn.buf.is_empty() && crate::log::PROXY_REFUSALS.allow() {
                    tracing::warn!(
                        "closing a connection from {} that did not send a complete PROXY header within --header-timeout",
                        conn.peer
                    );
                }
                continue;
            }
            if !conn.buf.is_empty() {
                if crate::log::SLOW_HEADS.allow() {
                    tracing::warn!(
                        "closing a connection from {} that did not send a complete request head within --header-timeout",
                        conn.client
                    );
                }
                conn.refuse(
                    Error::Timeout(Phase::Head).status().unwrap_or(408),
                    config,
                    access,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Table;
    use crate::config::ServerConfig;
    use crate::conn::Conn;
    use crate::listener::Peer;
    use crate::sys::Poller;
    use crate::transport::Transport;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    fn pair() -> (TcpStream, Box<Conn>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (
            client,
            Conn::new(Transport::Tcp(server), Peer::Tcp(peer), 0),
        )
    }

    fn events(poller: &Poller) -> Vec<u64> {
        let mut events = vec![crate::sys::Event::empty(); 8];
        let n = poller
            .wait(&mut events, Duration::from_millis(100))
            .unwrap();
        events[..n].iter().map(|e| e.data()).collect()
    }

    #[test]
    fn a_connection_being_written_waits_for_room_then_for_bytes_again() {
        use std::io::Read;
        let (poller, table, cfg) = (
            Poller::new().unwrap(),
            Table::new(),
            ServerConfig::default(),
        );
        let (mut client, conn) = pair();
        let token = table.shelve(&poller, conn, true, &cfg).unwrap();
        let mut conn = table.take(token).unwrap();
        conn.out = vec![7; 32 << 20];
        assert!(!conn.try_flush_out().unwrap(), "the socket took 32 MB");
        let taken = (32 << 20) - conn.out.len();
        conn.buffer_rest();
        // Bytes from the client do not make it ready: it waits for room.
        conn.drained = false;
        assert_eq!(table.shelve(&poller, conn, false, &cfg), None);
        client.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let mut got = vec![0; 1 << 20];
        let mut read = 0;
        // Reading what the socket took makes room: the event comes.
        while read < taken {
            let want = got.len().min(taken - read);
            read += client.read(&mut got[..want]).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !events(&poller).contains(&token) {
            assert!(std::time::Instant::now() < deadline, "no event for room");
        }
        let mut conn = table.take(token).unwrap();
        assert!(conn.writing());
        // Written: it waits for bytes again (and its writability stays registered).
        conn.out.clear();
        conn.stage = crate::conn::Stage::Open;
        conn.drained = true;
        assert_eq!(table.shelve(&poller, conn, false, &cfg), None);
        let _ = events(&poller);
        client.write_all(b"Host: x\r\n").unwrap();
        assert_eq!(events(&poller), vec![token]);
    }

    #[test]
    fn a_new_connection_is_served_first_and_registered_when_it_first_waits() {
        let (poller, table, cfg) = (
            Poller::new().unwrap(),
            Table::new(),
            ServerConfig::default(),
        );
        let (mut client, conn) = pair();
        let token = table
            .shelve(&poller, conn, true, &cfg)
            .expect("served at once");
        client.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        assert_eq!(
            events(&poller),
            Vec::<u64>::new(),
            "registered before it waited"
        );
        // Served: the read found nothing more (`drained`), so it waits in epoll now,
        // and the bytes that came before the registration are reported.
        let conn = table.take(token).unwrap();
        assert_eq!(table.shelve(&poller, conn, false, &cfg), None);
        assert_eq!(events(&poller), vec![token]);
        // Registered once: shelving again adds nothing (a second `add` would fail and
        // close the connection).
        let conn = table.take(token).unwrap();
        assert_eq!(table.shelve(&poller, conn, false, &cfg), None);
        assert!(table.take(token).is_some());
    }
}
