//! The client's address as trusted proxies report it: RFC 7239 `Forwarded` and the
//! de-facto `X-Forwarded-For`, parsed from field values, and the right-most-untrusted
//! rule that picks the entry a chain of trusted proxies vouches for.
//!
//! Field values are complete when a head is parsed, so there is no "incomplete" answer
//! here: a list of entries, or the first error. Several fields of one name are one list
//! (RFC 9110 §5.3), so every function takes all of them, in order. The values returned
//! are addresses and ports, not bytes, so nothing borrows the caller's buffer.
//!
//! Errors are this module's own enum: each says why for the log line, while the HTTP
//! layer sees `InvalidHeader`. What a trusted peer's malformed list should get is the
//! caller's choice; we recommend ignoring the whole field (keep the socket's peer, take
//! no `proto` from it, log a warning) rather than a 400: proxies append to what the client sent, so a client's
//! own garbage on the left makes the list malformed, and a 400 there would only turn a
//! lost address into a lost request.

pub(crate) mod fuzz;
mod rfc7239;

pub use rfc7239::parse_forwarded;
use rfc7239::{parse_node, port_suffix};

use crate::head::Head;
use crate::ParseError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One hop of a `Forwarded` `for`/`by` value or an `X-Forwarded-For` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// An address, with the port when one was given (an obfuscated port gives `None`).
    Ip { ip: IpAddr, port: Option<u16> },
    /// `unknown`: the proxy does not know or will not say (RFC 7239 §6.2).
    Unknown,
    /// `_identifier`: a name the proxy made up to hide the address (RFC 7239 §6.3).
    Obfuscated,
}

impl Node {
    pub fn ip(&self) -> Option<IpAddr> {
        match *self {
            Node::Ip { ip, .. } => Some(ip),
            Node::Unknown | Node::Obfuscated => None,
        }
    }
}

/// The `proto` parameter: only the scheme matters to `wsgi.url_scheme`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http,
    Https,
    /// A valid URI scheme that is neither (`ws`, `wss`, ...); the caller decides.
    Other,
}

/// One `Forwarded` element: what one proxy said about the hop it received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ForwardedElement {
    pub for_: Option<Node>,
    pub by: Option<Node>,
    pub proto: Option<Proto>,
}

impl ForwardedElement {
    /// The node for [`rightmost_untrusted`]: an element without `for` names nobody,
    /// which is what `unknown` says.
    pub fn node(&self) -> Node {
        self.for_.unwrap_or(Node::Unknown)
    }
}

/// Why a `Forwarded` or `X-Forwarded-For` value was rejected. Every variant becomes
/// `InvalidHeader`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedError {
    /// Not `pair *( ";" pair )` elements separated by commas: a name that is not a
    /// token, no `=`, an unterminated quote, a control byte, a stray byte after a value.
    Syntax,
    /// `for`, `by`, `host` or `proto` twice in one element (RFC 7239 §4 forbids it).
    Duplicate,
    /// A `for`/`by` value or an `X-Forwarded-For` entry that is not a node.
    Node,
    /// A port that is not 1–5 digits within 0–65535 (or, in `Forwarded`, `_obfport`).
    Port,
    /// A `proto` value that is not a URI scheme.
    Proto,
}

impl ForwardedError {
    /// What went wrong, for the log line.
    pub fn reason(self) -> &'static str {
        match self {
            ForwardedError::Syntax => "malformed forwarded list",
            ForwardedError::Duplicate => "a Forwarded parameter repeated in one element",
            ForwardedError::Node => "a forwarded node that is no address",
            ForwardedError::Port => "a bad port in a forwarded node",
            ForwardedError::Proto => "a Forwarded proto that is no URI scheme",
        }
    }
}

impl fmt::Display for ForwardedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (InvalidHeader)", self.reason())
    }
}

impl std::error::Error for ForwardedError {}

impl From<ForwardedError> for ParseError {
    fn from(_: ForwardedError) -> ParseError {
        ParseError::InvalidHeader
    }
}

/// The values of every field named `name` (case-insensitive), in order.
pub fn field_values<'a>(
    head: &'a Head,
    buf: &'a [u8],
    name: &'a [u8],
) -> impl Iterator<Item = &'a [u8]> + 'a {
    head.headers
        .iter()
        .filter(move |h| head.get(buf, h.name).eq_ignore_ascii_case(name))
        .map(move |h| head.get(buf, h.value))
}

/// std's parsers: dotted quads without leading zeros, IPv6 without zone ids.
fn parse_ip<T: std::str::FromStr>(v: &[u8]) -> Result<T, ForwardedError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ForwardedError::Node)
}

/// Parses `X-Forwarded-For` values: comma-separated `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:80` or `unknown` (Squid's), OWS around commas, empty
/// elements skipped. No obfuscated names: the header has no such convention.
pub fn parse_x_forwarded_for<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Node>, ForwardedError> {
    let mut out = Vec::new();
    for value in values {
        for entry in value.split(|&c| c == b',') {
            let entry = trim_ows(entry);
            if entry.is_empty() {
                continue;
            }
            out.push(xff_entry(entry)?);
        }
    }
    Ok(out)
}

fn xff_entry(e: &[u8]) -> Result<Node, ForwardedError> {
    if e.eq_ignore_ascii_case(b"unknown") {
        return Ok(Node::Unknown);
    }
    if e.first() == Some(&b'[') {
        return match parse_node(e, false)? {
            node @ Node::Ip { .. } => Ok(node),
            _ => Err(ForwardedError::Node),
        };
    }
    // Two colons or more: a bare IPv6 address, which cannot carry a port unbracketed.
    if e.iter().filter(|&&c| c == b':').count() > 1 {
        let ip = IpAddr::V6(parse_ip::<Ipv6Addr>(e)?);
        return Ok(Node::Ip { ip, port: None });
    }
    let colon = e.iter().position(|&c| c == b':').unwrap_or(e.len());
    let (addr, after) = e.split_at_checked(colon).ok_or(ForwardedError::Node)?;
    let port = port_suffix(after, false)?;
    let ip = IpAddr::V4(parse_ip::<Ipv4Addr>(addr)?);
    Ok(Node::Ip { ip, port })
}

/// Walks `entries` (left to right as received) from the right, skipping trusted
/// proxies, and returns the first untrusted address: each proxy appends the peer it
/// saw, so an entry is vouched for only while every entry to its right (and the socket's
/// peer, which the caller checked) is a trusted proxy; anything further left may be the
/// client's own invention.
///
/// `unknown` and obfuscated nodes (and `Forwarded` elements without `for`) stop the walk
/// with `None`, keeping the socket's peer: such a hop has no address to report, and we
/// cannot tell whether it is a proxy, so nothing left of it is vouched for either.
/// When every entry is trusted, the left-most is returned (the request began inside the
/// trusted network), as nginx's `real_ip_recursive` and Rack do. No entries: `None`.
///
/// `is_trusted` sees addresses as written: an IPv4-mapped IPv6 address is IPv6.
pub fn rightmost_untrusted<I>(entries: I, is_trusted: impl Fn(IpAddr) -> bool) -> Option<Node>
where
    I: IntoIterator<Item = Node>,
    I::IntoIter: DoubleEndedIterator,
{
    let mut leftmost = None;
    for node in entries.into_iter().rev() {
        match node.ip() {
            Some(ip) if is_trusted(ip) => leftmost = Some(node),
            Some(_) => return Some(node),
            None => return None,
        }
    }
    leftmost
}

/// The same walk over whole entries (`Forwarded` elements, whose `proto` matters too):
/// the entry it stops at, or the left-most when every address is trusted; `None` for no
/// entries. That entry was written by a proxy every hop to its right vouches for, so
/// its parameters are credible even when its own node (`unknown`, obfuscated, no
/// `for`) is no address; [`rightmost_untrusted`] is its node when that is an address.
pub fn vouched_hop<T>(
    entries: &[T],
    node: impl Fn(&T) -> Node,
    is_trusted: impl Fn(IpAddr) -> bool,
) -> Option<&T> {
    let stop = entries
        .iter()
        .rev()
        .find(|e| !node(e).ip().is_some_and(&is_trusted));
    stop.or(entries.first())
}

fn skip_ows(v: &[u8]) -> &[u8] {
    let n = v.iter().take_while(|&&c| c == b' ' || c == b'\t').count();
    v.get(n..).unwrap_or_default()
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let v = skip_ows(v);
    let n = v
        .iter()
        .rev()
        .take_while(|&&c| c == b' ' || c == b'\t')
        .count();
    v.get(..v.len() - n).unwrap_or_default()
}

#[cfg(test)]
mod tests;
