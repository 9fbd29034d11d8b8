//! What the service decides: pods and workloads, CONNECT, UPDATE, ephemeral containers,
//! namespaced definitions and exceptions (POLICY.md section 4).
//!
//! Every scenario starts its own stack (a policy store and admission replicas following its
//! bus) in the mode it is given, embedded and distributed (`both!`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::Duration;

use portcullis_server::Mode;
use portcullis_test_kit::eventually;
use serde_json::json;

use portcullis_integration_tests::admission::*;

/// hostNetwork is blocked, privileged is logged.
fn pods_policy() -> String {
    policy("pods", json!([host_network("block"), privileged("log")])).to_string()
}

/// Scenario 1: a hostNetwork pod is denied with the violation listed; a privileged-only pod
/// is allowed with a warning; a clean pod is allowed without one.
pub async fn pods_blocked_logged_and_clean(mode: Mode) {
    let env = Env::one(mode, &pods_policy()).await;

    let denied = create_pod(pod(
        "web",
        "default",
        pod_spec(true, vec![container("app", "nginx:1.25", false)]),
    ));
    let answer = env.judge(&denied).await;
    assert!(!answer.allowed(), "{answer:?}");
    assert_eq!(answer.uid(), uid_of(&denied));
    assert_eq!(answer.json["response"]["status"]["code"], 403);
    assert_eq!(
        answer.message(),
        "- podSecurityContext violates rule with properties { hostNetwork:true } in pod \"web\" (block)."
    );
    assert_eq!(answer.decision.uid, uid_of(&denied));
    assert_eq!(answer.decision.policy_id, env.policy_id);
    assert_eq!(answer.decision.policy_revision, 1);
    assert_eq!(answer.decision.cluster_id, env.cluster_id);
    assert_eq!(answer.decision.violations.len(), 1, "{:?}", answer.decision.violations);
    assert_eq!(answer.decision.violations[0].rule_type, "podSecurityContext");

    let logged = create_pod(pod(
        "priv",
        "default",
        pod_spec(false, vec![container("app", "nginx:1.25", true)]),
    ));
    let answer = env.judge(&logged).await;
    assert!(answer.allowed(), "{answer:?}");
    assert_eq!(answer.uid(), uid_of(&logged));
    assert_eq!(
        answer.warnings(),
        vec![
            "containerSecurityContext violates rule with properties { privileged:true } in container(s) \"app\" (log)."
        ]
    );
    assert_eq!(answer.decision.violations.len(), 1);
    assert_eq!(answer.decision.policy_id, env.policy_id);

    let clean = create_pod(pod(
        "clean",
        "default",
        pod_spec(false, vec![container("app", "nginx:1.25", false)]),
    ));
    let answer = env.judge(&clean).await;
    assert!(answer.allowed(), "{answer:?}");
    assert_eq!(answer.uid(), uid_of(&clean));
    assert!(answer.warnings().is_empty(), "{answer:?}");
    assert!(answer.json["response"].get("status").is_none(), "{answer:?}");
    assert!(answer.decision.violations.is_empty());
}

/// Scenario 2: a Deployment and a CronJob with the violating pod template are denied.
pub async fn workloads_with_a_violating_template(mode: Mode) {
    let env = Env::one(mode, &pods_policy()).await;
    let spec = pod_spec(true, vec![container("app", "nginx:1.25", false)]);

    let mut deployment = review("CREATE", ("apps", "v1", "Deployment"), "deployments", "default", "web");
    deployment["request"]["object"] = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": spec.clone()}}
    });
    let answer = env.judge(&deployment).await;
    assert!(!answer.allowed(), "{answer:?}");
    assert_eq!(answer.uid(), uid_of(&deployment));
    assert!(answer.message().contains("hostNetwork:true"), "{}", answer.message());
    assert_eq!(answer.decision.object.as_ref().unwrap().kind, "Deployment");

    let mut cronjob = review("CREATE", ("batch", "v1", "CronJob"), "cronjobs", "default", "nightly");
    cronjob["request"]["object"] = json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": "default"},
        "spec": {"schedule": "0 3 * * *",
                 "jobTemplate": {"spec": {"template": {"spec": spec}}}}
    });
    let answer = env.judge(&cronjob).await;
    assert!(!answer.allowed(), "{answer:?}");
    assert_eq!(answer.uid(), uid_of(&cronjob));
    assert!(answer.message().contains("hostNetwork:true"), "{}", answer.message());
}

/// A CONNECT review of pods/`sub` on pod `name`.
fn connect(sub: &str, name: &str) -> serde_json::Value {
    let kind = match sub {
        "exec" => "PodExecOptions",
        "attach" => "PodAttachOptions",
        _ => "PodPortForwardOptions",
    };
    let mut r = review("CONNECT", ("", "v1", kind), "pods", "default", name);
    r["request"]["subResource"] = json!(sub);
    r["request"]["object"] = json!({"apiVersion": "v1", "kind": kind, "stdin": true, "command": ["sh"]});
    r
}

/// Scenario 3: CONNECT to pods/exec, attach and portforward is denied under the podexec and
/// portforward rules, and allowed without them.
pub async fn connect_exec_attach_portforward(mode: Mode) {
    let doc = policy(
        "connect",
        json!([
            rule("podexec", "podExec", "true", "block"),
            rule("portforward", "podPortForward", "true", "block")
        ]),
    );
    let env = Env::one(mode, &doc.to_string()).await;
    for sub in ["exec", "attach", "portforward"] {
        let r = connect(sub, "web-0");
        let answer = env.judge(&r).await;
        assert!(!answer.allowed(), "{sub}: {answer:?}");
        assert_eq!(answer.uid(), uid_of(&r));
        assert!(
            answer.message().contains("in pod \"web-0\""),
            "{sub}: {}",
            answer.message()
        );
        assert_eq!(answer.decision.operation, "CONNECT");
        assert_eq!(answer.decision.subresource, sub);
    }

    // Without the rules (another rule only), every CONNECT is allowed.
    let without = policy("connect", json!([host_network("block")]));
    env.admin
        .clone()
        .update_policy(
            portcullis_integration_tests::store::by_id(&env.policy_id),
            &without.to_string(),
            1,
        )
        .await
        .unwrap();
    for sub in ["exec", "attach", "portforward"] {
        let answer = wait_for(&env, &connect(sub, "web-0"), true).await;
        assert!(answer.decision.violations.is_empty(), "{sub}: {answer:?}");
    }
}

/// Reviews `r` (with a fresh uid each time) until `allowed` is the answer (at most 10 s).
pub async fn wait_for(env: &Env, r: &serde_json::Value, allowed: bool) -> Answer {
    eventually(Duration::from_secs(10), || async move {
        let answer = env.judge(r).await;
        if answer.allowed() == allowed {
            Ok(answer)
        } else {
            Err(answer)
        }
    })
    .await
}

/// Scenario 4: an UPDATE leaving the pod spec alone is allowed even when the pod violates;
/// one changing it is judged; adding a privileged ephemeral container is judged.
pub async fn updates_and_ephemeral_containers(mode: Mode) {
    let doc = policy("updates", json!([host_network("block"), privileged("block")]));
    let env = Env::one(mode, &doc.to_string()).await;
    let old = pod(
        "web",
        "default",
        pod_spec(true, vec![container("app", "nginx:1.25", false)]),
    );

    // Only the labels change.
    let mut relabelled = old.clone();
    relabelled["metadata"]["labels"] = json!({"team": "a"});
    let mut r = review("UPDATE", ("", "v1", "Pod"), "pods", "default", "web");
    r["request"]["object"] = relabelled;
    r["request"]["oldObject"] = old.clone();
    let answer = env.judge(&r).await;
    assert!(answer.allowed(), "labels only: {answer:?}");
    assert_eq!(answer.uid(), uid_of(&r));

    // The image changes: judged, and the pod still sets hostNetwork.
    let mut changed = old.clone();
    changed["spec"]["containers"][0]["image"] = json!("nginx:1.26");
    let mut r = review("UPDATE", ("", "v1", "Pod"), "pods", "default", "web");
    r["request"]["object"] = changed;
    r["request"]["oldObject"] = old;
    let answer = env.judge(&r).await;
    assert!(!answer.allowed(), "spec changed: {answer:?}");
    assert!(answer.message().contains("hostNetwork:true"), "{}", answer.message());

    // pods/ephemeralcontainers: a privileged debug container is added.
    let before = pod(
        "db",
        "default",
        pod_spec(false, vec![container("db", "postgres:16", false)]),
    );
    let mut after = before.clone();
    after["spec"]["ephemeralContainers"] = json!([container("debugger", "busybox:1.36", true)]);
    let mut r = review("UPDATE", ("", "v1", "Pod"), "pods", "default", "db");
    r["request"]["subResource"] = json!("ephemeralcontainers");
    r["request"]["object"] = after.clone();
    r["request"]["oldObject"] = before.clone();
    let answer = env.judge(&r).await;
    assert!(!answer.allowed(), "privileged ephemeral container: {answer:?}");
    assert!(answer.message().contains("\"debugger\""), "{}", answer.message());

    // An unprivileged one passes.
    after["spec"]["ephemeralContainers"] = json!([container("debugger", "busybox:1.36", false)]);
    let mut r = review("UPDATE", ("", "v1", "Pod"), "pods", "default", "db");
    r["request"]["subResource"] = json!("ephemeralcontainers");
    r["request"]["object"] = after;
    r["request"]["oldObject"] = before;
    let answer = env.judge(&r).await;
    assert!(answer.allowed(), "unprivileged ephemeral container: {answer:?}");
}

/// Scenario 6: a namespaced definition replaces the default rules in its namespaces; the
/// default's exceptions are inherited; an exempt container is skipped for container rules,
/// and a pod-level rule is skipped only when every container is exempt.
pub async fn namespaced_definition_and_exception(mode: Mode) {
    let doc = json!({
        "name": "scoped",
        "default": {
            "rules": [privileged("log")],
            "exceptions": [{"type": "imagePath",
                            "statement": {"properties": [{"key": "starts-with", "value": "registry.example.com/platform/"}]}}]
        },
        "namespaced": [{"name": "prod.strict", "namespaces": ["prod"],
                        "rules": [privileged("block"), host_network("block")]}]
    });
    let env = Env::one(mode, &doc.to_string()).await;
    let app = |p: bool| container("app", "nginx:1.25", p);
    let agent = |p: bool| container("agent", "registry.example.com/platform/agent:1.0", p);

    // Default definition: privileged is only logged.
    let answer = env
        .judge(&create_pod(pod("p", "dev", pod_spec(false, vec![app(true)]))))
        .await;
    assert!(answer.allowed(), "{answer:?}");
    assert_eq!(answer.warnings().len(), 1, "{answer:?}");
    assert_eq!(answer.decision.definition, "default");
    // hostNetwork is no rule there.
    let answer = env
        .judge(&create_pod(pod("p", "dev", pod_spec(true, vec![app(false)]))))
        .await;
    assert!(answer.allowed() && answer.warnings().is_empty(), "{answer:?}");

    // prod: privileged and hostNetwork are blocked.
    let answer = env
        .judge(&create_pod(pod("p", "prod", pod_spec(false, vec![app(true)]))))
        .await;
    assert!(!answer.allowed(), "{answer:?}");
    assert!(answer.message().contains("privileged:true"), "{}", answer.message());
    assert_eq!(answer.decision.definition, "prod.strict");
    let answer = env
        .judge(&create_pod(pod("p", "prod", pod_spec(true, vec![app(false)]))))
        .await;
    assert!(!answer.allowed(), "{answer:?}");

    // The inherited exception: an exempt privileged container is skipped in prod.
    let answer = env
        .judge(&create_pod(pod("p", "prod", pod_spec(false, vec![agent(true)]))))
        .await;
    assert!(answer.allowed(), "{answer:?}");
    assert!(answer.decision.violations.is_empty(), "{answer:?}");
    // ...but only that container: the other privileged one still blocks.
    let answer = env
        .judge(&create_pod(pod(
            "p",
            "prod",
            pod_spec(false, vec![agent(true), app(true)]),
        )))
        .await;
    assert!(!answer.allowed(), "{answer:?}");
    assert!(
        answer.message().contains("\"app\"") && !answer.message().contains("\"agent\""),
        "{}",
        answer.message()
    );
    // A pod-level rule: skipped when every container is exempt, not when one is not.
    let answer = env
        .judge(&create_pod(pod("p", "prod", pod_spec(true, vec![agent(false)]))))
        .await;
    assert!(answer.allowed(), "{answer:?}");
    let answer = env
        .judge(&create_pod(pod(
            "p",
            "prod",
            pod_spec(true, vec![agent(false), app(false)]),
        )))
        .await;
    assert!(!answer.allowed(), "{answer:?}");
    assert!(answer.message().contains("hostNetwork:true"), "{}", answer.message());
}

/// A pod that breaks Pod Security Standards baseline only through its pod details (a host
/// port and a hostPath volume), which a policy without such rules does not read.
fn pod_with_host_port_and_host_path() -> serde_json::Value {
    let mut spec = pod_spec(false, vec![container("app", "nginx:1.25", false)]);
    spec["containers"][0]["ports"] = json!([{"containerPort": 8080, "hostPort": 8080}]);
    spec["volumes"] = json!([{"name": "root", "hostPath": {"path": "/"}}]);
    create_pod(pod("details", "default", spec))
}

/// The parse reads what the cluster's policy reads: without Pod Security Standards rules
/// the pod details are skipped (the pod is allowed), and once the policy gains such a rule
/// the same pod is judged on them (host ports and hostPath volumes), on the review that
/// first sees the new policy and on the ones after it.
pub async fn the_parse_follows_what_the_policy_reads(mode: Mode) {
    let env = Env::one(mode, &pods_policy()).await;
    for _ in 0..2 {
        let answer = env.judge(&pod_with_host_port_and_host_path()).await;
        assert!(answer.allowed() && answer.warnings().is_empty(), "{answer:?}");
    }
    let with_pss = policy(
        "pods",
        json!([
            host_network("block"),
            privileged("log"),
            rule("podSecurityStandard", "level", "baseline", "block")
        ]),
    )
    .to_string();
    env.admin
        .clone()
        .update_policy(portcullis_integration_tests::store::by_id(&env.policy_id), &with_pss, 1)
        .await
        .unwrap();
    let env = &env;
    let answer = eventually(Duration::from_secs(10), || async move {
        let answer = env.judge(&pod_with_host_port_and_host_path()).await;
        if answer.decision.policy_revision == 2 {
            Ok(answer)
        } else {
            Err(format!("the update never arrived: {answer:?}"))
        }
    })
    .await;
    for answer in [answer, env.judge(&pod_with_host_port_and_host_path()).await] {
        assert!(!answer.allowed(), "{answer:?}");
        let checks = &answer.decision.violations[0].checks;
        assert!(checks.iter().any(|c| c == "hostPorts"), "{checks:?}");
        assert!(checks.iter().any(|c| c == "hostPathVolumes"), "{checks:?}");
    }
}

portcullis_test_kit::both! {
    embedded: portcullis_server::Mode::Embedded,
    distributed: portcullis_server::Mode::Distributed;
    pods_blocked_logged_and_clean,
    workloads_with_a_violating_template,
    connect_exec_attach_portforward,
    updates_and_ephemeral_containers,
    namespaced_definition_and_exception,
    the_parse_follows_what_the_policy_reads,
}
