//! deploy/admission-webhook.yaml: the ValidatingWebhookConfiguration sends exactly the
//! operations and resources Portcullis judges, and the API server configuration in its
//! comment block is well-formed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeSet;

use serde_json::Value;

const MANIFEST: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/admission-webhook.yaml"
));

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

#[test]
fn the_webhook_configuration_sends_what_portcullis_judges() {
    let doc: Value = yaml_serde::from_str(MANIFEST).unwrap();
    assert_eq!(doc["apiVersion"], "admissionregistration.k8s.io/v1");
    assert_eq!(doc["kind"], "ValidatingWebhookConfiguration");
    assert_eq!(doc["metadata"]["name"], "portcullis-admission");
    let webhooks = doc["webhooks"].as_array().unwrap();
    assert_eq!(webhooks.len(), 1);
    let webhook = &webhooks[0];
    assert_eq!(webhook["name"], "validate.portcullis.dev");
    assert_eq!(
        webhook["clientConfig"]["url"],
        "https://PORTCULLIS_HOST/validate/CLUSTER"
    );
    assert!(webhook["clientConfig"].get("service").is_none());

    let mut resources = BTreeSet::new();
    for rule in webhook["rules"].as_array().unwrap() {
        assert_eq!(strings(&rule["operations"]), ["CREATE", "UPDATE", "CONNECT"], "{rule}");
        assert_eq!(strings(&rule["apiVersions"]), ["v1"], "{rule}");
        assert_eq!(rule["scope"], "Namespaced");
        let groups = strings(&rule["apiGroups"]);
        assert_eq!(groups.len(), 1, "{rule}");
        for resource in strings(&rule["resources"]) {
            assert!(resources.insert((groups[0], resource)), "{resource} twice");
        }
    }
    let expected: BTreeSet<(&str, &str)> = [
        ("", "pods"),
        ("", "pods/exec"),
        ("", "pods/attach"),
        ("", "pods/portforward"),
        ("", "pods/ephemeralcontainers"),
        ("", "replicationcontrollers"),
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
    ]
    .into_iter()
    .collect();
    assert_eq!(resources, expected);

    assert_eq!(strings(&webhook["admissionReviewVersions"]), ["v1", "v1beta1"]);
    assert_eq!(webhook["sideEffects"], "None");
    assert_eq!(webhook["timeoutSeconds"], 10);
    assert_eq!(webhook["failurePolicy"], "Ignore");
    assert_eq!(webhook["matchPolicy"], "Equivalent");
    let selector = &webhook["namespaceSelector"]["matchExpressions"][0];
    assert_eq!(selector["key"], "kubernetes.io/metadata.name");
    assert_eq!(selector["operator"], "NotIn");
    assert_eq!(strings(&selector["values"]), ["kube-system", "portcullis-system"]);
}

/// The files in the manifest's comment block: `# >>> PATH` ... `# <<<`, each line after `# `.
fn commented_files() -> Vec<(String, Value)> {
    let mut files = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in MANIFEST.lines() {
        if let Some(path) = line.strip_prefix("# >>> ") {
            assert!(current.is_none(), "nested block at {line}");
            current = Some((path.to_owned(), String::new()));
        } else if line == "# <<<" {
            let (path, text) = current.take().unwrap();
            let doc: Value = yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}\n{text}"));
            files.push((path, doc));
        } else if let Some((_, text)) = current.as_mut() {
            let content = line.strip_prefix("# ").or_else(|| line.strip_prefix('#')).unwrap();
            text.push_str(content);
            text.push('\n');
        }
    }
    assert!(current.is_none(), "unterminated block");
    files
}

#[test]
fn the_api_server_configuration_sends_the_connector_key_as_bearer() {
    let files = commented_files();
    assert_eq!(files.len(), 2);
    let (_, admission) = &files[0];
    let (kubeconfig_path, kubeconfig) = &files[1];
    assert_eq!(admission["apiVersion"], "apiserver.config.k8s.io/v1");
    assert_eq!(admission["kind"], "AdmissionConfiguration");
    let plugin = &admission["plugins"][0];
    assert_eq!(plugin["name"], "ValidatingAdmissionWebhook");
    assert_eq!(plugin["configuration"]["apiVersion"], "apiserver.config.k8s.io/v1");
    assert_eq!(plugin["configuration"]["kind"], "WebhookAdmission");
    assert_eq!(plugin["configuration"]["kubeConfigFile"], kubeconfig_path.as_str());

    assert_eq!(kubeconfig["apiVersion"], "v1");
    assert_eq!(kubeconfig["kind"], "Config");
    let user = &kubeconfig["users"][0];
    // Matched against the webhook URL's host.
    assert_eq!(user["name"], "PORTCULLIS_HOST");
    assert_eq!(user["user"]["token"], "CONNECTOR_KEY");
}
