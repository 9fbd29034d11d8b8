//! The tower layer that authenticates every call and enforces the permission table before
//! any handler runs, then hands the [`Caller`] to the handler in the request extensions.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use portcullis_telemetry::propagation::{self, MetadataExtractor};
use tonic::Status;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tower::{Layer, Service};
use tracing::Instrument as _;

use crate::auth::{Authenticator, BoxFuture, Caller, Credentials, Principal, authenticate};
use crate::permissions::{Access, PermissionTable, permits};
use crate::rate_limit::TenantRateLimiter;

/// What the layer needs: the credentials, the tenant-key authenticator, the table, the
/// per-tenant rate limit.
pub struct AuthState {
    /// The operator key and service credential.
    pub credentials: Credentials,
    /// Resolves tenant keys.
    pub authenticator: Arc<dyn Authenticator>,
    /// Method → access class.
    pub table: PermissionTable,
    /// Per-tenant limit of the calls made with tenant keys (`None`: unlimited, for a service
    /// that limits its work itself, as admission does per review). Checked after the
    /// permission, so a refused caller takes no token; the operator and the service
    /// credential are not limited.
    pub rate_limit: Option<CallLimit>,
}

/// A per-tenant limit of the tenant-key calls to the methods of one package. The package
/// keeps it to the service that set it when another service shares the listener (`up`
/// serves admission, which limits each review itself, on the policy store's router).
#[derive(Debug, Clone)]
pub struct CallLimit {
    /// The token buckets.
    pub limiter: Arc<TenantRateLimiter>,
    /// The methods limited: paths starting with this, e.g. `/portcullis.policystore.v1.`.
    pub package_prefix: &'static str,
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthState")
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl AuthState {
    /// Authenticates and authorises a call to `path`: the caller, `None` for a public method.
    pub async fn check(&self, path: &str, metadata: &MetadataMap) -> Result<Option<Caller>, Status> {
        let Some(access) = self.table.access(path) else {
            return Err(Status::unimplemented(format!("unknown method {path}")));
        };
        if access == Access::Public {
            return Ok(None);
        }
        let caller = authenticate(metadata, &self.credentials, self.authenticator.as_ref()).await?;
        if !permits(access, &caller.principal) {
            let method = path.rsplit('/').next().unwrap_or(path);
            return Err(Status::permission_denied(format!(
                "{} may not call {method}",
                caller.principal.describe()
            )));
        }
        if let (Some(limit), Principal::Key(key)) = (&self.rate_limit, &caller.principal)
            && path.starts_with(limit.package_prefix)
        {
            limit
                .limiter
                .check(&key.tenant_id)
                .map_err(|limited| Status::resource_exhausted(limited.to_string()))?;
        }
        Ok(Some(caller))
    }
}

/// Wraps the routes with authentication.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    state: Arc<AuthState>,
}

impl AuthLayer {
    /// A layer over `state`.
    pub fn new(state: Arc<AuthState>) -> AuthLayer {
        AuthLayer { state }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    state: Arc<AuthState>,
}

impl<S> Service<Request<Body>> for AuthService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        let metadata = MetadataMap::from_headers(request.headers().clone());
        let span = call_span(request.uri().path(), &metadata);
        Box::pin(
            async move {
                match state.check(request.uri().path(), &metadata).await {
                    Ok(caller) => {
                        if let Some(caller) = caller {
                            request.extensions_mut().insert(caller);
                        }
                        inner.call(request).await
                    }
                    Err(status) => {
                        tracing::debug!(path = request.uri().path(), code = ?status.code(), "refused: {}", status.message());
                        Ok(status.into_http())
                    }
                }
            }
            .instrument(span),
        )
    }
}

/// The span of one call, a child of the caller's trace context (W3C `traceparent`). Only
/// while spans are exported: otherwise no span is made and nothing is parsed, and the
/// caller's context is passed on as it came ([`crate::auth::TraceContext::of_call`]).
fn call_span(path: &str, metadata: &MetadataMap) -> tracing::Span {
    if !propagation::exporting_traces() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!("grpc.server", otel.kind = "server", rpc.method = path);
    propagation::set_parent_from(&span, &MetadataExtractor(metadata));
    span
}
