//! What the egress supervisor reads about a trapped call: the caller's memory (its
//! own process's, or a child's), copied with `process_vm_readv` so a bad pointer is
//! an `EFAULT` answer and never a fault here, and the socket a descriptor number
//! names (threads share the descriptor table). Errors are errnos: they become the
//! trapped call's answer.

use nix::libc;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Copies `buf.len()` bytes at `addr` in process `pid`; a short copy is `EFAULT`.
pub fn read_from(pid: i32, addr: u64, buf: &mut [u8]) -> Result<(), i32> {
    if buf.is_empty() {
        return Ok(());
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` covers `buf`, which is live and writable for the call; the
    // remote range is only read by the kernel, which checks it.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    match n {
        n if n == buf.len() as isize => Ok(()),
        n if n >= 0 => Err(libc::EFAULT),
        _ => Err(errno()),
    }
}

/// Writes `data` at `addr` in process `pid` (`sendmmsg`'s `msg_len` results).
pub fn write_to(pid: i32, addr: u64, data: &[u8]) -> Result<(), i32> {
    let local = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: `local` covers `data`, only read; the kernel checks the remote range.
    let n = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
    match n {
        n if n == data.len() as isize => Ok(()),
        n if n >= 0 => Err(libc::EFAULT),
        _ => Err(errno()),
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// `SO_TYPE` of descriptor `fd` (`SOCK_STREAM`, `SOCK_DGRAM`, ...).
pub fn socket_type(fd: RawFd) -> Result<i32, i32> {
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `ty` and `len` are live and sized as SO_TYPE needs; a bad number is EBADF.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    match rc {
        0 => Ok(ty),
        _ => Err(errno()),
    }
}

/// Whether the file `fd` names blocks (no `O_NONBLOCK`).
pub fn is_blocking(fd: RawFd) -> Result<bool, i32> {
    // SAFETY: F_GETFL on a number only reads the file's flags; a bad number is EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    match flags {
        -1 => Err(errno()),
        f => Ok(f & libc::O_NONBLOCK == 0),
    }
}

/// A close-on-exec duplicate of `fd`, to watch its connect finish.
pub fn dup_of(fd: RawFd) -> Result<OwnedFd, i32> {
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor; a bad number is EBADF.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    match new {
        -1 => Err(errno()),
        // SAFETY: a descriptor just made for this process, owned by nobody else.
        n => Ok(unsafe { OwnedFd::from_raw_fd(n) }),
    }
}
