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

/// Open loop: 200 calls due in one second, no warm-up.
const OPEN_LOOP_200: [&str; 6] = ["--rate", "200", "--duration", "1s", "--warmup", "0s"];

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
        let mut args = OPEN_LOOP_200.to_vec();
        args.extend(["--connections", "2"]);
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

/// Two replicas: the connections alternate between them, and the report counts what each
/// answered; the counts add up to the total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_spread_over_two_servers_are_counted_per_server() {
    let (first, stop_first, first_task) = start_noop().await;
    let (second, stop_second, second_task) = start_noop().await;
    let servers = |report: &serde_json::Value| -> Vec<(String, u64, u64)> {
        report["per_server"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["server"].as_str().unwrap().to_owned(),
                    s["ok"].as_u64().unwrap(),
                    s["errors"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    // Open loop: call i goes over connection i % 4, whose server is (i % 4) % 2: an exact half each.
    let open = report(
        &loadgen(
            &first,
            KEY,
            &[
                &["--server", second.as_str()][..],
                &OPEN_LOOP_200[..],
                &["--connections", "4"][..],
            ]
            .concat(),
        )
        .await,
    );
    assert_only_successes(&open);
    assert_eq!(
        servers(&open),
        vec![(first.clone(), 100, 0), (second.clone(), 100, 0)],
        "{open}"
    );
    // The 200 scheduled calls and one unrecorded first call per server.
    let calls = open["notes"]["calls"].as_str().unwrap();
    assert!(calls.starts_with("202 sent in all"), "{calls}");
    // Closed loop: each server answers what its callers ask; both answer, and nothing is
    // counted twice or lost.
    let closed = report(
        &loadgen(
            &first,
            KEY,
            &[
                "--server",
                &second,
                "--closed-loop",
                "--concurrency",
                "4",
                "--connections",
                "2",
                "--duration",
                "1s",
                "--warmup",
                "0s",
            ],
        )
        .await,
    );
    assert_only_successes(&closed);
    let split = servers(&closed);
    assert_eq!(split.len(), 2, "{closed}");
    assert!(split.iter().all(|(_, ok, errors)| *ok > 0 && *errors == 0), "{closed}");
    assert_eq!(
        split.iter().map(|(_, ok, _)| ok).sum::<u64>(),
        closed["ok"].as_u64().unwrap(),
        "{closed}"
    );
    stop_first.send(()).unwrap();
    stop_second.send(()).unwrap();
    first_task.await.unwrap();
    second_task.await.unwrap();
}
