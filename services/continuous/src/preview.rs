//! Re-evaluation of a cluster's inventory, and the impact preview of a draft policy.
//!
//! [`reevaluate`] judges every pod of an inventory with the cluster's policy and reconciles
//! the findings ([`crate::findings`]): the sweep, and what `policy.changed` and
//! `cluster.changed` trigger. [`preview`] answers what the same would do with a draft policy
//! — the findings it would open and resolve and the mitigations it would order — from the
//! same inventory and findings, changing nothing: it runs the very reconciliation
//! [`reevaluate`] runs, per pod, on borrowed state (and a copy of the owners' terminate
//! backoffs), so that what it shows is what applying the draft then does.

use std::collections::HashSet;

use portcullis_engine::evaluate::{CompiledPolicy, EvalContext, RunningDecision};

use crate::findings::{ClusterFindings, Outcome, pod_gone, reconcile_pod};
use crate::inventory::PodProjection;

/// Judges one pod of the inventory with the engine.
pub fn judge(policy: &CompiledPolicy, ctx: &EvalContext<'_>, pod: &PodProjection) -> RunningDecision {
    policy.evaluate_running(pod.subject(), ctx)
}

/// Uids holding findings state that are not in the inventory: those pods are gone.
fn gone(findings: &ClusterFindings, pods: &[PodProjection]) -> Vec<String> {
    if findings.pods.is_empty() {
        return Vec::new();
    }
    let present: HashSet<&str> = pods.iter().map(PodProjection::uid).collect();
    let mut gone: Vec<String> = findings
        .pods
        .keys()
        .filter(|uid| !present.contains(uid.as_str()))
        .cloned()
        .collect();
    gone.sort();
    gone
}

/// Re-evaluates every pod of a cluster's inventory with `policy` at `ctx.now` and reconciles
/// `findings` (pods no longer in the inventory resolve theirs).
pub fn reevaluate(
    cluster: &str,
    pods: &[PodProjection],
    findings: &mut ClusterFindings,
    policy: &CompiledPolicy,
    ctx: &EvalContext<'_>,
) -> Outcome {
    let gone = gone(findings, pods);
    findings.reconcile(cluster, pods.iter().map(|p| (p, judge(policy, ctx, p))), &gone, ctx.now)
}

/// What re-evaluating `pods` with `draft` would do to `findings` (the findings it would open,
/// change and resolve, and the mitigations it would order), without doing it.
pub fn preview(
    cluster: &str,
    pods: &[PodProjection],
    findings: &ClusterFindings,
    draft: &CompiledPolicy,
    ctx: &EvalContext<'_>,
) -> Outcome {
    let mut owners = findings.owners.clone();
    let mut out = Outcome::default();
    for pod in pods {
        let previous = findings.pods.get(pod.uid()).cloned().unwrap_or_default();
        let r = reconcile_pod(cluster, pod, previous, &judge(draft, ctx, pod), &mut owners, ctx.now);
        out.absorb(r.outcome);
    }
    for uid in gone(findings, pods) {
        if let Some(state) = findings.pods.get(&uid) {
            out.resolved.extend(pod_gone(state.clone(), ctx.now));
        }
    }
    out
}
