//! Replay of a draft policy over 1,000,000 recorded admissions (issue 20: under 10 s on 2
//! cores).
//!
//! The recorded admissions are the replay projections (`ReviewedPod` JSON, as decision events
//! carry them) of 4,096 distinct workload reviews of the benchmark corpus, judged by the
//! three-checks policy as the live decision, spread over 8 clusters; the 1,000,000 records
//! cycle through them. Each replay decodes its projection from JSON (as read back from
//! storage), judges it with the full benchmark policy as the draft and counts the
//! differences per workload; two threads split the records and merge their reports.
//!
//! `cargo bench -p portcullis-engine --bench replay`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use portcullis_corpus as corpus;

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::Criterion;
use portcullis_engine::evaluate::{CompiledPolicy, EvalContext, Verdict};
use portcullis_engine::input::parse_document;
use portcullis_engine::projection::{ReviewedPod, review_pod_labels};
use portcullis_engine::replay::{ClusterSettings, RecordedAdmission, RecordedViolation, ReplayReport, Replayer};
use portcullis_engine::scan::MemoryScanStore;
use time::OffsetDateTime;

const LIVE_POLICY: &str = include_str!("data/policy-three-checks.yaml");
const DRAFT_POLICY: &str = include_str!("data/policy-full.yaml");
const RECORDS: usize = 1_000_000;
const DISTINCT: usize = 4_096;
const CLUSTERS: usize = 8;
const THREADS: usize = 2;

/// A recorded admission as stored: the projection's JSON and the live decision.
struct Stored {
    json: Vec<u8>,
    allowed: bool,
    violations: Vec<RecordedViolation>,
}

fn recorded_corpus() -> Vec<Stored> {
    let live = CompiledPolicy::from_text(LIVE_POLICY).unwrap();
    let ctx = EvalContext::offline(OffsetDateTime::UNIX_EPOCH);
    let mut out = Vec::with_capacity(DISTINCT);
    let mut index = 0;
    while out.len() < DISTINCT {
        let generated = corpus::review(index);
        index += 1;
        if !generated.workload {
            continue;
        }
        let body = generated.json.as_bytes();
        let subject = parse_document(body).unwrap().remove(0);
        let decision = live.evaluate(&subject, &ctx);
        let labels = review_pod_labels(body, &subject).unwrap();
        let Some(pod) = ReviewedPod::from_subject(&subject, labels) else {
            continue;
        };
        out.push(Stored {
            json: pod.to_json().unwrap(),
            allowed: decision.verdict == Verdict::Allow,
            violations: decision
                .violations
                .iter()
                .map(|v| RecordedViolation {
                    rule_type: v.rule_type.to_owned(),
                    action: v.action,
                })
                .collect(),
        });
    }
    out
}

/// Replays records `range` of the 1,000,000 into one report.
fn replay_range(
    replayer: &Replayer<'_>,
    stored: &[Stored],
    clusters: &[String],
    range: std::ops::Range<usize>,
) -> ReplayReport {
    let mut report = ReplayReport::default();
    for i in range {
        let s = &stored[i % stored.len()];
        let record = RecordedAdmission {
            cluster_id: clusters[i % clusters.len()].clone(),
            pod: ReviewedPod::from_json(&s.json).unwrap(),
            allowed: s.allowed,
            violations: s.violations.clone(),
        };
        replayer.replay(record, &mut report);
    }
    report
}

fn replay_all(replayer: &Replayer<'_>, stored: &[Stored], clusters: &[String]) -> ReplayReport {
    let chunk = RECORDS.div_ceil(THREADS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let range = t * chunk..((t + 1) * chunk).min(RECORDS);
                scope.spawn(move || replay_range(replayer, stored, clusters, range))
            })
            .collect();
        let mut total = ReplayReport::default();
        for h in handles {
            total.merge(h.join().unwrap());
        }
        total
    })
}

fn main() {
    let stored = recorded_corpus();
    let mean = stored.iter().map(|s| s.json.len()).sum::<usize>() / stored.len();
    let draft = CompiledPolicy::from_text(DRAFT_POLICY).unwrap();
    let clusters: Vec<String> = (0..CLUSTERS).map(|c| format!("cluster-{c}")).collect();
    let settings: BTreeMap<String, ClusterSettings> = clusters
        .iter()
        .map(|c| {
            (
                c.clone(),
                ClusterSettings {
                    excluded_namespaces: vec!["kube-system".into()],
                    ..ClusterSettings::default()
                },
            )
        })
        .collect();
    let replayer = Replayer::new(&draft, &MemoryScanStore::EMPTY, OffsetDateTime::UNIX_EPOCH, &settings);

    // What one replay finds, once, so that the benchmark is known to do the work.
    let report = replay_all(&replayer, &stored, &clusters);
    assert_eq!((report.replayed, report.unreadable), (RECORDS as u64, 0));
    let totals = report.totals();
    eprintln!(
        "replay of {RECORDS} recorded admissions ({DISTINCT} distinct projections, mean {mean} B of JSON): \
         {} workloads, newly blocked {}, newly logged {}, no longer blocked {}, no longer logged {}",
        report.workloads.len(),
        totals.newly_blocked,
        totals.newly_logged,
        totals.no_longer_blocked,
        totals.no_longer_logged
    );
    assert!(totals.newly_blocked > 0, "the stricter draft blocks more");

    let mut c = Criterion::default().sample_size(10).configure_from_args();
    c.bench_function("replay/1M recorded admissions, 2 threads", |b| {
        b.iter(|| black_box(replay_all(&replayer, &stored, &clusters)))
    });
    c.final_summary();
}
