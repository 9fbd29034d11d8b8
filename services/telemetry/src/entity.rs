//! The correlation entity: what related events have in common.
//!
//! An entity is (cluster, namespace, owning workload, image digest). The owning workload of a
//! pod is found through its controlling owner reference:
//!
//! - a ReplicaSet owner whose name ends in `-<h>`, where `h` is the pod's `pod-template-hash`
//!   label, belongs to the Deployment named by the rest (`web-7c9f8d6b5` with hash
//!   `7c9f8d6b5` is Deployment `web`); when the pod's labels are not known at all, a last
//!   segment of 6 to 10 characters of the alphabet Kubernetes writes hashes with
//!   (`bcdfghjklmnpqrstvwxz2456789`) is taken as the hash;
//! - a Job owner named `<c>-<n>`, where `n` is 8 or more digits (the CronJob controller names
//!   its Jobs by their scheduled time in minutes since the epoch), belongs to CronJob `c`;
//! - any other owner (StatefulSet, DaemonSet, a ReplicaSet or Job that does not fit) is the
//!   workload itself;
//! - a pod without an owner is its own workload (kind `Pod`). When an event names the pod but
//!   no owner, and its labels carry a `pod-template-hash` `h` and the pod is named
//!   `<d>-<h>-<suffix>`, the workload is Deployment `d` (the ReplicaSet controller names pods
//!   so); otherwise the pod is taken as its own workload.
//!
//! When an event has no digest, its entity is (cluster, namespace, workload).

use std::fmt;

use compact_str::CompactString;

use crate::event::SecurityEvent;

/// The label Kubernetes puts on a Deployment's pods with the pod template's hash.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// A workload: a pod's owning controller (kind and name), or a bare pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    /// The kind, e.g. `Deployment`, `StatefulSet`, `CronJob`, `Pod`.
    pub kind: CompactString,
    /// The name.
    pub name: CompactString,
}

impl Workload {
    /// A workload of `kind` named `name`.
    pub fn new(kind: &str, name: &str) -> Self {
        Self {
            kind: kind.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// The labels of an event's pod, sorted by key (no duplicate keys).
pub type Labels = Vec<(CompactString, CompactString)>;

/// The value of `key` in sorted `labels`.
pub fn label<'a>(labels: &'a [(CompactString, CompactString)], key: &str) -> Option<&'a str> {
    labels
        .binary_search_by(|(k, _)| k.as_str().cmp(key))
        .ok()
        .and_then(|i| labels.get(i))
        .map(|(_, v)| v.as_str())
}

/// The alphabet of `pod-template-hash` values (Kubernetes' `rand.SafeEncodeString`).
const HASH_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// True when `s` looks like a pod-template-hash (used only when the labels are unknown).
fn looks_like_hash(s: &str) -> bool {
    (6..=10).contains(&s.len()) && s.bytes().all(|b| HASH_ALPHABET.contains(&b))
}

/// The owning workload of a pod named `pod`, from its controlling owner (`kind`, `name`),
/// when known, and its labels (`None` when not known). See the module documentation.
pub fn workload_of(pod: &str, owner: Option<(&str, &str)>, labels: Option<&Labels>) -> Workload {
    let hash = labels.and_then(|l| label(l, POD_TEMPLATE_HASH));
    match owner {
        Some(("ReplicaSet", rs)) => {
            if let Some((deployment, last)) = rs.rsplit_once('-') {
                let is_hash = match (hash, labels) {
                    (Some(h), _) => h == last,
                    (None, None) => looks_like_hash(last),
                    (None, Some(_)) => false,
                };
                if is_hash && !deployment.is_empty() {
                    return Workload::new("Deployment", deployment);
                }
            }
            Workload::new("ReplicaSet", rs)
        }
        Some(("Job", job)) => match job.rsplit_once('-') {
            Some((cron, n)) if !cron.is_empty() && n.len() >= 8 && n.bytes().all(|b| b.is_ascii_digit()) => {
                Workload::new("CronJob", cron)
            }
            _ => Workload::new("Job", job),
        },
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() => Workload::new(kind, name),
        _ => {
            if let Some(h) = hash
                && let Some(rest) = pod.rsplit_once('-').map(|(rest, _suffix)| rest)
                && let Some(deployment) = rest.strip_suffix(h).and_then(|d| d.strip_suffix('-'))
                && !deployment.is_empty()
            {
                return Workload::new("Deployment", deployment);
            }
            Workload::new("Pod", pod)
        }
    }
}

/// The correlation entity of an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entity {
    /// Id of the cluster.
    pub cluster_id: CompactString,
    /// The namespace; empty when the event has none.
    pub namespace: CompactString,
    /// The owning workload, when the event is about one.
    pub workload: Option<Workload>,
    /// The image digest; `None` when the event has none (then the entity is cluster,
    /// namespace and workload).
    pub digest: Option<CompactString>,
}

impl Entity {
    /// The entity of `event`.
    pub fn of(event: &SecurityEvent) -> Self {
        Self {
            cluster_id: event.cluster_id.clone(),
            namespace: event.namespace.clone(),
            workload: event.workload.clone(),
            digest: (!event.digest.is_empty()).then(|| event.digest.clone()),
        }
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.cluster_id, self.namespace)?;
        if let Some(w) = &self.workload {
            write!(f, "/{w}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        let mut l: Labels = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        l.sort();
        l
    }

    #[test]
    fn replicaset_with_matching_hash_label_is_its_deployment() {
        let l = labels(&[("app", "web"), (POD_TEMPLATE_HASH, "7c9f8d6b5")]);
        let w = workload_of("web-7c9f8d6b5-x2x4q", Some(("ReplicaSet", "web-7c9f8d6b5")), Some(&l));
        assert_eq!(w, Workload::new("Deployment", "web"));
    }

    #[test]
    fn replicaset_whose_suffix_differs_from_the_hash_label_stays_a_replicaset() {
        let l = labels(&[(POD_TEMPLATE_HASH, "abcdef")]);
        let w = workload_of("web-1", Some(("ReplicaSet", "web-7c9f8d6b5")), Some(&l));
        assert_eq!(w, Workload::new("ReplicaSet", "web-7c9f8d6b5"));
    }

    #[test]
    fn replicaset_with_known_labels_but_no_hash_stays_a_replicaset() {
        let l = labels(&[("app", "web")]);
        let w = workload_of("web-1", Some(("ReplicaSet", "web-7c9f8d6b5")), Some(&l));
        assert_eq!(w, Workload::new("ReplicaSet", "web-7c9f8d6b5"));
    }

    #[test]
    fn replicaset_with_unknown_labels_uses_the_hash_alphabet() {
        let w = workload_of("x", Some(("ReplicaSet", "api-server-5d8f7b9c4")), None);
        assert_eq!(w, Workload::new("Deployment", "api-server"));
        // `a`, `e`, `1` are not in the alphabet: not a hash.
        let w = workload_of("x", Some(("ReplicaSet", "api-release1")), None);
        assert_eq!(w, Workload::new("ReplicaSet", "api-release1"));
    }

    #[test]
    fn job_named_by_schedule_minutes_is_its_cronjob() {
        let w = workload_of("backup-29012345-abcde", Some(("Job", "backup-29012345")), None);
        assert_eq!(w, Workload::new("CronJob", "backup"));
        let w = workload_of("migrate-1-abcde", Some(("Job", "migrate-1")), None);
        assert_eq!(w, Workload::new("Job", "migrate-1"));
    }

    #[test]
    fn other_owners_are_the_workload() {
        let w = workload_of("db-0", Some(("StatefulSet", "db")), None);
        assert_eq!(w, Workload::new("StatefulSet", "db"));
    }

    #[test]
    fn bare_pod_is_its_own_workload() {
        assert_eq!(workload_of("debug", None, None), Workload::new("Pod", "debug"));
        let l = labels(&[("run", "debug")]);
        assert_eq!(workload_of("debug", None, Some(&l)), Workload::new("Pod", "debug"));
    }

    #[test]
    fn ownerless_pod_named_after_its_hash_is_its_deployment() {
        let l = labels(&[(POD_TEMPLATE_HASH, "7c9f8d6b5")]);
        assert_eq!(
            workload_of("web-7c9f8d6b5-x2x4q", None, Some(&l)),
            Workload::new("Deployment", "web")
        );
        // The hash is not where the ReplicaSet controller puts it.
        assert_eq!(
            workload_of("web-x2x4q", None, Some(&l)),
            Workload::new("Pod", "web-x2x4q")
        );
    }

    #[test]
    fn entity_without_digest_is_cluster_namespace_workload() {
        let mut e = crate::event::tests::sample_event();
        e.digest = CompactString::default();
        let entity = Entity::of(&e);
        assert_eq!(entity.digest, None);
        assert_eq!(entity.to_string(), "c1/prod/Deployment/web");
        e.digest = "sha256:ab".into();
        assert_eq!(Entity::of(&e).to_string(), "c1/prod/Deployment/web@sha256:ab");
    }
}
