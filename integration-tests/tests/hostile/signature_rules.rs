//! Finding 0: a signature rule that cannot be judged never passes silently. Admission has no
//! signature verifier yet, so every image signature rule that applies is not judged: a
//! `block` rule is a failed stage (the cluster's failure mode decides, POLICY.md section 4,
//! point 6), a `log` rule only warns, and the answer names the rules and why. The same holds
//! for a verifier that fails, misses its deadline or has no verdict. Another tenant without
//! signature rules is judged as before, and its reviews never ask the verifier. Likewise the
//! digest stage is asked only where a rule reads digests, and one registry down leaves only
//! its images to the failure mode.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_admission::testing::{StackOptions, TestStack};
use portcullis_admission::{
    AdmissionOptions, BoxFuture, DigestStage, Hooks, ImageToVerify, SignatureAnswers, SignatureStage,
};
use portcullis_engine::evaluate::{DigestLookup, VerdictMap};
use portcullis_integration_tests::admission::{
    Answer, Env, container, create_pod, host_network, pod, pod_spec, policy, review_raw,
};
use portcullis_integration_tests::store::{Api, by_name};
use portcullis_proto::admission::v1 as pa;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::policystore::v1 as pb;
use portcullis_server::Mode;
use portcullis_test_kit::docs::attestor_doc;
use serde_json::{Value, json};

/// A policy blocking hostNetwork, with a `block` signature rule for registry.example.com and
/// a `log` one for ghcr.io, both requiring the attestor `release`.
fn signed_policy() -> String {
    let mut doc = policy("signed", json!([host_network("block")]));
    let rule = |name: &str, action: &str, registry: &str| {
        json!({
            "name": name, "action": action, "attestors": {"all": ["release"]},
            "conditions": [{"type": "match", "resourceFilter": "registry", "operator": "equals",
                            "value": registry}]
        })
    };
    doc["default"]["imageVerification"] = json!([
        rule("signed", "block", "registry.example.com"),
        rule("audited", "log", "ghcr.io"),
    ]);
    doc.to_string()
}

fn pod_with(image: &str) -> Value {
    create_pod(pod(
        "web",
        "apps",
        pod_spec(false, vec![container("app", image, false)]),
    ))
}

async fn set_failure_mode(admin: &mut Api, cluster: &str, mode: pc::FailureMode) {
    let req = admin.req(pb::UpdateClusterSettingsRequest {
        cluster: by_name(cluster),
        settings: Some(pb::ClusterSettings {
            failure_mode: mode as i32,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["failure_mode".into()],
        }),
        ..Default::default()
    });
    admin.clusters.update_cluster_settings(req).await.unwrap();
}

/// The default tenant, with the signed policy on a fail-closed cluster `closed`, and tenant
/// `tenant-b`, without signature rules, on a fail-closed cluster `b-closed`.
struct Tenants {
    /// The default tenant's admin.
    admin: Api,
    closed: pb::RegisterClusterResponse,
    b_cluster: pb::RegisterClusterResponse,
}

impl Tenants {
    async fn set_up(stack: &TestStack) -> Tenants {
        let mut admin = Api::new(&stack.store, &stack.store.admin_key).await;
        admin.create_attestor(&attestor_doc("release")).await.unwrap();
        admin.create_policy(&signed_policy()).await.unwrap();
        let closed = admin.register_cluster("closed", by_name("signed")).await.unwrap();
        // Set before the cluster is first reviewed: the first review fetches its settings.
        set_failure_mode(&mut admin, "closed", pc::FailureMode::FailClosed).await;
        let mut operator = admin.with_key(&stack.store.operator_key);
        let mut b = admin.with_key(&operator.create_tenant("tenant-b").await.unwrap());
        b.create_policy(&policy("plain", json!([host_network("block")])).to_string())
            .await
            .unwrap();
        let b_cluster = b.register_cluster("b-closed", by_name("plain")).await.unwrap();
        set_failure_mode(&mut b, "b-closed", pc::FailureMode::FailClosed).await;
        Tenants {
            admin,
            closed,
            b_cluster,
        }
    }
}

/// Reviews `review` with `key` (a connector key, for its own cluster) on replica 0.
async fn judge(stack: &TestStack, key: &str, review: &Value) -> Answer {
    let channel = stack.channel(0).await.unwrap();
    let mut client = pa::admission_service_client::AdmissionServiceClient::new(channel);
    review_raw(&mut client, key, None, review.to_string().into_bytes())
        .await
        .unwrap_or_else(|s| panic!("review failed: {s:?}"))
}

/// The one rule an answer lists as not judged.
fn only_not_judged(answer: &Answer) -> &pa::UnjudgedRule {
    match answer.decision.not_judged.as_slice() {
        [one] => one,
        other => panic!("expected one rule not judged, got {other:?}; answer {:?}", answer.json),
    }
}

pub async fn unjudged_signature_rules_follow_the_failure_mode(mode: Mode) {
    let stack = TestStack::start(StackOptions::new(mode)).await.unwrap();
    let Tenants {
        mut admin,
        closed,
        b_cluster,
    } = Tenants::set_up(&stack).await;
    let open = admin.register_cluster("open", by_name("signed")).await.unwrap();
    set_failure_mode(&mut admin, "open", pc::FailureMode::FailOpen).await;

    let signed_image = pod_with("registry.example.com/team/app:1.0");

    // Fail-closed: the block rule cannot be judged, so the pod is denied, saying why.
    let answer = judge(&stack, &closed.connector_key, &signed_image).await;
    assert!(
        !answer.allowed(),
        "a block signature rule that cannot be judged: {:?}",
        answer.json
    );
    assert_eq!(answer.decision.basis, pa::DecisionBasis::FailClosed as i32);
    let rule = only_not_judged(&answer);
    assert_eq!(rule.rule, "signed");
    assert_eq!(rule.action, pc::Action::Block as i32);
    assert_eq!(rule.image, "registry.example.com/team/app:1.0");
    assert_eq!(rule.containers, ["app"]);
    assert_eq!(rule.attestors, ["release"]);
    assert!(rule.reason.contains("no signature verifier"), "{rule:?}");
    assert!(
        answer.message().contains("\"signed\"") && answer.message().contains("not judged"),
        "the status message names the rule: {:?}",
        answer.message()
    );
    assert!(
        answer
            .warnings()
            .iter()
            .any(|w| w.contains("\"signed\"") && w.contains("not judged")),
        "{:?}",
        answer.warnings()
    );
    assert!(
        answer.decision.degraded.iter().any(|d| d.starts_with("signature: ")),
        "{:?}",
        answer.decision.degraded
    );

    // Fail-open: admitted, with the same rule listed and a warning.
    let answer = judge(&stack, &open.connector_key, &signed_image).await;
    assert!(answer.allowed(), "{:?}", answer.json);
    assert_eq!(answer.decision.basis, pa::DecisionBasis::FailOpen as i32);
    assert_eq!(only_not_judged(&answer).rule, "signed");
    let warnings = answer.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("\"signed\"") && w.contains("not judged")),
        "{warnings:?}"
    );
    assert!(warnings.iter().any(|w| w.contains("(fail-open)")), "{warnings:?}");

    // A log rule that cannot be judged only warns, even on the fail-closed cluster.
    let answer = judge(&stack, &closed.connector_key, &pod_with("ghcr.io/team/tool:2")).await;
    assert!(answer.allowed(), "{:?}", answer.json);
    assert_eq!(answer.decision.basis, pa::DecisionBasis::Evaluated as i32);
    assert!(answer.decision.degraded.is_empty(), "{:?}", answer.decision.degraded);
    let rule = only_not_judged(&answer);
    assert_eq!((rule.rule.as_str(), rule.action), ("audited", pc::Action::Log as i32));
    assert!(
        answer.warnings().iter().any(|w| w.contains("\"audited\"")),
        "{:?}",
        answer.warnings()
    );

    // An image no signature rule applies to is judged as before.
    let answer = judge(&stack, &closed.connector_key, &pod_with("docker.io/library/nginx:1.27")).await;
    assert!(answer.allowed(), "{:?}", answer.json);
    assert_eq!(answer.decision.basis, pa::DecisionBasis::Evaluated as i32);
    assert!(answer.decision.not_judged.is_empty());
    assert!(answer.warnings().is_empty(), "{:?}", answer.warnings());

    // The other tenant is served normally: no signature rules, nothing degraded.
    let answer = judge(&stack, &b_cluster.connector_key, &signed_image).await;
    assert!(answer.allowed(), "{:?}", answer.json);
    assert_eq!(answer.decision.basis, pa::DecisionBasis::Evaluated as i32);
    assert!(answer.decision.not_judged.is_empty());
    assert!(answer.warnings().is_empty(), "{:?}", answer.warnings());
    let host_network_pod = create_pod(pod(
        "web",
        "apps",
        pod_spec(true, vec![container("app", "registry.example.com/team/app:1.0", false)]),
    ));
    let answer = judge(&stack, &b_cluster.connector_key, &host_network_pod).await;
    assert!(!answer.allowed(), "its own rule still blocks: {:?}", answer.json);
    assert_eq!(answer.decision.basis, pa::DecisionBasis::Evaluated as i32);
    crate::report::row(
        "0",
        "a block signature rule with no signature verifier",
        "listed in not_judged and warnings; fail-closed denied, fail-open allowed; a log rule warned",
        "another tenant without signature rules judged as before, no warning",
    );
}

/// A signature verifier by image path: `/good/` verified by `release`, `/broken/` an error,
/// `/slow/` never answers, anything else no verdict. It records the tenants that asked.
#[derive(Default)]
struct StubVerifier {
    asked_by: Mutex<Vec<String>>,
}

impl SignatureStage for StubVerifier {
    fn verify<'a>(
        &'a self,
        tenant: &'a str,
        _cluster_id: &'a str,
        images: &'a [ImageToVerify],
    ) -> BoxFuture<'a, Result<SignatureAnswers, String>> {
        self.asked_by.lock().unwrap().push(tenant.to_owned());
        Box::pin(async move {
            let image = images.first().map(|i| i.image.clone()).unwrap_or_default();
            if image.contains("/broken/") {
                Err("registry unreachable".to_owned())
            } else if image.contains("/slow/") {
                std::future::pending().await
            } else if image.contains("/good/") {
                let verdicts = HashMap::from([("release".to_owned(), true)]);
                Ok(SignatureAnswers {
                    verdicts: VerdictMap(HashMap::from([(image, verdicts)])),
                    records: Vec::new(),
                })
            } else {
                Ok(SignatureAnswers::default())
            }
        })
    }
}

pub async fn a_verifier_that_cannot_answer_leaves_rules_not_judged(mode: Mode) {
    let verifier = Arc::new(StubVerifier::default());
    let options = StackOptions {
        admission: AdmissionOptions {
            signature_deadline: Duration::from_millis(300),
            ..AdmissionOptions::default()
        },
        hooks: Hooks {
            digests: None,
            signatures: Some(verifier.clone()),
        },
        ..StackOptions::new(mode)
    };
    let stack = TestStack::start(options).await.unwrap();
    let Tenants { closed, b_cluster, .. } = Tenants::set_up(&stack).await;

    // Verified: judged, admitted, nothing reported.
    let answer = judge(
        &stack,
        &closed.connector_key,
        &pod_with("registry.example.com/good/app:1"),
    )
    .await;
    assert!(answer.allowed(), "{:?}", answer.json);
    assert_eq!(answer.decision.basis, pa::DecisionBasis::Evaluated as i32);
    assert!(
        answer.decision.not_judged.is_empty(),
        "{:?}",
        answer.decision.not_judged
    );

    // No verdict is not judged, for a digest and for a tag whose digest nobody resolved
    // (no digest stage here) alike: an unknown digest says nothing of the image.
    let digest = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for (image, reason) in [
        (
            "broken/app:1".to_owned(),
            "signature verifier failed: registry unreachable",
        ),
        ("slow/app:1".to_owned(), "signature verifier missed its deadline"),
        (format!("unknown/app@{digest}"), "no verdict for attestor(s) release"),
        ("unknown/app:1".to_owned(), "no verdict for attestor(s) release"),
    ] {
        let path = image.clone();
        let image = format!("registry.example.com/{image}");
        let answer = judge(&stack, &closed.connector_key, &pod_with(&image)).await;
        assert!(!answer.allowed(), "{path}: {:?}", answer.json);
        assert_eq!(answer.decision.basis, pa::DecisionBasis::FailClosed as i32, "{path}");
        let rule = only_not_judged(&answer);
        assert_eq!((rule.rule.as_str(), rule.image.as_str()), ("signed", image.as_str()));
        assert_eq!(rule.reason, reason, "{path}");
        assert!(answer.message().contains(reason), "{path}: {:?}", answer.message());
    }

    // The other tenant is judged as before, and its reviews (no signature rule) never ask.
    let asked_before = verifier.asked_by.lock().unwrap().len();
    let answer = judge(
        &stack,
        &b_cluster.connector_key,
        &pod_with("registry.example.com/slow/app:1"),
    )
    .await;
    assert!(answer.allowed(), "{:?}", answer.json);
    assert_eq!(answer.decision.basis, pa::DecisionBasis::Evaluated as i32);
    assert!(answer.decision.not_judged.is_empty());
    let asked = verifier.asked_by.lock().unwrap().clone();
    assert_eq!(asked.len(), asked_before, "asked by {asked:?}");
    assert!(!asked.iter().any(|t| t == "tenant-b"), "{asked:?}");
    crate::report::row(
        "0",
        "a signature verifier that errs or never answers",
        "the rule not judged, with the error or the missed deadline as its reason",
        "another tenant judged as before, its reviews never asking the verifier",
    );
}

/// A digest stage that records what it is asked and answers by path: `/gone/` is not in the
/// registry, `/down/` is on a registry that cannot be reached, the rest is found.
#[derive(Default)]
struct StubResolver {
    asked: Mutex<Vec<Vec<String>>>,
}

const RESOLVED: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

impl DigestStage for StubResolver {
    fn resolve<'a>(
        &'a self,
        _tenant: &'a str,
        _cluster_id: &'a str,
        references: &'a [String],
    ) -> BoxFuture<'a, HashMap<String, DigestLookup>> {
        self.asked.lock().unwrap().push(references.to_vec());
        Box::pin(async move {
            references
                .iter()
                .map(|r| {
                    let answer = if r.contains("/gone/") {
                        DigestLookup::NotFound
                    } else if r.contains("/down/") {
                        DigestLookup::Unavailable("registry unreachable".into())
                    } else {
                        DigestLookup::Found(RESOLVED.into())
                    };
                    (r.clone(), answer)
                })
                .collect()
        })
    }
}

/// Digests are asked for only where a rule reads them (a namespace whose definition has no
/// scan or signature rule never asks, nor one the cluster excludes), only for tag-only references, each once; and one
/// registry down leaves only its image to the failure mode.
pub async fn digests_are_asked_only_when_rules_read_them(mode: Mode) {
    let resolver = Arc::new(StubResolver::default());
    let options = StackOptions {
        hooks: Hooks {
            digests: Some(resolver.clone()),
            signatures: None,
        },
        ..StackOptions::new(mode)
    };
    let doc = json!({
        "name": "scans",
        "default": {"rules": [{"type": "vulnerabilities", "action": "block",
                               "statement": {"properties": [{"key": "max-severity", "value": "high"}]}}]},
        "namespaced": [{"name": "plain", "namespaces": ["plain"], "rules": [host_network("block")]}]
    });
    let env = Env::start(options, &doc.to_string()).await;
    let digest = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let by_digest = format!("registry.example.com/pinned/app@{digest}");
    let review = |namespace: &str, images: &[&str]| {
        let containers = images
            .iter()
            .enumerate()
            .map(|(i, image)| container(&format!("c{i}"), image, false))
            .collect();
        create_pod(pod("web", namespace, pod_spec(false, containers)))
    };

    // No rule reads digests in `plain`: nothing asked.
    let answer = env.judge(&review("plain", &["registry.example.com/app:1"])).await;
    assert!(answer.allowed(), "{answer:?}");
    assert!(resolver.asked.lock().unwrap().is_empty());

    // A namespace the cluster excludes (kube-system by default) is allowed without
    // evaluation: nothing asked there either.
    let answer = env.judge(&review("kube-system", &["registry.example.com/app:1"])).await;
    assert!(answer.allowed(), "{answer:?}");
    assert_eq!(
        answer.decision.basis,
        pa::DecisionBasis::ExcludedNamespace as i32,
        "{answer:?}"
    );
    assert!(resolver.asked.lock().unwrap().is_empty());

    // The default definition reads scans: the tag-only references, each once.
    let tags = ["registry.example.com/app:1", "registry.example.com/gone/app:1"];
    let answer = env
        .judge(&review("apps", &[tags[0], &by_digest, tags[1], tags[0]]))
        .await;
    assert!(answer.allowed(), "unscanned, and not in the registry: {answer:?}");
    assert_eq!(answer.decision.basis, pa::DecisionBasis::Evaluated as i32);
    assert_eq!(
        resolver.asked.lock().unwrap().as_slice(),
        [tags.map(str::to_owned).to_vec()]
    );
    let digests: Vec<(&str, &str)> = answer
        .decision
        .digests
        .iter()
        .map(|d| (d.image.as_str(), d.digest.as_str()))
        .collect();
    assert!(digests.contains(&(tags[0], RESOLVED)), "{digests:?}");
    assert!(digests.contains(&(by_digest.as_str(), digest)), "{digests:?}");

    // One registry down: its image alone is unavailable, and the cluster's failure mode
    // (fail-open, the default) decides, saying why.
    let answer = env
        .judge(&review(
            "apps",
            &["registry.example.com/app:1", "registry.example.com/down/app:1"],
        ))
        .await;
    assert!(answer.allowed(), "{answer:?}");
    assert_eq!(answer.decision.basis, pa::DecisionBasis::FailOpen as i32, "{answer:?}");
    assert_eq!(
        answer.decision.degraded,
        ["digest-resolution: registry unreachable"],
        "{answer:?}"
    );
    assert!(
        answer.decision.digests.iter().any(|d| d.digest == RESOLVED),
        "the other image is resolved: {answer:?}"
    );
}

portcullis_test_kit::both! {
    embedded: portcullis_server::Mode::Embedded,
    distributed: portcullis_server::Mode::Distributed;
    unjudged_signature_rules_follow_the_failure_mode,
    a_verifier_that_cannot_answer_leaves_rules_not_judged,
    digests_are_asked_only_when_rules_read_them,
}
