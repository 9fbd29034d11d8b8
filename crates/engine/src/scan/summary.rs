//! What rules read of scan results: a summary per result, precomputed, and where evaluation
//! looks summaries up ([`ScanResults`], with the in-memory [`MemoryScanStore`]).

use std::collections::HashMap;

use time::OffsetDateTime;

use super::cvss::{CvssMetric, cvss_slot};
use super::model::{Finding, ScanResult, ScanType, Severity};

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

/// The newest summary of each scan type for one digest (the store below and admission's
/// scan cache hold these).
#[derive(Debug, Default, Clone)]
pub struct DigestSummaries {
    vulnerability: Option<ScanSummary>,
    malware: Option<ScanSummary>,
    secret: Option<ScanSummary>,
}

impl DigestSummaries {
    /// The summary held for `scan_type`.
    pub fn slot(&self, scan_type: ScanType) -> &Option<ScanSummary> {
        match scan_type {
            ScanType::Vulnerability => &self.vulnerability,
            ScanType::Malware => &self.malware,
            ScanType::Secret => &self.secret,
        }
    }

    /// The summary held for `scan_type`, to replace.
    pub fn slot_mut(&mut self, scan_type: ScanType) -> &mut Option<ScanSummary> {
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
    latest: Option<HashMap<String, DigestSummaries>>,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    const FULL: &str = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H";

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
