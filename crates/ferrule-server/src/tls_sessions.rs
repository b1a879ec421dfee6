//! TLS 1.2 session IDs every worker of one master resumes: rustls' session store
//! (`StoresServerSessions`) over a table in memory the master maps before forking.
//!
//! A TLS 1.2 client that offers no ticket (`openssl s_client -no_ticket`, some older
//! Java clients) resumes by session ID, and rustls' own store is a map in each
//! worker's memory, so such a client resumed only on the worker that made its
//! session. Here the sessions live in a `MAP_SHARED` table ([`crate::sys::shared_words`])
//! made once per process (the master, on its first TLS load, before any fork; a HUP
//! keeps it), which every worker inherits.
//!
//! The table: [`SLOTS`] slots, direct-mapped by the session ID's first bytes (random,
//! so they spread), a new session replacing whatever its slot held, like a cache of
//! that many sessions. A value longer than [`VALUE_MAX`] (a session with a long client
//! certificate chain) is not stored: that client does a full handshake next time.
//! Each slot is a seqlock: a writer takes the slot's lock word (with the time it took
//! it, so a lock left by a worker killed mid-write is taken over after a second),
//! makes the sequence odd, writes, makes it even; a reader copies and keeps the copy
//! only if the sequence was even and unchanged, else reports a miss (a full handshake,
//! never a wait). All of it is atomics on shared memory: no process waits for another.
//!
//! Each session is stored with a tag of what it vouches for (a digest of the
//! certificate, key and client-CA files: `TlsSettings::load`); a worker finds only the
//! sessions of its own files, so after a HUP that changed them (a client CA removed,
//! a new certificate) the old sessions no longer resume.

use nix::time::{clock_gettime, ClockId};
use rustls::server::StoresServerSessions;
use std::fmt;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::OnceLock;

/// Sessions the table holds (about 4 MiB of address space, touched as used).
pub const SLOTS: usize = 2048;
/// The longest encoded session stored (a TLS 1.2 session without a client
/// certificate is about 100 bytes).
pub const VALUE_MAX: usize = 2040;
/// TLS 1.2 session IDs are at most 32 bytes.
const KEY_MAX: usize = 32;

const LOCK: usize = 0;
const SEQ: usize = 1;
/// Key length (low 8 bits) and value length (next 16).
const LENS: usize = 2;
/// The identity tag of the settings the session was made under.
const TAG: usize = 3;
const KEY: usize = 4;
const VALUE: usize = KEY + KEY_MAX / 8;
const SLOT_WORDS: usize = VALUE + VALUE_MAX / 8;

/// A lock older than this was left by a process that died holding it.
const STALE_LOCK_MS: u64 = 1000;

static TABLE: OnceLock<&'static [AtomicU64]> = OnceLock::new();

/// The session store rustls is given (`ServerConfig::session_storage`).
pub struct SharedSessions {
    words: &'static [AtomicU64],
    /// This worker's identity tag: sessions stored under another are not found.
    tag: u64,
}

impl fmt::Debug for SharedSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSessions")
            .field("slots", &(self.words.len() / SLOT_WORDS))
            .finish_non_exhaustive()
    }
}

impl SharedSessions {
    /// The store over this process's table (mapped now if it is the first use), for
    /// sessions made under `identity` (`TlsSettings::load`'s digest of the files).
    pub fn new(identity: [u8; 32]) -> std::io::Result<SharedSessions> {
        let tag = tag_of(identity);
        if let Some(words) = TABLE.get() {
            return Ok(SharedSessions { words, tag });
        }
        let fresh = crate::sys::shared_words(SLOTS * SLOT_WORDS)?;
        // A racing thread's mapping may win; the loser's stays mapped, unused.
        Ok(SharedSessions {
            words: TABLE.get_or_init(|| fresh),
            tag,
        })
    }

    /// A store over `words` (tests: a table of their own).
    #[cfg(test)]
    pub(crate) fn over(words: &'static [AtomicU64]) -> SharedSessions {
        SharedSessions { words, tag: 1 }
    }

    /// The same store, for sessions made under `identity`.
    #[cfg(test)]
    pub(crate) fn under(self, identity: [u8; 32]) -> SharedSessions {
        SharedSessions {
            tag: tag_of(identity),
            ..self
        }
    }

    fn slot(&self, key: &[u8]) -> Option<&'static [AtomicU64]> {
        let slots = self.words.len() / SLOT_WORDS;
        if key.is_empty() || key.len() > KEY_MAX || slots == 0 {
            return None;
        }
        let mut first = [0u8; 8];
        let n = key.len().min(8);
        first[..n].copy_from_slice(&key[..n]);
        let i = (u64::from_le_bytes(first) % slots as u64) as usize;
        self.words.get(i * SLOT_WORDS..(i + 1) * SLOT_WORDS)
    }

    fn write(&self, slot: &[AtomicU64], key: &[u8], value: &[u8]) -> bool {
        let now = now_ms();
        let held = slot[LOCK].load(Ordering::Relaxed);
        let free = held == 0 || now.saturating_sub(held >> 1) > STALE_LOCK_MS;
        if !free
            || slot[LOCK]
                .compare_exchange(held, (now << 1) | 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return false; // another worker is writing this slot: keep its session
        }
        let seq = slot[SEQ].load(Ordering::Relaxed) | 1;
        slot[SEQ].store(seq, Ordering::Relaxed);
        fence(Ordering::Release);
        slot[LENS].store(
            key.len() as u64 | (value.len() as u64) << 8,
            Ordering::Relaxed,
        );
        slot[TAG].store(self.tag, Ordering::Relaxed);
        store_bytes(&slot[KEY..VALUE], key);
        store_bytes(&slot[VALUE..], value);
        slot[SEQ].store(seq.wrapping_add(1), Ordering::Release);
        slot[LOCK].store(0, Ordering::Release);
        true
    }

    /// The slot's value if it holds `key`, read consistently; `None` otherwise.
    fn read(&self, slot: &[AtomicU64], key: &[u8]) -> Option<Vec<u8>> {
        let seq = slot[SEQ].load(Ordering::Acquire);
        if seq & 1 == 1 {
            return None; // being written
        }
        let lens = slot[LENS].load(Ordering::Relaxed);
        let tag = slot[TAG].load(Ordering::Relaxed);
        let (key_len, value_len) = ((lens & 0xff) as usize, (lens >> 8 & 0xffff) as usize);
        let mut stored_key = [0u8; KEY_MAX];
        let mut value = vec![0u8; value_len.min(VALUE_MAX)];
        load_bytes(&slot[KEY..VALUE], &mut stored_key);
        load_bytes(&slot[VALUE..], &mut value);
        fence(Ordering::Acquire);
        if slot[SEQ].load(Ordering::Relaxed) != seq {
            return None; // changed while copied
        }
        let same = tag == self.tag
            && key_len == key.len()
            && value_len <= VALUE_MAX
            && stored_key.get(..key_len) == Some(key);
        same.then_some(value)
    }

    /// Empties the slot if it still holds `key` (a session taken for single use).
    fn clear(&self, slot: &[AtomicU64], key: &[u8]) {
        if self.read(slot, key).is_some() {
            self.write(slot, &[], &[]);
        }
    }
}

impl StoresServerSessions for SharedSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        if value.len() > VALUE_MAX {
            return false;
        }
        self.slot(&key)
            .is_some_and(|slot| self.write(slot, &key, &value))
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.read(self.slot(key)?, key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        let slot = self.slot(key)?;
        let value = self.read(slot, key)?;
        self.clear(slot, key);
        Some(value)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// The identity's first 8 bytes as a tag; never 0, the tag of an empty slot.
fn tag_of(identity: [u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&identity[..8]);
    u64::from_le_bytes(first).max(1)
}

/// Milliseconds on the monotonic clock, which every process of the host shares.
fn now_ms() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE).map_or(0, |t| {
        t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000
    })
}

fn store_bytes(words: &[AtomicU64], bytes: &[u8]) {
    for (word, chunk) in words.iter().zip(bytes.chunks(8)) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        word.store(u64::from_le_bytes(w), Ordering::Relaxed);
    }
}

fn load_bytes(words: &[AtomicU64], out: &mut [u8]) {
    for (word, chunk) in words.iter().zip(out.chunks_mut(8)) {
        let w = word.load(Ordering::Relaxed).to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests;
