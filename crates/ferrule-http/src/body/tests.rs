//! The chunked decoder against RFC 9112 §7.1, one table row per rule, each row decoded
//! whole, one byte at a time and split at every byte (all must agree); gunicorn's answer
//! is the one wanted where its corpus pins it (`chunked_*`, `rfc9112_chunked_*`).

use super::*;
use ParseError::*;

/// Decodes a chunked `input` as a server does, the bytes arriving up to each of
/// `arrivals` in turn (then all of them); an end of input inside the body is EOF.
fn decode_in(
    cfg: &ParserConfig,
    kind: BodyKind,
    input: &[u8],
    arrivals: &[usize],
) -> Result<(Vec<u8>, usize), ParseError> {
    let mut d = BodyDecoder::new(kind, cfg);
    let mut ends = arrivals.iter().copied().chain([input.len()]);
    let (mut out, mut pos, mut avail) = (Vec::new(), 0, 0);
    while !d.is_done() {
        let s = d.decode(&input[pos..avail])?;
        assert!(s.consumed <= avail - pos && s.data.end <= s.consumed);
        out.extend_from_slice(&input[pos..avail][s.data.clone()]);
        pos += s.consumed;
        if s.consumed == 0 && !s.done {
            match ends.next() {
                Some(end) => avail = end.clamp(avail, input.len()),
                None => return Err(d.eof_error()),
            }
        }
    }
    Ok((out, pos))
}

/// The answer for a chunked `input` delivered whole, after checking that byte-by-byte
/// delivery and every split in two give the same one.
fn agree(cfg: &ParserConfig, input: &[u8]) -> Result<(Vec<u8>, usize), ParseError> {
    let kind = BodyKind::Chunked;
    let whole = decode_in(cfg, kind, input, &[input.len()]);
    let bytes: Vec<usize> = (0..=input.len()).collect();
    assert_eq!(
        decode_in(cfg, kind, input, &bytes),
        whole,
        "by byte: {input:?}"
    );
    for k in 0..input.len() {
        assert_eq!(
            decode_in(cfg, kind, input, &[k]),
            whole,
            "at {k}: {input:?}"
        );
    }
    whole
}

/// [`agree`] for a body that, when valid, is all of `input`.
fn decode(cfg: &ParserConfig, input: &[u8]) -> Result<Vec<u8>, ParseError> {
    let (body, used) = agree(cfg, input)?;
    assert_eq!(used, input.len(), "{input:?} stopped early");
    Ok(body)
}

type Row = (
    &'static str,
    &'static [u8],
    Result<&'static [u8], ParseError>,
);

fn check(cfg: &ParserConfig, rows: &[Row]) {
    for (rule, input, want) in rows {
        let got = decode(cfg, input);
        assert_eq!(got.as_deref(), want.as_deref(), "{rule}: {input:?}");
    }
}

#[test]
#[rustfmt::skip]
fn chunk_size() {
    check(&ParserConfig::default(), &[
        ("1*HEXDIG", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", Ok(b"hello world")),
        ("upper-case hex", b"A\r\n0123456789\r\n0\r\n\r\n", Ok(b"0123456789")),
        ("lower-case hex", b"a\r\n0123456789\r\n0\r\n\r\n", Ok(b"0123456789")),
        ("leading zeros", b"0005\r\nhello\r\n0\r\n\r\n", Ok(b"hello")),
        ("many leading zeros", b"000000000000000000000000005\r\nhello\r\n0\r\n\r\n", Ok(b"hello")),
        ("last-chunk = 1*\"0\"", b"5\r\nhello\r\n000\r\n\r\n", Ok(b"hello")),
        ("15 significant digits", b"00fffffffffffffff\r\nab", Err(NoMoreData)),
        ("16 digits: refused below u64's end", b"1000000000000000\r\n", Err(InvalidChunkSize)),
        ("past u64", b"10000000000000000\r\nhello\r\n", Err(InvalidChunkSize)),
        ("far past u64", b"ffffffffffffffffffffffff\r\n", Err(InvalidChunkSize)),
        ("sign +", b"+5\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkSize)),
        ("sign -", b"-5\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkSize)),
        ("0x prefix", b"0x5\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkSize)),
        ("underscore", b"5\r\nhello\r\n6_0\r\n world\r\n0\r\n\r\n", Err(InvalidChunkSize)),
        ("not hex", b"g\r\n", Err(InvalidChunkSize)),
        ("no size", b"\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkSize)),
        ("no size, extension", b" ;foo=bar\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkSize)),
        ("white space before", b"5\r\nhello\r\n 0\r\n\r\n", Err(InvalidChunkSize)),
        ("white space after, no extension", b"5\r\nhello\r\n0 \r\n\r\n", Err(InvalidChunkSize)),
        ("junk after", b"5x\r\nhello\r\n", Err(InvalidChunkSize)),
        ("size line too long", &[b'0'; 5000], Err(InvalidChunkSize)),
        ("EOF in the size", b"5", Err(NoMoreData)),
        ("EOF before any size", b"", Err(NoMoreData)),
    ]);
    // A line of 4096 bytes (CRLF included) is the longest accepted, however it arrives.
    let cfg = ParserConfig::default();
    for (len, want) in [(4094, Ok(&b"hello"[..])), (4095, Err(InvalidChunkSize)), (9000, Err(InvalidChunkSize))] {
        let mut line = b"5;a=".to_vec();
        line.resize(len, b'b');
        let body = [&line[..], b"\r\nhello\r\n0\r\n\r\n"].concat();
        assert_eq!(decode(&cfg, &body), want.map(<[u8]>::to_vec), "{len}");
    }
}

#[test]
#[rustfmt::skip]
fn chunk_extensions() {
    check(&ParserConfig::default(), &[
        ("name", b"5;a\r\nhello\r\n0\r\n\r\n", Ok(b"hello")),
        ("name=token", b"5;a=b\r\nhello\r\n0\r\n\r\n", Ok(b"hello")),
        ("several, BWS after ;", b"5; a=b; c\r\nhello\r\n0\r\n\r\n", Ok(b"hello")),
        ("BWS before ;", b"5 ;a=b\r\nhello\r\n0\r\n\r\n", Ok(b"hello")),
        ("BWS (tab) before ;", b"5\t;a\r\nhello\r\n0\r\n\r\n", Ok(b"hello")),
        ("BWS around =", b"5;a = b\r\nhello\r\n0\r\n\r\n", Ok(b"hello")),
        ("quoted-string", b"5;foo=\"bar baz\"\r\nhello\r\n0\r\n\r\n", Ok(b"hello")),
        ("quoted-string, escapes", b"5;a=\"x\\\"y\\\\z\\\t\"\r\nhello\r\n0\r\n\r\n", Ok(b"hello")),
        ("quoted-string holding ; and =", b"5;a=\"x;y=z\";b\r\nhello\r\n0\r\n\r\n", Ok(b"hello")),
        ("empty quoted-string", b"5;a=\"\"\r\nhello\r\n0\r\n\r\n", Ok(b"hello")),
        ("obs-text quoted", b"5;a=\"\xc3\xa9\"\r\nhello\r\n0\r\n\r\n", Ok(b"hello")),
        ("last chunk with extensions", b"5\r\nhello\r\n0;a=b;c=\"d\"\r\n\r\n", Ok(b"hello")),
        ("last chunk 000 with extension", b"000;x\r\n\r\n", Ok(b"")),
        ("empty name", b"5;\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkExtension)),
        ("no name", b"5;=b\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkExtension)),
        ("empty value", b"5;a=\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkExtension)),
        ("trailing ;", b"5;a=b;\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkExtension)),
        ("BWS and ; only", b"5 ;\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkExtension)),
        ("trailing white space", b"5;a=b \r\nhello\r\n0\r\n\r\n", Err(InvalidChunkExtension)),
        ("space inside a name", b"5;a b\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkExtension)),
        ("space inside a token value", b"5;a=b c\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkExtension)),
        ("name not a token", b"5;a@b\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkExtension)),
        ("obs-text in a token", b"5;a=\xff\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkExtension)),
        ("DEL", b"5;a=b\x7f\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkExtension)),
        ("unterminated quoted-string", b"5;a=\"bc\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkExtension)),
        ("quote escaped, unterminated", b"5;a=\"b\\\"\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkExtension)),
        ("text after the quoted-string", b"5;a=\"b\"c\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkExtension)),
        ("control byte quoted", b"5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkExtension)),
        ("control byte escaped", b"5;a=\"\\\x01\"\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkExtension)),
        ("bare CR", b"5;ext=val\rue\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkExtension)),
        ("bare LF", b"5;a\nb\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkExtension)),
        ("bare CR in the last chunk's", b"0;a\rb\r\n\r\n", Err(InvalidChunkExtension)),
    ]);
}

#[test]
#[rustfmt::skip]
fn line_ends_and_chunk_data() {
    check(&ParserConfig::default(), &[
        ("bare LF after the size", b"5\nhello\r\n0\r\n\r\n", Err(InvalidChunkSize)),
        ("bare LF, then ;", b"5\n;\r\nhello\r\n0\r\n\r\n", Err(InvalidChunkSize)),
        ("bare CR after the size", b"5\r\rhello\r\n0\r\n\r\n", Err(InvalidChunkSize)),
        ("bare LF after the last chunk", b"0\n\r\n", Err(InvalidChunkSize)),
        ("data, then bare LF", b"5\r\nhello\n0\r\n\r\n", Err(ChunkMissingTerminator)),
        ("data, then bare CR", b"5\r\nhello\r0\r\n\r\n", Err(ChunkMissingTerminator)),
        ("data longer than its size", b"5\r\nhello world\r\n0\r\n\r\n", Err(ChunkMissingTerminator)),
        ("data shorter than its size", b"6\r\nhello\r\n0\r\n\r\n", Err(ChunkMissingTerminator)),
        ("EOF in data", b"5\r\nhel", Err(NoMoreData)),
        ("EOF before the data's CRLF", b"5\r\nhello", Err(ChunkMissingTerminator)),
        ("EOF inside the data's CRLF", b"5\r\nhello\r", Err(ChunkMissingTerminator)),
        ("EOF before the next size", b"5\r\nhello\r\n", Err(NoMoreData)),
        ("last chunk, no final CRLF", b"0\r\n", Err(ChunkMissingTerminator)),
        ("last chunk, bare CR", b"0\r\n\r", Err(ChunkMissingTerminator)),
        ("last chunk, then bare LF", b"0\r\n\n", Err(ChunkMissingTerminator)),
        ("empty body", b"0\r\n\r\n", Ok(b"")),
    ]);
}

#[test]
#[rustfmt::skip]
fn trailer_section() {
    check(&ParserConfig::default(), &[
        ("field-line", b"0\r\nVary: *\r\n\r\n", Ok(b"")),
        ("several", b"3\r\nabc\r\n0\r\nA: 1\r\nB:2\r\nC: \t3 \r\n\r\n", Ok(b"abc")),
        ("empty value", b"0\r\nA:\r\n\r\n", Ok(b"")),
        ("obs-text value", b"0\r\nA: caf\xc3\xa9\r\n\r\n", Ok(b"")),
        ("underscore, header_map=drop", b"0\r\nA_B: c\r\n\r\n", Ok(b"")),
        ("no colon", b"0\r\nnocolon\r\n\r\n", Err(InvalidHeader)),
        ("empty name", b"0\r\n: c\r\n\r\n", Err(InvalidHeaderName)),
        ("name not a token", b"0\r\nA B: c\r\n\r\n", Err(InvalidHeaderName)),
        ("white space before :", b"0\r\nA : c\r\n\r\n", Err(InvalidHeaderName)),
        ("NUL in value", b"0\r\nA: b\x00c\r\n\r\n", Err(InvalidHeader)),
        ("DEL in value", b"0\r\nA: b\x7f\r\n\r\n", Err(InvalidHeader)),
        ("bare CR in value", b"0\r\nA: b\rc\r\n\r\n", Err(InvalidHeader)),
        ("bare LF ending a field", b"0\r\nA: b\n\r\n", Err(InvalidHeader)),
        ("obs-fold", b"0\r\nA: b\r\n c\r\n\r\n", Err(ObsoleteFolding)),
        ("obs-fold first", b"0\r\n\tc\r\n\r\n", Err(ObsoleteFolding)),
        ("Content-Length", b"5\r\nhello\r\n0\r\nContent-Length: 99\r\n\r\n", Err(InvalidHeaderName)),
        ("Transfer-Encoding", b"0\r\nTransfer-Encoding: chunked\r\n\r\n", Err(InvalidHeaderName)),
        ("Host", b"0\r\nhost: a\r\n\r\n", Err(InvalidHeaderName)),
        ("Trailer", b"0\r\nTrailer: X\r\n\r\n", Err(InvalidHeaderName)),
        ("TE", b"0\r\nTE: trailers\r\n\r\n", Err(InvalidHeaderName)),
        ("Authorization", b"0\r\nAUTHORIZATION: x\r\n\r\n", Err(InvalidHeaderName)),
        ("Cookie (ferrule's list)", b"0\r\nCookie: a=b\r\n\r\n", Err(InvalidHeaderName)),
        ("EOF inside the trailers", b"0\r\nA: b\r\n", Err(ChunkMissingTerminator)),
        ("EOF inside a field", b"0\r\nA: b", Err(ChunkMissingTerminator)),
    ]);
}

#[test]
#[rustfmt::skip]
fn trailer_settings() {
    let with = |set: fn(&mut ParserConfig)| {
        let mut cfg = ParserConfig::default();
        set(&mut cfg);
        cfg
    };
    check(&with(|c| c.permit_obsolete_folding = true), &[
        ("obs-fold permitted", b"0\r\nA: b\r\n c\r\n\td\r\n\r\n", Ok(b"")),
        ("obs-fold first", b"0\r\n c\r\n\r\n", Err(InvalidHeader)),
        ("obs-fold, control byte", b"0\r\nA: b\r\n c\x01\r\n\r\n", Err(InvalidHeader)),
    ]);
    check(&with(|c| c.strip_header_spaces = true), &[
        ("strip_header_spaces", b"0\r\nA : c\r\n\r\n", Ok(b"")),
        ("stripped, still forbidden", b"0\r\nHost : c\r\n\r\n", Err(InvalidHeaderName)),
    ]);
    check(&with(|c| c.header_map = HeaderMap::Refuse), &[
        ("header_map=refuse", b"0\r\nA_B: c\r\n\r\n", Err(InvalidHeaderName)),
    ]);
    let small = |c: &mut ParserConfig| {
        (c.limit_request_field_size, c.limit_request_fields) = (20, 2);
        c.permit_obsolete_folding = true;
    };
    check(&with(small), &[
        ("a field of 20 bytes", b"0\r\nA: 345678901234567\r\n\r\n", Ok(b"")),
        ("a field of 21 bytes", b"0\r\nA: 3456789012345678\r\n\r\n", Err(LimitRequestHeaders)),
        ("folded lines add up", b"0\r\nA: 34567\r\n 01234567\r\n\r\n", Err(LimitRequestHeaders)),
        ("2 fields", b"0\r\nA: 1\r\nB: 2\r\n\r\n", Ok(b"")),
        ("3 fields", b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", Err(LimitRequestHeaders)),
    ]);
    check(&with(|c| c.limit_request_field_size = 1), &[
        ("the final CRLF is no field", b"1\r\nx\r\n0\r\n\r\n", Ok(b"x")),
    ]);
}

#[test]
fn the_body_ends_where_its_framing_says() {
    let cfg = ParserConfig::default();
    let input = b"5;a=b\r\nhello\r\n0\r\nT: v\r\n\r\nGET / HTTP/1.1\r\n";
    let end = input.len() - b"GET / HTTP/1.1\r\n".len();
    assert_eq!(agree(&cfg, input), Ok((b"hello".to_vec(), end)));
    let got = decode_in(&cfg, BodyKind::Length(5), b"helloGET / HTTP/1.1", &[2]).unwrap();
    assert_eq!(got, (b"hello".to_vec(), 5));
    let got = decode_in(&cfg, BodyKind::Empty, b"GET", &[1]).unwrap();
    assert_eq!(got, (Vec::new(), 0));
}

#[test]
fn chunked_limit() {
    let cfg = ParserConfig {
        limit_request_body: 4,
        ..ParserConfig::default()
    };
    let mut d = BodyDecoder::new(BodyKind::Chunked, &cfg);
    assert_eq!(d.decode(b"5\r\nhello\r\n"), Err(BodyTooLarge));
    assert_eq!(
        decode(&cfg, b"2\r\nhe\r\n2\r\nll\r\n0\r\n\r\n").as_deref(),
        Ok(&b"hell"[..])
    );
    assert_eq!(
        decode(&cfg, b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n"),
        Err(BodyTooLarge)
    );
}

/// Mutated chunked bodies (deterministic xorshift): no panic, and delivery whole,
/// byte by byte and in two pieces agree (`agree` asserts it).
#[test]
fn mutated_bodies_agree_however_they_arrive() {
    let seeds: &[&[u8]] = &[
        b"5;a=\"b\\\"c\"\r\nhello\r\n6 ; x\r\n world\r\n0\r\nT: v\r\n\r\n",
        b"A\r\n0123456789\r\n000;e=f\r\nA: 1\r\n b\r\n\r\n",
    ];
    let mutations = crate::mutate::Mutations {
        alphabet: b"\r\n\r\n ;=\"\\\t:_0fAx\x00\x7f\xff",
        count: 3000,
        max_edits: 3,
        bump: false,
        state: 0x2545_f491_4f6c_dd1d,
    };
    let fold = ParserConfig {
        permit_obsolete_folding: true,
        limit_request_field_size: 12,
        ..ParserConfig::default()
    };
    let mut accepted = 0;
    let plain = ParserConfig::default();
    mutations.run(seeds, |i, data| {
        let cfg = if i % 4 == 0 { &fold } else { &plain };
        accepted += usize::from(agree(cfg, data).is_ok());
    });
    // Both answers are exercised, not only the errors.
    assert!(
        (100..2900).contains(&accepted),
        "{accepted} of 3000 accepted"
    );
}
