//! Epoll tokens: what an event is for. A connection's token is its table slot with
//! its generation (`table.rs`); these mark the others.

/// The waker's token.
pub(crate) const WAKE: u64 = u64::MAX;
/// Set on a listener's token (its index in the low bits).
pub(crate) const LISTENER: u64 = 1 << 63;
/// Set on a connection's token when its event reported the peer's end of stream.
pub(crate) const PEER_DONE: u64 = 1 << 62;
