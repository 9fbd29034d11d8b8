//! A cluster's effective policy as the services read it: one `GetEffectivePolicy` with the
//! service credential ([`read_effective`], its refusals sorted into [`EffectiveError`]),
//! the cluster's settings in the engine's types ([`EffectiveSettings`]), and the policies
//! compiled once per (tenant, policy, revision) ([`CompiledPolicies`]).
//!
//! What each service keeps of the answer, and for how long, stays the service's: continuous
//! scanning reads it on every re-evaluation (so a `policy.changed` is judged with the new
//! revision), telemetry for a short time per cluster ([`HeldMap`] bounds both caches).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use portcullis_engine::evaluate::{CompiledPolicy, FailureMode, TrustedImage};
use portcullis_proto::common::v1 as pc;
use portcullis_proto::policystore::v1 as pb;
use tonic::Code;

use crate::{ClusterSel, Upstream};

/// Why a cluster's effective policy could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EffectiveError {
    /// The store has no such cluster (deleted, or never there).
    #[error("{0}")]
    NotFound(String),
    /// The store refused the request as malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The store could not be asked or failed, or its policy does not compile here.
    #[error("{0}")]
    Unavailable(String),
}

/// The effective policy and settings of `tenant`'s `cluster`, with the store's refusals
/// sorted: not found, malformed, or unavailable (anything else).
pub async fn read_effective(
    upstream: &Upstream,
    tenant: &str,
    cluster: &ClusterSel,
) -> Result<pb::GetEffectivePolicyResponse, EffectiveError> {
    match upstream.effective_policy(tenant, cluster).await {
        Ok(answer) => Ok(answer),
        Err(status) if status.code() == Code::NotFound => Err(EffectiveError::NotFound(format!(
            "cluster {cluster:?}: {}",
            status.message()
        ))),
        Err(status) if status.code() == Code::InvalidArgument => {
            Err(EffectiveError::InvalidArgument(status.message().to_owned()))
        }
        Err(status) => Err(EffectiveError::Unavailable(format!(
            "the effective policy of cluster {cluster:?}: the policy store answered {:?}: {}",
            status.code(),
            status.message()
        ))),
    }
}

/// A cluster's settings in the engine's types.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveSettings {
    /// What an unavailable stage leads to (fail-open unless the cluster says fail-closed).
    pub failure_mode: FailureMode,
    /// Namespaces never judged.
    pub excluded_namespaces: Vec<String>,
    /// Images always exempt; those that do not parse are left out with a warning.
    pub trusted_images: Vec<TrustedImage>,
}

impl EffectiveSettings {
    /// The settings of `tenant`'s cluster `cluster_id` (for the log) as the store sent them.
    pub fn from_proto(tenant: &str, cluster_id: &str, settings: Option<pb::ClusterSettings>) -> EffectiveSettings {
        let settings = settings.unwrap_or_default();
        let failure_mode = match pc::FailureMode::try_from(settings.failure_mode) {
            Ok(pc::FailureMode::FailClosed) => FailureMode::FailClosed,
            _ => FailureMode::FailOpen,
        };
        let mut trusted_images = Vec::with_capacity(settings.trusted_images.len());
        for image in &settings.trusted_images {
            match TrustedImage::parse(image) {
                Ok(t) => trusted_images.push(t),
                Err(e) => {
                    tracing::warn!(%tenant, cluster = %cluster_id, %image, error = %e, "ignoring a trusted image that does not parse")
                }
            }
        }
        EffectiveSettings {
            failure_mode,
            excluded_namespaces: settings.excluded_namespaces,
            trusted_images,
        }
    }
}

/// A map of at most `max` entries shared by clones; when full it starts again (a rare, cheap
/// event next to unbounded growth or an eviction order to keep).
#[derive(Debug)]
pub struct HeldMap<K, V> {
    entries: Arc<Mutex<HashMap<K, V>>>,
    max: usize,
}

impl<K, V> Clone for HeldMap<K, V> {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
            max: self.max,
        }
    }
}

impl<K: Eq + Hash, V: Clone> HeldMap<K, V> {
    /// An empty map of at most `max` entries (at least 1).
    pub fn new(max: usize) -> Self {
        Self {
            entries: Arc::new(Mutex::new(HashMap::new())),
            max: max.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, V>> {
        // A poisoned lock only means a panic elsewhere mid-insert; the map stays usable.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value held for `key`.
    pub fn get(&self, key: &K) -> Option<V> {
        self.lock().get(key).cloned()
    }

    /// Holds `value` for `key` (replacing what was held), emptying the map first when full.
    pub fn insert(&self, key: K, value: V) {
        let mut entries = self.lock();
        if entries.len() >= self.max && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.insert(key, value);
    }

    /// The value held for `key`, or else `value`, which is then held (the first one stored
    /// wins when two were made at once).
    pub fn get_or_insert(&self, key: K, value: V) -> V {
        let mut entries = self.lock();
        if entries.len() >= self.max && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.entry(key).or_insert(value).clone()
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Policies compiled with the engine once per (tenant, policy id, revision), at most `max`
/// held (cheap to clone; clones share them).
#[derive(Debug, Clone)]
pub struct CompiledPolicies {
    held: HeldMap<(String, String, u64), Arc<CompiledPolicy>>,
}

impl CompiledPolicies {
    /// An empty cache of at most `max` compiled policies.
    pub fn new(max: usize) -> Self {
        Self {
            held: HeldMap::new(max),
        }
    }

    /// `tenant`'s `policy` compiled: the held one of its revision, or compiled now. A policy
    /// that does not compile is [`EffectiveError::Unavailable`]: the store validated it, so
    /// the two versions disagree.
    pub fn compile(&self, tenant: &str, policy: &pb::Policy) -> Result<Arc<CompiledPolicy>, EffectiveError> {
        let key = (tenant.to_owned(), policy.id.clone(), policy.revision);
        if let Some(held) = self.held.get(&key) {
            return Ok(held);
        }
        // Compiled without the lock: another tenant's work does not wait on it.
        let fresh = CompiledPolicy::from_text(&policy.document_json)
            .map(Arc::new)
            .map_err(|e| {
                EffectiveError::Unavailable(format!(
                    "policy {} revision {} does not compile here: {e}",
                    policy.id, policy.revision
                ))
            })?;
        Ok(self.held.get_or_insert(key, fresh))
    }

    /// How many compiled policies are held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_full_map_starts_again_and_a_held_key_is_replaced_in_place() {
        let map = HeldMap::new(2);
        map.insert("a", 1);
        map.insert("b", 2);
        map.insert("b", 3);
        assert_eq!((map.len(), map.get(&"b")), (2, Some(3)));
        map.insert("c", 4);
        assert_eq!((map.len(), map.get(&"a"), map.get(&"c")), (1, None, Some(4)));
        assert_eq!(map.get_or_insert("c", 5), 4);
    }

    #[test]
    fn settings_default_to_fail_open_and_skip_trusted_images_that_do_not_parse() {
        let settings = EffectiveSettings::from_proto(
            "acme",
            "c1",
            Some(pb::ClusterSettings {
                failure_mode: pc::FailureMode::FailClosed as i32,
                excluded_namespaces: vec!["kube-system".into()],
                trusted_images: vec!["registry.example/app".into(), "registry.example/app:1.0".into()],
            }),
        );
        assert_eq!(settings.failure_mode, FailureMode::FailClosed);
        assert_eq!(settings.excluded_namespaces, vec!["kube-system".to_owned()]);
        assert_eq!(settings.trusted_images.len(), 1);
        assert_eq!(
            EffectiveSettings::from_proto("acme", "c1", None).failure_mode,
            FailureMode::FailOpen
        );
    }

    #[test]
    fn a_policy_is_compiled_once_per_revision_and_a_broken_one_is_unavailable() {
        let policies = CompiledPolicies::new(8);
        let policy = pb::Policy {
            id: "p1".into(),
            revision: 1,
            document_json: "name: p\ndefault:\n  rules: []\n".into(),
            ..pb::Policy::default()
        };
        let first = policies.compile("acme", &policy);
        let Ok(first) = first else {
            panic!("the test policy does not compile: {first:?}")
        };
        let again = policies.compile("acme", &policy).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        let broken = pb::Policy {
            revision: 2,
            document_json: "{".into(),
            ..policy
        };
        assert!(matches!(
            policies.compile("acme", &broken),
            Err(EffectiveError::Unavailable(_))
        ));
        assert_eq!(policies.len(), 1);
    }
}
