//! The admission benchmark's policy (`data/policy-15-rules.yaml`) is valid, has exactly 15
//! rules, all in the default definition, and judges the benchmark review
//! (`crates/engine/benches/data/review-8k.json`) by evaluation: allowed, with one log-only
//! violation as a warning, the one the no-op server's fixed answer carries.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use portcullis_engine::evaluate::{CompiledPolicy, EvalContext, Verdict};
use portcullis_engine::input::parse_document;
use portcullis_engine::policy::{PolicyDocument, validate};

const POLICY: &str = include_str!("../data/policy-15-rules.yaml");
const REVIEW: &[u8] = include_bytes!("../../engine/benches/data/review-8k.json");

#[test]
fn the_benchmark_policy_is_valid_with_fifteen_default_rules() {
    let valid = validate(&PolicyDocument::parse(POLICY).unwrap()).unwrap();
    let json = serde_json::to_value(&valid.document).unwrap();
    assert_eq!(json["name"], "bench.admission15");
    assert_eq!(json["default"]["rules"].as_array().unwrap().len(), 15);
    assert_eq!(json["default"]["exceptions"].as_array().unwrap().len(), 2);
    assert!(
        json["namespaced"].as_array().is_none_or(Vec::is_empty),
        "{}",
        json["namespaced"]
    );
}

#[test]
fn the_benchmark_review_is_evaluated_and_allowed_with_warnings() {
    let policy = CompiledPolicy::from_text(POLICY).unwrap();
    let compact = serde_json::from_slice::<serde_json::Value>(REVIEW).unwrap().to_string();
    let subjects = parse_document(compact.as_bytes()).unwrap();
    assert_eq!(subjects.len(), 1);
    let ctx = EvalContext::offline(time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000));
    let decision = policy.evaluate(&subjects[0], &ctx);
    for v in &decision.violations {
        eprintln!("{:?} {}", v.action, v.message);
    }
    assert!(decision.not_evaluated.is_none(), "{:?}", decision.not_evaluated);
    assert_eq!(decision.verdict, Verdict::Allow, "{:?}", decision.violations);
    // One log-only violation, which the no-op server's fixed answer copies.
    assert_eq!(decision.warnings().count(), 1, "{:?}", decision.violations);
    let noop = portcullis_loadgen::noop::NoopAdmission::new().answer("x".to_owned());
    let noop_decision = noop.decision.unwrap();
    assert_eq!(noop_decision.violations[0].message, decision.violations[0].message);
    assert_eq!(noop_decision.warnings, [decision.violations[0].message.clone()]);
}
