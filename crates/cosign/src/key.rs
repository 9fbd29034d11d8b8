//! Public keys (PEM or DER SubjectPublicKeyInfo) and signature verification with `ring`.

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use sha2::{Digest, Sha256};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::error::VerifyError;

// OID contents (DER without tag and length), compared byte for byte.
const ID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const SECP256R1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const SECP384R1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const ID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// A public key's algorithm, with the signature scheme cosign uses for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// ECDSA over NIST P-256 (cosign: SHA-256).
    EcdsaP256,
    /// ECDSA over NIST P-384 (cosign: SHA-384).
    EcdsaP384,
    /// RSA (cosign: PKCS#1 v1.5 with SHA-256).
    Rsa,
    /// Ed25519 (pure).
    Ed25519,
}

/// A signature that does not verify with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the signature does not verify")]
pub struct BadSignature;

/// A digest algorithm a signature is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

/// A parsed public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    kind: KeyKind,
    spki_der: Vec<u8>,
    key_bytes: Vec<u8>,
}

impl PublicKey {
    /// Parses a PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
    pub fn from_pem(pem: &str) -> Result<Self, VerifyError> {
        let der = pem_decode(pem.trim().as_bytes(), "PUBLIC KEY")?;
        Self::from_spki_der(&der)
    }

    /// Parses a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, VerifyError> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| VerifyError::Key(format!("not a SubjectPublicKeyInfo: {e}")))?;
        if !rest.is_empty() {
            return Err(VerifyError::Key("trailing bytes after the SubjectPublicKeyInfo".into()));
        }
        Self::from_spki(&spki)
    }

    /// An RSA key given as a PKCS#1 `RSAPublicKey` (trusted roots' `PKCS1_RSA_*` keys).
    pub fn from_pkcs1_rsa_der(der: &[u8]) -> Result<Self, VerifyError> {
        // Wrapped into the SubjectPublicKeyInfo it stands for, so that it is checked as one.
        let mut bits = vec![0u8];
        bits.extend_from_slice(der);
        let mut algorithm = vec![0x06, 0x09];
        algorithm.extend_from_slice(RSA_ENCRYPTION);
        algorithm.extend_from_slice(&[0x05, 0x00]);
        let spki = crate::der::encode(
            0x30,
            &[crate::der::encode(0x30, &algorithm), crate::der::encode(0x03, &bits)].concat(),
        );
        Self::from_spki_der(&spki)
    }

    pub(crate) fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, VerifyError> {
        let oid = spki.algorithm.algorithm.as_bytes();
        let params = spki.algorithm.parameters.as_ref();
        let key_bytes = spki.subject_public_key.data.to_vec();
        let kind = if oid == ID_EC_PUBLIC_KEY {
            // A named curve: the parameters are an OBJECT IDENTIFIER (tag 6).
            let curve = params
                .filter(|p| p.header.tag().0 == 6)
                .map(|p| p.data)
                .ok_or_else(|| VerifyError::Key("EC key without a named curve".into()))?;
            let (kind, len) = if curve == SECP256R1 {
                (KeyKind::EcdsaP256, 65)
            } else if curve == SECP384R1 {
                (KeyKind::EcdsaP384, 97)
            } else {
                return Err(VerifyError::Key(
                    "unsupported elliptic curve (P-256 and P-384 are)".into(),
                ));
            };
            // Uncompressed points only, as Go's x509 (and so cosign) requires.
            if key_bytes.len() != len || key_bytes.first() != Some(&4) {
                return Err(VerifyError::Key(
                    "EC point is not an uncompressed point of its curve".into(),
                ));
            }
            kind
        } else if oid == RSA_ENCRYPTION {
            KeyKind::Rsa
        } else if oid == ID_ED25519 {
            if key_bytes.len() != 32 {
                return Err(VerifyError::Key("Ed25519 key is not 32 bytes".into()));
            }
            KeyKind::Ed25519
        } else {
            return Err(VerifyError::Key(format!(
                "unsupported key algorithm {} (ECDSA P-256/P-384, RSA and Ed25519 are)",
                spki.algorithm.algorithm.to_id_string()
            )));
        };
        Ok(Self {
            kind,
            spki_der: spki.raw.to_vec(),
            key_bytes,
        })
    }

    /// The key's algorithm.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// SHA-256 of the DER SubjectPublicKeyInfo: a transparency log's id for its key.
    pub fn key_id(&self) -> [u8; 32] {
        Sha256::digest(&self.spki_der).into()
    }

    /// Verifies `signature` over `message` as cosign signs with this kind of key (ECDSA
    /// signatures ASN.1 DER).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), BadSignature> {
        let hash = match self.kind {
            KeyKind::EcdsaP384 => Hash::Sha384,
            _ => Hash::Sha256,
        };
        self.verify_with(hash, message, signature)
    }

    /// Verifies with an explicit digest (certificates and logs name theirs).
    pub(crate) fn verify_with(&self, hash: Hash, message: &[u8], signature: &[u8]) -> Result<(), BadSignature> {
        let algorithm: &'static dyn VerificationAlgorithm = match (self.kind, hash) {
            (KeyKind::EcdsaP256, Hash::Sha256) => &signature::ECDSA_P256_SHA256_ASN1,
            (KeyKind::EcdsaP256, Hash::Sha384) => &signature::ECDSA_P256_SHA384_ASN1,
            (KeyKind::EcdsaP384, Hash::Sha256) => &signature::ECDSA_P384_SHA256_ASN1,
            (KeyKind::EcdsaP384, Hash::Sha384) => &signature::ECDSA_P384_SHA384_ASN1,
            (KeyKind::Rsa, Hash::Sha256) => &signature::RSA_PKCS1_2048_8192_SHA256,
            (KeyKind::Rsa, Hash::Sha384) => &signature::RSA_PKCS1_2048_8192_SHA384,
            (KeyKind::Rsa, Hash::Sha512) => &signature::RSA_PKCS1_2048_8192_SHA512,
            // Ed25519 is pure: it names no digest.
            (KeyKind::Ed25519, _) => &signature::ED25519,
            _ => return Err(BadSignature),
        };
        UnparsedPublicKey::new(algorithm, &self.key_bytes)
            .verify(message, signature)
            .map_err(|_| BadSignature)
    }
}

/// Decodes one PEM block of `label`.
pub(crate) fn pem_decode(pem: &[u8], label: &str) -> Result<Vec<u8>, VerifyError> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| VerifyError::Key(format!("not PEM: {e}")))?;
    if block.label != label {
        return Err(VerifyError::Key(format!(
            "PEM label is {:?}, expected {label:?}",
            block.label
        )));
    }
    Ok(block.contents)
}
