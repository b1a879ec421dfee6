//! Writing a uwsgi packet as nginx's `ngx_http_uwsgi_create_request` does: for a client
//! of a uwsgi server, and for the tests and the fuzz round trip, which must all build
//! the same bytes the parser reads.

use super::UWSGI_HEADER_LEN;

/// The vars block of `vars`: each key and value as a u16-LE length and the bytes.
/// None when a key or value is longer than 65535 bytes (the length cannot say it).
pub fn uwsgi_vars<'a>(vars: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Option<Vec<u8>> {
    let mut block = Vec::new();
    for (key, value) in vars {
        for field in [key, value] {
            block.extend_from_slice(&u16::try_from(field.len()).ok()?.to_le_bytes());
            block.extend_from_slice(field);
        }
    }
    Some(block)
}

/// A packet (modifier1 and modifier2 0, as nginx sends) around the vars block
/// `block`. None when the block is longer than 65535 bytes.
pub fn uwsgi_packet(block: &[u8]) -> Option<Vec<u8>> {
    let size = u16::try_from(block.len()).ok()?;
    let mut out = Vec::with_capacity(UWSGI_HEADER_LEN + block.len());
    out.push(0);
    out.extend_from_slice(&size.to_le_bytes());
    out.push(0);
    out.extend_from_slice(block);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uwsgi::parse_uwsgi;

    #[test]
    fn what_is_written_parses_back_to_the_same_variables() {
        let vars: &[(&[u8], &[u8])] = &[(b"REQUEST_METHOD", b"GET"), (b"EMPTY", b"")];
        let packet = uwsgi_packet(&uwsgi_vars(vars.iter().copied()).unwrap()).unwrap();
        let parsed = parse_uwsgi(&packet).unwrap().unwrap();
        assert_eq!(parsed.pairs(&packet).collect::<Vec<_>>(), vars);
        assert_eq!(parsed.consumed, packet.len());
    }

    #[test]
    fn lengths_a_u16_cannot_hold_are_refused() {
        let long = vec![b'x'; 65536];
        assert!(uwsgi_vars([(&b"K"[..], &long[..])]).is_none());
        assert!(uwsgi_packet(&long).is_none());
        assert!(uwsgi_packet(&long[1..]).is_some());
    }
}
