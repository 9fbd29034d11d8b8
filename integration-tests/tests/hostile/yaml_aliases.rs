//! Issue 17, finding 1: YAML alias expansion. A ~50 KB policy whose ignored `id` field holds
//! one anchor of 10,000 items referenced 10,000 times would expand to 10^8 values in the
//! store's memory. The API takes JSON only (`document_json`), so such a document is refused
//! with InvalidArgument unread, whichever document kind it is sent as, while another tenant
//! applies and reads its policies as usual; the process's peak memory barely moves.

use portcullis_integration_tests::store::{Api, by_name, expect_code, policy_doc};
use portcullis_policy_store::testing::TestServer;
use tonic::Code;

/// The process's peak resident set (VmHWM), in bytes. The servers run inside the test
/// process, so this is their peak too.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// How much the peak may grow while the store refuses the documents: the bound.
const PEAK_GROWTH_BOUND: u64 = 300 * 1024 * 1024;

/// One anchor of 10,000 items referenced 10,000 times, in the ignored `id` field: ~50 KB of
/// YAML that expands to 10^8 values.
fn laughs_yaml(name: &str) -> String {
    format!(
        "name: {name}\nid:\n  a: &a [{}]\n  b: [{}]\ndefault:\n  rules: []\n",
        vec!["0"; 10_000].join(","),
        vec!["*a"; 10_000].join(",")
    )
}

/// The same in YAML's flow style, which starts with `{` as JSON does.
fn laughs_flow(name: &str) -> String {
    format!(
        "{{\"name\": \"{name}\", \"id\": {{\"a\": &a [{}], \"b\": [{}]}}, \"default\": {{\"rules\": []}}}}",
        vec!["0"; 10_000].join(","),
        vec!["*a"; 10_000].join(",")
    )
}

/// Every way of sending the documents: each refused, naming the document and the reason.
async fn attack(api: &mut Api) {
    let yaml = laughs_yaml("laughs");
    let flow = laughs_flow("laughs");
    assert!((45_000..60_000).contains(&yaml.len()), "{}", yaml.len());
    // YAML is refused as not JSON; the flow form is not JSON either: refused at its first
    // anchor (policies) or at the `id` field rulesets and attestors do not have.
    for (doc, reason) in [
        (
            &yaml,
            "(document): must be a JSON object: the API takes documents as JSON text",
        ),
        (&flow, "at line 1 column"),
    ] {
        let refusals = [
            api.create_policy(doc).await.map(drop),
            api.apply_policy(doc, None).await.map(drop),
            api.update_policy(by_name("laughs"), doc, 1).await.map(drop),
            api.create_ruleset(doc).await.map(drop),
            api.create_attestor(doc).await.map(drop),
        ];
        for result in refusals {
            let status = expect_code(result, Code::InvalidArgument);
            assert!(status.message().contains(reason), "{}", status.message());
        }
    }
}

pub async fn aliases_are_refused_unexpanded(server: &mut TestServer) {
    let mut operator = Api::new(server, &server.operator_key).await;
    let other_key = operator.create_tenant("bystander").await.unwrap();
    let mut other = operator.with_key(&other_key);
    let mut attacker = operator.with_key(&server.admin_key);
    other.create_policy(&policy_doc("steady", "block")).await.unwrap();

    let before = peak_rss();
    // The bystander tenant writes and reads while the attacker sends its documents.
    let bystander = async {
        for i in 0..20 {
            let applied = other
                .apply_policy(&policy_doc("steady", ["log", "block"][i % 2]), None)
                .await;
            assert!(applied.unwrap().changed);
            assert_eq!(other.get_policy(by_name("steady")).await.unwrap().name, "steady");
        }
    };
    let started = std::time::Instant::now();
    tokio::join!(attack(&mut attacker), bystander);
    let took = started.elapsed();
    let after = peak_rss();
    assert!(
        after.saturating_sub(before) < PEAK_GROWTH_BOUND,
        "the peak resident set grew from {before} to {after} bytes while refusing"
    );

    // Nothing of the attacker's was written; the bystander's policy is at its last revision.
    assert!(attacker.list_policies().await.unwrap().is_empty());
    assert_eq!(other.get_policy(by_name("steady")).await.unwrap().revision, 21);
    crate::report::row(
        "1",
        "a 50 KB YAML policy whose anchor expands to 10^8 values, as policy, ruleset and attestor",
        &format!(
            "InvalidArgument before expanding; peak memory grew {} KiB",
            after.saturating_sub(before) / 1024
        ),
        &format!("another tenant's 20 writes and reads done meanwhile, in {took:.1?} in all"),
    );
}

portcullis_test_kit::both! {
    embedded: &mut portcullis_integration_tests::store::embedded().await,
    distributed: &mut portcullis_integration_tests::store::distributed().await;
    aliases_are_refused_unexpanded,
}
