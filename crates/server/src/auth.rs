//! Who is calling: the `authorization: Bearer <key>` metadata resolved to a [`Caller`].
//!
//! Three kinds of credential:
//! - a tenant API key (`admin`, `editor`, `viewer` or `connector`), resolved by an
//!   [`Authenticator`]: the store itself in the policy store, `AuthService.Introspect` (with a
//!   short cache) in the other services;
//! - the operator key (`PORTCULLIS_OPERATOR_KEY`), which manages tenants and nothing else;
//! - the service credential (`PORTCULLIS_SERVICE_TOKEN`), which services use to call each
//!   other and which may act for any tenant named in `x-portcullis-tenant`. Only it may name
//!   another tenant there: a tenant key may name only its own.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use tonic::Status;
use tonic::metadata::MetadataMap;

/// The metadata naming the tenant a service-credential call acts for.
pub const TENANT_METADATA: &str = "x-portcullis-tenant";
/// The W3C trace context header.
pub const TRACEPARENT_METADATA: &str = "traceparent";
/// The W3C trace state header.
pub const TRACESTATE_METADATA: &str = "tracestate";
/// The environment variable holding the operator key.
pub const OPERATOR_KEY_ENV: &str = "PORTCULLIS_OPERATOR_KEY";
/// The environment variable holding the service credential.
pub const SERVICE_TOKEN_ENV: &str = "PORTCULLIS_SERVICE_TOKEN";
/// The shortest operator key or service credential accepted.
pub const MIN_SECRET_LEN: usize = 16;

/// The role of a tenant API key: the one definition, in the domain crate.
pub use portcullis_domain::Role;

/// A valid tenant API key: what introspection answers (the domain's one definition).
pub use portcullis_domain::KeyIdentity as TenantKey;

/// The kind of credential a call carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A tenant API key.
    Key(TenantKey),
    /// The operator key: tenant management only.
    Operator,
    /// The service credential, acting for the tenant of `x-portcullis-tenant` when given.
    Service {
        /// The tenant named in `x-portcullis-tenant`.
        tenant: Option<String>,
    },
}

impl Principal {
    /// How the principal is named in messages: `viewer key`, `operator`, `service`.
    pub fn describe(&self) -> String {
        match self {
            Principal::Key(key) => format!("{} key", key.role),
            Principal::Operator => "the operator key".to_owned(),
            Principal::Service { .. } => "the service credential".to_owned(),
        }
    }
}

/// W3C trace context of a call, taken from its metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    /// `traceparent`, when present and well-formed.
    pub traceparent: Option<String>,
    /// `tracestate`, kept only with a valid `traceparent`.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// Reads `traceparent` and `tracestate`; a malformed `traceparent` is dropped (W3C: the
    /// receiver then starts a new trace) rather than refused.
    pub fn from_metadata(metadata: &MetadataMap) -> TraceContext {
        let text = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let traceparent = text(TRACEPARENT_METADATA)
            .filter(|tp| is_valid_traceparent(tp))
            .map(str::to_owned);
        let tracestate = traceparent
            .as_ref()
            .and(text(TRACESTATE_METADATA))
            .filter(|ts| !ts.is_empty() && ts.len() <= 512)
            .map(str::to_owned);
        TraceContext {
            traceparent,
            tracestate,
        }
    }
}

impl TraceContext {
    /// The trace context a call passes on: its own span's (the current one, made by the
    /// authentication layer as a child of the caller's) while spans are exported; otherwise
    /// the caller's, as it came ([`TraceContext::from_metadata`]).
    pub fn of_call(metadata: &MetadataMap) -> TraceContext {
        use portcullis_telemetry::propagation::{context_of, exporting_traces, w3c_of};
        let current = exporting_traces()
            .then(tracing::Span::current)
            .and_then(|span| context_of(&span))
            .and_then(|cx| w3c_of(&cx));
        match current {
            Some((traceparent, tracestate)) => TraceContext {
                traceparent: Some(traceparent),
                tracestate: (!tracestate.is_empty()).then_some(tracestate),
            },
            None => TraceContext::from_metadata(metadata),
        }
    }
}

/// `version-traceid-spanid-flags`: 2, 32, 16 and 2 lower-case hex digits, ids not all zero,
/// version not `ff`.
pub fn is_valid_traceparent(tp: &str) -> bool {
    let parts: Vec<&str> = tp.split('-').collect();
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    match parts.as_slice() {
        [version, trace, span, flags, rest @ ..] => {
            hex(version, 2)
                && *version != "ff"
                && (rest.is_empty() || *version != "00")
                && hex(trace, 32)
                && nonzero(trace)
                && hex(span, 16)
                && nonzero(span)
                && hex(flags, 2)
        }
        _ => false,
    }
}

/// The authenticated caller of one request, put in the request's extensions by the
/// authentication layer. Handlers get it with [`Caller::of`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The credential.
    pub principal: Principal,
    /// The call's trace context.
    pub trace: TraceContext,
}

impl Caller {
    /// The caller of a request that went through the authentication layer; `Internal` when
    /// there is none (a method served without the layer: a wiring bug, never the client's).
    pub fn of<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
        request
            .extensions()
            .get::<Caller>()
            .ok_or_else(|| Status::internal("the request was not authenticated"))
    }

    /// The tenant a request acts in ([`Caller::of`], then [`Caller::tenant`]): the preamble
    /// of every handler that needs nothing else of its caller.
    pub fn tenant_of<T>(request: &tonic::Request<T>) -> Result<&str, Status> {
        Caller::of(request)?.tenant()
    }

    /// The tenant key, when the caller used one.
    pub fn key(&self) -> Option<&TenantKey> {
        match &self.principal {
            Principal::Key(key) => Some(key),
            _ => None,
        }
    }

    /// The caller's role, for tenant keys.
    pub fn role(&self) -> Option<Role> {
        self.key().map(|k| k.role)
    }

    /// The key id, for tenant keys.
    pub fn key_id(&self) -> Option<&str> {
        self.key().map(|k| k.key_id.as_str())
    }

    /// For a connector key, its cluster's id.
    pub fn connector_cluster(&self) -> Option<&str> {
        self.key()
            .filter(|k| k.role == Role::Connector)
            .and_then(|k| k.cluster_id.as_deref())
    }

    /// Whether the caller is the service credential.
    pub fn is_service(&self) -> bool {
        matches!(self.principal, Principal::Service { .. })
    }

    /// The tenant the call acts in: the key's tenant, or for the service credential the
    /// tenant of `x-portcullis-tenant` (InvalidArgument when absent). The operator acts in
    /// no tenant (PermissionDenied).
    pub fn tenant(&self) -> Result<&str, Status> {
        self.tenant_for("")
    }

    /// The tenant the call acts in, for requests that also carry a tenant field
    /// (`request_tenant`, empty when not given). A tenant key may leave it empty or name its
    /// own tenant; the service credential names the tenant there or in
    /// `x-portcullis-tenant` (both given must agree).
    pub fn tenant_for<'a>(&'a self, request_tenant: &'a str) -> Result<&'a str, Status> {
        match &self.principal {
            Principal::Key(key) => {
                if request_tenant.is_empty() || request_tenant == key.tenant_id {
                    Ok(&key.tenant_id)
                } else {
                    Err(Status::permission_denied(
                        "tenant_id: a tenant key acts only in its own tenant",
                    ))
                }
            }
            Principal::Service { tenant } => match (tenant.as_deref(), request_tenant) {
                (Some(header), "") => Ok(header),
                (None, "") => Err(Status::invalid_argument(format!(
                    "{TENANT_METADATA}: the service credential must name the tenant it acts for"
                ))),
                (Some(header), body) if header != body => Err(Status::invalid_argument(format!(
                    "tenant_id: {body:?} differs from {TENANT_METADATA} {header:?}"
                ))),
                (_, body) => Ok(body),
            },
            Principal::Operator => Err(Status::permission_denied("the operator key manages tenants only")),
        }
    }
}

/// A boxed future, for the object-safe [`Authenticator`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Resolves a tenant API key. In the policy store, the store itself; in other services, the
/// policy store's `AuthService.Introspect`, cached for at most 30 s.
pub trait Authenticator: Send + Sync + 'static {
    /// What `key` is. `Unauthenticated` when it is unknown, revoked or expired;
    /// `Unavailable` when it cannot be checked now.
    fn authenticate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<TenantKey, Status>>;

    /// Drops what is cached of the key `key_id`: it was revoked (`apikey.revoked`). Nothing
    /// to do for an authenticator that caches nothing.
    fn forget_key(&self, _key_id: &str) {}

    /// Drops every cached answer: events may have been missed.
    fn forget_all(&self) {}
}

/// A secret compared in constant time and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`; InvalidArgument-style error text when it is shorter than
    /// [`MIN_SECRET_LEN`] or has characters a metadata value cannot carry.
    pub fn new(what: &str, value: impl Into<String>) -> Result<Secret, String> {
        let value = value.into();
        if value.chars().count() < MIN_SECRET_LEN {
            return Err(format!("{what} must be at least {MIN_SECRET_LEN} characters"));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("{what} must be visible ASCII characters without spaces"));
        }
        Ok(Secret(value))
    }

    /// The secret itself, to send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this secret, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The server-side credentials: the operator key and the service credential (either may
/// be absent: then nobody can use it).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// `PORTCULLIS_OPERATOR_KEY`.
    pub operator_key: Option<Secret>,
    /// `PORTCULLIS_SERVICE_TOKEN`.
    pub service_token: Option<Secret>,
}

impl Credentials {
    /// Both credentials, checked: each at least [`MIN_SECRET_LEN`] visible characters, and
    /// not the same.
    pub fn new(operator_key: Option<String>, service_token: Option<String>) -> Result<Credentials, String> {
        let operator_key = operator_key.map(|k| Secret::new(OPERATOR_KEY_ENV, k)).transpose()?;
        let service_token = service_token.map(|k| Secret::new(SERVICE_TOKEN_ENV, k)).transpose()?;
        if let (Some(a), Some(b)) = (&operator_key, &service_token)
            && a.matches(b.expose())
        {
            return Err(format!("{OPERATOR_KEY_ENV} and {SERVICE_TOKEN_ENV} must differ"));
        }
        Ok(Credentials {
            operator_key,
            service_token,
        })
    }

    /// Reads `PORTCULLIS_OPERATOR_KEY` and `PORTCULLIS_SERVICE_TOKEN` (unset or empty: absent).
    pub fn from_env() -> Result<Credentials, String> {
        let read = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Credentials::new(read(OPERATOR_KEY_ENV), read(SERVICE_TOKEN_ENV))
    }
}

/// The bearer token of `authorization: Bearer <token>`.
pub fn bearer_token(metadata: &MetadataMap) -> Result<&str, Status> {
    let missing = || Status::unauthenticated("missing credentials: send the metadata `authorization: Bearer <key>`");
    let value = metadata.get("authorization").ok_or_else(missing)?;
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization: not valid text"))?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(missing());
    }
    Ok(token)
}

/// Resolves the credential of a call to its principal: the operator key, the service
/// credential, or else a tenant key through `authenticator`. Checks `x-portcullis-tenant`:
/// only the service credential may name a tenant other than the key's own.
pub async fn authenticate(
    metadata: &MetadataMap,
    credentials: &Credentials,
    authenticator: &dyn Authenticator,
) -> Result<Caller, Status> {
    let token = bearer_token(metadata)?;
    let header_tenant = match metadata.get(TENANT_METADATA) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| Status::invalid_argument(format!("{TENANT_METADATA}: not valid text")))?
                .trim()
                .to_owned(),
        ),
    };
    let principal = if credentials.operator_key.as_ref().is_some_and(|k| k.matches(token)) {
        if header_tenant.is_some() {
            return Err(Status::permission_denied(format!(
                "{TENANT_METADATA}: only the service credential may name a tenant"
            )));
        }
        Principal::Operator
    } else if credentials.service_token.as_ref().is_some_and(|k| k.matches(token)) {
        if let Some(Err(e)) = header_tenant.as_deref().map(portcullis_domain::TenantId::parse) {
            return Err(Status::invalid_argument(format!("{TENANT_METADATA}: {}", e.reason)));
        }
        Principal::Service { tenant: header_tenant }
    } else {
        let key = authenticator.authenticate(token).await?;
        if let Some(tenant) = &header_tenant
            && *tenant != key.tenant_id
        {
            return Err(Status::permission_denied(format!(
                "{TENANT_METADATA}: a tenant key acts only in its own tenant"
            )));
        }
        Principal::Key(key)
    };
    Ok(Caller {
        principal,
        trace: TraceContext::of_call(metadata),
    })
}

/// Whether `id` is a tenant id: `[a-z0-9-]{1,36}` (the rule is `TenantId::is_valid`).
pub fn is_valid_tenant_id(id: &str) -> bool {
    portcullis_domain::TenantId::is_valid(id)
}
