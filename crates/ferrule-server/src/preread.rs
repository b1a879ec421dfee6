//! Request buffering (nginx's `proxy_request_buffering`): a request's body is read
//! before the request takes an app thread. While the body is incomplete its
//! connection waits in epoll like any other (`Stage::Body`, `--io-timeout` between
//! reads), so a client that sends slowly holds a buffer, not a thread.
//!
//! The decoder's state is kept between reads, so each arrival costs its own bytes: a
//! chunked body is not decoded from the start, and the head is parsed once more only
//! when the body is complete (`Stage::ReadAhead`), so that every request reaches the
//! app through the one path in `driver/http1.rs`. Whether a request is read ahead
//! is the driver's decision (`driver/read_ahead.rs`).
//! A body of up to `--request-buffer-size` stays raw in the connection's buffer, and
//! the exchange decodes it as if it had just arrived. A larger one is decoded into
//! an unlinked temporary file as it arrives, which the app then reads as `wsgi.input`.

use crate::config::ServerConfig;
use crate::error::Error;
use ferrule_http::{BodyDecoder, BodyKind, Head};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most room reserved for a body before its bytes arrive.
const PREALLOCATE: usize = 256 * 1024;

/// Bytes read from a spilled body at a time.
const SPILL_READ: usize = 64 * 1024;

/// A request whose head is parsed and whose body is being read. The head is not
/// kept: it stays at the front of the buffer and is parsed once more when the body
/// is complete, which keeps the usual path's head moving straight into its exchange.
pub(crate) struct PreRead {
    /// Bytes of the head at the front of the connection's buffer.
    head_len: usize,
    body: BodyKind,
    /// The request target's place in the buffer, for log lines.
    target: Range<usize>,
    decoder: BodyDecoder,
    /// Next byte of the connection's buffer the decoder has not judged.
    pos: usize,
    /// Set once the body outgrew the memory bound.
    spill: Option<Spill>,
}

impl PreRead {
    pub(crate) fn new(head: &Head, buf: &mut Vec<u8>, cfg: &ServerConfig) -> Box<PreRead> {
        let body = head.framing.body;
        // A declared length within the bound gets its room at once (no doubling copies),
        // up to a cap: a client that only claims a large body gets no large allocation.
        if let BodyKind::Length(n) = body {
            if n <= cfg.request_buffer_size as u64 {
                let want = (head.len + n as usize).saturating_sub(buf.len());
                let _ = buf.try_reserve(want.min(PREALLOCATE));
            }
        }
        Box::new(PreRead {
            head_len: head.len,
            body,
            target: head.target.raw.range(),
            decoder: BodyDecoder::new(body, &cfg.parser),
            pos: head.len,
            spill: None,
        })
    }

    /// The request target, for a log line.
    pub(crate) fn target<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.target.clone()).unwrap_or_default()
    }

    /// Judges the bytes of `buf` that arrived since the last call. Spilled bytes leave
    /// the buffer; what follows the body (a pipelined request) stays after the head.
    pub(crate) fn advance(&mut self, buf: &mut Vec<u8>, cfg: &ServerConfig) -> Result<bool, Error> {
        let done = loop {
            let step = self.decoder.decode(&buf[self.pos..])?;
            let data = self.pos + step.data.start..self.pos + step.data.end;
            self.pos += step.consumed;
            if let Some(spill) = &mut self.spill {
                spill.write(&buf[data])?;
            }
            if step.done {
                break true;
            }
            if step.consumed == 0 {
                break false;
            }
        };
        if self.spill.is_none() && !done && self.too_big(cfg) {
            self.start_spill(buf, cfg)?;
        }
        if self.spill.is_some() {
            buf.drain(self.head_len..self.pos);
            self.pos = self.head_len;
        }
        Ok(done)
    }

    /// The body will not fit the memory bound.
    fn too_big(&self, cfg: &ServerConfig) -> bool {
        let limit = cfg.request_buffer_size as u64;
        match self.body {
            BodyKind::Length(n) => n > limit,
            _ => (self.pos - self.head_len) as u64 > limit,
        }
    }

    /// Moves the body judged so far into a new temporary file, decoded.
    #[cold]
    fn start_spill(&mut self, buf: &[u8], cfg: &ServerConfig) -> Result<(), Error> {
        let mut spill = Spill::create(&cfg.temp_dir())?;
        let mut again = BodyDecoder::new(self.body, &cfg.parser);
        let mut at = self.head_len;
        while at < self.pos {
            let step = again.decode(&buf[at..self.pos])?;
            spill.write(&buf[at + step.data.start..at + step.data.end])?;
            at += step.consumed;
            if step.consumed == 0 {
                break;
            }
        }
        self.spill = Some(spill);
        Ok(())
    }

    /// The body's file once it is complete, rewound for reading; `None` in memory.
    pub(crate) fn take_spill(&mut self) -> Result<Option<SpillReader>, Error> {
        match self.spill.take() {
            None => Ok(None),
            Some(s) => s.into_reader().map(Some),
        }
    }
}

/// A body being written to an unlinked temporary file.
struct Spill {
    file: File,
    len: u64,
}

/// Tells the names of fallback temporary files apart within a process.
static SPILLS: AtomicU64 = AtomicU64::new(0);

impl Spill {
    /// An unlinked file in `dir`: `O_TMPFILE` where the file system has it, else a
    /// new name removed at once. Nothing is left behind when the process dies.
    fn create(dir: &Path) -> Result<Spill, Error> {
        let mut open = OpenOptions::new();
        open.read(true).write(true).mode(0o600);
        let file = match open.clone().custom_flags(nix::libc::O_TMPFILE).open(dir) {
            Ok(f) => f,
            Err(_) => {
                let n = SPILLS.fetch_add(1, Ordering::Relaxed);
                let path = dir.join(format!(".ferrule-body-{}-{n}", std::process::id()));
                let f = open
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| spill_error(dir, e))?;
                std::fs::remove_file(&path).map_err(|e| spill_error(dir, e))?;
                f
            }
        };
        Ok(Spill { file, len: 0 })
    }

    fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        self.file.write_all(data).map_err(|e| {
            Error::Io(io::Error::new(
                e.kind(),
                format!("writing a request body to its temporary file: {e}"),
            ))
        })?;
        self.len += data.len() as u64;
        Ok(())
    }

    fn into_reader(mut self) -> Result<SpillReader, Error> {
        self.file.rewind().map_err(Error::Io)?;
        Ok(SpillReader {
            file: self.file,
            left: self.len,
            buf: Vec::new(),
            avail: 0..0,
        })
    }
}

fn spill_error(dir: &Path, e: io::Error) -> Error {
    Error::Io(io::Error::new(
        e.kind(),
        format!(
            "cannot create a temporary file for a request body in {}: {e}",
            dir.display()
        ),
    ))
}

/// A complete spilled body, read back for `wsgi.input`.
pub(crate) struct SpillReader {
    file: File,
    /// Bytes of the file not read yet.
    left: u64,
    buf: Vec<u8>,
    avail: Range<usize>,
}

impl SpillReader {
    /// Body bytes, reading the file when none are left; empty at the end.
    pub(crate) fn fill(&mut self) -> Result<&[u8], Error> {
        if self.avail.is_empty() && self.left > 0 {
            let want = (self.left as usize).min(SPILL_READ);
            self.buf.resize(want, 0);
            let n = self.file.read(&mut self.buf[..want]).map_err(Error::Io)?;
            if n == 0 {
                return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            self.left -= n as u64;
            self.avail = 0..n;
        }
        Ok(&self.buf[self.avail.clone()])
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.avail.start = (self.avail.start + n).min(self.avail.end);
    }
}

#[cfg(test)]
mod tests {
    use super::PreRead;
    use crate::config::ServerConfig;
    use ferrule_http::parse_head;

    /// Feeds `wire` to a pre-read `step` bytes at a time, as reads would, and returns
    /// whether it completed, the buffer left, and the spilled body if any.
    fn feed(wire: &[u8], step: usize, cfg: &ServerConfig) -> (bool, Vec<u8>, Option<Vec<u8>>) {
        let head = parse_head(wire, &cfg.parser).unwrap().unwrap();
        let mut buf = wire[..head.len].to_vec();
        let mut pre = PreRead::new(&head, &mut buf, cfg);
        let mut done = pre.advance(&mut buf, cfg).unwrap();
        for piece in wire[head.len..].chunks(step) {
            if done {
                buf.extend_from_slice(piece);
                continue;
            }
            buf.extend_from_slice(piece);
            done = pre.advance(&mut buf, cfg).unwrap();
        }
        let spilled = pre.take_spill().unwrap().map(|mut r| {
            let mut body = Vec::new();
            loop {
                let got = r.fill().unwrap();
                if got.is_empty() {
                    break body;
                }
                let n = got.len();
                body.extend_from_slice(got);
                r.consume(n);
            }
        });
        (done, buf, spilled)
    }

    const CHUNKED: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
        5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n";

    #[test]
    fn a_chunked_body_completes_whatever_the_reads_and_leaves_what_follows() {
        let cfg = ServerConfig::default();
        for step in 1..CHUNKED.len() {
            let (done, buf, spilled) = feed(CHUNKED, step, &cfg);
            assert!(done, "step {step}");
            assert_eq!(
                buf, CHUNKED,
                "in memory the buffer is what arrived (step {step})"
            );
            assert!(spilled.is_none());
        }
    }

    #[test]
    fn a_body_over_the_bound_is_decoded_into_a_file_and_the_rest_stays() {
        let cfg = ServerConfig {
            request_buffer_size: 4,
            ..ServerConfig::default()
        };
        let head_len = CHUNKED.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        // Up to 30 bytes a read, the body is not complete in the first one.
        for step in 1..=30 {
            let (done, buf, spilled) = feed(CHUNKED, step, &cfg);
            assert!(done, "step {step}");
            assert_eq!(spilled.as_deref(), Some(&b"hello world"[..]), "step {step}");
            let mut want = CHUNKED[..head_len].to_vec();
            want.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(buf, want, "step {step}");
        }
        let wire = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789";
        let (done, buf, spilled) = feed(wire, 3, &cfg);
        assert!(done);
        assert_eq!(spilled.as_deref(), Some(&b"0123456789"[..]));
        assert_eq!(buf.len(), wire.len() - 10);
    }

    #[test]
    fn a_bad_chunk_or_a_body_over_the_limit_is_an_error_before_the_app() {
        let mut cfg = ServerConfig::default();
        let wire = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        let head = parse_head(wire, &cfg.parser).unwrap().unwrap();
        let mut buf = wire.to_vec();
        let mut pre = PreRead::new(&head, &mut buf, &cfg);
        assert_eq!(pre.advance(&mut buf, &cfg).unwrap_err().status(), Some(400));
        cfg.parser.limit_request_body = 3;
        let wire =
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
        let mut buf = wire.to_vec();
        let mut pre = PreRead::new(&head, &mut buf, &cfg);
        assert_eq!(pre.advance(&mut buf, &cfg).unwrap_err().status(), Some(413));
    }
}
