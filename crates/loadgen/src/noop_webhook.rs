//! `noop-webhook`: the baseline of the webhook benchmark. A [`WebhookHandler`] that judges
//! nothing, behind the real transport ([`WebhookServer`]: rustls, HTTP/1.1 or HTTP/2 by ALPN,
//! the same routing, checks, slots and deadlines as `portcullis up --webhook-listen`). It
//! answers [`RESPONSE_REVIEW`] (the size of the real answer to the benchmark review) with the
//! request's uid in place of [`RESPONSE_UID`].
//!
//! Authentication costs what the real adapter's does: the real one looks the bearer up in
//! its key cache twice a request (in `admit`, before the body is read, and again when it
//! judges), so this one makes the same two lookups in [`OneKeyAuthenticator`] (a SHA-256 and
//! a map hit, as the gRPC no-op's one lookup a call).
//!
//! The uid is found without parsing the review when the body is the benchmark template
//! (`--review`: the same file the generator sends) with only its uid changed, which is what
//! the gRPC no-op gets from `request_id`; any other body is read for its `request.uid` by a
//! borrowing parse that skips everything else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use portcullis_server::Authenticator as _;
use portcullis_webhook::{
    AdmitFuture, BoundWebhook, Error, ErrorKind, ReviewFuture, ServeError, WebhookConfig, WebhookHandler,
    WebhookRequest, WebhookServer,
};
use serde::Deserialize;

use crate::admission::ReviewTemplate;
use crate::noop::{OneKeyAuthenticator, RESPONSE_REVIEW, RESPONSE_UID};

/// The no-op webhook handler.
#[derive(Debug)]
pub struct NoopWebhook {
    auth: OneKeyAuthenticator,
    /// The benchmark review around its uid, when known: its uid is then cut out, not parsed.
    template: Option<ReviewTemplate>,
    /// [`RESPONSE_REVIEW`] before and after its uid.
    before: &'static [u8],
    after: &'static [u8],
}

/// `{"request": {"uid": ...}}`, the rest skipped.
#[derive(Deserialize)]
struct UidOnly<'a> {
    #[serde(borrow)]
    request: RequestUid<'a>,
}

#[derive(Deserialize)]
struct RequestUid<'a> {
    #[serde(borrow)]
    uid: std::borrow::Cow<'a, str>,
}

impl NoopWebhook {
    /// Accepts `key`; `template`: the review the generator sends, whose uid it cuts out.
    pub fn new(key: &str, template: Option<ReviewTemplate>) -> NoopWebhook {
        let (before, after) = RESPONSE_REVIEW
            .split_once(RESPONSE_UID)
            .map_or((RESPONSE_REVIEW, ""), |(b, a)| (b, a));
        NoopWebhook {
            auth: OneKeyAuthenticator::new(key),
            template,
            before: before.as_bytes(),
            after: after.as_bytes(),
        }
    }

    /// The request's uid: cut out of the template when the body is it, else parsed.
    fn uid<'a>(&self, body: &'a [u8]) -> Result<std::borrow::Cow<'a, str>, Error> {
        if let Some(uid) = self.template.as_ref().and_then(|t| t.uid_of(body)) {
            return Ok(std::borrow::Cow::Borrowed(uid));
        }
        let parsed: UidOnly<'a> =
            serde_json::from_slice(body).map_err(|e| Error::new(ErrorKind::InvalidArgument, format!("review: {e}")))?;
        Ok(parsed.request.uid)
    }

    /// The fixed answer with `uid` (JSON-escaped as a string's content).
    pub fn answer(&self, body: &[u8]) -> Result<Bytes, Error> {
        let uid = self.uid(body)?;
        let escaped =
            serde_json::to_string(uid.as_ref()).map_err(|e| Error::new(ErrorKind::Internal, format!("uid: {e}")))?;
        let inner = escaped.get(1..escaped.len().saturating_sub(1)).unwrap_or_default();
        let mut out = Vec::with_capacity(self.before.len() + inner.len() + self.after.len());
        out.extend_from_slice(self.before);
        out.extend_from_slice(inner.as_bytes());
        out.extend_from_slice(self.after);
        Ok(Bytes::from(out))
    }

    /// The key's id, as the real adapter's connector check.
    async fn key_id(&self, bearer: &str) -> Result<String, Error> {
        self.auth
            .authenticate(bearer)
            .await
            .map(|key| key.key_id)
            .map_err(|status| Error::new(ErrorKind::Unauthenticated, status.message().to_owned()))
    }
}

impl WebhookHandler for NoopWebhook {
    fn review(&self, request: WebhookRequest) -> ReviewFuture<'_> {
        Box::pin(async move {
            // The real adapter looks the key up again when it judges.
            self.key_id(&request.bearer).await?;
            self.answer(&request.body)
        })
    }

    fn admit<'a>(&'a self, bearer: &'a str) -> AdmitFuture<'a> {
        Box::pin(self.key_id(bearer))
    }
}

/// Binds the no-op webhook on `listen` (port 0: any free port) with the certificate chain
/// and key files and the transport's default limits (those of `portcullis up`), accepting
/// `key`.
pub async fn bind(
    listen: SocketAddr,
    tls_cert: PathBuf,
    tls_key: PathBuf,
    key: &str,
    template: Option<ReviewTemplate>,
) -> Result<BoundWebhook, ServeError> {
    let config = WebhookConfig::new(listen, tls_cert, tls_key);
    WebhookServer::bind(config, Arc::new(NoopWebhook::new(key, template))).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;
    use crate::admission::call_uid;

    const REVIEW: &[u8] = include_bytes!("../../engine/benches/data/review-8k.json");

    #[test]
    fn answers_echo_the_uid_of_the_template_and_of_any_review() {
        let template = ReviewTemplate::new(REVIEW).unwrap();
        let uid = call_uid(9, 77);
        let body = template.review(&uid);
        for handler in [
            NoopWebhook::new("k", Some(template.clone())),
            NoopWebhook::new("k", None),
        ] {
            let answer: serde_json::Value = serde_json::from_slice(&handler.answer(&body).unwrap()).unwrap();
            assert_eq!(answer["response"]["uid"], uid.as_str());
            assert_eq!(answer["response"]["allowed"], true);
            assert_eq!(answer["kind"], "AdmissionReview");
        }
        // Another review: parsed, its uid (escapes and all) echoed.
        let other = br#"{"request": {"uid": "a\"b", "object": {"uid": "not-this"}}}"#;
        let handler = NoopWebhook::new("k", Some(template));
        let answer: serde_json::Value = serde_json::from_slice(&handler.answer(other).unwrap()).unwrap();
        assert_eq!(answer["response"]["uid"], "a\"b");
        let refused = handler.answer(b"{}").unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::InvalidArgument);
    }

    #[tokio::test]
    async fn only_the_key_is_admitted() {
        let handler = NoopWebhook::new("right-key-0123456789", None);
        assert_eq!(handler.admit("right-key-0123456789").await.unwrap(), "loadgen-noop-key");
        let refused = handler.admit("wrong-key-0123456789").await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Unauthenticated);
    }
}
