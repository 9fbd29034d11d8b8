//! The signature service's guards, embedded and distributed: a revoked key is refused once
//! `apikey.revoked` arrives (well before the key cache's 30 s TTL could end it), and a tenant
//! over `[signature.rate_limit]` gets ResourceExhausted on Verify and ResolveDigest, over gRPC
//! and over the bus, while another tenant keeps its own budget.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::Duration;

use portcullis_proto::common::v1 as pc;
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::auth_service_client::AuthServiceClient;
use portcullis_proto::policystore::v1::tenant_service_client::TenantServiceClient;
use portcullis_proto::signature::v1 as ps;
use portcullis_proto::signature::v1::signature_service_client::SignatureServiceClient;
use portcullis_server::Mode;
use portcullis_server::rate_limit::TenantLimit;
use portcullis_signature::{SignatureOptions, rpc};
use portcullis_test_kit::eventually;
use tonic::Code;

mod support;

use support::*;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn verify_request(f: &Fixture) -> ps::VerifyRequest {
    ps::VerifyRequest {
        image: format!("{}/app@{DIGEST}", f.registry.host()),
        attestors: vec!["nobody".into()],
        ..Default::default()
    }
}

async fn grpc_verify(f: &Fixture, key: &str) -> Result<ps::VerifyResponse, tonic::Status> {
    SignatureServiceClient::new(f.channel.clone())
        .verify(f.store.request(key, verify_request(f)))
        .await
        .map(tonic::Response::into_inner)
}

async fn grpc_resolve(f: &Fixture, key: &str) -> Result<ps::ResolveDigestResponse, tonic::Status> {
    SignatureServiceClient::new(f.channel.clone())
        .resolve_digest(f.store.request(
            key,
            ps::ResolveDigestRequest {
                image: format!("{}/app@{DIGEST}", f.registry.host()),
                ..Default::default()
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn bus_verify(f: &Fixture, tenant: &str) -> Result<ps::VerifyResponse, portcullis_signature::SignatureError> {
    let request = ps::VerifyRequest {
        tenant_id: tenant.to_owned(),
        ..verify_request(f)
    };
    rpc::request(&f.store.bus, &request, Duration::from_secs(10)).await
}

#[track_caller]
fn assert_exhausted<T: std::fmt::Debug>(result: Result<T, tonic::Status>) {
    match result {
        Ok(v) => panic!("expected ResourceExhausted, got Ok({v:?})"),
        Err(status) => {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert!(status.message().contains("rate limit"), "{status:?}");
        }
    }
}

async fn revoked_key_is_refused_at_once(mode: Mode) {
    let f = start(mode).await;
    let mut auth = AuthServiceClient::new(f.store.channel().await.unwrap());
    let created = auth
        .create_api_key(f.store.request(
            &f.store.admin_key,
            pb::CreateApiKeyRequest {
                role: pc::Role::Viewer as i32,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    // Checked by the store once, then served from the key cache.
    grpc_verify(&f, &created.secret).await.unwrap();
    grpc_verify(&f, &created.secret).await.unwrap();
    auth.revoke_api_key(f.store.request(
        &f.store.admin_key,
        pb::RevokeApiKeyRequest {
            key_id: created.key.unwrap().id,
        },
    ))
    .await
    .unwrap();
    // The key cache would serve the key for 30 s; the event ends it well before.
    eventually(Duration::from_secs(10), async || {
        match grpc_verify(&f, &created.secret).await {
            Err(status) if status.code() == Code::Unauthenticated => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Other keys of the tenant still work.
    grpc_verify(&f, &f.store.admin_key).await.unwrap();
}

async fn a_tenant_over_its_rate_is_refused(mode: Mode) {
    let options = SignatureOptions {
        rate_limit: portcullis_server::rate_limit::RateLimitConfig {
            // Three calls, then one token every 1000 s: nothing refills during the test.
            default: TenantLimit {
                per_second: 0.001,
                burst: 3,
            },
            ..Default::default()
        },
        ..SignatureOptions::default()
    };
    let f = start_with(mode, options).await;
    let admin = f.store.admin_key.clone();
    let tenant = f.store.tenant_id.clone();
    // Verify and ResolveDigest over gRPC and Verify over the bus share the tenant's bucket.
    grpc_verify(&f, &admin).await.unwrap();
    grpc_resolve(&f, &admin).await.unwrap();
    bus_verify(&f, &tenant).await.unwrap();
    assert_exhausted(grpc_verify(&f, &admin).await);
    assert_exhausted(grpc_resolve(&f, &admin).await);
    let refused = bus_verify(&f, &tenant).await.unwrap_err().to_string();
    let code = Code::ResourceExhausted as i32;
    assert!(
        refused.contains(&format!("code {code}")) && refused.contains("rate limit"),
        "{refused}"
    );
    // Another tenant has its own budget.
    TenantServiceClient::new(f.store.channel().await.unwrap())
        .create_tenant(f.store.request(
            &f.store.operator_key,
            pb::CreateTenantRequest {
                name: "Other".to_owned(),
                id: "other-tenant".to_owned(),
                admin_key_expires_at: None,
            },
        ))
        .await
        .unwrap();
    bus_verify(&f, "other-tenant").await.unwrap();
}

portcullis_test_kit::both! {
    embedded: portcullis_server::Mode::Embedded,
    distributed: portcullis_server::Mode::Distributed;
    revoked_key_is_refused_at_once,
    a_tenant_over_its_rate_is_refused,
}
