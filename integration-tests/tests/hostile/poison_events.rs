//! Finding 2: one tenant's event that the bus refuses for good (larger than its limit) must
//! not stop every tenant's events. The relay moves it to the dead letters and goes on: the
//! next tenant's key revocation still reaches admission at once, and the operator lists the
//! dead letter. The API refuses settings lists long enough to make such an event.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use portcullis_admission::AdmissionOptions;
use portcullis_admission::testing::StackOptions;
use portcullis_integration_tests::admission::{Env, container, create_pod, pod, pod_spec, policy, privileged};
use portcullis_integration_tests::store::{Api, by_name, expect_code};
use portcullis_policy_client::keys::KeyCacheOptions;
use portcullis_policy_store::testing::authed;
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::operator_service_client::OperatorServiceClient;
use portcullis_server::Mode;
use portcullis_storage::{Actor, ResourceRef, SettingsUpdate};
use portcullis_test_kit::eventually;
use serde_json::json;
use tonic::Code;

/// Namespaces enough for a `cluster.changed` event over the bus's 1 MiB limit: 30,000
/// entries of 42 bytes encoded, about 1.26 MB (and 30 times the API's limit).
fn oversized_namespaces() -> Vec<String> {
    (0..30_000).map(|i| format!("ns-{i:037}")).collect()
}

pub async fn oversized_event_does_not_stop_other_tenants(mode: Mode) {
    // Keys are trusted for 10 minutes: only the revocation event can drop one in time.
    let options = StackOptions {
        admission: AdmissionOptions {
            key_cache: KeyCacheOptions {
                ttl: Duration::from_secs(600),
                ..KeyCacheOptions::default()
            },
            ..AdmissionOptions::default()
        },
        ..StackOptions::new(mode)
    };
    let doc = policy("victim", json!([privileged("block")]));
    // The victim: tenant `default`, its cluster c1 and connector key.
    let env = Env::start(options, &doc.to_string()).await;
    let operator = Api::new(&env.stack.store, &env.stack.store.operator_key).await;
    let mallory_key = operator.clone().create_tenant("mallory").await.unwrap();
    let mut mallory = operator.with_key(&mallory_key);
    mallory.register_cluster("big", None).await.unwrap();

    // The API refuses a list that long, naming the field and the limit.
    let refused = mallory
        .clusters
        .update_cluster_settings(mallory.req(pb::UpdateClusterSettingsRequest {
            cluster: by_name("big"),
            settings: Some(pb::ClusterSettings {
                excluded_namespaces: oversized_namespaces(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["excluded_namespaces".into()],
            }),
            ..Default::default()
        }))
        .await;
    let status = expect_code(refused, Code::InvalidArgument);
    assert!(
        status.message().contains("settings.excluded_namespaces") && status.message().contains("1000"),
        "names the field and the limit: {}",
        status.message()
    );

    // The same change written past the API (a row an older version let in): its event is
    // over the bus's limit.
    env.stack
        .store
        .store
        .update_cluster_settings(
            "mallory",
            &Actor::operator(),
            &ResourceRef::name("big"),
            &SettingsUpdate {
                excluded_namespaces: Some(oversized_namespaces()),
                ..SettingsUpdate::default()
            },
            None,
        )
        .await
        .unwrap();

    // The victim's connector key is in use (cached by admission), then revoked.
    let allowed = create_pod(pod(
        "web",
        "apps",
        pod_spec(false, vec![container("app", "nginx:1.27", false)]),
    ));
    assert!(env.judge(&allowed).await.allowed());
    let mut victim = env.admin.clone();
    victim.revoke_key(&env.connector_key_id).await.unwrap();
    let started = Instant::now();
    let env_ref = &env;
    let allowed_ref = &allowed;
    eventually(Duration::from_secs(15), || async move {
        match env_ref.review(allowed_ref).await {
            Err(status) if status.code() == Code::Unauthenticated => Ok(()),
            other => Err(format!(
                "the revoked key is still accepted (the relay is stuck?): {other:?}"
            )),
        }
    })
    .await;
    let revoked_after = started.elapsed();
    eprintln!("revocation in force after {} ms", revoked_after.as_millis());

    // The refused event is a dead letter, listed for the operator (and only the operator).
    let listed = list_dead_letters(&env, &env.stack.store.operator_key).await.unwrap();
    let [dead] = listed.as_slice() else {
        panic!("one dead letter expected: {listed:?}");
    };
    assert_eq!(
        (dead.tenant_id.as_str(), dead.topic.as_str()),
        ("mallory", "cluster.changed")
    );
    assert!(dead.payload_bytes > 1024 * 1024, "{dead:?}");
    assert!(dead.reason.contains("exceeds the limit"), "{dead:?}");
    let denied = list_dead_letters(&env, &mallory_key).await;
    expect_code(denied, Code::PermissionDenied);
    crate::report::row(
        "2",
        "a cluster settings change whose event is over the bus's 1 MiB limit",
        &format!(
            "refused at the API; one forced into the outbox ({} bytes) became a dead letter",
            dead.payload_bytes
        ),
        &format!(
            "another tenant's key revocation in force at admission after {} ms",
            revoked_after.as_millis()
        ),
    );

    // Later events of the poisoning tenant flow too.
    mallory
        .clusters
        .update_cluster_settings(mallory.req(pb::UpdateClusterSettingsRequest {
            cluster: by_name("big"),
            settings: Some(pb::ClusterSettings {
                excluded_namespaces: vec!["kube-system".into()],
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["excluded_namespaces".into()],
            }),
            ..Default::default()
        }))
        .await
        .unwrap();
    let store = &env.stack.store.store;
    eventually(Duration::from_secs(15), || async move {
        match store.pending_event_count().await.unwrap() {
            0 => Ok(()),
            n => Err(format!("{n} events still wait in the outbox")),
        }
    })
    .await;
}

/// The dead letters, listed with `key`.
async fn list_dead_letters(env: &Env, key: &str) -> Result<Vec<pb::DeadLetter>, tonic::Status> {
    let mut client = OperatorServiceClient::new(env.stack.store_channel().await.unwrap());
    let request = authed(key, pb::ListDeadLettersRequest::default());
    Ok(client.list_dead_letters(request).await?.into_inner().dead_letters)
}

portcullis_test_kit::both! {
    embedded: portcullis_server::Mode::Embedded,
    distributed: portcullis_server::Mode::Distributed;
    oversized_event_does_not_stop_other_tenants,
}
