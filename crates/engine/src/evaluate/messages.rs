//! Violation messages: `<ruleType> violates rule with properties { ... } in container(s)
//! "app" (block).`, built once per violation without the formatter where it can; and the
//! messages of signature rules not judged.
//!
//! A violation that an expired exception would have exempted (POLICY.md section 4 point 2)
//! says so after its detail, if any (`: <detail>; exception expired at <time>.`, else
//! `: exception expired at <time>.`). `<time>` is the instant the exemption ended, in UTC
//! as RFC 3339 (`2027-03-31T00:00:00Z`): for a container, the latest expiry among the
//! expired exceptions matching its image; for a pod-level rule, the earliest of its
//! containers' (from then on the pod was no longer wholly exempt). There is one clause per
//! distinct instant, soonest first. When a clause does not cover everything the violation
//! names (several instants, or some of its containers never exempt), each clause names its
//! containers (and the pod):
//! `exception expired at <t1> for container(s) "a"; exception expired at <t2> for pod "p" and container(s) "b"`.

use std::fmt::Write as _;
use std::sync::Arc;

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use crate::policy::{AttestorRequirement, ImageVerificationRule, Mitigation};

use super::compile::{CompiledRule, Phase};
use super::decision::Violation;

/// Builds a violation and its message.
pub(super) fn violation(
    r: &CompiledRule,
    phase: Phase,
    containers: Vec<String>,
    pod_level: bool,
    pod_name: &str,
    checks: Vec<&'static str>,
    detail: &str,
) -> Violation {
    let enforcement = match phase {
        Phase::Admission => r.rule.action.as_str(),
        Phase::Continuous => r.rule.mitigation.as_str(),
    };
    let mut message = String::with_capacity(96 + detail.len());
    message.push_str(r.rule.rule_type.as_str());
    message.push_str(" violates rule with properties ");
    message.push_str(&r.properties_text);
    message.push_str(" in ");
    write_location(&mut message, &containers, pod_level, pod_name);
    message.push_str(" (");
    message.push_str(enforcement);
    message.push(')');
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(detail);
    }
    message.push('.');
    Violation {
        rule_type: r.rule.rule_type.as_str(),
        properties: Arc::clone(&r.properties),
        action: r.rule.action,
        mitigation: r.rule.mitigation,
        containers,
        pod_level,
        checks,
        message,
    }
}

/// The clause of a violation that expired exceptions would have exempted (module docs):
/// `entries` pairs each named container (`None`: the pod, for a pod-level rule) with the
/// instant its exemption ended; `covers_all`: they are everything the violation names.
/// `None` when `entries` is empty.
pub(super) fn expired_exceptions_clause(
    entries: &[(Option<&str>, OffsetDateTime)],
    covers_all: bool,
    pod_name: &str,
) -> Option<String> {
    let mut times: Vec<OffsetDateTime> = entries.iter().map(|(_, t)| *t).collect();
    times.sort_unstable();
    times.dedup();
    let mut out = String::new();
    for (i, t) in times.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str("exception expired at ");
        let utc = t.to_offset(UtcOffset::UTC);
        match utc.format(&Rfc3339) {
            Ok(text) => out.push_str(&text),
            // Only years outside 0..=9999 cannot be written in RFC 3339, and they could not
            // have been parsed from it either; written plainly all the same.
            Err(_) => {
                let _ = write!(out, "{utc}");
            }
        }
        if times.len() > 1 || !covers_all {
            let at_t = entries.iter().filter(|(_, x)| x == t);
            let pod = at_t.clone().any(|(c, _)| c.is_none());
            let containers: Vec<String> = at_t.filter_map(|(c, _)| c.map(str::to_owned)).collect();
            out.push_str(" for ");
            write_location(&mut out, &containers, pod, pod_name);
        }
    }
    (!times.is_empty()).then_some(out)
}

fn write_location(out: &mut String, containers: &[String], pod_level: bool, pod_name: &str) {
    if pod_level || containers.is_empty() {
        out.push_str("pod ");
        push_debug_quoted(out, pod_name);
        if !containers.is_empty() {
            out.push_str(" and ");
        }
    }
    if !containers.is_empty() {
        out.push_str("container(s) ");
        for (i, c) in containers.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            push_debug_quoted(out, c);
        }
    }
}

/// Appends `s` quoted as `{s:?}` writes it. Kubernetes names are printable ASCII without
/// quotes or backslashes, which Debug leaves as they are, so they skip the formatter's
/// per-character escaping (a few percent of a violation-heavy evaluation); anything else
/// goes through it.
fn push_debug_quoted(out: &mut String, s: &str) {
    if s.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        let _ = write!(out, "{s:?}");
    }
}

pub(super) fn signature_violation(rule: &ImageVerificationRule, containers: Vec<String>, reason: &str) -> Violation {
    let (mode, names) = match &rule.attestors {
        AttestorRequirement::All(n) => ("all", n),
        AttestorRequirement::Any(n) => ("any", n),
    };
    let attestors = names.join(", ");
    let action = rule.action.action();
    let mut message = format!(
        "imageVerification violates rule {:?} ({mode} of {attestors}) in ",
        rule.name
    );
    write_location(&mut message, &containers, false, "");
    let _ = write!(message, " ({}): {reason}.", action.as_str());
    Violation {
        rule_type: "imageVerification",
        properties: [("name".to_owned(), rule.name.clone()), (mode.to_owned(), attestors)].into(),
        action,
        mitigation: Mitigation::None,
        containers,
        pod_level: false,
        checks: Vec::new(),
        message,
    }
}

/// The message of a signature rule that could not be judged:
/// `imageVerification rule "signed" (all of release) not judged in container(s) "app" (block): <reason>.`
pub(super) fn not_judged_message(rule: &ImageVerificationRule, containers: &[String], reason: &str) -> String {
    let (mode, names) = match &rule.attestors {
        AttestorRequirement::All(n) => ("all", n),
        AttestorRequirement::Any(n) => ("any", n),
    };
    let mut message = String::with_capacity(96 + reason.len());
    message.push_str("imageVerification rule ");
    push_debug_quoted(&mut message, &rule.name);
    let _ = write!(message, " ({mode} of {}) not judged in ", names.join(", "));
    write_location(&mut message, containers, false, "");
    let _ = write!(message, " ({}): {reason}.", rule.action.action().as_str());
    message
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::push_debug_quoted;

    fn quoted(s: &str) -> String {
        let mut out = String::new();
        push_debug_quoted(&mut out, s);
        out
    }

    proptest! {
        /// Messages quote names exactly as `{:?}` does, whatever the name.
        #[test]
        fn quoting_is_what_debug_writes(s in any::<String>()) {
            prop_assert_eq!(quoted(&s), format!("{s:?}"));
        }

        /// The same over printable ASCII, where the fast path mostly applies.
        #[test]
        fn quoting_printable_ascii_is_what_debug_writes(s in "[ -~]{0,40}") {
            prop_assert_eq!(quoted(&s), format!("{s:?}"));
        }
    }

    #[test]
    fn quoting_of_names_that_need_escapes() {
        for s in ["app", "", "a\"b", "a\\b", "tab\there", "é", "\u{7f}", "line\n", "~ !"] {
            assert_eq!(quoted(s), format!("{s:?}"), "{s:?}");
        }
    }
}
