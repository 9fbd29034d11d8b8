//! The engine benchmark of issue 2 (see BENCHMARKS.md).
//!
//! Every measured iteration starts from the raw JSON bytes of a review: parse included, by
//! the policy's `parse_document` (what `portcullis` runs: it reads what the rules read).
//! - `parse/review_8k`: `parse_document` alone, for reference (`_core_fields`: without the
//!   pod details only Pod Security Standards checks read; `_serde_json_reader`: with
//!   serde_json as the only reader); `parse/json_scan_floor` is serde_json scanning the same
//!   bytes into nothing, the floor of a serde_json parse, `parse/sonic_scan_floor` the same
//!   with sonic-rs (the engine's reader until it had its own), and `parse/fast_scan_floor`
//!   the engine's own reader checking the bytes (its two passes, no typed read).
//! - `full_policy/review_8k`: the full policy (20 rules, podSecurityStandard restricted
//!   among them) on the 8 KB review; `evaluate_only/full_policy` is the same on a review
//!   parsed beforehand, to split the cost.
//! - `three_checks/*`: privileged, host namespaces and baseline capabilities, in our engine
//!   and in Rego run by regorus (its interpreter, and its RVM bytecode VM), on the same
//!   review; `three_checks/regorus_parse_only` is regorus's JSON-to-`Value` step alone.
//! - `corpus/*`: the same, over the whole generated corpus of the equivalence test.
//!
//! regorus is prepared once outside the loop (policy added, modules analysed, or compiled
//! to an RVM program) and the one engine is reused for every review, as a webhook would:
//! nothing is cloned per iteration. After the criterion groups a summary prints each
//! median and `ratio regorus/engine = N.Nx` from this run's criterion estimates.
//!
//! The clock is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so that other
//! work on a shared machine does not count against a review; `BENCH_CLOCK=wall` measures
//! wall time instead (criterion's default).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use portcullis_corpus as corpus;
#[path = "support/rego.rs"]
mod rego;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, SamplingMode, Throughput};
use portcullis_engine::evaluate::{CompiledPolicy, EvalContext};
use portcullis_engine::input::{parse_document, parse_document_reference, parse_document_with};
use portcullis_engine::k8s::Fields;
use time::macros::datetime;

const FULL_POLICY: &str = include_str!("data/policy-full.yaml");
const THREE_CHECKS_POLICY: &str = include_str!("data/policy-three-checks.yaml");
const REVIEW_8K: &str = include_str!("data/review-8k.json");

/// The review as the API server sends it: compact JSON.
fn review_8k() -> String {
    serde_json::from_str::<serde_json::Value>(REVIEW_8K)
        .unwrap()
        .to_string()
}

/// Parse (reading what the policy's rules read, as `portcullis` does) and evaluate every
/// subject of one document; the number of blocks.
fn engine_run(policy: &CompiledPolicy, ctx: &EvalContext<'_>, json: &[u8]) -> usize {
    let subjects = policy.parse_document(json).unwrap();
    subjects
        .iter()
        .map(|s| policy.evaluate(s, ctx))
        .filter(|d| d.verdict == portcullis_engine::evaluate::Verdict::Block)
        .count()
}

fn benches<M: Measurement>(c: &mut Criterion<M>) {
    let review = review_8k();
    let bytes = review.as_bytes();
    let full = CompiledPolicy::from_text(FULL_POLICY).unwrap();
    let three = CompiledPolicy::from_text(THREE_CHECKS_POLICY).unwrap();
    let ctx = EvalContext::offline(datetime!(2026-11-26 00:00 UTC));
    let mut interpreter = rego::Interpreter::new(rego::THREE_CHECKS_REGO).unwrap();
    let mut vm = rego::Vm::new(rego::THREE_CHECKS_REGO).unwrap();
    eprintln!("review_8k: {} bytes of compact JSON", bytes.len());

    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("review_8k", |b| b.iter(|| parse_document(black_box(bytes)).unwrap()));
    // Without the pod details (what a policy without Pod Security Standards rules reads).
    g.bench_function("review_8k_core_fields", |b| {
        b.iter(|| parse_document_with(black_box(bytes), Fields::CORE).unwrap())
    });
    // The same with serde_json as the only reader, for comparison.
    g.bench_function("review_8k_serde_json_reader", |b| {
        b.iter(|| parse_document_reference(black_box(bytes)).unwrap())
    });
    // The floor: serde_json scanning the same bytes into nothing (validation, no allocation).
    g.bench_function("json_scan_floor", |b| {
        b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(black_box(bytes)).unwrap())
    });
    // The same with sonic-rs, a peer (the engine's reader until it had its own).
    g.bench_function("sonic_scan_floor", |b| {
        b.iter(|| sonic_rs::from_slice::<serde::de::IgnoredAny>(black_box(bytes)).unwrap())
    });
    // The engine's own reader checking the same bytes (both passes, nothing read).
    let text = std::str::from_utf8(bytes).unwrap();
    g.bench_function("fast_scan_floor", |b| {
        b.iter(|| assert!(portcullis_json::is_valid(black_box(text))))
    });
    g.finish();

    let mut g = c.benchmark_group("full_policy");
    g.bench_function("review_8k", |b| b.iter(|| engine_run(&full, &ctx, black_box(bytes))));
    g.finish();

    let parsed = parse_document(bytes).unwrap();
    let mut g = c.benchmark_group("evaluate_only");
    g.bench_function("full_policy", |b| b.iter(|| full.evaluate(black_box(&parsed[0]), &ctx)));
    g.bench_function("three_checks", |b| {
        b.iter(|| three.evaluate(black_box(&parsed[0]), &ctx))
    });
    g.finish();

    let mut g = c.benchmark_group("three_checks");
    g.bench_function("engine", |b| b.iter(|| engine_run(&three, &ctx, black_box(bytes))));
    g.bench_function("regorus", |b| b.iter(|| interpreter.deny(black_box(&review)).unwrap()));
    g.bench_function("regorus_rvm", |b| b.iter(|| vm.deny(black_box(&review)).unwrap()));
    g.bench_function("regorus_parse_only", |b| {
        b.iter(|| regorus::Value::from_json_str(black_box(&review)).unwrap())
    });
    g.finish();

    let reviews = corpus::corpus(corpus::BENCH_CORPUS_SIZE);
    let mut g = c.benchmark_group("corpus");
    g.throughput(Throughput::Elements(reviews.len() as u64));
    // One iteration judges the whole corpus (milliseconds): flat sampling keeps the run short.
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(20);
    g.bench_function("engine_full_policy", |b| {
        b.iter(|| {
            reviews
                .iter()
                .map(|r| engine_run(&full, &ctx, r.json.as_bytes()))
                .sum::<usize>()
        })
    });
    g.bench_function("engine", |b| {
        b.iter(|| {
            reviews
                .iter()
                .map(|r| engine_run(&three, &ctx, r.json.as_bytes()))
                .sum::<usize>()
        })
    });
    g.bench_function("regorus", |b| {
        b.iter(|| {
            reviews
                .iter()
                .map(|r| usize::from(rego::blocks(&interpreter.deny(&r.json).unwrap()).unwrap()))
                .sum::<usize>()
        })
    });
    g.bench_function("regorus_rvm", |b| {
        b.iter(|| {
            reviews
                .iter()
                .map(|r| usize::from(rego::blocks(&vm.deny(&r.json).unwrap()).unwrap()))
                .sum::<usize>()
        })
    });
    g.finish();
}

/// Where criterion writes its estimates, decided here so the summary can read them back:
/// `$CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`, else `target/criterion` beside
/// the bench executable's `deps` directory (criterion's own order).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// Median and 95% confidence interval in ns, when criterion measured it in this run.
fn estimate(dir: &Path, id: &str, since: SystemTime) -> Option<(f64, f64, f64)> {
    let path = dir.join(id).join("new/estimates.json");
    let fresh = std::fs::metadata(&path).and_then(|m| m.modified()).ok()? >= since;
    if !fresh {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    let m = &v["median"];
    Some((
        m["point_estimate"].as_f64()?,
        m["confidence_interval"]["lower_bound"].as_f64()?,
        m["confidence_interval"]["upper_bound"].as_f64()?,
    ))
}

fn summary(dir: &Path, since: SystemTime, clock: &str) {
    let per_review = |id: &str| {
        let n = if id.starts_with("corpus/") {
            corpus::BENCH_CORPUS_SIZE as f64
        } else {
            1.0
        };
        estimate(dir, id, since).map(|(m, lo, hi)| (m / n, lo / n, hi / n))
    };
    let ids = [
        "parse/review_8k",
        "parse/review_8k_serde_json_reader",
        "parse/json_scan_floor",
        "parse/sonic_scan_floor",
        "parse/fast_scan_floor",
        "full_policy/review_8k",
        "evaluate_only/full_policy",
        "evaluate_only/three_checks",
        "three_checks/engine",
        "three_checks/regorus",
        "three_checks/regorus_rvm",
        "three_checks/regorus_parse_only",
        "corpus/engine_full_policy",
        "corpus/engine",
        "corpus/regorus",
        "corpus/regorus_rvm",
    ];
    let measured: Vec<_> = ids.iter().filter_map(|id| Some((*id, per_review(id)?))).collect();
    if measured.is_empty() {
        return;
    }
    println!(
        "\nsummary ({clock}): median per review [95% CI] (corpus: {} reviews)",
        corpus::BENCH_CORPUS_SIZE
    );
    for (id, (m, lo, hi)) in &measured {
        println!("  {id:<34} {:>9.3} µs  [{:.3}, {:.3}]", m / 1e3, lo / 1e3, hi / 1e3);
    }
    if let Some((m, _, _)) = per_review("full_policy/review_8k") {
        let verdict = if m <= 10_000.0 { "met" } else { "MISSED" };
        println!(
            "full policy on the 8 KB review: {:.2} µs (target <= 10 µs: {verdict})",
            m / 1e3
        );
    }
    let ratio = |theirs: &str, ours: &str, label: &str| {
        if let (Some((t, _, _)), Some((o, _, _))) = (per_review(theirs), per_review(ours)) {
            let r = t / o;
            let verdict = if r >= 10.0 { "met" } else { "MISSED" };
            println!("ratio {label} = {r:.1}x  ({theirs} / {ours}; target >= 10x: {verdict})");
        }
    };
    ratio("three_checks/regorus", "three_checks/engine", "regorus/engine");
    ratio("three_checks/regorus_rvm", "three_checks/engine", "regorus_rvm/engine");
    ratio("corpus/regorus", "corpus/engine", "regorus/engine (corpus)");
    ratio("corpus/regorus_rvm", "corpus/engine", "regorus_rvm/engine (corpus)");
}

/// The calling thread's CPU time: time the thread spends descheduled (other processes on
/// a shared machine) is not counted.
struct ThreadCpuTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = u128;
    type Value = u128;

    fn start(&self) -> u128 {
        thread_cpu_ns()
    }
    fn end(&self, start: u128) -> u128 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u128, b: &u128) -> u128 {
        a + b
    }
    fn zero(&self) -> u128 {
        0
    }
    fn to_f64(&self, ns: &u128) -> f64 {
        *ns as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Nanoseconds, formatted exactly as wall time is.
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

fn thread_cpu_ns() -> u128 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    u128::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u128::try_from(t.tv_nsec).unwrap_or(0)
}

fn main() {
    let dir = criterion_dir();
    let since = SystemTime::now();
    let wall = std::env::var("BENCH_CLOCK").is_ok_and(|v| v == "wall");
    eprintln!("clock: {}", if wall { "wall time" } else { "thread CPU time" });
    if wall {
        let mut c = Criterion::default().output_directory(&dir).configure_from_args();
        benches(&mut c);
        c.final_summary();
    } else {
        let mut c = Criterion::default()
            .with_measurement(ThreadCpuTime)
            .output_directory(&dir)
            .configure_from_args();
        benches(&mut c);
        c.final_summary();
    }
    let clock_name = if wall { "wall time" } else { "thread CPU time" };
    summary(&dir, since, clock_name);
    // Only in a real benchmark run (`cargo bench` passes --bench; `cargo test` does not).
    if std::env::args().any(|a| a == "--bench") && std::env::var("BENCH_PAIRED").map_or(true, |v| v != "0") {
        let clock: fn() -> u128 = if wall { wall_ns } else { thread_cpu_ns };
        paired(clock, clock_name);
    }
}

fn wall_ns() -> u128 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_nanos()
}

/// Per-review time of `n` runs of `f` over `per_run` reviews each.
fn time_batch(clock: fn() -> u128, n: usize, per_run: usize, mut f: impl FnMut() -> usize) -> f64 {
    let start = clock();
    for _ in 0..n {
        black_box(f());
    }
    (clock() - start) as f64 / (n * per_run) as f64
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// How many runs of `f` take about 5 ms, timed after a few untimed runs, so that the
/// first, coldest runs do not set it.
fn batch_size(clock: fn() -> u128, mut f: impl FnMut() -> usize) -> usize {
    for _ in 0..3 {
        black_box(f());
    }
    let one = time_batch(clock, 3, 1, &mut f).max(1.0);
    ((5e6 / one) as usize).max(1)
}

/// Our engine and regorus measured in alternating rounds, so that both see the same
/// machine: on a shared machine, conditions drift between criterion's groups. Each round
/// times one batch of each contender (about 5 ms each; the corpus: one pass each), after
/// one untimed run of it; the ratio is taken per round, and its median and range printed.
fn paired(clock: fn() -> u128, clock_name: &str) {
    let review = review_8k();
    let bytes = review.as_bytes();
    let three = CompiledPolicy::from_text(THREE_CHECKS_POLICY).unwrap();
    let full = CompiledPolicy::from_text(FULL_POLICY).unwrap();
    let ctx = EvalContext::offline(datetime!(2026-11-26 00:00 UTC));
    let mut interpreter = rego::Interpreter::new(rego::THREE_CHECKS_REGO).unwrap();
    let mut vm = rego::Vm::new(rego::THREE_CHECKS_REGO).unwrap();
    let reviews = corpus::corpus(corpus::BENCH_CORPUS_SIZE);

    let single: Vec<Contender<'_>> = vec![
        ("engine (three checks)", 1, Box::new(|| engine_run(&three, &ctx, bytes))),
        ("engine (full policy)", 1, Box::new(|| engine_run(&full, &ctx, bytes))),
        (
            "regorus",
            1,
            Box::new(|| usize::from(rego::blocks(&interpreter.deny(&review).unwrap()).unwrap())),
        ),
        (
            "regorus_rvm",
            1,
            Box::new(|| usize::from(rego::blocks(&vm.deny(&review).unwrap()).unwrap())),
        ),
    ];
    report_paired(clock, clock_name, "the 8 KB review", 60, single, true);

    let mut interpreter = rego::Interpreter::new(rego::THREE_CHECKS_REGO).unwrap();
    let mut vm = rego::Vm::new(rego::THREE_CHECKS_REGO).unwrap();
    let n = reviews.len();
    let whole: Vec<Contender<'_>> = vec![
        (
            "engine (three checks)",
            n,
            Box::new(|| {
                reviews
                    .iter()
                    .map(|r| engine_run(&three, &ctx, r.json.as_bytes()))
                    .sum()
            }),
        ),
        (
            "engine (full policy)",
            n,
            Box::new(|| reviews.iter().map(|r| engine_run(&full, &ctx, r.json.as_bytes())).sum()),
        ),
        (
            "regorus",
            n,
            Box::new(|| {
                reviews
                    .iter()
                    .map(|r| usize::from(rego::blocks(&interpreter.deny(&r.json).unwrap()).unwrap()))
                    .sum()
            }),
        ),
        (
            "regorus_rvm",
            n,
            Box::new(|| {
                reviews
                    .iter()
                    .map(|r| usize::from(rego::blocks(&vm.deny(&r.json).unwrap()).unwrap()))
                    .sum()
            }),
        ),
    ];
    report_paired(clock, clock_name, "the corpus", 15, whole, false);
}

/// A name, the reviews one run judges, and the run.
type Contender<'a> = (&'static str, usize, Box<dyn FnMut() -> usize + 'a>);

fn report_paired(
    clock: fn() -> u128,
    clock_name: &str,
    what: &str,
    rounds: usize,
    mut contenders: Vec<Contender<'_>>,
    calibrate: bool,
) {
    let batches: Vec<usize> = contenders
        .iter_mut()
        .map(|(_, _, f)| if calibrate { batch_size(clock, f) } else { 1 })
        .collect();
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); contenders.len()];
    for _ in 0..rounds {
        for (i, (_, per_run, f)) in contenders.iter_mut().enumerate() {
            // One untimed run first, for every contender alike: the one before it left the
            // caches and the allocator in its own state. Without it and the warm calibration
            // above, the first contender of each round (our engine) measured up to 2.3x its
            // criterion figure after the criterion groups, per-round ratios 0.4x to 6.7x.
            black_box(f());
            times[i].push(time_batch(clock, batches[i], *per_run, f));
        }
    }
    println!("\npaired ({clock_name}, {rounds} alternating rounds, {what}): median per review");
    for (i, (name, _, _)) in contenders.iter().enumerate() {
        println!("  {name:<24} {:>9.3} µs", median(&mut times[i].clone()) / 1e3);
    }
    let full = median(&mut times[1].clone());
    let verdict = if full <= 10_000.0 { "met" } else { "MISSED" };
    println!(
        "full policy ({what}): {:.2} µs per review (target <= 10 µs: {verdict})",
        full / 1e3
    );
    for (theirs, label) in [(2, "regorus/engine"), (3, "regorus_rvm/engine")] {
        let mut ratios: Vec<f64> = times[theirs].iter().zip(&times[0]).map(|(t, o)| t / o).collect();
        let m = median(&mut ratios);
        let (lo, hi) = (ratios[0], ratios[ratios.len() - 1]);
        let verdict = if m >= 10.0 { "met" } else { "MISSED" };
        println!(
            "ratio {label} = {m:.1}x  ({what}, three checks; rounds {lo:.1}x..{hi:.1}x; target >= 10x: {verdict})"
        );
    }
}
