//! What a re-evaluation needs from the policy store: a cluster's effective policy (one
//! `GetEffectivePolicy` with the service credential per re-evaluation, so that a
//! `policy.changed` is judged with the new revision, never a cached old one), compiled with
//! the engine once per (tenant, policy, revision); the scan summaries of the digests the pods
//! run (admission's scan cache: held summaries serve, missing ones are fetched in batches,
//! and what cannot be fetched is *unavailable*, never "unscanned"); and the clusters assigned
//! to a policy (the preview's default selection).

use std::sync::Arc;
use std::time::Duration;

use portcullis_engine::evaluate::{CompiledPolicy, FailureMode, TrustedImage};
use portcullis_engine::image_ref::ImageRef;
use portcullis_kit::client::{Trust, for_tenant};
use portcullis_kit::upstream::{ClusterSel, ServiceChannel, service_channel};
use portcullis_policy_client::effective::{CompiledPolicies, EffectiveError, EffectiveSettings, read_effective};
use portcullis_policy_client::scans::{ScanCache, ScanCacheOptions};
use portcullis_policy_client::{Upstream, UpstreamTimeouts};
use portcullis_proto::common::v1 as pc;
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::cluster_service_client::ClusterServiceClient;
use tonic::Code;

use crate::error::ContinuousError;
use crate::inventory::PodProjection;
use crate::store::PolicyUsed;

/// Compiled policies held at most (by revision; the oldest entries go first when full).
const MAX_COMPILED: usize = 1024;

/// A cluster's policy and settings, as a re-evaluation uses them.
#[derive(Debug, Clone)]
pub struct ClusterPolicy {
    /// The cluster's id.
    pub cluster_id: String,
    /// The cluster's name.
    pub cluster_name: String,
    /// The assigned policy, compiled; `None` when none is assigned (every finding resolves).
    pub policy: Option<Arc<CompiledPolicy>>,
    /// Its id and revision.
    pub used: PolicyUsed,
    /// What an unavailable stage leads to.
    pub failure_mode: FailureMode,
    /// Namespaces never judged.
    pub excluded_namespaces: Vec<String>,
    /// Images always exempt.
    pub trusted_images: Vec<TrustedImage>,
}

/// The policy store as the continuous service reads it (cheap to clone).
#[derive(Clone)]
pub struct PolicyStore {
    channel: ServiceChannel,
    upstream: Upstream,
    scans: ScanCache,
    compiled: CompiledPolicies,
    scan_deadline: Duration,
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore").finish_non_exhaustive()
    }
}

/// The digests `pod` runs: pinned in its images, or resolved from its containers' `imageID`.
pub fn pod_digests(pod: &PodProjection) -> Vec<String> {
    let mut digests: Vec<String> = pod.digests.values().cloned().collect();
    for (_, c) in pod.spec().all_containers() {
        if let Ok(r) = ImageRef::parse(&c.image)
            && let Some(d) = r.digest()
        {
            digests.push(d.to_owned());
        }
    }
    digests.sort_unstable();
    digests.dedup();
    digests
}

/// The policy client's reading error as this service's.
fn from_effective(e: EffectiveError) -> ContinuousError {
    match e {
        EffectiveError::NotFound(m) => ContinuousError::NotFound(m),
        EffectiveError::InvalidArgument(m) => ContinuousError::InvalidArgument(m),
        EffectiveError::Unavailable(m) => ContinuousError::Unavailable(m),
    }
}

impl PolicyStore {
    /// A client of the policy store at `url` (`http://` on this host only unless
    /// `allow_plain_text`, or `https://` trusting `trust`) with the service credential.
    pub fn new(
        url: &str,
        trust: Option<Trust>,
        service_token: &str,
        timeouts: &UpstreamTimeouts,
        allow_plain_text: bool,
    ) -> Result<PolicyStore, ContinuousError> {
        let channel = service_channel(url, trust.clone(), service_token, timeouts, allow_plain_text)
            .map_err(|e| ContinuousError::InvalidArgument(e.to_string()))?;
        let upstream = Upstream::new(url, trust, service_token, timeouts, allow_plain_text)
            .map_err(|e| ContinuousError::InvalidArgument(e.to_string()))?;
        Ok(PolicyStore {
            channel,
            scans: ScanCache::new(upstream.clone(), ScanCacheOptions::default()),
            upstream,
            compiled: CompiledPolicies::new(MAX_COMPILED),
            scan_deadline: timeouts.call,
        })
    }

    /// The scan summaries held (a `scan.result` event replaces one).
    pub fn scans(&self) -> &ScanCache {
        &self.scans
    }

    /// The effective policy of `tenant`'s `cluster`; [`ContinuousError::NotFound`] when the
    /// store has no such cluster (deleted).
    pub async fn cluster(&self, tenant: &str, cluster: &ClusterSel) -> Result<ClusterPolicy, ContinuousError> {
        let answer = read_effective(&self.upstream, tenant, cluster)
            .await
            .map_err(from_effective)?;
        let settings = EffectiveSettings::from_proto(tenant, &answer.cluster_id, answer.settings);
        let (policy, used) = match answer.policy {
            None => (None, PolicyUsed::default()),
            Some(p) => {
                let compiled = self.compiled.compile(tenant, &p).map_err(from_effective)?;
                (
                    Some(compiled),
                    PolicyUsed {
                        id: p.id,
                        revision: p.revision,
                    },
                )
            }
        };
        Ok(ClusterPolicy {
            cluster_id: answer.cluster_id,
            cluster_name: answer.cluster_name,
            policy,
            used,
            failure_mode: settings.failure_mode,
            excluded_namespaces: settings.excluded_namespaces,
            trusted_images: settings.trusted_images,
        })
    }

    /// Fetches the scan summaries of `digests` not held yet; `Err` says why they could not be
    /// had (they are then unavailable to the evaluation).
    pub async fn fetch_scans(&self, tenant: &str, digests: Vec<String>) -> Result<(), String> {
        let missing: Vec<String> = digests.into_iter().filter(|d| !self.scans.holds(tenant, d)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        self.scans.fetch(tenant, missing, self.scan_deadline).await
    }

    /// The ids of the clusters assigned to `tenant`'s policy named `policy`; empty when no
    /// such policy exists.
    pub async fn clusters_of_policy(&self, tenant: &str, policy: &str) -> Result<Vec<String>, ContinuousError> {
        let mut ids = Vec::new();
        let mut token = String::new();
        // A bounded number of pages: a tenant has at most a few thousand clusters.
        for _ in 0..100 {
            let request = for_tenant(
                tenant,
                pb::ListClustersRequest {
                    page: Some(pc::PageRequest {
                        page_size: 1000,
                        page_token: token.clone(),
                    }),
                    name_filter: String::new(),
                    policy: Some(pc::ResourceRef {
                        r#ref: Some(pc::resource_ref::Ref::Name(policy.to_owned())),
                    }),
                },
            )
            .map_err(|s| ContinuousError::InvalidArgument(s.message().to_owned()))?;
            let mut client = ClusterServiceClient::new(self.channel.clone());
            let answer = match client.list_clusters(request).await {
                Ok(a) => a.into_inner(),
                Err(status) if status.code() == Code::NotFound => return Ok(ids),
                Err(status) => {
                    return Err(ContinuousError::Unavailable(format!(
                        "the clusters of policy {policy:?}: the policy store answered {:?}: {}",
                        status.code(),
                        status.message()
                    )));
                }
            };
            ids.extend(answer.clusters.into_iter().map(|c| c.id));
            match answer.page.map(|p| p.next_page_token).filter(|t| !t.is_empty()) {
                Some(next) => token = next,
                None => return Ok(ids),
            }
        }
        Ok(ids)
    }
}
