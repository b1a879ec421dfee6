//! Protocol drivers: what turns a connection's bytes into requests for the app.
pub(crate) mod http1;
mod read_ahead;

pub(crate) use http1::{accept_all, serve};
