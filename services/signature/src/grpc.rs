//! `SignatureService` over gRPC, and the conversions between its messages and the domain's
//! (the NATS adapter uses the same ones).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use portcullis_kit::upstream::ClusterSel;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::signature::v1 as ps;
use portcullis_proto::signature::v1::signature_service_server::SignatureService;
use portcullis_server::{Caller, Principal, Role};
use tonic::{Request, Response, Status};

use crate::events::VerdictEvents;
use crate::verify::{AttestorVerdict, Resolution, SignatureFormat, Verdict, Verification, VerifyRequest};
use crate::{SignatureError, Verifier};

/// The service: the verifier and the verdict events (cheap to clone).
#[derive(Debug, Clone)]
pub struct Signature {
    verifier: Verifier,
    events: VerdictEvents,
    answered: Arc<Answered>,
}

/// What this replica answered, over gRPC and NATS alike.
#[derive(Debug, Default)]
pub struct Answered {
    verifications: AtomicU64,
    verify_errors: AtomicU64,
    resolutions: AtomicU64,
    resolve_errors: AtomicU64,
}

impl Answered {
    /// Verification requests answered with a verification (from the cache or not).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Verification requests answered with an error.
    pub fn verify_errors(&self) -> u64 {
        self.verify_errors.load(Ordering::Relaxed)
    }

    /// Digest resolutions answered with a digest.
    pub fn resolutions(&self) -> u64 {
        self.resolutions.load(Ordering::Relaxed)
    }

    /// Digest resolutions answered with an error.
    pub fn resolve_errors(&self) -> u64 {
        self.resolve_errors.load(Ordering::Relaxed)
    }
}

/// Counts `result` in `ok` or `failed`, and hands it on.
fn count<T, E>(result: Result<T, E>, ok: &AtomicU64, failed: &AtomicU64) -> Result<T, E> {
    match &result {
        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
    };
    result
}

impl Signature {
    /// The service over `verifier`, publishing verdicts to `events`.
    pub fn new(verifier: Verifier, events: VerdictEvents) -> Signature {
        Signature {
            verifier,
            events,
            answered: Arc::new(Answered::default()),
        }
    }

    /// What this replica answered.
    pub fn answered(&self) -> &Answered {
        &self.answered
    }

    /// Resolves `image` to a digest for `tenant` (the tenant already checked).
    pub async fn resolve(
        &self,
        tenant: &str,
        cluster: Option<&ClusterSel>,
        image: &str,
    ) -> Result<Resolution, SignatureError> {
        let answered = &self.answered;
        count(
            self.verifier.resolve(tenant, cluster, image).await,
            &answered.resolutions,
            &answered.resolve_errors,
        )
    }

    /// The verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The verdict events.
    pub fn events(&self) -> &VerdictEvents {
        &self.events
    }

    /// Verifies (the request's tenant already checked) and publishes the verdict.
    pub async fn verify(&self, request: &VerifyRequest) -> Result<Verification, SignatureError> {
        let answered = &self.answered;
        let verification = count(
            self.verifier.verify(request).await,
            &answered.verifications,
            &answered.verify_errors,
        )?;
        let cluster_id = match &request.cluster {
            Some(ClusterSel::Id(id)) => id.as_str(),
            _ => "",
        };
        self.events.verdict(&request.tenant, cluster_id, &verification);
        Ok(verification)
    }
}

/// The cluster a request names, if any.
pub fn cluster_sel(r: Option<pc::ResourceRef>) -> Result<Option<ClusterSel>, SignatureError> {
    match r.and_then(|r| r.r#ref) {
        None => Ok(None),
        Some(pc::resource_ref::Ref::Id(id)) if !id.trim().is_empty() => Ok(Some(ClusterSel::Id(id))),
        Some(pc::resource_ref::Ref::Name(name)) if !name.trim().is_empty() => Ok(Some(ClusterSel::Name(name))),
        Some(_) => Err(SignatureError::InvalidArgument("cluster: an empty id or name".into())),
    }
}

/// The tenant and cluster a gRPC caller acts for: a connector key only for its own cluster
/// (absent means it), people's keys and the service credential for any cluster of the tenant.
fn scope(
    caller: &Caller,
    tenant_id: &str,
    cluster: Option<pc::ResourceRef>,
) -> Result<(String, Option<ClusterSel>), Status> {
    let tenant = caller.tenant_for(tenant_id)?.to_owned();
    let cluster = cluster_sel(cluster)?;
    match &caller.principal {
        Principal::Key(key) if key.role == Role::Connector => {
            let own = key
                .cluster_id
                .clone()
                .ok_or_else(|| Status::permission_denied("the connector key has no cluster"))?;
            match cluster {
                None => Ok((tenant, Some(ClusterSel::Id(own)))),
                Some(ClusterSel::Id(id)) if id == own => Ok((tenant, Some(ClusterSel::Id(own)))),
                Some(_) => Err(Status::permission_denied(
                    "cluster: a connector key acts only for its own cluster (by id)",
                )),
            }
        }
        _ => Ok((tenant, cluster)),
    }
}

/// The domain request of a protobuf one, for `tenant`.
pub fn from_proto_request(tenant: String, cluster: Option<ClusterSel>, request: ps::VerifyRequest) -> VerifyRequest {
    VerifyRequest {
        tenant,
        cluster,
        image: request.image,
        attestors: request.attestors,
        digest: Some(request.digest).filter(|d| !d.is_empty()),
    }
}

/// One verdict as protobuf.
pub fn to_proto_verdict(verdict: &AttestorVerdict) -> ps::AttestorVerdict {
    ps::AttestorVerdict {
        attestor: verdict.attestor.clone(),
        verdict: match verdict.verdict {
            Verdict::Verified => ps::Verdict::Verified,
            Verdict::NotVerified => ps::Verdict::NotVerified,
            Verdict::Error => ps::Verdict::Error,
        } as i32,
        reason: verdict.reason.clone(),
        format: match verdict.format {
            None => ps::SignatureFormat::Unspecified,
            Some(SignatureFormat::LegacyTag) => ps::SignatureFormat::LegacyTag,
            Some(SignatureFormat::SigstoreBundle) => ps::SignatureFormat::SigstoreBundle,
        } as i32,
        tlog_verified: verdict.tlog_verified,
        attestor_revision: verdict.attestor_revision,
    }
}

/// A verification as protobuf.
pub fn to_proto_verification(verification: &Verification) -> ps::VerifyResponse {
    ps::VerifyResponse {
        image: verification.image.clone(),
        digest: verification.digest.clone().unwrap_or_default(),
        verdicts: verification.verdicts.iter().map(to_proto_verdict).collect(),
        cached: verification.cached,
        verified_at: Some(prost_types::Timestamp::from(verification.verified_at)),
        error: None,
    }
}

/// A resolution as protobuf.
pub fn to_proto_resolution(resolution: Resolution) -> ps::ResolveDigestResponse {
    ps::ResolveDigestResponse {
        image: resolution.image,
        digest: resolution.digest,
        media_type: resolution.media_type,
        cached: resolution.cached,
        resolved_at: Some(prost_types::Timestamp::from(resolution.resolved_at)),
        error: None,
    }
}

#[tonic::async_trait]
impl SignatureService for Signature {
    async fn verify(&self, request: Request<ps::VerifyRequest>) -> Result<Response<ps::VerifyResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let message = request.into_inner();
        let (tenant, cluster) = scope(&caller, &message.tenant_id, message.cluster.clone())?;
        let request = from_proto_request(tenant, cluster, message);
        let verification = Signature::verify(self, &request).await?;
        Ok(Response::new(to_proto_verification(&verification)))
    }

    async fn resolve_digest(
        &self,
        request: Request<ps::ResolveDigestRequest>,
    ) -> Result<Response<ps::ResolveDigestResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let message = request.into_inner();
        let (tenant, cluster) = scope(&caller, &message.tenant_id, message.cluster)?;
        let resolution = Signature::resolve(self, &tenant, cluster.as_ref(), &message.image).await?;
        Ok(Response::new(to_proto_resolution(resolution)))
    }
}
