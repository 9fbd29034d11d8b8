//! The admission stack ([`Env`]: a store, replicas, one policy assigned to one cluster) and
//! review calls shared by the suites; the documents are the test kit's.

use bytes::Bytes;
use portcullis_admission::testing::{StackOptions, TestStack};
use portcullis_policy_store::testing::authed;
use portcullis_proto::admission::v1 as pa;
use portcullis_proto::admission::v1::admission_service_client::AdmissionServiceClient;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::scan_result_service_client::ScanResultServiceClient;
use portcullis_server::Mode;
use serde_json::Value;
use tonic::Status;
use tonic::transport::Channel;

use crate::store::{Api, by_name};

/// A stack with one policy (document `policy`) assigned to one registered cluster.
pub struct Env {
    pub stack: TestStack,
    /// The tenant admin's clients.
    pub admin: Api,
    pub policy_id: String,
    pub cluster_id: String,
    pub connector_key: String,
    pub connector_key_id: String,
}

impl Env {
    pub async fn start(options: StackOptions, policy: &str) -> Env {
        let stack = TestStack::start(options).await.unwrap_or_else(|e| panic!("{e}"));
        let mut admin = Api::new(&stack.store, &stack.store.admin_key).await;
        let created = admin.create_policy(policy).await.unwrap();
        let registered = admin.register_cluster("c1", by_name(&created.name)).await.unwrap();
        Env {
            stack,
            admin,
            policy_id: created.id,
            cluster_id: registered.cluster.unwrap().id,
            connector_key: registered.connector_key,
            connector_key_id: registered.connector_key_id,
        }
    }

    pub async fn one(mode: Mode, policy: &str) -> Env {
        Env::start(StackOptions::new(mode), policy).await
    }

    /// A client of replica `i`.
    pub async fn client(&self, i: usize) -> AdmissionServiceClient<Channel> {
        AdmissionServiceClient::new(self.stack.channel(i).await.unwrap())
    }

    /// Reviews `review` on replica 0 with the connector key, for its own cluster.
    pub async fn review(&self, review: &Value) -> Result<Answer, Status> {
        let mut client = self.client(0).await;
        review_raw(&mut client, &self.connector_key, None, review.to_string().into_bytes()).await
    }

    /// Uploads, as the tenant admin, a vulnerability scan of `digest` (scanned at
    /// `scanned_at`, RFC 3339) with one finding of `severity`.
    pub async fn upload_scan(&self, digest: &str, severity: &str, scanned_at: &str) {
        let mut scans = ScanResultServiceClient::new(self.stack.store_channel().await.unwrap());
        let native = portcullis_test_kit::docs::vulnerability_scan(digest, severity, scanned_at);
        scans
            .upload_scan_result(authed(
                &self.stack.store.admin_key,
                pb::UploadScanResultRequest {
                    digest: digest.into(),
                    report: Some(pb::upload_scan_result_request::Report::NativeJson(
                        native.to_string().into_bytes().into(),
                    )),
                    ..Default::default()
                },
            ))
            .await
            .unwrap();
    }

    /// Reviews `review`, which must be answered; panics on an error.
    pub async fn judge(&self, review: &Value) -> Answer {
        self.review(review)
            .await
            .unwrap_or_else(|s| panic!("review failed: {s:?}"))
    }
}

/// An answer: the response AdmissionReview (parsed) and the structured decision.
#[derive(Debug)]
pub struct Answer {
    pub json: Value,
    pub decision: pa::Decision,
}

impl Answer {
    pub fn allowed(&self) -> bool {
        let allowed = self.json["response"]["allowed"]
            .as_bool()
            .expect("response.allowed is a bool");
        assert_eq!(allowed, self.decision.allowed, "JSON and decision agree");
        allowed
    }

    pub fn uid(&self) -> &str {
        self.json["response"]["uid"].as_str().expect("response.uid")
    }

    pub fn message(&self) -> &str {
        self.json["response"]["status"]["message"].as_str().unwrap_or("")
    }

    pub fn warnings(&self) -> Vec<String> {
        self.json["response"]["warnings"]
            .as_array()
            .map(|a| a.iter().map(|w| w.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    }
}

/// One review call with `key` as bearer.
pub async fn review_raw(
    client: &mut AdmissionServiceClient<Channel>,
    key: &str,
    cluster: Option<pc::ResourceRef>,
    body: Vec<u8>,
) -> Result<Answer, Status> {
    let request = authed(
        key,
        pa::ReviewRequest {
            cluster,
            admission_review_json: Bytes::from(body),
            request_id: "r".into(),
        },
    );
    let out = client.review(request).await?.into_inner();
    let json: Value = serde_json::from_slice(&out.admission_review_json).expect("the response is JSON");
    Ok(Answer {
        json,
        decision: out.decision.expect("a decision"),
    })
}

pub use portcullis_test_kit::docs::{
    container, create_pod, host_network, next_uid, pod, pod_spec, policy, privileged, review, rule, uid_of,
};
