//! ferrule's server: listening sockets, connections, timeouts and threads.
//!
//! Knows HTTP only through `ferrule-http` and Python not at all: the app is behind
//! the [`Handler`] trait, which the PyO3 bridge implements.

pub mod access;
mod backoff;
mod clock;
pub mod config;
mod conn;
mod cork;
mod driver;
mod error;
mod exchange;
mod held;
mod idle;
mod listener;
pub mod log;
pub mod logfile;
mod preread;
mod progress;
mod runner;
mod sched;
mod server;
pub mod sink;
mod sys;
mod table;
mod writing;

pub use backoff::Starved;
pub use config::{parse_bind, AllowIps, Bind, ServerConfig};
pub use error::{Error, Phase};
pub use exchange::{Exchange, NoPark, Outcome, Park};
pub use listener::{bind_all, BindError, Listener, Local, Peer};
pub use server::{Handler, Server};
