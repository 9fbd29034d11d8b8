//! The engine's hot path in a loop, for instruction counts under `valgrind --tool=callgrind`
//! (repeatable on a shared machine, unlike timings).
//!
//! `hot_path MODE [N]` runs MODE N times (default 2000) on the compact 8 KB review:
//! - `full` (default) and `three`: parse (reading what the policy reads), then evaluate with
//!   the full or the three-check policy;
//! - `parse`: parse only (`parse-core`: without the pod details, as for a policy without Pod
//!   Security Standards rules; `parse-ref`: with serde_json as the only reader);
//! - `image`: parse the four image references; `eval`: evaluate a review parsed once;
//! - `scan`: serde_json scanning the bytes into nothing (the floor of a serde_json parse);
//!   `sscan`: the same with sonic-rs (a peer; the engine's reader until it had its own);
//!   `fscan`: the engine's own reader checking the bytes (its two passes, no typed read).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use portcullis_engine::evaluate::{CompiledPolicy, EvalContext, Verdict};
use portcullis_engine::image_ref::ImageRef;
use portcullis_engine::input::{parse_document, parse_document_reference, parse_document_with};
use portcullis_engine::k8s::Fields;
use time::macros::datetime;

const FULL_POLICY: &str = include_str!("../benches/data/policy-full.yaml");
const THREE_CHECKS_POLICY: &str = include_str!("../benches/data/policy-three-checks.yaml");
const REVIEW_8K: &str = include_str!("../benches/data/review-8k.json");

/// The images of the review's four containers.
const IMAGES: [&str; 4] = [
    "registry.example.com/payments/api-migrations:4.12.3@sha256:9b2f4c6e8a0d1f3b5c7e9a1d3f5b7c9e1a3d5f7b9c1e3a5d7f9b1c3e5a7d9f1b",
    "registry.example.com/payments/api:4.12.3@sha256:3e7a9c1b5d7f9e1a3c5b7d9f1e3a5c7b9d1f3e5a7c9b1d3f5e7a9c1b3d5f7e9a",
    "registry.example.com/mirror/envoyproxy/envoy:v1.31.2@sha256:7c1e3a5d9f1b3e5a7c9d1f3b5e7a9c1d3f5b7e9a1c3d5f7b9e1a3c5d7f9b1e3a",
    "registry.example.com/platform/fluent-bit:3.1.9@sha256:5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f1a3c5e7b9d1f3a5c7e9b1d3f5a7c",
];

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "full".to_owned());
    let n: usize = args.next().map_or(2000, |s| s.parse().unwrap());
    // The review as the API server sends it: compact JSON.
    let review = serde_json::from_str::<serde_json::Value>(REVIEW_8K)
        .unwrap()
        .to_string();
    let bytes = review.as_bytes();
    let policy = CompiledPolicy::from_text(if mode == "three" {
        THREE_CHECKS_POLICY
    } else {
        FULL_POLICY
    })
    .unwrap();
    let ctx = EvalContext::offline(datetime!(2026-11-26 00:00 UTC));
    let parsed = parse_document(bytes).unwrap();
    let mut blocks = 0usize;
    for _ in 0..n {
        match mode.as_str() {
            "parse" => blocks += parse_document(black_box(bytes)).unwrap().len(),
            "parse-core" => blocks += parse_document_with(black_box(bytes), Fields::CORE).unwrap().len(),
            "parse-ref" => blocks += parse_document_reference(black_box(bytes)).unwrap().len(),
            "image" => {
                for image in IMAGES {
                    blocks += usize::from(ImageRef::parse(black_box(image)).is_ok());
                }
            }
            "sscan" => {
                sonic_rs::from_slice::<serde::de::IgnoredAny>(black_box(bytes)).unwrap();
            }
            "fscan" => {
                let text = std::str::from_utf8(black_box(bytes)).unwrap();
                assert!(portcullis_json::is_valid(text));
            }
            "scan" => {
                serde_json::from_slice::<serde::de::IgnoredAny>(black_box(bytes)).unwrap();
            }
            "eval" => {
                blocks += black_box(&parsed)
                    .iter()
                    .filter(|s| policy.evaluate(s, &ctx).verdict == Verdict::Block)
                    .count()
            }
            _ => {
                blocks += policy
                    .parse_document(black_box(bytes))
                    .unwrap()
                    .iter()
                    .filter(|s| policy.evaluate(s, &ctx).verdict == Verdict::Block)
                    .count()
            }
        }
    }
    println!("{mode} x{n}: {blocks}");
}
