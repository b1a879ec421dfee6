//! Releasing the GIL while a request's thread waits on its socket.

use ferrule_server::Blocking;
use pyo3::Python;
use std::io;

/// Lets other Python threads run while this one waits for the client.
pub struct ReleaseGil<'py>(pub Python<'py>);

impl Blocking for ReleaseGil<'_> {
    fn block(&self, wait: &mut (dyn FnMut() -> io::Result<bool> + Send)) -> io::Result<bool> {
        self.0.detach(wait)
    }
}
