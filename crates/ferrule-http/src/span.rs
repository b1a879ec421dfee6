//! Where the parts of a request head are: byte ranges instead of copies, so a parsed
//! head borrows nothing and the caller keeps the bytes. Shared by the head parser,
//! the target parser and the framing rules, and depending on none of them.

/// Bit set in `Span::start` when the bytes live in [`Head::owned`] rather than the buffer.
const OWNED: u32 = 1 << 31;

/// A byte range of the head (or of the head's own side buffer, for folded values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    pub(crate) fn at(start: usize, len: usize) -> Span {
        Span {
            start: start as u32,
            end: (start + len) as u32,
        }
    }

    pub(crate) fn owned(start: usize, len: usize) -> Span {
        Span {
            start: start as u32 | OWNED,
            end: (start + len) as u32,
        }
    }

    /// The range inside whichever buffer holds the bytes.
    pub fn range(self) -> std::ops::Range<usize> {
        (self.start & !OWNED) as usize..self.end as usize
    }

    pub fn is_empty(self) -> bool {
        self.range().is_empty()
    }

    pub(crate) fn is_owned(self) -> bool {
        self.start & OWNED != 0
    }
}

/// One header field as received: the name with its original case, the value without OWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub name: Span,
    pub value: Span,
}

/// The bytes spans point into: the buffer the head was parsed from, and the head's
/// side buffer (folded values, a case-folded method).
#[derive(Clone, Copy)]
pub(crate) struct Bytes<'a> {
    pub buf: &'a [u8],
    pub owned: &'a [u8],
}

impl<'a> Bytes<'a> {
    #[inline]
    pub fn get(self, span: Span) -> &'a [u8] {
        if span.is_owned() {
            &self.owned[span.range()]
        } else {
            &self.buf[span.range()]
        }
    }
}
