//! gunicorn's HTTP/1 parser corpus, run against the sans-IO parser: every case whole
//! and one byte at a time, bodies and pipelined requests included.

#[path = "support/corpus.rs"]
mod support;

use ferrule_http::ParseError;
use support::{config, expected, run, Seen, DEVIATIONS};

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
