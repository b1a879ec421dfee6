//! `--egress-deny` / `--egress-allow` SPECs: parsed once, matched per attempt.
//!
//! A SPEC is an IP, a CIDR, a host name or `*.domain`, each with an optional `:PORT`
//! (`[v6]:PORT` for IPv6; a bare `v6` or `v6/len` takes no port), or a keyword:
//! `metadata` (the cloud metadata endpoints), `private` (RFC 1918/4193 and
//! link-local ranges) and `nameserver` (the resolvers of `/etc/resolv.conf`, port 53,
//! UDP and TCP: DNS is allowed only by a rule, like any destination). A host-name rule matches the name the app resolved, or an
//! address the name resolved to when the policy was loaded; `*.domain` matches names
//! only (a strict subdomain: `*.example.com` does not match `example.com`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a rule's address part stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// An address range (a single address is a /32 or /128).
    Net(IpAddr, u8),
    /// A host name, lowercase, with the addresses it resolved to at load.
    Name(String, Vec<IpAddr>),
    /// `*.domain`: the suffix `.domain`, lowercase.
    Suffix(String),
    /// `nameserver`: the resolvers' addresses, read when the policy is loaded.
    Resolvers(Vec<IpAddr>),
}

/// One SPEC: its text as written, what it stands for, and its port, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub(crate) text: String,
    pub(crate) targets: Vec<Target>,
    pub(crate) port: Option<u16>,
}

/// The keyword for the system resolvers (`rule` in the record when it decided).
pub const NAMESERVER: &str = "nameserver";

/// The metadata endpoints (AWS/OpenStack/Azure/GCP, AWS IPv6, Alibaba).
const METADATA: &[&str] = &[
    "169.254.169.254/32",
    "fd00:ec2::254/128",
    "100.100.100.200/32",
    "metadata.google.internal",
];
/// RFC 1918, RFC 4193 unique local, IPv4 and IPv6 link-local.
const PRIVATE: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
    "169.254.0.0/16",
    "fe80::/10",
];

impl Rule {
    /// Parses one SPEC; the error says what is wrong with it (the caller names it).
    pub fn parse(spec: &str) -> Result<Rule, String> {
        let text = spec.trim();
        let (targets, port) = match text.to_ascii_lowercase().as_str() {
            "" => return Err("empty rule".into()),
            "metadata" => (keyword(METADATA)?, None),
            "private" => (keyword(PRIVATE)?, None),
            NAMESERVER => (vec![Target::Resolvers(Vec::new())], Some(53)),
            k if k.starts_with("nameserver:") => {
                return Err("the keyword nameserver takes no port (it is port 53)".into())
            }
            _ => {
                let (host, port) = split_port(text)?;
                (vec![target(host)?], port)
            }
        };
        Ok(Rule {
            text: text.to_string(),
            targets,
            port,
        })
    }

    /// The SPEC as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether an attempt to `ip`:`port`, reached through the name `host` if the app
    /// resolved one, falls under this rule. `ip` is canonical (an IPv4-mapped IPv6
    /// address is its IPv4 address).
    pub(crate) fn matches(&self, ip: IpAddr, port: u16, host: Option<&str>) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        self.targets.iter().any(|t| match t {
            Target::Net(net, len) => in_net(ip, *net, *len),
            Target::Name(name, addrs) => {
                host.is_some_and(|h| h.eq_ignore_ascii_case(name)) || addrs.contains(&ip)
            }
            Target::Suffix(suffix) => host.is_some_and(|h| {
                h.len() > suffix.len()
                    && h.as_bytes()[h.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
            }),
            Target::Resolvers(addrs) => addrs.contains(&ip),
        })
    }

    /// Whether the rule names hosts (a name or `*.domain`): the app resolves them.
    pub(crate) fn names_hosts(&self) -> bool {
        self.targets
            .iter()
            .any(|t| matches!(t, Target::Name(..) | Target::Suffix(_)))
    }

    /// Gives a `nameserver` rule the resolvers' addresses.
    pub(crate) fn set_resolvers(&mut self, resolvers: &[IpAddr]) {
        for t in &mut self.targets {
            if let Target::Resolvers(addrs) = t {
                addrs.clear();
                addrs.extend_from_slice(resolvers);
            }
        }
    }

    /// Host names this rule resolves at load (`Target::Name`).
    pub(crate) fn names_mut(&mut self) -> impl Iterator<Item = (&str, &mut Vec<IpAddr>)> {
        self.targets.iter_mut().filter_map(|t| match t {
            Target::Name(n, addrs) => Some((n.as_str(), addrs)),
            _ => None,
        })
    }
}

/// Parses every SPEC of `specs`, each of which may hold several separated by commas.
/// An empty one is refused: `--egress-allow "$ALLOWED"` with the variable unset must not
/// quietly become no rule at all (for an allow list: everything allowed).
pub fn parse_all<S: AsRef<str>>(specs: &[S]) -> Result<Vec<Rule>, String> {
    let mut rules = Vec::new();
    for value in specs {
        for spec in value.as_ref().split(',').map(str::trim) {
            if spec.is_empty() {
                return Err(format!(
                    "{:?}: an empty rule (a variable left unset?)",
                    value.as_ref()
                ));
            }
            rules.push(Rule::parse(spec).map_err(|e| format!("{spec:?}: {e}"))?);
        }
    }
    Ok(rules)
}

fn keyword(parts: &[&str]) -> Result<Vec<Target>, String> {
    parts.iter().map(|p| target(p)).collect()
}

/// Splits `host:port`, `[v6]:port`, `[v6]`; a bare IPv6 address (several colons)
/// has no port.
fn split_port(text: &str) -> Result<(&str, Option<u16>), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address opened with '[' needs its ']'")?;
        return match after {
            "" => Ok((inside, None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((inside, Some(port(p)?))),
                None => Err(format!("unexpected {after:?} after ']'")),
            },
        };
    }
    match text.matches(':').count() {
        0 => Ok((text, None)),
        1 => {
            let (host, p) = text.split_once(':').unwrap_or((text, ""));
            Ok((host, Some(port(p)?)))
        }
        _ => Ok((text, None)),
    }
}

fn port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!("the port {p:?} is not a number from 1 to 65535")),
    }
}

fn target(host: &str) -> Result<Target, String> {
    if let Some((addr, len)) = host.split_once('/') {
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address (before the '/' of a CIDR)"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len.parse::<u8>() {
            Ok(l) if l <= max && len.bytes().all(|b| b.is_ascii_digit()) => l,
            _ => return Err(format!("the prefix length {len:?} is not 0 to {max}")),
        };
        // Host bits are dropped, as `ip route` does: 10.1.2.3/8 is 10.0.0.0/8.
        return Ok(Target::Net(mask(ip, len), len));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        let ip = ip.to_canonical();
        return Ok(Target::Net(ip, if ip.is_ipv4() { 32 } else { 128 }));
    }
    let (suffix, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    check_name(name)?;
    let name = name.to_ascii_lowercase();
    Ok(match suffix {
        true => Target::Suffix(format!(".{name}")),
        false => Target::Name(name, Vec::new()),
    })
}

fn check_name(name: &str) -> Result<(), String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let labels_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !labels_ok {
        return Err(format!(
            "{name:?} is not an IP address, a CIDR, a host name or *.domain"
        ));
    }
    // "10.0.0" or "300.1.1.1" are mistyped addresses, not names.
    if name
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("{name:?} is not a valid IP address"));
    }
    Ok(())
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => mask(ip, len) == net,
        _ => false,
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
