//! The only module that talks to the kernel directly: epoll, eventfd, poll, recv,
//! send, sendfile and socket options, mostly through nix's safe wrappers. `unsafe` is used
//! for: reading into a buffer's spare capacity (zero-filling 16 KiB per read cost more
//! than the rest of a request), borrowing a descriptor number from Python's
//! file_wrapper, taking ownership of an inherited listening socket (`fd://N`), reading
//! a `recvmsg` control message (`receive_time.rs`), and
//! the TCP options nix has no wrapper for (`TCP_CORK`, which the monitor clears on a
//! socket named by number, and `TCP_DEFER_ACCEPT`), and mapping the memory a master
//! shares with its workers (`shared_memory.rs`: TLS 1.2 session IDs, metrics slots).
//!
//! `readiness.rs` owns epoll, the eventfd and poll(2); `socket.rs` the calls on a
//! socket; `process.rs` memory, limits and threads; `shared_memory.rs` the memory the
//! master shares with its workers (an anonymous `MAP_SHARED` mapping); `receive_time.rs` the
//! kernel's receive times of a socket's bytes (`recvmsg`'s control message);
//! `seccomp.rs` the egress filter and its notifications, `remote.rs` what the egress supervisor reads of a
//! trapped call (the caller's memory, the socket a descriptor number names).

mod process;
mod readiness;
mod receive_time;
pub mod remote;
pub mod seccomp;
mod shared_memory;
mod socket;

pub use process::{
    around_fork, current_thread_cpu_clock, nofile_limit, release_free_memory, thread_cpu_time,
    timer_slack, ThreadState,
};
pub use readiness::{empty_event, ends_stream, wait_ready, Event, Interest, Poller, Waker};
pub use receive_time::{read_append_stamped, recv_stamped, set_receive_times};
pub use shared_memory::shared_words;
pub use socket::{
    has_bytes, inherited_listener, read_append, send, send_and_shut, sendfile, set_cork,
    set_defer_accept,
};
