//! RFC 7239's grammar: the list of elements of `;`-separated pairs, values that are
//! tokens or quoted-strings (§4), and the node syntax of `for`/`by` (§6), which
//! X-Forwarded-For entries reuse without the obfuscated forms.

use super::{parse_ip, skip_ows, ForwardedElement, ForwardedError, Node, Proto};
use crate::chars::port_number;
use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Parses `Forwarded` field values into their elements, left to right. Empty list
/// elements and empty pairs are skipped (RFC 9110 §5.6.1 and RFC 7239's
/// `[ pair ] *( ";" [ pair ] )`); OWS is allowed around `,` and, leniently, `;`, never
/// around `=`. Parameters other than the four of RFC 7239 are checked for syntax only.
pub fn parse_forwarded<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<ForwardedElement>, ForwardedError> {
    let mut out = Vec::new();
    for value in values {
        let mut rest = value;
        loop {
            let (element, after) = element(rest)?;
            out.extend(element);
            match after.split_first() {
                None => break,
                Some((b',', r)) => rest = r,
                // `element` stops only at a comma or the end.
                Some(_) => return Err(ForwardedError::Syntax),
            }
        }
    }
    Ok(out)
}

/// One element, up to (not including) the next top-level comma; `None` if it is empty.
fn element(mut rest: &[u8]) -> Result<(Option<ForwardedElement>, &[u8]), ForwardedError> {
    let mut el = ForwardedElement::default();
    let (mut any, mut seen) = (false, [false; 4]);
    loop {
        rest = skip_ows(rest);
        match rest.first() {
            None | Some(b',') => return Ok((any.then_some(el), rest)),
            Some(b';') => {
                rest = rest.get(1..).unwrap_or_default();
                continue;
            }
            Some(_) => {}
        }
        let n = rest.iter().take_while(|&&c| is_tchar(c)).count();
        let (name, after) = rest.split_at_checked(n).ok_or(ForwardedError::Syntax)?;
        let after = match after.split_first() {
            Some((b'=', a)) if n > 0 => a,
            _ => return Err(ForwardedError::Syntax),
        };
        let (value, after) = value(after)?;
        let slot = ["for", "by", "host", "proto"]
            .iter()
            .position(|p| name.eq_ignore_ascii_case(p.as_bytes()));
        if let Some(k) = slot {
            if std::mem::replace(&mut seen[k], true) {
                return Err(ForwardedError::Duplicate);
            }
        }
        match slot {
            Some(0) => el.for_ = Some(parse_node(&value, true)?),
            Some(1) => el.by = Some(parse_node(&value, true)?),
            Some(3) => el.proto = Some(parse_proto(&value)?),
            // `host` plays no part in the client's address: its syntax as a value is
            // all that is checked. Unknown parameters are extensions (§5.5).
            _ => {}
        }
        any = true;
        rest = skip_ows(after);
        match rest.first() {
            None | Some(b',' | b';') => {}
            Some(_) => return Err(ForwardedError::Syntax),
        }
    }
}

/// A token or a quoted-string (RFC 9110 §5.6.4), unescaped; borrowed unless it held a
/// quoted-pair.
fn value(rest: &[u8]) -> Result<(Cow<'_, [u8]>, &[u8]), ForwardedError> {
    let Some((b'"', body)) = rest.split_first() else {
        let n = rest.iter().take_while(|&&c| is_tchar(c)).count();
        let (tok, after) = rest.split_at_checked(n).ok_or(ForwardedError::Syntax)?;
        return match n {
            0 => Err(ForwardedError::Syntax),
            _ => Ok((Cow::Borrowed(tok), after)),
        };
    };
    let (mut r, mut plain, mut owned) = (body, 0usize, None::<Vec<u8>>);
    loop {
        let (&c, after) = r.split_first().ok_or(ForwardedError::Syntax)?;
        r = after;
        let byte = match c {
            b'"' => break,
            b'\\' => {
                let (&q, after) = r.split_first().ok_or(ForwardedError::Syntax)?;
                r = after;
                if !(q == b'\t' || q >= b' ') || q == 0x7f {
                    return Err(ForwardedError::Syntax);
                }
                let head = body.get(..plain).ok_or(ForwardedError::Syntax)?;
                owned.get_or_insert_with(|| head.to_vec()).push(q);
                continue;
            }
            b'\t' | b' '..=b'~' | 0x80..=0xff => c,
            _ => return Err(ForwardedError::Syntax),
        };
        match owned.as_mut() {
            Some(o) => o.push(byte),
            None => plain += 1,
        }
    }
    let value = match owned {
        Some(o) => Cow::Owned(o),
        None => Cow::Borrowed(body.get(..plain).ok_or(ForwardedError::Syntax)?),
    };
    Ok((value, r))
}

/// RFC 7239 §6: `nodename [ ":" node-port ]`, IPv6 in brackets; `obf` allows obfuscated
/// names and ports (X-Forwarded-For has none).
pub(super) fn parse_node(v: &[u8], obf: bool) -> Result<Node, ForwardedError> {
    if let Some(r) = v.strip_prefix(b"[") {
        let close = r
            .iter()
            .position(|&c| c == b']')
            .ok_or(ForwardedError::Node)?;
        let (addr, after) = r.split_at_checked(close).ok_or(ForwardedError::Node)?;
        let ip = IpAddr::V6(parse_ip::<Ipv6Addr>(addr)?);
        let port = port_suffix(after.get(1..).unwrap_or_default(), obf)?;
        return Ok(Node::Ip { ip, port });
    }
    let colon = v.iter().position(|&c| c == b':').unwrap_or(v.len());
    let (name, after) = v.split_at_checked(colon).ok_or(ForwardedError::Node)?;
    // The name first, so `"::1"` (IPv6 without brackets) is a bad node, not a bad port.
    let node = if name.eq_ignore_ascii_case(b"unknown") {
        Node::Unknown
    } else if obf && is_obfuscated(name) {
        Node::Obfuscated
    } else {
        let ip = IpAddr::V4(parse_ip::<Ipv4Addr>(name)?);
        Node::Ip { ip, port: None }
    };
    let port = port_suffix(after, obf)?;
    Ok(match node {
        Node::Ip { ip, .. } => Node::Ip { ip, port },
        other => other,
    })
}

/// `""` (no port) or `":" port`; `":_obfport"` too when `obf` (then the port is `None`).
pub(super) fn port_suffix(after: &[u8], obf: bool) -> Result<Option<u16>, ForwardedError> {
    let Some((b':', digits)) = after.split_first() else {
        return match after {
            [] => Ok(None),
            _ => Err(ForwardedError::Node),
        };
    };
    if obf && is_obfuscated(digits) {
        return Ok(None);
    }
    port_number(digits).map(Some).ok_or(ForwardedError::Port)
}

/// `"_" 1*( ALPHA / DIGIT / "." / "_" / "-" )`.
fn is_obfuscated(v: &[u8]) -> bool {
    match v.split_first() {
        Some((b'_', rest)) if !rest.is_empty() => rest
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-')),
        _ => false,
    }
}

/// `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )` (RFC 3986 §3.1), case-insensitive.
fn parse_proto(v: &[u8]) -> Result<Proto, ForwardedError> {
    let ok = v.first().is_some_and(u8::is_ascii_alphabetic)
        && v.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'));
    if !ok {
        Err(ForwardedError::Proto)
    } else if v.eq_ignore_ascii_case(b"http") {
        Ok(Proto::Http)
    } else if v.eq_ignore_ascii_case(b"https") {
        Ok(Proto::Https)
    } else {
        Ok(Proto::Other)
    }
}

/// RFC 9110 §5.6.2.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}
