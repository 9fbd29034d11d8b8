//! POLICY.md section 3, "Conformance": policies built from our rules give Pod Security
//! Admission's verdicts on its own v1.37 fixtures, through the whole engine (policy text →
//! parse_document → evaluate).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use portcullis_engine::evaluate::{CompiledPolicy, Decision, EvalContext, Verdict};
use portcullis_engine::input::parse_document;
use portcullis_engine::pss::{CheckId, Level};
use serde_json::Value;

/// A fixture: its folder (`pass`/`fail`), file stem and decision under a policy.
struct Fixture {
    pass: bool,
    name: String,
    json: Vec<u8>,
}

impl Fixture {
    /// The fixture's check, in the lower-case form of its file name (`capabilities_baseline`);
    /// `base`, `base_linux` and `base_windows` are the level's minimal valid pods.
    fn check(&self) -> &str {
        self.name.trim_end_matches(|c: char| c.is_ascii_digit())
    }

    fn decide(&self, policy: &CompiledPolicy) -> Decision {
        let subjects = parse_document(&self.json).unwrap_or_else(|e| panic!("{}: {e}", self.name));
        assert_eq!(subjects.len(), 1, "{}", self.name);
        policy.evaluate(&subjects[0], &EvalContext::offline(NOW))
    }
}

fn level_dir(level: &str) -> PathBuf {
    shared("pod-security-admission").join(level)
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    out.sort();
    out
}

/// Every fixture of a level, converted from YAML to JSON.
fn fixtures(level: &str) -> Vec<Fixture> {
    let mut out = Vec::new();
    for (folder, pass) in [("pass", true), ("fail", false)] {
        for path in yaml_files(&level_dir(level).join(folder)) {
            let text = std::fs::read_to_string(&path).unwrap();
            let value: Value = yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push(Fixture {
                pass,
                name: path.file_stem().unwrap().to_string_lossy().into_owned(),
                json: serde_json::to_vec(&value).unwrap(),
            });
        }
    }
    assert!(
        out.iter().any(|f| f.pass) && out.iter().any(|f| !f.pass),
        "{level}: fixtures missing"
    );
    out
}

const BASELINE_CHECKS: &[&str] = &[
    "privileged",
    "hostnamespaces",
    "capabilities_baseline",
    "windowshostprocess",
];
const RESTRICTED_CHECKS: &[&str] = &[
    "privileged",
    "hostnamespaces",
    "capabilities_baseline",
    "windowshostprocess",
    "allowprivilegeescalation",
    "runasnonroot",
    "runasuser",
    "capabilities_restricted",
];

fn baseline_rules() -> Vec<Value> {
    vec![
        block("podSecurityContext", "hostNetwork", "true"),
        block("podSecurityContext", "hostIPC", "true"),
        block("podSecurityContext", "hostPID", "true"),
        block("containerSecurityContext", "privileged", "true"),
        block("containerSecurityContext", "capabilities-rule", "baseline"),
    ]
}

fn restricted_rules() -> Vec<Value> {
    let mut rules = baseline_rules();
    rules.push(block("containerSecurityContext", "allowPrivilegeEscalation", "true"));
    rules.push(block("containerSecurityContext", "runAsNonRoot", "false"));
    rules.push(block("containerSecurityContext", "capabilities-rule", "restricted"));
    rules
}

/// Fail fixtures of `checks` block, every other fixture is allowed; returns (blocked, allowed).
fn conforms(level: &str, policy: &CompiledPolicy, checks: &[&str]) -> (usize, usize) {
    let (mut blocked, mut allowed) = (0, 0);
    for f in fixtures(level) {
        let d = f.decide(policy);
        let expected = if !f.pass && checks.contains(&f.check()) {
            Verdict::Block
        } else {
            Verdict::Allow
        };
        assert_eq!(
            d.verdict,
            expected,
            "{level}/{}/{}: {:#?}",
            if f.pass { "pass" } else { "fail" },
            f.name,
            d.violations
        );
        assert_eq!(d.not_evaluated, None);
        match d.verdict {
            Verdict::Block => blocked += 1,
            Verdict::Allow => allowed += 1,
        }
    }
    // Every listed check has fail fixtures at this level.
    for check in checks {
        assert!(
            fixtures(level).iter().any(|f| !f.pass && f.check() == *check),
            "{level}: no fail fixture for {check}"
        );
    }
    (blocked, allowed)
}

#[test]
fn baseline_rules_match_psa_baseline_fixtures_for_their_checks() {
    let (blocked, allowed) = conforms("baseline", &policy(baseline_rules()), BASELINE_CHECKS);
    println!("baseline rules on baseline fixtures: {blocked} blocked, {allowed} allowed");
    assert!(blocked >= 10);
}

#[test]
fn restricted_rules_match_psa_restricted_fixtures_for_their_checks() {
    let (blocked, allowed) = conforms("restricted", &policy(restricted_rules()), RESTRICTED_CHECKS);
    println!("restricted rules on restricted fixtures: {blocked} blocked, {allowed} allowed");
    assert!(blocked >= 20);
}

/// The id PSA reports for a fail fixture of `check` at `level`: at restricted, the baseline
/// checks that a restricted check overrides are reported by the overriding one.
fn reported_id(level: Level, check: &str) -> &'static str {
    let id = CheckId::ALL
        .into_iter()
        .find(|c| c.as_str().to_ascii_lowercase() == check)
        .unwrap_or_else(|| panic!("no PSA check named {check}"));
    let id = match (level, id) {
        (Level::Restricted, CheckId::CapabilitiesBaseline) => CheckId::CapabilitiesRestricted,
        (Level::Restricted, CheckId::HostPathVolumes) => CheckId::RestrictedVolumes,
        (Level::Restricted, CheckId::ProcMount) => CheckId::ProcMountRestricted,
        (Level::Restricted, CheckId::SeccompProfileBaseline) => CheckId::SeccompProfileRestricted,
        (_, id) => id,
    };
    id.as_str()
}

fn pod_security_standard_conforms(level: Level) -> (usize, usize) {
    let name = level.as_str();
    let p = policy(vec![block("podSecurityStandard", "level", name)]);
    let (mut pass, mut fail) = (0, 0);
    for f in fixtures(name) {
        let d = f.decide(&p);
        if f.pass {
            assert!(d.violations.is_empty(), "{name}/pass/{}: {:#?}", f.name, d.violations);
            assert_eq!(d.verdict, Verdict::Allow);
            pass += 1;
        } else {
            assert_eq!(d.verdict, Verdict::Block, "{name}/fail/{}", f.name);
            let v = only_violation(&d);
            assert_eq!(v.rule_type, "podSecurityStandard");
            let id = reported_id(level, f.check());
            assert!(
                v.checks.contains(&id),
                "{name}/fail/{}: {id} not in {:?}",
                f.name,
                v.checks
            );
            assert!(v.message.contains(id), "{name}/fail/{}: {}", f.name, v.message);
            fail += 1;
        }
    }
    (pass, fail)
}

#[test]
fn pod_security_standard_baseline_matches_every_baseline_fixture() {
    let (pass, fail) = pod_security_standard_conforms(Level::Baseline);
    println!("podSecurityStandard baseline: {pass} pass fixtures allowed, {fail} fail fixtures blocked");
    assert_eq!(pass + fail, fixtures("baseline").len());
}

#[test]
fn pod_security_standard_restricted_matches_every_restricted_fixture() {
    let (pass, fail) = pod_security_standard_conforms(Level::Restricted);
    println!("podSecurityStandard restricted: {pass} pass fixtures allowed, {fail} fail fixtures blocked");
    assert_eq!(pass + fail, fixtures("restricted").len());
}

#[test]
fn restricted_pass_fixtures_also_pass_baseline() {
    // Restricted is stricter than baseline: whatever restricted admits, baseline admits.
    let p = policy(vec![block("podSecurityStandard", "level", "baseline")]);
    for f in fixtures("restricted").into_iter().filter(|f| f.pass) {
        assert_clean(&f.decide(&p));
    }
}
