//! The engine and regorus (interpreter and RVM) give the same verdict on every review of
//! the benchmark's corpus with the three-check subset: privileged, host namespaces and
//! baseline capabilities (a fast engine that disagrees is not faster). The corpus comes
//! from the same generator the benchmark uses, and each review's expected verdict from
//! the generator is a third, independent opinion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use portcullis_corpus as corpus;
#[path = "../benches/support/rego.rs"]
mod rego;

use std::collections::{BTreeMap, BTreeSet};

use portcullis_engine::evaluate::{CompiledPolicy, EvalContext, Verdict};
use portcullis_engine::input::parse_document;
use time::macros::datetime;

const THREE_CHECKS_POLICY: &str = include_str!("../benches/data/policy-three-checks.yaml");
const FULL_POLICY: &str = include_str!("../benches/data/policy-full.yaml");
const REVIEW_8K: &str = include_str!("../benches/data/review-8k.json");

fn engine_blocks(policy: &CompiledPolicy, json: &str) -> bool {
    let subjects = parse_document(json.as_bytes()).unwrap_or_else(|e| panic!("engine cannot parse: {e}\n{json}"));
    assert_eq!(subjects.len(), 1, "one review, one subject");
    let ctx = EvalContext::offline(datetime!(2026-11-26 00:00 UTC));
    policy.evaluate(&subjects[0], &ctx).verdict == Verdict::Block
}

#[test]
fn engine_and_regorus_agree_on_every_review_of_the_benchmark_corpus() {
    let policy = CompiledPolicy::from_text(THREE_CHECKS_POLICY).unwrap();
    let mut interpreter = rego::Interpreter::new(rego::THREE_CHECKS_REGO).unwrap();
    let mut vm = rego::Vm::new(rego::THREE_CHECKS_REGO).unwrap();

    let reviews = corpus::corpus(corpus::BENCH_CORPUS_SIZE);
    let mut agreed = 0;
    let mut blocks = 0;
    let mut disagreements = Vec::new();
    // kind → (allowed, blocked); variants seen.
    let mut by_kind: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut variants = BTreeSet::new();
    for (i, g) in reviews.iter().enumerate() {
        let ours = engine_blocks(&policy, &g.json);
        let theirs = rego::blocks(&interpreter.deny(&g.json).unwrap()).unwrap();
        let theirs_vm = rego::blocks(&vm.deny(&g.json).unwrap()).unwrap();
        let expected = g.workload && g.variant.violates();
        if ours == theirs && theirs == theirs_vm && ours == expected {
            agreed += 1;
        } else {
            disagreements.push(format!(
                "review {i} ({} {:?}): engine {ours}, regorus {theirs}, rvm {theirs_vm}, expected {expected}\n{}",
                g.kind, g.variant, g.json
            ));
        }
        blocks += usize::from(ours);
        let entry = by_kind.entry(g.kind).or_default();
        if ours {
            entry.1 += 1;
        } else {
            entry.0 += 1;
        }
        variants.insert(format!("{:?}", g.variant));
    }
    println!(
        "rego equivalence: {} reviews, {agreed} agreed (engine = regorus interpreter = regorus RVM = expected), \
         {blocks} blocks, {} allows",
        reviews.len(),
        reviews.len() - blocks
    );
    for (kind, (allow, block)) in &by_kind {
        println!("  {kind:<22} allow {allow:>3}  block {block:>3}");
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements, first:\n{}",
        disagreements.len(),
        disagreements.iter().take(3).cloned().collect::<Vec<_>>().join("\n\n")
    );

    // The corpus really covers what it claims: every workload kind both allowed and
    // blocked, the kinds that are not evaluated, and every variant.
    for (_, _, kind, _) in corpus::WORKLOAD_KINDS {
        let (allow, block) = by_kind.get(kind).copied().unwrap_or_default();
        assert!(allow > 0 && block > 0, "{kind}: {allow} allowed, {block} blocked");
    }
    for kind in ["ConfigMap", "Service", "PodTemplate"] {
        assert!(by_kind.contains_key(kind), "{kind} missing from the corpus");
    }
    assert_eq!(variants.len(), corpus::VARIANTS.len(), "variants seen: {variants:?}");
}

#[test]
fn the_benchmark_review_is_allowed_by_both_and_blocked_by_both_when_made_privileged() {
    let policy = CompiledPolicy::from_text(THREE_CHECKS_POLICY).unwrap();
    let mut interpreter = rego::Interpreter::new(rego::THREE_CHECKS_REGO).unwrap();
    let mut vm = rego::Vm::new(rego::THREE_CHECKS_REGO).unwrap();

    let mut review: serde_json::Value = serde_json::from_str(REVIEW_8K).unwrap();
    let clean = review.to_string();
    assert!(!engine_blocks(&policy, &clean));
    assert!(!rego::blocks(&interpreter.deny(&clean).unwrap()).unwrap());
    assert!(!rego::blocks(&vm.deny(&clean).unwrap()).unwrap());

    // The init container is the one made privileged: all three container lists count.
    review["request"]["object"]["spec"]["template"]["spec"]["initContainers"][0]["securityContext"]["privileged"] =
        serde_json::Value::Bool(true);
    let privileged = review.to_string();
    assert!(engine_blocks(&policy, &privileged));
    let deny = interpreter.deny(&privileged).unwrap();
    assert!(rego::blocks(&deny).unwrap());
    assert!(
        format!("{deny:?}").contains("migrate"),
        "the denial names the container: {deny:?}"
    );
    assert!(rego::blocks(&vm.deny(&privileged).unwrap()).unwrap());
}

#[test]
fn the_full_benchmark_policy_has_at_least_fifteen_rules_and_allows_the_benchmark_review() {
    let doc: serde_json::Value = yaml_serde::from_str(FULL_POLICY).unwrap();
    let rules = doc["default"]["rules"].as_array().unwrap();
    assert!(rules.len() >= 15, "{} rules", rules.len());
    assert!(
        rules
            .iter()
            .any(|r| r["type"] == "podSecurityStandard" && r["statement"]["properties"][0]["value"] == "restricted")
    );
    let policy = CompiledPolicy::from_text(FULL_POLICY).unwrap();
    let subjects = parse_document(REVIEW_8K.as_bytes()).unwrap();
    let decision = policy.evaluate(&subjects[0], &EvalContext::offline(datetime!(2026-11-26 00:00 UTC)));
    assert_eq!(decision.verdict, Verdict::Allow, "{:?}", decision.violations);
    assert!(decision.not_evaluated.is_none(), "the review is evaluated, not skipped");
}
