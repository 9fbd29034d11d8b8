//! The stack, reviews and AdmissionReview documents shared by the scenarios.

use bytes::Bytes;
use portcullis_admission::testing::{StackOptions, TestStack};
use portcullis_policy_store::testing::authed;
use portcullis_proto::admission::v1 as pa;
use portcullis_proto::admission::v1::admission_service_client::AdmissionServiceClient;
use portcullis_proto::common::v1 as pc;
use portcullis_server::Mode;
use serde_json::{Value, json};
use tonic::Status;
use tonic::transport::Channel;

use crate::support::{Api, by_name};

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

// ---------------------------------------------------------------------------------------
// Documents

/// A policy document: `rules` as the default definition, plus `extra` top-level fields.
pub fn policy(name: &str, rules: Value) -> Value {
    json!({"name": name, "default": {"rules": rules}})
}

pub fn rule(rule_type: &str, key: &str, value: &str, action: &str) -> Value {
    json!({"type": rule_type, "action": action, "statement": {"properties": [{"key": key, "value": value}]}})
}

pub fn host_network(action: &str) -> Value {
    rule("podSecurityContext", "hostNetwork", "true", action)
}

pub fn privileged(action: &str) -> Value {
    rule("containerSecurityContext", "privileged", "true", action)
}

/// A container.
pub fn container(name: &str, image: &str, privileged: bool) -> Value {
    let mut c = json!({"name": name, "image": image});
    if privileged {
        c["securityContext"] = json!({"privileged": true});
    }
    c
}

/// A pod spec with these containers.
pub fn pod_spec(host_network: bool, containers: Vec<Value>) -> Value {
    let mut spec = json!({"containers": containers});
    if host_network {
        spec["hostNetwork"] = json!(true);
    }
    spec
}

/// A pod object.
pub fn pod(name: &str, namespace: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}, "spec": spec})
}

fn next_uid() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("00000000-0000-4000-8000-{n:012}")
}

/// An AdmissionReview v1 of `operation` on an object of (group, version, kind), resource.
pub fn review(operation: &str, gvk: (&str, &str, &str), resource: &str, namespace: &str, name: &str) -> Value {
    let (group, version, kind) = gvk;
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": next_uid(),
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "name": name,
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "alice"},
            "dryRun": false
        }
    })
}

/// CREATE of a pod.
pub fn create_pod(object: Value) -> Value {
    let name = object["metadata"]["name"].as_str().unwrap().to_owned();
    let ns = object["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
    let mut r = review("CREATE", ("", "v1", "Pod"), "pods", &ns, &name);
    r["request"]["object"] = object;
    r
}

/// The request uid of a review.
pub fn uid_of(review: &Value) -> String {
    review["request"]["uid"].as_str().unwrap().to_owned()
}
