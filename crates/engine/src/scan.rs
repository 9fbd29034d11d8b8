//! Image scan results: the native form, Trivy JSON import, and the summaries rules read.
//!
//! POLICY.md section 3 ("Scan results"). Results are keyed by image digest and scan type;
//! evaluation reads only a precomputed [`ScanSummary`] through [`ScanResults::latest`], so the
//! hot path is one hash lookup plus array reads, with no allocation.
//!
//! Choices where the spec is silent (also in the user docs):
//! - A CVSS v3 vector that does not parse (wrong prefix, CVSS v2 or v4, unknown or repeated
//!   metric, missing base metric) is kept in the result as given but counts as **no vector**:
//!   such a finding never matches a cvss rule (as a finding without a vector).
//! - Every Trivy finding counts, also when one CVE is reported for two packages (Trivy's own
//!   summary counts them so too).
//! - The native form refuses unknown fields, so a misspelt `cvssV3Vector` is an error rather
//!   than a silently dropped vector.

use crate::serde_util::nullable;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// What a scan looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanType {
    /// Vulnerabilities.
    Vulnerability,
    /// Malware.
    Malware,
    /// Secrets.
    Secret,
}

impl ScanType {
    /// Every scan type.
    pub const ALL: [ScanType; 3] = [ScanType::Vulnerability, ScanType::Malware, ScanType::Secret];

    /// The lower-case name used in JSON: `vulnerability`, `malware`, `secret`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanType::Vulnerability => "vulnerability",
            ScanType::Malware => "malware",
            ScanType::Secret => "secret",
        }
    }
}

impl fmt::Display for ScanType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no scan type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a scan type (one of vulnerability, malware, secret)")]
pub struct ParseScanTypeError(pub String);

impl FromStr for ScanType {
    type Err = ParseScanTypeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "vulnerability" => Ok(ScanType::Vulnerability),
            "malware" => Ok(ScanType::Malware),
            "secret" => Ok(ScanType::Secret),
            _ => Err(ParseScanTypeError(s.to_owned())),
        }
    }
}

/// Finding severity; ordered least severe first, so `>` means "more severe".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// `none`.
    None,
    /// `unknown`.
    Unknown,
    /// `negligible`.
    Negligible,
    /// `low`.
    Low,
    /// `medium`.
    Medium,
    /// `high`.
    High,
    /// `critical`.
    Critical,
}

impl Severity {
    /// Every severity, least severe first.
    pub const ALL: [Severity; 7] = [
        Severity::None,
        Severity::Unknown,
        Severity::Negligible,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// The lower-case name: `critical`, `high`, ..., `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::None => "none",
            Severity::Unknown => "unknown",
            Severity::Negligible => "negligible",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no severity (names are lower-case).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a severity (one of critical, high, medium, low, negligible, unknown, none)")]
pub struct ParseSeverityError(pub String);

impl FromStr for Severity {
    type Err = ParseSeverityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Severity::None),
            "unknown" => Ok(Severity::Unknown),
            "negligible" => Ok(Severity::Negligible),
            "low" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            _ => Err(ParseSeverityError(s.to_owned())),
        }
    }
}

impl Serialize for Severity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Severity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SeverityVisitor;
        impl Visitor<'_> for SeverityVisitor {
            type Value = Severity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a severity (critical, high, medium, low, negligible, unknown, none)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Severity, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(SeverityVisitor)
    }
}

/// The CVSS v3 base metrics a rule can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CvssMetric {
    /// AV: network / adjacent / local / physical.
    AttackVector,
    /// AC: low / high.
    AttackComplexity,
    /// A: the availability impact, none / low / high.
    Availability,
}

/// CVSS v3 attack vector (AV).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttackVector {
    /// `AV:N`, `network`.
    Network,
    /// `AV:A`, `adjacent`.
    Adjacent,
    /// `AV:L`, `local`.
    Local,
    /// `AV:P`, `physical`.
    Physical,
}

/// CVSS v3 attack complexity (AC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttackComplexity {
    /// `AC:L`, `low`.
    Low,
    /// `AC:H`, `high`.
    High,
}

/// CVSS v3 impact level, as used by the availability impact (A).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Impact {
    /// `N`, `none`.
    None,
    /// `L`, `low`.
    Low,
    /// `H`, `high`.
    High,
}

/// The parts of a CVSS v3 vector that rules test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CvssV3 {
    /// AV.
    pub attack_vector: AttackVector,
    /// AC.
    pub attack_complexity: AttackComplexity,
    /// A.
    pub availability: Impact,
}

/// CVSS v3.x metrics and their allowed values (base first, then temporal and environmental).
const CVSS_METRICS: [(&str, &[&str]); 22] = [
    ("AV", &["N", "A", "L", "P"]),
    ("AC", &["L", "H"]),
    ("PR", &["N", "L", "H"]),
    ("UI", &["N", "R"]),
    ("S", &["U", "C"]),
    ("C", &["N", "L", "H"]),
    ("I", &["N", "L", "H"]),
    ("A", &["N", "L", "H"]),
    ("E", &["X", "U", "P", "F", "H"]),
    ("RL", &["X", "O", "T", "W", "U"]),
    ("RC", &["X", "U", "R", "C"]),
    ("CR", &["X", "L", "M", "H"]),
    ("IR", &["X", "L", "M", "H"]),
    ("AR", &["X", "L", "M", "H"]),
    ("MAV", &["X", "N", "A", "L", "P"]),
    ("MAC", &["X", "L", "H"]),
    ("MPR", &["X", "N", "L", "H"]),
    ("MUI", &["X", "N", "R"]),
    ("MS", &["X", "U", "C"]),
    ("MC", &["X", "N", "L", "H"]),
    ("MI", &["X", "N", "L", "H"]),
    ("MA", &["X", "N", "L", "H"]),
];
/// Bits of the eight base metrics, which a vector must all carry.
const CVSS_BASE_MASK: u32 = 0xff;

impl CvssV3 {
    /// Parses a CVSS v3.0 or v3.1 vector (`CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H`,
    /// metrics in any order, optional temporal and environmental metrics). `None` when it is
    /// malformed: wrong prefix, unknown or repeated metric, bad value, missing base metric.
    pub fn parse(vector: &str) -> Option<CvssV3> {
        let rest = vector
            .strip_prefix("CVSS:3.1/")
            .or_else(|| vector.strip_prefix("CVSS:3.0/"))?;
        let mut seen = 0u32;
        let (mut av, mut ac, mut a) = (None, None, None);
        for part in rest.split('/') {
            let (key, value) = part.split_once(':')?;
            let index = CVSS_METRICS.iter().position(|(k, _)| *k == key)?;
            let allowed = CVSS_METRICS.get(index).map(|(_, values)| *values)?;
            if !allowed.contains(&value) {
                return None;
            }
            let bit = 1u32 << index;
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            match key {
                "AV" => {
                    av = Some(match value {
                        "N" => AttackVector::Network,
                        "A" => AttackVector::Adjacent,
                        "L" => AttackVector::Local,
                        _ => AttackVector::Physical,
                    });
                }
                "AC" => {
                    ac = Some(match value {
                        "L" => AttackComplexity::Low,
                        _ => AttackComplexity::High,
                    });
                }
                "A" => {
                    a = Some(match value {
                        "N" => Impact::None,
                        "L" => Impact::Low,
                        _ => Impact::High,
                    });
                }
                _ => {}
            }
        }
        if seen & CVSS_BASE_MASK != CVSS_BASE_MASK {
            return None;
        }
        Some(CvssV3 {
            attack_vector: av?,
            attack_complexity: ac?,
            availability: a?,
        })
    }

    /// The summary slots this vector falls in: one per metric.
    fn slots(self) -> [usize; 3] {
        [
            match self.attack_vector {
                AttackVector::Network => 0,
                AttackVector::Adjacent => 1,
                AttackVector::Local => 2,
                AttackVector::Physical => 3,
            },
            match self.attack_complexity {
                AttackComplexity::Low => 4,
                AttackComplexity::High => 5,
            },
            match self.availability {
                Impact::None => 6,
                Impact::Low => 7,
                Impact::High => 8,
            },
        ]
    }
}

/// The summary slot of a metric value, by its lower-case name.
fn cvss_slot(metric: CvssMetric, value: &str) -> Option<usize> {
    match (metric, value) {
        (CvssMetric::AttackVector, "network") => Some(0),
        (CvssMetric::AttackVector, "adjacent") => Some(1),
        (CvssMetric::AttackVector, "local") => Some(2),
        (CvssMetric::AttackVector, "physical") => Some(3),
        (CvssMetric::AttackComplexity, "low") => Some(4),
        (CvssMetric::AttackComplexity, "high") => Some(5),
        (CvssMetric::Availability, "none") => Some(6),
        (CvssMetric::Availability, "low") => Some(7),
        (CvssMetric::Availability, "high") => Some(8),
        _ => None,
    }
}

/// One finding of a scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Finding {
    /// CVE id, secret rule id, malware name, ...
    pub id: String,
    /// The finding's severity.
    pub severity: Severity,
    /// The CVSS v3 vector, as given (a malformed one counts as none, see [`CvssV3::parse`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cvss_v3_vector: Option<String>,
    /// The version that fixes it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_version: Option<String>,
}

impl Finding {
    /// The parsed CVSS v3 vector; `None` when there is none or it is malformed.
    pub fn cvss_v3(&self) -> Option<CvssV3> {
        self.cvss_v3_vector.as_deref().and_then(CvssV3::parse)
    }
}

/// One scan of one image, in the native form (camelCase JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScanResult {
    /// The image digest, `algorithm:hex` (see [`is_digest`]).
    pub digest: String,
    /// What the scan looked for.
    pub scan_type: ScanType,
    /// When the scan ran (RFC 3339 in JSON).
    #[serde(with = "rfc3339")]
    pub scanned_at: OffsetDateTime,
    /// The scanner's name, e.g. `trivy`.
    pub scanner: String,
    /// The findings; empty for a clean scan (the key may be left out).
    #[serde(default)]
    pub findings: Vec<Finding>,
}

impl ScanResult {
    /// Parses and validates a native JSON scan result.
    pub fn parse_native(json: &[u8]) -> Result<ScanResult, ScanError> {
        let result: ScanResult = from_json(json)?;
        result.validate()?;
        Ok(result)
    }

    /// Checks what serde cannot: the digest's form, a non-empty scanner and finding ids.
    pub fn validate(&self) -> Result<(), ScanError> {
        check_digest("digest", &self.digest)?;
        if self.scanner.trim().is_empty() {
            return Err(ScanError::invalid("scanner", "must not be empty"));
        }
        for (i, finding) in self.findings.iter().enumerate() {
            if finding.id.trim().is_empty() {
                return Err(ScanError::invalid(format!("findings[{i}].id"), "must not be empty"));
            }
        }
        Ok(())
    }
}

/// RFC 3339 (de)serialisation of [`OffsetDateTime`] without the `time/serde` feature.
mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer, de, ser};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub(super) fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let text = t.format(&Rfc3339).map_err(ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        super::parse_time(&text).map_err(de::Error::custom)
    }
}

fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|e| format!("{text:?} is not an RFC 3339 time ({e})"))
}

/// Whether `s` is an image digest: `algorithm:hex` with lower-case hex, 64 digits for
/// `sha256`, 128 for `sha512`, at least 32 for another algorithm (OCI's algorithm grammar).
pub fn is_digest(s: &str) -> bool {
    let Some((algorithm, hex)) = s.split_once(':') else {
        return false;
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm
            .split(['+', '.', '_', '-'])
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    let hex_ok = hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let length_ok = match algorithm {
        "sha256" => hex.len() == 64,
        "sha512" => hex.len() == 128,
        _ => hex.len() >= 32,
    };
    algorithm_ok && hex_ok && length_ok
}

fn check_digest(field: &str, digest: &str) -> Result<(), ScanError> {
    if is_digest(digest) {
        Ok(())
    } else {
        Err(ScanError::invalid(
            field,
            format!("{digest:?} is not an image digest (algorithm:hex, e.g. sha256:<64 hex digits>)"),
        ))
    }
}

/// What rules read of one scan result, precomputed.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanSummary {
    /// When the scan ran.
    pub scanned_at: OffsetDateTime,
    /// Number of findings.
    pub findings: usize,
    /// The most severe finding's severity, if any.
    pub max_severity: Option<Severity>,
    /// Per CVSS metric value (see `cvss_slot`), the most severe finding having it.
    by_cvss: [Option<Severity>; 9],
}

impl ScanSummary {
    /// Summarises a scan result.
    pub fn from_result(result: &ScanResult) -> ScanSummary {
        ScanSummary::from_findings(result.scanned_at, &result.findings)
    }

    /// Summarises findings of a scan that ran at `scanned_at`.
    pub fn from_findings(scanned_at: OffsetDateTime, findings: &[Finding]) -> ScanSummary {
        let mut max_severity = None;
        let mut by_cvss = [None; 9];
        for finding in findings {
            max_severity = max_severity.max(Some(finding.severity));
            if let Some(cvss) = finding.cvss_v3() {
                for slot in cvss.slots() {
                    if let Some(max) = by_cvss.get_mut(slot) {
                        *max = (*max).max(Some(finding.severity));
                    }
                }
            }
        }
        ScanSummary {
            scanned_at,
            findings: findings.len(),
            max_severity,
            by_cvss,
        }
    }

    /// A summary from its stored parts (what the policy store sends: counts, the most severe
    /// finding, and per CVSS metric value the most severe finding having it). A pair naming
    /// no value of its metric is ignored, as [`ScanSummary::max_severity_with`] would never
    /// read it.
    pub fn from_parts<'a>(
        scanned_at: OffsetDateTime,
        findings: usize,
        max_severity: Option<Severity>,
        cvss: impl IntoIterator<Item = (CvssMetric, &'a str, Severity)>,
    ) -> ScanSummary {
        let mut by_cvss = [None; 9];
        for (metric, value, severity) in cvss {
            if let Some(max) = cvss_slot(metric, value).and_then(|slot| by_cvss.get_mut(slot)) {
                *max = (*max).max(Some(severity));
            }
        }
        ScanSummary {
            scanned_at,
            findings,
            max_severity,
            by_cvss,
        }
    }

    /// The most severe finding whose CVSS v3 vector has `metric` = `value` (the lower-case
    /// name: `network`, `low`, ...); `None` when no finding has it (or `value` names no value
    /// of `metric`). Findings without a well-formed vector never count.
    pub fn max_severity_with(&self, metric: CvssMetric, value: &str) -> Option<Severity> {
        cvss_slot(metric, value).and_then(|slot| self.by_cvss.get(slot).copied().flatten())
    }
}

/// A scan-result lookup that could not be answered (the store is unreachable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scan results unavailable: {0}")]
pub struct ScanUnavailable(pub String);

/// Where evaluation reads scan results; filled by the caller.
pub trait ScanResults {
    /// The newest result of `scan_type` for the image `digest`.
    fn latest(&self, digest: &str, scan_type: ScanType) -> Result<Option<&ScanSummary>, ScanUnavailable>;
}

/// The newest summary of each scan type for one digest.
#[derive(Debug, Default, Clone)]
struct PerDigest {
    vulnerability: Option<ScanSummary>,
    malware: Option<ScanSummary>,
    secret: Option<ScanSummary>,
}

impl PerDigest {
    fn slot(&self, scan_type: ScanType) -> &Option<ScanSummary> {
        match scan_type {
            ScanType::Vulnerability => &self.vulnerability,
            ScanType::Malware => &self.malware,
            ScanType::Secret => &self.secret,
        }
    }

    fn slot_mut(&mut self, scan_type: ScanType) -> &mut Option<ScanSummary> {
        match scan_type {
            ScanType::Vulnerability => &mut self.vulnerability,
            ScanType::Malware => &mut self.malware,
            ScanType::Secret => &mut self.secret,
        }
    }
}

/// An in-memory [`ScanResults`]: the newest result per digest and scan type wins.
#[derive(Debug, Default, Clone)]
pub struct MemoryScanStore {
    /// Keyed by digest alone so that a lookup borrows the `&str` (no allocation); `None`
    /// until the first insert, so that [`MemoryScanStore::EMPTY`] can be a constant.
    latest: Option<HashMap<String, PerDigest>>,
    len: usize,
}

impl MemoryScanStore {
    /// An empty store, usable in a `static` (e.g. for offline evaluation without scans).
    pub const EMPTY: MemoryScanStore = MemoryScanStore { latest: None, len: 0 };

    /// An empty store.
    pub fn new() -> MemoryScanStore {
        MemoryScanStore::default()
    }

    /// Records `result` unless a newer result (by `scannedAt`) of its digest and scan type is
    /// held; at equal times the later insert wins. Returns whether it is now the latest.
    pub fn insert(&mut self, result: &ScanResult) -> bool {
        self.insert_summary(&result.digest, result.scan_type, ScanSummary::from_result(result))
    }

    /// As [`MemoryScanStore::insert`], for a summary already computed.
    pub fn insert_summary(&mut self, digest: &str, scan_type: ScanType, summary: ScanSummary) -> bool {
        let slot = self
            .latest
            .get_or_insert_with(HashMap::new)
            .entry(digest.to_owned())
            .or_default()
            .slot_mut(scan_type);
        if slot.as_ref().is_some_and(|held| held.scanned_at > summary.scanned_at) {
            return false;
        }
        if slot.is_none() {
            self.len += 1;
        }
        *slot = Some(summary);
        true
    }

    /// Number of results held (one per digest and scan type).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no result is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl ScanResults for MemoryScanStore {
    fn latest(&self, digest: &str, scan_type: ScanType) -> Result<Option<&ScanSummary>, ScanUnavailable> {
        Ok(self
            .latest
            .as_ref()
            .and_then(|map| map.get(digest))
            .and_then(|per| per.slot(scan_type).as_ref()))
    }
}

/// A scan result or report that could not be read; every message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// Not JSON, or JSON of the wrong shape (`path` is empty at the top level).
    #[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
    Json {
        /// Where, e.g. `Results[2].Vulnerabilities`; empty at the top level.
        path: String,
        /// What serde_json said, with line and column (`invalid JSON: ...` for a syntax error).
        message: String,
    },
    /// A Trivy report whose SchemaVersion is not 2.
    #[error("SchemaVersion: {detail}; only Trivy JSON reports with SchemaVersion 2 can be imported")]
    SchemaVersion {
        /// What was found, e.g. `1 is not supported`.
        detail: String,
    },
    /// A field with a bad value.
    #[error("{field}: {message}")]
    Invalid {
        /// The field path, e.g. `Results[3].Vulnerabilities[0].Severity`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No digest given and none in the report.
    #[error("Metadata.RepoDigests: the report names no image digest; give the image digest explicitly")]
    MissingDigest,
    /// No digest given and the report names several.
    #[error(
        "Metadata.RepoDigests: the report names several image digests ({}); give the image digest explicitly",
        .digests.join(", ")
    )]
    AmbiguousDigest {
        /// The distinct digests found.
        digests: Vec<String>,
    },
}

impl ScanError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> ScanError {
        ScanError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

fn json_message(e: &serde_json::Error) -> String {
    if e.is_syntax() || e.is_eof() {
        format!("invalid JSON: {e}")
    } else {
        e.to_string()
    }
}

/// Deserialises `json` (the whole input) with the path of any error.
fn from_json<'de, T: Deserialize<'de>>(json: &'de [u8]) -> Result<T, ScanError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // A path of unknown segments only (the SchemaVersion probe's) says nothing.
        let top = e
            .path()
            .iter()
            .all(|s| matches!(s, serde_path_to_error::Segment::Unknown));
        ScanError::Json {
            path: if top { String::new() } else { e.path().to_string() },
            message: json_message(&e.into_inner()),
        }
    })?;
    de.end().map_err(|e| ScanError::Json {
        path: String::new(),
        message: json_message(&e),
    })?;
    Ok(value)
}

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    const FULL: &str = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H";

    #[test]
    fn cvss_parses_base_metrics_of_3_0_and_3_1() {
        let v = CvssV3::parse(FULL).unwrap();
        assert_eq!(v.attack_vector, AttackVector::Network);
        assert_eq!(v.attack_complexity, AttackComplexity::Low);
        assert_eq!(v.availability, Impact::High);
        let v = CvssV3::parse("CVSS:3.0/AV:P/AC:H/PR:L/UI:R/S:C/C:N/I:L/A:N").unwrap();
        assert_eq!(v.attack_vector, AttackVector::Physical);
        assert_eq!(v.attack_complexity, AttackComplexity::High);
        assert_eq!(v.availability, Impact::None);
        let v = CvssV3::parse("CVSS:3.1/AV:A/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:L").unwrap();
        assert_eq!(v.attack_vector, AttackVector::Adjacent);
        assert_eq!(v.availability, Impact::Low);
        assert_eq!(
            CvssV3::parse("CVSS:3.1/AV:L/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H").map(|v| v.attack_vector),
            Some(AttackVector::Local)
        );
    }

    #[test]
    fn cvss_accepts_any_order_and_temporal_environmental_metrics() {
        let v = CvssV3::parse("CVSS:3.1/A:L/I:H/C:H/S:U/UI:N/PR:N/AC:H/AV:A/E:P/RL:O/RC:C/CR:H/MAV:N/MA:X").unwrap();
        assert_eq!(v.attack_vector, AttackVector::Adjacent);
        assert_eq!(v.attack_complexity, AttackComplexity::High);
        assert_eq!(v.availability, Impact::Low);
    }

    #[test]
    fn cvss_rejects_malformed_vectors() {
        for bad in [
            "",
            "AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:2.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
            "AV:N/AC:L/Au:N/C:P/I:P/A:P",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/A:L",
            "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:h",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/ZZ:1",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/AH",
            "cvss:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        ] {
            assert_eq!(CvssV3::parse(bad), None, "{bad:?}");
        }
    }

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(secs).unwrap()
    }

    fn finding(severity: Severity, vector: Option<&str>) -> Finding {
        Finding {
            id: format!("CVE-{severity}"),
            severity,
            cvss_v3_vector: vector.map(str::to_owned),
            fixed_version: None,
        }
    }

    #[test]
    fn summary_keeps_the_most_severe_finding_per_metric_value() {
        let findings = [
            finding(Severity::Low, Some(FULL)),
            finding(Severity::High, Some("CVSS:3.1/AV:L/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:N")),
            finding(Severity::Medium, Some("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:N")),
            finding(Severity::Critical, None),
            finding(Severity::Critical, Some("CVSS:3.1/AV:N/AC:L")),
        ];
        let s = ScanSummary::from_findings(at(0), &findings);
        assert_eq!(s.findings, 5);
        assert_eq!(s.max_severity, Some(Severity::Critical));
        let m = |metric, value| s.max_severity_with(metric, value);
        assert_eq!(m(CvssMetric::AttackVector, "network"), Some(Severity::Medium));
        assert_eq!(m(CvssMetric::AttackVector, "local"), Some(Severity::High));
        assert_eq!(m(CvssMetric::AttackVector, "adjacent"), None);
        assert_eq!(m(CvssMetric::AttackVector, "physical"), None);
        assert_eq!(m(CvssMetric::AttackComplexity, "low"), Some(Severity::Low));
        assert_eq!(m(CvssMetric::AttackComplexity, "high"), Some(Severity::High));
        assert_eq!(m(CvssMetric::Availability, "high"), Some(Severity::Low));
        assert_eq!(m(CvssMetric::Availability, "none"), Some(Severity::High));
        assert_eq!(m(CvssMetric::Availability, "low"), None);
        // A value of another metric, or an unknown one, matches nothing.
        assert_eq!(m(CvssMetric::AttackComplexity, "network"), None);
        assert_eq!(m(CvssMetric::AttackVector, "Network"), None);
    }

    #[test]
    fn empty_summary_has_no_severity() {
        let s = ScanSummary::from_findings(at(5), &[]);
        assert_eq!((s.findings, s.max_severity, s.scanned_at), (0, None, at(5)));
        assert_eq!(s.max_severity_with(CvssMetric::AttackVector, "network"), None);
    }

    #[test]
    fn digests() {
        let hex64 = "a".repeat(64);
        assert!(is_digest(&format!("sha256:{hex64}")));
        assert!(is_digest(&format!("sha512:{}", "0".repeat(128))));
        assert!(is_digest(&format!("blake3:{hex64}")));
        for bad in [
            String::new(),
            hex64.clone(),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}g", "a".repeat(63)),
            format!("SHA256:{hex64}"),
            format!(":{hex64}"),
            format!("sha256::{hex64}"),
            format!("sha512:{hex64}"),
            format!("sha-:{hex64}"),
        ] {
            assert!(!is_digest(&bad), "{bad:?}");
        }
    }

    #[test]
    fn store_len_counts_digest_and_type_pairs() {
        let mut store = MemoryScanStore::new();
        assert!(store.is_empty());
        let s = ScanSummary::from_findings(at(1), &[]);
        assert!(store.insert_summary("sha256:x", ScanType::Vulnerability, s.clone()));
        assert!(store.insert_summary("sha256:x", ScanType::Secret, s.clone()));
        assert!(store.insert_summary("sha256:x", ScanType::Secret, s.clone()));
        assert!(store.insert_summary("sha256:y", ScanType::Secret, s));
        assert_eq!(store.len(), 3);
        assert!(!store.is_empty());
        assert!(store.latest("sha256:x", ScanType::Malware).unwrap().is_none());
        assert!(store.latest("sha256:z", ScanType::Secret).unwrap().is_none());
    }
}
