//! The signature stage backed by the signature service over the bus
//! (`pc.rpc.signature.verify`, request/reply in the service's queue group). Built from
//! portcullis-proto's messages: the signature service depends on this crate, not the reverse.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use portcullis_bus::Bus;
use portcullis_domain::topic::SIGNATURE_VERIFY_SUBJECT;
use portcullis_engine::evaluate::VerdictMap;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::signature::v1 as ps;
use prost::Message as _;

use crate::BoxFuture;
use crate::review::{ImageToVerify, SignatureStage};

/// Asks the signature service for verdicts over the bus, one request per image, all at
/// once, each waiting at most `timeout` (the review's signature deadline bounds the whole).
#[derive(Clone)]
pub struct BusSignatureStage {
    bus: Bus,
    timeout: Duration,
}

impl BusSignatureStage {
    /// A stage asking over `bus`, each request waiting at most `timeout`.
    pub fn new(bus: Bus, timeout: Duration) -> Self {
        Self { bus, timeout }
    }

    /// One image's answer, or why there is none.
    async fn ask(&self, tenant: &str, cluster_id: &str, image: &ImageToVerify) -> Result<ps::VerifyResponse, String> {
        let request = ps::VerifyRequest {
            tenant_id: tenant.to_owned(),
            // The cluster's registry credentials are the service's to use.
            cluster: (!cluster_id.is_empty()).then(|| pc::ResourceRef {
                r#ref: Some(pc::resource_ref::Ref::Id(cluster_id.to_owned())),
            }),
            image: image.image.clone(),
            attestors: image.attestors.clone(),
            digest: image.digest.clone().unwrap_or_default(),
        };
        let reply = self
            .bus
            .request_with_headers(
                SIGNATURE_VERIFY_SUBJECT,
                // The service's span continues the review's trace.
                portcullis_kit::trace::current_headers(),
                Bytes::from(request.encode_to_vec()),
                self.timeout,
            )
            .await
            .map_err(|e| format!("the signature service did not answer for {}: {e}", image.image))?;
        let response = ps::VerifyResponse::decode(reply)
            .map_err(|e| format!("the signature service's reply for {} is malformed: {e}", image.image))?;
        if let Some(error) = &response.error {
            return Err(format!(
                "the signature service refused the request for {} (code {}): {}",
                image.image, error.code, error.message
            ));
        }
        Ok(response)
    }
}

/// Adds one answer to `map`: VERIFIED is true, NOT_VERIFIED false (a violation); ERROR and
/// anything else are left out, so the engine reports the attestor not judged.
fn add_answer(map: &mut VerdictMap, image: &ImageToVerify, response: &ps::VerifyResponse) {
    let mut verdicts: HashMap<String, bool> = HashMap::new();
    for v in &response.verdicts {
        // Only attestors asked for count: an answer naming others is ignored.
        if !image.attestors.contains(&v.attestor) {
            continue;
        }
        match ps::Verdict::try_from(v.verdict) {
            Ok(ps::Verdict::Verified) => {
                verdicts.insert(v.attestor.clone(), true);
            }
            Ok(ps::Verdict::NotVerified) => {
                verdicts.insert(v.attestor.clone(), false);
            }
            _ => tracing::debug!(
                image = %image.image, attestor = %v.attestor, reason = %v.reason,
                "the signature service could not judge an attestor"
            ),
        }
    }
    // Keyed by reference (what the engine always has) and by the digest checked.
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
    ) -> BoxFuture<'a, Result<VerdictMap, String>> {
        Box::pin(async move {
            let answers = futures::future::join_all(images.iter().map(|i| self.ask(tenant, cluster_id, i))).await;
            let mut map = VerdictMap::default();
            for (image, answer) in images.iter().zip(answers) {
                // No answer for an image: every rule is not judged, with the reason.
                add_answer(&mut map, image, &answer?);
            }
            Ok(map)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(attestor: &str, verdict: ps::Verdict) -> ps::AttestorVerdict {
        ps::AttestorVerdict {
            attestor: attestor.to_owned(),
            verdict: verdict as i32,
            reason: "why".to_owned(),
            ..ps::AttestorVerdict::default()
        }
    }

    #[test]
    fn verified_is_true_not_verified_false_error_left_out() {
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
        let mut map = VerdictMap::default();
        add_answer(&mut map, &image, &response);
        let by_ref = map.0.get("r.example/app:1").cloned().unwrap_or_default();
        assert_eq!(by_ref.get("good"), Some(&true));
        assert_eq!(by_ref.get("bad"), Some(&false));
        assert_eq!(by_ref.get("broken"), None);
        assert_eq!(by_ref.get("other"), None);
        assert_eq!(map.0.get("sha256:ab").and_then(|m| m.get("good")), Some(&true));
    }
}
