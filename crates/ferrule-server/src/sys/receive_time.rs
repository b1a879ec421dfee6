//! The kernel's receive time of a socket's bytes (`SO_TIMESTAMPNS`), for the queue
//! wait (`timing.rs`): set on a TCP listener, the option is inherited by every
//! connection it accepts, and each `recvmsg` then carries the time the newest segment
//! it read reached the kernel (`CLOCK_REALTIME`). A read with no stamp leaves the
//! last one in place (a unix stream socket never has one: Linux stamps only
//! datagrams and TCP there).

use nix::libc;
use nix::sys::socket::{setsockopt, sockopt};
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Turns the receive times on or off on `fd` (a TCP listener: its accepted
/// connections inherit the setting).
pub fn set_receive_times(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    setsockopt(&fd, sockopt::ReceiveTimestampns, &on).map_err(io::Error::from)
}

/// One `SCM_TIMESTAMPNS` message as the kernel lays it out: its header, then its
/// `timespec` at `CMSG_DATA` (the header's size, already aligned; checked in the tests).
#[repr(C)]
#[derive(Clone, Copy)]
struct Control {
    header: libc::cmsghdr,
    time: libc::timespec,
}

/// `recv(2)` into `len` bytes at `ptr`, by `recvmsg(2)`; a receive time found with
/// the bytes is stored in `rx` (nanoseconds since the Unix epoch).
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
#[inline]
unsafe fn recv_stamped_raw(
    fd: BorrowedFd<'_>,
    ptr: *mut u8,
    len: usize,
    rx: &mut u64,
) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: ptr.cast(),
        iov_len: len,
    };
    // Not zeroed: only what the kernel wrote (`msg_controllen` says how much) is read.
    let mut control = MaybeUninit::<Control>::uninit();
    // SAFETY: a msghdr of zeros is a valid empty one (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<Control>() as _;
    // SAFETY: `msg` names one iovec of `len` writable bytes at `ptr` (the caller's
    // promise) and `control`, both alive for the call; the kernel writes only there.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // The only control message this socket can carry is SCM_TIMESTAMPNS (the one
    // option set), and a whole one fills `control`: then the kernel wrote all of it.
    // `msg_controllen` is a usize with glibc, a u32 with musl.
    #[allow(clippy::unnecessary_cast)]
    let written = msg.msg_controllen as usize;
    if written == size_of::<Control>() {
        // SAFETY: the kernel wrote `msg_controllen` bytes, the whole of `control`.
        let c = unsafe { control.assume_init() };
        // One compare of the adjacent pair; a kernel time cannot overflow u64 ns
        // before the year 2554, so plain arithmetic.
        if (c.header.cmsg_level, c.header.cmsg_type) == (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) {
            *rx = (c.time.tv_sec as u64)
                .wrapping_mul(1_000_000_000)
                .wrapping_add(c.time.tv_nsec as u64);
        }
    }
    Ok(n as usize)
}

/// [`super::read_append`] that also keeps the receive time (see [`recv_stamped`]).
pub fn read_append_stamped(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    min_spare: usize,
    grow: usize,
    rx: &mut u64,
) -> io::Result<usize> {
    if buf.capacity() - buf.len() < min_spare {
        buf.reserve(grow);
    }
    let spare = buf.spare_capacity_mut();
    // SAFETY: `spare` is `spare.len()` writable bytes owned by `buf`.
    let n = unsafe { recv_stamped_raw(fd, spare.as_mut_ptr().cast(), spare.len(), rx)? };
    // SAFETY: recvmsg initialised the first `n <= spare.len()` bytes of the spare
    // capacity, so the new length is within the allocation.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// `recv(2)` into `buf`, storing the receive time of the newest segment read in `rx`
/// when the kernel gave one.
pub fn recv_stamped(fd: BorrowedFd<'_>, buf: &mut [u8], rx: &mut u64) -> io::Result<usize> {
    // SAFETY: `buf` is `buf.len()` writable bytes.
    unsafe { recv_stamped_raw(fd, buf.as_mut_ptr(), buf.len(), rx) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn now_ns() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    }

    /// One connection to `l` that sends `data` at once: the bytes read and their time.
    fn first_read(l: &TcpListener, data: &[u8]) -> (TcpStream, TcpStream, Vec<u8>, u64) {
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        c.write_all(data).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::with_capacity(64);
        let mut rx = 0;
        read_append_stamped(s.as_fd(), &mut buf, 64, 64, &mut rx).unwrap();
        (c, s, buf, rx)
    }

    #[test]
    fn the_control_message_is_laid_out_as_the_kernel_writes_it() {
        // SAFETY: CMSG_LEN and CMSG_SPACE only compute sizes.
        let (len, space) = unsafe {
            (
                libc::CMSG_LEN(size_of::<libc::timespec>() as u32) as usize,
                libc::CMSG_SPACE(size_of::<libc::timespec>() as u32) as usize,
            )
        };
        assert_eq!(len, size_of::<Control>());
        assert_eq!(space, size_of::<Control>());
        assert_eq!(
            std::mem::offset_of!(Control, time),
            len - size_of::<libc::timespec>()
        );
    }

    #[test]
    fn an_accepted_connection_inherits_the_stamps_of_its_listener() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        set_receive_times(l.as_fd(), true).unwrap();
        // The kernel turns stamping on for the whole stack from a work queue: packets in
        // the first moments after the first socket asked may have no time.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let (mut c, s, before) = loop {
            let before = now_ns();
            let (c, s, buf, rx) = first_read(&l, b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(buf, b"GET / HTTP/1.1\r\n\r\n");
            if rx != 0 {
                // Stamped when it reached the kernel, before this read.
                assert!(rx + 1_000_000 >= before && rx <= now_ns(), "{before} {rx}");
                break (c, s, before);
            }
            assert!(std::time::Instant::now() < deadline, "never stamped");
        };
        // A later read on the same connection: a later time.
        c.write_all(b"x").unwrap();
        let (mut rx, mut one) = (0, [0u8; 8]);
        assert_eq!(recv_stamped(s.as_fd(), &mut one, &mut rx).unwrap(), 1);
        assert!(rx > before);
        // Off: no time, and the one kept is left as it was.
        set_receive_times(s.as_fd(), false).unwrap();
        c.write_all(b"y").unwrap();
        let mut kept = 7;
        assert_eq!(recv_stamped(s.as_fd(), &mut one, &mut kept).unwrap(), 1);
        assert_eq!(kept, 7);
    }
}
