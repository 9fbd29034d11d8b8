//! One trace across processes: a connector's review reaches admission with a W3C
//! `traceparent`; admission's review span continues the connector's trace, its calls to the
//! policy store (key introspection, the effective policy, on a cache miss) continue it in
//! the store, and the decision event it publishes continues it on the bus. Checked at an
//! in-process OTLP collector: the parent/child links, not only that a header was sent.
//! (Its own test binary: telemetry is installed once per process.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use bytes::Bytes;
use portcullis_admission::testing::{StackOptions, TestStack};
use portcullis_bus::TopicFilter;
use portcullis_kit::follow::{FollowHandler, FollowedEvent, Follower, Gap};
use portcullis_policy_store::testing::authed;
use portcullis_proto::admission::v1 as pa;
use portcullis_proto::admission::v1::admission_service_client::AdmissionServiceClient;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::cluster_service_client::ClusterServiceClient;
use portcullis_proto::policystore::v1::policy_service_client::PolicyServiceClient;
use portcullis_server::Mode;
use portcullis_telemetry::testing::{CollectedSpan, OtlpCollector};
use portcullis_telemetry::{TelemetryConfig, init};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;

/// The connector's trace and span.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

struct Decisions(mpsc::UnboundedSender<String>);

impl FollowHandler for Decisions {
    fn event(&mut self, event: &FollowedEvent) {
        let _ = self.0.send(event.envelope.event_id.clone());
    }
    fn gap(&mut self, _gap: &Gap) {}
}

fn review_document() -> serde_json::Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "web",
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "dryRun": false,
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"hostNetwork": true, "containers": [{"name": "app", "image": "nginx:1.27"}]}
            }
        }
    })
}

fn describe(spans: &[CollectedSpan]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} {:?} trace={} span={} parent={}\n",
                s.name,
                s.attribute("rpc.method").or(s.attribute("messaging.destination.name")),
                s.trace_id,
                s.span_id,
                s.parent_span_id
            )
        })
        .collect()
}

fn method_is(span: &CollectedSpan, kind: &str, method: &str) -> bool {
    span.name == kind && span.attribute("rpc.method").is_some_and(|m| m.ends_with(method))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_connector_through_admission_to_the_store_and_the_bus() {
    let collector = OtlpCollector::start().await.unwrap();
    let mut config = TelemetryConfig::new("portcullis-trace-test");
    config.otlp_endpoint = Some(collector.endpoint().to_owned());
    config.log_filter = "info".to_owned();
    let guard = init(config).unwrap();

    let stack = TestStack::start(StackOptions::new(Mode::Embedded)).await.unwrap();
    let store = tonic::transport::Endpoint::from_shared(stack.store.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let admin = stack.store.admin_key.clone();
    let policy = json!({"name": "p", "default": {"rules": [{
        "type": "podSecurityContext", "action": "block",
        "statement": {"properties": [{"key": "hostNetwork", "value": "true"}]}
    }]}});
    let created = PolicyServiceClient::new(store.clone())
        .create_policy(authed(
            &admin,
            pb::CreatePolicyRequest {
                document_json: policy.to_string(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    let registered = ClusterServiceClient::new(store)
        .register_cluster(authed(
            &admin,
            pb::RegisterClusterRequest {
                name: "c1".to_owned(),
                policy: Some(pc::ResourceRef {
                    r#ref: Some(pc::resource_ref::Ref::Id(created.id)),
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();

    // The decision events, followed from now.
    let start = stack.store.bus.last_sequence().await.unwrap();
    let (tx, mut decisions) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let follower = Follower::new(
        stack.store.bus.clone(),
        TopicFilter::topics([portcullis_domain::Topic::AdmissionDecision.as_str()]),
    )
    .start_after(start);
    let following = tokio::spawn(follower.run(Decisions(tx), stop.clone()));

    // The connector's review, in its trace.
    let mut request = authed(
        &registered.connector_key,
        pa::ReviewRequest {
            cluster: None,
            admission_review_json: Bytes::from(review_document().to_string()),
            request_id: "r".into(),
        },
    );
    request.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(format!("00-{TRACE_ID}-{CALLER_SPAN}-01")).unwrap(),
    );
    let answer = AdmissionServiceClient::new(stack.channel(0).await.unwrap())
        .review(request)
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.decision.unwrap().allowed, "hostNetwork is blocked");
    tokio::time::timeout(Duration::from_secs(30), decisions.recv())
        .await
        .expect("the decision event is published")
        .unwrap();
    stop.cancel();
    following.await.unwrap();

    // Flush everything recorded so far to the collector.
    tokio::task::spawn_blocking(move || guard.shutdown())
        .await
        .unwrap()
        .unwrap();
    let spans = collector
        .wait_for_spans(Duration::from_secs(30), |spans| {
            let in_trace =
                |pred: &dyn Fn(&CollectedSpan) -> bool| spans.iter().any(|s| s.trace_id == TRACE_ID && pred(s));
            in_trace(&|s| method_is(s, "grpc.server", "/Review"))
                && in_trace(&|s| s.name == "bus.event")
                && in_trace(&|s| {
                    method_is(s, "grpc.server", "/Introspect") || method_is(s, "grpc.server", "/GetEffectivePolicy")
                })
        })
        .await
        .unwrap_or_else(|spans| panic!("spans received:\n{}", describe(&spans)));
    let trace: Vec<&CollectedSpan> = spans.iter().filter(|s| s.trace_id == TRACE_ID).collect();
    let context = describe(&spans);

    // (a) Admission's span of the review is the child of the connector's span.
    let review = trace
        .iter()
        .find(|s| method_is(s, "grpc.server", "AdmissionService/Review"))
        .unwrap_or_else(|| panic!("no review span:\n{context}"));
    assert_eq!(review.parent_span_id, CALLER_SPAN, "{context}");

    // Every span of the trace descends from the review span.
    let descends_from_review = |span: &CollectedSpan| {
        let mut parent = span.parent_span_id.clone();
        for _ in 0..32 {
            if parent == review.span_id {
                return true;
            }
            match trace.iter().find(|s| s.span_id == parent) {
                Some(s) => parent = s.parent_span_id.clone(),
                None => return false,
            }
        }
        false
    };

    // (b) The store's span of each upstream call is the child of admission's client span of
    // that call, which runs inside the review.
    let store_calls: Vec<&&CollectedSpan> = trace
        .iter()
        .filter(|s| {
            s.span_id != review.span_id
                && (method_is(s, "grpc.server", "/Introspect") || method_is(s, "grpc.server", "/GetEffectivePolicy"))
        })
        .collect();
    assert!(!store_calls.is_empty(), "{context}");
    for call in store_calls {
        let client = trace
            .iter()
            .find(|s| s.span_id == call.parent_span_id)
            .unwrap_or_else(|| panic!("no parent of {call:?}:\n{context}"));
        assert_eq!(client.name, "grpc.client", "{context}");
        assert_eq!(
            client.attribute("rpc.method"),
            call.attribute("rpc.method"),
            "{context}"
        );
        assert!(descends_from_review(client), "{context}");
    }

    // (c) The decision event is handled in the same trace, under the review.
    let handled = trace
        .iter()
        .find(|s| s.name == "bus.event")
        .unwrap_or_else(|| panic!("no event span:\n{context}"));
    assert_eq!(
        handled.attribute("messaging.destination.name"),
        Some(portcullis_domain::Topic::AdmissionDecision.as_str())
    );
    assert!(descends_from_review(handled), "{context}");
}
