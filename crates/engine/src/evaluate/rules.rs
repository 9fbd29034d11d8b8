//! The rule evaluators: each rule check of a definition judged against one pod, and the
//! CONNECT rules judged against a request.

use compact_str::CompactString;

use crate::input::Subject;
use crate::k8s::{Container, PodSpec};
use crate::policy::{Action, CapabilitiesPreset, HostNamespace, RuleCheck, RuleType};
use crate::pss::{self, CheckId, Scope};
use crate::scan::{ScanSummary, ScanType, ScanUnavailable};

use super::compile::{CompiledPolicy, CompiledRule, Definition, Phase};
use super::context::DigestLookup;
use super::decision::{Decision, NotEvaluated, Verdict};
use super::messages::{expired_exceptions_clause, violation};
use super::run::Run;

/// The container runtime's default capability set (POLICY.md section 3).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

impl CompiledPolicy {
    /// A CONNECT request (`pods/exec`, `attach`, `portforward`) judged by the definition's
    /// rules on it.
    pub(super) fn evaluate_connect(&self, def: &Definition, subject: &Subject) -> Decision {
        let wanted = match (subject.resource.as_str(), subject.sub_resource.as_str()) {
            ("pods", "exec" | "attach") => RuleCheck::PodExec,
            ("pods", "portforward") => RuleCheck::PortForward,
            _ => return Decision::allowed_without_evaluation(NotEvaluated::OtherConnect),
        };
        let mut decision = Decision::allowed_without_evaluation(NotEvaluated::OtherConnect);
        decision.not_evaluated = None;
        for r in def
            .rules
            .iter()
            .filter(|r| r.rule.check == wanted && r.active(Phase::Admission))
        {
            decision.violations.push(violation(
                r,
                Phase::Admission,
                Vec::new(),
                true,
                &subject.name,
                Vec::new(),
                "",
            ));
        }
        if decision.violations.iter().any(|v| v.action == Action::Block) {
            decision.verdict = Verdict::Block;
        }
        decision
    }
}

fn host_namespace_set(spec: &PodSpec, which: HostNamespace) -> bool {
    let flag = match which {
        HostNamespace::Network => spec.host_network,
        HostNamespace::Ipc => spec.host_ipc,
        HostNamespace::Pid => spec.host_pid,
    };
    flag == Some(true)
}

fn added_capabilities(c: &Container) -> &[CompactString] {
    c.security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .map_or(&[], |caps| caps.add.as_slice())
}

fn drops_all(c: &Container) -> bool {
    c.security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .is_some_and(|caps| caps.drop.iter().any(|d| d == "ALL"))
}

impl Run<'_, '_> {
    /// Every rule of the definition active in this run's phase, against the pod.
    pub(super) fn rules(&mut self) {
        let (def, phase) = (self.def, self.phase);
        for r in def.rules.iter().filter(|r| r.active(phase)) {
            match &r.rule.check {
                RuleCheck::HostNamespace(which) => {
                    if self.pod_level && host_namespace_set(self.spec, *which) {
                        self.push(r, Vec::new(), true, Vec::new(), "");
                    }
                }
                RuleCheck::Privileged => self.psa_rule(r, &[CheckId::Privileged]),
                RuleCheck::AllowPrivilegeEscalation => self.psa_rule(r, &[CheckId::AllowPrivilegeEscalation]),
                RuleCheck::RunAsRoot => self.psa_rule(r, &[CheckId::RunAsNonRoot, CheckId::RunAsUser]),
                RuleCheck::Capabilities(CapabilitiesPreset::Baseline) => {
                    self.psa_rule(r, &[CheckId::CapabilitiesBaseline])
                }
                RuleCheck::Capabilities(CapabilitiesPreset::Restricted) => {
                    if self.spec.is_windows() {
                        // PSA skips capabilities_restricted for Windows pods; its limit on
                        // added capabilities still applies here (POLICY.md, Windows pods).
                        let bad =
                            self.bad_containers(|c| added_capabilities(c).iter().any(|a| a != "NET_BIND_SERVICE"));
                        self.psa_rule_with(r, &[CheckId::CapabilitiesBaseline], bad, "capabilities_restricted");
                    } else {
                        self.psa_rule(r, &[CheckId::CapabilitiesRestricted, CheckId::CapabilitiesBaseline]);
                    }
                }
                RuleCheck::Capabilities(CapabilitiesPreset::RestrictNondefaults) => {
                    let bad = self.bad_containers(|c| {
                        added_capabilities(c)
                            .iter()
                            .any(|a| !DEFAULT_CAPABILITIES.contains(&a.as_str()))
                    });
                    self.push_containers(r, bad);
                }
                RuleCheck::Capabilities(CapabilitiesPreset::RestrictAll) => {
                    let windows = self.spec.is_windows();
                    let bad = self.bad_containers(|c| (!windows && !drops_all(c)) || !added_capabilities(c).is_empty());
                    self.push_containers(r, bad);
                }
                RuleCheck::WritableRootFilesystem => {
                    let bad = self.bad_containers(|c| {
                        c.security_context.as_ref().and_then(|s| s.read_only_root_filesystem) != Some(true)
                    });
                    self.push_containers(r, bad);
                }
                RuleCheck::ImageField { field, operator, value } => {
                    let mut bad = Vec::new();
                    let mut invalid = Vec::new();
                    let mut scratch = String::new();
                    for info in self.containers.iter().filter(|i| !i.exempt) {
                        match info.image() {
                            Ok(image) => {
                                if operator.holds(field.value_of(image, &mut scratch), value) {
                                    bad.push(info.container.name.as_str().to_owned());
                                }
                            }
                            Err(_) => {
                                bad.push(info.container.name.as_str().to_owned());
                                invalid.push(format!("{:?}", info.container.image));
                            }
                        }
                    }
                    if !bad.is_empty() {
                        let detail = if invalid.is_empty() {
                            String::new()
                        } else {
                            format!("invalid image reference {}", invalid.join(", "))
                        };
                        self.push(r, bad, false, Vec::new(), &detail);
                    }
                }
                RuleCheck::Vulnerabilities { .. }
                | RuleCheck::Cvss { .. }
                | RuleCheck::Malware
                | RuleCheck::Secrets
                | RuleCheck::Unscanned { .. } => self.scan_rule(r),
                // Judged on CONNECT requests only (see `evaluate_connect`).
                RuleCheck::PodExec | RuleCheck::PortForward => {}
                RuleCheck::PodSecurityStandard(level) => {
                    let scope_fn = |c: &Container| self.in_scope(c);
                    let scope = Scope {
                        container: &scope_fn,
                        pod_level: self.pod_level,
                    };
                    let failures = pss::evaluate_level(*level, self.meta, self.spec, &scope);
                    if !failures.is_empty() {
                        let containers = self.union_containers(failures.iter().map(|f| f.containers.as_slice()));
                        let pod_level = failures.iter().any(|f| f.pod_level);
                        let checks = failures.iter().map(|f| f.id.as_str()).collect();
                        let mut detail = String::new();
                        for (i, f) in failures.iter().enumerate() {
                            if i > 0 {
                                detail.push_str("; ");
                            }
                            for part in [f.id.as_str(), " (", f.reason, ": ", &f.detail, ")"] {
                                detail.push_str(part);
                            }
                        }
                        self.push(r, containers, pod_level, checks, &detail);
                    }
                }
            }
        }
    }

    /// A rule defined as exactly some PSA checks.
    fn psa_rule(&mut self, r: &CompiledRule, ids: &[CheckId]) {
        self.psa_rule_with(r, ids, Vec::new(), "");
    }

    /// PSA checks plus containers found bad by our own extra condition (named `extra_id`).
    fn psa_rule_with(&mut self, r: &CompiledRule, ids: &[CheckId], extra: Vec<String>, extra_id: &'static str) {
        let scope_fn = |c: &Container| self.in_scope(c);
        let scope = Scope {
            container: &scope_fn,
            pod_level: self.pod_level,
        };
        let failures: Vec<pss::CheckFailure> = ids
            .iter()
            .filter_map(|id| pss::check(*id, self.meta, self.spec, &scope))
            .collect();
        if failures.is_empty() && extra.is_empty() {
            return;
        }
        let containers = self.union_containers(
            failures
                .iter()
                .map(|f| f.containers.as_slice())
                .chain(std::iter::once(extra.as_slice())),
        );
        let pod_level = failures.iter().any(|f| f.pod_level);
        let mut checks: Vec<&'static str> = failures.iter().map(|f| f.id.as_str()).collect();
        if !extra.is_empty() {
            checks.push(extra_id);
        }
        self.push(r, containers, pod_level, checks, "");
    }

    /// The in-scope containers named in any of `lists`, in visiting order, each once.
    fn union_containers<'l>(&self, lists: impl Iterator<Item = &'l [String]> + Clone) -> Vec<String> {
        self.containers
            .iter()
            .map(|i| &i.container.name)
            .filter(|name| lists.clone().any(|l| l.iter().any(|n| n == *name)))
            .fold(Vec::new(), |mut acc, name| {
                if !acc.iter().any(|n| n == name) {
                    acc.push(name.as_str().to_owned());
                }
                acc
            })
    }

    fn bad_containers(&self, bad: impl Fn(&Container) -> bool) -> Vec<String> {
        self.containers
            .iter()
            .filter(|i| !i.exempt && bad(i.container))
            .map(|i| i.container.name.as_str().to_owned())
            .collect()
    }

    fn push_containers(&mut self, r: &CompiledRule, bad: Vec<String>) {
        if !bad.is_empty() {
            self.push(r, bad, false, Vec::new(), "");
        }
    }

    fn push(
        &mut self,
        r: &CompiledRule,
        containers: Vec<String>,
        pod_level: bool,
        checks: Vec<&'static str>,
        detail: &str,
    ) {
        // Only a pod with a container matching an expired exception pays for the clause.
        let expired = if !self.expired_at.is_empty() {
            self.expired_exceptions(&containers, pod_level)
        } else {
            None
        };
        let detail = match (&expired, detail.is_empty()) {
            (None, _) => std::borrow::Cow::Borrowed(detail),
            (Some(clause), true) => std::borrow::Cow::Borrowed(clause.as_str()),
            (Some(clause), false) => std::borrow::Cow::Owned(format!("{detail}; {clause}")),
        };
        self.violations.push(violation(
            r,
            self.phase,
            containers,
            pod_level,
            &self.subject.name,
            checks,
            &detail,
        ));
    }

    /// The `exception expired at ...` clause for a violation naming `containers` (and the
    /// pod when `pod_level`), or `None` when no expired exception would have exempted it.
    fn expired_exceptions(&self, containers: &[String], pod_level: bool) -> Option<String> {
        let mut entries: Vec<(Option<&str>, time::OffsetDateTime)> = containers
            .iter()
            .filter_map(|name| {
                self.containers
                    .iter()
                    .zip(&self.expired_at)
                    .find(|(i, _)| i.container.name == name.as_str())
                    .and_then(|(_, t)| *t)
                    .map(|t| (Some(name.as_str()), t))
            })
            .collect();
        if pod_level && let Some(t) = self.pod_expired_at {
            entries.push((None, t));
        }
        let covers_all = entries.len() == containers.len() + usize::from(pod_level);
        expired_exceptions_clause(&entries, covers_all, &self.subject.name)
    }

    fn scan_rule(&mut self, r: &CompiledRule) {
        let scan_type = match &r.rule.check {
            RuleCheck::Malware => ScanType::Malware,
            RuleCheck::Secrets => ScanType::Secret,
            RuleCheck::Unscanned { scan_type, .. } => *scan_type,
            _ => ScanType::Vulnerability,
        };
        let mut bad = Vec::new();
        for index in 0..self.containers.len() {
            if self.containers.get(index).is_none_or(|i| i.exempt) {
                continue;
            }
            // Borrowed, not cloned: this runs for every scan rule and container.
            self.resolve_digest(index);
            let scans = self.ctx.scans;
            let summary: Option<&ScanSummary> = match self.containers.get(index).and_then(|i| i.digest.as_ref()) {
                Some(DigestLookup::Found(digest)) => match scans.latest(digest, scan_type) {
                    Ok(s) => s,
                    Err(ScanUnavailable(msg)) => {
                        self.stage_failed("scan-results", &msg);
                        continue;
                    }
                },
                Some(DigestLookup::NotFound | DigestLookup::Unknown) | None => None,
                Some(DigestLookup::Unavailable(_)) => continue,
            };
            if self.scan_violates(&r.rule.check, summary)
                && let Some(info) = self.containers.get(index)
            {
                bad.push(info.container.name.as_str().to_owned());
            }
        }
        self.push_containers(r, bad);
    }

    fn scan_violates(&self, check: &RuleCheck, summary: Option<&ScanSummary>) -> bool {
        match (check, summary) {
            (RuleCheck::Unscanned { days, .. }, s) => match (s, days) {
                (None, _) => true,
                (Some(s), Some(days)) => self.ctx.now - s.scanned_at > time::Duration::days(i64::from(*days)),
                (Some(_), None) => false,
            },
            (_, None) => false,
            (RuleCheck::Vulnerabilities { max }, Some(s)) => s.max_severity.is_some_and(|worst| worst > *max),
            (RuleCheck::Cvss { metric, value, max }, Some(s)) => s
                .max_severity_with(*metric, value)
                .is_some_and(|worst| max.is_none_or(|m| worst > m)),
            (RuleCheck::Malware | RuleCheck::Secrets, Some(s)) => s.findings > 0,
            _ => false,
        }
    }
}

impl RuleType {
    /// Whether rules of this type are judged per container.
    pub fn is_container_level(self) -> bool {
        !matches!(
            self,
            RuleType::PodSecurityContext | RuleType::Podexec | RuleType::Portforward | RuleType::PodSecurityStandard
        )
    }
}
