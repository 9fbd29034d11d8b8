//! The kit's own fixtures: polling, the database fixture, data folders, documents, `both!`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use portcullis_test_kit::{DataDir, TestDatabase, docs, eventually, until};
use sea_orm::{ConnectionTrait, Database};

#[tokio::test]
async fn eventually_returns_the_value_once_the_state_is_reached() {
    let calls = AtomicUsize::new(0);
    let value = eventually(Duration::from_secs(5), async || {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= 3 { Ok(n * 10) } else { Err(format!("{n} calls")) }
    })
    .await;
    assert_eq!(value, 30);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
#[should_panic(expected = "last observed state: \"still 7\"")]
async fn eventually_fails_with_the_last_state_seen() {
    eventually(Duration::from_millis(50), async || Err::<(), _>("still 7")).await;
}

#[tokio::test]
#[should_panic(expected = "not yet: the door opens")]
async fn until_names_what_it_waited_for() {
    until(Duration::from_millis(50), "the door opens", async || false).await;
}

#[tokio::test]
async fn a_test_database_is_fresh_and_dropped_afterwards() {
    let database = TestDatabase::create().await.unwrap();
    let connection = Database::connect(database.url.as_str()).await.unwrap();
    connection.execute_unprepared("CREATE TABLE t (x int)").await.unwrap();
    connection.close().await.unwrap();
    let url = database.url.clone();
    drop(database);
    assert!(Database::connect(url.as_str()).await.is_err(), "{url} still exists");
}

#[test]
fn a_data_folder_goes_with_its_fixture() {
    let dir = DataDir::new().unwrap();
    let path = dir.path().to_owned();
    assert!(path.is_dir());
    assert!(dir.sqlite_url("a.db").starts_with("sqlite://"));
    drop(dir);
    assert!(!path.exists());
}

#[test]
fn a_pod_review_carries_the_pod() {
    let pod = docs::pod(
        "web",
        "shop",
        docs::pod_spec(true, vec![docs::container("app", "nginx:1.27", true)]),
    );
    let review = docs::create_pod(pod);
    assert_eq!(review["request"]["operation"], "CREATE");
    assert_eq!(review["request"]["namespace"], "shop");
    assert_eq!(review["request"]["object"]["spec"]["hostNetwork"], true);
    assert_ne!(
        docs::uid_of(&review),
        docs::uid_of(&docs::create_pod(serde_json::json!({})))
    );
    let yaml = docs::yaml(&docs::policy("p", serde_json::json!([docs::host_network("block")])));
    assert!(yaml.contains("hostNetwork"), "{yaml}");
}

async fn counts(calls: &AtomicUsize) {
    calls.fetch_add(1, Ordering::SeqCst);
}

mod scenarios {
    pub async fn runs(calls: &std::sync::atomic::AtomicUsize) {
        super::counts(calls).await;
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}

// Both forms of `both!`: a scenario at this level and one in a module.
portcullis_test_kit::both! {
    embedded: &std::sync::atomic::AtomicUsize::new(0),
    distributed: &std::sync::atomic::AtomicUsize::new(0);
    counts,
}
mod in_module {
    portcullis_test_kit::both! {
        embedded: &std::sync::atomic::AtomicUsize::new(0),
        distributed: &std::sync::atomic::AtomicUsize::new(0);
        scenarios::runs,
    }
    use super::scenarios;
}
