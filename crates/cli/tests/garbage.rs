//! Never a panic, whatever the input: garbage manifests and policies end with exit status 2
//! and a message, never with a panic or a signal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;

/// A small deterministic generator (xorshift64*), so a failure is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 32) as u8).collect()
    }
}

/// Evaluates `bytes` as a manifest named `name` and as standard input; both must exit 2
/// without a panic. Returns the file run's stderr.
fn eval_garbage(dir: &TempDir, name: &str, bytes: &[u8]) -> String {
    let file = dir.write(name, bytes);
    let run = portcullis(&["eval", "--policy", &example_policy(), &file.display().to_string()]);
    run.assert_no_panic();
    assert_eq!(
        run.code,
        Some(2),
        "{name}: stdout {:?} stderr {:?}",
        run.stdout,
        run.stderr
    );
    assert!(!run.stderr.is_empty(), "{name}: an error is reported");
    run.stderr
}

fn eval_garbage_stdin(bytes: Vec<u8>) {
    let run = portcullis_stdin(&["eval", "--policy", &example_policy(), "-"], bytes);
    run.assert_no_panic();
    assert_eq!(run.code, Some(2), "stderr {:?}", run.stderr);
}

const EXTENSIONS: [&str; 4] = ["yaml", "json", "jsonl", "txt"];

#[test]
fn random_bytes_in_every_format() {
    let dir = TempDir::new("random");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..6 {
        // Starting with a non-ASCII byte makes it neither YAML nor JSON.
        let len = 1 + (rng.next() % 50_000) as usize;
        let mut bytes = rng.bytes(len);
        bytes[0] = 0xff;
        for ext in EXTENSIONS {
            eval_garbage(&dir, &format!("random-{round}.{ext}"), &bytes);
        }
        eval_garbage_stdin(bytes);
    }
}

#[test]
fn truncated_json_and_yaml_documents() {
    let dir = TempDir::new("truncated");
    let review = std::fs::read_to_string(repo("examples/reviews.jsonl")).unwrap();
    let first = review.lines().next().unwrap();
    let yaml = std::fs::read_to_string(repo("examples/manifests.yaml")).unwrap();
    let cuts = [
        1,
        2,
        10,
        37,
        first.len() / 3,
        first.len() / 2,
        first.len() - 2,
        first.len() - 1,
    ];
    for cut in cuts {
        let text = &first.as_bytes()[..cut];
        eval_garbage(&dir, &format!("cut-{cut}.json"), text);
        eval_garbage(&dir, &format!("cut-{cut}.jsonl"), text);
        eval_garbage_stdin(text.to_vec());
    }
    // YAML cut inside a flow mapping or a quoted string.
    for cut in [
        yaml.find("{matchLabels").unwrap() + 5,
        yaml.find("capabilities").unwrap() + 18,
    ] {
        eval_garbage(&dir, &format!("cut-{cut}.yaml"), &yaml.as_bytes()[..cut]);
    }
    eval_garbage(&dir, "quote.yaml", b"kind: \"Pod\nmetadata: {name: x}\n");
}

#[test]
fn deeply_nested_documents() {
    let dir = TempDir::new("deep");
    let depth = 100_000;
    let open = "[".repeat(depth);
    let closed = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
    let in_spec = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"x"}},"spec":{{"containers":{}}}}}"#,
        closed
    );
    let lists = format!(
        "{}{}",
        r#"{"apiVersion":"v1","kind":"List","items":["#.repeat(depth),
        "]}".repeat(depth)
    );
    for (name, text) in [
        ("open", &open),
        ("closed", &closed),
        ("objects", &objects),
        ("in-spec", &in_spec),
        ("lists", &lists),
    ] {
        for ext in EXTENSIONS {
            eval_garbage(&dir, &format!("{name}.{ext}"), text.as_bytes());
        }
    }
    // YAML's own nesting: block sequences and flow mappings.
    eval_garbage(&dir, "seq.yaml", format!("{}x\n", "- ".repeat(depth)).as_bytes());
    eval_garbage(&dir, "flow.yaml", format!("a: {}\n", "{b: ".repeat(depth)).as_bytes());
    let mut indented = String::from("a:\n");
    for i in 1..3_000 {
        indented.push_str(&" ".repeat(i));
        indented.push_str("-\n");
    }
    eval_garbage(&dir, "indented.yaml", indented.as_bytes());
    eval_garbage_stdin(open.into_bytes());
}

#[test]
fn yaml_alias_bomb_is_refused() {
    let dir = TempDir::new("laughs");
    let mut text = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let (prev, next) = (pair[0], pair[1]);
        text.push_str(&format!(
            "{next}: &{next} [{}]\n",
            vec![format!("*{prev}"); 9].join(",")
        ));
    }
    text.push_str("kind: Pod\n");
    eval_garbage(&dir, "laughs.yaml", text.as_bytes());
    eval_garbage_stdin(text.into_bytes());
}

#[test]
fn non_utf8_documents() {
    let dir = TempDir::new("utf8");
    eval_garbage(&dir, "bom.json", b"\xff\xfe{\"kind\":\"Pod\"}\n");
    eval_garbage(
        &dir,
        "name.jsonl",
        b"{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"\xc3\x28\"}}\n",
    );
    eval_garbage(
        &dir,
        "name.json",
        b"{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"\xed\xa0\x80\"}}",
    );
    eval_garbage(
        &dir,
        "name.yaml",
        b"apiVersion: v1\nkind: Pod\nmetadata: {name: \"\xff\"}\n",
    );
    // A lone surrogate escape is valid JSON syntax but not a valid string.
    eval_garbage(
        &dir,
        "surrogate.jsonl",
        b"{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"\\ud800\"}}\n",
    );
    eval_garbage_stdin(b"kind: Pod\nmetadata: {name: \"\xc0\xaf\"}\n".to_vec());
}

#[test]
fn huge_strings_are_read_or_refused_without_a_panic() {
    let dir = TempDir::new("huge");
    let big = "x".repeat(8 << 20);
    // Valid: a pod with an 8 MB name and an 8 MB image reference is evaluated.
    let pod = pod_json(&big, "ns", &format!("registry.example.com/{big}:1"), true);
    let file = dir.write("huge.jsonl", format!("{pod}\n"));
    let run = portcullis(&["eval", "--policy", &example_policy(), &file.display().to_string()]);
    run.assert_no_panic();
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(run.json_lines().len(), 1);
    // Invalid: an 8 MB unterminated string, an 8 MB number, an 8 MB YAML key.
    eval_garbage(&dir, "unterminated.json", format!("{{\"kind\":\"{big}").as_bytes());
    eval_garbage(
        &dir,
        "number.jsonl",
        format!("{{\"kind\":{}}}\n", "9".repeat(8 << 20)).as_bytes(),
    );
    eval_garbage(&dir, "key.yaml", format!("{big}: [\n").as_bytes());
    eval_garbage(
        &dir,
        "kind.yaml",
        format!("apiVersion: v1\nkind: {{{big}: 1}}\n").as_bytes(),
    );
}

#[test]
fn structured_but_wrong_documents() {
    let dir = TempDir::new("wrong");
    let cases = [
        "null",
        "42",
        "\"text\"",
        "[]",
        "{}",
        r#"{"kind":7}"#,
        r#"{"kind":"Pod","apiVersion":"v1","spec":"none"}"#,
        r#"{"kind":"Pod","apiVersion":"v1","spec":{"containers":[{"image":7}]}}"#,
        r#"{"kind":"Pod","apiVersion":"v1","spec":{"containers":[{"securityContext":{"capabilities":{"add":"ALL"}}}]}}"#,
        r#"{"kind":"Deployment","apiVersion":"apps/v1","spec":{"template":"x"}}"#,
        r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"operation":"CREATE"}}"#,
        r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"operation":"PATCH","kind":{"group":"","version":"v1","kind":"Pod"}}}"#,
        r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"operation":"CREATE","kind":{"group":"","version":"v1","kind":"Pod"}}}"#,
        r#"{"kind":"AdmissionReview","apiVersion":"v9","request":{}}"#,
        r#"{"uid":"u","kind":{"group":"","kind":"Pod"},"operation":"UPDATE","object":{"spec":{}},"oldObject":"x"}"#,
        r#"{"kind":"List","items":[{"kind":"Pod","spec":{"hostPID":"yes"}}]}"#,
        r#"{"kind":"List","items":{}}"#,
    ];
    for (i, case) in cases.iter().enumerate() {
        let stderr = eval_garbage(&dir, &format!("wrong-{i}.jsonl"), format!("{case}\n").as_bytes());
        assert!(stderr.contains(".jsonl:1: "), "FILE:1: prefix for {case}: {stderr}");
    }
}

#[test]
fn garbage_policies_exit_2() {
    let dir = TempDir::new("badpolicy");
    let mut rng = Rng(42);
    let manifests = repo("examples/manifests.yaml").display().to_string();
    let mut policies: Vec<(String, Vec<u8>)> = vec![
        ("random.yaml".to_owned(), {
            let mut b = rng.bytes(4096);
            b[0] = 0xff;
            b
        }),
        ("empty.yaml".to_owned(), Vec::new()),
        ("deep.json".to_owned(), "[".repeat(100_000).into_bytes()),
        // YAML flow nesting after a key costs the YAML parser time quadratic in the depth
        // (100,000 levels take minutes; reported), so this one stays at 2,000 levels.
        (
            "deep.yaml".to_owned(),
            format!("name: x\ndefault: {}\n", "{rules: ".repeat(2_000)).into_bytes(),
        ),
        ("list.yaml".to_owned(), b"- name: x\n".to_vec()),
        (
            "truncated.json".to_owned(),
            br#"{"name":"x","default":{"rules":[{"type":"podSecurityContext""#.to_vec(),
        ),
        (
            "huge-name.yaml".to_owned(),
            format!("name: {}\ndefault: {{rules: []}}\n", "n".repeat(1 << 20)).into_bytes(),
        ),
    ];
    // The example policy cut inside a comment, a flow mapping, a key and an enum value.
    let example = std::fs::read_to_string(repo("examples/policy.yaml")).unwrap();
    let find = |s: &str| example.find(s).unwrap();
    for cut in [
        10,
        find("hostNetwork") + 4,
        find("mitigation") + 3,
        find("action: block") + 10,
    ] {
        policies.push((format!("cut-{cut}.yaml"), example.as_bytes()[..cut].to_vec()));
    }
    for (name, bytes) in policies {
        let policy = dir.write(&name, &bytes);
        let run = portcullis(&["eval", "--policy", &policy.display().to_string(), &manifests]);
        run.assert_no_panic();
        assert_eq!(run.code, Some(2), "{name}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{name}");
        let run = portcullis(&["validate", &policy.display().to_string()]);
        run.assert_no_panic();
        assert_eq!(run.code, Some(2), "{name}: {}", run.stderr);
    }
}
