//! CONNECT reviews: `kubectl exec` and `kubectl attach` into a running pod, as the API server
//! sends them to an admission webhook (judged by the `podexec` rule).

use serde_json::json;

/// The subresource a CONNECT review of `index` asks for: `exec` three times in four, else
/// `attach`.
pub fn subresource(index: u64) -> &'static str {
    if index % 4 == 3 { "attach" } else { "exec" }
}

/// CONNECT review number `index` into pod `namespace/pod`, compact JSON: an interactive
/// shell (`exec`) or an attach, by a person or a CI service account.
pub fn review(index: u64, namespace: &str, pod: &str) -> String {
    let sub = subresource(index);
    let kind = if sub == "exec" {
        "PodExecOptions"
    } else {
        "PodAttachOptions"
    };
    let user = match index % 3 {
        0 => "alice@example.com",
        1 => "bob@example.com",
        _ => "system:serviceaccount:ci:deployer",
    };
    let mut object = json!({"apiVersion": "v1", "kind": kind, "stdin": true, "tty": true, "container": "app"});
    if sub == "exec" {
        object["command"] = json!(["/bin/sh", "-c", format!("cat /etc/hostname # {index}")]);
    }
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("c0ffee00-0000-4000-8000-{:012x}", index & 0xffff_ffff_ffff),
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "subResource": sub,
            "requestKind": {"group": "", "version": "v1", "kind": kind},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "requestSubResource": sub,
            "name": pod,
            "namespace": namespace,
            "operation": "CONNECT",
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": null,
        },
    })
    .to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_review_names_the_pod_and_its_subresource() {
        let review: serde_json::Value = serde_json::from_str(&review(3, "shop", "web-0")).unwrap();
        let request = &review["request"];
        assert_eq!(request["operation"], "CONNECT");
        assert_eq!(request["subResource"], "attach");
        assert_eq!(request["name"], "web-0");
        assert_eq!(request["namespace"], "shop");
        assert_eq!(subresource(0), "exec");
    }
}
