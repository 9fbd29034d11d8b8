//! The native scan result: its types (scan types, severities, findings), their validation,
//! and the errors of reading a result or a report.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::cvss::CvssV3;

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

pub(super) fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
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

pub(super) fn check_digest(field: &str, digest: &str) -> Result<(), ScanError> {
    if is_digest(digest) {
        Ok(())
    } else {
        Err(ScanError::invalid(
            field,
            format!("{digest:?} is not an image digest (algorithm:hex, e.g. sha256:<64 hex digits>)"),
        ))
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
    pub(super) fn invalid(field: impl Into<String>, message: impl Into<String>) -> ScanError {
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
pub(super) fn from_json<'de, T: Deserialize<'de>>(json: &'de [u8]) -> Result<T, ScanError> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

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
}
