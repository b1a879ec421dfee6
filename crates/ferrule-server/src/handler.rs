//! The seam between the server and the app: a [`Handler`] runs requests. The
//! Python bridge implements it (`ferrule-py`); tests implement it in Rust.

use crate::blocking::{Blocking, InPlace};
use crate::exchange::Exchange;

/// Runs requests. The Python bridge implements it; tests implement it in Rust.
pub trait Handler: Send + Sync + 'static {
    /// Runs a thread's whole serving loop, inside whatever context the handler needs
    /// (the Python bridge attaches the thread to the interpreter once, here).
    fn run_thread(&self, serve: &mut (dyn FnMut() + Send)) {
        serve()
    }

    /// Answers one request. Returning `None` closes the connection.
    fn handle(&self, ex: Box<Exchange>) -> Option<Box<Exchange>>;

    /// Runs a batch of requests (`runner.rs`) with whatever `handle` needs held across
    /// them: the Python bridge takes the GIL once per batch. Waits inside go through
    /// the given [`Blocking`], which must let go of what is held.
    fn hold(&self, batch: &mut dyn FnMut(&dyn Blocking)) {
        batch(&InPlace)
    }
}
