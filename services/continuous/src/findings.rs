//! Findings and the mitigation commands that follow from them.
//!
//! A finding is the current state of one rule on one running pod: (cluster, pod uid, rule),
//! with when it was first and last seen. Each re-evaluation of a pod gives the engine's
//! [`RunningDecision`]; [`reconcile_pod`] compares it with the pod's open findings and decides:
//! - a violation without an open finding **opens** one (published);
//! - an open finding whose violation is still there is **unchanged**: its first seen is kept,
//!   its last seen moves, and it is never published again; one whose mitigation changed (the
//!   policy changed the rule's mitigation) is **changed**, and published as such;
//! - an open finding whose violation is gone **resolves** (published), and so do all of a pod
//!   that is gone.
//!
//! A decision with stage failures (a scan-result store that could not answer) cannot tell a
//! violation that cleared from one that could not be looked up: the pod keeps its previous
//! state (no finding resolves, no isolation is lifted), while a violation it did find still
//! opens its finding, because that one is certain.
//!
//! Then the commands (POLICY.md section 4 point 5: the strongest mitigation of the open
//! findings decides, `terminate` > `isolate` > `log`):
//! - **isolate**, once, carrying the deny-all NetworkPolicy (see [`isolation_policy`]) the
//!   connector applies, selecting the label it sets on the pod; a pod on the host's network
//!   cannot be cut off by a NetworkPolicy, so it is reported [`Order::NotIsolatable`] instead;
//! - **restore-isolation** when an isolated pod's isolating violations clear;
//! - **terminate**, once per pod. A pod recreated by its owner (the controller owner
//!   reference) after a terminate comes back with the same spec: terminating it again at once
//!   would make a delete loop, so terminates back off per owner (1, 2, 4 ... 60 minutes after
//!   the owner's last one, [`terminate_backoff`]) and the pod gets a
//!   [`MITIGATION_INEFFECTIVE`] finding; [`Outcome::retry_at`] says when to look again. The
//!   owner's backoff ends when a pod of it is judged without a need to terminate.
//!
//! Everything here is pure: state in, state and what to publish and order out; the service
//! stores the state and sends the commands.

use std::collections::{BTreeMap, HashMap};

use compact_str::CompactString;
use portcullis_engine::evaluate::{RunningDecision, Violation};
use portcullis_engine::policy::Mitigation;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use crate::inventory::PodProjection;

/// The rule of the finding a pod gets when terminating its predecessors did not help.
pub const MITIGATION_INEFFECTIVE: &str = "mitigation-ineffective";

/// The label the connector sets on an isolated pod; the isolation NetworkPolicy selects it.
pub const ISOLATION_LABEL: &str = "isolation.portcullis.io/isolated";

/// The name of the isolation NetworkPolicy (one per namespace, the same for every pod).
pub const ISOLATION_POLICY_NAME: &str = "portcullis-isolation";

/// Which rule a finding is about: the rule type and its properties, as violations name it
/// (`containerSecurityContext { privileged:true }`), or [`MITIGATION_INEFFECTIVE`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleKey(pub String);

impl RuleKey {
    /// The rule of a violation.
    pub fn of(violation: &Violation) -> RuleKey {
        let mut key = String::with_capacity(64);
        key.push_str(violation.rule_type);
        key.push_str(" {");
        for (i, (k, v)) in violation.properties.iter().enumerate() {
            key.push_str(if i == 0 { " " } else { ", " });
            key.push_str(k);
            key.push(':');
            key.push_str(v);
        }
        key.push_str(" }");
        RuleKey(key)
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the rule of `violation` ([`RuleKey::of`] without building it: most
    /// findings are confirmed, and a key per confirmation would be most of the cost).
    pub fn is_of(&self, violation: &Violation) -> bool {
        let Some(rest) = self.0.strip_prefix(violation.rule_type) else {
            return false;
        };
        let Some(mut rest) = rest.strip_prefix(" {") else {
            return false;
        };
        for (i, (k, v)) in violation.properties.iter().enumerate() {
            let Some(r) = rest
                .strip_prefix(if i == 0 { " " } else { ", " })
                .and_then(|r| r.strip_prefix(k.as_str()))
                .and_then(|r| r.strip_prefix(':'))
                .and_then(|r| r.strip_prefix(v.as_str()))
            else {
                return false;
            };
            rest = r;
        }
        rest == " }"
    }
}

/// The state of one rule on one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The cluster's id.
    pub cluster: String,
    /// The pod's namespace.
    pub namespace: CompactString,
    /// The pod's name.
    pub pod: CompactString,
    /// The pod's uid.
    pub uid: String,
    /// The rule.
    pub rule: RuleKey,
    /// The rule's mitigation.
    pub mitigation: Mitigation,
    /// The offending containers (empty for pod-level rules).
    pub containers: Vec<String>,
    /// The engine's message.
    pub message: String,
    /// When it opened.
    pub first_seen: OffsetDateTime,
    /// When it was last confirmed.
    pub last_seen: OffsetDateTime,
    /// When it resolved (`None` while open).
    pub resolved: Option<OffsetDateTime>,
}

/// The continuous isolation of a pod.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Isolation {
    /// Not isolated.
    #[default]
    None,
    /// Isolation ordered.
    Isolated,
    /// Isolation wanted, but the pod is on the host network (reported once).
    NotIsolatable,
}

/// What is kept per pod between evaluations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodState {
    /// The open findings.
    pub open: Vec<Finding>,
    /// The isolation continuous scanning ordered.
    pub isolation: Isolation,
    /// When a terminate was ordered for this pod (it is not ordered twice).
    pub terminate_ordered: Option<OffsetDateTime>,
}

/// One owner's terminate backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Terminates ordered for the owner's pods (rounds, not pods).
    pub terminations: u32,
    /// When the last round was ordered.
    pub last: OffsetDateTime,
}

/// Terminate backoffs by owner uid (one cluster's).
pub type Owners = BTreeMap<String, Backoff>;

/// How long after an owner's `terminations`-th terminate round the next may be ordered:
/// 1, 2, 4, ... minutes, at most 60.
pub fn terminate_backoff(terminations: u32) -> Duration {
    let minutes = 1i64
        .checked_shl(terminations.saturating_sub(1))
        .unwrap_or(i64::MAX)
        .min(60);
    Duration::minutes(minutes)
}

/// Where a command goes: namespace, pod name and uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAddress {
    /// Namespace.
    pub namespace: CompactString,
    /// Pod name.
    pub name: CompactString,
    /// Pod uid (a recreated pod of the same name is another pod).
    pub uid: String,
}

/// What a command orders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// Apply `network_policy` and set [`ISOLATION_LABEL`] on the pod.
    Isolate {
        /// The deny-all NetworkPolicy ([`isolation_policy`]).
        network_policy: Value,
    },
    /// Delete the pod.
    Terminate,
    /// Remove [`ISOLATION_LABEL`] from the pod.
    RestoreIsolation,
    /// Isolation was wanted but the pod is on the host network: a report in the mitigations
    /// log, nothing sent to the connector.
    NotIsolatable,
}

impl Order {
    /// The name in the mitigations log.
    pub fn as_str(&self) -> &'static str {
        match self {
            Order::Isolate { .. } => "isolate",
            Order::Terminate => "terminate",
            Order::RestoreIsolation => "restore-isolation",
            Order::NotIsolatable => "not-isolatable",
        }
    }

    /// Whether it goes to the connector.
    pub fn is_sent(&self) -> bool {
        !matches!(self, Order::NotIsolatable)
    }
}

/// A command for one pod, and the findings it follows from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The pod.
    pub pod: PodAddress,
    /// What to do.
    pub order: Order,
    /// The rules of the open findings that call for it (empty for a restore).
    pub rules: Vec<RuleKey>,
}

/// The deny-all NetworkPolicy of isolation in `namespace`: it selects the pods carrying
/// [`ISOLATION_LABEL`] and allows no ingress and no egress.
pub fn isolation_policy(namespace: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": ISOLATION_POLICY_NAME,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "portcullis"},
        },
        "spec": {
            "podSelector": {"matchLabels": {ISOLATION_LABEL: "true"}},
            "policyTypes": ["Ingress", "Egress"],
        },
    })
}

/// What reconciling one pod gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// The pod's new state (every open finding, last seen moved where confirmed).
    pub state: PodState,
    /// What to publish and order.
    pub outcome: Outcome,
}

/// Reconciles one pod's previous state with its new decision, in cluster `cluster` at `now`;
/// `owners` holds the cluster's terminate backoffs and is updated.
pub fn reconcile_pod(
    cluster: &str,
    pod: &PodProjection,
    previous: PodState,
    decision: &RunningDecision,
    owners: &mut Owners,
    now: OffsetDateTime,
) -> Reconciled {
    let stage_failed = !decision.stage_failures.is_empty();
    let mut out = Outcome::default();
    let violations: Vec<&Violation> = decision
        .violations
        .iter()
        .filter(|v| v.mitigation != Mitigation::None)
        .collect();
    // Which violations an open finding confirms (the first of a rule, should a policy hold
    // the same rule twice).
    let mut confirmed = vec![false; violations.len()];
    let mut open: Vec<Finding> = Vec::with_capacity(violations.len() + 1);
    let mut was_ineffective: Option<Finding> = None;
    for mut f in previous.open {
        if f.rule.0 == MITIGATION_INEFFECTIVE {
            was_ineffective = Some(f);
            continue;
        }
        match violations.iter().enumerate().find(|(_, v)| f.rule.is_of(v)) {
            Some((i, v)) => {
                if let Some(c) = confirmed.get_mut(i) {
                    *c = true;
                }
                f.last_seen = now;
                if f.containers != v.containers {
                    v.containers.clone_into(&mut f.containers);
                }
                if f.message != v.message {
                    v.message.clone_into(&mut f.message);
                }
                if f.mitigation == v.mitigation {
                    out.unchanged += 1;
                } else {
                    f.mitigation = v.mitigation;
                    out.changed.push(f.clone());
                }
                open.push(f);
            }
            None if stage_failed => open.push(f),
            None => {
                f.resolved = Some(now);
                out.resolved.push(f);
            }
        }
    }
    for (i, v) in violations.iter().enumerate() {
        if confirmed.get(i) != Some(&false) {
            continue;
        }
        let key = RuleKey::of(v);
        if !open.iter().any(|f| f.rule == key) {
            let f = Finding {
                cluster: cluster.to_owned(),
                namespace: pod.namespace().into(),
                pod: pod.name().into(),
                uid: pod.uid().to_owned(),
                rule: key,
                mitigation: v.mitigation,
                containers: v.containers.clone(),
                message: v.message.clone(),
                first_seen: now,
                last_seen: now,
                resolved: None,
            };
            out.opened.push(f.clone());
            open.push(f);
        }
    }

    let wanted = open.iter().map(|f| f.mitigation).max().unwrap_or(Mitigation::None);
    let rules_for = |at_least: Mitigation, open: &[Finding]| -> Vec<RuleKey> {
        open.iter()
            .filter(|f| f.mitigation >= at_least)
            .map(|f| f.rule.clone())
            .collect()
    };
    let address = || PodAddress {
        namespace: pod.namespace().into(),
        name: pod.name().into(),
        uid: pod.uid().to_owned(),
    };
    let mut state = PodState {
        open: Vec::new(),
        isolation: previous.isolation,
        terminate_ordered: previous.terminate_ordered,
    };

    // Terminate, with the owner's backoff.
    let mut ineffective = false;
    if wanted == Mitigation::Terminate && state.terminate_ordered.is_none() {
        let owner = pod.controller().map(|o| o.uid.as_str());
        let go = match owner.and_then(|uid| owners.get_mut(uid)) {
            None => {
                if let Some(uid) = owner {
                    owners.insert(
                        uid.to_owned(),
                        Backoff {
                            terminations: 1,
                            last: now,
                        },
                    );
                }
                true
            }
            // Another pod of the owner in the same round: terminated with it.
            Some(b) if b.last == now => true,
            Some(b) => {
                // The owner recreated a pod that must be terminated again.
                ineffective = true;
                let next = b.last + terminate_backoff(b.terminations);
                if now >= next {
                    b.terminations = b.terminations.saturating_add(1);
                    b.last = now;
                    true
                } else {
                    out.retry_at = Some(next);
                    false
                }
            }
        };
        if go {
            state.terminate_ordered = Some(now);
            out.commands.push(Command {
                pod: address(),
                order: Order::Terminate,
                rules: rules_for(Mitigation::Terminate, &open),
            });
        }
    } else if wanted < Mitigation::Terminate
        && !stage_failed
        && let Some(o) = pod.controller()
    {
        owners.remove(&o.uid);
    }
    // The pod's own ineffective finding stays while a terminate is still wanted (and under a
    // stage failure, like every other finding).
    let keep_ineffective =
        ineffective || ((wanted == Mitigation::Terminate || stage_failed) && was_ineffective.is_some());
    match (was_ineffective, keep_ineffective) {
        (Some(mut kept), true) => {
            if !stage_failed || ineffective {
                kept.last_seen = now;
            }
            out.unchanged += 1;
            open.push(kept);
        }
        (Some(mut gone), false) => {
            gone.resolved = Some(now);
            out.resolved.push(gone);
        }
        (None, true) => {
            let f = Finding {
                cluster: cluster.to_owned(),
                namespace: pod.namespace().into(),
                pod: pod.name().into(),
                uid: pod.uid().to_owned(),
                rule: RuleKey(MITIGATION_INEFFECTIVE.to_owned()),
                mitigation: Mitigation::Log,
                containers: Vec::new(),
                message: format!(
                    "terminating the pods of {} did not help: it recreated this one; the next terminate is backed off",
                    pod.controller()
                        .map_or_else(String::new, |o| format!("{} {:?}", o.kind, o.name))
                ),
                first_seen: now,
                last_seen: now,
                resolved: None,
            };
            out.opened.push(f.clone());
            open.push(f);
        }
        (None, false) => {}
    }

    // Isolation: wanted while the strongest open mitigation is isolate; a pod to terminate
    // keeps whatever isolation it has until it is gone.
    match wanted {
        Mitigation::Isolate if state.isolation == Isolation::None => {
            if pod.host_network() {
                state.isolation = Isolation::NotIsolatable;
                out.commands.push(Command {
                    pod: address(),
                    order: Order::NotIsolatable,
                    rules: rules_for(Mitigation::Isolate, &open),
                });
            } else {
                state.isolation = Isolation::Isolated;
                out.commands.push(Command {
                    pod: address(),
                    order: Order::Isolate {
                        network_policy: isolation_policy(pod.namespace()),
                    },
                    rules: rules_for(Mitigation::Isolate, &open),
                });
            }
        }
        Mitigation::None | Mitigation::Log if !stage_failed => {
            if state.isolation == Isolation::Isolated {
                out.commands.push(Command {
                    pod: address(),
                    order: Order::RestoreIsolation,
                    rules: Vec::new(),
                });
            }
            state.isolation = Isolation::None;
        }
        _ => {}
    }
    state.open = open;
    Reconciled { state, outcome: out }
}

/// A pod that is gone: every open finding resolves at `now`.
pub fn pod_gone(previous: PodState, now: OffsetDateTime) -> Vec<Finding> {
    previous
        .open
        .into_iter()
        .map(|mut f| {
            f.resolved = Some(now);
            f
        })
        .collect()
}

/// One cluster's findings state: per pod uid, and the owners' backoffs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterFindings {
    /// Pod uid → its state (pods without open findings or isolation are left out).
    pub pods: HashMap<String, PodState>,
    /// Terminate backoffs by owner uid.
    pub owners: Owners,
}

/// What reconciling gave: what to publish and to order (for one pod, or for a cluster or
/// part of one, all pods together).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Findings that opened.
    pub opened: Vec<Finding>,
    /// Open findings whose mitigation changed.
    pub changed: Vec<Finding>,
    /// Findings that resolved.
    pub resolved: Vec<Finding>,
    /// How many open findings were confirmed unchanged.
    pub unchanged: usize,
    /// Commands to order.
    pub commands: Vec<Command>,
    /// The earliest moment a held-back terminate may be ordered (evaluate again then).
    pub retry_at: Option<OffsetDateTime>,
}

impl Outcome {
    /// Adds another pod's outcome to this one.
    pub fn absorb(&mut self, other: Outcome) {
        self.opened.extend(other.opened);
        self.changed.extend(other.changed);
        self.resolved.extend(other.resolved);
        self.unchanged += other.unchanged;
        self.commands.extend(other.commands);
        self.retry_at = match (self.retry_at, other.retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

impl ClusterFindings {
    /// Reconciles the pods judged (each with its decision) and the pods gone, at `now`,
    /// updating the state.
    pub fn reconcile<'a>(
        &mut self,
        cluster: &str,
        judged: impl IntoIterator<Item = (&'a PodProjection, RunningDecision)>,
        gone: &[String],
        now: OffsetDateTime,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        for (pod, decision) in judged {
            let uid = pod.uid();
            let previous = self.pods.get_mut(uid).map(std::mem::take).unwrap_or_default();
            let r = reconcile_pod(cluster, pod, previous, &decision, &mut self.owners, now);
            outcome.absorb(r.outcome);
            if r.state == PodState::default() {
                self.pods.remove(uid);
            } else if let Some(slot) = self.pods.get_mut(uid) {
                *slot = r.state;
            } else {
                self.pods.insert(uid.to_owned(), r.state);
            }
        }
        for uid in gone {
            if let Some(state) = self.pods.remove(uid) {
                outcome.resolved.extend(pod_gone(state, now));
            }
        }
        outcome
    }
}

/// The next moment after `now` at which one of `expiries` (the `expiresAt` of a policy's
/// exceptions) passes: the service re-evaluates the policy's clusters then, not at the next
/// sweep. `None` when none is still ahead.
pub fn next_expiry(expiries: impl IntoIterator<Item = OffsetDateTime>, now: OffsetDateTime) -> Option<OffsetDateTime> {
    expiries.into_iter().filter(|t| *t > now).min()
}

#[cfg(test)]
mod tests;
