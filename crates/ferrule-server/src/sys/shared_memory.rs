//! Memory shared by a master and every worker it forks: an anonymous `MAP_SHARED`
//! mapping made before the fork (the TLS 1.2 session-ID store, `tls_sessions.rs`; the
//! metrics slots, `metrics/registry.rs`).

use std::io;
use std::sync::atomic::AtomicU64;

/// `count` zeroed words shared with every process this one forks from now on. The
/// mapping is never unmapped: it lives as long as the process, hence `'static`.
/// Every access goes through the atomics, so other processes writing at the same
/// time is not a data race.
pub fn shared_words(count: usize) -> io::Result<&'static [AtomicU64]> {
    let len = count
        .checked_mul(std::mem::size_of::<AtomicU64>())
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: an anonymous mapping at an address the kernel chooses touches no memory
    // of ours; the arguments are plain values and the result is checked below.
    let ptr = unsafe {
        nix::libc::mmap(
            std::ptr::null_mut(),
            len,
            nix::libc::PROT_READ | nix::libc::PROT_WRITE,
            nix::libc::MAP_SHARED | nix::libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == nix::libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the mapping is `len` bytes, page-aligned (so aligned for AtomicU64, which
    // has u64's size), zero-filled by the kernel (a valid AtomicU64 each), and never
    // unmapped or remapped, so the slice is valid for the rest of the process.
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<AtomicU64>(), count) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn zeroed_and_writable() {
        let w = shared_words(1024).unwrap();
        assert!(w.iter().all(|a| a.load(Ordering::Relaxed) == 0));
        w[7].store(5, Ordering::Relaxed);
        assert_eq!(w[7].load(Ordering::Relaxed), 5);
        assert!(shared_words(0).unwrap().is_empty());
    }
}
