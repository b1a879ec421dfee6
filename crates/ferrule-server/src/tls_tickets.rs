//! TLS session tickets that every worker of one master opens, rotated on the clock.
//!
//! rustls' own ticketer makes random keys in each process and rotates them on its own
//! timer, so a client resumes only on the worker that gave it the ticket. Here the
//! keys come from one secret made once per process ([`process_secret`]): the master
//! makes it when it first loads the TLS settings, before any fork, so every worker has
//! the same bytes, and a reload (HUP) that loads the settings again keeps them. Each
//! key is HKDF-SHA256 of that secret and the index of a [`PERIOD_SECS`] period of the
//! wall clock, so every worker moves to the next key at the same moment without
//! talking to the others. A ticket is sealed (ChaCha20-Poly1305) with the current
//! period's key and opened with the current or the previous one: it resumes for one
//! to two periods, and a key is forgotten two periods after it started, which bounds
//! what a stolen key can decrypt (the forward-secrecy cost of tickets).
//!
//! The key also depends on what a session vouches for (`identity`: the certificate, key
//! and client-CA files and what is asked of clients), so a HUP that changes any of them
//! stops the tickets made before from resuming: a client whose CA was removed must do a
//! full handshake, and be refused.
//!
//! Sealed ticket: period index (8 bytes, big-endian; also the AEAD's additional data)
//! ‖ random nonce (12) ‖ ciphertext ‖ tag (16).

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;
use std::fmt;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// How long one key seals new tickets: 6 hours, rustls' own rotation (nginx and
/// HAProxy operators rotate their ticket key files hourly to daily).
pub const PERIOD_SECS: u64 = 6 * 60 * 60;

/// The lifetime clients are told: one period, the least a ticket is accepted for
/// (one sealed at the end of a period is opened until the end of the next).
const LIFETIME_SECS: u32 = PERIOD_SECS as u32;

const PERIOD_LEN: usize = 8;
const TAG_LEN: usize = 16;

/// The secret every ticket key is derived from; made on first use and kept for the
/// life of the process (and its forked children).
static SECRET: OnceLock<[u8; 32]> = OnceLock::new();

fn process_secret() -> Result<[u8; 32], ring::error::Unspecified> {
    if let Some(secret) = SECRET.get() {
        return Ok(*secret);
    }
    let mut fresh = [0u8; 32];
    SystemRandom::new().fill(&mut fresh)?;
    // A second thread that raced us wins; every caller gets the one stored secret.
    Ok(*SECRET.get_or_init(|| fresh))
}

/// Keys of the current period and the one before, derived again when the period moves.
struct Keys {
    period: u64,
    current: LessSafeKey,
    previous: LessSafeKey,
}

/// The ticketer rustls is given (`ServerConfig::ticketer`).
pub struct SharedTickets {
    prk: hkdf::Prk,
    /// A digest of the files and settings the sessions were made under.
    identity: [u8; 32],
    keys: Mutex<Option<Keys>>,
    rng: SystemRandom,
}

impl fmt::Debug for SharedTickets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret or the keys.
        f.debug_struct("SharedTickets")
            .field("period_secs", &PERIOD_SECS)
            .finish_non_exhaustive()
    }
}

impl SharedTickets {
    /// The ticketer over this process's secret (made now if it is the first use), for
    /// sessions made under `identity` (`TlsSettings::load`'s digest of the files).
    pub fn new(identity: [u8; 32]) -> Result<SharedTickets, ring::error::Unspecified> {
        Ok(SharedTickets::from_secret(&process_secret()?).under(identity))
    }

    pub(crate) fn from_secret(secret: &[u8; 32]) -> SharedTickets {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"ferrule session tickets");
        SharedTickets {
            prk: salt.extract(secret),
            identity: [0; 32],
            keys: Mutex::new(None),
            rng: SystemRandom::new(),
        }
    }

    /// The same ticketer, for sessions made under `identity`.
    pub(crate) fn under(self, identity: [u8; 32]) -> SharedTickets {
        SharedTickets { identity, ..self }
    }

    fn key(&self, period: u64) -> Option<LessSafeKey> {
        let period = period.to_be_bytes();
        let info = [&period[..], &self.identity[..]];
        let okm = self.prk.expand(&info, &CHACHA20_POLY1305).ok()?;
        Some(LessSafeKey::new(UnboundKey::from(okm)))
    }

    /// The key for `period` if it is `now` or the one before, from the cache.
    fn key_for(&self, period: u64, now: u64) -> Option<LessSafeKey> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.as_ref().map(|k| k.period) != Some(now) {
            *keys = Some(Keys {
                period: now,
                current: self.key(now)?,
                previous: self.key(now.checked_sub(1)?)?,
            });
        }
        let keys = keys.as_ref()?;
        if period == now {
            Some(keys.current.clone())
        } else if Some(period) == now.checked_sub(1) {
            Some(keys.previous.clone())
        } else {
            None
        }
    }

    /// Seals `plain` with the key of `now`'s period.
    pub(crate) fn seal_at(&self, plain: &[u8], now: u64) -> Option<Vec<u8>> {
        let key = self.key_for(now, now)?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let period = now.to_be_bytes();
        let mut out = Vec::with_capacity(PERIOD_LEN + NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&period);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(period),
                &mut out[PERIOD_LEN + NONCE_LEN..],
            )
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    /// Opens a ticket sealed in `now`'s period or the one before; `None` for anything
    /// else (older, from the future, cut short, or altered).
    pub(crate) fn open_at(&self, sealed: &[u8], now: u64) -> Option<Vec<u8>> {
        let (period, rest) = sealed.split_at_checked(PERIOD_LEN)?;
        let (nonce, body) = rest.split_at_checked(NONCE_LEN)?;
        let period_bytes: [u8; PERIOD_LEN] = period.try_into().ok()?;
        let key = self.key_for(u64::from_be_bytes(period_bytes), now)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut out = body.to_vec();
        let len = key
            .open_in_place(nonce, Aad::from(period_bytes), &mut out)
            .ok()?
            .len();
        out.truncate(len);
        Some(out)
    }
}

/// The index of the period the wall clock is in: the same in every worker.
fn current_period() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / PERIOD_SECS)
}

impl ProducesTickets for SharedTickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        LIFETIME_SECS
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal_at(plain, current_period())
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open_at(cipher, current_period())
    }
}

#[cfg(test)]
mod tests;
