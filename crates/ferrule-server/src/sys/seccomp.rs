//! The egress filter: seccomp user notification on `connect`, `sendto` with an
//! address, `sendmsg` and `sendmmsg`, for every thread of the process
//! (`SECCOMP_FILTER_FLAG_TSYNC`), and `io_uring_setup` refused (`EPERM`: a ring's
//! connects would bypass the filter). The supervisor's own calls go through one
//! assembly stub ([`exempt_syscall`]) whose addresses the filter lets through, so it
//! can perform the calls it judged without being trapped itself.
//!
//! x86_64 and aarch64 only; system calls of another ABI (i386's `int 0x80`, x32)
//! fail with `EPERM` while the filter is on, since their numbers are not checked.

use nix::libc;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".text",
    ".globl ferrule_egress_syscall",
    ".globl ferrule_egress_syscall_end",
    ".p2align 4",
    "ferrule_egress_syscall:",
    "mov rax, rdi",
    "mov rdi, rsi",
    "mov rsi, rdx",
    "mov rdx, rcx",
    "mov r10, r8",
    "mov r8, r9",
    "mov r9, [rsp + 8]",
    "syscall",
    "ret",
    "ferrule_egress_syscall_end:",
    "ud2",
);

#[cfg(target_arch = "aarch64")]
std::arch::global_asm!(
    ".text",
    ".globl ferrule_egress_syscall",
    ".globl ferrule_egress_syscall_end",
    ".p2align 4",
    "ferrule_egress_syscall:",
    "mov x8, x0",
    "mov x0, x1",
    "mov x1, x2",
    "mov x2, x3",
    "mov x3, x4",
    "mov x4, x5",
    "mov x5, x6",
    "svc #0",
    "ret",
    "ferrule_egress_syscall_end:",
    "brk #0",
);

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
extern "C" {
    fn ferrule_egress_syscall(nr: i64, a: u64, b: u64, c: u64, d: u64, e: u64, f: u64) -> i64;
    fn ferrule_egress_syscall_end();
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
/// Elsewhere no filter is installed (`install_filter` refuses); the program is only built.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: u32 = 0;

/// Whether egress can be installed on this machine's architecture.
pub const EGRESS_ARCH: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// A system call made through the exempt stub: the filter lets it through unjudged.
/// The result or the errno.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn exempt_syscall(nr: i64, args: [u64; 6]) -> Result<i64, i32> {
    // SAFETY: the calls made here (connect, sendto, sendmsg on a descriptor number,
    // with pointers into the caller's own live buffers) touch no memory Rust owns
    // beyond those buffers, which the callers keep alive for the call.
    let r =
        unsafe { ferrule_egress_syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) };
    match r {
        -4095..=-1 => Err((-r) as i32),
        r => Ok(r),
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn exempt_syscall(_nr: i64, _args: [u64; 6]) -> Result<i64, i32> {
    Err(libc::ENOSYS)
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

const LD: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JGT: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

// Offsets in `struct seccomp_data` (little-endian: a 64-bit value's low word first).
const NR: u32 = 0;
const ARCH: u32 = 4;
const IP_LO: u32 = 8;
const IP_HI: u32 = 12;
const ARG4_LO: u32 = 16 + 8 * 4;
const ARG4_HI: u32 = ARG4_LO + 4;

/// The BPF program for a stub at `start..=end` (addresses). Jump offsets count from
/// the next instruction; the indices are in the comments.
fn program(start: u64, end: u64) -> Vec<libc::sock_filter> {
    let allow = libc::SECCOMP_RET_ALLOW;
    let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let notify = libc::SECCOMP_RET_USER_NOTIF;
    let (lo, hi, end_lo) = (start as u32, (start >> 32) as u32, end as u32);
    let x32 = if cfg!(target_arch = "x86_64") {
        0x4000_0000
    } else {
        u32::MAX
    };
    // Where the address check starts, and the offset to it from instruction `i`.
    const CHECK: u8 = 18;
    let to_check = |i: u8| CHECK - i - 1;
    vec![
        stmt(LD, ARCH),                                        // 0
        jump(JEQ, AUDIT_ARCH, 1, 0),                           // 1
        stmt(RET, eperm),                                      // 2: another ABI
        stmt(LD, NR),                                          // 3
        jump(JGE, x32, 0, 1),                                  // 4
        stmt(RET, eperm),                                      // 5: x32
        jump(JEQ, libc::SYS_io_uring_setup as u32, 0, 1),      // 6
        stmt(RET, eperm),                                      // 7
        jump(JEQ, libc::SYS_connect as u32, to_check(8), 0),   // 8
        jump(JEQ, libc::SYS_sendmsg as u32, to_check(9), 0),   // 9
        jump(JEQ, libc::SYS_sendmmsg as u32, to_check(10), 0), // 10
        jump(JEQ, libc::SYS_sendto as u32, 1, 0),              // 11
        stmt(RET, allow),                                      // 12: not egress
        // sendto without an address (send(2), ferrule's own writes) costs nothing.
        stmt(LD, ARG4_LO),             // 13
        jump(JEQ, 0, 0, to_check(14)), // 14
        stmt(LD, ARG4_HI),             // 15
        jump(JEQ, 0, 0, to_check(16)), // 16
        stmt(RET, allow),              // 17
        // The supervisor's stub is exempt.
        stmt(LD, IP_HI),         // 18 = CHECK
        jump(JEQ, hi, 0, 4),     // 19
        stmt(LD, IP_LO),         // 20
        jump(JGE, lo, 0, 2),     // 21
        jump(JGT, end_lo, 1, 0), // 22
        stmt(RET, allow),        // 23
        stmt(RET, notify),       // 24
    ]
}

/// Installs the filter on every thread of the process; returns the notification
/// descriptor the supervisor reads. Sets `no_new_privs` (required to install a
/// filter without CAP_SYS_ADMIN: setuid programs the app runs get no new privileges).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn install_filter() -> io::Result<OwnedFd> {
    let start = ferrule_egress_syscall as *const () as usize as u64;
    let end = ferrule_egress_syscall_end as *const () as usize as u64;
    if start >> 32 != end >> 32 || end < start {
        return Err(io::Error::other(
            "the exempt stub straddles a 4 GiB boundary",
        ));
    }
    let mut prog = program(start, end);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
        | libc::SECCOMP_FILTER_FLAG_TSYNC
        | libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
    // SAFETY: `fprog` points at `prog`, alive for the call; the kernel copies it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn install_filter() -> io::Result<OwnedFd> {
    Err(io::Error::other("egress needs x86_64 or aarch64"))
}

/// The notification descriptor, for [`close_listener_in_child`].
static LISTENER: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn close_listener_in_child() {
    let fd = LISTENER.load(std::sync::atomic::Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: close(2) is async-signal-safe and the child owns this copy of the
        // descriptor; nothing else in the child uses it (its supervisor is not there).
        unsafe { libc::close(fd) };
    }
}

/// A child forked without exec (multiprocessing) keeps the filter but not the
/// supervisor: its calls still go to this process's supervisor, as long as this
/// process lives. Its copy of the descriptor (exec closes it: close-on-exec) is
/// closed at fork, so that once this process is gone the child's calls fail
/// (ENOSYS) instead of waiting for a supervisor that no longer exists.
pub fn close_listener_on_fork(fd: RawFd) {
    LISTENER.store(fd, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: registers a plain extern "C" function with no arguments; called in
    // the child right after fork, where it only calls close(2).
    let rc = unsafe { libc::pthread_atfork(None, None, Some(close_listener_in_child)) };
    if rc != 0 {
        tracing::warn!(
            "egress: pthread_atfork failed ({rc}); forked children keep the egress descriptor"
        );
    }
}

/// A trapped call: who made it and its arguments.
#[derive(Debug, Clone, Copy)]
pub struct Notice {
    pub id: u64,
    /// The calling thread's id.
    pub tid: i32,
    pub nr: i64,
    pub args: [u64; 6],
}

/// Waits for the next trapped call (EINTR and ENOENT, a caller gone, are retried).
pub fn next_notice(fd: RawFd) -> io::Result<Notice> {
    loop {
        // SAFETY: an all-zero seccomp_notif is valid (plain integers) and is what the
        // kernel requires before RECV.
        let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: `n` is a live seccomp_notif the ioctl fills.
        let rc = unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n) };
        if rc == 0 {
            return Ok(Notice {
                id: n.id,
                tid: n.pid as i32,
                nr: i64::from(n.data.nr),
                args: n.data.args,
            });
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) | Some(libc::ENOENT) => continue,
            _ => return Err(e),
        }
    }
}

/// How a trapped call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Its return value (the supervisor performed it).
    Value(i64),
    /// It fails with this errno.
    Errno(i32),
    /// The kernel runs it as the caller asked (a process outside the supervisor's).
    Continue,
}

/// Answers a trapped call; a caller that is gone (a signal ended its wait) is not an
/// error.
pub fn answer(fd: RawFd, id: u64, how: Answer) -> io::Result<()> {
    let (val, error, flags) = match how {
        Answer::Value(v) => (v, 0, 0),
        Answer::Errno(e) => (0, -e, 0),
        Answer::Continue => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
    };
    let mut resp = libc::seccomp_notif_resp {
        id,
        val,
        error,
        flags,
    };
    // SAFETY: `resp` is a live seccomp_notif_resp the ioctl reads.
    let rc = unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
    match rc {
        0 => Ok(()),
        _ => match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            e => Err(e),
        },
    }
}

/// Whether the call `id` still waits for an answer (checked after reading another
/// process's memory, whose pid could have been reused meanwhile).
pub fn still_waiting(fd: RawFd, id: u64) -> bool {
    let mut id = id;
    // SAFETY: `id` is a live u64 the ioctl reads.
    unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id) == 0 }
}

/// System calls the egress filter tests make as an app would (`egress/filter_tests.rs`).
#[cfg(test)]
pub mod probe {
    use super::*;

    /// connect(2) on `fd` with the first `len` bytes of `addr` as the sockaddr, read
    /// by the kernel (or the supervisor) as they are at that moment: other threads
    /// may be changing them (through atomics).
    pub fn connect_at<T: Sync>(fd: RawFd, addr: &T, len: usize) -> Result<(), i32> {
        assert!(len <= std::mem::size_of::<T>());
        // SAFETY: `addr` is live for the call and at least `len` bytes long.
        let rc = unsafe { libc::connect(fd, (addr as *const T).cast(), len as u32) };
        match rc {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error().raw_os_error().unwrap_or(0)),
        }
    }

    /// The errno of io_uring_setup(1, NULL) (which fails either way).
    pub fn io_uring_setup_errno() -> Option<i32> {
        // SAFETY: a null params pointer: the kernel only fails (EFAULT, or the filter's EPERM).
        let rc = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, std::ptr::null_mut::<u8>()) };
        (rc == -1).then(|| io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_lands_inside_the_program() {
        let p = program(0x5555_0000_1000, 0x5555_0000_1020);
        for (i, ins) in p.iter().enumerate() {
            if ins.code & 0x07 == libc::BPF_JMP as u16 {
                assert!(i + 1 + (ins.jt as usize) < p.len(), "jt of {i}");
                assert!(i + 1 + (ins.jf as usize) < p.len(), "jf of {i}");
            }
        }
        assert_eq!(p.last().map(|i| i.k), Some(libc::SECCOMP_RET_USER_NOTIF));
    }
}
