//! Unit tests: ids and order, each check's detail, scope, Windows and user namespaces.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::{Value, json};

use super::text::go_quote;
use super::*;

/// A pod from `{metadata, spec}` JSON.
fn pod(v: Value) -> (ObjectMeta, PodSpec) {
    let meta = serde_json::from_value(v.get("metadata").cloned().unwrap_or(json!({}))).unwrap();
    let spec = serde_json::from_value(v.get("spec").cloned().unwrap_or(json!({}))).unwrap();
    (meta, spec)
}

/// A pod whose spec is `spec`.
fn spec_pod(spec: Value) -> (ObjectMeta, PodSpec) {
    pod(json!({ "spec": spec }))
}

fn run(id: CheckId, p: &(ObjectMeta, PodSpec)) -> Option<CheckFailure> {
    check(id, &p.0, &p.1, &Scope::ALL)
}

/// Runs a check expected to fail and returns (reason, detail).
fn fails(id: CheckId, p: &(ObjectMeta, PodSpec)) -> (&'static str, String) {
    let f = run(id, p).unwrap_or_else(|| panic!("{id} should fail"));
    assert_eq!(f.id, id);
    (f.reason, f.detail)
}

/// The restricted minimal pod of PSA's fixtures.
fn restricted_pod() -> Value {
    let sc = json!({ "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } });
    json!({
        "securityContext": { "runAsNonRoot": true, "seccompProfile": { "type": "RuntimeDefault" } },
        "initContainers": [{ "name": "init", "image": "i", "securityContext": sc }],
        "containers": [{ "name": "app", "image": "a", "securityContext": sc }],
    })
}

#[test]
fn ids_round_trip_and_are_unique() {
    for id in CheckId::ALL {
        assert_eq!(CheckId::from_id(id.as_str()), Some(id));
        assert_eq!(id.to_string(), id.as_str());
    }
    let mut ids: Vec<&str> = CheckId::ALL.iter().map(|c| c.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), CheckId::ALL.len());
    assert_eq!(CheckId::from_id("hostnamespaces"), None);
}

#[test]
fn level_order_follows_psa_registry() {
    // Baseline: the baseline-level checks, ids in byte order.
    let mut baseline: Vec<CheckId> = CheckId::ALL
        .into_iter()
        .filter(|c| c.level() == Level::Baseline)
        .collect();
    baseline.sort_by_key(|c| c.as_str());
    assert_eq!(Level::Baseline.checks(), baseline.as_slice());
    // Restricted: baseline minus the overridden ones, then the restricted ones sorted.
    let mut restricted: Vec<CheckId> = baseline
        .iter()
        .copied()
        .filter(|c| c.overridden_by().is_none())
        .collect();
    let mut own: Vec<CheckId> = CheckId::ALL
        .into_iter()
        .filter(|c| c.level() == Level::Restricted)
        .collect();
    own.sort_by_key(|c| c.as_str());
    restricted.extend(own);
    assert_eq!(Level::Restricted.checks(), restricted.as_slice());
    for id in CheckId::ALL {
        if let Some(o) = id.overridden_by() {
            assert_eq!((id.level(), o.level()), (Level::Baseline, Level::Restricted));
        }
    }
}

#[test]
fn restricted_minimal_pod_passes_every_check() {
    let p = spec_pod(restricted_pod());
    assert!(evaluate_level(Level::Restricted, &p.0, &p.1, &Scope::ALL).is_empty());
    for id in CheckId::ALL {
        assert_eq!(run(id, &p), None, "{id}");
    }
}

#[test]
fn privileged_detail_and_plural() {
    let p = spec_pod(json!({ "containers": [{ "name": "x", "securityContext": { "privileged": true } }] }));
    assert_eq!(
        fails(CheckId::Privileged, &p),
        (
            "privileged",
            r#"container "x" must not set securityContext.privileged=true"#.into()
        )
    );
    let p = spec_pod(json!({
        "initContainers": [{ "name": "i", "securityContext": { "privileged": true } }],
        "containers": [{ "name": "a", "securityContext": { "privileged": true } }, { "name": "b", "securityContext": { "privileged": false } }],
        "ephemeralContainers": [{ "name": "e", "securityContext": { "privileged": true } }],
    }));
    let f = run(CheckId::Privileged, &p).unwrap();
    assert_eq!(
        f.detail,
        r#"containers "i", "a", "e" must not set securityContext.privileged=true"#
    );
    assert_eq!(f.containers, ["i", "a", "e"]);
    assert!(!f.pod_level);
}

#[test]
fn allow_privilege_escalation_detail() {
    let p = spec_pod(
        json!({ "containers": [{ "name": "a" }, { "name": "b", "securityContext": { "allowPrivilegeEscalation": true } }] }),
    );
    assert_eq!(
        fails(CheckId::AllowPrivilegeEscalation, &p),
        (
            "allowPrivilegeEscalation != false",
            r#"containers "a", "b" must set securityContext.allowPrivilegeEscalation=false"#.into()
        )
    );
}

#[test]
fn app_armor_detail_with_pod_containers_and_annotations() {
    let p = pod(json!({
        "metadata": { "annotations": {
            "container.apparmor.security.beta.kubernetes.io/b": "unconfined",
            "container.apparmor.security.beta.kubernetes.io/a": "localhost/ok",
            "container.apparmor.security.beta.kubernetes.io": "unconfined",
            "container.apparmor.security.beta.kubernetes.iox/c": "unconfined",
            "zz": "unconfined",
        } },
        "spec": {
            "securityContext": { "appArmorProfile": { "type": "Unconfined" } },
            "containers": [{ "name": "a", "securityContext": { "appArmorProfile": { "type": "Bogus" } } }],
        },
    }));
    let f = run(CheckId::AppArmorProfile, &p).unwrap();
    assert_eq!(f.reason, "forbidden AppArmor profiles");
    assert_eq!(
        f.detail,
        r#"pod and container "a" and annotation must not set AppArmor profile type to "Bogus", "Unconfined", "container.apparmor.security.beta.kubernetes.io/b="unconfined"""#
    );
    assert_eq!(f.containers, ["a"]);
    assert!(f.pod_level);
    let p = pod(
        json!({ "metadata": { "annotations": { "container.apparmor.security.beta.kubernetes.io/a": "unconfined" } } }),
    );
    assert_eq!(
        fails(CheckId::AppArmorProfile, &p),
        (
            "forbidden AppArmor profile",
            r#"annotation must not set AppArmor profile type to "container.apparmor.security.beta.kubernetes.io/a="unconfined"""#.into()
        )
    );
}

#[test]
fn capabilities_details() {
    let p = spec_pod(json!({ "containers": [
        { "name": "a", "securityContext": { "capabilities": { "add": ["NET_RAW", "CHOWN", "chown"] } } },
        { "name": "b", "securityContext": { "capabilities": { "add": ["NET_RAW"], "drop": ["ALL"] } } },
    ] }));
    assert_eq!(
        fails(CheckId::CapabilitiesBaseline, &p),
        (
            "non-default capabilities",
            r#"containers "a", "b" must not include "NET_RAW", "chown" in securityContext.capabilities.add"#.into()
        )
    );
    let f = run(CheckId::CapabilitiesRestricted, &p).unwrap();
    assert_eq!(f.reason, "unrestricted capabilities");
    assert_eq!(
        f.detail,
        r#"container "a" must set securityContext.capabilities.drop=["ALL"]; containers "a", "b" must not include "CHOWN", "NET_RAW", "chown" in securityContext.capabilities.add"#
    );
    assert_eq!(f.containers, ["a", "b"]);
    // NET_BIND_SERVICE is the one capability restricted allows to add.
    let p = spec_pod(json!({ "containers": [
        { "name": "a", "securityContext": { "capabilities": { "add": ["NET_BIND_SERVICE"], "drop": ["ALL"] } } },
        { "name": "b" },
    ] }));
    assert_eq!(
        fails(CheckId::CapabilitiesRestricted, &p).1,
        r#"container "b" must set securityContext.capabilities.drop=["ALL"]"#
    );
}

#[test]
fn host_namespaces_and_volumes_details() {
    let p = spec_pod(json!({ "hostNetwork": true, "hostPID": false, "hostIPC": true,
        "volumes": [{ "name": "h", "hostPath": { "path": "/" } }, { "name": "n", "nfs": {} }, { "name": "c", "configMap": {} }, { "name": "u", "madeUp": {} }] }));
    let f = run(CheckId::HostNamespaces, &p).unwrap();
    assert_eq!(
        (f.reason, f.detail.as_str()),
        ("host namespaces", "hostNetwork=true, hostIPC=true")
    );
    assert!(f.pod_level && f.containers.is_empty());
    assert_eq!(
        fails(CheckId::HostPathVolumes, &p),
        ("hostPath volumes", r#"volume "h""#.into())
    );
    assert_eq!(
        fails(CheckId::RestrictedVolumes, &p),
        (
            "restricted volume types",
            r#"volumes "h", "n" use restricted volume types "hostPath", "nfs""#.into()
        )
    );
    let p = spec_pod(
        json!({ "volumes": [{ "name": "g", "gitRepo": {} }, { "name": "e", "emptyDir": null, "glusterfs": {} }] }),
    );
    assert_eq!(
        fails(CheckId::RestrictedVolumes, &p).1,
        r#"volumes "g", "e" use restricted volume types "gitRepo", "glusterfs""#
    );
    // No known source: the API server defaults it to emptyDir, which restricted allows.
    let p = spec_pod(json!({ "volumes": [{ "name": "u", "madeUp": {} }, { "name": "n", "nfs": null }] }));
    assert_eq!(run(CheckId::RestrictedVolumes, &p), None);
    let p = spec_pod(json!({ "volumes": [{ "name": "x", "hostPath": {} , "secret": {} }] }));
    assert_eq!(
        run(CheckId::RestrictedVolumes, &p),
        None,
        "an allowed source wins, as in PSA's switch"
    );
    assert!(run(CheckId::HostPathVolumes, &p).is_some());
}

#[test]
fn host_ports_sort_as_text() {
    let p = spec_pod(json!({ "containers": [
        { "name": "a", "ports": [{ "hostPort": 9090 }, { "hostPort": 0 }, { "containerPort": 80 }] },
        { "name": "b", "ports": [{ "hostPort": 10000 }, { "hostPort": 9090 }] },
    ] }));
    assert_eq!(
        fails(CheckId::HostPorts, &p),
        ("hostPort", r#"containers "a", "b" use hostPorts 10000, 9090"#.into())
    );
    let p = spec_pod(json!({ "containers": [{ "name": "a", "ports": [{ "hostPort": 80 }] }] }));
    assert_eq!(fails(CheckId::HostPorts, &p).1, r#"container "a" uses hostPort 80"#);
}

#[test]
fn host_probes_detail_is_sorted() {
    let p = spec_pod(json!({ "containers": [
        { "name": "z", "livenessProbe": { "httpGet": { "host": "b.example", "port": 80 } },
          "lifecycle": { "preStop": { "tcpSocket": { "host": "a.example" } }, "postStart": { "httpGet": { "host": "" } } } },
        { "name": "m", "startupProbe": { "tcpSocket": { "host": "b.example" } } },
    ] }));
    let f = run(CheckId::HostProbesAndHostLifecycle, &p).unwrap();
    assert_eq!(f.reason, "probe or lifecycle host");
    assert_eq!(
        f.detail,
        r#"containers "m", "z" use probe or lifecycle hosts "a.example", "b.example""#
    );
    assert_eq!(f.containers, ["z", "m"], "visiting order, unlike the detail");
    let p = spec_pod(json!({ "containers": [{ "name": "a", "readinessProbe": { "tcpSocket": { "host": "::1" } } }] }));
    assert_eq!(
        fails(CheckId::HostProbesAndHostLifecycle, &p).1,
        r#"container "a" uses probe or lifecycle host "::1""#
    );
}

#[test]
fn proc_mount_detail_and_user_namespaces() {
    let mut spec = json!({ "containers": [{ "name": "a", "securityContext": { "procMount": "Unmasked" } }, { "name": "b", "securityContext": { "procMount": "Default" } }] });
    let p = spec_pod(spec.clone());
    let expected = (
        "procMount",
        r#"container "a" must not set securityContext.procMount to "Unmasked""#.to_owned(),
    );
    assert_eq!(fails(CheckId::ProcMount, &p), expected);
    assert_eq!(fails(CheckId::ProcMountRestricted, &p), expected);
    spec["hostUsers"] = json!(false);
    let p = spec_pod(spec);
    assert_eq!(
        run(CheckId::ProcMount, &p),
        None,
        "baseline allows any procMount in a user namespace"
    );
    assert_eq!(fails(CheckId::ProcMountRestricted, &p), expected);
}

#[test]
fn run_as_non_root_details() {
    let p = spec_pod(
        json!({ "securityContext": { "runAsNonRoot": false }, "containers": [{ "name": "a" }, { "name": "b", "securityContext": { "runAsNonRoot": false } }, { "name": "c", "securityContext": { "runAsNonRoot": true } }] }),
    );
    let f = run(CheckId::RunAsNonRoot, &p).unwrap();
    assert_eq!(f.reason, "runAsNonRoot != true");
    assert_eq!(
        f.detail,
        r#"pod and container "b" must not set securityContext.runAsNonRoot=false"#
    );
    assert_eq!(f.containers, ["a", "b"], "a inherits the pod's false");
    assert!(f.pod_level);
    let p = spec_pod(
        json!({ "containers": [{ "name": "a" }, { "name": "c", "securityContext": { "runAsNonRoot": true } }] }),
    );
    let f = run(CheckId::RunAsNonRoot, &p).unwrap();
    assert_eq!(
        f.detail,
        r#"pod or container "a" must set securityContext.runAsNonRoot=true"#
    );
    assert_eq!(f.containers, ["a"]);
    assert!(!f.pod_level);
    let p = spec_pod(json!({ "securityContext": { "runAsNonRoot": true }, "containers": [{ "name": "a" }] }));
    assert_eq!(run(CheckId::RunAsNonRoot, &p), None);
}

#[test]
fn run_as_user_detail() {
    let p = spec_pod(
        json!({ "securityContext": { "runAsUser": 0 }, "containers": [{ "name": "a", "securityContext": { "runAsUser": 0 } }, { "name": "b", "securityContext": { "runAsUser": 1000 } }] }),
    );
    let f = run(CheckId::RunAsUser, &p).unwrap();
    assert_eq!(
        (f.reason, f.detail.as_str()),
        ("runAsUser=0", r#"pod and container "a" must not set runAsUser=0"#)
    );
    assert_eq!(f.containers, ["a"]);
    assert!(f.pod_level);
    let p = spec_pod(json!({ "securityContext": { "runAsUser": 0 }, "containers": [{ "name": "a" }] }));
    assert_eq!(fails(CheckId::RunAsUser, &p).1, "pod must not set runAsUser=0");
}

#[test]
fn host_users_false_skips_run_as_checks() {
    let mut spec = json!({ "securityContext": { "runAsUser": 0, "runAsNonRoot": false }, "containers": [{ "name": "a", "securityContext": { "runAsUser": 0 } }] });
    let p = spec_pod(spec.clone());
    assert!(run(CheckId::RunAsNonRoot, &p).is_some());
    assert!(run(CheckId::RunAsUser, &p).is_some());
    spec["hostUsers"] = json!(false);
    let p = spec_pod(spec.clone());
    assert_eq!(run(CheckId::RunAsNonRoot, &p), None);
    assert_eq!(run(CheckId::RunAsUser, &p), None);
    spec["hostUsers"] = json!(true);
    assert!(
        run(CheckId::RunAsUser, &spec_pod(spec)).is_some(),
        "only hostUsers: false relaxes"
    );
}

#[test]
fn se_linux_options_detail() {
    let p = spec_pod(json!({
        "securityContext": { "seLinuxOptions": { "type": "spc_t", "level": "s0" } },
        "containers": [
            { "name": "a", "securityContext": { "seLinuxOptions": { "user": "u", "type": "container_engine_t" } } },
            { "name": "b", "securityContext": { "seLinuxOptions": { "role": "r", "type": "bad_t" } } },
            { "name": "c", "securityContext": { "seLinuxOptions": { "type": "container_t", "user": "" } } },
        ],
    }));
    let f = run(CheckId::SeLinuxOptions, &p).unwrap();
    assert_eq!(f.reason, "seLinuxOptions");
    assert_eq!(
        f.detail,
        r#"pod and containers "a", "b" set forbidden securityContext.seLinuxOptions: types "bad_t", "spc_t"; user may not be set; role may not be set"#
    );
    let p =
        spec_pod(json!({ "containers": [{ "name": "a", "securityContext": { "seLinuxOptions": { "type": "x" } } }] }));
    assert_eq!(
        fails(CheckId::SeLinuxOptions, &p).1,
        r#"container "a" set forbidden securityContext.seLinuxOptions: type "x""#
    );
}

#[test]
fn seccomp_details() {
    let p = spec_pod(
        json!({ "securityContext": { "seccompProfile": { "type": "Unconfined" } }, "containers": [{ "name": "a" }, { "name": "b", "securityContext": { "seccompProfile": { "type": "Bad" } } }] }),
    );
    let expected = r#"pod and container "b" must not set securityContext.seccompProfile.type to "Bad", "Unconfined""#;
    assert_eq!(
        fails(CheckId::SeccompProfileBaseline, &p),
        ("seccompProfile", expected.into())
    );
    let f = run(CheckId::SeccompProfileRestricted, &p).unwrap();
    assert_eq!(f.detail, expected);
    assert_eq!(f.containers, ["a", "b"]);
    let p = spec_pod(
        json!({ "containers": [{ "name": "a" }, { "name": "b", "securityContext": { "seccompProfile": { "type": "Localhost" } } }] }),
    );
    assert_eq!(run(CheckId::SeccompProfileBaseline, &p), None, "baseline allows unset");
    assert_eq!(
        fails(CheckId::SeccompProfileRestricted, &p).1,
        r#"pod or container "a" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost""#
    );
}

#[test]
fn sysctls_detail_keeps_order() {
    let p = spec_pod(json!({ "securityContext": { "sysctls": [
        { "name": "z.bad" }, { "name": "net.ipv4.tcp_notsent_lowat" }, { "name": "a.bad" }, { "name": "z.bad" }] } }));
    assert_eq!(
        fails(CheckId::Sysctls, &p),
        ("forbidden sysctls", "z.bad, a.bad, z.bad".into())
    );
}

#[test]
fn windows_host_process_detail() {
    let p = spec_pod(
        json!({ "securityContext": { "windowsOptions": { "hostProcess": true } }, "containers": [{ "name": "a", "securityContext": { "windowsOptions": { "hostProcess": true } } }] }),
    );
    let f = run(CheckId::WindowsHostProcess, &p).unwrap();
    assert_eq!(
        (f.reason, f.detail.as_str()),
        (
            "hostProcess",
            r#"pod and container "a" must not set securityContext.windowsOptions.hostProcess=true"#
        )
    );
    assert!(f.pod_level);
}

#[test]
fn windows_pods_skip_what_psa_skips() {
    let windows = spec_pod(
        json!({ "os": { "name": "windows" }, "containers": [{ "name": "a", "securityContext": { "capabilities": { "add": ["SYS_ADMIN"] } } }] }),
    );
    let linux = spec_pod(
        json!({ "os": { "name": "linux" }, "containers": [{ "name": "a", "securityContext": { "capabilities": { "add": ["SYS_ADMIN"] } } }] }),
    );
    for id in [
        CheckId::AllowPrivilegeEscalation,
        CheckId::CapabilitiesRestricted,
        CheckId::SeccompProfileRestricted,
    ] {
        assert_eq!(run(id, &windows), None, "{id} skips Windows pods");
        assert!(run(id, &linux).is_some(), "{id} applies to Linux pods");
    }
    assert!(
        run(CheckId::CapabilitiesBaseline, &windows).is_some(),
        "the baseline limit on added capabilities stays"
    );
    // runAsNonRoot is not relaxed for Windows.
    assert!(run(CheckId::RunAsNonRoot, &windows).is_some());
}

#[test]
fn exempt_container_is_skipped() {
    let p = spec_pod(json!({
        "initContainers": [{ "name": "init", "image": "trusted/x", "securityContext": { "privileged": true, "runAsUser": 0 } }],
        "containers": [{ "name": "app", "image": "other", "securityContext": { "privileged": true } }, { "name": "tool", "image": "trusted/y", "ports": [{ "hostPort": 1 }] }],
    }));
    let exempt = |c: &Container| !c.image.starts_with("trusted/");
    let scope = Scope {
        container: &exempt,
        pod_level: true,
    };
    let f = check(CheckId::Privileged, &p.0, &p.1, &scope).unwrap();
    assert_eq!(f.containers, ["app"]);
    assert_eq!(
        f.detail,
        r#"container "app" must not set securityContext.privileged=true"#
    );
    assert_eq!(check(CheckId::HostPorts, &p.0, &p.1, &scope), None);
    assert_eq!(check(CheckId::RunAsUser, &p.0, &p.1, &scope), None);
    // runAsNonRoot: only the in-scope container is implicitly at fault.
    let f = check(CheckId::RunAsNonRoot, &p.0, &p.1, &scope).unwrap();
    assert_eq!(f.containers, ["app"]);
    assert_eq!(
        f.detail,
        r#"pod or container "app" must set securityContext.runAsNonRoot=true"#
    );
    let failing: Vec<CheckId> = evaluate_level(Level::Baseline, &p.0, &p.1, &scope)
        .iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(failing, [CheckId::Privileged]);
}

#[test]
fn pod_level_fields_skipped_only_when_out_of_scope() {
    let p = pod(json!({
        "metadata": { "annotations": { "container.apparmor.security.beta.kubernetes.io/a": "unconfined" } },
        "spec": {
            "hostNetwork": true,
            "securityContext": {
                "runAsNonRoot": false, "runAsUser": 0, "sysctls": [{ "name": "kernel.x" }],
                "seccompProfile": { "type": "Unconfined" }, "seLinuxOptions": { "user": "u" },
                "appArmorProfile": { "type": "Unconfined" }, "windowsOptions": { "hostProcess": true },
            },
            "volumes": [{ "name": "v", "hostPath": {} }],
            "containers": [{ "name": "a", "image": "x" }],
        },
    }));
    let pod_checks = [
        CheckId::HostNamespaces,
        CheckId::HostPathVolumes,
        CheckId::RestrictedVolumes,
        CheckId::Sysctls,
        CheckId::SeccompProfileBaseline,
        CheckId::SeLinuxOptions,
        CheckId::AppArmorProfile,
        CheckId::RunAsUser,
        CheckId::WindowsHostProcess,
    ];
    let nothing = |_: &Container| false;
    for id in pod_checks {
        let f = check(
            id,
            &p.0,
            &p.1,
            &Scope {
                container: &nothing,
                pod_level: true,
            },
        )
        .unwrap_or_else(|| panic!("{id}"));
        assert!(f.pod_level && f.containers.is_empty(), "{id}: {f:?}");
        assert_eq!(
            check(
                id,
                &p.0,
                &p.1,
                &Scope {
                    container: &nothing,
                    pod_level: false
                }
            ),
            None,
            "{id}"
        );
    }
    let f = check(
        CheckId::RunAsNonRoot,
        &p.0,
        &p.1,
        &Scope {
            container: &nothing,
            pod_level: true,
        },
    )
    .unwrap();
    assert_eq!(f.detail, "pod must not set securityContext.runAsNonRoot=false");
    assert!(f.pod_level);
    // Out of pod scope, the pod's false still leaves the in-scope container implicitly at fault.
    let all = |_: &Container| true;
    let f = check(
        CheckId::RunAsNonRoot,
        &p.0,
        &p.1,
        &Scope {
            container: &all,
            pod_level: false,
        },
    )
    .unwrap();
    assert_eq!(
        f.detail,
        r#"pod or container "a" must set securityContext.runAsNonRoot=true"#
    );
    assert_eq!(
        (f.containers.as_slice(), f.pod_level),
        (["a".to_owned()].as_slice(), false)
    );
    // And a valid pod-level seccomp profile still covers containers when out of pod scope.
    let p2 = spec_pod(
        json!({ "securityContext": { "seccompProfile": { "type": "RuntimeDefault" } }, "containers": [{ "name": "a" }] }),
    );
    assert_eq!(
        check(
            CheckId::SeccompProfileRestricted,
            &p2.0,
            &p2.1,
            &Scope {
                container: &all,
                pod_level: false
            }
        ),
        None
    );
}

#[test]
fn go_quote_matches_strconv_quote() {
    assert_eq!(go_quote("unconfined"), r#""unconfined""#);
    assert_eq!(go_quote("a\"b\\c\n\t\u{1}\u{7f}"), r#""a\"b\\c\n\t\x01\x7f""#);
    assert_eq!(go_quote("é\u{a0}\u{200b}"), r#""é\u00a0\u200b""#);
}
