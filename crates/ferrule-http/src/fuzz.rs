//! The fuzz entry point: a whole request stream through the real API, checking the
//! invariants a server relies on. Shared by the cargo-fuzz target and the randomized
//! test below, so the test suite fuzzes a little on every run.

use crate::{parse_head, BodyDecoder, ParserConfig};

/// Parses `data` as a stream of requests, whole and in two pieces, and panics if
/// the two disagree or a span points outside the buffer.
pub fn fuzz_one(data: &[u8]) {
    let cfg = ParserConfig {
        limit_request_body: 1 << 20,
        ..ParserConfig::default()
    };
    let whole = walk(data, &cfg, data.len());
    let split = walk(data, &cfg, data.len() / 2 + 1);
    assert_eq!(whole, split, "whole and split delivery disagree");
}

/// The uwsgi packet parser's entry (`uwsgi/fuzz.rs`): packets and their bodies, whole
/// and one byte at a time.
pub fn fuzz_uwsgi(data: &[u8]) {
    crate::uwsgi::fuzz::fuzz_uwsgi(data);
}

/// The `Forwarded`/`X-Forwarded-For` parsers' entry (`client_addr/fuzz.rs`): round trips,
/// fields split at commas, and the right-most-untrusted walk.
pub fn fuzz_forwarded(data: &[u8]) {
    crate::client_addr::fuzz::fuzz_forwarded(data);
}

/// Returns (requests parsed, bytes used, error) for delivery in pieces of `step`.
fn walk(data: &[u8], cfg: &ParserConfig, step: usize) -> (usize, usize, Option<crate::ParseError>) {
    let (mut start, mut avail, mut n) = (0, step.min(data.len()), 0);
    while start < data.len() {
        let buf = &data[start..avail];
        let head = match parse_head(buf, cfg) {
            Ok(Some(h)) => h,
            Ok(None) if avail == data.len() => return (n, start, None),
            Ok(None) => {
                avail = (avail + step).min(data.len());
                continue;
            }
            Err(e) => return (n, start, Some(e)),
        };
        assert!(head.len <= buf.len());
        let _ = head.get(buf, head.method);
        let _ = head.get(buf, head.target.path);
        for h in &head.headers {
            let _ = (head.get(buf, h.name), head.get(buf, h.value));
        }
        let mut pos = start + head.len;
        let mut body = BodyDecoder::new(head.framing.body, cfg);
        while !body.is_done() {
            let input = &data[pos..avail.max(pos)];
            match body.decode(input) {
                Ok(s) => {
                    assert!(s.consumed <= input.len() && s.data.end <= s.consumed);
                    pos += s.consumed;
                    if s.consumed == 0 && !s.done {
                        if avail == data.len() {
                            return (n, start, Some(body.eof_error()));
                        }
                        avail = (avail + step).min(data.len());
                    }
                }
                Err(e) => return (n, start, Some(e)),
            }
        }
        n += 1;
        start = pos;
        avail = avail.max(start);
        if !head.framing.keep_alive {
            break;
        }
    }
    (n, start, None)
}

/// Parses `data` as a PROXY header in each mode, one byte at a time, and panics if the
/// first prefix with an answer does not give the whole's answer (a header exactly when
/// its last byte arrives), if Auto disagrees with the mode its first byte picks, or if a
/// client address does not come back the same through a v1 line.
pub fn fuzz_proxy(data: &[u8]) {
    use crate::{parse_proxy, ProxyHeader, ProxyMode};
    for mode in [ProxyMode::V1, ProxyMode::V2, ProxyMode::Auto] {
        let whole = parse_proxy(data, mode);
        let first = (0..=data.len())
            .map(|k| (k, parse_proxy(&data[..k], mode)))
            .find(|(_, r)| *r != Ok(None));
        match (first, whole) {
            (None, Ok(None)) => {}
            (Some((k, got)), want) => {
                assert_eq!(got, want, "{mode:?}: prefix {k} and the whole disagree");
                if let Ok(Some((_, n))) = got {
                    assert_eq!(n, k, "{mode:?}: a header is complete at its last byte");
                }
            }
            (None, want) => panic!("{mode:?}: no prefix gave {want:?}"),
        }
        if let Ok(Some((ProxyHeader::Client { src, dst }, _))) = whole {
            assert_eq!(src.is_ipv4(), dst.is_ipv4(), "one family");
            let fam = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            let (s, d) = (src.ip(), dst.ip());
            let line = format!("PROXY {fam} {s} {d} {} {}\r\n", src.port(), dst.port());
            let again = parse_proxy(line.as_bytes(), ProxyMode::V1);
            assert_eq!(
                again,
                Ok(Some((ProxyHeader::Client { src, dst }, line.len())))
            );
        }
    }
    let picked = match data.first() {
        Some(b'P') => Some(ProxyMode::V1),
        Some(b'\r') => Some(ProxyMode::V2),
        _ => None,
    };
    if let Some(mode) = picked {
        assert_eq!(parse_proxy(data, ProxyMode::Auto), parse_proxy(data, mode));
    }
}

#[cfg(test)]
mod tests {
    use super::fuzz_one;
    use crate::mutate::Mutations;

    /// A few thousand mutations of valid requests, deterministic (xorshift), every run.
    #[test]
    fn mutated_requests_never_panic_and_split_delivery_agrees() {
        let seeds: &[&[u8]] = &[
            b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\nGET / HTTP/1.0\r\n\r\n",
            b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nA: b\r\n\r\nabcGET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n",
            b"\r\n\r\nGET http://u@h:1/p HTTP/1.1\r\nHost: x\r\n\r\n",
        ];
        let mutations = Mutations {
            alphabet: b"\r\n :;,0aZ\t\x00\x7f\xff-_/?#%",
            count: 20_000,
            max_edits: 4,
            bump: false,
            state: 0x9e37_79b9_7f4a_7c15,
        };
        mutations.run(seeds, |_, data| fuzz_one(data));
    }
}
