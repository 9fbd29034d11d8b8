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
//! Three ways, each checked to give the same report where they replay the same records:
//! - `plain`: every record decoded and judged ([`Replayer::replay`]);
//! - `memo`: [`Replayer::replay_stored`], the service's path: each distinct (cluster,
//!   projection bytes) decoded and judged once per thread, the repeats counted (4,096
//!   projections × 8 clusters: at most 32,768 distinct pairs);
//! - `memo_all_distinct`: the same path when no two records share a projection (a label of
//!   each projection carries the record's number): the memo cannot help, its bookkeeping
//!   (hashing, keeping up to its capacity) is paid on top of decoding and judging.
//!
//! `cargo bench -p portcullis-engine --bench replay`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use portcullis_corpus as corpus;

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::Criterion;
use portcullis_engine::evaluate::{CompiledPolicy, EvalContext, Verdict};
use portcullis_engine::input::parse_document;
use portcullis_engine::policy::Action;
use portcullis_engine::projection::{ReviewedPod, review_pod_labels};
use portcullis_engine::replay::{
    ClusterSettings, RecordedAdmission, RecordedViolation, ReplayMemo, ReplayReport, Replayer,
};
use portcullis_engine::scan::MemoryScanStore;
use time::OffsetDateTime;

const LIVE_POLICY: &str = include_str!("data/policy-three-checks.yaml");
const DRAFT_POLICY: &str = include_str!("data/policy-full.yaml");
const RECORDS: usize = 1_000_000;
const DISTINCT: usize = 4_096;
const CLUSTERS: usize = 8;
const THREADS: usize = 2;

/// The label each projection carries for the all-distinct variant, and its placeholder value
/// (overwritten with the record's number).
const SEQ_LABEL: &str = "replay-seq";
const SEQ_PLACEHOLDER: &str = "0000000";

/// A recorded admission as stored: the projection's JSON and the live decision.
struct Stored {
    json: Vec<u8>,
    /// Where [`SEQ_PLACEHOLDER`] is in `json`.
    seq_at: usize,
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
        let Some(mut pod) = ReviewedPod::from_subject(&subject, labels) else {
            continue;
        };
        pod.labels.insert(SEQ_LABEL.into(), SEQ_PLACEHOLDER.into());
        let json = pod.to_json().unwrap();
        let needle = format!(r#""{SEQ_LABEL}":"{SEQ_PLACEHOLDER}""#);
        let seq_at = json.windows(needle.len()).position(|w| w == needle.as_bytes()).unwrap() + needle.len()
            - SEQ_PLACEHOLDER.len()
            - 1;
        out.push(Stored {
            json,
            seq_at,
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

fn logged(violations: &[RecordedViolation]) -> bool {
    violations.iter().any(|v| v.action == Action::Log)
}

/// Replays records `range` through a memo, as the service does; `distinct` makes each
/// record's projection its own (its number in a label). Returns the report and how many
/// distinct projections the memo judged.
fn replay_range_memo(
    replayer: &Replayer<'_>,
    stored: &[Stored],
    clusters: &[String],
    range: std::ops::Range<usize>,
    distinct: bool,
) -> (ReplayReport, usize) {
    let mut memo = ReplayMemo::default();
    let mut buffer = Vec::new();
    for i in range {
        let s = &stored[i % stored.len()];
        let json = if distinct {
            buffer.clear();
            buffer.extend_from_slice(&s.json);
            let digits = format!("{i:07}");
            buffer[s.seq_at..s.seq_at + SEQ_PLACEHOLDER.len()].copy_from_slice(digits.as_bytes());
            &buffer[..]
        } else {
            &s.json[..]
        };
        replayer.replay_stored(
            &mut memo,
            &clusters[i % clusters.len()],
            json,
            !s.allowed,
            logged(&s.violations),
        );
    }
    let distinct = memo.distinct();
    (memo.finish(), distinct)
}

#[derive(Clone, Copy, PartialEq)]
enum Way {
    Plain,
    Memo,
    MemoAllDistinct,
}

/// The 1,000,000 records split over [`THREADS`] threads; the report and the distinct
/// projections judged (summed over threads; all records for `Plain`).
fn replay_all(replayer: &Replayer<'_>, stored: &[Stored], clusters: &[String], way: Way) -> (ReplayReport, usize) {
    let chunk = RECORDS.div_ceil(THREADS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let range = t * chunk..((t + 1) * chunk).min(RECORDS);
                scope.spawn(move || match way {
                    Way::Plain => {
                        let n = range.len();
                        (replay_range(replayer, stored, clusters, range), n)
                    }
                    Way::Memo => replay_range_memo(replayer, stored, clusters, range, false),
                    Way::MemoAllDistinct => replay_range_memo(replayer, stored, clusters, range, true),
                })
            })
            .collect();
        let mut total = ReplayReport::default();
        let mut judged = 0;
        for h in handles {
            let (report, n) = h.join().unwrap();
            total.merge(report);
            judged += n;
        }
        (total, judged)
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

    // What one replay finds, once per way, so that the benchmark is known to do the work and
    // the ways are known to agree.
    let (report, _) = replay_all(&replayer, &stored, &clusters, Way::Plain);
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
    let (memo_report, judged) = replay_all(&replayer, &stored, &clusters, Way::Memo);
    assert_eq!(memo_report, report, "the memo changes no count");
    eprintln!("memo: {judged} distinct (cluster, projection) pairs judged over {THREADS} threads");
    let (distinct_report, judged) = replay_all(&replayer, &stored, &clusters, Way::MemoAllDistinct);
    assert_eq!(
        distinct_report.totals(),
        totals,
        "a label the draft ignores changes no outcome"
    );
    eprintln!(
        "memo, all distinct: {judged} projections kept by the memos (capacity {} per thread), the rest judged one by one",
        ReplayMemo::DEFAULT_CAPACITY
    );

    let mut c = Criterion::default().sample_size(10).configure_from_args();
    for (name, way) in [
        ("replay/1M recorded admissions, 2 threads", Way::Plain),
        ("replay/1M recorded admissions, 2 threads, memo", Way::Memo),
        (
            "replay/1M recorded admissions, 2 threads, memo, all distinct",
            Way::MemoAllDistinct,
        ),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| black_box(replay_all(&replayer, &stored, &clusters, way)))
        });
    }
    c.final_summary();
}
