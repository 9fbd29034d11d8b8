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
//!
//! Its files, by concern: the native result types and their validation (`model.rs`), CVSS v3
//! vectors (`cvss.rs`), the summaries rules read and the in-memory store (`summary.rs`), and
//! the Trivy import (`trivy.rs`). Every public item is re-exported here.

mod cvss;
mod model;
mod summary;
mod trivy;

pub use cvss::{AttackComplexity, AttackVector, CvssMetric, CvssV3, Impact};
pub use model::{
    Finding, ParseScanTypeError, ParseSeverityError, ScanError, ScanResult, ScanType, Severity, is_digest,
};
pub use summary::{DigestSummaries, MemoryScanStore, ScanResults, ScanSummary, ScanUnavailable};
pub use trivy::{TrivyImport, TrivyImportOptions, from_trivy};
