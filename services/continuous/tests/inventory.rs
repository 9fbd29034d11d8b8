//! The inventory's projection of realistic running pods: small enough for one row, and
//! judged by the engine exactly as the full pod is.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "support/pods.rs"]
mod pods;

use std::collections::BTreeSet;

use portcullis_continuous::inventory::PodProjection;
use portcullis_continuous::preview::judge;
use portcullis_engine::evaluate::{CompiledPolicy, EvalContext};
use portcullis_engine::input::parse_document;
use portcullis_engine::policy::Mitigation;
use time::macros::datetime;

const PODS: usize = 600;

#[test]
fn a_realistic_pods_projection_is_at_most_2_kb() {
    let pods = pods::running_pods(PODS);
    let mut sizes: Vec<(usize, usize)> = pods
        .iter()
        .map(|json| {
            (
                PodProjection::from_pod_json(json.as_bytes())
                    .unwrap()
                    .to_row()
                    .unwrap()
                    .len(),
                json.len(),
            )
        })
        .collect();
    sizes.sort_unstable();
    let (largest, its_pod) = sizes[sizes.len() - 1];
    let median = sizes[sizes.len() / 2].0;
    let p95 = sizes[sizes.len() * 95 / 100].0;
    let pod_median = {
        let mut p: Vec<usize> = sizes.iter().map(|s| s.1).collect();
        p.sort_unstable();
        p[p.len() / 2]
    };
    eprintln!(
        "projection of {PODS} realistic running pods: median {median} bytes, 95th percentile {p95}, largest \
         {largest} (its pod: {its_pod} bytes of JSON; median pod {pod_median} bytes)"
    );
    assert!(
        pod_median > 4 * median,
        "the pods are realistic: several times larger than their rows"
    );
    assert!(p95 <= 2048, "95th percentile {p95} bytes");
    // The largest are pods of 7 containers (4, 2 init and a debug container), each image
    // with its 71-character digest: about 2 KB still.
    assert!(largest <= 2560, "largest projection {largest} bytes");
}

#[test]
fn a_projection_is_judged_exactly_as_the_full_pod() {
    let pods = pods::running_pods(PODS);
    let policy = CompiledPolicy::from_text(pods::POLICY).unwrap();
    let scans = pods::scan_store(&pods);
    let trusted = [portcullis_engine::evaluate::TrustedImage::parse("docker.io/library/redis").unwrap()];
    let ctx = EvalContext {
        scans: &scans,
        trusted_images: &trusted,
        ..EvalContext::offline(datetime!(2026-12-07 12:00 UTC))
    };
    let mut rule_types = BTreeSet::new();
    let mut mitigations = BTreeSet::new();
    let mut several_types = 0;
    for json in &pods {
        let full = parse_document(json.as_bytes()).unwrap().pop().unwrap();
        let expected = policy.evaluate_running(&full, &ctx);
        let projection = PodProjection::from_pod_json(json.as_bytes()).unwrap();
        // What the engine reads of the spec is kept whole.
        assert_eq!(Some(projection.spec()), full.object.as_ref().unwrap().spec.as_ref());
        assert_eq!(judge(&policy, &ctx, &projection), expected, "pod {}", projection.name());
        // The row leaves out what holds nothing (ports without a host port, probes naming
        // no host); read back, it is judged the same and writes the same row.
        let row = projection.to_row().unwrap();
        let stored = PodProjection::from_row(&row).unwrap();
        assert_eq!(stored.to_row().unwrap(), row);
        assert_eq!(
            (stored.uid(), &stored.labels, &stored.owners),
            (projection.uid(), &projection.labels, &projection.owners)
        );
        assert_eq!(
            judge(&policy, &ctx, &stored),
            expected,
            "pod {} read from its row",
            projection.name()
        );

        let types: BTreeSet<&str> = expected.violations.iter().map(|v| v.rule_type).collect();
        if types.len() >= 3 {
            several_types += 1;
        }
        rule_types.extend(types);
        mitigations.insert(expected.mitigation);
    }
    // The comparison means something: violations of every kind of rule were compared.
    let expected_types: BTreeSet<&str> = [
        "podSecurityStandard",
        "podSecurityContext",
        "containerSecurityContext",
        "tag",
        "imagePath",
        "vulnerabilities",
        "malware",
        "unscannedImage",
    ]
    .into_iter()
    .collect();
    assert!(rule_types.is_superset(&expected_types), "{rule_types:?}");
    assert!(
        several_types > PODS / 10,
        "{several_types} pods with violations of 3 or more rule types"
    );
    assert_eq!(
        mitigations,
        [
            Mitigation::None,
            Mitigation::Log,
            Mitigation::Isolate,
            Mitigation::Terminate
        ]
        .into_iter()
        .collect()
    );
}

#[test]
fn every_realistic_pod_projects_and_garbage_does_not_panic() {
    let pods = pods::running_pods(50);
    for json in &pods {
        let bytes = json.as_bytes();
        // Every prefix of a pod is refused with an error, never a panic.
        for cut in (0..bytes.len()).step_by(97) {
            assert!(PodProjection::from_pod_json(&bytes[..cut]).is_err());
        }
    }
    assert!(PodProjection::from_pod_json(&[0xff, 0xfe]).is_err());
}
