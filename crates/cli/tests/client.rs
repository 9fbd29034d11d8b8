//! The client commands end to end: the real `portcullis` binary against a real server,
//! `portcullis up` on a free loopback port with a temporary data folder.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::process::{Command, Stdio};

use common::up::{CLIENT_ENV, Up, free_port};
use common::{BIN, Run, TempDir, repo, shared};
use serde_json::Value;

impl Up {
    /// Runs a client command with `key` as `--api-key` (and nothing from the environment).
    fn run(&self, key: Option<&str>, args: &[&str]) -> Run {
        self.run_env(key, &[], args)
    }

    fn run_env(&self, key: Option<&str>, env: &[(&str, &str)], args: &[&str]) -> Run {
        self.run_at(&self.url, key, env, args)
    }

    /// Runs a client command against `url`.
    fn run_at(&self, url: &str, key: Option<&str>, env: &[(&str, &str)], args: &[&str]) -> Run {
        let mut cmd = Command::new(BIN);
        cmd.args(["--server", url, "--timeout", "20s"]);
        if let Some(key) = key {
            cmd.args(["--api-key", key]);
        }
        cmd.args(args).stdin(Stdio::null());
        for var in CLIENT_ENV {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let run = Run::from(cmd.output().expect("run portcullis"));
        run.assert_no_panic();
        run
    }

    /// Runs a command as the bootstrap admin and asserts success.
    fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(Some(&self.admin_key), args);
        assert_eq!(run.code, Some(0), "portcullis {args:?} failed: {}", run.stderr);
        run
    }

    /// Runs a command as the bootstrap admin with `-o json` and parses its output.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let run = self.ok(&all);
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", run.stdout))
    }
}

/// Asserts a failed run: exit status 2, nothing on stdout, every stderr line of the form
/// `portcullis: <command>: ...`.
fn assert_error(run: &Run, command: &str) {
    assert_eq!(
        run.code,
        Some(2),
        "expected exit 2; stdout: {} stderr: {}",
        run.stdout,
        run.stderr
    );
    assert!(run.stdout.is_empty(), "stdout on error: {}", run.stdout);
    let prefix = format!("portcullis: {command}: ");
    assert!(!run.stderr.trim().is_empty(), "no error message");
    for line in run.stderr.lines() {
        assert!(line.starts_with(&prefix), "{line:?} does not start with {prefix:?}");
    }
}

/// The single line a secret-printing command writes: the secret alone.
fn secret_alone(run: &Run) -> String {
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line: {:?}", run.stdout);
    let secret = lines[0];
    assert!(
        !secret.is_empty() && !secret.contains(char::is_whitespace),
        "{secret:?}"
    );
    secret.to_owned()
}

fn example_policy() -> String {
    repo("examples/policy.yaml").display().to_string()
}

#[test]
fn policy_apply_get_list_history_duplicate_delete() {
    let up = Up::start();
    let policy = example_policy();

    let run = up.ok(&["policy", "apply", "-f", &policy]);
    assert_eq!(run.stdout.trim(), "policy prod.strict created (revision 1)");
    let run = up.ok(&["policy", "apply", "-f", &policy]);
    assert_eq!(run.stdout.trim(), "policy prod.strict unchanged (revision 1)");

    // A changed description is a new revision.
    let text = std::fs::read_to_string(&policy).unwrap();
    let changed = text.replace(
        "description: Production clusters",
        "description: Production clusters, v2",
    );
    assert_ne!(text, changed);
    let changed_file = up.dir.write("changed.yaml", changed);
    let run = up.ok(&["policy", "apply", "-f", changed_file.to_str().unwrap()]);
    assert_eq!(run.stdout.trim(), "policy prod.strict updated (revision 2)");

    let got = up.json(&["policy", "get", "prod.strict"]);
    assert!(got["id"].as_str().is_some_and(|id| !id.is_empty()), "{got}");
    assert_eq!(got["revision"], 2);
    assert_eq!(got["name"], "prod.strict");
    assert_eq!(got["description"], "Production clusters, v2");
    assert!(got["default"]["rules"].is_array(), "{got}");

    // What `get -o json` prints applies again, unchanged.
    let printed = up.dir.write("printed.json", got.to_string());
    let run = up.ok(&["policy", "apply", "-f", printed.to_str().unwrap()]);
    assert_eq!(run.stdout.trim(), "policy prod.strict unchanged (revision 2)");

    let history = up.json(&["policy", "history", "prod.strict"]);
    let history = history.as_array().expect("history is an array");
    assert_eq!(history.len(), 2);
    for (entry, revision) in history.iter().zip([2, 1]) {
        let keys: Vec<&str> = entry.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 3, "{entry}");
        assert_eq!(entry["revision"], revision);
        assert!(entry["author"].as_str().is_some_and(|a| !a.is_empty()), "{entry}");
        assert!(entry["time"].as_str().is_some_and(|t| t.contains('T')), "{entry}");
    }
    let first = up.json(&["policy", "revision", "prod.strict", "1"]);
    assert_eq!(first["revision"], 1);
    assert_eq!(first["description"], "Production clusters");

    let run = up.ok(&["policy", "duplicate", "prod.strict"]);
    assert_eq!(run.stdout.trim(), "policy prod.strict duplicated as prod.strictPolicy");
    let run = up.ok(&["policy", "duplicate", "prod.strict"]);
    assert_eq!(run.stdout.trim(), "policy prod.strict duplicated as prod.strictPolicy2");
    let copy = up.json(&["policy", "duplicate", "prod.strict", "--name", "staging"]);
    assert_eq!(
        (copy["name"].as_str(), copy["revision"].as_u64()),
        (Some("staging"), Some(1))
    );

    let list = up.json(&["policy", "list"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["prod.strict", "prod.strictPolicy", "prod.strictPolicy2", "staging"]
    );
    let table = up.ok(&["policy", "list"]).stdout;
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("NAME "), "{table}");
    assert_eq!(lines.count(), 4, "{table}");

    let run = up.ok(&["policy", "delete", "prod.strictPolicy2"]);
    assert!(run.stdout.contains("deleted"), "{}", run.stdout);
    assert_error(
        &up.run(Some(&up.admin_key), &["policy", "get", "prod.strictPolicy2"]),
        "policy get",
    );

    // Every change above is in the audit log.
    let audit = up.json(&["audit", "list"]);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.iter().any(|a| a.starts_with("policy.")), "{actions:?}");
}

#[test]
fn a_validation_error_exits_2_naming_the_field_path() {
    let up = Up::start();
    let bad = up.dir.write(
        "bad.yaml",
        "name: prod.strict\ndefault:\n  rules:\n    - type: podSecurityContext\n      action: blok\n      statement: {properties: [{key: hostNetwork, value: \"true\"}]}\n",
    );
    let run = up.run(Some(&up.admin_key), &["policy", "apply", "-f", bad.to_str().unwrap()]);
    assert_error(&run, "policy apply");
    assert!(run.stderr.contains("default.rules[0].action"), "{}", run.stderr);
    // Nothing was written.
    assert_eq!(up.json(&["policy", "list"]), Value::Array(Vec::new()));

    // Errors from the server are one line too: a missing policy, a bad key.
    assert_error(
        &up.run(Some(&up.admin_key), &["policy", "history", "nope"]),
        "policy history",
    );
    assert_error(&up.run(Some("pc_not_a_key"), &["policy", "list"]), "policy list");
    assert_error(&up.run(None, &["policy", "list"]), "policy list");
}

#[test]
fn a_yaml_file_with_anchors_and_aliases_is_refused_before_anything_is_sent() {
    let up = Up::start();
    // ~50 KB that would expand to 10^8 values: one anchor of 10,000 items in the ignored
    // `id` field, referenced 10,000 times.
    let laughs = format!(
        "name: laughs\nid:\n  a: &a [{}]\n  b: [{}]\ndefault:\n  rules: []\n",
        vec!["0"; 10_000].join(","),
        vec!["*a"; 10_000].join(",")
    );
    let file = up.dir.write("laughs.yaml", &laughs);
    for kind in ["policy", "ruleset", "attestor"] {
        let run = up.run(Some(&up.admin_key), &[kind, "apply", "-f", file.to_str().unwrap()]);
        assert_error(&run, &format!("{kind} apply"));
        assert!(
            run.stderr
                .contains("line 3: an anchor (&name): YAML anchors and aliases are not accepted"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(up.json(&["policy", "list"]), Value::Array(Vec::new()));
}

#[test]
fn cluster_create_prints_the_connector_key_alone() {
    let up = Up::start();
    up.ok(&["policy", "apply", "-f", &example_policy()]);

    let run = up.ok(&["cluster", "create", "prod-eu", "--policy", "prod.strict"]);
    let key = secret_alone(&run);
    assert_ne!(key, up.admin_key);

    let clusters = up.json(&["cluster", "list"]);
    assert_eq!(clusters.as_array().map(Vec::len), Some(1), "{clusters}");
    assert_eq!(clusters[0]["name"], "prod-eu");
    assert_eq!(clusters[0]["policy"], "prod.strict");

    let settings = up.json(&[
        "cluster",
        "settings",
        "prod-eu",
        "--failure-mode",
        "fail-closed",
        "--exclude-namespace",
        "ops",
        "--exclude-namespace",
        "kube-system",
        "--trusted-image",
        "registry.example.com/portcullis/connector",
    ]);
    assert_eq!(settings["failureMode"], "fail-closed");
    let shown = up.json(&["cluster", "settings", "prod-eu"]);
    assert_eq!(shown, settings);
    let namespaces: Vec<&str> = shown["excludedNamespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        namespaces.contains(&"ops") && namespaces.contains(&"kube-system"),
        "{shown}"
    );
    assert_eq!(shown["trustedImages"][0], "registry.example.com/portcullis/connector");

    // A connector key cannot manage policies.
    assert_error(&up.run(Some(&key), &["policy", "list"]), "policy list");
    // The assigned policy cannot be deleted.
    assert_error(
        &up.run(Some(&up.admin_key), &["policy", "delete", "prod.strict"]),
        "policy delete",
    );

    let rotated = secret_alone(&up.ok(&["cluster", "rotate-key", "prod-eu", "--grace", "0"]));
    assert_ne!(rotated, key);

    up.ok(&["policy", "duplicate", "prod.strict", "--name", "other"]);
    let run = up.ok(&["cluster", "assign", "prod-eu", "--policy", "other"]);
    assert!(run.stdout.contains("other"), "{}", run.stdout);
    up.ok(&["policy", "delete", "prod.strict"]);
}

#[test]
fn tenants_and_keys() {
    let up = Up::start();
    let operator = [("PORTCULLIS_OPERATOR_KEY", up.operator_key.as_str())];

    let run = up.run_env(None, &operator, &["tenant", "create", "acme"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let acme_admin = secret_alone(&run);

    // The new tenant's admin sees an empty tenant, not `default`'s policies.
    up.ok(&["policy", "apply", "-f", &example_policy()]);
    let run = up.run(Some(&acme_admin), &["policy", "list", "-o", "json"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).unwrap(),
        Value::Array(Vec::new())
    );

    let run = up.run_env(None, &operator, &["tenant", "list", "-o", "json"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let tenants: Value = serde_json::from_str(&run.stdout).unwrap();
    let ids: Vec<&str> = tenants
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert!(ids.contains(&"acme") && ids.contains(&"default"), "{ids:?}");
    // A tenant admin is not the operator.
    assert_error(&up.run(Some(&up.admin_key), &["tenant", "list"]), "tenant list");

    // Dead letters are the operator's to list (none here: every event went out).
    let run = up.run_env(None, &operator, &["dead-letter", "list", "-o", "json"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).unwrap(),
        Value::Array(Vec::new())
    );
    let run = up.run_env(None, &operator, &["dead-letter", "list"]);
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), ""), "{}", run.stderr);
    assert_error(
        &up.run(Some(&up.admin_key), &["dead-letter", "list"]),
        "dead-letter list",
    );

    let viewer = secret_alone(&up.ok(&["key", "create", "--role", "viewer", "--description", "read only"]));
    let run = up.run(Some(&viewer), &["policy", "get", "prod.strict", "-o", "json"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_error(
        &up.run(Some(&viewer), &["policy", "apply", "-f", &example_policy()]),
        "policy apply",
    );

    let created = up.json(&["key", "create", "--role", "editor", "--expires-in", "1h"]);
    let editor = created["secret"].as_str().unwrap().to_owned();
    let editor_id = created["key"]["id"].as_str().unwrap().to_owned();
    assert!(created["key"]["expires"].is_string(), "{created}");
    let keys = up.json(&["key", "list"]);
    let ids: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["id"].as_str())
        .collect();
    assert!(ids.contains(&editor_id.as_str()), "{ids:?}");
    assert!(!keys.to_string().contains(&editor), "key list shows a secret");

    assert_eq!(up.run(Some(&editor), &["policy", "list"]).code, Some(0));
    up.ok(&["key", "revoke", &editor_id]);
    assert_error(&up.run(Some(&editor), &["policy", "list"]), "policy list");

    let run = up.run_env(None, &operator, &["tenant", "delete", "acme"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

#[test]
fn rulesets_attestors_and_scan_results() {
    let up = Up::start();

    let ruleset = up.dir.write(
        "ruleset.yaml",
        "name: web\ndescription: web pods\nlabels: {matchLabels: {app: web}}\nrules:\n  - {id: TM-00000001, mitigation: log}\n",
    );
    let run = up.ok(&["ruleset", "apply", "-f", ruleset.to_str().unwrap()]);
    assert_eq!(run.stdout.trim(), "ruleset web created (revision 1)");
    let got = up.json(&["ruleset", "get", "web"]);
    assert_eq!((got["name"].as_str(), got["revision"].as_u64()), (Some("web"), Some(1)));
    assert!(got["id"].is_string());
    assert_eq!(up.json(&["ruleset", "list"]).as_array().map(Vec::len), Some(1));
    up.ok(&["ruleset", "delete", "web"]);
    assert_error(&up.run(Some(&up.admin_key), &["ruleset", "get", "web"]), "ruleset get");

    let pem = std::fs::read_to_string(shared("conformance/cosign-signatures/cosign.pub")).unwrap();
    let attestor = serde_json::json!({"name": "release-signer", "type": "cosignPublicKey", "publicKey": pem});
    let file = up.dir.write("attestor.json", attestor.to_string());
    let run = up.ok(&["attestor", "apply", "-f", file.to_str().unwrap()]);
    assert_eq!(run.stdout.trim(), "attestor release-signer created (revision 1)");
    let got = up.json(&["attestor", "get", "release-signer"]);
    assert_eq!(got["revision"], 1);
    let listed = up.json(&["attestor", "list"]);
    assert_eq!(listed[0]["type"], "cosignPublicKey");
    up.ok(&["attestor", "delete", "release-signer"]);

    // Keyless: the example (a made-up root) and one under Sigstore's real root from ../shared.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/attestor-keyless.yaml");
    let run = up.ok(&["attestor", "apply", "-f", example]);
    assert_eq!(run.stdout.trim(), "attestor release-keyless created (revision 1)");
    let root = std::fs::read_to_string(shared("conformance/sigstore-bundles/trusted_root.production.json")).unwrap();
    let keyless = serde_json::json!({"name": "ci-keyless", "type": "cosignKeyless", "keyless": {
        "issuer": "https://token.actions.githubusercontent.com",
        "subject": "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main",
        "trustedRoot": root,
    }});
    let file = up.dir.write("keyless.json", keyless.to_string());
    up.ok(&["attestor", "apply", "-f", file.to_str().unwrap()]);
    let got = up.json(&["attestor", "get", "ci-keyless"]);
    assert_eq!(got["keyless"]["trustedRoot"], root, "{got}");
    let listed = up.json(&["attestor", "list"]);
    assert!(
        listed.as_array().unwrap().iter().all(|a| a["type"] == "cosignKeyless"),
        "{listed}"
    );
    let bad = serde_json::json!({"name": "bad-keyless", "type": "cosignKeyless", "keyless": {
        "issuer": "https://accounts.google.com", "subject": "a@b.c", "subjectRegExp": "a@.*", "trustedRoot": root,
    }});
    let file = up.dir.write("bad-keyless.json", bad.to_string());
    let run = up.run(
        Some(&up.admin_key),
        &["attestor", "apply", "-f", file.to_str().unwrap()],
    );
    assert!(
        run.code == Some(2) && run.stderr.contains("keyless.subject"),
        "{}",
        run.stderr
    );
    up.ok(&["attestor", "delete", "ci-keyless"]);
    up.ok(&["attestor", "delete", "release-keyless"]);

    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let native = serde_json::json!({
        "digest": digest,
        "scanType": "vulnerability",
        "scannedAt": "2025-01-01T00:00:00Z",
        "scanner": "grype 0.80",
        "findings": [{"id": "CVE-2024-0001", "severity": "high"}],
    });
    let file = up.dir.write("scan.json", native.to_string());
    let stored = up.json(&["scan", "upload", "-f", file.to_str().unwrap()]);
    assert_eq!(stored[0]["digest"], digest);
    assert_eq!(stored[0]["findings"], 1);
    assert_eq!(stored[0]["maxSeverity"], "high");

    let trivy = shared("conformance/trivy-reports/alpine-310-registry.json.golden");
    let run = up.ok(&["scan", "upload", "--digest", digest, "-f", trivy.to_str().unwrap()]);
    assert!(run.stdout.starts_with("DIGEST "), "{}", run.stdout);
    assert!(run.stdout.contains(digest), "{}", run.stdout);
}

/// `certs init` certificates serve TLS as they are (the policy store's, named `localhost` and
/// `127.0.0.1`), trusted through `ca.crt`; `portcullis health` asks the gRPC health service
/// over it: exit 0 SERVING, 1 for a service the server does not have, 2 when it cannot ask.
#[test]
fn certs_init_certificates_serve_tls_and_health_answers() {
    let dir = TempDir::new("client-certs");
    let certs = dir.path("certs");
    let init = common::portcullis(&["certs", "init", certs.to_str().unwrap(), "--name", "policy-store"]);
    assert_eq!(init.code, Some(0), "{}", init.stderr);
    let file = |name: &str| certs.join(name).to_str().unwrap().to_owned();
    let (cert, key, ca) = (file("policy-store.crt"), file("policy-store.key"), file("ca.crt"));
    let up = Up::start_with(&["--tls-cert", &cert, "--tls-key", &key], dir);
    assert!(up.url.starts_with("https://"), "{}", up.url);
    let localhost = up.url.replacen("127.0.0.1", "localhost", 1);

    for url in [up.url.as_str(), localhost.as_str()] {
        let overall = up.run(None, &["--ca-cert", &ca, "health", url]);
        assert_eq!(overall.code, Some(0), "{url}: {}", overall.stderr);
        assert_eq!(overall.stdout.trim(), "SERVING");
    }
    // Readiness of one service, by default at --server.
    let ready = up.run(
        None,
        &[
            "--ca-cert",
            &ca,
            "health",
            "--service",
            "portcullis.policystore.v1.PolicyService",
        ],
    );
    assert_eq!(
        (ready.code, ready.stdout.trim()),
        (Some(0), "SERVING"),
        "{}",
        ready.stderr
    );
    let unknown = up.run(
        None,
        &["--ca-cert", &ca, "health", "--service", "portcullis.nothing.v1.Nothing"],
    );
    assert_eq!(
        (unknown.code, unknown.stdout.trim()),
        (Some(1), "SERVICE_UNKNOWN"),
        "{}",
        unknown.stderr
    );

    // Without the CA the certificate is not trusted: no answer, exit 2.
    let untrusted = up.run(None, &["health"]);
    assert_eq!(untrusted.code, Some(2), "{}", untrusted.stderr);
    assert!(untrusted.stderr.contains("portcullis: health:"), "{}", untrusted.stderr);
    // A CA that did not sign it is no better.
    let other = TempDir::new("client-certs-other");
    let other_ca = other.path("ca");
    assert_eq!(
        common::portcullis(&["certs", "init", other_ca.to_str().unwrap(), "--name", "x"]).code,
        Some(0)
    );
    let wrong = up.run(
        None,
        &["--ca-cert", other_ca.join("ca.crt").to_str().unwrap(), "health"],
    );
    assert_eq!(wrong.code, Some(2), "{}", wrong.stderr);
}

#[test]
fn https_with_a_self_signed_certificate_and_ca_cert() {
    let dir = TempDir::new("client-tls");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = dir.write("cert.pem", certified.cert.pem());
    let key = dir.write("key.pem", certified.signing_key.serialize_pem());
    let (cert, key) = (cert.to_str().unwrap().to_owned(), key.to_str().unwrap().to_owned());
    let up = Up::start_with(&["--tls-cert", &cert, "--tls-key", &key], dir);
    assert!(up.url.starts_with("https://"), "{}", up.url);

    let run = up.run(
        Some(&up.admin_key),
        &["--ca-cert", &cert, "policy", "list", "-o", "json"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).unwrap(),
        Value::Array(Vec::new())
    );

    // Without the CA the certificate is not trusted; plain http does not speak to TLS.
    assert_error(&up.run(Some(&up.admin_key), &["policy", "list"]), "policy list");
    let plain = up.url.replacen("https://", "http://", 1);
    assert_error(
        &up.run_at(&plain, Some(&up.admin_key), &[], &["policy", "list"]),
        "policy list",
    );
}

/// The README's TLS walk-through as a new user runs it: a private CA (the certificate file
/// holds the leaf alone, as `openssl x509 -req` writes it), `up --tls-cert --tls-key
/// --webhook-listen`, then a review by `portcullis review` and by curl on the webhook over
/// HTTP/1.1 and HTTP/2. Admission reaches the store on the process's own TLS listener: each
/// review is judged by the policy (its hostNetwork rule), not failed over to the cluster's
/// failure mode because the store's certificate was not trusted.
#[test]
fn the_tls_walk_through_with_a_private_ca_judges_every_review() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

    let dir = TempDir::new("client-tls-walk");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "walk-through CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let leaf = params.signed_by(&server_key, &ca).unwrap();
    let ca_file = dir.write("ca.crt", ca.pem()).display().to_string();
    let cert = dir.write("server.crt", leaf.pem()).display().to_string();
    let key = dir
        .write("server.key", server_key.serialize_pem())
        .display()
        .to_string();
    let webhook_port = free_port();
    let webhook = format!("127.0.0.1:{webhook_port}");
    let up = Up::start_with(
        &["--tls-cert", &cert, "--tls-key", &key, "--webhook-listen", &webhook],
        dir,
    );
    let with_ca = |key: &str, args: &[&str]| {
        let mut all = vec!["--ca-cert", ca_file.as_str()];
        all.extend_from_slice(args);
        up.run(Some(key), &all)
    };
    let admin = up.admin_key.clone();
    let applied = with_ca(&admin, &["policy", "apply", "-f", &example_policy()]);
    assert_eq!(applied.code, Some(0), "{}", applied.stderr);
    let created = with_ca(&admin, &["cluster", "create", "prod-eu", "--policy", "prod.strict"]);
    assert_eq!(created.code, Some(0), "{}", created.stderr);
    let connector_key = secret_alone(&created);
    let settings = with_ca(
        &admin,
        &["cluster", "settings", "prod-eu", "--failure-mode", "fail-closed"],
    );
    assert_eq!(settings.code, Some(0), "{}", settings.stderr);

    let review_file = repo("examples/review.json").display().to_string();
    let judged_by_the_policy = |how: &str, answer: &str| {
        let answer: Value = serde_json::from_str(answer).unwrap_or_else(|e| panic!("{how}: {e}: {answer}"));
        let response = &answer["response"];
        assert_eq!(response["allowed"], false, "{how}: {answer}");
        let message = response["status"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("hostNetwork"),
            "{how}: not judged by the policy: {answer}"
        );
        assert!(!message.contains("unavailable"), "{how}: a stage failed: {answer}");
    };
    let review = with_ca(&connector_key, &["review", "-f", &review_file]);
    assert_eq!(review.code, Some(1), "{}", review.stderr);
    judged_by_the_policy("portcullis review", &review.stdout);

    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let out = Command::new("curl")
            .args(["--silent", "--show-error", "--cacert", &ca_file, flag])
            .args(["--write-out", "\n%{http_code} %{http_version}"])
            .args(["-H", &format!("Authorization: Bearer {connector_key}")])
            .args(["-H", "Content-Type: application/json"])
            .args(["--data-binary", &format!("@{review_file}")])
            .arg(format!("https://localhost:{webhook_port}/validate/prod-eu"))
            .output()
            .expect("run curl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "curl {flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (body, status) = stdout.rsplit_once('\n').unwrap();
        assert_eq!(status, format!("200 {version}"), "curl {flag}: {stdout}");
        judged_by_the_policy(&format!("curl {flag}"), body);
    }
}

/// A key is never sent in plain text off this host: `http://` to another address is refused
/// before anything is dialled (exit 2, naming `--insecure`); on loopback it is dialled.
#[test]
fn keys_are_not_sent_in_plain_text_off_this_host() {
    let run = |server: &str| {
        let mut cmd = Command::new(BIN);
        cmd.args(["--server", server, "--timeout", "2s", "--api-key", "pck_not_a_real_key"])
            .args(["policy", "list"])
            .stdin(Stdio::null());
        for var in CLIENT_ENV {
            cmd.env_remove(var);
        }
        let run = Run::from(cmd.output().expect("run portcullis"));
        run.assert_no_panic();
        run
    };
    let refused = run("http://192.0.2.1:50051");
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("plain text") && refused.stderr.contains("--insecure"),
        "{}",
        refused.stderr
    );
    let local = run(&format!("http://localhost:{}", free_port()));
    assert!(!local.stderr.contains("plain text"), "{}", local.stderr);
    assert!(local.stderr.contains("refused"), "{}", local.stderr);
}

#[test]
fn review_prints_the_response_and_exits_by_the_verdict() {
    let up = Up::start();
    let policy = up.dir.path("policy.json");
    std::fs::write(
        &policy,
        r#"{"name":"reviewTest","default":{"rules":[{"type":"podSecurityContext","action":"block","statement":{"properties":[{"key":"hostNetwork","value":"true"}]}}]}}"#,
    )
    .unwrap();
    up.ok(&["policy", "apply", "-f", policy.to_str().unwrap()]);
    let created = up.ok(&["cluster", "create", "review-cluster", "--policy", "reviewTest"]);
    let connector_key = secret_alone(&created);
    let review = |host_network: bool| common::pod_review(&format!("uid-{host_network}"), host_network);
    let (denied_file, allowed_file, bad_file) = (
        up.dir.path("denied.json"),
        up.dir.path("allowed.json"),
        up.dir.path("bad.json"),
    );
    std::fs::write(&denied_file, review(true)).unwrap();
    std::fs::write(&allowed_file, review(false)).unwrap();
    std::fs::write(&bad_file, "{\"apiVersion\": ").unwrap();
    let run = |file: &std::path::Path| {
        up.run_at(
            &up.admission_url,
            Some(&connector_key),
            &[],
            &["review", "-f", file.to_str().unwrap()],
        )
    };

    let denied = run(&denied_file);
    assert_eq!(denied.code, Some(1), "{}", denied.stderr);
    let answer: Value = serde_json::from_str(&denied.stdout).unwrap();
    assert_eq!(answer["response"]["uid"], "uid-true");
    assert_eq!(answer["response"]["allowed"], false);
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("podSecurityContext violates rule with properties { hostNetwork:true }"),
        "{message}"
    );

    let allowed = run(&allowed_file);
    assert_eq!(allowed.code, Some(0), "{}", allowed.stderr);
    let answer: Value = serde_json::from_str(&allowed.stdout).unwrap();
    assert_eq!(answer["response"]["allowed"], true);

    let bad = run(&bad_file);
    assert_eq!(bad.code, Some(2));
    assert!(bad.stdout.is_empty());
    assert!(bad.stderr.starts_with("portcullis: review: "), "{}", bad.stderr);

    // An admin key makes no admission decisions.
    let admin = up.run_at(
        &up.admission_url,
        Some(&up.admin_key),
        &[],
        &["review", "-f", allowed_file.to_str().unwrap()],
    );
    assert_eq!(admin.code, Some(2));
    assert!(admin.stderr.contains("may not call Review"), "{}", admin.stderr);
}

/// One address for people: in `up`, every service answers on `--listen`, AdmissionService
/// included, so `review` needs only the `--server` every other command uses.
#[test]
fn review_needs_only_the_one_listen_address() {
    let up = Up::start();
    assert_ne!(up.url, up.admission_url);
    let policy = up.dir.path("policy.json");
    std::fs::write(
        &policy,
        r#"{"name":"oneAddress","default":{"rules":[{"type":"podSecurityContext","action":"block","statement":{"properties":[{"key":"hostNetwork","value":"true"}]}}]}}"#,
    )
    .unwrap();
    up.ok(&["policy", "apply", "-f", policy.to_str().unwrap()]);
    let created = up.ok(&["cluster", "create", "one-address", "--policy", "oneAddress"]);
    let connector_key = secret_alone(&created);
    let file = up.dir.path("review.json");
    std::fs::write(&file, common::pod_review("uid-one", true)).unwrap();
    let denied = up.run_at(
        &up.url,
        Some(&connector_key),
        &[],
        &["review", "-f", file.to_str().unwrap()],
    );
    assert_eq!(denied.code, Some(1), "{}", denied.stderr);
    let answer: Value = serde_json::from_str(&denied.stdout).unwrap();
    assert_eq!(answer["response"]["uid"], "uid-one");
    assert_eq!(answer["response"]["allowed"], false);
}

/// Pushes a one-layer image to `registry` at `app:TAG`; signs it with `key` when given
/// (cosign's legacy layout). Returns the image's digest.
fn push_image(registry: &str, tag: &str, key: Option<&ring::signature::EcdsaKeyPair>) -> String {
    use base64::Engine as _;
    use bytes::Bytes;
    use portcullis_oci::manifest::{COSIGN_SIGNATURE_ANNOTATION, COSIGN_SIMPLE_SIGNING, OCI_CONFIG, OCI_MANIFEST};
    use portcullis_oci::{Client, ClientConfig, Descriptor, ImageManifest, Reference};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = Client::new(ClientConfig::default()).unwrap();
        let target = Reference::parse(&format!("{registry}/app:{tag}")).unwrap();
        let manifest = |config: Bytes, layers: Vec<Descriptor>| ImageManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            artifact_type: None,
            config: Descriptor::of(OCI_CONFIG, &config),
            layers,
            subject: None,
            annotations: Default::default(),
        };
        let config = Bytes::from(format!(r#"{{"architecture":"amd64","os":"linux","tag":"{tag}"}}"#));
        let layer = Bytes::from(format!("layer {tag}"));
        client.push_blob(&target, config.clone()).await.unwrap();
        client.push_blob(&target, layer.clone()).await.unwrap();
        let bytes = serde_json::to_vec(&manifest(config, vec![Descriptor::of("application/vnd.oci.image.layer.v1.tar", &layer)])).unwrap();
        let digest = client.push_manifest(&target, OCI_MANIFEST, bytes.into()).await.unwrap();
        if let Some(key) = key {
            let payload = Bytes::from(format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"{registry}/app"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
            ));
            let signature = key.sign(&ring::rand::SystemRandom::new(), &payload).unwrap();
            let sig_target = target.with_tag(&format!("{}.sig", digest.tag_form())).unwrap();
            let empty = Bytes::from_static(b"{}");
            client.push_blob(&sig_target, empty.clone()).await.unwrap();
            client.push_blob(&sig_target, payload.clone()).await.unwrap();
            let mut layer = Descriptor::of(COSIGN_SIMPLE_SIGNING, &payload);
            layer.annotations.insert(
                COSIGN_SIGNATURE_ANNOTATION.to_owned(),
                base64::engine::general_purpose::STANDARD.encode(signature.as_ref()),
            );
            let bytes = serde_json::to_vec(&manifest(empty, vec![layer])).unwrap();
            client.push_manifest(&sig_target, OCI_MANIFEST, bytes.into()).await.unwrap();
        }
        digest.to_string()
    })
}

#[test]
fn verify_exits_by_the_match() {
    use base64::Engine as _;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = runtime.block_on(portcullis_test_kit::Registry::start()).unwrap();
    let host = registry.host();
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    // SubjectPublicKeyInfo of an uncompressed P-256 point: the fixed prefix, then the point.
    let mut spki = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
        0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    spki.extend_from_slice(key.public_key().as_ref());
    let b64 = base64::engine::general_purpose::STANDARD.encode(&spki);
    let (first, rest) = b64.split_at(64);
    let pem = format!("-----BEGIN PUBLIC KEY-----\n{first}\n{rest}\n-----END PUBLIC KEY-----\n");
    let signed = push_image(&host, "signed", Some(&key));
    let unsigned = push_image(&host, "unsigned", None);

    let up = Up::start();
    let attestor = serde_json::json!({"name": "release", "type": "cosignPublicKey", "publicKey": pem});
    let file = up.dir.write("attestor.json", attestor.to_string());
    up.ok(&["attestor", "apply", "-f", file.to_str().unwrap()]);
    let other = serde_json::json!({"name": "other", "type": "cosignPublicKey", "publicKey": std::fs::read_to_string(shared("conformance/cosign-signatures/cosign.pub")).unwrap()});
    let file = up.dir.write("other.json", other.to_string());
    up.ok(&["attestor", "apply", "-f", file.to_str().unwrap()]);

    // Signed by the attestor: 0, by tag or digest.
    let run = up.ok(&["verify", &format!("{host}/app:signed"), "--attestor", "release"]);
    assert!(run.stdout.contains(&signed), "{}", run.stdout);
    assert!(run.stdout.contains("release: verified"), "{}", run.stdout);
    up.ok(&["verify", &format!("{host}/app@{signed}"), "--attestor", "release"]);
    // Two attestors, one signed: `any` holds (0), `all` does not (1).
    up.ok(&[
        "verify",
        &format!("{host}/app:signed"),
        "--attestor",
        "release",
        "--attestor",
        "other",
        "--match",
        "any",
    ]);
    let all = up.run(
        Some(&up.admin_key),
        &[
            "verify",
            &format!("{host}/app:signed"),
            "--attestor",
            "release",
            "--attestor",
            "other",
        ],
    );
    assert_eq!(all.code, Some(1), "{} {}", all.stdout, all.stderr);
    assert!(all.stdout.contains("other: not verified"), "{}", all.stdout);
    // Unsigned: 1.
    let run = up.run(
        Some(&up.admin_key),
        &["verify", &format!("{host}/app@{unsigned}"), "--attestor", "release"],
    );
    assert_eq!(run.code, Some(1), "{} {}", run.stdout, run.stderr);
    // An unknown attestor: 2.
    let run = up.run(
        Some(&up.admin_key),
        &["verify", &format!("{host}/app:signed"), "--attestor", "nobody"],
    );
    assert_eq!(run.code, Some(2), "{} {}", run.stdout, run.stderr);
    assert!(run.stdout.contains("unknown attestor"), "{}", run.stdout);
    // No attestor at all is a usage error: 2.
    let run = up.run(Some(&up.admin_key), &["verify", &format!("{host}/app:signed")]);
    assert_eq!(run.code, Some(2), "{} {}", run.stdout, run.stderr);
}

/// A policy document (JSON) whose default definition has these exceptions, and a namespaced
/// definition `lab` with its own (`None`: it inherits the default's).
fn policy_with_exceptions(name: &str, default: Value, lab: Option<Value>) -> String {
    let mut lab_definition = serde_json::json!({"name": "lab", "namespaces": ["lab"], "rules": []});
    if let Some(own) = lab {
        lab_definition["exceptions"] = own;
    }
    serde_json::json!({
        "name": name,
        "default": {"rules": [], "exceptions": default},
        "namespaced": [lab_definition],
    })
    .to_string()
}

/// An exception of the registry `registry`, with optional expiry and reason.
fn registry_exception(registry: &str, expires_at: Option<&str>, reason: Option<&str>) -> Value {
    let mut e = serde_json::json!({
        "type": "registry",
        "statement": {"properties": [{"key": "equals", "value": registry}]},
    });
    if let Some(t) = expires_at {
        e["expiresAt"] = Value::from(t);
    }
    if let Some(r) = reason {
        e["reason"] = Value::from(r);
    }
    e
}

#[test]
fn policy_exceptions_lists_every_exception_soonest_expiry_first() {
    use time::format_description::well_known::Rfc3339;
    let up = Up::start();
    // Whole seconds in UTC, so that what the command prints is what was written.
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let at = |days: i64| (now + time::Duration::days(days)).format(&Rfc3339).unwrap();
    let (yesterday, in_3_days, in_30_days) = (at(-1), at(3), at(30));

    let a = policy_with_exceptions(
        "a.exc",
        serde_json::json!([
            registry_exception("forever.example.com", None, None),
            registry_exception("old.example.com", Some(&yesterday), Some("migration done")),
        ]),
        Some(serde_json::json!([registry_exception(
            "lab.example.com",
            Some(&in_3_days),
            Some("lab trial")
        )])),
    );
    let b = policy_with_exceptions(
        "b.exc",
        serde_json::json!([registry_exception("b.example.com", Some(&in_30_days), Some("SEC-9"))]),
        None,
    );
    for (file, text) in [("a.json", a), ("b.json", b)] {
        let path = up.dir.write(file, text);
        up.ok(&["policy", "apply", "-f", path.to_str().unwrap()]);
    }

    let all = up.json(&["policy", "exceptions"]);
    let rows = all.as_array().expect("an array");
    let summary: Vec<(&str, &str, &str, Option<&str>, bool)> = rows
        .iter()
        .map(|r| {
            (
                r["policy"].as_str().unwrap(),
                r["definition"].as_str().unwrap(),
                r["statement"]["properties"][0]["value"].as_str().unwrap(),
                r["expiresAt"].as_str(),
                r["expired"].as_bool().unwrap(),
            )
        })
        .collect();
    // b.exc's `lab` inherits the default's exception: listed once, under `default`.
    assert_eq!(
        summary,
        vec![
            ("a.exc", "default", "old.example.com", Some(yesterday.as_str()), true),
            ("a.exc", "lab", "lab.example.com", Some(in_3_days.as_str()), false),
            ("b.exc", "default", "b.example.com", Some(in_30_days.as_str()), false),
            ("a.exc", "default", "forever.example.com", None, false),
        ]
    );
    assert_eq!(rows[0]["reason"], "migration done");
    assert_eq!(rows[0]["type"], "registry");
    assert_eq!(rows[3]["reason"], Value::Null);
    assert_eq!(rows[3]["namespaces"], Value::Null);

    // --expiring keeps those expiring within the window, the expired one included.
    let week = up.json(&["policy", "exceptions", "--expiring", "7d"]);
    let values: Vec<&str> = week
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["statement"]["properties"][0]["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["old.example.com", "lab.example.com"]);

    let table = up.ok(&["policy", "exceptions"]).stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(
        lines[0].starts_with("POLICY ") && lines[0].contains("EXPIRES"),
        "{table}"
    );
    assert!(lines[1].contains(&format!("{yesterday} (expired)")), "{table}");
    assert!(lines[1].contains("migration done"), "{table}");
    assert!(
        lines[4].contains("forever.example.com") && lines[4].contains("never"),
        "{table}"
    );

    // A bad duration is refused before anything is asked.
    let run = up.run(Some(&up.admin_key), &["policy", "exceptions", "--expiring", "soon"]);
    assert_eq!(run.code, Some(2), "{} {}", run.stdout, run.stderr);
    assert!(run.stdout.is_empty());
}
