//! The access log with gunicorn's `--access-logformat` atoms and default format.
//!
//! `%({VAR}e)s` is the request's WSGI environ, as in gunicorn, never the process
//! environment (which holds the server's secrets). The environ is Python's: the bridge
//! looks the format's keys up after the app ran (so keys the app or a middleware
//! stored count) and hands the strings over with [`hand_environ_values`], only when
//! the format has such atoms.

use crate::finished::Finished;
use crate::sink::{Report, Sink};
use std::cell::RefCell;
use std::sync::Arc;

mod atoms;
mod json;
mod records;

use atoms::{parse, write_atom, Piece};
pub use records::{named_atoms, AccessRecords, AtomView, Atoms, OwnedAtoms};

thread_local! {
    /// The `{VAR}e` values of the request this thread handled last, in the order of
    /// [`AccessLog::environ_keys`] (None: not in the environ). A thread-local rather
    /// than a field of the exchange, so a format without such atoms costs a request
    /// nothing: the handler sets it right before it returns the exchange, and the
    /// record that follows on the same thread takes it.
    static ENVIRON_VALUES: RefCell<Vec<Option<String>>> = const { RefCell::new(Vec::new()) };
}

/// Hands the `{VAR}e` values of the request this thread is handling to its access-log
/// line (see [`AccessLog::environ_keys`]).
pub fn hand_environ_values(values: Vec<Option<String>>) {
    ENVIRON_VALUES.with(|v| *v.borrow_mut() = values);
}

/// gunicorn's default `--access-logformat`.
pub const DEFAULT_FORMAT: &str = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

/// A parsed `--access-logformat`: checked once, when the settings are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessFormat {
    pieces: Vec<Piece>,
    environ_keys: Vec<String>,
    /// `json`: the line's keys, one per piece (`access/json.rs`); empty for a text line.
    json: Vec<json::Field>,
}

impl AccessFormat {
    /// Unknown atoms are an error naming the atom.
    pub fn parse(format: &str) -> Result<AccessFormat, String> {
        if json::wanted(format) {
            let parsed = json::parse_json(format)?;
            return Ok(AccessFormat {
                pieces: parsed.pieces,
                environ_keys: parsed.environ_keys,
                json: parsed.fields,
            });
        }
        let (pieces, environ_keys) = parse(format)?;
        Ok(AccessFormat {
            pieces,
            environ_keys,
            json: Vec::new(),
        })
    }
}

pub struct AccessLog {
    pieces: Vec<Piece>,
    environ_keys: Vec<String>,
    json: Vec<json::Field>,
    sink: Arc<Sink>,
    /// Set when a Python logging configuration takes the records instead of the sink.
    records: Option<Arc<dyn AccessRecords>>,
}

impl AccessLog {
    /// `sink` should report its losses in the error log ([`crate::sink::Report::ErrorLog`]).
    pub fn new(format: AccessFormat, sink: Arc<Sink>) -> AccessLog {
        if format.pieces.contains(&Piece::RequestId) {
            crate::egress::want_ids();
        }
        AccessLog {
            pieces: format.pieces,
            environ_keys: format.environ_keys,
            json: format.json,
            sink,
            records: None,
        }
    }

    /// An access log whose requests go to `records` (Python's `gunicorn.access`) with
    /// every atom instead of as lines: it has no format and no sink of its own, and keeps
    /// the response head and the queue and first-byte times of every request.
    pub fn to_records(records: Arc<dyn AccessRecords>) -> AccessLog {
        crate::egress::want_ids();
        AccessLog {
            pieces: Vec::new(),
            environ_keys: Vec::new(),
            json: Vec::new(),
            sink: Arc::new(Sink::new(
                "access log",
                Box::new(records::Nowhere),
                Report::ErrorLog,
            )),
            records: Some(records),
        }
    }

    /// The environ keys of the format's `%({VAR}e)s` atoms, each once, in the order
    /// [`hand_environ_values`] takes their values; empty for most formats (gunicorn's
    /// default has none).
    pub fn environ_keys(&self) -> &[String] {
        &self.environ_keys
    }

    /// Whether a `%({name}o)s` atom needs the response's fields.
    pub fn wants_response_headers(&self) -> bool {
        self.records.is_some()
            || self
                .pieces
                .iter()
                .any(|p| matches!(p, Piece::RespHeader(_)))
    }

    /// Whether the format shows queue or first-byte times (requests are then timed).
    pub fn wants_timing(&self) -> bool {
        self.records.is_some()
            || self
                .pieces
                .iter()
                .any(|p| matches!(p, Piece::QueueMicros | Piece::FirstByteMicros))
    }

    /// Reports the lines lost so far in the error log now (the server is stopping).
    pub(crate) fn report_losses(&self) {
        self.sink.report_now();
    }

    /// Writes the line of a finished request (`Exchange::finished`).
    pub(crate) fn record(&self, ex: &Finished<'_>) {
        if let Some(records) = &self.records {
            records.record(&Atoms::new(ex));
            return;
        }
        // A refused request has no environ: what a thread holds is an earlier request's.
        let environ = match self.environ_keys.is_empty() || ex.refused {
            true => Vec::new(),
            false => ENVIRON_VALUES.with(|v| std::mem::take(&mut *v.borrow_mut())),
        };
        // A line that cannot be written is counted by the sink, never the request's problem.
        self.sink.write_line(self.format(ex, &environ).as_bytes());
    }

    fn format(&self, ex: &Finished<'_>, environ: &[Option<String>]) -> String {
        let elapsed = ex.started.elapsed();
        // A JSON line is about 450 bytes: one allocation, not four growths.
        let mut s = String::with_capacity(if self.json.is_empty() { 128 } else { 512 });
        if !self.json.is_empty() {
            json::write_line(&self.json, &self.pieces, ex, environ, elapsed, &mut s);
            return s;
        }
        for p in &self.pieces {
            let start = s.len();
            write_atom(p, ex, environ, elapsed, &mut s);
            // gunicorn's SafeAtoms: a `"` in a value is `\"`, so a client cannot end a
            // quoted field (`"%(a)s"`) and forge the ones after it.
            if !matches!(p, Piece::Text(_)) && s.as_bytes()[start..].contains(&b'"') {
                let value = s[start..].replace('"', "\\\"");
                s.truncate(start);
                s.push_str(&value);
            }
        }
        s.push('\n');
        s
    }
}
