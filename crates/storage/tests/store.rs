//! The store's behaviour, written once and run against both backends: every scenario is an
//! `async fn(&TestDb)`, and `both!` makes a `sqlite::<name>` test (a temp file) and a
//! `postgres::<name>` test (a fresh database on the local server, dropped afterwards) of it.
//!
//! The databases come from `portcullis_test_kit` (`PORTCULLIS_TEST_POSTGRES`, the local
//! server, or a private `initdb` cluster).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use portcullis_proto::events::v1 as pe;
use portcullis_storage::*;
use portcullis_test_kit::{DataDir, TestDatabase, until};
use time::{Duration, OffsetDateTime};

// ---------------------------------------------------------------------------------------
// Support

struct TestDb {
    store: Store,
    url: String,
    clock: Arc<ManualClock>,
    _dir: Option<DataDir>,
    _pg: Option<TestDatabase>,
}

fn start_time() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap()
}

impl TestDb {
    async fn sqlite() -> TestDb {
        let dir = DataDir::new().unwrap();
        let url = dir.sqlite_url("store.db");
        TestDb::open(url, Some(dir), None).await
    }

    async fn postgres() -> TestDb {
        let database = TestDatabase::create().await.unwrap_or_else(|e| panic!("{e}"));
        TestDb::open(database.url.clone(), None, Some(database)).await
    }

    async fn open(url: String, dir: Option<DataDir>, pg: Option<TestDatabase>) -> TestDb {
        let clock = Arc::new(ManualClock::new(start_time()));
        let store = Store::connect_with(&url, options(&clock)).await.unwrap();
        TestDb {
            store,
            url,
            clock,
            _dir: dir,
            _pg: pg,
        }
    }

    /// A second store on the same database, as after a restart.
    async fn reopen(&self) -> Store {
        Store::connect_with(&self.url, options(&self.clock)).await.unwrap()
    }
}

fn options(clock: &Arc<ManualClock>) -> StoreOptions {
    StoreOptions {
        clock: clock.clone(),
        ..StoreOptions::default()
    }
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::TestDb::sqlite().await;
                    super::$name(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::TestDb::postgres().await;
                    super::$name(&db).await;
                }
            )*
        }
    };
}

both!(
    policy_create_get_list,
    policy_update_stale_and_rename,
    identical_apply_writes_nothing,
    history_and_revisions,
    duplicate_naming,
    delete_while_assigned_refused,
    validation_errors_name_fields,
    references_to_attestors_and_rulesets,
    rulesets_and_attestors,
    clusters_settings_heartbeat_effective,
    tenant_isolation,
    api_keys,
    connector_key_rotation,
    outbox_rows_and_relay,
    relay_runs_and_retries,
    refused_events_become_dead_letters,
    concurrent_relays_publish_once,
    concurrent_updates_one_wins,
    audit_log,
    scans,
    tenants,
    restart_keeps_everything,
    registry_credentials,
);

/// An in-memory SQLite store (one connection, kept open) works like a file.
#[tokio::test]
async fn sqlite_in_memory() {
    let s = Store::connect("sqlite::memory:").await.unwrap();
    assert_eq!(s.backend(), Backend::Sqlite);
    let t = tenant(&s, "mem").await;
    s.create_policy(&t.id, &t.admin, &policy_doc("p", "block"))
        .await
        .unwrap();
    assert_eq!(s.get_policy(&t.id, &ResourceRef::name("p")).await.unwrap().revision, 1);
    assert_eq!(s.pending_event_count().await.unwrap(), 1);
}

/// A URL of another database is refused, naming the field.
#[tokio::test]
async fn unknown_database_url() {
    assert_invalid(Store::connect("mysql://localhost/x").await.unwrap_err(), "database_url");
}

fn shared(path: &str) -> String {
    let full = format!("{}/../../../shared/conformance/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn policy_doc(name: &str, host_network_action: &str) -> String {
    format!(
        r#"{{"name":"{name}","default":{{"rules":[{{"type":"podSecurityContext","action":"{host_network_action}","statement":{{"properties":[{{"key":"hostNetwork","value":"true"}}]}}}}]}}}}"#
    )
}

fn policy_with_refs(name: &str, attestor: Option<&str>, ruleset_id: Option<&str>) -> String {
    let mut doc = serde_json::json!({
        "name": name,
        "default": {"rules": [{"type": "podSecurityContext", "action": "block",
            "statement": {"properties": [{"key": "hostNetwork", "value": "true"}]}}]}
    });
    if let Some(a) = attestor {
        doc["default"]["imageVerification"] = serde_json::json!([{
            "name": "signed", "action": "block", "attestors": {"all": [a]},
            "conditions": [{"type": "match", "resourceFilter": "registry", "operator": "equals", "value": "registry.example.com"}]
        }]);
    }
    if let Some(r) = ruleset_id {
        doc["runtime"] = serde_json::json!({"rulesets": [{"id": r}]});
    }
    doc.to_string()
}

fn attestor_doc(name: &str, description: &str) -> String {
    serde_json::json!({
        "name": name, "description": description, "type": "cosignPublicKey",
        "publicKey": shared("cosign-signatures/cosign.pub"),
    })
    .to_string()
}

fn ruleset_doc(name: &str, mitigation: &str) -> String {
    serde_json::json!({
        "name": name,
        "rules": [{"id": "Adding ssh keys to authorized_keys", "mitigation": mitigation}, {"id": "TM-00000001", "mitigation": "log"}],
    })
    .to_string()
}

struct Tenant1 {
    id: String,
    admin: Actor,
    admin_secret: String,
}

async fn tenant(store: &Store, id: &str) -> Tenant1 {
    let created = store
        .create_tenant(
            &Actor::operator(),
            &NewTenant {
                id: Some(id.to_owned()),
                name: format!("Tenant {id}"),
                admin_key_expires_at: None,
            },
        )
        .await
        .unwrap();
    Tenant1 {
        id: created.tenant.id,
        admin: Actor::key(created.admin_key.key.id.clone(), Role::Admin),
        admin_secret: created.admin_key.secret,
    }
}

fn decode(event: &OutboxEvent) -> pe::EventEnvelope {
    event.envelope().unwrap()
}

fn policy_changed(event: &OutboxEvent) -> pe::PolicyChanged {
    match decode(event).payload {
        Some(pe::event_envelope::Payload::PolicyChanged(p)) => p,
        other => panic!("not policy.changed: {other:?}"),
    }
}

async fn events(store: &Store) -> Vec<OutboxEvent> {
    store.pending_events(10_000).await.unwrap()
}

fn assert_invalid(err: StoreError, field: &str) {
    match &err {
        StoreError::InvalidArgument(errors) => assert!(
            errors.iter().any(|e| e.path == field),
            "expected an error at {field}, got {errors:?}"
        ),
        other => panic!("expected InvalidArgument at {field}, got {other:?}"),
    }
}

fn assert_not_found<T: std::fmt::Debug>(r: StoreResult<T>) {
    match r {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
}

fn assert_precondition<T: std::fmt::Debug>(r: StoreResult<T>) {
    match r {
        Err(StoreError::FailedPrecondition(_)) => {}
        other => panic!("expected FailedPrecondition, got {other:?}"),
    }
}

/// A sink that records what it publishes, failing while told to.
#[derive(Default)]
struct RecordingSink {
    published: Mutex<Vec<OutboxEvent>>,
    fail: std::sync::atomic::AtomicBool,
    fail_next: AtomicUsize,
    attempts: AtomicUsize,
    /// Event ids refused for good (as a bus refuses an event over its size limit).
    refuse: Mutex<Vec<String>>,
}

const REFUSED: &str = "refused for good";

impl EventSink for RecordingSink {
    type Error = String;

    fn publish(&self, event: &OutboxEvent) -> impl std::future::Future<Output = Result<(), String>> + Send {
        let this = self;
        let event = event.clone();
        async move {
            this.attempts.fetch_add(1, Ordering::SeqCst);
            if this.refuse.lock().unwrap().contains(&event.event_id) {
                return Err(format!("{REFUSED}: too large"));
            }
            if this.fail.load(Ordering::SeqCst) {
                return Err("bus down".to_owned());
            }
            if this
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err("transient".to_owned());
            }
            this.published.lock().unwrap().push(event);
            Ok(())
        }
    }

    fn is_permanent(&self, error: &String) -> bool {
        error.starts_with(REFUSED)
    }
}

impl RecordingSink {
    fn ids(&self) -> Vec<String> {
        self.published
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.event_id.clone())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Policies

async fn policy_create_get_list(db: &TestDb) {
    let s = &db.store;
    let t = tenant(s, "acme").await;
    let p = s
        .create_policy(&t.id, &t.admin, &policy_doc("prod", "block"))
        .await
        .unwrap();
    assert_eq!((p.name.as_str(), p.revision), ("prod", 1));
    assert_eq!(p.author_key_id, t.admin.key_id.clone().unwrap());
    assert_eq!(s.get_policy(&t.id, &ResourceRef::name("prod")).await.unwrap(), p);
    assert_eq!(s.get_policy(&t.id, &ResourceRef::id(&p.id)).await.unwrap(), p);
    assert_not_found(s.get_policy(&t.id, &ResourceRef::name("nope")).await);
    // The API takes JSON only (the CLI converts YAML): YAML is refused, naming the document.
    let yaml = "name: staging\ndefault:\n  rules: []\n";
    match s.create_policy(&t.id, &t.admin, yaml).await {
        Err(StoreError::InvalidArgument(errors)) => {
            assert_eq!(errors[0].path, "(document)");
            assert!(errors[0].message.contains("JSON"), "{errors:?}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }

    match s.create_policy(&t.id, &t.admin, &policy_doc("prod", "log")).await {
        Err(StoreError::AlreadyExists { resource: "policy", .. }) => {}
        other => panic!("expected AlreadyExists, got {other:?}"),
    }

    for name in ["a_b", "axb", "A_B", "zz"] {
        s.create_policy(&t.id, &t.admin, &policy_doc(name, "log"))
            .await
            .unwrap();
    }
    // Paging by name, three at a time.
    let mut names = Vec::new();
    let mut page = PageRequest::first(3);
    loop {
        let got = s
            .list_policies(
                &t.id,
                &PolicyQuery {
                    page: page.clone(),
                    ..PolicyQuery::default()
                },
            )
            .await
            .unwrap();
        assert!(got.items.len() <= 3);
        assert!(
            got.items.iter().all(|p| p.document_json.is_empty()),
            "no documents unless asked"
        );
        names.extend(got.items.into_iter().map(|p| p.name));
        match got.next_token {
            Some(token) => page = PageRequest::after(3, token),
            None => break,
        }
    }
    assert_eq!(names, ["A_B", "a_b", "axb", "prod", "zz"]);
    // The filter is a case-sensitive substring; `_` is no wildcard.
    let filtered = s
        .list_policies(
            &t.id,
            &PolicyQuery {
                name_filter: "_b".to_owned(),
                include_documents: true,
                ..PolicyQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        filtered.items.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["a_b"]
    );
    assert!(!filtered.items[0].document_json.is_empty());
    assert_eq!(s.count_policies(&t.id).await.unwrap(), 5);
    assert_invalid(
        s.list_policies(
            &t.id,
            &PolicyQuery {
                page: PageRequest::after(2, "garbage!"),
                ..PolicyQuery::default()
            },
        )
        .await
        .unwrap_err(),
        "page_token",
    );
}

async fn policy_update_stale_and_rename(db: &TestDb) {
    let s = &db.store;
    let t = tenant(s, "acme").await;
    let editor = Actor::key("editor-key", Role::Editor);
    let p = s
        .create_policy(&t.id, &t.admin, &policy_doc("prod", "block"))
        .await
        .unwrap();
    let by_name = ResourceRef::name("prod");

    let updated = s
        .update_policy(&t.id, &editor, &by_name, &policy_doc("prod", "log"), 1)
        .await
        .unwrap();
    assert!(updated.changed);
    assert_eq!(updated.value.revision, 2);
    assert_eq!(updated.value.author_key_id, "editor-key");
    assert_eq!(updated.value.created_at, p.created_at);

    let outbox_before = s.pending_event_count().await.unwrap();
    // Stale: the caller read revision 1.
    assert_precondition(
        s.update_policy(&t.id, &editor, &by_name, &policy_doc("prod", "block"), 1)
            .await,
    );
    // Rename refused.
    assert_invalid(
        s.update_policy(&t.id, &editor, &by_name, &policy_doc("renamed", "block"), 2)
            .await
            .unwrap_err(),
        "name",
    );
    // Nothing was written by either.
    assert_eq!(s.pending_event_count().await.unwrap(), outbox_before);
    let current = s.get_policy(&t.id, &by_name).await.unwrap();
    assert_eq!(current.revision, 2);
    assert!(current.document_json.contains("\"log\""));
    let history = s
        .policy_history(&t.id, &by_name, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(history.revisions.items.len(), 2);
    assert_not_found(s.get_policy(&t.id, &ResourceRef::name("renamed")).await);
    // Updating an unknown policy.
    assert_not_found(
        s.update_policy(&t.id, &editor, &ResourceRef::id("nope"), &policy_doc("prod", "log"), 2)
            .await,
    );
}

async fn identical_apply_writes_nothing(db: &TestDb) {
    let s = &db.store;
    let t = tenant(s, "acme").await;
    let first = s
        .apply_policy(&t.id, &t.admin, &policy_doc("prod", "block"), None)
        .await
        .unwrap();
    assert!(first.created && first.changed);
    let outbox = s.pending_event_count().await.unwrap();
    let audit = s.list_audit(&t.id, &AuditQuery::default()).await.unwrap().items.len();

    // The same document: other formatting and key order, defaults spelt out.
    let same = r#"{"xdrEnabled": true, "name": "prod", "description": "",
        "default": {"exceptions": [], "rules": [{"type": "podSecurityContext", "enabled": true,
        "action": "block", "mitigation": "none",
        "statement": {"properties": [{"key": "hostNetwork", "value": "true"}]}}]}}"#;
    let again = s.apply_policy(&t.id, &t.admin, same, None).await.unwrap();
    assert!(!again.created && !again.changed);
    assert_eq!(again.value.revision, 1);
    let via_update = s
        .update_policy(&t.id, &t.admin, &ResourceRef::name("prod"), same, 1)
        .await
        .unwrap();
    assert!(!via_update.changed);
    assert_eq!(
        s.pending_event_count().await.unwrap(),
        outbox,
        "an identical apply publishes nothing"
    );
    assert_eq!(
        s.list_audit(&t.id, &AuditQuery::default()).await.unwrap().items.len(),
        audit
    );
    assert_eq!(
        s.policy_history(&t.id, &ResourceRef::name("prod"), &PageRequest::default())
            .await
            .unwrap()
            .revisions
            .items
            .len(),
        1
    );

    let changed = s
        .apply_policy(&t.id, &t.admin, &policy_doc("prod", "log"), None)
        .await
        .unwrap();
    assert!(!changed.created && changed.changed);
    assert_eq!(changed.value.revision, 2);
    // With an expected revision: stale is refused, and so is a policy that does not exist.
    assert_precondition(
        s.apply_policy(&t.id, &t.admin, &policy_doc("prod", "block"), Some(1))
            .await,
    );
    assert_precondition(
        s.apply_policy(&t.id, &t.admin, &policy_doc("other", "block"), Some(1))
            .await,
    );
    assert_eq!(
        s.apply_policy(&t.id, &t.admin, &policy_doc("prod", "block"), Some(2))
            .await
            .unwrap()
            .value
            .revision,
        3
    );
}

async fn history_and_revisions(db: &TestDb) {
    let s = &db.store;
    let t = tenant(s, "acme").await;
    let alice = Actor::key("alice", Role::Editor);
    let bob = Actor::key("bob", Role::Editor);
    let r = ResourceRef::name("prod");
    s.create_policy(&t.id, &alice, &policy_doc("prod", "block"))
        .await
        .unwrap();
    db.clock.advance(Duration::seconds(10));
    s.update_policy(&t.id, &bob, &r, &policy_doc("prod", "log"), 1)
        .await
        .unwrap();
    db.clock.advance(Duration::seconds(10));
    s.update_policy(&t.id, &alice, &r, &policy_doc("prod", "none"), 2)
        .await
        .unwrap_err();
    s.update_policy(&t.id, &alice, &r, &policy_with_refs("prod", None, None), 2)
        .await
        .unwrap();

    let history = s.policy_history(&t.id, &r, &PageRequest::default()).await.unwrap();
    let items = &history.revisions.items;
    assert_eq!(items.iter().map(|i| i.revision).collect::<Vec<_>>(), [3, 2, 1]);
    assert_eq!(
        items.iter().map(|i| i.author_key_id.as_str()).collect::<Vec<_>>(),
        ["alice", "bob", "alice"]
    );
    assert!(items[0].created_at > items[1].created_at && items[1].created_at > items[2].created_at);
    assert_eq!(items[2].created_at + Duration::seconds(10), items[1].created_at);
    assert_ne!(items[0].document_sha256, items[1].document_sha256);
    assert_eq!(items[0].document_sha256.len(), 64);

    // Paging: one at a time.
    let first = s.policy_history(&t.id, &r, &PageRequest::first(1)).await.unwrap();
    assert_eq!(first.revisions.items[0].revision, 3);
    let second = s
        .policy_history(&t.id, &r, &PageRequest::after(1, first.revisions.next_token.unwrap()))
        .await
        .unwrap();
    assert_eq!(second.revisions.items[0].revision, 2);

    let rev1 = s.get_policy_revision(&t.id, &r, 1).await.unwrap();
    assert_eq!(rev1.revision, 1);
    assert_eq!(rev1.author_key_id, "alice");
    assert!(rev1.document_json.contains("\"block\""));
    let rev2 = s.get_policy_revision(&t.id, &r, 2).await.unwrap();
    assert!(rev2.document_json.contains("\"log\""));
    assert_eq!(rev2.updated_at, items[1].created_at);
    assert_not_found(s.get_policy_revision(&t.id, &r, 9).await);
}

async fn duplicate_naming(db: &TestDb) {
    let s = &db.store;
    let t = tenant(s, "acme").await;
    let source = s
        .create_policy(&t.id, &t.admin, &policy_doc("x", "block"))
        .await
        .unwrap();
    s.update_policy(&t.id, &t.admin, &ResourceRef::name("x"), &policy_doc("x", "log"), 1)
        .await
        .unwrap();
    let x = ResourceRef::name("x");

    let copy = s.duplicate_policy(&t.id, &t.admin, &x, None).await.unwrap();
    assert_eq!((copy.name.as_str(), copy.revision), ("xPolicy", 1));
    assert_ne!(copy.id, source.id);
    assert!(copy.document_json.contains("\"log\""), "copies the current revision");
    assert!(copy.document_json.contains("\"xPolicy\""));
    assert_eq!(
        s.duplicate_policy(&t.id, &t.admin, &x, None).await.unwrap().name,
        "xPolicy2"
    );
    assert_eq!(
        s.duplicate_policy(&t.id, &t.admin, &ResourceRef::id(&source.id), None)
            .await
            .unwrap()
            .name,
        "xPolicy3"
    );
    // Copying the copy appends again.
    assert_eq!(
        s.duplicate_policy(&t.id, &t.admin, &ResourceRef::name("xPolicy"), None)
            .await
            .unwrap()
            .name,
        "xPolicyPolicy"
    );
    // An explicit name, free or taken or invalid.
    assert_eq!(
        s.duplicate_policy(&t.id, &t.admin, &x, Some("y")).await.unwrap().name,
        "y"
    );
    match s.duplicate_policy(&t.id, &t.admin, &x, Some("y")).await {
        Err(StoreError::AlreadyExists { .. }) => {}
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_invalid(
        s.duplicate_policy(&t.id, &t.admin, &x, Some("bad name"))
            .await
            .unwrap_err(),
        "new_name",
    );

    // 58 characters + "Policy" = 64: allowed once; the next would be 65.
    let long = "l".repeat(58);
    s.create_policy(&t.id, &t.admin, &policy_doc(&long, "block"))
        .await
        .unwrap();
    let copy = s
        .duplicate_policy(&t.id, &t.admin, &ResourceRef::name(&long), None)
        .await
        .unwrap();
    assert_eq!(copy.name.len(), 64);
    assert_invalid(
        s.duplicate_policy(&t.id, &t.admin, &ResourceRef::name(&long), None)
            .await
            .unwrap_err(),
        "new_name",
    );
    let longer = "m".repeat(60);
    s.create_policy(&t.id, &t.admin, &policy_doc(&longer, "block"))
        .await
        .unwrap();
    let err = s
        .duplicate_policy(&t.id, &t.admin, &ResourceRef::name(&longer), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("explicit"), "{err}");
    assert_invalid(err, "new_name");
    assert_eq!(
        s.duplicate_policy(&t.id, &t.admin, &ResourceRef::name(&longer), Some("short"))
            .await
            .unwrap()
            .name,
        "short"
    );
    assert_not_found(
        s.duplicate_policy(&t.id, &t.admin, &ResourceRef::name("missing"), None)
            .await,
    );
}

async fn delete_while_assigned_refused(db: &TestDb) {
    let s = &db.store;
    let t = tenant(s, "acme").await;
    let p = s
        .create_policy(&t.id, &t.admin, &policy_doc("prod", "block"))
        .await
        .unwrap();
    let c = s
        .register_cluster(
            &t.id,
            &t.admin,
            &NewCluster {
                name: "c1".to_owned(),
                policy: Some(ResourceRef::name("prod")),
                ..NewCluster::default()
            },
        )
        .await
        .unwrap();
    let err = s.delete_policy(&t.id, &t.admin, &ResourceRef::name("prod"), None).await;
    match &err {
        Err(StoreError::FailedPrecondition(m)) => assert!(m.contains("c1"), "{m}"),
        other => panic!("expected FailedPrecondition, got {other:?}"),
    }
    assert_eq!(
        s.get_policy(&t.id, &ResourceRef::name("prod")).await.unwrap().revision,
        1
    );
    s.assign_policy(&t.id, &t.admin, &ResourceRef::id(&c.cluster.id), None)
        .await
        .unwrap();
    assert_precondition(
        s.delete_policy(&t.id, &t.admin, &ResourceRef::name("prod"), Some(7))
            .await,
    );
    let deleted = s
        .delete_policy(&t.id, &t.admin, &ResourceRef::name("prod"), Some(1))
        .await
        .unwrap();
    assert_eq!((deleted.id.as_str(), deleted.revision), (p.id.as_str(), 1));
    assert_not_found(s.get_policy(&t.id, &ResourceRef::id(&p.id)).await);
    assert_not_found(
        s.policy_history(&t.id, &ResourceRef::id(&p.id), &PageRequest::default())
            .await,
    );
    let last = events(s).await.pop().unwrap();
    let changed = policy_changed(&last);
    assert_eq!(changed.change, pe::ChangeKind::Deleted as i32);
    assert_eq!((changed.policy_id.as_str(), changed.revision), (p.id.as_str(), 1));
    // The name is free again.
    assert_eq!(
        s.create_policy(&t.id, &t.admin, &policy_doc("prod", "log"))
            .await
            .unwrap()
            .revision,
        1
    );
}

async fn validation_errors_name_fields(db: &TestDb) {
    let s = &db.store;
    let t = tenant(s, "acme").await;
    let cases = [
        (r#"{"name":"bad name","default":{"rules":[]}}"#, "name"),
        (
            r#"{"name":"p","default":{"rules":[{"type":"noSuchRule","action":"block","statement":{"properties":[]}}]}}"#,
            "default.rules[0].type",
        ),
        (
            r#"{"name":"p","default":{"rules":[]},"namespaced":[{"name":"n","namespaces":["Bad_NS"],"rules":[]}]}"#,
            "namespaced[0].namespaces[0]",
        ),
        (r#"{"name":"p","default":{"rules":[]},"namespace":[]}"#, "namespace"),
        ("{not json", ""),
    ];
    for (doc, field) in cases {
        match s.create_policy(&t.id, &t.admin, doc).await {
            Err(StoreError::InvalidArgument(errors)) => assert!(
                errors.iter().any(|e| e.path.starts_with(field)),
                "{doc}: expected an error at {field:?}, got {errors:?}"
            ),
            other => panic!("{doc}: expected InvalidArgument, got {other:?}"),
        }
    }
    // Several problems are all reported.
    let two = r#"{"name":"p","description":"","default":{"rules":[{"type":"podSecurityContext","action":"none","mitigation":"none","statement":{"properties":[{"key":"hostNetwork","value":"true"}]}}]},"namespaced":[{"name":"n","namespaces":["UPPER"],"rules":[]}]}"#;
    assert!(
        s.create_policy(&t.id, &t.admin, two)
            .await
            .unwrap_err()
            .field_errors()
            .len()
            >= 2
    );
    // Nothing stored by any of them.
    assert_eq!(s.count_policies(&t.id).await.unwrap(), 0);
    assert_eq!(s.pending_event_count().await.unwrap(), 0);
    assert_invalid(
        s.create_policy("Bad Tenant", &t.admin, &policy_doc("p", "block"))
            .await
            .unwrap_err(),
        "tenant_id",
    );
    assert_not_found(s.create_policy("ghost", &t.admin, &policy_doc("p", "block")).await);
}

async fn references_to_attestors_and_rulesets(db: &TestDb) {
    let s = &db.store;
    let t = tenant(s, "acme").await;
    let missing = s
        .create_policy(
            &t.id,
            &t.admin,
            &policy_with_refs("p", Some("release-signer"), Some("no-such-id")),
        )
        .await
        .unwrap_err();
    assert_invalid(missing, "default.imageVerification[0].attestors.all[0]");
    let missing = s
        .create_policy(&t.id, &t.admin, &policy_with_refs("p", None, Some("no-such-id")))
        .await
        .unwrap_err();
    assert_invalid(missing, "runtime.rulesets[0].id");

    s.create_attestor(&t.id, &t.admin, &attestor_doc("release-signer", ""))
        .await
        .unwrap();
    let rs = s
        .create_ruleset(&t.id, &t.admin, &ruleset_doc("base", "isolate"))
        .await
        .unwrap();
    let p = s
        .create_policy(
            &t.id,
            &t.admin,
            &policy_with_refs("p", Some("release-signer"), Some(&rs.id)),
        )
        .await
        .unwrap();
    // A ruleset is referenced by id, not name.
    assert_invalid(
        s.create_policy(&t.id, &t.admin, &policy_with_refs("q", None, Some("base")))
            .await
            .unwrap_err(),
        "runtime.rulesets[0].id",
    );

    // In use by the current revision: deletes refused.
    assert_precondition(
        s.delete_attestor(&t.id, &t.admin, &ResourceRef::name("release-signer"))
            .await,
    );
    assert_precondition(s.delete_ruleset(&t.id, &t.admin, &ResourceRef::id(&rs.id)).await);
    // A new revision without them: only older revisions reference them, so deletes pass.
    s.update_policy(
        &t.id,
        &t.admin,
        &ResourceRef::id(&p.id),
        &policy_with_refs("p", None, None),
        1,
    )
    .await
    .unwrap();
    s.delete_attestor(&t.id, &t.admin, &ResourceRef::name("release-signer"))
        .await
        .unwrap();
    s.delete_ruleset(&t.id, &t.admin, &ResourceRef::id(&rs.id))
        .await
        .unwrap();
    assert!(
        s.get_policy_revision(&t.id, &ResourceRef::id(&p.id), 1)
            .await
            .unwrap()
            .document_json
            .contains("release-signer")
    );
    // The policy cannot go back to the deleted ones.
    assert!(
        s.update_policy(
            &t.id,
            &t.admin,
            &ResourceRef::id(&p.id),
            &policy_with_refs("p", Some("release-signer"), None),
            2
        )
        .await
        .is_err()
    );
}

async fn rulesets_and_attestors(db: &TestDb) {
    let s = &db.store;
    let t = tenant(s, "acme").await;
    let rs = s
        .create_ruleset(&t.id, &t.admin, &ruleset_doc("base", "isolate"))
        .await
        .unwrap();
    assert_eq!((rs.revision, rs.rule_count), (1, 2));
    match s.create_ruleset(&t.id, &t.admin, &ruleset_doc("base", "log")).await {
        Err(StoreError::AlreadyExists {
            resource: "ruleset", ..
        }) => {}
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    let same = s
        .update_ruleset(
            &t.id,
            &t.admin,
            &ResourceRef::name("base"),
            &ruleset_doc("base", "isolate"),
            None,
        )
        .await
        .unwrap();
    assert!(!same.changed);
    let changed = s
        .update_ruleset(
            &t.id,
            &t.admin,
            &ResourceRef::name("base"),
            &ruleset_doc("base", "terminate"),
            Some(1),
        )
        .await
        .unwrap();
    assert!(changed.changed);
    assert_eq!(changed.value.revision, 2);
    assert_precondition(
        s.update_ruleset(
            &t.id,
            &t.admin,
            &ResourceRef::name("base"),
            &ruleset_doc("base", "log"),
            Some(1),
        )
        .await,
    );
    assert_invalid(
        s.update_ruleset(
            &t.id,
            &t.admin,
            &ResourceRef::id(&rs.id),
            &ruleset_doc("other", "log"),
            None,
        )
        .await
        .unwrap_err(),
        "name",
    );
    let unknown_rule = r#"{"name":"x","rules":[{"id":"Not A Rule","mitigation":"log"}]}"#;
    assert_invalid(
        s.create_ruleset(&t.id, &t.admin, unknown_rule).await.unwrap_err(),
        "rules[0].id",
    );
    let applied = s
        .apply_ruleset(&t.id, &t.admin, &ruleset_doc("second", "log"), None)
        .await
        .unwrap();
    assert!(applied.created);
    let list = s.list_rulesets(&t.id, &NameQuery::default()).await.unwrap();
    assert_eq!(
        list.items.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["base", "second"]
    );

    let a = s
        .create_attestor(&t.id, &t.admin, &attestor_doc("signer", "one"))
        .await
        .unwrap();
    assert_eq!(a.attestor_type, "cosignPublicKey");
    let bad_key =
        serde_json::json!({"name": "broken", "type": "cosignPublicKey", "publicKey": "not a key"}).to_string();
    assert_invalid(
        s.create_attestor(&t.id, &t.admin, &bad_key).await.unwrap_err(),
        "publicKey",
    );
    let w = s
        .apply_attestor(&t.id, &t.admin, &attestor_doc("signer", "two"), Some(1))
        .await
        .unwrap();
    assert!(w.changed && !w.created);
    assert_eq!((w.value.revision, w.value.description.as_str()), (2, "two"));
    assert_eq!(
        s.get_attestor(&t.id, &ResourceRef::id(&a.id)).await.unwrap().revision,
        2
    );
    let filtered = s
        .list_attestors(
            &t.id,
            &NameQuery {
                name_filter: "sig".to_owned(),
                ..NameQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(filtered.items.len(), 1);

    let kinds: Vec<(String, u64, i32)> = events(s)
        .await
        .iter()
        .filter_map(|e| match decode(e).payload {
            Some(pe::event_envelope::Payload::RulesetChanged(r)) => {
                Some((format!("ruleset:{}", r.name), r.revision, r.change))
            }
            Some(pe::event_envelope::Payload::AttestorChanged(a)) => {
                Some((format!("attestor:{}", a.name), a.revision, a.change))
            }
            _ => None,
        })
        .collect();
    let created = pe::ChangeKind::Created as i32;
    let updated = pe::ChangeKind::Updated as i32;
    assert_eq!(
        kinds,
        [
            ("ruleset:base".to_owned(), 1, created),
            ("ruleset:base".to_owned(), 2, updated),
            ("ruleset:second".to_owned(), 1, created),
            ("attestor:signer".to_owned(), 1, created),
            ("attestor:signer".to_owned(), 2, updated),
        ]
    );
    let deleted = s
        .delete_attestor(&t.id, &t.admin, &ResourceRef::name("signer"))
        .await
        .unwrap();
    assert_eq!(deleted.revision, 2);
    assert_not_found(s.get_attestor(&t.id, &ResourceRef::name("signer")).await);
}

// ---------------------------------------------------------------------------------------
// Clusters

async fn clusters_settings_heartbeat_effective(db: &TestDb) {
    let s = &db.store;
    let t = tenant(s, "acme").await;
    s.create_policy(&t.id, &t.admin, &policy_doc("prod", "block"))
        .await
        .unwrap();
    let reg = s
        .register_cluster(
            &t.id,
            &t.admin,
            &NewCluster {
                name: "c1".to_owned(),
                description: "first".to_owned(),
                policy: Some(ResourceRef::name("prod")),
                ..NewCluster::default()
            },
        )
        .await
        .unwrap();
    let c = &reg.cluster;
    assert_eq!(c.generation, 1);
    assert_eq!(c.policy_name.as_deref(), Some("prod"));
    assert_eq!(c.settings.failure_mode, FailureMode::FailOpen);
    assert_eq!(c.settings.excluded_namespaces, ["kube-system", "portcullis-system"]);
    assert!(c.last_seen_at.is_none());
    // The connector key works, bound to the cluster.
    let who = s.introspect(&reg.connector_key.secret).await.unwrap();
    assert_eq!(
        (who.role, who.cluster_id.as_deref(), who.tenant_id.as_str()),
        (Role::Connector, Some(c.id.as_str()), "acme")
    );
    match s
        .register_cluster(
            &t.id,
            &t.admin,
            &NewCluster {
                name: "c1".to_owned(),
                ..NewCluster::default()
            },
        )
        .await
    {
        Err(StoreError::AlreadyExists {
            resource: "cluster", ..
        }) => {}
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_invalid(
        s.register_cluster(
            &t.id,
            &t.admin,
            &NewCluster {
                name: "bad name".to_owned(),
                ..NewCluster::default()
            },
        )
        .await
        .unwrap_err(),
        "name",
    );
    assert_not_found(
        s.register_cluster(
            &t.id,
            &t.admin,
            &NewCluster {
                name: "c2".to_owned(),
                policy: Some(ResourceRef::name("missing")),
                ..NewCluster::default()
            },
        )
        .await,
    );

    // Settings: every bad value named; a tag is refused for a trusted image.
    let bad = SettingsUpdate {
        excluded_namespaces: Some(vec!["ok".to_owned(), "Not_OK".to_owned()]),
        trusted_images: Some(vec!["registry.example.com/agent:1.0".to_owned()]),
        ..SettingsUpdate::default()
    };
    let err = s
        .update_cluster_settings(&t.id, &t.admin, &ResourceRef::name("c1"), &bad, None)
        .await
        .unwrap_err();
    let paths: Vec<&str> = err.field_errors().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["settings.excluded_namespaces[1]", "settings.trusted_images[0]"]);
    let good = SettingsUpdate {
        failure_mode: Some(FailureMode::FailClosed),
        trusted_images: Some(vec!["registry.example.com/agent".to_owned()]),
        ..SettingsUpdate::default()
    };
    let c = s
        .update_cluster_settings(&t.id, &t.admin, &ResourceRef::name("c1"), &good, Some(1))
        .await
        .unwrap();
    assert_eq!(c.generation, 2);
    assert_eq!(c.settings.failure_mode, FailureMode::FailClosed);
    assert_eq!(
        c.settings.excluded_namespaces,
        ["kube-system", "portcullis-system"],
        "kept"
    );
    assert_eq!(c.settings.trusted_images, ["registry.example.com/agent"]);
    assert_precondition(
        s.update_cluster_settings(
            &t.id,
            &t.admin,
            &ResourceRef::name("c1"),
            &SettingsUpdate::default(),
            Some(1),
        )
        .await,
    );
    // No change, no new generation.
    let same = s
        .update_cluster_settings(&t.id, &t.admin, &ResourceRef::name("c1"), &good, None)
        .await
        .unwrap();
    assert_eq!(same.generation, 2);

    db.clock.advance(Duration::minutes(5));
    let hb = s
        .heartbeat(&t.id, &ResourceRef::id(&c.id), "1.4.2", "v1.33.1")
        .await
        .unwrap();
    assert_eq!((hb.policy_revision, hb.cluster_generation), (1, 2));
    assert_eq!(hb.server_time, db.clock.now());
    let listed = s.list_clusters(&t.id, &ClusterQuery::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].last_seen_at, Some(db.clock.now()));
    assert_eq!(listed.items[0].connector_version, "1.4.2");
    assert_eq!(listed.items[0].policy_name.as_deref(), Some("prod"));

    let eff = s.effective_policy(&t.id, &ResourceRef::name("c1")).await.unwrap();
    assert_eq!(eff.policy.as_ref().map(|p| p.revision), Some(1));
    assert_eq!(eff.settings.failure_mode, FailureMode::FailClosed);
    s.update_policy(
        &t.id,
        &t.admin,
        &ResourceRef::name("prod"),
        &policy_doc("prod", "log"),
        1,
    )
    .await
    .unwrap();
    let eff = s.effective_policy(&t.id, &ResourceRef::name("c1")).await.unwrap();
    let policy = eff.policy.unwrap();
    assert_eq!(policy.revision, 2);
    assert!(policy.document_json.contains("\"log\""));
    assert_eq!(eff.cluster_generation, 2);

    // Unassigned: no policy; reassignment publishes the assignment.
    let c = s
        .assign_policy(&t.id, &t.admin, &ResourceRef::name("c1"), None)
        .await
        .unwrap();
    assert_eq!((c.generation, c.policy_id.as_deref()), (3, None));
    assert!(
        s.effective_policy(&t.id, &ResourceRef::name("c1"))
            .await
            .unwrap()
            .policy
            .is_none()
    );
    assert_not_found(
        s.assign_policy(
            &t.id,
            &t.admin,
            &ResourceRef::name("c1"),
            Some(&ResourceRef::name("nope")),
        )
        .await,
    );
    let c = s
        .assign_policy(
            &t.id,
            &t.admin,
            &ResourceRef::name("c1"),
            Some(&ResourceRef::name("prod")),
        )
        .await
        .unwrap();
    assert_eq!(c.generation, 4);
    let last = events(s).await.pop().unwrap();
    match decode(&last).payload {
        Some(pe::event_envelope::Payload::ClusterChanged(cc)) => {
            assert_eq!(cc.cluster_id, c.id);
            assert_eq!((cc.generation, cc.policy_revision), (4, 2));
            assert_eq!(cc.aspects, [pe::ClusterChangeAspect::Assignment as i32]);
            assert_eq!(
                cc.settings.unwrap().failure_mode,
                portcullis_proto::common::v1::FailureMode::FailClosed as i32
            );
        }
        other => panic!("not cluster.changed: {other:?}"),
    }

    // Deleting revokes the connector key.
    let deleted = s
        .delete_cluster(&t.id, &t.admin, &ResourceRef::name("c1"))
        .await
        .unwrap();
    assert_eq!(deleted.revoked_key_ids, [reg.connector_key.key.id.as_str()]);
    assert!(matches!(
        s.introspect(&reg.connector_key.secret).await,
        Err(StoreError::Unauthenticated(InactiveReason::Revoked))
    ));
    assert_not_found(s.get_cluster(&t.id, &ResourceRef::name("c1")).await);
}

async fn connector_key_rotation(db: &TestDb) {
    let s = &db.store;
    let t = tenant(s, "acme").await;
    let reg = s
        .register_cluster(
            &t.id,
            &t.admin,
            &NewCluster {
                name: "c1".to_owned(),
                ..NewCluster::default()
            },
        )
        .await
        .unwrap();
    let old = reg.connector_key;
    let rot = s
        .rotate_connector_key(
            &t.id,
            &t.admin,
            &ResourceRef::name("c1"),
            Some(Duration::minutes(10)),
            None,
        )
        .await
        .unwrap();
    assert_eq!(rot.previous_key_ids, [old.key.id.as_str()]);
    assert_eq!(rot.new_key.key.rotated_from.as_deref(), Some(old.key.id.as_str()));
    assert_eq!(rot.previous_keys_expire_at, db.clock.now() + Duration::minutes(10));
    // Both work during the grace period; the old one says when it stops.
    let old_who = s.introspect(&old.secret).await.unwrap();
    assert_eq!(old_who.expires_at, Some(rot.previous_keys_expire_at));
    assert_eq!(s.introspect(&rot.new_key.secret).await.unwrap().expires_at, None);
    assert_eq!(
        s.get_cluster(&t.id, &ResourceRef::name("c1")).await.unwrap().generation,
        2
    );

    db.clock.advance(Duration::minutes(11));
    assert!(matches!(
        s.introspect(&old.secret).await,
        Err(StoreError::Unauthenticated(InactiveReason::Expired))
    ));
    assert_eq!(
        s.introspect(&rot.new_key.secret).await.unwrap().key_id,
        rot.new_key.key.id
    );
    // The sweep records the end of the grace period and publishes it.
    let before = s.pending_event_count().await.unwrap();
    assert_eq!(s.sweep_rotated_keys().await.unwrap(), 1);
    assert_eq!(s.sweep_rotated_keys().await.unwrap(), 0);
    let revoked = events(s).await.pop().unwrap();
    assert_eq!(s.pending_event_count().await.unwrap(), before + 1);
    match decode(&revoked).payload {
        Some(pe::event_envelope::Payload::ApiKeyRevoked(r)) => {
            assert_eq!(r.key_id, old.key.id);
            assert_eq!(r.reason, pe::RevocationReason::Rotated as i32);
            assert_eq!(r.cluster_id, reg.cluster.id);
        }
        other => panic!("not apikey.revoked: {other:?}"),
    }

    // Zero grace: the previous key stops at once.
    let rot2 = s
        .rotate_connector_key(&t.id, &t.admin, &ResourceRef::name("c1"), Some(Duration::ZERO), None)
        .await
        .unwrap();
    assert_eq!(rot2.previous_key_ids, [rot.new_key.key.id.as_str()]);
    assert!(matches!(
        s.introspect(&rot.new_key.secret).await,
        Err(StoreError::Unauthenticated(InactiveReason::Revoked))
    ));
    assert!(s.introspect(&rot2.new_key.secret).await.is_ok());
    assert_invalid(
        s.rotate_connector_key(
            &t.id,
            &t.admin,
            &ResourceRef::name("c1"),
            Some(Duration::seconds(-1)),
            None,
        )
        .await
        .unwrap_err(),
        "grace_period",
    );
}

// ---------------------------------------------------------------------------------------
// Tenancy and keys

async fn tenant_isolation(db: &TestDb) {
    let s = &db.store;
    let a = tenant(s, "tenant-a").await;
    let b = tenant(s, "tenant-b").await;
    let bp = s
        .create_policy(&b.id, &b.admin, &policy_doc("shared.name", "block"))
        .await
        .unwrap();
    let bc = s
        .register_cluster(
            &b.id,
            &b.admin,
            &NewCluster {
                name: "cb".to_owned(),
                policy: Some(ResourceRef::id(&bp.id)),
                ..NewCluster::default()
            },
        )
        .await
        .unwrap();
    let brs = s
        .create_ruleset(&b.id, &b.admin, &ruleset_doc("rs", "log"))
        .await
        .unwrap();
    let bat = s
        .create_attestor(&b.id, &b.admin, &attestor_doc("signer", ""))
        .await
        .unwrap();
    let bkey = s
        .create_api_key(
            &b.id,
            &b.admin,
            &NewApiKey {
                role: Role::Viewer,
                cluster: None,
                expires_at: None,
                description: String::new(),
            },
        )
        .await
        .unwrap();
    let ac = s
        .register_cluster(
            &a.id,
            &a.admin,
            &NewCluster {
                name: "ca".to_owned(),
                ..NewCluster::default()
            },
        )
        .await
        .unwrap();

    // Read: by name and by id.
    assert_not_found(s.get_policy(&a.id, &ResourceRef::name("shared.name")).await);
    assert_not_found(s.get_policy(&a.id, &ResourceRef::id(&bp.id)).await);
    assert_not_found(s.get_policy_revision(&a.id, &ResourceRef::id(&bp.id), 1).await);
    assert_not_found(
        s.policy_history(&a.id, &ResourceRef::id(&bp.id), &PageRequest::default())
            .await,
    );
    assert_not_found(s.get_cluster(&a.id, &ResourceRef::id(&bc.cluster.id)).await);
    assert_not_found(s.effective_policy(&a.id, &ResourceRef::id(&bc.cluster.id)).await);
    assert_not_found(s.get_ruleset(&a.id, &ResourceRef::id(&brs.id)).await);
    assert_not_found(s.get_attestor(&a.id, &ResourceRef::id(&bat.id)).await);
    assert_not_found(s.get_api_key(&a.id, &bkey.key.id).await);
    // List.
    assert!(
        s.list_policies(&a.id, &PolicyQuery::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        s.list_clusters(&a.id, &ClusterQuery::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert!(
        s.list_rulesets(&a.id, &NameQuery::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        s.list_attestors(&a.id, &NameQuery::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let a_keys = s
        .list_api_keys(
            &a.id,
            &ApiKeyQuery {
                include_inactive: true,
                ..ApiKeyQuery::default()
            },
        )
        .await
        .unwrap();
    assert!(a_keys.items.iter().all(|k| k.tenant_id == "tenant-a"));
    assert!(
        s.list_audit(&a.id, &AuditQuery::default())
            .await
            .unwrap()
            .items
            .iter()
            .all(|e| e.resource_id != bp.id)
    );
    assert_not_found(
        s.list_clusters(
            &a.id,
            &ClusterQuery {
                policy: Some(ResourceRef::id(&bp.id)),
                ..ClusterQuery::default()
            },
        )
        .await,
    );
    // Change.
    assert_not_found(
        s.update_policy(
            &a.id,
            &a.admin,
            &ResourceRef::id(&bp.id),
            &policy_doc("shared.name", "log"),
            1,
        )
        .await,
    );
    assert_not_found(s.delete_policy(&a.id, &a.admin, &ResourceRef::id(&bp.id), None).await);
    assert_not_found(
        s.duplicate_policy(&a.id, &a.admin, &ResourceRef::id(&bp.id), None)
            .await,
    );
    assert_not_found(s.delete_ruleset(&a.id, &a.admin, &ResourceRef::id(&brs.id)).await);
    assert_not_found(
        s.update_attestor(
            &a.id,
            &a.admin,
            &ResourceRef::id(&bat.id),
            &attestor_doc("signer", "x"),
            None,
        )
        .await,
    );
    assert_not_found(s.revoke_api_key(&a.id, &a.admin, &bkey.key.id).await);
    assert_not_found(
        s.update_cluster_settings(
            &a.id,
            &a.admin,
            &ResourceRef::id(&bc.cluster.id),
            &SettingsUpdate::default(),
            None,
        )
        .await,
    );
    assert_not_found(s.heartbeat(&a.id, &ResourceRef::id(&bc.cluster.id), "1", "v1").await);
    assert_not_found(
        s.rotate_connector_key(&a.id, &a.admin, &ResourceRef::id(&bc.cluster.id), None, None)
            .await,
    );
    assert_not_found(
        s.delete_cluster(&a.id, &a.admin, &ResourceRef::id(&bc.cluster.id))
            .await,
    );
    // Assign: B's policy to A's cluster, and A's policy to B's cluster.
    assert_not_found(
        s.assign_policy(
            &a.id,
            &a.admin,
            &ResourceRef::id(&ac.cluster.id),
            Some(&ResourceRef::id(&bp.id)),
        )
        .await,
    );
    let ap = s
        .create_policy(&a.id, &a.admin, &policy_doc("shared.name", "log"))
        .await
        .unwrap();
    assert_not_found(
        s.assign_policy(
            &a.id,
            &a.admin,
            &ResourceRef::id(&bc.cluster.id),
            Some(&ResourceRef::id(&ap.id)),
        )
        .await,
    );
    // A connector key of A's cannot be bound to B's cluster.
    assert_not_found(
        s.create_api_key(
            &a.id,
            &a.admin,
            &NewApiKey {
                role: Role::Connector,
                cluster: Some(ResourceRef::id(&bc.cluster.id)),
                expires_at: None,
                description: String::new(),
            },
        )
        .await,
    );
    // References across tenants do not resolve.
    assert_invalid(
        s.create_policy(
            &a.id,
            &a.admin,
            &policy_with_refs("refs", Some("signer"), Some(&brs.id)),
        )
        .await
        .unwrap_err(),
        "runtime.rulesets[0].id",
    );
    // Scans.
    let digest = format!("sha256:{}", "ab".repeat(32));
    let native = serde_json::json!({"digest": digest, "scanType": "vulnerability", "scannedAt": "2024-01-01T00:00:00Z", "scanner": "trivy", "findings": []});
    s.upload_scan(
        &b.id,
        &b.admin,
        &ScanUpload {
            digest: None,
            image: String::new(),
            report: ScanReport::NativeJson(native.to_string().into_bytes()),
        },
    )
    .await
    .unwrap();
    assert_not_found(
        s.latest_scan(&a.id, &digest, portcullis_engine::scan::ScanType::Vulnerability)
            .await,
    );
    assert!(
        s.scan_summaries(&a.id, std::slice::from_ref(&digest)).await.unwrap()[0]
            .summaries
            .is_empty()
    );
    assert!(
        s.list_scans(&a.id, &ScanQuery::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // B's things are untouched.
    assert_eq!(s.get_policy(&b.id, &ResourceRef::id(&bp.id)).await.unwrap().revision, 1);
    assert_eq!(
        s.get_cluster(&b.id, &ResourceRef::id(&bc.cluster.id))
            .await
            .unwrap()
            .generation,
        1
    );
    assert!(s.introspect(&bkey.secret).await.is_ok());
    assert_eq!(s.introspect(&a.admin_secret).await.unwrap().tenant_id, "tenant-a");
}

async fn api_keys(db: &TestDb) {
    let s = &db.store;
    let t = tenant(s, "acme").await;
    let new = |role, cluster, expires_at| NewApiKey {
        role,
        cluster,
        expires_at,
        description: "ci".to_owned(),
    };
    assert_invalid(
        s.create_api_key(&t.id, &t.admin, &new(Role::Connector, None, None))
            .await
            .unwrap_err(),
        "cluster",
    );
    assert_invalid(
        s.create_api_key(&t.id, &t.admin, &new(Role::Viewer, Some(ResourceRef::name("c")), None))
            .await
            .unwrap_err(),
        "cluster",
    );
    assert_invalid(
        s.create_api_key(
            &t.id,
            &t.admin,
            &new(Role::Viewer, None, Some(db.clock.now() - Duration::seconds(1))),
        )
        .await
        .unwrap_err(),
        "expires_at",
    );
    assert_not_found(
        s.create_api_key(
            &t.id,
            &t.admin,
            &new(Role::Connector, Some(ResourceRef::name("nope")), None),
        )
        .await,
    );

    let viewer = s
        .create_api_key(&t.id, &t.admin, &new(Role::Viewer, None, None))
        .await
        .unwrap();
    assert!(viewer.secret.starts_with(KEY_PREFIX));
    assert!(viewer.secret.contains(&viewer.key.id));
    assert!(
        viewer.secret.starts_with(&viewer.key.secret_prefix) && viewer.key.secret_prefix.len() < viewer.secret.len()
    );
    assert_eq!(viewer.key.created_by_key_id, t.admin.key_id);
    assert!(
        !format!("{viewer:?}").contains(&viewer.secret),
        "Debug never prints the secret"
    );
    let expiring = s
        .create_api_key(
            &t.id,
            &t.admin,
            &new(Role::Editor, None, Some(db.clock.now() + Duration::hours(1))),
        )
        .await
        .unwrap();

    // Introspection and last-used time (written at most once a minute).
    let who = s.introspect(&viewer.secret).await.unwrap();
    assert_eq!(
        (who.tenant_id.as_str(), who.role, who.key_id.as_str()),
        ("acme", Role::Viewer, viewer.key.id.as_str())
    );
    let first_use = db.clock.now();
    assert_eq!(
        s.get_api_key(&t.id, &viewer.key.id).await.unwrap().last_used_at,
        Some(first_use)
    );
    db.clock.advance(Duration::seconds(30));
    s.introspect(&viewer.secret).await.unwrap();
    assert_eq!(
        s.get_api_key(&t.id, &viewer.key.id).await.unwrap().last_used_at,
        Some(first_use)
    );
    db.clock.advance(Duration::seconds(31));
    s.introspect(&viewer.secret).await.unwrap();
    assert_eq!(
        s.get_api_key(&t.id, &viewer.key.id).await.unwrap().last_used_at,
        Some(db.clock.now())
    );

    // Unknown, wrong secret, malformed.
    let wrong = format!("{}x", &viewer.secret[..viewer.secret.len() - 1]);
    for bad in [wrong.as_str(), "pck_nope_abc", "", "Bearer something"] {
        assert!(
            matches!(
                s.introspect(bad).await,
                Err(StoreError::Unauthenticated(InactiveReason::Unknown))
            ),
            "{bad}"
        );
    }

    // Listing: newest first, never a secret, paging.
    let all = s.list_api_keys(&t.id, &ApiKeyQuery::default()).await.unwrap();
    assert_eq!(all.items.len(), 3);
    let p1 = s
        .list_api_keys(
            &t.id,
            &ApiKeyQuery {
                page: PageRequest::first(2),
                ..ApiKeyQuery::default()
            },
        )
        .await
        .unwrap();
    let p2 = s
        .list_api_keys(
            &t.id,
            &ApiKeyQuery {
                page: PageRequest::after(2, p1.next_token.clone().unwrap()),
                ..ApiKeyQuery::default()
            },
        )
        .await
        .unwrap();
    let paged: Vec<String> = p1.items.iter().chain(&p2.items).map(|k| k.id.clone()).collect();
    assert_eq!(paged, all.items.iter().map(|k| k.id.clone()).collect::<Vec<_>>());
    assert!(p2.next_token.is_none());
    let viewers = s
        .list_api_keys(
            &t.id,
            &ApiKeyQuery {
                role: Some(Role::Viewer),
                ..ApiKeyQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        viewers.items.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        [viewer.key.id.as_str()]
    );

    // Revoke: stops at once, publishes, audits; a second revoke changes nothing.
    let revoked = s.revoke_api_key(&t.id, &t.admin, &viewer.key.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(matches!(
        s.introspect(&viewer.secret).await,
        Err(StoreError::Unauthenticated(InactiveReason::Revoked))
    ));
    let ev = events(s).await.pop().unwrap();
    assert_eq!(ev.topic, "apikey.revoked");
    assert_eq!(ev.subject(), "pc.acme.evt.apikey.revoked");
    let count = s.pending_event_count().await.unwrap();
    assert_eq!(
        s.revoke_api_key(&t.id, &t.admin, &viewer.key.id)
            .await
            .unwrap()
            .revoked_at,
        revoked.revoked_at
    );
    assert_eq!(s.pending_event_count().await.unwrap(), count);

    // Expiry.
    assert_eq!(
        s.introspect(&expiring.secret).await.unwrap().expires_at,
        expiring.key.expires_at
    );
    db.clock.advance(Duration::hours(2));
    assert!(matches!(
        s.introspect(&expiring.secret).await,
        Err(StoreError::Unauthenticated(InactiveReason::Expired))
    ));
    let active = s.list_api_keys(&t.id, &ApiKeyQuery::default()).await.unwrap();
    assert_eq!(
        active.items.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        [t.admin.key_id.as_deref().unwrap()]
    );
    let everything = s
        .list_api_keys(
            &t.id,
            &ApiKeyQuery {
                include_inactive: true,
                ..ApiKeyQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(everything.items.len(), 3);
    assert!(everything.items.iter().any(|k| !k.is_active(db.clock.now())));
}

async fn tenants(db: &TestDb) {
    let s = &db.store;
    let t = tenant(s, "acme").await;
    assert_eq!(s.introspect(&t.admin_secret).await.unwrap().role, Role::Admin);
    match s
        .create_tenant(
            &Actor::operator(),
            &NewTenant {
                id: Some("acme".to_owned()),
                name: "Other".to_owned(),
                admin_key_expires_at: None,
            },
        )
        .await
    {
        Err(StoreError::AlreadyExists { resource: "tenant", .. }) => {}
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    match s
        .create_tenant(
            &Actor::operator(),
            &NewTenant {
                id: None,
                name: "Tenant acme".to_owned(),
                admin_key_expires_at: None,
            },
        )
        .await
    {
        Err(StoreError::AlreadyExists { .. }) => {}
        other => panic!("expected AlreadyExists for the name, got {other:?}"),
    }
    assert_invalid(
        s.create_tenant(
            &Actor::operator(),
            &NewTenant {
                id: Some("Upper_Case".to_owned()),
                name: "x".to_owned(),
                admin_key_expires_at: None,
            },
        )
        .await
        .unwrap_err(),
        "tenant_id",
    );
    assert_invalid(
        s.create_tenant(
            &Actor::operator(),
            &NewTenant {
                id: None,
                name: " ".to_owned(),
                admin_key_expires_at: None,
            },
        )
        .await
        .unwrap_err(),
        "name",
    );
    let generated = s
        .create_tenant(
            &Actor::operator(),
            &NewTenant {
                id: None,
                name: "Gen".to_owned(),
                admin_key_expires_at: None,
            },
        )
        .await
        .unwrap();
    assert!(is_valid_tenant_id(&generated.tenant.id));
    assert_eq!(s.get_tenant(&generated.tenant.id).await.unwrap().name, "Gen");
    let listed = s.list_tenants(&PageRequest::default(), "").await.unwrap();
    assert_eq!(listed.items.len(), 2);
    assert_eq!(
        s.list_tenants(&PageRequest::default(), "Gen")
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // Delete: everything goes; its keys stop working and are announced.
    s.create_policy(&t.id, &t.admin, &policy_doc("p", "block"))
        .await
        .unwrap();
    let reg = s
        .register_cluster(
            &t.id,
            &t.admin,
            &NewCluster {
                name: "c".to_owned(),
                policy: Some(ResourceRef::name("p")),
                ..NewCluster::default()
            },
        )
        .await
        .unwrap();
    s.create_attestor(&t.id, &t.admin, &attestor_doc("signer", ""))
        .await
        .unwrap();
    s.create_policy(&t.id, &t.admin, &policy_with_refs("q", Some("signer"), None))
        .await
        .unwrap();
    let before = s.pending_event_count().await.unwrap();
    s.delete_tenant(&Actor::operator(), "acme").await.unwrap();
    assert_not_found(s.get_tenant("acme").await);
    assert!(matches!(
        s.introspect(&t.admin_secret).await,
        Err(StoreError::Unauthenticated(_))
    ));
    assert!(matches!(
        s.introspect(&reg.connector_key.secret).await,
        Err(StoreError::Unauthenticated(_))
    ));
    let new_events = s.pending_event_count().await.unwrap() - before;
    assert_eq!(new_events, 2, "one apikey.revoked per working key");
    let reasons: Vec<i32> = events(s)
        .await
        .iter()
        .rev()
        .take(2)
        .map(|e| match decode(e).payload {
            Some(pe::event_envelope::Payload::ApiKeyRevoked(r)) => r.reason,
            other => panic!("not apikey.revoked: {other:?}"),
        })
        .collect();
    assert_eq!(reasons, [pe::RevocationReason::TenantDeleted as i32; 2]);
    // The deletion is on record under the tenant's id; nothing else of it is.
    let record = s.list_audit("acme", &AuditQuery::default()).await.unwrap().items;
    assert_eq!(
        record.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["tenant.delete"]
    );
    // The id can be used again, and starts empty.
    let again = tenant(s, "acme").await;
    assert!(
        s.list_policies(&again.id, &PolicyQuery::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        s.list_clusters(&again.id, &ClusterQuery::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------
// Outbox

async fn outbox_rows_and_relay(db: &TestDb) {
    let s = &db.store;
    let t = tenant(s, "acme").await;
    let p = s
        .create_policy(&t.id, &t.admin, &policy_doc("prod", "block"))
        .await
        .unwrap();
    let rows = events(s).await;
    assert_eq!(rows.len(), 1, "tenant creation publishes nothing; the policy one event");
    let ev = &rows[0];
    assert_eq!((ev.topic.as_str(), ev.tenant_id.as_str()), ("policy.changed", "acme"));
    assert_eq!(ev.subject(), "pc.acme.evt.policy.changed");
    let env = decode(ev);
    assert_eq!(
        (env.event_id.as_str(), env.tenant_id.as_str(), env.topic.as_str()),
        (ev.event_id.as_str(), "acme", "policy.changed")
    );
    assert!(uuid::Uuid::parse_str(&env.event_id).is_ok());
    assert_eq!(env.producer, "policy-store");
    assert_eq!(env.occurred_at.unwrap().seconds, db.clock.now().unix_timestamp());
    let pc = policy_changed(ev);
    assert_eq!(
        (pc.policy_id.as_str(), pc.name.as_str(), pc.revision),
        (p.id.as_str(), "prod", 1)
    );
    assert_eq!(pc.change, pe::ChangeKind::Created as i32);
    assert_eq!(Some(pc.author_key_id), t.admin.key_id.clone());

    s.update_policy(
        &t.id,
        &t.admin,
        &ResourceRef::name("prod"),
        &policy_doc("prod", "log"),
        1,
    )
    .await
    .unwrap();
    // A failed change writes no event.
    s.update_policy(
        &t.id,
        &t.admin,
        &ResourceRef::name("prod"),
        &policy_doc("prod", "none"),
        1,
    )
    .await
    .unwrap_err();
    assert_eq!(s.pending_event_count().await.unwrap(), 2);

    // A failing sink: the rows stay.
    let failing = Arc::new(RecordingSink::default());
    failing.fail.store(true, Ordering::SeqCst);
    let relay = OutboxRelay::new(s.clone(), failing.clone());
    assert!(matches!(relay.publish_pending().await, Err(RelayError::Publish { .. })));
    assert_eq!(
        failing.attempts.load(Ordering::SeqCst),
        1,
        "stops at the first failure, keeping order"
    );
    assert_eq!(s.pending_event_count().await.unwrap(), 2);

    // One more change, then a "restart": a new store and relay on the same database.
    s.update_policy(
        &t.id,
        &t.admin,
        &ResourceRef::name("prod"),
        &policy_doc("prod", "block"),
        2,
    )
    .await
    .unwrap();
    let expected: Vec<String> = events(s).await.into_iter().map(|e| e.event_id).collect();
    drop(relay);
    let restarted = db.reopen().await;
    let sink = Arc::new(RecordingSink::default());
    let relay = OutboxRelay::new(restarted.clone(), sink.clone());
    assert_eq!(relay.publish_pending().await.unwrap(), 3);
    assert_eq!(sink.ids(), expected, "published in commit order");
    let revisions: Vec<u64> = sink
        .published
        .lock()
        .unwrap()
        .iter()
        .map(|e| policy_changed(e).revision)
        .collect();
    assert_eq!(revisions, [1, 2, 3]);
    assert_eq!(
        restarted.pending_event_count().await.unwrap(),
        0,
        "removed after the ack"
    );
    assert_eq!(relay.publish_pending().await.unwrap(), 0);
    assert_eq!(sink.ids().len(), 3, "nothing published twice");
}

async fn relay_runs_and_retries(db: &TestDb) {
    let s = &db.store;
    let t = tenant(s, "acme").await;
    let sink = Arc::new(RecordingSink::default());
    sink.fail_next.store(2, Ordering::SeqCst);
    let config = RelayConfig {
        poll_interval: StdDuration::from_secs(600),
        min_backoff: StdDuration::from_millis(20),
        max_backoff: StdDuration::from_millis(100),
        ..RelayConfig::default()
    };
    let relay = Arc::new(OutboxRelay::with_config(s.clone(), sink.clone(), config));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let relay = relay.clone();
        async move {
            relay
                .run(async {
                    let _ = stopped.await;
                })
                .await;
        }
    });
    // Let it go idle (nothing to do, waiting on the 10-minute poll). A pause that is the
    // scenario: "idle" has no observable state, and a commit must wake it from there.
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    s.create_policy(&t.id, &t.admin, &policy_doc("prod", "block"))
        .await
        .unwrap();
    // The commit wakes it; two failures are retried with backoff; then it is published.
    until(StdDuration::from_secs(10), "the event is published", async || {
        !sink.ids().is_empty()
    })
    .await;
    assert_eq!(sink.attempts.load(Ordering::SeqCst), 3);
    assert_eq!(sink.ids().len(), 1);
    // notify() wakes it too (for rows written by another store on the same database).
    let other = db.reopen().await;
    other
        .create_policy(&t.id, &t.admin, &policy_doc("second", "block"))
        .await
        .unwrap();
    relay.notify();
    until(
        StdDuration::from_secs(10),
        "the event is published after notify",
        async || sink.ids().len() >= 2,
    )
    .await;
    stop.send(()).unwrap();
    tokio::time::timeout(StdDuration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.pending_event_count().await.unwrap(), 0);
}

/// An event the sink refuses for good moves to the dead letters, with its payload and why,
/// and the events after it are published; a failure worth retrying still stops the relay
/// with the row kept.
async fn refused_events_become_dead_letters(db: &TestDb) {
    let s = &db.store;
    let t = tenant(s, "acme").await;
    let sink = Arc::new(RecordingSink::default());
    let relay = OutboxRelay::new(s.clone(), sink.clone());
    relay.publish_pending().await.unwrap();
    for name in ["one", "two", "three"] {
        s.create_policy(&t.id, &t.admin, &policy_doc(name, "block"))
            .await
            .unwrap();
    }
    let waiting = events(s).await;
    let [one, two, three] = waiting.as_slice() else {
        panic!("three events expected: {waiting:?}");
    };
    sink.refuse.lock().unwrap().push(two.event_id.clone());
    let published_before = sink.ids().len();

    assert_eq!(relay.publish_pending().await.unwrap(), 2);
    assert_eq!(
        sink.ids()[published_before..],
        [one.event_id.clone(), three.event_id.clone()],
        "the events around the refused one are published, in order"
    );
    assert_eq!(s.pending_event_count().await.unwrap(), 0);
    assert_eq!(relay.dead_lettered(), 1);
    let listed = s.list_dead_letters(&PageRequest::first(10)).await.unwrap();
    let [dead] = listed.items.as_slice() else {
        panic!("one dead letter expected: {listed:?}");
    };
    assert_eq!(&dead.event, two, "kept as it stood in the outbox");
    assert_eq!(dead.reason, format!("{REFUSED}: too large"));
    assert_eq!(dead.dead_at, db.clock.now());
    assert_eq!(listed.next_token, None);

    // Bus down: retried later, not a dead letter.
    sink.fail.store(true, Ordering::SeqCst);
    s.create_policy(&t.id, &t.admin, &policy_doc("four", "block"))
        .await
        .unwrap();
    assert!(matches!(relay.publish_pending().await, Err(RelayError::Publish { .. })));
    assert_eq!(s.pending_event_count().await.unwrap(), 1);
    assert_eq!(relay.dead_lettered(), 1);
    sink.fail.store(false, Ordering::SeqCst);

    // A second dead letter (the outage's event is published before it); listed a page at a time.
    s.create_policy(&t.id, &t.admin, &policy_doc("five", "block"))
        .await
        .unwrap();
    let five = events(s).await.pop().unwrap();
    sink.refuse.lock().unwrap().push(five.event_id.clone());
    assert_eq!(relay.publish_pending().await.unwrap(), 1);
    assert_eq!(relay.dead_lettered(), 2);
    let first = s.list_dead_letters(&PageRequest::first(1)).await.unwrap();
    assert_eq!(first.items.len(), 1);
    assert_eq!(first.items[0].event.event_id, two.event_id);
    let second = s
        .list_dead_letters(&PageRequest {
            size: 1,
            token: first.next_token.clone(),
        })
        .await
        .unwrap();
    assert_eq!(second.items.len(), 1);
    assert_eq!(second.items[0].event.event_id, five.event_id);
    assert_eq!(second.next_token, None);
}

async fn concurrent_relays_publish_once(db: &TestDb) {
    let s = &db.store;
    let t = tenant(s, "acme").await;
    for i in 0..40 {
        s.create_ruleset(&t.id, &t.admin, &ruleset_doc(&format!("rs{i}"), "log"))
            .await
            .unwrap();
    }
    let expected: Vec<String> = events(s).await.into_iter().map(|e| e.event_id).collect();
    assert_eq!(expected.len(), 40);
    let sink = Arc::new(RecordingSink::default());
    let config = RelayConfig {
        batch_size: 7,
        ..RelayConfig::default()
    };
    let second_store = db.reopen().await;
    let r1 = OutboxRelay::with_config(s.clone(), sink.clone(), config.clone());
    let r2 = OutboxRelay::with_config(second_store, sink.clone(), config.clone());
    let r3 = OutboxRelay::with_config(s.clone(), sink.clone(), config);
    let (a, b, c) = tokio::join!(r1.publish_pending(), r2.publish_pending(), r3.publish_pending());
    let total = a.unwrap() + b.unwrap() + c.unwrap();
    let mut got = sink.ids();
    assert_eq!(total, got.len());
    got.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(got, want, "every event exactly once");
    assert_eq!(s.pending_event_count().await.unwrap(), 0);
}

async fn concurrent_updates_one_wins(db: &TestDb) {
    let s = &db.store;
    let t = tenant(s, "acme").await;
    s.create_policy(&t.id, &t.admin, &policy_doc("prod", "block"))
        .await
        .unwrap();
    let r = ResourceRef::name("prod");
    let other = db.reopen().await;
    let log = policy_doc("prod", "log");
    let none_doc = policy_with_refs("prod", None, None)
        .replace("\"block\"", "\"log\"")
        .replace("hostNetwork", "hostPID");
    let (x, y) = tokio::join!(
        s.update_policy(&t.id, &t.admin, &r, &log, 1),
        other.update_policy(&t.id, &t.admin, &r, &none_doc, 1)
    );
    let oks = [x.is_ok(), y.is_ok()].iter().filter(|ok| **ok).count();
    assert_eq!(oks, 1, "{x:?} / {y:?}");
    let failed = if x.is_ok() { y } else { x };
    assert_precondition(failed);
    assert_eq!(s.get_policy(&t.id, &r).await.unwrap().revision, 2);
    assert_eq!(
        s.policy_history(&t.id, &r, &PageRequest::default())
            .await
            .unwrap()
            .revisions
            .items
            .len(),
        2
    );
    // Two creates of one name: one wins, the other is AlreadyExists.
    let (race_block, race_log) = (policy_doc("race", "block"), policy_doc("race", "log"));
    let (x, y) = tokio::join!(
        s.create_policy(&t.id, &t.admin, &race_block),
        other.create_policy(&t.id, &t.admin, &race_log)
    );
    assert_eq!([x.is_ok(), y.is_ok()].iter().filter(|ok| **ok).count(), 1);
    assert!(matches!(
        if x.is_ok() { y } else { x },
        Err(StoreError::AlreadyExists { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// Audit, scans, restart

async fn audit_log(db: &TestDb) {
    let s = &db.store;
    let t = tenant(s, "acme").await;
    let editor = Actor {
        key_id: Some("ed-1".to_owned()),
        role: Some(Role::Editor),
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
        tracestate: None,
    };
    s.create_policy(&t.id, &editor, &policy_doc("prod", "block"))
        .await
        .unwrap();
    s.update_policy(
        &t.id,
        &editor,
        &ResourceRef::name("prod"),
        &policy_doc("prod", "log"),
        1,
    )
    .await
    .unwrap();
    let reg = s
        .register_cluster(
            &t.id,
            &t.admin,
            &NewCluster {
                name: "c1".to_owned(),
                ..NewCluster::default()
            },
        )
        .await
        .unwrap();
    s.assign_policy(
        &t.id,
        &t.admin,
        &ResourceRef::name("c1"),
        Some(&ResourceRef::name("prod")),
    )
    .await
    .unwrap();
    let key = s
        .create_api_key(
            &t.id,
            &t.admin,
            &NewApiKey {
                role: Role::Viewer,
                cluster: None,
                expires_at: None,
                description: "v".to_owned(),
            },
        )
        .await
        .unwrap();
    s.revoke_api_key(&t.id, &t.admin, &key.key.id).await.unwrap();
    // A refused change leaves no entry.
    s.delete_policy(&t.id, &editor, &ResourceRef::name("prod"), None)
        .await
        .unwrap_err();

    let entries = s.list_audit(&t.id, &AuditQuery::default()).await.unwrap().items;
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "apikey.revoke",
            "apikey.create",
            "cluster.assign",
            "cluster.register",
            "policy.update",
            "policy.create",
            "tenant.create"
        ]
    );
    let update = &entries[4];
    assert_eq!(
        (update.actor_key_id.as_str(), update.actor_role),
        ("ed-1", Some(Role::Editor))
    );
    assert_eq!(
        (update.resource_type.as_str(), update.resource_name.as_str()),
        ("policy", "prod")
    );
    assert_eq!(update.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&update.details_json).unwrap()["revision"],
        2
    );
    assert_eq!(update.time, db.clock.now());
    assert_eq!(entries[3].resource_id, reg.cluster.id);
    assert_eq!(entries[6].actor_key_id, "", "the operator has no key id");
    assert!(
        !entries
            .iter()
            .any(|e| e.details_json.contains(&key.secret) || e.details_json.contains(&t.admin_secret))
    );

    // Paging and filters.
    let p1 = s
        .list_audit(
            &t.id,
            &AuditQuery {
                page: PageRequest::first(4),
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap();
    let p2 = s
        .list_audit(
            &t.id,
            &AuditQuery {
                page: PageRequest::after(4, p1.next_token.clone().unwrap()),
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(p1.items.len() + p2.items.len(), 7);
    assert_eq!(p2.items[0].action, "policy.update");
    let by_editor = s
        .list_audit(
            &t.id,
            &AuditQuery {
                actor_key_id: Some("ed-1".to_owned()),
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(by_editor.items.len(), 2);
    let creates = s
        .list_audit(
            &t.id,
            &AuditQuery {
                action: Some("policy.create".to_owned()),
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(creates.items.len(), 1);
    let later = s
        .list_audit(
            &t.id,
            &AuditQuery {
                since: Some(db.clock.now() + Duration::seconds(1)),
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap();
    assert!(later.items.is_empty());
}

async fn scans(db: &TestDb) {
    use portcullis_engine::scan::{ScanType, Severity};
    let s = &db.store;
    let t = tenant(s, "acme").await;
    let trivy = shared("trivy-reports/alpine-310-registry.json.golden");
    let stored = s
        .upload_scan(
            &t.id,
            &t.admin,
            &ScanUpload {
                digest: None,
                image: "alpine:3.10".to_owned(),
                report: ScanReport::Trivy {
                    json: trivy.clone().into_bytes(),
                    secret_scan: false,
                },
            },
        )
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    let digest = "sha256:b1c5a500182b21d0bfa5a584a8526b56d8be316f89e87d951be04abed2446e60";
    let v = &stored[0];
    assert_eq!(
        (v.digest.as_str(), v.scan_type, v.findings, v.is_latest),
        (digest, ScanType::Vulnerability, 4, true)
    );
    assert!(v.max_severity.is_some());
    let latest = s.latest_scan(&t.id, digest, ScanType::Vulnerability).await.unwrap();
    assert_eq!(latest.record.id, v.id);
    assert_eq!(latest.result.findings.len(), 4);
    assert_eq!(latest.record.cvss, v.cvss);

    // The secret scanner ran: a second (clean) result.
    db.clock.advance(Duration::seconds(1));
    let both = s
        .upload_scan(
            &t.id,
            &t.admin,
            &ScanUpload {
                digest: None,
                image: String::new(),
                report: ScanReport::Trivy {
                    json: trivy.into_bytes(),
                    secret_scan: true,
                },
            },
        )
        .await
        .unwrap();
    assert_eq!(
        both.iter().map(|r| r.scan_type).collect::<Vec<_>>(),
        [ScanType::Vulnerability, ScanType::Secret]
    );

    // An older scan uploaded late is stored but does not replace the newest.
    db.clock.advance(Duration::seconds(1));
    let native = |at: &str, severity: &str| {
        serde_json::json!({"digest": digest, "scanType": "vulnerability", "scannedAt": at, "scanner": "other",
            "findings": [{"id": "CVE-1", "severity": severity, "cvssV3Vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]})
        .to_string()
        .into_bytes()
    };
    let old = s
        .upload_scan(
            &t.id,
            &t.admin,
            &ScanUpload {
                digest: Some(digest.to_owned()),
                image: String::new(),
                report: ScanReport::NativeJson(native("2001-01-01T00:00:00Z", "critical")),
            },
        )
        .await
        .unwrap();
    assert!(!old[0].is_latest);
    assert_eq!(
        s.latest_scan(&t.id, digest, ScanType::Vulnerability)
            .await
            .unwrap()
            .record
            .id,
        both[0].id
    );
    let newest = s
        .upload_scan(
            &t.id,
            &t.admin,
            &ScanUpload {
                digest: None,
                image: String::new(),
                report: ScanReport::NativeJson(native("2099-01-01T00:00:00Z", "low")),
            },
        )
        .await
        .unwrap();
    assert!(newest[0].is_latest);
    assert_eq!(newest[0].max_severity, Some(Severity::Low));
    assert!(
        newest[0]
            .cvss
            .iter()
            .any(|c| c.value == "network" && c.max_severity == Severity::Low)
    );
    assert_eq!(
        s.latest_scan(&t.id, digest, ScanType::Vulnerability)
            .await
            .unwrap()
            .record
            .id,
        newest[0].id
    );

    let unknown = format!("sha256:{}", "0".repeat(64));
    let summaries = s
        .scan_summaries(&t.id, &[unknown.clone(), digest.to_owned()])
        .await
        .unwrap();
    assert_eq!(summaries[0].digest, unknown);
    assert!(summaries[0].summaries.is_empty());
    let ids: Vec<&str> = summaries[1].summaries.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [newest[0].id.as_str(), both[1].id.as_str()]);
    assert_not_found(s.latest_scan(&t.id, &unknown, ScanType::Vulnerability).await);
    assert_not_found(s.latest_scan(&t.id, digest, ScanType::Malware).await);

    let listed = s
        .list_scans(
            &t.id,
            &ScanQuery {
                digest: Some(digest.to_owned()),
                ..ScanQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 5);
    let vulns = s
        .list_scans(
            &t.id,
            &ScanQuery {
                scan_type: Some(ScanType::Secret),
                ..ScanQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(vulns.items.len(), 1);

    // Events: one per stored result, with the newest-flag.
    let flags: Vec<bool> = events(s)
        .await
        .iter()
        .filter_map(|e| match decode(e).payload {
            Some(pe::event_envelope::Payload::ScanResultStored(r)) => Some(r.is_latest),
            _ => None,
        })
        .collect();
    assert_eq!(flags, [true, true, true, false, true]);

    // Bad input names the field.
    let bad_digest = serde_json::json!({"digest": "sha256:short", "scanType": "vulnerability", "scannedAt": "2024-01-01T00:00:00Z", "scanner": "x"}).to_string();
    assert_invalid(
        s.upload_scan(
            &t.id,
            &t.admin,
            &ScanUpload {
                digest: None,
                image: String::new(),
                report: ScanReport::NativeJson(bad_digest.into_bytes()),
            },
        )
        .await
        .unwrap_err(),
        "digest",
    );
    assert_invalid(
        s.upload_scan(
            &t.id,
            &t.admin,
            &ScanUpload {
                digest: None,
                image: String::new(),
                report: ScanReport::Trivy {
                    json: b"[]".to_vec(),
                    secret_scan: false,
                },
            },
        )
        .await
        .unwrap_err(),
        "SchemaVersion",
    );
    assert_invalid(
        s.upload_scan(
            &t.id,
            &t.admin,
            &ScanUpload {
                digest: Some(unknown.clone()),
                image: String::new(),
                report: ScanReport::NativeJson(native("2024-01-01T00:00:00Z", "low")),
            },
        )
        .await
        .unwrap_err(),
        "digest",
    );
    let many: Vec<String> = (0..257).map(|i| format!("sha256:{i:064x}")).collect();
    assert_invalid(s.scan_summaries(&t.id, &many).await.unwrap_err(), "digests");
}

async fn restart_keeps_everything(db: &TestDb) {
    let t;
    let reg;
    let viewer;
    {
        let s = &db.store;
        t = tenant(s, "acme").await;
        s.create_attestor(&t.id, &t.admin, &attestor_doc("signer", ""))
            .await
            .unwrap();
        let rs = s
            .create_ruleset(&t.id, &t.admin, &ruleset_doc("base", "log"))
            .await
            .unwrap();
        s.create_policy(&t.id, &t.admin, &policy_with_refs("prod", Some("signer"), Some(&rs.id)))
            .await
            .unwrap();
        s.update_policy(
            &t.id,
            &t.admin,
            &ResourceRef::name("prod"),
            &policy_with_refs("prod", Some("signer"), None),
            1,
        )
        .await
        .unwrap();
        reg = s
            .register_cluster(
                &t.id,
                &t.admin,
                &NewCluster {
                    name: "c1".to_owned(),
                    policy: Some(ResourceRef::name("prod")),
                    ..NewCluster::default()
                },
            )
            .await
            .unwrap();
        s.heartbeat(&t.id, &ResourceRef::name("c1"), "2.0.0", "v1.33.0")
            .await
            .unwrap();
        viewer = s
            .create_api_key(
                &t.id,
                &t.admin,
                &NewApiKey {
                    role: Role::Viewer,
                    cluster: None,
                    expires_at: None,
                    description: String::new(),
                },
            )
            .await
            .unwrap();
        let native = serde_json::json!({"digest": format!("sha256:{}", "cd".repeat(32)), "scanType": "malware", "scannedAt": "2024-01-01T00:00:00Z", "scanner": "x"});
        s.upload_scan(
            &t.id,
            &t.admin,
            &ScanUpload {
                digest: None,
                image: String::new(),
                report: ScanReport::NativeJson(native.to_string().into_bytes()),
            },
        )
        .await
        .unwrap();
    }
    let pending = db.store.pending_event_count().await.unwrap();

    // Reconnect (the migrations run again and find nothing to do).
    let s = db.reopen().await;
    let again = db.reopen().await;
    drop(again);
    assert_eq!(s.get_tenant("acme").await.unwrap().name, "Tenant acme");
    assert_eq!(s.introspect(&t.admin_secret).await.unwrap().role, Role::Admin);
    assert_eq!(s.introspect(&viewer.secret).await.unwrap().role, Role::Viewer);
    assert_eq!(
        s.introspect(&reg.connector_key.secret)
            .await
            .unwrap()
            .cluster_id
            .as_deref(),
        Some(reg.cluster.id.as_str())
    );
    let p = s.get_policy(&t.id, &ResourceRef::name("prod")).await.unwrap();
    assert_eq!(p.revision, 2);
    assert_eq!(
        s.policy_history(&t.id, &ResourceRef::name("prod"), &PageRequest::default())
            .await
            .unwrap()
            .revisions
            .items
            .len(),
        2
    );
    let eff = s.effective_policy(&t.id, &ResourceRef::name("c1")).await.unwrap();
    assert_eq!(eff.policy.unwrap().revision, 2);
    let c = s.get_cluster(&t.id, &ResourceRef::name("c1")).await.unwrap();
    assert_eq!(
        (c.connector_version.as_str(), c.kubernetes_version.as_str()),
        ("2.0.0", "v1.33.0")
    );
    assert!(c.last_seen_at.is_some());
    assert_eq!(
        s.list_rulesets(&t.id, &NameQuery::default()).await.unwrap().items.len(),
        1
    );
    // References survive too: the attestor is still in use.
    assert_precondition(s.delete_attestor(&t.id, &t.admin, &ResourceRef::name("signer")).await);
    assert_eq!(s.list_scans(&t.id, &ScanQuery::default()).await.unwrap().items.len(), 1);
    assert_eq!(
        s.list_audit(&t.id, &AuditQuery::default()).await.unwrap().items.len(),
        8
    );
    assert_eq!(s.pending_event_count().await.unwrap(), pending);
    // And it keeps working.
    s.update_policy(
        &t.id,
        &t.admin,
        &ResourceRef::name("prod"),
        &policy_doc("prod", "log"),
        2,
    )
    .await
    .unwrap();
}

fn key_ring(keys: &[(&str, u8)], active: &str) -> credentials::KeyRing {
    credentials::KeyRing::new(
        keys.iter()
            .map(|(id, b)| ((*id).to_owned(), [*b; credentials::KEY_LEN])),
        active,
    )
    .unwrap()
}

async fn cluster_named(s: &Store, t: &Tenant1, name: &str) -> Cluster {
    s.register_cluster(
        &t.id,
        &t.admin,
        &NewCluster {
            name: name.to_owned(),
            ..NewCluster::default()
        },
    )
    .await
    .unwrap()
    .cluster
}

/// Registry credentials: set, replace, list without secrets, get decrypted, key rotation, a
/// wrong key ring, tenant isolation, validation, and deletion with the cluster and tenant.
fn cred(registry: &str, username: &str, secret: impl Into<String>) -> RegistryCredential {
    RegistryCredential {
        registry: registry.to_owned(),
        username: username.to_owned(),
        secret: credentials::Secret::new(secret),
    }
}

async fn registry_credentials(db: &TestDb) {
    let s = &db.store;
    let t = tenant(s, "acme").await;
    let other = tenant(s, "other").await;
    let c1 = cluster_named(s, &t, "c1").await;
    let c2 = cluster_named(s, &t, "c2").await;
    let c1r = ResourceRef::id(&c1.id);
    let ring = key_ring(&[("k1", 1)], "k1");

    let set = s
        .set_registry_credential(
            &t.id,
            &t.admin,
            &c1r,
            &cred("registry.example:5000", "bot", "pw1"),
            &ring,
        )
        .await
        .unwrap();
    assert_eq!(
        (set.registry.as_str(), set.username.as_str(), set.key_id.as_str()),
        ("registry.example:5000", "bot", "k1")
    );
    // The event names the aspect and holds no secret.
    let last = events(s).await.pop().unwrap();
    assert!(!last.payload.windows(3).any(|w| w == b"pw1"));
    match decode(&last).payload {
        Some(pe::event_envelope::Payload::ClusterChanged(cc)) => {
            assert_eq!(cc.cluster_id, c1.id);
            assert_eq!(cc.aspects, [pe::ClusterChangeAspect::RegistryCredentials as i32]);
        }
        other => panic!("not cluster.changed: {other:?}"),
    }
    // Replace, and a second registry (by cluster name).
    s.set_registry_credential(
        &t.id,
        &t.admin,
        &c1r,
        &cred("registry.example:5000", "bot2", "pw2"),
        &ring,
    )
    .await
    .unwrap();
    s.set_registry_credential(
        &t.id,
        &t.admin,
        &ResourceRef::name("c1"),
        &cred("ghcr.io", "me", "tok"),
        &ring,
    )
    .await
    .unwrap();
    let listed = s.list_registry_credentials(&t.id, &c1r).await.unwrap();
    let names: Vec<(&str, &str)> = listed
        .iter()
        .map(|c| (c.registry.as_str(), c.username.as_str()))
        .collect();
    assert_eq!(names, [("ghcr.io", "me"), ("registry.example:5000", "bot2")]);
    let got = s.get_registry_credentials(&t.id, &c1r, None, &ring).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].secret.expose(), "pw2");
    assert!(!format!("{got:?}").contains("pw2"));
    let one = s
        .get_registry_credentials(&t.id, &c1r, Some("ghcr.io"), &ring)
        .await
        .unwrap();
    assert_eq!((one.len(), one[0].secret.expose()), (1, "tok"));
    // The other cluster has none.
    assert!(
        s.list_registry_credentials(&t.id, &ResourceRef::id(&c2.id))
            .await
            .unwrap()
            .is_empty()
    );

    // Rotation: a new active key seals new rows; old rows still open while k1 is configured.
    let rotated = key_ring(&[("k1", 1), ("k2", 2)], "k2");
    let set = s
        .set_registry_credential(&t.id, &t.admin, &c1r, &cred("ghcr.io", "me", "tok2"), &rotated)
        .await
        .unwrap();
    assert_eq!(set.key_id, "k2");
    let got = s.get_registry_credentials(&t.id, &c1r, None, &rotated).await.unwrap();
    assert_eq!((got[0].secret.expose(), got[1].secret.expose()), ("tok2", "pw2"));
    // A ring without k1, or with another key under the id k1, cannot read.
    assert_precondition(
        s.get_registry_credentials(&t.id, &c1r, None, &key_ring(&[("k2", 2)], "k2"))
            .await,
    );
    assert_precondition(
        s.get_registry_credentials(
            &t.id,
            &c1r,
            Some("registry.example:5000"),
            &key_ring(&[("k1", 9)], "k1"),
        )
        .await,
    );

    // Another tenant sees nothing: the cluster is not found there.
    assert_not_found(s.list_registry_credentials(&other.id, &c1r).await);
    assert_not_found(s.get_registry_credentials(&other.id, &c1r, None, &ring).await);
    assert_not_found(
        s.set_registry_credential(&other.id, &other.admin, &c1r, &cred("ghcr.io", "x", "y"), &ring)
            .await,
    );

    // Validation.
    for (registry, username, secret, field) in [
        ("https://ghcr.io", "u", "p", "registry"),
        ("ghcr.io/path", "u", "p", "registry"),
        ("", "u", "p", "registry"),
        ("ghcr.io:99999", "u", "p", "registry"),
        ("ghcr.io", "", "p", "username"),
        ("ghcr.io", "a\nb", "p", "username"),
        ("ghcr.io", "u", "", "secret"),
    ] {
        let err = s
            .set_registry_credential(&t.id, &t.admin, &c1r, &cred(registry, username, secret), &ring)
            .await
            .unwrap_err();
        assert_invalid(err, field);
    }
    let long = "x".repeat(MAX_SECRET_LEN + 1);
    let err = s
        .set_registry_credential(&t.id, &t.admin, &c1r, &cred("ghcr.io", "u", long), &ring)
        .await
        .unwrap_err();
    assert_invalid(err, "secret");

    // Replace the whole set in one change; duplicates and bad entries are refused whole.
    let err = s
        .replace_registry_credentials(
            &t.id,
            &t.admin,
            &c1r,
            &[cred("a.io", "u", "p"), cred("a.io", "v", "q")],
            &ring,
        )
        .await
        .unwrap_err();
    assert_invalid(err, "credentials[1].registry");
    let err = s
        .replace_registry_credentials(
            &t.id,
            &t.admin,
            &c1r,
            &[cred("a.io", "u", ""), cred("b.io", "v", "q")],
            &ring,
        )
        .await
        .unwrap_err();
    assert_invalid(err, "credentials[0].secret");
    assert_eq!(s.list_registry_credentials(&t.id, &c1r).await.unwrap().len(), 2);
    let replaced = s
        .replace_registry_credentials(
            &t.id,
            &t.admin,
            &c1r,
            &[cred("b.io", "v", "q"), cred("ghcr.io", "me", "t3")],
            &ring,
        )
        .await
        .unwrap();
    let names: Vec<&str> = replaced.iter().map(|c| c.registry.as_str()).collect();
    assert_eq!(names, ["b.io", "ghcr.io"]);
    let got = s
        .get_registry_credentials(&t.id, &c1r, Some("ghcr.io"), &ring)
        .await
        .unwrap();
    assert_eq!(got[0].secret.expose(), "t3");
    assert!(
        s.replace_registry_credentials(&t.id, &t.admin, &c1r, &[], &ring)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.list_registry_credentials(&t.id, &c1r).await.unwrap().is_empty());
    s.replace_registry_credentials(
        &t.id,
        &t.admin,
        &c1r,
        &[
            cred("ghcr.io", "me", "t4"),
            cred("registry.example:5000", "bot2", "pw2"),
        ],
        &ring,
    )
    .await
    .unwrap();

    // Delete one; deleting it again is NotFound.
    s.delete_registry_credential(&t.id, &t.admin, &c1r, "ghcr.io")
        .await
        .unwrap();
    assert_not_found(s.delete_registry_credential(&t.id, &t.admin, &c1r, "ghcr.io").await);
    assert_eq!(s.list_registry_credentials(&t.id, &c1r).await.unwrap().len(), 1);

    // Deleted with the cluster; a cluster of the same name starts empty.
    s.delete_cluster(&t.id, &t.admin, &c1r).await.unwrap();
    let again = cluster_named(s, &t, "c1").await;
    assert!(
        s.list_registry_credentials(&t.id, &ResourceRef::id(&again.id))
            .await
            .unwrap()
            .is_empty()
    );
    // Deleted with the tenant.
    s.set_registry_credential(
        &t.id,
        &t.admin,
        &ResourceRef::id(&c2.id),
        &cred("ghcr.io", "u", "p"),
        &ring,
    )
    .await
    .unwrap();
    s.delete_tenant(&Actor::operator(), "acme").await.unwrap();
    tenant(s, "acme").await;
    assert_not_found(s.list_registry_credentials("acme", &ResourceRef::id(&c2.id)).await);
}
