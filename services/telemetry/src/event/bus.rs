//! Bus events (`admission.decision`, `continuous.finding`, `continuous.mitigation`,
//! `signature.verdict`) as security events.
//!
//! Their id is the envelope's `event_id`, their time the envelope's `occurred_at`.
//! - admission: the action is `block` when rejected, `log` when admitted with violations,
//!   else `allow`; the rule is the rule type of the first blocking violation, else of the
//!   first violation; the workload is the object itself unless it is a Pod (then its owner,
//!   see [`crate::entity`]); the image is the one of the first signature verdict that did not
//!   verify, else the decision's first image;
//! - finding: the finding's rule, pod, owner, first digest and mitigation;
//! - mitigation: the command's type as the action, its first runtime rule id or rule as the
//!   rule, its pod; the mitigation is isolate or terminate for those types;
//! - signature: the first attestor that did not verify (else the first) as the rule.

use compact_str::CompactString;
use portcullis_proto::admission::v1 as pa;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::continuous::v1 as pcont;
use portcullis_proto::events::v1 as pe;
use portcullis_proto::signature::v1 as ps;
use serde_json::json;
use time::OffsetDateTime;

use super::{Action, MAX_SUMMARY_BYTES, Mitigation, SecurityEvent, Severity, Source, truncate};
use crate::convert::time_of;
use crate::entity::{Workload, workload_of};

/// Why a bus event could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusEventError {
    /// A required field is missing.
    #[error("{topic} event {event_id}: field `{field}` is missing")]
    Missing {
        /// The topic.
        topic: &'static str,
        /// The envelope's event id.
        event_id: String,
        /// The field.
        field: &'static str,
    },
    /// A field has an invalid value.
    #[error("{topic} event {event_id}: field `{field}` is invalid")]
    Invalid {
        /// The topic.
        topic: &'static str,
        /// The envelope's event id.
        event_id: String,
        /// The field.
        field: &'static str,
    },
}

fn owner_workload(pod: &str, owner: Option<&pc::OwnerRef>) -> Workload {
    workload_of(pod, owner.map(|o| (o.kind.as_str(), o.name.as_str())), None)
}

fn base(
    env: &pe::EventEnvelope,
    source: Source,
    occurred_at: OffsetDateTime,
    action: Action,
    severity: Severity,
) -> SecurityEvent {
    SecurityEvent {
        id: env.event_id.as_str().into(),
        tenant_id: env.tenant_id.as_str().into(),
        cluster_id: CompactString::default(),
        source,
        occurred_at,
        severity,
        rule: CompactString::default(),
        summary: String::new(),
        action,
        namespace: CompactString::default(),
        pod: CompactString::default(),
        pod_uid: CompactString::default(),
        container: CompactString::default(),
        image: String::new(),
        digest: CompactString::default(),
        subresource: CompactString::default(),
        workload: None,
        labels: None,
        mitigation: None,
        details_json: String::new(),
    }
}

impl SecurityEvent {
    /// The security event of a bus event; `Ok(None)` for topics telemetry does not keep
    /// (`policy.changed`, `runtime.mitigation`, ...) and envelopes without a payload.
    pub fn from_envelope(env: &pe::EventEnvelope) -> Result<Option<Self>, BusEventError> {
        use pe::event_envelope::Payload as P;
        let topic: &'static str = match &env.payload {
            Some(P::AdmissionDecision(_)) => "admission.decision",
            Some(P::ContinuousFinding(_)) => "continuous.finding",
            Some(P::ContinuousMitigation(_)) => "continuous.mitigation",
            Some(P::SignatureVerdict(_)) => "signature.verdict",
            _ => return Ok(None),
        };
        let missing = |field| BusEventError::Missing {
            topic,
            event_id: env.event_id.clone(),
            field,
        };
        if env.event_id.is_empty() {
            return Err(missing("event_id"));
        }
        let occurred_at = env.occurred_at.as_ref().ok_or_else(|| missing("occurred_at"))?;
        let occurred_at = time_of(occurred_at).ok_or_else(|| BusEventError::Invalid {
            topic,
            event_id: env.event_id.clone(),
            field: "occurred_at",
        })?;
        let event = match &env.payload {
            Some(P::AdmissionDecision(d)) => admission(env, occurred_at, d).ok_or_else(|| missing("summary"))?,
            Some(P::ContinuousFinding(f)) => finding(env, occurred_at, f).ok_or_else(|| missing("finding"))?,
            Some(P::ContinuousMitigation(m)) => mitigation(env, occurred_at, m).ok_or_else(|| missing("command"))?,
            Some(P::SignatureVerdict(v)) => signature(env, occurred_at, v),
            _ => return Ok(None),
        };
        Ok(Some(event))
    }
}

fn action_name(a: i32) -> &'static str {
    match pc::Action::try_from(a) {
        Ok(pc::Action::Block) => "block",
        Ok(pc::Action::Log) => "log",
        Ok(pc::Action::None) => "none",
        _ => "",
    }
}

fn admission(env: &pe::EventEnvelope, at: OffsetDateTime, d: &pe::AdmissionDecision) -> Option<SecurityEvent> {
    let s = d.summary.as_ref()?;
    let full = d.decision.as_ref();
    let violations: &[pc::Violation] = full.map(|d| d.violations.as_slice()).unwrap_or(&[]);
    let action = if !s.allowed {
        Action::Block
    } else if !violations.is_empty() {
        Action::Log
    } else {
        Action::Allow
    };
    let severity = match action {
        Action::Block => Severity::High,
        Action::Log => Severity::Medium,
        _ => Severity::Info,
    };
    let mut e = base(env, Source::Admission, at, action, severity);
    e.cluster_id = s.cluster_id.as_str().into();
    e.subresource = s.subresource.as_str().into();
    let object = s.object.as_ref();
    let (kind, namespace, name) = object
        .map(|o| (o.kind.as_str(), o.namespace.as_str(), o.name.as_str()))
        .unwrap_or(("", "", ""));
    e.namespace = namespace.into();
    if kind == "Pod" {
        e.pod = name.into();
        e.pod_uid = object.map(|o| o.uid.as_str()).unwrap_or("").into();
        if !name.is_empty() || s.owner.is_some() {
            e.workload = Some(owner_workload(name, s.owner.as_ref()));
        }
    } else if !kind.is_empty() && !name.is_empty() {
        e.workload = Some(Workload::new(kind, name));
    }
    let first = violations
        .iter()
        .find(|v| v.action == pc::Action::Block as i32)
        .or_else(|| violations.first());
    if let Some(v) = first {
        e.rule = v.rule_type.as_str().into();
    }
    if let Some(full) = full {
        let failing = full
            .signatures
            .iter()
            .find(|v| v.verdict != ps::Verdict::Verified as i32);
        match failing {
            Some(v) => {
                e.image = v.image.clone();
                e.digest = v.digest.as_str().into();
            }
            None => {
                if let Some(img) = full.digests.first() {
                    e.image = img.image.clone();
                    e.digest = img.digest.as_str().into();
                }
            }
        }
    }
    let what = match action {
        Action::Block => "blocked",
        Action::Log => "admitted with violations",
        _ => "admitted",
    };
    let target = if s.subresource.is_empty() {
        format!("{kind} {namespace}/{name}")
    } else {
        format!("{kind}/{} {namespace}/{name}", s.subresource)
    };
    let mut summary = format!("{} {target} {what}", s.operation);
    if let Some(v) = first {
        summary.push_str(": ");
        summary.push_str(&v.message);
        if violations.len() > 1 {
            summary.push_str(&format!(" (+{} more)", violations.len() - 1));
        }
    }
    e.summary = truncate(&summary, MAX_SUMMARY_BYTES).to_owned();
    let basis = pa::DecisionBasis::try_from(s.basis)
        .map(|b| b.as_str_name())
        .unwrap_or("");
    e.details_json = json!({
        "uid": s.uid,
        "operation": s.operation,
        "subresource": s.subresource,
        "kind": kind,
        "namespace": namespace,
        "name": name,
        "owner": s.owner.as_ref().map(|o| json!({"kind": o.kind, "name": o.name, "uid": o.uid})),
        "allowed": s.allowed,
        "basis": basis,
        "policy_id": s.policy_id,
        "policy_revision": s.policy_revision,
        "user": full.map(|d| d.user.as_str()).unwrap_or(""),
        "violations": violations.iter().map(|v| json!({
            "rule_type": v.rule_type, "action": action_name(v.action), "message": v.message,
            "containers": v.containers,
        })).collect::<Vec<_>>(),
        "images": full.map(|d| d.digests.iter().map(|i| json!({"image": i.image, "digest": i.digest})).collect::<Vec<_>>()).unwrap_or_default(),
        "degraded": full.map(|d| d.degraded.clone()).unwrap_or_default(),
    })
    .to_string();
    Some(e)
}

fn finding(env: &pe::EventEnvelope, at: OffsetDateTime, f: &pe::ContinuousFinding) -> Option<SecurityEvent> {
    let fi = f.finding.as_ref()?;
    let resolved =
        f.transition == pe::FindingTransition::Resolved as i32 || fi.state == pcont::FindingState::Resolved as i32;
    let violation = fi.violation.as_ref();
    let mitigation = violation.and_then(|v| Mitigation::from_proto(v.mitigation));
    let (action, severity) = if resolved {
        (Action::Resolve, Severity::Info)
    } else if matches!(mitigation, Some(Mitigation::Isolate | Mitigation::Terminate)) {
        (Action::Open, Severity::High)
    } else {
        (Action::Open, Severity::Medium)
    };
    let mut e = base(env, Source::Finding, at, action, severity);
    e.cluster_id = fi.cluster_id.as_str().into();
    e.rule = fi.rule.as_str().into();
    e.mitigation = mitigation;
    if let Some(p) = &fi.pod {
        e.namespace = p.namespace.as_str().into();
        e.pod = p.name.as_str().into();
        e.pod_uid = p.uid.as_str().into();
        e.workload = Some(owner_workload(&p.name, fi.owner.as_ref()));
    }
    if let Some(v) = violation
        && let [c, ..] = v.containers.as_slice()
    {
        e.container = c.as_str().into();
    }
    if let Some(img) = fi.digests.first() {
        e.image = img.image.clone();
        e.digest = img.digest.as_str().into();
    }
    let message = violation.map(|v| v.message.as_str()).unwrap_or("");
    let summary = if resolved {
        format!("resolved: {}", fi.rule)
    } else if message.is_empty() {
        fi.rule.clone()
    } else {
        message.to_owned()
    };
    e.summary = truncate(&summary, MAX_SUMMARY_BYTES).to_owned();
    e.details_json = json!({
        "finding_id": fi.id,
        "rule": fi.rule,
        "message": message,
        "state": if resolved { "resolved" } else { "open" },
        "policy_id": fi.policy_id,
        "policy_revision": fi.policy_revision,
        "mitigation": mitigation.map(Mitigation::as_str),
        "owner": fi.owner.as_ref().map(|o| json!({"kind": o.kind, "name": o.name, "uid": o.uid})),
    })
    .to_string();
    Some(e)
}

fn mitigation(env: &pe::EventEnvelope, at: OffsetDateTime, m: &pe::ContinuousMitigation) -> Option<SecurityEvent> {
    let c = m.command.as_ref()?;
    let (action, severity, mitigation) =
        match pcont::CommandType::try_from(c.r#type).unwrap_or(pcont::CommandType::Unspecified) {
            pcont::CommandType::Isolate => (Action::Isolate, Severity::Medium, Some(Mitigation::Isolate)),
            pcont::CommandType::Terminate => (Action::Terminate, Severity::Medium, Some(Mitigation::Terminate)),
            pcont::CommandType::Restore => (Action::Restore, Severity::Low, None),
            pcont::CommandType::NotIsolatable => (Action::NotIsolatable, Severity::Low, None),
            pcont::CommandType::Unspecified => return None,
        };
    let mut e = base(env, Source::Mitigation, at, action, severity);
    e.cluster_id = c.cluster_id.as_str().into();
    e.mitigation = mitigation;
    e.rule = c
        .runtime_rule_ids
        .first()
        .or_else(|| c.rules.first())
        .map(String::as_str)
        .unwrap_or("")
        .into();
    if let Some(p) = &c.pod {
        e.namespace = p.namespace.as_str().into();
        e.pod = p.name.as_str().into();
        e.pod_uid = p.uid.as_str().into();
    }
    let state = pcont::CommandState::try_from(c.state)
        .map(|s| s.as_str_name())
        .unwrap_or("");
    let summary = format!(
        "{} {}/{} ({}): {}",
        action.as_str(),
        e.namespace,
        e.pod,
        state.trim_start_matches("COMMAND_STATE_").to_ascii_lowercase(),
        c.reason
    );
    e.summary = truncate(&summary, MAX_SUMMARY_BYTES).to_owned();
    let origin = pcont::CommandOrigin::try_from(c.origin)
        .map(|o| o.as_str_name())
        .unwrap_or("");
    e.details_json = json!({
        "command_id": c.command_id,
        "type": action.as_str(),
        "origin": origin,
        "state": state,
        "reason": c.reason,
        "finding_ids": c.finding_ids,
        "runtime_rule_ids": c.runtime_rule_ids,
        "rules": c.rules,
        "ack_message": c.ack_message,
    })
    .to_string();
    Some(e)
}

fn signature(env: &pe::EventEnvelope, at: OffsetDateTime, v: &pe::SignatureVerdict) -> SecurityEvent {
    let not_verified = v.verdicts.iter().find(|a| a.verdict == ps::Verdict::NotVerified as i32);
    let errored = v.verdicts.iter().find(|a| a.verdict != ps::Verdict::Verified as i32);
    let (action, severity, culprit) = match (not_verified, errored) {
        (Some(a), _) => (Action::Failed, Severity::High, Some(a)),
        (None, Some(a)) => (Action::Error, Severity::Medium, Some(a)),
        (None, None) => (Action::Verified, Severity::Info, v.verdicts.first()),
    };
    let mut e = base(env, Source::Signature, at, action, severity);
    e.cluster_id = v.cluster_id.as_str().into();
    e.image = v.image.clone();
    e.digest = v.digest.as_str().into();
    e.rule = culprit.map(|a| a.attestor.as_str()).unwrap_or("").into();
    let summary = match culprit {
        Some(a) if action != Action::Verified => format!(
            "signature of {} {} by {}: {}",
            v.image,
            action.as_str(),
            a.attestor,
            a.reason
        ),
        _ => format!("signature of {} verified", v.image),
    };
    e.summary = truncate(&summary, MAX_SUMMARY_BYTES).to_owned();
    e.details_json = json!({
        "image": v.image,
        "digest": v.digest,
        "verdicts": v.verdicts.iter().map(|a| json!({
            "attestor": a.attestor,
            "verdict": ps::Verdict::try_from(a.verdict).map(|x| x.as_str_name()).unwrap_or(""),
            "reason": a.reason,
        })).collect::<Vec<_>>(),
    })
    .to_string();
    e
}
