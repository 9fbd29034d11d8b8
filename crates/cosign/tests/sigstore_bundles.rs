//! The sigstore-conformance bundle cases (../shared/conformance/sigstore-bundles): every
//! in-scope case must match its expected outcome; a table of case → outcome is printed.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use portcullis_cosign::{Attestor, PublicKey, TrustedRoot, Verdict, verify_bundle};

const DEFAULT_IDENTITY: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const DEFAULT_ISSUER: &str = "https://token.actions.githubusercontent.com";

/// Happy in-scope cases this verifier refuses as unsupported (fail closed, with an
/// "unsupported" reason): Rekor v2 entries and RFC 3161 timestamps are not verified yet. A
/// listed case that passes is a mismatch too, so that this list stays true.
const UNSUPPORTED: &[&str] = &[
    // A Rekor v2 entry (hashedrekord 0.0.2) dated by an RFC 3161 timestamp: in scope by its
    // name, beyond it by its content.
    "bundle-with-sct-with-extensions",
];

fn in_scope(name: &str) -> bool {
    !name.starts_with("rekor2-") && !name.contains("tsa") && name != "trust-root-tsa-validity-end-inclusive"
}

fn text(path: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

fn run(dir: &std::path::Path) -> Verdict {
    let base = dir.parent().unwrap();
    let artifact = std::fs::read(dir.join("artifact")).unwrap_or_else(|_| std::fs::read(base.join("a.txt")).unwrap());
    let root_json = std::fs::read(dir.join("trusted_root.json"))
        .unwrap_or_else(|_| std::fs::read(base.join("trusted_root.production.json")).unwrap());
    let bundle = std::fs::read(dir.join("bundle.sigstore.json")).unwrap();
    let attestor = match text(&dir.join("key.pub")) {
        Some(pem) => match (PublicKey::from_pem(&pem), TrustedRoot::from_json(&root_json)) {
            (Ok(key), Ok(root)) => Attestor::PublicKey {
                key,
                transparency_log: Some(root),
            },
            (Err(e), _) | (_, Err(e)) => return Verdict::from_result(Err(e)),
        },
        None => {
            let identity = text(&dir.join("identity")).unwrap_or_else(|| DEFAULT_IDENTITY.to_owned());
            let issuer = text(&dir.join("issuer")).unwrap_or_else(|| DEFAULT_ISSUER.to_owned());
            match Attestor::keyless(&issuer, Some(&identity), None, &root_json) {
                Ok(a) => a,
                Err(e) => return Verdict::from_result(Err(e)),
            }
        }
    };
    verify_bundle(&bundle, &artifact, &attestor, common::now())
}

#[test]
fn sigstore_conformance_bundles() {
    let root = common::conformance_dir().join("sigstore-bundles");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("bundle.sigstore.json").exists())
        .collect();
    cases.sort();
    let mut mismatches = Vec::new();
    let mut matched = 0;
    println!("{:<62} {:<9} {:<12} reason", "case", "scope", "outcome");
    for dir in &cases {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let should_pass = !name.ends_with("_fail");
        let verdict = run(dir);
        let scope = if in_scope(&name) { "in" } else { "beyond" };
        let refused_unsupported = should_pass && !verdict.verified() && verdict.reason().starts_with("unsupported");
        let outcome = match (verdict.verified(), should_pass) {
            (true, true) => "ok",
            // Refused, but only because something is not verified yet: fail closed.
            (false, false) if verdict.reason().starts_with("unsupported") => "ok*",
            (false, false) => "ok",
            _ if refused_unsupported => "unsupported",
            (true, false) => "PASSED-BAD",
            (false, true) => "REFUSED",
        };
        let reason: String = verdict.reason().chars().take(140).collect();
        println!("{name:<62} {scope:<9} {outcome:<12} {reason}");
        // A `_fail` case must never pass, in scope or beyond it.
        if verdict.verified() && !should_pass {
            mismatches.push(format!("{name}: passed, must fail"));
        } else if in_scope(&name) && verdict.verified() && UNSUPPORTED.contains(&name.as_str()) {
            mismatches.push(format!("{name}: listed as unsupported but passes"));
        } else if in_scope(&name) && outcome == "unsupported" && !UNSUPPORTED.contains(&name.as_str()) {
            mismatches.push(format!(
                "{name}: refused as unsupported, not listed: {}",
                verdict.reason()
            ));
        } else if in_scope(&name) && !matches!(outcome, "ok" | "ok*" | "unsupported") {
            mismatches.push(format!("{name}: {outcome}: {}", verdict.reason()));
        } else if matches!(outcome, "ok" | "ok*") && in_scope(&name) {
            matched += 1;
        }
    }
    println!("{matched} in-scope cases match (ok*: a _fail case refused as unsupported); unsupported: {UNSUPPORTED:?}");
    assert!(mismatches.is_empty(), "mismatches:\n{}", mismatches.join("\n"));
}
