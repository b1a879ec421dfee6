//! gunicorn's HTTP/1 parser corpus, run against the sans-IO parser: every case whole
//! and one byte at a time, bodies and pipelined requests included.

#[path = "support/corpus.rs"]
mod support;

use ferrule_http::ParseError;
use support::{config, expected, first_without_host, run, Seen, DEVIATIONS};

#[test]
fn gunicorn_corpus() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in support::cases() {
        let (kind, id) = (case.kind.as_str(), case.id.as_str());
        let (raw, exp) = (&case.raw, &case.expect);
        let cfg = config(&case.cfg);
        let trust = case.cfg.get("forwarded_allow_ips").is_some();
        for step in [raw.len().max(1), 1] {
            let (seen, err) = run(raw, &cfg, step, trust);
            checked += 1;
            let deviation = DEVIATIONS.iter().find(|(d, _)| *d == id);
            let ok = match (kind, deviation) {
                ("valid", Some(_)) => err == Some(ParseError::InvalidHeader),
                ("valid", None) => {
                    let want: Vec<Seen> = exp["requests"]
                        .as_array()
                        .expect("requests")
                        .iter()
                        .map(expected)
                        .collect();
                    // valid/099's file stops short of its Content-Length; gunicorn's
                    // harness reads what is there, so a cut-short body is accepted.
                    let short = id == "valid/099" && err == Some(ParseError::NoMoreData);
                    (err.is_none() || short) && seen == support::connect_has_no_path(want)
                }
                _ => err.map(ParseError::name) == exp["error"].as_str(),
            };
            if !ok {
                let mut want = exp.to_string();
                want.truncate(400);
                failures.push(format!(
                    "{id} (step {step}): got {err:?}, {seen:.400?}; expected {want}"
                ));
            }
        }
    }
    assert!(checked >= 2 * 129, "only {checked} runs");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Under ferrule's default (no `--permit-missing-host`), the valid cases with an
/// HTTP/1.1 request without Host are served up to that request, which gets 400.
#[test]
fn gunicorn_corpus_without_permit_missing_host() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in support::cases() {
        let id = case.id.as_str();
        if case.kind != "valid" || DEVIATIONS.iter().any(|(d, _)| *d == id) {
            continue;
        }
        let Some(first) = first_without_host(&case.expect) else {
            continue;
        };
        let want: Vec<Seen> = support::connect_has_no_path(
            case.expect["requests"]
                .as_array()
                .expect("requests")
                .iter()
                .map(expected)
                .collect(),
        );
        let mut cfg = config(&case.cfg);
        cfg.permit_missing_host = false;
        let trust = case.cfg.get("forwarded_allow_ips").is_some();
        for step in [case.raw.len().max(1), 1] {
            let (seen, err) = run(&case.raw, &cfg, step, trust);
            checked += 1;
            if err != Some(ParseError::MissingHost)
                || ParseError::MissingHost.status() != 400
                || seen[..] != want[..first]
            {
                failures.push(format!(
                    "{id} (step {step}): got {err:?} after {} request(s); expected MissingHost after {first}",
                    seen.len()
                ));
            }
        }
    }
    // 24 of gunicorn 26's valid cases send HTTP/1.1 without Host.
    assert!(checked >= 2 * 20, "only {checked} runs");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
