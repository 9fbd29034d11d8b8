//! Fuzz target: `parse_document` on arbitrary bytes, then every subject evaluated for
//! admission and continuous scanning by a policy that enables every rule type
//! (`broad-policy.json`), offline and with scan results, digests, verdicts, exclusions,
//! trusted images and fail-closed. Nothing may panic; a fail-open block must come from a
//! blocking violation; the engine's JSON reader accepts exactly the JSON serde_json accepts,
//! and the fast and the reference parses give the same result; the same policy without its
//! Pod Security Standards rules decides the same on the core parse (pod details skipped) as
//! on the full one.

#![no_main]

use std::collections::HashMap;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use portcullis_engine::evaluate::{
    CompiledPolicy, DigestMap, EvalContext, FailureMode, Signatures, TrustedImage, Verdict, VerdictMap,
};
use portcullis_engine::input::parse_document;
use portcullis_engine::input::parse_document_reference;
use portcullis_engine::k8s::Fields;
use portcullis_engine::policy::Action;
use portcullis_engine::scan::{MemoryScanStore, ScanResult};
use time::OffsetDateTime;

const DIGEST_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const DIGEST_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

struct World {
    policy: CompiledPolicy,
    /// `policy` without its podSecurityStandard rules: reads the core fields only.
    core_policy: CompiledPolicy,
    now: OffsetDateTime,
    scans: MemoryScanStore,
    digests: DigestMap,
    verdicts: VerdictMap,
    excluded: Vec<String>,
    trusted: Vec<TrustedImage>,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let policy = match CompiledPolicy::from_text(include_str!("../broad-policy.json")) {
        Ok(p) => p,
        Err(e) => panic!("broad-policy.json is invalid: {e}"),
    };
    let core_policy = {
        let mut doc: serde_json::Value = match serde_json::from_str(include_str!("../broad-policy.json")) {
            Ok(v) => v,
            Err(e) => panic!("broad-policy.json: {e}"),
        };
        let without_pss = |def: &mut serde_json::Value| {
            if let Some(rules) = def["rules"].as_array_mut() {
                rules.retain(|r| r["type"] != "podSecurityStandard");
            }
        };
        without_pss(&mut doc["default"]);
        for def in doc["namespaced"].as_array_mut().into_iter().flatten() {
            without_pss(def);
        }
        match CompiledPolicy::from_text(&doc.to_string()) {
            Ok(p) if p.fields() == Fields::CORE => p,
            Ok(_) => panic!("the core policy still reads the pod details"),
            Err(e) => panic!("core policy: {e}"),
        }
    };
    let mut scans = MemoryScanStore::new();
    for json in [
        format!(
            r#"{{"digest":"{DIGEST_A}","scanType":"vulnerability","scannedAt":"2025-05-30T00:00:00Z","scanner":"trivy",
                "findings":[{{"id":"CVE-1","severity":"critical","cvssV3Vector":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}},
                            {{"id":"CVE-2","severity":"low","cvssV3Vector":"CVSS:3.0/AV:L/AC:H/PR:L/UI:R/S:C/C:L/I:N/A:L"}}]}}"#
        ),
        format!(
            r#"{{"digest":"{DIGEST_A}","scanType":"malware","scannedAt":"2025-01-01T00:00:00Z","scanner":"x","findings":[{{"id":"EICAR","severity":"high"}}]}}"#
        ),
        format!(
            r#"{{"digest":"{DIGEST_B}","scanType":"secret","scannedAt":"2020-01-01T00:00:00Z","scanner":"trivy"}}"#
        ),
    ] {
        if let Ok(r) = ScanResult::parse_native(json.as_bytes()) {
            scans.insert(&r);
        }
    }
    let digests = DigestMap(HashMap::from([
        ("nginx".to_owned(), DIGEST_A.to_owned()),
        ("docker.io/library/nginx:latest".to_owned(), DIGEST_A.to_owned()),
        ("registry.example.com/team/app:1".to_owned(), DIGEST_B.to_owned()),
    ]));
    let verdicts = VerdictMap(HashMap::from([
        (
            DIGEST_A.to_owned(),
            HashMap::from([("release-signer".to_owned(), true), ("qa-signer".to_owned(), false)]),
        ),
        ("busybox".to_owned(), HashMap::from([("qa-signer".to_owned(), true)])),
    ]));
    World {
        policy,
        core_policy,
        // 2025-06-01T12:00:00Z
        now: OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_748_779_200),
        scans,
        digests,
        verdicts,
        excluded: vec!["kube-system".to_owned()],
        trusted: [
            "registry.example.com/platform/agent",
            &format!("docker.io/library/busybox@{DIGEST_B}"),
        ]
        .iter()
        .filter_map(|t| TrustedImage::parse(t).ok())
        .collect(),
    }
});

fuzz_target!(|data: &[u8]| {
    // The engine's JSON reader judges validity as serde_json does...
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(
            portcullis_json::is_valid(text),
            serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok(),
            "validity of {text:?}"
        );
    }
    let parsed = parse_document(data);
    // ...and the fast path (that reader, serde_json for what it refuses) and the reference
    // (serde_json alone) agree on every input.
    assert_eq!(parsed, parse_document_reference(data));
    let Ok(subjects) = parsed else { return };
    let w = &*WORLD;

    let rich = |failure_mode| EvalContext {
        now: w.now,
        scans: &w.scans,
        digests: &w.digests,
        signatures: Signatures::Stage(&w.verdicts),
        excluded_namespaces: &w.excluded,
        trusted_images: &w.trusted,
        failure_mode,
    };
    // The core parse reads a subset: whatever the full parse reads, it reads too, and the
    // rules that need no pod details decide the same on it.
    let core = match w.core_policy.parse_document(data) {
        Ok(core) => core,
        Err(e) => panic!("the full parse succeeded, the core one failed: {e}"),
    };
    assert_eq!(core.len(), subjects.len());
    for (c, full) in core.iter().zip(&subjects) {
        for ctx in [
            EvalContext::offline(w.now),
            rich(FailureMode::FailOpen),
            rich(FailureMode::FailClosed),
        ] {
            assert_eq!(w.core_policy.evaluate(c, &ctx), w.core_policy.evaluate(full, &ctx));
        }
    }
    for subject in &subjects {
        for ctx in [
            EvalContext::offline(w.now),
            rich(FailureMode::FailOpen),
            rich(FailureMode::FailClosed),
        ] {
            let decision = w.policy.evaluate(subject, &ctx);
            if ctx.failure_mode == FailureMode::FailOpen {
                let blocking = decision.violations.iter().any(|v| v.action == Action::Block);
                assert_eq!(decision.verdict == Verdict::Block, blocking, "{decision:?}");
            }
            let _ = decision.status_message();
            let _ = w.policy.evaluate_running(subject, &ctx);
        }
    }
});
