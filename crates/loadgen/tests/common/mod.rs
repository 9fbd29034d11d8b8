//! What the generator suites share: running the built `portcullis-loadgen` and reading its
//! JSON report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::process::{Command, Output};

/// The benchmark review.
pub const REVIEW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../engine/benches/data/review-8k.json");

/// `portcullis-loadgen` with no key in its environment (the flags give it).
pub fn loadgen() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis-loadgen"));
    command.env_remove("PORTCULLIS_CONNECTOR_KEY");
    command
}

/// Runs `command` off the async runtime and waits for it.
pub async fn output(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap()
}

/// The one JSON report of a successful run.
pub fn report(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "status {:?}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"))
}
