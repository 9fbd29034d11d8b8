//! Lean projections of what the engine judged, written in the Kubernetes JSON shape that the
//! engine's own reader reads back, so that judging the projection again invents nothing.
//!
//! - [`PodSpecJson`]: the engine's [`PodSpec`] view as Kubernetes JSON. The writer
//!   destructures every engine type field by field: a field the engine starts to read does
//!   not compile here until it is written too. It leaves out what holds nothing for any rule
//!   (a port without a host port, a probe naming no host). The continuous service's inventory
//!   rows and admission's replay projections both use it.
//! - [`ReviewedPod`]: what admission reviewed, for replay ([`crate::replay`]): the request's
//!   operation and subresource, the object's identity and owner, the pod labels, the
//!   annotations the engine reads, the lean pod spec, and the digests and signature verdicts
//!   the decision used.

use std::collections::BTreeMap;

use compact_str::CompactString;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use crate::input::{KubeObject, Operation, Subject};
use crate::k8s::{
    Capabilities, Container, ContainerPort, Fields, Handler, HostField, Lifecycle, ObjectMeta, OwnerReference, PodOs,
    PodSecurityContext, PodSpec, Profile, SeLinuxOptions, SecurityContext, Sysctl, Volume, WindowsOptions,
};

/// The engine's pod spec view, serialised in the Kubernetes JSON shape (unset fields left
/// out); [`PodSpec`]'s reader reads it back to an equal view.
#[derive(Debug, Clone, Copy)]
pub struct PodSpecJson<'a>(pub &'a PodSpec);

impl Serialize for PodSpecJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        K8s(self.0).serialize(serializer)
    }
}

/// An engine view, serialised in the Kubernetes JSON shape (unset fields left out).
struct K8s<'a, T: ?Sized>(&'a T);

/// Writes one view field when it is set.
trait Shape {
    /// Whether there is nothing to write.
    fn is_unset(&self) -> bool;
    /// Writes it.
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error>;
}

impl<T: Shape> Serialize for K8s<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.write(serializer)
    }
}

/// A map of the set fields: `entries!(serializer; "key" => value, ...)`.
macro_rules! entries {
    ($serializer:expr; $($key:literal => $value:expr),* $(,)?) => {{
        let mut map = $serializer.serialize_map(None)?;
        $(
            if !Shape::is_unset($value) {
                map.serialize_entry($key, &K8s($value))?;
            }
        )*
        map.end()
    }};
}

macro_rules! plain_shape {
    ($($t:ty),*) => {$(
        impl Shape for $t {
            fn is_unset(&self) -> bool {
                false
            }
            fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.serialize(serializer)
            }
        }
    )*};
}

plain_shape!(bool, i64, String, CompactString);

impl<T: Shape> Shape for Option<T> {
    fn is_unset(&self) -> bool {
        self.as_ref().is_none_or(T::is_unset)
    }
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Some(v) => v.write(serializer),
            None => serializer.serialize_none(),
        }
    }
}

impl<T: Shape> Shape for Box<T> {
    fn is_unset(&self) -> bool {
        (**self).is_unset()
    }
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (**self).write(serializer)
    }
}

impl<T: Shape> Shape for Vec<T> {
    fn is_unset(&self) -> bool {
        self.iter().all(T::is_unset)
    }
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        for item in self.iter().filter(|item| !item.is_unset()) {
            seq.serialize_element(&K8s(item))?;
        }
        seq.end()
    }
}

impl Shape for PodSpec {
    fn is_unset(&self) -> bool {
        false
    }
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A Pod has its spec at `spec`: the workload wrappers are never set on one.
        let PodSpec {
            host_network,
            host_pid,
            host_ipc,
            host_users,
            security_context,
            containers,
            init_containers,
            ephemeral_containers,
            volumes,
            os,
            template: _,
            job_template: _,
        } = self;
        entries!(serializer;
            "hostNetwork" => host_network,
            "hostPID" => host_pid,
            "hostIPC" => host_ipc,
            "hostUsers" => host_users,
            "securityContext" => security_context,
            "containers" => containers,
            "initContainers" => init_containers,
            "ephemeralContainers" => ephemeral_containers,
            "volumes" => volumes,
            "os" => os,
        )
    }
}

impl Shape for PodSecurityContext {
    fn is_unset(&self) -> bool {
        false
    }
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let PodSecurityContext {
            run_as_non_root,
            run_as_user,
            se_linux_options,
            seccomp_profile,
            app_armor_profile,
            sysctls,
            windows_options,
        } = self;
        entries!(serializer;
            "runAsNonRoot" => run_as_non_root,
            "runAsUser" => run_as_user,
            "seLinuxOptions" => se_linux_options,
            "seccompProfile" => seccomp_profile,
            "appArmorProfile" => app_armor_profile,
            "sysctls" => sysctls,
            "windowsOptions" => windows_options,
        )
    }
}

impl Shape for SecurityContext {
    fn is_unset(&self) -> bool {
        false
    }
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let SecurityContext {
            privileged,
            allow_privilege_escalation,
            capabilities,
            run_as_non_root,
            run_as_user,
            read_only_root_filesystem,
            proc_mount,
            se_linux_options,
            seccomp_profile,
            app_armor_profile,
            windows_options,
        } = self;
        entries!(serializer;
            "privileged" => privileged,
            "allowPrivilegeEscalation" => allow_privilege_escalation,
            "capabilities" => capabilities,
            "runAsNonRoot" => run_as_non_root,
            "runAsUser" => run_as_user,
            "readOnlyRootFilesystem" => read_only_root_filesystem,
            "procMount" => proc_mount,
            "seLinuxOptions" => se_linux_options,
            "seccompProfile" => seccomp_profile,
            "appArmorProfile" => app_armor_profile,
            "windowsOptions" => windows_options,
        )
    }
}

impl Shape for Capabilities {
    fn is_unset(&self) -> bool {
        false
    }
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Capabilities { add, drop } = self;
        entries!(serializer; "add" => add, "drop" => drop)
    }
}

impl Shape for SeLinuxOptions {
    fn is_unset(&self) -> bool {
        false
    }
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let SeLinuxOptions {
            type_,
            user,
            role,
            level,
        } = self;
        entries!(serializer; "type" => type_, "user" => user, "role" => role, "level" => level)
    }
}

impl Shape for Profile {
    fn is_unset(&self) -> bool {
        false
    }
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Profile {
            type_,
            localhost_profile,
        } = self;
        entries!(serializer; "type" => type_, "localhostProfile" => localhost_profile)
    }
}

impl Shape for Sysctl {
    fn is_unset(&self) -> bool {
        false
    }
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Sysctl { name, value } = self;
        entries!(serializer; "name" => name, "value" => value)
    }
}

impl Shape for WindowsOptions {
    fn is_unset(&self) -> bool {
        false
    }
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let WindowsOptions { host_process } = self;
        entries!(serializer; "hostProcess" => host_process)
    }
}

impl Shape for PodOs {
    fn is_unset(&self) -> bool {
        false
    }
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let PodOs { name } = self;
        entries!(serializer; "name" => name)
    }
}

impl Shape for Container {
    fn is_unset(&self) -> bool {
        false
    }
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Container {
            name,
            image,
            security_context,
            ports,
            liveness_probe,
            readiness_probe,
            startup_probe,
            lifecycle,
        } = self;
        entries!(serializer;
            "name" => name,
            "image" => image,
            "securityContext" => security_context,
            "ports" => ports,
            "livenessProbe" => liveness_probe,
            "readinessProbe" => readiness_probe,
            "startupProbe" => startup_probe,
            "lifecycle" => lifecycle,
        )
    }
}

impl Shape for ContainerPort {
    fn is_unset(&self) -> bool {
        // A port without a host port tells no rule anything (most ports are such).
        self.host_port.is_none()
    }
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let ContainerPort { host_port } = self;
        entries!(serializer; "hostPort" => host_port)
    }
}

impl Shape for Handler {
    fn is_unset(&self) -> bool {
        // Probes and hooks matter to rules only by the host they name (most name none).
        [&self.http_get, &self.tcp_socket]
            .iter()
            .all(|h| h.as_ref().is_none_or(|h| h.host.is_none()))
    }
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Handler { http_get, tcp_socket } = self;
        entries!(serializer; "httpGet" => http_get, "tcpSocket" => tcp_socket)
    }
}

impl Shape for HostField {
    fn is_unset(&self) -> bool {
        false
    }
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let HostField { host } = self;
        entries!(serializer; "host" => host)
    }
}

impl Shape for Lifecycle {
    fn is_unset(&self) -> bool {
        false
    }
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Lifecycle { post_start, pre_stop } = self;
        entries!(serializer; "postStart" => post_start, "preStop" => pre_stop)
    }
}

impl Shape for Volume {
    fn is_unset(&self) -> bool {
        false
    }
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The engine keeps which sources a volume sets, not their content: `{}` reads back as set.
        let Volume { name, sources } = self;
        let mut map = serializer.serialize_map(Some(sources.len() + 1))?;
        map.serialize_entry("name", name)?;
        for source in sources {
            map.serialize_entry(source, &serde_json::Map::new())?;
        }
        map.end()
    }
}

// ---------------------------------------------------------------------------------------------
// What admission reviewed, for replay.

fn is_empty_str(s: &str) -> bool {
    s.is_empty()
}

/// The controlling owner of a reviewed object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewedOwner {
    /// `apps/v1`.
    pub api_version: String,
    /// `ReplicaSet`.
    pub kind: String,
    /// The owner's name.
    pub name: String,
    /// The owner's uid.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// What admission reviewed, as replay judges it again: the lean projection a decision event
/// of an `xdrEnabled` policy carries (`AdmissionDecision.reviewed_pod_json`, this as JSON).
///
/// The pod spec is the engine's view (for a workload, its template's), so a draft policy
/// judging it reads exactly what the live evaluation read: the projection is judged as the
/// pod it describes, with the request's operation and subresource (evaluation does not
/// depend on the workload kind once the pod spec is found).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewedPod {
    /// `CREATE`, `UPDATE` or `CONNECT`.
    pub operation: String,
    /// The resource (`pods`), needed to judge a CONNECT.
    #[serde(default, skip_serializing_if = "is_empty_str")]
    pub resource: String,
    /// The subresource (`exec`, `ephemeralcontainers`), empty for the object itself.
    #[serde(default, skip_serializing_if = "is_empty_str")]
    pub sub_resource: String,
    /// API group of the reviewed object (`apps`; empty for core).
    #[serde(default, skip_serializing_if = "is_empty_str")]
    pub group: String,
    /// Kind of the reviewed object (`Deployment`).
    pub kind: String,
    /// The namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// The pod labels (a workload's template labels).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The object's controlling owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<ReviewedOwner>,
    /// The pod annotations the engine reads (PSA's AppArmor ones).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The pod spec as the engine reads it; absent for a CONNECT.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "write_optional_spec"
    )]
    pub spec: Option<PodSpec>,
    /// For an UPDATE of `pods/ephemeralcontainers`: the containers it added (the only ones
    /// judged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added_ephemeral_containers: Vec<String>,
    /// Image reference as written → the digest the decision used for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digests: BTreeMap<String, String>,
    /// Image reference or digest → attestor → whether a signature verified, as the
    /// signature stage answered (errors left out: they decided nothing).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub verdicts: BTreeMap<String, BTreeMap<String, bool>>,
}

fn write_optional_spec<S: Serializer>(spec: &Option<PodSpec>, serializer: S) -> Result<S::Ok, S::Error> {
    match spec {
        Some(spec) => PodSpecJson(spec).serialize(serializer),
        None => serializer.serialize_none(),
    }
}

/// The pod labels of a reviewed object, read from the AdmissionReview apart from the engine's
/// parse (which keeps no labels: no admission rule reads them).
#[derive(Deserialize)]
struct LabelsReview {
    #[serde(default)]
    request: Option<LabelsRequest>,
}

#[derive(Deserialize)]
struct LabelsRequest {
    #[serde(default)]
    object: Option<LabelsObject>,
}

#[derive(Deserialize)]
struct LabelsObject {
    #[serde(default)]
    metadata: Option<LabelsMeta>,
    #[serde(default)]
    spec: Option<LabelsSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LabelsSpec {
    #[serde(default)]
    template: Option<Box<LabelsObject>>,
    #[serde(default)]
    job_template: Option<Box<LabelsObject>>,
}

#[derive(Deserialize)]
struct LabelsMeta {
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

/// Why a reviewed pod's labels could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request.object labels: {0}")]
pub struct LabelsError(String);

/// The pod labels of the object an AdmissionReview (`review_json`) holds: `metadata.labels`
/// of a Pod, the pod template's of a workload (a CronJob's job template's). Empty when the
/// object has none.
pub fn review_pod_labels(review_json: &[u8], subject: &Subject) -> Result<BTreeMap<String, String>, LabelsError> {
    // The fast reader first (it reads what serde_json reads, or refuses); serde_json reads
    // what it refuses, or names the error.
    let fast = simdutf8::basic::from_utf8(review_json)
        .ok()
        .and_then(portcullis_json::from_str::<LabelsReview>);
    let review = match fast {
        Some(review) => review,
        None => serde_json::from_slice(review_json).map_err(|e| LabelsError(e.to_string()))?,
    };
    let object = review.request.and_then(|r| r.object);
    let meta = match crate::input::pod_spec_path(&subject.group, &subject.kind) {
        Some(crate::input::PodSpecPath::Spec) | None => object.and_then(|o| o.metadata),
        Some(crate::input::PodSpecPath::Template) => object
            .and_then(|o| o.spec)
            .and_then(|s| s.template)
            .and_then(|t| t.metadata),
        Some(crate::input::PodSpecPath::JobTemplate) => object
            .and_then(|o| o.spec)
            .and_then(|s| s.job_template)
            .and_then(|j| j.spec)
            .and_then(|s| s.template)
            .and_then(|t| t.metadata),
    };
    Ok(meta.and_then(|m| m.labels).unwrap_or_default())
}

/// The pod labels [`review_pod_labels`] reads, from a subject parsed with the labels
/// ([`crate::k8s::Fields::labels`]); `None` when the parse did not read them.
pub fn subject_pod_labels(subject: &Subject) -> Option<&BTreeMap<String, String>> {
    static NONE: BTreeMap<String, String> = BTreeMap::new();
    if !subject.fields.labels {
        return None;
    }
    let Some(object) = subject.object.as_ref() else {
        return Some(&NONE);
    };
    let meta = match crate::input::pod_spec_path(&subject.group, &subject.kind) {
        Some(crate::input::PodSpecPath::Spec) | None => Some(&object.metadata),
        Some(crate::input::PodSpecPath::Template) => object
            .spec
            .as_ref()
            .and_then(|s| s.template.as_deref())
            .map(|t| &t.metadata),
        Some(crate::input::PodSpecPath::JobTemplate) => object
            .spec
            .as_ref()
            .and_then(|s| s.job_template.as_deref())
            .and_then(|j| j.spec.template.as_deref())
            .map(|t| &t.metadata),
    };
    Some(meta.map_or(&NONE, |m| &m.labels))
}

/// The controlling owner of the reviewed object.
fn controller_of(subject: &Subject) -> Option<&OwnerReference> {
    subject
        .object
        .as_ref()?
        .metadata
        .owner_references
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Whether a subject is one replay can judge again: a CONNECT, or a CREATE/UPDATE of a kind
/// with a pod spec.
fn replayable(subject: &Subject) -> Option<Option<(&ObjectMeta, &PodSpec)>> {
    match subject.operation {
        Operation::Connect => Some(None),
        Operation::Delete => None,
        Operation::Create | Operation::Update => subject
            .object
            .as_ref()
            .and_then(|o| o.pod(&subject.group, &subject.kind))
            .map(Some),
    }
}

/// Feeds written bytes to a hasher (fingerprints without building the JSON).
struct HashWriter<'h, H: std::hash::Hasher>(&'h mut H);

impl<H: std::hash::Hasher> std::io::Write for HashWriter<'_, H> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ReviewedPod {
    /// The projection of a reviewed subject with its pod `labels` ([`review_pod_labels`]);
    /// `None` when there is nothing replay could judge again (a DELETE, a kind without a
    /// pod spec). The subject should be parsed with [`Fields::ALL`]: a projection of a
    /// subject parsed without the pod details has none, and a draft's Pod Security
    /// Standards rules would find nothing in it.
    pub fn from_subject(subject: &Subject, labels: BTreeMap<String, String>) -> Option<ReviewedPod> {
        let pod = replayable(subject)?;
        Some(ReviewedPod {
            operation: subject.operation.as_str().to_owned(),
            resource: subject.resource.to_string(),
            sub_resource: subject.sub_resource.to_string(),
            group: subject.group.to_string(),
            kind: subject.kind.to_string(),
            namespace: subject.namespace.to_string(),
            name: subject.name.to_string(),
            labels,
            owner: controller_of(subject).map(|o| ReviewedOwner {
                api_version: o.api_version.to_string(),
                kind: o.kind.to_string(),
                name: o.name.to_string(),
                uid: o.uid.clone(),
            }),
            annotations: pod.map(|(meta, _)| meta.annotations.clone()).unwrap_or_default(),
            spec: pod.map(|(_, spec)| spec.clone()),
            added_ephemeral_containers: subject.added_ephemeral_containers.clone(),
            digests: BTreeMap::new(),
            verdicts: BTreeMap::new(),
        })
    }

    /// A key for "this workload with this pod template": the namespace, the controlling
    /// owner (else the object's kind and name), the operation and subresource, and a
    /// fingerprint of the pod spec and annotations as the engine reads them. `None` when
    /// [`ReviewedPod::from_subject`] would give none. Computed without building the JSON;
    /// equal keys within one process mean an equal projection (up to hash collisions) of
    /// the same workload.
    pub fn seen_key(subject: &Subject) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        let pod = replayable(subject)?;
        let mut h = std::hash::DefaultHasher::new();
        subject.namespace.hash(&mut h);
        match controller_of(subject) {
            Some(o) => (o.kind.as_str(), o.name.as_str()).hash(&mut h),
            None => (subject.group.as_str(), subject.kind.as_str(), subject.name.as_str()).hash(&mut h),
        }
        (subject.operation.as_str(), subject.sub_resource.as_str()).hash(&mut h);
        if let Some((meta, spec)) = pod {
            meta.annotations.hash(&mut h);
            // Writing to a hasher cannot fail; an error would only weaken the key.
            let _ = serde_json::to_writer(HashWriter(&mut h), &PodSpecJson(spec));
        }
        Some(h.finish())
    }

    /// The JSON form carried by decision events.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Reads the JSON form back.
    pub fn from_json(json: &[u8]) -> Result<ReviewedPod, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// The operation, read back; `None` for a word admission never records.
    pub fn operation(&self) -> Option<Operation> {
        match self.operation.as_str() {
            "CREATE" => Some(Operation::Create),
            "UPDATE" => Some(Operation::Update),
            "CONNECT" => Some(Operation::Connect),
            _ => None,
        }
    }

    /// The workload the reviewed object belongs to: its controlling owner (a ReplicaSet
    /// named `<deployment>-<pod-template-hash>` stands for its Deployment), else the object
    /// itself.
    pub fn workload(&self) -> (String, String) {
        match &self.owner {
            Some(o) if o.kind == "ReplicaSet" => {
                let deployment = self
                    .labels
                    .get("pod-template-hash")
                    .and_then(|hash| o.name.strip_suffix(hash.as_str()))
                    .and_then(|n| n.strip_suffix('-'))
                    .filter(|n| !n.is_empty());
                match deployment {
                    Some(name) => ("Deployment".to_owned(), name.to_owned()),
                    None => (o.kind.clone(), o.name.clone()),
                }
            }
            Some(o) => (o.kind.clone(), o.name.clone()),
            None => (self.kind.clone(), self.name.clone()),
        }
    }

    /// The engine's subject for judging the projection again at admission (as the pod it
    /// describes), and the digests and verdicts it carries. `None` for an operation
    /// admission never records.
    #[allow(clippy::type_complexity)]
    pub fn into_subject(
        self,
    ) -> Option<(
        Subject,
        BTreeMap<String, String>,
        BTreeMap<String, BTreeMap<String, bool>>,
    )> {
        let operation = self.operation()?;
        let namespace = CompactString::from(self.namespace);
        let name = CompactString::from(self.name);
        let object = self.spec.map(|spec| KubeObject {
            api_version: CompactString::const_new("v1"),
            kind: CompactString::const_new("Pod"),
            metadata: ObjectMeta {
                name: name.clone(),
                generate_name: CompactString::default(),
                namespace: Some(namespace.clone()),
                uid: String::new(),
                labels: BTreeMap::new(),
                annotations: self.annotations,
                deletion_timestamp: None,
                owner_references: Vec::new(),
            },
            spec: Some(spec),
            status: None,
        });
        let subject = Subject {
            uid: String::new(),
            review_api_version: CompactString::default(),
            operation,
            group: CompactString::default(),
            kind: CompactString::const_new("Pod"),
            version: CompactString::const_new("v1"),
            user: CompactString::default(),
            resource: CompactString::from(self.resource),
            sub_resource: CompactString::from(self.sub_resource),
            namespace,
            name,
            object,
            pod_spec_unchanged: false,
            added_ephemeral_containers: self.added_ephemeral_containers,
            dry_run: false,
            fields: Fields::ALL,
        };
        Some((subject, self.digests, self.verdicts))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;
    use crate::input::parse_document;

    const POD: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u",
        "kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"apps",
        "object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"app":"web"},
        "annotations":{"note":"x","container.apparmor.security.beta.kubernetes.io/app":"runtime/default"}},
        "spec":{"hostPID":true,"securityContext":{"sysctls":[{"name":"kernel.shm_rmid_forced","value":"1"}]},
        "volumes":[{"name":"h","hostPath":{"path":"/"}}],
        "containers":[{"name":"app","image":"nginx:1","ports":[{"containerPort":80},{"hostPort":8080}],
        "securityContext":{"capabilities":{"add":["NET_ADMIN"]}}}]}}}}"#;

    #[test]
    fn a_projection_reads_back_to_the_same_engine_view() {
        let subject = parse_document(POD.as_bytes()).unwrap().remove(0);
        let labels = review_pod_labels(POD.as_bytes(), &subject).unwrap();
        let pod = ReviewedPod::from_subject(&subject, labels).unwrap();
        assert_eq!(pod.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(pod.annotations.len(), 1, "only the annotations the engine reads");
        let back = ReviewedPod::from_json(&pod.to_json().unwrap()).unwrap();
        // Ports without a host port are left out: they tell no rule anything.
        let mut expected = pod.clone();
        expected.spec.as_mut().unwrap().containers[0]
            .ports
            .retain(|p| p.host_port.is_some());
        assert_eq!(back, expected);
        let (again, _, _) = back.into_subject().unwrap();
        let (meta, _) = subject.object.as_ref().unwrap().pod("", "Pod").unwrap();
        let (meta2, spec2) = again.object.as_ref().unwrap().pod("", "Pod").unwrap();
        assert_eq!(Some(spec2), expected.spec.as_ref());
        assert_eq!(meta2.annotations, meta.annotations);
    }

    #[test]
    fn pod_labels_come_from_the_object_or_its_pod_template() {
        let review = |kind: &str, group: &str, object: &str| {
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u",
                "kind":{{"group":"{group}","version":"v1","kind":"{kind}"}},"operation":"CREATE","namespace":"apps",
                "object":{object}}}}}"#
            )
        };
        // The labels read by the parse itself are the ones a second pass reads.
        let labels = |json: &str| {
            let subject = parse_document(json.as_bytes()).unwrap().remove(0);
            let read = review_pod_labels(json.as_bytes(), &subject).unwrap();
            assert_eq!(subject_pod_labels(&subject), Some(&read), "{json}");
            read
        };
        let deployment = review(
            "Deployment",
            "apps",
            r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d","labels":{"owner":"x"}},
            "spec":{"template":{"metadata":{"labels":{"app":"web","tier":"front"}},
            "spec":{"containers":[{"name":"app","image":"nginx:1"}]}}}}"#,
        );
        let got = labels(&deployment);
        assert_eq!(got.get("app").map(String::as_str), Some("web"));
        assert_eq!(got.get("tier").map(String::as_str), Some("front"));
        assert!(
            !got.contains_key("owner"),
            "the workload's own labels are not the pods'"
        );
        let cron = review(
            "CronJob",
            "batch",
            r#"{"apiVersion":"batch/v1","kind":"CronJob","metadata":{"name":"c"},"spec":{"schedule":"* * * * *",
            "jobTemplate":{"spec":{"template":{"metadata":{"labels":{"job":"nightly"}},
            "spec":{"containers":[{"name":"app","image":"nginx:1"}]}}}}}}"#,
        );
        assert_eq!(labels(&cron).get("job").map(String::as_str), Some("nightly"));
        // A duplicate key: the last one wins, as serde_json reads it.
        let twice = POD.replace(r#""labels":{"app":"web"}"#, r#""labels":{"app":"a","app":"web"}"#);
        assert_eq!(labels(&twice).get("app").map(String::as_str), Some("web"));
    }

    #[test]
    fn labels_are_read_only_when_asked_and_never_fail_a_review() {
        let core = crate::input::parse_document_with(POD.as_bytes(), crate::k8s::Fields::CORE)
            .unwrap()
            .remove(0);
        assert_eq!(subject_pod_labels(&core), None, "a parse without labels says so");
        // Values that are not strings are left out; labels that are not a map are none.
        let odd = POD.replace(
            r#""labels":{"app":"web"}"#,
            r#""labels":{"app":"web","n":1,"x":null,"m":{"a":"b"},"l":["c"]}"#,
        );
        let subject = parse_document(odd.as_bytes()).unwrap().remove(0);
        let got = subject_pod_labels(&subject).unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got.get("app").map(String::as_str), Some("web"));
        for not_a_map in ["null", "\"web\"", "[\"a\"]", "7"] {
            let odd = POD.replace(r#"{"app":"web"}"#, not_a_map);
            let subject = parse_document(odd.as_bytes()).unwrap().remove(0);
            assert_eq!(subject_pod_labels(&subject).map(BTreeMap::len), Some(0), "{not_a_map}");
        }
    }

    #[test]
    fn the_seen_key_follows_the_template_not_the_pod_name() {
        let key = |json: &str| ReviewedPod::seen_key(&parse_document(json.as_bytes()).unwrap().remove(0));
        let owned = |name: &str, image: &str| {
            format!(
                r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"apps",
                "ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-1","uid":"r","controller":true}}]}},
                "spec":{{"containers":[{{"name":"app","image":"{image}"}}]}}}}"#
            )
        };
        let a = key(&owned("web-1-a", "nginx:1")).unwrap();
        assert_eq!(
            key(&owned("web-1-b", "nginx:1")),
            Some(a),
            "same workload, same template"
        );
        assert_ne!(key(&owned("web-1-a", "nginx:2")), Some(a), "a new template is new");
        let delete = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u",
            "kind":{"group":"","version":"v1","kind":"Pod"},"operation":"DELETE","namespace":"apps","name":"p"}}"#;
        assert_eq!(key(delete), None);
        let config_map = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}"#;
        assert_eq!(key(config_map), None);
    }
}
