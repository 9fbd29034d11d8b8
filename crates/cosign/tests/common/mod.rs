//! Reading the shared conformance fixtures at test time (never copied into the repository).
#![allow(
    dead_code,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

/// `../shared/conformance/<path>` beside the repository, as the test kit's `shared` reads it;
/// found by walking up from the crate so that a git worktree elsewhere finds it too.
pub fn conformance_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|a| a.join("shared/conformance"))
        .find(|p| p.is_dir())
        .or_else(|| Some(PathBuf::from("/work/shared/conformance")).filter(|p| p.is_dir()))
        .expect("shared/conformance not found above the crate")
}

/// The bytes of a conformance file.
pub fn read(path: &str) -> Vec<u8> {
    let full = conformance_dir().join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap()
}

/// The image digest the tests' own signatures name.
pub const DIGEST: &str = "sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00";

/// A simple-signing payload for `digest` of type `kind`, as cosign writes it.
pub fn payload(digest: &str, kind: &str) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"registry.example/app"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"{kind}"}},"optional":null}}"#
    )
    .into_bytes()
}
