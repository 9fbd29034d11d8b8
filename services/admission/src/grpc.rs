//! `AdmissionService` over gRPC: a thin adapter from the protobuf request and the caller
//! (already authenticated by the server's layer) to [`Admission::review`].

use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use portcullis_proto::admission::v1 as pa;
use portcullis_proto::admission::v1::admission_service_server::AdmissionService;
use portcullis_proto::common::v1 as pc;
use portcullis_server::{Caller, Principal, Role};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::Transport;
use crate::review::ReviewCaller;
use crate::{Admission, AdmissionError, ClusterSel};

/// Reviews of one stream judged at the same time, at most.
const STREAM_CONCURRENCY: usize = 64;

/// The gRPC service (cheap to clone).
#[derive(Debug, Clone)]
pub struct AdmissionGrpc {
    admission: Admission,
}

impl AdmissionGrpc {
    /// The service over `admission`.
    pub fn new(admission: Admission) -> AdmissionGrpc {
        AdmissionGrpc { admission }
    }
}

/// Who the caller may review for: a connector key its own cluster; the service credential
/// any cluster of the tenant it names.
pub fn review_caller(caller: &Caller) -> Result<ReviewCaller, AdmissionError> {
    match &caller.principal {
        Principal::Key(key) if key.role == Role::Connector => match &key.cluster_id {
            Some(cluster) => Ok(ReviewCaller {
                tenant: key.tenant_id.clone(),
                own_cluster: Some(cluster.clone()),
            }),
            None => Err(AdmissionError::PermissionDenied(
                "the connector key has no cluster".into(),
            )),
        },
        Principal::Service { tenant: Some(tenant) } => Ok(ReviewCaller {
            tenant: tenant.clone(),
            own_cluster: None,
        }),
        Principal::Service { tenant: None } => Err(AdmissionError::InvalidArgument(
            "x-portcullis-tenant: the service credential must name the tenant it acts for".into(),
        )),
        _ => Err(AdmissionError::PermissionDenied(
            "only connector keys and the service credential make admission reviews".into(),
        )),
    }
}

fn cluster_sel(r: Option<pc::ResourceRef>) -> Result<Option<ClusterSel>, AdmissionError> {
    match r.and_then(|r| r.r#ref) {
        None => Ok(None),
        Some(pc::resource_ref::Ref::Id(id)) if !id.trim().is_empty() => Ok(Some(ClusterSel::Id(id))),
        Some(pc::resource_ref::Ref::Name(name)) if !name.trim().is_empty() => Ok(Some(ClusterSel::Name(name))),
        Some(_) => Err(AdmissionError::InvalidArgument("cluster: an empty id or name".into())),
    }
}

impl AdmissionGrpc {
    async fn one(
        &self,
        caller: &ReviewCaller,
        request: pa::ReviewRequest,
    ) -> Result<pa::ReviewResponse, AdmissionError> {
        let cluster = cluster_sel(request.cluster)?;
        let out = self
            .admission
            .review(caller, cluster, &request.admission_review_json, Transport::Grpc)
            .await?;
        Ok(pa::ReviewResponse {
            request_id: request.request_id,
            admission_review_json: out.response_json.into(),
            decision: Some(out.decision),
            error: None,
        })
    }
}

type ReviewStreamOut = Pin<Box<dyn Stream<Item = Result<pa::ReviewResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AdmissionService for AdmissionGrpc {
    async fn review(&self, request: Request<pa::ReviewRequest>) -> Result<Response<pa::ReviewResponse>, Status> {
        let caller = review_caller(Caller::of(&request)?)?;
        let answer = self.one(&caller, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    type ReviewStreamStream = ReviewStreamOut;

    async fn review_stream(
        &self,
        request: Request<Streaming<pa::ReviewRequest>>,
    ) -> Result<Response<Self::ReviewStreamStream>, Status> {
        let caller = review_caller(Caller::of(&request)?)?;
        let incoming = request.into_inner();
        let (tx, rx) = mpsc::channel::<Result<pa::ReviewResponse, Status>>(STREAM_CONCURRENCY);
        let this = self.clone();
        tokio::spawn(async move {
            let results = incoming
                .map(|item| {
                    let (this, caller) = (this.clone(), caller.clone());
                    async move {
                        match item {
                            Ok(request) => {
                                let request_id = request.request_id.clone();
                                Ok(match this.one(&caller, request).await {
                                    Ok(answer) => answer,
                                    Err(e) => pa::ReviewResponse {
                                        request_id,
                                        admission_review_json: Default::default(),
                                        decision: None,
                                        error: Some(pc::ItemError {
                                            code: e.code() as u32,
                                            message: e.to_string(),
                                            field: String::new(),
                                        }),
                                    },
                                })
                            }
                            // A broken stream ends it, with the transport's error.
                            Err(status) => Err(status),
                        }
                    }
                })
                .buffer_unordered(STREAM_CONCURRENCY);
            tokio::pin!(results);
            while let Some(result) = results.next().await {
                let end = result.is_err();
                if tx.send(result).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
