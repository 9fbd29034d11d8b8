//! What the connectors send: the corpus's reviews, each cluster's running pods (the corpus's
//! pods, from an offset of its own), exec/attach CONNECTs into those pods, and Falco-shaped
//! runtime events about them.
//!
//! Runtime events are deterministic per `(cluster, sequence)` but for their time: event `s`
//! of cluster `c` names rule [`event_rule`]`(s)`, pod `s mod pods` of the cluster, and
//! carries `sim.cluster` = the cluster's name and `sim.seq` = `s` in its `output_fields` (and
//! `seq=s` in its `output`). A batch is built once and re-sent byte for byte on a retry, so
//! the telemetry service's content-derived event id makes a retry no double. Cluster `c`'s
//! events are sequences `0..events_sent` of its report: `cluster:<id> type:runtime` in an
//! event search counts them.

use bytes::Bytes;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::setup::RUNTIME_RULES;

/// Distinct corpus reviews cycled through (generated once).
pub(crate) const REVIEW_POOL: usize = 512;

/// Pod indices of cluster `c` start at `c * CLUSTER_STRIDE` in the corpus.
const CLUSTER_STRIDE: u64 = 1_000_003;

/// One review in ten is an exec/attach CONNECT.
pub(crate) const CONNECT_EVERY: u64 = 10;

/// Runtime rules that no ruleset entry names: stored, never mitigated.
const STORED_ONLY_RULES: [&str; 5] = [
    "Contact K8S API Server From Container",
    "Launch Suspicious Network Tool in Container",
    "Drop and execute new binary in container",
    "Find AWS Credentials",
    "Search Private Keys or Passwords",
];

/// A running pod, as events and CONNECTs name it.
#[derive(Debug, Clone)]
pub(crate) struct PodRef {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) labels: Value,
    pub(crate) container: String,
    pub(crate) image: String,
}

/// One cluster's pods and CONNECT reviews.
pub(crate) struct ClusterLoad {
    /// The pods as the inventory sends them.
    pub(crate) pods_json: Vec<Bytes>,
    /// The same pods, by name.
    pub(crate) pods: Vec<PodRef>,
}

impl ClusterLoad {
    /// Cluster `index`'s `pods` running pods.
    pub(crate) fn new(index: usize, pods: usize) -> ClusterLoad {
        let start = index as u64 * CLUSTER_STRIDE;
        let values: Vec<Value> = (start..)
            .filter_map(portcullis_corpus::pods::running_pod_value)
            .take(pods)
            .collect();
        let pods = values.iter().map(pod_ref).collect();
        let pods_json = values.iter().map(|v| Bytes::from(v.to_string())).collect();
        ClusterLoad { pods_json, pods }
    }

    /// The pod events and CONNECTs of sequence `seq` are about.
    pub(crate) fn pod(&self, seq: u64) -> Option<&PodRef> {
        let n = self.pods.len() as u64;
        if n == 0 {
            return None;
        }
        self.pods.get((seq % n) as usize)
    }
}

fn text(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn pod_ref(pod: &Value) -> PodRef {
    PodRef {
        namespace: text(pod, "/metadata/namespace"),
        name: text(pod, "/metadata/name"),
        uid: text(pod, "/metadata/uid"),
        labels: pod.pointer("/metadata/labels").cloned().unwrap_or(Value::Null),
        container: text(pod, "/spec/containers/0/name"),
        image: text(pod, "/spec/containers/0/image"),
    }
}

/// The corpus reviews cycled through.
pub(crate) fn review_pool() -> Vec<Bytes> {
    (0..REVIEW_POOL as u64)
        .map(|i| Bytes::from(portcullis_corpus::review(i).json))
        .collect()
}

/// The rule of runtime event `seq`: one in ten each of the terminate, isolate and log rules
/// of the ruleset, the rest rules it does not name.
pub fn event_rule(seq: u64) -> &'static str {
    match seq % 10 {
        0 => RUNTIME_RULES[0].0,
        1 => RUNTIME_RULES[1].0,
        2 => RUNTIME_RULES[2].0,
        n => {
            let at = (n as usize + (seq / 10) as usize) % STORED_ONLY_RULES.len();
            STORED_ONLY_RULES.get(at).copied().unwrap_or(RUNTIME_RULES[2].0)
        }
    }
}

/// Runtime event `seq` of cluster `cluster` about `pod`, at `at`, as Falco writes it (JSON
/// output with `output_fields`).
pub(crate) fn runtime_event(cluster: &str, seq: u64, pod: &PodRef, at: OffsetDateTime) -> Bytes {
    let at = at.format(&Rfc3339).unwrap_or_default();
    let rule = event_rule(seq);
    let priority = if seq.is_multiple_of(10) { "Critical" } else { "Warning" };
    let repository = pod.image.split(['@', ':']).next().unwrap_or_default();
    let event = json!({
        "output": format!(
            "{at}: {priority} {rule} (sim seq={seq} cluster={cluster} k8s.ns={} k8s.pod={} container={})",
            pod.namespace, pod.name, pod.container
        ),
        "priority": priority,
        "rule": rule,
        "time": at,
        "source": "syscall",
        "hostname": format!("node-{:03}", seq % 250),
        "output_fields": {
            "container.name": pod.container,
            "container.image.repository": repository,
            "k8s.ns.name": pod.namespace,
            "k8s.pod.name": pod.name,
            "k8s.pod.uid": pod.uid,
            "k8s.pod.labels": pod.labels,
            "proc.cmdline": format!("sh -c id # {seq}"),
            "sim.cluster": cluster,
            "sim.seq": seq,
        },
    });
    Bytes::from(event.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn clusters_get_pods_of_their_own_and_events_name_them() {
        let a = ClusterLoad::new(0, 5);
        let b = ClusterLoad::new(1, 5);
        assert_eq!(a.pods.len(), 5);
        assert_eq!(a.pods_json.len(), 5);
        assert!(a.pods.iter().all(|p| !p.name.is_empty() && !p.namespace.is_empty()));
        assert_ne!(a.pods[0].uid, b.pods[0].uid);
        let pod = a.pod(7).unwrap();
        let at = OffsetDateTime::UNIX_EPOCH;
        let event: Value = serde_json::from_slice(&runtime_event("sim-0", 7, pod, at)).unwrap();
        assert_eq!(event["output_fields"]["sim.seq"], 7);
        assert_eq!(event["output_fields"]["k8s.pod.name"], pod.name.as_str());
        // The same sequence and time make the same bytes (a retry is no double).
        assert_eq!(runtime_event("sim-0", 7, pod, at), runtime_event("sim-0", 7, pod, at));
    }

    #[test]
    fn one_event_in_ten_asks_for_each_mitigation() {
        let rules: Vec<&str> = (0..100).map(event_rule).collect();
        for (rule, _) in RUNTIME_RULES {
            assert_eq!(rules.iter().filter(|r| **r == rule).count(), 10, "{rule}");
        }
    }
}
