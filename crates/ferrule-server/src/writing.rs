//! Answers the server writes out itself (`Stage::Writing`), so that a client reading
//! slowly holds a buffer and not an app thread.
//!
//! A thread whose complete answer meets a full socket leaves the rest of it, up to
//! `--response-buffer-size`, in the connection's `out` (`Conn::send`) and goes back to
//! serving. The connection then waits in epoll for room in its socket (the table
//! registers it for writability, `Table::shelve_writing`); whichever runner gets the
//! event writes what the socket takes, without waiting and without the app (nothing
//! here calls into Python; an event that starts a runner's batch is handled before
//! the batch takes the GIL, `runner.rs`), and shelves it again, until the answer is out. Then
//! the connection reads its next request, or closes. `--io-timeout` counts from the
//! last write that made progress (`Table::sweep` closes it after that).
//!
//! Answers larger than the bound, streamed blocks before the end of their response
//! and `sendfile(2)` bodies are written by the app's thread, as before.

use crate::blocking::Blocking;
use crate::conn::{Conn, Stage, Then};
use crate::shared::Shared;

impl Shared {
    /// Writes what `conn` still owes its client, then shelves it to wait for its next
    /// request, or forgets it when the write failed. A full socket leaves an answer
    /// within the bound to the server (`write_ready`); only a larger one is waited for
    /// here, through `blocking`.
    pub(crate) fn flush_and_shelve(&self, mut conn: Box<Conn>, blocking: &dyn Blocking) {
        if !conn.has_pending_output() {
            self.shelve(conn, false);
            return;
        }
        match conn.try_flush_out() {
            Ok(true) => self.written(conn),
            // A pipelined request whose body is being read ahead (`Stage::Body`) keeps
            // its stage: answers still owed before it are written here, waiting (rare).
            Ok(false)
                if conn.out.len() <= self.config.response_buffer_size
                    && matches!(conn.stage, Stage::Open | Stage::Writing { .. }) =>
            {
                conn.buffer_rest();
                self.shelve(conn, false);
            }
            Ok(false) => {
                if conn.flush_out(self.config.io_timeout, blocking) {
                    self.written(conn);
                } else {
                    self.table.release(conn.token);
                }
            }
            Err(e) => {
                tracing::debug!("write failed: {e}");
                self.table.release(conn.token);
            }
        }
    }

    /// Epoll reported room in the socket of a connection in `Stage::Writing`: writes
    /// what it takes, without waiting.
    pub(crate) fn write_ready(&self, mut conn: Box<Conn>) {
        let before = conn.out.len();
        match conn.try_flush_out() {
            Ok(true) => self.written(conn),
            Ok(false) => {
                if conn.out.len() < before {
                    conn.progressed();
                }
                self.shelve(conn, false);
            }
            Err(e) => {
                tracing::debug!("write failed: {e}");
                self.table.release(conn.token);
            }
        }
    }

    /// Everything `conn` owed went out: it does what its stage said comes next.
    #[inline]
    fn written(&self, mut conn: Box<Conn>) {
        let Stage::Writing { then, .. } = conn.stage else {
            // Written at once (held answers, pipelined ones): as before.
            self.shelve(conn, false);
            return;
        };
        conn.stage = Stage::Open;
        if conn.out.capacity() > FREE_ABOVE {
            // A slow reader's answer was copied here: not kept for the next one.
            conn.out = Vec::new();
        }
        match then {
            Then::Serve => {
                // Bytes may have come while it waited for room, their event taken
                // with the write's: read once before waiting for the next.
                conn.drained = false;
                self.shelve(conn, false);
            }
            Then::Close => self.table.release(conn.token),
            Then::Linger => {
                conn.linger();
                self.shelve(conn, false);
            }
        }
    }
}

/// A connection's response buffer larger than this is freed once written.
const FREE_ABOVE: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use crate::blocking::InPlace;
    use crate::conn::{Conn, Stage, Then};
    use crate::listener::Peer;
    use crate::transport::Transport;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    #[test]
    fn a_complete_answer_a_full_socket_refuses_is_kept_within_the_bound() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let mut conn = Conn::new(Transport::Tcp(server), Peer::Tcp(peer), 0);
        let head = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        let body: Vec<u8> = (0..32u32 << 20).map(|i| (i % 251) as u8).collect();
        // More than loopback takes at once, within the bound: kept, not waited for.
        let timeout = Duration::from_secs(5);
        conn.send([&head, &body], &InPlace, timeout, 64 << 20)
            .unwrap();
        assert!(matches!(
            conn.stage,
            Stage::Writing {
                then: Then::Serve,
                ..
            }
        ));
        let kept = conn.out.len();
        assert!(0 < kept && kept < body.len(), "{kept}");
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            client.read_to_end(&mut got).unwrap();
            got
        });
        while !conn.try_flush_out().unwrap() {
            std::thread::yield_now();
        }
        drop(conn);
        let got = reader.join().unwrap();
        assert!(got[..head.len()] == head[..] && got[head.len()..] == body[..]);
    }

    #[test]
    fn a_rest_above_the_bound_is_waited_for() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let mut conn = Conn::new(Transport::Tcp(server), Peer::Tcp(peer), 0);
        let body: Vec<u8> = (0..32u32 << 20).map(|i| (i % 251) as u8).collect();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            client.read_to_end(&mut got).unwrap();
            got
        });
        conn.send([&body], &InPlace, Duration::from_secs(5), 1024)
            .unwrap();
        assert!(matches!(conn.stage, Stage::Open) && conn.out.is_empty());
        drop(conn);
        assert!(reader.join().unwrap() == body);
    }
}
