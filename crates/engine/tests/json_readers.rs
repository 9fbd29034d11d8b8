//! The engine reads JSON with its own reader (fast; `portcullis-json`, `crates/json`) and falls back
//! to serde_json (the reference) whenever that reader refuses a document. The two must never
//! disagree: on every real and
//! generated document, on hand-written edge cases of the JSON grammar, and on random
//! corruptions of a real review, `parse_document` gives exactly what the serde_json-only
//! `parse_document_reference` gives (the same subjects, or the same error).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;
use portcullis_corpus as corpus;

use common::{files_with_extension, shared};
use portcullis_engine::input::{fast_reader_reads, parse_document, parse_document_reference};
use proptest::prelude::*;

const REVIEW_8K: &str = include_str!("../benches/data/review-8k.json");

/// Both readers on one document: they agree; returns whether the document parsed.
fn assert_same(json: &[u8]) -> bool {
    let fast = parse_document(json);
    let reference = parse_document_reference(json);
    assert_eq!(
        fast,
        reference,
        "the readers disagree on {:?}",
        String::from_utf8_lossy(json)
    );
    fast.is_ok()
}

/// The 8 KB review as the API server sends it (compact).
fn compact_review() -> String {
    serde_json::from_str::<serde_json::Value>(REVIEW_8K)
        .unwrap()
        .to_string()
}

#[test]
fn readers_agree_on_real_admission_reviews() {
    let files = files_with_extension(&shared("admission-reviews"), "json");
    assert!(files.len() >= 50, "expected the real reviews, found {}", files.len());
    let mut parsed = 0;
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        parsed += usize::from(assert_same(&bytes));
        // Compact, as the API server sends it.
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            assert_same(value.to_string().as_bytes());
        }
    }
    assert!(parsed >= 50, "only {parsed} of {} files parsed", files.len());
}

/// The engine's reader reads real documents itself: a refusal would fall back to serde_json
/// with the same result, so no other test would notice the lost speed.
#[test]
fn the_fast_reader_reads_real_reviews_itself() {
    assert!(fast_reader_reads(REVIEW_8K));
    assert!(fast_reader_reads(&compact_review()));
    for line in include_str!("../../../examples/reviews.jsonl").lines() {
        assert!(fast_reader_reads(line), "{line}");
    }
    let files = files_with_extension(&shared("admission-reviews"), "json");
    assert!(files.len() >= 50, "expected the real reviews, found {}", files.len());
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(fast_reader_reads(&text), "{}", path.display());
    }
}

#[test]
fn readers_agree_on_pod_security_admission_fixtures() {
    let files = files_with_extension(&shared("pod-security-admission"), "yaml");
    assert!(files.len() >= 100, "expected the PSA fixtures, found {}", files.len());
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let value: serde_json::Value = yaml_serde::from_str(&text).unwrap();
        assert!(assert_same(value.to_string().as_bytes()), "{}", path.display());
        assert!(assert_same(serde_json::to_string_pretty(&value).unwrap().as_bytes()));
    }
}

#[test]
fn readers_agree_on_the_benchmark_corpus() {
    assert!(assert_same(compact_review().as_bytes()));
    assert!(assert_same(REVIEW_8K.as_bytes()));
    for generated in corpus::corpus(400) {
        assert!(assert_same(generated.json.as_bytes()));
    }
}

#[test]
fn readers_agree_on_edge_cases_of_the_grammar() {
    let pod = |spec: &str| format!(r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p"}},"spec":{spec}}}"#);
    let container = |field: &str| pod(&format!(r#"{{"containers":[{{"name":"c","image":"nginx"{field}}}]}}"#));
    let cases: Vec<String> = vec![
        // Whole documents.
        String::new(),
        " ".into(),
        "null".into(),
        "[]".into(),
        "{}".into(),
        "\u{feff}{}".into(),
        pod("{}"),
        format!("{} ", pod("{}")),
        format!("\n\t {}\r\n", pod("{}")),
        format!("{} x", pod("{}")),
        format!("{}{{}}", pod("{}")),
        format!("{},", pod("{}")),
        pod("{}").replacen('}', "", 1),
        pod("{}")[..20].to_owned(),
        // Strings: escapes, unicode, control characters, surrogates.
        container(r#","securityContext":{"procMount":"Unmasked\n"}"#),
        container(r#","securityContext":{"procMount":"\u0055nmasked"}"#),
        container(r#","securityContext":{"procMount":"\ud83d\ude00"}"#),
        container(r#","securityContext":{"procMount":"\ud83d"}"#),
        container(r#","securityContext":{"procMount":"\ude00x"}"#),
        container(r#","securityContext":{"procMount":"\x"}"#),
        container(r#","securityContext":{"procMount":"\u12"}"#),
        container(",\"securityContext\":{\"procMount\":\"tab\there\"}"),
        container(",\"securityContext\":{\"procMount\":\"raw\u{1}control\"}"),
        container(",\"securityContext\":{\"procMount\":\"del\u{7f}\"}"),
        container(r#","securityContext":{"procMount":"é€😀"}"#),
        pod(r#"{"containers":[{"name":"c","image":"nginx"}],"hostNetwork":true,"\u0068ostPID":true}"#),
        pod(r#"{"containers":[{"na\"me":"c","image":"nginx"}]}"#),
        // The same in strings the engine skips (`args`, `env`, annotations).
        container(r#","args":["\uZZZZ"]"#),
        container(r#","args":["\u12G4"]"#),
        container(r#","args":["\u12"]"#),
        container(r#","args":["\\uZZ"]"#),
        container(r#","args":["\ud800"]"#),
        container(r#","args":["\q"]"#),
        container(r#","args":["\"]"#),
        container(",\"args\":[\"raw\u{1}control\"]"),
        container(",\"args\":[\"tab\there\"]"),
        container(r#","args":[tru]"#),
        container(r#","args":[nul]"#),
        container(r#","args":[01]"#),
        container(r#","args":[1.]"#),
        container(r#","args":[-]"#),
        container(r#","args":[1e]"#),
        container(r#","args":[1e+]"#),
        container(r#","args":[.5]"#),
        container(r#","args":[+1]"#),
        container(r#","args":[1,,2]"#),
        container(r#","args":[1 2]"#),
        container(r#","args":{"a" 1}"#),
        container(r#","args":{"a":1,}"#),
        container(r#","args":{1:1}"#),
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","annotations":{"x":"\uZZZZ"}},"spec":{}}"#.into(),
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","managedFields":[{"a":"\u00e9\uD83D\uDE00"}]},"spec":{}}"#.into(),
        // Keys: duplicates, unknown, escaped, empty.
        container(r#","image":"busybox""#),
        pod(r#"{"hostNetwork":true,"hostNetwork":false,"containers":[]}"#),
        pod(r#"{"":1,"containers":[]}"#),
        // Literals and numbers where the engine reads a bool, an integer or a string.
        pod(r#"{"hostNetwork":null,"hostPID":false,"hostIPC":true}"#),
        pod(r#"{"hostNetwork":"true"}"#),
        pod(r#"{"hostNetwork":1}"#),
        pod(r#"{"hostNetwork":tru}"#),
        pod(r#"{"hostNetwork":True}"#),
        container(r#","securityContext":{"runAsUser":0}"#),
        container(r#","securityContext":{"runAsUser":-1}"#),
        container(r#","securityContext":{"runAsUser":1.0}"#),
        container(r#","securityContext":{"runAsUser":1e3}"#),
        container(r#","securityContext":{"runAsUser":01}"#),
        container(r#","securityContext":{"runAsUser":-0}"#),
        container(r#","securityContext":{"runAsUser":9223372036854775807}"#),
        container(r#","securityContext":{"runAsUser":9223372036854775808}"#),
        container(r#","securityContext":{"runAsUser":-9223372036854775809}"#),
        container(r#","securityContext":{"runAsUser":"1000"}"#),
        container(r#","ports":[{"hostPort":80.5}]"#),
        container(r#","ports":[{"hostPort":80}],"resources":{"limits":{"cpu":1.5e-3,"memory":12345678901234567890123}}"#),
        container(r#","env":[{"name":"N","value":-}]"#),
        container(r#","env":[{"name":"N","value":.5}]"#),
        container(r#","env":[{"name":"N","value":1.}]"#),
        container(r#","env":[{"name":"N","value":NaN}]"#),
        // Wrong shapes.
        pod(r#"{"containers":{}}"#),
        pod(r#"{"containers":"c"}"#),
        pod(r#"{"containers":[null]}"#),
        pod(r#"{"containers":[[]]}"#),
        pod(r#"[]"#),
        pod(r#"{"securityContext":[]}"#),
        container(r#","securityContext":{"capabilities":{"add":["NET_RAW",null]}}"#),
        container(r#","securityContext":{"capabilities":{"add":"NET_RAW"}}"#),
        pod(r#"{"containers":[],"volumes":[{"name":"v","hostPath":{"path":"/"}},{"name":"w","emptyDir":null}]}"#),
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"a":"b","a":"c"},"annotations":{"container.apparmor.security.beta.kubernetes.io/c":"unconfined","x":1}},"spec":{}}"#.into(),
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"a":1}},"spec":{}}"#.into(),
        // Trailing commas and comments are not JSON.
        pod(r#"{"containers":[],}"#),
        pod(r#"{"containers":[1,]}"#),
        format!("// c\n{}", pod("{}")),
        // Nesting: deep arrays in a skipped field, and past the recursion limits.
        container(&format!(r#","args":{}{}"#, "[".repeat(100), "]".repeat(100))),
        container(&format!(r#","args":{}{}"#, "[".repeat(200), "]".repeat(200))),
        container(&format!(r#","args":{}{}"#, "[".repeat(5000), "]".repeat(5000))),
        container(&format!(r#","args":{}"#, "[".repeat(300))),
        // Deep nesting, in arrays and objects (the reader's stack is on the heap, and a
        // skipped value of any depth costs one step).
        container(&format!(r#","args":{}1{}"#, "[".repeat(1010), "]".repeat(1010))),
        container(&format!(r#","args":{}1{}"#, "{\"a\":".repeat(1010), "}".repeat(1010))),
        container(&format!(r#","args":{}1{}"#, "[".repeat(1030), "]".repeat(1030))),
        container(&format!(r#","args":{}1{}"#, "[".repeat(200_000), "]".repeat(200_000))),
        container(&format!(r#","args":{}1{}"#, "{\"a\":".repeat(200_000), "}".repeat(200_000))),
        // Lists, plain and nested, and reviews.
        format!(r#"{{"apiVersion":"v1","kind":"List","items":[{},{}]}}"#, pod("{}"), container("")),
        format!(r#"{{"apiVersion":"v1","kind":"List","items":[{{"kind":"PodList","items":[{}]}}]}}"#, pod("{}")),
        r#"{"apiVersion":"v1","kind":"List","items":null}"#.into(),
        r#"{"apiVersion":"v1","kind":"List","items":[1]}"#.into(),
        format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","kind":{{"group":"","version":"v1","kind":"Pod"}},"resource":{{"group":"","version":"v1","resource":"pods"}},"operation":"UPDATE","object":{},"oldObject":{}}}}}"#,
            container(""),
            container(r#","securityContext":{"privileged":true}"#)
        ),
        r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"DELETE","object":null}}"#.into(),
    ];
    let mut accepted = 0;
    for case in &cases {
        accepted += usize::from(assert_same(case.as_bytes()));
    }
    // Both outcomes are exercised.
    assert!(
        accepted > 10 && accepted < cases.len() - 10,
        "{accepted} of {} accepted",
        cases.len()
    );
    // Invalid UTF-8, inside a string and in structure.
    let mut bytes = container(r#","securityContext":{"procMount":"XX"}"#).into_bytes();
    let at = bytes.iter().position(|&b| b == b'X').unwrap();
    bytes[at] = 0xff;
    assert_same(&bytes);
    bytes[at] = 0xc3;
    assert_same(&bytes);
}

/// One random corruption of a document: bytes replaced, removed or inserted, with a bias
/// towards JSON's structural characters so that most corruptions are still near-JSON.
#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, u8),
    Remove(usize, usize),
    Insert(usize, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop_oneof![
        proptest::sample::select(b"{}[]\",:\\ 0-.etnulfa\x01\x7f".to_vec()),
        any::<u8>(),
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(at, b)| Edit::Replace(at, b)),
        (any::<usize>(), 1usize..40).prop_map(|(at, n)| Edit::Remove(at, n)),
        (any::<usize>(), byte).prop_map(|(at, b)| Edit::Insert(at, b)),
    ]
}

fn apply(doc: &mut Vec<u8>, edit: &Edit) {
    let len = doc.len().max(1);
    match *edit {
        Edit::Replace(at, b) => {
            let at = at % len;
            if let Some(slot) = doc.get_mut(at) {
                *slot = b;
            }
        }
        Edit::Remove(at, n) => {
            let at = at % len;
            let end = (at + n).min(doc.len());
            doc.drain(at.min(end)..end);
        }
        Edit::Insert(at, b) => doc.insert(at % (doc.len() + 1), b),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn readers_agree_on_corrupted_reviews(edits in proptest::collection::vec(edit(), 1..4), pick in 0u64..64) {
        let mut doc = if pick == 0 { compact_review() } else { corpus::review(pick).json }.into_bytes();
        for e in &edits {
            apply(&mut doc, e);
        }
        assert_same(&doc);
    }
}

/// A document that is not UTF-8 is refused wherever the bad bytes are: in a field that is
/// read, in one that is skipped (an unknown key, labels, a pod detail the core parse skips),
/// and in a key. The admission service relies on it (it names the byte only after a refusal).
#[test]
fn invalid_utf8_is_refused_wherever_it_is() {
    use portcullis_engine::input::parse_document_with;
    use portcullis_engine::k8s::Fields;
    let places = [
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"X"},"spec":{"containers":[]}}"#,
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","labels":{"l":"X"}},"spec":{"containers":[]}}"#,
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"containers":[{"name":"c","unknown":"X"}]}}"#,
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"containers":[{"name":"c","livenessProbe":{"exec":{"command":["X"]}}}]}}"#,
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"X":1,"containers":[]}}"#,
    ];
    for place in places {
        assert!(parse_document(place.replace('X', "x").as_bytes()).is_ok(), "{place}");
        for bad in [&[0xff_u8][..], &[0xc3], &[0xed, 0xa0, 0x80], &[0xf4, 0x90, 0x80, 0x80]] {
            let mut bytes = Vec::new();
            let (before, after) = place.split_once('X').unwrap();
            bytes.extend_from_slice(before.as_bytes());
            bytes.extend_from_slice(bad);
            bytes.extend_from_slice(after.as_bytes());
            assert!(parse_document(&bytes).is_err(), "accepted {bad:?} in {place}");
            assert!(parse_document_reference(&bytes).is_err(), "accepted {bad:?} in {place}");
            assert!(
                parse_document_with(&bytes, Fields::CORE).is_err(),
                "accepted {bad:?} in {place}"
            );
        }
    }
}
