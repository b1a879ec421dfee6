//! A uwsgi packet as the [`Head`] the server's exchange takes, and the answer's head
//! as nginx's uwsgi module reads it.
//!
//! A `Head` rather than a smaller framing type of its own: the exchange, the body
//! reader (`BodyDecoder` from `head.len`), request buffering and the access log all
//! take one, so a uwsgi request goes through the very path an HTTP/1 request takes,
//! and nothing is copied: every span points into the connection's buffer. Its fields
//! (`Head::headers`) are all the packet's variables, name and value, in wire order:
//! the bridge builds the environ from them (`Exchange::ready_vars`), and a log's
//! `%({user-agent}i)s` finds `HTTP_USER_AGENT` ([`is_var_of_field`]).
//!
//! What the head says, from the variables nginx's `uwsgi_params` send: the method is
//! REQUEST_METHOD, the target REQUEST_URI as the client sent it (split at `?` into
//! path and query, as an HTTP/1 target is), or PATH_INFO and QUERY_STRING when the
//! front server sent no REQUEST_URI; the version SERVER_PROTOCOL (`HTTP/1.0`, else
//! HTTP/1.1: an HTTP/2 client's request is answered to nginx as HTTP/1.1); the body
//! CONTENT_LENGTH bytes; the host HTTP_HOST. A connection carries one request (nginx
//! and Apache never reuse a uwsgi connection): the head never says keep-alive, and
//! never `100-continue`, which the front server handled.

use super::{UwsgiError, UwsgiPacket};
use crate::chars::is_token;
use crate::config::ParserConfig;
use crate::error::ParseError;
use crate::framing::Framing;
use crate::head::Head;
use crate::response::{reason_phrase, write_field, ResponseFraming};
use crate::span::{Header, Span};
use crate::target::{parse_version, Target, TargetForm, Version};
use std::net::{IpAddr, SocketAddr};

/// What a packet makes for the server: the request's head, and whom the request came
/// from as the front server says (REMOTE_ADDR and REMOTE_PORT: the client's address,
/// not the front server's end of the socket).
#[derive(Debug)]
pub struct UwsgiHead {
    pub head: Head,
    /// REMOTE_ADDR as an IP address (v4, or v6 bare as nginx sends it), with
    /// REMOTE_PORT (0 when absent or not a port); `None` when REMOTE_ADDR is absent or
    /// not an address (a unix-socket client: `unix:`).
    pub client: Option<SocketAddr>,
}

/// The head of the request `packet` (parsed from `buf`), its fields in `headers`
/// (cleared first: a server passes the vector of its connection). One walk over the
/// variables. The limits HTTP/1 heads have apply: REQUEST_METHOD, REQUEST_URI and
/// SERVER_PROTOCOL as a request line against `limit_request_line`, each `HTTP_*`
/// variable as a field (`Name: value` and CRLF) against `limit_request_fields` and
/// `limit_request_field_size`, CONTENT_LENGTH against `limit_request_body`.
pub fn uwsgi_head(
    buf: &[u8],
    packet: &UwsgiPacket,
    cfg: &ParserConfig,
    mut headers: Vec<Header>,
) -> Result<UwsgiHead, UwsgiError> {
    headers.clear();
    headers.reserve(packet.vars.len());
    let get = |s: Span| buf.get(s.range()).unwrap_or_default();
    let (mut method, mut uri, mut path_info, mut query, mut protocol) =
        (None, None, None, None, None);
    let (mut remote_addr, mut remote_port) = (None, None);
    let mut framing = Framing {
        body: packet.body(),
        ..Framing::default()
    };
    let (field_size, mut fields) = (cfg.field_size_limit(), 0usize);
    for &(name, value) in &packet.vars {
        headers.push(Header { name, value });
        let key = get(name);
        if key.starts_with(b"HTTP_") {
            fields += 1;
            if has_control(get(value)) {
                return Err(UwsgiError::Limit(ParseError::InvalidHeader));
            }
            // As the field line it was: `Name: value` and CRLF.
            if key.len() - 5 + 2 + value.range().len() + 2 > field_size {
                return Err(UwsgiError::Limit(ParseError::LimitRequestHeaders));
            }
        }
        // The length first: one compare for most variables.
        let slot = match key.len() {
            9 if key == b"PATH_INFO" => &mut path_info,
            9 if key == b"HTTP_HOST" => &mut framing.host,
            11 if key == b"REMOTE_ADDR" => &mut remote_addr,
            11 if key == b"REMOTE_PORT" => &mut remote_port,
            11 if key == b"REQUEST_URI" => &mut uri,
            12 if key == b"QUERY_STRING" => &mut query,
            12 if key == b"CONTENT_TYPE" => &mut framing.content_type,
            14 if key == b"CONTENT_LENGTH" => &mut framing.content_length,
            14 if key == b"REQUEST_METHOD" => &mut method,
            15 if key == b"SERVER_PROTOCOL" => &mut protocol,
            _ => continue,
        };
        // nginx sends CONTENT_TYPE and CONTENT_LENGTH empty for a request without
        // them: as absent. The last of a name sent twice counts, as in the environ.
        *slot = Some(value).filter(|v| !v.is_empty() || !key.starts_with(b"CONTENT_"));
    }
    if fields > cfg.fields_limit() {
        return Err(UwsgiError::Limit(ParseError::LimitRequestHeaders));
    }
    let method = method
        .filter(|m| !m.is_empty())
        .ok_or(UwsgiError::MissingVar("REQUEST_METHOD"))?;
    let protocol = protocol.ok_or(UwsgiError::MissingVar("SERVER_PROTOCOL"))?;
    if !is_token(get(method)) {
        return Err(UwsgiError::Limit(ParseError::InvalidRequestMethod));
    }
    if uri.is_some_and(|u| has_control(get(u))) {
        return Err(UwsgiError::Limit(ParseError::InvalidRequestLine));
    }
    let target = target(buf, uri, path_info, query);
    let line = method.range().len() + 1 + target.raw.range().len() + 1 + protocol.range().len();
    if line > cfg.request_line_limit() {
        return Err(UwsgiError::Limit(ParseError::LimitRequestLine));
    }
    if cfg.limit_request_body > 0 && packet.content_length > cfg.limit_request_body {
        return Err(UwsgiError::Limit(ParseError::BodyTooLarge));
    }
    let head = Head {
        len: packet.consumed,
        method,
        target,
        version: match parse_version(get(protocol)) {
            Ok(v) => v,
            Err(_) => Version::Http11,
        },
        headers,
        framing,
        owned: Vec::new(),
    };
    let client = client(remote_addr.map(get), remote_port.map(get));
    Ok(UwsgiHead { head, client })
}

/// Whom a packet [`uwsgi_head`] refused says the request came from: a refusal's log
/// line names the front server's client, not the front server.
pub fn uwsgi_client(buf: &[u8], packet: &UwsgiPacket) -> Option<SocketAddr> {
    let (mut addr, mut port) = (None, None);
    for (key, value) in packet.pairs(buf) {
        match key {
            b"REMOTE_ADDR" => addr = Some(value),
            b"REMOTE_PORT" => port = Some(value),
            _ => {}
        }
    }
    client(addr, port)
}

/// Whether a value holds a byte an HTTP/1 field value may not (a control character
/// other than HTAB, or DEL): nginx passes some on that the HTTP parser refuses. No early
/// exit, so the loop vectorises: a dozen values of a few dozen bytes each, every request.
fn has_control(value: &[u8]) -> bool {
    value.iter().fold(false, |bad, &b| {
        bad | ((b < 0x20) & (b != b'\t')) | (b == 0x7f)
    })
}

/// REMOTE_ADDR and REMOTE_PORT as a socket address (see [`UwsgiHead::client`]).
fn client(addr: Option<&[u8]>, port: Option<&[u8]>) -> Option<SocketAddr> {
    let ip: IpAddr = std::str::from_utf8(addr?).ok()?.parse().ok()?;
    let port = port
        .and_then(|p| std::str::from_utf8(p).ok()?.parse::<u16>().ok())
        .unwrap_or(0);
    Some(SocketAddr::new(ip, port))
}

/// REQUEST_URI split at its `?` (nginx's `$request_uri` has no fragment); without it,
/// PATH_INFO and QUERY_STRING (the target then shows the decoded path).
fn target(buf: &[u8], uri: Option<Span>, path_info: Option<Span>, query: Option<Span>) -> Target {
    let empty = Span::at(0, 0);
    let (raw, path, query) = match uri {
        Some(raw) => {
            let r = raw.range();
            let bytes = buf.get(r.clone()).unwrap_or_default();
            match bytes.iter().position(|&b| b == b'?') {
                Some(q) => (
                    raw,
                    Span::at(r.start, q),
                    Span::at(r.start + q + 1, r.len() - q - 1),
                ),
                None => (raw, raw, Span::at(r.end, 0)),
            }
        }
        None => {
            let path = path_info.unwrap_or(empty);
            (path, path, query.unwrap_or(empty))
        }
    };
    Target {
        form: TargetForm::Origin,
        raw,
        path,
        query,
        fragment: Span::at(raw.range().end, 0),
    }
}

/// Whether variable `var` carries request field `field`: `HTTP_` and the field's
/// name in upper case with `-` as `_` (`HTTP_USER_AGENT` for `user-agent`).
pub fn is_var_of_field(var: &[u8], field: &[u8]) -> bool {
    let Some(rest) = var.strip_prefix(b"HTTP_") else {
        return false;
    };
    rest.len() == field.len()
        && rest.iter().zip(field).all(|(&v, &f)| {
            let f = if f == b'-' {
                b'_'
            } else {
                f.to_ascii_uppercase()
            };
            v == f
        })
}

/// How an answer to a uwsgi request is delimited. nginx copies a uwsgi body as it
/// comes (it does not decode chunks): a length when the app declared one or the
/// server holds the whole body, else the end of the connection; none for 1xx, 204,
/// 304 and HEAD.
pub fn uwsgi_response_framing(
    head_request: bool,
    status: u16,
    declared: Option<u64>,
    known_len: Option<u64>,
) -> ResponseFraming {
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return ResponseFraming::NoBody;
    }
    match declared.or(known_len) {
        Some(n) => ResponseFraming::Length(n),
        None if head_request => ResponseFraming::NoBody,
        None => ResponseFraming::Close,
    }
}

/// Ends a uwsgi answer's head: `Content-Length` when the server knows a length the
/// app did not declare, then the blank line. No `Connection` field (the connection
/// always closes, and Apache would pass the field on to its client) and no
/// `Transfer-Encoding`.
pub fn finish_uwsgi_head(out: &mut Vec<u8>, framing: ResponseFraming, declared: bool) {
    if let ResponseFraming::Length(n) = framing {
        if !declared {
            write_field(
                out,
                b"Content-Length",
                itoa::Buffer::new().format(n).as_bytes(),
            );
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// An answer the server makes itself (408, 413, 500...) to a uwsgi request: as
/// [`error_response`](crate::error_response) without `Date`, `Server` and `Connection`,
/// which the front server adds or does not want (see [`finish_uwsgi_head`]).
pub fn uwsgi_error_response(status: u16) -> Vec<u8> {
    let reason = reason_phrase(status);
    let body = format!("{status} {reason}\n");
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
