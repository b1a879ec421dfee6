//! Reading gunicorn's corpus (shared by the parser test and the socket test).
#![allow(dead_code)]

use base64::Engine;
use ferrule_http::{
    parse_head, secure_scheme, BodyDecoder, HeaderMap, ParseError, ParserConfig, SchemeHeaders,
};
use serde_json::Value;
use std::path::PathBuf;

/// Cases where ferrule deliberately answers differently (see docs/http.md).
pub const DEVIATIONS: &[(&str, &str)] = &[(
    "valid/009",
    "Transfer-Encoding: identity next to Content-Length is rejected with 400 (InvalidHeader)",
)];

/// Where gunicorn's corpus is: `FERRULE_CORPUS` if set, else what `make corpus` builds
/// from gunicorn's sdist (`.cache/gunicorn-corpus/gunicorn`), else a `shared/` checkout
/// beside the repository (a convenience: the same files, see tools/gunicorn_corpus.py).
pub fn corpus_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("FERRULE_CORPUS") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap_or(root);
    let cache = root.join(".cache/gunicorn-corpus/gunicorn");
    let shared = root.join("../shared/conformance/gunicorn");
    if cache.join("index.json").is_file() {
        return cache;
    }
    if shared.join("index.json").is_file() {
        return shared;
    }
    panic!(
        "gunicorn's parser corpus is missing: run `make corpus` (it fetches gunicorn's sdist \
         from PyPI by pinned version and sha256 and converts its tests/requests into {}), \
         or set FERRULE_CORPUS to a converted copy",
        cache.display()
    )
}

/// The parser settings of a case, as gunicorn runs it: `permit_missing_host` on, since
/// gunicorn serves HTTP/1.1 requests without Host (ferrule's default answers 400, which
/// [`first_without_host`] lets the runners check too).
pub fn config(cfg: &Value) -> ParserConfig {
    let mut c = ParserConfig {
        permit_missing_host: true,
        ..ParserConfig::default()
    };
    let num = |k: &str| {
        cfg.get(k)
            .and_then(Value::as_i64)
            .map(|n| n.max(0) as usize)
    };
    let flag = |k: &str| cfg.get(k).and_then(Value::as_bool).unwrap_or(false);
    if let Some(n) = num("limit_request_line") {
        c.limit_request_line = n;
    }
    if let Some(n) = num("limit_request_fields") {
        c.limit_request_fields = n;
    }
    if let Some(n) = num("limit_request_field_size") {
        c.limit_request_field_size = n;
    }
    if let Some(m) = cfg.get("header_map").and_then(Value::as_str) {
        c.header_map = m.parse::<HeaderMap>().expect("known header_map");
    }
    c.permit_obsolete_folding = flag("permit_obsolete_folding");
    c.strip_header_spaces = flag("strip_header_spaces");
    c.casefold_http_method = flag("casefold_http_method");
    c.permit_unconventional_http_method = flag("permit_unconventional_http_method");
    c
}

/// What the parser saw of one request, in the corpus's JSON vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub fragment: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

pub fn expected(req: &Value) -> Seen {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Seen {
        method: s(&req["method"]),
        path: s(&req["uri"]["path"]),
        query: s(&req["uri"]["query"]),
        fragment: s(&req["uri"]["fragment"]),
        headers: req["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| (s(&h[0]), s(&h[1])))
            .collect(),
        body: base64::engine::general_purpose::STANDARD
            .decode(req["body_b64"].as_str().unwrap_or_default())
            .expect("base64 body"),
    }
}

/// The index of a valid case's first expected request that is HTTP/1.1 without Host:
/// under ferrule's default (`permit_missing_host` off) the requests before it are
/// served and it gets 400 (`MissingHost`).
pub fn first_without_host(expect: &Value) -> Option<usize> {
    expect["requests"].as_array()?.iter().position(|r| {
        r["version"] == serde_json::json!([1, 1])
            && !r["headers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|h| h[0].as_str() == Some("HOST"))
    })
}

/// One case of the corpus, with its expectation.
pub struct Case {
    pub id: String,
    pub kind: String,
    pub name: String,
    pub raw: Vec<u8>,
    pub expect: Value,
    pub cfg: Value,
}

/// Every case except the PROXY-protocol ones (`proxy_corpus.rs` runs those).
pub fn cases() -> Vec<Case> {
    let dir = corpus_dir();
    let index: Value = serde_json::from_slice(
        &std::fs::read(dir.join("index.json"))
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.join("index.json").display())),
    )
    .expect("index.json");
    let mut out = Vec::new();
    for case in index["cases"].as_array().expect("cases") {
        let kind = case["kind"].as_str().unwrap_or("").to_string();
        let name = case["name"].as_str().unwrap_or("").to_string();
        if name.starts_with("pp_") {
            continue;
        }
        let id = format!("{kind}/{name}");
        let raw = std::fs::read(dir.join(format!("{id}.http"))).expect("case bytes");
        let expect =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{id}.json"))).expect("json"))
                .expect("case json");
        out.push(Case {
            id,
            kind,
            name,
            raw,
            expect,
            cfg: case["cfg"].clone(),
        });
    }
    out
}

/// CONNECT's authority-form has no path (the corpus records urlsplit's guess).
pub fn connect_has_no_path(mut want: Vec<Seen>) -> Vec<Seen> {
    want.iter_mut()
        .filter(|r| r.method == "CONNECT")
        .for_each(|r| r.path.clear());
    want
}

/// Feeds `raw` to the parser `step` bytes at a time, as a connection would, until
/// the stream is used up. Returns the requests seen and the error that ended it, if any.
pub fn run(
    raw: &[u8],
    cfg: &ParserConfig,
    step: usize,
    trust_scheme: bool,
) -> (Vec<Seen>, Option<ParseError>) {
    let mut seen = Vec::new();
    let mut start = 0; // first byte of the current request
    let mut avail = step.min(raw.len());
    loop {
        if start == raw.len() {
            return (seen, None);
        }
        let head = match parse_head(&raw[start..avail], cfg) {
            Ok(Some(h)) => h,
            Ok(None) if avail == raw.len() => {
                // Only empty lines left is a clean end; anything else was cut short.
                let rest = &raw[start..];
                let blank = rest.iter().all(|&b| b == b'\r' || b == b'\n');
                return (seen, (!blank).then_some(ParseError::NoMoreData));
            }
            Ok(None) => {
                avail = (avail + step).min(raw.len());
                continue;
            }
            Err(e) => return (seen, Some(e)),
        };
        let buf = &raw[start..];
        if trust_scheme {
            if let Err(e) = secure_scheme(&head, buf, &SchemeHeaders::default()) {
                return (seen, Some(e));
            }
        }
        let g = |s| latin1(head.get(buf, s));
        let mut req = Seen {
            method: g(head.method),
            path: g(head.target.path),
            query: g(head.target.query),
            fragment: g(head.target.fragment),
            headers: head
                .headers
                .iter()
                .map(|h| (g(h.name).to_ascii_uppercase(), g(h.value)))
                .collect(),
            body: Vec::new(),
        };
        let mut pos = start + head.len;
        let mut dec = BodyDecoder::new(head.framing.body, cfg);
        while !dec.is_done() {
            let s = match dec.decode(&raw[pos..avail.max(pos)]) {
                Ok(s) => s,
                Err(e) => return (seen, Some(e)),
            };
            req.body.extend_from_slice(&raw[pos..][s.data.clone()]);
            pos += s.consumed;
            if s.consumed == 0 && !s.done {
                if avail == raw.len() {
                    seen.push(req);
                    return (seen, Some(dec.eof_error()));
                }
                avail = (avail + step).min(raw.len());
            }
        }
        seen.push(req);
        start = pos;
        avail = avail.max(start);
        if !head.framing.keep_alive {
            // The server closes after this response: later bytes are never parsed.
            return (seen, None);
        }
    }
}
