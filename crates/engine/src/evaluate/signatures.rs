//! Image signature verification (POLICY.md section 4, point 6): which signature rules apply
//! to an image, and what the verdicts of its attestors decide.

use crate::image_ref::ImageRef;
use crate::policy::{AttestorRequirement, ConditionOperator, ConditionType, ImageVerificationRule, ResourceFilter};

use super::context::DigestLookup;
use super::decision::Unverified;
use super::messages::signature_violation;
use super::run::Run;

impl Run<'_, '_> {
    /// Image signature verification (POLICY.md section 4, point 6).
    pub(super) fn signatures(&mut self) {
        let def = self.def;
        for rule in def.image_verification.iter() {
            // Group containers by image: each image is judged once per rule.
            let mut images: Vec<(usize, Vec<String>)> = Vec::new();
            for (index, info) in self.containers.iter().enumerate() {
                let trusted = info
                    .image()
                    .as_ref()
                    .is_ok_and(|i| self.ctx.trusted_images.iter().any(|t| t.matches(i)));
                if trusted {
                    continue;
                }
                let first = images.iter_mut().find(|(j, _)| {
                    self.containers
                        .get(*j)
                        .is_some_and(|other| other.container.image == info.container.image)
                });
                match first {
                    Some((_, names)) => names.push(info.container.name.as_str().to_owned()),
                    None => images.push((index, vec![info.container.name.as_str().to_owned()])),
                }
            }
            for (index, names) in images {
                self.signature_rule(rule, index, names);
            }
        }
    }

    fn signature_rule(&mut self, rule: &ImageVerificationRule, index: usize, names: Vec<String>) {
        let Some(info) = self.containers.get(index) else { return };
        let applies = match info.image() {
            Ok(image) => signature_rule_applies(rule, image),
            // An unparseable reference matches no condition: a rule without match
            // conditions still applies to it, and it cannot be verified.
            Err(_) => !rule.conditions.iter().any(|c| c.condition_type == ConditionType::Match),
        };
        if !applies {
            return;
        }
        let image_text = info.container.image.clone();
        let failure = match info.image() {
            Err(_) => Some(format!("invalid image reference {image_text:?}")),
            Ok(image) if rule.require_digest && image.digest().is_none() => {
                Some("the image is given by tag alone and the rule requires a digest".to_owned())
            }
            Ok(_) => None,
        };
        if let Some(reason) = failure {
            self.violations.push(signature_violation(rule, names, &reason));
            return;
        }
        let digest = match self.digest(index) {
            DigestLookup::Found(d) => Some(d),
            DigestLookup::NotFound => None,
            DigestLookup::Unavailable(_) => return,
        };
        let Some(verdicts) = self.ctx.verdicts else {
            self.unverified.push(Unverified {
                rule: rule.name.clone(),
                image: image_text,
                digest,
                attestors: rule.attestors.names().to_vec(),
                containers: names,
            });
            return;
        };
        let results: Vec<(&String, Option<bool>)> = rule
            .attestors
            .names()
            .iter()
            .map(|a| (a, verdicts.verdict(&image_text, digest.as_deref(), a)))
            .collect();
        let unknown: Vec<String> = results
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(a, _)| (*a).clone())
            .collect();
        let invalid: Vec<&str> = results
            .iter()
            .filter(|(_, v)| *v == Some(false))
            .map(|(a, _)| a.as_str())
            .collect();
        let passed = match &rule.attestors {
            AttestorRequirement::All(_) => invalid.is_empty() && unknown.is_empty(),
            AttestorRequirement::Any(_) => results.iter().any(|(_, v)| *v == Some(true)),
        };
        if passed {
            return;
        }
        let decided_failure = match &rule.attestors {
            AttestorRequirement::All(_) => !invalid.is_empty(),
            AttestorRequirement::Any(_) => unknown.is_empty(),
        };
        if decided_failure {
            let reason = format!("no valid signature by {}", invalid.join(", "));
            self.violations.push(signature_violation(rule, names, &reason));
        } else if digest.is_none() {
            self.violations.push(signature_violation(
                rule,
                names,
                "the image's digest could not be resolved",
            ));
        } else {
            self.unverified.push(Unverified {
                rule: rule.name.clone(),
                image: image_text,
                digest,
                attestors: unknown,
                containers: names,
            });
        }
    }
}

fn signature_rule_applies(rule: &ImageVerificationRule, image: &ImageRef) -> bool {
    let mut repository = None;
    let mut holds = |c: &crate::policy::Condition| {
        let subject: &str = match c.resource_filter {
            ResourceFilter::Registry => image.registry(),
            ResourceFilter::Repository => repository.get_or_insert_with(|| image.repository()).as_str(),
        };
        match c.operator {
            ConditionOperator::Equals => subject == c.value,
            ConditionOperator::BeginsWith => subject.starts_with(&c.value),
            ConditionOperator::EndsWith => subject.ends_with(&c.value),
            ConditionOperator::Contains => subject.contains(&c.value),
        }
    };
    let mut matched = true;
    for c in &rule.conditions {
        let h = holds(c);
        match c.condition_type {
            ConditionType::Exclude if h => return false,
            ConditionType::Match if !h => matched = false,
            _ => {}
        }
    }
    matched
}
