//! Realistic running pods, as connectors send them (the continuous service's tests and
//! benchmarks, the cluster simulator).
//!
//! Pod `i` is made from review `i` of the corpus (every workload kind, the risky variants, 1
//! to 4 containers of every list, env, probes, resources, volumes, labels and managed
//! fields), as the cluster runs it: owner references to its controller, what the API server
//! and the kubelet add (node, scheduler, default tolerations, the service account token
//! volume) and a status whose `imageID`s carry each image's digest. Reviews of kinds that
//! are not workloads give no pod.

use serde_json::{Map, Value, json};

pub(crate) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The digest a registry gives a tag-only image (stable per reference).
pub fn digest_of(image: &str) -> String {
    let h = hash(image);
    let hex: String = (0..4).map(|i| format!("{:016x}", splitmix(h ^ i))).collect();
    format!("sha256:{hex}")
}

/// The digest a container runs: the one it names, or its tag's.
fn running_digest(image: &str) -> String {
    match image.rsplit_once('@') {
        Some((_, d)) => d.to_owned(),
        None => digest_of(image),
    }
}

/// The repository part of an image reference (as a runtime writes `imageID`).
fn repository(image: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    let name = match name.rsplit_once(':') {
        Some((n, tag)) if !tag.contains('/') => n,
        _ => name,
    };
    if name.contains('/') && name.split('/').next().is_some_and(|h| h.contains('.')) {
        name.to_owned()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    }
}

fn uid(kind: u64, index: u64) -> String {
    let a = splitmix(index ^ (kind << 56));
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (a >> 20) & 0xfff,
        index
    )
}

fn statuses(containers: &Value, running: bool) -> Value {
    let Some(list) = containers.as_array() else {
        return json!([]);
    };
    Value::Array(
        list.iter()
            .enumerate()
            .map(|(i, c)| {
                let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
                let digest = running_digest(image);
                let state = if running {
                    json!({"running": {"startedAt": "2026-12-01T08:00:05Z"}})
                } else {
                    json!({"terminated": {"exitCode": 0, "reason": "Completed",
                        "startedAt": "2026-12-01T08:00:01Z", "finishedAt": "2026-12-01T08:00:03Z",
                        "containerID": format!("containerd://{}", digest.get(7..71).unwrap_or_default())}})
                };
                json!({
                    "name": c.get("name"), "image": image,
                    "imageID": format!("{}@{digest}", repository(image)),
                    "containerID": format!("containerd://{:016x}{:016x}", splitmix(i as u64), hash(image)),
                    "ready": running, "started": running, "restartCount": i % 2,
                    "state": state, "lastState": {},
                })
            })
            .collect(),
    )
}

/// Running pod `index` as compact JSON, or `None` when review `index` is not a workload.
pub fn running_pod(index: u64) -> Option<String> {
    running_pod_value(index).map(|pod| pod.to_string())
}

/// Running pod `index`, or `None` when review `index` is not a workload.
pub fn running_pod_value(index: u64) -> Option<Value> {
    let generated = crate::review_value(index);
    if !generated.workload {
        return None;
    }
    let review = generated.review;
    let object = &review["request"]["object"];
    let kind = generated.kind;
    let template = match kind {
        "Pod" => object.clone(),
        "CronJob" => object["spec"]["jobTemplate"]["spec"]["template"].clone(),
        _ => object["spec"]["template"].clone(),
    };
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or("default");
    let workload = object["metadata"]["name"].as_str().unwrap_or("pod");
    let suffix = format!("{:05x}", splitmix(index) & 0xfffff);
    let (owner_kind, owner_api, owner_name, pod_name) = match kind {
        "Pod" => (None, "", String::new(), workload.to_owned()),
        "Deployment" => {
            let rs = format!("{workload}-{:010x}", splitmix(index ^ 1) & 0xff_ffff_ffff);
            (Some("ReplicaSet"), "apps/v1", rs.clone(), format!("{rs}-{suffix}"))
        }
        "CronJob" => {
            let job = format!("{workload}-{}", 29_000_000 + index % 100_000);
            (Some("Job"), "batch/v1", job.clone(), format!("{job}-{suffix}"))
        }
        "StatefulSet" => (
            Some(kind),
            "apps/v1",
            workload.to_owned(),
            format!("{workload}-{}", index % 3),
        ),
        "Job" => (
            Some(kind),
            "batch/v1",
            workload.to_owned(),
            format!("{workload}-{suffix}"),
        ),
        "ReplicationController" => (Some(kind), "v1", workload.to_owned(), format!("{workload}-{suffix}")),
        _ => (
            Some(kind),
            "apps/v1",
            workload.to_owned(),
            format!("{workload}-{suffix}"),
        ),
    };
    let mut labels = object["metadata"]["labels"].as_object().cloned().unwrap_or_default();
    if let Some(own) = template["metadata"]["labels"].as_object() {
        labels.extend(own.clone());
    }
    if kind == "Deployment" {
        labels.insert(
            "pod-template-hash".into(),
            json!(format!("{:010x}", splitmix(index ^ 1) & 0xff_ffff_ffff)),
        );
    }
    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(pod_name));
    if kind != "Pod" {
        metadata.insert("generateName".into(), json!(format!("{owner_name}-")));
    }
    metadata.insert("namespace".into(), json!(namespace));
    metadata.insert("uid".into(), json!(uid(1, index)));
    metadata.insert("resourceVersion".into(), json!(format!("{}", 1_000_000 + index)));
    metadata.insert("creationTimestamp".into(), json!("2026-12-01T08:00:00Z"));
    metadata.insert("labels".into(), Value::Object(labels));
    let mut annotations = template["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    annotations.insert(
        "kubectl.kubernetes.io/restartedAt".into(),
        json!("2026-11-30T17:12:44Z"),
    );
    metadata.insert("annotations".into(), Value::Object(annotations));
    if let Some(owner_kind) = owner_kind {
        metadata.insert(
            "ownerReferences".into(),
            json!([{"apiVersion": owner_api, "kind": owner_kind, "name": owner_name,
                    "uid": uid(2, hash(&owner_name) & 0xffff_ffff_ffff), "controller": true, "blockOwnerDeletion": true}]),
        );
    }
    metadata.insert("managedFields".into(), object["metadata"]["managedFields"].clone());

    let mut spec = template["spec"].as_object().cloned().unwrap_or_default();
    spec.insert("nodeName".into(), json!(format!("node-{:03}", index % 250)));
    spec.insert("schedulerName".into(), json!("default-scheduler"));
    spec.insert(
        "serviceAccount".into(),
        spec.get("serviceAccountName").cloned().unwrap_or(json!("default")),
    );
    spec.insert("enableServiceLinks".into(), json!(true));
    spec.insert("preemptionPolicy".into(), json!("PreemptLowerPriority"));
    spec.insert("priority".into(), json!(0));
    let mut tolerations = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
    }
    spec.insert("tolerations".into(), Value::Array(tolerations));
    let mut volumes = spec
        .get("volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    volumes.push(json!({"name": format!("kube-api-access-{}", &suffix), "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}, "path": "namespace"}]}}
    ]}}));
    spec.insert("volumes".into(), Value::Array(volumes));

    let pod_ip = format!("10.{}.{}.{}", index % 200, (index / 200) % 250, index % 250 + 2);
    let status = json!({
        "phase": "Running",
        "conditions": [
            {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": "2026-12-01T08:00:02Z"},
            {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-12-01T08:00:03Z"},
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-01T08:00:09Z"},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-12-01T08:00:09Z"},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-01T08:00:00Z"}
        ],
        "hostIP": format!("192.168.{}.{}", index % 250 / 100, index % 250),
        "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
        "startTime": "2026-12-01T08:00:00Z",
        "qosClass": "Burstable",
        "initContainerStatuses": statuses(&spec.get("initContainers").cloned().unwrap_or(Value::Null), false),
        "containerStatuses": statuses(&spec.get("containers").cloned().unwrap_or(Value::Null), true),
        "ephemeralContainerStatuses": statuses(&spec.get("ephemeralContainers").cloned().unwrap_or(Value::Null), true),
    });
    Some(json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status}))
}

/// The first `n` running pods (skipping reviews that are not workloads).
pub fn running_pods(n: usize) -> Vec<String> {
    (0..).filter_map(running_pod).take(n).collect()
}
