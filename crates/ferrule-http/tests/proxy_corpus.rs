//! gunicorn's 8 PROXY-protocol cases (`pp_*`, cfg `proxy_protocol: true` = Auto), which
//! `corpus.rs` leaves out: the header through `parse_proxy`, then the request(s) after
//! it through the HTTP parser as `corpus.rs` runs them, whole and one byte at a time.

#[path = "support/corpus.rs"]
mod support;

use ferrule_http::{parse_proxy, ParseError, ProxyError, ProxyHeader, ProxyMode};
use serde_json::Value;
use support::{config, connect_has_no_path, corpus_dir, expected, run, Seen};

/// gunicorn builds its test parser without a peer address, which skips its
/// `proxy_allow_ips` check and makes the header optional: valid/pp_03 has none. The spec
/// forbids guessing, so ferrule refuses a headerless connection from an allowed peer
/// (`ProxyError::Missing`); one from a peer outside `--proxy-allow-from` is served as
/// plain HTTP, which is how its request is checked here.
const NO_HEADER: &str = "valid/pp_03";

/// What each header says (read from the case files by hand).
fn expected_header(id: &str) -> Option<ProxyHeader> {
    let client = |src: &str, dst: &str| ProxyHeader::Client {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
    };
    Some(match id {
        "valid/pp_01" | "valid/pp_02" => client("192.168.0.1:56324", "192.168.0.11:443"),
        "valid/pp_04" => client("192.168.1.10:12345", "192.168.1.1:443"),
        "valid/pp_05" => client("[2001:db8::1]:54321", "[2001:db8::2]:80"),
        _ => return None,
    })
}

/// The `pp_*` cases: (id, bytes, expectation).
fn cases() -> Vec<(String, Vec<u8>, Value)> {
    let dir = corpus_dir();
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index.json"))
            .expect("index.json");
    let mut out = Vec::new();
    for case in index["cases"].as_array().expect("cases") {
        let (kind, name) = (case["kind"].as_str(), case["name"].as_str());
        let (Some(kind), Some(name)) = (kind, name) else {
            continue;
        };
        if !name.starts_with("pp_") {
            continue;
        }
        assert_eq!(case["cfg"]["proxy_protocol"], Value::Bool(true), "{name}");
        let id = format!("{kind}/{name}");
        let raw = std::fs::read(dir.join(format!("{id}.http"))).expect("case bytes");
        let json = std::fs::read(dir.join(format!("{id}.json"))).expect("case json");
        out.push((id, raw, serde_json::from_slice(&json).expect("case json")));
    }
    out
}

/// Feeds `raw` to `parse_proxy` (Auto) `step` bytes at a time until it answers.
fn proxy_in_steps(raw: &[u8], step: usize) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let mut avail = step.min(raw.len());
    loop {
        match parse_proxy(&raw[..avail], ProxyMode::Auto) {
            Ok(None) if avail < raw.len() => avail = (avail + step).min(raw.len()),
            answer => return answer,
        }
    }
}

fn requests(exp: &Value) -> Vec<Seen> {
    connect_has_no_path(
        exp["requests"]
            .as_array()
            .expect("requests")
            .iter()
            .map(expected)
            .collect(),
    )
}

#[test]
fn gunicorn_proxy_cases() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for (id, raw, exp) in cases() {
        let cfg = config(&exp["cfg"]);
        for step in [raw.len().max(1), 1] {
            checked += 1;
            let header = proxy_in_steps(&raw, step);
            let ok = if id.starts_with("invalid/") {
                // Refused at the header: the HTTP parser never sees these bytes.
                let class = header.map_err(|e| ParseError::from(e).name());
                matches!(class, Err(name) if Some(name) == exp["error"].as_str())
            } else if id == NO_HEADER {
                let (seen, err) = run(&raw, &cfg, step, false);
                header == Err(ProxyError::Missing) && err.is_none() && seen == requests(&exp)
            } else {
                match header {
                    Ok(Some((got, used))) if Some(got) == expected_header(&id) => {
                        let (seen, err) = run(&raw[used..], &cfg, step, false);
                        err.is_none() && seen == requests(&exp)
                    }
                    _ => false,
                }
            };
            if !ok {
                failures.push(format!("{id} (step {step}): header {header:?}"));
            }
        }
    }
    assert_eq!(checked, 2 * 8, "the corpus has 8 PROXY cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
