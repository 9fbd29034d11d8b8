//! The settings scheme: file < environment < flags, unknown keys refused with their source,
//! the client's own variables never read as settings. The environment is a map: no test
//! changes the process's variables.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use portcullis_kit::settings::{Environment, Flags, Layers, SettingsError, check_file, config_file};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Limits {
    #[serde(with = "humantime_serde")]
    deadline: Duration,
    per_second: f64,
    name: String,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            deadline: Duration::from_secs(2),
            per_second: 1000.0,
            name: "default".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Admission {
    rate_limit: Limits,
    max_entries: usize,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Server {
    listen: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    admission: Admission,
    server: Server,
}

const SECTIONS: &[&str] = &["admission", "server"];

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
    file
}

fn load(file: Option<&std::path::Path>, env: &Environment, flags: &Flags) -> Result<Settings, SettingsError> {
    Layers {
        defaults: Settings::default(),
        file,
        env,
        flags,
    }
    .load(SECTIONS)
}

#[test]
fn defaults_without_any_layer() {
    let settings = load(None, &Environment::default(), &Flags::new()).unwrap();
    assert_eq!(settings, Settings::default());
}

#[test]
fn file_then_env_then_flags_later_winning() {
    let f = file(
        r#"
[admission]
max_entries = 10
[admission.rate_limit]
deadline = "10m"
per_second = 5
name = "file"
"#,
    );
    let only_file = load(Some(f.path()), &Environment::default(), &Flags::new()).unwrap();
    assert_eq!(only_file.admission.max_entries, 10);
    assert_eq!(only_file.admission.rate_limit.deadline, Duration::from_secs(600));
    assert_eq!(only_file.admission.rate_limit.per_second, 5.0);
    assert_eq!(only_file.admission.rate_limit.name, "file");

    let env = Environment::from_vars([
        ("PORTCULLIS_ADMISSION__RATE_LIMIT__PER_SECOND", "50"),
        ("PORTCULLIS_ADMISSION__RATE_LIMIT__NAME", "env"),
    ]);
    let with_env = load(Some(f.path()), &env, &Flags::new()).unwrap();
    assert_eq!(with_env.admission.rate_limit.per_second, 50.0);
    assert_eq!(with_env.admission.rate_limit.name, "env");
    // What the environment does not name stays the file's.
    assert_eq!(with_env.admission.rate_limit.deadline, Duration::from_secs(600));
    assert_eq!(with_env.admission.max_entries, 10);

    let mut flags = Flags::new();
    flags.set(&["admission", "rate_limit", "name"], "flag").unwrap();
    flags.set_some(&["server", "listen"], None::<String>).unwrap();
    let with_flags = load(Some(f.path()), &env, &flags).unwrap();
    assert_eq!(with_flags.admission.rate_limit.name, "flag");
    assert_eq!(with_flags.admission.rate_limit.per_second, 50.0);
    assert_eq!(with_flags.server.listen, "");
}

#[test]
fn an_alias_is_read_as_its_key_and_the_nested_name_wins() {
    let env =
        Environment::from_vars([("PORTCULLIS_LISTEN", "127.0.0.1:1")]).alias("PORTCULLIS_LISTEN", "server.listen");
    assert_eq!(load(None, &env, &Flags::new()).unwrap().server.listen, "127.0.0.1:1");
    let both = Environment::from_vars([
        ("PORTCULLIS_LISTEN", "127.0.0.1:1"),
        ("PORTCULLIS_SERVER__LISTEN", "127.0.0.1:2"),
    ])
    .alias("PORTCULLIS_LISTEN", "server.listen");
    assert_eq!(load(None, &both, &Flags::new()).unwrap().server.listen, "127.0.0.1:2");
}

#[test]
fn the_clients_own_variables_are_not_settings() {
    let env = Environment::from_vars([
        ("PORTCULLIS_SERVER", "https://portcullis.example:50051"),
        ("PORTCULLIS_API_KEY", "pk_secret"),
        ("PORTCULLIS_OPERATOR_KEY", "op"),
        ("PORTCULLIS_SERVICE_TOKEN", "svc"),
        ("PORTCULLIS_CONFIG", "/nowhere.toml"),
        ("PORTCULLIS_NATS_SERVER", "/usr/bin/nats-server"),
        ("PORTCULLIS_TEST_POSTGRES", "postgres://x"),
        ("PORTCULLIS_TLS_CERT", "cert.pem"),
        ("PORTCULLIS_OTHER__THING", "1"),
        ("OTHER__ADMISSION__MAX_ENTRIES", "3"),
    ]);
    assert_eq!(load(None, &env, &Flags::new()).unwrap(), Settings::default());
}

#[test]
fn an_unknown_key_in_the_file_is_refused_naming_it_and_the_file() {
    let f = file("[admission.rate_limit]\nper_secnd = 5\n");
    let err = load(Some(f.path()), &Environment::default(), &Flags::new()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("admission.rate_limit.per_secnd"), "{text}");
    assert!(text.contains(&f.path().display().to_string()), "{text}");

    let f = file("[admision]\nmax_entries = 5\n");
    let text = check_file(Settings::default(), f.path()).unwrap_err().to_string();
    assert!(text.contains("admision"), "{text}");
}

#[test]
fn a_bad_value_names_its_key_and_variable() {
    let f = file("[admission.rate_limit]\ndeadline = \"soon\"\n");
    let text = check_file(Settings::default(), f.path()).unwrap_err().to_string();
    assert!(text.contains("admission.rate_limit.deadline"), "{text}");

    let env = Environment::from_vars([("PORTCULLIS_ADMISSION__MAX_ENTRIES", "many")]);
    let text = load(None, &env, &Flags::new()).unwrap_err().to_string();
    assert!(text.contains("PORTCULLIS_ADMISSION__MAX_ENTRIES"), "{text}");

    // A known section's unknown key in the environment is an error too, naming the variable.
    let env = Environment::from_vars([("PORTCULLIS_ADMISSION__MAX_ENTRYS", "5")]);
    let text = load(None, &env, &Flags::new()).unwrap_err().to_string();
    assert!(text.contains("admission.max_entrys"), "{text}");
}

#[test]
fn a_missing_named_file_is_an_error() {
    let err = load(
        Some(std::path::Path::new("/nonexistent/portcullis.toml")),
        &Environment::default(),
        &Flags::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/portcullis.toml"));
}

#[test]
fn the_file_is_the_flag_else_the_variable() {
    let env = Environment::from_vars([("PORTCULLIS_CONFIG", "/etc/portcullis.toml")]);
    assert_eq!(
        config_file(Some(std::path::Path::new("mine.toml")), &env).unwrap(),
        std::path::Path::new("mine.toml")
    );
    assert_eq!(
        config_file(None, &env).unwrap(),
        std::path::Path::new("/etc/portcullis.toml")
    );
    assert_eq!(config_file(None, &Environment::default()), None);
}
