//! The continuous store's behaviour, written once and run against both backends: every
//! scenario is an `async fn(&TestDb)`, and `both!` makes a `sqlite::<name>` test (a temp
//! file) and a `postgres::<name>` test (a fresh database, dropped afterwards) of it.
//!
//! Pods are the realistic running pods of `tests/support/pods.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "support/pods.rs"]
mod pods;

use std::collections::{BTreeMap, BTreeSet};

use portcullis_continuous::findings::{
    Backoff, Finding, Isolation, Order, Owners, PodAddress, PodState, RuleKey, isolation_policy,
};
use portcullis_continuous::inventory::PodProjection;
use portcullis_continuous::storage::{ROWS_PER_STATEMENT, SqlStore};
use portcullis_continuous::store::{
    Acked, ClusterPods, CommandFilter, CommandOrigin, CommandState, ContinuousStore, FindingFilter, FindingsWrite,
    InventoryApplied, InventoryWrite, NewCommand, PageRequest, PolicyUsed, StoreError, StoredCommand, StoredFinding,
};
use portcullis_engine::policy::Mitigation;
use portcullis_test_kit::{DataDir, TestDatabase};
use serde_json::Value;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

// ---------------------------------------------------------------------------------------
// Support

struct TestDb {
    store: SqlStore,
    url: String,
    _dir: Option<DataDir>,
    _pg: Option<TestDatabase>,
}

impl TestDb {
    async fn sqlite() -> TestDb {
        let dir = DataDir::new().unwrap();
        let url = dir.sqlite_url("continuous.db");
        let store = SqlStore::connect(&url).await.unwrap();
        TestDb {
            store,
            url,
            _dir: Some(dir),
            _pg: None,
        }
    }

    async fn postgres() -> TestDb {
        let database = TestDatabase::create().await.unwrap_or_else(|e| panic!("{e}"));
        let store = SqlStore::connect(&database.url).await.unwrap();
        TestDb {
            store,
            url: database.url.clone(),
            _dir: None,
            _pg: Some(database),
        }
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
    snapshot_reports_changed_and_removed,
    a_page_wider_than_one_statement,
    deltas_and_deletes,
    pods_running_a_digest,
    tenants_are_isolated,
    findings_round_trip,
    stale_version_conflicts_and_writes_nothing,
    commands_pending_ack_and_list,
    findings_list_filters_and_pages,
    forgetting_a_cluster,
    reopening_keeps_everything,
);

const T: &str = "tenant-a";
const C: &str = "prod";
const NOW: OffsetDateTime = datetime!(2026-12-07 10:00 UTC);

/// Realistic pods, projected, as their rows read back (the row leaves out what no rule
/// reads, such as ports without a host port: the projection read back compares equal).
fn projections(n: usize) -> Vec<PodProjection> {
    pods::running_pods(n)
        .iter()
        .map(|json| {
            let pod = PodProjection::from_pod_json(json.as_bytes()).unwrap();
            PodProjection::from_row(&pod.to_row().unwrap()).unwrap()
        })
        .collect()
}

/// Pod `json` with a label more (another projection of the same uid).
fn relabelled(pod: &PodProjection, value: &str) -> PodProjection {
    let mut row: Value = serde_json::from_slice(&pod.to_row().unwrap()).unwrap();
    row["labels"]["portcullis.test/changed"] = Value::String(value.to_owned());
    PodProjection::from_row(&serde_json::to_vec(&row).unwrap()).unwrap()
}

fn uids(pods: &[PodProjection]) -> Vec<String> {
    pods.iter().map(|p| p.uid().to_owned()).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort_unstable();
    v
}

async fn write(store: &SqlStore, tenant: &str, cluster: &str, write: InventoryWrite) -> InventoryApplied {
    store.write_inventory(tenant, cluster, write, NOW).await.unwrap()
}

/// A full snapshot of `pods` in pages of `page`.
async fn snapshot(
    store: &SqlStore,
    tenant: &str,
    cluster: &str,
    pods: &[PodProjection],
    page: usize,
) -> InventoryApplied {
    let mut all = write(store, tenant, cluster, InventoryWrite::BeginSnapshot).await;
    for chunk in pods.chunks(page) {
        let applied = write(store, tenant, cluster, InventoryWrite::Upsert(chunk.to_vec())).await;
        all.changed.extend(applied.changed);
        all.removed.extend(applied.removed);
    }
    let end = write(store, tenant, cluster, InventoryWrite::EndSnapshot).await;
    all.changed.extend(end.changed);
    all.removed.extend(end.removed);
    all
}

async fn stored_uids(store: &SqlStore, tenant: &str, cluster: &str) -> Vec<String> {
    sorted(uids(&store.pods(tenant, cluster, None).await.unwrap()))
}

fn finding(pod: &PodProjection, rule: &str, mitigation: Mitigation, at: OffsetDateTime) -> Finding {
    Finding {
        cluster: C.to_owned(),
        namespace: pod.namespace().into(),
        pod: pod.name().into(),
        uid: pod.uid().to_owned(),
        rule: RuleKey(rule.to_owned()),
        mitigation,
        containers: vec!["app".to_owned()],
        message: format!("{rule} on {}", pod.name()),
        first_seen: at,
        last_seen: at,
        resolved: None,
    }
}

fn address(pod: &PodProjection) -> PodAddress {
    PodAddress {
        namespace: pod.namespace().into(),
        name: pod.name().into(),
        uid: pod.uid().to_owned(),
    }
}

fn command(pod: &PodProjection, order: Order, origin: CommandOrigin) -> NewCommand {
    NewCommand {
        pod: address(pod),
        order,
        origin,
        reason: "test".to_owned(),
        rules: vec!["containerSecurityContext { privileged:true }".to_owned()],
        runtime_rule_ids: Vec::new(),
    }
}

fn policy(revision: u64) -> PolicyUsed {
    PolicyUsed {
        id: "policy-1".to_owned(),
        revision,
    }
}

fn empty_write(version: u64) -> FindingsWrite {
    FindingsWrite {
        version,
        pods: Vec::new(),
        resolved: Vec::new(),
        owners: Owners::new(),
        commands: Vec::new(),
        policy: policy(1),
    }
}

fn page(size: u32, token: Option<String>) -> PageRequest {
    PageRequest { size, token }
}

// ---------------------------------------------------------------------------------------
// Inventory

async fn snapshot_reports_changed_and_removed(db: &TestDb) {
    let store = &db.store;
    let pods = projections(40);
    let first = snapshot(store, T, C, &pods[..30], 7).await;
    assert_eq!(
        first.changed,
        uids(&pods[..30]),
        "every pod of the first snapshot is new"
    );
    assert!(first.removed.is_empty());
    assert_eq!(stored_uids(store, T, C).await, sorted(uids(&pods[..30])));
    // The projection reads back as written.
    let back = store.pods(T, C, Some(&uids(&pods[3..4]))).await.unwrap();
    assert_eq!(back, vec![pods[3].clone()]);

    // A second snapshot: unchanged pods are not reported, one changed is, two left out go,
    // one new comes.
    let mut second: Vec<PodProjection> = pods[2..30].to_vec();
    second[5] = relabelled(&pods[7], "yes");
    second.push(pods[30].clone());
    let applied = snapshot(store, T, C, &second, 10).await;
    assert_eq!(
        applied.changed,
        vec![pods[7].uid().to_owned(), pods[30].uid().to_owned()]
    );
    assert_eq!(applied.removed, sorted(uids(&pods[..2])));
    assert_eq!(stored_uids(store, T, C).await, sorted(uids(&second)));
    let back = store.pods(T, C, Some(&uids(&pods[7..8]))).await.unwrap();
    assert_eq!(back, vec![second[5].clone()], "the changed projection is stored");

    // The same snapshot again changes nothing.
    let again = snapshot(store, T, C, &second, 50).await;
    assert_eq!(again, InventoryApplied::default());

    // One page holding a pod twice: the last one sent is kept.
    write(store, T, C, InventoryWrite::BeginSnapshot).await;
    let twice = vec![relabelled(&pods[10], "a"), relabelled(&pods[10], "b")];
    let applied = write(store, T, C, InventoryWrite::Upsert(twice.clone())).await;
    assert_eq!(applied.changed, vec![pods[10].uid().to_owned()]);
    let end = write(store, T, C, InventoryWrite::EndSnapshot).await;
    assert_eq!(end.removed.len(), second.len() - 1, "all but the re-sent pod are gone");
    assert_eq!(store.pods(T, C, None).await.unwrap(), vec![twice[1].clone()]);

    assert_eq!(store.clusters().await.unwrap(), vec![(T.to_owned(), C.to_owned())]);
    assert_eq!(store.tenant_clusters(T).await.unwrap(), vec![C.to_owned()]);
}

/// One page of more pods than one statement takes (PostgreSQL's path binds each chunk's
/// columns as arrays, SQLite's binds each value): new, changed and unchanged pods mixed across
/// the chunks are told apart exactly, reported in the order sent, and the changed pods'
/// digests are re-indexed.
async fn a_page_wider_than_one_statement(db: &TestDb) {
    let store = &db.store;
    let n = ROWS_PER_STATEMENT * 2 + 100;
    let pods = projections(n + 200);
    let first = snapshot(store, T, C, &pods[..n], n).await;
    assert_eq!(first.changed, uids(&pods[..n]), "every pod of the first page is new");

    // Every seventh pod relabelled and given pod 0's spec (and so its digests), 200 new ones
    // at the end, the rest re-sent as they are.
    let mut row0: Value = serde_json::from_slice(&pods[0].to_row().unwrap()).unwrap();
    row0.as_object_mut()
        .unwrap()
        .retain(|k, _| k == "spec" || k == "digests");
    let mut page: Vec<PodProjection> = Vec::with_capacity(n + 200);
    let mut expected = Vec::new();
    for (i, pod) in pods[..n].iter().enumerate() {
        if i % 7 == 3 {
            let mut row: Value = serde_json::from_slice(&relabelled(pod, "wide").to_row().unwrap()).unwrap();
            row["spec"] = row0["spec"].clone();
            row["digests"] = row0["digests"].clone();
            page.push(PodProjection::from_row(&serde_json::to_vec(&row).unwrap()).unwrap());
            expected.push(pod.uid().to_owned());
        } else {
            page.push(pod.clone());
        }
    }
    page.extend(pods[n..].iter().cloned());
    expected.extend(uids(&pods[n..]));
    let applied = snapshot(store, T, C, &page, page.len()).await;
    assert_eq!(
        applied.changed, expected,
        "exactly the changed and new pods, in the order sent"
    );
    assert!(applied.removed.is_empty());
    let back = store.pods(T, C, Some(&uids(&page[3..4]))).await.unwrap();
    assert_eq!(back, vec![page[3].clone()], "the changed projection is stored");

    // The changed pods run pod 0's digests now, and no longer their own.
    for (i, pod) in page.iter().enumerate().take(n) {
        for digest in pods[i].digests_run().chain(pods[0].digests_run()) {
            let running = store.pods_running(T, digest).await.unwrap();
            let has = running.iter().any(|c| c.uids.contains(&pod.uid().to_owned()));
            assert_eq!(has, pod.runs_digest(digest), "pod {i}, {digest}");
        }
        if i > 60 {
            break;
        }
    }

    // The same page again changes nothing.
    let again = snapshot(store, T, C, &page, page.len()).await;
    assert_eq!(again, InventoryApplied::default());
}

async fn deltas_and_deletes(db: &TestDb) {
    let store = &db.store;
    let pods = projections(12);
    snapshot(store, T, C, &pods[..10], 4).await;
    // A delta of a changed pod and a new one; an unchanged one is not reported.
    let delta = vec![relabelled(&pods[0], "x"), pods[10].clone(), pods[1].clone()];
    let applied = write(store, T, C, InventoryWrite::Upsert(delta)).await;
    assert_eq!(
        applied.changed,
        vec![pods[0].uid().to_owned(), pods[10].uid().to_owned()]
    );
    // Deletes report the pods that were there only.
    let applied = write(
        store,
        T,
        C,
        InventoryWrite::Delete(vec![pods[2].uid().to_owned(), "no-such-uid".to_owned()]),
    )
    .await;
    assert_eq!(
        applied,
        InventoryApplied {
            changed: Vec::new(),
            removed: vec![pods[2].uid().to_owned()]
        }
    );
    // A delta's pods are stamped with the current generation: the next snapshot that sends
    // them keeps them, one that does not removes them.
    write(store, T, C, InventoryWrite::BeginSnapshot).await;
    write(store, T, C, InventoryWrite::Upsert(pods[3..11].to_vec())).await;
    let end = write(store, T, C, InventoryWrite::EndSnapshot).await;
    assert_eq!(end.removed, sorted(uids(&pods[..2])));

    // One pod by namespace and name, with when it was synced.
    let later = NOW + Duration::minutes(5);
    store
        .write_inventory(T, C, InventoryWrite::Upsert(vec![pods[4].clone()]), later)
        .await
        .unwrap();
    let one = store
        .pod(T, C, pods[4].namespace(), pods[4].name())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one.pod, pods[4]);
    assert_eq!(one.cluster, C);
    assert_eq!(one.synced_at, later);
    assert!(
        store
            .pod(T, C, pods[4].namespace(), "no-such-pod")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .pod(T, "other", pods[4].namespace(), pods[4].name())
            .await
            .unwrap()
            .is_none()
    );
    // Uids asked for that are not there are left out.
    let some = store
        .pods(T, C, Some(&[pods[5].uid().to_owned(), pods[0].uid().to_owned()]))
        .await
        .unwrap();
    assert_eq!(some, vec![pods[5].clone()]);
}

async fn pods_running_a_digest(db: &TestDb) {
    let store = &db.store;
    let pods = projections(60);
    snapshot(store, T, C, &pods[..40], 15).await;
    snapshot(store, T, "staging", &pods[20..60], 15).await;
    let digests: BTreeSet<String> = pods.iter().flat_map(|p| p.digests_run().map(str::to_owned)).collect();
    assert!(digests.len() > 10, "the pods run many digests");
    // Pinned images are among them (their digest is in the spec, not the status).
    assert!(
        pods.iter()
            .any(|p| p.spec().all_containers().any(|(_, c)| c.image.contains("@sha256:"))),
        "the corpus has pods with pinned images"
    );
    for digest in &digests {
        let expected: Vec<ClusterPods> = [(C, &pods[..40]), ("staging", &pods[20..60])]
            .into_iter()
            .filter_map(|(cluster, pods)| {
                let uids = sorted(
                    pods.iter()
                        .filter(|p| p.runs_digest(digest))
                        .map(|p| p.uid().to_owned())
                        .collect(),
                );
                (!uids.is_empty()).then(|| ClusterPods {
                    cluster: cluster.to_owned(),
                    uids,
                })
            })
            .collect();
        let mut expected = expected;
        expected.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        assert_eq!(store.pods_running(T, digest).await.unwrap(), expected, "{digest}");
    }
    // A deleted pod no longer runs anything; another tenant sees nothing.
    let digest = pods[0].digests_run().next().unwrap().to_owned();
    write(store, T, C, InventoryWrite::Delete(vec![pods[0].uid().to_owned()])).await;
    let running = store.pods_running(T, &digest).await.unwrap();
    assert!(running.iter().all(|c| !c.uids.contains(&pods[0].uid().to_owned())));
    assert!(store.pods_running("tenant-b", &digest).await.unwrap().is_empty());
    // A changed pod's digests are written again: pod 1 given pod 2's spec runs pod 2's.
    let mut row: Value = serde_json::from_slice(&pods[1].to_row().unwrap()).unwrap();
    let other: Value = serde_json::from_slice(&pods[2].to_row().unwrap()).unwrap();
    row["spec"] = other["spec"].clone();
    row["digests"] = other["digests"].clone();
    let changed = PodProjection::from_row(&serde_json::to_vec(&row).unwrap()).unwrap();
    write(store, T, C, InventoryWrite::Upsert(vec![changed.clone()])).await;
    for digest in &digests {
        let running = store.pods_running(T, digest).await.unwrap();
        let has = running
            .iter()
            .any(|c| c.cluster == C && c.uids.contains(&pods[1].uid().to_owned()));
        assert_eq!(has, changed.runs_digest(digest), "{digest}");
    }
}

async fn tenants_are_isolated(db: &TestDb) {
    let store = &db.store;
    let pods = projections(20);
    snapshot(store, T, C, &pods[..10], 5).await;
    snapshot(store, "tenant-b", C, &pods[5..20], 5).await;
    assert_eq!(stored_uids(store, T, C).await, sorted(uids(&pods[..10])));
    assert_eq!(stored_uids(store, "tenant-b", C).await, sorted(uids(&pods[5..20])));
    // A snapshot of one tenant's cluster removes none of the other's pods of that name.
    let applied = snapshot(store, "tenant-b", C, &pods[15..20], 5).await;
    assert_eq!(applied.removed, sorted(uids(&pods[5..15])));
    assert_eq!(stored_uids(store, T, C).await, sorted(uids(&pods[..10])));
    assert!(
        store
            .pod("tenant-b", C, pods[0].namespace(), pods[0].name())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.clusters().await.unwrap(),
        vec![(T.to_owned(), C.to_owned()), ("tenant-b".to_owned(), C.to_owned())]
    );
    assert!(store.tenant_clusters("tenant-c").await.unwrap().is_empty());

    // Findings and commands.
    let mut w = empty_write(0);
    w.pods = vec![(
        pods[0].uid().to_owned(),
        PodState {
            open: vec![finding(&pods[0], "hostNetwork { }", Mitigation::Log, NOW)],
            isolation: Isolation::Isolated,
            terminate_ordered: None,
        },
    )];
    w.commands = vec![command(&pods[0], Order::Terminate, CommandOrigin::Continuous)];
    let saved = store.save_findings(T, C, w, NOW).await.unwrap();
    let id = saved.commands[0].id.clone();
    let theirs = store.findings("tenant-b", C, None).await.unwrap();
    assert!(theirs.findings.pods.is_empty());
    assert_eq!(theirs.version, 0);
    assert!(
        store
            .list_findings("tenant-b", &FindingFilter::default(), &page(0, None))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(store.command("tenant-b", &id).await.unwrap().is_none());
    assert!(store.pending_commands("tenant-b", C).await.unwrap().is_empty());
    assert_eq!(
        store
            .ack_command("tenant-b", C, &id, CommandState::Done, "", NOW)
            .await
            .unwrap(),
        Acked::Unknown
    );
    assert!(
        store
            .list_commands("tenant-b", &CommandFilter::default(), &page(0, None))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // The other tenant's save of the same cluster id does not meet this one's version.
    store.save_findings("tenant-b", C, empty_write(0), NOW).await.unwrap();
    assert_eq!(store.findings(T, C, None).await.unwrap().version, 1);
    // Forgetting the other tenant's cluster leaves this one's.
    store.forget_cluster("tenant-b", C, NOW).await.unwrap();
    assert_eq!(stored_uids(store, T, C).await.len(), 10);
    assert_eq!(store.pending_commands(T, C).await.unwrap().len(), 1);
    assert_eq!(store.findings(T, C, None).await.unwrap().findings.pods.len(), 1);
}

// ---------------------------------------------------------------------------------------
// Findings

async fn findings_round_trip(db: &TestDb) {
    let store = &db.store;
    let pods = projections(3);
    let (a, b, c) = (&pods[0], &pods[1], &pods[2]);
    let t0 = NOW;
    let read = store.findings(T, C, None).await.unwrap();
    assert_eq!(read.version, 0);
    assert!(read.findings.pods.is_empty());

    let owners: Owners = [(
        "owner-1".to_owned(),
        Backoff {
            terminations: 2,
            last: t0,
        },
    )]
    .into();
    let write = FindingsWrite {
        version: 0,
        pods: vec![
            (
                a.uid().to_owned(),
                PodState {
                    open: vec![
                        finding(a, "privileged { }", Mitigation::Isolate, t0),
                        finding(a, "latestTag { }", Mitigation::Log, t0),
                    ],
                    isolation: Isolation::Isolated,
                    terminate_ordered: None,
                },
            ),
            (
                b.uid().to_owned(),
                PodState {
                    open: vec![finding(b, "hostPID { }", Mitigation::Terminate, t0)],
                    isolation: Isolation::None,
                    terminate_ordered: Some(t0),
                },
            ),
            // A pod whose state is the default: nothing stored.
            (c.uid().to_owned(), PodState::default()),
        ],
        resolved: Vec::new(),
        owners: owners.clone(),
        commands: vec![
            command(
                a,
                Order::Isolate {
                    network_policy: isolation_policy(a.namespace()),
                },
                CommandOrigin::Continuous,
            ),
            command(b, Order::Terminate, CommandOrigin::Continuous),
            command(c, Order::NotIsolatable, CommandOrigin::Continuous),
        ],
        policy: policy(3),
    };
    let saved = store.save_findings(T, C, write, t0).await.unwrap();
    assert_eq!(saved.version, 1);
    assert_eq!(saved.opened.len(), 3);
    assert!(saved.changed.is_empty() && saved.resolved.is_empty());
    assert!(saved.opened.iter().all(|f| f.policy == policy(3)));
    let ids: BTreeSet<&str> = saved.opened.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids.len(), 3, "each finding has its own id");
    assert_eq!(
        saved.commands.iter().map(|c| c.state).collect::<Vec<_>>(),
        vec![CommandState::Pending, CommandState::Pending, CommandState::Reported]
    );

    let read = store.findings(T, C, None).await.unwrap();
    assert_eq!(read.version, 1);
    assert_eq!(read.findings.owners, owners);
    assert_eq!(read.findings.pods.len(), 2, "pod c has no state");
    let state_a = &read.findings.pods[a.uid()];
    assert_eq!(state_a.isolation, Isolation::Isolated);
    assert_eq!(state_a.terminate_ordered, None);
    let rules: BTreeSet<&str> = state_a.open.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(rules, BTreeSet::from(["privileged { }", "latestTag { }"]));
    assert_eq!(
        state_a.open[0],
        finding(a, state_a.open[0].rule.as_str(), state_a.open[0].mitigation, t0)
    );
    let state_b = &read.findings.pods[b.uid()];
    assert_eq!(state_b.terminate_ordered, Some(t0));
    assert_eq!(state_b.open, vec![finding(b, "hostPID { }", Mitigation::Terminate, t0)]);
    // Reading some pods only: theirs, and the owners whole.
    let some = store.findings(T, C, Some(&[b.uid().to_owned()])).await.unwrap();
    assert_eq!(some.findings.pods.keys().collect::<Vec<_>>(), vec![b.uid()]);
    assert_eq!(some.findings.owners, owners);

    // The next round: a's privileged finding confirmed with a stronger mitigation, its
    // latestTag one resolved, a new one on a; b's isolation state default (its finding
    // confirmed); owners emptied.
    let t1 = t0 + Duration::minutes(10);
    let mut privileged = state_a
        .open
        .iter()
        .find(|f| f.rule.0 == "privileged { }")
        .unwrap()
        .clone();
    privileged.last_seen = t1;
    privileged.mitigation = Mitigation::Terminate;
    privileged.message = "still privileged".to_owned();
    let mut latest = state_a
        .open
        .iter()
        .find(|f| f.rule.0 == "latestTag { }")
        .unwrap()
        .clone();
    latest.resolved = Some(t1);
    let mut host_pid = state_b.open[0].clone();
    host_pid.last_seen = t1;
    let write = FindingsWrite {
        version: 1,
        pods: vec![
            (
                a.uid().to_owned(),
                PodState {
                    open: vec![privileged.clone(), finding(a, "runAsRoot { }", Mitigation::Log, t1)],
                    isolation: Isolation::None,
                    terminate_ordered: None,
                },
            ),
            (
                b.uid().to_owned(),
                PodState {
                    open: vec![host_pid.clone()],
                    isolation: Isolation::None,
                    terminate_ordered: Some(t0),
                },
            ),
        ],
        resolved: vec![latest.clone()],
        owners: Owners::new(),
        commands: vec![command(a, Order::RestoreIsolation, CommandOrigin::Continuous)],
        policy: policy(4),
    };
    let saved2 = store.save_findings(T, C, write, t1).await.unwrap();
    assert_eq!(saved2.version, 2);
    let id_of =
        |saved: &[StoredFinding], rule: &str| saved.iter().find(|f| f.finding.rule.0 == rule).unwrap().id.clone();
    assert_eq!(saved2.opened.len(), 1);
    assert_eq!(saved2.opened[0].finding.rule.0, "runAsRoot { }");
    assert_eq!(saved2.changed.len(), 1, "only the finding whose mitigation changed");
    assert_eq!(saved2.changed[0].id, id_of(&saved.opened, "privileged { }"));
    assert_eq!(saved2.changed[0].finding.first_seen, t0, "first seen is kept");
    assert_eq!(saved2.resolved.len(), 1);
    assert_eq!(saved2.resolved[0].id, id_of(&saved.opened, "latestTag { }"));
    assert_eq!(saved2.resolved[0].finding.resolved, Some(t1));
    assert_eq!(
        saved2.resolved[0].policy,
        policy(3),
        "a resolved finding keeps the policy that found it"
    );

    let read = store.findings(T, C, None).await.unwrap();
    assert_eq!(read.version, 2);
    assert!(read.findings.owners.is_empty(), "owners are replaced");
    let state_a = &read.findings.pods[a.uid()];
    assert_eq!(state_a.isolation, Isolation::None);
    let got: BTreeMap<&str, &Finding> = state_a.open.iter().map(|f| (f.rule.as_str(), f)).collect();
    assert_eq!(got.len(), 2);
    assert_eq!(*got["privileged { }"], privileged);
    assert_eq!(got["runAsRoot { }"].first_seen, t1);
    assert_eq!(read.findings.pods[b.uid()].open, vec![host_pid.clone()]);

    // The listing holds the resolved finding with its id, and the open ones.
    let all = store
        .list_findings(T, &FindingFilter::default(), &page(0, None))
        .await
        .unwrap();
    assert_eq!(all.items.len(), 4);
    assert_eq!(all.next, None);
    let resolved = store
        .list_findings(
            T,
            &FindingFilter {
                open: Some(false),
                ..FindingFilter::default()
            },
            &page(0, None),
        )
        .await
        .unwrap();
    assert_eq!(resolved.items, saved2.resolved);
    let privileged_stored = all.items.iter().find(|f| f.finding.rule.0 == "privileged { }").unwrap();
    assert_eq!(privileged_stored.id, id_of(&saved.opened, "privileged { }"));
    assert_eq!(privileged_stored.policy, policy(4));

    // A pod gone: its state is the default and its findings resolve (listed in `resolved`,
    // or, left out, resolved with the write's time all the same).
    let t2 = t1 + Duration::minutes(1);
    let mut gone_pid = host_pid.clone();
    gone_pid.resolved = Some(t2);
    let write = FindingsWrite {
        version: 2,
        pods: vec![
            (a.uid().to_owned(), PodState::default()),
            (b.uid().to_owned(), PodState::default()),
        ],
        resolved: vec![gone_pid],
        owners: Owners::new(),
        commands: Vec::new(),
        policy: policy(4),
    };
    let saved3 = store.save_findings(T, C, write, t2).await.unwrap();
    assert_eq!(saved3.resolved.len(), 3);
    assert!(saved3.resolved.iter().all(|f| f.finding.resolved == Some(t2)));
    let read = store.findings(T, C, None).await.unwrap();
    assert!(read.findings.pods.is_empty(), "no open findings and no states left");
    assert_eq!(read.version, 3);
}

async fn stale_version_conflicts_and_writes_nothing(db: &TestDb) {
    let store = &db.store;
    let pods = projections(2);
    let mut w = empty_write(0);
    w.pods = vec![(
        pods[0].uid().to_owned(),
        PodState {
            open: vec![finding(&pods[0], "privileged { }", Mitigation::Log, NOW)],
            ..PodState::default()
        },
    )];
    store.save_findings(T, C, w, NOW).await.unwrap();
    let before = store.findings(T, C, None).await.unwrap();
    assert_eq!(before.version, 1);

    // Two replicas read version 1; the first to write wins.
    let later = NOW + Duration::minutes(1);
    let mut first = empty_write(1);
    first.pods = vec![(pods[0].uid().to_owned(), PodState::default())];
    let winner = store.save_findings(T, C, first, later).await.unwrap();
    assert_eq!(winner.version, 2);
    let after_winner = store.findings(T, C, None).await.unwrap();

    let mut stale = empty_write(1);
    stale.pods = vec![(
        pods[1].uid().to_owned(),
        PodState {
            open: vec![finding(&pods[1], "hostPID { }", Mitigation::Terminate, later)],
            isolation: Isolation::Isolated,
            terminate_ordered: Some(later),
        },
    )];
    stale.owners = [(
        "owner".to_owned(),
        Backoff {
            terminations: 1,
            last: later,
        },
    )]
    .into();
    stale.commands = vec![command(&pods[1], Order::Terminate, CommandOrigin::Continuous)];
    let err = store.save_findings(T, C, stale.clone(), later).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    // Nothing of the stale write is there.
    assert_eq!(store.findings(T, C, None).await.unwrap(), after_winner);
    assert!(store.pending_commands(T, C).await.unwrap().is_empty());
    let listed = store
        .list_findings(T, &FindingFilter::default(), &page(0, None))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1, "the first finding, resolved by the winner");
    // A version never read (ahead) conflicts too.
    stale.version = 7;
    assert!(matches!(
        store.save_findings(T, C, stale.clone(), later).await,
        Err(StoreError::Conflict)
    ));
    // Read again, judge again, write.
    stale.version = 2;
    let saved = store.save_findings(T, C, stale, later).await.unwrap();
    assert_eq!(saved.version, 3);
    assert_eq!(store.pending_commands(T, C).await.unwrap().len(), 1);
}

async fn findings_list_filters_and_pages(db: &TestDb) {
    let store = &db.store;
    let pods = projections(30);
    let mitigations = [Mitigation::Log, Mitigation::Isolate, Mitigation::Terminate];
    let rules = ["privileged { }", "hostPID { }", "latestTag { tag:latest }"];
    // 30 pods, three findings each, seen at different times; the pods of index 20 and up in
    // another cluster.
    let mut expected: Vec<(Finding, String)> = Vec::new();
    for (cluster, range) in [(C, 0..20), ("staging", 20..30)] {
        let mut w = empty_write(0);
        for i in range {
            let pod = &pods[i];
            let at = NOW + Duration::seconds(i64::try_from(i).unwrap());
            let open: Vec<Finding> = rules
                .iter()
                .enumerate()
                .map(|(k, rule)| {
                    let mut f = finding(pod, rule, mitigations[(i + k) % 3], at);
                    f.cluster = cluster.to_owned();
                    f
                })
                .collect();
            for f in &open {
                expected.push((f.clone(), cluster.to_owned()));
            }
            w.pods.push((
                pod.uid().to_owned(),
                PodState {
                    open,
                    ..PodState::default()
                },
            ));
        }
        store.save_findings(T, cluster, w, NOW).await.unwrap();
    }
    let list_all = |filter: FindingFilter, size: u32| async move {
        let mut items = Vec::new();
        let mut token = None;
        let mut pages = 0;
        loop {
            let p = store.list_findings(T, &filter, &page(size, token)).await.unwrap();
            assert!(p.items.len() <= usize::try_from(size).unwrap());
            pages += 1;
            items.extend(p.items);
            match p.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        (items, pages)
    };
    // Paging: every finding once, most recently seen first.
    let (all, pages) = list_all(FindingFilter::default(), 7).await;
    assert_eq!(all.len(), 90);
    assert_eq!(pages, 13);
    let ids: BTreeSet<&str> = all.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids.len(), 90, "no finding twice");
    assert!(all.windows(2).all(|w| w[0].finding.last_seen >= w[1].finding.last_seen));

    let count = |pred: &dyn Fn(&Finding) -> bool| expected.iter().filter(|(f, _)| pred(f)).count();
    let (got, _) = list_all(
        FindingFilter {
            cluster: Some("staging".to_owned()),
            ..FindingFilter::default()
        },
        10,
    )
    .await;
    assert_eq!(got.len(), 30);
    assert!(got.iter().all(|f| f.finding.cluster == "staging"));
    let (got, _) = list_all(
        FindingFilter {
            min_mitigation: Some(Mitigation::Isolate),
            ..FindingFilter::default()
        },
        50,
    )
    .await;
    assert_eq!(got.len(), count(&|f| f.mitigation >= Mitigation::Isolate));
    assert!(got.iter().all(|f| f.finding.mitigation >= Mitigation::Isolate));
    let (got, _) = list_all(
        FindingFilter {
            min_mitigation: Some(Mitigation::Terminate),
            ..FindingFilter::default()
        },
        50,
    )
    .await;
    assert_eq!(got.len(), 30);
    let (got, _) = list_all(
        FindingFilter {
            rule_type: Some("latestTag".to_owned()),
            ..FindingFilter::default()
        },
        50,
    )
    .await;
    assert_eq!(got.len(), 30);
    assert!(got.iter().all(|f| f.finding.rule.0.starts_with("latestTag")));
    // `_` and `%` are no wildcards; the prefix is case-sensitive.
    for rule_type in ["latest_ag", "latest%", "LATESTTAG"] {
        let (got, _) = list_all(
            FindingFilter {
                rule_type: Some(rule_type.to_owned()),
                ..FindingFilter::default()
            },
            50,
        )
        .await;
        assert!(got.is_empty(), "{rule_type}");
    }
    let pod = &pods[4];
    let (got, _) = list_all(
        FindingFilter {
            namespace: Some(pod.namespace().into()),
            pod: Some(pod.name().into()),
            ..FindingFilter::default()
        },
        50,
    )
    .await;
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|f| f.finding.uid == pod.uid()));
    let (got, _) = list_all(
        FindingFilter {
            namespace: Some(pod.namespace().into()),
            ..FindingFilter::default()
        },
        50,
    )
    .await;
    assert_eq!(got.len(), count(&|f| f.namespace == pod.namespace()));
    let (got, _) = list_all(
        FindingFilter {
            open: Some(false),
            ..FindingFilter::default()
        },
        50,
    )
    .await;
    assert!(got.is_empty());

    // A token of one listing is refused by a listing of other filters.
    let first = store
        .list_findings(T, &FindingFilter::default(), &page(5, None))
        .await
        .unwrap();
    let other = FindingFilter {
        cluster: Some(C.to_owned()),
        ..FindingFilter::default()
    };
    assert!(matches!(
        store.list_findings(T, &other, &page(5, first.next.clone())).await,
        Err(StoreError::InvalidPageToken)
    ));
    assert!(matches!(
        store
            .list_findings(T, &FindingFilter::default(), &page(5, Some("garbage".to_owned())))
            .await,
        Err(StoreError::InvalidPageToken)
    ));
    // Sizes: 0 is 100.
    let p = store
        .list_findings(T, &FindingFilter::default(), &page(0, None))
        .await
        .unwrap();
    assert_eq!(p.items.len(), 90);
    assert!(p.next.is_none());
}

// ---------------------------------------------------------------------------------------
// Commands

async fn commands_pending_ack_and_list(db: &TestDb) {
    let store = &db.store;
    let pods = projections(12);
    let isolate = Order::Isolate {
        network_policy: isolation_policy(pods[0].namespace()),
    };
    let issued = store
        .issue_commands(
            T,
            C,
            vec![
                command(&pods[0], isolate.clone(), CommandOrigin::Runtime),
                command(&pods[1], Order::Terminate, CommandOrigin::Manual),
                command(&pods[2], Order::NotIsolatable, CommandOrigin::Runtime),
            ],
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(issued.len(), 3);
    assert_eq!(issued[0].command.order, isolate);
    assert_eq!(issued[2].state, CommandState::Reported, "a report is never pending");
    let later = store
        .issue_commands(
            T,
            C,
            vec![command(&pods[3], Order::RestoreIsolation, CommandOrigin::Manual)],
            NOW + Duration::seconds(1),
        )
        .await
        .unwrap();
    // Pending, oldest first and in the order issued.
    let pending = store.pending_commands(T, C).await.unwrap();
    assert_eq!(
        pending,
        vec![issued[0].clone(), issued[1].clone(), later[0].clone()],
        "the isolate's NetworkPolicy, addresses and lists read back"
    );
    assert_eq!(store.command(T, &issued[1].id).await.unwrap(), Some(issued[1].clone()));
    assert_eq!(store.command(T, "no-such-id").await.unwrap(), None);

    // Ack once; again changes nothing.
    let at = NOW + Duration::seconds(5);
    let acked = store
        .ack_command(T, C, &issued[0].id, CommandState::Done, "applied", at)
        .await
        .unwrap();
    let Acked::Now(now) = acked else { panic!("{acked:?}") };
    assert_eq!(now.state, CommandState::Done);
    assert_eq!(now.state_changed_at, at);
    assert_eq!(now.ack_message, "applied");
    assert_eq!(now.issued_at, NOW);
    let again = store
        .ack_command(
            T,
            C,
            &issued[0].id,
            CommandState::Failed,
            "other",
            at + Duration::seconds(1),
        )
        .await
        .unwrap();
    assert_eq!(again, Acked::Already(now.clone()));
    assert_eq!(store.command(T, &issued[0].id).await.unwrap(), Some(now.clone()));
    // A report is final already.
    assert!(matches!(
        store
            .ack_command(T, C, &issued[2].id, CommandState::Done, "", at)
            .await
            .unwrap(),
        Acked::Already(_)
    ));
    // Unknown ids and other clusters' commands.
    assert_eq!(
        store
            .ack_command(T, C, "no-such-id", CommandState::Done, "", at)
            .await
            .unwrap(),
        Acked::Unknown
    );
    assert_eq!(
        store
            .ack_command(T, "staging", &issued[1].id, CommandState::Done, "", at)
            .await
            .unwrap(),
        Acked::Unknown
    );
    assert_eq!(
        store.pending_commands(T, C).await.unwrap(),
        vec![issued[1].clone(), later[0].clone()]
    );

    // Listing: newest first, paged, filtered.
    let mut all_issued: Vec<StoredCommand> = Vec::new();
    for i in 0..8 {
        let cluster = if i % 2 == 0 { C } else { "staging" };
        all_issued.extend(
            store
                .issue_commands(
                    T,
                    cluster,
                    vec![
                        command(&pods[4 + i], Order::Terminate, CommandOrigin::Continuous),
                        command(&pods[4 + i], Order::RestoreIsolation, CommandOrigin::Continuous),
                    ],
                    NOW + Duration::seconds(10 + i64::try_from(i).unwrap()),
                )
                .await
                .unwrap(),
        );
    }
    let list_all = |filter: CommandFilter, size: u32| async move {
        let mut items: Vec<StoredCommand> = Vec::new();
        let mut token = None;
        loop {
            let p = store.list_commands(T, &filter, &page(size, token)).await.unwrap();
            items.extend(p.items);
            match p.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        items
    };
    let all = list_all(CommandFilter::default(), 3).await;
    assert_eq!(all.len(), 20);
    // Newest first; of one write, the later first (the reverse of the order issued).
    let mut expected: Vec<StoredCommand> = issued.iter().chain(&later).chain(&all_issued).cloned().collect();
    for e in &mut expected {
        if e.id == now.id {
            *e = now.clone();
        }
    }
    expected.reverse();
    assert_eq!(all, expected);
    let staging = list_all(
        CommandFilter {
            cluster: Some("staging".to_owned()),
            ..CommandFilter::default()
        },
        5,
    )
    .await;
    assert_eq!(staging.len(), 8);
    assert!(staging.iter().all(|c| c.cluster == "staging"));
    let done = list_all(
        CommandFilter {
            state: Some(CommandState::Done),
            ..CommandFilter::default()
        },
        5,
    )
    .await;
    assert_eq!(done, vec![now.clone()]);
    let of_pod = list_all(
        CommandFilter {
            namespace: Some(pods[5].namespace().into()),
            pod: Some(pods[5].name().into()),
            ..CommandFilter::default()
        },
        5,
    )
    .await;
    assert_eq!(of_pod.len(), 2);
    assert!(of_pod.iter().all(|c| c.command.pod == address(&pods[5])));
    let first = store
        .list_commands(T, &CommandFilter::default(), &page(3, None))
        .await
        .unwrap();
    assert!(matches!(
        store
            .list_commands(
                T,
                &CommandFilter {
                    state: Some(CommandState::Pending),
                    ..CommandFilter::default()
                },
                &page(3, first.next)
            )
            .await,
        Err(StoreError::InvalidPageToken)
    ));
}

async fn forgetting_a_cluster(db: &TestDb) {
    let store = &db.store;
    let pods = projections(5);
    snapshot(store, T, C, &pods, 5).await;
    snapshot(store, T, "staging", &pods, 5).await;
    let mut w = empty_write(0);
    w.pods = vec![(
        pods[0].uid().to_owned(),
        PodState {
            open: vec![finding(&pods[0], "privileged { }", Mitigation::Terminate, NOW)],
            isolation: Isolation::None,
            terminate_ordered: Some(NOW),
        },
    )];
    w.owners = [(
        "owner".to_owned(),
        Backoff {
            terminations: 1,
            last: NOW,
        },
    )]
    .into();
    w.commands = vec![
        command(&pods[0], Order::Terminate, CommandOrigin::Continuous),
        command(&pods[0], Order::RestoreIsolation, CommandOrigin::Continuous),
    ];
    let saved = store.save_findings(T, C, w, NOW).await.unwrap();
    let acked_at = NOW + Duration::seconds(1);
    store
        .ack_command(T, C, &saved.commands[1].id, CommandState::Done, "", acked_at)
        .await
        .unwrap();

    let gone = NOW + Duration::minutes(1);
    store.forget_cluster(T, C, gone).await.unwrap();
    assert!(store.pods(T, C, None).await.unwrap().is_empty());
    assert_eq!(store.tenant_clusters(T).await.unwrap(), vec!["staging".to_owned()]);
    let read = store.findings(T, C, None).await.unwrap();
    assert!(read.findings.pods.is_empty() && read.findings.owners.is_empty());
    assert!(store.pending_commands(T, C).await.unwrap().is_empty());
    // For the record: the finding resolved, the pending command cancelled, the acked one kept.
    let listed = store
        .list_findings(T, &FindingFilter::default(), &page(0, None))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].finding.resolved, Some(gone));
    let cancelled = store.command(T, &saved.commands[0].id).await.unwrap().unwrap();
    assert_eq!(cancelled.state, CommandState::Cancelled);
    assert_eq!(cancelled.state_changed_at, gone);
    let done = store.command(T, &saved.commands[1].id).await.unwrap().unwrap();
    assert_eq!(done.state, CommandState::Done);
    assert_eq!(done.state_changed_at, acked_at);
    // The other cluster's inventory and digests are untouched.
    assert_eq!(stored_uids(store, T, "staging").await, sorted(uids(&pods)));
    let digest = pods[0].digests_run().next().unwrap();
    let running = store.pods_running(T, digest).await.unwrap();
    assert!(running.iter().all(|c| c.cluster == "staging"));
    assert!(!running.is_empty());
}

async fn reopening_keeps_everything(db: &TestDb) {
    let pods = projections(10);
    snapshot(&db.store, T, C, &pods, 4).await;
    let mut w = empty_write(0);
    w.pods = vec![(
        pods[0].uid().to_owned(),
        PodState {
            open: vec![finding(&pods[0], "privileged { }", Mitigation::Log, NOW)],
            ..PodState::default()
        },
    )];
    store_and_reopen(db, w, &pods).await;
}

async fn store_and_reopen(db: &TestDb, w: FindingsWrite, pods: &[PodProjection]) {
    db.store.save_findings(T, C, w, NOW).await.unwrap();
    let before = db.store.findings(T, C, None).await.unwrap();
    // A second store on the same database (a restart, or another replica): the migrations
    // find nothing to do and everything is there.
    let other = SqlStore::connect(&db.url).await.unwrap();
    assert_eq!(other.findings(T, C, None).await.unwrap(), before);
    assert_eq!(stored_uids(&other, T, C).await, sorted(uids(pods)));
    let again = snapshot(&other, T, C, pods, 10).await;
    assert_eq!(again, InventoryApplied::default(), "nothing changed across the restart");
}
