//! What a trusted proxy's headers say about a request: its scheme (gunicorn's
//! `secure_scheme_headers` table, and RFC 7239 `Forwarded: proto=`), and, when
//! `--forwarded-remote-addr` asks for it, its client (the right-most untrusted entry of
//! `X-Forwarded-For` or `Forwarded`). A peer outside `--forwarded-allow-ips` gets none
//! of it: its headers reach the app as they came, and nothing else.

use crate::config::{AllowIps, RemoteAddrFrom, ServerConfig};
use crate::listener::Peer;
use crate::log::Throttle;
use ferrule_http::{
    field_values, parse_forwarded, parse_x_forwarded_for, rightmost_untrusted, scan_forwarding,
    vouched_hop, ForwardedElement, ForwardedError, ForwardingScan, Head, Node, ParseError, Proto,
};
use std::net::{IpAddr, SocketAddr};
use tracing::Level;

/// Malformed `Forwarded` / `X-Forwarded-For` lists from trusted peers, which are
/// ignored: a client's own garbage left of the proxies' entries makes one of them, and
/// a client can send that at will.
static MALFORMED: Throttle = Throttle::new("malformed forwarding headers", Level::WARN);

/// The verdict for one request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Forwarding {
    pub https: bool,
    /// Whom the request came from, when a trusted list says so; `None`: the connection's.
    pub client: Option<Box<Peer>>,
}

const UNTOUCHED: Forwarding = Forwarding {
    https: false,
    client: None,
};

/// Judges a request's head. `peer` is the socket's (what the allow-list is about: with
/// the PROXY protocol, the proxy), `client` the connection's client (whose port a
/// forwarded address without one keeps). Contradictory scheme headers are
/// `InvalidSchemeHeaders` (gunicorn's 400); malformed lists are ignored and logged.
pub(crate) fn judge(
    config: &ServerConfig,
    peer: &Peer,
    client: &Peer,
    head: &Head,
    buf: &[u8],
) -> Result<Forwarding, ParseError> {
    if !config.forwarded_allow_ips.allows(peer.ip()) {
        return Ok(UNTOUCHED);
    }
    let table = &config.secure_scheme_headers;
    let scan = scan_forwarding(head, buf, table)?;
    if !(scan.forwarded || scan.x_forwarded_for) {
        return Ok(Forwarding {
            https: scan.secure.unwrap_or(false),
            client: None,
        });
    }
    lists(config, peer, client, head, buf, scan)
}

/// The rest of [`judge`] when a `Forwarded` or `X-Forwarded-For` field is present: out
/// of line, so the common request's path through the driver stays short.
#[inline(never)]
fn lists(
    config: &ServerConfig,
    peer: &Peer,
    client: &Peer,
    head: &Head,
    buf: &[u8],
    scan: ForwardingScan,
) -> Result<Forwarding, ParseError> {
    let table = &config.secure_scheme_headers;
    let from = config.forwarded_remote_addr;
    let mut out = Forwarding {
        https: scan.secure.unwrap_or(false),
        client: None,
    };
    // Which hops are proxies: the addresses `--forwarded-allow-ips` names. `*` names
    // none: any peer is trusted, but no address in a list is known to be a proxy, so
    // the right-most entry is the client (werkzeug ProxyFix's one hop).
    let hops = |ip: IpAddr| match &config.forwarded_allow_ips {
        AllowIps::Any => false,
        AllowIps::List(nets) => nets.iter().any(|n| n.contains(ip)),
    };
    let want_proto = !table.is_empty();
    if scan.forwarded && (want_proto || from == RemoteAddrFrom::Forwarded) {
        match parse_forwarded(field_values(head, buf, b"forwarded")) {
            Ok(elements) => {
                let hop = vouched_hop(&elements, ForwardedElement::node, hops);
                if want_proto {
                    out.https = scheme(scan.secure, hop.and_then(|e| e.proto))?;
                }
                if from == RemoteAddrFrom::Forwarded {
                    out.client = hop.and_then(|e| e.for_).and_then(|n| addr(n, client));
                }
            }
            Err(e) => malformed("Forwarded", peer, e),
        }
    }
    if scan.x_forwarded_for && from == RemoteAddrFrom::XForwardedFor {
        match parse_x_forwarded_for(field_values(head, buf, b"x-forwarded-for")) {
            Ok(nodes) => {
                out.client = rightmost_untrusted(nodes, hops).and_then(|n| addr(n, client))
            }
            Err(e) => malformed("X-Forwarded-For", peer, e),
        }
    }
    Ok(out)
}

/// The table's verdict and `Forwarded`'s `proto` are two witnesses of one fact: either
/// alone decides, and when both speak they must agree (gunicorn's rule for its own
/// headers: one of them is forged). A `proto` that is neither http nor https (`ws`)
/// says nothing here.
fn scheme(table: Option<bool>, proto: Option<Proto>) -> Result<bool, ParseError> {
    let forwarded = match proto {
        Some(Proto::Https) => Some(true),
        Some(Proto::Http) => Some(false),
        Some(Proto::Other) | None => None,
    };
    match (table, forwarded) {
        (Some(a), Some(b)) if a != b => Err(ParseError::InvalidSchemeHeaders),
        (a, b) => Ok(a.or(b).unwrap_or(false)),
    }
}

/// A node as the client's address; its port when it names one, else the connection's
/// (REMOTE_PORT then stays what it was, as with werkzeug's ProxyFix).
fn addr(node: Node, client: &Peer) -> Option<Box<Peer>> {
    let Node::Ip { ip, port } = node else {
        return None;
    };
    let fallback = match client {
        Peer::Tcp(a) => a.port(),
        Peer::Unix => 0,
    };
    Some(Box::new(Peer::Tcp(SocketAddr::new(
        ip,
        port.unwrap_or(fallback),
    ))))
}

fn malformed(field: &str, peer: &Peer, e: ForwardedError) {
    if MALFORMED.allow() {
        let from = match peer.ip() {
            Some(ip) => ip.to_string(),
            None => "unix".to_string(),
        };
        tracing::warn!("{field} from {from} ignored: {}", e.reason());
    }
}

#[cfg(test)]
mod tests;
