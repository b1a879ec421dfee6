//! Which name the app resolved to reach an address: the Python `socket.getaddrinfo`
//! wrapper reports each answer here. Bounded (least recently reported forgotten
//! first); when several names resolve to one address, the most recent wins.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Addresses remembered.
const MAX_ADDRS: usize = 4096;

/// Address → (name, when it was reported); and the clock that orders reports.
type Names = (HashMap<IpAddr, (String, u64)>, u64);

#[derive(Default)]
pub struct Hosts {
    map: Mutex<Names>,
}

impl Hosts {
    /// `name` resolved to `addrs`; an empty `name` (the app used the literal
    /// address) forgets their names.
    pub fn note(&self, name: &str, addrs: &[IpAddr]) {
        let mut guard = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let (map, clock) = &mut *guard;
        if name.is_empty() {
            for ip in addrs {
                map.remove(&ip.to_canonical());
            }
            return;
        }
        for ip in addrs {
            *clock += 1;
            let ip = ip.to_canonical();
            if map.len() >= MAX_ADDRS && !map.contains_key(&ip) {
                let oldest = map.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k);
                if let Some(k) = oldest {
                    map.remove(&k);
                }
            }
            match map.get_mut(&ip) {
                Some(entry) if entry.0 == name => entry.1 = *clock,
                _ => {
                    map.insert(ip, (name.to_string(), *clock));
                }
            }
        }
    }

    /// The name last reported for `ip`, written into `out` (reused); false if none.
    pub fn name_into(&self, ip: IpAddr, out: &mut String) -> bool {
        let guard = self.map.lock().unwrap_or_else(|p| p.into_inner());
        out.clear();
        match guard.0.get(&ip) {
            Some((name, _)) => {
                out.push_str(name);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_recent_name_wins_and_the_map_is_bounded() {
        let h = Hosts::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let mut out = String::new();
        assert!(!h.name_into(a, &mut out));
        h.note("one", &[a]);
        h.note("two", &[a, "::ffff:127.0.0.2".parse().unwrap()]);
        assert!(h.name_into(a, &mut out) && out == "two");
        assert!(h.name_into("127.0.0.2".parse().unwrap(), &mut out));
        h.note("", &["127.0.0.2".parse().unwrap()]);
        assert!(
            !h.name_into("127.0.0.2".parse().unwrap(), &mut out),
            "a literal forgets"
        );
        for i in 0..(MAX_ADDRS as u32 + 10) {
            h.note(
                "many",
                &[IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))],
            );
        }
        assert_eq!(h.map.lock().unwrap().0.len(), MAX_ADDRS);
        assert!(!h.name_into(a, &mut out), "the oldest was forgotten");
    }
}
