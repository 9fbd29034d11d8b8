//! The continuous-scanning benchmark of issue 19 (see BENCHMARKS.md).
//!
//! One cluster of 100,000 realistic running pods (`tests/support/pods.rs`: the engine
//! corpus's workloads as the cluster runs them, 1 to 7 containers, about half violating),
//! judged by a 15-rule policy (`data/policy-continuous.yaml`) with scan results for their
//! digests, all on one thread:
//! - `project/100k_pods`: the projection of every pod from its JSON (what a snapshot costs
//!   before storage);
//! - `reevaluate/100k_pods_15_rules`: a full re-evaluation (the sweep, or what a policy
//!   change triggers): every projection turned into the engine's subject, judged by
//!   `evaluate_running`, and the findings reconciled, in the steady state where the previous
//!   round's findings are held (target: at most 1 s);
//! - `reevaluate/judge_only`: the same without the reconciliation, to split the cost;
//! - `preview/100k_pods_15_rules`: the impact preview of a draft policy over the same
//!   inventory and findings (target: at most 2 s);
//! - baselines of the same run: `engine/parse_and_evaluate_running` judges the pods from their
//!   full JSON with the engine alone (what re-evaluating would cost without projections), and
//!   `engine/evaluate_running_parsed_10k` the engine alone on 10,000 pods parsed beforehand.
//!
//! Criterion measures wall time; on a shared machine that counts other processes' work too,
//! so a summary after the groups gives, for re-evaluation and preview, the median of five
//! rounds on the benchmark thread's CPU clock (`CLOCK_THREAD_CPUTIME_ID`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "../tests/support/pods.rs"]
mod pods;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use portcullis_continuous::findings::ClusterFindings;
use portcullis_continuous::inventory::PodProjection;
use portcullis_continuous::preview::{judge, preview, reevaluate};
use portcullis_engine::evaluate::{CompiledPolicy, EvalContext};
use portcullis_engine::input::parse_document;
use time::macros::datetime;

const PODS: usize = 100_000;

fn main() {
    let started = std::time::Instant::now();
    let json = pods::running_pods(PODS);
    let scans = pods::scan_store(&json);
    let inventory: Vec<PodProjection> = json
        .iter()
        .map(|j| PodProjection::from_pod_json(j.as_bytes()).unwrap())
        .collect();
    let policy = CompiledPolicy::from_text(pods::POLICY).unwrap();
    let draft = CompiledPolicy::from_text(
        &pods::POLICY
            .replace("{key: max-severity, value: high}", "{key: max-severity, value: medium}")
            .replace("{key: equals, value: latest}", "{key: equals, value: stable}"),
    )
    .unwrap();
    let ctx = EvalContext {
        scans: &scans,
        ..EvalContext::offline(datetime!(2026-12-07 12:00 UTC))
    };
    let mut findings = ClusterFindings::default();
    let first = reevaluate("bench", &inventory, &mut findings, &policy, &ctx);
    let containers: usize = inventory.iter().map(|p| p.spec().all_containers().count()).sum();
    let json_bytes: usize = json.iter().map(String::len).sum();
    let row_bytes: usize = inventory.iter().map(|p| p.to_row().unwrap().len()).sum();
    eprintln!(
        "{PODS} pods, {containers} containers, {} MB of pod JSON, {} MB of rows; first round: {} findings \
         opened on {} pods, {} commands; prepared in {:.1} s",
        json_bytes / 1_000_000,
        row_bytes / 1_000_000,
        first.opened.len(),
        findings.pods.len(),
        first.commands.len(),
        started.elapsed().as_secs_f64()
    );
    let shown = preview("bench", &inventory, &findings, &draft, &ctx);
    eprintln!(
        "preview of the draft: {} would open, {} resolve, {} commands",
        shown.opened.len(),
        shown.resolved.len(),
        shown.commands.len()
    );

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .configure_from_args();

    let mut g = c.benchmark_group("project");
    g.throughput(Throughput::Elements(PODS as u64));
    g.bench_function("100k_pods", |b| {
        b.iter(|| {
            json.iter()
                .map(|j| PodProjection::from_pod_json(black_box(j.as_bytes())).unwrap())
                .filter(|p| p.host_network())
                .count()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("reevaluate");
    g.throughput(Throughput::Elements(PODS as u64));
    g.bench_function("100k_pods_15_rules", |b| {
        b.iter(|| reevaluate("bench", black_box(&inventory), &mut findings, &policy, &ctx).unchanged)
    });
    g.bench_function("judge_only", |b| {
        b.iter(|| {
            inventory
                .iter()
                .map(|p| judge(&policy, &ctx, black_box(p)).violations.len())
                .sum::<usize>()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("preview");
    g.throughput(Throughput::Elements(PODS as u64));
    g.bench_function("100k_pods_15_rules", |b| {
        b.iter(|| {
            preview("bench", black_box(&inventory), &findings, &draft, &ctx)
                .commands
                .len()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(PODS as u64));
    g.bench_function("parse_and_evaluate_running", |b| {
        b.iter(|| {
            json.iter()
                .map(|j| {
                    let subject = policy.parse_document(black_box(j.as_bytes())).unwrap().pop().unwrap();
                    policy.evaluate_running(&subject, &ctx).violations.len()
                })
                .sum::<usize>()
        })
    });
    let parsed: Vec<_> = json[..10_000]
        .iter()
        .map(|j| parse_document(j.as_bytes()).unwrap().pop().unwrap())
        .collect();
    g.throughput(Throughput::Elements(parsed.len() as u64));
    g.bench_function("evaluate_running_parsed_10k", |b| {
        b.iter(|| {
            parsed
                .iter()
                .map(|s| policy.evaluate_running(black_box(s), &ctx).violations.len())
                .sum::<usize>()
        })
    });
    g.finish();
    c.final_summary();

    eprintln!("thread CPU time, median of 5 rounds:");
    let rounds = |name: &str, f: &mut dyn FnMut() -> usize| {
        let mut times: Vec<f64> = (0..5)
            .map(|_| {
                let start = thread_cpu();
                black_box(f());
                thread_cpu() - start
            })
            .collect();
        times.sort_by(f64::total_cmp);
        eprintln!("  {name}: {:.3} s (rounds {:.3}-{:.3} s)", times[2], times[0], times[4]);
    };
    rounds("reevaluate/100k_pods_15_rules", &mut || {
        reevaluate("bench", &inventory, &mut findings, &policy, &ctx).unchanged
    });
    rounds("reevaluate/judge_only", &mut || {
        inventory.iter().map(|p| judge(&policy, &ctx, p).violations.len()).sum()
    });
    rounds("preview/100k_pods_15_rules", &mut || {
        preview("bench", &inventory, &findings, &draft, &ctx).commands.len()
    });
    rounds("engine/evaluate_running_parsed_10k (x10)", &mut || {
        (0..10)
            .map(|_| {
                parsed
                    .iter()
                    .map(|s| policy.evaluate_running(s, &ctx).violations.len())
                    .sum::<usize>()
            })
            .sum()
    });
}

/// The CPU time of this thread, in seconds.
fn thread_cpu() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}
