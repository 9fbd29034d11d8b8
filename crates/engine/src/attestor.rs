//! Attestors (POLICY.md section 6): trusted cosign public keys and keyless identities.
//!
//! An [`Attestor`] names either a cosign public key (`cosignPublicKey`: PEM, `PUBLIC KEY` =
//! X.509 SubjectPublicKeyInfo) or a Fulcio identity under a sigstore TrustedRoot
//! (`cosignKeyless`: [`KeylessOptions`]) that image signatures are checked against. This
//! module parses and validates documents only; it verifies no signature.
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
//! - `cosignKeyless`: `keyless.trustedRoot` is the TrustedRoot JSON as text (as `publicKey` is
//!   PEM text), parsed here with the verifier's own parser (`portcullis-cosign`) and refused
//!   unless it holds at least one Fulcio CA and one Rekor key it can use; `publicKey`,
//!   `transparencyLogEnabled` and `transparencyLogOptions` must not be set (the log is always
//!   required and its keys come from the root).

use serde::{Deserialize, Serialize};
use spki::der::Decode;
use spki::der::asn1::AnyRef;
use spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};

use crate::policy::FieldError;
use crate::runtime::{MAX_DESCRIPTION_LEN, name_error, parse_json, parse_yaml};

/// The attestor type of a cosign public key.
pub const COSIGN_PUBLIC_KEY: &str = "cosignPublicKey";
/// The attestor type of a keyless (Fulcio certificate) identity.
pub const COSIGN_KEYLESS: &str = "cosignKeyless";

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

/// The identity a `cosignKeyless` attestor trusts (POLICY.md section 6).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeylessOptions {
    /// The OIDC issuer the certificate must name, e.g. `https://token.actions.githubusercontent.com`.
    #[serde(default)]
    pub issuer: String,
    /// The SAN (email or URI) the certificate must carry; exactly one of this and
    /// `subjectRegExp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// A regular expression the SAN must fully match; exactly one of this and `subject`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_reg_exp: Option<String>,
    /// A sigstore TrustedRoot JSON document, as text
    /// (`application/vnd.dev.sigstore.trustedroot+json;version=0.1`).
    #[serde(default)]
    pub trusted_root: String,
}

impl KeylessOptions {
    /// The verifier's attestor for these options, or why they cannot make one.
    pub fn to_cosign(&self) -> Result<portcullis_cosign::Attestor, portcullis_cosign::VerifyError> {
        portcullis_cosign::Attestor::keyless(
            &self.issuer,
            self.subject.as_deref(),
            self.subject_reg_exp.as_deref(),
            self.trusted_root.as_bytes(),
        )
    }

    fn validate(&self, errors: &mut Vec<FieldError>) {
        if self.issuer.trim().is_empty() {
            errors.push(FieldError::new("keyless.issuer", "must not be empty"));
        }
        match (&self.subject, &self.subject_reg_exp) {
            (Some(s), None) if s.trim().is_empty() => {
                errors.push(FieldError::new("keyless.subject", "must not be empty"));
            }
            (None, Some(re)) => {
                if re.trim().is_empty() {
                    errors.push(FieldError::new("keyless.subjectRegExp", "must not be empty"));
                } else if let Err(e) = portcullis_cosign::Subject::pattern(re) {
                    errors.push(FieldError::new("keyless.subjectRegExp", e.to_string()));
                }
            }
            (Some(_), None) => {}
            _ => errors.push(FieldError::new(
                "keyless.subject",
                "exactly one of subject and subjectRegExp is required",
            )),
        }
        if self.trusted_root.trim().is_empty() {
            errors.push(FieldError::new("keyless.trustedRoot", "must not be empty"));
            return;
        }
        match portcullis_cosign::TrustedRoot::from_json(self.trusted_root.as_bytes()) {
            Err(e) => errors.push(FieldError::new("keyless.trustedRoot", e.to_string())),
            Ok(root) => {
                if root.certificate_authorities.is_empty() {
                    errors.push(FieldError::new(
                        "keyless.trustedRoot",
                        "holds no Fulcio certificate authority (certificateAuthorities)",
                    ));
                }
                if root.tlogs.is_empty() {
                    errors.push(FieldError::new(
                        "keyless.trustedRoot",
                        "holds no usable Rekor key (tlogs)",
                    ));
                }
            }
        }
    }
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
    /// `cosignPublicKey` or `cosignKeyless`.
    #[serde(rename = "type")]
    pub attestor_type: String,
    /// `cosignPublicKey`: the PEM `PUBLIC KEY` signatures are checked with (required);
    /// `cosignKeyless`: must be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub public_key: String,
    /// Whether signatures must carry a transparency log entry; default false.
    #[serde(default)]
    pub transparency_log_enabled: bool,
    /// Required when `transparencyLogEnabled` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transparency_log_options: Option<TransparencyLogOptions>,
    /// `cosignKeyless`: the trusted identity and root (required); `cosignPublicKey`: must be
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyless: Option<KeylessOptions>,
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
        match self.attestor_type.as_str() {
            COSIGN_PUBLIC_KEY => self.validate_public_key(&mut errors),
            COSIGN_KEYLESS => self.validate_keyless(&mut errors),
            other => {
                errors.push(FieldError::new(
                    "type",
                    format!(
                        "{other:?} is not a supported attestor type (supported: {COSIGN_PUBLIC_KEY}, {COSIGN_KEYLESS})"
                    ),
                ));
                // Still report what is wrong with the rest, as for the type it most looks like.
                if self.keyless.is_some() {
                    self.validate_keyless(&mut errors);
                } else {
                    self.validate_public_key(&mut errors);
                }
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    fn validate_public_key(&self, errors: &mut Vec<FieldError>) {
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
        if self.keyless.is_some() {
            errors.push(FieldError::new("keyless", "must not be set for cosignPublicKey"));
        }
    }

    fn validate_keyless(&self, errors: &mut Vec<FieldError>) {
        if !self.public_key.is_empty() {
            errors.push(FieldError::new("publicKey", "must not be set for cosignKeyless"));
        }
        if self.transparency_log_enabled || self.transparency_log_options.is_some() {
            errors.push(FieldError::new(
                "transparencyLogEnabled",
                "does not apply to cosignKeyless (the transparency log is always required, its keys come from keyless.trustedRoot)",
            ));
        }
        match &self.keyless {
            Some(k) => k.validate(errors),
            None => errors.push(FieldError::new("keyless", "required when type is cosignKeyless")),
        }
    }
}
