//! The policy store as the other services reach it: a lazily connected channel carrying the
//! service credential and a deadline on every call, within [`UpstreamTimeouts`]; and how a
//! request names a cluster ([`ClusterSel`]). One constructor for admission and signature.

use std::time::Duration;

use portcullis_proto::common::v1 as pc;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::Traced;
use crate::client::{ClientConfig, ClientError, Credential, CredentialError, Trust};

/// A channel to the policy store: every call has a client span whose context it carries
/// (the store's span is its child), the service credential and the call deadline.
pub type ServiceChannel = InterceptedService<Traced<Channel>, Credential>;

/// How a service reaches the policy store: deadlines and keepalive (the
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
    /// request needs it (default 20 s).
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

/// Why a channel to the policy store could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The URL cannot be dialled, or is plain text off this host.
    #[error("policy store URL: {0}")]
    Url(ClientError),
    /// The service credential is empty or has characters a header cannot carry.
    #[error("service credential: {0}")]
    Credential(CredentialError),
    /// The channel could not be set up (TLS).
    #[error("policy store: {0}")]
    Channel(ClientError),
}

/// A channel to the policy store at `url` (`http://` on this host only, or `https://`
/// trusting `trust`, else the system's roots), connecting on first use, within `timeouts`.
/// Every call carries the service credential, so a plain-text URL off this host is refused
/// unless `allow_plain_text` (a network that encrypts on its own, such as a service mesh).
pub fn service_channel(
    url: &str,
    trust: Option<Trust>,
    service_token: &str,
    timeouts: &UpstreamTimeouts,
    allow_plain_text: bool,
) -> Result<ServiceChannel, UpstreamError> {
    let mut config = ClientConfig::new(url)
        .map_err(UpstreamError::Url)?
        .connect_timeout(timeouts.connect)
        .request_timeout(timeouts.call)
        .keepalive(Some(timeouts.keepalive));
    if !allow_plain_text {
        config.refuse_plain_text_off_host().map_err(UpstreamError::Url)?;
    }
    if let Some(trust) = trust {
        config = config.trust(trust);
    }
    // The credential carries the deadline of every call.
    let credential = Credential::bearer(service_token)
        .map_err(UpstreamError::Credential)?
        .with_timeout(timeouts.call);
    let channel = config.connect_lazy().map_err(UpstreamError::Channel)?;
    Ok(InterceptedService::new(Traced::new(channel), credential))
}

/// A cluster as a request names it: by id (connectors) or by name (the webhook path may
/// carry either; a name is looked up).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClusterSel {
    /// By id.
    Id(String),
    /// By name.
    Name(String),
}

impl ClusterSel {
    /// The reference the policy store's requests take.
    pub fn to_proto(&self) -> pc::ResourceRef {
        let r = match self {
            ClusterSel::Id(id) => pc::resource_ref::Ref::Id(id.clone()),
            ClusterSel::Name(name) => pc::resource_ref::Ref::Name(name.clone()),
        };
        pc::ResourceRef { r#ref: Some(r) }
    }
}
