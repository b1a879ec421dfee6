//! Table tests of the head a uwsgi packet makes, and of the answer's framing.

use super::*;
use crate::uwsgi::parse_uwsgi;
use crate::BodyKind;

type Vars<'a> = &'a [(&'a [u8], &'a [u8])];

fn packet(vars: Vars) -> Vec<u8> {
    crate::uwsgi_packet(&crate::uwsgi_vars(vars.iter().copied()).unwrap()).unwrap()
}

fn head_of(vars: Vars, cfg: &ParserConfig) -> (Vec<u8>, Result<Head, UwsgiError>) {
    let buf = packet(vars);
    let p = parse_uwsgi(&buf).unwrap().unwrap();
    let head = uwsgi_head(&buf, &p, cfg, Vec::new()).map(|h| h.head);
    (buf, head)
}

/// What a test compares: method, target, path, query, version, body, host,
/// content type, content length.
type Seen = (
    String,
    String,
    String,
    String,
    Version,
    BodyKind,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn seen(vars: Vars) -> Result<Seen, UwsgiError> {
    let (buf, head) = head_of(vars, &ParserConfig::default());
    let head = head?;
    let s = |sp: Span| String::from_utf8_lossy(&buf[sp.range()]).into_owned();
    let f = head.framing;
    assert!(!f.keep_alive && !f.expect_continue);
    Ok((
        s(head.method),
        s(head.target.raw),
        s(head.target.path),
        s(head.target.query),
        head.version,
        f.body,
        f.host.map(s),
        f.content_type.map(s),
        f.content_length.map(s),
    ))
}

const BASE: Vars = &[
    (b"REQUEST_METHOD", b"GET"),
    (b"SERVER_PROTOCOL", b"HTTP/1.1"),
];

fn with(extra: Vars<'_>) -> Vec<(&[u8], &[u8])> {
    BASE.iter().chain(extra).copied().collect()
}

#[test]
fn an_nginx_packet_makes_a_head_whose_fields_are_its_variables() {
    let vars: Vars = &[
        (b"QUERY_STRING", b"q=1"),
        (b"REQUEST_METHOD", b"GET"),
        (b"CONTENT_TYPE", b""),
        (b"CONTENT_LENGTH", b""),
        (b"REQUEST_URI", b"/caf%C3%A9/%FF?q=1"),
        (b"PATH_INFO", b"/caf\xc3\xa9/\xff"),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"REMOTE_ADDR", b"203.0.113.9"),
        (b"HTTP_HOST", b"example.com"),
        (b"HTTP_USER_AGENT", b"curl/8.5.0"),
    ];
    let (buf, head) = head_of(vars, &ParserConfig::default());
    let head = head.unwrap();
    assert_eq!(head.len, buf.len(), "the body starts after the packet");
    let fields: Vec<_> = head
        .headers
        .iter()
        .map(|h| (&buf[h.name.range()], &buf[h.value.range()]))
        .collect();
    assert_eq!(fields, vars, "every variable, in wire order");
    assert_eq!(
        seen(vars).unwrap(),
        (
            "GET".into(),
            "/caf%C3%A9/%FF?q=1".into(),
            "/caf%C3%A9/%FF".into(),
            "q=1".into(),
            Version::Http11,
            BodyKind::Empty,
            Some("example.com".into()),
            None,
            None
        )
    );
}

#[test]
fn what_each_variable_makes_of_the_head() {
    let s = |v: &str| v.to_string();
    // (variables besides REQUEST_METHOD GET and SERVER_PROTOCOL HTTP/1.1, then what
    // differs from a GET of / with nothing else: target, path, query, version, body,
    // content type, content length)
    type Want = (&'static str, &'static str, &'static str, Version, BodyKind);
    let table: &[(Vars, Want, Option<&str>, Option<&str>)] = &[
        (
            &[(b"REQUEST_URI", b"/a?b=1&c")],
            ("/a?b=1&c", "/a", "b=1&c", Version::Http11, BodyKind::Empty),
            None,
            None,
        ),
        (
            &[(b"REQUEST_URI", b"/a%2Fb")],
            ("/a%2Fb", "/a%2Fb", "", Version::Http11, BodyKind::Empty),
            None,
            None,
        ),
        (
            &[(b"REQUEST_URI", b"/?")],
            ("/?", "/", "", Version::Http11, BodyKind::Empty),
            None,
            None,
        ),
        // Without REQUEST_URI: PATH_INFO and QUERY_STRING.
        (
            &[(b"PATH_INFO", b"/a b"), (b"QUERY_STRING", b"x=1")],
            ("/a b", "/a b", "x=1", Version::Http11, BodyKind::Empty),
            None,
            None,
        ),
        (
            &[(b"SERVER_PROTOCOL", b"HTTP/1.0")],
            ("", "", "", Version::Http10, BodyKind::Empty),
            None,
            None,
        ),
        (
            &[(b"SERVER_PROTOCOL", b"HTTP/2.0")],
            ("", "", "", Version::Http11, BodyKind::Empty),
            None,
            None,
        ),
        (
            &[(b"CONTENT_LENGTH", b"5"), (b"CONTENT_TYPE", b"text/plain")],
            ("", "", "", Version::Http11, BodyKind::Length(5)),
            Some("text/plain"),
            Some("5"),
        ),
        // Empty ones are absent; the last of a name counts.
        (
            &[(b"CONTENT_LENGTH", b"5"), (b"CONTENT_LENGTH", b"")],
            ("", "", "", Version::Http11, BodyKind::Empty),
            None,
            None,
        ),
        (
            &[(b"CONTENT_LENGTH", b"0")],
            ("", "", "", Version::Http11, BodyKind::Empty),
            None,
            Some("0"),
        ),
    ];
    for (vars, (raw, path, query, version, body), ctype, clen) in table {
        let got = seen(&with(vars)).unwrap();
        let want = (
            s("GET"),
            s(raw),
            s(path),
            s(query),
            *version,
            *body,
            None,
            ctype.map(s),
            clen.map(s),
        );
        assert_eq!(got, want, "{vars:?}");
    }
    let last = seen(&with(&[(b"REQUEST_METHOD", b"POST")])).unwrap();
    assert_eq!(last.0, "POST", "the last REQUEST_METHOD counts");
}

#[test]
fn a_request_without_method_or_protocol_is_refused() {
    let table: &[(Vars, &str)] = &[
        (&[(b"SERVER_PROTOCOL", b"HTTP/1.1")], "REQUEST_METHOD"),
        (
            &[(b"REQUEST_METHOD", b""), (b"SERVER_PROTOCOL", b"HTTP/1.1")],
            "REQUEST_METHOD",
        ),
        (&[(b"REQUEST_METHOD", b"GET")], "SERVER_PROTOCOL"),
        // nginx without `include uwsgi_params`: request fields only.
        (&[(b"HTTP_HOST", b"x")], "REQUEST_METHOD"),
    ];
    for (vars, missing) in table {
        let got = seen(vars).unwrap_err();
        assert_eq!(got, UwsgiError::MissingVar(missing), "{vars:?}");
        assert_eq!((got.status(), got.name()), (None, "InvalidUWSGIHeader"));
    }
}

#[test]
fn control_characters_are_refused_as_http_1_refuses_them() {
    // nginx passes on some bytes the HTTP/1 parser refuses; they would reach the app and
    // the access log raw.
    let table: &[(Vars, Result<(), ParseError>)] = &[
        (
            &[(b"HTTP_USER_AGENT", b"a\x1b[31mred")],
            Err(ParseError::InvalidHeader),
        ),
        (
            &[(b"HTTP_USER_AGENT", b"del\x7f")],
            Err(ParseError::InvalidHeader),
        ),
        (&[(b"HTTP_X", b"a\r\nX: y")], Err(ParseError::InvalidHeader)),
        (&[(b"HTTP_X", b"tab\there, caf\xc3\xa9")], Ok(())),
        (
            &[(b"REQUEST_URI", b"/a\nb")],
            Err(ParseError::InvalidRequestLine),
        ),
        (&[(b"REQUEST_URI", b"/caf\xc3\xa9?q=%2F")], Ok(())),
        // Variables that are not fields are the front server's own: not judged.
        (&[(b"DOCUMENT_ROOT", b"/srv\x01")], Ok(())),
    ];
    for (extra, want) in table {
        let got = seen(&with(extra)).map(|_| ()).map_err(|e| match e {
            UwsgiError::Limit(p) => p,
            other => panic!("{other:?}"),
        });
        assert_eq!(got, *want, "{extra:?}");
    }
    let bad_method: Vars = &[
        (b"REQUEST_METHOD", b"GET\r\nX: y"),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
    ];
    assert_eq!(
        seen(bad_method).unwrap_err(),
        UwsgiError::Limit(ParseError::InvalidRequestMethod)
    );
}

#[test]
fn the_limits_of_http_heads_apply() {
    let cfg = ParserConfig {
        limit_request_line: 20,
        limit_request_fields: 2,
        limit_request_field_size: 16,
        limit_request_body: 10,
        ..ParserConfig::default()
    };
    let line = ParseError::LimitRequestLine;
    let fields = ParseError::LimitRequestHeaders;
    // "GET /0123 HTTP/1.1" is 18 bytes.
    let table: &[(Vars, Option<ParseError>)] = &[
        (&[(b"REQUEST_URI", b"/0123")], None),
        (&[(b"REQUEST_URI", b"/012")], None),
        (&[(b"REQUEST_URI", b"/0123456")], Some(line)),
        // `X: 0123456789a` and CRLF is 16 bytes.
        (&[(b"HTTP_X", b"0123456789a")], None),
        (&[(b"HTTP_X", b"0123456789ab")], Some(fields)),
        (&[(b"HTTP_HOST", b"h"), (b"HTTP_A", b"1")], None),
        (
            &[(b"HTTP_HOST", b"h"), (b"HTTP_A", b"1"), (b"HTTP_B", b"2")],
            Some(fields),
        ),
        // Variables that are not fields do not count.
        (
            &[(b"A", b"1"), (b"B", b"2"), (b"C", b"0123456789abcdef")],
            None,
        ),
        (&[(b"CONTENT_LENGTH", b"10")], None),
        (
            &[(b"CONTENT_LENGTH", b"11")],
            Some(ParseError::BodyTooLarge),
        ),
    ];
    for (vars, want) in table {
        let (_, got) = head_of(&with(vars), &cfg);
        match want {
            None => assert!(got.is_ok(), "{vars:?}: {got:?}"),
            Some(e) => {
                let got = got.unwrap_err();
                assert_eq!(got, UwsgiError::Limit(*e), "{vars:?}");
                assert_eq!(got.status(), Some(e.status()));
            }
        }
    }
}

#[test]
fn a_variable_carries_the_field_of_its_name() {
    let table: &[(&[u8], &[u8], bool)] = &[
        (b"HTTP_USER_AGENT", b"user-agent", true),
        (b"HTTP_USER_AGENT", b"User-Agent", true),
        (b"HTTP_REFERER", b"referer", true),
        (b"HTTP_USER_AGENT", b"user_agent", true),
        (b"HTTP_USER_AGENT", b"user-agen", false),
        (b"HTTP_user_agent", b"user-agent", false),
        (b"USER_AGENT", b"user-agent", false),
        (b"HTTP_", b"", true),
        (b"REMOTE_ADDR", b"remote-addr", false),
    ];
    for (var, field, want) in table {
        assert_eq!(is_var_of_field(var, field), *want, "{var:?} {field:?}");
    }
}

#[test]
fn an_answer_has_a_length_or_ends_with_the_connection() {
    use ResponseFraming::*;
    // (HEAD, status, declared, known) -> framing
    let table = [
        (false, 200, Some(5), None, Length(5)),
        (false, 200, None, Some(7), Length(7)),
        (false, 200, Some(5), Some(7), Length(5)),
        (false, 200, None, None, Close),
        (true, 200, None, None, NoBody),
        (true, 200, Some(5), None, Length(5)),
        (false, 204, Some(5), None, NoBody),
        (false, 304, None, None, NoBody),
        (false, 101, None, None, NoBody),
        (false, 500, None, None, Close),
    ];
    for (head, status, declared, known, want) in table {
        let got = uwsgi_response_framing(head, status, declared, known);
        assert_eq!(got, want, "{head} {status} {declared:?} {known:?}");
    }
    // The head's end: a length the app did not declare, never Connection or chunked.
    let table: [(ResponseFraming, bool, &[u8]); 5] = [
        (Length(12), false, b"Content-Length: 12\r\n\r\n"),
        (Length(12), true, b"\r\n"),
        (Close, false, b"\r\n"),
        (NoBody, false, b"\r\n"),
        (Chunked, false, b"\r\n"),
    ];
    for (framing, declared, want) in table {
        let mut out = Vec::new();
        finish_uwsgi_head(&mut out, framing, declared);
        assert_eq!(out, want, "{framing:?} {declared}");
    }
}

#[test]
fn the_client_is_the_one_the_front_server_names() {
    // (REMOTE_ADDR, REMOTE_PORT) -> client
    type Var<'a> = Option<&'a [u8]>;
    let table: &[(Var, Var, Option<&str>)] = &[
        (
            Some(b"203.0.113.9"),
            Some(b"50123"),
            Some("203.0.113.9:50123"),
        ),
        (
            Some(b"2001:db8::7"),
            Some(b"443"),
            Some("[2001:db8::7]:443"),
        ),
        (Some(b"203.0.113.9"), None, Some("203.0.113.9:0")),
        (Some(b"203.0.113.9"), Some(b"70000"), Some("203.0.113.9:0")),
        (Some(b"203.0.113.9"), Some(b""), Some("203.0.113.9:0")),
        // nginx for a client on its unix socket; an Apache host name; none.
        (Some(b"unix:"), Some(b""), None),
        (Some(b"client.example"), Some(b"1"), None),
        (Some(b"[::1]"), Some(b"1"), None),
        (None, Some(b"1"), None),
    ];
    for (addr, port, want) in table {
        let mut vars = with(&[]);
        if let Some(a) = addr {
            vars.push((b"REMOTE_ADDR", a));
        }
        if let Some(p) = port {
            vars.push((b"REMOTE_PORT", p));
        }
        let buf = packet(&vars);
        let p = parse_uwsgi(&buf).unwrap().unwrap();
        let got = uwsgi_head(&buf, &p, &ParserConfig::default(), Vec::new()).unwrap();
        let got = got.client.map(|a| a.to_string());
        assert_eq!(got.as_deref(), *want, "{addr:?} {port:?}");
        // The same client for a packet the head refuses (its log line names it).
        let refused = uwsgi_client(&buf, &p).map(|a| a.to_string());
        assert_eq!(refused.as_deref(), *want, "refused: {addr:?} {port:?}");
    }
}

#[test]
fn an_error_the_server_answers_has_no_date_server_or_connection() {
    assert_eq!(
        uwsgi_error_response(413),
        b"HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain\r\nContent-Length: 22\r\n\r\n413 Content Too Large\n"
    );
}
