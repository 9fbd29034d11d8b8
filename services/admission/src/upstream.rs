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

impl Upstream {
    /// A client of the policy store at `url` (`http://` or `https://`, trusting `ca_pem`
    /// when given), connecting on first use. `timeout` bounds every call.
    pub fn new(
        url: &str,
        ca_pem: Option<&[u8]>,
        service_token: &str,
        timeout: Duration,
    ) -> Result<Upstream, AdmissionError> {
        let bad = |what: &str, e: &dyn std::fmt::Display| AdmissionError::InvalidArgument(format!("{what}: {e}"));
        let mut config = ClientConfig::new(url)
            .map_err(|e| bad("policy store URL", &e))?
            .connect_timeout(timeout)
            .request_timeout(timeout);
        if let Some(ca) = ca_pem {
            config = config.trust(Trust::Ca(ca.to_vec()));
        }
        let credential = Credential::bearer(service_token)
            .map_err(|e| bad("service credential", &e))?
            .with_timeout(timeout);
        let channel = config.connect_lazy().map_err(|e| bad("policy store", &e))?;
        Ok(Upstream {
            channel: InterceptedService::new(Traced::new(channel), credential),
            timeout,
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
