//! The request id: a trusted front end's `X-Request-ID`, or one made of this process's
//! random key and the request's sequence number ([`MadeId`]), whose 32 hex characters
//! are written only where the id is shown (the environ, the access log, the egress log).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// This process's random id prefix (drawn after the fork, so workers differ).
static KEY: AtomicU64 = AtomicU64::new(0);
/// The process that drew `KEY` (a forked worker draws its own); held while drawing.
static KEY_PID: Mutex<u32> = Mutex::new(0);

/// Longest `X-Request-ID` kept from a trusted peer.
const MAX_FORWARDED_ID: usize = 200;
/// A made id: the process's key, then the sequence number, 16 hex digits each.
const MADE_ID: usize = 32;

/// Draws this process's key, once per process (a made id's text is made again from it
/// whenever it is shown, so it must not change; a forked worker draws its own).
pub(crate) fn draw_key() {
    let pid = std::process::id();
    let mut drawn_by = KEY_PID.lock().unwrap_or_else(|p| p.into_inner());
    if *drawn_by == pid {
        return;
    }
    let mut bytes = [0u8; 8];
    if let Err(e) = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
    {
        // Still distinct per process: the pid and the time stand in.
        tracing::warn!("/dev/urandom: {e}; request ids use the pid and the time");
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        bytes = (t ^ (u64::from(pid) << 40)).to_le_bytes();
    }
    KEY.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
    *drawn_by = pid;
}

/// A made request id: this process's random key and a request's sequence number,
/// 16 lowercase hex digits each. Its text is written only where it is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadeId {
    key: u64,
    seq: u64,
}

impl MadeId {
    /// Its text's length.
    pub const LEN: usize = MADE_ID;

    pub(crate) fn new(seq: u64) -> MadeId {
        MadeId {
            key: KEY.load(Ordering::Relaxed),
            seq,
        }
    }

    /// The id's 32 characters.
    pub fn text(self) -> [u8; MADE_ID] {
        let mut out = [0u8; MADE_ID];
        put_hex(&mut out[..16], self.key);
        put_hex(&mut out[16..], self.seq);
        out
    }

    /// The last two characters of this id when they are all that differ from
    /// `last`'s text (the same process's key, a sequence number that differs in the
    /// low byte only: 255 requests in 256); `None` when more differ.
    #[inline]
    pub fn tail_after(self, last: MadeId) -> Option<[u8; 2]> {
        (last.key == self.key && (last.seq ^ self.seq) >> 8 == 0)
            .then(|| HEX_PAIRS[(self.seq & 0xff) as usize])
    }
}

/// A request's id as [`begin`] settled it, for the environ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestId {
    Made(MadeId),
    /// The trusted peer's `X-Request-ID` ([`forwarded_id`] of the same field).
    Forwarded,
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Every byte as two lowercase hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX_DIGITS[i >> 4], HEX_DIGITS[i & 0xf]];
        i += 1;
    }
    t
};

/// Writes `v` as 16 lowercase hex digits into `out` (a byte at a time from a table:
/// `format!` costs several times more).
fn put_hex(out: &mut [u8], v: u64) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(v.to_be_bytes()) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
    }
}

/// The trusted peer's `X-Request-ID` when it is kept as the request id: 1-200
/// visible ASCII characters.
pub fn forwarded_id(field: Option<&[u8]>) -> Option<&[u8]> {
    field.filter(|id| {
        (1..=MAX_FORWARDED_ID).contains(&id.len()) && id.iter().all(|b| b.is_ascii_graphic())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_id_after_another_differs_in_its_tail_or_is_made_whole() {
        draw_key();
        let full = |seq: u64| {
            let mut out = [0u8; 32];
            put_hex(&mut out[..16], KEY.load(Ordering::Relaxed));
            put_hex(&mut out[16..], seq);
            out
        };
        let mut last: Option<MadeId> = None;
        for seq in [
            1,
            2,
            15,
            16,
            17,
            255,
            256,
            0xffff_ffff,
            0x1_0000_0000,
            u64::MAX,
        ] {
            let id = MadeId::new(seq);
            assert_eq!(id.text(), full(seq), "seq {seq:#x}");
            if let Some(last) = last {
                let mut text = last.text();
                match id.tail_after(last) {
                    Some(tail) => text[30..].copy_from_slice(&tail),
                    None => assert!((last.seq ^ seq) > 0xff, "seq {seq:#x}"),
                }
                if (last.seq ^ seq) <= 0xff {
                    assert_eq!(
                        text,
                        full(seq),
                        "seq {seq:#x}: the tail is all that changed"
                    );
                }
            }
            last = Some(id);
        }
        let other = MadeId { key: 7, seq: 3 };
        assert_eq!(&other.text(), b"00000000000000070000000000000003");
        assert_eq!(
            other.tail_after(MadeId { key: 8, seq: 2 }),
            None,
            "another key"
        );
    }

    #[test]
    fn hex_is_lowercase_and_big_endian() {
        let mut out = [0u8; 16];
        put_hex(&mut out, 0x0123_4567_89ab_cdef);
        assert_eq!(&out, b"0123456789abcdef");
        put_hex(&mut out, u64::MAX);
        assert_eq!(&out, b"ffffffffffffffff");
    }
}
