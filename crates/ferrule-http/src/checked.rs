//! A response field checked and serialised once.
//!
//! Apps mostly send the same fields again and again, often the very same objects (a
//! constant `("Content-Type", "text/plain")` in the app's code). A server that can
//! tell it got the same field again keeps its [`CheckedField`] and copies its bytes
//! instead of checking and formatting the field on every response.

use crate::response::{classify_field, write_field, FieldKind, ResponseError};

/// `name: value\r\n` that passed [`classify_field`], and what the field means.
/// Only [`CheckedField::check`] makes one and only [`CheckedField::recheck`] changes
/// one, so the bytes are always a valid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedField {
    line: Vec<u8>,
    name_len: usize,
    kind: FieldKind,
}

impl CheckedField {
    /// Checks a field and serialises it.
    pub fn check(name: &[u8], value: &[u8]) -> Result<CheckedField, ResponseError> {
        let mut field = CheckedField {
            line: Vec::new(),
            name_len: 0,
            kind: FieldKind::Other,
        };
        field.recheck(name, value)?;
        Ok(field)
    }

    /// Replaces this field with another one, reusing its buffer. On an error the
    /// field is left as it was.
    pub fn recheck(&mut self, name: &[u8], value: &[u8]) -> Result<(), ResponseError> {
        self.kind = classify_field(name, value)?;
        self.line.clear();
        self.line.reserve(name.len() + value.len() + 4);
        write_field(&mut self.line, name, value);
        self.name_len = name.len();
        Ok(())
    }

    pub fn kind(&self) -> FieldKind {
        self.kind
    }

    pub fn name(&self) -> &[u8] {
        &self.line[..self.name_len]
    }

    /// The serialised field, CRLF included.
    pub fn line(&self) -> &[u8] {
        &self.line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_fields_are_serialised_once_and_keep_their_meaning() {
        let f = CheckedField::check(b"Content-Length", b"13").unwrap();
        assert_eq!(f.line(), b"Content-Length: 13\r\n");
        assert_eq!(f.kind(), FieldKind::ContentLength(13));
        let mut f = CheckedField::check(b"X-A", b"b").unwrap();
        assert_eq!(f.kind(), FieldKind::Other);
        f.recheck(b"Server", b"mine").unwrap();
        assert_eq!(f.line(), b"Server: mine\r\n");
        assert_eq!(f.kind(), FieldKind::Server);
        assert_eq!(f.name(), b"Server");
    }

    #[test]
    fn bad_fields_are_refused_and_leave_the_old_one() {
        assert_eq!(
            CheckedField::check(b"X-A", b"a\r\nb"),
            Err(ResponseError::HeaderValue)
        );
        assert_eq!(
            CheckedField::check(b"Connection", b"close"),
            Err(ResponseError::HopByHop)
        );
        let mut f = CheckedField::check(b"Date", b"now").unwrap();
        assert_eq!(f.recheck(b"Bad Name", b"x"), Err(ResponseError::HeaderName));
        assert_eq!(f.line(), b"Date: now\r\n");
        assert_eq!(f.kind(), FieldKind::Date);
    }
}
