//! A deterministic generator of varied AdmissionReviews, shared by the engine's benchmark,
//! its Rego equivalence test and `make_corpus` example, the continuous service's realistic
//! running pods ([`pods`]) and the cluster simulator, so that all of them judge exactly the
//! same reviews (one copy, no `#[path]` includes).
//!
//! Review `i` depends on `i` alone: every workload kind, a few kinds that are not
//! evaluated, every container list, and the variants the three checks care about
//! (privileged, host namespaces, capabilities in and out of the baseline set, names in the
//! wrong case), around half of them clean. Sizes run from about 3 to 9 KB, like real
//! reviews: env, probes, resources, volumes, labels and managed fields included.
// Indexing here is into constant tables with in-range indices; this is test-data code.
#![allow(clippy::indexing_slicing)]

pub mod connect;
pub mod pods;

use serde_json::{Map, Value, json};

/// Reviews in the benchmark's corpus (and in the equivalence test).
pub const BENCH_CORPUS_SIZE: usize = 400;

/// `(group, version, kind, resource)` of every evaluated workload kind.
pub const WORKLOAD_KINDS: [(&str, &str, &str, &str); 8] = [
    ("", "v1", "Pod", "pods"),
    ("", "v1", "ReplicationController", "replicationcontrollers"),
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "ReplicaSet", "replicasets"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("apps", "v1", "DaemonSet", "daemonsets"),
    ("batch", "v1", "Job", "jobs"),
    ("batch", "v1", "CronJob", "cronjobs"),
];

/// Kinds that carry a pod-spec-like shape or none at all, and are not evaluated.
const OTHER_KINDS: [(&str, &str, &str, &str); 3] = [
    ("", "v1", "ConfigMap", "configmaps"),
    ("", "v1", "Service", "services"),
    // A PodTemplate has `template.spec` but is not a workload: a privileged one is allowed.
    ("", "v1", "PodTemplate", "podtemplates"),
];

/// What a generated review exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Nothing the three checks forbid.
    Clean,
    /// A container with `privileged: true`.
    Privileged,
    /// Every container with `privileged: false` spelt out.
    PrivilegedFalse,
    /// `hostNetwork: true`.
    HostNetwork,
    /// `hostPID: true`.
    HostPid,
    /// `hostIPC: true`.
    HostIpc,
    /// All three host namespaces spelt out as `false`.
    HostFalse,
    /// Added capabilities, all inside the baseline set.
    CapsBaseline,
    /// `NET_RAW` added (default runtime set, but not baseline).
    CapsNetRaw,
    /// `SYS_ADMIN` added.
    CapsSysAdmin,
    /// `chown` added: lower case is not `CHOWN`.
    CapsLowercase,
    /// `CAP_CHOWN` added: the prefix makes it another name.
    CapsPrefixed,
    /// A Windows pod that adds a capability outside the baseline set.
    WindowsCaps,
    /// Several failures at once.
    Several,
}

/// Every variant, for coverage checks.
pub const VARIANTS: [Variant; 14] = [
    Variant::Clean,
    Variant::Privileged,
    Variant::PrivilegedFalse,
    Variant::HostNetwork,
    Variant::HostPid,
    Variant::HostIpc,
    Variant::HostFalse,
    Variant::CapsBaseline,
    Variant::CapsNetRaw,
    Variant::CapsSysAdmin,
    Variant::CapsLowercase,
    Variant::CapsPrefixed,
    Variant::WindowsCaps,
    Variant::Several,
];

impl Variant {
    /// Whether the three checks must block a workload with this variant.
    pub fn violates(self) -> bool {
        !matches!(
            self,
            Variant::Clean | Variant::PrivilegedFalse | Variant::HostFalse | Variant::CapsBaseline
        )
    }
}

/// One generated review.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Compact JSON, as the API server sends it.
    pub json: String,
    /// The object's kind.
    pub kind: &'static str,
    /// Whether the kind is one the engine evaluates.
    pub workload: bool,
    /// What the pod spec exercises.
    pub variant: Variant,
}

/// splitmix64: small, fast and stable across platforms and versions.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5EED_2026_0000_0002)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
    fn hex(&mut self, len: usize) -> String {
        let mut s = String::with_capacity(len);
        while s.len() < len {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s.truncate(len);
        s
    }
}

const APPS: [&str; 12] = [
    "checkout",
    "payments",
    "catalog",
    "search",
    "ledger",
    "notifier",
    "gateway",
    "reporting",
    "auth",
    "inventory",
    "billing",
    "recommender",
];
const NAMESPACES: [&str; 8] = [
    "shop",
    "payments",
    "data",
    "platform",
    "ml",
    "edge",
    "dev",
    "monitoring",
];
const BASELINE_OK: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
const NOT_BASELINE: [&str; 6] = ["SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "SYS_MODULE", "BPF", "NET_RAW"];

/// One generated review, as a JSON value (what [`pods`] builds running pods from).
#[derive(Debug, Clone)]
pub struct GeneratedValue {
    /// The AdmissionReview.
    pub review: Value,
    /// The object's kind.
    pub kind: &'static str,
    /// Whether the kind is one the engine evaluates.
    pub workload: bool,
    /// What the pod spec exercises.
    pub variant: Variant,
}

/// Review number `index`.
pub fn review(index: u64) -> Generated {
    let generated = review_value(index);
    Generated {
        json: generated.review.to_string(),
        kind: generated.kind,
        workload: generated.workload,
        variant: generated.variant,
    }
}

/// Review number `index` as a JSON value.
pub fn review_value(index: u64) -> GeneratedValue {
    let mut rng = Rng::new(index);
    // One in fifteen is a kind that is not evaluated; the rest cycle through every workload kind.
    let other = index % 15 == 14;
    let (group, version, kind, resource) = if other {
        OTHER_KINDS[(index / 15) as usize % OTHER_KINDS.len()]
    } else {
        WORKLOAD_KINDS[index as usize % WORKLOAD_KINDS.len()]
    };
    // Half clean; the rest spread over the risky variants.
    let variant = if rng.chance(50) {
        Variant::Clean
    } else {
        rng.pick(&VARIANTS[1..])
    };
    let app = rng.pick(&APPS);
    let namespace = rng.pick(&NAMESPACES);
    let name = format!("{app}-{}", rng.hex(5));
    let uid = format!(
        "{}-{}-{}-{}-{}",
        rng.hex(8),
        rng.hex(4),
        rng.hex(4),
        rng.hex(4),
        rng.hex(12)
    );

    let is_pod = kind == "Pod";
    let spec = pod_spec(&mut rng, app, variant, is_pod);
    let labels = json!({
        "app.kubernetes.io/name": app,
        "app.kubernetes.io/instance": format!("{app}-{namespace}"),
        "app.kubernetes.io/version": format!("{}.{}.{}", rng.range(1, 9), rng.range(0, 30), rng.range(0, 20)),
        "team": format!("team-{}", rng.range(1, 40)),
    });
    let metadata = json!({
        "name": name,
        "namespace": namespace,
        "creationTimestamp": null,
        "labels": labels,
        "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": format!(
                "{{\"apiVersion\":\"{}\",\"kind\":\"{kind}\",\"metadata\":{{\"name\":\"{name}\",\"namespace\":\"{namespace}\"}}}}\n",
                if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") }
            ),
            "owner": format!("{app}@example.com"),
        },
        "managedFields": [{
            "manager": rng.pick(&["kubectl-client-side-apply", "argocd-controller", "helm", "kustomize-controller"]),
            "operation": "Update",
            "apiVersion": if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") },
            "time": format!("2026-{:02}-{:02}T{:02}:{:02}:{:02}Z", rng.range(1, 12), rng.range(1, 28), rng.range(0, 23), rng.range(0, 59), rng.range(0, 59)),
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app.kubernetes.io/name": {}}}, "f:spec": {".": {}}},
        }],
    });
    let object = match (kind, other) {
        ("ConfigMap", _) => json!({
            "apiVersion": version, "kind": kind, "metadata": metadata,
            "data": {"config.yaml": format!("listen: :8080\nlog_level: info\nupstream: {app}.svc\n"), "feature-flags": "a,b,c"},
        }),
        ("Service", _) => json!({
            "apiVersion": version, "kind": kind, "metadata": metadata,
            "spec": {"selector": {"app.kubernetes.io/name": app}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}], "type": "ClusterIP"},
        }),
        ("PodTemplate", _) => json!({
            "apiVersion": version, "kind": kind, "metadata": metadata,
            "template": {"metadata": {"labels": {"app.kubernetes.io/name": app}}, "spec": spec},
        }),
        ("Pod", _) => json!({"apiVersion": version, "kind": kind, "metadata": metadata, "spec": spec}),
        ("CronJob", _) => json!({
            "apiVersion": format!("{group}/{version}"), "kind": kind, "metadata": metadata,
            "spec": {
                "schedule": format!("{} */{} * * *", rng.range(0, 59), rng.range(1, 6)),
                "concurrencyPolicy": "Forbid",
                "jobTemplate": {"spec": {"backoffLimit": 2, "template": template(&mut rng, app, spec)}},
            },
        }),
        _ => {
            let api_version = if group.is_empty() {
                version.to_owned()
            } else {
                format!("{group}/{version}")
            };
            let mut s = Map::new();
            if kind != "Job" {
                s.insert("replicas".into(), json!(rng.range(1, 12)));
                s.insert(
                    "selector".into(),
                    json!({"matchLabels": {"app.kubernetes.io/name": app}}),
                );
            }
            if kind == "StatefulSet" {
                s.insert("serviceName".into(), json!(app));
            }
            s.insert("template".into(), template(&mut rng, app, spec));
            json!({"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": s})
        }
    };
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": kind},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "name": name,
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {
                "username": format!("system:serviceaccount:{}:deployer", rng.pick(&["argocd", "flux-system", "ci"])),
                "groups": ["system:serviceaccounts", "system:authenticated"],
            },
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    });
    GeneratedValue {
        review,
        kind,
        workload: !other,
        variant,
    }
}

/// The first `n` reviews.
pub fn corpus(n: usize) -> Vec<Generated> {
    (0..n as u64).map(review).collect()
}

fn template(rng: &mut Rng, app: &str, spec: Value) -> Value {
    json!({
        "metadata": {
            "creationTimestamp": null,
            "labels": {"app.kubernetes.io/name": app},
            "annotations": {"prometheus.io/scrape": "true", "checksum/config": rng.hex(64)},
        },
        "spec": spec,
    })
}

/// Which container list and which container of it gets the risky setting.
#[derive(Clone, Copy)]
struct Target {
    list: usize,
    index: usize,
}

fn pod_spec(rng: &mut Rng, app: &str, variant: Variant, is_pod: bool) -> Value {
    let n_containers = rng.range(1, 4);
    let n_init = if rng.chance(40) { rng.range(1, 2) } else { 0 };
    // Ephemeral containers only exist on pods.
    let n_ephemeral = if is_pod && rng.chance(25) { 1 } else { 0 };
    let counts = [n_containers, n_init, n_ephemeral];
    let target = {
        let lists: Vec<usize> = (0..3).filter(|&l| counts[l] > 0).collect();
        let list = rng.pick(&lists);
        Target {
            list,
            index: rng.below(counts[list]),
        }
    };
    let restricted_style = rng.chance(60);
    let mut lists: [Vec<Value>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for (l, &count) in counts.iter().enumerate() {
        for i in 0..count {
            let hit = target.list == l && target.index == i;
            lists[l].push(container(rng, app, l, i, variant, hit, restricted_style));
        }
    }
    let [containers, init, ephemeral] = lists;
    let mut spec = Map::new();
    spec.insert("serviceAccountName".into(), json!(app));
    spec.insert("terminationGracePeriodSeconds".into(), json!(rng.pick(&[30, 45, 60])));
    spec.insert("dnsPolicy".into(), json!("ClusterFirst"));
    spec.insert("restartPolicy".into(), json!("Always"));
    if restricted_style {
        spec.insert(
            "securityContext".into(),
            json!({"runAsNonRoot": true, "runAsUser": 10001, "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}),
        );
    } else if rng.chance(50) {
        spec.insert("securityContext".into(), json!({"fsGroup": 2000}));
    }
    match variant {
        Variant::HostNetwork => {
            spec.insert("hostNetwork".into(), json!(true));
            spec.insert("dnsPolicy".into(), json!("ClusterFirstWithHostNet"));
        }
        Variant::HostPid => {
            spec.insert("hostPID".into(), json!(true));
        }
        Variant::HostIpc => {
            spec.insert("hostIPC".into(), json!(true));
        }
        Variant::HostFalse => {
            spec.insert("hostNetwork".into(), json!(false));
            spec.insert("hostPID".into(), json!(false));
            spec.insert("hostIPC".into(), json!(false));
        }
        Variant::WindowsCaps => {
            spec.insert("os".into(), json!({"name": "windows"}));
            spec.insert("nodeSelector".into(), json!({"kubernetes.io/os": "windows"}));
        }
        Variant::Several => {
            spec.insert("hostPID".into(), json!(true));
        }
        _ => {}
    }
    spec.insert("containers".into(), Value::Array(containers));
    if !init.is_empty() {
        spec.insert("initContainers".into(), Value::Array(init));
    }
    if !ephemeral.is_empty() {
        spec.insert("ephemeralContainers".into(), Value::Array(ephemeral));
    }
    let mut volumes = vec![
        json!({"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}),
        json!({"name": "config", "configMap": {"name": format!("{app}-config"), "defaultMode": 420}}),
    ];
    if rng.chance(50) {
        volumes.push(json!({"name": "tls", "secret": {"secretName": format!("{app}-tls")}}));
    }
    spec.insert("volumes".into(), Value::Array(volumes));
    if rng.chance(40) {
        spec.insert(
            "tolerations".into(),
            json!([{"key": "dedicated", "operator": "Equal", "value": app, "effect": "NoSchedule"}]),
        );
    }
    Value::Object(spec)
}

fn image(rng: &mut Rng, app: &str) -> String {
    match rng.below(5) {
        0 => format!(
            "registry.example.com/{app}/server:{}.{}.{}",
            rng.range(1, 5),
            rng.range(0, 20),
            rng.range(0, 9)
        ),
        1 => format!("registry.example.com/{app}/server@sha256:{}", rng.hex(64)),
        2 => format!(
            "ghcr.io/example/{app}:v{}.{}@sha256:{}",
            rng.range(1, 3),
            rng.range(0, 9),
            rng.hex(64)
        ),
        3 => rng
            .pick(&["nginx:1.27", "redis:7.4-alpine", "busybox", "envoyproxy/envoy:v1.31.2"])
            .to_owned(),
        _ => format!("mirror.example.com/library/{app}:latest"),
    }
}

fn container(
    rng: &mut Rng,
    app: &str,
    list: usize,
    index: usize,
    variant: Variant,
    hit: bool,
    restricted_style: bool,
) -> Value {
    let name = match (list, index) {
        (0, 0) => app.to_owned(),
        (0, i) => format!("{}-{i}", rng.pick(&["sidecar", "proxy", "exporter", "shipper"])),
        (1, i) => format!("init-{i}"),
        (_, i) => format!("debugger-{i}"),
    };
    let mut c = Map::new();
    c.insert("name".into(), json!(name));
    c.insert("image".into(), json!(image(rng, app)));
    c.insert("imagePullPolicy".into(), json!("IfNotPresent"));
    if list == 1 {
        c.insert(
            "command".into(),
            json!(["/bin/sh", "-c", format!("until nslookup {app}-db; do sleep 2; done")]),
        );
    } else {
        c.insert(
            "args".into(),
            json!(["--listen=:8080", format!("--log-level={}", rng.pick(&["info", "warn"]))]),
        );
    }
    let env: Vec<Value> = (0..rng.range(1, 7))
        .map(|i| match i % 3 {
            0 => json!({"name": format!("VAR_{i}"), "value": format!("{}", rng.hex(12))}),
            1 => json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}),
            _ => json!({"name": format!("SECRET_{i}"), "valueFrom": {"secretKeyRef": {"name": format!("{app}-secrets"), "key": format!("k{i}")}}}),
        })
        .collect();
    c.insert("env".into(), Value::Array(env));
    if list == 0 {
        c.insert(
            "ports".into(),
            json!([{"name": "http", "containerPort": 8080 + index, "protocol": "TCP"}]),
        );
        c.insert(
            "livenessProbe".into(),
            json!({"httpGet": {"path": "/healthz", "port": 8080 + index}, "initialDelaySeconds": 5, "periodSeconds": 10, "failureThreshold": 3}),
        );
        c.insert(
            "readinessProbe".into(),
            json!({"httpGet": {"path": "/readyz", "port": 8080 + index}, "periodSeconds": 5, "timeoutSeconds": 2}),
        );
    }
    c.insert(
        "resources".into(),
        json!({"requests": {"cpu": format!("{}m", rng.range(1, 10) * 50), "memory": format!("{}Mi", rng.range(1, 8) * 64)},
               "limits": {"cpu": format!("{}m", rng.range(2, 20) * 100), "memory": format!("{}Mi", rng.range(2, 16) * 64)}}),
    );
    c.insert(
        "volumeMounts".into(),
        json!([{"name": "tmp", "mountPath": "/tmp"}, {"name": "config", "mountPath": "/etc/app", "readOnly": true}]),
    );
    c.insert("terminationMessagePolicy".into(), json!("File"));

    let mut sc = Map::new();
    if restricted_style {
        sc.insert("allowPrivilegeEscalation".into(), json!(false));
        sc.insert("readOnlyRootFilesystem".into(), json!(true));
    }
    let mut drop_all = restricted_style;
    let mut add: Vec<&str> = Vec::new();
    match variant {
        Variant::Privileged if hit => {
            sc.insert("privileged".into(), json!(true));
            sc.insert("allowPrivilegeEscalation".into(), json!(true));
        }
        Variant::PrivilegedFalse => {
            sc.insert("privileged".into(), json!(false));
        }
        Variant::CapsBaseline if hit => {
            let n = rng.range(1, 3);
            for _ in 0..n {
                let cap = rng.pick(&BASELINE_OK);
                if !add.contains(&cap) {
                    add.push(cap);
                }
            }
        }
        Variant::CapsNetRaw if hit => add.extend(["NET_BIND_SERVICE", "NET_RAW"]),
        Variant::CapsSysAdmin if hit => add.push("SYS_ADMIN"),
        Variant::CapsLowercase if hit => add.push("chown"),
        Variant::CapsPrefixed if hit => add.push("CAP_CHOWN"),
        Variant::WindowsCaps if hit => {
            drop_all = false;
            add.push(rng.pick(&NOT_BASELINE));
        }
        Variant::Several if hit => {
            sc.insert("privileged".into(), json!(true));
            add.extend(["SYS_PTRACE", "KILL"]);
        }
        _ => {}
    }
    if drop_all || !add.is_empty() {
        let mut caps = Map::new();
        if drop_all {
            caps.insert("drop".into(), json!(["ALL"]));
        }
        if !add.is_empty() {
            caps.insert("add".into(), json!(add));
        }
        sc.insert("capabilities".into(), Value::Object(caps));
    }
    if !sc.is_empty() {
        c.insert("securityContext".into(), Value::Object(sc));
    }
    Value::Object(c)
}
