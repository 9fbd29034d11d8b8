//! Replay: recorded admissions judged again with a draft policy (issue 20, point 5).
//!
//! A recorded admission is what a decision event of an `xdrEnabled` policy carries: the
//! [`ReviewedPod`] projection and the original decision's verdict and violations. The
//! [`Replayer`] judges the projection with the draft at admission semantics
//! ([`CompiledPolicy::evaluate`], the cluster's excluded namespaces and trusted images, the
//! digests the original decision used) and [`ReplayReport`] counts, per workload, what the
//! draft would have decided differently: newly blocked, newly logged, no longer blocked, no
//! longer logged.
//!
//! # Choices
//!
//! - "Logged" means the decision had a log-only violation (a warning), whether or not it
//!   also blocked; "blocked" is the verdict.
//! - Signature rules are judged from the verdicts the original review recorded. A draft's
//!   signature rule they do not decide (an attestor nobody asked) cannot be judged without
//!   the signature service: it has no effect on the replayed verdict and is counted in
//!   [`WorkloadChanges::not_judged`], never passed silently. The failure mode does not turn
//!   it into a block (no stage failed at replay: the question was never asked).
//! - Scan results come from the caller (`ScanResults`, e.g. the scan store's current
//!   summaries), and the time of judging is the caller's `now`.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::evaluate::{
    CompiledPolicy, Decision, DigestLookup, DigestResolver, EvalContext, FailureMode, SignatureVerdicts, Signatures,
    TrustedImage, Verdict,
};
use crate::image_ref::ImageRef;
use crate::policy::Action;
use crate::projection::ReviewedPod;
use crate::scan::ScanResults;

/// One violation of the original decision, as far as replay compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedViolation {
    /// The rule type.
    pub rule_type: String,
    /// The rule's admission action.
    pub action: Action,
}

/// One recorded admission: what was reviewed and what was decided.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedAdmission {
    /// The cluster's id.
    pub cluster_id: String,
    /// What was reviewed.
    pub pod: ReviewedPod,
    /// Whether it was admitted.
    pub allowed: bool,
    /// Its violations, log-only ones included.
    pub violations: Vec<RecordedViolation>,
}

impl RecordedAdmission {
    /// Whether the original decision blocked.
    pub fn blocked(&self) -> bool {
        !self.allowed
    }

    /// Whether the original decision had a log-only violation.
    pub fn logged(&self) -> bool {
        self.violations.iter().any(|v| v.action == Action::Log)
    }
}

/// A cluster's settings, as admission applies them.
#[derive(Debug, Clone, Default)]
pub struct ClusterSettings {
    /// Namespaces allowed without evaluation.
    pub excluded_namespaces: Vec<String>,
    /// Images always exempt.
    pub trusted_images: Vec<TrustedImage>,
    /// What a stage that cannot answer leads to.
    pub failure_mode: FailureMode,
}

/// The workload a recorded admission is counted under.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadKey {
    /// The cluster's id.
    pub cluster_id: String,
    /// The namespace.
    pub namespace: String,
    /// The workload's kind (`Deployment`; `Pod` for a bare pod).
    pub kind: String,
    /// The workload's name.
    pub name: String,
}

/// An admission decision's outcome as replay compares it: blocked, else allowed with a
/// log-only violation, else plainly allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Allowed without a log-only violation.
    Allow = 0,
    /// Allowed with a log-only violation (a warning).
    Log = 1,
    /// Blocked (whatever else it logged).
    Block = 2,
}

impl Outcome {
    /// Every outcome, in index order.
    pub const ALL: [Outcome; 3] = [Outcome::Allow, Outcome::Log, Outcome::Block];

    fn of(blocked: bool, logged: bool) -> Outcome {
        if blocked {
            Outcome::Block
        } else if logged {
            Outcome::Log
        } else {
            Outcome::Allow
        }
    }

    /// Its name: `allow`, `log` or `block`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Log => "log",
            Outcome::Block => "block",
        }
    }
}

/// What the draft would have decided differently for one workload's recorded admissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadChanges {
    /// Admissions of the workload replayed.
    pub admissions: u64,
    /// Allowed then, blocked by the draft.
    pub newly_blocked: u64,
    /// Without a log-only violation then, with one under the draft.
    pub newly_logged: u64,
    /// Blocked then, allowed by the draft.
    pub no_longer_blocked: u64,
    /// With a log-only violation then, without one under the draft.
    pub no_longer_logged: u64,
    /// Admissions where a draft signature rule could not be judged from the recorded
    /// verdicts (no effect on the counts above).
    pub not_judged: u64,
    /// Admissions by decided outcome (first index) and the draft's outcome (second index),
    /// indexed by [`Outcome`] (`transitions[Outcome::Log as usize][Outcome::Block as usize]`:
    /// decided log, would now block).
    pub transitions: [[u64; 3]; 3],
}

impl WorkloadChanges {
    /// Whether any admission would have been decided differently (or was not judged).
    pub fn changed(&self) -> bool {
        self.newly_blocked + self.newly_logged + self.no_longer_blocked + self.no_longer_logged + self.not_judged > 0
    }

    fn merge(&mut self, other: &WorkloadChanges) {
        self.admissions += other.admissions;
        self.newly_blocked += other.newly_blocked;
        self.newly_logged += other.newly_logged;
        self.no_longer_blocked += other.no_longer_blocked;
        self.no_longer_logged += other.no_longer_logged;
        self.not_judged += other.not_judged;
        for (mine, theirs) in self.transitions.iter_mut().zip(other.transitions.iter()) {
            for (m, t) in mine.iter_mut().zip(theirs.iter()) {
                *m += t;
            }
        }
    }

    /// The admissions whose outcome the draft changes: (decided, would be, count), only
    /// non-zero counts, in [`Outcome`] order.
    pub fn outcome_changes(&self) -> Vec<(Outcome, Outcome, u64)> {
        let mut out = Vec::new();
        for (decided, row) in Outcome::ALL.into_iter().zip(self.transitions.iter()) {
            for (would_be, n) in Outcome::ALL.into_iter().zip(row.iter()) {
                if decided != would_be && *n > 0 {
                    out.push((decided, would_be, *n));
                }
            }
        }
        out
    }
}

/// The outcome of a replay: every workload, with counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Admissions replayed.
    pub replayed: u64,
    /// Recorded admissions that could not be judged again (an operation replay does not
    /// know), counted, never dropped silently.
    pub unreadable: u64,
    /// Per workload replayed, in order (those with nothing different have only
    /// `admissions`: see [`WorkloadChanges::changed`]).
    pub workloads: BTreeMap<WorkloadKey, WorkloadChanges>,
}

impl ReplayReport {
    /// Adds another report's counts (replays split across threads).
    pub fn merge(&mut self, other: ReplayReport) {
        self.replayed += other.replayed;
        self.unreadable += other.unreadable;
        for (key, changes) in other.workloads {
            self.workloads.entry(key).or_default().merge(&changes);
        }
    }

    /// The sum over the workloads.
    pub fn totals(&self) -> WorkloadChanges {
        let mut t = WorkloadChanges::default();
        for c in self.workloads.values() {
            t.merge(c);
        }
        t
    }
}

/// The digests the original decision used; a reference it lacks is unknown.
struct RecordedDigests<'a>(&'a BTreeMap<String, String>);

impl DigestResolver for RecordedDigests<'_> {
    fn resolve(&self, reference: &str, _: &ImageRef) -> DigestLookup {
        self.0
            .get(reference)
            .map_or(DigestLookup::Unknown, |d| DigestLookup::Found(d.clone()))
    }
}

/// The signature verdicts the original review recorded.
struct RecordedVerdicts<'a>(&'a BTreeMap<String, BTreeMap<String, bool>>);

impl SignatureVerdicts for RecordedVerdicts<'_> {
    fn verdict(&self, image: &str, digest: Option<&str>, attestor: &str) -> Option<bool> {
        digest
            .and_then(|d| self.0.get(d))
            .and_then(|m| m.get(attestor))
            .or_else(|| self.0.get(image).and_then(|m| m.get(attestor)))
            .copied()
    }
}

/// The draft judged again over recorded admissions.
pub struct Replayer<'a> {
    draft: &'a CompiledPolicy,
    scans: &'a (dyn ScanResults + Sync),
    now: OffsetDateTime,
    clusters: &'a BTreeMap<String, ClusterSettings>,
    default_settings: ClusterSettings,
}

impl<'a> Replayer<'a> {
    /// A replayer of `draft` at time `now` with scan results `scans` (shareable between
    /// threads, which may replay in parallel); each cluster's settings
    /// from `clusters` (a cluster it lacks: nothing excluded or trusted, fail-open).
    pub fn new(
        draft: &'a CompiledPolicy,
        scans: &'a (dyn ScanResults + Sync),
        now: OffsetDateTime,
        clusters: &'a BTreeMap<String, ClusterSettings>,
    ) -> Replayer<'a> {
        Replayer {
            draft,
            scans,
            now,
            clusters,
            default_settings: ClusterSettings::default(),
        }
    }

    /// The draft's admission decision for a recorded admission; `None` when the record names
    /// an operation replay does not know.
    pub fn rejudge(&self, record: &RecordedAdmission) -> Option<Decision> {
        let (subject, digests, verdicts) = record.pod.clone().into_subject()?;
        Some(self.judge(&record.cluster_id, &subject, &digests, &verdicts))
    }

    fn judge(
        &self,
        cluster_id: &str,
        subject: &crate::input::Subject,
        digests: &BTreeMap<String, String>,
        verdicts: &BTreeMap<String, BTreeMap<String, bool>>,
    ) -> Decision {
        let settings = self.clusters.get(cluster_id).unwrap_or(&self.default_settings);
        let digests = RecordedDigests(digests);
        let verdicts = RecordedVerdicts(verdicts);
        let ctx = EvalContext {
            now: self.now,
            scans: self.scans,
            digests: &digests,
            // Offline: a rule the recorded verdicts do not decide has no effect (module docs).
            signatures: Signatures::Offline(Some(&verdicts)),
            excluded_namespaces: &settings.excluded_namespaces,
            trusted_images: &settings.trusted_images,
            failure_mode: settings.failure_mode,
        };
        self.draft.evaluate(subject, &ctx)
    }

    /// Judges one recorded admission again and counts what changed into `report`.
    pub fn replay(&self, record: RecordedAdmission, report: &mut ReplayReport) {
        let was_blocked = record.blocked();
        let was_logged = record.logged();
        match self.rejudge_outcome(&record.cluster_id, record.pod) {
            Some((key, judged)) => {
                report.replayed += 1;
                let changes = judged.changes(was_blocked, was_logged);
                report.workloads.entry(key).or_default().merge(&changes);
            }
            None => report.unreadable += 1,
        }
    }

    /// The workload and the draft's outcome of a projection; `None` for an operation replay
    /// does not know.
    fn rejudge_outcome(&self, cluster_id: &str, pod: ReviewedPod) -> Option<(WorkloadKey, Judged)> {
        let (kind, name) = pod.workload();
        let namespace = pod.namespace.clone();
        let (subject, digests, verdicts) = pod.into_subject()?;
        let decision = self.judge(cluster_id, &subject, &digests, &verdicts);
        let judged = Judged {
            blocked: decision.verdict == Verdict::Block,
            logged: decision.violations.iter().any(|v| v.action == Action::Log),
            not_judged: !decision.unverified.is_empty(),
        };
        let key = WorkloadKey {
            cluster_id: cluster_id.to_owned(),
            namespace,
            kind,
            name,
        };
        Some((key, judged))
    }

    /// Judges one recorded admission from its stored form (the projection's JSON, as decision
    /// events carry it, and whether the decision blocked and logged) and counts what changed into `memo`, which
    /// remembers the draft's outcome of each distinct (cluster, projection bytes): the same
    /// projection in the same cluster is judged once per replay. Counts reach a report with
    /// [`ReplayMemo::finish`]. The same counts as [`Replayer::replay`] of the decoded record.
    ///
    /// Sound because the draft's decision depends only on the projection (subject, digests
    /// and signature verdicts it carries), the cluster's settings, the replayer's fixed `now`
    /// (exception expiry is compared with it, not with the clock) and the scan results, which
    /// must answer alike for the whole replay (a snapshot, as [`MemoryScanStore`]
    /// is); evaluation reads no clock and no randomness.
    ///
    /// [`MemoryScanStore`]: crate::scan::MemoryScanStore
    pub fn replay_stored(
        &self,
        memo: &mut ReplayMemo,
        cluster_id: &str,
        projection: &[u8],
        was_blocked: bool,
        was_logged: bool,
    ) {
        if let Some(judged) = memo.by_cluster.get_mut(cluster_id).and_then(|m| m.get_mut(projection)) {
            judged.count(was_blocked, was_logged);
            return;
        }
        let judged = ReviewedPod::from_json(projection)
            .ok()
            .and_then(|pod| self.rejudge_outcome(cluster_id, pod));
        let mut entry = MemoEntry {
            judged,
            changes: WorkloadChanges::default(),
        };
        entry.count(was_blocked, was_logged);
        if memo.entries < memo.capacity {
            memo.entries += 1;
            memo.by_cluster
                .entry(cluster_id.to_owned())
                .or_default()
                .insert(projection.to_vec(), entry);
        } else {
            // Full: this one is counted straight into the overflow report.
            entry.finish(&mut memo.overflow);
        }
    }
}

/// The draft's outcome of one projection.
#[derive(Debug, Clone, Copy)]
struct Judged {
    blocked: bool,
    logged: bool,
    not_judged: bool,
}

impl Judged {
    /// The changes of one admission, decided blocked or not and logged or not, that the
    /// draft judges `self`.
    fn changes(self, was_blocked: bool, was_logged: bool) -> WorkloadChanges {
        let Judged {
            blocked,
            logged,
            not_judged,
        } = self;
        let mut transitions = [[0; 3]; 3];
        if let Some(cell) = transitions
            .get_mut(Outcome::of(was_blocked, was_logged) as usize)
            .and_then(|row| row.get_mut(Outcome::of(blocked, logged) as usize))
        {
            *cell = 1;
        }
        WorkloadChanges {
            transitions,
            admissions: 1,
            newly_blocked: u64::from(blocked && !was_blocked),
            newly_logged: u64::from(logged && !was_logged),
            no_longer_blocked: u64::from(!blocked && was_blocked),
            no_longer_logged: u64::from(!logged && was_logged),
            not_judged: u64::from(not_judged),
        }
    }
}

/// What a [`ReplayMemo`] holds per distinct projection: its workload and the draft's outcome
/// (`None`: unreadable), and the counts so far (of an unreadable one, only `admissions`).
#[derive(Debug)]
struct MemoEntry {
    judged: Option<(WorkloadKey, Judged)>,
    changes: WorkloadChanges,
}

impl MemoEntry {
    fn count(&mut self, was_blocked: bool, was_logged: bool) {
        match &self.judged {
            Some((_, judged)) => self.changes.merge(&judged.changes(was_blocked, was_logged)),
            None => self.changes.admissions += 1,
        }
    }

    fn finish(self, report: &mut ReplayReport) {
        match self.judged {
            Some((key, _)) => {
                report.replayed += self.changes.admissions;
                report.workloads.entry(key).or_default().merge(&self.changes);
            }
            None => report.unreadable += self.changes.admissions,
        }
    }
}

/// The draft's outcomes of the distinct projections a replay has judged, with their counts
/// (one per thread; [`Replayer::replay_stored`]). At most `capacity` projections are kept
/// (memory stays bounded: past it, admissions are judged one by one).
#[derive(Debug)]
pub struct ReplayMemo {
    by_cluster: std::collections::HashMap<String, std::collections::HashMap<Vec<u8>, MemoEntry>>,
    entries: usize,
    capacity: usize,
    overflow: ReplayReport,
}

impl ReplayMemo {
    /// Distinct projections a memo keeps by default (about 1 KB each).
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// An empty memo keeping at most `capacity` distinct projections.
    pub fn new(capacity: usize) -> ReplayMemo {
        ReplayMemo {
            by_cluster: std::collections::HashMap::new(),
            entries: 0,
            capacity,
            overflow: ReplayReport::default(),
        }
    }

    /// Distinct (cluster, projection) pairs judged so far.
    pub fn distinct(&self) -> usize {
        self.entries
    }

    /// The counts so far, as a report.
    pub fn finish(self) -> ReplayReport {
        let mut report = self.overflow;
        for entries in self.by_cluster.into_values() {
            for entry in entries.into_values() {
                entry.finish(&mut report);
            }
        }
        report
    }
}

impl Default for ReplayMemo {
    fn default() -> Self {
        ReplayMemo::new(ReplayMemo::DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;
    use crate::input::parse_document;
    use crate::scan::MemoryScanStore;

    fn policy(rules: &str) -> CompiledPolicy {
        CompiledPolicy::from_text(&format!(r#"{{"name":"draft","default":{{"rules":[{rules}]}}}}"#)).unwrap()
    }

    fn rule(rule_type: &str, key: &str, value: &str, action: &str) -> String {
        format!(
            r#"{{"type":"{rule_type}","action":"{action}","statement":{{"properties":[{{"key":"{key}","value":"{value}"}}]}}}}"#
        )
    }

    /// A Deployment review with one container, privileged or not, in `namespace`.
    fn review(name: &str, namespace: &str, privileged: bool, host_network: bool) -> Vec<u8> {
        format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u",
            "kind":{{"group":"apps","version":"v1","kind":"Deployment"}},"resource":{{"group":"apps","version":"v1","resource":"deployments"}},
            "operation":"CREATE","namespace":"{namespace}","object":{{"apiVersion":"apps/v1","kind":"Deployment",
            "metadata":{{"name":"{name}","namespace":"{namespace}"}},
            "spec":{{"template":{{"metadata":{{"labels":{{"app":"{name}"}}}},"spec":{{"hostNetwork":{host_network},
            "containers":[{{"name":"app","image":"registry.example.com/{name}:1",
            "securityContext":{{"privileged":{privileged}}}}}]}}}}}}}}}}}}"#
        )
        .into_bytes()
    }

    fn recorded(body: &[u8], allowed: bool, violations: &[(&str, Action)]) -> RecordedAdmission {
        let subject = parse_document(body).unwrap().remove(0);
        let labels = crate::projection::review_pod_labels(body, &subject).unwrap();
        let pod = ReviewedPod::from_subject(&subject, labels).unwrap();
        // What is recorded is the JSON form: replay reads it back.
        let pod = ReviewedPod::from_json(&pod.to_json().unwrap()).unwrap();
        RecordedAdmission {
            cluster_id: "c1".into(),
            pod,
            allowed,
            violations: violations
                .iter()
                .map(|(t, a)| RecordedViolation {
                    rule_type: (*t).to_owned(),
                    action: *a,
                })
                .collect(),
        }
    }

    fn replay_all(draft: &CompiledPolicy, records: Vec<RecordedAdmission>) -> ReplayReport {
        let clusters = BTreeMap::new();
        let replayer = Replayer::new(draft, &MemoryScanStore::EMPTY, OffsetDateTime::UNIX_EPOCH, &clusters);
        let mut report = ReplayReport::default();
        for r in records {
            replayer.replay(r, &mut report);
        }
        report
    }

    fn transitions(counts: &[(Outcome, Outcome, u64)]) -> [[u64; 3]; 3] {
        let mut t = [[0; 3]; 3];
        for (decided, would_be, n) in counts {
            t[*decided as usize][*would_be as usize] = *n;
        }
        t
    }

    fn key(name: &str) -> WorkloadKey {
        WorkloadKey {
            cluster_id: "c1".into(),
            namespace: "apps".into(),
            kind: "Deployment".into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_stricter_draft_reports_exactly_what_it_would_now_block_per_workload() {
        // The live policy only logged privileged containers: web (privileged, twice) was
        // allowed with a warning, api (not privileged) plainly allowed.
        let records = vec![
            recorded(
                &review("web", "apps", true, false),
                true,
                &[("containerSecurityContext", Action::Log)],
            ),
            recorded(
                &review("web", "apps", true, false),
                true,
                &[("containerSecurityContext", Action::Log)],
            ),
            recorded(&review("api", "apps", false, false), true, &[]),
        ];
        let draft = policy(&rule("containerSecurityContext", "privileged", "true", "block"));
        let report = replay_all(&draft, records);
        assert_eq!((report.replayed, report.unreadable), (3, 0));
        assert_eq!(
            report.workloads[&key("web")],
            WorkloadChanges {
                admissions: 2,
                newly_blocked: 2,
                no_longer_logged: 2,
                transitions: transitions(&[(Outcome::Log, Outcome::Block, 2)]),
                ..WorkloadChanges::default()
            }
        );
        assert_eq!(
            report.workloads[&key("web")].outcome_changes(),
            vec![(Outcome::Log, Outcome::Block, 2)]
        );
        assert!(!report.workloads[&key("api")].changed());
        assert_eq!(report.workloads[&key("api")].admissions, 1);
        assert_eq!(report.totals().newly_blocked, 2);
    }

    #[test]
    fn a_looser_draft_reports_no_longer_blocked_and_newly_logged() {
        let records = vec![
            recorded(
                &review("web", "apps", true, false),
                false,
                &[("containerSecurityContext", Action::Block)],
            ),
            recorded(&review("db", "apps", false, true), true, &[]),
        ];
        let draft = policy(&format!(
            "{},{}",
            rule("containerSecurityContext", "privileged", "true", "log"),
            rule("podSecurityContext", "hostNetwork", "true", "log")
        ));
        let report = replay_all(&draft, records);
        assert_eq!(
            report.workloads[&key("web")],
            WorkloadChanges {
                admissions: 1,
                no_longer_blocked: 1,
                newly_logged: 1,
                transitions: transitions(&[(Outcome::Block, Outcome::Log, 1)]),
                ..WorkloadChanges::default()
            }
        );
        assert_eq!(
            report.workloads[&key("db")],
            WorkloadChanges {
                admissions: 1,
                newly_logged: 1,
                transitions: transitions(&[(Outcome::Allow, Outcome::Log, 1)]),
                ..WorkloadChanges::default()
            }
        );
    }

    #[test]
    fn the_same_policy_changes_nothing_and_cluster_settings_apply() {
        let live = policy(&rule("containerSecurityContext", "privileged", "true", "block"));
        let blocked = recorded(
            &review("web", "apps", true, false),
            false,
            &[("containerSecurityContext", Action::Block)],
        );
        let report = replay_all(&live, vec![blocked.clone()]);
        assert_eq!(
            report.totals(),
            WorkloadChanges {
                admissions: 1,
                transitions: transitions(&[(Outcome::Block, Outcome::Block, 1)]),
                ..WorkloadChanges::default()
            }
        );
        assert!(report.totals().outcome_changes().is_empty());

        // The cluster excludes the namespace: admission would have allowed it unevaluated.
        let mut clusters = BTreeMap::new();
        clusters.insert(
            "c1".to_owned(),
            ClusterSettings {
                excluded_namespaces: vec!["apps".into()],
                ..ClusterSettings::default()
            },
        );
        let replayer = Replayer::new(&live, &MemoryScanStore::EMPTY, OffsetDateTime::UNIX_EPOCH, &clusters);
        let decision = replayer.rejudge(&blocked).unwrap();
        assert_eq!(decision.verdict, Verdict::Allow);
        let mut report = ReplayReport::default();
        replayer.replay(blocked, &mut report);
        assert_eq!(report.totals().no_longer_blocked, 1);
    }

    #[test]
    fn replicaset_pods_count_under_their_deployment_and_reports_merge() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u",
            "kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"apps",
            "object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-7d9f-x1","labels":{"app":"web","pod-template-hash":"7d9f"},
            "ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-7d9f","uid":"rs1","controller":true}]},
            "spec":{"containers":[{"name":"app","image":"registry.example.com/web:1","securityContext":{"privileged":true}}]}}}}"#;
        let r = recorded(body, true, &[]);
        assert_eq!(r.pod.workload(), ("Deployment".to_owned(), "web".to_owned()));
        assert_eq!(r.pod.labels.get("app").map(String::as_str), Some("web"));
        let draft = policy(&rule("containerSecurityContext", "privileged", "true", "block"));
        let mut a = replay_all(&draft, vec![r.clone()]);
        let b = replay_all(&draft, vec![r]);
        a.merge(b);
        assert_eq!(a.replayed, 2);
        assert_eq!(a.workloads[&key("web")].newly_blocked, 2);
    }

    #[test]
    fn an_unknown_operation_is_counted_unreadable() {
        let mut r = recorded(&review("web", "apps", false, false), true, &[]);
        r.pod.operation = "DELETE".into();
        let draft = policy(&rule("containerSecurityContext", "privileged", "true", "block"));
        let report = replay_all(&draft, vec![r]);
        assert_eq!((report.replayed, report.unreadable), (0, 1));
    }

    #[test]
    fn the_memo_counts_exactly_what_plain_replay_counts() {
        // Repeats of the same projections in two clusters (one excluding the namespace), with
        // every decided outcome, a log-only violation on a blocked one, and unreadable ones.
        let web = review("web", "apps", true, false);
        let api = review("api", "apps", false, true);
        let mut bad = recorded(&review("db", "apps", true, false), true, &[]);
        bad.pod.operation = "DELETE".into();
        let mut records = Vec::new();
        for i in 0..40 {
            let mut r = match i % 5 {
                0 => recorded(&web, true, &[("containerSecurityContext", Action::Log)]),
                1 => recorded(
                    &web,
                    false,
                    &[
                        ("containerSecurityContext", Action::Block),
                        ("podSecurityContext", Action::Log),
                    ],
                ),
                2 => recorded(&api, true, &[]),
                3 => recorded(&api, false, &[("podSecurityContext", Action::Block)]),
                _ => bad.clone(),
            };
            r.cluster_id = if i % 3 == 0 { "c1" } else { "c2" }.into();
            records.push(r);
        }
        let draft = policy(&format!(
            "{},{}",
            rule("containerSecurityContext", "privileged", "true", "block"),
            rule("podSecurityContext", "hostNetwork", "true", "log")
        ));
        let mut clusters = BTreeMap::new();
        clusters.insert(
            "c2".to_owned(),
            ClusterSettings {
                excluded_namespaces: vec!["apps".into()],
                ..ClusterSettings::default()
            },
        );
        let replayer = Replayer::new(&draft, &MemoryScanStore::EMPTY, OffsetDateTime::UNIX_EPOCH, &clusters);
        let mut plain = ReplayReport::default();
        for r in records.clone() {
            replayer.replay(r, &mut plain);
        }
        // A roomy memo, and one of capacity 1 (the rest counted one by one).
        for capacity in [ReplayMemo::DEFAULT_CAPACITY, 1] {
            let mut memo = ReplayMemo::new(capacity);
            for r in &records {
                let json = r.pod.to_json().unwrap();
                replayer.replay_stored(&mut memo, &r.cluster_id, &json, r.blocked(), r.logged());
            }
            assert_eq!(memo.distinct(), if capacity == 1 { 1 } else { 6 });
            assert_eq!(memo.finish(), plain, "capacity {capacity}");
        }
        assert_eq!((plain.replayed, plain.unreadable), (32, 8));
        assert!(plain.totals().newly_blocked > 0 && plain.totals().no_longer_blocked > 0);
        // Bytes that are not a projection are unreadable, as a record that does not decode.
        let mut memo = ReplayMemo::default();
        replayer.replay_stored(&mut memo, "c1", b"{not json", true, false);
        assert_eq!(memo.finish().unreadable, 1);
    }
}
