//! Table tests of the uwsgi packet parser: packets as nginx builds them, arrival byte
//! by byte, every error, the largest vars block, pipelining.

use super::*;
use crate::{BodyDecoder, ParseError, ParserConfig};

type Vars<'a> = &'a [(&'a [u8], &'a [u8])];

/// The vars block of `vars`, encoded as nginx does.
fn block(vars: Vars) -> Vec<u8> {
    uwsgi_vars(vars.iter().copied()).unwrap()
}

/// A packet with `block` as its vars (modifier1 0, modifier2 0).
fn packet_of(block: &[u8]) -> Vec<u8> {
    uwsgi_packet(block).unwrap()
}

fn packet(vars: Vars) -> Vec<u8> {
    packet_of(&block(vars))
}

fn pairs<'a>(p: &'a UwsgiPacket, buf: &'a [u8]) -> Vec<(&'a [u8], &'a [u8])> {
    p.pairs(buf).collect()
}

/// Debian's `/etc/nginx/uwsgi_params` for `GET /caf%C3%A9/%FF?q=1` with an empty
/// header, a repeated Cookie (joined with `; `), then the request fields as nginx adds
/// them. PATH_INFO is decoded by nginx, so it holds raw UTF-8 and a 0xff byte.
const NGINX: Vars = &[
    (b"QUERY_STRING", b"q=1"),
    (b"REQUEST_METHOD", b"GET"),
    (b"CONTENT_TYPE", b""),
    (b"CONTENT_LENGTH", b""),
    (b"REQUEST_URI", b"/caf%C3%A9/%FF?q=1"),
    (b"PATH_INFO", b"/caf\xc3\xa9/\xff"),
    (b"DOCUMENT_ROOT", b"/usr/share/nginx/html"),
    (b"SERVER_PROTOCOL", b"HTTP/1.1"),
    (b"REQUEST_SCHEME", b"https"),
    (b"HTTPS", b"on"),
    (b"REMOTE_ADDR", b"203.0.113.9"),
    (b"REMOTE_PORT", b"50123"),
    (b"SERVER_PORT", b"443"),
    (b"SERVER_NAME", b"example.com"),
    (b"HTTP_HOST", b"example.com"),
    (b"HTTP_USER_AGENT", b"curl/8.5.0"),
    (b"HTTP_ACCEPT", b"*/*"),
    (b"HTTP_X_EMPTY", b""),
    (b"HTTP_COOKIE", b"a=1; b=2"),
];

#[test]
fn nginx_packet() {
    let buf = packet(NGINX);
    let p = parse_uwsgi(&buf).unwrap().unwrap();
    assert_eq!(pairs(&p, &buf), NGINX);
    assert_eq!((p.content_length, p.body()), (0, BodyKind::Empty));
    assert_eq!((p.consumed, p.modifier2), (buf.len(), 0));
}

#[test]
fn little_endian_sizes_by_hand() {
    // One var "A" = 300 x's: vars size 2+1+2+300 = 305 = 0x0131, value size 0x012c.
    let mut buf = b"\x00\x31\x01\x07\x01\x00A\x2c\x01".to_vec();
    buf.extend([b'x'; 300]);
    let p = parse_uwsgi(&buf).unwrap().unwrap();
    assert_eq!((p.consumed, p.modifier2), (309, 7));
    assert_eq!(pairs(&p, &buf), [(&b"A"[..], &[b'x'; 300][..])]);
    assert_eq!(
        p.vars[0].1.range(),
        9..309,
        "spans index the caller's buffer"
    );
}

#[test]
fn every_prefix_is_incomplete() {
    let mut buf = packet(&[(b"CONTENT_LENGTH", b"5"), (b"REQUEST_METHOD", b"PUT")]);
    let len = buf.len();
    for n in 0..len {
        assert_eq!(parse_uwsgi(&buf[..n]), Ok(None), "prefix of {n} bytes");
    }
    buf.extend_from_slice(b"helloNEXT");
    let p = parse_uwsgi(&buf).unwrap().unwrap();
    assert_eq!((p.consumed, p.content_length), (len, 5));
    // The body is read after the packet, with the decoder HTTP/1 uses.
    let mut body = BodyDecoder::new(p.body(), &ParserConfig::default());
    let step = body.decode(&buf[p.consumed..]).unwrap();
    assert!(step.done);
    assert_eq!(&buf[p.consumed..][step.data], b"hello");
}

#[test]
fn modifier1_is_refused_on_its_first_byte() {
    for m in [1u8, 5, 30, 0xff] {
        assert_eq!(parse_uwsgi(&[m]), Err(UwsgiError::UnsupportedModifier(m)));
        let mut buf = packet(NGINX);
        buf[0] = m;
        assert_eq!(parse_uwsgi(&buf), Err(UwsgiError::UnsupportedModifier(m)));
    }
}

#[test]
fn inconsistent_vars_blocks() {
    use Inconsistency::*;
    let good = block(&[(b"A", b"b")]);
    let after = 4 + good.len();
    let with = |tail: &[u8]| [&good[..], tail].concat();
    // (vars block, offset of the broken var in the packet, why)
    let table: &[(Vec<u8>, usize, Inconsistency)] = &[
        (b"\x05".to_vec(), 4, KeyLength),
        (b"\x05\x00AB".to_vec(), 4, Key),
        (b"\x00\x00\x00\x00".to_vec(), 4, EmptyKey),
        (b"\x00\x00".to_vec(), 4, EmptyKey),
        (b"\x01\x00A".to_vec(), 4, ValueLength),
        (b"\x01\x00A\x01".to_vec(), 4, ValueLength),
        (b"\x01\x00A\x05\x00xy".to_vec(), 4, Value),
        (b"\x01\x00A\xff\xff".to_vec(), 4, Value),
        (with(b"\x00"), after, KeyLength),
        (with(b"\x02\x00B"), after, Key),
        (with(b"\x01\x00B\x02\x00c"), after, Value),
    ];
    for (block, at, why) in table {
        let want = Err(UwsgiError::Inconsistent { at: *at, why: *why });
        let buf = packet_of(block);
        assert_eq!(parse_uwsgi(&buf), want, "{block:?}");
        // Bytes after the block (the body, the next packet) never complete a var.
        let buf = [&buf[..], b"xyzxyzxyz"].concat();
        assert_eq!(parse_uwsgi(&buf), want, "{block:?} followed by more");
    }
}

#[test]
fn content_length() {
    let max = u64::MAX.to_string();
    // (CONTENT_LENGTH values in order, the length or None for an error)
    let table: &[(&[&[u8]], Option<u64>)] = &[
        (&[], Some(0)),
        (&[b""], Some(0)),
        (&[b"0"], Some(0)),
        (&[b"007"], Some(7)),
        (&[b"10485760"], Some(10 << 20)),
        (&[max.as_bytes()], Some(u64::MAX)),
        (&[b"18446744073709551616"], None),
        (&[b"99999999999999999999999"], None),
        (&[b"-1"], None),
        (&[b"+5"], None),
        (&[b" 5"], None),
        (&[b"5 "], None),
        (&[b"0x10"], None),
        (&[b"5,5"], None),
        (&[b"\xd9\xa5"], None),
        (&[b"5", b"7"], Some(7)),
        (&[b"5", b""], Some(0)),
        (&[b"x", b"5"], None),
    ];
    for &(values, want) in table {
        let mut vars: Vec<(&[u8], &[u8])> = vec![(b"REQUEST_METHOD", b"POST")];
        vars.extend(values.iter().map(|v| (&b"CONTENT_LENGTH"[..], *v)));
        // Only the exact name frames the body; look-alikes pass through.
        vars.push((b"content_length", b"x"));
        vars.push((b"HTTP_CONTENT_LENGTH", b"x"));
        let got = parse_uwsgi(&packet(&vars)).map(|p| p.map(|p| p.content_length));
        match want {
            Some(n) => assert_eq!(got, Ok(Some(n)), "{values:?}"),
            None => assert_eq!(got, Err(UwsgiError::InvalidContentLength), "{values:?}"),
        }
    }
}

#[test]
fn largest_and_smallest_vars_blocks() {
    // One var filling a 65535-byte block: 2 + 1 + 2 + 65530.
    let value = vec![b'v'; 65530];
    let buf = packet(&[(b"X", &value)]);
    assert_eq!(&buf[1..3], b"\xff\xff");
    assert_eq!(parse_uwsgi(&buf[..buf.len() - 1]), Ok(None));
    let p = parse_uwsgi(&buf).unwrap().unwrap();
    assert_eq!(
        (p.consumed, pairs(&p, &buf)),
        (65539, vec![(&b"X"[..], &value[..])])
    );
    // Many small vars up to the same size: 13107 of 5 bytes each ("K", empty value).
    let many = vec![(&b"K"[..], &b""[..]); 65535 / 5];
    let buf = packet(&many);
    assert_eq!(buf.len(), 65539);
    assert_eq!(parse_uwsgi(&buf).unwrap().unwrap().vars.len(), 13107);
    // No vars at all is a well-formed packet; the bridge refuses it (no REQUEST_METHOD).
    let p = parse_uwsgi(b"\x00\x00\x00\x00rest").unwrap().unwrap();
    assert_eq!((p.consumed, p.vars.len()), (4, 0));
}

#[test]
fn pipelined_packets() {
    let first: Vars = &[(b"REQUEST_METHOD", b"POST"), (b"CONTENT_LENGTH", b"5")];
    let second: Vars = &[(b"REQUEST_METHOD", b"GET"), (b"PATH_INFO", b"/2")];
    let mut buf = packet(first);
    buf.extend_from_slice(b"hello");
    buf.extend(packet(second));
    let p = parse_uwsgi(&buf).unwrap().unwrap();
    assert_eq!(pairs(&p, &buf), first);
    let rest = &buf[p.consumed + p.content_length as usize..];
    let q = parse_uwsgi_into(rest, p.vars).unwrap().unwrap();
    assert_eq!((pairs(&q, rest), q.consumed), (second.to_vec(), rest.len()));
}

#[test]
fn errors_name_and_convert() {
    let inconsistent = UwsgiError::Inconsistent {
        at: 9,
        why: Inconsistency::Value,
    };
    let table = [
        (
            UwsgiError::UnsupportedModifier(30),
            "unsupported uwsgi modifier1 30 (UnsupportedModifier)",
            ParseError::InvalidRequestLine,
        ),
        (
            // `GET / HTTP/1.1` sent to a uwsgi bind.
            UwsgiError::UnsupportedModifier(b'G'),
            "unsupported uwsgi modifier1 71 ('G': an HTTP request on a bind that speaks \
             --protocol uwsgi?) (UnsupportedModifier)",
            ParseError::InvalidRequestLine,
        ),
        (
            inconsistent,
            "inconsistent uwsgi packet: the var at byte 9: value runs past the vars block \
             (InvalidUWSGIHeader)",
            ParseError::InvalidHeader,
        ),
        (
            UwsgiError::InvalidContentLength,
            "invalid uwsgi CONTENT_LENGTH (InvalidUWSGIHeader)",
            ParseError::InvalidHeader,
        ),
    ];
    for (e, text, http) in table {
        assert_eq!(
            (e.to_string(), ParseError::from(e)),
            (text.to_string(), http)
        );
    }
}

#[test]
fn spans_of_another_buffer_do_not_panic() {
    let buf = packet(NGINX);
    let p = parse_uwsgi(&buf).unwrap().unwrap();
    assert!(p.pairs(b"short").all(|(k, v)| k.is_empty() && v.is_empty()));
}
