//! The egress counters of every worker, in memory shared with the master
//! (`ferrule_egress_attempts_total{proto,destination,verdict}`).
//!
//! A fixed-size open-addressing table mapped by the master before the first fork.
//! A worker's egress supervisor counts each attempt here (`egress/supervisor.rs`).
//! No lock: a key is claimed with a compare-exchange on its entry's state word, its
//! bytes are written, then the state is published (release) and counts are atomic
//! adds. So exact across workers, including replaced ones: the table is not per
//! worker and nothing is folded when one goes.
//!
//! - A worker that sees an entry being claimed by another probes past it; two
//!   entries may then hold the same key, and a scrape sums them.
//! - A worker killed between claiming and publishing leaves an entry that is never
//!   shown nor reused: it costs one entry, never a wrong count elsewhere.
//! - Past [`MAX_KEYS`] claimed entries, a destination too long for an entry, or a
//!   probe run of [`MAX_PROBES`], attempts count under the destination `other`
//!   (one counter per proto and verdict), so the label set stays bounded.

use super::expose::EgressCount;
use crate::sys::shared_words;
use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};

/// Entries in the table (a power of two).
const CAPACITY: usize = 4096;
/// Entries claimed before new destinations count as `other`: half the table, so
/// probe runs stay short.
pub const MAX_KEYS: u64 = CAPACITY as u64 / 2;
const MAX_PROBES: usize = 64;
/// The destination counted when there is no room for another.
pub const OTHER: &str = "other";

/// An entry: state, count, key length, key bytes (proto, verdict, destination).
const KEY_WORDS: usize = 37;
const ENTRY: usize = 3 + KEY_WORDS;
const KEY_BYTES: usize = KEY_WORDS * 8;
/// Header: the `other` counters (proto × verdict), then the claimed-entry count.
const CLAIMED: usize = 4;
const HEADER: usize = 8;

const EMPTY: u64 = 0;
const BEING_CLAIMED: u64 = 1;
const PUBLISHED: u64 = 2;

const PROTOS: [&str; 2] = ["tcp", "udp"];
const VERDICTS: [&str; 2] = ["allow", "deny"];

/// The shared table (a handle: copies share the same memory).
#[derive(Clone, Copy)]
pub struct EgressTable {
    words: &'static [AtomicU64],
}

/// FNV-1a, 64 bits: the key's entry and the tag in its state word.
fn hash(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl EgressTable {
    /// Maps the table; call before forking the workers that count into it.
    pub fn new() -> io::Result<EgressTable> {
        Ok(EgressTable {
            words: shared_words(HEADER + CAPACITY * ENTRY)?,
        })
    }

    fn entry(&self, i: usize) -> &[AtomicU64] {
        &self.words[HEADER + i * ENTRY..HEADER + (i + 1) * ENTRY]
    }

    /// Counts one attempt to `destination` (`host:port`, or `addr:port` when no name
    /// was resolved).
    pub fn add(&self, udp: bool, deny: bool, destination: &str) {
        let (p, v) = (usize::from(udp), usize::from(deny));
        let Some((key, len)) = pack(p as u8, v as u8, destination) else {
            return self.other(p, v);
        };
        let h = hash(&key_bytes(&key)[..len]);
        let (claiming, published) = ((h << 2) | BEING_CLAIMED, (h << 2) | PUBLISHED);
        let words = len.div_ceil(8);
        for probe in 0..MAX_PROBES {
            let e = self.entry((h as usize).wrapping_add(probe) & (CAPACITY - 1));
            let mut state = e[0].load(Acquire);
            if state == EMPTY && self.words[CLAIMED].load(Relaxed) < MAX_KEYS {
                match e[0].compare_exchange(EMPTY, claiming, Relaxed, Acquire) {
                    Ok(_) => {
                        self.words[CLAIMED].fetch_add(1, Relaxed);
                        e[2].store(len as u64, Relaxed);
                        for (w, k) in e[3..3 + words].iter().zip(&key) {
                            w.store(*k, Relaxed);
                        }
                        e[1].fetch_add(1, Relaxed);
                        // Publishes the key written above to every reader.
                        e[0].store(published, Release);
                        return;
                    }
                    Err(now) => state = now,
                }
            }
            if state == EMPTY {
                break; // no room for a new key
            }
            if state == published
                && e[2].load(Relaxed) == len as u64
                && e[3..3 + words]
                    .iter()
                    .zip(&key)
                    .all(|(w, k)| w.load(Relaxed) == *k)
            {
                e[1].fetch_add(1, Relaxed);
                return;
            }
        }
        self.other(p, v)
    }

    fn other(&self, p: usize, v: usize) {
        self.words[p * 2 + v].fetch_add(1, Relaxed);
    }

    /// Every destination's counts, entries of the same key summed, sorted.
    pub fn snapshot(&self) -> Vec<EgressCount> {
        let mut all: BTreeMap<(usize, String, usize), u64> = BTreeMap::new();
        for (i, w) in self.words[..CLAIMED].iter().enumerate() {
            let n = w.load(Relaxed);
            if n > 0 {
                *all.entry((i / 2, OTHER.to_string(), i % 2)).or_default() += n;
            }
        }
        // No entry was ever claimed: the entries' pages are not touched.
        if self.words[CLAIMED].load(Relaxed) > 0 {
            for i in 0..CAPACITY {
                let e = self.entry(i);
                if e[0].load(Acquire) & 3 != PUBLISHED {
                    continue;
                }
                let len = (e[2].load(Relaxed) as usize).min(KEY_BYTES);
                let mut key = [0u64; KEY_WORDS];
                for (k, w) in key.iter_mut().zip(&e[3..]) {
                    *k = w.load(Relaxed);
                }
                let bytes = key_bytes(&key);
                let (p, v) = (usize::from(bytes[0] & 1), usize::from(bytes[1] & 1));
                let dest = String::from_utf8_lossy(&bytes[2..len.max(2)]).into_owned();
                *all.entry((p, dest, v)).or_default() += e[1].load(Relaxed);
            }
        }
        all.into_iter()
            .map(|((p, destination, v), count)| EgressCount {
                proto: PROTOS[p],
                destination,
                verdict: VERDICTS[v],
                count,
            })
            .collect()
    }
}

/// The key's bytes packed in words, and its length; None if it does not fit.
fn pack(p: u8, v: u8, destination: &str) -> Option<([u64; KEY_WORDS], usize)> {
    let len = destination.len() + 2;
    if len > KEY_BYTES {
        return None;
    }
    let mut bytes = [0u8; KEY_BYTES];
    bytes[0] = p;
    bytes[1] = v;
    bytes[2..len].copy_from_slice(destination.as_bytes());
    let mut key = [0u64; KEY_WORDS];
    for (k, chunk) in key.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *k = u64::from_le_bytes(b);
    }
    Some((key, len))
}

fn key_bytes(key: &[u64; KEY_WORDS]) -> [u8; KEY_BYTES] {
    let mut out = [0u8; KEY_BYTES];
    for (chunk, k) in out.chunks_exact_mut(8).zip(key) {
        chunk.copy_from_slice(&k.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(t: &EgressTable, proto: &str, dest: &str, verdict: &str) -> u64 {
        t.snapshot()
            .iter()
            .filter(|c| c.proto == proto && c.destination == dest && c.verdict == verdict)
            .map(|c| c.count)
            .sum()
    }

    #[test]
    fn counts_by_key() {
        let t = EgressTable::new().unwrap();
        assert!(t.snapshot().is_empty());
        for _ in 0..3 {
            t.add(false, false, "db.internal:5432");
        }
        t.add(false, true, "db.internal:5432");
        t.add(true, false, "db.internal:5432");
        t.add(false, false, "[::1]:80");
        assert_eq!(count(&t, "tcp", "db.internal:5432", "allow"), 3);
        assert_eq!(count(&t, "tcp", "db.internal:5432", "deny"), 1);
        assert_eq!(count(&t, "udp", "db.internal:5432", "allow"), 1);
        assert_eq!(count(&t, "tcp", "[::1]:80", "allow"), 1);
        assert_eq!(t.snapshot().len(), 4);
        // Too long for an entry: `other`.
        t.add(false, false, &"x".repeat(KEY_BYTES));
        assert_eq!(count(&t, "tcp", OTHER, "allow"), 1);
    }

    #[test]
    fn full_table_folds_into_other_and_sums_stay_exact() {
        let t = EgressTable::new().unwrap();
        let n = MAX_KEYS as usize + 100;
        for i in 0..n {
            t.add(false, false, &format!("10.0.{}.{}:443", i / 256, i % 256));
        }
        let s = t.snapshot();
        assert_eq!(s.iter().map(|c| c.count).sum::<u64>(), n as u64);
        assert!(s.len() <= MAX_KEYS as usize + 1);
        assert!(count(&t, "tcp", OTHER, "allow") >= 100);
    }

    #[test]
    fn threads_racing_on_the_same_keys_count_exactly() {
        let t = EgressTable::new().unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for i in 0..2000 {
                        t.add(i % 2 == 0, false, &format!("h{}:80", i % 7));
                    }
                });
            }
        });
        assert_eq!(t.snapshot().iter().map(|c| c.count).sum::<u64>(), 8000);
        let h0 = 4 * (0..2000).filter(|i| i % 7 == 0).count() as u64;
        let seen = count(&t, "udp", "h0:80", "allow") + count(&t, "tcp", "h0:80", "allow");
        assert_eq!(seen, h0);
    }

    #[test]
    fn an_entry_left_half_claimed_is_skipped() {
        let t = EgressTable::new().unwrap();
        let (key, len) = pack(0, 0, "a:1").unwrap();
        let h = hash(&key_bytes(&key)[..len]);
        // A worker killed after its compare-exchange: the entry is never published.
        t.entry(h as usize & (CAPACITY - 1))[0].store((h << 2) | BEING_CLAIMED, Relaxed);
        t.add(false, false, "a:1");
        t.add(false, false, "a:1");
        assert_eq!(count(&t, "tcp", "a:1", "allow"), 2);
    }
}
