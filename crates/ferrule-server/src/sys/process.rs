//! The process and its threads: memory given back, the descriptor limit, per-thread
//! CPU clocks, timer slack, and whether a thread is runnable.

use std::io;
use std::time::Duration;

/// Returns the allocator's free memory to the system, pages inside its arenas
/// included (`malloc_trim(0)`; `idle.rs` says why). False when there was nothing to
/// return, or the C library has no such call.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointer, only the padding to keep at the top of
        // the heap; it locks each arena itself, so concurrent allocations are safe.
        unsafe { nix::libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Runs `prepare` in the forking thread right before every `fork` of this process,
/// and `after` right after it, in the parent and in the child (`pthread_atfork`): a
/// lock taken in `prepare` is held by no other thread at the fork, and `after`
/// releases it on both sides.
pub fn around_fork(prepare: extern "C" fn(), after: extern "C" fn()) -> io::Result<()> {
    // SAFETY: registers plain extern "C" functions without arguments, which live for
    // the whole program; glibc calls them around fork(2) in the forking thread only.
    let rc = unsafe { nix::libc::pthread_atfork(Some(prepare), Some(after), Some(after)) };
    match rc {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// The process's descriptor limit (`RLIMIT_NOFILE`): (soft, hard).
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    use nix::sys::resource::{getrlimit, Resource};
    Ok(getrlimit(Resource::RLIMIT_NOFILE)?)
}

/// The CPU-time clock of the calling thread, as other threads can read it: the
/// kernel's encoding of a per-thread scheduler clock, which is what glibc's
/// `pthread_getcpuclockid` returns.
pub fn current_thread_cpu_clock() -> i32 {
    let tid = nix::unistd::gettid().as_raw();
    (!tid << 3) | 6
}

/// Sets the calling thread's timer slack: 1 ns when `precise`, else the kernel's
/// default for the thread (50 µs unless its creator changed it). The slack is how late
/// the kernel may fire the thread's timers so that it can fire several with one
/// interrupt. Runner threads run the app, so this is what its `time.sleep` and poll
/// timeouts get; threads it starts inherit it. `Sched::precise_timers` says which.
/// Failure only leaves the setting as it was.
pub fn timer_slack(precise: bool) {
    // PR_SET_TIMERSLACK with 0 restores the thread's default.
    let _ = nix::sys::prctl::set_timerslack(if precise { 1 } else { 0 });
}

/// A thread's `/proc` stat file, opened by the thread itself and read by others, to
/// tell a blocked thread (sleeping in I/O) from a runnable one that is only waiting
/// for a CPU (preempted, or its virtual CPU stolen by the host).
pub struct ThreadState(std::fs::File);

impl ThreadState {
    /// Opens the calling thread's stat file.
    pub fn open_current() -> io::Result<ThreadState> {
        std::fs::File::open("/proc/thread-self/stat").map(ThreadState)
    }

    /// Whether the thread is running or runnable (state `R`).
    pub fn runnable(&self) -> bool {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 512];
        let Ok(n) = self.0.read_at(&mut buf, 0) else {
            return false;
        };
        let text = &buf[..n];
        // "tid (comm) S ...": the state follows the last ')', as comm may hold ')'.
        match text.iter().rposition(|&b| b == b')') {
            Some(i) => text.get(i + 2) == Some(&b'R'),
            None => false,
        }
    }
}

/// CPU time used so far by the thread whose clock is `clock`.
pub fn thread_cpu_time(clock: i32) -> Option<Duration> {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::from_raw(clock))
        .ok()
        .map(Duration::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_slack_sets_the_calling_threads_slack_and_restores_its_default() {
        let ours = nix::sys::prctl::get_timerslack().unwrap();
        let t = std::thread::spawn(|| {
            let default = nix::sys::prctl::get_timerslack().unwrap();
            timer_slack(true);
            let precise = nix::sys::prctl::get_timerslack().unwrap();
            timer_slack(false);
            (
                precise,
                nix::sys::prctl::get_timerslack().unwrap() == default,
            )
        });
        assert_eq!(t.join().unwrap(), (1, true));
        assert_eq!(
            nix::sys::prctl::get_timerslack().unwrap(),
            ours,
            "other threads keep theirs"
        );
    }

    #[test]
    fn thread_state_tells_running_from_sleeping() {
        assert!(ThreadState::open_current().unwrap().runnable());
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (stx, srx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            stx.send(ThreadState::open_current().unwrap()).unwrap();
            let _ = rx.recv(); // blocks: state S
        });
        let state = srx.recv().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while state.runnable() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(!state.runnable());
        drop(tx);
        t.join().unwrap();
    }

    #[test]
    fn thread_cpu_clock_reads_this_thread() {
        let clock = current_thread_cpu_clock();
        let a = thread_cpu_time(clock).unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(thread_cpu_time(clock).unwrap() > a);
    }
}
