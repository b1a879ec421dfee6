//! The environ of a request whose variables a front server sent ready-made (a uwsgi
//! packet, issue 23: nginx's `uwsgi_params`, Apache's `mod_proxy_uwsgi`), as a pure
//! function over the name/value pairs: no Python object in or out, tested as tables
//! below. `ready.rs` makes the Python strings.
//!
//! The front server did the HTTP/1 work: PATH_INFO is already decoded (decoding it
//! again would turn a `%25` the client sent into another byte), SERVER_NAME/PORT,
//! REMOTE_ADDR/PORT and the `HTTP_*` keys are its own. The PEP 3333 rules that still
//! apply: every value is a latin-1 string of its bytes; SCRIPT_NAME, when sent, is
//! taken off PATH_INFO (`uwsgi_param SCRIPT_NAME /app` mounts the app there); HTTPS
//! `on` makes the scheme https; an empty CONTENT_TYPE or CONTENT_LENGTH (nginx sends
//! them empty for a request without a body) is left out, as for an HTTP/1 request;
//! what the front server did not send comes from where an HTTP/1 request takes it
//! (`rules.rs`); variables with no rule here pass through.

use super::rules;
use ferrule_server::{Local, Peer};
use std::borrow::Cow;

/// The environ's values from ready-made variables: each the bytes whose latin-1
/// string the environ holds.
#[derive(Debug, PartialEq, Eq)]
pub struct ReadyEnviron<'a> {
    pub method: &'a [u8],
    /// The one sent, else `--script-name`'s.
    pub script_name: &'a [u8],
    /// PATH_INFO as sent, without SCRIPT_NAME (empty when not sent).
    pub path: &'a [u8],
    pub query: &'a [u8],
    pub protocol: &'a [u8],
    /// HTTPS was `on` (or `1`, as uWSGI reads it).
    pub https: bool,
    /// SERVER_NAME (unless empty) and SERVER_PORT as sent; see [`ReadyEnviron::server`].
    pub server_name: Option<&'a [u8]>,
    pub server_port: Option<&'a [u8]>,
    /// The client's address and port as the front server saw them; see
    /// [`ReadyEnviron::remote`].
    pub remote_addr: Option<&'a [u8]>,
    pub remote_port: Option<&'a [u8]>,
    /// HTTP_HOST.
    pub host: Option<&'a [u8]>,
    /// Every other variable, in the order sent: CONTENT_TYPE, CONTENT_LENGTH, the other
    /// `HTTP_*` keys, and the ones without a rule (REQUEST_URI, DOCUMENT_ROOT, HTTPS,
    /// REQUEST_SCHEME, ...). A name sent twice is here twice; the dict keeps the last.
    pub other: Vec<(&'a [u8], &'a [u8])>,
}

/// A variable PEP 3333 requires and gives no default for, which the front server did
/// not send: the request cannot reach the app.
#[derive(Debug, PartialEq, Eq)]
pub struct Missing(pub &'static str);

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the front server sent no {}", self.0)
    }
}

/// The environ's values from `vars`; `script_name` is `--script-name`. A variable sent
/// twice counts as its last value, as in the dict.
pub fn ready_environ<'a, 'v: 'a>(
    vars: impl IntoIterator<Item = (&'v [u8], &'v [u8])>,
    script_name: &'a [u8],
) -> Result<ReadyEnviron<'a>, Missing> {
    let (mut method, mut protocol, mut script, mut path) = (None, None, None, None);
    let vars = vars.into_iter();
    // Room for every variable at once: nginx sends a dozen besides the request's fields.
    let other = Vec::with_capacity(vars.size_hint().0);
    let mut env = ReadyEnviron {
        method: b"",
        script_name,
        path: b"",
        query: b"",
        protocol: b"",
        https: false,
        server_name: None,
        server_port: None,
        remote_addr: None,
        remote_port: None,
        host: None,
        other,
    };
    // Whether the last CONTENT_TYPE / CONTENT_LENGTH sent was empty: one pass at the end
    // drops the earlier ones, so a packet of many empty ones costs linear time.
    let (mut empty_type, mut empty_length) = (false, false);
    let mut scheme = None;
    for (name, value) in vars {
        match name {
            b"REQUEST_METHOD" => method = Some(value),
            b"SERVER_PROTOCOL" => protocol = Some(value),
            b"SCRIPT_NAME" => script = Some(value),
            b"PATH_INFO" => path = Some(value),
            b"QUERY_STRING" => env.query = value,
            b"SERVER_NAME" => env.server_name = Some(value).filter(|v| !v.is_empty()),
            b"SERVER_PORT" => env.server_port = Some(value),
            b"REMOTE_ADDR" => env.remote_addr = Some(value),
            b"REMOTE_PORT" => env.remote_port = Some(value),
            b"HTTP_HOST" => env.host = Some(value),
            // The request's Content-Type/-Length fields as nginx forwards every field:
            // CONTENT_TYPE/CONTENT_LENGTH carry them, and an HTTP/1 environ has no
            // HTTP_ twin (PEP 3333, CGI).
            b"HTTP_CONTENT_TYPE" | b"HTTP_CONTENT_LENGTH" => {}
            // An empty one is left out, as for HTTP/1; the last value of a name counts.
            b"CONTENT_TYPE" | b"CONTENT_LENGTH" => {
                let empty = value.is_empty();
                match name == b"CONTENT_TYPE" {
                    true => empty_type = empty,
                    false => empty_length = empty,
                }
                if !empty {
                    env.other.push((name, value));
                }
            }
            _ => {
                match name {
                    // What uWSGI and gunicorn's uwsgi mode read: `on`, `1` or `true`.
                    b"HTTPS" => {
                        env.https = value.eq_ignore_ascii_case(b"on")
                            || value == b"1"
                            || value.eq_ignore_ascii_case(b"true")
                    }
                    // uWSGI's own (`uwsgi_param UWSGI_SCHEME $scheme;`), which wins there.
                    b"UWSGI_SCHEME" => scheme = Some(value.eq_ignore_ascii_case(b"https")),
                    _ => {}
                }
                env.other.push((name, value));
            }
        }
    }
    if empty_type || empty_length {
        env.other.retain(|(n, _)| {
            !((empty_type && *n == b"CONTENT_TYPE") || (empty_length && *n == b"CONTENT_LENGTH"))
        });
    }
    if let Some(https) = scheme {
        env.https = https;
    }
    env.method = method.ok_or(Missing("REQUEST_METHOD"))?;
    env.protocol = protocol.ok_or(Missing("SERVER_PROTOCOL"))?;
    // `uwsgi_param SCRIPT_NAME /app/;` mounts at `/app`: a SCRIPT_NAME that ends in `/`
    // would make `SCRIPT_NAME + PATH_INFO` repeat it.
    let script = script.unwrap_or(script_name);
    env.script_name = script.strip_suffix(b"/").unwrap_or(script);
    // A mount is a path segment here (unlike `--script-name` over HTTP, which strips
    // a byte prefix as gunicorn does): `/app` does not take `/app` off `/application`.
    env.path = rules::strip_mount(path.unwrap_or_default(), env.script_name);
    Ok(env)
}

impl<'a> ReadyEnviron<'a> {
    /// SERVER_NAME and SERVER_PORT: as sent; what was not sent is what an HTTP/1
    /// request with this HTTP_HOST would have on this listener. `https` is the scheme
    /// (HTTPS, or the listener's).
    pub fn server(&self, local: &Local, https: bool) -> (Cow<'a, [u8]>, Cow<'a, [u8]>) {
        if let (Some(name), Some(port)) = (self.server_name, self.server_port) {
            return (Cow::Borrowed(name), Cow::Borrowed(port));
        }
        let (name, port): (Cow<'a, [u8]>, Cow<'a, [u8]>) = match rules::named_host(self.host) {
            Some(host) => {
                let (name, port) = rules::split_host(host);
                let port = port.unwrap_or(rules::default_port(https).as_bytes());
                (Cow::Borrowed(name), Cow::Borrowed(port))
            }
            None => {
                let (name, port) = rules::listener_server(local, https);
                let port = match port {
                    Cow::Borrowed(p) => Cow::Borrowed(p.as_bytes()),
                    Cow::Owned(p) => Cow::Owned(p.into_bytes()),
                };
                (Cow::Owned(name.into_bytes()), port)
            }
        };
        (
            self.server_name.map_or(name, Cow::Borrowed),
            self.server_port.map_or(port, Cow::Borrowed),
        )
    }

    /// REMOTE_ADDR and REMOTE_PORT: as sent (the client's, not the front server's end
    /// of the socket); what was not sent is the socket peer's (empty on a unix socket).
    pub fn remote(&self, peer: Peer) -> (Cow<'a, [u8]>, Cow<'a, [u8]>) {
        let socket = rules::remote(peer);
        let addr = match (self.remote_addr, socket) {
            (Some(a), _) => Cow::Borrowed(a),
            (None, Some((ip, _))) => Cow::Owned(ip.to_string().into_bytes()),
            (None, None) => Cow::Borrowed(&b""[..]),
        };
        let port = match (self.remote_port, socket) {
            (Some(p), _) => Cow::Borrowed(p),
            (None, Some((_, port))) => Cow::Owned(itoa::Buffer::new().format(port).into()),
            (None, None) => Cow::Borrowed(&b""[..]),
        };
        (addr, port)
    }
}

#[cfg(test)]
mod tests;
