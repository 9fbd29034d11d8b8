//! What the service reads from the policy store: a tenant's attestors and a cluster's registry
//! credentials, with the service credential acting for the tenant and a deadline per call.
//! Behind a trait so that the verifier can be tested without a store.

use portcullis_kit::client::{Trust, for_tenant};
use portcullis_kit::upstream::{ClusterSel, ServiceChannel, UpstreamTimeouts, service_channel};
use portcullis_proto::common::v1 as pc;
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::attestor_service_client::AttestorServiceClient;
use portcullis_proto::policystore::v1::cluster_service_client::ClusterServiceClient;
use portcullis_server::BoxFuture;
use tonic::{Code, Status};

use crate::SignatureError;

/// An attestor as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAttestor {
    /// Its name.
    pub name: String,
    /// Its revision (changes with every update).
    pub revision: u64,
    /// The attestor document (JSON).
    pub document_json: String,
}

/// One registry's credentials of a cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryLogin {
    /// `host[:port]` as references normalise it.
    pub registry: String,
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

/// The username that marks the password as an identity (refresh) token, as Docker's
/// credential helpers mark one.
pub const IDENTITY_TOKEN_USERNAME: &str = "<token>";

impl RegistryLogin {
    /// What the registry client presents: an identity token (exchanged for a bearer token)
    /// when the username is [`IDENTITY_TOKEN_USERNAME`], else basic credentials.
    pub fn credential(&self) -> portcullis_oci::Credential {
        if self.username == IDENTITY_TOKEN_USERNAME {
            portcullis_oci::Credential::IdentityToken(self.password.clone())
        } else {
            portcullis_oci::Credential::basic(self.username.clone(), self.password.clone())
        }
    }
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("RegistryLogin")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Where attestors and registry credentials come from.
pub trait AttestorStore: Send + Sync + 'static {
    /// A tenant's attestor by name; `None` when it has none of that name.
    fn attestor<'a>(
        &'a self,
        tenant: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredAttestor>, SignatureError>>;

    /// A cluster's registry credentials; empty when it has none stored.
    fn registry_credentials<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a ClusterSel,
    ) -> BoxFuture<'a, Result<Vec<RegistryLogin>, SignatureError>>;
}

/// The policy store over gRPC with the service credential.
#[derive(Debug, Clone)]
pub struct PolicyStoreClient {
    channel: ServiceChannel,
}

impl PolicyStoreClient {
    /// A client of the policy store at `url` (`http://` on this host only unless
    /// `allow_plain_text`, or `https://` trusting `trust`), connecting on first use.
    pub fn new(
        url: &str,
        trust: Option<Trust>,
        service_token: &str,
        timeouts: &UpstreamTimeouts,
        allow_plain_text: bool,
    ) -> Result<PolicyStoreClient, SignatureError> {
        let channel = service_channel(url, trust, service_token, timeouts, allow_plain_text)
            .map_err(|e| SignatureError::InvalidArgument(e.to_string()))?;
        Ok(PolicyStoreClient { channel })
    }
}

fn store_failure(what: &str, status: &Status) -> SignatureError {
    SignatureError::Unavailable(format!(
        "{what}: the policy store answered {:?}: {}",
        status.code(),
        status.message()
    ))
}

impl AttestorStore for PolicyStoreClient {
    fn attestor<'a>(
        &'a self,
        tenant: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredAttestor>, SignatureError>> {
        Box::pin(async move {
            let request = for_tenant(
                tenant,
                pb::GetAttestorRequest {
                    attestor: Some(pc::ResourceRef {
                        r#ref: Some(pc::resource_ref::Ref::Name(name.to_owned())),
                    }),
                },
            )
            .map_err(|s| SignatureError::InvalidArgument(s.message().to_owned()))?;
            let mut client = AttestorServiceClient::new(self.channel.clone());
            match client.get_attestor(request).await {
                Ok(answer) => Ok(answer.into_inner().attestor.map(|a| StoredAttestor {
                    name: a.name,
                    revision: a.revision,
                    document_json: a.document_json,
                })),
                Err(status) if status.code() == Code::NotFound => Ok(None),
                Err(status) => Err(store_failure(&format!("attestor {name:?}"), &status)),
            }
        })
    }

    fn registry_credentials<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a ClusterSel,
    ) -> BoxFuture<'a, Result<Vec<RegistryLogin>, SignatureError>> {
        Box::pin(async move {
            let request = for_tenant(
                tenant,
                pb::GetRegistryCredentialsRequest {
                    tenant_id: tenant.to_owned(),
                    cluster: Some(cluster.to_proto()),
                },
            )
            .map_err(|s| SignatureError::InvalidArgument(s.message().to_owned()))?;
            let mut client = ClusterServiceClient::new(self.channel.clone());
            match client.get_registry_credentials(request).await {
                Ok(answer) => Ok(answer
                    .into_inner()
                    .credentials
                    .into_iter()
                    .map(|c| RegistryLogin {
                        registry: c.registry,
                        username: c.username,
                        password: c.password,
                    })
                    .collect()),
                // Not implemented by this store yet, or nothing stored: anonymous access.
                Err(status) if matches!(status.code(), Code::Unimplemented | Code::NotFound) => Ok(Vec::new()),
                Err(status) => Err(store_failure("registry credentials", &status)),
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn login(username: &str) -> RegistryLogin {
        RegistryLogin {
            registry: "ghcr.io".into(),
            username: username.into(),
            password: "s3cret".into(),
        }
    }

    #[test]
    fn the_token_username_makes_an_identity_token() {
        assert_eq!(
            login(IDENTITY_TOKEN_USERNAME).credential(),
            portcullis_oci::Credential::IdentityToken("s3cret".into())
        );
        assert_eq!(
            login("bot").credential(),
            portcullis_oci::Credential::basic("bot", "s3cret")
        );
    }
}
