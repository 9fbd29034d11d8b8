//! The impact preview of a draft policy: what it shows is what applying the draft then does.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "support/pods.rs"]
mod pods;

use portcullis_continuous::findings::{ClusterFindings, Order};
use portcullis_continuous::inventory::PodProjection;
use portcullis_continuous::preview::{preview, reevaluate};
use portcullis_engine::evaluate::{CompiledPolicy, EvalContext};
use time::macros::datetime;

/// The benchmark policy made stricter here and looser there: `allowPrivilegeEscalation`
/// isolates instead of logging, the vulnerability threshold moves (another rule), unscanned
/// images are no longer a finding.
fn draft() -> CompiledPolicy {
    let text = pods::POLICY
        .replace(
            "mitigation: log\n      statement: {properties: [{key: allowPrivilegeEscalation",
            "mitigation: isolate\n      statement: {properties: [{key: allowPrivilegeEscalation",
        )
        .replace("{key: max-severity, value: high}", "{key: max-severity, value: medium}")
        .replace(
            "    - type: unscannedImage\n      mitigation: log\n      statement: {properties: [{key: days, value: \"7\"}]}\n",
            "",
        );
    assert_ne!(text, pods::POLICY);
    CompiledPolicy::from_text(&text).unwrap()
}

#[test]
fn the_preview_of_a_draft_is_what_applying_it_then_does_and_changes_nothing() {
    let json = pods::running_pods(400);
    let scans = pods::scan_store(&json);
    let inventory: Vec<PodProjection> = json
        .iter()
        .map(|j| PodProjection::from_pod_json(j.as_bytes()).unwrap())
        .collect();
    let current = CompiledPolicy::from_text(pods::POLICY).unwrap();
    let t0 = EvalContext {
        scans: &scans,
        ..EvalContext::offline(datetime!(2026-12-07 12:00 UTC))
    };
    let mut findings = ClusterFindings::default();
    let applied = reevaluate("prod-eu", &inventory, &mut findings, &current, &t0);
    assert!(!applied.opened.is_empty());

    // An hour later, ten pods are gone and a draft is previewed.
    let live = &inventory[..390];
    let draft = draft();
    let t1 = EvalContext {
        scans: &scans,
        ..EvalContext::offline(datetime!(2026-12-07 13:00 UTC))
    };
    let before = findings.clone();
    let shown = preview("prod-eu", live, &findings, &draft, &t1);
    assert_eq!(findings, before, "a preview changes nothing");

    let done = reevaluate("prod-eu", live, &mut findings, &draft, &t1);
    assert_eq!(shown.opened, done.opened);
    assert_eq!(shown.changed, done.changed);
    assert_eq!(shown.resolved, done.resolved);
    assert_eq!(shown.commands, done.commands);

    // Every kind of change was compared.
    let rules =
        |fs: &[portcullis_continuous::findings::Finding], rule: &str| fs.iter().filter(|f| f.rule.0 == rule).count();
    assert!(rules(&shown.opened, "vulnerabilities { max-severity:medium }") > 0);
    assert!(rules(&shown.resolved, "vulnerabilities { max-severity:high }") > 0);
    assert!(rules(&shown.resolved, "unscannedImage { days:7 }") > 0);
    assert!(
        rules(
            &shown.changed,
            "containerSecurityContext { allowPrivilegeEscalation:true }"
        ) > 0
    );
    let gone: Vec<&str> = inventory[390..].iter().map(PodProjection::uid).collect();
    assert!(
        shown.resolved.iter().any(|f| gone.contains(&f.uid.as_str())),
        "findings of pods gone resolve"
    );
    assert!(shown.commands.iter().any(|c| matches!(c.order, Order::Isolate { .. })));
}
