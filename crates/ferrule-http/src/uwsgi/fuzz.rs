//! The uwsgi fuzz entry: a stream of packets, each followed by its body, parsed whole
//! and one byte at a time, as a server would see it. Shared by the cargo-fuzz target
//! (`fuzz_uwsgi`) and the randomized test below.

use super::{parse_uwsgi_into, UwsgiError, UWSGI_HEADER_LEN};

/// What a walk saw: per packet (consumed, content_length, vars), then the error.
type Walk = (Vec<(usize, u64, usize)>, Option<UwsgiError>);

/// Parses `data` as packets and bodies, whole and byte by byte, and panics if the two
/// disagree, a span leaves its packet, or the vars do not re-encode to the block.
pub(crate) fn fuzz_uwsgi(data: &[u8]) {
    let whole = walk(data, data.len());
    let bytewise = walk(data, 1);
    assert_eq!(whole, bytewise, "whole and byte-by-byte delivery disagree");
}

/// Delivers `data` in pieces of `step` bytes (an incomplete packet costs O(1), so
/// step 1 stays linear).
fn walk(data: &[u8], step: usize) -> Walk {
    let mut seen = Vec::new();
    let (mut start, mut avail) = (0, step.min(data.len()));
    let mut spare = Vec::new();
    while start < data.len() {
        let buf = &data[start..avail];
        let packet = match parse_uwsgi_into(buf, std::mem::take(&mut spare)) {
            Ok(Some(p)) => p,
            Ok(None) if avail == data.len() => break,
            Ok(None) => {
                avail = (avail + step).min(data.len());
                continue;
            }
            Err(e) => return (seen, Some(e)),
        };
        assert!((UWSGI_HEADER_LEN..=buf.len()).contains(&packet.consumed));
        for (k, v) in &packet.vars {
            for span in [k, v] {
                let r = span.range();
                assert!(r.start >= UWSGI_HEADER_LEN && r.end <= packet.consumed);
            }
        }
        assert!(packet.pairs(buf).all(|(k, _)| !k.is_empty()));
        assert_eq!(
            super::uwsgi_vars(packet.pairs(buf)).as_deref(),
            Some(&buf[UWSGI_HEADER_LEN..packet.consumed]),
            "re-encoded"
        );
        // The head a server makes of it: whatever it refuses, its spans stay in the packet.
        if let Ok(head) =
            super::uwsgi_head(buf, &packet, &crate::ParserConfig::default(), Vec::new())
        {
            let head = head.head;
            let t = head.target;
            for span in [head.method, t.raw, t.path, t.query, t.fragment] {
                assert!(
                    span.range().end <= packet.consumed,
                    "a head span leaves its packet"
                );
            }
            assert_eq!(head.headers.len(), packet.vars.len());
        }
        seen.push((packet.consumed, packet.content_length, packet.vars.len()));
        // The body is the caller's to read; the next packet starts after it.
        let next = (start + packet.consumed) as u64 + packet.content_length;
        if next > data.len() as u64 {
            break;
        }
        start = next as usize;
        avail = avail.max(start);
        spare = packet.vars;
    }
    (seen, None)
}

#[cfg(test)]
mod tests {
    use super::{fuzz_uwsgi, walk};

    fn packet(vars: &[(&[u8], &[u8])], body: &[u8]) -> Vec<u8> {
        let block = crate::uwsgi_vars(vars.iter().copied()).unwrap();
        let mut out = crate::uwsgi_packet(&block).unwrap();
        out.extend_from_slice(body);
        out
    }

    /// A few thousand mutations of valid packet streams, deterministic (xorshift).
    #[test]
    fn mutated_packets_never_panic_and_bytewise_delivery_agrees() {
        let get: &[(&[u8], &[u8])] = &[
            (b"REQUEST_METHOD", b"GET"),
            (b"PATH_INFO", "/caf\u{e9}".as_bytes()),
            (b"CONTENT_LENGTH", b""),
            (b"HTTP_X", b""),
        ];
        let post: &[(&[u8], &[u8])] = &[(b"CONTENT_LENGTH", b"5"), (b"QUERY_STRING", b"a=1")];
        let mut two = packet(post, b"hello");
        two.extend(packet(get, b""));
        let seeds = [
            packet(get, b""),
            two,
            packet(&[], b""),
            packet(post, b"hel"),
        ];
        let mutations = crate::mutate::Mutations {
            alphabet: b"\x00\x01\x02\x05\xff0159 -CNT_",
            count: 5_000,
            max_edits: 3,
            bump: true,
            state: 0x2545_f491_4f6c_dd1d,
        };
        let (mut parsed, mut refused) = (0, 0);
        mutations.run(&seeds, |_, data| {
            fuzz_uwsgi(data);
            let (seen, error) = walk(data, data.len());
            parsed += usize::from(!seen.is_empty());
            refused += usize::from(error.is_some());
        });
        // The mutations reach both sides of the parser, not only its first check.
        assert!(
            parsed > 1_000 && refused > 1_000,
            "{parsed} parsed, {refused} refused"
        );
    }
}
