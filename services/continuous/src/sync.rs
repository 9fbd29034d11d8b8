//! The sequencing of one cluster's inventory stream (`SyncInventory`).
//!
//! A connector sends a full snapshot in pages (start, pages, end), then deltas (pods added or
//! updated, pods deleted), every message with a sequence number one above the last. The
//! service must never hold an inventory that silently differs from the cluster's, so it
//! decides, per message:
//! - the next message in order is applied and acked;
//! - a message it has already applied (a resend after a reconnect) is acked without effect,
//!   so a replay cannot undo a later change;
//! - anything that would leave a hole (a gap in the sequence, a page or end without an open
//!   snapshot, a delta before any snapshot or in the middle of one) is not applied: the answer
//!   asks for a new snapshot, and deltas are refused until one starts.
//!
//! A snapshot start begins a new baseline whatever its number (a reconnecting connector, or
//! one answering the request for a snapshot); at its end every pod the snapshot did not send
//! is gone. [`ClusterInventory`] applies what [`SyncState`] accepts, in memory; the service
//! stores the same effects (a snapshot generation per row).

use std::collections::BTreeMap;

use crate::inventory::PodProjection;

/// What one message of the stream carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A snapshot begins.
    SnapshotStart,
    /// A page of the snapshot's pods.
    SnapshotPage(Vec<PodProjection>),
    /// The snapshot is complete: pods it did not send are gone.
    SnapshotEnd,
    /// Pods added or updated.
    Upsert(Vec<PodProjection>),
    /// Pods deleted (by uid).
    Delete(Vec<String>),
}

/// Why the service asks for a new snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resync {
    /// No snapshot has completed yet (or the last was abandoned): deltas cannot apply.
    NoSnapshot,
    /// A message is missing before this one.
    Gap {
        /// The sequence expected.
        expected: u64,
        /// The sequence received.
        got: u64,
    },
    /// A snapshot page or end without a snapshot start.
    NotInSnapshot,
    /// A delta between a snapshot's start and its end.
    DeltaInSnapshot,
}

/// The answer to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Apply it, then ack `sequence`.
    Apply,
    /// Already applied: ack `sequence` and change nothing.
    Duplicate,
    /// Do not apply it; ask the connector for a new snapshot.
    Resync(Resync),
}

/// Where the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a snapshot start (at first, or after asking for one).
    NeedSnapshot,
    /// Between a snapshot's start (at `start`) and its end.
    InSnapshot {
        /// The sequence of its start.
        start: u64,
    },
    /// A snapshot completed: deltas apply.
    Live,
}

/// The sequencing state of one cluster's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncState {
    phase: Phase,
    /// The last sequence applied (or acked as part of the current baseline).
    last: u64,
}

impl Default for SyncState {
    fn default() -> Self {
        SyncState::new()
    }
}

impl SyncState {
    /// A stream that has sent nothing: it needs a snapshot (also the state after a restart
    /// of the service, which then asks for one).
    pub fn new() -> SyncState {
        SyncState {
            phase: Phase::NeedSnapshot,
            last: 0,
        }
    }

    /// The last sequence applied (what an ack carries).
    pub fn last_sequence(&self) -> u64 {
        self.last
    }

    /// Whether a snapshot has completed and deltas apply.
    pub fn is_live(&self) -> bool {
        self.phase == Phase::Live
    }

    /// Decides what to do with message `sequence`, and moves the state on.
    pub fn accept(&mut self, sequence: u64, message: &Message) -> Step {
        if let Message::SnapshotStart = message {
            if self.phase == (Phase::InSnapshot { start: sequence }) {
                return Step::Duplicate;
            }
            self.phase = Phase::InSnapshot { start: sequence };
            self.last = sequence;
            return Step::Apply;
        }
        if self.phase == Phase::NeedSnapshot {
            return Step::Resync(Resync::NoSnapshot);
        }
        if sequence <= self.last {
            return Step::Duplicate;
        }
        if sequence != self.last + 1 {
            return self.resync(Resync::Gap {
                expected: self.last + 1,
                got: sequence,
            });
        }
        let in_snapshot = matches!(self.phase, Phase::InSnapshot { .. });
        match message {
            Message::SnapshotStart => Step::Apply,
            Message::SnapshotPage(_) if !in_snapshot => self.resync(Resync::NotInSnapshot),
            Message::SnapshotEnd if !in_snapshot => self.resync(Resync::NotInSnapshot),
            Message::Upsert(_) | Message::Delete(_) if in_snapshot => self.resync(Resync::DeltaInSnapshot),
            Message::SnapshotEnd => {
                self.phase = Phase::Live;
                self.last = sequence;
                Step::Apply
            }
            Message::SnapshotPage(_) | Message::Upsert(_) | Message::Delete(_) => {
                self.last = sequence;
                Step::Apply
            }
        }
    }

    fn resync(&mut self, why: Resync) -> Step {
        self.phase = Phase::NeedSnapshot;
        Step::Resync(why)
    }
}

/// What applying a message changed: the pods to re-evaluate and the pods gone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Uids of pods added or changed (re-evaluate these only).
    pub changed: Vec<String>,
    /// Uids of pods removed (their findings resolve).
    pub removed: Vec<String>,
}

/// One cluster's inventory in memory: the pods by uid, each stamped with the snapshot that
/// last sent it.
#[derive(Debug, Clone, Default)]
pub struct ClusterInventory {
    pods: BTreeMap<String, (u64, PodProjection)>,
    /// The generation of the snapshot in progress or last completed.
    generation: u64,
}

impl ClusterInventory {
    /// An empty inventory.
    pub fn new() -> ClusterInventory {
        ClusterInventory::default()
    }

    /// The pods, by uid.
    pub fn pods(&self) -> impl Iterator<Item = &PodProjection> {
        self.pods.values().map(|(_, p)| p)
    }

    /// One pod.
    pub fn get(&self, uid: &str) -> Option<&PodProjection> {
        self.pods.get(uid).map(|(_, p)| p)
    }

    /// How many pods.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Applies a message that [`SyncState::accept`] answered [`Step::Apply`].
    pub fn apply(&mut self, message: Message) -> Applied {
        let mut applied = Applied::default();
        match message {
            Message::SnapshotStart => self.generation += 1,
            Message::SnapshotPage(pods) | Message::Upsert(pods) => {
                for pod in pods {
                    let uid = pod.uid().to_owned();
                    if self.pods.get(&uid).is_none_or(|(_, old)| *old != pod) {
                        applied.changed.push(uid.clone());
                    }
                    self.pods.insert(uid, (self.generation, pod));
                }
            }
            Message::SnapshotEnd => {
                let generation = self.generation;
                self.pods.retain(|uid, (g, _)| {
                    let keep = *g == generation;
                    if !keep {
                        applied.removed.push(uid.clone());
                    }
                    keep
                });
            }
            Message::Delete(uids) => {
                for uid in uids {
                    if self.pods.remove(&uid).is_some() {
                        applied.removed.push(uid);
                    }
                }
            }
        }
        applied
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    fn pod(uid: &str, image: &str) -> PodProjection {
        let json = format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p-{uid}","uid":"{uid}"}},
               "spec":{{"containers":[{{"name":"app","image":"{image}"}}]}}}}"#
        );
        PodProjection::from_pod_json(json.as_bytes()).unwrap()
    }

    /// Feeds messages from sequence `from`, applying what is accepted; the steps.
    fn feed(state: &mut SyncState, inv: &mut ClusterInventory, from: u64, messages: Vec<Message>) -> Vec<Step> {
        messages
            .into_iter()
            .zip(from..)
            .map(|(m, seq)| {
                let step = state.accept(seq, &m);
                if step == Step::Apply {
                    inv.apply(m);
                }
                step
            })
            .collect()
    }

    /// A whole snapshot of `uids` in one page.
    fn snapshot(uids: &[&str]) -> Vec<Message> {
        vec![
            Message::SnapshotStart,
            Message::SnapshotPage(uids.iter().map(|u| pod(u, "nginx")).collect()),
            Message::SnapshotEnd,
        ]
    }

    fn uids(inv: &ClusterInventory) -> Vec<&str> {
        inv.pods().map(PodProjection::uid).collect()
    }

    #[test]
    fn a_snapshot_in_pages_then_deltas_builds_the_inventory() {
        let (mut s, mut inv) = (SyncState::new(), ClusterInventory::new());
        let steps = feed(
            &mut s,
            &mut inv,
            1,
            vec![
                Message::SnapshotStart,
                Message::SnapshotPage(vec![pod("a", "nginx"), pod("b", "nginx")]),
                Message::SnapshotPage(vec![pod("c", "nginx")]),
                Message::SnapshotEnd,
                Message::Upsert(vec![pod("d", "nginx")]),
                Message::Delete(vec!["a".into()]),
            ],
        );
        assert!(steps.iter().all(|s| *s == Step::Apply), "{steps:?}");
        assert_eq!(uids(&inv), ["b", "c", "d"]);
        assert_eq!(s.last_sequence(), 6);
        assert!(s.is_live());
    }

    #[test]
    fn pods_a_new_snapshot_does_not_send_are_gone() {
        let (mut s, mut inv) = (SyncState::new(), ClusterInventory::new());
        feed(&mut s, &mut inv, 1, snapshot(&["a", "b"]));
        assert_eq!(s.accept(10, &Message::SnapshotStart), Step::Apply);
        inv.apply(Message::SnapshotStart);
        assert_eq!(s.accept(11, &Message::SnapshotPage(vec![])), Step::Apply);
        let page = inv.apply(Message::SnapshotPage(vec![pod("b", "nginx"), pod("c", "nginx")]));
        assert_eq!(page.changed, ["c"], "b is unchanged: not re-evaluated");
        assert_eq!(s.accept(12, &Message::SnapshotEnd), Step::Apply);
        let end = inv.apply(Message::SnapshotEnd);
        assert_eq!(end.removed, ["a"]);
        assert_eq!(uids(&inv), ["b", "c"]);
    }

    #[test]
    fn an_update_reports_only_pods_that_changed() {
        let mut inv = ClusterInventory::new();
        inv.apply(Message::SnapshotStart);
        inv.apply(Message::SnapshotPage(vec![pod("a", "nginx"), pod("b", "nginx")]));
        let applied = inv.apply(Message::Upsert(vec![pod("a", "nginx"), pod("b", "redis")]));
        assert_eq!(applied.changed, ["b"]);
        assert_eq!(inv.apply(Message::Delete(vec!["zz".into()])), Applied::default());
    }

    #[test]
    fn a_delta_before_any_snapshot_asks_for_one() {
        let mut s = SyncState::new();
        assert_eq!(s.accept(1, &Message::Upsert(vec![])), Step::Resync(Resync::NoSnapshot));
        assert_eq!(s.accept(2, &Message::SnapshotEnd), Step::Resync(Resync::NoSnapshot));
        assert_eq!(s.accept(3, &Message::SnapshotStart), Step::Apply);
    }

    #[test]
    fn a_gap_asks_for_a_snapshot_and_refuses_deltas_until_one_starts() {
        let (mut s, mut inv) = (SyncState::new(), ClusterInventory::new());
        feed(&mut s, &mut inv, 1, vec![Message::SnapshotStart, Message::SnapshotEnd]);
        assert_eq!(
            s.accept(4, &Message::Upsert(vec![pod("a", "x")])),
            Step::Resync(Resync::Gap { expected: 3, got: 4 })
        );
        // The message that was missing arrives late: still no deltas until a new snapshot.
        assert_eq!(s.accept(3, &Message::Upsert(vec![])), Step::Resync(Resync::NoSnapshot));
        assert_eq!(s.accept(5, &Message::SnapshotStart), Step::Apply);
        assert_eq!(s.accept(6, &Message::SnapshotEnd), Step::Apply);
        assert_eq!(s.accept(7, &Message::Delete(vec![])), Step::Apply);
    }

    #[test]
    fn an_out_of_order_snapshot_message_asks_for_a_snapshot() {
        let (mut s, mut inv) = (SyncState::new(), ClusterInventory::new());
        feed(&mut s, &mut inv, 1, vec![Message::SnapshotStart, Message::SnapshotEnd]);
        assert_eq!(
            s.accept(3, &Message::SnapshotPage(vec![])),
            Step::Resync(Resync::NotInSnapshot)
        );
        let mut s = SyncState::new();
        assert_eq!(s.accept(1, &Message::SnapshotStart), Step::Apply);
        assert_eq!(
            s.accept(2, &Message::Upsert(vec![])),
            Step::Resync(Resync::DeltaInSnapshot)
        );
        assert!(!s.is_live());
    }

    #[test]
    fn a_batch_already_applied_is_acked_without_effect() {
        let (mut s, mut inv) = (SyncState::new(), ClusterInventory::new());
        let mut messages = snapshot(&["a"]);
        messages.push(Message::Delete(vec!["a".into()]));
        feed(&mut s, &mut inv, 1, messages);
        // A resend of the page after the delete must not bring the pod back.
        assert_eq!(
            s.accept(2, &Message::SnapshotPage(vec![pod("a", "nginx")])),
            Step::Duplicate
        );
        assert_eq!(
            s.accept(1, &Message::SnapshotStart),
            Step::Apply,
            "a start is a new baseline"
        );
        let mut s2 = SyncState::new();
        assert_eq!(s2.accept(7, &Message::SnapshotStart), Step::Apply);
        assert_eq!(
            s2.accept(7, &Message::SnapshotStart),
            Step::Duplicate,
            "the same start again"
        );
        assert_eq!(s2.last_sequence(), 7);
        assert!(inv.is_empty());
    }
}
