//! The signature and digest stages backed by the signature service over the bus
//! (`pc.rpc.signature.verify` and `pc.rpc.signature.resolve`, request/reply in the service's
//! queue group). Built from portcullis-proto's messages: the signature service depends on
//! this crate, not the reverse.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use portcullis_bus::Bus;
use portcullis_domain::ErrorKind;
use portcullis_domain::topic::{SIGNATURE_RESOLVE_SUBJECT, SIGNATURE_VERIFY_SUBJECT};
use portcullis_engine::evaluate::{DigestLookup, VerdictMap};
use portcullis_proto::common::v1 as pc;
use portcullis_proto::signature::v1 as ps;
use prost::Message;

use crate::BoxFuture;
use crate::review::{DigestStage, ImageToVerify, SignatureAnswers, SignatureOutcome, SignatureStage, SignatureVerdict};

/// The request plumbing both stages share: one request on a subject, waiting at most
/// `timeout`, the reply decoded.
#[derive(Clone)]
struct BusRpc {
    bus: Bus,
    timeout: Duration,
}

impl BusRpc {
    /// `request` on `subject`; the decoded reply, or why there is none (`what` names the
    /// image in the message).
    async fn call<R: Message + Default>(&self, subject: &str, request: &impl Message, what: &str) -> Result<R, String> {
        let reply = self
            .bus
            .request_with_headers(
                subject,
                // The service's span continues the review's trace.
                portcullis_kit::trace::current_headers(),
                Bytes::from(request.encode_to_vec()),
                self.timeout,
            )
            .await
            .map_err(|e| format!("the signature service did not answer for {what}: {e}"))?;
        R::decode(reply).map_err(|e| format!("the signature service's reply for {what} is malformed: {e}"))
    }
}

/// The cluster whose registry credentials the service uses (none: anonymous).
fn cluster_ref(cluster_id: &str) -> Option<pc::ResourceRef> {
    (!cluster_id.is_empty()).then(|| pc::ResourceRef {
        r#ref: Some(pc::resource_ref::Ref::Id(cluster_id.to_owned())),
    })
}

/// Asks the signature service for verdicts over the bus, one request per image, all at
/// once, each waiting at most `timeout` (the review's signature deadline bounds the whole).
#[derive(Clone)]
pub struct BusSignatureStage {
    rpc: BusRpc,
}

impl BusSignatureStage {
    /// A stage asking over `bus`, each request waiting at most `timeout`.
    pub fn new(bus: Bus, timeout: Duration) -> Self {
        Self {
            rpc: BusRpc { bus, timeout },
        }
    }

    /// One image's answer, or why there is none.
    async fn ask(&self, tenant: &str, cluster_id: &str, image: &ImageToVerify) -> Result<ps::VerifyResponse, String> {
        let request = ps::VerifyRequest {
            tenant_id: tenant.to_owned(),
            cluster: cluster_ref(cluster_id),
            image: image.image.clone(),
            attestors: image.attestors.clone(),
            // Resolved by the digest stage when it could be: the service need not again.
            digest: image.digest.clone().unwrap_or_default(),
        };
        let response: ps::VerifyResponse = self.rpc.call(SIGNATURE_VERIFY_SUBJECT, &request, &image.image).await?;
        if let Some(error) = &response.error {
            return Err(format!(
                "the signature service refused the request for {} (code {}): {}",
                image.image, error.code, error.message
            ));
        }
        Ok(response)
    }
}

/// Adds one answer to `answers`: VERIFIED is true, NOT_VERIFIED false (a violation); ERROR
/// and anything else are left out of the verdicts, so the engine reports the attestor not
/// judged. Every verdict, with its reason, goes to the records.
fn add_answer(answers: &mut SignatureAnswers, image: &ImageToVerify, response: &ps::VerifyResponse) {
    let mut verdicts: HashMap<String, bool> = HashMap::new();
    for v in &response.verdicts {
        // Only attestors asked for count: an answer naming others is ignored.
        if !image.attestors.contains(&v.attestor) {
            continue;
        }
        let outcome = match ps::Verdict::try_from(v.verdict) {
            Ok(ps::Verdict::Verified) => SignatureOutcome::Verified,
            Ok(ps::Verdict::NotVerified) => SignatureOutcome::NotVerified,
            _ => SignatureOutcome::Error,
        };
        match outcome {
            SignatureOutcome::Verified => {
                verdicts.insert(v.attestor.clone(), true);
            }
            SignatureOutcome::NotVerified => {
                verdicts.insert(v.attestor.clone(), false);
            }
            SignatureOutcome::Error => {}
        }
        answers.records.push(SignatureVerdict {
            image: image.image.clone(),
            digest: response.digest.clone(),
            attestor: v.attestor.clone(),
            outcome,
            reason: v.reason.clone(),
        });
    }
    // Keyed by reference (what the engine always has) and by the digest checked.
    let map = &mut answers.verdicts;
    if !response.digest.is_empty() && image.digest.as_deref().is_none_or(|d| d == response.digest) {
        map.0
            .entry(response.digest.clone())
            .or_default()
            .extend(verdicts.clone());
    }
    map.0.entry(image.image.clone()).or_default().extend(verdicts);
}

impl SignatureStage for BusSignatureStage {
    fn verify<'a>(
        &'a self,
        tenant: &'a str,
        cluster_id: &'a str,
        images: &'a [ImageToVerify],
    ) -> BoxFuture<'a, Result<SignatureAnswers, String>> {
        Box::pin(async move {
            let answers = futures::future::join_all(images.iter().map(|i| self.ask(tenant, cluster_id, i))).await;
            let mut out = SignatureAnswers {
                verdicts: VerdictMap::default(),
                records: Vec::new(),
            };
            for (image, answer) in images.iter().zip(answers) {
                // No answer for an image: every rule is not judged, with the reason.
                add_answer(&mut out, image, &answer?);
            }
            Ok(out)
        })
    }
}

/// Asks the signature service for the digests of tag-only references over the bus, one
/// request per reference, all at once, each waiting at most `timeout` (the review's digest
/// deadline bounds the whole).
#[derive(Clone)]
pub struct BusDigestStage {
    rpc: BusRpc,
}

impl BusDigestStage {
    /// A stage asking over `bus`, each request waiting at most `timeout`.
    pub fn new(bus: Bus, timeout: Duration) -> Self {
        Self {
            rpc: BusRpc { bus, timeout },
        }
    }

    /// What the service says of one reference.
    async fn ask(&self, tenant: &str, cluster_id: &str, reference: &str) -> DigestLookup {
        let request = ps::ResolveDigestRequest {
            tenant_id: tenant.to_owned(),
            cluster: cluster_ref(cluster_id),
            image: reference.to_owned(),
        };
        match self.rpc.call(SIGNATURE_RESOLVE_SUBJECT, &request, reference).await {
            Ok(response) => resolution(reference, &response),
            Err(why) => DigestLookup::Unavailable(why),
        }
    }
}

/// What one reply says: the digest; NotFound only when the registry said so (code 5);
/// anything else (the registry unreachable or slow, a refusal, an empty answer) is
/// unavailable, so only that image follows the failure mode.
fn resolution(reference: &str, response: &ps::ResolveDigestResponse) -> DigestLookup {
    match &response.error {
        Some(error) if i64::from(error.code) == i64::from(ErrorKind::NotFound.grpc_code_number()) => {
            DigestLookup::NotFound
        }
        Some(error) => DigestLookup::Unavailable(format!(
            "resolving {reference} (code {}): {}",
            error.code, error.message
        )),
        None if response.digest.is_empty() => {
            DigestLookup::Unavailable(format!("resolving {reference}: the signature service gave no digest"))
        }
        None => DigestLookup::Found(response.digest.clone()),
    }
}

impl DigestStage for BusDigestStage {
    fn resolve<'a>(
        &'a self,
        tenant: &'a str,
        cluster_id: &'a str,
        references: &'a [String],
    ) -> BoxFuture<'a, HashMap<String, DigestLookup>> {
        Box::pin(async move {
            let answers = futures::future::join_all(references.iter().map(|r| self.ask(tenant, cluster_id, r))).await;
            references.iter().cloned().zip(answers).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    fn verdict(attestor: &str, verdict: ps::Verdict) -> ps::AttestorVerdict {
        ps::AttestorVerdict {
            attestor: attestor.to_owned(),
            verdict: verdict as i32,
            reason: format!("why {attestor}"),
            ..ps::AttestorVerdict::default()
        }
    }

    #[test]
    fn verified_is_true_not_verified_false_error_left_out_and_every_verdict_recorded() {
        let image = ImageToVerify {
            image: "r.example/app:1".to_owned(),
            digest: None,
            attestors: vec!["good".into(), "bad".into(), "broken".into()],
        };
        let response = ps::VerifyResponse {
            image: image.image.clone(),
            digest: "sha256:ab".to_owned(),
            verdicts: vec![
                verdict("good", ps::Verdict::Verified),
                verdict("bad", ps::Verdict::NotVerified),
                verdict("broken", ps::Verdict::Error),
                verdict("other", ps::Verdict::Verified),
            ],
            ..ps::VerifyResponse::default()
        };
        let mut answers = SignatureAnswers::default();
        add_answer(&mut answers, &image, &response);
        let map = &answers.verdicts;
        let by_ref = map.0.get("r.example/app:1").cloned().unwrap_or_default();
        assert_eq!(by_ref.get("good"), Some(&true));
        assert_eq!(by_ref.get("bad"), Some(&false));
        assert_eq!(by_ref.get("broken"), None);
        assert_eq!(by_ref.get("other"), None);
        assert_eq!(map.0.get("sha256:ab").and_then(|m| m.get("good")), Some(&true));
        // The records keep every attestor asked for, the error's reason included.
        let records: Vec<(&str, &str, SignatureOutcome, &str)> = answers
            .records
            .iter()
            .map(|r| (r.attestor.as_str(), r.digest.as_str(), r.outcome, r.reason.as_str()))
            .collect();
        assert_eq!(
            records,
            [
                ("good", "sha256:ab", SignatureOutcome::Verified, "why good"),
                ("bad", "sha256:ab", SignatureOutcome::NotVerified, "why bad"),
                ("broken", "sha256:ab", SignatureOutcome::Error, "why broken"),
            ]
        );
    }

    fn error(kind: ErrorKind) -> Option<pc::ItemError> {
        Some(pc::ItemError {
            code: u32::try_from(kind.grpc_code_number()).unwrap(),
            message: "registry: said so".to_owned(),
            field: String::new(),
        })
    }

    #[test]
    fn a_digest_is_found_not_found_only_when_the_registry_says_so_else_unavailable() {
        let found = ps::ResolveDigestResponse {
            image: "r.example/app:1".to_owned(),
            digest: "sha256:ab".to_owned(),
            ..ps::ResolveDigestResponse::default()
        };
        assert_eq!(
            resolution("r.example/app:1", &found),
            DigestLookup::Found("sha256:ab".to_owned())
        );
        let not_found = ps::ResolveDigestResponse {
            error: error(ErrorKind::NotFound),
            ..ps::ResolveDigestResponse::default()
        };
        assert_eq!(resolution("r.example/app:1", &not_found), DigestLookup::NotFound);
        for kind in [ErrorKind::Unavailable, ErrorKind::Internal, ErrorKind::InvalidArgument] {
            let failed = ps::ResolveDigestResponse {
                error: error(kind),
                ..ps::ResolveDigestResponse::default()
            };
            let DigestLookup::Unavailable(why) = resolution("r.example/app:1", &failed) else {
                panic!("{kind:?} must be unavailable");
            };
            assert!(
                why.contains("r.example/app:1") && why.contains("registry: said so"),
                "{why}"
            );
        }
        // An answer without a digest or an error says nothing: unavailable, not found.
        assert!(matches!(
            resolution("r.example/app:1", &ps::ResolveDigestResponse::default()),
            DigestLookup::Unavailable(_)
        ));
    }
}
