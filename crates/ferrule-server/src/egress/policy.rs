//! The decision for one attempt: deny rules first (deny wins), then allow rules;
//! once any allow rule exists everything else is denied, DNS included: the resolvers
//! are reached only through a rule (the keyword `nameserver`), and [`Policy::dns_hint`]
//! says so at start when the allow rules name hosts the app could then not resolve.

use super::rules::{parse_all, Rule, NAMESERVER};
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};

/// Where the resolvers are listed.
const RESOLV_CONF: &str = "/etc/resolv.conf";

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
}

impl Policy {
    /// Parses the SPECs (each value may hold several, comma-separated). Names are
    /// not resolved yet ([`Policy::resolve`]).
    pub fn parse<S: AsRef<str>>(deny: &[S], allow: &[S]) -> Result<Policy, String> {
        Ok(Policy {
            deny: parse_all(deny).map_err(|e| format!("--egress-deny {e}"))?,
            allow: parse_all(allow).map_err(|e| format!("--egress-allow {e}"))?,
        })
    }

    /// The number of rules (keywords count once).
    pub fn len(&self) -> usize {
        self.deny.len() + self.allow.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves the host names of the rules and gives `nameserver` rules the
    /// resolvers; done once per worker, before the filter is installed (the
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
        self.set_resolvers(&read_resolvers());
    }

    fn set_resolvers(&mut self, resolvers: &[IpAddr]) {
        for rule in self.deny.iter_mut().chain(self.allow.iter_mut()) {
            rule.set_resolvers(resolvers);
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
        match self.allow.iter().find(|r| r.matches(ip, port, host)) {
            Some(r) => (Verdict::Allow, Some(r.text())),
            None => (Verdict::Deny, None),
        }
    }

    /// One line for the error log when allow rules name hosts but DNS to the
    /// resolvers (`resolvers`, from resolv.conf) is denied: the app could not
    /// resolve those names, and nothing else would say why. Deny rules may deny DNS
    /// on purpose; the line names how to allow it, and the worker starts either way.
    fn dns_hint_for(&self, resolvers: &[IpAddr]) -> Option<String> {
        // The master has not read them into its `nameserver` rules (workers do).
        let mut judged = self.clone();
        judged.set_resolvers(resolvers);
        let named: Vec<&str> = self
            .allow
            .iter()
            .filter(|r| r.names_hosts())
            .map(Rule::text)
            .collect();
        let denied: Vec<String> = resolvers
            .iter()
            .filter(|ip| judged.judge(**ip, 53, None).0 == Verdict::Deny)
            .map(IpAddr::to_string)
            .collect();
        if named.is_empty() || denied.is_empty() {
            return None;
        }
        Some(format!(
            "egress: the allow rules name hosts ({}) but DNS to {} (port 53, {RESOLV_CONF}) is \
             denied, so the app cannot resolve them: add --egress-allow {NAMESERVER} \
             (egress_allow = [\"{NAMESERVER}\", ...] in a config file)",
            named.join(", "),
            denied.join(", "),
        ))
    }

    /// [`Policy::dns_hint_for`] this host's resolvers.
    pub fn dns_hint(&self) -> Option<String> {
        self.dns_hint_for(&read_resolvers())
    }
}

/// This host's resolvers ([`resolvers`] of resolv.conf).
fn read_resolvers() -> Vec<IpAddr> {
    resolvers(&std::fs::read_to_string(RESOLV_CONF).unwrap_or_default())
}

/// The `nameserver` addresses of a resolv.conf (a scope suffix `%eth0` dropped); with
/// none, the resolver's own default, the local machine (resolv.conf(5)).
fn resolvers(conf: &str) -> Vec<IpAddr> {
    let listed: Vec<IpAddr> = conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            match words.next() {
                Some("nameserver") => words.next(),
                _ => None,
            }
        })
        .filter_map(|a| a.split('%').next()?.parse::<IpAddr>().ok())
        .map(|a| a.to_canonical())
        .collect();
    match listed.is_empty() {
        true => vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        false => listed,
    }
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
    fn dns_is_denied_under_allow_rules_unless_a_nameserver_rule_allows_it() {
        let conf = "# x\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch a\n";
        assert_eq!(resolvers(conf), vec![ip("192.0.2.53"), ip("fe80::1")]);
        assert_eq!(
            resolvers("search a\n"),
            vec![ip("127.0.0.1")],
            "the default"
        );
        let mut p = Policy::parse::<&str>(&[], &["127.0.0.1:5432"]).unwrap();
        p.set_resolvers(&resolvers(conf));
        assert_eq!(p.judge(ip("192.0.2.53"), 53, None), (Verdict::Deny, None));
        let mut p = Policy::parse::<&str>(&[], &["127.0.0.1:5432", "Nameserver"]).unwrap();
        p.set_resolvers(&resolvers(conf));
        for ns in ["192.0.2.53", "fe80::1"] {
            assert_eq!(
                p.judge(ip(ns), 53, None),
                (Verdict::Allow, Some("Nameserver"))
            );
        }
        assert_eq!(p.judge(ip("192.0.2.53"), 54, None), (Verdict::Deny, None));
        assert_eq!(p.judge(ip("192.0.2.54"), 53, None), (Verdict::Deny, None));
        let mut d = Policy::parse(&["nameserver"], &["10.0.0.0/8"]).unwrap();
        d.set_resolvers(&[ip("10.0.0.53")]);
        assert_eq!(
            d.judge(ip("10.0.0.53"), 53, None),
            (Verdict::Deny, Some("nameserver")),
            "deny wins: DNS refused on purpose"
        );
        assert_eq!(
            d.judge(ip("10.0.0.53"), 80, None),
            (Verdict::Allow, Some("10.0.0.0/8"))
        );
    }

    #[test]
    fn the_dns_hint_comes_only_for_named_hosts_without_dns() {
        let ns = [ip("192.0.2.53")];
        // As the master has them: parsed, the resolvers not read into the rules.
        let hint = |allow: &[&str]| Policy::parse(&[], allow).unwrap().dns_hint_for(&ns);
        let line = hint(&["db.internal:5432", "*.example.com", "10.0.0.1"]).unwrap();
        assert!(
            line.contains("(db.internal:5432, *.example.com)")
                && line.contains("DNS to 192.0.2.53")
                && line.contains("--egress-allow nameserver")
                && !line.contains('\n'),
            "{line}"
        );
        assert_eq!(hint(&["db.internal:5432", "nameserver"]), None);
        assert_eq!(
            hint(&["db.internal", "192.0.2.0/24"]),
            None,
            "a network rule allows it"
        );
        assert_eq!(hint(&["10.0.0.1:5432"]), None, "no name to resolve");
        assert_eq!(hint(&[]), None);
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
