//! A sigstore TrustedRoot (`application/vnd.dev.sigstore.trustedroot+json;version=0.1`): the
//! Fulcio CAs, Rekor logs and CT logs, each with its validity.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::error::VerifyError;
use crate::key::PublicKey;

/// A validity window in Unix seconds; `end` inclusive, `None` open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// First second of validity.
    pub start: i64,
    /// Last second of validity, when it ends.
    pub end: Option<i64>,
}

impl Validity {
    /// Whether `t` (Unix seconds) lies in the window.
    pub fn contains(&self, t: i64) -> bool {
        t >= self.start && self.end.is_none_or(|end| t <= end)
    }
}

/// A transparency log (Rekor or CT) of the root.
#[derive(Debug, Clone)]
pub struct TransparencyLog {
    /// Its log id (SHA-256 of its key's DER).
    pub log_id: Vec<u8>,
    /// Its key.
    pub key: PublicKey,
    /// When the key was in use.
    pub validity: Validity,
}

/// A certificate authority of the root: its chain (issuing CA first, root last), DER.
#[derive(Debug, Clone)]
pub struct CertificateAuthority {
    /// The chain, DER certificates, the CA that issues leaves first.
    pub chain: Vec<Vec<u8>>,
    /// When the CA issued certificates.
    pub validity: Validity,
}

/// The trust material verification is anchored in.
#[derive(Debug, Clone, Default)]
pub struct TrustedRoot {
    /// Rekor logs.
    pub tlogs: Vec<TransparencyLog>,
    /// Fulcio certificate authorities.
    pub certificate_authorities: Vec<CertificateAuthority>,
    /// Certificate transparency logs.
    pub ctlogs: Vec<TransparencyLog>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRoot {
    media_type: String,
    #[serde(default)]
    tlogs: Vec<RawLog>,
    #[serde(default)]
    certificate_authorities: Vec<RawCa>,
    #[serde(default)]
    ctlogs: Vec<RawLog>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLog {
    public_key: RawKey,
    log_id: RawLogId,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawKey {
    raw_bytes: String,
    #[serde(default)]
    key_details: String,
    valid_for: Option<RawValidity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLogId {
    key_id: String,
}

#[derive(Deserialize)]
struct RawValidity {
    start: Option<String>,
    end: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCa {
    cert_chain: RawChain,
    valid_for: Option<RawValidity>,
}

#[derive(Deserialize)]
struct RawChain {
    certificates: Vec<RawCert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCert {
    raw_bytes: String,
}

impl TrustedRoot {
    /// Parses a TrustedRoot JSON document. A log or CA without a validity start is refused
    /// (an unbounded key would be trusted for entries made before it existed).
    pub fn from_json(json: &[u8]) -> Result<Self, VerifyError> {
        let raw: RawRoot = serde_json::from_slice(json).map_err(|e| VerifyError::malformed("trusted root", e))?;
        if !raw.media_type.starts_with("application/vnd.dev.sigstore.trustedroot") {
            return Err(VerifyError::malformed(
                "trusted root",
                format!("media type {:?}", raw.media_type),
            ));
        }
        let logs = |logs: Vec<RawLog>| -> Result<Vec<TransparencyLog>, VerifyError> {
            let mut out = Vec::with_capacity(logs.len());
            for l in logs {
                let der = b64(&l.public_key.raw_bytes, "trusted root log key")?;
                let validity = validity(l.public_key.valid_for.as_ref())?;
                let key = if l.public_key.key_details.starts_with("PKCS1_RSA") {
                    PublicKey::from_pkcs1_rsa_der(&der)
                } else {
                    PublicKey::from_spki_der(&der)
                };
                // A log whose key this verifier cannot use is left out: nothing it signed is
                // trusted (fail closed), and the rest of the root stays usable.
                let Ok(key) = key else { continue };
                out.push(TransparencyLog {
                    log_id: b64(&l.log_id.key_id, "trusted root log id")?,
                    key,
                    validity,
                });
            }
            Ok(out)
        };
        let certificate_authorities = raw
            .certificate_authorities
            .into_iter()
            .map(|ca| {
                Ok(CertificateAuthority {
                    chain: ca
                        .cert_chain
                        .certificates
                        .iter()
                        .map(|c| b64(&c.raw_bytes, "trusted root certificate"))
                        .collect::<Result<_, _>>()?,
                    validity: validity(ca.valid_for.as_ref())?,
                })
            })
            .collect::<Result<_, VerifyError>>()?;
        Ok(Self {
            tlogs: logs(raw.tlogs)?,
            certificate_authorities,
            ctlogs: logs(raw.ctlogs)?,
        })
    }

    /// A root holding one Rekor key, valid at any time: a public-key attestor's
    /// `transparencyLogOptions.publicKey`.
    pub fn with_rekor_key(key: PublicKey) -> Self {
        Self {
            tlogs: vec![TransparencyLog {
                log_id: key.key_id().to_vec(),
                key,
                validity: Validity {
                    start: i64::MIN,
                    end: None,
                },
            }],
            ..Self::default()
        }
    }

    /// The Rekor log of `log_id`.
    pub(crate) fn tlog(&self, log_id: &[u8]) -> Option<&TransparencyLog> {
        self.tlogs.iter().find(|l| l.log_id == log_id)
    }
}

pub(crate) fn b64(text: &str, what: &'static str) -> Result<Vec<u8>, VerifyError> {
    STANDARD
        .decode(text)
        .map_err(|e| VerifyError::malformed(what, format!("bad base64: {e}")))
}

fn validity(raw: Option<&RawValidity>) -> Result<Validity, VerifyError> {
    let raw = raw.ok_or_else(|| VerifyError::malformed("trusted root", "a key or CA has no validFor"))?;
    let start = raw
        .start
        .as_deref()
        .ok_or_else(|| VerifyError::malformed("trusted root", "a validFor has no start"))?;
    Ok(Validity {
        start: rfc3339(start)?,
        end: raw.end.as_deref().map(rfc3339).transpose()?,
    })
}

fn rfc3339(text: &str) -> Result<i64, VerifyError> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| VerifyError::malformed("trusted root", format!("time {text:?}: {e}")))
}
