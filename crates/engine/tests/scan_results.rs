//! Scan results: Trivy JSON import against Trivy's own reports, the native form, the store.
//!
//! Expected values are read from the reports themselves with `serde_json::Value`, never
//! hard-coded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::PathBuf;

use portcullis_engine::scan::{
    CvssMetric, Finding, MemoryScanStore, ScanError, ScanResult, ScanResults, ScanSummary, ScanType, Severity,
    TrivyImport, TrivyImportOptions, from_trivy,
};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const REPORTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/conformance/trivy-reports");
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const OTHER_DIGEST: &str = "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

/// Every Trivy report shipped: (file name, bytes, parsed independently).
fn reports() -> Vec<(String, Vec<u8>, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(REPORTS).expect("the trivy-reports folder beside the repo") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".json") || name.ends_with(".json.golden") {
            let bytes = std::fs::read(&path).unwrap();
            let value: Value = serde_json::from_slice(&bytes).unwrap();
            out.push((name, bytes, value));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 8, "expected the shipped reports, found {}", out.len());
    out
}

fn report(name: &str) -> (Vec<u8>, Value) {
    let path: PathBuf = [REPORTS, name].iter().collect();
    let bytes = std::fs::read(path).unwrap();
    let value = serde_json::from_slice(&bytes).unwrap();
    (bytes, value)
}

/// An array that Trivy may write as `null` or leave out.
fn array(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn repo_digests(report: &Value) -> Vec<String> {
    array(&report["Metadata"]["RepoDigests"])
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect()
}

fn vulnerabilities(report: &Value) -> Vec<Value> {
    array(&report["Results"])
        .iter()
        .flat_map(|r| array(&r["Vulnerabilities"]))
        .collect()
}

fn secrets(report: &Value) -> Vec<Value> {
    array(&report["Results"])
        .iter()
        .flat_map(|r| array(&r["Secrets"]))
        .collect()
}

/// Imports a report, giving the test digest only when the report names none.
fn import_report(bytes: &[u8], report: &Value) -> TrivyImport {
    let options = TrivyImportOptions {
        digest: repo_digests(report).is_empty().then(|| DIGEST.to_owned()),
        ..TrivyImportOptions::default()
    };
    from_trivy(bytes, &options).unwrap()
}

fn with_digest() -> TrivyImportOptions {
    TrivyImportOptions {
        digest: Some(DIGEST.to_owned()),
        ..TrivyImportOptions::default()
    }
}

fn err(json: &Value, options: &TrivyImportOptions) -> String {
    match from_trivy(&serde_json::to_vec(json).unwrap(), options) {
        Ok(import) => panic!("imported {import:?}"),
        Err(e) => e.to_string(),
    }
}

/// The vector the spec says to take, worked out independently: nvd's, else the first
/// vendor's (alphabetical) having a V3Vector.
fn expected_vector(vuln: &Value) -> Option<String> {
    let cvss = vuln["CVSS"].as_object()?;
    let vector = |source: &str| {
        cvss.get(source)?["V3Vector"]
            .as_str()
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    if let Some(nvd) = vector("nvd") {
        return Some(nvd);
    }
    let mut sources: Vec<&String> = cvss.keys().filter(|k| *k != "nvd").collect();
    sources.sort();
    sources.into_iter().find_map(|s| vector(s))
}

fn time(text: &str) -> OffsetDateTime {
    OffsetDateTime::parse(text, &Rfc3339).unwrap()
}

#[test]
fn every_report_imports_with_its_own_counts_and_lower_cased_severities() {
    let mut saw_unknown = false;
    for (name, bytes, value) in reports() {
        let import = import_report(&bytes, &value);
        let vulns = vulnerabilities(&value);
        let result = &import.vulnerability;
        assert_eq!(result.scan_type, ScanType::Vulnerability, "{name}");
        assert_eq!(result.scanner, "trivy", "{name}");
        assert_eq!(result.scanned_at, time(value["CreatedAt"].as_str().unwrap()), "{name}");
        assert_eq!(result.findings.len(), vulns.len(), "{name}");
        for (finding, vuln) in result.findings.iter().zip(&vulns) {
            assert_eq!(finding.id, vuln["VulnerabilityID"].as_str().unwrap(), "{name}");
            let severity = vuln["Severity"].as_str().unwrap();
            assert_eq!(finding.severity.to_string(), severity.to_lowercase(), "{name}");
            saw_unknown |= finding.severity == Severity::Unknown;
            let fixed = vuln["FixedVersion"].as_str().filter(|f| !f.is_empty());
            assert_eq!(finding.fixed_version.as_deref(), fixed, "{name}");
        }
        let summary = ScanSummary::from_result(result);
        assert_eq!(summary.findings, vulns.len(), "{name}");
        let max = vulns
            .iter()
            .map(|v| {
                v["Severity"]
                    .as_str()
                    .unwrap()
                    .to_lowercase()
                    .parse::<Severity>()
                    .unwrap()
            })
            .max();
        assert_eq!(summary.max_severity, max, "{name}");

        let ran_secret_scanner = array(&value["Results"]).iter().any(|r| r["Class"] == "secret");
        assert_eq!(import.secret.is_some(), ran_secret_scanner, "{name}");
        if let Some(secret) = &import.secret {
            assert_eq!(secret.findings.len(), secrets(&value).len(), "{name}");
        }
        let tags: Vec<String> = array(&value["Metadata"]["RepoTags"])
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(import.repo_tags, tags, "{name}");
        assert_eq!(import.repo_digests, repo_digests(&value), "{name}");
        assert!(import.results().all(|r| r.validate().is_ok()), "{name}");
    }
    assert!(saw_unknown, "some shipped report has an UNKNOWN finding");
}

#[test]
fn cvss_vector_is_nvd_else_first_vendor_alphabetically() {
    let (mut nvd_over_vendor, mut vendor_only, mut none) = (0, 0, 0);
    for (name, bytes, value) in reports() {
        let import = import_report(&bytes, &value);
        for (finding, vuln) in import.vulnerability.findings.iter().zip(vulnerabilities(&value)) {
            let expected = expected_vector(&vuln);
            assert_eq!(finding.cvss_v3_vector, expected, "{name} {}", finding.id);
            let cvss = vuln["CVSS"].as_object();
            let has_nvd = cvss.is_some_and(|c| c.contains_key("nvd"));
            let vendor_differs = cvss.is_some_and(|c| {
                c.iter()
                    .any(|(k, v)| k != "nvd" && v["V3Vector"].as_str() != expected.as_deref())
            });
            match (&expected, has_nvd) {
                (Some(_), true) if vendor_differs => nvd_over_vendor += 1,
                (Some(_), false) => vendor_only += 1,
                (None, _) => none += 1,
                _ => {}
            }
        }
    }
    // The shipped reports exercise each branch (e.g. debian-buster's CVE-2019-18224, where nvd
    // says AC:L and redhat AC:H; alpine:latest's CVE-2024-9143, scored by redhat only).
    assert!(nvd_over_vendor > 0, "a finding where nvd and a vendor disagree");
    assert!(vendor_only > 0, "a finding with a vendor vector only");
    assert!(none > 0, "a finding without any vector");
}

#[test]
fn nvd_wins_over_a_disagreeing_vendor_on_a_real_finding() {
    let (bytes, value) = report("debian-buster.json.golden");
    let import = import_report(&bytes, &value);
    let vuln = vulnerabilities(&value)
        .into_iter()
        .find(|v| v["CVSS"]["nvd"]["V3Vector"] != v["CVSS"]["redhat"]["V3Vector"])
        .expect("a finding whose nvd and redhat vectors differ");
    let id = vuln["VulnerabilityID"].as_str().unwrap();
    let finding = import.vulnerability.findings.iter().find(|f| f.id == id).unwrap();
    assert_eq!(
        finding.cvss_v3_vector.as_deref(),
        vuln["CVSS"]["nvd"]["V3Vector"].as_str()
    );

    let (bytes, value) = report("reporting.md.alpine-latest.json");
    let import = import_report(&bytes, &value);
    let vuln = vulnerabilities(&value)
        .into_iter()
        .find(|v| v["CVSS"].get("nvd").is_none() && v["CVSS"].get("redhat").is_some())
        .expect("a finding scored by redhat only");
    let id = vuln["VulnerabilityID"].as_str().unwrap();
    let finding = import.vulnerability.findings.iter().find(|f| f.id == id).unwrap();
    assert_eq!(
        finding.cvss_v3_vector.as_deref(),
        vuln["CVSS"]["redhat"]["V3Vector"].as_str()
    );
}

#[test]
fn first_vendor_is_alphabetical_not_document_order() {
    let (_, mut value) = report("reporting.md.alpine-latest.json");
    let redhat = value["Results"][0]["Vulnerabilities"][0]["CVSS"]["redhat"]["V3Vector"].clone();
    let other = "CVSS:3.1/AV:P/AC:H/PR:N/UI:N/S:U/C:N/I:N/A:N";
    // "zeta" is written first but sorts after "redhat"; "amazon" has no V3Vector.
    value["Results"][0]["Vulnerabilities"][0]["CVSS"] = json!({
        "zeta": {"V3Vector": other},
        "amazon": {"V2Vector": "AV:N/AC:L/Au:N/C:P/I:P/A:P"},
        "redhat": {"V3Vector": redhat},
    });
    let import = from_trivy(&serde_json::to_vec(&value).unwrap(), &TrivyImportOptions::default()).unwrap();
    assert_eq!(
        import.vulnerability.findings[0].cvss_v3_vector.as_deref(),
        redhat.as_str()
    );
}

#[test]
fn secrets_golden_gives_a_secret_result() {
    let (bytes, value) = report("secrets.json.golden");
    let import = from_trivy(&bytes, &with_digest()).unwrap();
    let secret = import.secret.as_ref().expect("a secret result");
    assert_eq!(secret.scan_type, ScanType::Secret);
    assert_eq!(secret.digest, DIGEST);
    assert_eq!(secret.scanned_at, time(value["CreatedAt"].as_str().unwrap()));
    let expected = secrets(&value);
    assert!(!expected.is_empty());
    assert_eq!(secret.findings.len(), expected.len());
    for (finding, s) in secret.findings.iter().zip(&expected) {
        assert_eq!(finding.id, s["RuleID"].as_str().unwrap());
        assert_eq!(
            finding.severity.to_string(),
            s["Severity"].as_str().unwrap().to_lowercase()
        );
        assert_eq!(finding.cvss_v3_vector, None);
    }
    // The report ran no vulnerability finding: a clean vulnerability result, still a result.
    assert_eq!(import.vulnerability.findings.len(), vulnerabilities(&value).len());
    assert_eq!(import.results().count(), 2);
    let summary = ScanSummary::from_result(secret);
    let max = expected
        .iter()
        .map(|s| {
            s["Severity"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .parse::<Severity>()
                .unwrap()
        })
        .max();
    assert_eq!(summary.max_severity, max);
}

#[test]
fn uploader_saying_the_secret_scanner_ran_gives_a_clean_secret_result() {
    let (bytes, value) = report("debian-buster.json.golden");
    assert!(secrets(&value).is_empty());
    let plain = from_trivy(&bytes, &with_digest()).unwrap();
    assert_eq!(plain.secret, None);
    let options = TrivyImportOptions {
        secret_scan: true,
        ..with_digest()
    };
    let import = from_trivy(&bytes, &options).unwrap();
    let secret = import.secret.expect("a secret result");
    assert_eq!(secret.findings, Vec::<Finding>::new());
    let summary = ScanSummary::from_result(&secret);
    assert_eq!((summary.findings, summary.max_severity), (0, None));
}

#[test]
fn a_secret_class_result_without_secrets_is_a_clean_secret_scan() {
    let (_, mut value) = report("debian-buster.json.golden");
    value["Results"]
        .as_array_mut()
        .unwrap()
        .push(json!({"Target": "/etc/x", "Class": "secret", "Secrets": null}));
    let import = from_trivy(&serde_json::to_vec(&value).unwrap(), &with_digest()).unwrap();
    assert_eq!(import.secret.map(|s| s.findings.len()), Some(0));
}

#[test]
fn alpine_reports_take_their_digest_from_repo_digests() {
    for name in ["reporting.md.alpine-latest.json", "alpine-310-registry.json.golden"] {
        let (bytes, value) = report(name);
        let entries = repo_digests(&value);
        let expected = entries[0].split_once('@').unwrap().1;
        let import = from_trivy(&bytes, &TrivyImportOptions::default()).unwrap();
        assert_eq!(import.digest(), expected, "{name}");
        assert!(import.results().all(|r| r.digest == expected), "{name}");
        assert_eq!(import.repo_digests, entries, "{name}");
        assert_eq!(
            import.repo_tags,
            array(&value["Metadata"]["RepoTags"])
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect::<Vec<_>>(),
            "{name}"
        );
    }
}

#[test]
fn an_explicit_digest_overrides_repo_digests() {
    let (bytes, value) = report("reporting.md.alpine-latest.json");
    assert!(!repo_digests(&value).iter().any(|d| d.ends_with(DIGEST)));
    let import = from_trivy(&bytes, &with_digest()).unwrap();
    assert_eq!(import.digest(), DIGEST);
}

#[test]
fn a_report_without_digest_needs_an_explicit_one() {
    let (bytes, value) = report("debian-buster.json.golden");
    assert!(repo_digests(&value).is_empty());
    let e = from_trivy(&bytes, &TrivyImportOptions::default()).unwrap_err();
    assert_eq!(e, ScanError::MissingDigest);
    assert!(e.to_string().contains("give the image digest explicitly"), "{e}");
}

#[test]
fn several_distinct_repo_digests_are_refused_but_repeats_are_not() {
    let (_, mut value) = report("reporting.md.alpine-latest.json");
    let first = repo_digests(&value)[0].clone();
    let digest = first.split_once('@').unwrap().1.to_owned();
    value["Metadata"]["RepoDigests"] = json!([first, format!("registry.example.com/alpine@{digest}")]);
    let import = from_trivy(&serde_json::to_vec(&value).unwrap(), &TrivyImportOptions::default()).unwrap();
    assert_eq!(import.digest(), digest);

    value["Metadata"]["RepoDigests"] = json!([first, format!("mirror/alpine@{OTHER_DIGEST}")]);
    let bytes = serde_json::to_vec(&value).unwrap();
    let e = from_trivy(&bytes, &TrivyImportOptions::default()).unwrap_err();
    assert_eq!(
        e,
        ScanError::AmbiguousDigest {
            digests: vec![digest.clone(), OTHER_DIGEST.to_owned()]
        }
    );
    let message = e.to_string();
    assert!(message.starts_with("Metadata.RepoDigests:"), "{message}");
    assert!(message.contains(&digest) && message.contains(OTHER_DIGEST), "{message}");
    assert!(message.contains("explicitly"), "{message}");
    // An explicit digest settles it.
    assert_eq!(from_trivy(&bytes, &with_digest()).unwrap().digest(), DIGEST);
}

#[test]
fn store_keeps_the_newest_result_per_digest_and_type() {
    let (bytes, value) = report("debian-buster.json.golden");
    let debian = from_trivy(&bytes, &with_digest()).unwrap().vulnerability;
    let (bytes, _) = report("reporting.md.alpine-latest.json");
    let alpine = from_trivy(&bytes, &with_digest()).unwrap().vulnerability;
    assert_ne!(ScanSummary::from_result(&debian), ScanSummary::from_result(&alpine));
    let created = time(value["CreatedAt"].as_str().unwrap());
    let newer = ScanResult {
        scanned_at: created + time::Duration::days(1),
        ..debian.clone()
    };
    let older = ScanResult {
        scanned_at: created,
        ..alpine.clone()
    };

    let mut store = MemoryScanStore::default();
    assert!(store.is_empty());
    assert!(store.insert(&newer));
    assert!(
        !store.insert(&older),
        "an older result arriving later is not the latest"
    );
    let latest = store.latest(DIGEST, ScanType::Vulnerability).unwrap().unwrap();
    assert_eq!(latest, &ScanSummary::from_result(&newer));
    assert_eq!(store.len(), 1);

    // Equal time: the later insert wins.
    let same_time = ScanResult {
        scanned_at: newer.scanned_at,
        ..alpine.clone()
    };
    assert!(store.insert(&same_time));
    let latest = store.latest(DIGEST, ScanType::Vulnerability).unwrap().unwrap();
    assert_eq!(latest, &ScanSummary::from_result(&same_time));

    // Other scan types and digests are separate.
    assert_eq!(store.latest(DIGEST, ScanType::Secret).unwrap(), None);
    assert_eq!(store.latest(OTHER_DIGEST, ScanType::Vulnerability).unwrap(), None);
    let secret = ScanResult {
        scan_type: ScanType::Secret,
        ..older
    };
    assert!(store.insert(&secret));
    assert_eq!(store.len(), 2);
    assert_eq!(
        store.latest(DIGEST, ScanType::Secret).unwrap(),
        Some(&ScanSummary::from_result(&secret))
    );
}

/// The metric value of a CVSS v3 vector, read independently of the engine.
fn metric_value(vector: &str, key: &str) -> Option<String> {
    let rest = vector.strip_prefix("CVSS:3.")?.split_once('/')?.1;
    let code = rest.split('/').find_map(|m| m.strip_prefix(&format!("{key}:")))?;
    let name = match (key, code) {
        ("AV", "N") => "network",
        ("AV", "A") => "adjacent",
        ("AV", "L") => "local",
        ("AV", "P") => "physical",
        (_, "L") => "low",
        (_, "H") => "high",
        (_, "N") => "none",
        _ => return None,
    };
    Some(name.to_owned())
}

#[test]
fn max_severity_with_on_real_data() {
    let combos = [
        (
            CvssMetric::AttackVector,
            "AV",
            ["network", "adjacent", "local", "physical"].as_slice(),
        ),
        (CvssMetric::AttackComplexity, "AC", ["low", "high"].as_slice()),
        (CvssMetric::Availability, "A", ["none", "low", "high"].as_slice()),
    ];
    let mut matched = 0;
    for (name, bytes, value) in reports() {
        let summary = ScanSummary::from_result(&import_report(&bytes, &value).vulnerability);
        let vulns = vulnerabilities(&value);
        for (metric, key, values) in combos {
            for wanted in values {
                let expected = vulns
                    .iter()
                    .filter(|v| expected_vector(v).and_then(|vec| metric_value(&vec, key)).as_deref() == Some(*wanted))
                    .map(|v| {
                        v["Severity"]
                            .as_str()
                            .unwrap()
                            .to_lowercase()
                            .parse::<Severity>()
                            .unwrap()
                    })
                    .max();
                matched += usize::from(expected.is_some());
                assert_eq!(
                    summary.max_severity_with(metric, wanted),
                    expected,
                    "{name} {metric:?}={wanted}"
                );
            }
        }
    }
    assert!(matched > 0);
    // On debian-buster, network and local findings differ in severity: the slots are separate.
    let (bytes, value) = report("debian-buster.json.golden");
    let summary = ScanSummary::from_result(&import_report(&bytes, &value).vulnerability);
    let network = summary.max_severity_with(CvssMetric::AttackVector, "network");
    let local = summary.max_severity_with(CvssMetric::AttackVector, "local");
    assert!(network.is_some() && local.is_some() && network != local);
}

#[test]
fn malformed_reports_give_errors_naming_the_field() {
    let (bytes, value) = report("debian-buster.json.golden");
    let opts = with_digest();

    let e = from_trivy(b"{\"SchemaVersion\": 2,", &opts).unwrap_err().to_string();
    assert!(e.starts_with("invalid JSON:") && e.contains("line 1"), "{e}");
    let e = from_trivy(b"", &opts).unwrap_err().to_string();
    assert!(e.starts_with("invalid JSON:"), "{e}");
    let e = from_trivy(b"\"report\"", &opts).unwrap_err().to_string();
    assert!(
        e.starts_with("invalid type: string") && e.contains("Trivy JSON report"),
        "{e}"
    );
    let e = from_trivy(b"{\"SchemaVersion\": 2} {}", &opts).unwrap_err().to_string();
    assert!(e.starts_with("invalid JSON: trailing characters"), "{e}");

    let mut v1 = value.clone();
    v1["SchemaVersion"] = json!(1);
    let e = err(&v1, &opts);
    assert!(e.starts_with("SchemaVersion: 1 is not supported"), "{e}");
    v1["SchemaVersion"] = json!("2");
    assert!(err(&v1, &opts).starts_with("SchemaVersion: \"2\" is not supported"));
    v1.as_object_mut().unwrap().remove("SchemaVersion");
    assert!(err(&v1, &opts).starts_with("SchemaVersion: missing"));
    // Trivy's SchemaVersion 1 output was a bare array of results.
    let bare = value["Results"].clone();
    assert!(err(&bare, &opts).starts_with("SchemaVersion: missing"));

    let mut bad = value.clone();
    bad["Results"][0]["Vulnerabilities"][1]["Severity"] = json!("SEVERE");
    let e = err(&bad, &opts);
    assert!(
        e.starts_with(r#"Results[0].Vulnerabilities[1].Severity: "SEVERE" is not a severity"#),
        "{e}"
    );
    bad["Results"][0]["Vulnerabilities"][1]
        .as_object_mut()
        .unwrap()
        .remove("Severity");
    assert_eq!(err(&bad, &opts), "Results[0].Vulnerabilities[1].Severity: missing");

    let mut bad = value.clone();
    bad["Results"][0]["Vulnerabilities"] = json!("none");
    let e = err(&bad, &opts);
    assert!(e.starts_with("Results[0].Vulnerabilities: invalid type"), "{e}");

    let mut bad = value.clone();
    bad["CreatedAt"] = json!("yesterday");
    assert!(err(&bad, &opts).starts_with("CreatedAt: \"yesterday\" is not an RFC 3339 time"));

    for digest in ["sha256:abc", "alpine:3.10", "", &DIGEST.to_uppercase()] {
        let options = TrivyImportOptions {
            digest: Some(digest.to_owned()),
            ..TrivyImportOptions::default()
        };
        let e = from_trivy(&bytes, &options).unwrap_err().to_string();
        assert!(e.starts_with("digest: ") && e.contains("is not an image digest"), "{e}");
    }

    let (_, mut alpine) = report("reporting.md.alpine-latest.json");
    alpine["Metadata"]["RepoDigests"] = json!(["alpine@sha256:1234"]);
    let e = err(&alpine, &TrivyImportOptions::default());
    assert!(
        e.starts_with("Metadata.RepoDigests[0]: \"sha256:1234\" is not an image digest"),
        "{e}"
    );
    alpine["Metadata"]["RepoDigests"] = json!([DIGEST]);
    let e = err(&alpine, &TrivyImportOptions::default());
    assert!(
        e.starts_with("Metadata.RepoDigests[0]: ") && e.contains("repository@digest"),
        "{e}"
    );
}

#[test]
fn a_report_without_created_at_needs_the_scan_time() {
    let (_, mut value) = report("debian-buster.json.golden");
    value.as_object_mut().unwrap().remove("CreatedAt");
    let e = err(&value, &with_digest());
    assert!(e.starts_with("CreatedAt: missing"), "{e}");
    let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    let options = TrivyImportOptions {
        scanned_at: Some(at),
        ..with_digest()
    };
    let import = from_trivy(&serde_json::to_vec(&value).unwrap(), &options).unwrap();
    assert_eq!(import.vulnerability.scanned_at, at);
}

#[test]
fn null_arrays_are_tolerated() {
    let (_, mut value) = report("fluentd-gems.json.golden");
    let total = vulnerabilities(&value).len();
    let dropped = array(&value["Results"][1]["Vulnerabilities"]).len();
    value["Results"][1]["Vulnerabilities"] = Value::Null;
    value["Results"][0]["Vulnerabilities"][0]["CVSS"] = Value::Null;
    value["Metadata"]["RepoTags"] = Value::Null;
    value["Metadata"]["RepoDigests"] = Value::Null;
    let import = from_trivy(&serde_json::to_vec(&value).unwrap(), &with_digest()).unwrap();
    assert_eq!(import.vulnerability.findings.len(), total - dropped);
    assert_eq!(import.vulnerability.findings[0].cvss_v3_vector, None);
    assert!(import.repo_tags.is_empty() && import.repo_digests.is_empty());

    value["Results"] = Value::Null;
    let import = from_trivy(&serde_json::to_vec(&value).unwrap(), &with_digest()).unwrap();
    assert!(import.vulnerability.findings.is_empty());
}

#[test]
fn truncated_reports_are_errors_not_panics() {
    for (name, bytes, value) in reports() {
        let options = TrivyImportOptions {
            digest: repo_digests(&value).is_empty().then(|| DIGEST.to_owned()),
            ..TrivyImportOptions::default()
        };
        let end = bytes.trim_ascii_end().len();
        for cut in (0..end).step_by(53) {
            assert!(from_trivy(&bytes[..cut], &options).is_err(), "{name} cut at {cut}");
        }
        let native = serde_json::to_vec(&from_trivy(&bytes, &options).unwrap().vulnerability).unwrap();
        for cut in (0..native.len()).step_by(7) {
            assert!(
                ScanResult::parse_native(&native[..cut]).is_err(),
                "{name} native cut at {cut}"
            );
        }
    }
}

#[test]
fn native_form_round_trips_in_camel_case() {
    for (name, bytes, value) in reports() {
        for result in import_report(&bytes, &value).results() {
            let json = serde_json::to_value(result).unwrap();
            assert_eq!(json["scanType"], result.scan_type.to_string(), "{name}");
            assert!(json["scannedAt"].is_string(), "{name}");
            if let Some(with_vector) = result.findings.iter().position(|f| f.cvss_v3_vector.is_some()) {
                assert!(json["findings"][with_vector]["cvssV3Vector"].is_string(), "{name}");
            }
            let back = ScanResult::parse_native(&serde_json::to_vec(&json).unwrap()).unwrap();
            assert_eq!(&back, result, "{name}");
        }
    }
}

fn native() -> Value {
    json!({
        "digest": DIGEST,
        "scanType": "malware",
        "scannedAt": "2025-03-01T10:00:00.123456789+01:00",
        "scanner": "clamav",
        "findings": [
            {"id": "Eicar-Test-Signature", "severity": "high"},
            {"id": "CVE-1", "severity": "low", "cvssV3Vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "fixedVersion": "1.2"}
        ]
    })
}

fn native_err(v: &Value) -> String {
    ScanResult::parse_native(&serde_json::to_vec(v).unwrap())
        .unwrap_err()
        .to_string()
}

#[test]
fn native_results_parse_and_summarise() {
    let v = native();
    let result = ScanResult::parse_native(&serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(result.scan_type, ScanType::Malware);
    assert_eq!(result.scanned_at, time(v["scannedAt"].as_str().unwrap()));
    assert_eq!(result.findings[1].fixed_version.as_deref(), Some("1.2"));
    let summary = ScanSummary::from_result(&result);
    assert_eq!(summary.findings, 2);
    assert_eq!(summary.max_severity, Some(Severity::High));
    assert_eq!(
        summary.max_severity_with(CvssMetric::AttackVector, "network"),
        Some(Severity::Low)
    );
    let mut store = MemoryScanStore::default();
    store.insert(&result);
    assert_eq!(store.latest(DIGEST, ScanType::Malware).unwrap(), Some(&summary));

    // No findings key: a clean scan.
    let mut clean = native();
    clean.as_object_mut().unwrap().remove("findings");
    let result = ScanResult::parse_native(&serde_json::to_vec(&clean).unwrap()).unwrap();
    assert!(result.findings.is_empty());
}

#[test]
fn a_malformed_vector_counts_as_none() {
    let mut v = native();
    v["findings"][1]["cvssV3Vector"] = json!("CVSS:3.1/AV:N/AC:L");
    let result = ScanResult::parse_native(&serde_json::to_vec(&v).unwrap()).unwrap();
    let summary = ScanSummary::from_result(&result);
    assert_eq!(summary.max_severity_with(CvssMetric::AttackVector, "network"), None);
    assert_eq!(summary.max_severity, Some(Severity::High));
}

#[test]
fn malformed_native_results_give_errors_naming_the_field() {
    let cases: [(&str, Value, &str); 9] = [
        (
            "/findings/0/severity",
            json!("SEVERE"),
            r#"findings[0].severity: "SEVERE" is not a severity"#,
        ),
        (
            "/findings/0/severity",
            json!("High"),
            r#"findings[0].severity: "High" is not a severity"#,
        ),
        (
            "/digest",
            json!("sha256:abc"),
            r#"digest: "sha256:abc" is not an image digest"#,
        ),
        ("/scanType", json!("virus"), "scanType: unknown variant `virus`"),
        (
            "/scannedAt",
            json!("2025-03-01"),
            r#"scannedAt: "2025-03-01" is not an RFC 3339 time"#,
        ),
        ("/scanner", json!(" "), "scanner: must not be empty"),
        ("/findings/1/id", json!(""), "findings[1].id: must not be empty"),
        (
            "/findings/1/cvssv3Vector",
            json!("x"),
            "findings[1].cvssv3Vector: unknown field `cvssv3Vector`",
        ),
        ("/findings", json!({}), "findings: invalid type: map"),
    ];
    for (pointer, replacement, expected) in cases {
        let mut v = native();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let target = v.pointer_mut(parent).unwrap();
        match target {
            Value::Array(items) => items[key.parse::<usize>().unwrap()] = replacement,
            _ => target[key] = replacement,
        }
        let e = native_err(&v);
        assert!(e.starts_with(expected), "{pointer}: {e}");
    }
    let mut v = native();
    v.as_object_mut().unwrap().remove("digest");
    assert!(native_err(&v).contains("missing field `digest`"));
    assert!(native_err(&json!("x")).starts_with("invalid type: string"));
    assert!(native_err(&json!([1])).contains("invalid type: integer"));
    let e = ScanResult::parse_native(b"{\"digest\": ").unwrap_err().to_string();
    assert!(e.contains("EOF while parsing"), "{e}");
}

#[test]
fn severity_names_and_order_follow_the_spec() {
    // POLICY.md: most severe first.
    let spec = ["critical", "high", "medium", "low", "negligible", "unknown", "none"];
    let parsed: Vec<Severity> = spec.iter().map(|s| s.parse().unwrap()).collect();
    for pair in parsed.windows(2) {
        assert!(pair[0] > pair[1], "{} > {}", pair[0], pair[1]);
    }
    for (severity, name) in parsed.iter().zip(spec) {
        assert_eq!(severity.to_string(), name);
        assert_eq!(serde_json::to_value(severity).unwrap(), name);
        assert_eq!(serde_json::from_value::<Severity>(json!(name)).unwrap(), *severity);
    }
    let mut all = Severity::ALL.to_vec();
    all.sort();
    assert_eq!(all, Severity::ALL.to_vec());
    assert_eq!(Severity::ALL.len(), spec.len());
    // unknown is more severe only than none.
    let unknown = Severity::Unknown;
    assert!(Severity::ALL.iter().all(|s| (unknown > *s) == (*s == Severity::None)));
    assert!("CRITICAL".parse::<Severity>().is_err());
    for scan_type in ScanType::ALL {
        assert_eq!(scan_type.to_string().parse::<ScanType>().unwrap(), scan_type);
    }
}
