//! Image signature verification (POLICY.md section 4, point 6): which signature rules apply
//! to an image, and what the verdicts of its attestors decide.

use crate::image_ref::ImageRef;
use crate::policy::{
    AttestorRequirement, ConditionOperator, ConditionType, ImageVerificationRule, ResourceFilter, SignatureAction,
};

use super::compile::CompiledPolicy;
use super::context::{DigestLookup, Signatures, TrustedImage};
use super::decision::Unverified;
use super::messages::{not_judged_message, signature_violation};
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
        // `missing`: the registry said there is no such image. A digest nobody resolved is
        // unknown: at admission that says nothing of the image; offline the verdicts given
        // are all there is, so a tag they do not decide cannot be verified (README).
        let offline = self.ctx.signatures.is_offline();
        let (digest, missing) = match self.digest(index) {
            DigestLookup::Found(d) => (Some(d), false),
            DigestLookup::NotFound => (None, true),
            DigestLookup::Unknown => (None, offline),
            DigestLookup::Unavailable(why) => {
                // The digest stage has failed already (a stage failure of its own).
                let why = format!("digest resolution: {why}");
                let entry = undecided(rule, image_text, None, rule.attestors.names().to_vec(), names, &why);
                self.undecided(rule, entry, false);
                return;
            }
        };
        let verdicts = match self.ctx.signatures {
            Signatures::Offline(Some(verdicts)) | Signatures::Stage(verdicts) => verdicts,
            Signatures::Offline(None) => {
                let entry = undecided(
                    rule,
                    image_text,
                    digest,
                    rule.attestors.names().to_vec(),
                    names,
                    "no verdicts",
                );
                self.undecided(rule, entry, true);
                return;
            }
            Signatures::Unavailable(why) => {
                let entry = undecided(rule, image_text, digest, rule.attestors.names().to_vec(), names, why);
                self.undecided(rule, entry, true);
                return;
            }
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
        } else if missing {
            // POLICY.md 4.6: an image the registry does not have cannot be verified.
            let reason = if offline {
                "the image's digest could not be resolved"
            } else {
                "the registry has no such image"
            };
            self.violations.push(signature_violation(rule, names, reason));
        } else {
            // An attestor without a verdict (the service could not judge it) over a digest
            // that is unknown only because nobody resolved it says nothing of the image.
            let why = format!("no verdict for attestor(s) {}", unknown.join(", "));
            let entry = undecided(rule, image_text, digest, unknown, names, &why);
            self.undecided(rule, entry, true);
        }
    }

    /// Records a rule that applies but could not be decided. Offline it is unverified,
    /// without effect. At admission it is not judged; a `block` rule is also a failed stage
    /// `signature` (`stage`: unless the digest stage already failed for it), so the failure
    /// mode decides; a `log` rule only warns (see [`Signatures`]).
    fn undecided(&mut self, rule: &ImageVerificationRule, entry: Unverified, stage: bool) {
        if self.ctx.signatures.is_offline() {
            self.unverified.push(entry);
            return;
        }
        if stage && rule.action == SignatureAction::Block {
            self.stage_failed("signature", &entry.reason);
        }
        self.not_judged.push(entry);
    }
}

impl CompiledPolicy {
    /// The images of `images` (references as written) that the signature rules of the
    /// definition for `namespace` select, each with the attestors those rules name (in rule
    /// order, without repeats): what the signature stage must verify. Trusted images and
    /// unparseable references are left out (the evaluation decides those without verdicts).
    pub fn signature_selection(
        &self,
        namespace: &str,
        images: &[String],
        trusted_images: &[TrustedImage],
    ) -> Vec<(String, Vec<String>)> {
        let def = self.definition(namespace);
        let mut selected: Vec<(String, Vec<String>)> = Vec::new();
        for text in images {
            let Ok(image) = ImageRef::parse(text) else { continue };
            if trusted_images.iter().any(|t| t.matches(&image)) {
                continue;
            }
            let mut attestors: Vec<String> = Vec::new();
            for rule in def.image_verification.iter() {
                // A tag-only image under a rule requiring a digest is a violation, not verified.
                if !signature_rule_applies(rule, &image) || (rule.require_digest && image.digest().is_none()) {
                    continue;
                }
                for name in rule.attestors.names() {
                    if !attestors.contains(name) {
                        attestors.push(name.clone());
                    }
                }
            }
            if attestors.is_empty() {
                continue;
            }
            // The same image in several containers is verified once.
            if !selected.iter().any(|(i, _)| i == text) {
                selected.push((text.clone(), attestors));
            }
        }
        selected
    }
}

/// A rule left undecided for `image`, and why.
fn undecided(
    rule: &ImageVerificationRule,
    image: String,
    digest: Option<String>,
    attestors: Vec<String>,
    containers: Vec<String>,
    reason: &str,
) -> Unverified {
    Unverified {
        rule: rule.name.clone(),
        action: rule.action.action(),
        image,
        digest,
        attestors,
        message: not_judged_message(rule, &containers, reason),
        containers,
        reason: reason.to_owned(),
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
