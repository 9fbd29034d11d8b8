//! What is judged and under which definition (POLICY.md sections 2 and 4): workload kinds,
//! Lists, container lists, the namespace, exceptions, trusted images, namespaced
//! definitions, excluded namespaces, and Image Signature Verification rules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use portcullis_engine::evaluate::{
    CompiledPolicy, Decision, EvalContext, FailureMode, NotEvaluated, Signatures, TrustedImage, Verdict,
};
use portcullis_engine::input::Operation;
use portcullis_engine::policy::Action;
use serde_json::{Value, json};

const KINDS: [&str; 8] = [
    "Pod",
    "ReplicationController",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
];

fn privileged_policy() -> CompiledPolicy {
    policy(vec![block("containerSecurityContext", "privileged", "true")])
}

fn bad_spec() -> Value {
    json!({"initContainers": [container("init", "busybox")], "containers": [privileged("app", "nginx")]})
}

fn good_spec() -> Value {
    json!({"containers": [container("app", "nginx")]})
}

// ---------------------------------------------------------------------------------------
// Kinds
// ---------------------------------------------------------------------------------------

#[test]
fn every_workload_kind_is_evaluated_on_its_pod_spec_as_a_bare_object() {
    let p = privileged_policy();
    for kind in KINDS {
        let s = subject(&workload(kind, bad_spec()));
        assert_eq!(s.kind, kind);
        assert_eq!(s.group, group_of_kind(kind), "{kind}");
        assert_eq!(s.operation, Operation::Create, "a bare object is read as a CREATE");
        let d = eval(&p, &workload(kind, bad_spec()));
        assert_blocks(&d);
        assert_eq!(violating_containers(&d), vec!["app"], "{kind}");
        assert_clean(&eval(&p, &workload(kind, good_spec())));
    }
}

#[test]
fn every_workload_kind_is_evaluated_in_a_review_and_a_bare_request_without_api_version_and_kind() {
    let p = privileged_policy();
    for kind in KINDS {
        for spec in [bad_spec(), good_spec()] {
            let blocked = spec == bad_spec();
            let object = strip_type(workload(kind, spec));
            let req = request("CREATE", group_of_kind(kind), kind, "default", object, Value::Null);
            for doc in [review(req.clone()), req] {
                let s = subject(&doc);
                assert_eq!((s.group.as_str(), s.kind.as_str()), (group_of_kind(kind), kind));
                let d = eval(&p, &doc);
                assert_eq!(d.not_evaluated, None, "{kind}");
                if blocked {
                    assert_blocks(&d);
                    assert_eq!(violating_containers(&d), vec!["app"], "{kind}");
                } else {
                    assert_clean(&d);
                }
            }
        }
    }
}

#[test]
fn a_workload_kind_is_read_from_its_own_pod_spec_path_only() {
    let p = privileged_policy();
    // A Deployment with a privileged container at `spec.containers` (not its template).
    let mut d = workload("Deployment", good_spec());
    d["spec"]["containers"] = json!([privileged("stray", "nginx")]);
    assert_clean(&eval(&p, &d));
    // A CronJob's pod spec is under jobTemplate.spec.template.spec, not spec.template.spec.
    let mut c = workload("CronJob", good_spec());
    c["spec"]["template"] = json!({"spec": bad_spec()});
    assert_clean(&eval(&p, &c));
}

#[test]
fn other_kinds_are_allowed_without_evaluation() {
    let p = compile(&json!({"name": "all", "default": {"rules": [
        block("containerSecurityContext", "privileged", "true"),
        block("podSecurityContext", "hostNetwork", "true"),
        block("unscannedImage", "days", "1"),
    ]}}));
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}});
    let svc =
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}});
    // A pod spec under a kind that is not a workload is not judged either.
    let odd = json!({"apiVersion": "example.com/v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": bad_spec()});
    for doc in [cm.clone(), svc.clone(), odd] {
        let d = eval(&p, &doc);
        assert_clean(&d);
        assert_eq!(d.not_evaluated, Some(NotEvaluated::KindNotEvaluated), "{doc}");
    }
    for (kind, object) in [("ConfigMap", cm), ("Service", svc)] {
        let d = eval(
            &p,
            &review(request("CREATE", "", kind, "default", strip_type(object), Value::Null)),
        );
        assert_clean(&d);
        assert_eq!(d.not_evaluated, Some(NotEvaluated::KindNotEvaluated));
    }
}

// ---------------------------------------------------------------------------------------
// Lists and container lists
// ---------------------------------------------------------------------------------------

#[test]
fn a_list_gives_one_subject_per_item_in_order_with_nested_lists_flattened() {
    let mut first = pod_of(vec![privileged("app", "nginx")]);
    first["metadata"]["name"] = json!("first");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}});
    let mut deploy = workload("Deployment", good_spec());
    deploy["metadata"]["name"] = json!("deploy");
    let mut last = pod_of(vec![privileged("other", "nginx")]);
    last["metadata"]["name"] = json!("last");
    let inner = json!({"apiVersion": "v1", "kind": "List", "items": [deploy, {"apiVersion": "v1", "kind": "List", "items": [last]}]});
    let doc = json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": [first, cm, inner]});

    let all = subjects(&doc);
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["first", "cm", "deploy", "last"]);

    let p = privileged_policy();
    let ctx = EvalContext::offline(NOW);
    let decisions: Vec<Decision> = all.iter().map(|s| p.evaluate(s, &ctx)).collect();
    assert_eq!(decisions[0].verdict, Verdict::Block);
    assert_eq!(decisions[0].violations[0].containers, vec!["app"]);
    assert_eq!(decisions[1].not_evaluated, Some(NotEvaluated::KindNotEvaluated));
    assert_clean(&decisions[2]);
    assert_eq!(decisions[3].verdict, Verdict::Block);
    assert_eq!(decisions[3].violations[0].containers, vec!["other"]);
    // The message names the item, not the List.
    assert!(decisions[3].violations[0].message.contains(r#""other""#));
}

#[test]
fn an_empty_list_gives_no_subject() {
    assert!(subjects(&json!({"apiVersion": "v1", "kind": "List", "items": []})).is_empty());
}

#[test]
fn every_container_list_counts() {
    let p = privileged_policy();
    let one = |list: &str| {
        let mut spec = json!({"containers": [container("main", "nginx")]});
        spec[list] = json!([privileged(list, "busybox")]);
        eval(&p, &pod(spec))
    };
    for list in ["initContainers", "ephemeralContainers"] {
        let d = one(list);
        assert_blocks(&d);
        assert_eq!(violating_containers(&d), vec![list]);
    }
    let d = eval(
        &p,
        &pod(json!({
            "initContainers": [privileged("i", "busybox")],
            "containers": [privileged("c", "nginx")],
            "ephemeralContainers": [privileged("e", "busybox")]
        })),
    );
    let mut names = violating_containers(&d);
    names.sort();
    assert_eq!(names, vec!["c", "e", "i"]);
}

// ---------------------------------------------------------------------------------------
// Namespace
// ---------------------------------------------------------------------------------------

/// No default rule; privileged containers are blocked in `dev` (and `default` when asked).
fn dev_policy(also_default: bool) -> CompiledPolicy {
    let namespaces = if also_default {
        json!(["dev", "default"])
    } else {
        json!(["dev"])
    };
    compile(&json!({"name": "ns", "default": {"rules": []}, "namespaced": [
        {"name": "dev", "namespaces": namespaces, "rules": [block("containerSecurityContext", "privileged", "true")]}
    ]}))
}

fn bad_pod_with_namespace(namespace: Option<&str>) -> Value {
    let mut doc = pod_of(vec![privileged("app", "nginx")]);
    match namespace {
        Some(ns) => doc["metadata"]["namespace"] = json!(ns),
        None => {
            doc["metadata"].as_object_mut().unwrap().remove("namespace");
        }
    }
    doc
}

#[test]
fn the_namespace_is_the_requests_then_the_objects_then_default() {
    let p = dev_policy(false);
    // Bare objects: metadata.namespace, else default.
    assert_blocks(&eval(&p, &bad_pod_with_namespace(Some("dev"))));
    let s = subject(&bad_pod_with_namespace(None));
    assert_eq!(s.namespace, "default");
    assert_clean(&eval(&p, &bad_pod_with_namespace(None)));
    assert_blocks(&eval(&dev_policy(true), &bad_pod_with_namespace(None)));

    // Requests: request.namespace first.
    let req = |req_ns: &str, obj_ns: Option<&str>| {
        review(request(
            "CREATE",
            "",
            "Pod",
            req_ns,
            bad_pod_with_namespace(obj_ns),
            Value::Null,
        ))
    };
    assert_blocks(&eval(&p, &req("dev", None)));
    assert_eq!(subject(&req("dev", Some("prod"))).namespace, "dev");
    assert_blocks(&eval(&p, &req("dev", Some("prod"))));
    assert_clean(&eval(&p, &req("prod", Some("dev"))));
    // Without request.namespace: the object's, else default.
    assert_blocks(&eval(&p, &req("", Some("dev"))));
    assert_eq!(subject(&req("", None)).namespace, "default");
    assert_clean(&eval(&p, &req("", None)));
    assert_blocks(&eval(&dev_policy(true), &req("", None)));
}

#[test]
fn excluded_namespaces_are_allowed_without_evaluation() {
    let p = privileged_policy();
    let excluded = vec!["kube-system".to_owned(), "portcullis".to_owned()];
    let ctx = EvalContext {
        excluded_namespaces: &excluded,
        ..EvalContext::offline(NOW)
    };
    for ns in ["kube-system", "portcullis"] {
        let d = eval_with(&p, &bad_pod_with_namespace(Some(ns)), &ctx);
        assert_clean(&d);
        assert_eq!(d.not_evaluated, Some(NotEvaluated::NamespaceExcluded));
    }
    assert_blocks(&eval_with(&p, &bad_pod_with_namespace(Some("default")), &ctx));
    // Offline evaluation excludes nothing unless told to.
    assert_blocks(&eval(&p, &bad_pod_with_namespace(Some("kube-system"))));
}

// ---------------------------------------------------------------------------------------
// Exceptions
// ---------------------------------------------------------------------------------------

const PLATFORM: &str = "registry.example.com/platform/agent:1.0";

#[test]
fn a_container_level_rule_skips_containers_whose_image_matches_an_exception() {
    let p = policy_with_exceptions(
        vec![block("containerSecurityContext", "privileged", "true")],
        vec![exception("imagePath", "starts-with", "registry.example.com/platform/")],
    );
    let d = eval(
        &p,
        &pod_of(vec![privileged("agent", PLATFORM), privileged("app", "nginx")]),
    );
    assert_blocks(&d);
    assert_eq!(violating_containers(&d), vec!["app"]);
    assert_clean(&eval(&p, &pod_of(vec![privileged("agent", PLATFORM)])));
}

#[test]
fn exceptions_test_every_image_field_with_every_operator() {
    // (type, key, value, whether it exempts PLATFORM)
    let cases = [
        ("registry", "equals", "registry.example.com", true),
        ("registry", "equals", "registry.example", false),
        ("registry", "not-equals", "docker.io", true),
        ("registry", "not-equals", "registry.example.com", false),
        ("image", "equals", "platform/agent", true),
        ("image", "equals", "registry.example.com/platform/agent", false),
        ("image", "contains", "form/ag", true),
        ("image", "not-contains", "agent", false),
        ("image", "not-contains", "nginx", true),
        ("tag", "equals", "1.0", true),
        ("tag", "starts-with", "1.", true),
        ("tag", "starts-with", "2.", false),
        ("imagePath", "equals", "registry.example.com/platform/agent:1.0", true),
        ("imagePath", "equals", "registry.example.com/platform/agent", false),
        ("imagePath", "contains", "/platform/", true),
        ("imagePath", "starts-with", "platform/", false),
        ("imagePath", "starts-with", "Registry.example.com/", false),
    ];
    for (t, key, value, exempt) in cases {
        let p = policy_with_exceptions(
            vec![block("containerSecurityContext", "privileged", "true")],
            vec![exception(t, key, value)],
        );
        let d = eval(&p, &pod_of(vec![privileged("agent", PLATFORM)]));
        assert_eq!(
            d.violations.is_empty(),
            exempt,
            "{t} {key} {value:?}: {:#?}",
            d.violations
        );
    }
    // Normalised fields: `nginx` is docker.io/library/nginx:latest.
    let p = policy_with_exceptions(
        vec![block("containerSecurityContext", "privileged", "true")],
        vec![exception("imagePath", "equals", "docker.io/library/nginx:latest")],
    );
    assert_clean(&eval(&p, &pod_of(vec![privileged("app", "nginx")])));
}

#[test]
fn an_exception_limited_to_namespaces_holds_only_there() {
    let p = policy_with_exceptions(
        vec![block("containerSecurityContext", "privileged", "true")],
        vec![exception_in(
            "registry",
            "equals",
            "registry.example.com",
            &["ops", "infra"],
        )],
    );
    for (ns, exempt) in [("ops", true), ("infra", true), ("default", false), ("dev", false)] {
        let d = eval(&p, &pod_in(ns, json!({"containers": [privileged("agent", PLATFORM)]})));
        assert_eq!(d.violations.is_empty(), exempt, "{ns}");
    }
}

#[test]
fn a_pod_level_rule_is_skipped_only_when_every_container_matches_an_exception() {
    let p = policy_with_exceptions(
        vec![
            block("podSecurityContext", "hostNetwork", "true"),
            block("podSecurityStandard", "level", "baseline"),
        ],
        vec![exception("registry", "equals", "registry.example.com")],
    );
    let all_exempt = pod(json!({
        "hostNetwork": true,
        "initContainers": [container("init", "registry.example.com/platform/init:1")],
        "containers": [container("agent", PLATFORM)]
    }));
    assert_clean(&eval(&p, &all_exempt));

    let one_not = pod(json!({
        "hostNetwork": true,
        "containers": [container("agent", PLATFORM), container("app", "nginx")]
    }));
    let d = eval(&p, &one_not);
    assert_blocks(&d);
    assert_eq!(d.violations.len(), 2);
    assert_eq!(d.violations[0].rule_type, "podSecurityContext");
    assert!(d.violations[0].pod_level);
    assert_eq!(d.violations[1].rule_type, "podSecurityStandard");
    assert_eq!(d.violations[1].checks, vec!["hostNamespaces"]);
}

#[test]
fn a_pod_level_rule_is_never_skipped_for_a_pod_without_containers() {
    // An exception matching every valid image.
    let p = policy_with_exceptions(
        vec![block("podSecurityContext", "hostPID", "true")],
        vec![exception("imagePath", "not-equals", "-")],
    );
    let d = eval(&p, &pod(json!({"hostPID": true, "containers": []})));
    assert_blocks(&d);
    assert_eq!(
        only_violation(&d).message,
        r#"podSecurityContext violates rule with properties { hostPID:true } in pod "p" (block)."#
    );
    // The same pod-level rule is skipped when the pod has an exempt container.
    assert_clean(&eval(
        &p,
        &pod(json!({"hostPID": true, "containers": [container("a", "nginx")]})),
    ));
}

#[test]
fn an_invalid_reference_matches_no_exception() {
    let p = policy_with_exceptions(
        vec![
            block("containerSecurityContext", "privileged", "true"),
            block("podSecurityContext", "hostIPC", "true"),
        ],
        vec![
            exception("imagePath", "not-equals", "-"),
            exception("tag", "not-contains", "~"),
        ],
    );
    let d = eval(
        &p,
        &pod(json!({"hostIPC": true, "containers": [privileged("bad", "Nginx"), privileged("ok", "nginx")]})),
    );
    assert_blocks(&d);
    assert_eq!(d.violations.len(), 2);
    assert_eq!(d.violations[0].rule_type, "containerSecurityContext");
    assert_eq!(d.violations[0].containers, vec!["bad"]);
    assert_eq!(d.violations[1].rule_type, "podSecurityContext");
}

#[test]
fn trusted_images_are_always_exempt_by_exact_repository() {
    let p = policy(vec![
        block("containerSecurityContext", "privileged", "true"),
        block("podSecurityContext", "hostNetwork", "true"),
        block("unscannedImage", "days", "1"),
    ]);
    let t = trusted(&["registry.example.com/portcullis/agent"]);
    let ctx = EvalContext {
        trusted_images: &t,
        ..EvalContext::offline(NOW)
    };
    let agent = |image: &str| pod(json!({"hostNetwork": true, "containers": [privileged("agent", image)]}));
    for image in [
        "registry.example.com/portcullis/agent",
        "registry.example.com/portcullis/agent:1.2",
        &format!("registry.example.com/portcullis/agent@{DIGEST_A}"),
        "REGISTRY.example.com/portcullis/agent:1.2",
    ] {
        assert_clean(&eval_with(&p, &agent(image), &ctx));
    }
    // Never a prefix, another registry, or a sub-repository.
    for image in [
        "registry.example.com/portcullis/agent-evil:1.2",
        "registry.example.com/portcullis/agent/sub:1",
        "registry.example.com/portcullis/agen:1",
        "registry.example.com:5000/portcullis/agent:1.2",
        "docker.io/portcullis/agent:1.2",
    ] {
        let d = eval_with(&p, &agent(image), &ctx);
        assert_blocks(&d);
        assert_eq!(d.violations.len(), 3, "{image}");
    }
}

#[test]
fn a_trusted_image_pinned_to_a_digest_exempts_only_that_digest() {
    let p = privileged_policy();
    let t = trusted(&[&format!("registry.example.com/portcullis/agent@{DIGEST_A}")]);
    let ctx = EvalContext {
        trusted_images: &t,
        ..EvalContext::offline(NOW)
    };
    let run = |image: &str| eval_with(&p, &pod_of(vec![privileged("agent", image)]), &ctx);
    assert_clean(&run(&format!("registry.example.com/portcullis/agent@{DIGEST_A}")));
    assert_clean(&run(&format!("registry.example.com/portcullis/agent:1.2@{DIGEST_A}")));
    assert_blocks(&run(&format!("registry.example.com/portcullis/agent@{DIGEST_B}")));
    assert_blocks(&run("registry.example.com/portcullis/agent:1.2"));
}

#[test]
fn a_trusted_image_is_a_repository_not_a_tag() {
    assert!(TrustedImage::parse("registry.example.com/portcullis/agent:1.2").is_err());
    assert!(TrustedImage::parse("localhost:5000/agent").is_ok());
    assert!(TrustedImage::parse("Not A Reference").is_err());
}

// ---------------------------------------------------------------------------------------
// Namespaced definitions
// ---------------------------------------------------------------------------------------

fn layered(namespaced: Value) -> CompiledPolicy {
    compile(&json!({
        "name": "layered",
        "default": {
            "rules": [block("containerSecurityContext", "privileged", "true")],
            "exceptions": [exception("registry", "equals", "registry.example.com")],
            "imageVerification": [signature_rule("signed", json!([]))]
        },
        "namespaced": [namespaced]
    }))
}

fn signature_rule(name: &str, conditions: Value) -> Value {
    json!({"name": name, "action": "block", "attestors": {"all": ["release-signer"]}, "conditions": conditions})
}

#[test]
fn namespaced_rules_replace_the_default_rules() {
    let p = layered(
        json!({"name": "dev", "namespaces": ["dev"], "rules": [block("podSecurityContext", "hostNetwork", "true")]}),
    );
    let privileged_pod = |ns: &str| pod_in(ns, json!({"containers": [privileged("app", "nginx")]}));
    let host_pod = |ns: &str| {
        pod_in(
            ns,
            json!({"hostNetwork": true, "containers": [container("app", "nginx")]}),
        )
    };
    assert_clean(&eval(&p, &privileged_pod("dev")));
    assert_blocks(&eval(&p, &host_pod("dev")));
    assert_blocks(&eval(&p, &privileged_pod("default")));
    assert_clean(&eval(&p, &host_pod("default")));

    let empty = layered(json!({"name": "dev", "namespaces": ["dev"], "rules": []}));
    assert_clean(&eval(&empty, &privileged_pod("dev")));
}

#[test]
fn namespaced_exceptions_are_inherited_when_absent_and_replaced_when_present() {
    let rules = json!([block("containerSecurityContext", "privileged", "true")]);
    let doc = pod_in(
        "dev",
        json!({"containers": [privileged("agent", PLATFORM), privileged("app", "nginx:1")]}),
    );
    let offenders = |namespaced: Value| -> Vec<String> {
        eval(&layered(namespaced), &doc)
            .violations
            .iter()
            .flat_map(|v| v.containers.clone())
            .collect()
    };
    // Absent or null: the default's exception (registry.example.com) holds.
    assert_eq!(
        offenders(json!({"name": "dev", "namespaces": ["dev"], "rules": rules})),
        vec!["app"]
    );
    assert_eq!(
        offenders(json!({"name": "dev", "namespaces": ["dev"], "rules": rules, "exceptions": null})),
        vec!["app"]
    );
    // []: no exception at all.
    assert_eq!(
        offenders(json!({"name": "dev", "namespaces": ["dev"], "rules": rules, "exceptions": []})),
        vec!["agent", "app"]
    );
    // Present: replaces the default's.
    assert_eq!(
        offenders(
            json!({"name": "dev", "namespaces": ["dev"], "rules": rules, "exceptions": [exception("tag", "equals", "1")]})
        ),
        vec!["agent"]
    );
}

#[test]
fn namespaced_image_verification_is_inherited_when_absent_and_replaced_when_present() {
    let doc = pod_in("dev", json!({"containers": [container("app", "quay.io/org/app:1")]}));
    let rules_of = |namespaced: Value| -> Vec<String> {
        let d = eval(&layered(namespaced), &doc);
        assert_eq!(
            d.verdict,
            Verdict::Allow,
            "unverified offline: no effect on the decision"
        );
        d.unverified.iter().map(|u| u.rule.clone()).collect()
    };
    let base = json!({"name": "dev", "namespaces": ["dev"], "rules": []});
    assert_eq!(rules_of(base.clone()), vec!["signed"]);
    let mut null = base.clone();
    null["imageVerification"] = Value::Null;
    assert_eq!(rules_of(null), vec!["signed"]);
    let mut none = base.clone();
    none["imageVerification"] = json!([]);
    assert!(rules_of(none).is_empty());
    let mut other = base;
    other["imageVerification"] = json!([signature_rule("dev-signed", json!([]))]);
    assert_eq!(rules_of(other), vec!["dev-signed"]);
}

// ---------------------------------------------------------------------------------------
// Image Signature Verification
// ---------------------------------------------------------------------------------------

fn signature_policy(rule: Value) -> CompiledPolicy {
    compile(&json!({"name": "sig", "default": {"rules": [], "imageVerification": [rule]}}))
}

fn sig_rule(action: &str, attestors: Value, require_digest: bool, conditions: Value) -> Value {
    json!({"name": "r", "action": action, "requireDigest": require_digest, "attestors": attestors, "conditions": conditions})
}

fn eval_signed(
    p: &CompiledPolicy,
    image: &str,
    verdicts: Option<&portcullis_engine::evaluate::VerdictMap>,
) -> Decision {
    let ctx = EvalContext {
        signatures: Signatures::Offline(verdicts.map(|v| v as &dyn portcullis_engine::evaluate::SignatureVerdicts)),
        ..EvalContext::offline(NOW)
    };
    eval_with(p, &pod_of(vec![container("app", image)]), &ctx)
}

/// Whether the rule with `conditions` applies to `image` (a tag-only reference, with a rule
/// requiring digests: the rule fails exactly when it applies).
fn applies(conditions: Value, image: &str) -> bool {
    let p = signature_policy(sig_rule("block", json!({"any": ["a"]}), true, conditions));
    let d = eval_signed(&p, image, None);
    match d.violations.as_slice() {
        [] => false,
        [v] => {
            assert_eq!(v.rule_type, "imageVerification");
            assert_eq!(d.verdict, Verdict::Block);
            true
        }
        more => panic!("{more:#?}"),
    }
}

fn cond(t: &str, filter: &str, op: &str, value: &str) -> Value {
    json!({"type": t, "resourceFilter": filter, "operator": op, "value": value})
}

#[test]
fn signature_conditions_test_registry_and_repository_with_every_operator() {
    let image = "registry.example.com/prod/app:1";
    // (filter, operator, value, holds for `image`)
    let cases = [
        ("registry", "equals", "registry.example.com", true),
        ("registry", "equals", "registry.example", false),
        ("registry", "beginsWith", "registry.", true),
        ("registry", "beginsWith", "example", false),
        ("registry", "endsWith", ".com", true),
        ("registry", "endsWith", "registry", false),
        ("registry", "contains", "example", true),
        ("registry", "contains", "quay", false),
        ("repository", "equals", "registry.example.com/prod/app", true),
        ("repository", "equals", "prod/app", false),
        ("repository", "equals", "registry.example.com/prod/app:1", false),
        ("repository", "beginsWith", "registry.example.com/prod/", true),
        ("repository", "beginsWith", "prod/", false),
        ("repository", "endsWith", "/app", true),
        ("repository", "endsWith", "/ap", false),
        ("repository", "contains", "/prod/", true),
        ("repository", "contains", "/dev/", false),
        ("repository", "contains", "/PROD/", false),
    ];
    for (filter, op, value, holds) in cases {
        assert_eq!(
            applies(json!([cond("match", filter, op, value)]), image),
            holds,
            "match {filter} {op} {value}"
        );
        assert_eq!(
            applies(json!([cond("exclude", filter, op, value)]), image),
            !holds,
            "exclude {filter} {op} {value}"
        );
    }
    // Normalised: `nginx` is docker.io/library/nginx.
    assert!(applies(
        json!([cond("match", "repository", "equals", "docker.io/library/nginx")]),
        "nginx"
    ));
    assert!(applies(
        json!([cond("match", "registry", "equals", "docker.io")]),
        "nginx"
    ));
}

#[test]
fn every_match_must_hold_and_an_exclude_wins() {
    let image = "registry.example.com/prod/app:1";
    let m_reg = cond("match", "registry", "equals", "registry.example.com");
    let m_prod = cond("match", "repository", "contains", "/prod/");
    let m_dev = cond("match", "repository", "contains", "/dev/");
    let x_prod = cond("exclude", "repository", "contains", "/prod/");
    let x_dev = cond("exclude", "repository", "contains", "/dev/");
    assert!(applies(json!([]), image), "no match condition: every image");
    assert!(applies(json!([m_reg.clone(), m_prod.clone()]), image));
    assert!(!applies(json!([m_reg.clone(), m_dev]), image));
    assert!(!applies(json!([m_reg.clone(), m_prod, x_prod.clone()]), image));
    assert!(applies(json!([m_reg.clone(), x_dev.clone()]), image));
    assert!(!applies(json!([x_dev, x_prod]), image));
    assert!(applies(json!([m_reg]), "registry.example.com/dev/app:1"));
}

#[test]
fn an_invalid_reference_matches_no_signature_condition() {
    // A rule with a match condition does not apply to it ...
    assert!(!applies(
        json!([cond("match", "registry", "contains", ".")]),
        "Registry.Example.com/App"
    ));
    // ... a rule without one does, and fails: an invalid reference cannot be verified.
    let p = signature_policy(sig_rule(
        "block",
        json!({"all": ["a"]}),
        false,
        json!([cond("exclude", "registry", "contains", ".")]),
    ));
    let d = eval_signed(&p, "Registry.Example.com/App", Some(&verdict_map(vec![])));
    assert_blocks(&d);
    assert!(
        d.violations[0].message.contains("invalid image reference"),
        "{}",
        d.violations[0].message
    );
}

#[test]
fn all_requires_every_attestor_and_any_requires_one() {
    let image = format!("registry.example.com/app@{DIGEST_A}");
    let all = signature_policy(sig_rule("block", json!({"all": ["a", "b"]}), false, json!([])));
    let any = signature_policy(sig_rule("block", json!({"any": ["a", "b"]}), false, json!([])));
    let both = verdict_map(vec![(DIGEST_A, vec![("a", true), ("b", true)])]);
    let one = verdict_map(vec![(DIGEST_A, vec![("a", false), ("b", true)])]);
    let neither = verdict_map(vec![(DIGEST_A, vec![("a", false), ("b", false)])]);

    assert_clean(&eval_signed(&all, &image, Some(&both)));
    let d = eval_signed(&all, &image, Some(&one));
    assert_blocks(&d);
    let v = only_violation(&d);
    assert_eq!(v.rule_type, "imageVerification");
    assert_eq!(v.containers, vec!["app"]);
    assert_eq!(v.action, Action::Block);

    assert_clean(&eval_signed(&any, &image, Some(&both)));
    assert_clean(&eval_signed(&any, &image, Some(&one)));
    assert_blocks(&eval_signed(&any, &image, Some(&neither)));
}

#[test]
fn a_log_signature_rule_warns_without_blocking() {
    let image = format!("registry.example.com/app@{DIGEST_A}");
    let p = signature_policy(sig_rule("log", json!({"all": ["a"]}), false, json!([])));
    let d = eval_signed(&p, &image, Some(&verdict_map(vec![(DIGEST_A, vec![("a", false)])])));
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(only_violation(&d).action, Action::Log);
    assert_eq!(d.warnings().count(), 1);
}

#[test]
fn verdicts_are_found_by_digest_and_by_image() {
    let p = signature_policy(sig_rule("block", json!({"all": ["a"]}), false, json!([])));
    let pinned = format!("registry.example.com/app@{DIGEST_A}");
    // By digest.
    assert_clean(&eval_signed(
        &p,
        &pinned,
        Some(&verdict_map(vec![(DIGEST_A, vec![("a", true)])])),
    ));
    assert_blocks(&eval_signed(
        &p,
        &pinned,
        Some(&verdict_map(vec![(DIGEST_A, vec![("a", false)])])),
    ));
    // By the image as written.
    assert_clean(&eval_signed(
        &p,
        &pinned,
        Some(&verdict_map(vec![(pinned.as_str(), vec![("a", true)])])),
    ));
    // A tag-only reference resolved to a digest: the digest's verdict counts.
    let map = digest_map(&[("registry.example.com/app:1", DIGEST_A)]);
    let v = verdict_map(vec![(DIGEST_A, vec![("a", false)])]);
    let ctx = EvalContext {
        digests: &map,
        signatures: Signatures::Offline(Some(&v)),
        ..EvalContext::offline(NOW)
    };
    let d = eval_with(&p, &pod_of(vec![container("app", "registry.example.com/app:1")]), &ctx);
    assert_blocks(&d);
    assert!(d.digests.iter().any(|x| x.digest == DIGEST_A));
}

#[test]
fn an_unresolvable_tag_fails_when_verdicts_are_given() {
    let p = signature_policy(sig_rule("block", json!({"all": ["a"]}), false, json!([])));
    let d = eval_signed(
        &p,
        "registry.example.com/app:1",
        Some(&verdict_map(vec![(DIGEST_B, vec![("a", true)])])),
    );
    assert_blocks(&d);
    assert_eq!(only_violation(&d).rule_type, "imageVerification");
}

#[test]
fn require_digest_makes_a_tag_only_reference_a_violation_by_itself() {
    let p = signature_policy(sig_rule("block", json!({"any": ["a"]}), true, json!([])));
    let tag_only = "registry.example.com/app:1";
    let ok = verdict_map(vec![(tag_only, vec![("a", true)]), (DIGEST_A, vec![("a", true)])]);
    assert_blocks(&eval_signed(&p, tag_only, Some(&ok)));
    assert_blocks(&eval_signed(&p, tag_only, None));
    assert_clean(&eval_signed(
        &p,
        &format!("registry.example.com/app@{DIGEST_A}"),
        Some(&ok),
    ));
    assert_clean(&eval_signed(
        &p,
        &format!("registry.example.com/app:1@{DIGEST_A}"),
        Some(&ok),
    ));
}

#[test]
fn without_verdicts_signature_rules_are_unverified_with_no_effect() {
    let p = signature_policy(sig_rule("block", json!({"all": ["a", "b"]}), false, json!([])));
    let image = format!("registry.example.com/app@{DIGEST_A}");
    let d = eval_signed(&p, &image, None);
    assert_clean(&d);
    assert_eq!(d.unverified.len(), 1);
    let u = &d.unverified[0];
    assert_eq!(u.rule, "r");
    assert_eq!(u.image, image);
    assert_eq!(u.digest.as_deref(), Some(DIGEST_A));
    assert_eq!(u.attestors, vec!["a", "b"]);
    assert_eq!(u.containers, vec!["app"]);
}

/// At admission: `image` in one container "app", with `signatures` and the failure mode.
fn eval_at_admission(p: &CompiledPolicy, image: &str, signatures: Signatures<'_>, mode: FailureMode) -> Decision {
    let ctx = EvalContext {
        signatures,
        failure_mode: mode,
        ..EvalContext::offline(NOW)
    };
    eval_with(p, &pod_of(vec![container("app", image)]), &ctx)
}

const NO_VERIFIER: &str = "no signature verifier configured";

/// At admission on a fail-closed cluster, with no signature verifier.
fn without_verifier(p: &CompiledPolicy, image: &str) -> Decision {
    eval_at_admission(p, image, Signatures::Unavailable(NO_VERIFIER), FailureMode::FailClosed)
}

#[test]
fn at_admission_a_block_rule_that_cannot_be_judged_is_a_failed_stage() {
    let p = signature_policy(sig_rule("block", json!({"all": ["a", "b"]}), false, json!([])));
    let image = format!("registry.example.com/app@{DIGEST_A}");
    for (mode, verdict) in [
        (FailureMode::FailClosed, Verdict::Block),
        (FailureMode::FailOpen, Verdict::Allow),
    ] {
        let d = eval_at_admission(&p, &image, Signatures::Unavailable(NO_VERIFIER), mode);
        assert_eq!(d.verdict, verdict, "{mode:?}: {d:#?}");
        assert!(d.violations.is_empty(), "not judged is not a violation: {d:#?}");
        assert!(d.unverified.is_empty(), "offline only");
        let [u] = d.not_judged.as_slice() else {
            panic!("one rule not judged: {d:#?}")
        };
        assert_eq!((u.rule.as_str(), u.action), ("r", Action::Block));
        assert_eq!(u.image, image);
        assert_eq!(u.digest.as_deref(), Some(DIGEST_A));
        assert_eq!(u.attestors, vec!["a", "b"]);
        assert_eq!(u.containers, vec!["app"]);
        assert_eq!(u.reason, NO_VERIFIER);
        assert_eq!(
            u.message,
            "imageVerification rule \"r\" (all of a, b) not judged in container(s) \"app\" (block): \
             no signature verifier configured."
        );
        let stages: Vec<(&str, &str)> = d.stage_failures.iter().map(|f| (f.stage, f.message.as_str())).collect();
        assert_eq!(stages, [("signature", NO_VERIFIER)]);
        assert!(d.status_message().contains(&u.message), "{}", d.status_message());
        assert_eq!(d.warnings().collect::<Vec<_>>(), [u.message.as_str()]);
    }
}

#[test]
fn at_admission_a_log_rule_that_cannot_be_judged_only_warns() {
    let p = signature_policy(sig_rule("log", json!({"any": ["a"]}), false, json!([])));
    let d = without_verifier(&p, "registry.example.com/app:1");
    assert_clean(&d);
    assert!(d.stage_failures.is_empty(), "{:?}", d.stage_failures);
    let [u] = d.not_judged.as_slice() else {
        panic!("one rule not judged: {d:#?}")
    };
    assert_eq!((u.action, u.digest.as_deref()), (Action::Log, None));
    assert_eq!(d.warnings().collect::<Vec<_>>(), [u.message.as_str()]);
}

#[test]
fn at_admission_a_missing_verdict_leaves_the_rule_not_judged() {
    let p = signature_policy(sig_rule("block", json!({"all": ["a", "b"]}), false, json!([])));
    let image = format!("registry.example.com/app@{DIGEST_A}");
    let only_a = verdict_map(vec![(DIGEST_A, vec![("a", true)])]);
    let d = eval_at_admission(&p, &image, Signatures::Stage(&only_a), FailureMode::FailClosed);
    assert_blocks(&d);
    assert!(d.violations.is_empty());
    let [u] = d.not_judged.as_slice() else {
        panic!("one rule not judged: {d:#?}")
    };
    assert_eq!(u.attestors, vec!["b"]);
    assert_eq!(u.reason, "no verdict for attestor(s) b");
    assert_eq!(d.stage_failures[0].stage, "signature");
    // Under fail-open the same rule is admitted, still listed.
    let d = eval_at_admission(&p, &image, Signatures::Stage(&only_a), FailureMode::FailOpen);
    assert_eq!((d.verdict, d.not_judged.len()), (Verdict::Allow, 1));

    // Verdicts that decide: judged, a violation or a pass, nothing left not judged.
    let refused = verdict_map(vec![(DIGEST_A, vec![("a", false)])]);
    let d = eval_at_admission(&p, &image, Signatures::Stage(&refused), FailureMode::FailOpen);
    assert_blocks(&d);
    assert_eq!(d.violations.len(), 1);
    assert!(d.not_judged.is_empty() && d.stage_failures.is_empty(), "{d:#?}");
    let both = verdict_map(vec![(DIGEST_A, vec![("a", true), ("b", true)])]);
    let d = eval_at_admission(&p, &image, Signatures::Stage(&both), FailureMode::FailClosed);
    assert_clean(&d);
    assert!(d.not_judged.is_empty() && d.stage_failures.is_empty(), "{d:#?}");
}

#[test]
fn at_admission_a_rule_that_does_not_apply_is_not_reported() {
    let p = signature_policy(sig_rule(
        "block",
        json!({"all": ["a"]}),
        false,
        json!([{"type": "match", "resourceFilter": "registry", "operator": "equals", "value": "ghcr.io"}]),
    ));
    let d = without_verifier(&p, "registry.example.com/app:1");
    assert_clean(&d);
    assert!(d.stage_failures.is_empty());
    // Nothing allocated for the list on a review no signature rule applies to.
    assert_eq!(d.not_judged.capacity(), 0);
}

#[test]
fn at_admission_a_digest_that_cannot_be_had_leaves_the_rule_not_judged() {
    let p = signature_policy(sig_rule("block", json!({"all": ["a"]}), false, json!([])));
    let v = verdict_map(vec![]);
    // A resolver whose registry cannot be reached.
    let unreachable = Resolves(portcullis_engine::evaluate::DigestLookup::Unavailable(
        "registry unreachable".into(),
    ));
    let ctx = EvalContext {
        digests: &unreachable,
        signatures: Signatures::Stage(&v),
        failure_mode: FailureMode::FailClosed,
        ..EvalContext::offline(NOW)
    };
    let d = eval_with(&p, &pod_of(vec![container("app", "registry.example.com/app:1")]), &ctx);
    assert_blocks(&d);
    assert_eq!(d.not_judged.len(), 1);
    assert_eq!(d.not_judged[0].reason, "digest resolution: registry unreachable");
    // The digest stage is the one that failed: it is not counted twice.
    let stages: Vec<&str> = d.stage_failures.iter().map(|f| f.stage).collect();
    assert_eq!(stages, ["digest-resolution"]);
}

#[test]
fn exceptions_never_apply_to_image_verification_but_trusted_images_do() {
    let doc = json!({"name": "sig", "default": {
        "rules": [],
        "exceptions": [exception("registry", "equals", "registry.example.com")],
        "imageVerification": [sig_rule("block", json!({"all": ["a"]}), false, json!([]))]
    }});
    let p = compile(&doc);
    let image = format!("registry.example.com/app@{DIGEST_A}");
    let v = verdict_map(vec![(DIGEST_A, vec![("a", false)])]);
    assert_blocks(&eval_signed(&p, &image, Some(&v)));

    let t = trusted(&["registry.example.com/app"]);
    let ctx = EvalContext {
        signatures: Signatures::Offline(Some(&v)),
        trusted_images: &t,
        ..EvalContext::offline(NOW)
    };
    assert_clean(&eval_with(&p, &pod_of(vec![container("app", &image)]), &ctx));
}

/// A resolver that answers one fixed lookup for every reference.
struct Resolves(portcullis_engine::evaluate::DigestLookup);

impl portcullis_engine::evaluate::DigestResolver for Resolves {
    fn resolve(
        &self,
        _: &str,
        _: &portcullis_engine::image_ref::ImageRef,
    ) -> portcullis_engine::evaluate::DigestLookup {
        self.0.clone()
    }
}

#[test]
fn at_admission_an_attestor_without_verdict_over_an_unresolved_tag_is_not_judged() {
    // The service answered ERROR for the attestor (left out of the verdicts) and nobody
    // resolved the tag: nothing is known of the image, so the failure mode decides.
    let p = signature_policy(sig_rule("block", json!({"all": ["a"]}), false, json!([])));
    let no_verdict = verdict_map(vec![]);
    for (mode, verdict) in [
        (FailureMode::FailOpen, Verdict::Allow),
        (FailureMode::FailClosed, Verdict::Block),
    ] {
        let d = eval_at_admission(&p, "registry.example.com/app:1", Signatures::Stage(&no_verdict), mode);
        assert_eq!(d.verdict, verdict, "{mode:?}: {d:#?}");
        assert!(d.violations.is_empty(), "not a signature violation: {d:#?}");
        let [u] = d.not_judged.as_slice() else {
            panic!("one rule not judged: {d:#?}")
        };
        assert_eq!(
            (u.reason.as_str(), u.digest.as_deref()),
            ("no verdict for attestor(s) a", None)
        );
        let stages: Vec<&str> = d.stage_failures.iter().map(|f| f.stage).collect();
        assert_eq!(stages, ["signature"]);
    }
}

#[test]
fn at_admission_an_image_the_registry_does_not_have_fails_its_signature_rule() {
    let p = signature_policy(sig_rule("block", json!({"all": ["a"]}), false, json!([])));
    let no_verdict = verdict_map(vec![]);
    let missing = Resolves(portcullis_engine::evaluate::DigestLookup::NotFound);
    let ctx = EvalContext {
        digests: &missing,
        signatures: Signatures::Stage(&no_verdict),
        failure_mode: FailureMode::FailOpen,
        ..EvalContext::offline(NOW)
    };
    let d = eval_with(&p, &pod_of(vec![container("app", "registry.example.com/app:1")]), &ctx);
    assert_blocks(&d);
    let [v] = d.violations.as_slice() else {
        panic!("one violation: {d:#?}")
    };
    assert!(v.message.contains("the registry has no such image"), "{}", v.message);
    assert!(d.not_judged.is_empty() && d.stage_failures.is_empty(), "{d:#?}");
}

#[test]
fn reads_digests_only_with_signature_or_active_scan_rules() {
    let psa_only = policy(vec![block("podSecurityContext", "hostNetwork", "true")]);
    assert!(!psa_only.reads_digests("apps"));
    let scans = policy(vec![rule("vulnerabilities", &[("max-severity", "high")], "block")]);
    assert!(scans.reads_digests("apps"));
    let scans_off = policy(vec![rule_with(
        "vulnerabilities",
        &[("max-severity", "high")],
        "none",
        "log",
    )]);
    assert!(
        !scans_off.reads_digests("apps"),
        "a rule without an admission action reads nothing"
    );
    let signed = signature_policy(sig_rule("log", json!({"any": ["a"]}), false, json!([])));
    assert!(signed.reads_digests("apps"));
}
