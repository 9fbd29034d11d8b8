//! What a cluster's effective policy says to telemetry: whether its events are stored
//! (`xdrEnabled`), its runtime rulesets (compiled for matching), and the exemptions of the
//! cluster's settings. Read from the policy store with the service credential and cached for
//! a short time per (tenant, cluster): an ingest stream of thousands of events asks once, and
//! a policy change is seen within the cache's lifetime.

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_engine::evaluate::{FailureMode, TrustedImage};
use portcullis_engine::policy::PolicyDocument;
use portcullis_engine::runtime::{CompiledRulesets, Ruleset};
use portcullis_kit::client::{Trust, for_tenant};
use portcullis_kit::upstream::{ClusterSel, ServiceChannel, service_channel};
use portcullis_policy_client::effective::{EffectiveError, EffectiveSettings, HeldMap, read_effective};
use portcullis_policy_client::{Upstream, UpstreamTimeouts};
use portcullis_proto::common::v1 as pc;
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::ruleset_service_client::RulesetServiceClient;
use tonic::Code;

use crate::error::TelemetryError;

/// Clusters held at most; when full, the cache starts again (a rare, cheap event).
const MAX_HELD: usize = 10_000;

/// A cluster's policy as telemetry uses it.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// The cluster's id.
    pub cluster_id: String,
    /// The cluster's name.
    pub cluster_name: String,
    /// Whether its events are stored (`xdrEnabled`; true when no policy is assigned, so that
    /// nothing is lost by default).
    pub xdr_enabled: bool,
    /// The assigned policy's id and revision (empty and 0 when none).
    pub policy: (String, u64),
    /// The runtime rulesets the policy references.
    pub rulesets: Arc<CompiledRulesets>,
    /// Namespaces never mitigated.
    pub excluded_namespaces: Vec<String>,
    /// Images never mitigated.
    pub trusted_images: Vec<TrustedImage>,
    /// What a rule that cannot be judged leads to (replay follows it as admission did).
    pub failure_mode: FailureMode,
}

/// Views by (tenant, cluster selector), with when they were read.
type Held = HeldMap<(String, String), (Instant, Arc<ClusterView>)>;

/// The policy store as telemetry reads it (cheap to clone).
#[derive(Clone)]
pub struct PolicyStore {
    channel: ServiceChannel,
    upstream: Upstream,
    held: Held,
    ttl: Duration,
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore").finish_non_exhaustive()
    }
}

impl PolicyStore {
    /// A client of the policy store at `url` with the service credential; answers are reused
    /// for `ttl`.
    pub fn new(
        url: &str,
        trust: Option<Trust>,
        service_token: &str,
        timeouts: &UpstreamTimeouts,
        allow_plain_text: bool,
        ttl: Duration,
    ) -> Result<PolicyStore, TelemetryError> {
        let channel = service_channel(url, trust.clone(), service_token, timeouts, allow_plain_text)
            .map_err(|e| TelemetryError::InvalidArgument(e.to_string()))?;
        let upstream = Upstream::new(url, trust, service_token, timeouts, allow_plain_text)
            .map_err(|e| TelemetryError::InvalidArgument(e.to_string()))?;
        Ok(PolicyStore {
            channel,
            upstream,
            held: HeldMap::new(MAX_HELD),
            ttl,
        })
    }

    /// The view of `tenant`'s cluster `cluster` (an id, or a name); cached.
    pub async fn cluster(&self, tenant: &str, cluster: &ClusterSel) -> Result<Arc<ClusterView>, TelemetryError> {
        let key = (tenant.to_owned(), format!("{cluster:?}"));
        if let Some((at, view)) = self.held.get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(view);
        }
        let view = Arc::new(self.read(tenant, cluster).await?);
        self.held.insert(key, (Instant::now(), view.clone()));
        Ok(view)
    }

    async fn read(&self, tenant: &str, cluster: &ClusterSel) -> Result<ClusterView, TelemetryError> {
        let answer = read_effective(&self.upstream, tenant, cluster)
            .await
            .map_err(|e| match e {
                EffectiveError::NotFound(m) => TelemetryError::NotFound(m),
                EffectiveError::InvalidArgument(m) => TelemetryError::InvalidArgument(m),
                EffectiveError::Unavailable(m) => TelemetryError::Unavailable(m),
            })?;
        let settings = EffectiveSettings::from_proto(tenant, &answer.cluster_id, answer.settings);
        let (xdr_enabled, policy, rulesets) = match answer.policy {
            None => (true, (String::new(), 0), CompiledRulesets::default()),
            Some(p) => {
                let document: PolicyDocument = serde_json::from_str(&p.document_json).map_err(|e| {
                    // The store validated it: a failure means the two versions disagree.
                    TelemetryError::Unavailable(format!(
                        "policy {} revision {} does not read here: {e}",
                        p.id, p.revision
                    ))
                })?;
                let rulesets = self.rulesets(tenant, &document).await?;
                (document.xdr_enabled, (p.id, p.revision), rulesets)
            }
        };
        if !rulesets.missing().is_empty() {
            tracing::warn!(%tenant, cluster = %answer.cluster_id, missing = ?rulesets.missing(), "the policy references rulesets the store does not have; their entries match nothing");
        }
        Ok(ClusterView {
            cluster_id: answer.cluster_id,
            cluster_name: answer.cluster_name,
            xdr_enabled,
            policy,
            rulesets: Arc::new(rulesets),
            excluded_namespaces: settings.excluded_namespaces,
            trusted_images: settings.trusted_images,
            failure_mode: settings.failure_mode,
        })
    }

    /// The rulesets `document` references, read from the store and compiled; a ruleset
    /// the store does not have is recorded as missing.
    async fn rulesets(&self, tenant: &str, document: &PolicyDocument) -> Result<CompiledRulesets, TelemetryError> {
        let references = document.runtime.as_ref().map_or(&[][..], |r| r.rulesets.as_slice());
        let mut documents: Vec<(String, Ruleset)> = Vec::with_capacity(references.len());
        for reference in references {
            let request = for_tenant(
                tenant,
                pb::GetRulesetRequest {
                    ruleset: Some(pc::ResourceRef {
                        r#ref: Some(pc::resource_ref::Ref::Id(reference.id.clone())),
                    }),
                },
            )
            .map_err(|s| TelemetryError::InvalidArgument(s.message().to_owned()))?;
            let mut client = RulesetServiceClient::new(self.channel.clone());
            match client.get_ruleset(request).await {
                Ok(answer) => {
                    let Some(r) = answer.into_inner().ruleset else { continue };
                    match Ruleset::from_json(&r.document_json) {
                        Ok(ruleset) => documents.push((reference.id.clone(), ruleset)),
                        Err(e) => {
                            tracing::warn!(%tenant, ruleset = %reference.id, error = %e, "a stored ruleset does not read here; it matches nothing")
                        }
                    }
                }
                Err(status) if status.code() == Code::NotFound => {}
                Err(status) => {
                    return Err(TelemetryError::Unavailable(format!(
                        "ruleset {}: the policy store answered {:?}: {}",
                        reference.id,
                        status.code(),
                        status.message()
                    )));
                }
            }
        }
        Ok(CompiledRulesets::new(
            references,
            documents.iter().map(|(id, r)| (id.as_str(), r)),
        ))
    }
}
