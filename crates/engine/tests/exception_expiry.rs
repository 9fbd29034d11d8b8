//! Exceptions that expire (POLICY.md section 1, section 4 point 2): `expiresAt` and `reason`
//! are validated and round-trip; an exception whose `expiresAt` is at or before the
//! evaluation's `now` exempts nothing, at admission and in continuous evaluation alike, and a
//! violation it would have exempted says `exception expired at <time>`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::{
    NOW, assert_blocks, assert_clean, block, compile, container, eval, eval_running, exception, only_violation, pod,
    pod_in, pod_of, privileged, rule_with, statement,
};
use portcullis_engine::evaluate::{CompiledPolicy, EvalContext};
use portcullis_engine::policy::{Mitigation, PolicyDocument, PolicyError, validate};
use serde_json::{Value, json};
use time::macros::datetime;

const PLATFORM: &str = "registry.example.com/platform/agent:1.0";

/// An exception of the platform registry expiring at `expires_at` (RFC 3339).
fn platform_until(expires_at: &str) -> Value {
    let mut e = exception("registry", "equals", "registry.example.com");
    e["expiresAt"] = json!(expires_at);
    e["reason"] = json!("platform images, ticket SEC-142");
    e
}

/// A policy blocking privileged containers (mitigation isolate) and host networking
/// (mitigation log), with these exceptions.
fn policy_excepting(exceptions: Vec<Value>) -> CompiledPolicy {
    compile(&json!({"name": "test", "default": {
        "rules": [
            rule_with("containerSecurityContext", &[("privileged", "true")], "block", "isolate"),
            rule_with("podSecurityContext", &[("hostNetwork", "true")], "block", "log"),
        ],
        "exceptions": exceptions,
    }}))
}

#[test]
fn an_exception_not_yet_expired_exempts_at_admission_and_while_running() {
    // One second after `now`: still holding.
    let p = policy_excepting(vec![platform_until("2025-06-01T12:00:01Z")]);
    let doc = pod(json!({"hostNetwork": true, "containers": [privileged("agent", PLATFORM)]}));
    assert_clean(&eval(&p, &doc));
    let running = eval_running(&p, &doc);
    assert_eq!(running.mitigation, Mitigation::None, "{running:#?}");
    assert!(running.violations.is_empty());
}

#[test]
fn an_exception_expiring_exactly_now_exempts_nothing_and_the_violation_says_so() {
    let p = policy_excepting(vec![platform_until("2025-06-01T12:00:00Z")]);
    let d = eval(&p, &pod_of(vec![privileged("agent", PLATFORM)]));
    assert_blocks(&d);
    assert_eq!(
        only_violation(&d).message,
        r#"containerSecurityContext violates rule with properties { privileged:true } in container(s) "agent" (block): exception expired at 2025-06-01T12:00:00Z."#
    );
    let running = eval_running(&p, &pod_of(vec![privileged("agent", PLATFORM)]));
    assert_eq!(running.mitigation, Mitigation::Isolate);
    assert_eq!(running.violations.len(), 1);
    assert_eq!(
        running.violations[0].message,
        r#"containerSecurityContext violates rule with properties { privileged:true } in container(s) "agent" (isolate): exception expired at 2025-06-01T12:00:00Z."#
    );
}

#[test]
fn an_exception_expired_before_now_exempts_nothing_and_its_time_is_given_in_utc() {
    // 2025-05-31T23:30:00-02:00 is 2025-06-01T01:30:00Z, before `now`.
    let p = policy_excepting(vec![platform_until("2025-05-31T23:30:00-02:00")]);
    let d = eval(&p, &pod_of(vec![privileged("agent", PLATFORM)]));
    assert_blocks(&d);
    assert!(
        only_violation(&d)
            .message
            .ends_with(r#"(block): exception expired at 2025-06-01T01:30:00Z."#),
        "{}",
        only_violation(&d).message
    );
}

#[test]
fn the_note_names_only_containers_an_expired_exception_matched() {
    let p = policy_excepting(vec![platform_until("2025-01-01T00:00:00Z")]);
    let d = eval(
        &p,
        &pod_of(vec![privileged("app", "nginx:1"), privileged("agent", PLATFORM)]),
    );
    let v = only_violation(&d);
    assert_eq!(v.containers, vec!["app", "agent"]);
    // The note names the one container it concerns.
    assert_eq!(
        v.message,
        r#"containerSecurityContext violates rule with properties { privileged:true } in container(s) "app", "agent" (block): exception expired at 2025-01-01T00:00:00Z for container(s) "agent"."#
    );
    // Only the violation naming an exempted-before container carries the note.
    let d = eval(
        &p,
        &pod_of(vec![privileged("app", "nginx:1"), container("agent", PLATFORM)]),
    );
    assert_eq!(
        only_violation(&d).message,
        r#"containerSecurityContext violates rule with properties { privileged:true } in container(s) "app" (block)."#
    );
}

#[test]
fn a_holding_exception_wins_over_an_expired_one_matching_the_same_image() {
    let mut forever = exception("imagePath", "starts-with", "registry.example.com/platform/");
    forever["reason"] = json!("no expiry");
    let p = policy_excepting(vec![platform_until("2025-01-01T00:00:00Z"), forever]);
    assert_clean(&eval(&p, &pod_of(vec![privileged("agent", PLATFORM)])));
}

#[test]
fn a_pod_level_rule_skipped_before_says_when_the_first_exemption_of_its_containers_ended() {
    let mut later = exception("tag", "equals", "2.0");
    later["expiresAt"] = json!("2025-05-20T00:00:00Z");
    let p = policy_excepting(vec![platform_until("2025-05-01T00:00:00Z"), later]);
    // Every container was exempt until 2025-05-01 (agent) and 2025-05-20 (sidecar): the pod
    // stopped being wholly exempt at the earlier one.
    let doc = pod(json!({"hostNetwork": true, "containers": [
        container("agent", PLATFORM),
        container("sidecar", "quay.io/org/sidecar:2.0"),
    ]}));
    let d = eval(&p, &doc);
    assert_eq!(
        only_violation(&d).message,
        r#"podSecurityContext violates rule with properties { hostNetwork:true } in pod "p" (block): exception expired at 2025-05-01T00:00:00Z."#
    );
    let running = eval_running(&p, &doc);
    assert_eq!(running.mitigation, Mitigation::Log);
    assert!(
        running.violations[0]
            .message
            .ends_with("(log): exception expired at 2025-05-01T00:00:00Z."),
        "{:#?}",
        running.violations
    );

    // A container never exempt: the pod-level rule would have applied anyway, no note.
    let doc = pod(json!({"hostNetwork": true, "containers": [
        container("agent", PLATFORM),
        container("app", "nginx:1"),
    ]}));
    assert_eq!(
        only_violation(&eval(&p, &doc)).message,
        r#"podSecurityContext violates rule with properties { hostNetwork:true } in pod "p" (block)."#
    );

    // One container still exempt, the other's exemption expired: the pod-level rule applies.
    let p = policy_excepting(vec![
        platform_until("2025-05-01T00:00:00Z"),
        exception("tag", "equals", "2.0"),
    ]);
    let doc = pod(json!({"hostNetwork": true, "containers": [
        container("agent", PLATFORM),
        container("sidecar", "quay.io/org/sidecar:2.0"),
    ]}));
    assert!(
        only_violation(&eval(&p, &doc))
            .message
            .ends_with("(block): exception expired at 2025-05-01T00:00:00Z.")
    );
}

#[test]
fn containers_whose_exemptions_ended_at_different_times_are_named_per_time() {
    let mut sidecar = exception("tag", "equals", "2.0");
    sidecar["expiresAt"] = json!("2025-05-20T00:00:00Z");
    let p = policy_excepting(vec![platform_until("2025-05-01T00:00:00Z"), sidecar]);
    let d = eval(
        &p,
        &pod_of(vec![
            privileged("sidecar", "quay.io/org/sidecar:2.0"),
            privileged("agent", PLATFORM),
        ]),
    );
    assert_eq!(
        only_violation(&d).message,
        concat!(
            r#"containerSecurityContext violates rule with properties { privileged:true } in container(s) "sidecar", "agent" (block): "#,
            r#"exception expired at 2025-05-01T00:00:00Z for container(s) "agent"; "#,
            r#"exception expired at 2025-05-20T00:00:00Z for container(s) "sidecar"."#
        )
    );
}

#[test]
fn a_pod_security_standard_violation_keeps_its_detail_before_the_note() {
    let p = compile(&json!({"name": "test", "default": {
        "rules": [block("podSecurityStandard", "level", "baseline")],
        "exceptions": [platform_until("2025-06-01T00:00:00Z")],
    }}));
    let d = eval(&p, &pod_of(vec![privileged("agent", PLATFORM)]));
    let v = only_violation(&d);
    assert_eq!(v.checks, vec!["privileged"]);
    assert!(v.message.contains(": privileged ("), "{}", v.message);
    assert!(
        v.message.ends_with("; exception expired at 2025-06-01T00:00:00Z."),
        "{}",
        v.message
    );
}

/// A policy whose `dev` namespaced definition inherits the default's exceptions, and whose
/// `ops` one has its own.
fn layered() -> CompiledPolicy {
    let rules = json!([block("containerSecurityContext", "privileged", "true")]);
    let mut own = exception("imagePath", "starts-with", "registry.example.com/");
    own["expiresAt"] = json!("2025-07-01T00:00:00Z");
    compile(&json!({
        "name": "layered",
        "default": {
            "rules": rules,
            "exceptions": [platform_until("2025-06-01T12:00:00Z")],
        },
        "namespaced": [
            {"name": "dev", "namespaces": ["dev"], "rules": rules},
            {"name": "ops", "namespaces": ["ops"], "rules": rules, "exceptions": [own]},
        ]
    }))
}

#[test]
fn a_namespaced_definition_inherits_the_expiry_of_the_defaults_exceptions() {
    let p = layered();
    let in_dev = pod_in("dev", json!({"containers": [privileged("agent", PLATFORM)]}));
    let d = eval(&p, &in_dev);
    assert_blocks(&d);
    assert!(
        only_violation(&d)
            .message
            .ends_with("(block): exception expired at 2025-06-01T12:00:00Z."),
        "{}",
        only_violation(&d).message
    );
    // Before the expiry, the inherited exception held.
    let before = EvalContext::offline(datetime!(2025-06-01 11:59:59 UTC));
    let subject = &common::subject(&in_dev);
    assert!(p.evaluate(subject, &before).violations.is_empty());
    // `ops` has its own exception, holding until July.
    assert_clean(&eval(
        &p,
        &pod_in("ops", json!({"containers": [privileged("agent", PLATFORM)]})),
    ));
    let july = EvalContext::offline(datetime!(2025-07-01 00:00 UTC));
    let ops = common::subject(&pod_in("ops", json!({"containers": [privileged("agent", PLATFORM)]})));
    let d = p.evaluate(&ops, &july);
    assert!(
        only_violation(&d)
            .message
            .ends_with("(block): exception expired at 2025-07-01T00:00:00Z."),
        "{}",
        only_violation(&d).message
    );
}

#[test]
fn exception_expiries_lists_every_definitions_instants_once_soonest_first() {
    let p = layered();
    assert_eq!(
        p.exception_expiries(),
        vec![datetime!(2025-06-01 12:00 UTC), datetime!(2025-07-01 00:00 UTC)]
    );
    let none = policy_excepting(vec![exception("registry", "equals", "registry.example.com")]);
    assert!(none.exception_expiries().is_empty());
    // Given with an offset: the same instant.
    let offset = policy_excepting(vec![
        platform_until("2025-06-01T14:00:00+02:00"),
        platform_until("2025-06-01T12:00:00Z"),
    ]);
    assert_eq!(offset.exception_expiries(), vec![datetime!(2025-06-01 12:00 UTC)]);
}

// ---------------------------------------------------------------------------------------
// The document: validation and round trip
// ---------------------------------------------------------------------------------------

fn errors_of(doc: &Value) -> Vec<(String, String)> {
    let parsed = PolicyDocument::parse(&doc.to_string()).unwrap();
    match validate(&parsed) {
        Ok(_) => panic!("accepted: {doc:#}"),
        Err(PolicyError::Invalid(list)) => list.into_iter().map(|e| (e.path, e.message)).collect(),
        Err(e) => panic!("not a validation error: {e}"),
    }
}

#[test]
fn a_bad_expiry_is_refused_at_its_path() {
    for bad in [
        "2027-03-31",
        "2027-03-31T00:00:00",
        "2027-02-30T00:00:00Z",
        "tomorrow",
        "",
    ] {
        let mut e = exception("registry", "equals", "r.example.com");
        e["expiresAt"] = json!(bad);
        let doc = json!({"name": "p", "default": {"rules": [], "exceptions": [e]}});
        let errors = errors_of(&doc);
        assert_eq!(errors.len(), 1, "{bad:?}: {errors:?}");
        assert_eq!(errors[0].0, "default.exceptions[0].expiresAt", "{bad:?}");
        assert!(
            errors[0]
                .1
                .starts_with(&format!("{bad:?} is not an RFC 3339 timestamp")),
            "{bad:?}: {}",
            errors[0].1
        );
    }
    // A namespaced definition's own exception, reported with its path.
    let mut e = exception("registry", "equals", "r.example.com");
    e["expiresAt"] = json!("next week");
    let doc = json!({"name": "p", "default": {"rules": []}, "namespaced": [
        {"name": "dev", "namespaces": ["dev"], "rules": [], "exceptions": [exception("tag", "equals", "1"), e]}
    ]});
    assert_eq!(errors_of(&doc)[0].0, "namespaced[0].exceptions[1].expiresAt");
}

#[test]
fn a_reason_over_256_characters_is_refused_and_256_are_accepted() {
    let with_reason = |reason: String| {
        let mut e = exception("registry", "equals", "r.example.com");
        e["reason"] = json!(reason);
        json!({"name": "p", "default": {"rules": [], "exceptions": [e]}})
    };
    // Characters, not bytes: 256 two-byte characters are fine.
    let ok = with_reason("é".repeat(256));
    validate(&PolicyDocument::parse(&ok.to_string()).unwrap()).unwrap();
    let errors = errors_of(&with_reason("x".repeat(257)));
    assert_eq!(
        errors,
        vec![(
            "default.exceptions[0].reason".to_owned(),
            "must be at most 256 characters, got 257".to_owned()
        )]
    );
    // Both problems of one exception are reported together.
    let mut doc = with_reason("x".repeat(300));
    doc["default"]["exceptions"][0]["expiresAt"] = json!("soon");
    let paths: Vec<String> = errors_of(&doc).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        paths,
        vec!["default.exceptions[0].expiresAt", "default.exceptions[0].reason"]
    );
}

#[test]
fn expiry_and_reason_round_trip_as_written_in_json_and_yaml() {
    let doc = json!({"name": "p", "default": {"rules": [], "exceptions": [{
        "type": "imagePath",
        "statement": statement(&[("starts-with", "registry.example.com/platform/")]),
        "namespaces": ["ops"],
        "expiresAt": "2027-03-31T02:00:00+02:00",
        "reason": "platform images, ticket SEC-142",
    }]}});
    let parsed = PolicyDocument::parse(&doc.to_string()).unwrap();
    assert_eq!(serde_json::to_value(&parsed).unwrap(), doc);
    let valid = validate(&parsed).unwrap();
    let e = &valid.default.exceptions.as_ref().unwrap()[0];
    assert_eq!(e.expires_at, Some(datetime!(2027-03-31 00:00 UTC)));
    assert_eq!(e.reason.as_deref(), Some("platform images, ticket SEC-142"));
    assert!(e.holds_at(datetime!(2027-03-30 23:59:59 UTC)));
    assert!(!e.holds_at(datetime!(2027-03-31 00:00 UTC)));

    let yaml = r#"
name: p
default:
  rules: []
  exceptions:
    - type: imagePath
      statement: {properties: [{key: starts-with, value: "registry.example.com/platform/"}]}
      namespaces: [ops]
      expiresAt: "2027-03-31T02:00:00+02:00"
      reason: "platform images, ticket SEC-142"
"#;
    assert_eq!(PolicyDocument::parse(yaml).unwrap(), parsed);
    // Absent fields stay absent.
    let plain = json!({"name": "p", "default": {"rules": [], "exceptions": [exception("tag", "equals", "1")]}});
    let parsed = PolicyDocument::parse(&plain.to_string()).unwrap();
    assert_eq!(serde_json::to_value(&parsed).unwrap(), plain);
    assert_eq!(NOW, datetime!(2025-06-01 12:00 UTC), "the tests' `now`");
}

#[test]
fn an_added_ephemeral_container_is_judged_with_the_note_and_without_pod_level_rules() {
    // Every container of the pod matches the expired exception, but an ephemeral-container
    // update judges only the added container, never pod-level rules.
    let p = policy_excepting(vec![platform_until("2025-06-01T00:00:00Z")]);
    let base = json!({"hostNetwork": true, "containers": [privileged("agent", PLATFORM)]});
    let old = pod(base.clone());
    let mut new = pod(base);
    new["spec"]["ephemeralContainers"] = json!([privileged("debug", "registry.example.com/tools/debug:1")]);
    let mut req = common::request("UPDATE", "", "Pod", "default", new, old);
    req["subResource"] = json!("ephemeralcontainers");
    let d = eval(&p, &common::review(req));
    assert_eq!(
        only_violation(&d).message,
        r#"containerSecurityContext violates rule with properties { privileged:true } in container(s) "debug" (block): exception expired at 2025-06-01T00:00:00Z."#
    );
}
