//! The Kubernetes validating webhook: `portcullis_webhook`'s HTTPS transport over
//! [`Admission::review`]. The bearer token must be a connector key (the API server speaks
//! for one cluster); the path's `{cluster}` is its cluster, by id or name.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use portcullis_server::{Authenticator as _, Role};
pub use portcullis_webhook::WebhookLimits;
use portcullis_webhook::{
    AdmitFuture, BoundWebhook, ReviewFuture, ServeError, WebhookConfig, WebhookHandler, WebhookRequest, WebhookServer,
};

use crate::metrics::Transport;
use crate::review::ReviewCaller;
use crate::{Admission, AdmissionError, ClusterSel};

/// Where the webhook listens and its certificate.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// The listen address (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Certificate chain, PEM.
    pub tls_cert: PathBuf,
    /// Private key, PEM.
    pub tls_key: PathBuf,
    /// Sizes, deadlines and concurrency.
    pub limits: WebhookLimits,
}

/// The admission service as a [`WebhookHandler`].
#[derive(Debug, Clone)]
pub struct WebhookAdapter {
    admission: Admission,
}

impl WebhookAdapter {
    /// Binds the webhook listener for `admission`.
    pub async fn bind(admission: Admission, options: &WebhookOptions) -> Result<BoundWebhook, ServeError> {
        let config = WebhookConfig {
            listen: options.listen,
            tls_cert: options.tls_cert.clone(),
            tls_key: options.tls_key.clone(),
            limits: options.limits.clone(),
        };
        WebhookServer::bind(config, Arc::new(WebhookAdapter { admission })).await
    }

    /// The connector key `bearer` names, with its cluster: the webhook takes no other key.
    async fn connector(&self, bearer: &str) -> Result<(portcullis_server::TenantKey, String), AdmissionError> {
        let key = self
            .admission
            .authenticator()
            .authenticate(bearer)
            .await
            .map_err(|s| AdmissionError::from_status(&s))?;
        match (key.role, key.cluster_id.clone()) {
            (Role::Connector, Some(own)) => Ok((key, own)),
            _ => Err(AdmissionError::PermissionDenied(
                "the webhook takes connector keys only".into(),
            )),
        }
    }

    async fn judge(&self, request: WebhookRequest) -> Result<bytes::Bytes, AdmissionError> {
        // A cache hit: `admit` checked the same key a moment ago.
        let (key, own) = self.connector(&request.bearer).await?;
        let caller = ReviewCaller {
            tenant: key.tenant_id,
            own_cluster: Some(own.clone()),
        };
        // The path names the cluster by id or by name; the key's own id is the usual case.
        let sel = if request.cluster == own {
            ClusterSel::Id(own)
        } else {
            ClusterSel::Name(request.cluster.clone())
        };
        let out = self
            .admission
            .review(&caller, Some(sel), &request.body, Transport::Webhook)
            .await?;
        Ok(bytes::Bytes::from(out.response_json))
    }
}

impl WebhookHandler for WebhookAdapter {
    fn review(&self, request: WebhookRequest) -> ReviewFuture<'_> {
        Box::pin(async move { self.judge(request).await.map_err(portcullis_domain::Error::from) })
    }

    fn admit<'a>(&'a self, bearer: &'a str) -> AdmitFuture<'a> {
        Box::pin(async move {
            let (key, _cluster) = self.connector(bearer).await.map_err(portcullis_domain::Error::from)?;
            Ok(key.key_id)
        })
    }
}
