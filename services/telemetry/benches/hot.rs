//! The telemetry core's hot paths, which run for every ingested event (the service's target
//! is 50,000 events/s on 2 cores, storage included):
//! - `falco/from_json`: one Falco JSON event into a `SecurityEvent` (parse, labels, workload,
//!   content-derived id);
//! - `query/matches`: a four-term query (two fields, a severity, a phrase) on one event;
//! - `correlate/ingest`: one runtime event through the correlator with the shipped rules,
//!   over 1,000 pods in 50 namespaces at 50,000 events/s of event time (the steady state:
//!   groups exist, windows fill and expire).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use portcullis_telemetry_service::SecurityEvent;
use portcullis_telemetry_service::correlate::{Correlator, CorrelatorConfig};
use portcullis_telemetry_service::query::Query;

fn falco_json(i: usize) -> String {
    format!(
        r#"{{"output":"10:00:00.123456789: Notice A shell was spawned in a container with an attached terminal (user=root user_loginuid=-1 k8s.ns=ns{ns} k8s.pod=web{d}-7c9f8d6b5-x2x{i} container=abc shell=bash parent=runc cmdline=bash terminal=34816 container_id=abc image=registry.example/web)","priority":"Notice","rule":"Terminal shell in container","time":"2026-12-07T10:{m:02}:{s:02}.{i:09}Z","source":"syscall","output_fields":{{"container.id":"abc","container.name":"app","container.image.repository":"registry.example/web","container.image.tag":"1.2","container.image.digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","evt.time":1765101600123456789,"k8s.ns.name":"ns{ns}","k8s.pod.name":"web{d}-7c9f8d6b5-x2x{i}","k8s.pod.labels":"[app:web, pod-template-hash:7c9f8d6b5, tier:frontend]","proc.cmdline":"bash","proc.name":"bash","proc.pid":4242,"proc.pname":"runc","user.loginuid":-1,"user.name":"root"}},"tags":["container","shell","mitre_execution","T1059"],"hostname":"node-1"}}"#,
        ns = i % 50,
        d = i % 1000,
        m = (i / 60) % 60,
        s = i % 60,
    )
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let raws: Vec<String> = (0..1000).map(falco_json).collect();

    let mut g = c.benchmark_group("falco");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("from_json", |b| {
        b.iter(|| {
            i = (i + 1) % raws.len();
            black_box(SecurityEvent::from_falco_json("t1", "c1", raws[i].as_bytes()).unwrap())
        })
    });
    g.finish();

    let events: Vec<SecurityEvent> = raws
        .iter()
        .map(|r| SecurityEvent::from_falco_json("t1", "c1", r.as_bytes()).unwrap())
        .collect();
    let query = Query::parse(r#"namespace:ns7 type:runtime severity:low "attached terminal""#).unwrap();
    let mut g = c.benchmark_group("query");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("matches", |b| {
        b.iter(|| {
            i = (i + 1) % events.len();
            black_box(query.matches(&events[i]))
        })
    });
    g.finish();

    // Each round ingests a copy of one of the 1,000 events with a fresh id and a time 20 µs
    // after the previous one (50,000 events/s), so windows fill and expire as in service; the
    // copy is part of what is measured (an upper bound).
    let mut correlator = Correlator::with_shipped_rules(CorrelatorConfig::default()).unwrap();
    let mut g = c.benchmark_group("correlate");
    g.throughput(Throughput::Elements(1));
    let mut n = 0u64;
    let start = events[0].occurred_at;
    g.bench_function("ingest", |b| {
        b.iter(|| {
            n += 1;
            let mut e = events[(n % 1000) as usize].clone();
            e.id = compact_str::format_compact!("e{n}");
            e.occurred_at = start + time::Duration::microseconds(20 * n as i64);
            black_box(correlator.ingest(&e).unwrap())
        })
    });
    g.finish();
    c.final_summary();
}
