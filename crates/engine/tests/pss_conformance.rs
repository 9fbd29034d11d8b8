//! Pod Security Admission's own v1.37 fixtures: every pass/ pod passes its level, every
//! fail/<check>N pod fails its level naming that check, and nothing else.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use portcullis_engine::k8s::{ObjectMeta, PodSpec};
use portcullis_engine::pss::{CheckId, Level, Scope, evaluate_level};
use serde::Deserialize;

/// The fixtures are Pods: only metadata and spec matter.
#[derive(Deserialize)]
struct ObjectForTest {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: PodSpec,
}

fn fixtures_root() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/conformance/pod-security-admission"
    ))
}

/// The YAML files of a folder, sorted, with their names without extension.
fn yaml_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    out
}

fn load(path: &Path) -> ObjectForTest {
    let text = std::fs::read_to_string(path).unwrap();
    let value: serde_json::Value = yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_value(value).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The check a fixture file name designates: the id whose lower-case form is the name
/// without its trailing number (`capabilities_baseline0` → `capabilities_baseline`).
fn check_of(name: &str) -> CheckId {
    let prefix = name.trim_end_matches(|c: char| c.is_ascii_digit());
    CheckId::ALL
        .into_iter()
        .find(|c| c.as_str().to_ascii_lowercase() == prefix)
        .unwrap_or_else(|| panic!("no check for fixture {name}"))
}

/// The checks PSA reports for the fail fixture `name` of `check` at `level`.
///
/// PSA registers baseline fixtures for restricted too; there, the baseline checks that a
/// restricted check overrides (registry OverrideCheckIDs: capabilities_baseline,
/// hostPathVolumes, procMount, seccompProfile_baseline) are reported by the overriding
/// check. Three fixture groups carry a second violation that API validation forces on them
/// (PSA's own fixture test only looks for a substring of the first):
/// - windowshostprocess*: host-process pods must set hostNetwork, so hostNamespaces fails;
/// - restricted privileged*: privileged containers may not set allowPrivilegeEscalation=false,
///   so the generator unsets it and allowPrivilegeEscalation fails;
/// - restricted allowprivilegeescalation3: the container has no securityContext at all, so
///   capabilities_restricted (drop ALL) fails too.
fn expected_checks(level: Level, check: CheckId, name: &str) -> BTreeSet<&'static str> {
    let reported = match (level, check) {
        (Level::Restricted, CheckId::CapabilitiesBaseline) => CheckId::CapabilitiesRestricted,
        (Level::Restricted, CheckId::HostPathVolumes) => CheckId::RestrictedVolumes,
        (Level::Restricted, CheckId::ProcMount) => CheckId::ProcMountRestricted,
        (Level::Restricted, CheckId::SeccompProfileBaseline) => CheckId::SeccompProfileRestricted,
        _ => check,
    };
    let mut set = BTreeSet::from([reported.as_str()]);
    let extra = match (level, check) {
        (_, CheckId::WindowsHostProcess) => Some(CheckId::HostNamespaces),
        (Level::Restricted, CheckId::Privileged) => Some(CheckId::AllowPrivilegeEscalation),
        (Level::Restricted, CheckId::AllowPrivilegeEscalation) if name == "allowprivilegeescalation3" => {
            Some(CheckId::CapabilitiesRestricted)
        }
        _ => None,
    };
    set.extend(extra.map(CheckId::as_str));
    set
}

#[test]
fn pss_matches_pod_security_admission_fixtures() {
    let root = fixtures_root();
    let mut total = 0;
    let mut summary = Vec::new();
    let mut mismatches = Vec::new();
    for level in [Level::Baseline, Level::Restricted] {
        let pass = yaml_files(&root.join(level.as_str()).join("pass"));
        let fail = yaml_files(&root.join(level.as_str()).join("fail"));
        assert!(
            !pass.is_empty() && !fail.is_empty(),
            "no fixtures for {}",
            level.as_str()
        );
        for (name, path) in &pass {
            let pod = load(path);
            let failures = evaluate_level(level, &pod.metadata, &pod.spec, &Scope::ALL);
            if !failures.is_empty() {
                mismatches.push(format!("{}/pass/{name}: unexpected {failures:?}", level.as_str()));
            }
        }
        for (name, path) in &fail {
            let pod = load(path);
            let failures = evaluate_level(level, &pod.metadata, &pod.spec, &Scope::ALL);
            let got: BTreeSet<&str> = failures.iter().map(|f| f.id.as_str()).collect();
            let want = expected_checks(level, check_of(name), name);
            if got != want {
                mismatches.push(format!(
                    "{}/fail/{name}: want {want:?}, got {failures:?}",
                    level.as_str()
                ));
            }
            for f in &failures {
                if f.reason.is_empty() || f.detail.is_empty() {
                    mismatches.push(format!(
                        "{}/fail/{name}: {} has no reason or detail",
                        level.as_str(),
                        f.id
                    ));
                }
            }
        }
        summary.push(format!("{} {} pass / {} fail", level.as_str(), pass.len(), fail.len()));
        total += pass.len() + fail.len();
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    println!("pss conformance: {}: all match", summary.join(", "));
    assert_eq!(total, 148, "fixture count");
}

/// A few fixtures pinned to PSA's exact messages, so the wording is checked on real pods.
#[test]
fn fixture_messages_are_psa_words() {
    let root = fixtures_root();
    let cases: [(Level, &str, &str, &str); 5] = [
        (
            Level::Baseline,
            "privileged0",
            "privileged",
            r#"container "container1" must not set securityContext.privileged=true"#,
        ),
        (
            Level::Restricted,
            "procmount0",
            "procMount",
            r#"container "container1" must not set securityContext.procMount to "Unmasked""#,
        ),
        (
            Level::Baseline,
            "apparmorprofile1",
            "forbidden AppArmor profile",
            r#"annotation must not set AppArmor profile type to "container.apparmor.security.beta.kubernetes.io/initcontainer1="unconfined"""#,
        ),
        (
            Level::Restricted,
            "restrictedvolumes19",
            "restricted volume types",
            r#"volume "volume1" uses restricted volume type "hostPath""#,
        ),
        (
            Level::Restricted,
            "windowshostprocess1",
            "hostProcess",
            r#"containers "initcontainer1", "container1" must not set securityContext.windowsOptions.hostProcess=true"#,
        ),
    ];
    for (level, name, reason, detail) in cases {
        let pod = load(&root.join(level.as_str()).join("fail").join(format!("{name}.yaml")));
        let failures = evaluate_level(level, &pod.metadata, &pod.spec, &Scope::ALL);
        let f = failures
            .iter()
            .find(|f| f.reason == reason)
            .unwrap_or_else(|| panic!("{name}: no {reason} in {failures:?}"));
        assert_eq!(f.detail, detail, "{name}");
    }
}
