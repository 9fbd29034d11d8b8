//! The policy store, as the admission service calls it: key introspection, effective
//! policies and scan summaries, each with the service credential and a deadline.

use std::time::Duration;

use portcullis_proto::common::v1 as pc;
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::auth_service_client::AuthServiceClient;
use portcullis_proto::policystore::v1::policy_service_client::PolicyServiceClient;
use portcullis_proto::policystore::v1::scan_result_service_client::ScanResultServiceClient;
use portcullis_server::TENANT_METADATA;
use tonic::Status;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};

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
    channel: Channel,
    bearer: AsciiMetadataValue,
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
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| bad("policy store URL", &e))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        if let Some(ca) = ca_pem {
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                .with_enabled_roots();
            endpoint = endpoint.tls_config(tls).map_err(|e| bad("policy store TLS", &e))?;
        }
        let bearer = format!("Bearer {service_token}")
            .parse()
            .map_err(|_| AdmissionError::InvalidArgument("service credential: not valid metadata text".into()))?;
        Ok(Upstream {
            channel: endpoint.connect_lazy(),
            bearer,
            timeout,
        })
    }

    fn request<T>(&self, tenant: Option<&str>, message: T) -> Result<tonic::Request<T>, Status> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request.metadata_mut().insert("authorization", self.bearer.clone());
        if let Some(tenant) = tenant {
            let value = tenant
                .parse()
                .map_err(|_| Status::invalid_argument("tenant: not valid metadata text"))?;
            request.metadata_mut().insert(TENANT_METADATA, value);
        }
        Ok(request)
    }

    /// What a tenant key is (`AuthService.Introspect`).
    pub async fn introspect(&self, key: &str) -> Result<pb::IntrospectResponse, Status> {
        let request = self.request(None, pb::IntrospectRequest { key: key.to_owned() })?;
        let mut client = AuthServiceClient::new(self.channel.clone());
        Ok(client.introspect(request).await?.into_inner())
    }

    /// The effective policy and settings of a tenant's cluster.
    pub async fn effective_policy(
        &self,
        tenant: &str,
        cluster: &ClusterSel,
    ) -> Result<pb::GetEffectivePolicyResponse, Status> {
        let request = self.request(
            Some(tenant),
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
        let mut request = self.request(
            Some(tenant),
            pb::GetScanSummariesRequest {
                tenant_id: tenant.to_owned(),
                digests,
            },
        )?;
        request.set_timeout(deadline.min(self.timeout));
        let mut client = ScanResultServiceClient::new(self.channel.clone());
        Ok(client.get_scan_summaries(request).await?.into_inner())
    }
}
