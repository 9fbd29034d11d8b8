//! Admission operations (POLICY.md section 4, "Operations"): CREATE, UPDATE (pod spec
//! changed or not, object being deleted), DELETE, CONNECT to exec/attach/portforward,
//! subresources, and UPDATE of pods/ephemeralcontainers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use portcullis_engine::evaluate::{CompiledPolicy, EvalContext, NotEvaluated, Verdict};
use portcullis_engine::input::Operation;
use serde_json::{Value, json};

fn strict() -> CompiledPolicy {
    policy(vec![
        block("containerSecurityContext", "privileged", "true"),
        block("podSecurityContext", "hostNetwork", "true"),
        block("podexec", "podExec", "true"),
        block("portforward", "podPortForward", "true"),
    ])
}

fn bad_deployment() -> Value {
    workload("Deployment", json!({"containers": [privileged("app", "nginx:1.25")]}))
}

fn update(kind: &str, object: Value, old: Value) -> Value {
    review(request("UPDATE", group_of_kind(kind), kind, "default", object, old))
}

#[test]
fn create_evaluates_the_object() {
    let doc = review(request(
        "CREATE",
        "apps",
        "Deployment",
        "default",
        bad_deployment(),
        Value::Null,
    ));
    assert_eq!(subject(&doc).operation, Operation::Create);
    let d = eval(&strict(), &doc);
    assert_blocks(&d);
    assert_eq!(d.not_evaluated, None);
}

#[test]
fn update_with_an_unchanged_pod_spec_is_allowed_even_when_non_compliant() {
    let old = bad_deployment();
    // Scaling.
    let mut scaled = old.clone();
    scaled["spec"]["replicas"] = json!(5);
    // Labelling and annotating the object.
    let mut labelled = old.clone();
    labelled["metadata"]["labels"] = json!({"team": "a"});
    labelled["metadata"]["annotations"] = json!({"note": "x"});
    // Annotating the pod template (metadata, not the pod spec).
    let mut template_annotated = old.clone();
    template_annotated["spec"]["template"]["metadata"]["annotations"] =
        json!({"kubectl.kubernetes.io/restartedAt": "2025-06-01T12:00:00Z"});
    for new in [scaled, labelled, template_annotated] {
        let d = eval(&strict(), &update("Deployment", new, old.clone()));
        assert_clean(&d);
        assert_eq!(d.not_evaluated, Some(NotEvaluated::PodSpecUnchanged));
    }
    // A Pod relabelled.
    let old_pod = pod(json!({"hostNetwork": true, "containers": [privileged("app", "nginx")]}));
    let mut new_pod = old_pod.clone();
    new_pod["metadata"]["labels"] = json!({"x": "y"});
    let d = eval(&strict(), &update("Pod", new_pod, old_pod));
    assert_eq!(d.not_evaluated, Some(NotEvaluated::PodSpecUnchanged));
    assert_eq!(d.verdict, Verdict::Allow);
}

#[test]
fn update_with_a_changed_pod_spec_is_judged_even_for_fields_the_engine_does_not_read() {
    let old = bad_deployment();
    let mut new = old.clone();
    new["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{"name": "A", "value": "1"}]);
    let d = eval(&strict(), &update("Deployment", new, old.clone()));
    assert_blocks(&d);
    assert_eq!(d.not_evaluated, None);

    // A CronJob whose job template's pod spec changed.
    let old_cron = workload("CronJob", json!({"containers": [privileged("app", "nginx")]}));
    let mut new_cron = old_cron.clone();
    new_cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    assert_blocks(&eval(&strict(), &update("CronJob", new_cron.clone(), old_cron.clone())));
    // ... and one whose schedule alone changed.
    let mut rescheduled = old_cron.clone();
    rescheduled["spec"]["schedule"] = json!("0 * * * *");
    assert_eq!(
        eval(&strict(), &update("CronJob", rescheduled, old_cron)).not_evaluated,
        Some(NotEvaluated::PodSpecUnchanged)
    );

    // A compliant change stays allowed: the new object is what is judged.
    let mut fixed = old.clone();
    fixed["spec"]["template"]["spec"]["containers"][0]["securityContext"] = json!({"privileged": false});
    assert_clean(&eval(&strict(), &update("Deployment", fixed, old)));
}

#[test]
fn update_without_an_old_object_is_judged() {
    assert_blocks(&eval(&strict(), &update("Deployment", bad_deployment(), Value::Null)));
    let mut req = request("UPDATE", "apps", "Deployment", "default", bad_deployment(), Value::Null);
    req.as_object_mut().unwrap().remove("oldObject");
    assert_blocks(&eval(&strict(), &review(req)));
}

#[test]
fn update_of_an_object_being_deleted_is_allowed() {
    let old = bad_deployment();
    let mut new = old.clone();
    new["metadata"]["deletionTimestamp"] = json!("2025-06-01T12:00:00Z");
    new["metadata"]["finalizers"] = json!([]);
    new["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{"name": "A", "value": "1"}]);
    let d = eval(&strict(), &update("Deployment", new, old));
    assert_clean(&d);
    assert_eq!(d.not_evaluated, Some(NotEvaluated::BeingDeleted));
}

#[test]
fn delete_is_allowed() {
    let doc = review(request(
        "DELETE",
        "",
        "Pod",
        "default",
        Value::Null,
        pod(json!({"hostNetwork": true, "containers": [privileged("app", "nginx")]})),
    ));
    let d = eval(&strict(), &doc);
    assert_clean(&d);
    assert_eq!(d.not_evaluated, Some(NotEvaluated::Delete));
}

// ---------------------------------------------------------------------------------------
// CONNECT
// ---------------------------------------------------------------------------------------

/// A CONNECT request to `pods/<sub>` of pod `p`, as the API server sends it.
fn connect(sub: &str, namespace: &str) -> Value {
    let options = match sub {
        "exec" => "PodExecOptions",
        "attach" => "PodAttachOptions",
        "portforward" => "PodPortForwardOptions",
        _ => "PodProxyOptions",
    };
    review(json!({
        "uid": "1f5b3f4e-0000-4000-8000-000000000001",
        "kind": {"group": "", "version": "v1", "kind": options},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "subResource": sub,
        "requestKind": {"group": "", "version": "v1", "kind": options},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "requestSubResource": sub,
        "name": "p",
        "namespace": namespace,
        "operation": "CONNECT",
        "userInfo": {"username": "dev"},
        "object": {"kind": options, "apiVersion": "v1", "stdin": true, "tty": true, "container": "app", "command": ["sh"]},
        "oldObject": null,
        "dryRun": false,
        "options": null
    }))
}

#[test]
fn connect_to_exec_and_attach_is_judged_by_podexec() {
    for sub in ["exec", "attach"] {
        let doc = connect(sub, "default");
        assert_eq!(subject(&doc).operation, Operation::Connect);
        let d = eval(&strict(), &doc);
        assert_blocks(&d);
        let v = only_violation(&d);
        assert_eq!(v.rule_type, "podexec");
        assert!(v.pod_level);
        assert_eq!(
            v.message,
            r#"podexec violates rule with properties { podExec:true } in pod "p" (block)."#
        );
    }
}

#[test]
fn connect_to_portforward_is_judged_by_portforward() {
    let d = eval(&strict(), &connect("portforward", "default"));
    assert_blocks(&d);
    assert_eq!(
        only_violation(&d).message,
        r#"portforward violates rule with properties { podPortForward:true } in pod "p" (block)."#
    );
}

#[test]
fn each_connect_is_judged_by_its_own_rule_only() {
    let exec_only = policy(vec![block("podexec", "podExec", "true")]);
    let forward_only = policy(vec![rule("portforward", &[("podPortForward", "true")], "log")]);
    assert_clean(&eval(&exec_only, &connect("portforward", "default")));
    assert_clean(&eval(&forward_only, &connect("exec", "default")));
    assert_clean(&eval(&forward_only, &connect("attach", "default")));
    // A log rule warns and allows.
    let d = eval(&forward_only, &connect("portforward", "default"));
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.warnings().count(), 1);
    // Other rules never judge a CONNECT.
    let others = policy(vec![
        block("containerSecurityContext", "privileged", "true"),
        block("unscannedImage", "days", "1"),
    ]);
    assert_clean(&eval(&others, &connect("exec", "default")));
}

#[test]
fn other_connects_are_allowed() {
    let d = eval(&strict(), &connect("proxy", "default"));
    assert_clean(&d);
    assert_eq!(d.not_evaluated, Some(NotEvaluated::OtherConnect));
}

#[test]
fn the_pods_namespace_selects_the_definition_for_connect() {
    let p = compile(&json!({"name": "ns", "default": {"rules": []}, "namespaced": [
        {"name": "prod", "namespaces": ["prod"], "rules": [block("podexec", "podExec", "true")]}
    ]}));
    assert_blocks(&eval(&p, &connect("exec", "prod")));
    assert_clean(&eval(&p, &connect("exec", "dev")));
    let excluded = vec!["prod".to_owned()];
    let ctx = EvalContext {
        excluded_namespaces: &excluded,
        ..EvalContext::offline(NOW)
    };
    let d = eval_with(&p, &connect("exec", "prod"), &ctx);
    assert_eq!(d.not_evaluated, Some(NotEvaluated::NamespaceExcluded));
}

// ---------------------------------------------------------------------------------------
// Subresources
// ---------------------------------------------------------------------------------------

#[test]
fn other_subresources_are_allowed() {
    let bad_pod = pod(json!({"hostNetwork": true, "containers": [privileged("app", "nginx")]}));
    let mut status = request("UPDATE", "", "Pod", "default", bad_pod.clone(), bad_pod.clone());
    status["subResource"] = json!("status");
    let d = eval(&strict(), &review(status));
    assert_clean(&d);
    assert_eq!(d.not_evaluated, Some(NotEvaluated::Subresource));

    // Even a pod status update that changes the spec-looking content is not judged.
    let mut changed = bad_pod.clone();
    changed["spec"]["containers"][0]["image"] = json!("nginx:2");
    let mut status = request("UPDATE", "", "Pod", "default", changed, bad_pod.clone());
    status["subResource"] = json!("status");
    assert_clean(&eval(&strict(), &review(status)));

    // A scale subresource of a Deployment, and an eviction (CREATE pods/eviction).
    let mut scale = request(
        "UPDATE",
        "autoscaling",
        "Scale",
        "default",
        json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "w"}, "spec": {"replicas": 3}}),
        Value::Null,
    );
    scale["resource"] = json!({"group": "apps", "version": "v1", "resource": "deployments"});
    scale["subResource"] = json!("scale");
    let d = eval(&strict(), &review(scale));
    assert_eq!(d.verdict, Verdict::Allow);
    assert!(d.violations.is_empty() && d.not_evaluated.is_some());

    let mut eviction = request(
        "CREATE",
        "policy",
        "Eviction",
        "default",
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"}}),
        Value::Null,
    );
    eviction["resource"] = json!({"group": "", "version": "v1", "resource": "pods"});
    eviction["subResource"] = json!("eviction");
    let d = eval(&strict(), &review(eviction));
    assert_eq!(d.verdict, Verdict::Allow);
    assert!(d.violations.is_empty() && d.not_evaluated.is_some());
}

fn ephemeral_update(old_ephemeral: Vec<Value>, new_ephemeral: Vec<Value>) -> Value {
    let base = json!({"hostNetwork": true, "containers": [privileged("app", "nginx")]});
    let mut old = pod(base.clone());
    old["spec"]["ephemeralContainers"] = json!(old_ephemeral);
    let mut new = pod(base);
    new["spec"]["ephemeralContainers"] = json!(new_ephemeral);
    let mut req = request("UPDATE", "", "Pod", "default", new, old);
    req["subResource"] = json!("ephemeralcontainers");
    review(req)
}

#[test]
fn ephemeral_container_updates_judge_container_rules_on_added_containers_only() {
    let old = vec![privileged("debug1", "busybox")];
    let new = vec![
        privileged("debug1", "busybox"),
        privileged("debug2", "busybox"),
        container("debug3", "busybox"),
    ];
    let d = eval(&strict(), &ephemeral_update(old.clone(), new));
    assert_blocks(&d);
    // Neither the pod's own privileged container, nor the earlier ephemeral one, nor the
    // pod-level hostNetwork: only what the request adds.
    assert_eq!(violating_containers(&d), vec!["debug2"]);
    assert_eq!(d.violations[0].rule_type, "containerSecurityContext");

    let compliant = vec![privileged("debug1", "busybox"), container("debug3", "busybox")];
    assert_clean(&eval(&strict(), &ephemeral_update(old, compliant)));
}

#[test]
fn ephemeral_container_updates_judge_scan_and_image_rules_on_added_containers() {
    let p = policy(vec![
        block("registry", "not-equals", "registry.example.com"),
        block("unscannedImage", "days", "3"),
    ]);
    let d = eval(&p, &ephemeral_update(vec![], vec![container("debug", "busybox")]));
    assert_blocks(&d);
    assert_eq!(d.violations.len(), 2);
    assert!(d.violations.iter().all(|v| v.containers == vec!["debug"]));
}

#[test]
fn a_v1beta1_review_is_read_like_a_v1_review() {
    let mut doc = review(request(
        "CREATE",
        "",
        "Pod",
        "default",
        pod_of(vec![privileged("app", "nginx")]),
        Value::Null,
    ));
    doc["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let s = subject(&doc);
    assert_eq!(s.review_api_version, "admission.k8s.io/v1beta1");
    assert_blocks(&eval(&strict(), &doc));
}

#[test]
fn an_ephemeral_container_update_without_old_object_judges_every_ephemeral_container() {
    // The API server always sends oldObject on UPDATE; a request without it must not let
    // a privileged debug container through unjudged (every one counts as added).
    let mut new = pod(json!({"containers": [container("app", "nginx")]}));
    new["spec"]["ephemeralContainers"] = json!([privileged("debug", "busybox")]);
    for old in [Value::Null, json!("absent")] {
        let mut req = request("UPDATE", "", "Pod", "default", new.clone(), old.clone());
        if old.is_string() {
            req.as_object_mut().unwrap().remove("oldObject");
        }
        req["subResource"] = json!("ephemeralcontainers");
        let d = eval(&strict(), &review(req));
        assert_blocks(&d);
        assert_eq!(violating_containers(&d), vec!["debug"]);
    }
}
