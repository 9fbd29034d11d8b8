//! Cross-check with an independent signer: `../shared/tools/cosign/cosign_oci.py` (Python,
//! cosign's key-based format) signs an image in the test registry, and the client must find its
//! `sha256-<hex>.sig` manifest and layers as cosign lays them out.
//!
//! Python with `cryptography` comes from `$PORTCULLIS_COSIGN_PYTHON`, else the workspace's
//! `.venv-cosign` (`./test.sh` makes it: `python3 -m venv .venv-cosign &&
//! .venv-cosign/bin/pip install cryptography pynacl`). Without either the test says so and
//! passes without checking, except under CI (`CI` set), where it fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use common::{client, push_image, reference};
use portcullis_oci::manifest::{COSIGN_SIGNATURE_ANNOTATION, COSIGN_SIMPLE_SIGNING};
use portcullis_test_kit::Registry;

fn python() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PORTCULLIS_COSIGN_PYTHON") {
        return Some(PathBuf::from(path));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv-cosign/bin/python");
    venv.is_file().then_some(venv)
}

fn tools() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tools/cosign")
}

async fn run(python: &Path, args: &[&str]) -> std::process::Output {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(python).args(args).output(),
    )
    .await
    .expect("python within 60 s")
    .expect("python runs");
    assert!(
        output.status.success(),
        "{args:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_what_the_python_cosign_signer_pushed() {
    let Some(python) = python() else {
        // Under CI (./test.sh provides the interpreter) a skip would hide a missing install.
        assert!(
            std::env::var_os("CI").is_none(),
            "no Python for the cosign cross-check under CI"
        );
        eprintln!(
            "SKIPPED: no Python with `cryptography` (set PORTCULLIS_COSIGN_PYTHON or run ./test.sh, which makes .venv-cosign)"
        );
        return;
    };
    let signer = tools().join("cosign_oci.py");
    assert!(signer.is_file(), "{} is missing", signer.display());
    let registry = Registry::start().await.unwrap();
    let client = client();
    let target = reference(&format!("{}/xcheck/app:v1", registry.host()));
    let image = push_image(&client, &target, "cross-check", "amd64").await;

    // An ECDSA P-256 key pair, unencrypted PKCS#8 as the signer takes it.
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("cosign.key.pem");
    let public = dir.path().join("cosign.pub.pem");
    let script = format!(
        "from cryptography.hazmat.primitives.asymmetric import ec\n\
         from cryptography.hazmat.primitives import serialization as s\n\
         k = ec.generate_private_key(ec.SECP256R1())\n\
         open({:?}, 'wb').write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))\n\
         open({:?}, 'wb').write(k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))\n",
        private.display().to_string(),
        public.display().to_string()
    );
    run(&python, &["-c", &script]).await;
    let (signer, private, public) = (
        signer.display().to_string(),
        private.display().to_string(),
        public.display().to_string(),
    );
    let host = registry.host();
    // Signed twice: cosign adds the second signature as a second layer.
    for _ in 0..2 {
        run(&python, &[&signer, "sign", &host, "xcheck/app", "v1", &private]).await;
    }
    let verified = run(&python, &[&signer, "verify", &host, "xcheck/app", "v1", &public]).await;
    assert!(String::from_utf8_lossy(&verified.stdout).contains("VERIFIED"));

    let found = client
        .cosign_signatures(&target)
        .await
        .unwrap()
        .expect("a .sig manifest");
    assert_eq!(found.image_digest, image.digest);
    assert_eq!(found.layers.len(), 2);
    for layer in &found.layers {
        assert_eq!(layer.descriptor.media_type, COSIGN_SIMPLE_SIGNING);
        let signature = &layer.descriptor.annotations[COSIGN_SIGNATURE_ANNOTATION];
        let der = base64::engine::general_purpose::STANDARD.decode(signature).unwrap();
        assert_eq!(der.first(), Some(&0x30), "an ASN.1 DER ECDSA signature");
        let payload: serde_json::Value = serde_json::from_slice(&layer.payload).unwrap();
        assert_eq!(
            payload["critical"]["image"]["docker-manifest-digest"],
            image.digest.as_str()
        );
        assert_eq!(payload["critical"]["type"], "cosign container image signature");
        assert_eq!(
            payload["critical"]["identity"]["docker-reference"],
            format!("{host}/xcheck/app")
        );
    }
    // Two signings of the same payload with ECDSA: same payload blob, different signatures.
    assert_eq!(found.layers[0].payload, found.layers[1].payload);
    assert_ne!(
        found.layers[0].descriptor.annotations[COSIGN_SIGNATURE_ANNOTATION],
        found.layers[1].descriptor.annotations[COSIGN_SIGNATURE_ANNOTATION]
    );
}
