//! `admission`: `AdmissionService.Review` with one AdmissionReview, through the
//! [`crate::load`] driver.
//!
//! The review file is parsed once and re-serialised as compact JSON (as the API server
//! sends it), with `request.uid` cut out: each call joins the two halves around a fresh uid,
//! so no two calls send the same uid (a server that caches by uid gains nothing) and the
//! generator does no JSON work per call. The uid also goes in `request_id`, so that a no-op
//! server can echo it without parsing the review. A call succeeds when the response carries
//! a decision whose uid, and a `request_id`, equal the ones sent.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use clap::Args;
use portcullis_proto::admission::v1::ReviewRequest;
use portcullis_proto::admission::v1::admission_service_client::AdmissionServiceClient;
use portcullis_proto::common::v1::{ResourceRef, resource_ref};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Channel;

use crate::load::{self, LoadOptions, Outcome, Report};

/// Arguments of `admission`.
#[derive(Debug, Args)]
pub struct AdmissionArgs {
    /// The admission service, `http://HOST:PORT`; repeat it for several replicas: the
    /// connections are spread over them in turn and the report counts the calls each answered.
    #[arg(long, required = true)]
    pub server: Vec<String>,
    /// The connector key, sent as `authorization: Bearer KEY`.
    #[arg(long, env = "PORTCULLIS_CONNECTOR_KEY", hide_env_values = true)]
    pub key: String,
    /// The cluster id to name in each request; absent: the connector key's own cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// The AdmissionReview JSON file (e.g. crates/engine/benches/data/review-8k.json).
    #[arg(long)]
    pub review: PathBuf,
    /// How to load the server.
    #[command(flatten)]
    pub load: LoadOptions,
}

/// Stands for the uid while the template is serialised; nothing else in a review is it.
const PLACEHOLDER: &str = "portcullis-loadgen-uid-placeholder-5d41c9e07b";

/// A review with its `request.uid` cut out, as compact JSON.
#[derive(Debug, Clone)]
pub struct ReviewTemplate {
    before: Vec<u8>,
    after: Vec<u8>,
}

impl ReviewTemplate {
    /// Parses an AdmissionReview and cuts out its `request.uid` (which must be a string).
    pub fn new(json: &[u8]) -> Result<ReviewTemplate> {
        let mut review: serde_json::Value = serde_json::from_slice(json).context("the review is not JSON")?;
        let Some(uid) = review.get_mut("request").and_then(|r| r.get_mut("uid")) else {
            bail!("the review has no request.uid");
        };
        if !uid.is_string() {
            bail!("request.uid is not a string");
        }
        *uid = serde_json::Value::String(PLACEHOLDER.to_owned());
        let text = serde_json::to_vec(&review).context("serialising the review")?;
        let needle = PLACEHOLDER.as_bytes();
        let found: Vec<usize> = text
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .map(|(at, _)| at)
            .collect();
        let [at] = found.as_slice() else {
            bail!("the review contains the loadgen's uid placeholder; it cannot be used");
        };
        let (before, rest) = text.split_at(*at);
        let after = rest.get(needle.len()..).unwrap_or_default();
        Ok(ReviewTemplate {
            before: before.to_vec(),
            after: after.to_vec(),
        })
    }

    /// The review with `uid` as its `request.uid`.
    pub fn review(&self, uid: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.before.len() + uid.len() + self.after.len());
        out.extend_from_slice(&self.before);
        out.extend_from_slice(uid.as_bytes());
        out.extend_from_slice(&self.after);
        out
    }

    /// The uid of `body` when it is this review with only its uid changed (a plain string
    /// with no escapes): what a no-op server reads instead of parsing the review.
    pub fn uid_of<'a>(&self, body: &'a [u8]) -> Option<&'a str> {
        let end = body.len().checked_sub(self.after.len())?;
        if end < self.before.len() || !body.starts_with(&self.before) || !body.ends_with(&self.after) {
            return None;
        }
        let uid = std::str::from_utf8(body.get(self.before.len()..end)?).ok()?;
        (!uid.contains(['"', '\\'])).then_some(uid)
    }

    /// The size of a review with a 36-character uid.
    pub fn len(&self) -> usize {
        self.before.len() + 36 + self.after.len()
    }

    /// Never: a review is never empty (here for `len`'s sake).
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The uid of call `n` of run `run`: a 36-character UUID-shaped string (version 4, variant
/// bits set), unique per call within a run and unlikely to repeat across runs.
pub fn call_uid(run: u32, n: u64) -> String {
    // 16 + 48 bits: every u64 gives a different uid.
    format!("{run:08x}-{:04x}-4000-8000-{:012x}", n >> 48, n & 0xffff_ffff_ffff)
}

/// A run id from the clock and the process id (no randomness needed: uids only have to
/// differ between runs against one server).
pub(crate) fn run_id() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    (nanos as u32) ^ std::process::id().rotate_left(16)
}

/// One Review call.
async fn call(
    channel: Channel,
    key: AsciiMetadataValue,
    cluster: Option<ResourceRef>,
    review: Vec<u8>,
    uid: String,
) -> Outcome {
    let mut request = tonic::Request::new(ReviewRequest {
        cluster,
        admission_review_json: review.into(),
        request_id: uid.clone(),
    });
    request.metadata_mut().insert("authorization", key);
    match AdmissionServiceClient::new(channel).review(request).await {
        Ok(response) => {
            let answer = response.into_inner();
            match answer.decision {
                None => Err("no-decision".to_owned()),
                Some(decision) if decision.uid != uid => Err("wrong-uid".to_owned()),
                Some(_) if answer.request_id != uid => Err("wrong-request-id".to_owned()),
                Some(_) => Ok(()),
            }
        }
        Err(status) => Err(format!("{:?}", status.code())),
    }
}

/// Runs `admission`.
pub async fn run(args: &AdmissionArgs) -> Result<Report> {
    let text = std::fs::read(&args.review).with_context(|| format!("reading {}", args.review.display()))?;
    let template = Arc::new(ReviewTemplate::new(&text).with_context(|| format!("in {}", args.review.display()))?);
    let key: AsciiMetadataValue =
        MetadataValue::try_from(format!("Bearer {}", args.key.trim())).context("--key is not valid metadata")?;
    let cluster = args.cluster.as_ref().map(|id| ResourceRef {
        r#ref: Some(resource_ref::Ref::Id(id.clone())),
    });
    let connections = load::connect(&args.server, &args.load).await?;
    let (run, counter) = (run_id(), Arc::new(AtomicU64::new(0)));
    let bytes = template.len();
    let mut report = load::drive(&args.load, connections, "Review", {
        let (template, counter) = (template.clone(), counter.clone());
        move |_, channel| {
            let uid = call_uid(run, counter.fetch_add(1, Ordering::Relaxed));
            call(channel, key.clone(), cluster.clone(), template.review(&uid), uid)
        }
    })
    .await?;
    // Every call sent, the unrecorded ones too: what the servers together answered (the
    // replicas' own counts are checked against it).
    report.notes.push((
        "calls".to_owned(),
        format!(
            "{} sent in all (first calls and warm-up included)",
            counter.load(Ordering::Relaxed)
        ),
    ));
    report.notes.insert(
        0,
        (
            "review".to_owned(),
            format!(
                "{} ({bytes} bytes of compact JSON, request.uid unique per call)",
                args.review.display()
            ),
        ),
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn the_template_rewrites_only_the_request_uid() {
        let review = br#"{"kind": "AdmissionReview", "request": {"uid": "abc", "userInfo": {"uid": "abc"},
            "object": {"metadata": {"uid": "abc"}}}}"#;
        let template = ReviewTemplate::new(review).unwrap();
        let uid = call_uid(7, 42);
        let out: serde_json::Value = serde_json::from_slice(&template.review(&uid)).unwrap();
        assert_eq!(out["request"]["uid"], uid.as_str());
        assert_eq!(out["request"]["userInfo"]["uid"], "abc");
        assert_eq!(out["request"]["object"]["metadata"]["uid"], "abc");
        assert_eq!(template.review(&uid).len(), template.len());
        assert!(!template.review(&uid).contains(&b' '), "compact JSON");
        assert_eq!(template.uid_of(&template.review(&uid)), Some(uid.as_str()));
        assert_eq!(
            template.uid_of(&template.review("a\\\"b")),
            None,
            "an escaped uid is parsed"
        );
        assert_eq!(template.uid_of(review), None, "another body");
        assert_eq!(template.uid_of(b""), None);
    }

    #[test]
    fn reviews_without_a_string_uid_are_refused() {
        assert!(ReviewTemplate::new(b"not json").is_err());
        assert!(ReviewTemplate::new(br#"{"request": {}}"#).is_err());
        assert!(ReviewTemplate::new(br#"{"request": {"uid": 5}}"#).is_err());
        let trap = format!(r#"{{"request": {{"uid": "x", "name": "{PLACEHOLDER}"}}}}"#);
        assert!(ReviewTemplate::new(trap.as_bytes()).is_err());
    }

    #[test]
    fn call_uids_are_uuid_shaped_and_distinct() {
        let a = call_uid(0xdead_beef, 0);
        let b = call_uid(0xdead_beef, 1);
        let c = call_uid(0xdead_beef, u64::MAX);
        for uid in [&a, &b, &c] {
            assert_eq!(uid.len(), 36, "{uid}");
            let groups: Vec<usize> = uid.split('-').map(str::len).collect();
            assert_eq!(groups, [8, 4, 4, 4, 12], "{uid}");
        }
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert!(a.starts_with("deadbeef-"));
    }
}
