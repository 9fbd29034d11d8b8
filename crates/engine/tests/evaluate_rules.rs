//! Every rule type and property of POLICY.md section 3, and the decision of section 4
//! (points 3-5): what violates, what does not, and how violations become a verdict, a
//! message and a mitigation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use portcullis_engine::evaluate::{
    DigestMap, EvalContext, FailureMode, ImageDigest, NoDigests, RunningDecision, Verdict,
};
use portcullis_engine::policy::{Action, Mitigation};
use portcullis_engine::scan::{ScanResults, ScanSummary, ScanType, ScanUnavailable, Severity};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// podSecurityContext
// ---------------------------------------------------------------------------------------

#[test]
fn pod_security_context_blocks_each_host_namespace_set_true() {
    for (key, field) in [
        ("hostNetwork", "hostNetwork"),
        ("hostIPC", "hostIPC"),
        ("hostPID", "hostPID"),
    ] {
        let p = policy(vec![block("podSecurityContext", key, "true")]);
        let bad = pod(json!({field: true, "containers": [container("app", "nginx")]}));
        let d = eval(&p, &bad);
        assert_blocks(&d);
        let v = only_violation(&d);
        assert!(v.pod_level, "{key}: a host namespace is a pod-level violation");
        assert_eq!(
            v.message,
            format!("podSecurityContext violates rule with properties {{ {key}:true }} in pod \"p\" (block).")
        );

        // false and unset do not violate.
        assert_clean(&eval(
            &p,
            &pod(json!({field: false, "containers": [container("app", "nginx")]})),
        ));
        assert_clean(&eval(&p, &pod_of(vec![container("app", "nginx")])));
    }
}

#[test]
fn pod_security_context_rule_tests_only_its_own_field() {
    let p = policy(vec![block("podSecurityContext", "hostNetwork", "true")]);
    let d = eval(
        &p,
        &pod(json!({"hostPID": true, "hostIPC": true, "containers": [container("app", "nginx")]})),
    );
    assert_clean(&d);
}

// ---------------------------------------------------------------------------------------
// containerSecurityContext: privileged, allowPrivilegeEscalation, readOnlyRootFilesystem
// ---------------------------------------------------------------------------------------

#[test]
fn privileged_names_every_privileged_container_in_the_exact_message_format() {
    let p = policy(vec![block("containerSecurityContext", "privileged", "true")]);
    let d = eval(
        &p,
        &pod_of(vec![
            privileged("app", "nginx"),
            container("plain", "nginx"),
            privileged("sidecar", "busybox"),
        ]),
    );
    assert_blocks(&d);
    let v = only_violation(&d);
    assert_eq!(v.containers, vec!["app", "sidecar"]);
    assert!(!v.pod_level);
    assert_eq!(v.rule_type, "containerSecurityContext");
    assert_eq!(*v.properties, [("privileged".to_owned(), "true".to_owned())]);
    assert_eq!(v.action, Action::Block);
    assert_eq!(
        v.message,
        r#"containerSecurityContext violates rule with properties { privileged:true } in container(s) "app", "sidecar" (block)."#
    );
    assert_eq!(d.status_message(), format!("- {}", v.message));
}

#[test]
fn privileged_false_or_unset_does_not_violate() {
    let p = policy(vec![block("containerSecurityContext", "privileged", "true")]);
    let d = eval(
        &p,
        &pod_of(vec![
            container_sc("a", "nginx", json!({"privileged": false})),
            container("b", "nginx"),
            container_sc("c", "nginx", json!({})),
        ]),
    );
    assert_clean(&d);
}

#[test]
fn allow_privilege_escalation_violates_unless_explicitly_false() {
    let p = policy(vec![block(
        "containerSecurityContext",
        "allowPrivilegeEscalation",
        "true",
    )]);
    let d = eval(
        &p,
        &pod_of(vec![
            container("unset", "nginx"),
            container_sc("empty", "nginx", json!({})),
            container_sc("yes", "nginx", json!({"allowPrivilegeEscalation": true})),
            container_sc("no", "nginx", json!({"allowPrivilegeEscalation": false})),
        ]),
    );
    assert_blocks(&d);
    assert_eq!(violating_containers(&d), vec!["unset", "empty", "yes"]);
}

#[test]
fn allow_privilege_escalation_is_skipped_for_windows_pods() {
    let p = policy(vec![block(
        "containerSecurityContext",
        "allowPrivilegeEscalation",
        "true",
    )]);
    let d = eval(
        &p,
        &pod(
            json!({"os": {"name": "windows"}, "containers": [container("unset", "mcr.microsoft.com/windows/nanoserver:ltsc2022")]}),
        ),
    );
    assert_clean(&d);
    // A Linux pod (os.name linux) is judged as usual.
    let d = eval(
        &p,
        &pod(json!({"os": {"name": "linux"}, "containers": [container("unset", "nginx")]})),
    );
    assert_blocks(&d);
}

#[test]
fn read_only_root_filesystem_violates_unless_true() {
    let p = policy(vec![block(
        "containerSecurityContext",
        "readOnlyRootFilesystem",
        "false",
    )]);
    let d = eval(
        &p,
        &pod_of(vec![
            container("unset", "nginx"),
            container_sc("no", "nginx", json!({"readOnlyRootFilesystem": false})),
            container_sc("yes", "nginx", json!({"readOnlyRootFilesystem": true})),
        ]),
    );
    assert_blocks(&d);
    assert_eq!(violating_containers(&d), vec!["unset", "no"]);
}

// ---------------------------------------------------------------------------------------
// containerSecurityContext: runAsNonRoot ("run as root")
// ---------------------------------------------------------------------------------------

fn run_as_root_policy() -> portcullis_engine::evaluate::CompiledPolicy {
    policy(vec![block("containerSecurityContext", "runAsNonRoot", "false")])
}

#[test]
fn run_as_root_pod_level_true_covers_containers_that_leave_it_unset() {
    let d = eval(
        &run_as_root_policy(),
        &pod(json!({"securityContext": {"runAsNonRoot": true}, "containers": [container("app", "nginx")]})),
    );
    assert_clean(&d);
}

#[test]
fn run_as_root_unset_everywhere_violates() {
    let d = eval(&run_as_root_policy(), &pod_of(vec![container("app", "nginx")]));
    assert_blocks(&d);
    assert_eq!(only_violation(&d).containers, vec!["app"]);
}

#[test]
fn run_as_root_container_level_true_suffices_without_pod_level() {
    let d = eval(
        &run_as_root_policy(),
        &pod_of(vec![container_sc("app", "nginx", json!({"runAsNonRoot": true}))]),
    );
    assert_clean(&d);
}

#[test]
fn run_as_root_container_false_overrides_pod_true() {
    let d = eval(
        &run_as_root_policy(),
        &pod(json!({
            "securityContext": {"runAsNonRoot": true},
            "containers": [container("ok", "nginx"), container_sc("root", "nginx", json!({"runAsNonRoot": false}))]
        })),
    );
    assert_blocks(&d);
    assert_eq!(only_violation(&d).containers, vec!["root"]);
}

#[test]
fn run_as_root_pod_false_violates_even_when_containers_say_true() {
    let d = eval(
        &run_as_root_policy(),
        &pod(json!({
            "securityContext": {"runAsNonRoot": false},
            "containers": [container_sc("app", "nginx", json!({"runAsNonRoot": true}))]
        })),
    );
    assert_blocks(&d);
    let v = only_violation(&d);
    assert!(v.pod_level);
    assert!(v.message.contains(r#"in pod "p""#), "{}", v.message);
}

#[test]
fn run_as_root_run_as_user_zero_violates_at_pod_or_container_level() {
    let pod_zero = pod(json!({
        "securityContext": {"runAsNonRoot": true, "runAsUser": 0},
        "containers": [container("app", "nginx")]
    }));
    let d = eval(&run_as_root_policy(), &pod_zero);
    assert_blocks(&d);
    let v = only_violation(&d);
    assert!(v.pod_level);
    assert!(v.message.contains(r#"in pod "p""#), "{}", v.message);

    let container_zero = pod(json!({
        "securityContext": {"runAsNonRoot": true},
        "containers": [container("ok", "nginx"), container_sc("zero", "nginx", json!({"runAsUser": 0}))]
    }));
    let d = eval(&run_as_root_policy(), &container_zero);
    assert_blocks(&d);
    assert_eq!(only_violation(&d).containers, vec!["zero"]);

    let non_zero = pod(json!({
        "securityContext": {"runAsNonRoot": true, "runAsUser": 1000},
        "containers": [container_sc("app", "nginx", json!({"runAsUser": 1001}))]
    }));
    assert_clean(&eval(&run_as_root_policy(), &non_zero));
}

#[test]
fn run_as_root_is_skipped_for_pods_in_a_user_namespace() {
    let d = eval(
        &run_as_root_policy(),
        &pod(json!({
            "hostUsers": false,
            "securityContext": {"runAsUser": 0},
            "containers": [container("app", "nginx"), container_sc("zero", "nginx", json!({"runAsNonRoot": false, "runAsUser": 0}))]
        })),
    );
    assert_clean(&d);
    // hostUsers: true is the default, not a user namespace.
    let d = eval(
        &run_as_root_policy(),
        &pod(json!({"hostUsers": true, "containers": [container("app", "nginx")]})),
    );
    assert_blocks(&d);
}

// ---------------------------------------------------------------------------------------
// containerSecurityContext: capabilities-rule presets
// ---------------------------------------------------------------------------------------

fn caps(name: &str, add: &[&str], drop: &[&str]) -> Value {
    container_sc(name, "nginx", json!({"capabilities": {"add": add, "drop": drop}}))
}

/// The containers the preset finds at fault in a Linux pod of these containers.
fn capability_offenders(preset: &str, containers: Vec<Value>) -> Vec<String> {
    let p = policy(vec![block("containerSecurityContext", "capabilities-rule", preset)]);
    let d = eval(&p, &pod_of(containers));
    match d.violations.as_slice() {
        [] => {
            assert_eq!(d.verdict, Verdict::Allow);
            Vec::new()
        }
        [v] => {
            assert_eq!(d.verdict, Verdict::Block);
            v.containers.clone()
        }
        more => panic!("one rule, several violations: {more:#?}"),
    }
}

#[test]
fn capabilities_restrict_nondefaults_allows_only_the_default_set() {
    let offenders = capability_offenders(
        "restrict-nondefaults",
        vec![
            caps(
                "defaults",
                &["NET_RAW", "CHOWN", "SETUID", "NET_BIND_SERVICE", "AUDIT_WRITE"],
                &[],
            ),
            caps("sysadmin", &["SYS_ADMIN"], &[]),
            caps("lower", &["chown"], &[]),
            caps("prefixed", &["CAP_CHOWN"], &[]),
            caps("none", &[], &[]),
            container("nothing", "nginx"),
        ],
    );
    assert_eq!(offenders, vec!["sysadmin", "lower", "prefixed"]);
}

#[test]
fn capabilities_baseline_is_the_default_set_minus_net_raw_case_sensitive() {
    let offenders = capability_offenders(
        "baseline",
        vec![
            caps("chown", &["CHOWN", "KILL", "NET_BIND_SERVICE"], &[]),
            caps("netraw", &["NET_RAW"], &[]),
            caps("lower", &["chown"], &[]),
            caps("prefixed", &["CAP_CHOWN"], &[]),
            caps("sysadmin", &["SYS_ADMIN"], &[]),
            container("nothing", "nginx"),
        ],
    );
    assert_eq!(offenders, vec!["netraw", "lower", "prefixed", "sysadmin"]);
}

#[test]
fn capabilities_restricted_requires_drop_all_and_allows_only_net_bind_service() {
    let offenders = capability_offenders(
        "restricted",
        vec![
            caps("ok", &[], &["ALL"]),
            caps("netbind", &["NET_BIND_SERVICE"], &["ALL"]),
            caps("chown", &["CHOWN"], &["ALL"]),
            caps("nodrop", &[], &[]),
            caps("dropsome", &[], &["NET_RAW"]),
            caps("lowerall", &[], &["all"]),
            container("nothing", "nginx"),
            caps("netraw", &["NET_RAW"], &["ALL"]),
        ],
    );
    assert_eq!(
        offenders,
        vec!["chown", "nodrop", "dropsome", "lowerall", "nothing", "netraw"]
    );
}

#[test]
fn capabilities_restrict_all_requires_drop_all_and_nothing_added() {
    let offenders = capability_offenders(
        "restrict-all",
        vec![
            caps("ok", &[], &["ALL"]),
            caps("netbind", &["NET_BIND_SERVICE"], &["ALL"]),
            caps("nodrop", &[], &[]),
            container("nothing", "nginx"),
        ],
    );
    assert_eq!(offenders, vec!["netbind", "nodrop", "nothing"]);
}

/// The containers the preset finds at fault in a Windows pod of these containers.
fn windows_capability_offenders(preset: &str, containers: Vec<Value>) -> Vec<String> {
    let p = policy(vec![block("containerSecurityContext", "capabilities-rule", preset)]);
    let d = eval(&p, &pod(json!({"os": {"name": "windows"}, "containers": containers})));
    d.violations.iter().flat_map(|v| v.containers.clone()).collect()
}

#[test]
fn windows_pods_skip_drop_all_but_keep_every_limit_on_added_capabilities() {
    // restricted: no drop needed; only NET_BIND_SERVICE may be added.
    assert_eq!(
        windows_capability_offenders(
            "restricted",
            vec![
                caps("nodrop", &[], &[]),
                container("nothing", "nginx"),
                caps("netbind", &["NET_BIND_SERVICE"], &[]),
                caps("chown", &["CHOWN"], &[]),
            ]
        ),
        vec!["chown"]
    );
    // restrict-all: no drop needed; nothing may be added.
    assert_eq!(
        windows_capability_offenders(
            "restrict-all",
            vec![caps("nodrop", &[], &[]), caps("netbind", &["NET_BIND_SERVICE"], &[])]
        ),
        vec!["netbind"]
    );
    // baseline and restrict-nondefaults: their add limits are unchanged.
    assert_eq!(
        windows_capability_offenders(
            "baseline",
            vec![caps("netraw", &["NET_RAW"], &[]), caps("ok", &["CHOWN"], &[])]
        ),
        vec!["netraw"]
    );
    assert_eq!(
        windows_capability_offenders(
            "restrict-nondefaults",
            vec![caps("sysadmin", &["SYS_ADMIN"], &[]), caps("ok", &["NET_RAW"], &[])]
        ),
        vec!["sysadmin"]
    );
}

// ---------------------------------------------------------------------------------------
// registry / image / tag / imagePath
// ---------------------------------------------------------------------------------------

/// (reference as written, registry, image, tag, imagePath), from POLICY.md section 2.
const REFERENCES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "nginx",
        "docker.io",
        "library/nginx",
        "latest",
        "docker.io/library/nginx:latest",
    ),
    (
        "nginx:1.25",
        "docker.io",
        "library/nginx",
        "1.25",
        "docker.io/library/nginx:1.25",
    ),
    ("myorg/app:v2", "docker.io", "myorg/app", "v2", "docker.io/myorg/app:v2"),
    (
        "index.docker.io/redis",
        "docker.io",
        "library/redis",
        "latest",
        "docker.io/library/redis:latest",
    ),
    (
        "localhost:5000/team/app:v1",
        "localhost:5000",
        "team/app",
        "v1",
        "localhost:5000/team/app:v1",
    ),
    ("localhost/app", "localhost", "app", "latest", "localhost/app:latest"),
    (
        "Registry.Example.COM/app:7",
        "registry.example.com",
        "app",
        "7",
        "registry.example.com/app:7",
    ),
    (
        "quay.io/org/app@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "quay.io",
        "org/app",
        "",
        "quay.io/org/app@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ),
    (
        "registry.example.com/a/b:2.0@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        "registry.example.com",
        "a/b",
        "2.0",
        "registry.example.com/a/b:2.0@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    ),
];

/// Whether an image rule `rule_type` with `operator: value` is violated by `image`.
fn image_rule_violated(rule_type: &str, operator: &str, value: &str, image: &str) -> bool {
    let p = policy(vec![block(rule_type, operator, value)]);
    let d = eval(&p, &pod_of(vec![container("app", image)]));
    match d.violations.as_slice() {
        [] => false,
        [v] => {
            assert_eq!(v.containers, vec!["app"]);
            assert_eq!(d.verdict, Verdict::Block);
            true
        }
        more => panic!("{more:#?}"),
    }
}

#[test]
fn image_rules_test_the_normalised_fields_with_every_operator() {
    for &(reference, registry, image, tag, image_path) in REFERENCES {
        for (rule_type, field) in [
            ("registry", registry),
            ("image", image),
            ("tag", tag),
            ("imagePath", image_path),
        ] {
            let ctx = format!("{rule_type} of {reference:?} is {field:?}");
            let other = format!("{field}-other");
            assert!(
                image_rule_violated(rule_type, "equals", field, reference),
                "equals: {ctx}"
            );
            assert!(
                !image_rule_violated(rule_type, "equals", &other, reference),
                "equals other: {ctx}"
            );
            assert!(
                !image_rule_violated(rule_type, "not-equals", field, reference),
                "not-equals: {ctx}"
            );
            assert!(
                image_rule_violated(rule_type, "not-equals", &other, reference),
                "not-equals other: {ctx}"
            );
            if field.is_empty() {
                // contains / not-contains / starts-with refuse an empty operand.
                continue;
            }
            // A proper substring and a proper prefix (the field itself when one character long).
            let (inner, head) = if field.len() > 1 {
                (&field[1..], &field[..field.len() - 1])
            } else {
                (field, field)
            };
            assert!(
                image_rule_violated(rule_type, "contains", inner, reference),
                "contains: {ctx}"
            );
            assert!(
                !image_rule_violated(rule_type, "contains", &other, reference),
                "contains other: {ctx}"
            );
            assert!(
                !image_rule_violated(rule_type, "not-contains", inner, reference),
                "not-contains: {ctx}"
            );
            assert!(
                image_rule_violated(rule_type, "not-contains", "zzz~", reference),
                "not-contains other: {ctx}"
            );
            assert!(
                image_rule_violated(rule_type, "starts-with", head, reference),
                "starts-with: {ctx}"
            );
            assert!(
                !image_rule_violated(rule_type, "starts-with", &other, reference),
                "starts-with other: {ctx}"
            );
        }
    }
}

#[test]
fn image_rule_operators_are_case_sensitive() {
    assert!(!image_rule_violated("registry", "equals", "Docker.io", "nginx"));
    assert!(image_rule_violated("registry", "not-equals", "Docker.io", "nginx"));
    assert!(!image_rule_violated("image", "contains", "NGINX", "nginx"));
    assert!(!image_rule_violated("imagePath", "starts-with", "DOCKER.IO/", "nginx"));
    assert!(image_rule_violated("tag", "not-contains", "LATEST", "nginx"));
}

#[test]
fn starts_with_is_a_prefix_test_not_a_substring_test() {
    assert!(image_rule_violated(
        "imagePath",
        "starts-with",
        "docker.io/library/",
        "nginx"
    ));
    assert!(!image_rule_violated("imagePath", "starts-with", "library/", "nginx"));
    assert!(image_rule_violated("imagePath", "contains", "library/", "nginx"));
}

#[test]
fn invalid_references_violate_every_enabled_image_rule_whatever_its_condition() {
    // Conditions chosen so that no valid reference of this pod would violate them.
    let p = policy(vec![
        block("registry", "equals", "never.example.com"),
        block("image", "starts-with", "never/"),
        block("tag", "equals", "never"),
        rule("imagePath", &[("contains", "never")], "log"),
    ]);
    for bad in [
        "Nginx",
        "nginx:",
        "nginx@sha256:123",
        "registry.example.com/app:bad tag",
        "",
    ] {
        let d = eval(&p, &pod_of(vec![container("ok", "nginx:1.25"), container("bad", bad)]));
        assert_blocks(&d);
        assert_eq!(d.violations.len(), 4, "{bad:?}: {:#?}", d.violations);
        for v in &d.violations {
            assert_eq!(v.containers, vec!["bad"], "{bad:?}");
            assert!(v.message.contains("invalid image reference"), "{bad:?}: {}", v.message);
        }
    }
}

#[test]
fn invalid_references_do_not_affect_rules_of_other_types() {
    let p = policy(vec![block("containerSecurityContext", "privileged", "true")]);
    assert_clean(&eval(&p, &pod_of(vec![container("bad", "Nginx")])));
}

// ---------------------------------------------------------------------------------------
// Scan-result rules
// ---------------------------------------------------------------------------------------

fn image_a() -> String {
    format!("registry.example.com/app@{DIGEST_A}")
}

/// The decision for one container running `image_a()` against `rules`, over `results`.
fn scanned(
    rules: Vec<Value>,
    results: &[portcullis_engine::scan::ScanResult],
) -> portcullis_engine::evaluate::Decision {
    let s = store(results);
    eval_with(
        &policy(rules),
        &pod_of(vec![container("app", &image_a())]),
        &ctx_scans(&s),
    )
}

fn vuln(severity: Severity) -> portcullis_engine::scan::ScanResult {
    scan(
        DIGEST_A,
        ScanType::Vulnerability,
        1,
        vec![finding("CVE-1", severity, None)],
    )
}

#[test]
fn vulnerabilities_fire_only_for_findings_more_severe_than_max() {
    let r = |max: &str| vec![block("vulnerabilities", "max-severity", max)];
    assert_blocks(&scanned(r("high"), &[vuln(Severity::Critical)]));
    assert_clean(&scanned(r("high"), &[vuln(Severity::High)]));
    assert_blocks(&scanned(r("medium"), &[vuln(Severity::High)]));
    assert_clean(&scanned(r("medium"), &[vuln(Severity::Medium)]));
    assert_blocks(&scanned(r("low"), &[vuln(Severity::Medium)]));
    assert_blocks(&scanned(r("negligible"), &[vuln(Severity::Low)]));
    assert_clean(&scanned(r("negligible"), &[vuln(Severity::Negligible)]));
    // unknown is more severe only than none.
    assert_clean(&scanned(r("negligible"), &[vuln(Severity::Unknown)]));
    assert_clean(&scanned(r("unknown"), &[vuln(Severity::Unknown)]));
    assert_blocks(&scanned(r("unknown"), &[vuln(Severity::Negligible)]));
    assert_blocks(&scanned(r("none"), &[vuln(Severity::Unknown)]));
    assert_clean(&scanned(r("none"), &[vuln(Severity::None)]));
    // Clean scan, and no scan at all: not a vulnerability violation.
    assert_clean(&scanned(
        r("none"),
        &[scan(DIGEST_A, ScanType::Vulnerability, 1, vec![])],
    ));
    assert_clean(&scanned(r("none"), &[]));
}

#[test]
fn vulnerabilities_read_only_vulnerability_scans_and_the_newest_one() {
    let r = vec![block("vulnerabilities", "max-severity", "high")];
    let malware = scan(
        DIGEST_A,
        ScanType::Malware,
        1,
        vec![finding("EICAR", Severity::Critical, None)],
    );
    assert_clean(&scanned(r.clone(), &[malware]));
    // An old critical result superseded by a newer clean one.
    let old = scan(
        DIGEST_A,
        ScanType::Vulnerability,
        10,
        vec![finding("CVE-1", Severity::Critical, None)],
    );
    let new = scan(DIGEST_A, ScanType::Vulnerability, 1, vec![]);
    assert_clean(&scanned(r, &[old, new]));
}

const AV_N_HIGH: &str = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H";
const AV_L_LOW_AVAIL: &str = "CVSS:3.1/AV:L/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:L";

fn cvss_scan(findings: Vec<portcullis_engine::scan::Finding>) -> portcullis_engine::scan::ScanResult {
    scan(DIGEST_A, ScanType::Vulnerability, 1, findings)
}

#[test]
fn cvss_rules_without_max_severity_fire_on_any_finding_with_that_metric_value() {
    let n = cvss_scan(vec![finding("CVE-N", Severity::Low, Some(AV_N_HIGH))]);
    let l = cvss_scan(vec![finding("CVE-L", Severity::Critical, Some(AV_L_LOW_AVAIL))]);
    let none = cvss_scan(vec![finding("CVE-X", Severity::Critical, None)]);

    let av = |v: &str| vec![block("cvssAttackVector", "cvss-attack-vector", v)];
    assert_blocks(&scanned(av("network"), std::slice::from_ref(&n)));
    assert_clean(&scanned(av("network"), std::slice::from_ref(&l)));
    assert_blocks(&scanned(av("local"), std::slice::from_ref(&l)));
    assert_clean(&scanned(av("adjacent"), std::slice::from_ref(&n)));
    assert_clean(&scanned(av("physical"), std::slice::from_ref(&l)));

    let ac = |v: &str| vec![block("cvssAttackComplexity", "cvss-attack-complexity", v)];
    assert_blocks(&scanned(ac("low"), std::slice::from_ref(&n)));
    assert_clean(&scanned(ac("low"), std::slice::from_ref(&l)));
    assert_blocks(&scanned(ac("high"), std::slice::from_ref(&l)));

    let avail = |v: &str| vec![block("cvssAvailability", "cvss-availability", v)];
    assert_blocks(&scanned(avail("high"), std::slice::from_ref(&n)));
    assert_clean(&scanned(avail("high"), std::slice::from_ref(&l)));
    assert_blocks(&scanned(avail("low"), std::slice::from_ref(&l)));

    // A finding without a vector never matches a cvss rule.
    for rules in [
        av("network"),
        av("local"),
        ac("low"),
        ac("high"),
        avail("high"),
        avail("low"),
    ] {
        assert_clean(&scanned(rules, std::slice::from_ref(&none)));
    }
}

#[test]
fn cvss_rules_with_max_severity_need_a_finding_with_the_value_more_severe_than_max() {
    let rules = vec![rule(
        "cvssAttackVector",
        &[("cvss-attack-vector", "network"), ("max-severity", "medium")],
        "block",
    )];
    assert_blocks(&scanned(
        rules.clone(),
        &[cvss_scan(vec![finding("CVE-N", Severity::High, Some(AV_N_HIGH))])],
    ));
    assert_clean(&scanned(
        rules.clone(),
        &[cvss_scan(vec![finding("CVE-N", Severity::Medium, Some(AV_N_HIGH))])],
    ));
    // The severe finding is local, the network one is medium: no single finding qualifies.
    let d = scanned(
        rules,
        &[cvss_scan(vec![
            finding("CVE-L", Severity::Critical, Some(AV_L_LOW_AVAIL)),
            finding("CVE-N", Severity::Medium, Some(AV_N_HIGH)),
        ])],
    );
    assert_clean(&d);

    let message_rule = vec![rule(
        "cvssAvailability",
        &[("cvss-availability", "high"), ("max-severity", "low")],
        "block",
    )];
    let d = scanned(
        message_rule,
        &[cvss_scan(vec![finding("CVE-N", Severity::High, Some(AV_N_HIGH))])],
    );
    assert_eq!(
        only_violation(&d).message,
        r#"cvssAvailability violates rule with properties { cvss-availability:high, max-severity:low } in container(s) "app" (block)."#
    );
}

#[test]
fn malware_and_secrets_fire_on_any_finding_of_their_own_scan_type() {
    let malware = vec![block("malware", "count", "0")];
    let secrets = vec![block("secrets", "count", "0")];
    let m = scan(
        DIGEST_A,
        ScanType::Malware,
        1,
        vec![finding("EICAR", Severity::Unknown, None)],
    );
    let s = scan(
        DIGEST_A,
        ScanType::Secret,
        1,
        vec![finding("aws-key", Severity::Critical, None)],
    );
    let v = vuln(Severity::Critical);
    assert_blocks(&scanned(malware.clone(), std::slice::from_ref(&m)));
    assert_clean(&scanned(malware.clone(), &[s.clone(), v.clone()]));
    assert_clean(&scanned(
        malware.clone(),
        &[scan(DIGEST_A, ScanType::Malware, 1, vec![])],
    ));
    assert_clean(&scanned(malware, &[]));
    assert_blocks(&scanned(secrets.clone(), std::slice::from_ref(&s)));
    assert_clean(&scanned(secrets.clone(), &[m, v]));
    assert_clean(&scanned(secrets, &[scan(DIGEST_A, ScanType::Secret, 1, vec![])]));
}

#[test]
fn unscanned_rules_fire_without_a_scan_of_their_type() {
    let kinds = [
        ("unscannedImage", ScanType::Vulnerability),
        ("unscannedImageMalware", ScanType::Malware),
        ("unscannedImageSecret", ScanType::Secret),
    ];
    for (rule_type, scan_type) in kinds {
        let rules = vec![rule(rule_type, &[], "block")];
        assert_blocks(&scanned(rules.clone(), &[]));
        assert_clean(&scanned(rules.clone(), &[scan(DIGEST_A, scan_type, 300, vec![])]));
        // A scan of another type does not count.
        let others: Vec<_> = ScanType::ALL
            .into_iter()
            .filter(|t| *t != scan_type)
            .map(|t| scan(DIGEST_A, t, 0, vec![]))
            .collect();
        assert_blocks(&scanned(rules, &others));
    }
}

#[test]
fn unscanned_rules_with_days_fire_when_the_newest_scan_is_older() {
    for (rule_type, scan_type) in [
        ("unscannedImage", ScanType::Vulnerability),
        ("unscannedImageMalware", ScanType::Malware),
        ("unscannedImageSecret", ScanType::Secret),
    ] {
        let rules = vec![rule(rule_type, &[("days", "7")], "block")];
        assert_blocks(&scanned(rules.clone(), &[scan(DIGEST_A, scan_type, 8, vec![])]));
        assert_clean(&scanned(rules.clone(), &[scan(DIGEST_A, scan_type, 6, vec![])]));
        // The newest scan decides.
        assert_clean(&scanned(
            rules.clone(),
            &[
                scan(DIGEST_A, scan_type, 20, vec![]),
                scan(DIGEST_A, scan_type, 2, vec![]),
            ],
        ));
        assert_blocks(&scanned(rules, &[]));
    }
}

#[test]
fn tag_only_references_are_resolved_through_the_digest_map() {
    let s = store(&[vuln(Severity::Critical)]);
    let rules = vec![
        block("vulnerabilities", "max-severity", "high"),
        rule("unscannedImage", &[], "log"),
    ];
    let p = policy(rules);
    let doc = pod_of(vec![
        container("app", "registry.example.com/app:1.0"),
        container("hub", "nginx"),
    ]);

    // By the reference as written, and by the normalised image path.
    let map = digest_map(&[
        ("registry.example.com/app:1.0", DIGEST_A),
        ("docker.io/library/nginx:latest", DIGEST_B),
    ]);
    let ctx = EvalContext {
        digests: &map,
        ..ctx_scans(&s)
    };
    let d = eval_with(&p, &doc, &ctx);
    assert_blocks(&d);
    assert_eq!(d.violations[0].rule_type, "vulnerabilities");
    assert_eq!(d.violations[0].containers, vec!["app"]);
    // nginx resolved to DIGEST_B, which has no scan: unscanned (log).
    assert_eq!(d.violations[1].rule_type, "unscannedImage");
    assert_eq!(d.violations[1].containers, vec!["hub"]);
    assert!(d.digests.contains(&ImageDigest {
        image: "registry.example.com/app:1.0".to_owned(),
        digest: DIGEST_A.to_owned()
    }));
    assert!(d.digests.contains(&ImageDigest {
        image: "nginx".to_owned(),
        digest: DIGEST_B.to_owned()
    }));
}

#[test]
fn an_unresolvable_tag_counts_as_unscanned() {
    let s = store(&[vuln(Severity::Critical)]);
    let p = policy(vec![
        block("vulnerabilities", "max-severity", "high"),
        block("unscannedImage", "days", "30"),
    ]);
    let doc = pod_of(vec![container("app", "registry.example.com/app:1.0")]);
    let empty = DigestMap::default();
    for digests in [&empty as &dyn portcullis_engine::evaluate::DigestResolver, &NoDigests] {
        let ctx = EvalContext {
            digests,
            ..ctx_scans(&s)
        };
        let d = eval_with(&p, &doc, &ctx);
        assert_blocks(&d);
        let v = only_violation(&d);
        assert_eq!(v.rule_type, "unscannedImage");
        assert!(d.stage_failures.is_empty());
    }
}

/// A scan-result store that cannot be reached.
struct Unreachable;

impl ScanResults for Unreachable {
    fn latest(&self, _: &str, _: ScanType) -> Result<Option<&ScanSummary>, ScanUnavailable> {
        Err(ScanUnavailable("connection refused".to_owned()))
    }
}

#[test]
fn an_unreachable_scan_store_follows_the_failure_mode_and_is_never_read_as_unscanned() {
    let p = policy(vec![
        block("unscannedImage", "days", "1"),
        block("vulnerabilities", "max-severity", "none"),
        block("malware", "count", "0"),
    ]);
    let doc = pod_of(vec![container("app", &image_a())]);
    for (mode, verdict) in [
        (FailureMode::FailClosed, Verdict::Block),
        (FailureMode::FailOpen, Verdict::Allow),
    ] {
        let ctx = EvalContext {
            scans: &Unreachable,
            failure_mode: mode,
            ..EvalContext::offline(NOW)
        };
        let d = eval_with(&p, &doc, &ctx);
        assert_eq!(d.verdict, verdict, "{mode:?}: {d:#?}");
        assert!(
            d.violations.is_empty(),
            "{mode:?}: never unscanned: {:#?}",
            d.violations
        );
        assert!(!d.stage_failures.is_empty(), "{mode:?}: the failure is reported");
        assert!(
            d.status_message().contains("connection refused"),
            "{}",
            d.status_message()
        );
    }
}

#[test]
fn an_unreachable_scan_store_does_not_matter_without_scan_rules() {
    let p = policy(vec![block("containerSecurityContext", "privileged", "true")]);
    let ctx = EvalContext {
        scans: &Unreachable,
        failure_mode: FailureMode::FailClosed,
        ..EvalContext::offline(NOW)
    };
    let d = eval_with(&p, &pod_of(vec![container("app", &image_a())]), &ctx);
    assert_clean(&d);
    assert!(d.stage_failures.is_empty());
}

// ---------------------------------------------------------------------------------------
// podSecurityStandard
// ---------------------------------------------------------------------------------------

fn restricted_pod() -> Value {
    pod(json!({
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container_sc("app", "nginx", json!({
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]}
        }))]
    }))
}

#[test]
fn pod_security_standard_baseline_names_each_failing_check() {
    let p = policy(vec![block("podSecurityStandard", "level", "baseline")]);
    let d = eval(
        &p,
        &pod(json!({"hostNetwork": true, "containers": [privileged("app", "nginx"), container("ok", "nginx")]})),
    );
    assert_blocks(&d);
    let v = only_violation(&d);
    assert_eq!(v.rule_type, "podSecurityStandard");
    let mut checks = v.checks.clone();
    checks.sort_unstable();
    assert_eq!(checks, vec!["hostNamespaces", "privileged"]);
    assert!(v.containers.contains(&"app".to_owned()));
    assert!(!v.containers.contains(&"ok".to_owned()));
    for id in ["hostNamespaces", "privileged"] {
        assert!(v.message.contains(id), "{}", v.message);
    }
    // The restricted-compliant pod passes baseline; a default pod passes baseline too.
    assert_clean(&eval(&p, &restricted_pod()));
    assert_clean(&eval(&p, &pod_of(vec![container("app", "nginx")])));
}

#[test]
fn pod_security_standard_restricted_names_each_failing_check() {
    let p = policy(vec![block("podSecurityStandard", "level", "restricted")]);
    assert_clean(&eval(&p, &restricted_pod()));
    let d = eval(&p, &pod_of(vec![container("app", "nginx")]));
    assert_blocks(&d);
    let v = only_violation(&d);
    let mut checks = v.checks.clone();
    checks.sort_unstable();
    assert_eq!(
        checks,
        vec![
            "allowPrivilegeEscalation",
            "capabilities_restricted",
            "runAsNonRoot",
            "seccompProfile_restricted"
        ]
    );
    for id in &checks {
        assert!(v.message.contains(id), "{}", v.message);
    }
}

// ---------------------------------------------------------------------------------------
// The admission decision
// ---------------------------------------------------------------------------------------

#[test]
fn any_block_violation_blocks_and_log_violations_are_listed_but_allowed() {
    let log_only = policy(vec![
        rule("containerSecurityContext", &[("privileged", "true")], "log"),
        rule(
            "containerSecurityContext",
            &[("readOnlyRootFilesystem", "false")],
            "log",
        ),
    ]);
    let doc = pod_of(vec![privileged("app", "nginx")]);
    let d = eval(&log_only, &doc);
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.violations.len(), 2);
    assert_eq!(d.warnings().count(), 2);
    assert!(d.violations.iter().all(|v| v.action == Action::Log));
    assert_eq!(
        d.violations[0].message,
        r#"containerSecurityContext violates rule with properties { privileged:true } in container(s) "app" (log)."#
    );

    let mixed = policy(vec![
        rule("containerSecurityContext", &[("privileged", "true")], "log"),
        block("containerSecurityContext", "readOnlyRootFilesystem", "false"),
    ]);
    let d = eval(&mixed, &doc);
    assert_blocks(&d);
    assert_eq!(d.violations.len(), 2, "the log-only violation is listed too");
    assert_eq!(d.warnings().count(), 1);
    assert_eq!(
        d.status_message(),
        "- containerSecurityContext violates rule with properties { privileged:true } in container(s) \"app\" (log).\n\
         - containerSecurityContext violates rule with properties { readOnlyRootFilesystem:false } in container(s) \"app\" (block)."
    );
}

#[test]
fn rules_are_or_ed_and_each_violated_rule_is_reported_once() {
    let p = policy(vec![
        block("podSecurityContext", "hostPID", "true"),
        block("containerSecurityContext", "privileged", "true"),
        block("registry", "equals", "docker.io"),
    ]);
    let compliant = pod_of(vec![container("app", "registry.example.com/app:1")]);
    assert_clean(&eval(&p, &compliant));
    let only_registry = pod_of(vec![container("a", "nginx"), container("b", "redis")]);
    let d = eval(&p, &only_registry);
    assert_blocks(&d);
    assert_eq!(only_violation(&d).containers, vec!["a", "b"]);
}

#[test]
fn rules_with_action_none_are_not_reported_at_admission() {
    let p = policy(vec![rule_with(
        "containerSecurityContext",
        &[("privileged", "true")],
        "none",
        "terminate",
    )]);
    assert_clean(&eval(&p, &pod_of(vec![privileged("app", "nginx")])));
}

#[test]
fn disabled_rules_take_part_in_nothing() {
    let mut r = block("containerSecurityContext", "privileged", "true");
    r["enabled"] = json!(false);
    r["mitigation"] = json!("terminate");
    let p = policy(vec![r]);
    let doc = pod_of(vec![privileged("app", "nginx")]);
    assert_clean(&eval(&p, &doc));
    assert_eq!(eval_running(&p, &doc).mitigation, Mitigation::None);
}

// ---------------------------------------------------------------------------------------
// The continuous decision
// ---------------------------------------------------------------------------------------

fn running(p: &portcullis_engine::evaluate::CompiledPolicy, doc: &Value) -> RunningDecision {
    eval_running(p, doc)
}

#[test]
fn continuous_takes_the_strongest_mitigation() {
    let rules = |m1: &str, m2: &str, m3: &str| {
        policy(vec![
            rule_with("containerSecurityContext", &[("privileged", "true")], "none", m1),
            rule_with("podSecurityContext", &[("hostNetwork", "true")], "none", m2),
            rule_with(
                "containerSecurityContext",
                &[("readOnlyRootFilesystem", "false")],
                "none",
                m3,
            ),
        ])
    };
    let doc = pod(json!({"hostNetwork": true, "containers": [privileged("app", "nginx")]}));
    assert_eq!(
        running(&rules("log", "isolate", "terminate"), &doc).mitigation,
        Mitigation::Terminate
    );
    assert_eq!(
        running(&rules("terminate", "log", "isolate"), &doc).mitigation,
        Mitigation::Terminate
    );
    assert_eq!(
        running(&rules("log", "isolate", "log"), &doc).mitigation,
        Mitigation::Isolate
    );
    assert_eq!(
        running(&rules("isolate", "log", "log"), &doc).mitigation,
        Mitigation::Isolate
    );
    assert_eq!(running(&rules("log", "log", "log"), &doc).mitigation, Mitigation::Log);
    let d = running(&rules("log", "isolate", "terminate"), &doc);
    assert_eq!(d.violations.len(), 3);
    assert!(
        d.violations[0].message.ends_with("(log)."),
        "{}",
        d.violations[0].message
    );
    assert!(
        d.violations[2].message.ends_with("(terminate)."),
        "{}",
        d.violations[2].message
    );

    // Only the violated rules count: a compliant container leaves only the host network.
    let compliant_containers = pod(
        json!({"hostNetwork": true, "containers": [container_sc("app", "nginx", json!({"readOnlyRootFilesystem": true}))]}),
    );
    assert_eq!(
        running(&rules("terminate", "log", "terminate"), &compliant_containers).mitigation,
        Mitigation::Log
    );
    assert_eq!(
        running(
            &rules("terminate", "log", "terminate"),
            &pod_of(vec![container_sc(
                "app",
                "nginx",
                json!({"readOnlyRootFilesystem": true})
            )])
        )
        .mitigation,
        Mitigation::None
    );
}

#[test]
fn rules_with_mitigation_none_are_not_reported_in_continuous_scanning() {
    let p = policy(vec![
        block("containerSecurityContext", "privileged", "true"),
        rule_with(
            "containerSecurityContext",
            &[("readOnlyRootFilesystem", "false")],
            "block",
            "log",
        ),
    ]);
    let d = running(&p, &pod_of(vec![privileged("app", "nginx")]));
    assert_eq!(d.mitigation, Mitigation::Log);
    assert_eq!(d.violations.len(), 1);
    assert_eq!(d.violations[0].properties[0].0, "readOnlyRootFilesystem");
}

#[test]
fn podexec_and_portforward_are_never_judged_on_running_pods() {
    let p = policy(vec![
        rule_with("podexec", &[("podExec", "true")], "block", "terminate"),
        rule_with("portforward", &[("podPortForward", "true")], "block", "terminate"),
    ]);
    let doc = pod_of(vec![privileged("app", "nginx")]);
    let d = running(&p, &doc);
    assert_eq!(d.mitigation, Mitigation::None);
    assert!(d.violations.is_empty());
    // Nor do they judge a pod CREATE: they are about CONNECT requests.
    assert_clean(&eval(&p, &doc));
}

fn running_pod(image: &str, image_id: &str) -> Value {
    let mut doc = pod_of(vec![container("app", image), container("side", "busybox:1")]);
    doc["status"] = json!({"containerStatuses": [
        {"name": "side", "image": "docker.io/library/busybox:1", "imageID": format!("docker.io/library/busybox@{DIGEST_B}")},
        {"name": "app", "image": "docker.io/library/nginx:1.25", "imageID": image_id}
    ]});
    doc
}

#[test]
fn continuous_scanning_takes_digests_from_container_statuses() {
    let s = store(&[
        vuln(Severity::Critical),
        scan(DIGEST_B, ScanType::Vulnerability, 1, vec![]),
    ]);
    let p = policy(vec![
        rule_with("vulnerabilities", &[("max-severity", "high")], "block", "isolate"),
        rule_with("unscannedImage", &[], "log", "log"),
    ]);
    let doc = running_pod("nginx:1.25", &format!("docker.io/library/nginx@{DIGEST_A}"));
    let ctx = ctx_scans(&s);
    let d = p.evaluate_running(&subject(&doc), &ctx);
    assert_eq!(d.mitigation, Mitigation::Isolate);
    assert_eq!(d.violations.len(), 1, "{:#?}", d.violations);
    assert_eq!(d.violations[0].containers, vec!["app"]);
    assert!(d.digests.contains(&ImageDigest {
        image: "nginx:1.25".to_owned(),
        digest: DIGEST_A.to_owned()
    }));
    assert!(d.digests.contains(&ImageDigest {
        image: "busybox:1".to_owned(),
        digest: DIGEST_B.to_owned()
    }));

    // The same pod at admission, without a resolver: both images are unscanned.
    let a = p.evaluate(&subject(&doc), &ctx);
    assert_eq!(a.verdict, Verdict::Allow);
    assert_eq!(only_violation(&a).rule_type, "unscannedImage");
    assert_eq!(a.violations[0].containers, vec!["app", "side"]);

    // A status without a digest leaves the image unscanned.
    let no_id = running_pod("nginx:1.25", "");
    let d = p.evaluate_running(&subject(&no_id), &ctx);
    assert_eq!(d.mitigation, Mitigation::Log);
    assert_eq!(only_running_violation(&d).rule_type, "unscannedImage");
    assert_eq!(d.violations[0].containers, vec!["app"]);
}

fn only_running_violation(d: &RunningDecision) -> &portcullis_engine::evaluate::Violation {
    assert_eq!(d.violations.len(), 1, "{:#?}", d.violations);
    &d.violations[0]
}

#[test]
fn excluded_namespaces_and_trusted_images_are_never_mitigated() {
    let p = policy(vec![rule_with(
        "containerSecurityContext",
        &[("privileged", "true")],
        "block",
        "terminate",
    )]);
    let excluded = vec!["kube-system".to_owned()];
    let ctx = EvalContext {
        excluded_namespaces: &excluded,
        ..EvalContext::offline(NOW)
    };
    let doc = pod_in("kube-system", json!({"containers": [privileged("app", "nginx")]}));
    let d = p.evaluate_running(&subject(&doc), &ctx);
    assert_eq!(d.mitigation, Mitigation::None);
    assert!(d.violations.is_empty());

    let t = trusted(&["registry.example.com/portcullis/agent"]);
    let ctx = EvalContext {
        trusted_images: &t,
        ..EvalContext::offline(NOW)
    };
    let doc = pod_of(vec![privileged("agent", "registry.example.com/portcullis/agent:1.2")]);
    let d = p.evaluate_running(&subject(&doc), &ctx);
    assert_eq!(d.mitigation, Mitigation::None);
    assert!(d.violations.is_empty());
}
