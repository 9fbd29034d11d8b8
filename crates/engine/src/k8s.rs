//! Lean typed views of the Kubernetes objects the engine reads.
//!
//! Only the fields some rule or Pod Security Standards check looks at are kept; everything
//! else is skipped while parsing, which is most of the speed of evaluation. `null` is accepted
//! wherever Kubernetes may emit it and reads as "unset".
//!
//! Short strings (names, namespaces, kinds, capabilities) are [`CompactString`]s: up to 24
//! bytes are kept inline, so most cost no allocation (callgrind: 3% fewer instructions per
//! parse of the benchmark review than with `String`). Uids and images, longer, stay `String`.

use std::collections::BTreeMap;

use compact_str::CompactString;
use serde::Deserialize;

pub(crate) use crate::serde_util::nullable;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

/// `metadata` of an object or of a pod template.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// `metadata.name`.
    #[serde(default, deserialize_with = "nullable")]
    pub name: CompactString,
    /// `metadata.generateName`, used for naming when `name` is empty.
    #[serde(default, deserialize_with = "nullable")]
    pub generate_name: CompactString,
    /// `metadata.namespace`.
    #[serde(default)]
    pub namespace: Option<CompactString>,
    /// `metadata.uid`.
    #[serde(default, deserialize_with = "nullable")]
    pub uid: String,
    /// `metadata.labels`, read only when the parse reads them ([`Fields::labels`]: for the
    /// replay projection; no rule reads labels). Lenient: a value that is not a string is
    /// left out, and labels that are not a map read as none, so they never fail a review.
    #[serde(default, deserialize_with = "labels")]
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`, only those the engine reads: PSA's deprecated per-container
    /// AppArmor annotations ([`APPARMOR_ANNOTATION_PREFIX`]). Others (often kilobytes of
    /// `last-applied-configuration`) are skipped while parsing, never copied.
    #[serde(default, deserialize_with = "apparmor_annotations")]
    pub annotations: BTreeMap<String, String>,
    /// `metadata.deletionTimestamp`: an object being deleted is not judged on UPDATE.
    #[serde(default)]
    pub deletion_timestamp: Option<String>,
    /// `metadata.ownerReferences`.
    #[serde(default, deserialize_with = "nullable")]
    pub owner_references: Vec<OwnerReference>,
}

/// Which parts of a pod a parse reads.
///
/// Every rule reads the core of a pod (kinds, names, images, host namespaces, security
/// contexts); the *pod details* (volumes, container ports, probes, lifecycle handlers,
/// sysctls and AppArmor annotations) are read only by Pod Security Standards checks, so a
/// policy without such a rule lets the parse skip them (skipped JSON is still checked as
/// JSON, as every field the engine does not read is).
///
/// The labels (`metadata.labels`) are read by no rule, only by the replay projection of an
/// `xdrEnabled` policy's reviews, which parses with [`Fields::ALL`] once instead of reading
/// the labels in a second pass over the review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fields {
    /// Whether the pod details are read.
    pub pod_details: bool,
    /// Whether `metadata.labels` (the object's and its pod template's) are read.
    pub labels: bool,
}

impl Fields {
    /// Everything the typed view holds.
    pub const ALL: Fields = Fields {
        pod_details: true,
        labels: true,
    };
    /// The core only: what every rule but the Pod Security Standards checks reads.
    pub const CORE: Fields = Fields {
        pod_details: false,
        labels: false,
    };

    /// Whether these fields hold everything `needed` asks for.
    pub fn covers(self, needed: Fields) -> bool {
        (self.pod_details || !needed.pod_details) && (self.labels || !needed.labels)
    }
}

thread_local! {
    /// The fields the parse running on this thread reads. serde's derived impls take no
    /// context, so [`FieldsScope`] sets this around a parse (which never leaves its thread).
    static READING: std::cell::Cell<Fields> = const { std::cell::Cell::new(Fields::ALL) };
}

/// Sets the fields parses on this thread read until dropped (then restores the previous).
pub(crate) struct FieldsScope(Fields);

impl FieldsScope {
    /// Reads `fields` until the scope is dropped.
    pub(crate) fn new(fields: Fields) -> FieldsScope {
        FieldsScope(READING.with(|r| r.replace(fields)))
    }
}

impl Drop for FieldsScope {
    fn drop(&mut self) {
        READING.with(|r| r.set(self.0));
    }
}

/// A pod detail (see [`Fields`]): read with `read` when the parse reads the pod details,
/// else skipped (still checked as JSON) and left at its default.
fn if_reading_pod_details<'de, D, T>(
    deserializer: D,
    read: impl FnOnce(D) -> Result<T, D::Error>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default,
{
    if READING.with(|r| r.get().pod_details) {
        read(deserializer)
    } else {
        IgnoredAny::deserialize(deserializer)?;
        Ok(T::default())
    }
}

/// A pod detail read like [`nullable`] (see [`if_reading_pod_details`]).
fn pod_detail<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    if_reading_pod_details(deserializer, nullable)
}

/// Prefix of the deprecated per-container AppArmor annotations, the only ones PSA reads.
pub const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// A map key, borrowed from the input when it has no escapes.
pub(crate) struct Key<'de>(pub(crate) std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Reads `metadata.annotations`, keeping only the AppArmor ones (see [`ObjectMeta::annotations`]),
/// a pod detail.
fn apparmor_annotations<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error> {
    if_reading_pod_details(deserializer, read_apparmor_annotations)
}

fn read_apparmor_annotations<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct AnnotationsVisitor;
    impl<'de> Visitor<'de> for AnnotationsVisitor {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map of annotations")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut kept = BTreeMap::new();
            while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                if key.starts_with(APPARMOR_ANNOTATION_PREFIX) {
                    let value = map.next_value::<Option<String>>()?.unwrap_or_default();
                    kept.insert(key.into_owned(), value);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(kept)
        }
    }
    deserializer.deserialize_any(AnnotationsVisitor)
}

/// Reads `metadata.labels` when the parse reads them (see [`ObjectMeta::labels`]), else skips
/// them (still checked as JSON).
fn labels<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error> {
    if READING.with(|r| r.get().labels) {
        read_labels(deserializer)
    } else {
        IgnoredAny::deserialize(deserializer)?;
        Ok(BTreeMap::new())
    }
}

fn read_labels<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error> {
    /// Reads any JSON value: a string as itself, a map as its string entries, anything
    /// else as nothing (skipped, still checked as JSON).
    enum Lenient {
        Str(String),
        Map(BTreeMap<String, String>),
        Other,
    }
    impl<'de> Deserialize<'de> for Lenient {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(LenientVisitor)
        }
    }
    struct LenientVisitor;
    impl<'de> Visitor<'de> for LenientVisitor {
        type Value = Lenient;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("labels")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Lenient, E> {
            Ok(Lenient::Str(v.to_owned()))
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Lenient, E> {
            Ok(Lenient::Str(v))
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Lenient, E> {
            Ok(Lenient::Other)
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Lenient, E> {
            Ok(Lenient::Other)
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Lenient, E> {
            Ok(Lenient::Other)
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Lenient, E> {
            Ok(Lenient::Other)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Lenient, E> {
            Ok(Lenient::Other)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Lenient, E> {
            Ok(Lenient::Other)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Lenient, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Lenient::Other)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Lenient, A::Error> {
            let mut kept = BTreeMap::new();
            while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                // A value that is not a string is left out (a label's value is a string).
                if let IgnoredOrStr(Some(value)) = map.next_value::<IgnoredOrStr>()? {
                    kept.insert(key.into_owned(), value);
                }
            }
            Ok(Lenient::Map(kept))
        }
    }
    /// A label's value: a string, else nothing.
    struct IgnoredOrStr(Option<String>);
    impl<'de> Deserialize<'de> for IgnoredOrStr {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            Ok(match deserializer.deserialize_any(LenientVisitor)? {
                Lenient::Str(s) => IgnoredOrStr(Some(s)),
                // A nested map is read and dropped: labels are flat.
                Lenient::Map(_) | Lenient::Other => IgnoredOrStr(None),
            })
        }
    }
    Ok(match Lenient::deserialize(deserializer)? {
        Lenient::Map(labels) => labels,
        Lenient::Str(_) | Lenient::Other => BTreeMap::new(),
    })
}

/// One `metadata.ownerReferences` entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    /// Owner apiVersion (`apps/v1`).
    #[serde(default, deserialize_with = "nullable")]
    pub api_version: CompactString,
    /// Owner uid.
    #[serde(default, deserialize_with = "nullable")]
    pub uid: String,
    /// Owner kind.
    #[serde(default, deserialize_with = "nullable")]
    pub kind: CompactString,
    /// Owner name.
    #[serde(default, deserialize_with = "nullable")]
    pub name: CompactString,
    /// Whether this owner is the managing controller.
    #[serde(default)]
    pub controller: Option<bool>,
}

/// A pod spec, and the wrappers that nest one.
///
/// Workload kinds keep their pod spec under `spec.template.spec` (and CronJob under
/// `spec.jobTemplate.spec.template.spec`); this one struct reads every level, so a whole
/// object parses in one pass whatever its kind. [`crate::workload`] picks the right level.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// `hostNetwork`.
    #[serde(default)]
    pub host_network: Option<bool>,
    /// `hostPID`.
    #[serde(default, rename = "hostPID")]
    pub host_pid: Option<bool>,
    /// `hostIPC`.
    #[serde(default, rename = "hostIPC")]
    pub host_ipc: Option<bool>,
    /// `hostUsers`: `false` runs the pod in a user namespace.
    #[serde(default)]
    pub host_users: Option<bool>,
    /// Pod-level security context (boxed, like a container's: the pod spec is moved while
    /// parsing and this is most of its size).
    #[serde(default)]
    pub security_context: Option<Box<PodSecurityContext>>,
    /// `containers`.
    #[serde(default, deserialize_with = "nullable")]
    pub containers: Vec<Container>,
    /// `initContainers`.
    #[serde(default, deserialize_with = "nullable")]
    pub init_containers: Vec<Container>,
    /// `ephemeralContainers`.
    #[serde(default, deserialize_with = "nullable")]
    pub ephemeral_containers: Vec<Container>,
    /// `volumes`.
    #[serde(default, deserialize_with = "pod_detail")]
    pub volumes: Vec<Volume>,
    /// `os`: `os.name: windows` marks a Windows pod.
    #[serde(default)]
    pub os: Option<PodOs>,
    /// Workload wrapper: `spec.template` of Deployments, Jobs and the like.
    #[serde(default)]
    pub template: Option<Box<PodTemplateSpec>>,
    /// Workload wrapper: `spec.jobTemplate` of a CronJob.
    #[serde(default)]
    pub job_template: Option<Box<JobTemplateSpec>>,
}

/// `spec.template` of a workload.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateSpec {
    /// Template metadata (labels, annotations).
    #[serde(default, deserialize_with = "nullable")]
    pub metadata: ObjectMeta,
    /// The pod spec.
    #[serde(default, deserialize_with = "nullable")]
    pub spec: PodSpec,
}

/// `spec.jobTemplate` of a CronJob; its `spec` is a Job spec, read with [`PodSpec`].
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobTemplateSpec {
    /// The Job spec (its `template` holds the pod).
    #[serde(default, deserialize_with = "nullable")]
    pub spec: PodSpec,
}

/// `spec.os`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct PodOs {
    /// `linux` or `windows`.
    #[serde(default, deserialize_with = "nullable")]
    pub name: CompactString,
}

/// Pod-level `securityContext`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityContext {
    /// `runAsNonRoot`.
    #[serde(default)]
    pub run_as_non_root: Option<bool>,
    /// `runAsUser`.
    #[serde(default)]
    pub run_as_user: Option<i64>,
    /// `seLinuxOptions`.
    #[serde(default)]
    pub se_linux_options: Option<SeLinuxOptions>,
    /// `seccompProfile`.
    #[serde(default)]
    pub seccomp_profile: Option<Profile>,
    /// `appArmorProfile`.
    #[serde(default)]
    pub app_armor_profile: Option<Profile>,
    /// `sysctls`.
    #[serde(default, deserialize_with = "pod_detail")]
    pub sysctls: Vec<Sysctl>,
    /// `windowsOptions`.
    #[serde(default)]
    pub windows_options: Option<WindowsOptions>,
}

/// Container-level `securityContext`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    /// `privileged`.
    #[serde(default)]
    pub privileged: Option<bool>,
    /// `allowPrivilegeEscalation`.
    #[serde(default)]
    pub allow_privilege_escalation: Option<bool>,
    /// `capabilities`.
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
    /// `runAsNonRoot`.
    #[serde(default)]
    pub run_as_non_root: Option<bool>,
    /// `runAsUser`.
    #[serde(default)]
    pub run_as_user: Option<i64>,
    /// `readOnlyRootFilesystem`.
    #[serde(default)]
    pub read_only_root_filesystem: Option<bool>,
    /// `procMount`.
    #[serde(default)]
    pub proc_mount: Option<CompactString>,
    /// `seLinuxOptions`.
    #[serde(default)]
    pub se_linux_options: Option<SeLinuxOptions>,
    /// `seccompProfile`.
    #[serde(default)]
    pub seccomp_profile: Option<Profile>,
    /// `appArmorProfile`.
    #[serde(default)]
    pub app_armor_profile: Option<Profile>,
    /// `windowsOptions`.
    #[serde(default)]
    pub windows_options: Option<WindowsOptions>,
}

/// `capabilities`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Capabilities {
    /// `add`.
    #[serde(default, deserialize_with = "nullable")]
    pub add: Vec<CompactString>,
    /// `drop`.
    #[serde(default, deserialize_with = "nullable")]
    pub drop: Vec<CompactString>,
}

/// `seLinuxOptions`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct SeLinuxOptions {
    /// `type`.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    /// `user`.
    #[serde(default)]
    pub user: Option<String>,
    /// `role`.
    #[serde(default)]
    pub role: Option<String>,
    /// `level`.
    #[serde(default)]
    pub level: Option<String>,
}

/// `seccompProfile` or `appArmorProfile`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// `type`: `RuntimeDefault`, `Localhost`, `Unconfined`.
    #[serde(default, rename = "type", deserialize_with = "nullable")]
    pub type_: CompactString,
    /// `localhostProfile`.
    #[serde(default)]
    pub localhost_profile: Option<String>,
}

/// One pod `sysctls` entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Sysctl {
    /// Sysctl name.
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    /// Sysctl value.
    #[serde(default, deserialize_with = "nullable")]
    pub value: String,
}

/// `windowsOptions`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WindowsOptions {
    /// `hostProcess`.
    #[serde(default)]
    pub host_process: Option<bool>,
}

/// A container of any of the three lists.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Container name.
    #[serde(default, deserialize_with = "nullable")]
    pub name: CompactString,
    /// Image reference as written.
    #[serde(default, deserialize_with = "nullable")]
    pub image: String,
    /// Container security context (boxed: most of a container's size, moved while parsing).
    #[serde(default)]
    pub security_context: Option<Box<SecurityContext>>,
    /// `ports` (PSA reads `hostPort`).
    #[serde(default, deserialize_with = "pod_detail")]
    pub ports: Vec<ContainerPort>,
    /// `livenessProbe`. The probes and lifecycle handlers are boxed: unboxed they were 240 of
    /// a container's 320 bytes, moved while parsing even when skipped (callgrind: 2.4 to 4.1%
    /// fewer instructions per parse and evaluation with them boxed).
    #[serde(default, deserialize_with = "pod_detail")]
    pub liveness_probe: Option<Box<Handler>>,
    /// `readinessProbe`.
    #[serde(default, deserialize_with = "pod_detail")]
    pub readiness_probe: Option<Box<Handler>>,
    /// `startupProbe`.
    #[serde(default, deserialize_with = "pod_detail")]
    pub startup_probe: Option<Box<Handler>>,
    /// `lifecycle`.
    #[serde(default, deserialize_with = "pod_detail")]
    pub lifecycle: Option<Box<Lifecycle>>,
}

/// One `ports` entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// `hostPort`.
    #[serde(default)]
    pub host_port: Option<i64>,
}

/// A probe or lifecycle handler: only the fields that can name a host.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Handler {
    /// `httpGet`.
    #[serde(default)]
    pub http_get: Option<HostField>,
    /// `tcpSocket`.
    #[serde(default)]
    pub tcp_socket: Option<HostField>,
}

/// `httpGet` / `tcpSocket`: the `host` field.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct HostField {
    /// `host`.
    #[serde(default)]
    pub host: Option<String>,
}

/// `lifecycle`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    /// `postStart`.
    #[serde(default)]
    pub post_start: Option<Handler>,
    /// `preStop`.
    #[serde(default)]
    pub pre_stop: Option<Handler>,
}

/// A pod volume: its name, and which volume sources it sets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Volume {
    /// Volume name.
    pub name: String,
    /// Keys of the volume sources set to a non-null value (`configMap`, `hostPath`, ...).
    pub sources: Vec<String>,
}

impl Volume {
    /// Whether this volume sets the given source key (`hostPath`, `secret`, ...).
    pub fn has_source(&self, key: &str) -> bool {
        self.sources.iter().any(|s| s == key)
    }
}

impl<'de> Deserialize<'de> for Volume {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct VolumeVisitor;
        impl<'de> Visitor<'de> for VolumeVisitor {
            type Value = Volume;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a volume object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Volume, A::Error> {
                let mut volume = Volume::default();
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    if key == "name" {
                        volume.name = map.next_value::<Option<String>>()?.unwrap_or_default();
                    } else {
                        // A source is set when its value is not null, as Go's decoding sees it.
                        let value = map.next_value::<Option<IgnoredAny>>()?;
                        if value.is_some() {
                            volume.sources.push(key.into_owned());
                        }
                    }
                }
                Ok(volume)
            }
        }
        deserializer.deserialize_map(VolumeVisitor)
    }
}

/// `status` of a running pod (continuous scanning reads the image ids).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// `containerStatuses`.
    #[serde(default, deserialize_with = "nullable")]
    pub container_statuses: Vec<ContainerStatus>,
    /// `initContainerStatuses`.
    #[serde(default, deserialize_with = "nullable")]
    pub init_container_statuses: Vec<ContainerStatus>,
    /// `ephemeralContainerStatuses`.
    #[serde(default, deserialize_with = "nullable")]
    pub ephemeral_container_statuses: Vec<ContainerStatus>,
}

/// One container status.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    /// Container name.
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    /// The image as the runtime reports it.
    #[serde(default, deserialize_with = "nullable")]
    pub image: String,
    /// `imageID`: usually `repo@sha256:...`, the resolved digest.
    #[serde(default, rename = "imageID", deserialize_with = "nullable")]
    pub image_id: String,
}

impl PodSpec {
    /// Every container of the pod, with the list it belongs to, in PSA's visiting order
    /// (init containers, containers, ephemeral containers).
    pub fn all_containers(&self) -> impl Iterator<Item = (ContainerList, &Container)> {
        self.init_containers
            .iter()
            .map(|c| (ContainerList::InitContainers, c))
            .chain(self.containers.iter().map(|c| (ContainerList::Containers, c)))
            .chain(
                self.ephemeral_containers
                    .iter()
                    .map(|c| (ContainerList::EphemeralContainers, c)),
            )
    }

    /// Whether `spec.os.name` is `windows`.
    pub fn is_windows(&self) -> bool {
        self.os.as_ref().is_some_and(|os| os.name == "windows")
    }
}

/// Which container list a container comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerList {
    /// `containers`.
    Containers,
    /// `initContainers`.
    InitContainers,
    /// `ephemeralContainers`.
    EphemeralContainers,
}
