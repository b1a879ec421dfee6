//! `--ciphers`: the OpenSSL-style cipher list users already have (gunicorn passes it to
//! `SSLContext.set_ciphers`), mapped to the suites rustls' ring provider has.
//!
//! The list is read as OpenSSL reads it: elements split on `:`, `,` or spaces; a bare
//! element appends the suites it matches that are not yet in the list; `-` removes them
//! (a later element may add them back), `!` removes them for good, `+` moves them to the
//! end; `A+B` matches what both match; `@STRENGTH` sorts by key length, strongest first.
//! Words are OpenSSL names (`ECDHE-RSA-AES128-GCM-SHA256`), IANA names
//! (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`) or aliases (`HIGH`, `ECDHE`, `AESGCM`, ...).
//! A word that names only ciphers rustls lacks (`DHE`, `3DES`, `SHA256`: the MAC of CBC
//! suites) matches nothing, as an unknown word does in OpenSSL, so existing lists keep
//! working; a list that selects nothing at all is refused.
//!
//! TLS 1.3: OpenSSL's cipher list does not touch TLS 1.3 suites (`ciphersuites` does),
//! so a list that names no TLS 1.3 suite keeps all of rustls' (first, as OpenSSL lists
//! them). A list that names one (`TLS_AES_256_GCM_SHA384`, or the word `TLSv1.3`) sets
//! the TLS 1.3 suites too: they are then the ones it selects.

use rustls::crypto::ring::ALL_CIPHER_SUITES;
use rustls::{CipherSuite, SupportedCipherSuite};

/// One suite: its names and the attributes OpenSSL's aliases select on.
struct Suite {
    id: CipherSuite,
    openssl: &'static str,
    iana: &'static str,
    tls13: bool,
    ecdsa: bool,
    /// AES-GCM (else ChaCha20-Poly1305).
    aes_gcm: bool,
    bits: u16,
}

const fn s12(
    id: CipherSuite,
    openssl: &'static str,
    iana: &'static str,
    ecdsa: bool,
    aes_gcm: bool,
    bits: u16,
) -> Suite {
    Suite {
        id,
        openssl,
        iana,
        tls13: false,
        ecdsa,
        aes_gcm,
        bits,
    }
}

const fn s13(id: CipherSuite, iana: &'static str, aes_gcm: bool, bits: u16) -> Suite {
    Suite {
        id,
        openssl: iana,
        iana,
        tls13: true,
        ecdsa: false,
        aes_gcm,
        bits,
    }
}

/// In OpenSSL's `DEFAULT` order (strongest first, ECDSA before RSA), which is the order
/// an alias adds its suites in. Columns: OpenSSL name, IANA name, ECDSA, AES-GCM, bits.
#[rustfmt::skip]
const SUITES: [Suite; 9] = {
    use CipherSuite as C;
    [
        s12(C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, "ECDHE-ECDSA-AES256-GCM-SHA384", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", true, true, 256),
        s12(C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, "ECDHE-RSA-AES256-GCM-SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", false, true, 256),
        s12(C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, "ECDHE-ECDSA-CHACHA20-POLY1305", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", true, false, 256),
        s12(C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, "ECDHE-RSA-CHACHA20-POLY1305", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", false, false, 256),
        s12(C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, "ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", true, true, 128),
        s12(C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, "ECDHE-RSA-AES128-GCM-SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", false, true, 128),
        s13(C::TLS13_AES_256_GCM_SHA384, "TLS_AES_256_GCM_SHA384", true, 256),
        s13(C::TLS13_CHACHA20_POLY1305_SHA256, "TLS_CHACHA20_POLY1305_SHA256", false, 256),
        s13(C::TLS13_AES_128_GCM_SHA256, "TLS_AES_128_GCM_SHA256", true, 128),
    ]
};

/// What an element does with the suites it matches (OpenSSL's prefixes).
enum Op {
    /// No prefix: append those not in the list yet.
    Add,
    /// `-`: remove; a later element may add them back.
    Remove,
    /// `!`: remove, and never add again.
    Ban,
    /// `+`: move to the end of the list.
    Last,
}

/// A set of `SUITES` indices.
type Set = u16;

fn set_where(f: impl Fn(&Suite) -> bool) -> Set {
    SUITES
        .iter()
        .enumerate()
        .filter(|(_, s)| f(s))
        .fold(0, |m, (i, _)| m | 1 << i)
}

/// What one word matches. Every TLS 1.2 suite rustls has is ECDHE, AEAD, HIGH and
/// TLS 1.2-only, so those aliases match all six; aliases of what it lacks match none.
fn matches(word: &str) -> Set {
    let is = |w: &str| word.eq_ignore_ascii_case(w);
    let named = set_where(|s| {
        is(s.openssl) || is(s.iana) || s.id.as_str().is_some_and(|n| word.eq_ignore_ascii_case(n))
    });
    if named != 0 {
        return named;
    }
    let tls12 = |f: &dyn Fn(&Suite) -> bool| set_where(|s| !s.tls13 && f(s));
    let any = [
        "ALL", "DEFAULT", "HIGH", "TLSv1.2", "ECDHE", "EECDH", "kECDHE", "kEECDH", "ECDH", "AEAD",
    ];
    if any.iter().any(|w| is(w)) {
        return tls12(&|_| true);
    }
    match word.to_ascii_uppercase().as_str() {
        "TLSV1.3" => set_where(|s| s.tls13),
        "AECDSA" | "ECDSA" => tls12(&|s| s.ecdsa),
        // "RSA" alone is RSA key exchange in OpenSSL, which rustls does not do.
        "ARSA" => tls12(&|s| !s.ecdsa),
        "AES" | "AESGCM" => tls12(&|s| s.aes_gcm),
        "AES128" => tls12(&|s| s.aes_gcm && s.bits == 128),
        "AES256" => tls12(&|s| s.aes_gcm && s.bits == 256),
        "CHACHA20" => tls12(&|s| !s.aes_gcm),
        _ => 0,
    }
}

/// The suites `list` selects, in its order; the error is one line naming the setting.
pub fn cipher_suites(list: &str) -> Result<Vec<SupportedCipherSuite>, String> {
    // gunicorn 19's default, kept in configs written then. OpenSSL read it as its
    // TLS 1.0 CBC suites, which rustls has none of; it was never a choice of suites.
    if list.trim().eq_ignore_ascii_case("TLSv1") {
        return cipher_suites("DEFAULT");
    }
    let mut order: Vec<usize> = Vec::new();
    let mut banned: Set = 0;
    let mut named13 = false;
    for element in list.split([':', ',', ' ']).filter(|e| !e.is_empty()) {
        if let Some(command) = element.strip_prefix('@') {
            let upper = command.to_ascii_uppercase();
            if upper == "STRENGTH" {
                order.sort_by_key(|&i| std::cmp::Reverse(SUITES[i].bits));
            } else if !upper.starts_with("SECLEVEL=") {
                // @SECLEVEL is OpenSSL's floor on key sizes: every suite here passes it.
                return Err(format!(
                    "ciphers {list:?}: unknown command {element:?} \
                     (OpenSSL knows @STRENGTH and @SECLEVEL=N)"
                ));
            }
            continue;
        }
        let (op, rule) = if let Some(r) = element.strip_prefix('!') {
            (Op::Ban, r)
        } else if let Some(r) = element.strip_prefix('-') {
            (Op::Remove, r)
        } else if let Some(r) = element.strip_prefix('+') {
            (Op::Last, r)
        } else {
            (Op::Add, element)
        };
        let mut words = rule.split('+').filter(|w| !w.is_empty()).peekable();
        let set = match words.peek() {
            None => 0,
            Some(_) => words.fold(Set::MAX, |m, w| m & matches(w)),
        };
        named13 |= set & set_where(|s| s.tls13) != 0;
        let hit = |i: &usize| set & 1 << i != 0;
        match op {
            Op::Ban => {
                banned |= set;
                order.retain(|i| !hit(i));
            }
            Op::Remove => order.retain(|i| !hit(i)),
            Op::Last => {
                let (moved, kept): (Vec<usize>, Vec<usize>) = order.iter().partition(|i| hit(i));
                order = kept;
                order.extend(moved);
            }
            Op::Add => {
                for i in (0..SUITES.len()).filter(|i| banned & 1 << i == 0 && hit(i)) {
                    if !order.contains(&i) {
                        order.push(i);
                    }
                }
            }
        }
    }
    if order.is_empty() {
        return Err(format!(
            "ciphers {list:?}: names none of the suites ferrule supports ({})",
            supported_names()
        ));
    }
    let mut chosen: Vec<usize> = Vec::new();
    if !named13 {
        chosen.extend((0..SUITES.len()).filter(|&i| SUITES[i].tls13));
    }
    chosen.extend(order);
    Ok(chosen
        .into_iter()
        .filter_map(|i| provided(SUITES[i].id))
        .collect())
}

/// rustls' suite for `id`: all nine are in the ring provider with `tls12` on.
fn provided(id: CipherSuite) -> Option<SupportedCipherSuite> {
    ALL_CIPHER_SUITES.iter().copied().find(|s| s.suite() == id)
}

fn supported_names() -> String {
    SUITES
        .iter()
        .map(|s| s.openssl)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The OpenSSL name of a suite (`ECDHE-RSA-AES128-GCM-SHA256`, `TLS_AES_128_GCM_SHA256`):
/// what `SSL_CIPHER` holds under nginx and mod_ssl, and what start-up logs.
/// Every OpenSSL suite name [`openssl_name`] can answer (made into Python strings
/// once, not per request).
pub fn openssl_names() -> impl Iterator<Item = &'static str> {
    SUITES.iter().map(|s| s.openssl)
}

pub fn openssl_name(suite: SupportedCipherSuite) -> Option<&'static str> {
    SUITES
        .iter()
        .find(|s| s.id == suite.suite())
        .map(|s| s.openssl)
}

#[cfg(test)]
#[path = "tls_ciphers_tests.rs"]
mod tests;
