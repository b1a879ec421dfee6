//! Attempts counted by destination and verdict, for the metrics exporters
//! (`ferrule.egress_counts()`). Bounded: past [`MAX_KEYS`] destinations, new ones
//! are counted under one key whose address is `other`.

use super::policy::Verdict;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Distinct (proto, addr, port, host, verdict) keys kept before `other`.
pub const MAX_KEYS: usize = 10_000;
/// The address of the key that takes the attempts past [`MAX_KEYS`].
pub const OTHER: &str = "other";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub proto: &'static str,
    pub addr: String,
    pub port: u16,
    pub host: Option<String>,
    pub verdict: &'static str,
}

#[derive(Default)]
pub struct Counts {
    map: Mutex<HashMap<Key, u64>>,
}

impl Counts {
    pub fn add(
        &self,
        proto: &'static str,
        ip: IpAddr,
        port: u16,
        host: Option<&str>,
        verdict: Verdict,
    ) {
        let mut key = Key {
            proto,
            addr: ip.to_string(),
            port,
            host: host.map(str::to_string),
            verdict: verdict.as_str(),
        };
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(&key) {
            key = Key {
                proto,
                addr: OTHER.into(),
                port: 0,
                host: None,
                verdict: verdict.as_str(),
            };
        }
        *map.entry(key).or_insert(0) += 1;
    }

    /// Every key with its count, sorted (stable output for exporters and tests).
    pub fn snapshot(&self) -> Vec<(Key, u64)> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<(Key, u64)> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort_by(|a, b| {
            (a.0.proto, &a.0.addr, a.0.port, &a.0.host, a.0.verdict).cmp(&(
                b.0.proto,
                &b.0.addr,
                b.0.port,
                &b.0.host,
                b.0.verdict,
            ))
        });
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_key_and_bounds_the_keys() {
        let c = Counts::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        c.add("tcp", ip, 1, Some("a"), Verdict::Allow);
        c.add("tcp", ip, 1, Some("a"), Verdict::Allow);
        c.add("tcp", ip, 1, Some("a"), Verdict::Deny);
        let s = c.snapshot();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].1, 2);
        for port in 2..=(MAX_KEYS as u16 + 5) {
            c.add("udp", ip, port, None, Verdict::Allow);
        }
        let s = c.snapshot();
        assert_eq!(s.len(), MAX_KEYS + 1);
        let other = s.iter().find(|(k, _)| k.addr == OTHER).unwrap();
        assert_eq!(other.1, 6);
    }
}
