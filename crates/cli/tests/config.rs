//! `portcullis config check` and `portcullis config print`: the settings scheme as a user
//! meets it. Each run gets exactly the environment given (the test's own is not changed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::process::{Command, Stdio};

use common::*;

/// Runs `portcullis ARGS` with only `env` as its environment.
fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let run = Run::from(
        Command::new(BIN)
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run portcullis"),
    );
    run.assert_no_panic();
    run
}

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:6000"

[server.limits]
request_timeout = "20s"

[bus.stream]
max_age = "3days"
max_events = 5000

[admission]
policy_deadline = "1500ms"

[admission.rate_limit.default]
per_second = 50
burst = 100

[admission.rate_limit.overrides]
acme = { per_second = 5, burst = 10 }

[policy_store.background]
drain_deadline = "10s"
"#;

#[test]
fn check_accepts_a_good_file() {
    let dir = TempDir::new("config-good");
    let file = dir.write("portcullis.toml", GOOD);
    let out = run(&["config", "check", file.to_str().unwrap()], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("valid settings"), "{}", out.stdout);
}

#[test]
fn check_refuses_an_unknown_setting_naming_file_and_key() {
    let dir = TempDir::new("config-unknown");
    let file = dir.write("portcullis.toml", "[admission.rate_limit]\nper_secnd = 5\n");
    let shown = file.to_str().unwrap();
    let out = run(&["config", "check", shown], &[]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains(shown), "{}", out.stderr);
    assert!(out.stderr.contains("admission.rate_limit.per_secnd"), "{}", out.stderr);

    let file = dir.write("section.toml", "[admision]\npolicy_deadline = \"1s\"\n");
    let out = run(&["config", "check", file.to_str().unwrap()], &[]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("admision"), "{}", out.stderr);
}

#[test]
fn check_refuses_bad_values_naming_the_key() {
    let dir = TempDir::new("config-bad");
    let cases = [
        ("[admission]\npolicy_deadline = \"soon\"\n", "admission.policy_deadline"),
        ("[bus]\nmax_ack_pending = -1\n", "bus.max_ack_pending"),
        (
            "[admission.rate_limit.default]\nper_second = -3\nburst = 1\n",
            "admission.rate_limit",
        ),
        ("[bus]\noperation_timeout = \"0s\"\n", "operation_timeout"),
        ("[admission.events]\ncapacity = 0\n", "admission.events"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let file = dir.write(&format!("bad{i}.toml"), text);
        let shown = file.to_str().unwrap();
        let out = run(&["config", "check", shown], &[]);
        assert_eq!(out.code, Some(2), "{text}: {}", out.stderr);
        assert!(out.stderr.contains(shown), "{text}: {}", out.stderr);
        assert!(out.stderr.contains(key), "{text}: {}", out.stderr);
    }
    let out = run(&["config", "check", "/nonexistent/portcullis.toml"], &[]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
}

#[test]
fn print_layers_file_and_environment_and_redacts_secrets() {
    let dir = TempDir::new("config-print");
    let file = dir.write("portcullis.toml", GOOD);
    let env = [
        ("PORTCULLIS_CONFIG", file.to_str().unwrap()),
        (
            "PORTCULLIS_POLICY_STORE__DATABASE_URL",
            "postgres://app:hunter2@db:5432/portcullis",
        ),
        ("PORTCULLIS_ADMISSION__POLICY_DEADLINE", "4s"),
        ("PORTCULLIS_NATS__ACCESS__USER", "policy-store"),
        ("PORTCULLIS_NATS__ACCESS__PASSWORD", "nats-secret-value"),
        ("PORTCULLIS_OPERATOR_KEY", "operator-secret-value"),
        ("PORTCULLIS_SERVICE_TOKEN", "service-secret-value"),
        // The client's own variables are not settings.
        ("PORTCULLIS_SERVER", "http://127.0.0.1:1"),
        ("PORTCULLIS_API_KEY", "pk_x"),
        ("PORTCULLIS_TEST_POSTGRES", "postgres://x"),
    ];
    let out = run(&["config", "print", "--service", "policy-store"], &env);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let text = &out.stdout;
    for secret in [
        "hunter2",
        "nats-secret-value",
        "operator-secret-value",
        "service-secret-value",
    ] {
        assert!(!text.contains(secret), "{secret} printed: {text}");
    }
    assert!(
        text.contains("database_url = \"postgres://app:<redacted>@db:5432/portcullis\""),
        "{text}"
    );
    assert!(text.contains("user = \"policy-store\""), "{text}");
    assert!(text.contains("password = \"<redacted>\""), "{text}");
    assert!(text.contains("operator key"), "{text}");
    assert!(text.contains("PORTCULLIS_SERVICE_TOKEN"), "{text}");
    assert!(text.contains("listen = \"127.0.0.1:6000\""), "{text}");
    assert!(text.contains("drain_deadline = \"10s\""), "{text}");
    // The policy store does not read the admission section.
    assert!(!text.contains("[admission"), "{text}");

    let out = run(&["config", "print", "--service", "admission"], &env);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("policy_deadline = \"4s\""), "{}", out.stdout);
    assert!(
        out.stdout.contains("[admission.rate_limit.overrides.acme]"),
        "{}",
        out.stdout
    );

    // An unknown key in a known section's variable is refused, naming the variable.
    let out = run(&["config", "print"], &[("PORTCULLIS_ADMISSION__POLICY_DEADLNE", "1s")]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("admission.policy_deadlne"), "{}", out.stderr);
}

#[test]
fn up_refuses_a_bad_settings_file_before_starting() {
    let dir = TempDir::new("config-up");
    let file = dir.write("portcullis.toml", "[server]\nlisten = \"nowhere\"\n");
    let out = run(
        &[
            "up",
            "--config",
            file.to_str().unwrap(),
            "--data-dir",
            dir.path("data").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("server.listen"), "{}", out.stderr);
    assert!(!dir.path("data").exists());
}

/// docs/settings.md shows the defaults exactly as `config print --defaults --service all`
/// prints them, so the page stays true.
#[test]
fn the_settings_page_shows_the_defaults() {
    let out = run(&["config", "print", "--defaults", "--service", "all"], &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let page = std::fs::read_to_string(repo("docs/settings.md")).unwrap();
    assert!(
        page.contains(&out.stdout),
        "docs/settings.md is out of date: paste `portcullis config print --defaults --service all`:\n{}",
        out.stdout
    );
}
