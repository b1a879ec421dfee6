//! A serving thread's loop: wait for ready connections, then serve them back to back.
//!
//! The wait for epoll happens outside the handler; everything that is ready then runs
//! inside one [`Handler::hold`], so the Python bridge takes the GIL once per batch of
//! requests instead of once per request. Nothing inside a batch blocks without the
//! [`Blocking`] it is given: reads and writes are non-blocking, and a full socket is
//! waited for through `blocking` (which releases the GIL).

use crate::blocking::Blocking;
use crate::conn::Conn;
use crate::driver::{accept_all, serve};
use crate::exchange::ClientWait;
use crate::handler::Handler;
use crate::held::{HeldConns, HOLD_LIMIT, MAX_HELD};
use crate::sched::{Stamp, RETIRE_AFTER};
use crate::shared::{Shared, BATCH};
use crate::sys::{
    current_thread_cpu_clock, empty_event, ends_stream, timer_slack, Event, ThreadState,
};
use crate::tokens::{LISTENER, PEER_DONE, WAKE};
use std::sync::Arc;
use std::time::Duration;

/// Longest epoll wait: how soon a runner notices a stop it was not woken for.
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// Empty waits after which a runner that is not the last one ends (`RETIRE_AFTER`).
const RETIRE_POLLS: u32 = (RETIRE_AFTER.as_millis() / IDLE_WAIT.as_millis()) as u32;

/// What a batch ended with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    /// Nothing more is ready: wait for epoll.
    Wait,
    /// Another runner is idle and this one is not needed: step back.
    StepBack,
    /// Epoll failed: the thread ends.
    Fail,
}

/// An event, or the connection it was for, already taken from the table.
enum Taken {
    Token(u64),
    Conn(Box<Conn>),
}

/// A runner's state between batches.
struct Runner<'a> {
    shared: &'a Arc<Shared>,
    handler: &'a dyn Handler,
    me: usize,
    events: [Event; BATCH],
    /// Responses this runner put in its `held.rs` slot since it last wrote it (the
    /// monitor may have written some of them since).
    held: usize,
    /// Swapped with the slot to write it (`Held::take`).
    spare: HeldConns,
    /// When the last request of the current batch ended: the next one's start.
    last_end: Option<Stamp>,
    /// When this runner last took events from epoll (the first stamp after the wait,
    /// or the batch's last end for a wait that did not block): where a request's wait
    /// for a thread starts when requests are timed (`timing.rs`).
    seen: Stamp,
    /// The timer slack this thread has (`Sched::precise_timers`), once set.
    precise: Option<bool>,
    /// This runner's last look at epoll found nothing (a batch's last poll, a wait
    /// that timed out), and nothing slow came since: what its next wait returns
    /// arrived during that wait (`Conn::fresh`).
    quiet: bool,
}

/// A thread's life: park until allowed to be a runner, then wait for connections and
/// serve them, until a finished request finds another runner idle; a thread idle for
/// `sched::RETIRE_AFTER` (parked, or a runner that is not the last) ends.
pub(crate) fn run(shared: &Arc<Shared>, handler: &dyn Handler, me: usize) {
    let mut r = Runner {
        shared,
        handler,
        me,
        events: [empty_event(); BATCH],
        held: 0,
        spare: Vec::with_capacity(MAX_HELD),
        last_end: None,
        seen: shared.sched.stamp(),
        precise: None,
        quiet: false,
    };
    shared.sched.register(
        me,
        current_thread_cpu_clock(),
        ThreadState::open_current().ok(),
    );
    'park: while shared.sched.become_runner(me) {
        // Waits in a row that found nothing: a runner idle for `RETIRE_AFTER` ends.
        let mut empty = 0u32;
        // Parked, events may have waited for this thread.
        r.quiet = false;
        while !shared.drained() {
            let (first, quiet) = match shared.pop_ready() {
                Some(t) => {
                    r.quiet = false;
                    (t, false)
                }
                None => match r.poll(IDLE_WAIT) {
                    Ok(Some(t)) => (t, std::mem::take(&mut r.quiet)),
                    Ok(None) => {
                        r.quiet = true;
                        empty += 1;
                        if empty >= RETIRE_POLLS && shared.sched.retire_idle_runner(me) {
                            return;
                        }
                        continue;
                    }
                    Err(()) => return,
                },
            };
            empty = 0;
            // Room for an answer the server writes itself needs neither the app nor the
            // GIL (`writing.rs`): written here, before the batch takes it.
            let Some(mut first) = r.unheld(first) else {
                continue;
            };
            r.fit_timers();
            let mut after = After::Wait;
            // Just out of epoll_wait, this runner would take the GIL ahead of app
            // threads that woke first (a sleep or a reply ended) and only wait for it.
            // Yielding the CPU once lets those finish their requests first. Measured
            // with a sleeping app: at 200 connections +7% requests and a lower p99;
            // at 50 about -0.3%. One runner (a CPU-bound app) never pays it.
            if shared.sched.several_runners() {
                std::thread::yield_now();
            } else if quiet {
                // Alone, and epoll was empty when this wait began: the request came
                // during the wait and no request holds the GIL, so it waits for
                // nothing its receive time would show (`Conn::fresh`).
                if let Taken::Conn(c) = &mut first {
                    c.fresh = c.rx.is_some();
                }
            }
            let mut first = Some(first);
            handler.hold(&mut |blocking| {
                if let Some(first) = first.take() {
                    after = r.batch(first, blocking);
                }
            });
            match after {
                After::Wait => {}
                After::StepBack => continue 'park,
                After::Fail => return,
            }
        }
        handler.hold(&mut |blocking| r.flush(blocking));
        return;
    }
}

impl Runner<'_> {
    /// Sets this thread's timer slack for the app it is about to run, when the number
    /// of runners asks for the other one (a system call only on a change).
    fn fit_timers(&mut self) {
        let precise = self.shared.sched.precise_timers();
        if self.precise != Some(precise) {
            timer_slack(precise);
            self.precise = Some(precise);
        }
    }

    /// Takes events from epoll, waiting up to `wait`. The first is returned; the
    /// others go to the shared queue, so another runner takes them if this one blocks
    /// in the app.
    fn poll(&mut self, wait: Duration) -> Result<Option<u64>, ()> {
        match self.shared.poller.wait(&mut self.events, wait) {
            Ok(0) => Ok(None),
            Ok(n) => {
                if n > 1 {
                    self.shared
                        .push_ready(self.events[1..n].iter().map(token_of));
                }
                Ok(Some(token_of(&self.events[0])))
            }
            Err(e) => {
                tracing::error!("epoll wait failed: {e}");
                Err(())
            }
        }
    }

    /// The first event of a batch, with its connection taken from the table; `None`
    /// when there is nothing left to do for it (a written answer's room, a closed
    /// connection).
    fn unheld(&self, token: u64) -> Option<Taken> {
        match token {
            WAKE => Some(Taken::Token(token)),
            t if t & LISTENER != 0 => Some(Taken::Token(token)),
            t => self.take(t).map(Taken::Conn),
        }
    }

    /// Takes the connection event `t` is for; writes it instead when it waits for
    /// room for its answer (`Stage::Writing`).
    fn take(&self, t: u64) -> Option<Box<Conn>> {
        let mut conn = self.shared.table.take(t & !PEER_DONE)?;
        conn.peer_done |= t & PEER_DONE != 0;
        if conn.writing() {
            // No request, no app: the socket just has room again.
            self.shared.write_ready(conn);
            return None;
        }
        Some(conn)
    }

    /// Serves `first` and then whatever is ready without waiting, then writes the
    /// responses held back.
    fn batch(&mut self, first: Taken, blocking: &dyn Blocking) -> After {
        self.last_end = None;
        let mut next = first;
        loop {
            let step_back = match next {
                Taken::Token(token) => self.serve_token(token, blocking),
                Taken::Conn(conn) => self.serve_conn(conn, blocking),
            };
            if step_back {
                return After::StepBack;
            }
            if self.shared.drained() {
                break;
            }
            next = match self.shared.pop_ready() {
                Some(t) => Taken::Token(t),
                None => match self.poll(Duration::ZERO) {
                    Ok(Some(t)) => {
                        if let Some(end) = self.last_end {
                            self.seen = end;
                        }
                        Taken::Token(t)
                    }
                    Ok(None) => {
                        self.quiet = true;
                        break;
                    }
                    Err(()) => {
                        self.flush(blocking);
                        return After::Fail;
                    }
                },
            };
        }
        self.flush(blocking);
        After::Wait
    }

    /// Writes the responses held back (`held.rs`).
    fn flush(&mut self, blocking: &dyn Blocking) {
        if self.held > 0 {
            self.held = 0;
            self.shared.held.take(self.me, &mut self.spare);
            for conn in self.spare.drain(..) {
                self.shared.flush_and_shelve(conn, blocking);
            }
        }
    }

    /// Handles one event. True when this runner should step back.
    fn serve_token(&mut self, token: u64, blocking: &dyn Blocking) -> bool {
        let shared = self.shared;
        match token {
            // The level-triggered waker would wake this thread again and again
            // while it drains; the threads it missed notice within IDLE_WAIT.
            WAKE if shared.stopping() => {
                let _ = shared.poller.delete(shared.waker.fd());
            }
            WAKE => {}
            t if t & LISTENER != 0 => {
                accept_all(shared, (t & !LISTENER) as usize);
                self.last_end = None;
            }
            t => {
                if let Some(conn) = self.take(t) {
                    return self.serve_conn(conn, blocking);
                }
            }
        }
        false
    }

    /// Serves the requests of one connection. True when this runner should step back.
    fn serve_conn(&mut self, mut conn: Box<Conn>, blocking: &dyn Blocking) -> bool {
        let shared = self.shared;
        // One clock read per request: back to back, one's end is the next's start.
        let started = match self.last_end.take() {
            Some(end) => end,
            None => {
                let now = shared.sched.stamp();
                self.seen = now;
                now
            }
        };
        if shared.observe.timed() {
            // A new connection was accepted after `seen` (its listener's event), and
            // is served from the ready queue like any other.
            conn.queued = Some(self.seen.at);
        }
        shared.sched.start_request(self.me, started);
        shared.rouse_monitor();
        let holding = self.held > 0;
        let me = self.me;
        // Waits on the client inside `serve` (pipelined answers, a rejected request's
        // answer) are not the app's time (`--timeout`).
        let blocking = &ClientWait::new(blocking, &shared.progress, me);
        if let Some(c) = serve(
            shared,
            self.handler,
            conn,
            holding,
            me,
            started.at,
            blocking,
        ) {
            shared.held.hold(me, c);
            self.held += 1;
        }
        let ended = shared.sched.stamp();
        shared
            .observe
            .ended(self.me, self.seen, started, ended, &shared.sched);
        self.last_end = Some(ended);
        // A slow request means the held answers already waited long.
        if self.held >= MAX_HELD || ended.since(started) > HOLD_LIMIT {
            self.flush(blocking);
            self.last_end = None;
        }
        if shared
            .sched
            .end_request(self.me, shared.ready_len() == 0, ended)
        {
            self.flush(blocking);
            return true;
        }
        false
    }
}

/// The token an event carries, marked when the peer has closed or failed.
fn token_of(e: &Event) -> u64 {
    match e.data() {
        t if t & LISTENER == 0 && ends_stream(e) => t | PEER_DONE,
        t => t,
    }
}
