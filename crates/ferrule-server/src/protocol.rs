//! Which protocol a listener speaks, and what a protocol can hand the app besides
//! an HTTP/1 head. A seam below the exchange and the drivers (`driver.rs`): the
//! Python bridge asks an exchange which protocol carried it
//! (`Exchange::protocol`) and for the variables it brought ready-made
//! (`Exchange::ready_vars`), and knows no driver.

use std::ops::Range;

/// A listener's protocol: which driver serves its connections (`driver::serve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.0 and 1.1 (`driver/http1.rs`): the environ is derived from the head.
    Http1,
}

/// Name/value byte pairs a protocol delivered ready-made (uwsgi's packet: PATH_INFO
/// already decoded, SERVER_NAME, REMOTE_ADDR, HTTP_* from the front server), in
/// the order they came. One buffer for all of them, so a request allocates twice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadyVars {
    bytes: Vec<u8>,
    pairs: Vec<(Range<usize>, Range<usize>)>,
}

impl ReadyVars {
    /// Appends a variable.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(name);
        let mid = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.pairs.push((start..mid, mid..self.bytes.len()));
    }

    /// The variables, name and value, in the order they came.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.pairs
            .iter()
            .map(|(n, v)| (&self.bytes[n.clone()], &self.bytes[v.clone()]))
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::ReadyVars;

    #[test]
    fn variables_come_back_in_order() {
        let mut vars = ReadyVars::default();
        vars.push(b"PATH_INFO", b"/a b");
        vars.push(b"EMPTY", b"");
        vars.push(b"", b"x");
        let got: Vec<_> = vars.iter().collect();
        assert_eq!(
            got,
            [
                (&b"PATH_INFO"[..], &b"/a b"[..]),
                (&b"EMPTY"[..], &b""[..]),
                (&b""[..], &b"x"[..])
            ]
        );
        assert_eq!(vars.len(), 3);
    }
}
