//! Keyless (Fulcio) certificates: the chain to a CA of the trusted root, validity at the log
//! entry's time, the embedded SCTs, and the identity (SAN and OIDC issuer).

use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::der;
use crate::error::VerifyError;
use crate::key::{Hash, KeyKind, PublicKey};
use crate::trust::TrustedRoot;

const SCT_LIST: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0xd6, 0x79, 0x02, 0x04, 0x02];
const ISSUER_V2: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xbf, 0x30, 0x01, 0x08];
const ISSUER_V1: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xbf, 0x30, 0x01, 0x01];

/// The expected signer of a keyless signature.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The OIDC issuer the certificate must name.
    pub issuer: String,
    /// The SAN (email or URI) the certificate must carry.
    pub subject: Subject,
}

/// How the SAN is matched.
#[derive(Debug, Clone)]
pub enum Subject {
    /// Equal to this.
    Exact(String),
    /// Fully matching this expression (anchored at both ends).
    Pattern(regex::Regex),
}

impl Subject {
    /// A `subjectRegExp`, compiled to match whole SANs only.
    pub fn pattern(expression: &str) -> Result<Self, VerifyError> {
        regex::Regex::new(&format!("^(?:{expression})$"))
            .map(Self::Pattern)
            .map_err(|e| VerifyError::Identity(format!("subjectRegExp does not compile: {e}")))
    }

    fn matches(&self, san: &str) -> bool {
        match self {
            Self::Exact(s) => s == san,
            Self::Pattern(re) => re.is_match(san),
        }
    }
}

pub(crate) fn parse(der: &[u8]) -> Result<X509Certificate<'_>, VerifyError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(VerifyError::Certificate("trailing bytes after the certificate".into())),
        Err(e) => Err(VerifyError::Certificate(format!("not an X.509 certificate: {e}"))),
    }
}

/// Verifies that `issuer` signed `cert`.
fn signed_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> Result<(), VerifyError> {
    let key = PublicKey::from_spki(issuer.public_key())?;
    let (ec, hash) = match cert.signature_algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.10045.4.3.2" => (true, Hash::Sha256),
        "1.2.840.10045.4.3.3" => (true, Hash::Sha384),
        "1.2.840.113549.1.1.11" => (false, Hash::Sha256),
        "1.2.840.113549.1.1.12" => (false, Hash::Sha384),
        "1.2.840.113549.1.1.13" => (false, Hash::Sha512),
        "1.3.101.112" if key.kind() == KeyKind::Ed25519 => (false, Hash::Sha512),
        other => {
            return Err(VerifyError::Certificate(format!(
                "unsupported signature algorithm {other}"
            )));
        }
    };
    // The algorithm the certificate names must be the issuer key's.
    let is_ec = matches!(key.kind(), KeyKind::EcdsaP256 | KeyKind::EcdsaP384);
    if ec != is_ec {
        return Err(VerifyError::Certificate(
            "signature algorithm does not match the issuer's key".into(),
        ));
    }
    key.verify_with(hash, cert.tbs_certificate.as_ref(), &cert.signature_value.data)
        .map_err(|_| VerifyError::Certificate(format!("{} is not signed by {}", cert.subject(), issuer.subject())))
}

fn valid_at(cert: &X509Certificate<'_>, time: i64) -> bool {
    let v = cert.validity();
    v.not_before.timestamp() <= time && time <= v.not_after.timestamp()
}

/// Verifies a keyless signing certificate at `time` (the log's integrated time): chain,
/// validity, SCT and identity. `unverified_times` (RFC 3161 timestamps whose TSA is not
/// verified) can only refuse: each must lie in the certificate's validity too. Returns the
/// leaf's key.
pub(crate) fn verify_leaf(
    leaf_der: &[u8],
    root: &TrustedRoot,
    identity: &Identity,
    time: i64,
    unverified_times: &[i64],
) -> Result<PublicKey, VerifyError> {
    let leaf = parse(leaf_der)?;
    if leaf.is_ca() {
        return Err(VerifyError::Certificate("the signing certificate is a CA".into()));
    }
    if !valid_at(&leaf, time) {
        return Err(VerifyError::Certificate(format!(
            "the signing certificate (valid {} to {}) was not valid at the log entry's time {time}",
            leaf.validity().not_before,
            leaf.validity().not_after
        )));
    }
    let code_signing = leaf
        .extended_key_usage()
        .ok()
        .flatten()
        .is_some_and(|eku| eku.value.code_signing);
    if !code_signing {
        return Err(VerifyError::Certificate(
            "the signing certificate is not for code signing".into(),
        ));
    }
    for t in unverified_times {
        if !valid_at(&leaf, *t) {
            return Err(VerifyError::Certificate(format!(
                "a timestamp the bundle carries ({t}) lies outside the signing certificate's validity"
            )));
        }
    }
    let issuer_der = chain_to_root(&leaf, root, time)?;
    let issuer = parse(&issuer_der)?;
    verify_scts(&leaf, &issuer, root)?;
    check_identity(&leaf, identity)?;
    PublicKey::from_spki(leaf.public_key())
}

/// Finds a CA of the root, valid at `time`, whose chain issues `leaf`; returns the issuing
/// certificate (DER).
fn chain_to_root(leaf: &X509Certificate<'_>, root: &TrustedRoot, time: i64) -> Result<Vec<u8>, VerifyError> {
    let mut why = String::from("no certificate authority of the trusted root was valid at that time");
    for ca in root
        .certificate_authorities
        .iter()
        .filter(|ca| ca.validity.contains(time))
    {
        match chain_holds(leaf, &ca.chain, time) {
            Ok(()) => {
                if let Some(first) = ca.chain.first() {
                    return Ok(first.clone());
                }
            }
            Err(e) => why = e.to_string(),
        }
    }
    Err(VerifyError::Certificate(format!(
        "does not chain to a trusted Fulcio CA: {why}"
    )))
}

fn chain_holds(leaf: &X509Certificate<'_>, chain: &[Vec<u8>], time: i64) -> Result<(), VerifyError> {
    let certs = chain.iter().map(|d| parse(d)).collect::<Result<Vec<_>, _>>()?;
    let mut child = leaf;
    for ca in &certs {
        if !ca.is_ca() {
            return Err(VerifyError::Certificate(format!("{} is not a CA", ca.subject())));
        }
        if !valid_at(ca, time) {
            return Err(VerifyError::Certificate(format!("{} was not valid then", ca.subject())));
        }
        signed_by(child, ca)?;
        child = ca;
    }
    if certs.is_empty() {
        return Err(VerifyError::Certificate("an empty CA chain".into()));
    }
    Ok(())
}

/// At least one embedded SCT must verify with a CT log key of the root.
fn verify_scts(
    leaf: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    root: &TrustedRoot,
) -> Result<(), VerifyError> {
    let scts = leaf
        .extensions()
        .iter()
        .find(|e| e.oid.as_bytes() == SCT_LIST)
        .ok_or_else(|| VerifyError::Certificate("no embedded SCT (certificate transparency)".into()))?;
    let ParsedExtension::SCT(list) = scts.parsed_extension() else {
        return Err(VerifyError::Certificate("the SCT list does not parse".into()));
    };
    let tbs = der::tbs_without_extension(leaf.tbs_certificate.as_ref(), SCT_LIST)
        .ok_or_else(|| VerifyError::Certificate("the precertificate cannot be rebuilt".into()))?;
    let tbs_len = u32::try_from(tbs.len())
        .ok()
        .filter(|l| *l < 1 << 24)
        .ok_or_else(|| VerifyError::Certificate("certificate too large".into()))?;
    let issuer_key_hash: [u8; 32] = Sha256::digest(issuer.public_key().raw).into();
    for sct in list {
        let Some(log) = root.ctlogs.iter().find(|l| l.log_id == sct.id.key_id.as_slice()) else {
            continue;
        };
        let Ok(seconds) = i64::try_from(sct.timestamp / 1000) else {
            continue;
        };
        if sct.version.0 != 0 || !log.validity.contains(seconds) {
            continue;
        }
        let Ok(ext_len) = u16::try_from(sct.extensions.0.len()) else {
            continue;
        };
        // RFC 6962 section 3.2: the signed structure of a precertificate entry.
        let mut signed = Vec::with_capacity(tbs.len() + 64);
        signed.push(0); // version v1
        signed.push(0); // signature_type certificate_timestamp
        signed.extend_from_slice(&sct.timestamp.to_be_bytes());
        signed.extend_from_slice(&1u16.to_be_bytes()); // entry_type precert_entry
        signed.extend_from_slice(&issuer_key_hash);
        signed.extend_from_slice(tbs_len.to_be_bytes().get(1..).unwrap_or_default());
        signed.extend_from_slice(&tbs);
        signed.extend_from_slice(&ext_len.to_be_bytes());
        signed.extend_from_slice(sct.extensions.0);
        let hash = match sct.signature.hash_alg_id {
            4 => Hash::Sha256,
            5 => Hash::Sha384,
            6 => Hash::Sha512,
            _ => continue,
        };
        if log.key.verify_with(hash, &signed, sct.signature.data).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::Certificate(
        "no embedded SCT verifies with a CT log key of the trusted root".into(),
    ))
}

fn check_identity(leaf: &X509Certificate<'_>, identity: &Identity) -> Result<(), VerifyError> {
    let sans: Vec<&str> = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::RFC822Name(s) | GeneralName::URI(s) => Some(*s),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if !sans.iter().any(|s| identity.subject.matches(s)) {
        return Err(VerifyError::Identity(format!(
            "the certificate's subject {sans:?} is not the attestor's"
        )));
    }
    let issuer = issuer_of(leaf).ok_or_else(|| VerifyError::Identity("the certificate names no OIDC issuer".into()))?;
    if issuer != identity.issuer {
        return Err(VerifyError::Identity(format!(
            "the certificate's OIDC issuer {issuer:?} is not {:?}",
            identity.issuer
        )));
    }
    Ok(())
}

/// The OIDC issuer: the DER UTF8String extension, else the legacy raw-string one.
fn issuer_of<'a>(leaf: &'a X509Certificate<'_>) -> Option<&'a str> {
    let ext = |oid: &[u8]| {
        leaf.extensions()
            .iter()
            .find(|e| e.oid.as_bytes() == oid)
            .map(|e| e.value)
    };
    match ext(ISSUER_V2) {
        Some(v) => der::utf8_string(v),
        None => ext(ISSUER_V1).and_then(|v| std::str::from_utf8(v).ok()),
    }
}
