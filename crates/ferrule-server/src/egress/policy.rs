//! The decision for one attempt: deny rules first (deny wins), then allow rules;
//! once any allow rule exists everything else is denied, except the resolver
//! (`nameserver` lines of `/etc/resolv.conf`, UDP and TCP port 53), which the app
//! needs to resolve the names its allow rules give.

use super::rules::{parse_all, Rule};
use std::net::{IpAddr, ToSocketAddrs};

/// `rule` in the record when the resolver exception decided.
pub const NAMESERVER: &str = "nameserver";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        }
    }
}

/// The rules of one worker, fixed when it starts.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    deny: Vec<Rule>,
    allow: Vec<Rule>,
    nameservers: Vec<IpAddr>,
}

impl Policy {
    /// Parses the SPECs (each value may hold several, comma-separated). Names are
    /// not resolved yet ([`Policy::resolve`]).
    pub fn parse<S: AsRef<str>>(deny: &[S], allow: &[S]) -> Result<Policy, String> {
        Ok(Policy {
            deny: parse_all(deny).map_err(|e| format!("--egress-deny {e}"))?,
            allow: parse_all(allow).map_err(|e| format!("--egress-allow {e}"))?,
            nameservers: Vec::new(),
        })
    }

    /// The number of rules (keywords count once).
    pub fn len(&self) -> usize {
        self.deny.len() + self.allow.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves the host names of the rules and, when allow rules exist, reads the
    /// nameservers; done once per worker, before the filter is installed (the
    /// resolver's own sends would otherwise wait for a supervisor not yet running).
    /// A name that does not resolve matches by name only.
    pub fn resolve(&mut self) {
        for rule in self.deny.iter_mut().chain(self.allow.iter_mut()) {
            for (name, addrs) in rule.names_mut() {
                if let Ok(found) = (name, 0).to_socket_addrs() {
                    addrs.extend(found.map(|a| a.ip().to_canonical()));
                    addrs.dedup();
                }
            }
        }
        if !self.allow.is_empty() {
            let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            self.nameservers = nameservers(&conf);
        }
    }

    /// The verdict for `ip`:`port` (canonical `ip`), with the SPEC that decided.
    pub fn judge(&self, ip: IpAddr, port: u16, host: Option<&str>) -> (Verdict, Option<&str>) {
        if let Some(r) = self.deny.iter().find(|r| r.matches(ip, port, host)) {
            return (Verdict::Deny, Some(r.text()));
        }
        if self.allow.is_empty() {
            return (Verdict::Allow, None);
        }
        if let Some(r) = self.allow.iter().find(|r| r.matches(ip, port, host)) {
            return (Verdict::Allow, Some(r.text()));
        }
        // Port 53: DNS over UDP and over TCP alike.
        if port == 53 && self.nameservers.contains(&ip) {
            return (Verdict::Allow, Some(NAMESERVER));
        }
        (Verdict::Deny, None)
    }
}

/// The `nameserver` addresses of a resolv.conf (a scope suffix `%eth0` dropped).
fn nameservers(conf: &str) -> Vec<IpAddr> {
    conf.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            match words.next() {
                Some("nameserver") => words.next(),
                _ => None,
            }
        })
        .filter_map(|a| a.split('%').next()?.parse::<IpAddr>().ok())
        .map(|a| a.to_canonical())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn deny_wins_over_allow() {
        let p = Policy::parse(&["127.0.0.1:9"], &["127.0.0.0/8"]).unwrap();
        assert_eq!(
            p.judge(ip("127.0.0.1"), 9, None),
            (Verdict::Deny, Some("127.0.0.1:9"))
        );
        assert_eq!(
            p.judge(ip("127.0.0.1"), 10, None),
            (Verdict::Allow, Some("127.0.0.0/8"))
        );
    }

    #[test]
    fn allow_rules_deny_everything_else_with_no_rule() {
        let p = Policy::parse::<&str>(&[], &["db.internal:5432"]).unwrap();
        assert_eq!(
            p.judge(ip("10.0.0.5"), 5432, Some("db.internal")),
            (Verdict::Allow, Some("db.internal:5432"))
        );
        assert_eq!(p.judge(ip("10.0.0.5"), 5432, None), (Verdict::Deny, None));
    }

    #[test]
    fn no_rules_allow_everything() {
        let p = Policy::parse::<&str>(&[], &[]).unwrap();
        assert!(p.is_empty());
        assert_eq!(p.judge(ip("192.0.2.1"), 514, None), (Verdict::Allow, None));
    }

    #[test]
    fn the_resolver_stays_reachable_under_allow_rules_unless_denied() {
        let mut p = Policy::parse::<&str>(&[], &["127.0.0.1:5432"]).unwrap();
        p.nameservers =
            nameservers("# x\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch a\n");
        assert_eq!(p.nameservers, vec![ip("192.0.2.53"), ip("fe80::1")]);
        assert_eq!(
            p.judge(ip("192.0.2.53"), 53, None),
            (Verdict::Allow, Some(NAMESERVER))
        );
        assert_eq!(
            p.judge(ip("192.0.2.53"), 53, None),
            (Verdict::Allow, Some(NAMESERVER))
        );
        assert_eq!(p.judge(ip("192.0.2.53"), 54, None), (Verdict::Deny, None));
        assert_eq!(p.judge(ip("192.0.2.54"), 53, None), (Verdict::Deny, None));
        let mut d = Policy::parse(&["192.0.2.53"], &["127.0.0.1:5432"]).unwrap();
        d.nameservers = vec![ip("192.0.2.53")];
        assert_eq!(
            d.judge(ip("192.0.2.53"), 53, None),
            (Verdict::Deny, Some("192.0.2.53"))
        );
    }

    #[test]
    fn name_rules_match_the_addresses_resolved_at_load() {
        let mut p = Policy::parse(&["localhost:7"], &[]).unwrap();
        p.resolve();
        assert_eq!(
            p.judge(ip("127.0.0.1"), 7, None),
            (Verdict::Deny, Some("localhost:7"))
        );
        assert_eq!(p.judge(ip("127.0.0.1"), 8, None), (Verdict::Allow, None));
    }

    #[test]
    fn a_bad_spec_is_named() {
        let e = Policy::parse(&["10.0.0.0/8,300.1.1.1"], &[]).unwrap_err();
        assert!(e.starts_with("--egress-deny \"300.1.1.1\": "), "{e}");
    }
}
