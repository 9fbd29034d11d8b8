//! `portcullis scan upload`: image scan results, a Trivy JSON report or the native form.

use clap::Subcommand;
use portcullis_engine::scan::{ScanResult, TrivyImportOptions, from_trivy, is_digest};
use portcullis_proto::common::v1::ScanSummary;
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::upload_scan_result_request::Report;
use serde_json::{Value, json};

use super::document::read_source;
use super::error::{ClientError, one_line};
use super::output::{Format, OutputArg, Table, print_json, print_table, time_cell, time_json};
use super::{Ctx, KeyChoice, names};

/// `scan` subcommands.
#[derive(Debug, Subcommand)]
pub enum ScanCommand {
    /// Stores scan results: a Trivy JSON report (SchemaVersion 2), or native results (one
    /// object or an array), checked locally by the engine first.
    Upload {
        /// The report (`-` for standard input).
        #[arg(short = 'f', long = "file", value_name = "REPORT")]
        file: String,
        /// The image digest the report is about (default: the Trivy report's
        /// `Metadata.RepoDigests`, or the native result's `digest`).
        #[arg(long, value_name = "DIGEST")]
        digest: Option<String>,
        /// The Trivy run included the secret scanner (a clean secret result is stored too).
        #[arg(long)]
        secret_scan: bool,
        /// The image reference the report is about (informational).
        #[arg(long, value_name = "REF")]
        image: Option<String>,
        #[command(flatten)]
        out: OutputArg,
    },
}

impl ScanCommand {
    /// The subcommand's name.
    pub fn verb(&self) -> &'static str {
        match self {
            ScanCommand::Upload { .. } => "upload",
        }
    }
}

/// The upload requests a report file gives: one for a Trivy report, one per native result.
pub fn upload_requests(
    source_name: &str,
    bytes: Vec<u8>,
    digest: Option<&str>,
    secret_scan: bool,
    image: Option<&str>,
) -> Result<Vec<pb::UploadScanResultRequest>, ClientError> {
    let bad = |message: String| ClientError::input(format!("{source_name}: {}", one_line(&message)));
    if let Some(d) = digest
        && !is_digest(d)
    {
        return Err(ClientError::input(format!(
            "--digest {d:?} is not a digest (sha256:<64 hex digits>)"
        )));
    }
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let request = |report: Report| pb::UploadScanResultRequest {
        digest: digest.unwrap_or_default().to_owned(),
        report: Some(report),
        trivy_secret_scan: secret_scan,
        image: image.unwrap_or_default().to_owned(),
    };
    if value.get("SchemaVersion").is_some() {
        // The engine's import, for a clear local error; the server imports it again.
        let options = TrivyImportOptions {
            digest: digest.map(str::to_owned),
            secret_scan,
            ..TrivyImportOptions::default()
        };
        from_trivy(&bytes, &options).map_err(|e| bad(e.to_string()))?;
        return Ok(vec![request(Report::TrivyJson(bytes.into()))]);
    }
    if secret_scan {
        return Err(ClientError::input(
            "--secret-scan is for Trivy reports; this is the native form",
        ));
    }
    let (items, is_array) = match value {
        Value::Array(items) => (items, true),
        other => (vec![other], false),
    };
    if items.is_empty() {
        return Err(bad("no scan results in the file".to_owned()));
    }
    let mut requests = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        // Errors in an array name the item: `[2].findings[0].severity: ...`.
        let at = |message: String| bad(if is_array { format!("[{i}].{message}") } else { message });
        let mut result: ScanResult = serde_path_to_error::deserialize(item).map_err(|e| {
            let path = e.path().to_string();
            at(if path == "." {
                e.inner().to_string()
            } else {
                format!("{path}: {}", e.inner())
            })
        })?;
        if let Some(d) = digest {
            d.clone_into(&mut result.digest);
        }
        result.validate().map_err(|e| at(e.to_string()))?;
        let json = serde_json::to_vec(&result).map_err(|e| at(e.to_string()))?;
        requests.push(request(Report::NativeJson(json.into())));
    }
    Ok(requests)
}

/// Runs a `scan` subcommand.
pub async fn run(ctx: &Ctx<'_>, command: &ScanCommand) -> Result<(), ClientError> {
    match command {
        ScanCommand::Upload {
            file,
            digest,
            secret_scan,
            image,
            out,
        } => {
            let bytes = read_source(file)?;
            let requests = upload_requests(file, bytes, digest.as_deref(), *secret_scan, image.as_deref())?;
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let mut client = conn.scans();
            let mut stored: Vec<ScanSummary> = Vec::new();
            for request in requests {
                let response = client
                    .upload_scan_result(request)
                    .await
                    .map_err(|s| conn.error(s))?
                    .into_inner();
                stored.extend(response.stored);
            }
            match out.output {
                Format::Json => print_json(&Value::Array(stored.iter().map(summary_json).collect())),
                Format::Table => {
                    let mut table = Table::new(&["DIGEST", "TYPE", "SCANNER", "FINDINGS", "MAX SEVERITY", "SCANNED"]);
                    for s in &stored {
                        table.row(vec![
                            s.digest.clone(),
                            names::scan_type(s.scan_type),
                            s.scanner.clone(),
                            s.findings.to_string(),
                            names::severity(s.max_severity),
                            time_cell(s.scanned_at.as_ref()),
                        ]);
                    }
                    print_table(&table, "Nothing stored.")
                }
            }
        }
    }
}

/// A stored result's summary as JSON.
fn summary_json(s: &ScanSummary) -> Value {
    json!({
        "resultId": s.result_id,
        "digest": s.digest,
        "scanType": names::scan_type(s.scan_type),
        "scanner": s.scanner,
        "scannedAt": time_json(s.scanned_at.as_ref()),
        "findings": s.findings,
        "maxSeverity": names::severity(s.max_severity),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn native(digest: &str) -> String {
        format!(
            r#"{{"digest":"{digest}","scanType":"vulnerability","scannedAt":"2025-01-01T00:00:00Z","scanner":"grype 1","findings":[{{"id":"CVE-1","severity":"high"}}]}}"#
        )
    }

    #[test]
    fn a_native_result_becomes_one_native_upload() {
        let requests = upload_requests("r.json", native(DIGEST).into_bytes(), None, false, Some("nginx:1")).unwrap();
        assert_eq!(requests.len(), 1);
        let r = &requests[0];
        assert_eq!(r.image, "nginx:1");
        let Some(Report::NativeJson(json)) = &r.report else {
            panic!("not native")
        };
        let sent: Value = serde_json::from_slice(json).unwrap();
        assert_eq!(sent["digest"], DIGEST);
        assert_eq!(sent["findings"][0]["id"], "CVE-1");
    }

    #[test]
    fn an_array_gives_one_upload_per_result_and_digest_overrides() {
        let other = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
        let text = format!("[{}, {}]", native(DIGEST), native(DIGEST));
        let requests = upload_requests("r.json", text.into_bytes(), Some(other), false, None).unwrap();
        assert_eq!(requests.len(), 2);
        for r in &requests {
            assert_eq!(r.digest, other);
            let Some(Report::NativeJson(json)) = &r.report else {
                panic!("not native")
            };
            let sent: Value = serde_json::from_slice(json).unwrap();
            assert_eq!(sent["digest"], other);
        }
    }

    #[test]
    fn a_trivy_report_is_sent_as_it_is() {
        let report = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/conformance/trivy-reports/alpine-310-registry.json.golden"
        );
        let bytes = std::fs::read(report).unwrap();
        let requests = upload_requests("t.json", bytes.clone(), Some(DIGEST), true, None).unwrap();
        assert_eq!(requests.len(), 1);
        assert!(requests[0].trivy_secret_scan);
        assert_eq!(requests[0].digest, DIGEST);
        assert_eq!(requests[0].report, Some(Report::TrivyJson(bytes.into())));
    }

    #[test]
    fn bad_reports_are_refused_locally_with_the_field() {
        let err = upload_requests("r.json", b"{".to_vec(), None, false, None).unwrap_err();
        assert!(err.to_string().starts_with("r.json: not JSON"), "{err}");
        let err = upload_requests("r.json", native("sha256:short").into_bytes(), None, false, None).unwrap_err();
        assert!(err.to_string().starts_with("r.json: digest"), "{err}");
        let bad_severity = native(DIGEST).replace("\"high\"", "\"extreme\"");
        let err = upload_requests("r.json", bad_severity.into_bytes(), None, false, None).unwrap_err();
        assert!(err.to_string().starts_with("r.json: findings[0].severity"), "{err}");
        let err = upload_requests("r.json", native(DIGEST).into_bytes(), Some("latest"), false, None).unwrap_err();
        assert!(err.to_string().contains("--digest"), "{err}");
        let err = upload_requests("r.json", native(DIGEST).into_bytes(), None, true, None).unwrap_err();
        assert!(err.to_string().contains("--secret-scan"), "{err}");
        let err = upload_requests("r.json", b"[]".to_vec(), None, false, None).unwrap_err();
        assert!(err.to_string().contains("no scan results"), "{err}");
    }
}
