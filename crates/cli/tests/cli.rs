//! `portcullis eval` and `portcullis validate`, run as a user runs them: the built binary
//! against the shipped examples, temporary files and standard input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use serde_json::Value;

/// A policy using scan results and a signature rule (JSON: every form the CLI reads).
const SCAN_POLICY: &str = r#"{
  "name": "scans",
  "default": {
    "rules": [
      {"type": "vulnerabilities", "action": "block", "statement": {"properties": [{"key": "max-severity", "value": "high"}]}},
      {"type": "unscannedImage", "action": "log", "statement": {"properties": [{"key": "days", "value": "30"}]}}
    ],
    "imageVerification": [
      {"name": "ghcr-signed", "action": "block", "attestors": {"all": ["release"]},
       "conditions": [{"type": "match", "resourceFilter": "registry", "operator": "equals", "value": "ghcr.io"}]}
    ]
  }
}"#;

/// Pods running the images of the shipped Trivy reports.
const SCANNED_PODS: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: alpine, namespace: apps}
spec:
  containers: [{name: a, image: \"alpine:3.10\"}]
---
apiVersion: v1
kind: Pod
metadata: {name: buster, namespace: apps}
spec:
  containers: [{name: b, image: \"ghcr.io/aquasecurity/trivy-test-images:debian-buster\"}]
";

/// The Trivy report of alpine:3.10 (RepoTags and RepoDigests given; MEDIUM findings only).
fn alpine_report() -> String {
    shared("conformance/trivy-reports/alpine-310-registry.json.golden")
        .display()
        .to_string()
}

/// The Trivy report of debian-buster (RepoTags but no RepoDigests; a CRITICAL finding).
fn buster_report() -> String {
    shared("conformance/trivy-reports/debian-buster.json.golden")
        .display()
        .to_string()
}

const BUSTER_DIGEST: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn line_named<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no line for {name}: {lines:?}"))
}

#[test]
fn example_manifests_give_one_line_per_object_in_input_order() {
    let run = portcullis(&[
        "eval",
        "--policy",
        &example_policy(),
        &repo("examples/manifests.yaml").display().to_string(),
    ]);
    run.assert_no_panic();
    assert_eq!(run.code, Some(1), "the privileged pod is blocked: {}", run.stderr);
    assert_eq!(run.stderr, "");
    let lines = run.json_lines();
    lines.iter().for_each(assert_line_shape);
    assert_eq!(
        names_and_decisions(&lines),
        [("web", "allow"), ("debug", "block"), ("scratch", "allow")].map(|(n, d)| (n.to_owned(), d.to_owned()))
    );
    assert_eq!(lines[0]["kind"], "Deployment");
    assert_eq!(lines[0]["namespace"], "shop");
    assert_eq!(lines[0]["policy"], "prod.strict");
    assert_eq!(lines[0]["violations"], serde_json::json!([]));

    let debug = &lines[1];
    assert_eq!(debug["kind"], "Pod");
    let violations = debug["violations"].as_array().unwrap();
    let host = violations
        .iter()
        .find(|v| v["properties"] == serde_json::json!({"hostNetwork": "true"}))
        .expect("hostNetwork violation");
    assert_eq!(host["type"], "podSecurityContext");
    assert_eq!(host["action"], "block");
    assert_eq!(
        host["containers"],
        serde_json::json!([]),
        "a pod-level violation names no container"
    );
    assert_eq!(
        host["message"],
        "podSecurityContext violates rule with properties { hostNetwork:true } in pod \"debug\" (block)."
    );
    let privileged = violations
        .iter()
        .find(|v| v["properties"] == serde_json::json!({"privileged": "true"}))
        .expect("privileged violation");
    assert_eq!(privileged["containers"], serde_json::json!(["shell"]));
    assert_eq!(
        privileged["message"],
        "containerSecurityContext violates rule with properties { privileged:true } in container(s) \"shell\" (block)."
    );
    // Log-only violations are listed too.
    assert!(violations.iter().any(|v| v["type"] == "tag" && v["action"] == "log"));

    // `dev` has its own definition (privileged only): busybox:1.36 passes there.
    assert_eq!(lines[2]["namespace"], "dev");
    assert_eq!(lines[2]["violations"], serde_json::json!([]));
}

#[test]
fn objects_allowed_without_evaluation_are_reported() {
    let dir = TempDir::new("noeval");
    let file = dir.write(
        "objects.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: shop}\ndata: {a: b}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n",
    );
    let run = portcullis(&["eval", "--policy", &example_policy(), &file.display().to_string()]);
    run.assert_no_panic();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines = run.json_lines();
    assert_eq!(lines.len(), 2);
    lines.iter().for_each(assert_line_shape);
    assert_eq!(lines[0]["kind"], "ConfigMap");
    assert_eq!(lines[0]["decision"], "allow");
    assert_eq!(lines[0]["violations"], serde_json::json!([]));
    assert_eq!(lines[1]["kind"], "Service");
    assert_eq!(lines[1]["namespace"], "default", "no namespace means default");
    assert_eq!(lines[1]["decision"], "allow");
    // Byte-exact, as the issue writes it.
    assert!(
        run.stdout
            .lines()
            .all(|l| l.contains(r#""decision":"allow""#) && l.contains(r#""violations":[]"#))
    );
}

#[test]
fn each_item_of_a_list_is_reported_on_its_own() {
    let dir = TempDir::new("list");
    let list = serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            serde_json::from_str::<Value>(&pod_json("first", "a", "registry.example.com/x:1", false)).unwrap(),
            {"apiVersion": "v1", "kind": "List", "items": [
                serde_json::from_str::<Value>(&pod_json("nested", "a", "registry.example.com/x:1", true)).unwrap(),
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "a"}}
            ]},
            serde_json::from_str::<Value>(&pod_json("last", "a", "registry.example.com/x:1", false)).unwrap()
        ]
    });
    let file = dir.write("list.json", list.to_string());
    let run = portcullis(&["eval", "--policy", &example_policy(), &file.display().to_string()]);
    run.assert_no_panic();
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let lines = run.json_lines();
    lines.iter().for_each(assert_line_shape);
    assert_eq!(
        names_and_decisions(&lines),
        [
            ("first", "allow"),
            ("nested", "block"),
            ("cm", "allow"),
            ("last", "allow")
        ]
        .map(|(n, d)| (n.to_owned(), d.to_owned()))
    );
    assert!(
        lines.iter().all(|l| l["kind"] != "List"),
        "a List is not itself reported"
    );
}

#[test]
fn yaml_multi_document_with_comments_and_markers() {
    let dir = TempDir::new("yaml");
    let yaml = format!(
        "# leading comment\n---\n{}\n--- # a comment on the marker\n# only a comment: not a document\n---\n{}\n...\n---\n\n{}\n",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: one}\nspec: {containers: [{name: c, image: registry.example.com/a:1}]}",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: two}\nspec:\n  hostPID: true\n  containers: [{name: c, image: registry.example.com/a:1}]",
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: three, namespace: jobs}\nspec:\n  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers: [{name: c, image: registry.example.com/a:1, securityContext: {privileged: true}}]",
    );
    // `.yml` is read as YAML too.
    let file = dir.write("workloads.yml", yaml);
    let run = portcullis(&["eval", "--policy", &example_policy(), &file.display().to_string()]);
    run.assert_no_panic();
    assert_eq!(run.stderr, "");
    assert_eq!(run.code, Some(1));
    let lines = run.json_lines();
    lines.iter().for_each(assert_line_shape);
    assert_eq!(
        names_and_decisions(&lines),
        [("one", "allow"), ("two", "block"), ("three", "block")].map(|(n, d)| (n.to_owned(), d.to_owned()))
    );
    assert_eq!(lines[2]["kind"], "CronJob");
    assert_eq!(violation_types(&lines[2])[0], "containerSecurityContext");
}

#[test]
fn json_with_several_concatenated_values() {
    let dir = TempDir::new("json");
    let text = format!(
        "{}\n{}   {}",
        pod_json("a", "x", "registry.example.com/a:1", false),
        pod_json("b", "x", "registry.example.com/a:1", true),
        // Pretty-printed values spanning lines are fine in a .json stream.
        serde_json::to_string_pretty(
            &serde_json::from_str::<Value>(&pod_json("c", "x", "registry.example.com/a:1", false)).unwrap()
        )
        .unwrap()
    );
    let file = dir.write("pods.json", text);
    let run = portcullis(&["eval", "--policy", &example_policy(), &file.display().to_string()]);
    run.assert_no_panic();
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(
        names_and_decisions(&run.json_lines()),
        [("a", "allow"), ("b", "block"), ("c", "allow")].map(|(n, d)| (n.to_owned(), d.to_owned()))
    );
}

#[test]
fn json_lines_of_admission_reviews() {
    let run = portcullis(&[
        "eval",
        "--policy",
        &example_policy(),
        &repo("examples/reviews.jsonl").display().to_string(),
    ]);
    run.assert_no_panic();
    assert_eq!(run.stderr, "");
    assert_eq!(run.code, Some(1));
    let lines = run.json_lines();
    lines.iter().for_each(assert_line_shape);
    let got: Vec<(String, String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap().to_owned(),
                l["name"].as_str().unwrap().to_owned(),
                l["decision"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want = [
        // CREATE of a privileged pod (admission.k8s.io/v1).
        ("Pod", "debug", "block"),
        // CREATE of a compliant Deployment (v1beta1).
        ("Deployment", "web", "allow"),
        // A bare AdmissionRequest: UPDATE that only scales a non-compliant Deployment.
        ("Deployment", "legacy", "allow"),
        // DELETE is allowed.
        ("Pod", "debug", "allow"),
        // CONNECT pods/exec: the podexec rule logs.
        ("PodExecOptions", "web-5d9c7b", "allow"),
        // Not a workload.
        ("ConfigMap", "settings", "allow"),
    ]
    .map(|(k, n, d)| (k.to_owned(), n.to_owned(), d.to_owned()));
    assert_eq!(got, want);
    assert_eq!(lines[2]["violations"], serde_json::json!([]), "scaling is not judged");
    assert_eq!(lines[3]["violations"], serde_json::json!([]));
    assert_eq!(violation_types(&lines[4]), ["podexec"]);
    assert_eq!(lines[4]["violations"][0]["action"], "log");
    assert_eq!(lines[4]["violations"][0]["containers"], serde_json::json!([]));
}

#[test]
fn json_lines_skip_blank_lines_and_number_documents_by_line() {
    let dir = TempDir::new("jsonl");
    let text = format!(
        "{}\n\n{}\n{}\n",
        pod_json("a", "x", "registry.example.com/a:1", false),
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"bad"},"spec":{"containers":"nope"}}"#,
        pod_json("c", "x", "registry.example.com/a:1", false),
    );
    let file = dir.write("reviews.jsonl", text);
    let shown = file.display().to_string();
    let run = portcullis(&["eval", "--policy", &example_policy(), &shown]);
    run.assert_no_panic();
    assert_eq!(run.code, Some(2), "a bad document gives 2");
    assert_eq!(
        names_and_decisions(&run.json_lines()),
        [("a", "allow"), ("c", "allow")].map(|(n, d)| (n.to_owned(), d.to_owned())),
        "evaluation goes on after the bad document"
    );
    let err = run.stderr_lines();
    assert_eq!(err.len(), 1, "{}", run.stderr);
    // FILE:DOC-INDEX: field: message, the index being the line number.
    assert!(
        err[0].starts_with(&format!("{shown}:3: spec.containers: ")),
        "{}",
        err[0]
    );
}

#[test]
fn stdin_is_read_with_dash_as_yaml_or_json() {
    let yaml = std::fs::read(repo("examples/manifests.yaml")).unwrap();
    let run = portcullis_stdin(&["eval", "--policy", &example_policy(), "-"], yaml);
    run.assert_no_panic();
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(
        names_and_decisions(&run.json_lines()),
        [("web", "allow"), ("debug", "block"), ("scratch", "allow")].map(|(n, d)| (n.to_owned(), d.to_owned()))
    );

    let json = format!(
        "  \n{}{}",
        pod_json("j1", "x", "registry.example.com/a:1", false),
        pod_json("j2", "x", "registry.example.com/a:1", false)
    );
    let run = portcullis_stdin(&["eval", "--policy", &example_policy(), "-"], json.into_bytes());
    run.assert_no_panic();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        names_and_decisions(&run.json_lines()),
        [("j1", "allow"), ("j2", "allow")].map(|(n, d)| (n.to_owned(), d.to_owned()))
    );
}

#[test]
fn several_manifests_are_answered_in_argument_order() {
    let dir = TempDir::new("order");
    let first = dir.write(
        "first.json",
        pod_json("from-file-1", "x", "registry.example.com/a:1", false),
    );
    let last = dir.write(
        "last.jsonl",
        pod_json("from-file-2", "x", "registry.example.com/a:1", false) + "\n",
    );
    let run = portcullis_stdin(
        &[
            "eval",
            "--policy",
            &example_policy(),
            &first.display().to_string(),
            "-",
            &last.display().to_string(),
        ],
        pod_json("from-stdin", "x", "registry.example.com/a:1", false).into_bytes(),
    );
    run.assert_no_panic();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let names: Vec<String> = names_and_decisions(&run.json_lines())
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["from-file-1", "from-stdin", "from-file-2"]);
}

#[test]
fn exit_status_zero_one_two_and_two_wins() {
    let dir = TempDir::new("exit");
    let fine = dir.write("fine.json", pod_json("fine", "x", "registry.example.com/a:1", false));
    let blocked = dir.write(
        "blocked.json",
        pod_json("blocked", "x", "registry.example.com/a:1", true),
    );
    let bad = dir.write(
        "bad.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: [not, a, string]}\n",
    );
    let policy = example_policy();
    let run = |files: &[&std::path::Path]| {
        let mut args = vec!["eval".to_owned(), "--policy".to_owned(), policy.clone()];
        args.extend(files.iter().map(|f| f.display().to_string()));
        let r = portcullis(&args);
        r.assert_no_panic();
        r
    };
    assert_eq!(run(&[&fine]).code, Some(0));
    assert_eq!(run(&[&fine, &blocked]).code, Some(1));
    assert_eq!(run(&[&fine, &bad]).code, Some(2));
    // 2 wins over 1, whichever comes first.
    let r = run(&[&blocked, &bad]);
    assert_eq!(r.code, Some(2));
    assert_eq!(
        names_and_decisions(&r.json_lines()),
        [("blocked".to_owned(), "block".to_owned())]
    );
    assert_eq!(run(&[&bad, &blocked]).code, Some(2));
    // A missing manifest file is an error too, and the others are still evaluated.
    let r = run(&[&dir.path("missing.yaml"), &blocked]);
    assert_eq!(r.code, Some(2));
    assert_eq!(r.json_lines().len(), 1);
    assert!(r.stderr.contains("missing.yaml"), "{}", r.stderr);
}

#[test]
fn bad_yaml_document_is_reported_with_its_index_and_evaluation_goes_on() {
    let dir = TempDir::new("badyaml");
    let file = dir.write(
        "m.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: ok1}\nspec: {containers: []}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: broken}\nspec:\n  containers: nope\n---\n\
         key: [unclosed\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: ok2}\nspec: {containers: []}\n",
    );
    let shown = file.display().to_string();
    let run = portcullis(&["eval", "--policy", &example_policy(), &shown]);
    run.assert_no_panic();
    assert_eq!(run.code, Some(2));
    assert_eq!(
        names_and_decisions(&run.json_lines()),
        [("ok1", "allow"), ("ok2", "allow")].map(|(n, d)| (n.to_owned(), d.to_owned()))
    );
    let err = run.stderr_lines();
    assert_eq!(err.len(), 2, "{}", run.stderr);
    assert!(
        err[0].starts_with(&format!("{shown}:2: spec.containers: ")),
        "{}",
        err[0]
    );
    assert!(err[1].starts_with(&format!("{shown}:3: ")), "{}", err[1]);
    // A position in a YAML document refers to the YAML, not to an intermediate JSON form:
    // the converted text is one line, so "line 1 column 80" would send the user astray.
    assert!(!err[0].contains("line 1 column"), "{}", err[0]);
}

#[test]
fn bad_document_in_a_json_stream_is_reported() {
    let dir = TempDir::new("badjson");
    let file = dir.write(
        "m.json",
        format!(
            "{}\n{{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"spec\": {{\"hostPID\": \"yes\"}}}}\n{}",
            pod_json("one", "x", "registry.example.com/a:1", false),
            pod_json("three", "x", "registry.example.com/a:1", false)
        ),
    );
    let shown = file.display().to_string();
    let run = portcullis(&["eval", "--policy", &example_policy(), &shown]);
    run.assert_no_panic();
    assert_eq!(run.code, Some(2));
    assert_eq!(
        names_and_decisions(&run.json_lines()),
        [("one", "allow"), ("three", "allow")].map(|(n, d)| (n.to_owned(), d.to_owned()))
    );
    assert_eq!(run.stderr_lines().len(), 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with(&format!("{shown}:2: spec.hostPID: ")),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_policy_prints_file_path_and_message_and_exits_2() {
    let dir = TempDir::new("badpolicy");
    let policy = dir.write(
        "policy.yaml",
        "name: bad name\ndefault:\n  rules:\n    - type: podSecurityContext\n      action: block\n      \
         statement: {properties: [{key: hostNetwork, value: maybe}]}\n",
    );
    let shown = policy.display().to_string();
    let run = portcullis(&[
        "eval",
        "--policy",
        &shown,
        &repo("examples/manifests.yaml").display().to_string(),
    ]);
    run.assert_no_panic();
    assert_eq!(run.code, Some(2));
    assert_eq!(run.stdout, "", "nothing is evaluated with a bad policy");
    let err = run.stderr_lines();
    assert!(
        err.iter().any(|l| l.starts_with(&format!("{shown}: name: "))),
        "{}",
        run.stderr
    );
    assert!(
        err.iter().any(|l| l.starts_with(&format!(
            "{shown}: default.rules[0].statement.properties[0].value: \"maybe\" is not one of"
        ))),
        "{}",
        run.stderr
    );

    // Unreadable and syntactically broken policies too.
    let run = portcullis(&["eval", "--policy", &dir.path("absent.yaml").display().to_string(), "-"]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("absent.yaml"), "{}", run.stderr);
    let broken = dir.write("broken.json", "{\"name\": \"x\", \"default\": {\"rules\": [");
    let run = portcullis(&["eval", "--policy", &broken.display().to_string(), "-"]);
    run.assert_no_panic();
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.starts_with(&format!("{}: ", broken.display())),
        "{}",
        run.stderr
    );
}

#[test]
fn table_output_is_one_line_per_workload_with_indented_violations_and_no_colour_when_piped() {
    let run = portcullis(&[
        "eval",
        "--policy",
        &example_policy(),
        "--output",
        "table",
        &repo("examples/manifests.yaml").display().to_string(),
    ]);
    run.assert_no_panic();
    assert_eq!(run.code, Some(1));
    assert!(!run.stdout.contains('\x1b'), "no ANSI escapes when stdout is not a TTY");
    let lines: Vec<&str> = run.stdout.lines().collect();
    let heads: Vec<&str> = lines.iter().copied().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(heads.len(), 3, "one line per workload: {}", run.stdout);
    assert!(
        heads[0].starts_with("ALLOW") && heads[0].contains("shop/web"),
        "{}",
        heads[0]
    );
    assert!(
        heads[1].starts_with("BLOCK") && heads[1].contains("shop/debug"),
        "{}",
        heads[1]
    );
    assert!(
        heads[2].starts_with("ALLOW") && heads[2].contains("dev/scratch"),
        "{}",
        heads[2]
    );
    // The blocked pod's violations follow its line, indented, one per line.
    let debug_at = lines.iter().position(|l| l.contains("shop/debug")).unwrap();
    let scratch_at = lines.iter().position(|l| l.contains("dev/scratch")).unwrap();
    let details = &lines[debug_at + 1..scratch_at];
    assert_eq!(details.len(), 5, "{}", run.stdout);
    assert!(details.iter().all(|l| l.starts_with("   ")));
    assert!(
        details
            .iter()
            .any(|l| l.contains("block") && l.contains("{ privileged:true }"))
    );
    assert!(
        details
            .iter()
            .any(|l| l.contains("log") && l.contains("{ equals:latest }"))
    );
    // `-o` is the short form.
    let short = portcullis(&[
        "eval",
        "--policy",
        &example_policy(),
        "-o",
        "table",
        &repo("examples/manifests.yaml").display().to_string(),
    ]);
    assert_eq!(short.stdout, run.stdout);
}

#[test]
fn trivy_scan_results_with_repo_tags_and_with_a_given_digest() {
    let dir = TempDir::new("scan");
    let policy = dir.write("policy.json", SCAN_POLICY);
    let pods = dir.write("pods.yaml", SCANNED_PODS);
    let base = |now: &str| {
        vec![
            "eval".to_owned(),
            "--policy".to_owned(),
            policy.display().to_string(),
            "--now".to_owned(),
            now.to_owned(),
        ]
    };

    // alpine:3.10 resolves through the report's RepoTags; debian-buster's report has no
    // RepoDigests, so its digest is given as DIGEST=FILE.
    let mut args = base("2021-09-01T00:00:00Z");
    args.extend([
        "--scan-results".to_owned(),
        alpine_report(),
        "--scan-results".to_owned(),
        format!("{BUSTER_DIGEST}={}", buster_report()),
        pods.display().to_string(),
    ]);
    let run = portcullis(&args);
    run.assert_no_panic();
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let lines = run.json_lines();
    lines.iter().for_each(assert_line_shape);
    let alpine = line_named(&lines, "alpine");
    assert_eq!(
        alpine["decision"], "allow",
        "MEDIUM findings are not above high, and the scan is recent"
    );
    assert_eq!(alpine["violations"], serde_json::json!([]));
    let buster = line_named(&lines, "buster");
    assert_eq!(buster["decision"], "block", "a CRITICAL finding is above high");
    assert_eq!(violation_types(buster), ["vulnerabilities"]);
    assert_eq!(buster["violations"][0]["containers"], serde_json::json!(["b"]));
    // The signature rule matches ghcr.io and has no verdict: unverified, with the digest used.
    let unverified = buster["unverified"].as_array().unwrap();
    assert_eq!(unverified.len(), 1);
    assert_eq!(unverified[0]["rule"], "ghcr-signed");
    assert_eq!(unverified[0]["digest"], BUSTER_DIGEST);
    assert_eq!(unverified[0]["attestors"], serde_json::json!(["release"]));
    assert_eq!(
        alpine["unverified"],
        serde_json::json!([]),
        "docker.io is not matched by the signature rule"
    );

    // Without the scan results, both images are unscanned (a log rule) and nothing blocks.
    let mut args = base("2021-09-01T00:00:00Z");
    args.push(pods.display().to_string());
    let run = portcullis(&args);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    for line in run.json_lines() {
        assert_eq!(violation_types(&line), ["unscannedImage"], "{line}");
    }
}

#[test]
fn now_decides_whether_a_scan_is_too_old() {
    let dir = TempDir::new("now");
    let policy = dir.write("policy.json", SCAN_POLICY);
    let pods = dir.write("pods.yaml", SCANNED_PODS);
    let types_at = |now: &str| {
        let run = portcullis(&[
            "eval",
            "--policy",
            &policy.display().to_string(),
            "--now",
            now,
            "--scan-results",
            &alpine_report(),
            &pods.display().to_string(),
        ]);
        run.assert_no_panic();
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        violation_types(line_named(&run.json_lines(), "alpine"))
    };
    // The report was created on 2021-08-25; the rule allows 30 days.
    assert!(types_at("2021-09-01T00:00:00Z").is_empty());
    assert_eq!(types_at("2021-10-30T00:00:00+02:00"), ["unscannedImage"]);

    let run = portcullis(&[
        "eval",
        "--policy",
        &policy.display().to_string(),
        "--now",
        "yesterday",
        "-",
    ]);
    run.assert_no_panic();
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("--now"), "{}", run.stderr);
}

#[test]
fn digest_flag_resolves_a_tag_to_the_digest_of_a_scan() {
    let dir = TempDir::new("digest");
    let policy = dir.write(
        "policy.yaml",
        "name: vulns\ndefault:\n  rules:\n    - type: vulnerabilities\n      action: block\n      \
         statement: {properties: [{key: max-severity, value: low}]}\n",
    );
    let pod = dir.write("pod.json", pod_json("app", "x", "nginx:1.25", false));
    // A repository scan: no RepoTags, no RepoDigests; MEDIUM and UNKNOWN findings.
    let report = shared("conformance/trivy-reports/gomod.json.golden")
        .display()
        .to_string();
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let run_with_digest = |digest_arg: Option<String>| {
        let mut args = vec![
            "eval".to_owned(),
            "--policy".to_owned(),
            policy.display().to_string(),
            "--scan-results".to_owned(),
            format!("{digest}={report}"),
        ];
        if let Some(d) = digest_arg {
            args.extend(["--digest".to_owned(), d]);
        }
        args.push(pod.display().to_string());
        let run = portcullis(&args);
        run.assert_no_panic();
        run
    };
    // Unresolved: the vulnerabilities rule has nothing to look at.
    let run = run_with_digest(None);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.json_lines()[0]["violations"], serde_json::json!([]));
    // Resolved as written, or through the normalised image path.
    for image in ["nginx:1.25", "docker.io/library/nginx:1.25"] {
        let run = run_with_digest(Some(format!("{image}={digest}")));
        assert_eq!(run.code, Some(1), "{}", run.stderr);
        assert_eq!(violation_types(&run.json_lines()[0]), ["vulnerabilities"]);
    }
    // A malformed --digest is a usage error.
    for bad in ["no-equals-sign".to_owned(), "nginx:1.25=sha256:short".to_owned()] {
        let run = run_with_digest(Some(bad.clone()));
        assert_eq!(run.code, Some(2), "{bad}");
        assert_eq!(run.stdout, "");
        assert!(
            run.stderr.contains("--digest") || run.stderr.contains("IMAGE=DIGEST"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn verdicts_decide_signature_rules() {
    let dir = TempDir::new("verdicts");
    let policy = dir.write("policy.json", SCAN_POLICY);
    let pods = dir.write("pods.yaml", SCANNED_PODS);
    let run_verdicts = |verdicts: &str| {
        let file = dir.write("verdicts.json", verdicts);
        let run = portcullis(&[
            "eval",
            "--policy",
            &policy.display().to_string(),
            "--now",
            "2021-09-01T00:00:00Z",
            "--scan-results",
            &alpine_report(),
            "--digest",
            &format!("ghcr.io/aquasecurity/trivy-test-images:debian-buster={BUSTER_DIGEST}"),
            "--scan-results",
            &format!(
                "{BUSTER_DIGEST}={}",
                shared("conformance/trivy-reports/sl-micro-rancher5.4.json.golden").display()
            ),
            "--verdicts",
            &file.display().to_string(),
            &pods.display().to_string(),
        ]);
        run.assert_no_panic();
        run
    };
    // Keyed by digest: verified, nothing left unverified.
    let run = run_verdicts(&format!(r#"{{"{BUSTER_DIGEST}": {{"release": true}}}}"#));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines = run.json_lines();
    let buster = line_named(&lines, "buster");
    assert_eq!(buster["unverified"], serde_json::json!([]));
    assert_eq!(buster["violations"], serde_json::json!([]));

    // Keyed by the image as written, and refused: a blocking imageVerification violation.
    let run = run_verdicts(r#"{"ghcr.io/aquasecurity/trivy-test-images:debian-buster": {"release": false}}"#);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let lines = run.json_lines();
    lines.iter().for_each(assert_line_shape);
    let buster = line_named(&lines, "buster");
    assert_eq!(buster["decision"], "block");
    assert_eq!(violation_types(buster), ["imageVerification"]);
    assert_eq!(buster["violations"][0]["containers"], serde_json::json!(["b"]));

    // A verdict for another attestor leaves the rule unverified, without effect.
    let run = run_verdicts(&format!(r#"{{"{BUSTER_DIGEST}": {{"someone-else": true}}}}"#));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        line_named(&run.json_lines(), "buster")["unverified"][0]["attestors"],
        serde_json::json!(["release"])
    );

    // A verdicts file of the wrong shape is an error.
    let run = run_verdicts(r#"{"x": true}"#);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("--verdicts"), "{}", run.stderr);
}

#[test]
fn excluded_namespaces_and_trusted_images_are_allowed() {
    let dir = TempDir::new("exempt");
    let pods = dir.write(
        "pods.jsonl",
        [
            pod_json("sys", "kube-system", "registry.example.com/a:1", true),
            pod_json("trusted", "apps", "registry.example.com/platform/agent:3", true),
            pod_json("pinned", "apps", "registry.example.com/platform/agent@sha256:1111111111111111111111111111111111111111111111111111111111111111", true),
            pod_json("plain", "apps", "registry.example.com/a:1", true),
        ]
        .join("\n"),
    );
    let policy = example_policy();
    let shown = pods.display().to_string();
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--policy", &policy];
        args.extend_from_slice(extra);
        args.push(&shown);
        let run = portcullis(&args);
        run.assert_no_panic();
        run
    };
    // Offline evaluation excludes nothing unless told to.
    let run = eval(&[]);
    assert!(names_and_decisions(&run.json_lines()).iter().all(|(_, d)| d == "block"));

    let run = eval(&[
        "--exclude-namespace",
        "kube-system",
        "--trusted-image",
        "registry.example.com/platform/agent",
    ]);
    assert_eq!(run.code, Some(1));
    let lines = run.json_lines();
    lines.iter().for_each(assert_line_shape);
    assert_eq!(
        names_and_decisions(&lines),
        [
            ("sys", "allow"),
            ("trusted", "allow"),
            ("pinned", "allow"),
            ("plain", "block")
        ]
        .map(|(n, d)| (n.to_owned(), d.to_owned()))
    );
    assert_eq!(lines[0]["violations"], serde_json::json!([]));
    assert_eq!(lines[1]["violations"], serde_json::json!([]));

    // Pinned to a digest: only that digest is trusted.
    let run = eval(&[
        "--trusted-image",
        "registry.example.com/platform/agent@sha256:2222222222222222222222222222222222222222222222222222222222222222",
    ]);
    let decisions = names_and_decisions(&run.json_lines());
    assert_eq!(decisions[1], ("trusted".to_owned(), "block".to_owned()));
    assert_eq!(decisions[2], ("pinned".to_owned(), "block".to_owned()));

    // Never a prefix, and never a tag.
    let run = eval(&["--trusted-image", "registry.example.com/platform"]);
    assert!(names_and_decisions(&run.json_lines()).iter().all(|(_, d)| d == "block"));
    let run = eval(&["--trusted-image", "registry.example.com/platform/agent:3"]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("--trusted-image"), "{}", run.stderr);
}

#[test]
fn scan_results_errors_exit_2() {
    let dir = TempDir::new("scanerr");
    let not_json = dir.write("report.json", "this is not JSON");
    for arg in [
        not_json.display().to_string(),
        dir.path("absent.json").display().to_string(),
    ] {
        let run = portcullis(&["eval", "--policy", &example_policy(), "--scan-results", &arg, "-"]);
        run.assert_no_panic();
        assert_eq!(run.code, Some(2), "{arg}");
        assert!(run.stderr.contains("--scan-results"), "{}", run.stderr);
    }
}

#[test]
fn validate_good_and_bad_policies() {
    let dir = TempDir::new("validate");
    let good = example_policy();
    let bad = dir.write(
        "bad.yaml",
        "name: ok.name\ndefault:\n  rules:\n    - type: containerSecurityContext\n      action: block\n      \
         statement: {properties: [{key: capabilities-rule, value: some}]}\n    - type: vulnerabilities\n      \
         action: log\n      statement: {properties: [{key: max-severity, value: critical}]}\n\
         namespaced:\n  - name: n1\n    namespaces: [Not_A_Namespace]\n    rules: []\n",
    );
    let shown = bad.display().to_string();

    let run = portcullis(&["validate", &good]);
    run.assert_no_panic();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stderr, "");
    let lines = run.json_lines();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["valid"], true);
    assert_eq!(lines[0]["name"], "prod.strict");

    let run = portcullis(&["validate", &good, &shown]);
    run.assert_no_panic();
    assert_eq!(run.code, Some(2));
    let lines = run.json_lines();
    assert_eq!(lines.len(), 2, "one line per file");
    assert_eq!(lines[1]["valid"], false);
    let paths: Vec<&str> = lines[1]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "default.rules[0].statement.properties[0].value",
            "default.rules[1].statement.properties[0].value",
            "namespaced[0].namespaces[0]",
        ]
    );
    let err = run.stderr_lines();
    assert_eq!(err.len(), 3, "{}", run.stderr);
    for (line, path) in err.iter().zip(&paths) {
        assert!(line.starts_with(&format!("{shown}: {path}: ")), "{line}");
    }

    // Table output; an unreadable file; a syntax error names its field.
    let run = portcullis(&["validate", "-o", "table", &good]);
    assert_eq!(run.code, Some(0));
    assert!(run.stdout.contains("valid policy \"prod.strict\""), "{}", run.stdout);
    let run = portcullis(&["validate", &dir.path("absent.yaml").display().to_string()]);
    assert_eq!(run.code, Some(2));
    let typo = dir.write("typo.yaml", "name: x\ndefault:\n  rules: []\n  exception: []\n");
    let run = portcullis(&["validate", &typo.display().to_string()]);
    run.assert_no_panic();
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("exception"),
        "an unknown field is named: {}",
        run.stderr
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["eval"],
        vec!["eval", "--policy", "x.yaml"],
        vec!["eval", "--output", "xml", "--policy", "x", "-"],
        vec!["validate"],
        vec!["no-such-command"],
    ] {
        let run = portcullis(&args);
        run.assert_no_panic();
        assert_eq!(run.code, Some(2), "{args:?}");
        assert_eq!(run.stdout, "");
    }
}
