//! The `admission` load generator against the no-op server (started in-process on
//! 127.0.0.1:0): short closed-loop and open-loop runs parse and count only successes, and a
//! wrong key fails at the first call with its gRPC code. Functional only: nothing here
//! asserts speed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::process::Output;

use common::{REVIEW, report};
use portcullis_loadgen::noop;

const KEY: &str = "test-connector-key-0123456789";

/// A no-op server on a free loopback port; stops when the sender is dropped or fired.
async fn start_noop() -> (String, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let server = noop::bind("127.0.0.1:0".parse().unwrap(), KEY).await.unwrap();
    let url = server.url();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .serve(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (url, stop, task)
}

/// Runs the built `portcullis-loadgen admission` with `args` after the common ones.
async fn loadgen(url: &str, key: &str, args: &[&str]) -> Output {
    let mut command = common::loadgen();
    command
        .args(["admission", "--server", url, "--key", key, "--review", REVIEW, "--json"])
        .args(args);
    common::output(command).await
}

fn assert_only_successes(report: &serde_json::Value) {
    assert!(report["ok"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert_eq!(report["dropped"], 0, "{report}");
    assert_eq!(
        report["latency_ms"]["n"].as_u64(),
        report["ok"].as_u64(),
        "every answered call is a success: {report}"
    );
    let review = report["notes"]["review"].as_str().unwrap();
    assert!(review.contains("bytes of compact JSON"), "{review}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_against_the_noop_server_has_only_successes() {
    let (url, stop, task) = start_noop().await;
    for wait in [None, Some("--spin")] {
        let mut args = vec![
            "--closed-loop",
            "--concurrency",
            "8",
            "--connections",
            "2",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
        ];
        args.extend(wait);
        let report = report(&loadgen(&url, KEY, &args).await);
        assert_only_successes(&report);
        assert_eq!(report["concurrency"], 8);
        assert_eq!(report["rate"], serde_json::Value::Null);
        // With --spin the report says the generator polled; the run still ends on time.
        let generator = report["notes"]["generator"].as_str();
        assert_eq!(
            generator.is_some_and(|g| g.contains("polled")),
            wait.is_some(),
            "{report}"
        );
    }
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_against_the_noop_server_sends_the_scheduled_calls() {
    let (url, stop, task) = start_noop().await;
    for wait in [None, Some("--spin")] {
        let mut args = vec![
            "--rate",
            "200",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--connections",
            "2",
        ];
        args.extend(wait);
        let report = report(&loadgen(&url, KEY, &args).await);
        assert_only_successes(&report);
        // Calls 0..200 are due within the window; each is sent, so each is answered or an error.
        assert_eq!(report["ok"], 200, "{report}");
        assert_eq!(report["rate"], 200.0);
        let schedule = report["notes"]["schedule"].as_str().unwrap();
        assert_eq!(schedule.contains("polling"), wait.is_some(), "{schedule}");
    }
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_fails_at_the_first_call() {
    let (url, stop, task) = start_noop().await;
    let output = loadgen(
        &url,
        "not-the-key-0123456789",
        &["--closed-loop", "--duration", "1s", "--warmup", "0s"],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the first Review call failed: Unauthenticated"),
        "{stderr}"
    );
    stop.send(()).unwrap();
    task.await.unwrap();
}
