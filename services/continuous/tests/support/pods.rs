//! Realistic running pods, as connectors send them (`portcullis_corpus::pods`), and scan
//! results for their images, for the tests and the benchmarks (each includes this file with
//! `#[path]`).
// Test-data code: indexing into JSON values built right here.
#![allow(dead_code, clippy::indexing_slicing, clippy::unwrap_used)]

pub use portcullis_corpus::pods::running_pods;
use portcullis_engine::scan::{Finding, MemoryScanStore, ScanResult, ScanType, Severity};
use serde_json::Value;
use time::macros::datetime;

/// The benchmark's continuous policy (15 rules).
pub const POLICY: &str = include_str!("../../benches/data/policy-continuous.yaml");

/// Scan results for every image of `pods`: by its digest's first hex digit, a third with a
/// critical vulnerability (and one in sixteen with malware), a third clean, a third never
/// scanned.
pub fn scan_store(pods: &[String]) -> MemoryScanStore {
    let mut store = MemoryScanStore::new();
    for pod in pods {
        let value: Value = serde_json::from_str(pod).unwrap();
        for list in [
            "containerStatuses",
            "initContainerStatuses",
            "ephemeralContainerStatuses",
        ] {
            for status in value["status"][list].as_array().into_iter().flatten() {
                let image_id = status["imageID"].as_str().unwrap_or_default();
                let digest = image_id.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
                // The same digest named in the image itself, for images given by digest.
                let nibble = u8::from_str_radix(&digest[7..8], 16).unwrap_or(0);
                let result = |scan_type, findings| ScanResult {
                    digest: digest.to_owned(),
                    scan_type,
                    scanned_at: datetime!(2026-12-05 00:00 UTC),
                    scanner: "trivy".to_owned(),
                    findings,
                };
                match nibble % 3 {
                    0 => {
                        store.insert(&result(
                            ScanType::Vulnerability,
                            vec![Finding {
                                id: "CVE-2026-1234".to_owned(),
                                severity: Severity::Critical,
                                cvss_v3_vector: Some("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H".to_owned()),
                                fixed_version: Some("1.2.4".to_owned()),
                            }],
                        ));
                        let malware = if nibble == 0 {
                            vec![Finding {
                                id: "Trojan.Linux.Miner".to_owned(),
                                severity: Severity::High,
                                cvss_v3_vector: None,
                                fixed_version: None,
                            }]
                        } else {
                            Vec::new()
                        };
                        store.insert(&result(ScanType::Malware, malware));
                    }
                    1 => {
                        store.insert(&result(ScanType::Vulnerability, Vec::new()));
                        store.insert(&result(ScanType::Malware, Vec::new()));
                    }
                    _ => {}
                }
            }
        }
    }
    store
}
