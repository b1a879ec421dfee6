//! ferrule's server: listening sockets, connections, timeouts and threads.
//!
//! Knows HTTP only through `ferrule-http` and Python not at all: the app is behind
//! the [`Handler`] trait, which the PyO3 bridge implements.

pub mod access;
mod backoff;
mod blocking;
mod claims;
pub mod client_cert;
mod clock;
pub mod config;
mod conn;
mod cork;
mod date;
mod driver;
pub mod egress;
mod error;
mod exchange;
mod finished;
mod forwarding;
mod handler;
mod handshake;
mod held;
mod idle;
mod listener;
pub mod log;
pub mod logfile;
mod logline;
pub mod metrics;
mod preamble;
mod preread;
mod progress;
mod protocol;
mod refused;
mod runner;
mod sched;
mod server;
mod shared;
pub mod sink;
pub mod syslog;
// The only module allowed unsafe code (workspace lint `unsafe_code = "deny"`).
#[allow(unsafe_code)]
mod sys;
mod table;
mod timing;
mod tls_ciphers;
mod tls_sessions;
mod tls_settings;
mod tls_tickets;
mod tokens;
mod transport;
mod writing;

pub use backoff::Starved;
pub use blocking::{Blocking, InPlace};
pub use config::{
    check_tls_binds, parse_bind, AllowIps, Bind, BindTls, Endpoint, RemoteAddrFrom, ServerConfig,
};
pub use error::{Error, Phase};
pub use exchange::Exchange;
pub use finished::Outcome;
pub use handler::Handler;
pub use listener::{bind_all, BindError, Listener, Local, Peer};
pub use protocol::{Protocol, ReadyVars};
pub use server::Server;
pub use tls_ciphers::{cipher_suites, openssl_name, openssl_names};
pub use tls_settings::{CertReqs, TlsError, TlsFiles, TlsSettings};
