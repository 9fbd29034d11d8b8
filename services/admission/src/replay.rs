//! What decision events carry for replay (issue 20, point 5): decisions of a policy with
//! `xdrEnabled: true` carry the engine's lean projection of what was reviewed
//! ([`ReviewedPod`](portcullis_engine::projection::ReviewedPod), as JSON in
//! `AdmissionDecision.reviewed_pod_json`), so that the telemetry service can judge them again
//! with a draft policy.
//!
//! - Blocked and log-only decisions the engine evaluated always carry it.
//! - Plain allows carry it once per workload and pod template per [`SEEN_TTL`]: [`SeenAllows`]
//!   remembers, in memory, which (tenant, cluster, workload, template) it recorded and when.
//!   The map is per replica and bounded ([`DEFAULT_MAX_SEEN`] entries): a restarted replica,
//!   another replica, or a map that filled up (it then forgets everything) may record an
//!   allow again; storage is idempotent per event, not per workload, so that costs a row, not
//!   a wrong answer.
//! - A decision not evaluated (excluded namespace, kind not judged, DELETE, unchanged pod
//!   spec, no policy) carries none: no draft could judge it differently at admission.
//!
//! The projection is built only when it is to be published; an allow already seen costs one
//! fingerprint of the pod spec (written into a hasher, no JSON built) and one map lookup.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a recorded allow keeps later allows of the same workload and template from
/// being recorded.
pub const SEEN_TTL: Duration = Duration::from_secs(3600);
/// Default bound of the seen map (about 1.6 MB).
pub const DEFAULT_MAX_SEEN: usize = 100_000;

/// The allows recorded lately, by (tenant, cluster, workload and template) key.
#[derive(Debug)]
pub struct SeenAllows {
    ttl: Duration,
    max: usize,
    seen: Mutex<HashMap<u64, Instant>>,
}

impl Default for SeenAllows {
    fn default() -> Self {
        SeenAllows::new(SEEN_TTL, DEFAULT_MAX_SEEN)
    }
}

impl SeenAllows {
    /// A map remembering keys for `ttl`, holding at most `max` (at least 1).
    pub fn new(ttl: Duration, max: usize) -> SeenAllows {
        SeenAllows {
            ttl,
            max: max.max(1),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The key of a workload's template (`ReviewedPod::seen_key`) in a tenant's cluster.
    pub fn key(tenant: &str, cluster_id: &str, workload_key: u64) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        (tenant, cluster_id, workload_key).hash(&mut h);
        h.finish()
    }

    /// Whether `key` was not recorded within the TTL before `now`; if so it is recorded now.
    pub fn first_in_window(&self, key: u64, now: Instant) -> bool {
        // Plain timestamps: a panic elsewhere mid-update leaves nothing inconsistent.
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = seen.get(&key)
            && now.saturating_duration_since(*at) < self.ttl
        {
            return false;
        }
        if seen.len() >= self.max && !seen.contains_key(&key) {
            let ttl = self.ttl;
            seen.retain(|_, at| now.saturating_duration_since(*at) < ttl);
            if seen.len() >= self.max {
                // Full of live entries: forget them all rather than grow (module docs).
                seen.clear();
            }
        }
        seen.insert(key, now);
        true
    }

    /// Keys remembered (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn a_key_is_first_once_per_ttl() {
        let seen = SeenAllows::new(Duration::from_secs(3600), 10);
        let t0 = Instant::now();
        assert!(seen.first_in_window(1, t0));
        assert!(!seen.first_in_window(1, t0 + Duration::from_secs(60)));
        assert!(!seen.first_in_window(1, t0 + Duration::from_secs(3599)));
        assert!(seen.first_in_window(2, t0), "another workload or template");
        assert!(seen.first_in_window(1, t0 + Duration::from_secs(3600)), "an hour later");
        assert!(!seen.first_in_window(1, t0 + Duration::from_secs(3601)));
    }

    #[test]
    fn the_map_stays_bounded() {
        let seen = SeenAllows::new(Duration::from_secs(3600), 3);
        let t0 = Instant::now();
        for k in 0..3 {
            assert!(seen.first_in_window(k, t0));
        }
        // Full of live entries: everything is forgotten, the new key kept.
        assert!(seen.first_in_window(99, t0));
        assert_eq!(seen.len(), 1);
        assert!(seen.first_in_window(0, t0), "forgotten keys record again");
        // Expired entries are swept first; live ones stay.
        let later = t0 + Duration::from_secs(7200);
        assert!(seen.first_in_window(5, later));
        assert_eq!(seen.len(), 3);
        assert!(seen.first_in_window(6, later));
        assert_eq!(seen.len(), 2, "99 and 0 expired and were swept, 5 kept");
        assert!(!seen.first_in_window(5, later));
    }

    #[test]
    fn keys_differ_per_tenant_and_cluster() {
        assert_ne!(SeenAllows::key("t1", "c1", 5), SeenAllows::key("t2", "c1", 5));
        assert_ne!(SeenAllows::key("t1", "c1", 5), SeenAllows::key("t1", "c2", 5));
        assert_eq!(SeenAllows::key("t1", "c1", 5), SeenAllows::key("t1", "c1", 5));
    }
}

#[cfg(test)]
mod review_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use std::collections::HashMap;
    use std::sync::Arc;

    use portcullis_bus::{Bus, BusConfig, StartFrom, TopicFilter};
    use portcullis_engine::projection::ReviewedPod;
    use portcullis_proto::common::v1 as pc;
    use portcullis_proto::events::v1::{AdmissionDecision, EventEnvelope, event_envelope};
    use portcullis_proto::policystore::v1 as pb;
    use prost::Message;
    use tonic::Status;

    use crate::metrics::Transport;
    use crate::policies::PolicySource;
    use crate::{Admission, AdmissionOptions, BoxFuture, ReviewCaller, Upstream};
    use crate::{ClusterSel, UpstreamTimeouts};

    /// The store's answer: cluster `xdr` has an `xdrEnabled` policy, cluster `quiet` the same
    /// rules with `xdrEnabled: false`. Privileged containers block, host networking logs.
    struct Source;

    impl PolicySource for Source {
        fn effective_policy<'a>(
            &'a self,
            _tenant: &'a str,
            cluster: &'a ClusterSel,
        ) -> BoxFuture<'a, Result<pb::GetEffectivePolicyResponse, Status>> {
            Box::pin(async move {
                let ClusterSel::Id(id) = cluster else {
                    return Err(Status::not_found("by name"));
                };
                let document = serde_json::json!({
                    "name": "p",
                    "xdrEnabled": id == "xdr",
                    "default": {"rules": [
                        {"type": "containerSecurityContext", "action": "block",
                         "statement": {"properties": [{"key": "privileged", "value": "true"}]}},
                        {"type": "podSecurityContext", "action": "log",
                         "statement": {"properties": [{"key": "hostNetwork", "value": "true"}]}}
                    ]}
                });
                Ok(pb::GetEffectivePolicyResponse {
                    cluster_id: id.clone(),
                    cluster_name: id.clone(),
                    policy: Some(pb::Policy {
                        // Compiled policies are shared by id and revision: one each.
                        id: format!("pol-{id}"),
                        name: "p".into(),
                        revision: 1,
                        document_json: document.to_string(),
                        ..Default::default()
                    }),
                    settings: Some(pb::ClusterSettings {
                        failure_mode: pc::FailureMode::FailOpen as i32,
                        ..Default::default()
                    }),
                    cluster_generation: 1,
                })
            })
        }
    }

    /// A Deployment review.
    fn review(uid: &str, name: &str, image: &str, privileged: bool, host_network: bool) -> Vec<u8> {
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": uid, "operation": "CREATE", "namespace": "apps",
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "object": {"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": name, "namespace": "apps"},
                    "spec": {"template": {"metadata": {"labels": {"app": name}},
                        "spec": {"hostNetwork": host_network, "containers": [
                            {"name": "app", "image": image, "securityContext": {"privileged": privileged}}
                        ]}}}}
            }
        })
        .to_string()
        .into_bytes()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn xdr_decisions_carry_the_projection_blocks_and_logs_always_allows_once_per_template() {
        let bus = Bus::memory(BusConfig::embedded()).unwrap();
        let filter = TopicFilter::topics([crate::decision_events::TOPIC]).for_tenant("t1");
        let mut events = bus.subscribe_broadcast(&filter, StartFrom::New).await.unwrap();
        let upstream = Upstream::new("http://127.0.0.1:9", None, "token", &UpstreamTimeouts::default(), true).unwrap();
        let (admission, task) =
            Admission::with_policy_source(upstream, Arc::new(Source), bus.clone(), AdmissionOptions::default());
        let caller = ReviewCaller {
            tenant: "t1".into(),
            own_cluster: None,
        };
        let reviews: Vec<(&str, &str, Vec<u8>)> = vec![
            ("xdr", "block", review("block", "web", "nginx:1", true, false)),
            ("xdr", "allow-1", review("allow-1", "web", "nginx:1", false, false)),
            (
                "xdr",
                "allow-again",
                review("allow-again", "web", "nginx:1", false, false),
            ),
            (
                "xdr",
                "allow-new-template",
                review("allow-new-template", "web", "nginx:2", false, false),
            ),
            (
                "xdr",
                "allow-other-workload",
                review("allow-other-workload", "api", "nginx:1", false, false),
            ),
            ("xdr", "log", review("log", "web", "nginx:1", false, true)),
            ("xdr", "log-again", review("log-again", "web", "nginx:1", false, true)),
            (
                "quiet",
                "quiet-block",
                review("quiet-block", "web", "nginx:1", true, false),
            ),
            (
                "quiet",
                "quiet-allow",
                review("quiet-allow", "web", "nginx:1", false, false),
            ),
        ];
        for (cluster, uid, body) in &reviews {
            let out = admission
                .review(&caller, Some(ClusterSel::Id((*cluster).into())), body, Transport::Grpc)
                .await
                .unwrap();
            assert_eq!(out.decision.allowed, !uid.contains("block"), "{uid}");
        }
        let mut got: HashMap<String, AdmissionDecision> = HashMap::new();
        while got.len() < reviews.len() {
            let received = tokio::time::timeout(std::time::Duration::from_secs(60), events.next())
                .await
                .unwrap()
                .unwrap();
            let envelope = EventEnvelope::decode(received.event.payload.clone()).unwrap();
            let Some(event_envelope::Payload::AdmissionDecision(d)) = envelope.payload else {
                panic!("not a decision");
            };
            got.insert(d.summary.as_ref().unwrap().uid.clone(), d);
        }
        let carries = |uid: &str| !got[uid].reviewed_pod_json.is_empty();
        for uid in [
            "block",
            "allow-1",
            "allow-new-template",
            "allow-other-workload",
            "log",
            "log-again",
        ] {
            assert!(carries(uid), "{uid} carries the projection");
        }
        for uid in ["allow-again", "quiet-block", "quiet-allow"] {
            assert!(!carries(uid), "{uid} carries no projection");
        }
        // The projection is what was reviewed: the template's pod, labels and all.
        let pod = ReviewedPod::from_json(&got["block"].reviewed_pod_json).unwrap();
        assert_eq!(
            (pod.kind.as_str(), pod.name.as_str(), pod.namespace.as_str()),
            ("Deployment", "web", "apps")
        );
        assert_eq!(pod.labels.get("app").map(String::as_str), Some("web"));
        let spec = pod.spec.as_ref().unwrap();
        let sc = spec.containers[0].security_context.as_ref().unwrap();
        assert_eq!(
            (spec.containers[0].image.as_str(), sc.privileged),
            ("nginx:1", Some(true))
        );
        let log = ReviewedPod::from_json(&got["log"].reviewed_pod_json).unwrap();
        assert_eq!(log.spec.unwrap().host_network, Some(true));
        drop(admission);
        task.shutdown(std::time::Duration::from_secs(5)).await;
    }
}
