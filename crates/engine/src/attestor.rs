//! Attestors (POLICY.md section 6): trusted cosign public keys.
//!
//! An [`Attestor`] names a cosign public key (PEM, `PUBLIC KEY` = X.509 SubjectPublicKeyInfo)
//! that image signatures are checked against. This module parses and validates keys only; it
//! verifies no signature.
//!
//! Supported keys, with the hash cosign uses for each ([`KeyKind`]): ECDSA P-256 (SHA-256),
//! ECDSA P-384 (SHA-384), RSA of at least 2048 bits (PKCS#1 v1.5, SHA-256) and Ed25519 (pure).
//!
//! # Choices where POLICY.md is silent
//!
//! - `description` is at most 128 characters and defaults to `""`; `type` is required.
//! - EC points must be uncompressed (`04 || X || Y`), as Go's `x509.ParsePKIXPublicKey` (and so
//!   cosign) requires; whether the point is on the curve is left to the verifier.
//! - RSA keys must carry the NULL parameters of `rsaEncryption` (as Go and RustCrypto require),
//!   an odd public exponent of at least 3, and a modulus of 2048 to 16384 bits.
//! - `transparencyLogOptions.publicKey` is required when `transparencyLogEnabled` is true, and is
//!   validated whenever it is given (a stored bad key would only fail later).

use serde::{Deserialize, Serialize};
use spki::der::Decode;
use spki::der::asn1::AnyRef;
use spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};

use crate::policy::FieldError;
use crate::runtime::{MAX_DESCRIPTION_LEN, name_error, parse_json, parse_yaml};

/// The only attestor type: a cosign public key.
pub const COSIGN_PUBLIC_KEY: &str = "cosignPublicKey";

/// Smallest accepted RSA modulus, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest accepted RSA modulus, in bits.
pub const MAX_RSA_BITS: usize = 16384;

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// A public key's algorithm, with the signature scheme cosign uses for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyKind {
    /// ECDSA over NIST P-256 with SHA-256.
    EcdsaP256Sha256,
    /// ECDSA over NIST P-384 with SHA-384.
    EcdsaP384Sha384,
    /// RSA PKCS#1 v1.5 with SHA-256.
    RsaPkcs1Sha256,
    /// Ed25519 (pure, no pre-hash).
    Ed25519,
}

/// Why a PEM public key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not PEM text.
    #[error("not a PEM public key: {0}")]
    NotPem(String),
    /// PEM of another kind (a certificate, a private key, a PKCS#1 `RSA PUBLIC KEY`, ...).
    #[error("PEM label is {0:?}, expected \"PUBLIC KEY\"")]
    WrongLabel(String),
    /// The DER is not a SubjectPublicKeyInfo.
    #[error("not a SubjectPublicKeyInfo: {0}")]
    InvalidSpki(String),
    /// An algorithm other than EC, RSA and Ed25519.
    #[error("unsupported key algorithm {0}; supported: ECDSA P-256/P-384, RSA, Ed25519")]
    UnsupportedAlgorithm(String),
    /// An EC key on a curve other than P-256 and P-384.
    #[error("unsupported elliptic curve {0}; supported: P-256, P-384")]
    UnsupportedCurve(String),
    /// An RSA key outside the accepted sizes.
    #[error("RSA key of {0} bits; supported: {MIN_RSA_BITS} to {MAX_RSA_BITS} bits")]
    RsaKeySize(usize),
    /// The key material does not have the algorithm's form.
    #[error("invalid {algorithm} key: {reason}")]
    InvalidKey {
        /// The algorithm.
        algorithm: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A parsed public key: its kind and its DER forms, for a verifier to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedPublicKey {
    /// The algorithm and signature scheme.
    pub kind: KeyKind,
    /// The whole SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
    /// The subjectPublicKey bits: the EC point, the PKCS#1 `RSAPublicKey` DER, or the 32
    /// Ed25519 bytes.
    pub key_bytes: Vec<u8>,
}

/// Parses a PEM `PUBLIC KEY` (SPKI) of a supported kind.
pub fn parse_public_key_pem(pem: &str) -> Result<ParsedPublicKey, KeyError> {
    // Surrounding whitespace (a trailing newline, an indented YAML block) is not part of the PEM.
    let (label, der) =
        spki::der::pem::decode_vec(pem.trim().as_bytes()).map_err(|e| KeyError::NotPem(e.to_string()))?;
    if label != "PUBLIC KEY" {
        return Err(KeyError::WrongLabel(label.to_owned()));
    }
    let spki = SubjectPublicKeyInfoRef::from_der(&der).map_err(|e| KeyError::InvalidSpki(e.to_string()))?;
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| KeyError::InvalidSpki("subjectPublicKey has unused bits".to_owned()))?;
    let kind = key_kind_of(spki.algorithm.oid, spki.algorithm.parameters, key)?;
    Ok(ParsedPublicKey {
        kind,
        key_bytes: key.to_vec(),
        spki_der: der,
    })
}

fn key_kind_of(oid: ObjectIdentifier, parameters: Option<AnyRef<'_>>, key: &[u8]) -> Result<KeyKind, KeyError> {
    if oid == ID_EC_PUBLIC_KEY {
        let curve = parameters
            .ok_or_else(|| invalid("EC", "missing curve parameters"))?
            .decode_as::<ObjectIdentifier>()
            .map_err(|_| KeyError::UnsupportedCurve("(not a named curve)".to_owned()))?;
        let (kind, coordinate_len) = if curve == SECP256R1 {
            (KeyKind::EcdsaP256Sha256, 32)
        } else if curve == SECP384R1 {
            (KeyKind::EcdsaP384Sha384, 48)
        } else {
            return Err(KeyError::UnsupportedCurve(curve_name(curve)));
        };
        if key.first() != Some(&0x04) || key.len() != 1 + 2 * coordinate_len {
            return Err(invalid(
                "EC",
                format!(
                    "the point must be uncompressed (0x04 and {} bytes), got {} bytes",
                    2 * coordinate_len,
                    key.len()
                ),
            ));
        }
        Ok(kind)
    } else if oid == RSA_ENCRYPTION {
        if !parameters.is_some_and(|p| p.is_null()) {
            return Err(invalid("RSA", "the algorithm parameters must be NULL"));
        }
        let rsa = pkcs1::RsaPublicKey::<spki::der::asn1::UintRef<'_>>::from_der(key)
            .map_err(|e| invalid("RSA", e.to_string()))?;
        let exponent = rsa.public_exponent.as_bytes();
        let odd = exponent.last().is_some_and(|b| b % 2 == 1);
        if !odd || exponent == [1] {
            return Err(invalid("RSA", "the public exponent must be odd and at least 3"));
        }
        let bits = bit_len(rsa.modulus.as_bytes());
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(KeyError::RsaKeySize(bits));
        }
        Ok(KeyKind::RsaPkcs1Sha256)
    } else if oid == ID_ED25519 {
        if parameters.is_some() {
            return Err(invalid("Ed25519", "the algorithm must have no parameters"));
        }
        if key.len() != 32 {
            return Err(invalid(
                "Ed25519",
                format!("the key must be 32 bytes, got {}", key.len()),
            ));
        }
        Ok(KeyKind::Ed25519)
    } else {
        Err(KeyError::UnsupportedAlgorithm(algorithm_name(oid)))
    }
}

fn invalid(algorithm: &'static str, reason: impl Into<String>) -> KeyError {
    KeyError::InvalidKey {
        algorithm,
        reason: reason.into(),
    }
}

/// Bit length of a big-endian unsigned integer.
fn bit_len(bytes: &[u8]) -> usize {
    let significant: &[u8] = match bytes.iter().position(|b| *b != 0) {
        Some(start) => bytes.get(start..).unwrap_or_default(),
        None => &[],
    };
    match significant.first() {
        Some(first) => (significant.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
        None => 0,
    }
}

fn curve_name(oid: ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.3.132.0.10" => "secp256k1 (1.3.132.0.10)".to_owned(),
        "1.3.132.0.35" => "P-521 (1.3.132.0.35)".to_owned(),
        other => other.to_owned(),
    }
}

fn algorithm_name(oid: ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.3.101.113" => "Ed448 (1.3.101.113)".to_owned(),
        "1.2.840.113549.1.1.10" => "RSASSA-PSS (1.2.840.113549.1.1.10)".to_owned(),
        "1.2.840.10040.4.1" => "DSA (1.2.840.10040.4.1)".to_owned(),
        other => other.to_owned(),
    }
}

/// Transparency log settings of an attestor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransparencyLogOptions {
    /// The log's public key (PEM), to verify signed entry timestamps offline.
    #[serde(default)]
    pub public_key: String,
}

/// An attestor document (the store assigns its `id` separately).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Attestor {
    /// `^[A-Za-z0-9_.-]+$`, 1-64 characters; unique per tenant, immutable.
    pub name: String,
    /// At most 128 characters; default `""`.
    #[serde(default)]
    pub description: String,
    /// Must be `cosignPublicKey`.
    #[serde(rename = "type")]
    pub attestor_type: String,
    /// The PEM `PUBLIC KEY` signatures are checked with.
    pub public_key: String,
    /// Whether signatures must carry a transparency log entry; default false.
    #[serde(default)]
    pub transparency_log_enabled: bool,
    /// Required when `transparencyLogEnabled` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transparency_log_options: Option<TransparencyLogOptions>,
}

impl Attestor {
    /// Parses a JSON attestor document; the error names the failing field.
    pub fn from_json(text: &str) -> Result<Self, FieldError> {
        parse_json(text.as_bytes())
    }

    /// Parses a YAML attestor document; the error names the failing field.
    pub fn from_yaml(text: &str) -> Result<Self, FieldError> {
        parse_yaml(text)
    }

    /// The kind of `publicKey`.
    pub fn key_kind(&self) -> Result<KeyKind, KeyError> {
        parse_public_key_pem(&self.public_key).map(|k| k.kind)
    }

    /// The kind of the transparency log's key, when one is given.
    pub fn transparency_log_key_kind(&self) -> Option<Result<KeyKind, KeyError>> {
        self.transparency_log_options
            .as_ref()
            .filter(|o| !o.public_key.trim().is_empty())
            .map(|o| parse_public_key_pem(&o.public_key).map(|k| k.kind))
    }

    /// Checks the attestor against POLICY.md section 6, returning every error found.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if let Some(msg) = name_error(&self.name) {
            errors.push(FieldError::new("name", msg));
        }
        let desc_len = self.description.chars().count();
        if desc_len > MAX_DESCRIPTION_LEN {
            errors.push(FieldError::new(
                "description",
                format!("must be at most {MAX_DESCRIPTION_LEN} characters, got {desc_len}"),
            ));
        }
        if self.attestor_type != COSIGN_PUBLIC_KEY {
            errors.push(FieldError::new(
                "type",
                format!(
                    "{:?} is not a supported attestor type (supported: {COSIGN_PUBLIC_KEY})",
                    self.attestor_type
                ),
            ));
        }
        if self.public_key.trim().is_empty() {
            errors.push(FieldError::new("publicKey", "must not be empty"));
        } else if let Err(e) = self.key_kind() {
            errors.push(FieldError::new("publicKey", e.to_string()));
        }
        match self.transparency_log_key_kind() {
            Some(Err(e)) => errors.push(FieldError::new("transparencyLogOptions.publicKey", e.to_string())),
            None if self.transparency_log_enabled => errors.push(FieldError::new(
                "transparencyLogOptions.publicKey",
                "required when transparencyLogEnabled is true",
            )),
            _ => {}
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}
