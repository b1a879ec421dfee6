//! The seam between a thread's waits on a socket and whatever that thread holds.
//!
//! Reads and writes are non-blocking; when a socket is not ready, the thread waits
//! through a [`Blocking`], which lets the caller drop a lock meanwhile (the Python bridge
//! releases the GIL). This file knows nothing of sockets or Python.
//!
//! One word, one meaning: a thread *blocks* on a socket through a [`Blocking`]; a
//! connection is *shelved* in epoll and the table until its socket is ready
//! (`Shared::shelve`); a thread *parks* only in `sched.rs` (it sleeps until it may
//! serve).

use std::io;

/// Gives a caller the chance to drop a lock while the thread waits on the socket.
pub trait Blocking {
    /// Runs `wait` (which waits for the socket and says whether it is ready),
    /// with whatever the caller holds let go meanwhile.
    fn block(&self, wait: &mut (dyn FnMut() -> io::Result<bool> + Send)) -> io::Result<bool>;
}

/// Waits in place (for callers that hold no lock).
pub struct InPlace;

impl Blocking for InPlace {
    fn block(&self, wait: &mut (dyn FnMut() -> io::Result<bool> + Send)) -> io::Result<bool> {
        wait()
    }
}
