//! How a head is framed (body kind, keep-alive, 413 past the body limit) and which
//! host it is for, through the public parser. Moved from `src/framing.rs`'s unit
//! tests unchanged, so the framing module does not import the head parser.

mod framing {
    use ferrule_http::{parse_head, BodyKind, Framing, ParseError, ParserConfig};

    /// Framing alone: these tables leave Host out (the Host rules have their own).
    fn framing(raw: &str) -> Result<Framing, ParseError> {
        let cfg = ParserConfig {
            permit_missing_host: true,
            ..ParserConfig::default()
        };
        parse_head(raw.as_bytes(), &cfg).map(|h| h.expect("complete").framing)
    }

    #[test]
    fn body_kinds() {
        let table: &[(&str, Result<BodyKind, ParseError>)] = &[
            ("GET / HTTP/1.1\r\n\r\n", Ok(BodyKind::Empty)),
            ("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", Ok(BodyKind::Empty)),
            ("POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n", Ok(BodyKind::Length(12))),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", Ok(BodyKind::Chunked)),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Ok(BodyKind::Chunked)),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n", Ok(BodyKind::Chunked)),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", Err(ParseError::InvalidHeader)),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", Err(ParseError::InvalidHeader)),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", Err(ParseError::InvalidHeader)),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\n", Err(ParseError::InvalidHeader)),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: br, chunked\r\n\r\n", Err(ParseError::UnsupportedTransferCoding)),
            ("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", Err(ParseError::InvalidHeader)),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Err(ParseError::InvalidHeader)),
            ("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", Err(ParseError::InvalidHeader)),
            ("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", Err(ParseError::InvalidHeader)),
            ("POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n", Err(ParseError::InvalidHeader)),
            ("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", Err(ParseError::InvalidHeader)),
        ];
        for (raw, want) in table {
            assert_eq!(framing(raw).map(|f| f.body), *want, "{raw:?}");
        }
    }

    #[test]
    fn keep_alive() {
        let table = [
            ("GET / HTTP/1.1\r\n\r\n", true),
            ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            (
                "GET / HTTP/1.1\r\nConnection: Upgrade, Close\r\n\r\n",
                false,
            ),
            ("GET / HTTP/1.0\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        ];
        for (raw, want) in table {
            assert_eq!(framing(raw).unwrap().keep_alive, want, "{raw:?}");
        }
    }

    #[test]
    fn body_limit_is_413() {
        let cfg = ParserConfig {
            limit_request_body: 10,
            ..ParserConfig::default()
        };
        let raw = b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n";
        assert_eq!(parse_head(raw, &cfg), Err(ParseError::BodyTooLarge));
        assert_eq!(ParseError::BodyTooLarge.status(), 413);
    }
}

mod host {
    use ferrule_http::{parse_head, ParseError, ParserConfig};

    type Host = Result<Option<String>, ParseError>;

    /// The host a request is for (`Framing::host`), as text.
    fn host(raw: &str, permit_missing: bool) -> Host {
        let cfg = ParserConfig {
            permit_missing_host: permit_missing,
            ..ParserConfig::default()
        };
        let head = parse_head(raw.as_bytes(), &cfg)?.expect("complete");
        Ok(head
            .framing
            .host
            .map(|s| String::from_utf8_lossy(head.get(raw.as_bytes(), s)).into_owned()))
    }

    #[test]
    fn host_values() {
        let ok = |h: &str| Ok(Some(h.to_string()));
        let table: &[(&str, Host)] = &[
            ("example.com", ok("example.com")),
            ("Example.COM.", ok("Example.COM.")),
            ("example.com:8080", ok("example.com:8080")),
            ("example.com:", ok("example.com:")),
            ("127.0.0.1:80", ok("127.0.0.1:80")),
            ("[::1]:8080", ok("[::1]:8080")),
            ("[::ffff:1.2.3.4]", ok("[::ffff:1.2.3.4]")),
            // gunicorn's corpus has this one: `=` is a sub-delim, so a reg-name byte.
            ("0.0.0.0=5000", ok("0.0.0.0=5000")),
            ("xn--bcher-kva.example", ok("xn--bcher-kva.example")),
            ("a%20b", ok("a%20b")),
            // RFC 9112 §3.2: empty when the target has no authority.
            ("", ok("")),
            ("a b/c", Err(ParseError::InvalidHost)),
            ("a/b", Err(ParseError::InvalidHost)),
            ("a?b", Err(ParseError::InvalidHost)),
            ("a#b", Err(ParseError::InvalidHost)),
            ("user@host", Err(ParseError::InvalidHost)),
            ("a:b", Err(ParseError::InvalidHost)),
            ("a:80:80", Err(ParseError::InvalidHost)),
            ("a:123456", Err(ParseError::InvalidHost)),
            ("a:-1", Err(ParseError::InvalidHost)),
            (":80", Err(ParseError::InvalidHost)),
            ("[::1", Err(ParseError::InvalidHost)),
            ("[]", Err(ParseError::InvalidHost)),
            ("[::1]x", Err(ParseError::InvalidHost)),
            ("[fe80::1%eth0]", Err(ParseError::InvalidHost)),
            ("caf\u{e9}.example", Err(ParseError::InvalidHost)),
            ("a\"b", Err(ParseError::InvalidHost)),
            ("a\\b", Err(ParseError::InvalidHost)),
            ("<a>", Err(ParseError::InvalidHost)),
        ];
        for (value, want) in table {
            let raw = format!("GET / HTTP/1.1\r\nHost: {value}\r\n\r\n");
            assert_eq!(host(&raw, false), *want, "Host: {value:?}");
            // The switch is about a missing Host only.
            assert_eq!(host(&raw, true), *want, "Host: {value:?} (permit)");
        }
    }

    #[test]
    fn missing_and_repeated_host() {
        let missing = "GET / HTTP/1.1\r\nA: b\r\n\r\n";
        assert_eq!(host(missing, false), Err(ParseError::MissingHost));
        assert_eq!(ParseError::MissingHost.status(), 400);
        assert_eq!(ParseError::InvalidHost.status(), 400);
        assert_eq!(host(missing, true), Ok(None));
        // HTTP/1.0 never needed Host.
        assert_eq!(host("GET / HTTP/1.0\r\n\r\n", false), Ok(None));
        let twice = "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n";
        assert_eq!(host(twice, false), Err(ParseError::InvalidHeader));
        assert_eq!(host(twice, true), Err(ParseError::InvalidHeader));
        // Bytes Host could not hold in a field value at all stay InvalidHeader.
        assert_eq!(
            host("GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", false),
            Err(ParseError::InvalidHeader)
        );
    }

    #[test]
    fn the_absolute_forms_authority_wins_over_host() {
        let table: &[(&str, bool, Host)] = &[
            (
                "GET http://x.example/p HTTP/1.1\r\nHost: y\r\n\r\n",
                false,
                Ok(Some("x.example".into())),
            ),
            (
                "GET http://x.example:8081/p?q HTTP/1.1\r\nHost: y:80\r\n\r\n",
                false,
                Ok(Some("x.example:8081".into())),
            ),
            (
                "GET https://u:pw@x.example:443 HTTP/1.1\r\nHost: y\r\n\r\n",
                false,
                Ok(Some("x.example:443".into())),
            ),
            (
                "GET http://[::1]:8080/foo HTTP/1.1\r\nHost: y\r\n\r\n",
                false,
                Ok(Some("[::1]:8080".into())),
            ),
            (
                "GET http://x.example/p HTTP/1.0\r\n\r\n",
                false,
                Ok(Some("x.example".into())),
            ),
            // Host is still required, and checked, though the target's authority wins.
            (
                "GET http://x.example/p HTTP/1.1\r\n\r\n",
                false,
                Err(ParseError::MissingHost),
            ),
            (
                "GET http://x.example/p HTTP/1.1\r\n\r\n",
                true,
                Ok(Some("x.example".into())),
            ),
            (
                "GET http://x.example/p HTTP/1.1\r\nHost: a b\r\n\r\n",
                false,
                Err(ParseError::InvalidHost),
            ),
            // An origin-form target keeps Host.
            (
                "GET /p HTTP/1.1\r\nHost: y:81\r\n\r\n",
                false,
                Ok(Some("y:81".into())),
            ),
        ];
        for (raw, permit, want) in table {
            assert_eq!(host(raw, *permit), *want, "{raw:?}");
        }
    }
}
