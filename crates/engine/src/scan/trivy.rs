//! Trivy JSON import (`trivy image --format json`, SchemaVersion 2) into native results.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;

use super::model::{
    Finding, ParseSeverityError, ScanError, ScanResult, ScanType, Severity, check_digest, from_json, parse_time,
};
use crate::serde_util::nullable;

/// How to read a Trivy report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrivyImportOptions {
    /// The image digest the report is about; overrides `Metadata.RepoDigests`.
    pub digest: Option<String>,
    /// The uploader says the secret scanner ran (so a report without secrets is a clean
    /// secret scan, even with no Result of Class `secret`).
    pub secret_scan: bool,
    /// The scanner name recorded in the results; `trivy` by default.
    pub scanner: String,
    /// When the scan ran, used only when the report has no `CreatedAt` (Trivy before v0.48).
    pub scanned_at: Option<OffsetDateTime>,
}

impl Default for TrivyImportOptions {
    fn default() -> Self {
        TrivyImportOptions {
            digest: None,
            secret_scan: false,
            scanner: String::from("trivy"),
            scanned_at: None,
        }
    }
}

/// What a Trivy report gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrivyImport {
    /// The vulnerability scan (always present; no findings means scanned, clean).
    pub vulnerability: ScanResult,
    /// The secret scan, when the secret scanner ran.
    pub secret: Option<ScanResult>,
    /// `Metadata.RepoTags`, e.g. `alpine:3.10`.
    pub repo_tags: Vec<String>,
    /// `Metadata.RepoDigests` as given, e.g. `alpine@sha256:...`.
    pub repo_digests: Vec<String>,
    /// `ArtifactName`, when given.
    pub artifact_name: Option<String>,
}

impl TrivyImport {
    /// The results: the vulnerability one, then the secret one if any.
    pub fn results(&self) -> impl Iterator<Item = &ScanResult> {
        std::iter::once(&self.vulnerability).chain(self.secret.as_ref())
    }

    /// The digest both results are keyed by.
    pub fn digest(&self) -> &str {
        &self.vulnerability.digest
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TrivyReport {
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    artifact_name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    metadata: TrivyMetadata,
    #[serde(default, deserialize_with = "nullable")]
    results: Vec<TrivyResult>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct TrivyMetadata {
    #[serde(default, deserialize_with = "nullable")]
    repo_tags: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    repo_digests: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TrivyResult {
    #[serde(default)]
    class: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    vulnerabilities: Vec<TrivyVulnerability>,
    #[serde(default, deserialize_with = "nullable")]
    secrets: Vec<TrivySecret>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TrivyVulnerability {
    #[serde(rename = "VulnerabilityID", default)]
    vulnerability_id: Option<String>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    fixed_version: Option<String>,
    /// Source name → scores; a BTreeMap so vendors come in alphabetical order.
    #[serde(rename = "CVSS", default, deserialize_with = "nullable")]
    cvss: BTreeMap<String, TrivyCvss>,
}

#[derive(Deserialize, Default)]
struct TrivyCvss {
    #[serde(rename = "V3Vector", default)]
    v3_vector: Option<String>,
}

#[derive(Deserialize)]
struct TrivySecret {
    #[serde(rename = "RuleID", default)]
    rule_id: Option<String>,
    #[serde(rename = "Severity", default)]
    severity: Option<String>,
}

/// The top level of a would-be Trivy report, read only for its SchemaVersion.
enum SchemaProbe {
    Object(Option<serde_json::Value>),
    Array,
}

impl<'de> Deserialize<'de> for SchemaProbe {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ProbeVisitor;
        impl<'de> Visitor<'de> for ProbeVisitor {
            type Value = SchemaProbe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Trivy JSON report (an object)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SchemaProbe, A::Error> {
                let mut version = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "SchemaVersion" {
                        version = Some(map.next_value::<serde_json::Value>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(SchemaProbe::Object(version))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SchemaProbe, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(SchemaProbe::Array)
            }
        }
        deserializer.deserialize_any(ProbeVisitor)
    }
}

fn trivy_severity(field: &str, severity: Option<&str>) -> Result<Severity, ScanError> {
    let Some(text) = severity else {
        return Err(ScanError::invalid(field, "missing"));
    };
    text.to_ascii_lowercase()
        .parse()
        .map_err(|_| ScanError::invalid(field, ParseSeverityError(text.to_owned()).to_string()))
}

fn non_empty(text: Option<String>) -> Option<String> {
    text.filter(|t| !t.is_empty())
}

/// The report's digest from `Metadata.RepoDigests` (`repository@algorithm:hex`).
fn digest_from_repo_digests(repo_digests: &[String]) -> Result<String, ScanError> {
    let mut digests: Vec<&str> = Vec::new();
    for (i, entry) in repo_digests.iter().enumerate() {
        let field = format!("Metadata.RepoDigests[{i}]");
        let Some((_, digest)) = entry.rsplit_once('@') else {
            return Err(ScanError::invalid(field, format!("{entry:?} is not repository@digest")));
        };
        check_digest(&field, digest)?;
        if !digests.contains(&digest) {
            digests.push(digest);
        }
    }
    match digests.as_slice() {
        [] => Err(ScanError::MissingDigest),
        [only] => Ok((*only).to_owned()),
        several => Err(ScanError::AmbiguousDigest {
            digests: several.iter().map(|d| (*d).to_owned()).collect(),
        }),
    }
}

/// Imports a Trivy JSON report (SchemaVersion 2, `trivy image --format json`): a
/// vulnerability result always, and a secret result when the secret scanner ran (a Result of
/// Class `secret`, or `options.secret_scan`). Severity is the finding's `Severity`
/// lower-cased; the CVSS vector is `nvd`'s `V3Vector`, else the first vendor's in alphabetical
/// order that has one; `scannedAt` is `CreatedAt`.
pub fn from_trivy(json: &[u8], options: &TrivyImportOptions) -> Result<TrivyImport, ScanError> {
    // The version first, so an old report gets this error rather than a shape error.
    match from_json::<SchemaProbe>(json)? {
        SchemaProbe::Array => {
            return Err(ScanError::SchemaVersion {
                detail: String::from("missing (a bare array is an old SchemaVersion 1 report)"),
            });
        }
        SchemaProbe::Object(None) => {
            return Err(ScanError::SchemaVersion {
                detail: String::from("missing"),
            });
        }
        SchemaProbe::Object(Some(version)) => {
            if version.as_u64() != Some(2) {
                return Err(ScanError::SchemaVersion {
                    detail: format!("{version} is not supported"),
                });
            }
        }
    }
    let report: TrivyReport = from_json(json)?;

    let digest = match &options.digest {
        Some(digest) => {
            check_digest("digest", digest)?;
            digest.clone()
        }
        None => digest_from_repo_digests(&report.metadata.repo_digests)?,
    };
    let scanned_at = match (&report.created_at, options.scanned_at) {
        (Some(text), _) => parse_time(text).map_err(|e| ScanError::invalid("CreatedAt", e))?,
        (None, Some(at)) => at,
        (None, None) => {
            return Err(ScanError::invalid(
                "CreatedAt",
                "missing (a report from Trivy before v0.48?); give the scan time explicitly",
            ));
        }
    };
    if options.scanner.trim().is_empty() {
        return Err(ScanError::invalid("scanner", "must not be empty"));
    }

    let mut vulnerabilities = Vec::new();
    let mut secrets = Vec::new();
    let mut secret_scan = options.secret_scan;
    for (r, result) in report.results.into_iter().enumerate() {
        if result.class.as_deref() == Some("secret") || !result.secrets.is_empty() {
            secret_scan = true;
        }
        for (v, vuln) in result.vulnerabilities.into_iter().enumerate() {
            let field = format!("Results[{r}].Vulnerabilities[{v}]");
            let Some(id) = non_empty(vuln.vulnerability_id) else {
                return Err(ScanError::invalid(format!("{field}.VulnerabilityID"), "missing"));
            };
            let severity = trivy_severity(&format!("{field}.Severity"), vuln.severity.as_deref())?;
            let mut cvss = vuln.cvss;
            let nvd = cvss.remove("nvd").and_then(|c| non_empty(c.v3_vector));
            let cvss_v3_vector = nvd.or_else(|| cvss.into_values().find_map(|c| non_empty(c.v3_vector)));
            vulnerabilities.push(Finding {
                id,
                severity,
                cvss_v3_vector,
                fixed_version: non_empty(vuln.fixed_version),
            });
        }
        for (s, secret) in result.secrets.into_iter().enumerate() {
            let field = format!("Results[{r}].Secrets[{s}]");
            let Some(id) = non_empty(secret.rule_id) else {
                return Err(ScanError::invalid(format!("{field}.RuleID"), "missing"));
            };
            let severity = trivy_severity(&format!("{field}.Severity"), secret.severity.as_deref())?;
            secrets.push(Finding {
                id,
                severity,
                cvss_v3_vector: None,
                fixed_version: None,
            });
        }
    }

    let result = |scan_type, findings| ScanResult {
        digest: digest.clone(),
        scan_type,
        scanned_at,
        scanner: options.scanner.clone(),
        findings,
    };
    Ok(TrivyImport {
        vulnerability: result(ScanType::Vulnerability, vulnerabilities),
        secret: secret_scan.then(|| result(ScanType::Secret, secrets)),
        repo_tags: report.metadata.repo_tags,
        repo_digests: report.metadata.repo_digests,
        artifact_name: report.artifact_name,
    })
}
