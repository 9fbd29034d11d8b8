//! The shared plumbing without a service: the permission table against the contracts,
//! credentials, metadata parsing, the caller's tenant rules, and the listener checks.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;

use portcullis_server::auth::{authenticate, bearer_token, is_valid_traceparent};
use portcullis_server::permissions::{Access, GRANTS, permits};
use portcullis_server::status::{field_violations, invalid_fields};
use portcullis_server::{
    AuthState, Authenticator, BoxFuture, Caller, Credentials, GrpcServer, Mode, PermissionTable, Principal, Role,
    ServerConfig, ServerError, TenantKey, TraceContext,
};
use prost::Message;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

const OPERATOR: &str = "operator-key-0123456789";
const SERVICE: &str = "service-token-0123456789";

/// Knows one key per role of tenant `t1`: `key-<role>`.
struct FakeKeys;

impl Authenticator for FakeKeys {
    fn authenticate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<TenantKey, Status>> {
        Box::pin(async move {
            let role = match key {
                "key-admin" => Role::Admin,
                "key-editor" => Role::Editor,
                "key-viewer" => Role::Viewer,
                "key-connector" => Role::Connector,
                _ => return Err(Status::unauthenticated("API key is unknown")),
            };
            Ok(TenantKey {
                tenant_id: "t1".to_owned(),
                role,
                cluster_id: (role == Role::Connector).then(|| "c1".to_owned()),
                key_id: format!("id-{role}"),
                expires_at: None,
            })
        })
    }
}

fn credentials() -> Credentials {
    Credentials::new(Some(OPERATOR.to_owned()), Some(SERVICE.to_owned())).unwrap()
}

fn state() -> AuthState {
    AuthState {
        credentials: credentials(),
        authenticator: Arc::new(FakeKeys),
        table: PermissionTable::standard(),
        rate_limit: None,
    }
}

fn metadata(pairs: &[(&'static str, &str)]) -> MetadataMap {
    let mut map = MetadataMap::new();
    for (name, value) in pairs {
        map.insert(*name, MetadataValue::try_from(*value).unwrap());
    }
    map
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

#[test]
fn every_built_service_method_has_an_access_rule() {
    let set = prost_types::FileDescriptorSet::decode(portcullis_proto::FILE_DESCRIPTOR_SET).unwrap();
    let table = PermissionTable::standard();
    let mut seen = 0;
    let built = [
        "portcullis.policystore.v1",
        "portcullis.admission.v1",
        "portcullis.signature.v1",
        "portcullis.continuous.v1",
        "portcullis.telemetry.v1",
    ];
    for file in set.file.iter().filter(|f| built.contains(&f.package())) {
        for service in &file.service {
            for method in &service.method {
                let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                assert!(table.access(&path).is_some(), "{path} has no access rule");
                seen += 1;
            }
        }
    }
    assert_eq!(
        seen,
        table.methods().count(),
        "the table names methods the contracts do not have"
    );
    assert_eq!(table.access("/grpc.health.v1.Health/Check"), Some(Access::Public));
    assert_eq!(table.access("/portcullis.policystore.v1.PolicyService/Nope"), None);
    assert_eq!(
        table.access("/portcullis.admission.v1.AdmissionService/Review"),
        Some(Access::ClusterReport)
    );
    // Replaying a draft is an editor's or admin's call, as previewing one is.
    assert_eq!(
        table.access("/portcullis.telemetry.v1.TelemetryService/ReplayPolicy"),
        Some(Access::Write)
    );
}

#[test]
fn grants_follow_the_roles() {
    let key = |role| {
        Principal::Key(TenantKey {
            tenant_id: "t".to_owned(),
            role,
            cluster_id: None,
            key_id: "k".to_owned(),
            expires_at: None,
        })
    };
    let (admin, editor, viewer, connector) = (
        key(Role::Admin),
        key(Role::Editor),
        key(Role::Viewer),
        key(Role::Connector),
    );
    let operator = Principal::Operator;
    let service = Principal::Service { tenant: None };
    // Every class but Public has exactly one row.
    assert_eq!(GRANTS.len(), 8);
    for (who, allowed) in [
        (
            &viewer,
            [Access::Identity, Access::Read, Access::ClusterRead].as_slice(),
        ),
        (
            &editor,
            &[Access::Identity, Access::Read, Access::Write, Access::ClusterRead],
        ),
        (
            &admin,
            &[
                Access::Identity,
                Access::Read,
                Access::Write,
                Access::Admin,
                Access::ClusterRead,
            ],
        ),
        (
            &connector,
            &[Access::Identity, Access::ClusterRead, Access::ClusterReport],
        ),
        (&operator, &[Access::Identity, Access::Operator]),
        (
            &service,
            &[
                Access::Identity,
                Access::Read,
                Access::ClusterRead,
                Access::ClusterReport,
                Access::Service,
            ],
        ),
    ] {
        for (access, _) in GRANTS {
            assert_eq!(
                permits(*access, who),
                allowed.contains(access),
                "{} / {access:?}",
                who.describe()
            );
        }
        assert!(permits(Access::Public, who));
    }
}

#[tokio::test]
async fn the_layer_authenticates_then_authorises() {
    let state = state();
    let create = "/portcullis.policystore.v1.PolicyService/CreatePolicy";
    let effective = "/portcullis.policystore.v1.PolicyService/GetEffectivePolicy";
    let tenants = "/portcullis.policystore.v1.TenantService/ListTenants";

    let no_credential = state.check(create, &metadata(&[])).await.unwrap_err();
    assert_eq!(no_credential.code(), Code::Unauthenticated);
    let unknown = state
        .check(create, &metadata(&[("authorization", &bearer("nope"))]))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);
    // Public methods need nothing.
    assert!(
        state
            .check("/grpc.health.v1.Health/Check", &metadata(&[]))
            .await
            .unwrap()
            .is_none()
    );
    // An unknown method is refused before authentication.
    assert_eq!(
        state.check("/x.Y/Z", &metadata(&[])).await.unwrap_err().code(),
        Code::Unimplemented
    );

    let viewer = metadata(&[("authorization", &bearer("key-viewer"))]);
    let denied = state.check(create, &viewer).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("viewer key"), "{}", denied.message());
    let editor = state
        .check(create, &metadata(&[("authorization", &bearer("key-editor"))]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(editor.role(), Some(Role::Editor));

    let connector = metadata(&[("authorization", &bearer("key-connector"))]);
    let caller = state.check(effective, &connector).await.unwrap().unwrap();
    assert_eq!(caller.connector_cluster(), Some("c1"));
    assert_eq!(
        state.check(create, &connector).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    let operator = metadata(&[("authorization", &bearer(OPERATOR))]);
    assert_eq!(
        state.check(tenants, &operator).await.unwrap().unwrap().principal,
        Principal::Operator
    );
    assert_eq!(
        state.check(create, &operator).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let admin = metadata(&[("authorization", &bearer("key-admin"))]);
    assert_eq!(
        state.check(tenants, &admin).await.unwrap_err().code(),
        Code::PermissionDenied
    );
}

#[tokio::test]
async fn only_the_service_credential_acts_for_another_tenant() {
    let creds = credentials();
    let service = authenticate(
        &metadata(&[("authorization", &bearer(SERVICE)), ("x-portcullis-tenant", "t2")]),
        &creds,
        &FakeKeys,
    )
    .await
    .unwrap();
    assert_eq!(service.tenant().unwrap(), "t2");
    assert_eq!(service.tenant_for("").unwrap(), "t2");
    assert_eq!(service.tenant_for("t3").unwrap_err().code(), Code::InvalidArgument);

    let bare_service = authenticate(&metadata(&[("authorization", &bearer(SERVICE))]), &creds, &FakeKeys)
        .await
        .unwrap();
    assert_eq!(bare_service.tenant().unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(bare_service.tenant_for("t9").unwrap(), "t9");
    let bad_tenant = authenticate(
        &metadata(&[
            ("authorization", &bearer(SERVICE)),
            ("x-portcullis-tenant", "Not A Tenant"),
        ]),
        &creds,
        &FakeKeys,
    )
    .await
    .unwrap_err();
    assert_eq!(bad_tenant.code(), Code::InvalidArgument);

    let admin = authenticate(&metadata(&[("authorization", &bearer("key-admin"))]), &creds, &FakeKeys)
        .await
        .unwrap();
    assert_eq!(admin.tenant().unwrap(), "t1");
    assert_eq!(admin.tenant_for("t1").unwrap(), "t1");
    assert_eq!(admin.tenant_for("t2").unwrap_err().code(), Code::PermissionDenied);
    for key in ["key-admin", "key-connector", OPERATOR] {
        let other = authenticate(
            &metadata(&[("authorization", &bearer(key)), ("x-portcullis-tenant", "t2")]),
            &creds,
            &FakeKeys,
        )
        .await
        .unwrap_err();
        assert_eq!(other.code(), Code::PermissionDenied, "{key}");
    }
    let operator = Caller {
        principal: Principal::Operator,
        trace: TraceContext::default(),
    };
    assert_eq!(operator.tenant().unwrap_err().code(), Code::PermissionDenied);
}

#[test]
fn bearer_and_trace_metadata() {
    assert_eq!(
        bearer_token(&metadata(&[("authorization", "Bearer abc")])).unwrap(),
        "abc"
    );
    assert_eq!(
        bearer_token(&metadata(&[("authorization", "bearer  abc ")])).unwrap(),
        "abc"
    );
    for bad in ["Basic abc", "Bearer", "abc"] {
        assert_eq!(
            bearer_token(&metadata(&[("authorization", bad)])).unwrap_err().code(),
            Code::Unauthenticated,
            "{bad}"
        );
    }
    let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert!(is_valid_traceparent(good));
    for bad in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "",
    ] {
        assert!(!is_valid_traceparent(bad), "{bad}");
    }
    let trace = TraceContext::from_metadata(&metadata(&[("traceparent", good), ("tracestate", "a=b")]));
    assert_eq!(trace.traceparent.as_deref(), Some(good));
    assert_eq!(trace.tracestate.as_deref(), Some("a=b"));
    // A malformed traceparent is dropped, with its tracestate.
    let dropped = TraceContext::from_metadata(&metadata(&[("traceparent", "junk"), ("tracestate", "a=b")]));
    assert_eq!(dropped, TraceContext::default());
}

#[test]
fn credentials_are_checked() {
    assert!(Credentials::new(Some("short".to_owned()), None).is_err());
    assert!(Credentials::new(Some("has a space in it here".to_owned()), None).is_err());
    assert!(Credentials::new(Some(OPERATOR.to_owned()), Some(OPERATOR.to_owned())).is_err());
    let creds = credentials();
    assert!(creds.operator_key.as_ref().unwrap().matches(OPERATOR));
    assert!(!creds.operator_key.as_ref().unwrap().matches(SERVICE));
    assert!(!format!("{creds:?}").contains(OPERATOR), "secrets are never printed");
}

#[test]
fn invalid_fields_carry_every_field() {
    let status = invalid_fields([("a.b", "bad"), ("c[0]", "worse")]);
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "a.b: bad; c[0]: worse");
    assert_eq!(
        field_violations(&status),
        vec![
            ("a.b".to_owned(), "bad".to_owned()),
            ("c[0]".to_owned(), "worse".to_owned())
        ]
    );
    assert!(field_violations(&Status::not_found("x")).is_empty());
}

#[tokio::test]
async fn plain_text_on_a_public_address_is_refused_in_distributed_mode() {
    let public = "0.0.0.0:0".parse().unwrap();
    let server = GrpcServer::new(ServerConfig::new(public, Mode::Distributed), state());
    let refused = server.bind().await.unwrap_err();
    assert!(matches!(refused, ServerError::Config(_)), "{refused}");
    assert!(refused.to_string().contains("TLS"), "{refused}");

    // Loopback is fine, and port 0 comes back as the real port.
    let server = GrpcServer::new(
        ServerConfig::new("127.0.0.1:0".parse().unwrap(), Mode::Distributed),
        state(),
    );
    let bound = server.bind().await.unwrap();
    assert_ne!(bound.local_addr().port(), 0);
    assert_eq!(bound.url(), format!("http://{}", bound.local_addr()));

    // Missing TLS files are an error at start, not at the first call.
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), Mode::Embedded);
    config.tls = Some(portcullis_server::TlsFiles {
        cert: "/nonexistent/cert.pem".into(),
        key: "/nonexistent/key.pem".into(),
    });
    let missing = GrpcServer::new(config, state()).bind().await.unwrap_err();
    assert!(matches!(missing, ServerError::Tls(_)), "{missing}");
}

/// Stands in for PolicyService: every call panics.
#[derive(Clone)]
struct Panics;

impl tonic::server::NamedService for Panics {
    const NAME: &'static str = "portcullis.policystore.v1.PolicyService";
}

impl tower::Service<http::Request<tonic::body::Body>> for Panics {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async { panic!("a handler bug") })
    }
}

/// The status `service` answers a call of `path` with `key`.
async fn status_of<S>(service: &S, path: &str, key: Option<&str>) -> Status
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>> + Clone,
    S::Error: std::fmt::Debug,
{
    use tower::ServiceExt as _;
    let mut request = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc");
    if let Some(key) = key {
        request = request
            .header("authorization", bearer(key))
            .header("x-portcullis-tenant", "t1");
    }
    let request = request.body(tonic::body::Body::empty()).unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    Status::from_header_map(response.headers()).unwrap()
}

#[tokio::test]
async fn the_in_process_service_authenticates_and_catches_panics() {
    let mut server = GrpcServer::new(
        ServerConfig::new("127.0.0.1:0".parse().unwrap(), Mode::Embedded),
        state(),
    );
    server.add_service(Panics);
    let service = server.into_service();
    let get = "/portcullis.policystore.v1.PolicyService/GetPolicy";
    assert_eq!(status_of(&service, get, None).await.code(), Code::Unauthenticated);
    assert_eq!(
        status_of(&service, "/x.Y/Z", Some(SERVICE)).await.code(),
        Code::Unimplemented
    );
    let panicked = status_of(&service, get, Some(SERVICE)).await;
    assert_eq!(panicked.code(), Code::Internal);
    assert!(panicked.message().contains("internal error"), "{}", panicked.message());
}
