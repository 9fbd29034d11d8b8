//! `noop-server`: the baseline of the admission benchmark. An `AdmissionService` whose
//! Review judges nothing: it answers a response built once at start (a small response
//! AdmissionReview and a decision of the size a real one has for the benchmark review),
//! with the request's `request_id` echoed as `request_id` and as the decision's uid (the
//! load generator sends the review's uid there, so nothing is parsed).
//!
//! It runs on the same stack as the real service: [`GrpcServer`] (health, reflection,
//! per-call deadline, the authentication layer and the permission table) on a
//! multi-thread tokio runtime. Its [`Authenticator`] answers the one key it is given as a
//! connector key of a fixed tenant and cluster, by a SHA-256 lookup in a map, as the
//! services' introspection caches answer a hit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use portcullis_proto::admission::v1::admission_service_server::{AdmissionService, AdmissionServiceServer};
use portcullis_proto::admission::v1::{Decision, DecisionBasis, ReviewRequest, ReviewResponse, StageTimings};
use portcullis_proto::common::v1::{Action, DigestSource, ImageDigest, OwnerRef, Violation, WorkloadRef};
use portcullis_server::{
    Access, AuthState, Authenticator, BoundServer, BoxFuture, Caller, Credentials, GrpcServer, Mode, PermissionTable,
    Role, ServerConfig, ServerError, TenantKey,
};
use sha2::{Digest, Sha256};
use tonic::codegen::tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// The tenant of the no-op server's key.
pub const NOOP_TENANT: &str = "loadgen";
/// The cluster of the no-op server's key.
pub const NOOP_CLUSTER: &str = "0b5e1c2a-7d4f-4e8a-9c3b-6f2d1e0a9b8c";
/// The key `noop-server` accepts when given none.
pub const DEFAULT_NOOP_KEY: &str = "pck_loadgen_noop_connector_key_0000";

/// The admission methods and their access class, as the admission service registers them
/// (added to the standard table: a later row for a method replaces an earlier one).
pub const ADMISSION_ROWS: &[(&str, Access)] = &[
    ("AdmissionService/Review", Access::ClusterReport),
    ("AdmissionService/ReviewStream", Access::ClusterReport),
];

/// Accepts one key, as a connector key of [`NOOP_TENANT`] and [`NOOP_CLUSTER`].
#[derive(Debug)]
pub struct OneKeyAuthenticator {
    keys: Mutex<HashMap<[u8; 32], TenantKey>>,
}

impl OneKeyAuthenticator {
    /// Accepts `key`.
    pub fn new(key: &str) -> OneKeyAuthenticator {
        let answer = TenantKey {
            tenant_id: NOOP_TENANT.to_owned(),
            role: Role::Connector,
            cluster_id: Some(NOOP_CLUSTER.to_owned()),
            key_id: "loadgen-noop-key".to_owned(),
            expires_at: None,
        };
        OneKeyAuthenticator {
            keys: Mutex::new(HashMap::from([(Sha256::digest(key.as_bytes()).into(), answer)])),
        }
    }
}

impl Authenticator for OneKeyAuthenticator {
    fn authenticate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<TenantKey, Status>> {
        Box::pin(async move {
            let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
            let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
            keys.get(&digest)
                .cloned()
                .ok_or_else(|| Status::unauthenticated("unknown API key"))
        })
    }
}

/// The no-op admission service.
#[derive(Debug, Clone)]
pub struct NoopAdmission {
    response: Arc<ReviewResponse>,
}

impl Default for NoopAdmission {
    fn default() -> NoopAdmission {
        NoopAdmission::new()
    }
}

/// A response AdmissionReview as the real service returns for the benchmark review: the
/// uid (here [`RESPONSE_UID`], of the same length), allowed, the log-only violations as
/// warnings. The no-op webhook answers it too, with the request's uid in its place.
pub const RESPONSE_REVIEW: &str = concat!(
    r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"#,
    r#""uid":"00000000-0000-4000-8000-000000000000","allowed":true,"#,
    r#""status":{"code":200,"message":"- imagePath violates rule with properties "#,
    r#"{ starts-with:registry.example.com/mirror/ } in container(s) \"envoy\" (log)."},"#,
    r#""warnings":["imagePath violates rule with properties { starts-with:registry.example.com/mirror/ } "#,
    r#"in container(s) \"envoy\" (log)."]}}"#
);

/// The uid in [`RESPONSE_REVIEW`].
pub const RESPONSE_UID: &str = "00000000-0000-4000-8000-000000000000";

const IMAGES: &[&str] = &[
    "registry.example.com/payments/api-migrations:4.12.3@sha256:9b2f4c6e8a0d1f3b5c7e9a1d3f5b7c9e1a3d5f7b9c1e3a5d7f9b1c3e5a7d9f1b",
    "registry.example.com/payments/api:4.12.3@sha256:3e7a9c1b5d7f9e1a3c5b7d9f1e3a5c7b9d1f3e5a7c9b1d3f5e7a9c1b3d5f7e9a",
    "registry.example.com/mirror/envoyproxy/envoy:v1.31.2@sha256:7c1e3a5d9f1b3e5a7c9d1f3b5e7a9c1d3f5b7e9a1c3d5f7b9e1a3c5d7f9b1e3a",
    "registry.example.com/platform/fluent-bit:3.1.9@sha256:5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f1a3c5e7b9d1f3a5c7e9b1d3f5a7c",
];

impl NoopAdmission {
    /// The service, with its response built.
    pub fn new() -> NoopAdmission {
        // What the engine says of the benchmark review under data/policy-15-rules.yaml.
        let message = "imagePath violates rule with properties { starts-with:registry.example.com/mirror/ } \
                       in container(s) \"envoy\" (log).";
        let decision = Decision {
            uid: String::new(),
            allowed: true,
            basis: DecisionBasis::Evaluated as i32,
            cluster_id: NOOP_CLUSTER.to_owned(),
            policy_id: "5f0c8e2b-3a9d-4c71-8e6f-2b1d0a9c8e7f".to_owned(),
            policy_revision: 3,
            definition: "default".to_owned(),
            digests: IMAGES
                .iter()
                .map(|image| ImageDigest {
                    image: (*image).to_owned(),
                    digest: image.rsplit('@').next().unwrap_or_default().to_owned(),
                    source: DigestSource::Reference as i32,
                })
                .collect(),
            violations: vec![Violation {
                rule_type: "imagePath".to_owned(),
                properties: HashMap::from([("starts-with".to_owned(), "registry.example.com/mirror/".to_owned())]),
                action: Action::Log as i32,
                mitigation: 0,
                containers: vec!["envoy".to_owned()],
                pod: String::new(),
                message: message.to_owned(),
                checks: Vec::new(),
            }],
            warnings: vec![message.to_owned()],
            degraded: Vec::new(),
            not_judged: Vec::new(),
            signatures: Vec::new(),
            timings: Some(StageTimings {
                parse_us: 21,
                policy_us: 1,
                digest_resolution_us: 0,
                scan_lookup_us: 2,
                signature_us: 0,
                evaluate_us: 9,
                respond_us: 3,
                total_us: 38,
            }),
            decided_at: Some(prost_types::Timestamp {
                seconds: 1_795_000_000,
                nanos: 123_456_789,
            }),
            operation: "CREATE".to_owned(),
            subresource: String::new(),
            object: Some(WorkloadRef {
                group: "apps".to_owned(),
                version: "v1".to_owned(),
                kind: "Deployment".to_owned(),
                namespace: "payments".to_owned(),
                name: "payments-api".to_owned(),
                uid: "c2d9e4b1-7a3f-4c8e-9b6d-1e2f3a4b5c6d".to_owned(),
            }),
            owner: Some(OwnerRef::default()),
            user: "system:serviceaccount:argocd:argocd-application-controller".to_owned(),
        };
        NoopAdmission {
            response: Arc::new(ReviewResponse {
                request_id: String::new(),
                admission_review_json: RESPONSE_REVIEW.as_bytes().to_vec().into(),
                decision: Some(decision),
                error: None,
            }),
        }
    }

    /// The fixed response, with `request_id` echoed and as the decision's uid.
    pub fn answer(&self, request_id: String) -> ReviewResponse {
        let mut response = ReviewResponse::clone(&self.response);
        if let Some(decision) = response.decision.as_mut() {
            decision.uid.clone_from(&request_id);
        }
        response.request_id = request_id;
        response
    }
}

/// The stream type of ReviewStream.
pub type ResponseStream = Pin<Box<dyn Stream<Item = Result<ReviewResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AdmissionService for NoopAdmission {
    async fn review(&self, request: Request<ReviewRequest>) -> Result<Response<ReviewResponse>, Status> {
        // As the real handler: the caller the layer authenticated.
        Caller::of(&request)?;
        Ok(Response::new(self.answer(request.into_inner().request_id)))
    }

    type ReviewStreamStream = ResponseStream;

    async fn review_stream(
        &self,
        request: Request<Streaming<ReviewRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        Caller::of(&request)?;
        let service = self.clone();
        let answers = request
            .into_inner()
            .map(move |item| item.map(|r| service.answer(r.request_id)));
        Ok(Response::new(Box::pin(answers)))
    }
}

/// The permission table: the standard one with the admission rows.
pub fn permission_table() -> PermissionTable {
    PermissionTable::standard().with("/portcullis.admission.v1.", ADMISSION_ROWS)
}

/// Binds the no-op server on `listen` (port 0: any free port), accepting `key`.
pub async fn bind(listen: SocketAddr, key: &str) -> Result<BoundServer, ServerError> {
    let auth = AuthState {
        credentials: Credentials::default(),
        authenticator: Arc::new(OneKeyAuthenticator::new(key)),
        table: permission_table(),
        rate_limit: None,
    };
    let mut server = GrpcServer::new(ServerConfig::new(listen, Mode::Embedded), auth);
    server.add_service(AdmissionServiceServer::new(NoopAdmission::new()));
    server.bind().await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use prost::Message as _;

    use super::*;

    #[test]
    fn answers_echo_the_request_id_as_uid() {
        let service = NoopAdmission::new();
        let answer = service.answer("abc".to_owned());
        assert_eq!(answer.request_id, "abc");
        let decision = answer.decision.unwrap();
        assert_eq!(decision.uid, "abc");
        assert!(decision.allowed);
        let review: serde_json::Value = serde_json::from_slice(&answer.admission_review_json).unwrap();
        assert_eq!(review["response"]["allowed"], true);
    }

    #[test]
    fn the_answer_is_the_size_of_a_real_one() {
        let answer = NoopAdmission::new().answer("7f3c2a1e-5b9d-4e8f-a6c4-2d1b0e9f8a73".to_owned());
        let size = answer.encoded_len();
        assert!((1000..4000).contains(&size), "{size} bytes");
    }

    #[tokio::test]
    async fn the_key_is_a_connector_key_and_others_are_refused() {
        let auth = OneKeyAuthenticator::new("right-key-0123456789");
        let key = auth.authenticate("right-key-0123456789").await.unwrap();
        assert_eq!(key.role, Role::Connector);
        assert_eq!(key.cluster_id.as_deref(), Some(NOOP_CLUSTER));
        let refused = auth.authenticate("wrong-key-0123456789").await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let table = permission_table();
        assert_eq!(
            table.access("/portcullis.admission.v1.AdmissionService/Review"),
            Some(Access::ClusterReport)
        );
    }
}
