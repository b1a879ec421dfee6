use super::*;
use crate::finished::Outcome;
use crate::listener::Peer;
use crate::protocol::Protocol;
use ferrule_http::{parse_head, Head, ParserConfig};
use serde_json::Value;
use std::time::Instant;

fn finished<'a>(head: &'a Head, buf: &'a [u8], status: u16, bytes: u64) -> Finished<'a> {
    Finished {
        method: head.get(buf, head.method),
        target: head.get(buf, head.target.raw),
        path: head.get(buf, head.target.path),
        query: head.get(buf, head.target.query),
        version: head.version,
        protocol: Protocol::Http1,
        client: Peer::Tcp("192.0.2.7:4711".parse().unwrap()),
        outcome: Outcome {
            status,
            body_bytes: bytes,
            length_mismatch: false,
        },
        started: Instant::now(),
        head,
        buf,
        response_head: None,
        timing: None,
        refused: false,
        sent_version: None,
    }
}

/// The line for `request` under `format`, parsed back.
fn line_of(format: &str, request: &[u8], environ: &[Option<String>]) -> (String, Value) {
    let Parsed { fields, pieces, .. } = parse_json(format).unwrap();
    let head = parse_head(request, &ParserConfig::default())
        .unwrap()
        .unwrap();
    let ex = finished(&head, request, 200, 1234);
    let mut out = String::new();
    write_line(
        &fields,
        &pieces,
        &ex,
        environ,
        Duration::from_micros(1500),
        &mut out,
    );
    assert!(
        out.ends_with("}\n") && out.matches('\n').count() == 1,
        "{out:?}"
    );
    let value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    (out, value)
}

#[test]
fn strings_are_escaped() {
    let table: [(&str, &str); 8] = [
        ("plain", r#""plain""#),
        ("a\"b", r#""a\"b""#),
        ("back\\slash", r#""back\\slash""#),
        ("line\nbreak\r", r#""line\nbreak\r""#),
        ("nul\0bell\x07", r#""nul\u0000bell\u0007""#),
        ("tab\tdel\x7f", r#""tab\tdel\u007f""#),
        ("", r#""""#),
        ("é ✓ \u{FFFD}", "\"é ✓ \u{FFFD}\""),
    ];
    for (text, want) in table {
        let mut out = String::new();
        string(text, &mut out);
        assert_eq!(out, want, "{text:?}");
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), text);
    }
}

#[test]
fn every_key_with_numbers_as_numbers_and_absent_as_null() {
    let req = b"GET /p/a?x=1&y=\"2\" HTTP/1.1\r\nHost: h\r\nUser-Agent: ua\r\n\r\n";
    let (out, v) = line_of("json", req, &[]);
    // In the table's order (serde_json's map sorts its keys: read the text).
    let at = |k: &str| {
        out.find(&format!("\"{k}\":"))
            .unwrap_or_else(|| panic!("{k}"))
    };
    let order: Vec<usize> = KEYS.iter().map(|(k, _)| at(k)).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{out}");
    assert_eq!(v.as_object().unwrap().len(), KEYS.len());
    assert_eq!(v["remote_addr"], "192.0.2.7");
    assert_eq!(v["request"], "GET /p/a?x=1&y=\"2\" HTTP/1.1");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/p/a");
    assert_eq!(v["query"], "x=1&y=\"2\"");
    assert_eq!(v["protocol"], "HTTP/1.1");
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes"], 1234);
    assert_eq!(v["duration_us"], 1500);
    assert_eq!(v["pid"], u64::from(std::process::id()));
    assert_eq!(v["user_agent"], "ua");
    for absent in [
        "user",
        "referer",
        "queue_us",
        "ttfb_us",
        "request_id",
        "egress",
        "egress_ms",
    ] {
        assert_eq!(v[absent], Value::Null, "{absent}");
    }
    let time = v["time"].as_str().unwrap();
    assert_eq!(time.len(), "2026-12-03T16:04:07.123+00:00".len(), "{time}");
    assert!(
        time.ends_with("+00:00") && time.as_bytes()[10] == b'T',
        "{time}"
    );
}

#[test]
fn a_hostile_user_agent_stays_one_valid_line() {
    // The parser lets obs-text (0x80-0xFF) and quotes through in a value.
    let req =
        b"GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: a\"b\\c\xff\xfe}{\"x\r\nReferer: -\r\n\r\n";
    let (out, v) = line_of("json", req, &[]);
    assert_eq!(v["user_agent"], "a\"b\\c\u{FFFD}\u{FFFD}}{\"x");
    assert!(out.contains(r#""user_agent":"a\"b\\c"#), "{out}");
    // A field whose value is `-` is that value, not absent.
    assert_eq!(v["referer"], "-");
}

#[test]
fn added_fields_environ_keys_and_chosen_keys() {
    let req = b"GET / HTTP/1.1\r\nHost: h\r\nX-Request-ID: abc\r\nX-B3-TraceId: t1\r\n\r\n";
    let environ = [Some("say \"hi\"\n".to_string()), None];
    let (_, v) = line_of(
        "json:{X-Request-ID}i, {REMOTE_USER}e,{missing}e,trace={X-B3-TraceId}i,{Content-Type}o",
        req,
        &environ,
    );
    assert_eq!(v["req.x-request-id"], "abc");
    // The value itself, not the text line's `\"`.
    assert_eq!(v["env.REMOTE_USER"], "say \"hi\"\n");
    assert_eq!(v["env.missing"], Value::Null);
    assert_eq!(v["trace"], "t1");
    assert_eq!(v["resp.content-type"], Value::Null);
}

#[test]
fn a_bad_json_format_says_what_to_fix() {
    for (format, says) in [
        ("json:{x}q", "is not {NAME}i"),
        ("json:x-request-id", "is not {NAME}i"),
        ("json:{}i", "is not {NAME}i"),
        ("json:status={x}i", "twice"),
        ("json:{a}i,{A}i", "twice"),
    ] {
        let Err(e) = parse_json(format) else {
            panic!("{format} parsed")
        };
        assert!(e.contains(says), "{format}: {e}");
    }
    assert!(wanted("json") && wanted("json:{a}i"));
    assert!(!wanted("jsonish") && !wanted("%(h)s json"));
}

#[test]
fn the_stamp_is_made_once_a_second_and_right_for_each() {
    let at = |secs: u64, ms: u64| UNIX_EPOCH + Duration::from_millis(secs * 1000 + ms);
    for (t, want) in [
        (at(1_764_777_847, 5), "\"2025-12-03T16:04:07.005+00:00\""),
        (at(1_764_777_847, 999), "\"2025-12-03T16:04:07.999+00:00\""),
        (at(1_764_777_848, 120), "\"2025-12-03T16:04:08.120+00:00\""),
        (at(0, 0), "\"1970-01-01T00:00:00.000+00:00\""),
    ] {
        let mut out = String::new();
        iso_stamp(t, &mut out);
        assert_eq!(out, want);
    }
}
