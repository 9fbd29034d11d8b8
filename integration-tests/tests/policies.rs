//! Policies: create, stale update, duplicate naming, rename, identical apply, history,
//! delete while assigned, and every validation error of POLICY.md section 1.
//!
//! Every scenario runs against a fresh policy store, embedded and distributed (`both!`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use portcullis_bus::TopicFilter;
use portcullis_policy_store::testing::TestServer;
use portcullis_proto::events::v1 as pe;
use tonic::Code;

use portcullis_integration_tests::store::{
    Api, QUIET, assert_quiet, attestor_doc, by_id, by_name, expect_code, expect_invalid_field, is_policy_event,
    next_matching, policy_changed, policy_doc, policy_with_refs, ruleset_doc, subscribe,
};

pub async fn create(server: &mut TestServer) {
    let mut api = Api::new(server, &server.admin_key).await;
    let me = api.who_am_i().await.unwrap();
    let doc = serde_json::json!({
        "name": "prod.strict",
        "description": "Production clusters",
        "default": {"rules": [
            {"type": "podSecurityContext", "action": "block", "mitigation": "isolate",
             "statement": {"properties": [{"key": "hostNetwork", "value": "true"}]}},
            {"type": "vulnerabilities", "action": "log",
             "statement": {"properties": [{"key": "max-severity", "value": "medium"}]}}
        ]},
        "namespaced": [{"name": "dev.relaxed", "namespaces": ["dev", "test"], "rules": []}]
    })
    .to_string();
    let created = api.create_policy(&doc).await.unwrap();
    assert_eq!(created.name, "prod.strict");
    assert_eq!(created.revision, 1);
    assert_eq!(created.description, "Production clusters");
    assert_eq!(created.author_key_id, me.key_id);
    assert!(!created.id.is_empty());
    assert!(created.created_at.is_some() && created.updated_at.is_some());

    // Readable by id and by name, listed, with the document kept.
    for policy in [by_id(&created.id), by_name("prod.strict")] {
        let got = api.get_policy(policy).await.unwrap();
        assert_eq!((got.id.as_str(), got.revision), (created.id.as_str(), 1));
        let stored: serde_json::Value = serde_json::from_str(&got.document_json).unwrap();
        assert_eq!(stored["name"], "prod.strict");
        assert_eq!(
            stored["default"]["rules"][1]["statement"]["properties"][0]["value"],
            "medium"
        );
        assert_eq!(
            stored["namespaced"][0]["namespaces"],
            serde_json::json!(["dev", "test"])
        );
    }
    let listed = api.list_policies().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, created.id);
    let history = api.history(by_id(&created.id)).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].revision, 1);

    // The same name again is refused and writes nothing.
    let status = expect_code(
        api.create_policy(&policy_doc("prod.strict", "log")).await,
        Code::AlreadyExists,
    );
    assert!(status.message().contains("prod.strict"), "{}", status.message());
    assert_eq!(api.list_policies().await.unwrap().len(), 1);
    assert_eq!(api.get_policy(by_name("prod.strict")).await.unwrap().revision, 1);
}

pub async fn update_with_stale_revision_writes_nothing(server: &mut TestServer) {
    let mut api = Api::new(server, &server.admin_key).await;
    // Subscribed before the first write, and read up to revision 2's event below: the outbox
    // publishes after the commit, so a subscription made only after the update could start
    // before revision 2's event and then see it arrive during the quiet check.
    let mut events = subscribe(&server.bus, &TopicFilter::topics(["policy.changed"])).await;
    let created = api.create_policy(&policy_doc("stale", "block")).await.unwrap();
    let updated = api
        .update_policy(by_id(&created.id), &policy_doc("stale", "log"), 1)
        .await
        .unwrap();
    assert!(updated.changed);
    assert_eq!(updated.policy.unwrap().revision, 2);
    let history_before = api.history(by_id(&created.id)).await.unwrap();
    assert_eq!(history_before.len(), 2);
    let (_, second) = next_matching(&mut events, |e| {
        is_policy_event(e, &created.id) && policy_changed(e).revision == 2
    })
    .await;
    assert_eq!(policy_changed(&second).revision, 2);

    // Another writer's revision 1 is stale now: refused, by update, apply and delete.
    let status = expect_code(
        api.update_policy(by_name("stale"), &policy_doc("stale", "block"), 1)
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        status.message().contains('2'),
        "names the current revision: {}",
        status.message()
    );
    expect_code(
        api.apply_policy(&policy_doc("stale", "block"), Some(1)).await,
        Code::FailedPrecondition,
    );
    expect_code(
        api.delete_policy(by_name("stale"), Some(1)).await,
        Code::FailedPrecondition,
    );
    // A revision from the future is as stale.
    expect_code(
        api.update_policy(by_name("stale"), &policy_doc("stale", "block"), 3)
            .await,
        Code::FailedPrecondition,
    );

    let after = api.get_policy(by_name("stale")).await.unwrap();
    assert_eq!(after.revision, 2, "revision unchanged");
    let doc: serde_json::Value = serde_json::from_str(&after.document_json).unwrap();
    assert_eq!(doc["default"]["rules"][0]["action"], "log", "document unchanged");
    assert_eq!(
        api.history(by_id(&created.id)).await.unwrap(),
        history_before,
        "history unchanged"
    );
    assert_quiet(&mut events, QUIET, |e| is_policy_event(e, &created.id)).await;

    // The current revision works.
    let written = api
        .update_policy(by_name("stale"), &policy_doc("stale", "block"), 2)
        .await
        .unwrap();
    assert_eq!(written.policy.unwrap().revision, 3);

    // Writers racing from the same revision: one wins, every other one is stale.
    let racers: Vec<_> = ["log", "none-but-mitigate", "block-isolate", "log-terminate"]
        .into_iter()
        .map(|variant| {
            let mut api = api.clone();
            let doc: serde_json::Value = match variant {
                "log" => serde_json::from_str(&policy_doc("stale", "log")).unwrap(),
                other => {
                    let (action, mitigation) = match other {
                        "none-but-mitigate" => ("none", "log"),
                        "block-isolate" => ("block", "isolate"),
                        _ => ("log", "terminate"),
                    };
                    let mut doc: serde_json::Value = serde_json::from_str(&policy_doc("stale", action)).unwrap();
                    doc["default"]["rules"][0]["mitigation"] = serde_json::json!(mitigation);
                    doc
                }
            };
            tokio::spawn(async move { api.update_policy(by_name("stale"), &doc.to_string(), 3).await })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(response) => {
                assert_eq!(response.policy.unwrap().revision, 4);
                won += 1;
            }
            Err(status) => assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}"),
        }
    }
    assert_eq!(won, 1, "exactly one racer wins");
    assert_eq!(api.get_policy(by_id(&created.id)).await.unwrap().revision, 4);
    assert_eq!(api.history(by_id(&created.id)).await.unwrap().len(), 4);
}

pub async fn duplicate_naming(server: &mut TestServer) {
    let mut api = Api::new(server, &server.admin_key).await;
    let source = api.create_policy(&policy_doc("x", "block")).await.unwrap();
    api.update_policy(by_id(&source.id), &policy_doc("x", "log"), 1)
        .await
        .unwrap();

    let first = api.duplicate_policy(by_name("x"), None).await.unwrap();
    assert_eq!((first.name.as_str(), first.revision), ("xPolicy", 1));
    assert_ne!(first.id, source.id);
    let copied: serde_json::Value = serde_json::from_str(&first.document_json).unwrap();
    assert_eq!(copied["name"], "xPolicy", "the copy's document carries its name");
    assert_eq!(
        copied["default"]["rules"][0]["action"], "log",
        "the copy is of the current revision"
    );
    let second = api.duplicate_policy(by_id(&source.id), None).await.unwrap();
    assert_eq!(second.name, "xPolicy2");
    let third = api.duplicate_policy(by_name("x"), None).await.unwrap();
    assert_eq!(third.name, "xPolicy3");

    // An explicit name: used as given; taken is AlreadyExists; invalid names the field.
    let named = api.duplicate_policy(by_name("x"), Some("y.copy")).await.unwrap();
    assert_eq!(named.name, "y.copy");
    expect_code(
        api.duplicate_policy(by_name("x"), Some("y.copy")).await,
        Code::AlreadyExists,
    );
    expect_invalid_field(api.duplicate_policy(by_name("x"), Some("bad name")).await, "new_name");

    // A generated name of 64 characters is fine; over 64 is refused, asking for a name.
    let long = "l".repeat(58);
    api.create_policy(&policy_doc(&long, "block")).await.unwrap();
    let copy = api.duplicate_policy(by_name(&long), None).await.unwrap();
    assert_eq!(copy.name, format!("{long}Policy"));
    assert_eq!(copy.name.len(), 64);
    let status = expect_invalid_field(api.duplicate_policy(by_name(&long), None).await, "new_name");
    assert!(status.message().contains("explicit"), "{}", status.message());
    let longer = "m".repeat(60);
    api.create_policy(&policy_doc(&longer, "block")).await.unwrap();
    let status = expect_invalid_field(api.duplicate_policy(by_name(&longer), None).await, "new_name");
    assert!(status.message().contains("explicit"), "{}", status.message());
    assert_eq!(
        api.duplicate_policy(by_name(&longer), Some("short"))
            .await
            .unwrap()
            .name,
        "short"
    );
    expect_code(api.duplicate_policy(by_name("missing"), None).await, Code::NotFound);

    let mut names: Vec<String> = api.list_policies().await.unwrap().into_iter().map(|p| p.name).collect();
    names.sort();
    let mut expected = vec![
        "x".to_owned(),
        "xPolicy".to_owned(),
        "xPolicy2".to_owned(),
        "xPolicy3".to_owned(),
        "y.copy".to_owned(),
        long.clone(),
        format!("{long}Policy"),
        longer,
        "short".to_owned(),
    ];
    expected.sort();
    assert_eq!(names, expected, "refused duplicates wrote nothing");
}

pub async fn rename_refused(server: &mut TestServer) {
    let mut api = Api::new(server, &server.admin_key).await;
    let created = api.create_policy(&policy_doc("fixed", "block")).await.unwrap();
    for policy in [by_id(&created.id), by_name("fixed")] {
        let status = expect_invalid_field(
            api.update_policy(policy, &policy_doc("renamed", "block"), 1).await,
            "name",
        );
        assert!(status.message().contains("renam"), "{}", status.message());
    }
    let after = api.get_policy(by_id(&created.id)).await.unwrap();
    assert_eq!((after.name.as_str(), after.revision), ("fixed", 1));
    expect_code(api.get_policy(by_name("renamed")).await, Code::NotFound);
    assert_eq!(api.history(by_id(&created.id)).await.unwrap().len(), 1);
}

pub async fn identical_apply_makes_no_revision_and_no_event(server: &mut TestServer) {
    let mut api = Api::new(server, &server.admin_key).await;
    let mut events = subscribe(
        &server.bus,
        &TopicFilter::topics(["policy.changed"]).for_tenant("default"),
    )
    .await;
    let doc = policy_doc("same", "block");
    let applied = api.apply_policy(&doc, None).await.unwrap();
    assert!(applied.created && applied.changed);
    let policy = applied.policy.unwrap();
    assert_eq!(policy.revision, 1);
    let (_, created) = next_matching(&mut events, |e| is_policy_event(e, &policy.id)).await;
    assert_eq!(policy_changed(&created).revision, 1);

    // The same document, byte for byte, then reformatted (key order, spacing, explicit
    // defaults): no revision, by apply and by update.
    let value: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let pretty = serde_json::to_string_pretty(&value).unwrap();
    let explicit = serde_json::json!({
        "default": {"rules": [{
            "statement": {"properties": [{"value": "true", "key": "hostNetwork"}]},
            "enabled": true, "mitigation": "none", "action": "block", "type": "podSecurityContext"
        }]},
        "name": "same",
    })
    .to_string();
    for same in [&doc, &pretty, &explicit] {
        let again = api.apply_policy(same, None).await.unwrap();
        assert!(!again.created && !again.changed, "{same}");
        assert_eq!(again.policy.unwrap().revision, 1);
        let again = api.apply_policy(same, Some(1)).await.unwrap();
        assert!(!again.changed);
        let updated = api.update_policy(by_name("same"), same, 1).await.unwrap();
        assert!(!updated.changed);
        assert_eq!(updated.policy.unwrap().revision, 1);
    }
    assert_eq!(api.get_policy(by_name("same")).await.unwrap().revision, 1);
    assert_eq!(api.history(by_name("same")).await.unwrap().len(), 1);
    assert_quiet(&mut events, QUIET, |e| is_policy_event(e, &policy.id)).await;

    // A real change is revision 2, and it is the next event of this policy.
    let changed = api.apply_policy(&policy_doc("same", "log"), None).await.unwrap();
    assert!(changed.changed && !changed.created);
    assert_eq!(changed.policy.unwrap().revision, 2);
    let (_, updated) = next_matching(&mut events, |e| is_policy_event(e, &policy.id)).await;
    let updated = policy_changed(&updated);
    assert_eq!(updated.revision, 2);
    assert_eq!(updated.change, pe::ChangeKind::Updated as i32);
}

pub async fn history(server: &mut TestServer) {
    let mut admin = Api::new(server, &server.admin_key).await;
    let admin_id = admin.who_am_i().await.unwrap().key_id;
    let (editor_key, editor_id) = admin
        .create_key(portcullis_proto::common::v1::Role::Editor, None)
        .await
        .unwrap();
    let mut editor = admin.with_key(&editor_key);

    let created = admin.create_policy(&policy_doc("hist", "block")).await.unwrap();
    editor
        .update_policy(by_name("hist"), &policy_doc("hist", "log"), 1)
        .await
        .unwrap();
    admin
        .update_policy(by_name("hist"), &policy_doc("hist", "none"), 2)
        .await
        .unwrap_err(); // action none with mitigation none is invalid: no revision
    admin
        .apply_policy(&policy_with_refs("hist", None, None), Some(2))
        .await
        .unwrap();

    let revisions = admin.history(by_id(&created.id)).await.unwrap();
    let numbers: Vec<u64> = revisions.iter().map(|r| r.revision).collect();
    assert_eq!(numbers, [3, 2, 1], "every revision, newest first");
    let authors: Vec<&str> = revisions.iter().map(|r| r.author_key_id.as_str()).collect();
    assert_eq!(authors, [admin_id.as_str(), editor_id.as_str(), admin_id.as_str()]);
    for pair in revisions.windows(2) {
        assert!(pair[0].created_at.unwrap().seconds >= pair[1].created_at.unwrap().seconds);
        assert_ne!(pair[0].document_sha256, pair[1].document_sha256);
    }
    assert_eq!(revisions[0].document_sha256.len(), 64);
    assert_eq!(
        revisions[0].document_sha256, revisions[2].document_sha256,
        "revisions 3 and 1 hold the same document"
    );

    // Each revision keeps its whole document, author and time.
    let expected_actions = [(1, "block"), (2, "log"), (3, "block")];
    for (revision, action) in expected_actions {
        let old = admin.policy_revision(by_name("hist"), revision).await.unwrap();
        assert_eq!((old.id.as_str(), old.revision), (created.id.as_str(), revision));
        let doc: serde_json::Value = serde_json::from_str(&old.document_json).unwrap();
        assert_eq!(doc["default"]["rules"][0]["action"], action, "revision {revision}");
        let info = revisions.iter().find(|r| r.revision == revision).unwrap();
        assert_eq!(old.author_key_id, info.author_key_id);
    }
    expect_code(admin.policy_revision(by_name("hist"), 4).await, Code::NotFound);
    expect_invalid_field(admin.policy_revision(by_name("hist"), 0).await, "revision");

    // Paging through the history.
    let page = admin
        .policies
        .list_policy_history(admin.req(portcullis_proto::policystore::v1::ListPolicyHistoryRequest {
            policy: by_name("hist"),
            page: Some(portcullis_proto::common::v1::PageRequest {
                page_size: 2,
                page_token: String::new(),
            }),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.policy_id, created.id);
    assert_eq!(page.revisions.iter().map(|r| r.revision).collect::<Vec<_>>(), [3, 2]);
    let token = page.page.unwrap().next_page_token;
    assert!(!token.is_empty());
    let rest = admin
        .policies
        .list_policy_history(admin.req(portcullis_proto::policystore::v1::ListPolicyHistoryRequest {
            policy: by_name("hist"),
            page: Some(portcullis_proto::common::v1::PageRequest {
                page_size: 2,
                page_token: token,
            }),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.revisions.iter().map(|r| r.revision).collect::<Vec<_>>(), [1]);
    assert!(rest.page.is_none_or(|p| p.next_page_token.is_empty()));
}

pub async fn delete_while_assigned_refused(server: &mut TestServer) {
    let mut api = Api::new(server, &server.admin_key).await;
    let policy = api.create_policy(&policy_doc("assigned", "block")).await.unwrap();
    let cluster = api.register_cluster("edge-1", by_name("assigned")).await.unwrap();
    assert_eq!(cluster.cluster.as_ref().unwrap().policy_id, policy.id);

    for target in [by_name("assigned"), by_id(&policy.id)] {
        let status = expect_code(api.delete_policy(target, None).await, Code::FailedPrecondition);
        assert!(
            status.message().contains("edge-1"),
            "names the cluster: {}",
            status.message()
        );
    }
    assert_eq!(api.get_policy(by_id(&policy.id)).await.unwrap().revision, 1);
    assert_eq!(api.history(by_id(&policy.id)).await.unwrap().len(), 1);
    assert_eq!(api.get_cluster(by_name("edge-1")).await.unwrap().policy_id, policy.id);

    // Assigned through a later assignment too.
    let other = api.create_policy(&policy_doc("later", "block")).await.unwrap();
    api.register_cluster("edge-2", None).await.unwrap();
    api.assign(by_name("edge-2"), by_id(&other.id)).await.unwrap();
    expect_code(
        api.delete_policy(by_name("later"), None).await,
        Code::FailedPrecondition,
    );

    // Unassigned, it can go, with its history.
    let cleared = api.assign(by_name("edge-1"), None).await.unwrap();
    assert!(cleared.policy_id.is_empty());
    let deleted = api.delete_policy(by_name("assigned"), Some(1)).await.unwrap();
    assert_eq!((deleted.id.as_str(), deleted.revision), (policy.id.as_str(), 1));
    expect_code(api.get_policy(by_id(&policy.id)).await, Code::NotFound);
    expect_code(api.history(by_id(&policy.id)).await, Code::NotFound);
    assert_eq!(api.get_policy(by_name("later")).await.unwrap().revision, 1);
}

pub async fn every_validation_error_names_its_field(server: &mut TestServer) {
    let mut api = Api::new(server, &server.admin_key).await;
    let rule = |rule_type: &str, props: serde_json::Value| serde_json::json!({"type": rule_type, "action": "block", "statement": {"properties": props}});
    let with_rules = |rules: serde_json::Value| serde_json::json!({"name": "p", "default": {"rules": rules}});
    let host = serde_json::json!([{"key": "hostNetwork", "value": "true"}]);
    let with_namespaced = |namespaced: serde_json::Value| {
        serde_json::json!({"name": "p", "default": {"rules": [rule("podSecurityContext", host.clone())]},
                           "namespaced": namespaced})
    };

    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "name with a space",
            serde_json::json!({"name": "bad name", "default": {"rules": []}}),
            "name",
        ),
        (
            "name with a dash",
            serde_json::json!({"name": "bad-name", "default": {"rules": []}}),
            "name",
        ),
        (
            "empty name",
            serde_json::json!({"name": "", "default": {"rules": []}}),
            "name",
        ),
        (
            "name of 65 characters",
            serde_json::json!({"name": "n".repeat(65), "default": {"rules": []}}),
            "name",
        ),
        (
            "namespace not an RFC 1123 label",
            with_namespaced(serde_json::json!([{"name": "dev", "namespaces": ["Bad_NS"], "rules": []}])),
            "namespaced[0].namespaces[0]",
        ),
        (
            "namespace too long",
            with_namespaced(serde_json::json!([{"name": "dev", "namespaces": ["a".repeat(64)], "rules": []}])),
            "namespaced[0].namespaces[0]",
        ),
        (
            "namespace in two definitions",
            with_namespaced(serde_json::json!([
                {"name": "one", "namespaces": ["dev", "shared"], "rules": []},
                {"name": "two", "namespaces": ["shared"], "rules": []}
            ])),
            "namespaced[1].namespaces[0]",
        ),
        (
            "namespaced definition name",
            with_namespaced(serde_json::json!([{"name": "bad name", "namespaces": ["dev"], "rules": []}])),
            "namespaced[0].name",
        ),
        (
            "unknown rule type",
            with_rules(serde_json::json!([rule("noSuchRule", host.clone())])),
            "default.rules[0].type",
        ),
        (
            "unknown property key",
            with_rules(serde_json::json!([rule(
                "podSecurityContext",
                serde_json::json!([{"key": "hostNetwrk", "value": "true"}])
            )])),
            "default.rules[0].statement.properties[0].key",
        ),
        (
            "unknown property value",
            with_rules(serde_json::json!([rule(
                "containerSecurityContext",
                serde_json::json!([{"key": "capabilities-rule", "value": "lenient"}])
            )])),
            "default.rules[0].statement.properties[0].value",
        ),
        (
            "missing property",
            with_rules(serde_json::json!([rule("podSecurityContext", serde_json::json!([]))])),
            "default.rules[0].statement.properties",
        ),
        (
            "extra property",
            with_rules(serde_json::json!([rule(
                "podSecurityContext",
                serde_json::json!([
                {"key": "hostNetwork", "value": "true"}, {"key": "hostPID", "value": "true"}])
            )])),
            "default.rules[0].statement.properties[1]",
        ),
        (
            "extra optional property where none is allowed",
            with_rules(serde_json::json!([rule(
                "malware",
                serde_json::json!([
                {"key": "count", "value": "0"}, {"key": "max-severity", "value": "high"}])
            )])),
            "default.rules[0].statement.properties[1].key",
        ),
        (
            "enabled rule with action and mitigation none",
            with_rules(
                serde_json::json!([{"type": "podSecurityContext", "action": "none", "mitigation": "none",
                "statement": {"properties": host.clone()}}]),
            ),
            "default.rules[0]",
        ),
        (
            "enabled rule with action and mitigation defaulted to none",
            with_rules(serde_json::json!([{"type": "podSecurityContext", "statement": {"properties": host.clone()}}])),
            "default.rules[0]",
        ),
        (
            "max-severity critical",
            with_rules(serde_json::json!([rule(
                "vulnerabilities",
                serde_json::json!([{"key": "max-severity", "value": "critical"}])
            )])),
            "default.rules[0].statement.properties[0].value",
        ),
        (
            "max-severity critical on a cvss rule",
            with_rules(serde_json::json!([rule(
                "cvssAttackVector",
                serde_json::json!([
                {"key": "cvss-attack-vector", "value": "network"}, {"key": "max-severity", "value": "critical"}])
            )])),
            "default.rules[0].statement.properties[1].value",
        ),
        (
            "a namespaced rule",
            with_namespaced(serde_json::json!([{"name": "dev", "namespaces": ["dev"],
                "rules": [rule("noSuchRule", host.clone())]}])),
            "namespaced[0].rules[0].type",
        ),
        (
            "an exception with an unknown operator",
            serde_json::json!({"name": "p", "default": {"rules": [rule("podSecurityContext", host.clone())],
                "exceptions": [{"type": "imagePath", "statement": {"properties": [{"key": "begins-with", "value": "x"}]}}]}}),
            "default.exceptions[0].statement.properties[0].key",
        ),
        (
            "attestor that does not exist in the tenant",
            serde_json::from_str(&policy_with_refs("p", Some("release-signer"), None)).unwrap(),
            "default.imageVerification[0].attestors.all[0]",
        ),
        (
            "ruleset id that does not exist in the tenant",
            serde_json::from_str(&policy_with_refs("p", None, Some("no-such-ruleset"))).unwrap(),
            "runtime.rulesets[0].id",
        ),
    ];
    for (what, doc, field) in &cases {
        let result = api.create_policy(&doc.to_string()).await;
        let status = match result {
            Err(status) if status.code() == Code::InvalidArgument => status,
            other => panic!("{what}: expected InvalidArgument at {field}, got {other:?}"),
        };
        let fields = portcullis_server::status::field_violations(&status);
        assert!(
            fields.iter().any(|(f, _)| f == field),
            "{what}: expected a violation at {field:?}, got {fields:?}"
        );
        assert!(status.message().contains(field), "{what}: {}", status.message());
    }

    // Duplicate name in the tenant: AlreadyExists (the proto's code for a taken name).
    api.create_policy(&policy_doc("taken", "block")).await.unwrap();
    let status = expect_code(
        api.create_policy(&policy_doc("taken", "log")).await,
        Code::AlreadyExists,
    );
    assert!(status.message().contains("taken"), "{}", status.message());
    // Not JSON at all, and an empty document.
    expect_code(api.create_policy("{not json").await, Code::InvalidArgument);
    expect_invalid_field(api.create_policy("").await, "document_json");

    // Nothing was stored by any refused call.
    let names: Vec<String> = api.list_policies().await.unwrap().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["taken"]);
    let taken = api.get_policy(by_name("taken")).await.unwrap();
    assert_eq!(taken.revision, 1);

    // Updates are validated the same way and write nothing either.
    let (_, doc, field) = cases.iter().find(|c| c.0 == "unknown property value").unwrap();
    let mut doc = doc.clone();
    doc["name"] = serde_json::json!("taken");
    expect_invalid_field(api.update_policy(by_name("taken"), &doc.to_string(), 1).await, field);
    assert_eq!(api.get_policy(by_name("taken")).await.unwrap().revision, 1);

    // With the attestor and the ruleset present in the tenant, the same references pass;
    // a ruleset is referenced by id, not by name.
    api.create_attestor(&attestor_doc("release-signer")).await.unwrap();
    let ruleset = api.create_ruleset(&ruleset_doc("base", "isolate")).await.unwrap();
    expect_invalid_field(
        api.create_policy(&policy_with_refs("q", None, Some("base"))).await,
        "runtime.rulesets[0].id",
    );
    let ok = api
        .create_policy(&policy_with_refs("q", Some("release-signer"), Some(&ruleset.id)))
        .await
        .unwrap();
    assert_eq!(ok.revision, 1);
}

portcullis_test_kit::both! {
    embedded: &mut portcullis_integration_tests::store::embedded().await,
    distributed: &mut portcullis_integration_tests::store::distributed().await;
    create,
    update_with_stale_revision_writes_nothing,
    duplicate_naming,
    rename_refused,
    identical_apply_makes_no_revision_and_no_event,
    history,
    delete_while_assigned_refused,
    every_validation_error_names_its_field,
}
