//! Byte classes of RFC 9110/9112, as lookup tables.

/// Builds a 256-entry table from a `const fn` predicate.
macro_rules! table {
    ($f:ident) => {{
        let mut t = [false; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = $f(i as u8);
            i += 1;
        }
        t
    }};
}

const fn is_tchar_fn(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' |
        b'^' | b'_' | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

/// Field values: HTAB, visible ASCII, space and obs-text; no other control bytes.
const fn is_value_fn(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// Request-target bytes: anything visible, including obs-text (sent raw by some clients).
const fn is_target_fn(b: u8) -> bool {
    b > 0x20 && b != 0x7f
}

/// Characters allowed in a URI authority's reg-name or userinfo (unreserved, pct, sub-delims).
const fn is_authority_fn(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'%' |
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=')
}

static TCHAR: [bool; 256] = table!(is_tchar_fn);
static VALUE: [bool; 256] = table!(is_value_fn);
static TARGET: [bool; 256] = table!(is_target_fn);
static AUTHORITY: [bool; 256] = table!(is_authority_fn);

/// A token character (method and field-name bytes).
#[inline]
pub fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

#[inline]
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

#[inline]
pub fn is_field_value(s: &[u8]) -> bool {
    s.iter().all(|&b| VALUE[b as usize])
}

#[inline]
pub fn is_target(s: &[u8]) -> bool {
    s.iter().all(|&b| TARGET[b as usize])
}

#[inline]
pub fn is_authority_char(b: u8) -> bool {
    AUTHORITY[b as usize]
}

/// A port number: 1 to 5 decimal digits (no sign, which `u16::from_str` would take)
/// whose value is at most 65535. Shared by the PROXY v1 line and `Forwarded` nodes.
pub fn port_number(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    u16::try_from(n).ok()
}

/// Strips spaces and tabs (optional white space) from both ends.
#[inline]
pub fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert!(is_token(b"GET"));
        assert!(is_token(b"X.Custom|Pipe"));
        assert!(!is_token(b"bla:rgh"));
        assert!(!is_token(b""));
        assert!(is_field_value(b"caf\xc3\xa9 \tx"));
        assert!(!is_field_value(b"a\x07b"));
        assert!(!is_field_value(b"a\x7fb"));
        assert!(is_target(b"/\xc3\xa0%20k"));
        assert!(!is_target(b"/a\x00"));
        assert_eq!(trim_ows(b" \t x \t"), b"x");
        assert_eq!(trim_ows(b"  "), b"");
        for (digits, want) in [
            (&b"0"[..], Some(0)),
            (b"00080", Some(80)),
            (b"65535", Some(65535)),
            (b"65536", None),
            (b"000080", None),
            (b"+1", None),
            (b"1 ", None),
            (b"", None),
        ] {
            assert_eq!(port_number(digits), want, "{digits:?}");
        }
    }
}
