//! The inventory's row: the lean projection of a running pod.
//!
//! Connectors send whole Kubernetes Pod objects (`PodBatch.pods_json`), often 5 to 10 KB each
//! with managed fields, env, resources and status conditions; the service keeps only what it
//! needs, so that a cluster of 100,000 pods fits in memory and in one table:
//! - who the pod is: namespace, name, uid, labels (runtime rulesets and telemetry select by
//!   them) and owner references (terminating a pod whose owner recreates it backs off per
//!   owner);
//! - each container's digest from `status.containerStatuses[].imageID` (continuous scanning
//!   resolves tag-only images from it, POLICY.md section 2, and a new scan result re-evaluates
//!   the pods running its digest);
//! - exactly what the engine's rules read of the pod: the engine's own lean view
//!   ([`portcullis_engine::k8s::PodSpec`], read with every field, and the AppArmor
//!   annotations). The projection holds that view itself, so turning it back into a
//!   [`Subject`] invents nothing, and it is stored as JSON in the Kubernetes shape that the
//!   engine's reader reads back. The writer of that JSON (the engine's [`PodSpecJson`])
//!   destructures every engine type field by field: a field the engine starts to read does
//!   not compile until it is written too. It leaves out what holds nothing for any rule (a
//!   port without a host port, a probe naming no host): most of a pod's ports and probes,
//!   about 300 bytes of a 4-container pod.
//!
//! A pod is read by the engine's parser (the same reading as evaluating the full pod); bad
//! input is an error naming the field, never a panic.

use std::collections::BTreeMap;

use compact_str::CompactString;
use portcullis_engine::evaluate::digest_of_image_id;
use portcullis_engine::image_ref::ImageRef;
use portcullis_engine::input::{InputError, KubeObject, Operation, Subject, parse_document};
use portcullis_engine::k8s::{ContainerStatus, Fields, ObjectMeta, OwnerReference, PodSpec, PodStatus};
use portcullis_engine::projection::PodSpecJson;
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// Why a pod could not be projected, or a stored projection not read.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The document is not JSON the engine reads (the field at fault is named).
    #[error(transparent)]
    Input(#[from] InputError),
    /// The document holds no object or several (a `List`): one pod is expected.
    #[error("(document): holds {0} objects; one Pod is expected")]
    NotOne(usize),
    /// The object is not a core `Pod`.
    #[error("kind: {0:?} is not a Pod")]
    NotAPod(String),
    /// A field every running pod has is missing or empty.
    #[error("metadata.{0}: missing; a running pod has one")]
    Missing(&'static str),
    /// `metadata.labels` is not a map of strings.
    #[error("metadata.labels: {0}")]
    Labels(String),
    /// A stored projection does not read back.
    #[error("stored projection: {0}")]
    Stored(#[from] serde_json::Error),
}

/// One owner reference of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    /// `apps/v1`.
    pub api_version: CompactString,
    /// `ReplicaSet`.
    pub kind: CompactString,
    /// The owner's name.
    pub name: CompactString,
    /// The owner's uid.
    pub uid: String,
    /// Whether this owner is the managing controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
}

/// The lean projection of a running pod: one inventory row.
///
/// It holds the engine's [`Subject`] of the pod, built once (from the pod or from its row), so
/// that judging it again costs no copy; the row is its JSON ([`PodProjection::to_row`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "Row")]
pub struct PodProjection {
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.ownerReferences`.
    pub owners: Vec<Owner>,
    /// Container name → the digest its `imageID` names, for containers whose image is given by
    /// tag alone (the others name their digest themselves).
    pub digests: BTreeMap<CompactString, String>,
    /// The pod as the engine judges it.
    subject: Subject,
}

/// The row's fields, read back.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    namespace: CompactString,
    name: CompactString,
    uid: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    owners: Vec<Owner>,
    #[serde(default)]
    digests: BTreeMap<CompactString, String>,
    /// The annotations the engine reads (PSA's AppArmor ones).
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    /// The pod spec as the engine reads it, in the Kubernetes shape (the engine's reader).
    spec: PodSpec,
}

/// The row's fields, written.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RowOut<'a> {
    namespace: &'a str,
    name: &'a str,
    uid: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "<[Owner]>::is_empty")]
    owners: &'a [Owner],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    digests: &'a BTreeMap<CompactString, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
    #[serde(serialize_with = "write_spec")]
    spec: &'a PodSpec,
}

impl Serialize for PodProjection {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RowOut {
            namespace: self.namespace(),
            name: self.name(),
            uid: self.uid(),
            labels: &self.labels,
            owners: &self.owners,
            digests: &self.digests,
            annotations: self.annotations(),
            spec: self.spec(),
        }
        .serialize(serializer)
    }
}

static EMPTY_MAP: BTreeMap<String, String> = BTreeMap::new();
static EMPTY_SPEC: std::sync::LazyLock<PodSpec> = std::sync::LazyLock::new(PodSpec::default);

impl From<Row> for PodProjection {
    fn from(row: Row) -> PodProjection {
        PodProjection::new(
            row.namespace,
            ObjectMeta {
                name: row.name,
                generate_name: CompactString::default(),
                namespace: None,
                uid: row.uid,
                labels: BTreeMap::new(),
                annotations: row.annotations,
                deletion_timestamp: None,
                owner_references: Vec::new(),
            },
            row.labels,
            row.owners,
            row.digests,
            row.spec,
        )
    }
}

/// `metadata.labels` alone (the engine's view has no labels: no rule reads them).
#[derive(Deserialize)]
struct LabelsDoc {
    #[serde(default)]
    metadata: Option<LabelsMeta>,
}

#[derive(Deserialize)]
struct LabelsMeta {
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

impl PodProjection {
    /// Projects one Kubernetes Pod object (JSON).
    pub fn from_pod_json(json: &[u8]) -> Result<PodProjection, ProjectionError> {
        let mut subjects = parse_document(json)?;
        if subjects.len() != 1 {
            return Err(ProjectionError::NotOne(subjects.len()));
        }
        let Some(subject) = subjects.pop() else {
            return Err(ProjectionError::NotOne(0));
        };
        if !subject.group.is_empty() || subject.kind != "Pod" {
            let kind = if subject.group.is_empty() {
                subject.kind.to_string()
            } else {
                format!("{}/{}", subject.group, subject.kind)
            };
            return Err(ProjectionError::NotAPod(kind));
        }
        let Some(object) = subject.object else {
            return Err(ProjectionError::NotAPod(subject.kind.to_string()));
        };
        let KubeObject {
            metadata, spec, status, ..
        } = object;
        // `generateName` names nothing once the pod has its name; `deletionTimestamp` is an
        // admission concern (continuous scanning judges what runs until it is gone).
        let ObjectMeta {
            name,
            generate_name: _,
            namespace: _,
            uid,
            labels: _,
            annotations,
            deletion_timestamp: _,
            owner_references,
        } = metadata;
        if name.is_empty() {
            return Err(ProjectionError::Missing("name"));
        }
        if uid.is_empty() {
            return Err(ProjectionError::Missing("uid"));
        }
        // The engine's parse checked the bytes as UTF-8 JSON already.
        let text = std::str::from_utf8(json).map_err(|e| ProjectionError::Labels(e.to_string()))?;
        let labels = match portcullis_json::from_str::<LabelsDoc>(text) {
            Some(doc) => doc,
            None => serde_json::from_str::<LabelsDoc>(text).map_err(|e| ProjectionError::Labels(e.to_string()))?,
        }
        .metadata
        .and_then(|m| m.labels)
        .unwrap_or_default();
        let spec = spec.unwrap_or_default();
        // The engine resolves only tag-only images from the status: a pinned image's own
        // digest is in the spec already.
        let tag_only = |name: &str| {
            spec.all_containers()
                .any(|(_, c)| c.name == name && ImageRef::parse(&c.image).is_ok_and(|r| r.digest().is_none()))
        };
        let digests = status
            .into_iter()
            .flat_map(|s| {
                [
                    s.container_statuses,
                    s.init_container_statuses,
                    s.ephemeral_container_statuses,
                ]
            })
            .flatten()
            .filter(|s| tag_only(&s.name))
            .filter_map(|s| {
                digest_of_image_id(&s.image_id).map(|d| (CompactString::from(s.name.as_str()), d.to_owned()))
            })
            .fold(BTreeMap::new(), |mut m, (name, digest)| {
                // The engine takes a container's first status; so does the projection.
                m.entry(name).or_insert(digest);
                m
            });
        let owners = owner_references
            .into_iter()
            .map(|o| {
                let OwnerReference {
                    api_version,
                    uid,
                    kind,
                    name,
                    controller,
                } = o;
                Owner {
                    api_version,
                    kind,
                    name,
                    uid,
                    controller,
                }
            })
            .collect();
        let meta = ObjectMeta {
            name,
            generate_name: CompactString::default(),
            namespace: None,
            uid,
            labels: BTreeMap::new(),
            annotations,
            deletion_timestamp: None,
            owner_references: Vec::new(),
        };
        Ok(PodProjection::new(
            subject.namespace,
            meta,
            labels,
            owners,
            digests,
            spec,
        ))
    }

    /// The projection of these parts: the subject built once, as parsing the full pod gives
    /// it for everything a rule reads (the status only as the digests of tag-only images).
    fn new(
        namespace: CompactString,
        mut metadata: ObjectMeta,
        labels: BTreeMap<String, String>,
        owners: Vec<Owner>,
        digests: BTreeMap<CompactString, String>,
        spec: PodSpec,
    ) -> PodProjection {
        let container_statuses = spec
            .all_containers()
            .filter_map(|(_, c)| {
                digests.get(&c.name).map(|d| ContainerStatus {
                    name: c.name.to_string(),
                    image: String::new(),
                    image_id: format!("@{d}"),
                })
            })
            .collect();
        metadata.namespace = Some(namespace.clone());
        metadata.owner_references = owners
            .iter()
            .map(|o| OwnerReference {
                api_version: o.api_version.clone(),
                uid: o.uid.clone(),
                kind: o.kind.clone(),
                name: o.name.clone(),
                controller: o.controller,
            })
            .collect();
        let subject = Subject {
            uid: String::new(),
            review_api_version: CompactString::default(),
            operation: Operation::Create,
            group: CompactString::default(),
            kind: CompactString::const_new("Pod"),
            version: CompactString::const_new("v1"),
            user: CompactString::default(),
            resource: CompactString::default(),
            sub_resource: CompactString::default(),
            namespace,
            name: metadata.name.clone(),
            object: Some(KubeObject {
                api_version: CompactString::const_new("v1"),
                kind: CompactString::const_new("Pod"),
                metadata,
                spec: Some(spec),
                status: Some(PodStatus {
                    container_statuses,
                    init_container_statuses: Vec::new(),
                    ephemeral_container_statuses: Vec::new(),
                }),
            }),
            pod_spec_unchanged: false,
            added_ephemeral_containers: Vec::new(),
            dry_run: false,
            fields: Fields::ALL,
        };
        PodProjection {
            labels,
            owners,
            digests,
            subject,
        }
    }

    fn metadata(&self) -> Option<&ObjectMeta> {
        self.subject.object.as_ref().map(|o| &o.metadata)
    }

    /// `metadata.namespace` (`default` when absent, as the engine reads it).
    pub fn namespace(&self) -> &str {
        &self.subject.namespace
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.subject.name
    }

    /// `metadata.uid`.
    pub fn uid(&self) -> &str {
        self.metadata().map_or("", |m| m.uid.as_str())
    }

    /// The pod spec as the engine reads it.
    pub fn spec(&self) -> &PodSpec {
        self.subject
            .object
            .as_ref()
            .and_then(|o| o.spec.as_ref())
            .unwrap_or(&EMPTY_SPEC)
    }

    /// The annotations the engine reads (PSA's AppArmor ones).
    pub fn annotations(&self) -> &BTreeMap<String, String> {
        self.metadata().map_or(&EMPTY_MAP, |m| &m.annotations)
    }

    /// The engine's subject for [`portcullis_engine::evaluate::CompiledPolicy::evaluate_running`]:
    /// what parsing the full pod gives, for everything a rule reads.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// The stored form (JSON).
    pub fn to_row(&self) -> Result<Vec<u8>, ProjectionError> {
        Ok(serde_json::to_vec(self)?)
    }

    /// Reads a stored row back.
    pub fn from_row(row: &[u8]) -> Result<PodProjection, ProjectionError> {
        Ok(serde_json::from_slice(row)?)
    }

    /// The managing controller among the owners (the one that recreates the pod), if any.
    pub fn controller(&self) -> Option<&Owner> {
        self.owners.iter().find(|o| o.controller == Some(true))
    }

    /// Whether the pod shares its node's network namespace (a NetworkPolicy cannot isolate it).
    pub fn host_network(&self) -> bool {
        self.spec().host_network == Some(true)
    }

    /// The digests the pod's containers run: those their images are pinned to, and those
    /// tag-only images resolved to (a digest may come more than once).
    pub fn digests_run(&self) -> impl Iterator<Item = &str> {
        self.digests
            .values()
            .map(String::as_str)
            .chain(self.spec().all_containers().filter_map(|(_, c)| {
                // The text after `@`, when the engine reads it as the image's digest (as
                // `runs_digest` does).
                let (_, d) = c.image.rsplit_once('@')?;
                ImageRef::parse(&c.image)
                    .is_ok_and(|r| r.digest() == Some(d))
                    .then_some(d)
            }))
    }

    /// Whether any container runs `digest` (an image pinned to it, or resolved to it).
    pub fn runs_digest(&self, digest: &str) -> bool {
        self.digests.values().any(|d| d == digest)
            || self
                .spec()
                .all_containers()
                .any(|(_, c)| ImageRef::parse(&c.image).is_ok_and(|r| r.digest() == Some(digest)))
    }
}

/// Writes the spec in the Kubernetes shape the engine's reader reads back (the engine's
/// writer, shared with admission's replay projection).
fn write_spec<S: Serializer>(spec: &&PodSpec, serializer: S) -> Result<S::Ok, S::Error> {
    PodSpecJson(spec).serialize(serializer)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    fn project(json: &str) -> Result<PodProjection, ProjectionError> {
        PodProjection::from_pod_json(json.as_bytes())
    }

    #[test]
    fn bad_input_is_an_error_naming_what_is_wrong() {
        let not_json = project("{\"kind\": \"Pod\",").unwrap_err();
        assert!(matches!(not_json, ProjectionError::Input(_)), "{not_json}");
        let deployment =
            project(r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d","uid":"u"}}"#).unwrap_err();
        assert_eq!(deployment.to_string(), "kind: \"apps/Deployment\" is not a Pod");
        let no_uid = project(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}"#).unwrap_err();
        assert_eq!(no_uid.to_string(), "metadata.uid: missing; a running pod has one");
        let list = project(r#"{"apiVersion":"v1","kind":"List","items":[]}"#).unwrap_err();
        assert!(matches!(list, ProjectionError::NotOne(0)), "{list}");
        let labels = project(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","uid":"u","labels":{"a":1}}}"#)
            .unwrap_err();
        assert!(matches!(labels, ProjectionError::Labels(_)), "{labels}");
        let spec = project(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","uid":"u"},"spec":{"hostNetwork":"yes"}}"#,
        )
        .unwrap_err();
        assert!(spec.to_string().contains("spec.hostNetwork"), "{spec}");
        assert!(matches!(
            PodProjection::from_row(b"{\"namespace\":1}").unwrap_err(),
            ProjectionError::Stored(_)
        ));
    }

    #[test]
    fn identity_labels_owners_and_digests_are_kept() {
        let p = project(
            r#"{"apiVersion":"v1","kind":"Pod",
            "metadata":{"name":"web-1","namespace":"shop","uid":"u-1","labels":{"app":"web"},
              "annotations":{"note":"dropped","container.apparmor.security.beta.kubernetes.io/app":"runtime/default"},
              "ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-5d","uid":"rs-1","controller":true}]},
            "spec":{"containers":[{"name":"app","image":"nginx:1.27"},{"name":"side","image":"busybox"}]},
            "status":{"containerStatuses":[
              {"name":"app","imageID":"docker.io/library/nginx@sha256:aaa"},
              {"name":"side","imageID":"sha256:local"}]}}"#,
        )
        .unwrap();
        assert_eq!((p.namespace(), p.name(), p.uid()), ("shop", "web-1", "u-1"));
        assert_eq!(p.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(p.controller().map(|o| o.uid.as_str()), Some("rs-1"));
        assert_eq!(p.digests.len(), 1, "an imageID without a registry digest names none");
        assert_eq!(p.digests.get("app").map(String::as_str), Some("sha256:aaa"));
        assert!(p.runs_digest("sha256:aaa"));
        assert!(!p.runs_digest("sha256:local"));
        assert_eq!(p.annotations().len(), 1, "only the annotations the engine reads");
        let back = PodProjection::from_row(&p.to_row().unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn a_pod_without_namespace_is_in_default() {
        let p = project(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","uid":"u"}}"#).unwrap();
        assert_eq!(p.namespace(), "default");
        assert!(!p.host_network());
    }
}
