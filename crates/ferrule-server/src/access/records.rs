//! Access records instead of access lines: with a Python logging configuration
//! (`--log-config`, `logconfig_dict`), each finished request goes to Python's
//! `gunicorn.access` logger with gunicorn's atoms as `record.args`. The server hands
//! the bridge an [`Atoms`] view; the values come from [`write_atom`], the one place an
//! atom's value is made, so a record shows what the line would.

use super::atoms::{write_atom, NAMED};
use crate::finished::Finished;
use crate::protocol::Protocol;
use crate::sink::Destination;
use std::time::Duration;

/// Receives the access records of a process (the Python bridge: `gunicorn.access`).
pub trait AccessRecords: Send + Sync + 'static {
    /// Called on the thread that ran the request, after its response was sent, with
    /// whatever the handler holds across a batch (the GIL, for the Python bridge).
    fn record(&self, atoms: &Atoms<'_>);
}

/// The named atoms' names in the order [`Atoms::each_named`] gives them.
pub fn named_atoms() -> impl Iterator<Item = &'static str> {
    NAMED.iter().map(|(name, _)| *name)
}

/// A finished request as the atoms a record carries.
pub struct Atoms<'a> {
    ex: &'a Finished<'a>,
    /// Read once, so `T`, `M`, `D` and `L` agree.
    elapsed: Duration,
}

impl<'a> Atoms<'a> {
    pub(crate) fn new(ex: &'a Finished<'a>) -> Atoms<'a> {
        Atoms {
            ex,
            elapsed: ex.started.elapsed(),
        }
    }

    /// Each named atom (gunicorn's `h l u t r m U q H s B b f a T M D L p`, then
    /// ferrule's) with its place in [`named_atoms`], its name and its text as the access
    /// line shows it.
    pub fn each_named(&self, mut f: impl FnMut(usize, &'static str, &str)) {
        let mut s = String::with_capacity(128);
        for (i, (name, piece)) in NAMED.iter().enumerate() {
            s.clear();
            write_atom(piece, self.ex, &[], self.elapsed, &mut s);
            f(i, name, &s);
        }
    }

    /// The body bytes sent (`B`).
    pub fn body_bytes(&self) -> u64 {
        self.ex.outcome.body_bytes
    }

    /// The request's time (`T`, `M`, `D` are its seconds, milliseconds, microseconds).
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Each request field as (name, value); a uwsgi request's `HTTP_X_Y` variables as
    /// the field `x-y` they stand for, so `{x-y}i` reads the same over both protocols.
    pub fn each_request_header(&self, mut f: impl FnMut(&str, &[u8])) {
        let ex = self.ex;
        for h in &ex.head.headers {
            let name = ex.head.get(ex.buf, h.name);
            let value = ex.head.get(ex.buf, h.value);
            match ex.protocol {
                Protocol::Http1 => f(&String::from_utf8_lossy(name), value),
                Protocol::Uwsgi => {
                    if let Some(field) = name.strip_prefix(b"HTTP_") {
                        let field: String = String::from_utf8_lossy(field)
                            .chars()
                            .map(|c| if c == '_' { '-' } else { c })
                            .collect();
                        f(&field, value);
                    }
                }
            }
        }
    }

    /// Each response field as (name, value); the access log keeps the response head
    /// whenever it sends records.
    pub fn each_response_header(&self, mut f: impl FnMut(&str, &[u8])) {
        let Some(head) = self.ex.response_head else {
            return;
        };
        for line in head.split(|&b| b == b'\n').skip(1) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(colon) = line.iter().position(|&b| b == b':') {
                f(
                    &String::from_utf8_lossy(&line[..colon]),
                    line[colon + 1..].trim_ascii(),
                );
            }
        }
    }
}

/// What a record is made of: a finished request's [`Atoms`], or their [`OwnedAtoms`]
/// copy for a record made where the receiver cannot take it at once.
pub trait AtomView {
    /// Each named atom with its place in [`named_atoms`], its name and its text.
    fn named(&self, f: &mut dyn FnMut(usize, &'static str, &str));
    /// The body bytes sent (`B`).
    fn bytes(&self) -> u64;
    /// The request's time.
    fn time(&self) -> Duration;
    fn request_headers(&self, f: &mut dyn FnMut(&str, &[u8]));
    fn response_headers(&self, f: &mut dyn FnMut(&str, &[u8]));
}

impl AtomView for Atoms<'_> {
    fn named(&self, f: &mut dyn FnMut(usize, &'static str, &str)) {
        self.each_named(f)
    }
    fn bytes(&self) -> u64 {
        self.body_bytes()
    }
    fn time(&self) -> Duration {
        self.elapsed()
    }
    fn request_headers(&self, f: &mut dyn FnMut(&str, &[u8])) {
        self.each_request_header(f)
    }
    fn response_headers(&self, f: &mut dyn FnMut(&str, &[u8])) {
        self.each_response_header(f)
    }
}

/// A copy of a finished request's atoms, owning its texts.
pub struct OwnedAtoms {
    named: Vec<String>,
    bytes: u64,
    time: Duration,
    request: Vec<(String, Vec<u8>)>,
    response: Vec<(String, Vec<u8>)>,
}

impl Atoms<'_> {
    /// Copies the atoms out of the request, for a record delivered later.
    pub fn to_owned(&self) -> OwnedAtoms {
        let mut named = Vec::with_capacity(NAMED.len());
        self.each_named(|_, _, text| named.push(text.to_string()));
        let mut request = Vec::new();
        self.each_request_header(|n, v| request.push((n.to_string(), v.to_vec())));
        let mut response = Vec::new();
        self.each_response_header(|n, v| response.push((n.to_string(), v.to_vec())));
        OwnedAtoms {
            named,
            bytes: self.body_bytes(),
            time: self.elapsed(),
            request,
            response,
        }
    }
}

impl AtomView for OwnedAtoms {
    fn named(&self, f: &mut dyn FnMut(usize, &'static str, &str)) {
        for (i, ((name, _), text)) in NAMED.iter().zip(&self.named).enumerate() {
            f(i, name, text);
        }
    }
    fn bytes(&self) -> u64 {
        self.bytes
    }
    fn time(&self) -> Duration {
        self.time
    }
    fn request_headers(&self, f: &mut dyn FnMut(&str, &[u8])) {
        for (n, v) in &self.request {
            f(n, v);
        }
    }
    fn response_headers(&self, f: &mut dyn FnMut(&str, &[u8])) {
        for (n, v) in &self.response {
            f(n, v);
        }
    }
}

/// The sink of an access log that sends records: never written to.
pub(super) struct Nowhere;

impl Destination for Nowhere {
    fn write_line(&self, _line: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
}
