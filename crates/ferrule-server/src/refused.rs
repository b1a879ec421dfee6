//! Requests the server answers itself before the app: a head or body it cannot take
//! (400, 413, 414, 431, 501, 505), a client too slow to send one (408), plain HTTP on a
//! TLS port (400). Each is answered, counted in `ferrule_rejected_requests_total` and
//! written to the access log here, in one place, so a refusal is counted and logged
//! once. Why it was refused is the caller's error-log line (throttled, `log.rs`).
//!
//! The access line shows what had arrived, as nginx's does: the whole head when it
//! parses (a bad body, a forwarding header from an untrusted peer), else the request
//! line when it arrived whole, else `-`. A connection closed without a byte of a
//! request is no request and is not logged.

use crate::access::AccessLog;
use crate::clock::Tick;
use crate::config::ServerConfig;
use crate::conn::{error_answer, Conn};
use crate::finished::{Finished, Outcome};
use crate::protocol::Protocol;
use ferrule_http::{parse_head, parse_uwsgi, uwsgi_head, Head, ParserConfig, Version};
use memchr::{memchr, memmem};
use std::time::Instant;

impl Conn {
    /// Answers `status` with the server's own short answer, best effort: the socket is
    /// non-blocking and the answer is small (the connection closes or lingers right
    /// after). Then counts and logs it.
    pub(crate) fn refuse(
        &mut self,
        status: u16,
        config: &ServerConfig,
        access: Option<&AccessLog>,
    ) {
        let answer = error_answer(status, Version::Http11, config.protocol);
        self.refuse_with(status, &answer, config, access);
    }

    /// As [`Conn::refuse`], with an answer of the caller's (nginx's words for plain
    /// HTTP on a TLS port).
    pub(crate) fn refuse_with(
        &mut self,
        status: u16,
        answer: &[u8],
        config: &ServerConfig,
        access: Option<&AccessLog>,
    ) {
        crate::metrics::rejected(status);
        let sent = self.transport.send(answer).unwrap_or(0);
        if let Some(log) = access {
            let outcome = Outcome {
                status,
                body_bytes: body_sent(answer, sent),
                length_mismatch: false,
            };
            self.log_refusal(outcome, config, log);
        }
    }

    #[cold]
    fn log_refusal(&self, outcome: Outcome, config: &ServerConfig, log: &AccessLog) {
        let buf = &self.buf[leading_blank(&self.buf)..];
        let (head, line) = match reparse(buf, config.protocol, &config.parser) {
            Some(head) => (head, None),
            None => (Head::empty(), sent_line(buf, config.protocol)),
        };
        let (method, target, sent_version) = match line {
            Some(l) => (l.method, l.target, Some(l.version)),
            None => (
                head.get(buf, head.method),
                head.get(buf, head.target.raw),
                None,
            ),
        };
        let (path, query) = match line {
            Some(_) => split_target(target),
            None => (
                head.get(buf, head.target.path),
                head.get(buf, head.target.query),
            ),
        };
        // A head still incomplete counts from its first byte (a 408 waited that long).
        let waited = self
            .head_since
            .map(|t| Tick::now().since(t))
            .unwrap_or_default();
        let started = Instant::now()
            .checked_sub(waited)
            .unwrap_or_else(Instant::now);
        log.record(&Finished {
            method,
            target,
            path,
            query,
            version: head.version,
            protocol: config.protocol,
            client: self.client,
            outcome,
            started,
            head: &head,
            buf,
            response_head: None,
            timing: None,
            refused: true,
            sent_version,
        });
    }
}

/// Bytes of the answer's body among the `sent` first bytes of `answer`.
fn body_sent(answer: &[u8], sent: usize) -> u64 {
    let head_len = memmem::find(answer, b"\r\n\r\n").map_or(answer.len(), |i| i + 4);
    sent.saturating_sub(head_len) as u64
}

/// Empty lines before a request line (RFC 9112 §2.2 lets a server skip them).
fn leading_blank(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

/// The request's head, when what arrived parses (the refusal was for its body or
/// for what a field said, not for the head's form). A Content-Length over
/// `--limit-request-body` is refused by the parser: here it is let through, so a 413's
/// line shows its fields.
fn reparse(buf: &[u8], protocol: Protocol, parser: &ParserConfig) -> Option<Head> {
    let parser = &ParserConfig {
        limit_request_body: 0,
        ..parser.clone()
    };
    match protocol {
        Protocol::Http1 => parse_head(buf, parser).ok().flatten(),
        Protocol::Uwsgi => {
            let packet = parse_uwsgi(buf).ok().flatten()?;
            uwsgi_head(buf, &packet, parser, Vec::new())
                .ok()
                .map(|h| h.head)
        }
    }
}

/// A request line as sent, when its head does not parse.
#[derive(Clone, Copy)]
struct SentLine<'a> {
    method: &'a [u8],
    target: &'a [u8],
    version: &'a [u8],
}

/// The request line of a head that does not parse: HTTP/1's first line when it arrived
/// whole and has its three parts (a `505`'s `HTTP/2.0`, a `431`'s fields too large), or
/// a uwsgi packet's REQUEST_METHOD, REQUEST_URI and SERVER_PROTOCOL.
fn sent_line(buf: &[u8], protocol: Protocol) -> Option<SentLine<'_>> {
    match protocol {
        Protocol::Http1 => {
            let end = memchr(b'\n', buf)?;
            let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
            let mut parts = line.splitn(3, |&b| b == b' ');
            let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
            let line = SentLine {
                method,
                target,
                version,
            };
            (!method.is_empty() && !target.is_empty() && version.starts_with(b"HTTP/"))
                .then_some(line)
        }
        Protocol::Uwsgi => {
            let packet = parse_uwsgi(buf).ok().flatten()?;
            let var = |name: &[u8]| {
                packet
                    .vars
                    .iter()
                    .rev()
                    .find(|(k, _)| buf.get(k.range()) == Some(name))
                    .and_then(|(_, v)| buf.get(v.range()))
            };
            let method = var(b"REQUEST_METHOD").filter(|m| !m.is_empty())?;
            Some(SentLine {
                method,
                target: var(b"REQUEST_URI").unwrap_or(b"-"),
                version: var(b"SERVER_PROTOCOL").unwrap_or(b"-"),
            })
        }
    }
}

fn split_target(target: &[u8]) -> (&[u8], &[u8]) {
    match memchr(b'?', target) {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrule_http::{uwsgi_packet, uwsgi_vars};

    #[test]
    fn a_line_that_arrived_whole_is_shown_even_when_the_head_is_refused() {
        let l = sent_line(b"GET /a?b=1 HTTP/2.0\r\nHost: x\r\n", Protocol::Http1).unwrap();
        assert_eq!(
            (l.method, l.target, l.version),
            (&b"GET"[..], &b"/a?b=1"[..], &b"HTTP/2.0"[..])
        );
        assert_eq!(split_target(l.target), (&b"/a"[..], &b"b=1"[..]));
        // Incomplete, or not a request line at all: `-`.
        assert!(sent_line(b"GET /very-long", Protocol::Http1).is_none());
        assert!(sent_line(b"\x16\x03\x01\x00\n", Protocol::Http1).is_none());
        assert!(sent_line(b"GET /\r\n", Protocol::Http1).is_none());
    }

    #[test]
    fn a_uwsgi_packet_names_its_request() {
        let vars: [(&[u8], &[u8]); 3] = [
            (b"REQUEST_METHOD", b"POST"),
            (b"REQUEST_URI", b"/up?x"),
            (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        ];
        let packet = uwsgi_packet(&uwsgi_vars(vars).unwrap()).unwrap();
        let l = sent_line(&packet, Protocol::Uwsgi).unwrap();
        assert_eq!((l.method, l.target), (&b"POST"[..], &b"/up?x"[..]));
        assert!(sent_line(&packet[..3], Protocol::Uwsgi).is_none());
    }

    #[test]
    fn only_body_bytes_that_went_out_count() {
        let answer = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 4\r\n\r\nbad\n";
        assert_eq!(body_sent(answer, answer.len()), 4);
        assert_eq!(body_sent(answer, 10), 0);
        assert_eq!(leading_blank(b"\r\n\r\nGET"), 4);
    }
}
