//! `engine-cost`: what the engine alone costs for one review under one policy, in a hot
//! loop on one thread: the admission service's parse (reading what the policy reads) and
//! evaluation, without its server stack.
//!
//! It bounds the closed-loop ratio the admission benchmark can show. The real service does
//! everything the no-op handler does (the same server stack and authentication layer, the
//! same request, an answer of the same size) plus at least this work, so with `noop` the
//! no-op's server CPU per call and `engine` this figure, the real service's maximum is at
//! most `noop / (noop + engine)` of the no-op's. A hot loop is the engine's best case
//! (warm caches, no other work in between), so the bound is generous.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use portcullis_engine::evaluate::{CompiledPolicy, EvalContext, Verdict};
use time::OffsetDateTime;

use crate::admission::ReviewTemplate;

/// Arguments of `engine-cost`.
#[derive(Debug, clap::Args)]
pub struct EngineCostArgs {
    /// The AdmissionReview (JSON), as the load generator sends it.
    #[arg(long, value_name = "FILE")]
    pub review: PathBuf,
    /// The policy document (JSON or YAML) the real service judges it with.
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// Thread CPU time to spend measuring (after a warm-up of a tenth of it).
    #[arg(long, default_value = "3s", value_parser = crate::parse_duration)]
    pub duration: Duration,
}

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineCost {
    /// Reviews parsed and evaluated.
    pub reviews: u64,
    /// The thread's CPU time for them (wall time where no thread clock exists).
    pub cpu: Duration,
    /// Of them, how many the policy blocked (all or none: the same review each time).
    pub blocked: u64,
}

impl EngineCost {
    /// Microseconds a review.
    pub fn micros_per_review(&self) -> f64 {
        if self.reviews == 0 {
            return 0.0;
        }
        self.cpu.as_secs_f64() * 1e6 / self.reviews as f64
    }
}

/// The calling thread's CPU time so far: only its own work counts, not time it spent
/// preempted on a shared machine.
#[cfg(target_os = "linux")]
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Elsewhere: wall time since the first call (the loop runs alone on its thread).
#[cfg(not(target_os = "linux"))]
fn thread_cpu() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// Parses and evaluates `review` with `policy` in batches until `at_least` of thread CPU
/// has gone by. Fails if the review does not parse, or holds no reviewable object.
pub fn measure(review: &[u8], policy: &CompiledPolicy, at_least: Duration) -> Result<EngineCost> {
    let ctx = EvalContext::offline(OffsetDateTime::now_utc());
    let once = |blocked: &mut u64| -> Result<()> {
        let subjects = policy
            .parse_document(black_box(review))
            .map_err(|e| anyhow::anyhow!("the review: {e}"))?;
        if subjects.is_empty() {
            bail!("the review holds nothing to evaluate");
        }
        for subject in &subjects {
            if black_box(policy.evaluate(subject, &ctx)).verdict == Verdict::Block {
                *blocked += 1;
            }
        }
        Ok(())
    };
    // Batches keep the clock reads out of the figure.
    const BATCH: u64 = 200;
    let mut cost = EngineCost {
        reviews: 0,
        cpu: Duration::ZERO,
        blocked: 0,
    };
    let started = thread_cpu();
    let wall = Instant::now();
    while cost.cpu < at_least {
        for _ in 0..BATCH {
            once(&mut cost.blocked)?;
        }
        cost.reviews += BATCH;
        cost.cpu = thread_cpu().saturating_sub(started);
        // A thread clock that does not move would loop for ever.
        if cost.cpu.is_zero() && wall.elapsed() > at_least * 10 + Duration::from_secs(1) {
            bail!("the thread's CPU clock does not advance");
        }
    }
    Ok(cost)
}

/// Runs `engine-cost`: a warm-up, then the measurement; prints one line, which
/// `bench-admission.sh` reads (`engine_us` and the figure).
pub fn run(args: &EngineCostArgs) -> Result<()> {
    let text = std::fs::read(&args.review).with_context(|| format!("--review {}", args.review.display()))?;
    // The bytes the load generator sends: compact JSON with a fresh uid.
    let review = ReviewTemplate::new(&text)
        .with_context(|| format!("in {}", args.review.display()))?
        .review("0f5cbd4e-6a42-4d0e-9d9c-2b3c8e7f1a60");
    let text = std::fs::read_to_string(&args.policy).with_context(|| format!("--policy {}", args.policy.display()))?;
    let policy = CompiledPolicy::from_text(&text).map_err(|e| anyhow::anyhow!("--policy: {e}"))?;
    measure(&review, &policy, args.duration / 10)?;
    let cost = measure(&review, &policy, args.duration)?;
    println!(
        "engine_us {:.2} (parse + evaluate, hot loop: {} reviews in {:.2} s of thread CPU, {} blocked)",
        cost.micros_per_review(),
        cost.reviews,
        cost.cpu.as_secs_f64(),
        cost.blocked
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const POLICY: &str = include_str!("../data/policy-15-rules.yaml");
    const REVIEW: &[u8] = include_bytes!("../../engine/benches/data/review-8k.json");

    #[test]
    fn measures_the_benchmark_review_under_its_policy() {
        let policy = CompiledPolicy::from_text(POLICY).unwrap();
        let review = ReviewTemplate::new(REVIEW).unwrap().review("a-uid");
        let cost = measure(&review, &policy, Duration::from_millis(20)).unwrap();
        assert!(cost.reviews >= 200, "{cost:?}");
        assert!(cost.reviews.is_multiple_of(200), "whole batches: {cost:?}");
        assert!(cost.cpu >= Duration::from_millis(20), "{cost:?}");
        // The benchmark review is allowed (one log-only finding) under this policy.
        assert_eq!(cost.blocked, 0, "{cost:?}");
        assert!(cost.micros_per_review() > 0.0);
    }

    #[test]
    fn a_review_that_does_not_parse_is_an_error() {
        let policy = CompiledPolicy::from_text(POLICY).unwrap();
        let err = measure(b"{\"kind\": ", &policy, Duration::from_millis(1)).unwrap_err();
        assert!(err.to_string().starts_with("the review: "), "{err}");
    }

    #[test]
    fn no_reviews_cost_nothing_a_review() {
        let cost = EngineCost {
            reviews: 0,
            cpu: Duration::from_secs(1),
            blocked: 0,
        };
        assert_eq!(cost.micros_per_review(), 0.0);
        let cost = EngineCost {
            reviews: 4,
            cpu: Duration::from_micros(10),
            blocked: 0,
        };
        assert!((cost.micros_per_review() - 2.5).abs() < 1e-9);
    }
}
