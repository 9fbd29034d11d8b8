//! The policy store, as the admission service calls it: key introspection, effective
//! policies and scan summaries, each with the service credential and a deadline.

use std::time::Duration;

use portcullis_kit::Traced;
use portcullis_kit::client::{ClientConfig, Credential, Trust, for_tenant};
use portcullis_proto::common::v1 as pc;
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::auth_service_client::AuthServiceClient;
use portcullis_proto::policystore::v1::policy_service_client::PolicyServiceClient;
use portcullis_proto::policystore::v1::scan_result_service_client::ScanResultServiceClient;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::AdmissionError;

/// A cluster as a review names it: by id (connectors) or by name (the webhook path may
/// carry either; a name is looked up).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClusterSel {
    /// By id.
    Id(String),
    /// By name.
    Name(String),
}

impl ClusterSel {
    fn to_proto(&self) -> pc::ResourceRef {
        let r = match self {
            ClusterSel::Id(id) => pc::resource_ref::Ref::Id(id.clone()),
            ClusterSel::Name(name) => pc::resource_ref::Ref::Name(name.clone()),
        };
        pc::ResourceRef { r#ref: Some(r) }
    }
}

/// A client of the policy store acting with the service credential.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Every call has a client span whose context it carries (the store's span is its child).
    channel: InterceptedService<Traced<Channel>, Credential>,
    timeout: Duration,
}

/// How the admission service reaches the policy store: deadlines and keepalive (the
/// `[upstream.timeouts]` settings).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamTimeouts {
    /// The deadline of each call (default 5 s).
    #[serde(with = "humantime_serde")]
    pub call: Duration,
    /// How long connecting may take: TCP, TLS and HTTP/2 handshakes (default 5 s).
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// The HTTP/2 ping interval, also while idle, so a dead store is noticed before a
    /// review needs it (default 20 s).
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> UpstreamTimeouts {
        UpstreamTimeouts {
            call: Duration::from_secs(5),
            connect: Duration::from_secs(5),
            keepalive: Duration::from_secs(20),
        }
    }
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
    ) -> Result<Upstream, AdmissionError> {
        let bad = |what: &str, e: &dyn std::fmt::Display| AdmissionError::InvalidArgument(format!("{what}: {e}"));
        let mut config = ClientConfig::new(url)
            .map_err(|e| bad("policy store URL", &e))?
            .connect_timeout(timeouts.connect)
            .request_timeout(timeouts.call)
            .keepalive(Some(timeouts.keepalive));
        if !allow_plain_text {
            config
                .refuse_plain_text_off_host()
                .map_err(|e| bad("policy store URL", &e))?;
        }
        if let Some(trust) = trust {
            config = config.trust(trust);
        }
        let credential = Credential::bearer(service_token)
            .map_err(|e| bad("service credential", &e))?
            .with_timeout(timeouts.call);
        let channel = config.connect_lazy().map_err(|e| bad("policy store", &e))?;
        Ok(Upstream {
            channel: InterceptedService::new(Traced::new(channel), credential),
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
