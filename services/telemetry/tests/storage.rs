//! The telemetry store's behaviour, written once and run against both backends: every
//! scenario is an `async fn(&TestDb)`, and `both!` makes a `sqlite::<name>` test (a temp
//! file) and a `postgres::<name>` test (a fresh database, dropped afterwards) of it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use compact_str::CompactString;
use portcullis_telemetry_service::alert::AlertStatus;
use portcullis_telemetry_service::correlate::{AlertChange, EntityField, NewAlert};
use portcullis_telemetry_service::entity::Workload;
use portcullis_telemetry_service::event::{Action, Mitigation, SecurityEvent, Severity, Source};
use portcullis_telemetry_service::query::Query;
use portcullis_telemetry_service::storage::SqlStore;
use portcullis_telemetry_service::store::{
    AdmissionFilter, AlertFilter, ClusterRisk, PageRequest, RecordedAdmission, StoreError, TelemetryStore, TimeRange,
};
use portcullis_test_kit::{DataDir, TestDatabase};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

struct TestDb {
    store: SqlStore,
    postgres: bool,
    _dir: Option<DataDir>,
    _pg: Option<TestDatabase>,
}

impl TestDb {
    async fn sqlite() -> TestDb {
        let dir = DataDir::new().unwrap();
        let store = SqlStore::connect(&dir.sqlite_url("telemetry.db")).await.unwrap();
        TestDb {
            store,
            postgres: false,
            _dir: Some(dir),
            _pg: None,
        }
    }

    async fn postgres() -> TestDb {
        let database = TestDatabase::create().await.unwrap_or_else(|e| panic!("{e}"));
        let store = SqlStore::connect(&database.url).await.unwrap();
        TestDb {
            store,
            postgres: true,
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
    inserts_are_idempotent,
    a_batch_with_repeats_stores_each_event_once,
    batches_written_at_once_store_each_event_once,
    special_characters_read_back_unchanged,
    search_by_each_field,
    search_pages_newest_first,
    free_text_matches_words_as_live_matching_does,
    counts_stop_at_ten_thousand,
    free_text_counts_and_pages_across_days,
    tenants_are_isolated,
    alerts_lifecycle_and_risk,
    open_alerts_for_reattaching,
    retention_expires_old_events,
    admissions_are_recorded_for_replay,
    admission_pages_split_ties_of_time_by_id,
);

const T0: OffsetDateTime = datetime!(2026-12-01 12:00 UTC);

fn event(tenant: &str, id: &str, at: OffsetDateTime) -> SecurityEvent {
    SecurityEvent {
        id: id.into(),
        tenant_id: tenant.into(),
        cluster_id: "prod".into(),
        source: Source::Runtime,
        occurred_at: at,
        severity: Severity::High,
        rule: "Terminal shell in container".into(),
        summary: format!("A shell was spawned in a container ({id})"),
        action: Action::Warning,
        namespace: "shop".into(),
        pod: "web-1".into(),
        pod_uid: "uid-1".into(),
        container: "app".into(),
        image: "registry.example:5000/shop/web:1.2".into(),
        digest: "sha256:aaaa".into(),
        subresource: "".into(),
        workload: Some(Workload::new("Deployment", "web")),
        labels: Some(vec![("app".into(), "web".into())]),
        mitigation: Some(Mitigation::Isolate),
        details_json: r#"{"rule":"Terminal shell in container"}"#.to_owned(),
    }
}

fn range(from: OffsetDateTime, to: OffsetDateTime) -> TimeRange {
    TimeRange { from, to }
}

fn wide() -> TimeRange {
    range(T0 - Duration::days(30), T0 + Duration::days(30))
}

async fn ids(db: &TestDb, tenant: &str, q: &str, r: TimeRange) -> Vec<String> {
    let query = Query::parse(q).unwrap();
    let page = PageRequest {
        size: 1000,
        token: None,
    };
    let result = db.store.search(tenant, &query, r, &page).await.unwrap();
    assert_eq!(result.total, result.events.len() as u64, "count of {q}");
    assert!(!result.total_is_lower_bound);
    result.events.into_iter().map(|e| e.id.to_string()).collect()
}

async fn inserts_are_idempotent(db: &TestDb) {
    let events: Vec<_> = (0..5)
        .map(|i| event("t1", &format!("e{i}"), T0 + Duration::seconds(i)))
        .collect();
    assert_eq!(db.store.insert_events(&events).await.unwrap(), 5);
    assert_eq!(db.store.insert_events(&events).await.unwrap(), 0);
    let mut more = events.clone();
    more.push(event("t1", "e5", T0 + Duration::seconds(5)));
    assert_eq!(db.store.insert_events(&more).await.unwrap(), 1);
    assert_eq!(ids(db, "t1", "", wide()).await.len(), 6);
    // What is read back is what was written (microsecond times).
    let back = db.store.events("t1", &["e3".into()]).await.unwrap();
    assert_eq!(back, vec![events[3].clone()]);
}

async fn a_batch_with_repeats_stores_each_event_once(db: &TestDb) {
    let stored: Vec<_> = (0..3)
        .map(|i| event("t1", &format!("s{i}"), T0 + Duration::seconds(i)))
        .collect();
    assert_eq!(db.store.insert_events(&stored).await.unwrap(), 3);
    // A large batch (several COPY messages on PostgreSQL): repeats of stored events, repeats
    // within the batch, and the same id in another tenant (a different event).
    let mut batch = Vec::new();
    for i in 0..4_500 {
        batch.push(event("t1", &format!("n{i}"), T0 + Duration::milliseconds(i)));
    }
    batch.extend(stored.iter().cloned());
    batch.push(event("t1", "n7", T0 + Duration::milliseconds(7)));
    batch.push(event("t1", "n4499", T0 + Duration::milliseconds(4_499)));
    batch.push(event("t2", "s1", T0 + Duration::seconds(1)));
    assert_eq!(db.store.insert_events(&batch).await.unwrap(), 4_501);
    assert_eq!(db.store.insert_events(&batch).await.unwrap(), 0);
    let query = Query::parse("").unwrap();
    let page = PageRequest { size: 10, token: None };
    let t1 = db.store.search("t1", &query, wide(), &page).await.unwrap();
    assert_eq!((t1.total, t1.total_is_lower_bound), (4_503, false));
    assert_eq!(ids(db, "t2", "", wide()).await, vec!["s1".to_owned()]);
}

async fn batches_written_at_once_store_each_event_once(db: &TestDb) {
    // Two writers at once with overlapping batches (as the pipeline's writers are when a
    // redelivery meets the first copy), each also repeating events within itself: whichever
    // writes an event first stores it, the other skips it, and the counts add up.
    let batch = |from: i64, to: i64| -> Vec<SecurityEvent> {
        let mut b: Vec<_> = (from..to)
            .map(|i| event("t1", &format!("c{i}"), T0 + Duration::milliseconds(i)))
            .collect();
        b.extend(b[..10].to_vec());
        b
    };
    let (a, b) = (batch(0, 3_000), batch(2_000, 5_000));
    // Then again: everything is a repeat.
    for expected in [5_000, 0] {
        let (left, right) = tokio::join!(db.store.insert_events(&a), db.store.insert_events(&b));
        let (left, right) = (left.unwrap(), right.unwrap());
        assert_eq!(left + right, expected, "{left} + {right} new");
    }
    let query = Query::parse("").unwrap();
    let page = PageRequest { size: 10, token: None };
    let stored = db.store.search("t1", &query, wide(), &page).await.unwrap();
    assert_eq!((stored.total, stored.total_is_lower_bound), (5_000, false));
}

async fn special_characters_read_back_unchanged(db: &TestDb) {
    let mut e = event("t1", "esc", T0);
    e.summary = "tab\there, a newline\nand\r\\N backslashes \\ \\\\. 100% of_it 'quoted' \"double\" é 日本".to_owned();
    e.rule = "\\N".to_owned().into();
    e.details_json = r#"{"output":"a\tb\\c\n","x":"\\."}"#.to_owned();
    e.labels = Some(vec![("k\tx".into(), "v\nw\\".into())]);
    e.mitigation = None;
    e.workload = None;
    assert_eq!(db.store.insert_events(std::slice::from_ref(&e)).await.unwrap(), 1);
    let back = db.store.events("t1", &["esc".into()]).await.unwrap();
    assert_eq!(back, vec![e]);
    assert_eq!(ids(db, "t1", "backslashes", wide()).await, vec!["esc".to_owned()]);
    assert_eq!(ids(db, "t1", "rule:\\N", wide()).await, vec!["esc".to_owned()]);
}

async fn search_by_each_field(db: &TestDb) {
    let mut a = event("t1", "a", T0);
    a.summary = "Shell spawned by ROOT user".into();
    let mut b = event("t1", "b", T0 + Duration::minutes(1));
    b.source = Source::Admission;
    b.action = Action::Block;
    b.cluster_id = "staging".into();
    b.namespace = "pay".into();
    b.pod = "api-7".into();
    b.rule = "privileged".into();
    b.image = "docker.io/library/nginx:1.25".into();
    b.digest = "sha256:bbbb".into();
    b.workload = Some(Workload::new("StatefulSet", "api"));
    b.severity = Severity::Medium;
    b.summary = "Blocked a privileged pod 100%_sure".into();
    let mut c = event("t1", "c", T0 + Duration::hours(2));
    c.workload = None;
    c.labels = None;
    c.mitigation = None;
    c.image = String::new();
    c.digest = "".into();
    c.summary = "Nothing to see".into();
    db.store.insert_events(&[a, b, c]).await.unwrap();

    let w = wide();
    assert_eq!(ids(db, "t1", "type:admission", w).await, ["b"]);
    assert_eq!(ids(db, "t1", "type:runtime", w).await, ["c", "a"]);
    assert_eq!(ids(db, "t1", "cluster:staging", w).await, ["b"]);
    assert_eq!(ids(db, "t1", "namespace:pay", w).await, ["b"]);
    assert_eq!(ids(db, "t1", "pod:web-1", w).await, ["c", "a"]);
    assert_eq!(ids(db, "t1", "pod:web-1 type:runtime", w).await, ["c", "a"]);
    assert_eq!(ids(db, "t1", "rule:privileged", w).await, ["b"]);
    assert_eq!(
        ids(db, "t1", r#"rule:"Terminal shell in container""#, w).await,
        ["c", "a"]
    );
    assert_eq!(ids(db, "t1", "action:block", w).await, ["b"]);
    assert_eq!(ids(db, "t1", "severity:high", w).await, ["c", "a"]);
    assert_eq!(ids(db, "t1", "severity:medium", w).await.len(), 3);
    assert_eq!(ids(db, "t1", "workload:api", w).await, ["b"]);
    assert_eq!(ids(db, "t1", "workload:statefulset/api", w).await, ["b"]);
    assert!(ids(db, "t1", "workload:Deployment/api", w).await.is_empty());
    // Image: the exact reference, its repository, or the digest.
    assert_eq!(ids(db, "t1", "image:docker.io/library/nginx:1.25", w).await, ["b"]);
    assert_eq!(ids(db, "t1", "image:docker.io/library/nginx", w).await, ["b"]);
    assert!(ids(db, "t1", "image:docker.io/library/nginx:1.24", w).await.is_empty());
    assert_eq!(ids(db, "t1", "image:sha256:bbbb", w).await, ["b"]);
    assert_eq!(ids(db, "t1", "image:registry.example:5000/shop/web", w).await, ["a"]);
    // Free text: anywhere in the summary, ASCII case ignored, LIKE wildcards literal.
    assert_eq!(ids(db, "t1", "root", w).await, ["a"]);
    assert_eq!(ids(db, "t1", r#""shell spawned""#, w).await, ["a"]);
    assert_eq!(ids(db, "t1", "100%_sure", w).await, ["b"]);
    assert!(ids(db, "t1", "100%x", w).await.is_empty());
    // `a_s` would match "was spawned" were `_` a wildcard.
    assert!(ids(db, "t1", "a_s", w).await.is_empty());
    assert_eq!(ids(db, "t1", "shell severity:high pod:web-1", w).await, ["a"]);
    // The time range is half-open.
    assert_eq!(ids(db, "t1", "", range(T0, T0 + Duration::minutes(1))).await, ["a"]);
    assert_eq!(
        ids(db, "t1", "", range(T0 + Duration::minutes(1), T0 + Duration::hours(3))).await,
        ["c", "b"]
    );
    assert!(matches!(
        db.store
            .search("t1", &Query::default(), range(T0, T0), &PageRequest::default())
            .await,
        Err(StoreError::InvalidTimeRange)
    ));
}

async fn free_text_matches_words_as_live_matching_does(db: &TestDb) {
    // Summaries over three days (free text on PostgreSQL is searched a time window at a time,
    // from an hour back to the whole range: matches in several windows page in order).
    let summaries = [
        "A shell was spawned in pod web-42 (user=root cmdline=/bin/sh -c id)",
        "Shellcode detected in web-420 by user=ROOT",
        "Sensitive file /etc/shadow opened (program=cat user=www-data)",
        "Outbound connection to a mining pool: xmrig -o stratum+tcp://pool:3333",
        "café au lait: k8s.pod=web-42 shell",
        "Nothing to see",
    ];
    let mut events = Vec::new();
    for (i, s) in summaries.iter().enumerate() {
        for h in [0, 2, 30, 70] {
            let mut e = event(
                "t1",
                &format!("w{i}-{h}"),
                T0 - Duration::hours(h) - Duration::minutes(i as i64),
            );
            e.summary = (*s).to_owned();
            events.push(e);
        }
    }
    assert_eq!(db.store.insert_events(&events).await.unwrap(), 24);
    let w = range(T0 - Duration::days(4), T0 + Duration::minutes(1));
    let mut newest_first = events.clone();
    newest_first.sort_by(|a, b| (b.occurred_at, &b.id).cmp(&(a.occurred_at, &a.id)));
    for q in [
        "shell",
        "SHELL",
        "shell*",
        "root",
        "web-42",
        "web-4*",
        "\"/etc/shadow\"",
        "/bin/sh",
        "xmrig",
        "\"stratum tcp\"",
        "caf",
        "\"pod web\"",
        "shell user",
        "she",
        "web-4",
        "\"shadow etc\"",
        "absent",
    ] {
        let query = Query::parse(q).unwrap();
        let expected: Vec<String> = newest_first
            .iter()
            .filter(|e| query.matches(e))
            .map(|e| e.id.to_string())
            .collect();
        assert_eq!(ids(db, "t1", q, w).await, expected, "{q} (postgres: {})", db.postgres);
        // Paged two at a time, the same events in the same order.
        let mut paged = Vec::new();
        let mut token = None;
        loop {
            let page = PageRequest { size: 2, token };
            let r = db.store.search("t1", &query, w, &page).await.unwrap();
            assert_eq!(r.total, expected.len() as u64, "count of {q}");
            paged.extend(r.events.into_iter().map(|e| e.id.to_string()));
            match r.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        assert_eq!(paged, expected, "{q} paged");
    }
    // Words, not substrings; a prefix only when asked; phrases in order.
    let count = |q: &'static str| async move { ids(db, "t1", q, w).await.len() };
    assert_eq!(count("shell").await, 8);
    assert_eq!(count("shell*").await, 12);
    assert_eq!(count("web-42").await, 8);
    assert_eq!(count("web-4*").await, 12);
    assert_eq!(count("she").await, 0);
    assert_eq!(count("\"shadow etc\"").await, 0);
    assert_eq!(count("caf").await, 4);
}

async fn search_pages_newest_first(db: &TestDb) {
    // 25 events, some sharing a time (ties broken by id).
    let events: Vec<_> = (0..25)
        .map(|i| event("t1", &format!("e{i:02}"), T0 + Duration::seconds(i / 2)))
        .collect();
    db.store.insert_events(&events).await.unwrap();
    let query = Query::parse("pod:web-1").unwrap();
    let mut seen = Vec::new();
    let mut page = PageRequest { size: 10, token: None };
    loop {
        let r = db.store.search("t1", &query, wide(), &page).await.unwrap();
        assert_eq!(r.total, 25);
        assert!(r.events.len() <= 10);
        seen.extend(r.events.into_iter().map(|e| (e.occurred_at, e.id.to_string())));
        match r.next {
            Some(next) => page.token = Some(next),
            None => break,
        }
    }
    let mut expected: Vec<_> = events.iter().map(|e| (e.occurred_at, e.id.to_string())).collect();
    expected.sort();
    expected.reverse();
    assert_eq!(seen, expected);
    // A token is refused for another query.
    let first = db
        .store
        .search("t1", &query, wide(), &PageRequest { size: 10, token: None })
        .await
        .unwrap();
    let other = Query::parse("pod:web-2").unwrap();
    assert!(matches!(
        db.store
            .search(
                "t1",
                &other,
                wide(),
                &PageRequest {
                    size: 10,
                    token: first.next
                }
            )
            .await,
        Err(StoreError::InvalidPageToken)
    ));
}

async fn counts_stop_at_ten_thousand(db: &TestDb) {
    let events: Vec<_> = (0..10_001)
        .map(|i| event("t1", &format!("n{i:05}"), T0 + Duration::milliseconds(i)))
        .collect();
    assert_eq!(db.store.insert_events(&events).await.unwrap(), 10_001);
    let r = db
        .store
        .search("t1", &Query::default(), wide(), &PageRequest { size: 5, token: None })
        .await
        .unwrap();
    assert_eq!((r.total, r.total_is_lower_bound), (10_000, true));
    assert_eq!(r.events.len(), 5);
    assert_eq!(r.events[0].id, "n10000");
    // One fewer in the range: exact.
    let r = db
        .store
        .search(
            "t1",
            &Query::default(),
            range(T0 + Duration::milliseconds(1), T0 + Duration::days(1)),
            &PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!((r.total, r.total_is_lower_bound), (10_000, false));
}

/// Pages through `q` over `r`, `size` at a time: the ids in order, each page's total checked.
async fn paged_ids(db: &TestDb, q: &str, r: TimeRange, size: u32, total: (u64, bool)) -> Vec<String> {
    let query = Query::parse(q).unwrap();
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = PageRequest { size, token };
        let result = db.store.search("t1", &query, r, &page).await.unwrap();
        assert_eq!((result.total, result.total_is_lower_bound), total, "count of {q}");
        seen.extend(result.events.into_iter().map(|e| e.id.to_string()));
        match result.next {
            Some(next) => token = Some(next),
            None => return seen,
        }
    }
}

async fn free_text_counts_and_pages_across_days(db: &TestDb) {
    // 10,001 events over ten days, two at each time (ties broken by id), all with "shell", all
    // but one in 500 with "spawned" (those have "xmrig"); then, in the newest hour, 2,000 events with
    // "spawned" only. On PostgreSQL free text is checked first on the newest 1,000 events
    // (of the range): a word in a third of them or more is counted on the newest events by
    // time, others by the word index day by day, newest first (eight days one by one, the
    // older ones together); a word with more than 10,000 matches is paged by time windows
    // (the newest 15 minutes, then an hour, 4 h, ...). Counts and pages must not depend on
    // which way they were read, nor on where the days and windows fall.
    let start = T0 - Duration::days(10);
    let mut events: Vec<_> = (0..10_001)
        .map(|i| {
            let mut e = event("t1", &format!("c{i:05}"), start + Duration::seconds(172) * (i / 2));
            if i % 500 == 7 {
                e.summary = format!("xmrig started by a shell ({i})");
            }
            e
        })
        .collect();
    events.extend((0..2_000).map(|i| {
        let mut e = event("t1", &format!("f{i:04}"), T0 - Duration::milliseconds(1_800) * i);
        e.summary = format!("A process was spawned ({i})");
        e
    }));
    assert_eq!(db.store.insert_events(&events).await.unwrap(), 12_001);
    let mut newest_first = events.clone();
    newest_first.sort_by(|a, b| (b.occurred_at, &b.id).cmp(&(a.occurred_at, &a.id)));
    let expected = |q: &str, r: TimeRange| -> Vec<String> {
        let query = Query::parse(q).unwrap();
        newest_first
            .iter()
            .filter(|e| query.matches(e) && e.occurred_at >= r.from && e.occurred_at < r.to)
            .map(|e| e.id.to_string())
            .collect()
    };

    // More than 10,000, dense among the newest events: "10,000+", every page newest first.
    let spawned = expected("spawned", wide());
    assert_eq!(spawned.len(), 11_981);
    assert_eq!(paged_ids(db, "spawned", wide(), 1000, (10_000, true)).await, spawned);
    // Dense among the newest, fewer further back: exact.
    let r = range(start + Duration::seconds(172 * 2002), T0 + Duration::hours(5));
    let some = expected("spawned", r);
    assert_eq!(some.len(), 7_985);
    assert_eq!(paged_ids(db, "spawned", r, 1000, (7_985, false)).await, some);

    // More than 10,000, none among the newest 2,000: counted by the word index.
    let shell = expected("shell", wide());
    assert_eq!(shell.len(), 10_001);
    assert_eq!(paged_ids(db, "shell", wide(), 1000, (10_000, true)).await, shell);
    // Without the oldest time (two events): exactly 9,999 over eleven days, partial at both
    // ends.
    let r = range(start + Duration::seconds(1), T0 + Duration::hours(5));
    let some = expected("shell", r);
    assert_eq!(some.len(), 9_999);
    assert_eq!(paged_ids(db, "shell", r, 1000, (9_999, false)).await, some);
    // An hour.
    let r = range(start, start + Duration::hours(1));
    assert_eq!(paged_ids(db, "shell", r, 50, (42, false)).await, expected("shell", r));

    // A rarer word over days cut at both ends.
    let r = range(start + Duration::hours(53), T0 - Duration::hours(27));
    let rare = expected("xmrig", r);
    assert!(rare.len() > 10 && rare.len() < 20, "{}", rare.len());
    assert_eq!(paged_ids(db, "xmrig", r, 3, (rare.len() as u64, false)).await, rare);
    assert_eq!(
        paged_ids(db, "\"xmrig started\"", r, 1000, (rare.len() as u64, false)).await,
        rare
    );
}

async fn tenants_are_isolated(db: &TestDb) {
    db.store
        .insert_events(&[
            event("t1", "same", T0),
            event("t2", "same", T0),
            event("t2", "other", T0),
        ])
        .await
        .unwrap();
    assert_eq!(ids(db, "t1", "", wide()).await, ["same"]);
    assert_eq!(ids(db, "t2", "", wide()).await, ["same", "other"]);
    assert!(db.store.events("t1", &["other".into()]).await.unwrap().is_empty());
    assert!(ids(db, "t3", "", wide()).await.is_empty());
    alerts_open(db, "t2", "al-1", Severity::Critical, &["same"]).await;
    assert!(db.store.alert("t1", "al-1").await.unwrap().is_none());
    assert!(
        db.store
            .list_alerts("t1", &AlertFilter::default(), &PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(db.store.risk_scores("t1", None).await.unwrap().is_empty());
    assert!(
        db.store
            .set_alert_status("t1", "al-1", AlertStatus::Closed, T0)
            .await
            .unwrap()
            .is_none()
    );
}

fn new_alert(tenant: &str, id: &str, severity: Severity, events: &[&str], clusters: &[&str]) -> NewAlert {
    NewAlert {
        id: id.into(),
        tenant_id: tenant.into(),
        rule: "shell-burst".into(),
        key: format!("shell-burst\u{1e}{id}"),
        title: "A burst of shells".into(),
        severity,
        event_ids: events.iter().map(|e| CompactString::from(*e)).collect(),
        cluster_ids: clusters.iter().map(|c| CompactString::from(*c)).collect(),
        entity: vec![
            (EntityField::Cluster, clusters[0].to_owned()),
            (EntityField::Namespace, "shop".to_owned()),
        ],
        first_event_at: T0,
        last_event_at: T0 + Duration::seconds(1),
    }
}

async fn alerts_open(db: &TestDb, tenant: &str, id: &str, severity: Severity, events: &[&str]) {
    let change = AlertChange::Opened(new_alert(tenant, id, severity, events, &["prod"]));
    db.store.record_alert_changes(&[change], T0).await.unwrap();
}

async fn alerts_lifecycle_and_risk(db: &TestDb) {
    let mut evs: Vec<_> = (0..4)
        .map(|i| event("t1", &format!("e{i}"), T0 + Duration::seconds(i)))
        .collect();
    evs[3].cluster_id = "dev".into();
    db.store.insert_events(&evs).await.unwrap();
    let opened = AlertChange::Opened(new_alert("t1", "a1", Severity::Critical, &["e0", "e1"], &["prod"]));
    db.store
        .record_alert_changes(std::slice::from_ref(&opened), T0)
        .await
        .unwrap();
    // Recording the same opening again changes nothing.
    db.store.record_alert_changes(&[opened], T0).await.unwrap();
    db.store
        .record_alert_changes(
            &[
                AlertChange::EventsAdded {
                    tenant_id: "t1".into(),
                    alert_id: "a1".into(),
                    event_ids: vec!["e1".into(), "e2".into(), "e3".into()],
                    last_event_at: T0 + Duration::seconds(3),
                },
                AlertChange::EventsAdded {
                    tenant_id: "t1".into(),
                    alert_id: "unknown".into(),
                    event_ids: vec!["e2".into()],
                    last_event_at: T0,
                },
                AlertChange::Opened(new_alert("t1", "a2", Severity::Medium, &["e0"], &["prod"])),
                AlertChange::Opened(new_alert("t1", "a3", Severity::Low, &["e0"], &["stage"])),
            ],
            T0,
        )
        .await
        .unwrap();
    let detail = db.store.alert("t1", "a1").await.unwrap().unwrap();
    assert_eq!(detail.event_ids, ["e0", "e1", "e2", "e3"]);
    assert_eq!(
        detail.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["e0", "e1", "e2", "e3"]
    );
    assert_eq!(detail.alert.event_count, 4);
    assert_eq!(detail.alert.status, AlertStatus::Open);
    assert_eq!(detail.alert.last_event_at, T0 + Duration::seconds(3));
    assert_eq!(detail.alert.cluster_ids, ["prod", "dev"]);
    assert_eq!(
        detail.alert.entity,
        vec![
            ("cluster".to_owned(), "prod".to_owned()),
            ("namespace".to_owned(), "shop".to_owned())
        ]
    );
    assert!(db.store.alert("t1", "unknown").await.unwrap().is_none());

    let risk = |cluster: &str, score: u64, open: u64| ClusterRisk {
        cluster_id: cluster.to_owned(),
        score,
        open_alerts: open,
    };
    assert_eq!(
        db.store.risk_scores("t1", None).await.unwrap(),
        vec![risk("dev", 10, 1), risk("prod", 12, 2), risk("stage", 1, 1)]
    );
    // Acknowledged still counts; closed does not; reopened counts again.
    let acked = db
        .store
        .set_alert_status("t1", "a1", AlertStatus::Acknowledged, T0 + Duration::minutes(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acked.status, AlertStatus::Acknowledged);
    assert_eq!(acked.status_changed_at, T0 + Duration::minutes(1));
    assert_eq!(
        db.store.risk_scores("t1", Some("prod")).await.unwrap(),
        vec![risk("prod", 12, 2)]
    );
    assert!(matches!(
        db.store.set_alert_status("t1", "a1", AlertStatus::Open, T0).await,
        Err(StoreError::InvalidTransition(_))
    ));
    let same = db
        .store
        .set_alert_status("t1", "a1", AlertStatus::Acknowledged, T0 + Duration::minutes(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(same.status_changed_at, T0 + Duration::minutes(1));
    db.store
        .set_alert_status("t1", "a1", AlertStatus::Closed, T0)
        .await
        .unwrap();
    assert_eq!(
        db.store.risk_scores("t1", Some("prod")).await.unwrap(),
        vec![risk("prod", 2, 1)]
    );
    assert_eq!(
        db.store.risk_scores("t1", Some("dev")).await.unwrap(),
        vec![risk("dev", 0, 0)]
    );
    db.store
        .set_alert_status("t1", "a1", AlertStatus::Open, T0)
        .await
        .unwrap();
    assert_eq!(
        db.store.risk_scores("t1", Some("prod")).await.unwrap(),
        vec![risk("prod", 12, 2)]
    );
    db.store
        .set_alert_status("t1", "a2", AlertStatus::Closed, T0)
        .await
        .unwrap();

    // Listing: filters and paging, latest event first.
    let list = |filter: AlertFilter| async move {
        db.store
            .list_alerts(
                "t1",
                &filter,
                &PageRequest {
                    size: 1000,
                    token: None,
                },
            )
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|a| a.id.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(list(AlertFilter::default()).await, ["a1", "a3", "a2"]);
    let f = AlertFilter {
        cluster_id: Some("prod".into()),
        ..AlertFilter::default()
    };
    assert_eq!(list(f).await, ["a1", "a2"]);
    let f = AlertFilter {
        statuses: vec![AlertStatus::Closed],
        ..AlertFilter::default()
    };
    assert_eq!(list(f).await, ["a2"]);
    let f = AlertFilter {
        min_severity: Some(Severity::Medium),
        ..AlertFilter::default()
    };
    assert_eq!(list(f).await, ["a1", "a2"]);
    let first = db
        .store
        .list_alerts("t1", &AlertFilter::default(), &PageRequest { size: 2, token: None })
        .await
        .unwrap();
    assert_eq!(first.items.len(), 2);
    let second = db
        .store
        .list_alerts(
            "t1",
            &AlertFilter::default(),
            &PageRequest {
                size: 2,
                token: first.next,
            },
        )
        .await
        .unwrap();
    assert_eq!(second.items.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["a2"]);
    assert!(second.next.is_none());
}

async fn open_alerts_for_reattaching(db: &TestDb) {
    alerts_open(db, "t1", "a1", Severity::High, &["x"]).await;
    alerts_open(db, "t2", "b1", Severity::High, &["y"]).await;
    alerts_open(db, "t2", "b2", Severity::High, &["z"]).await;
    db.store
        .set_alert_status("t2", "b2", AlertStatus::Closed, T0)
        .await
        .unwrap();
    db.store
        .set_alert_status("t1", "a1", AlertStatus::Acknowledged, T0)
        .await
        .unwrap();
    let open = db.store.open_alerts().await.unwrap();
    let got: Vec<_> = open
        .iter()
        .map(|a| (a.tenant_id.as_str(), a.id.as_str(), a.key.as_str()))
        .collect();
    assert_eq!(
        got,
        [("t1", "a1", "shell-burst\u{1e}a1"), ("t2", "b1", "shell-burst\u{1e}b1")]
    );
    assert_eq!(open[0].cluster_ids, ["prod"]);
}

async fn retention_expires_old_events(db: &TestDb) {
    let day = |d: i64, h: i64| datetime!(2026-12-01 00:00 UTC) + Duration::days(d) + Duration::hours(h);
    let mut events = Vec::new();
    for d in 0..4 {
        for h in [1, 13] {
            events.push(event("t1", &format!("t1-{d}-{h}"), day(d, h)));
            events.push(event("t2", &format!("t2-{d}-{h}"), day(d, h)));
        }
    }
    db.store.insert_events(&events).await.unwrap();
    // Tenant t1's retention ends at day 2, 06:00: bounded batches of 2.
    let mut total = 0;
    loop {
        let e = db.store.expire_tenant("t1", day(2, 6), 2).await.unwrap();
        assert!(e.deleted <= 2);
        total += e.deleted;
        if !e.more {
            break;
        }
    }
    assert_eq!(total, 5);
    assert_eq!(ids(db, "t1", "", wide()).await, ["t1-3-13", "t1-3-1", "t1-2-13"]);
    assert_eq!(ids(db, "t2", "", wide()).await.len(), 8);
    // Whole days before day 1, 12:00 go for every tenant: day 0 only.
    let mut dropped = 0;
    let mut deleted = 0;
    loop {
        let e = db.store.expire_days(day(1, 12), 1).await.unwrap();
        dropped += e.partitions_dropped;
        deleted += e.deleted;
        if !e.more {
            break;
        }
    }
    if db.postgres {
        assert_eq!((dropped, deleted), (1, 0));
    } else {
        assert_eq!((dropped, deleted), (0, 2));
    }
    assert_eq!(ids(db, "t2", "", wide()).await.len(), 6);
    assert!(!ids(db, "t2", "", wide()).await.iter().any(|id| id.starts_with("t2-0-")));
    // Inserting into a dropped day again works (the partition is made again).
    assert_eq!(
        db.store
            .insert_events(&[event("t2", "again", day(0, 2))])
            .await
            .unwrap(),
        1
    );
    assert_eq!(ids(db, "t2", "", range(day(0, 0), day(1, 0))).await, ["again"]);
}

fn admission(tenant: &str, id: &str, cluster: &str, at: OffsetDateTime, allowed: bool) -> RecordedAdmission {
    RecordedAdmission {
        tenant_id: tenant.into(),
        event_id: id.into(),
        cluster_id: cluster.into(),
        namespace: "shop".into(),
        workload: Some(Workload::new("Deployment", "web")),
        decided_at: at,
        allowed,
        violations_json: r#"[{"rule":"privileged","action":"log"}]"#.to_owned(),
        projection: vec![0, 1, 2, 255],
    }
}

async fn admissions_are_recorded_for_replay(db: &TestDb) {
    let records: Vec<_> = (0..7)
        .map(|i| {
            admission(
                "t1",
                &format!("d{i}"),
                if i % 2 == 0 { "prod" } else { "dev" },
                T0 + Duration::hours(i),
                i != 3,
            )
        })
        .collect();
    assert_eq!(db.store.record_admissions(&records).await.unwrap(), 7);
    assert_eq!(db.store.record_admissions(&records).await.unwrap(), 0);
    db.store
        .record_admissions(&[admission("t2", "d0", "prod", T0, true)])
        .await
        .unwrap();

    let mut all = Vec::new();
    let mut page = PageRequest { size: 3, token: None };
    loop {
        let p = db
            .store
            .admissions("t1", &AdmissionFilter::default(), &page)
            .await
            .unwrap();
        all.extend(p.items);
        match p.next {
            Some(n) => page.token = Some(n),
            None => break,
        }
    }
    assert_eq!(all, records);
    let filter = AdmissionFilter {
        cluster_id: Some("prod".into()),
        since: Some(T0 + Duration::hours(2)),
    };
    let p = db
        .store
        .admissions("t1", &filter, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(
        p.items.iter().map(|a| a.event_id.as_str()).collect::<Vec<_>>(),
        ["d2", "d4", "d6"]
    );
    let p = db
        .store
        .admissions("t2", &AdmissionFilter::default(), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(p.items.len(), 1);

    // Retention: whole days expire for every tenant, recorded admissions included.
    let later = T0 + Duration::days(3);
    db.store
        .record_admissions(&[admission("t1", "late", "prod", later, true)])
        .await
        .unwrap();
    loop {
        let e = db.store.expire_days(later, 1000).await.unwrap();
        if !e.more {
            break;
        }
    }
    for (tenant, left) in [("t1", vec!["late"]), ("t2", vec![])] {
        let p = db
            .store
            .admissions(tenant, &AdmissionFilter::default(), &PageRequest::default())
            .await
            .unwrap();
        assert_eq!(
            p.items.iter().map(|a| a.event_id.as_str()).collect::<Vec<_>>(),
            left,
            "{tenant}"
        );
    }
}

/// Admissions decided in the same microsecond are paged by event id: a page that ends inside
/// such a tie continues with the tie's next id, and every admission is listed once.
async fn admission_pages_split_ties_of_time_by_id(db: &TestDb) {
    // Three at T0, four at T0 + 1 s, two at T0 + 2 s, recorded out of order.
    let times = [1, 0, 2, 1, 0, 1, 2, 0, 1];
    let records: Vec<_> = times
        .iter()
        .enumerate()
        .map(|(i, s)| admission("t1", &format!("e{i}"), "prod", T0 + Duration::seconds(*s), true))
        .collect();
    assert_eq!(db.store.record_admissions(&records).await.unwrap(), 9);
    let mut expected: Vec<(OffsetDateTime, String)> =
        records.iter().map(|a| (a.decided_at, a.event_id.to_string())).collect();
    expected.sort();
    for size in [1, 2, 3, 4] {
        let mut listed = Vec::new();
        let mut page = PageRequest { size, token: None };
        loop {
            let p = db
                .store
                .admissions("t1", &AdmissionFilter::default(), &page)
                .await
                .unwrap();
            listed.extend(p.items.iter().map(|a| (a.decided_at, a.event_id.to_string())));
            match p.next {
                Some(n) => page.token = Some(n),
                None => break,
            }
        }
        assert_eq!(listed, expected, "pages of {size}");
    }
}
