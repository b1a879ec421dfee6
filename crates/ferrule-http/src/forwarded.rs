//! `wsgi.url_scheme` from a trusted proxy's headers (gunicorn's `secure_scheme_headers`),
//! and the one pass over a trusted peer's fields that also notes whether `Forwarded`
//! and `X-Forwarded-For` are present, so those are parsed only when sent.

use crate::chars::{is_field_value, is_token};
use crate::error::ParseError;
use crate::head::Head;

/// gunicorn's default table: a header, and the value that means "the client used https".
pub const SECURE_SCHEME_HEADERS: &[(&[u8], &[u8])] = &[
    (b"X-FORWARDED-PROTOCOL", b"ssl"),
    (b"X-FORWARDED-PROTO", b"https"),
    (b"X-FORWARDED-SSL", b"on"),
];

/// gunicorn's `secure_scheme_headers`: header names, and the exact value of each that
/// means https (any other value of it means http). Names match in any case (gunicorn
/// matches only upper-case keys and silently never matches the others); values match
/// byte for byte, as in gunicorn. Empty: no header sets the scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemeHeaders {
    pairs: Vec<Pair>,
    /// Bit `n` (63: 63 or more) is set when a name the scan looks for is `n` bytes long:
    /// most fields (`Host`, `User-Agent`) are then passed over with one test.
    lengths: u64,
}

/// A header name, and its value that means https.
type Pair = (Box<[u8]>, Box<[u8]>);

/// The lists the scan notes besides the table.
const FORWARDED: &[u8] = b"forwarded";
const X_FORWARDED_FOR: &[u8] = b"x-forwarded-for";

fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

impl SchemeHeaders {
    fn from_pairs(pairs: Vec<Pair>) -> SchemeHeaders {
        let lengths = pairs
            .iter()
            .map(|(n, _)| n.len())
            .chain([FORWARDED.len(), X_FORWARDED_FOR.len()])
            .fold(0, |bits, len| bits | length_bit(len));
        SchemeHeaders { pairs, lengths }
    }
}

impl Default for SchemeHeaders {
    fn default() -> Self {
        SchemeHeaders::from_pairs(
            SECURE_SCHEME_HEADERS
                .iter()
                .map(|&(n, v)| (n.into(), v.into()))
                .collect(),
        )
    }
}

impl SchemeHeaders {
    /// Checks a table: each name a field name, each value one a field can carry
    /// (no control bytes, no surrounding spaces: those could never match), no name
    /// twice in different cases. The error says what to fix.
    pub fn new<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<SchemeHeaders, String> {
        let mut table: Vec<Pair> = Vec::new();
        for (name, value) in pairs {
            let (n, v) = (name.as_bytes(), value.as_bytes());
            if !is_token(n) {
                return Err(format!(
                    "secure_scheme_headers: {name:?} is not a header name"
                ));
            }
            let padded = |c: Option<&u8>| matches!(c, Some(b' ' | b'\t'));
            if !is_field_value(v) || padded(v.first()) || padded(v.last()) {
                return Err(format!(
                    "secure_scheme_headers: the value {value:?} of {name:?} is no header value \
                     (control characters, or spaces around it)"
                ));
            }
            if table.iter().any(|(t, _)| t.eq_ignore_ascii_case(n)) {
                return Err(format!(
                    "secure_scheme_headers: {name:?} is given twice (names match in any case)"
                ));
            }
            table.push((n.into(), v.into()));
        }
        Ok(SchemeHeaders::from_pairs(table))
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The names and values as configured.
    pub fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.pairs.iter().map(|(n, v)| (&n[..], &v[..]))
    }
}

/// What one pass over a trusted peer's fields found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ForwardingScan {
    /// The table's verdict: `Some(true)` https, `Some(false)` http, `None` no header of it.
    pub secure: Option<bool>,
    /// A `Forwarded` field is present.
    pub forwarded: bool,
    /// An `X-Forwarded-For` field is present.
    pub x_forwarded_for: bool,
}

/// One pass over the fields: the `table`'s verdict and which forwarding lists are sent.
/// Scheme headers that disagree (two of the table, or one repeated with two verdicts)
/// are `InvalidSchemeHeaders`, gunicorn's rule: one of them is forged.
pub fn scan_forwarding(
    head: &Head,
    buf: &[u8],
    table: &SchemeHeaders,
) -> Result<ForwardingScan, ParseError> {
    let mut scan = ForwardingScan::default();
    for h in &head.headers {
        let name = head.get(buf, h.name);
        if table.lengths & length_bit(name.len()) == 0 {
            continue;
        }
        scan.forwarded |= name.eq_ignore_ascii_case(FORWARDED);
        scan.x_forwarded_for |= name.eq_ignore_ascii_case(X_FORWARDED_FOR);
        for (header, secure_value) in &table.pairs {
            if name.eq_ignore_ascii_case(header) {
                let secure = head.get(buf, h.value) == &secure_value[..];
                if scan.secure.is_some_and(|v| v != secure) {
                    return Err(ParseError::InvalidSchemeHeaders);
                }
                scan.secure = Some(secure);
            }
        }
    }
    Ok(scan)
}

/// The table's verdict alone (see [`scan_forwarding`]).
pub fn secure_scheme(
    head: &Head,
    buf: &[u8],
    table: &SchemeHeaders,
) -> Result<Option<bool>, ParseError> {
    scan_forwarding(head, buf, table).map(|s| s.secure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_head, ParserConfig};

    fn scan_with(table: &SchemeHeaders, fields: &str) -> Result<ForwardingScan, ParseError> {
        let raw = format!("GET / HTTP/1.1\r\nHost: x\r\n{fields}\r\n");
        let head = parse_head(raw.as_bytes(), &ParserConfig::default())
            .unwrap()
            .unwrap();
        scan_forwarding(&head, raw.as_bytes(), table)
    }

    #[test]
    fn gunicorns_table() {
        let t = SchemeHeaders::default();
        let secure = |fields: &str| scan_with(&t, fields).map(|s| s.secure);
        let e = Err(ParseError::InvalidSchemeHeaders);
        let rows: &[(&str, Result<Option<bool>, ParseError>)] = &[
            ("", Ok(None)),
            ("X-Forwarded-Proto: https\r\n", Ok(Some(true))),
            ("x-forwarded-proto: https\r\n", Ok(Some(true))),
            ("X-Forwarded-Proto: http\r\n", Ok(Some(false))),
            // Values are exact, as in gunicorn ("value comparisons are case-sensitive").
            ("X-Forwarded-Proto: HTTPS\r\n", Ok(Some(false))),
            ("X-Forwarded-Protocol: ssl\r\n", Ok(Some(true))),
            ("X-Forwarded-Ssl: on\r\n", Ok(Some(true))),
            ("X-Forwarded-Ssl: off\r\n", Ok(Some(false))),
            // Agreeing headers are fine; disagreeing ones are gunicorn's 400.
            (
                "X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: on\r\n",
                Ok(Some(true)),
            ),
            (
                "X-Forwarded-Proto: http\r\nX-Forwarded-Ssl: off\r\n",
                Ok(Some(false)),
            ),
            ("X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n", e),
            ("X-Forwarded-Ssl: off\r\nX-Forwarded-Proto: https\r\n", e),
            ("X-Forwarded-Proto: https\r\nX-Forwarded-Proto: http\r\n", e),
            (
                "X-Forwarded-Proto: https\r\nX-Forwarded-Proto: https\r\n",
                Ok(Some(true)),
            ),
            // Not in the table.
            ("X-Scheme: https\r\n", Ok(None)),
        ];
        for (fields, want) in rows {
            assert_eq!(secure(fields), *want, "{fields:?}");
        }
    }

    #[test]
    fn a_custom_table_replaces_gunicorns() {
        let t = SchemeHeaders::new([("X-Scheme", "https"), ("front-end-https", "on")]).unwrap();
        let secure = |fields: &str| scan_with(&t, fields).map(|s| s.secure);
        assert_eq!(secure("X-Scheme: https\r\n"), Ok(Some(true)));
        assert_eq!(secure("FRONT-END-HTTPS: on\r\n"), Ok(Some(true)));
        assert_eq!(secure("X-Scheme: http\r\n"), Ok(Some(false)));
        // gunicorn's headers mean nothing now.
        assert_eq!(secure("X-Forwarded-Proto: https\r\n"), Ok(None));
        assert_eq!(
            secure("X-Scheme: https\r\nFront-End-Https: off\r\n"),
            Err(ParseError::InvalidSchemeHeaders)
        );
        // Names past the length bits' range still match.
        let long = "X-".to_string() + &"a".repeat(70);
        let t = SchemeHeaders::new([(long.as_str(), "on")]).unwrap();
        let got = scan_with(&t, &format!("{long}: on\r\n")).map(|s| s.secure);
        assert_eq!(got, Ok(Some(true)));
        let off = SchemeHeaders::new([]).unwrap();
        assert!(off.is_empty());
        assert_eq!(
            scan_with(&off, "X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n"),
            Ok(ForwardingScan::default())
        );
    }

    #[test]
    fn the_scan_notes_forwarding_lists() {
        let t = SchemeHeaders::default();
        let got = scan_with(&t, "FORWARDED: for=1.2.3.4\r\nX-Forwarded-For: 1.2.3.4\r\n");
        let want = ForwardingScan {
            secure: None,
            forwarded: true,
            x_forwarded_for: true,
        };
        assert_eq!(got, Ok(want));
        assert_eq!(
            scan_with(&t, "X-Forwarded: x\r\nForwarded-For: y\r\n"),
            Ok(ForwardingScan::default())
        );
    }

    #[test]
    fn tables_that_cannot_work_are_refused() {
        for (name, value) in [
            ("X Proto", "https"),
            ("", "https"),
            ("X-Proto:", "https"),
            ("X-Proto", " https"),
            ("X-Proto", "https\t"),
            ("X-Proto", "ht\ntps"),
        ] {
            assert!(
                SchemeHeaders::new([(name, value)]).is_err(),
                "{name:?}: {value:?}"
            );
        }
        let twice = SchemeHeaders::new([("X-A", "on"), ("x-a", "on")]).unwrap_err();
        assert!(twice.contains("twice"), "{twice}");
        let t = SchemeHeaders::new([("X-A", "on"), ("X-B", "")]).unwrap();
        let pairs: Vec<_> = t.pairs().collect();
        assert_eq!(pairs, [(&b"X-A"[..], &b"on"[..]), (b"X-B", b"")]);
    }
}
