//! Image scan results: native or Trivy uploads (parsed by the engine), the newest result per
//! digest and scan type, and the summaries the admission and continuous caches read.

use std::collections::BTreeMap;

use portcullis_engine::scan::{
    CvssMetric, ScanError, ScanResult, ScanSummary, ScanType, Severity, TrivyImportOptions, from_trivy,
};
use portcullis_proto::events::v1 as pe;
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect};
use serde_json::json;

use crate::clock::{from_micros, to_micros};
use crate::entity::scan_result;
use crate::error::{StoreError, StoreResult};
use crate::events::{scan_summary_to_proto, scan_type_to_proto};
use crate::model::{
    Actor, CvssSeverity, DigestSummaries, Page, ScanQuery, ScanRecord, ScanReport, ScanUpload, StoredScan,
};
use crate::store::{AuditResource, Store, check_tenant_id, decode_token, finish_page, page_limit};

/// The most digests one summaries request may name.
pub const MAX_SUMMARY_DIGESTS: usize = 256;

/// Every CVSS metric value a rule can test, in the engine's order.
const CVSS_VALUES: [(CvssMetric, &str); 9] = [
    (CvssMetric::AttackVector, "network"),
    (CvssMetric::AttackVector, "adjacent"),
    (CvssMetric::AttackVector, "local"),
    (CvssMetric::AttackVector, "physical"),
    (CvssMetric::AttackComplexity, "low"),
    (CvssMetric::AttackComplexity, "high"),
    (CvssMetric::Availability, "none"),
    (CvssMetric::Availability, "low"),
    (CvssMetric::Availability, "high"),
];

fn metric_name(m: CvssMetric) -> &'static str {
    match m {
        CvssMetric::AttackVector => "attack-vector",
        CvssMetric::AttackComplexity => "attack-complexity",
        CvssMetric::Availability => "availability",
    }
}

fn metric_from(name: &str) -> Option<CvssMetric> {
    [
        CvssMetric::AttackVector,
        CvssMetric::AttackComplexity,
        CvssMetric::Availability,
    ]
    .into_iter()
    .find(|m| metric_name(*m) == name)
}

fn scan_error(e: ScanError) -> StoreError {
    match e {
        ScanError::Json { path, message } => {
            StoreError::invalid(if path.is_empty() { "report".to_owned() } else { path }, message)
        }
        ScanError::SchemaVersion { detail } => StoreError::invalid(
            "SchemaVersion",
            format!("{detail}; only Trivy JSON reports with SchemaVersion 2 can be imported"),
        ),
        ScanError::Invalid { field, message } => StoreError::invalid(field, message),
        e @ (ScanError::MissingDigest | ScanError::AmbiguousDigest { .. }) => {
            StoreError::invalid("digest", e.to_string())
        }
    }
}

/// The columns of a record (all but the result itself).
#[derive(Debug, Clone, FromQueryResult)]
struct RecordRow {
    id: String,
    digest: String,
    scan_type: String,
    scanned_at: i64,
    scanner: String,
    image: String,
    uploaded_at: i64,
    uploader_key_id: String,
    findings: i64,
    max_severity: Option<String>,
    cvss: String,
    is_latest: bool,
}

fn select_records() -> sea_orm::Select<scan_result::Entity> {
    use scan_result::Column as C;
    scan_result::Entity::find().select_only().columns([
        C::Id,
        C::Digest,
        C::ScanType,
        C::ScannedAt,
        C::Scanner,
        C::Image,
        C::UploadedAt,
        C::UploaderKeyId,
        C::Findings,
        C::MaxSeverity,
        C::Cvss,
        C::IsLatest,
    ])
}

fn record_from(r: RecordRow) -> StoreResult<ScanRecord> {
    let bad = |what: &str| StoreError::Internal(format!("stored scan result {} has a bad {what}", r.id));
    let scan_type: ScanType = r.scan_type.parse().map_err(|_| bad("scan type"))?;
    let max_severity = r
        .max_severity
        .as_deref()
        .map(|s| s.parse::<Severity>().map_err(|_| bad("severity")))
        .transpose()?;
    let cvss_raw: Vec<(String, String, String)> = serde_json::from_str(&r.cvss).map_err(|_| bad("cvss summary"))?;
    let mut cvss = Vec::new();
    for (metric, value, severity) in cvss_raw {
        let metric = metric_from(&metric).ok_or_else(|| bad("cvss metric"))?;
        let value = CVSS_VALUES
            .iter()
            .find(|(m, v)| *m == metric && *v == value)
            .map(|(_, v)| *v)
            .ok_or_else(|| bad("cvss value"))?;
        cvss.push(CvssSeverity {
            metric,
            value,
            max_severity: severity.parse().map_err(|_| bad("cvss severity"))?,
        });
    }
    Ok(ScanRecord {
        id: r.id,
        digest: r.digest,
        scan_type,
        scanned_at: from_micros(r.scanned_at),
        scanner: r.scanner,
        findings: u64::try_from(r.findings).unwrap_or(0),
        max_severity,
        cvss,
        image: r.image,
        uploaded_at: from_micros(r.uploaded_at),
        uploader_key_id: r.uploader_key_id,
        is_latest: r.is_latest,
    })
}

/// Whether `a` is a newer scan than `b`: by scan time, then by upload time.
fn newer(a: &ScanRecord, b: &ScanRecord) -> bool {
    (a.scanned_at, a.uploaded_at) > (b.scanned_at, b.uploaded_at)
}

impl Store {
    /// Stores the results of a report (a Trivy report gives a vulnerability result and maybe a
    /// secret result), each published as `scan.result`. InvalidArgument names the field.
    pub async fn upload_scan(
        &self,
        tenant_id: &str,
        actor: &Actor,
        upload: &ScanUpload,
    ) -> StoreResult<Vec<ScanRecord>> {
        check_tenant_id(tenant_id)?;
        let results: Vec<ScanResult> = match &upload.report {
            ScanReport::NativeJson(bytes) => vec![ScanResult::parse_native(bytes).map_err(scan_error)?],
            ScanReport::Native(result) => {
                result.validate().map_err(scan_error)?;
                vec![result.clone()]
            }
            ScanReport::Trivy { json, secret_scan } => {
                let options = TrivyImportOptions {
                    digest: upload.digest.clone(),
                    secret_scan: *secret_scan,
                    ..TrivyImportOptions::default()
                };
                from_trivy(json, &options)
                    .map_err(scan_error)?
                    .results()
                    .cloned()
                    .collect()
            }
        };
        if let (Some(digest), ScanReport::NativeJson(_) | ScanReport::Native(_)) = (&upload.digest, &upload.report)
            && results.iter().any(|r| &r.digest != digest)
        {
            return Err(StoreError::invalid(
                "digest",
                "differs from the digest in the scan result",
            ));
        }
        let mut tx = self.write(actor).await?;
        tx.require_tenant(tenant_id).await?;
        let mut stored = Vec::new();
        for result in results {
            let summary = ScanSummary::from_result(&result);
            let cvss: Vec<CvssSeverity> = CVSS_VALUES
                .iter()
                .filter_map(|(metric, value)| {
                    summary.max_severity_with(*metric, value).map(|s| CvssSeverity {
                        metric: *metric,
                        value,
                        max_severity: s,
                    })
                })
                .collect();
            let mut record = ScanRecord {
                id: uuid::Uuid::new_v4().to_string(),
                digest: result.digest.clone(),
                scan_type: result.scan_type,
                scanned_at: crate::clock::truncate(result.scanned_at),
                scanner: result.scanner.clone(),
                findings: u64::try_from(result.findings.len()).unwrap_or(u64::MAX),
                max_severity: summary.max_severity,
                cvss,
                image: upload.image.clone(),
                uploaded_at: tx.now,
                uploader_key_id: tx.actor.key_id_str().to_owned(),
                is_latest: false,
            };
            let latest: Vec<ScanRecord> = select_records()
                .filter(scan_result::Column::TenantId.eq(tenant_id))
                .filter(scan_result::Column::Digest.eq(record.digest.as_str()))
                .filter(scan_result::Column::ScanType.eq(record.scan_type.as_str()))
                .filter(scan_result::Column::IsLatest.eq(true))
                .into_model::<RecordRow>()
                .all(&tx.db)
                .await?
                .into_iter()
                .map(record_from)
                .collect::<StoreResult<_>>()?;
            // An older scan uploaded late is kept but does not replace the newest; on a tie
            // the upload committed last wins.
            record.is_latest = !latest.iter().any(|l| newer(l, &record));
            if record.is_latest && !latest.is_empty() {
                scan_result::Entity::update_many()
                    .col_expr(scan_result::Column::IsLatest, Expr::value(false))
                    .filter(scan_result::Column::TenantId.eq(tenant_id))
                    .filter(scan_result::Column::Digest.eq(record.digest.as_str()))
                    .filter(scan_result::Column::ScanType.eq(record.scan_type.as_str()))
                    .exec(&tx.db)
                    .await?;
            }
            let result_json = serde_json::to_string(&result).map_err(|e| StoreError::Internal(e.to_string()))?;
            let cvss_json = serde_json::Value::from(
                record
                    .cvss
                    .iter()
                    .map(|c| json!([metric_name(c.metric), c.value, c.max_severity.as_str()]))
                    .collect::<Vec<_>>(),
            )
            .to_string();
            scan_result::Entity::insert(scan_result::ActiveModel {
                tenant_id: Set(tenant_id.to_owned()),
                id: Set(record.id.clone()),
                digest: Set(record.digest.clone()),
                scan_type: Set(record.scan_type.as_str().to_owned()),
                scanned_at: Set(to_micros(record.scanned_at)),
                scanner: Set(record.scanner.clone()),
                image: Set(record.image.clone()),
                uploaded_at: Set(to_micros(record.uploaded_at)),
                uploader_key_id: Set(record.uploader_key_id.clone()),
                findings: Set(i64::try_from(record.findings).unwrap_or(i64::MAX)),
                max_severity: Set(record.max_severity.map(|s| s.as_str().to_owned())),
                cvss: Set(cvss_json),
                is_latest: Set(record.is_latest),
                result: Set(result_json),
            })
            .exec(&tx.db)
            .await?;
            tx.event(
                tenant_id,
                pe::event_envelope::Payload::ScanResultStored(pe::ScanResultStored {
                    digest: record.digest.clone(),
                    scan_type: scan_type_to_proto(record.scan_type) as i32,
                    summary: Some(scan_summary_to_proto(&record)),
                    is_latest: record.is_latest,
                }),
            )
            .await?;
            stored.push(record);
        }
        let ids: Vec<serde_json::Value> = stored
            .iter()
            .map(|r| json!({ "id": r.id, "scan_type": r.scan_type.as_str(), "is_latest": r.is_latest }))
            .collect();
        let digest = stored.first().map(|r| r.digest.clone()).unwrap_or_default();
        tx.audit(
            tenant_id,
            "scan.upload",
            AuditResource {
                kind: "scan",
                id: &digest,
                name: &upload.image,
            },
            json!({ "results": ids }),
        )
        .await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// The newest result of one scan type for a digest, with its findings.
    pub async fn latest_scan(&self, tenant_id: &str, digest: &str, scan_type: ScanType) -> StoreResult<StoredScan> {
        check_tenant_id(tenant_id)?;
        let row = scan_result::Entity::find()
            .filter(scan_result::Column::TenantId.eq(tenant_id))
            .filter(scan_result::Column::Digest.eq(digest))
            .filter(scan_result::Column::ScanType.eq(scan_type.as_str()))
            .order_by_desc(scan_result::Column::ScannedAt)
            .order_by_desc(scan_result::Column::UploadedAt)
            .order_by_desc(scan_result::Column::IsLatest)
            .one(&self.inner.db)
            .await?
            .ok_or_else(|| StoreError::not_found("scan result", format!("{} of {digest:?}", scan_type.as_str())))?;
        let result = ScanResult::parse_native(row.result.as_bytes())
            .map_err(|e| StoreError::Internal(format!("stored scan result {} unreadable: {e}", row.id)))?;
        let record = record_from(RecordRow {
            id: row.id,
            digest: row.digest,
            scan_type: row.scan_type,
            scanned_at: row.scanned_at,
            scanner: row.scanner,
            image: row.image,
            uploaded_at: row.uploaded_at,
            uploader_key_id: row.uploader_key_id,
            findings: row.findings,
            max_severity: row.max_severity,
            cvss: row.cvss,
            is_latest: row.is_latest,
        })?;
        Ok(StoredScan { record, result })
    }

    /// Stored results, newest upload first, without findings.
    pub async fn list_scans(&self, tenant_id: &str, query: &ScanQuery) -> StoreResult<Page<ScanRecord>> {
        check_tenant_id(tenant_id)?;
        let mut select = select_records().filter(scan_result::Column::TenantId.eq(tenant_id));
        if let Some(cursor) = decode_token(&query.page)? {
            let bad = || StoreError::invalid("page_token", "not a page token of this listing");
            let (at, id) = cursor.split_once(':').ok_or_else(bad)?;
            let at: i64 = at.parse().map_err(|_| bad())?;
            select = select.filter(
                scan_result::Column::UploadedAt
                    .lt(at)
                    .or(scan_result::Column::UploadedAt
                        .eq(at)
                        .and(scan_result::Column::Id.lt(id))),
            );
        }
        if let Some(digest) = &query.digest {
            select = select.filter(scan_result::Column::Digest.eq(digest.as_str()));
        }
        if let Some(t) = query.scan_type {
            select = select.filter(scan_result::Column::ScanType.eq(t.as_str()));
        }
        let rows = select
            .order_by_desc(scan_result::Column::UploadedAt)
            .order_by_desc(scan_result::Column::Id)
            .limit(page_limit(&query.page))
            .into_model::<RecordRow>()
            .all(&self.inner.db)
            .await?;
        let records = rows.into_iter().map(record_from).collect::<StoreResult<Vec<_>>>()?;
        let (items, next_token) = finish_page(records, &query.page, |r: &ScanRecord| {
            format!("{}:{}", to_micros(r.uploaded_at), r.id)
        });
        Ok(Page { items, next_token })
    }

    /// The newest summary per scan type of each digest, in request order; a digest without
    /// results has no summaries.
    pub async fn scan_summaries(&self, tenant_id: &str, digests: &[String]) -> StoreResult<Vec<DigestSummaries>> {
        check_tenant_id(tenant_id)?;
        if digests.len() > MAX_SUMMARY_DIGESTS {
            return Err(StoreError::invalid(
                "digests",
                format!("at most {MAX_SUMMARY_DIGESTS} digests per request"),
            ));
        }
        let mut newest: BTreeMap<(String, &'static str), ScanRecord> = BTreeMap::new();
        if !digests.is_empty() {
            let rows = select_records()
                .filter(scan_result::Column::TenantId.eq(tenant_id))
                .filter(scan_result::Column::Digest.is_in(digests.iter().cloned()))
                .filter(scan_result::Column::IsLatest.eq(true))
                .into_model::<RecordRow>()
                .all(&self.inner.db)
                .await?;
            for row in rows {
                let record = record_from(row)?;
                let key = (record.digest.clone(), record.scan_type.as_str());
                // Two uploads racing may both have marked themselves latest: the newer wins.
                match newest.get(&key) {
                    Some(held)
                        if (record.scanned_at, record.uploaded_at, &record.id)
                            <= (held.scanned_at, held.uploaded_at, &held.id) => {}
                    _ => {
                        newest.insert(key, record);
                    }
                }
            }
        }
        Ok(digests
            .iter()
            .map(|d| DigestSummaries {
                digest: d.clone(),
                summaries: ScanType::ALL
                    .iter()
                    .filter_map(|t| newest.get(&(d.clone(), t.as_str())).cloned())
                    .collect(),
            })
            .collect())
    }
}
