//! `portcullis-loadgen`: load generators for the Portcullis gRPC services and the admission
//! webhook, and the no-op admission servers (gRPC and HTTPS) that their results are compared
//! with.
//!
//! - [`seed`]: writes the policy store benchmark dataset straight into a database.
//! - [`load`]: the driver every measurement shares: open loop from intended start times
//!   (waiting on a high-resolution timer, [`timer`], so calls leave on time to well under a
//!   millisecond),
//!   or closed loop; latency in an `hdrhistogram`; errors by gRPC code or HTTP status; CPU from `/proc`;
//!   an unrecorded warm-up; a text or JSON report.
//! - [`effective_policy`]: `PolicyService.GetEffectivePolicy` with seeded connector keys.
//! - [`admission`]: `AdmissionService.Review` with one AdmissionReview, its `request.uid`
//!   rewritten per call.
//! - [`webhook`]: the HTTPS validating webhook (`POST /validate/{cluster}`) over HTTP/2 or
//!   HTTP/1.1, with the same review and uid scheme.
//! - [`engine_cost`]: the engine alone on the benchmark review in a hot loop, which bounds
//!   the admission ratio the no-op comparison can show.
//! - [`noop`]: an `AdmissionService` that judges nothing and answers a fixed response,
//!   behind the same server stack (`portcullis_server::GrpcServer`, authentication layer,
//!   permission table) as the real service: the baseline for admission throughput.
//! - [`noop_webhook`]: a webhook handler that judges nothing, behind the real HTTPS transport
//!   (`portcullis_webhook::WebhookServer`): the baseline of the webhook benchmark.

pub mod admission;
pub mod cpu;
pub mod effective_policy;
pub mod engine_cost;
pub mod load;
pub mod noop;
pub mod noop_webhook;
pub mod seed;
pub mod timer;
pub mod webhook;

use std::time::Duration;

use anyhow::{Context, Result};

/// `30s`, `2m`, `500ms`, or plain seconds (`1.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 30s, 2m or 500ms"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{text:?} must be a non-negative duration"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// A runtime with `threads` workers; 1 (or 0) makes a current-thread runtime, so that a
/// generator pinned to one core does not pay for work stealing.
pub fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .context("starting the async runtime")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
