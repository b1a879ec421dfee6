//! The forwarded-list fuzz entry: `data` as a `Forwarded` and as an `X-Forwarded-For`
//! value, checking what holds whatever the bytes. Shared by the cargo-fuzz target
//! (`fuzz_forwarded`) and the randomized test below.

use super::{
    parse_forwarded, parse_x_forwarded_for, rightmost_untrusted, vouched_hop, ForwardedElement,
    Node,
};
use std::net::IpAddr;

/// Panics if a parsed list does not come back the same once written out again, if
/// splitting a value into several fields at its commas changes the answer, or if the
/// walk returns something that is not one of the entries.
pub(crate) fn fuzz_forwarded(data: &[u8]) {
    let xff = parse_x_forwarded_for([data]);
    // X-Forwarded-For has no quoting: every comma separates, so fields split there agree.
    assert_eq!(xff, parse_x_forwarded_for(data.split(|&c| c == b',')));
    if let Ok(nodes) = &xff {
        let text: Vec<String> = nodes.iter().map(|n| write_node(n, false)).collect();
        let again = parse_x_forwarded_for([text.join(", ").as_bytes()]);
        assert_eq!(
            again.as_ref(),
            Ok(nodes),
            "X-Forwarded-For written out again"
        );
        check_walk(nodes);
    }
    let fwd = parse_forwarded([data]);
    // Without quotes, a comma always ends an element, so fields split there agree too.
    if !data.contains(&b'"') {
        assert_eq!(fwd, parse_forwarded(data.split(|&c| c == b',')));
    }
    if let Ok(els) = &fwd {
        let text: Vec<String> = els.iter().filter_map(write_element).collect();
        let again = parse_forwarded([text.join(", ").as_bytes()]);
        let kept: Vec<ForwardedElement> = els.iter().copied().filter(has_any).collect();
        assert_eq!(again, Ok(kept), "Forwarded written out again");
        check_walk(&els.iter().map(ForwardedElement::node).collect::<Vec<_>>());
    }
}

/// The walk's answer is an address among the entries, or `None` only for an empty list
/// or one with an address-less node at or right of the first untrusted entry.
fn check_walk(nodes: &[Node]) {
    // "Trusted" by a bit of the address, so both answers are exercised.
    let trusted = |ip: IpAddr| match ip {
        IpAddr::V4(a) => a.octets()[3] & 1 == 1,
        IpAddr::V6(a) => a.octets()[15] & 1 == 1,
    };
    let picked = rightmost_untrusted(nodes.iter().copied(), trusted);
    match picked {
        Some(n) => assert!(n.ip().is_some() && nodes.contains(&n)),
        None => assert!(nodes.is_empty() || nodes.iter().any(|n| n.ip().is_none())),
    }
    // The walk over whole entries stops at the same place; its node is the answer
    // when it is an address.
    let hop = vouched_hop(nodes, |n| *n, trusted);
    assert_eq!(hop.is_none(), nodes.is_empty());
    assert_eq!(hop.copied().filter(|n| n.ip().is_some()), picked);
}

fn has_any(el: &ForwardedElement) -> bool {
    el.for_.is_some() || el.by.is_some() || el.proto.is_some()
}

/// An element as `for=...;by=...;proto=...`; `None` if it has none of them (its other
/// parameters are not kept, so it would come back as an empty element, skipped).
fn write_element(el: &ForwardedElement) -> Option<String> {
    let mut pairs = Vec::new();
    if let Some(n) = &el.for_ {
        pairs.push(format!("for=\"{}\"", write_node(n, true)));
    }
    if let Some(n) = &el.by {
        // Quoted only when the node needs it (':' and '[' are not token bytes).
        let s = write_node(n, true);
        pairs.push(match s.contains([':', '[']) {
            true => format!("BY=\"{s}\""),
            false => format!("By={s}"),
        });
    }
    if let Some(p) = el.proto {
        let scheme = match p {
            super::Proto::Http => "HTTP",
            super::Proto::Https => "https",
            super::Proto::Other => "wss",
        };
        pairs.push(format!("proto={scheme}"));
    }
    (!pairs.is_empty()).then(|| pairs.join(" ; "))
}

fn write_node(n: &Node, obf: bool) -> String {
    match *n {
        Node::Ip {
            ip: IpAddr::V4(a),
            port: Some(p),
        } => format!("{a}:{p}"),
        Node::Ip {
            ip: IpAddr::V4(a),
            port: None,
        } => a.to_string(),
        Node::Ip {
            ip: IpAddr::V6(a),
            port: Some(p),
        } => format!("[{a}]:{p}"),
        Node::Ip {
            ip: IpAddr::V6(a),
            port: None,
        } if obf => format!("[{a}]"),
        Node::Ip {
            ip: IpAddr::V6(a),
            port: None,
        } => a.to_string(),
        Node::Unknown => "unknown".into(),
        Node::Obfuscated => "_hidden".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::fuzz_forwarded;
    use crate::mutate::Mutations;

    /// A few thousand mutations of valid values, deterministic (xorshift), every run.
    #[test]
    fn mutated_lists_never_panic_and_round_trip() {
        let seeds: &[&[u8]] = &[
            b"for=192.0.2.43, for=\"[2001:db8:cafe::17]:4711\";proto=https",
            b"for=_gazonk;by=unknown;host=example.com, for=10.0.0.1",
            b"For=\"192.0.2.1:_p\";x=\"a\\\"b,c\";proto=http",
            b"203.0.113.195, 70.41.3.18:80, [::1]:8443, ::ffff:1.2.3.5",
            b" unknown ,, 10.0.0.3 ,2001:db8::2",
        ];
        let mutations = Mutations {
            alphabet: b"\"\\,;=:[]._ \t019afx\x00\x7f\xff",
            count: 5_000,
            max_edits: 3,
            bump: false,
            state: 0x2545_f491_4f6c_dd1d,
        };
        let (mut ok_fwd, mut ok_xff) = (0, 0);
        mutations.run(seeds, |_, data| {
            fuzz_forwarded(data);
            ok_fwd += usize::from(super::parse_forwarded([data]).is_ok());
            ok_xff += usize::from(super::parse_x_forwarded_for([data]).is_ok());
        });
        // Both answers are exercised, or the mutations are too coarse to test anything.
        assert!(
            ok_fwd > 200 && ok_fwd < 4_800,
            "Forwarded accepted {ok_fwd}"
        );
        assert!(
            ok_xff > 200 && ok_xff < 4_800,
            "X-Forwarded-For accepted {ok_xff}"
        );
    }
}
