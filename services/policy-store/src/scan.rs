//! ScanResultService.

use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::scan_result_service_server::ScanResultService;
use portcullis_proto::policystore::v1::upload_scan_result_request::Report;
use portcullis_server::Caller;
use portcullis_server::status::invalid_field;
use portcullis_storage::events::scan_summary_to_proto;
use portcullis_storage::{ScanQuery, ScanReport, ScanUpload};
use tonic::{Request, Response, Status};

use crate::PolicyStore;
use crate::convert::{
    acting, page, page_response, required_text, scan_result_from, scan_result_to_proto, scan_type_from,
};
use crate::error::OrStatus;

#[tonic::async_trait]
impl ScanResultService for PolicyStore {
    async fn upload_scan_result(
        &self,
        request: Request<pb::UploadScanResultRequest>,
    ) -> Result<Response<pb::UploadScanResultResponse>, Status> {
        let (tenant, actor) = acting(&request)?;
        let req = request.get_ref();
        let report = match req.report.clone() {
            None => return Err(invalid_field("report", "required: trivy_json, native_json or native")),
            Some(Report::TrivyJson(json)) => ScanReport::Trivy {
                json: json.to_vec(),
                secret_scan: req.trivy_secret_scan,
            },
            Some(Report::NativeJson(json)) => ScanReport::NativeJson(json.to_vec()),
            Some(Report::Native(native)) => ScanReport::Native(scan_result_from(native)?),
        };
        let upload = ScanUpload {
            digest: Some(req.digest.clone()).filter(|d| !d.is_empty()),
            image: req.image.clone(),
            report,
        };
        let stored = self.store.upload_scan(tenant, &actor, &upload).await.or_status()?;
        Ok(Response::new(pb::UploadScanResultResponse {
            stored: stored.iter().map(scan_summary_to_proto).collect(),
        }))
    }

    async fn get_latest_scan_result(
        &self,
        request: Request<pb::GetLatestScanResultRequest>,
    ) -> Result<Response<pb::GetLatestScanResultResponse>, Status> {
        let tenant = Caller::tenant_of(&request)?;
        let req = request.get_ref();
        let digest = required_text("digest", &req.digest)?;
        let scan_type =
            scan_type_from("scan_type", req.scan_type, true)?.ok_or_else(|| invalid_field("scan_type", "required"))?;
        let stored = self.store.latest_scan(tenant, digest, scan_type).await.or_status()?;
        let record = &stored.record;
        Ok(Response::new(pb::GetLatestScanResultResponse {
            result: Some(scan_result_to_proto(
                &record.id,
                &stored.result,
                &record.image,
                record.uploaded_at,
                &record.uploader_key_id,
            )),
            summary: Some(scan_summary_to_proto(record)),
        }))
    }

    async fn list_scan_results(
        &self,
        request: Request<pb::ListScanResultsRequest>,
    ) -> Result<Response<pb::ListScanResultsResponse>, Status> {
        let tenant = Caller::tenant_of(&request)?;
        let req = request.get_ref();
        let query = ScanQuery {
            page: page(req.page.clone()),
            digest: Some(req.digest.clone()).filter(|d| !d.is_empty()),
            scan_type: scan_type_from("scan_type", req.scan_type, false)?,
        };
        let listed = self.store.list_scans(tenant, &query).await.or_status()?;
        Ok(Response::new(pb::ListScanResultsResponse {
            results: listed.items.iter().map(scan_summary_to_proto).collect(),
            page: page_response(listed.next_token),
        }))
    }

    async fn get_scan_summaries(
        &self,
        request: Request<pb::GetScanSummariesRequest>,
    ) -> Result<Response<pb::GetScanSummariesResponse>, Status> {
        let caller = Caller::of(&request)?;
        let req = request.get_ref();
        let tenant = caller.tenant_for(&req.tenant_id)?;
        let summaries = self.store.scan_summaries(tenant, &req.digests).await.or_status()?;
        Ok(Response::new(pb::GetScanSummariesResponse {
            digests: summaries
                .into_iter()
                .map(|d| pb::DigestScanSummaries {
                    digest: d.digest,
                    summaries: d.summaries.iter().map(scan_summary_to_proto).collect(),
                })
                .collect(),
        }))
    }
}
