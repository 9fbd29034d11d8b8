//! Registry credentials at rest: AES-256-GCM round trip, refusals, key rotation, key files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use portcullis_storage::credentials::{
    CredentialCryptoError, KEY_LEN, KeyRing, Secret, SecretScope, generate_key_file, load_or_generate_key_file,
    read_key_file,
};

const SCOPE: SecretScope<'static> = SecretScope {
    tenant: "acme",
    cluster: "0190c4a8-0000-7000-8000-000000000001",
    registry: "registry.example.com",
};

fn ring_with(keys: &[(&str, u8)], active: &str) -> KeyRing {
    KeyRing::new(keys.iter().map(|(id, b)| ((*id).to_owned(), [*b; KEY_LEN])), active).unwrap()
}

#[test]
fn round_trip_with_a_fresh_nonce_each_time() {
    let ring = ring_with(&[("k1", 1)], "k1");
    let secret = Secret::new("hunter2 and a long identity token");
    let a = ring.seal(SCOPE, &secret).unwrap();
    let b = ring.seal(SCOPE, &secret).unwrap();
    assert_eq!(a.key_id, "k1");
    assert_eq!(a.nonce.len(), 12);
    assert_ne!(a.nonce, b.nonce, "a nonce is never reused");
    assert_ne!(a.ciphertext, b.ciphertext);
    assert!(
        !a.ciphertext.windows(7).any(|w| w == b"hunter2"),
        "no plaintext in the ciphertext"
    );
    assert_eq!(ring.open(SCOPE, &a).unwrap(), secret);
    assert_eq!(ring.open(SCOPE, &b).unwrap(), secret);
}

#[test]
fn wrong_key_id_tampering_and_moved_rows_are_refused() {
    let ring = ring_with(&[("k1", 1)], "k1");
    let sealed = ring.seal(SCOPE, &Secret::new("pw")).unwrap();

    let mut unknown = sealed.clone();
    unknown.key_id = "k9".to_owned();
    let err = ring.open(SCOPE, &unknown).unwrap_err();
    assert_eq!(err, CredentialCryptoError::UnknownKeyId("k9".to_owned()));
    assert!(err.to_string().contains("not configured"), "{err}");

    // Another key under the same id (a replaced key file) does not open it.
    let other = ring_with(&[("k1", 2)], "k1");
    assert_eq!(
        other.open(SCOPE, &sealed).unwrap_err(),
        CredentialCryptoError::Tampered("k1".to_owned())
    );

    for i in 0..sealed.ciphertext.len() {
        let mut bad = sealed.clone();
        bad.ciphertext[i] ^= 0x01;
        assert!(
            matches!(ring.open(SCOPE, &bad), Err(CredentialCryptoError::Tampered(_))),
            "byte {i}"
        );
    }
    let mut bad = sealed.clone();
    bad.nonce[0] ^= 0x01;
    assert!(matches!(
        ring.open(SCOPE, &bad),
        Err(CredentialCryptoError::Tampered(_))
    ));
    let mut bad = sealed.clone();
    bad.nonce.pop();
    assert_eq!(ring.open(SCOPE, &bad).unwrap_err(), CredentialCryptoError::BadNonce(11));

    // The row copied to another cluster, tenant or registry does not open.
    for moved in [
        SecretScope {
            cluster: "0190c4a8-0000-7000-8000-000000000002",
            ..SCOPE
        },
        SecretScope {
            tenant: "globex",
            ..SCOPE
        },
        SecretScope {
            registry: "ghcr.io",
            ..SCOPE
        },
        // Length prefixes: shifting a character between parts is another scope.
        SecretScope {
            tenant: "acme0",
            cluster: "190c4a8-0000-7000-8000-000000000001",
            ..SCOPE
        },
    ] {
        let err = ring.open(moved, &sealed).unwrap_err();
        assert!(err.to_string().contains("another tenant, cluster or registry"), "{err}");
    }
}

#[test]
fn rows_under_the_old_key_stay_readable_after_rotation() {
    let old = ring_with(&[("2026-01", 1)], "2026-01");
    let before = old.seal(SCOPE, &Secret::new("old secret")).unwrap();

    let rotated = ring_with(&[("2026-01", 1), ("2026-06", 2)], "2026-06");
    assert_eq!(rotated.active_key_id(), "2026-06");
    let after = rotated.seal(SCOPE, &Secret::new("new secret")).unwrap();
    assert_eq!(after.key_id, "2026-06");
    assert_eq!(rotated.open(SCOPE, &before).unwrap().expose(), "old secret");
    assert_eq!(rotated.open(SCOPE, &after).unwrap().expose(), "new secret");

    // Once the old key is dropped, its rows are refused by name.
    let new_only = ring_with(&[("2026-06", 2)], "2026-06");
    assert_eq!(
        new_only.open(SCOPE, &before).unwrap_err(),
        CredentialCryptoError::UnknownKeyId("2026-01".to_owned())
    );
}

#[test]
fn key_ring_configuration_errors() {
    let key = [0u8; KEY_LEN];
    assert!(matches!(
        KeyRing::new([("k1".to_owned(), key)], "k2"),
        Err(CredentialCryptoError::UnknownActiveKey(_))
    ));
    assert!(matches!(
        KeyRing::new([("k1".to_owned(), key), ("k1".to_owned(), key)], "k1"),
        Err(CredentialCryptoError::DuplicateKeyId(_))
    ));
    for bad in ["", "a b", "k/1", &"k".repeat(65)] {
        assert!(
            matches!(
                KeyRing::new([(bad.to_owned(), key)], bad),
                Err(CredentialCryptoError::BadKeyId(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn secrets_and_rings_never_show_in_debug_output() {
    let secret = Secret::new("s3cr3t-token");
    assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    assert_eq!(format!("{secret}"), "<redacted>");
    let ring = ring_with(&[("k1", 0x41)], "k1");
    let debug = format!("{ring:?}");
    assert!(
        debug.contains("k1") && !debug.contains("65") && !debug.contains("AAAA"),
        "{debug}"
    );
}

#[test]
fn generated_key_files_are_0600_and_never_replaced() {
    let dir = std::env::temp_dir().join(format!("portcullis-credkey-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("credentials.key");
    let _ = std::fs::remove_file(&path);

    let first = load_or_generate_key_file(&path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "mode {mode:o}");
    }
    // Loaded again, the same key; generating over it is refused.
    assert_eq!(load_or_generate_key_file(&path).unwrap(), first);
    assert!(matches!(
        generate_key_file(&path),
        Err(CredentialCryptoError::KeyFile { .. })
    ));
    let ring = KeyRing::from_files([("embedded", path.as_path())], "embedded").unwrap();
    let sealed = ring.seal(SCOPE, &Secret::new("pw")).unwrap();
    assert_eq!(ring.open(SCOPE, &sealed).unwrap().expose(), "pw");

    // A file that is not a base64 key of 32 bytes is refused, naming the file, not the bytes.
    let short = dir.join("short.key");
    std::fs::write(&short, "c2hvcnQ=\n").unwrap();
    let err = read_key_file(&short).unwrap_err().to_string();
    assert!(err.contains("short.key") && err.contains("5 bytes"), "{err}");
    let junk = dir.join("junk.key");
    std::fs::write(&junk, "not base64 at all!\n").unwrap();
    let err = read_key_file(&junk).unwrap_err().to_string();
    assert!(err.contains("junk.key") && !err.contains("at all"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
