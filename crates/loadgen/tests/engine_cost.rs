//! `portcullis-loadgen engine-cost` as the benchmark script runs it: one line with the
//! engine's cost a review, which the script reads; a policy that does not load fails with
//! its reason. Functional only: nothing here asserts speed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

const REVIEW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../engine/benches/data/review-8k.json");
const POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/policy-15-rules.yaml");

fn engine_cost(review: &str, policy: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis-loadgen"))
        .args([
            "engine-cost",
            "--review",
            review,
            "--policy",
            policy,
            "--duration",
            "50ms",
        ])
        .output()
        .unwrap()
}

#[test]
fn prints_the_engine_s_cost_a_review() {
    let output = engine_cost(REVIEW, POLICY);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The line the script reads: `engine_us <figure> (...)`.
    let figure: f64 = stdout
        .strip_prefix("engine_us ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not an engine_us line: {stdout}"));
    assert!(figure > 0.0, "{stdout}");
    assert!(
        stdout.contains("0 blocked"),
        "the review is allowed under this policy: {stdout}"
    );
}

#[test]
fn a_bad_policy_or_review_fails_with_its_reason() {
    let output = engine_cost(REVIEW, "/nonexistent/policy.yaml");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--policy /nonexistent/policy.yaml"));

    // A policy document that is not one.
    let output = engine_cost(REVIEW, REVIEW);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--policy: "));

    // A review that is not an AdmissionReview with a uid.
    let output = engine_cost(POLICY, POLICY);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("in "));
}
