#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use time::macros::datetime;

use super::*;
use crate::entity::Workload;
use crate::event::tests::sample_event;
use crate::event::{Action, Source};

const T0: OffsetDateTime = datetime!(2026-12-07 10:00:00 UTC);

/// An event `secs` after T0 in cluster c1, namespace prod, pod web-1 of Deployment web.
fn ev(id: &str, source: Source, action: Action, secs: i64) -> SecurityEvent {
    let mut e = sample_event();
    e.id = id.into();
    e.source = source;
    e.action = action;
    e.occurred_at = T0 + time::Duration::seconds(secs);
    e.pod = "web-1".into();
    e.workload = Some(Workload::new("Deployment", "web"));
    e.rule = match source {
        Source::Runtime => "Write below etc".into(),
        _ => "containerSecurityContext".into(),
    };
    e
}

fn runtime(id: &str, secs: i64) -> SecurityEvent {
    ev(id, Source::Runtime, Action::Warning, secs)
}

fn correlator() -> Correlator {
    Correlator::with_shipped_rules(CorrelatorConfig::default()).unwrap()
}

/// Ingests `events` in order and returns the changes of the given rule.
fn run(c: &mut Correlator, events: &[SecurityEvent]) -> Vec<AlertChange> {
    events.iter().flat_map(|e| c.ingest(e).unwrap()).collect()
}

fn opened<'a>(changes: &'a [AlertChange], rule: &str) -> Vec<&'a NewAlert> {
    changes
        .iter()
        .filter_map(|c| match c {
            AlertChange::Opened(a) if a.rule == rule => Some(a),
            _ => None,
        })
        .collect()
}

const LOG_THEN_RUNTIME: &str = "admitted-with-violations-then-runtime";
const IMAGE_MANY: &str = "image-refused-in-many-clusters";
const ISOLATED: &str = "isolated-pod-keeps-detecting";
const EXEC_BURST: &str = "exec-attach-burst";

#[test]
fn shipped_rules_load() {
    let rules = shipped_rules().unwrap();
    let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec![LOG_THEN_RUNTIME, IMAGE_MANY, ISOLATED, EXEC_BURST]);
}

// (i) admitted with log-only violations, then a runtime detection.

#[test]
fn log_admission_then_runtime_opens_an_alert() {
    let mut c = correlator();
    let events = [ev("a1", Source::Admission, Action::Log, 0), runtime("r1", 600)];
    let changes = run(&mut c, &events);
    let alerts = opened(&changes, LOG_THEN_RUNTIME);
    assert_eq!(alerts.len(), 1);
    let a = alerts[0];
    assert_eq!(a.event_ids, vec!["a1", "r1"]);
    assert_eq!(a.severity, Severity::High);
    assert_eq!(a.cluster_ids, vec!["c1"]);
    assert_eq!(a.first_event_at, T0);
    assert_eq!(a.entity[2], (EntityField::Workload, "Deployment/web".to_owned()));
    assert_eq!(a.id.len(), 36);
}

#[test]
fn log_then_runtime_out_of_arrival_order_is_judged_by_event_time() {
    let mut c = correlator();
    // The runtime detection arrives first but happened later.
    let changes = run(
        &mut c,
        &[runtime("r1", 200), ev("a1", Source::Admission, Action::Log, 0)],
    );
    assert_eq!(opened(&changes, LOG_THEN_RUNTIME).len(), 1);
}

#[test]
fn busy_workload_of_log_admissions_then_runtime_opens_one_alert() {
    // More first steps than a group keeps (256): each is ingested without a search, and the
    // runtime detection still completes the story with the oldest first step kept (the
    // group holds the detection and the newest 255 admissions).
    let mut c = correlator();
    let mut events: Vec<SecurityEvent> = (0..400)
        .map(|i| ev(&format!("a{i}"), Source::Admission, Action::Log, i))
        .collect();
    assert!(opened(&run(&mut c, &events), LOG_THEN_RUNTIME).is_empty());
    events = vec![runtime("r1", 500)];
    let changes = run(&mut c, &events);
    let alerts = opened(&changes, LOG_THEN_RUNTIME);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].event_ids, vec!["a145", "r1"]);
}

#[test]
fn log_then_runtime_near_misses_stay_quiet() {
    // Wrong order: the detection happened before the admission.
    let mut c = correlator();
    let changes = run(
        &mut c,
        &[runtime("r1", 0), ev("a1", Source::Admission, Action::Log, 60)],
    );
    assert!(opened(&changes, LOG_THEN_RUNTIME).is_empty());

    // Outside the 24 h window.
    let mut c = correlator();
    let changes = run(
        &mut c,
        &[
            ev("a1", Source::Admission, Action::Log, 0),
            runtime("r1", 24 * 3600 + 1),
        ],
    );
    assert!(opened(&changes, LOG_THEN_RUNTIME).is_empty());

    // One event short: an allow (no violations) instead of a log.
    let mut c = correlator();
    let changes = run(
        &mut c,
        &[ev("a1", Source::Admission, Action::Allow, 0), runtime("r1", 60)],
    );
    assert!(opened(&changes, LOG_THEN_RUNTIME).is_empty());

    // Different entity: another workload.
    let mut c = correlator();
    let mut other = runtime("r1", 60);
    other.workload = Some(Workload::new("Deployment", "api"));
    let changes = run(&mut c, &[ev("a1", Source::Admission, Action::Log, 0), other]);
    assert!(opened(&changes, LOG_THEN_RUNTIME).is_empty());
}

// (ii) the same image blocked or failing signature verification in three or more clusters.

fn refused(id: &str, cluster: &str, secs: i64, signature: bool) -> SecurityEvent {
    let mut e = if signature {
        ev(id, Source::Signature, Action::Failed, secs)
    } else {
        ev(id, Source::Admission, Action::Block, secs)
    };
    e.cluster_id = cluster.into();
    e.digest = "sha256:bad".into();
    e
}

#[test]
fn image_refused_in_three_clusters_opens_an_alert() {
    let mut c = correlator();
    let events = [
        refused("b1", "c1", 0, false),
        refused("s2", "c2", 60, true),
        refused("b3", "c3", 120, false),
    ];
    let changes = run(&mut c, &events);
    let alerts = opened(&changes, IMAGE_MANY);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].event_ids, vec!["b1", "s2", "b3"]);
    assert_eq!(alerts[0].cluster_ids, vec!["c1", "c2", "c3"]);
    assert_eq!(alerts[0].severity, Severity::Critical);
    assert_eq!(alerts[0].entity, vec![(EntityField::Image, "sha256:bad".to_owned())]);
}

#[test]
fn distinct_threshold_keeps_one_event_per_value() {
    let mut c = correlator();
    // Many refusals in two clusters, then the third cluster: the story is the latest of each.
    let mut events: Vec<SecurityEvent> = (0..50)
        .map(|i| refused(&format!("b{i}"), if i % 2 == 0 { "c1" } else { "c2" }, i, false))
        .collect();
    events.push(refused("z", "c3", 100, true));
    let changes = run(&mut c, &events);
    let alerts = opened(&changes, IMAGE_MANY);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].event_ids, vec!["b48", "b49", "z"]);
}

#[test]
fn image_refused_near_misses_stay_quiet() {
    // Two clusters, however many times.
    let mut c = correlator();
    let changes = run(
        &mut c,
        &[
            refused("b1", "c1", 0, false),
            refused("b2", "c2", 10, false),
            refused("b3", "c1", 20, true),
            refused("b4", "c2", 30, true),
        ],
    );
    assert!(opened(&changes, IMAGE_MANY).is_empty());

    // Three clusters, but not within 24 h.
    let mut c = correlator();
    let changes = run(
        &mut c,
        &[
            refused("b1", "c1", 0, false),
            refused("b2", "c2", 10, false),
            refused("b3", "c3", 24 * 3600 + 1, false),
        ],
    );
    assert!(opened(&changes, IMAGE_MANY).is_empty());

    // Three clusters, different images.
    let mut c = correlator();
    let mut third = refused("b3", "c3", 20, false);
    third.digest = "sha256:other".into();
    let changes = run(
        &mut c,
        &[refused("b1", "c1", 0, false), refused("b2", "c2", 10, false), third],
    );
    assert!(opened(&changes, IMAGE_MANY).is_empty());

    // Three clusters, but one only verified fine.
    let mut c = correlator();
    let mut ok = refused("v3", "c3", 20, true);
    ok.action = Action::Verified;
    let changes = run(
        &mut c,
        &[refused("b1", "c1", 0, false), refused("b2", "c2", 10, false), ok],
    );
    assert!(opened(&changes, IMAGE_MANY).is_empty());

    // No digest: no part in an image rule.
    let mut c = correlator();
    let mut events = vec![
        refused("b1", "c1", 0, false),
        refused("b2", "c2", 10, false),
        refused("b3", "c3", 20, false),
    ];
    events[2].digest = "".into();
    let changes = run(&mut c, &events);
    assert!(opened(&changes, IMAGE_MANY).is_empty());
}

// (iii) an isolated pod that keeps raising runtime detections.

fn isolate(id: &str, secs: i64) -> SecurityEvent {
    let mut e = ev(id, Source::Mitigation, Action::Isolate, secs);
    // Mitigation commands name the pod, not its owner.
    e.workload = None;
    e
}

#[test]
fn isolated_pod_with_three_detections_opens_an_alert() {
    let mut c = correlator();
    let events = [
        isolate("m1", 0),
        runtime("r1", 60),
        runtime("r2", 120),
        runtime("r3", 180),
    ];
    let changes = run(&mut c, &events);
    let alerts = opened(&changes, ISOLATED);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].event_ids, vec!["m1", "r1", "r2", "r3"]);
}

#[test]
fn isolated_pod_near_misses_stay_quiet() {
    // One detection short.
    let mut c = correlator();
    let changes = run(&mut c, &[isolate("m1", 0), runtime("r1", 60), runtime("r2", 120)]);
    assert!(opened(&changes, ISOLATED).is_empty());

    // Detections before the isolation.
    let mut c = correlator();
    let changes = run(
        &mut c,
        &[
            runtime("r1", 0),
            runtime("r2", 10),
            isolate("m1", 20),
            runtime("r3", 30),
        ],
    );
    assert!(opened(&changes, ISOLATED).is_empty());

    // Outside the hour.
    let mut c = correlator();
    let changes = run(
        &mut c,
        &[
            isolate("m1", 0),
            runtime("r1", 60),
            runtime("r2", 120),
            runtime("r3", 3601),
        ],
    );
    assert!(opened(&changes, ISOLATED).is_empty());

    // Another pod.
    let mut c = correlator();
    let mut r3 = runtime("r3", 180);
    r3.pod = "web-2".into();
    let changes = run(&mut c, &[isolate("m1", 0), runtime("r1", 60), runtime("r2", 120), r3]);
    assert!(opened(&changes, ISOLATED).is_empty());

    // A restore is not an isolation.
    let mut c = correlator();
    let mut restore = isolate("m1", 0);
    restore.action = Action::Restore;
    let changes = run(
        &mut c,
        &[restore, runtime("r1", 60), runtime("r2", 120), runtime("r3", 180)],
    );
    assert!(opened(&changes, ISOLATED).is_empty());
}

// (iv) a burst of exec/attach attempts.

fn shell(id: &str, secs: i64) -> SecurityEvent {
    let mut e = runtime(id, secs);
    e.rule = "Terminal shell in container".into();
    e
}

fn exec_admission(id: &str, secs: i64) -> SecurityEvent {
    let mut e = ev(id, Source::Admission, Action::Allow, secs);
    e.subresource = "exec".into();
    e.workload = Some(Workload::new("Pod", "web-1"));
    e
}

#[test]
fn exec_attach_burst_opens_an_alert() {
    let mut c = correlator();
    let events = [
        exec_admission("x1", 0),
        shell("x2", 10),
        exec_admission("x3", 20),
        shell("x4", 30),
        exec_admission("x5", 40),
    ];
    let changes = run(&mut c, &events);
    let alerts = opened(&changes, EXEC_BURST);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].event_ids, vec!["x1", "x2", "x3", "x4", "x5"]);
    assert_eq!(alerts[0].severity, Severity::Medium);
}

#[test]
fn exec_attach_burst_near_misses_stay_quiet() {
    // Four attempts.
    let mut c = correlator();
    let changes = run(
        &mut c,
        &[shell("x1", 0), shell("x2", 1), shell("x3", 2), shell("x4", 3)],
    );
    assert!(opened(&changes, EXEC_BURST).is_empty());

    // Five, spread over more than two minutes.
    let mut c = correlator();
    let changes = run(
        &mut c,
        &[
            shell("x1", 0),
            shell("x2", 40),
            shell("x3", 80),
            shell("x4", 110),
            shell("x5", 121),
        ],
    );
    assert!(opened(&changes, EXEC_BURST).is_empty());

    // Five, but one in another namespace.
    let mut c = correlator();
    let mut x5 = shell("x5", 4);
    x5.namespace = "dev".into();
    let changes = run(
        &mut c,
        &[shell("x1", 0), shell("x2", 1), shell("x3", 2), shell("x4", 3), x5],
    );
    assert!(opened(&changes, EXEC_BURST).is_empty());

    // Five, but one is another rule and one an ordinary admission.
    let mut c = correlator();
    let mut plain = exec_admission("x5", 4);
    plain.subresource = "".into();
    let changes = run(
        &mut c,
        &[shell("x1", 0), shell("x2", 1), shell("x3", 2), runtime("x4", 3), plain],
    );
    assert!(opened(&changes, EXEC_BURST).is_empty());
}

// The correlator's own behaviour.

#[test]
fn open_alert_takes_new_events_instead_of_a_second_alert() {
    let mut c = correlator();
    let changes = run(
        &mut c,
        &[
            ev("a1", Source::Admission, Action::Log, 0),
            runtime("r1", 60),
            runtime("r2", 120),
        ],
    );
    let alerts = opened(&changes, LOG_THEN_RUNTIME);
    assert_eq!(alerts.len(), 1);
    let id = alerts[0].id.clone();
    let added: Vec<_> = changes
        .iter()
        .filter_map(|c| match c {
            AlertChange::EventsAdded {
                alert_id, event_ids, ..
            } if *alert_id == id => Some(event_ids.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(added, vec![vec![CompactString::from("r2")]]);
    // The same event again is not added twice.
    assert!(c.ingest(&runtime("r2", 120)).unwrap().is_empty());

    // Once closed, the next story opens a new alert.
    assert!(c.close_alert("t1", &id));
    assert!(!c.close_alert("t1", &id));
    let changes = run(
        &mut c,
        &[ev("a2", Source::Admission, Action::Log, 200), runtime("r3", 300)],
    );
    let again = opened(&changes, LOG_THEN_RUNTIME);
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].id, id);
    assert_eq!(again[0].key, alerts[0].key);
}

#[test]
fn alert_ids_are_deterministic() {
    let events = [ev("a1", Source::Admission, Action::Log, 0), runtime("r1", 60)];
    let a = opened(&run(&mut correlator(), &events), LOG_THEN_RUNTIME)[0].id.clone();
    let b = opened(&run(&mut correlator(), &events), LOG_THEN_RUNTIME)[0].id.clone();
    assert_eq!(a, b);
}

#[test]
fn tenants_are_separate() {
    let mut c = correlator();
    let mut r1 = runtime("r1", 60);
    r1.tenant_id = "t2".into();
    let changes = run(&mut c, &[ev("a1", Source::Admission, Action::Log, 0), r1]);
    assert!(opened(&changes, LOG_THEN_RUNTIME).is_empty());
}

#[test]
fn events_beyond_the_lateness_are_refused() {
    let mut c = correlator();
    c.ingest(&runtime("r1", 3600)).unwrap();
    assert!(c.ingest(&runtime("r0", 3600 - 299)).is_ok());
    assert_eq!(
        c.ingest(&runtime("rx", 3600 - 301)),
        Err(TooLate { event_id: "rx".into() })
    );
}

#[test]
fn memory_is_bounded_per_tenant() {
    let config = CorrelatorConfig {
        max_groups_per_tenant: 100,
        max_events_per_group: 4,
        ..CorrelatorConfig::default()
    };
    let mut c = Correlator::with_shipped_rules(config).unwrap();
    for i in 0..1000 {
        let mut e = runtime(&format!("r{i}"), i);
        e.workload = Some(Workload::new("Deployment", &format!("w{i}")));
        e.pod = format!("p{i}").into();
        c.ingest(&e).unwrap();
    }
    assert!(c.group_count("t1") <= 100, "{}", c.group_count("t1"));
    assert!(c.group_count("t1") > 0);

    // Windows expire: a day later, the old groups are swept.
    let mut c = correlator();
    for i in 0..10 {
        let mut e = ev(&format!("a{i}"), Source::Admission, Action::Log, i);
        e.workload = Some(Workload::new("Deployment", &format!("w{i}")));
        c.ingest(&e).unwrap();
    }
    assert_eq!(c.group_count("t1"), 10);
    for i in 0..4096 {
        c.ingest(&shell(&format!("late{i}"), 2 * 24 * 3600 + i)).unwrap();
    }
    // The admissions' groups are gone; the recent shells' three are left (exec burst by
    // namespace, isolated pod by pod, log-then-runtime by workload: a runtime event is a step
    // of the last two).
    assert_eq!(c.group_count("t1"), 3);
}

#[test]
fn rule_schema_errors_are_clear() {
    let base = "name: r\ndescription: d\nseverity: high\nentity: [pod]\nwindow: 10m\n";
    let err = |extra: &str| {
        Rule::from_yaml("x.yaml", &format!("{base}{extra}"))
            .unwrap_err()
            .message
    };
    assert!(err("").contains("exactly one of"));
    assert!(err("sequence: []\n").contains("1 to"));
    assert!(err("sequence:\n  - match: {}\n").contains("matches every event"));
    assert!(err("sequence:\n  - match: {source: [runtime]}\n    count: 0\n").contains("count"));
    assert!(err("sequence:\n  - match: {source: [bogus]}\n").contains("unknown type `bogus`"));
    assert!(err("sequence:\n  - match: {colour: red}\n").contains("unknown field"));
    assert!(err("threshold: {count: 3, distinct: pod, match: [{source: [runtime]}]}\n").contains("entity fields"));
    let bad_name = Rule::from_yaml("x", &base.replace("name: r", "name: Bad_Name")).unwrap_err();
    assert!(bad_name.message.contains("lowercase"));
    let bad_window = Rule::from_yaml(
        "x",
        &format!(
            "{}sequence:\n  - match: {{source: [runtime]}}\n",
            base.replace("10m", "30days")
        ),
    )
    .unwrap_err();
    assert!(bad_window.message.contains("window"));
    assert!(bad_window.to_string().starts_with("correlation rule x: "));
    let ok = Rule::from_yaml(
        "x",
        &format!("{base}sequence:\n  - match: {{source: [runtime], rule_contains: [SHELL]}}\n"),
    )
    .unwrap();
    assert_eq!(ok.window, Duration::from_secs(600));
    let Pattern::Sequence(steps) = &ok.pattern else {
        panic!("a sequence")
    };
    assert_eq!(steps[0].matcher.rule_contains, vec!["shell"]);
    let dup = load_rules([("a", ok_yaml()), ("b", ok_yaml())]).unwrap_err();
    assert!(dup.message.contains("already loaded"));
}

fn ok_yaml() -> &'static str {
    "name: r\ndescription: d\nseverity: high\nentity: [pod]\nwindow: 10m\nsequence:\n  - match: {source: [runtime]}\n"
}

#[test]
fn matcher_conditions() {
    let m = Matcher {
        source: vec![Source::Runtime],
        rule_contains: vec!["shell".into()],
        min_severity: Some(Severity::Medium),
        ..Matcher::default()
    };
    let mut e = shell("x", 0);
    e.severity = Severity::High;
    assert!(m.matches(&e));
    e.severity = Severity::Low;
    assert!(!m.matches(&e));
    e.severity = Severity::High;
    e.rule = "Write below etc".into();
    assert!(!m.matches(&e));
}

#[test]
fn extreme_event_times_do_not_overflow() {
    let mut c = correlator();
    let mut first = ev("a1", Source::Admission, Action::Log, 0);
    first.occurred_at = time::PrimitiveDateTime::MIN.assume_utc();
    c.ingest(&first).unwrap();
    let mut last = runtime("r1", 0);
    last.occurred_at = time::PrimitiveDateTime::MAX.assume_utc();
    c.ingest(&last).unwrap();
    let mut again = runtime("r2", 0);
    again.occurred_at = time::PrimitiveDateTime::MAX.assume_utc();
    assert!(c.ingest(&again).is_ok());
}

#[test]
fn adopted_alert_takes_the_events_of_its_key() {
    let events = [ev("a1", Source::Admission, Action::Log, 0), runtime("r1", 60)];
    let key = opened(&run(&mut correlator(), &events), LOG_THEN_RUNTIME)[0]
        .key
        .clone();

    // A restarted correlator told about the stored alert appends instead of opening.
    let mut c = correlator();
    assert!(c.adopt_alert("t1", &key, "stored-alert", T0 + time::Duration::seconds(60)));
    let changes = run(&mut c, &events);
    assert!(opened(&changes, LOG_THEN_RUNTIME).is_empty());
    let added: Vec<_> = changes
        .iter()
        .filter_map(|ch| match ch {
            AlertChange::EventsAdded {
                alert_id, event_ids, ..
            } if alert_id == "stored-alert" => Some(event_ids[0].clone()),
            _ => None,
        })
        .collect();
    assert_eq!(added, vec!["a1", "r1"]);
    assert!(!c.adopt_alert("t1", "no-such-rule\u{1e}x", "a", T0));
    assert!(!c.adopt_alert("t1", "no separator", "a", T0));
}

#[test]
fn a_resent_story_after_its_alert_closed_does_not_count_again() {
    let mut c = correlator();
    let burst: Vec<SecurityEvent> = (0..5).map(|i| shell(&format!("s{i}"), i * 10)).collect();
    let changes = run(&mut c, &burst);
    let alerts = opened(&changes, EXEC_BURST);
    assert_eq!(alerts.len(), 1);
    assert!(c.close_alert("t1", &alerts[0].id));
    // The sensor did not see the answer and sends the same five again: already counted.
    let again = run(&mut c, &burst);
    assert!(again.is_empty(), "{again:?}");
    // A redelivered event amid new ones is not counted either: four new, one old.
    let mut mixed: Vec<SecurityEvent> = (5..9).map(|i| shell(&format!("s{i}"), i * 10)).collect();
    mixed.push(shell("s4", 40));
    assert!(opened(&run(&mut c, &mixed), EXEC_BURST).is_empty());
    // The fifth new one completes a second burst.
    assert_eq!(opened(&run(&mut c, &[shell("s9", 90)]), EXEC_BURST).len(), 1);
}

#[test]
fn seen_ids_are_bounded_per_tenant() {
    let mut c = Correlator::with_shipped_rules(CorrelatorConfig {
        max_seen_ids_per_tenant: 2,
        ..CorrelatorConfig::default()
    })
    .unwrap();
    run(&mut c, &[shell("s0", 0), shell("s1", 1), shell("s2", 2)]);
    assert_eq!(c.tenants["t1"].seen.len(), 2);
    assert!(!c.tenants["t1"].seen.contains("s0"));
}

#[test]
fn a_rolled_back_batch_completes_its_story_again_with_the_same_alert() {
    let mut c = correlator();
    run(&mut c, &[ev("a1", Source::Admission, Action::Log, 0)]);
    c.begin();
    let first = run(&mut c, &[runtime("r1", 60)]);
    let first = opened(&first, LOG_THEN_RUNTIME);
    assert_eq!(first.len(), 1);
    let id = first[0].id.clone();
    // The save failed: the batch is undone, and its events, sent again, open the same alert
    // (without the rollback they would be skipped as duplicates and the alert never stored).
    c.rollback();
    c.begin();
    let again = run(&mut c, &[runtime("r1", 60)]);
    c.commit();
    let again = opened(&again, LOG_THEN_RUNTIME);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, id);
    assert_eq!(again[0].event_ids, ["a1", "r1"]);
}

#[test]
fn a_rollback_removes_a_tenant_the_batch_created_and_keeps_committed_state() {
    let mut c = correlator();
    c.begin();
    run(&mut c, &[shell("s0", 0)]);
    c.commit();
    c.begin();
    run(&mut c, &[shell("s1", 10)]);
    let mut other = shell("x0", 0);
    other.tenant_id = "t2".into();
    run(&mut c, &[other]);
    c.rollback();
    assert_eq!(c.group_count("t2"), 0);
    assert!(!c.tenants.contains_key("t2"));
    let t = &c.tenants["t1"];
    assert!(t.seen.contains("s0") && !t.seen.contains("s1"));
    assert_eq!(t.seen_order.len(), 1);
    // s0 is kept: four more complete the burst of five, not three more.
    let changes = run(&mut c, &[shell("s1", 10), shell("s2", 20), shell("s3", 30)]);
    assert!(opened(&changes, EXEC_BURST).is_empty());
    assert_eq!(opened(&run(&mut c, &[shell("s4", 40)]), EXEC_BURST).len(), 1);
}

#[test]
fn an_alert_closed_during_a_batch_stays_closed_after_its_rollback() {
    let mut c = correlator();
    let burst: Vec<SecurityEvent> = (0..5).map(|i| shell(&format!("s{i}"), i * 10)).collect();
    let id = opened(&run(&mut c, &burst), EXEC_BURST)[0].id.clone();
    c.begin();
    // Joins the open alert.
    assert!(matches!(
        run(&mut c, &[shell("s5", 50)]).as_slice(),
        [AlertChange::EventsAdded { .. }]
    ));
    assert!(c.close_alert("t1", &id));
    c.rollback();
    // Closed: the retried event starts a new story instead of joining the closed alert.
    let changes = run(&mut c, &[shell("s5", 50)]);
    assert!(changes.is_empty(), "{changes:?}");
    assert!(!c.close_alert("t1", &id));
}
