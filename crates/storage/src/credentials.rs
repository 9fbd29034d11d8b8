//! Encryption at rest of registry credentials (issue 18, item 3): AES-256-GCM (`ring::aead`)
//! under a [`KeyRing`] of named 256-bit keys.
//!
//! Each sealed secret carries the id of the key that sealed it, so keys rotate: configure the
//! new key beside the old one, make it the active one (new rows are sealed with it), and rows
//! sealed under the old key stay readable while the old key is still configured. Each seal uses
//! a fresh random 96-bit nonce. The associated data binds the ciphertext to its row's tenant,
//! cluster and registry: a ciphertext copied into another row does not open.
//!
//! A key file holds one key: 32 random bytes, base64 (standard alphabet, padding) on one line;
//! [`generate_key_file`] writes one with mode 0600 (embedded mode makes one in its data folder).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Length of a key, in bytes (AES-256).
pub const KEY_LEN: usize = 32;

/// Longest accepted key id, in bytes.
pub const MAX_KEY_ID_LEN: usize = 64;

/// Domain separation of the associated data: a ciphertext made for another purpose (or a later
/// format) never opens as a registry credential.
const AAD_CONTEXT: &[u8] = b"portcullis.registry-credential.v1";

/// Why a key ring cannot be built, or a secret cannot be sealed or opened. No variant holds
/// key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialCryptoError {
    /// A key file could not be read.
    #[error("credential key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why (an I/O error, or not a base64 key of 32 bytes).
        reason: String,
    },
    /// A key id is empty, too long, or has characters other than `A-Za-z0-9_.-`.
    #[error("credential key id {0:?} must be 1-{MAX_KEY_ID_LEN} characters of A-Za-z0-9_.-")]
    BadKeyId(String),
    /// Two keys share one id.
    #[error("credential key id {0:?} is configured twice")]
    DuplicateKeyId(String),
    /// The id chosen to seal new rows names no configured key.
    #[error("the active credential key id {0:?} names no configured key")]
    UnknownActiveKey(String),
    /// A row was sealed with a key that is no longer (or never was) configured.
    #[error("the credential was encrypted with key {0:?}, which is not configured")]
    UnknownKeyId(String),
    /// The ciphertext does not open: it was altered, sealed under another key with that id, or
    /// belongs to another tenant, cluster or registry.
    #[error(
        "the credential does not decrypt with key {0:?}: it was altered, or it belongs to another tenant, cluster or registry"
    )]
    Tampered(String),
    /// The stored nonce is not 96 bits.
    #[error("the credential's nonce is {0} bytes, expected {NONCE_LEN}")]
    BadNonce(usize),
    /// The system's random source failed.
    #[error("the system random source failed")]
    Random,
}

/// A secret (a password or an identity token): its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the one caller that must send it on (the signature service).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A sealed secret as a row stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// The id of the key that sealed it.
    pub key_id: String,
    /// The random 96-bit nonce.
    pub nonce: Vec<u8>,
    /// The ciphertext with its 128-bit tag appended.
    pub ciphertext: Vec<u8>,
}

/// Where a secret belongs: its row's identity, bound into the ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretScope<'a> {
    /// The tenant id.
    pub tenant: &'a str,
    /// The cluster id.
    pub cluster: &'a str,
    /// The registry host.
    pub registry: &'a str,
}

impl SecretScope<'_> {
    /// The associated data: a context label, then each part length-prefixed (so that no two
    /// scopes share a byte string, whatever their parts hold).
    fn aad(&self) -> Vec<u8> {
        let parts = [self.tenant, self.cluster, self.registry];
        let mut out = Vec::with_capacity(AAD_CONTEXT.len() + parts.iter().map(|p| p.len() + 8).sum::<usize>());
        out.extend_from_slice(AAD_CONTEXT);
        for part in parts {
            out.extend_from_slice(&(part.len() as u64).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out
    }
}

/// The configured keys, by id, and the one that seals new rows.
pub struct KeyRing {
    keys: BTreeMap<String, LessSafeKey>,
    active: String,
    random: SystemRandom,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The ids only: never key material.
        f.debug_struct("KeyRing")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .finish()
    }
}

impl KeyRing {
    /// A ring from `(id, key bytes)` pairs; `active` must be one of the ids.
    pub fn new(
        keys: impl IntoIterator<Item = (String, [u8; KEY_LEN])>,
        active: &str,
    ) -> Result<Self, CredentialCryptoError> {
        let mut map = BTreeMap::new();
        for (id, bytes) in keys {
            if !valid_key_id(&id) {
                return Err(CredentialCryptoError::BadKeyId(id));
            }
            let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| CredentialCryptoError::KeyFile {
                path: PathBuf::new(),
                reason: "not an AES-256 key".to_owned(),
            })?;
            if map.insert(id.clone(), LessSafeKey::new(key)).is_some() {
                return Err(CredentialCryptoError::DuplicateKeyId(id));
            }
        }
        if !map.contains_key(active) {
            return Err(CredentialCryptoError::UnknownActiveKey(active.to_owned()));
        }
        Ok(Self {
            keys: map,
            active: active.to_owned(),
            random: SystemRandom::new(),
        })
    }

    /// A ring from key files, `(id, path)`; `active` must be one of the ids.
    pub fn from_files<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a Path)>,
        active: &str,
    ) -> Result<Self, CredentialCryptoError> {
        let mut keys = Vec::new();
        for (id, path) in files {
            keys.push((id.to_owned(), read_key_file(path)?));
        }
        Self::new(keys, active)
    }

    /// The id of the key new rows are sealed with.
    pub fn active_key_id(&self) -> &str {
        &self.active
    }

    /// Seals `secret` for `scope` with the active key and a fresh random nonce.
    pub fn seal(&self, scope: SecretScope<'_>, secret: &Secret) -> Result<SealedSecret, CredentialCryptoError> {
        let key = self
            .keys
            .get(&self.active)
            .ok_or_else(|| CredentialCryptoError::UnknownActiveKey(self.active.clone()))?;
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| CredentialCryptoError::Random)?;
        let mut buffer = secret.expose().as_bytes().to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(scope.aad()), &mut buffer)
            .map_err(|_| CredentialCryptoError::Tampered(self.active.clone()))?;
        Ok(SealedSecret {
            key_id: self.active.clone(),
            nonce: nonce.to_vec(),
            ciphertext: buffer,
        })
    }

    /// Opens a sealed secret of `scope` with the key it names.
    pub fn open(&self, scope: SecretScope<'_>, sealed: &SealedSecret) -> Result<Secret, CredentialCryptoError> {
        let key = self
            .keys
            .get(&sealed.key_id)
            .ok_or_else(|| CredentialCryptoError::UnknownKeyId(sealed.key_id.clone()))?;
        let nonce: [u8; NONCE_LEN] = sealed
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| CredentialCryptoError::BadNonce(sealed.nonce.len()))?;
        let mut buffer = sealed.ciphertext.clone();
        let plain = key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(scope.aad()), &mut buffer)
            .map_err(|_| CredentialCryptoError::Tampered(sealed.key_id.clone()))?;
        let text =
            String::from_utf8(plain.to_vec()).map_err(|_| CredentialCryptoError::Tampered(sealed.key_id.clone()))?;
        Ok(Secret(text))
    }
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Reads a key file: 32 bytes, base64 on one line (surrounding whitespace ignored).
pub fn read_key_file(path: &Path) -> Result<[u8; KEY_LEN], CredentialCryptoError> {
    let bad = |reason: String| CredentialCryptoError::KeyFile {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    // The decode error is not quoted: it could echo key bytes.
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| bad("not base64 (expected 32 random bytes, base64 on one line)".to_owned()))?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice())
        .map_err(|_| bad(format!("holds {} bytes, expected {KEY_LEN}", bytes.len())))
}

/// Writes a new random key file at `path`, mode 0600 on Unix, refusing to replace an existing
/// file (a replaced key would make every sealed row unreadable).
pub fn generate_key_file(path: &Path) -> Result<(), CredentialCryptoError> {
    use std::io::Write as _;
    let bad = |reason: String| CredentialCryptoError::KeyFile {
        path: path.to_owned(),
        reason,
    };
    let mut key = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| CredentialCryptoError::Random)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // Created 0600 from the start: no moment when another user could read it.
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| bad(e.to_string()))?;
    let mut line = STANDARD.encode(key);
    line.push('\n');
    file.write_all(line.as_bytes()).map_err(|e| bad(e.to_string()))?;
    file.sync_all().map_err(|e| bad(e.to_string()))
}

/// Reads the key file at `path`, generating it first when it does not exist (embedded mode's
/// key in its data folder).
pub fn load_or_generate_key_file(path: &Path) -> Result<[u8; KEY_LEN], CredentialCryptoError> {
    if !path.exists() {
        generate_key_file(path)?;
    }
    read_key_file(path)
}
