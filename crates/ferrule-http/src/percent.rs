//! Percent-decoding of the request path for `PATH_INFO`.

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is kept as is
/// (as gunicorn and most servers do). Returns `None` when nothing needed decoding,
/// so the common case allocates nothing.
pub fn decode(path: &[u8]) -> Option<Vec<u8>> {
    let first = memchr::memchr(b'%', path)?;
    let mut out = Vec::with_capacity(path.len());
    out.extend_from_slice(&path[..first]);
    let mut i = first;
    while i < path.len() {
        let b = path[i];
        if b == b'%' {
            if let (Some(h), Some(l)) = (hex(path.get(i + 1)), hex(path.get(i + 2))) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    Some(out)
}

fn hex(b: Option<&u8>) -> Option<u8> {
    b.and_then(|&b| (b as char).to_digit(16)).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn table() {
        assert_eq!(decode(b"/plain"), None);
        assert_eq!(decode(b"/a%20b").as_deref(), Some(&b"/a b"[..]));
        assert_eq!(decode(b"/%c3%a0").as_deref(), Some(&b"/\xc3\xa0"[..]));
        assert_eq!(decode(b"/100%").as_deref(), Some(&b"/100%"[..]));
        assert_eq!(decode(b"/%zz%4").as_deref(), Some(&b"/%zz%4"[..]));
        assert_eq!(decode(b"/%2F").as_deref(), Some(&b"//"[..]));
    }
}
