//! The policy store's clients ([`Api`]), status assertions and bus helpers shared by the
//! suites.

use std::time::Duration;

use portcullis_bus::{BroadcastSubscription, Bus, BusConfig, ReceivedEvent, StartFrom, TopicFilter};
use portcullis_policy_store::testing::{TestServer, authed};
use portcullis_proto::common::v1 as pc;
use portcullis_proto::events::v1 as pe;
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::attestor_service_client::AttestorServiceClient;
use portcullis_proto::policystore::v1::audit_service_client::AuditServiceClient;
use portcullis_proto::policystore::v1::auth_service_client::AuthServiceClient;
use portcullis_proto::policystore::v1::cluster_service_client::ClusterServiceClient;
use portcullis_proto::policystore::v1::policy_service_client::PolicyServiceClient;
use portcullis_proto::policystore::v1::ruleset_service_client::RulesetServiceClient;
use portcullis_proto::policystore::v1::tenant_service_client::TenantServiceClient;
use portcullis_server::status::field_violations;
use portcullis_test_kit::eventually;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// How long an expected event may take to arrive.
pub const EVENT_WAIT: Duration = Duration::from_secs(20);
/// How long the bus must stay quiet when nothing should be published.
pub const QUIET: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------------------
// References (the documents are the test kit's)

pub fn by_name(name: &str) -> Option<pc::ResourceRef> {
    Some(pc::ResourceRef {
        r#ref: Some(pc::resource_ref::Ref::Name(name.to_owned())),
    })
}

pub fn by_id(id: &str) -> Option<pc::ResourceRef> {
    Some(pc::ResourceRef {
        r#ref: Some(pc::resource_ref::Ref::Id(id.to_owned())),
    })
}

pub use portcullis_test_kit::docs::{attestor_doc, policy_doc, policy_with_refs, ruleset_doc};

// ---------------------------------------------------------------------------------------
// Assertions

/// The error of `result`, which must have `code`.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(v) => panic!("expected {code:?}, got Ok({v:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            status
        }
    }
}

/// `result` is InvalidArgument and names `field` (in the details and in the message).
#[track_caller]
pub fn expect_invalid_field<T: std::fmt::Debug>(result: Result<T, Status>, field: &str) -> Status {
    let status = expect_code(result, Code::InvalidArgument);
    let fields = field_violations(&status);
    assert!(
        fields.iter().any(|(f, _)| f == field),
        "expected a violation at {field:?}, got {fields:?}"
    );
    assert!(
        status.message().contains(field),
        "message should name {field:?}: {}",
        status.message()
    );
    status
}

// ---------------------------------------------------------------------------------------
// Clients

/// A fresh policy store in embedded mode (the fixture of the store suites' `both!`).
pub async fn embedded() -> TestServer {
    TestServer::embedded().await.unwrap_or_else(|e| panic!("{e}"))
}

/// A fresh policy store in distributed mode (the fixture of the store suites' `both!`).
pub async fn distributed() -> TestServer {
    TestServer::distributed().await.unwrap_or_else(|e| panic!("{e}"))
}

/// Every policy store client, calling with one credential.
#[derive(Clone)]
pub struct Api {
    key: String,
    pub policies: PolicyServiceClient<Channel>,
    pub rulesets: RulesetServiceClient<Channel>,
    pub attestors: AttestorServiceClient<Channel>,
    pub clusters: ClusterServiceClient<Channel>,
    pub auth: AuthServiceClient<Channel>,
    pub audit: AuditServiceClient<Channel>,
    pub tenants: TenantServiceClient<Channel>,
}

impl Api {
    /// Clients on a new channel to `server`, authenticating with `key`.
    pub async fn new(server: &TestServer, key: &str) -> Api {
        Api::connect(&server.url, key).await
    }

    /// Clients on a new channel to `url`, authenticating with `key`.
    pub async fn connect(url: &str, key: &str) -> Api {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
            .unwrap()
            .connect()
            .await
            .unwrap();
        Api::on_channel(channel, key)
    }

    /// Clients on `channel` (e.g. a TLS one), authenticating with `key`.
    pub fn on_channel(channel: Channel, key: &str) -> Api {
        Api {
            key: key.to_owned(),
            policies: PolicyServiceClient::new(channel.clone()),
            rulesets: RulesetServiceClient::new(channel.clone()),
            attestors: AttestorServiceClient::new(channel.clone()),
            clusters: ClusterServiceClient::new(channel.clone()),
            auth: AuthServiceClient::new(channel.clone()),
            audit: AuditServiceClient::new(channel.clone()),
            tenants: TenantServiceClient::new(channel),
        }
    }

    /// The same channel with another key.
    pub fn with_key(&self, key: &str) -> Api {
        Api {
            key: key.to_owned(),
            ..self.clone()
        }
    }

    pub fn req<T>(&self, message: T) -> Request<T> {
        authed(&self.key, message)
    }

    pub async fn create_policy(&mut self, document: &str) -> Result<pb::Policy, Status> {
        let req = self.req(pb::CreatePolicyRequest {
            document_json: document.to_owned(),
        });
        Ok(self.policies.create_policy(req).await?.into_inner().policy.unwrap())
    }

    pub async fn get_policy(&mut self, policy: Option<pc::ResourceRef>) -> Result<pb::Policy, Status> {
        let req = self.req(pb::GetPolicyRequest { policy });
        Ok(self.policies.get_policy(req).await?.into_inner().policy.unwrap())
    }

    pub async fn list_policies(&mut self) -> Result<Vec<pb::Policy>, Status> {
        let req = self.req(pb::ListPoliciesRequest {
            page: Some(pc::PageRequest {
                page_size: 500,
                page_token: String::new(),
            }),
            ..Default::default()
        });
        Ok(self.policies.list_policies(req).await?.into_inner().policies)
    }

    pub async fn update_policy(
        &mut self,
        policy: Option<pc::ResourceRef>,
        document: &str,
        expected_revision: u64,
    ) -> Result<pb::UpdatePolicyResponse, Status> {
        let req = self.req(pb::UpdatePolicyRequest {
            policy,
            document_json: document.to_owned(),
            expected_revision,
        });
        Ok(self.policies.update_policy(req).await?.into_inner())
    }

    pub async fn apply_policy(
        &mut self,
        document: &str,
        expected_revision: Option<u64>,
    ) -> Result<pb::ApplyPolicyResponse, Status> {
        let req = self.req(pb::ApplyPolicyRequest {
            document_json: document.to_owned(),
            expected_revision,
        });
        Ok(self.policies.apply_policy(req).await?.into_inner())
    }

    pub async fn duplicate_policy(
        &mut self,
        policy: Option<pc::ResourceRef>,
        new_name: Option<&str>,
    ) -> Result<pb::Policy, Status> {
        let req = self.req(pb::DuplicatePolicyRequest {
            policy,
            new_name: new_name.map(str::to_owned),
        });
        Ok(self.policies.duplicate_policy(req).await?.into_inner().policy.unwrap())
    }

    pub async fn delete_policy(
        &mut self,
        policy: Option<pc::ResourceRef>,
        expected_revision: Option<u64>,
    ) -> Result<pb::DeletePolicyResponse, Status> {
        let req = self.req(pb::DeletePolicyRequest {
            policy,
            expected_revision,
        });
        Ok(self.policies.delete_policy(req).await?.into_inner())
    }

    /// Every revision of a policy, newest first.
    pub async fn history(&mut self, policy: Option<pc::ResourceRef>) -> Result<Vec<pb::PolicyRevisionInfo>, Status> {
        let req = self.req(pb::ListPolicyHistoryRequest {
            policy,
            page: Some(pc::PageRequest {
                page_size: 500,
                page_token: String::new(),
            }),
        });
        Ok(self.policies.list_policy_history(req).await?.into_inner().revisions)
    }

    pub async fn policy_revision(
        &mut self,
        policy: Option<pc::ResourceRef>,
        revision: u64,
    ) -> Result<pb::Policy, Status> {
        let req = self.req(pb::GetPolicyRevisionRequest { policy, revision });
        Ok(self
            .policies
            .get_policy_revision(req)
            .await?
            .into_inner()
            .policy
            .unwrap())
    }

    pub async fn effective(
        &mut self,
        cluster: Option<pc::ResourceRef>,
    ) -> Result<pb::GetEffectivePolicyResponse, Status> {
        let req = self.req(pb::GetEffectivePolicyRequest {
            cluster,
            tenant_id: String::new(),
        });
        Ok(self.policies.get_effective_policy(req).await?.into_inner())
    }

    pub async fn create_ruleset(&mut self, document: &str) -> Result<pb::Ruleset, Status> {
        let req = self.req(pb::CreateRulesetRequest {
            document_json: document.to_owned(),
        });
        Ok(self.rulesets.create_ruleset(req).await?.into_inner().ruleset.unwrap())
    }

    pub async fn create_attestor(&mut self, document: &str) -> Result<pb::Attestor, Status> {
        let req = self.req(pb::CreateAttestorRequest {
            document_json: document.to_owned(),
        });
        Ok(self
            .attestors
            .create_attestor(req)
            .await?
            .into_inner()
            .attestor
            .unwrap())
    }

    pub async fn register_cluster(
        &mut self,
        name: &str,
        policy: Option<pc::ResourceRef>,
    ) -> Result<pb::RegisterClusterResponse, Status> {
        let req = self.req(pb::RegisterClusterRequest {
            name: name.to_owned(),
            policy,
            ..Default::default()
        });
        Ok(self.clusters.register_cluster(req).await?.into_inner())
    }

    pub async fn get_cluster(&mut self, cluster: Option<pc::ResourceRef>) -> Result<pb::Cluster, Status> {
        let req = self.req(pb::GetClusterRequest { cluster });
        Ok(self.clusters.get_cluster(req).await?.into_inner().cluster.unwrap())
    }

    pub async fn list_clusters(&mut self) -> Result<Vec<pb::Cluster>, Status> {
        let req = self.req(pb::ListClustersRequest::default());
        Ok(self.clusters.list_clusters(req).await?.into_inner().clusters)
    }

    pub async fn assign(
        &mut self,
        cluster: Option<pc::ResourceRef>,
        policy: Option<pc::ResourceRef>,
    ) -> Result<pb::Cluster, Status> {
        let req = self.req(pb::AssignPolicyRequest { cluster, policy });
        Ok(self.clusters.assign_policy(req).await?.into_inner().cluster.unwrap())
    }

    /// A new key of `role` (connector keys bound to `cluster`): (secret, key id).
    pub async fn create_key(&mut self, role: pc::Role, cluster: Option<&str>) -> Result<(String, String), Status> {
        let req = self.req(pb::CreateApiKeyRequest {
            role: role as i32,
            cluster: cluster.and_then(by_name),
            expires_at: None,
            description: format!("{role:?} key"),
        });
        let created = self.auth.create_api_key(req).await?.into_inner();
        Ok((created.secret, created.key.unwrap().id))
    }

    pub async fn list_keys(&mut self, include_inactive: bool) -> Result<Vec<pb::ApiKey>, Status> {
        let req = self.req(pb::ListApiKeysRequest {
            page: Some(pc::PageRequest {
                page_size: 500,
                page_token: String::new(),
            }),
            include_inactive,
            ..Default::default()
        });
        Ok(self.auth.list_api_keys(req).await?.into_inner().keys)
    }

    pub async fn revoke_key(&mut self, key_id: &str) -> Result<pb::ApiKey, Status> {
        let req = self.req(pb::RevokeApiKeyRequest {
            key_id: key_id.to_owned(),
        });
        Ok(self.auth.revoke_api_key(req).await?.into_inner().key.unwrap())
    }

    pub async fn who_am_i(&mut self) -> Result<pb::WhoAmIResponse, Status> {
        let req = self.req(pb::WhoAmIRequest {});
        Ok(self.auth.who_am_i(req).await?.into_inner())
    }

    pub async fn audit(&mut self) -> Result<Vec<pb::AuditEntry>, Status> {
        let req = self.req(pb::ListAuditEntriesRequest {
            page: Some(pc::PageRequest {
                page_size: 500,
                page_token: String::new(),
            }),
            ..Default::default()
        });
        Ok(self.audit.list_audit_entries(req).await?.into_inner().entries)
    }

    /// (operator) A tenant with this id; returns its admin key.
    pub async fn create_tenant(&mut self, id: &str) -> Result<String, Status> {
        let req = self.req(pb::CreateTenantRequest {
            name: format!("Tenant {id}"),
            id: id.to_owned(),
            admin_key_expires_at: None,
        });
        Ok(self.tenants.create_tenant(req).await?.into_inner().admin_key)
    }
}

// ---------------------------------------------------------------------------------------
// Bus

/// A broadcast subscription to `filter` starting after the last event stored now.
pub async fn subscribe(bus: &Bus, filter: &TopicFilter) -> BroadcastSubscription {
    let last = bus.last_sequence().await.unwrap();
    bus.subscribe_broadcast(filter, StartFrom::after(last)).await.unwrap()
}

/// A broadcast subscription after stream sequence `after` on a fresh connection to the
/// nats-server at `url`, retried while the server comes back (up to [`EVENT_WAIT`]).
pub async fn subscribe_after_restart(url: &str, filter: &TopicFilter, after: u64) -> (Bus, BroadcastSubscription) {
    eventually(EVENT_WAIT, || async move {
        let bus = Bus::connect_nats(url, BusConfig::default())
            .await
            .map_err(|e| format!("NATS did not come back: {e}"))?;
        let sub = bus
            .subscribe_broadcast(filter, StartFrom::after(after))
            .await
            .map_err(|e| format!("subscribing: {e}"))?;
        Ok::<_, String>((bus, sub))
    })
    .await
}

/// The next event and its decoded envelope; fails after [`EVENT_WAIT`].
pub async fn next_event(sub: &mut BroadcastSubscription) -> (ReceivedEvent, pe::EventEnvelope) {
    let received = tokio::time::timeout(EVENT_WAIT, sub.next())
        .await
        .unwrap_or_else(|_| panic!("no event within {EVENT_WAIT:?}"))
        .expect("subscription ended");
    let envelope = pe::EventEnvelope::decode(received.event.payload.clone()).unwrap();
    (received, envelope)
}

/// The next event matching `wanted`, skipping others.
pub async fn next_matching(
    sub: &mut BroadcastSubscription,
    wanted: impl Fn(&pe::EventEnvelope) -> bool,
) -> (ReceivedEvent, pe::EventEnvelope) {
    let deadline = tokio::time::Instant::now() + EVENT_WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let received = tokio::time::timeout(left, sub.next())
            .await
            .unwrap_or_else(|_| panic!("no matching event within {EVENT_WAIT:?}"))
            .expect("subscription ended");
        let envelope = pe::EventEnvelope::decode(received.event.payload.clone()).unwrap();
        if wanted(&envelope) {
            return (received, envelope);
        }
    }
}

/// Fails if an event matching `unwanted` arrives within `during`.
pub async fn assert_quiet(
    sub: &mut BroadcastSubscription,
    during: Duration,
    unwanted: impl Fn(&pe::EventEnvelope) -> bool,
) {
    let deadline = tokio::time::Instant::now() + during;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, sub.next()).await {
            Err(_) => return,
            Ok(None) => panic!("subscription ended"),
            Ok(Some(received)) => {
                let envelope = pe::EventEnvelope::decode(received.event.payload.clone()).unwrap();
                assert!(!unwanted(&envelope), "unexpected event: {envelope:?}");
            }
        }
    }
}

/// The policy.changed payload of an envelope (panics for another payload).
pub fn policy_changed(envelope: &pe::EventEnvelope) -> &pe::PolicyChanged {
    match &envelope.payload {
        Some(pe::event_envelope::Payload::PolicyChanged(changed)) => changed,
        other => panic!("not a policy.changed payload: {other:?}"),
    }
}

/// Whether the envelope is a policy.changed about `policy_id`.
pub fn is_policy_event(envelope: &pe::EventEnvelope, policy_id: &str) -> bool {
    matches!(&envelope.payload, Some(pe::event_envelope::Payload::PolicyChanged(c)) if c.policy_id == policy_id)
}
