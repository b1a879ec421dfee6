//! The seam between a thread's waits on a socket and whatever that thread holds.
//!
//! Reads and writes are non-blocking; when a socket is not ready, the thread waits
//! through a [`Park`], which lets the caller drop a lock meanwhile (the Python bridge
//! releases the GIL). This file knows nothing of sockets or Python.

use std::io;

/// Gives a caller the chance to drop a lock while the thread waits on the socket.
pub trait Park {
    fn park(&self, wait: &mut (dyn FnMut() -> io::Result<bool> + Send)) -> io::Result<bool>;
}

/// Waits in place (for callers that hold no lock).
pub struct NoPark;

impl Park for NoPark {
    fn park(&self, wait: &mut (dyn FnMut() -> io::Result<bool> + Send)) -> io::Result<bool> {
        wait()
    }
}
