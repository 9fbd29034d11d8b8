//! The policy store, as a service calls it: key introspection, effective
//! policies and scan summaries, each with the service credential and a deadline.

use std::time::Duration;

use portcullis_kit::client::{Trust, for_tenant};
use portcullis_kit::upstream::{ServiceChannel, service_channel};
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::auth_service_client::AuthServiceClient;
use portcullis_proto::policystore::v1::policy_service_client::PolicyServiceClient;
use portcullis_proto::policystore::v1::scan_result_service_client::ScanResultServiceClient;
use tonic::Status;

use crate::PolicyClientError;

pub use portcullis_kit::upstream::{ClusterSel, UpstreamTimeouts};

/// A client of the policy store acting with the service credential.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Every call has a client span whose context it carries (the store's span is its child).
    channel: ServiceChannel,
    timeout: Duration,
}

impl Upstream {
    /// A client of the policy store at `url` (`http://` on this host only, or `https://`
    /// trusting `trust`, else the system's roots), connecting on first use, within
    /// `timeouts`. Every call carries the service credential, so a plain-text URL off this
    /// host is refused unless `allow_plain_text` (a network that encrypts on its own, such
    /// as a service mesh).
    pub fn new(
        url: &str,
        trust: Option<Trust>,
        service_token: &str,
        timeouts: &UpstreamTimeouts,
        allow_plain_text: bool,
    ) -> Result<Upstream, PolicyClientError> {
        let channel = service_channel(url, trust, service_token, timeouts, allow_plain_text)
            .map_err(|e| PolicyClientError::InvalidArgument(e.to_string()))?;
        Ok(Upstream {
            channel,
            timeout: timeouts.call,
        })
    }

    /// What a tenant key is (`AuthService.Introspect`).
    pub async fn introspect(&self, key: &str) -> Result<pb::IntrospectResponse, Status> {
        let request = tonic::Request::new(pb::IntrospectRequest { key: key.to_owned() });
        let mut client = AuthServiceClient::new(self.channel.clone());
        Ok(client.introspect(request).await?.into_inner())
    }

    /// The effective policy and settings of a tenant's cluster.
    pub async fn effective_policy(
        &self,
        tenant: &str,
        cluster: &ClusterSel,
    ) -> Result<pb::GetEffectivePolicyResponse, Status> {
        let request = for_tenant(
            tenant,
            pb::GetEffectivePolicyRequest {
                cluster: Some(cluster.to_proto()),
                tenant_id: tenant.to_owned(),
            },
        )?;
        let mut client = PolicyServiceClient::new(self.channel.clone());
        Ok(client.get_effective_policy(request).await?.into_inner())
    }

    /// The newest scan summaries of `digests` (at most 256) in a tenant.
    pub async fn scan_summaries(
        &self,
        tenant: &str,
        digests: Vec<String>,
        deadline: Duration,
    ) -> Result<pb::GetScanSummariesResponse, Status> {
        let mut request = for_tenant(
            tenant,
            pb::GetScanSummariesRequest {
                tenant_id: tenant.to_owned(),
                digests,
            },
        )?;
        // A deadline the request carries wins over the credential's.
        request.set_timeout(deadline.min(self.timeout));
        let mut client = ScanResultServiceClient::new(self.channel.clone());
        Ok(client.get_scan_summaries(request).await?.into_inner())
    }
}
