//! Memory shared by the master and every worker it forks: the metrics slots
//! (`metrics/registry.rs`). One anonymous `MAP_SHARED` mapping made before any fork,
//! so each child sees the same pages; never unmapped, so it lives as long as the
//! process and its children.

use std::io;
use std::sync::atomic::AtomicU64;

/// `words` zeroed 64-bit atomics shared with every process forked afterwards.
pub fn shared_words(words: usize) -> io::Result<&'static [AtomicU64]> {
    let bytes = words
        .checked_mul(std::mem::size_of::<AtomicU64>())
        .filter(|&b| b > 0)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: an anonymous mapping with no address hint touches no existing memory;
    // the arguments are plain values and the result is checked against MAP_FAILED.
    let ptr = unsafe {
        nix::libc::mmap(
            std::ptr::null_mut(),
            bytes,
            nix::libc::PROT_READ | nix::libc::PROT_WRITE,
            nix::libc::MAP_SHARED | nix::libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == nix::libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the mapping is `bytes` long, page-aligned (more than AtomicU64's 8),
    // zero-filled by the kernel (a valid AtomicU64 is any bit pattern, and zero is
    // one), and never unmapped, so a 'static shared borrow is sound; every access
    // through it is atomic, which is what other processes sharing the pages need.
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<AtomicU64>(), words) })
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
        assert!(shared_words(0).is_err());
    }
}
