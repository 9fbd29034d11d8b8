//! What the engine judges, parsed from a document: a Kubernetes object, a `List`, an
//! AdmissionReview (v1 or v1beta1) or a bare AdmissionRequest (POLICY.md section 2).
//!
//! Parsing is most of the cost of a decision, so a document is read once into lean typed
//! structs ([`crate::k8s`]) by the engine's JSON reader ([`portcullis_json`]; serde_json reads
//! what it refuses, and is the reference the two are tested against); only an UPDATE is read
//! a second time, untyped, to compare the whole pod specs of `object` and `oldObject`.

use compact_str::CompactString;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::k8s::{Fields, FieldsScope, Key, ObjectMeta, PodSpec, PodStatus, nullable};

/// An admission operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// CREATE (also used for bare objects).
    Create,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
    /// CONNECT (exec, attach, port-forward, ...).
    Connect,
}

impl Operation {
    /// The name as Kubernetes writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// Why a document cannot be judged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct InputError {
    /// The field at fault (`request.operation`), or `(document)`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl InputError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> InputError {
        InputError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A Kubernetes object as the engine reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KubeObject {
    /// `apiVersion`.
    pub api_version: CompactString,
    /// `kind`.
    pub kind: CompactString,
    /// `metadata`.
    pub metadata: ObjectMeta,
    /// `spec`, read with every pod-spec level (see [`PodSpec`]).
    pub spec: Option<PodSpec>,
    /// `status` (pods).
    pub status: Option<PodStatus>,
}

impl KubeObject {
    /// The pod spec and the pod metadata (template metadata for workloads) of an evaluated
    /// kind; `None` for kinds that are not evaluated.
    pub fn pod(&self, group: &str, kind: &str) -> Option<(&ObjectMeta, &PodSpec)> {
        let spec = self.spec.as_ref();
        match pod_spec_path(group, kind)? {
            PodSpecPath::Spec => Some((&self.metadata, spec?)),
            PodSpecPath::Template => {
                let t = spec?.template.as_deref()?;
                Some((&t.metadata, &t.spec))
            }
            PodSpecPath::JobTemplate => {
                let t = spec?.job_template.as_deref()?.spec.template.as_deref()?;
                Some((&t.metadata, &t.spec))
            }
        }
    }
}

/// Where an evaluated kind keeps its pod spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodSpecPath {
    /// `spec` (Pod).
    Spec,
    /// `spec.template.spec`.
    Template,
    /// `spec.jobTemplate.spec.template.spec` (CronJob).
    JobTemplate,
}

/// Where the pod spec of `group`/`kind` is, or `None` when the kind is not evaluated.
pub fn pod_spec_path(group: &str, kind: &str) -> Option<PodSpecPath> {
    match (group, kind) {
        ("", "Pod") => Some(PodSpecPath::Spec),
        ("", "ReplicationController")
        | ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job") => Some(PodSpecPath::Template),
        ("batch", "CronJob") => Some(PodSpecPath::JobTemplate),
        _ => None,
    }
}

/// One thing to judge: an admission request, or a bare object read as a CREATE.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    /// The request uid (empty for bare objects).
    pub uid: String,
    /// The review's `apiVersion` (`admission.k8s.io/v1`), for the response; empty otherwise.
    pub review_api_version: CompactString,
    /// The operation.
    pub operation: Operation,
    /// API group of the object (`apps`; empty for core).
    pub group: CompactString,
    /// Kind of the object (`Deployment`).
    pub kind: CompactString,
    /// API version of the object's kind (`v1`; `request.kind.version`, else from `apiVersion`).
    pub version: CompactString,
    /// Who made the request (`request.userInfo.username`); empty for bare objects.
    pub user: CompactString,
    /// The resource (`pods`), when known.
    pub resource: CompactString,
    /// The subresource (`exec`, `ephemeralcontainers`), empty when none.
    pub sub_resource: CompactString,
    /// The namespace: `request.namespace`, else `metadata.namespace`, else `default`.
    pub namespace: CompactString,
    /// The object's name (`request.name`, else `metadata.name`, else `generateName`).
    pub name: CompactString,
    /// The object (absent on DELETE and for some CONNECTs).
    pub object: Option<KubeObject>,
    /// For UPDATE: whether the pod spec is unchanged from `oldObject`'s.
    pub pod_spec_unchanged: bool,
    /// For UPDATE of pods/ephemeralcontainers: ephemeral containers that `oldObject` lacks.
    pub added_ephemeral_containers: Vec<String>,
    /// Whether the request is a dry run.
    pub dry_run: bool,
    /// What the parse read of the pod ([`parse_document_with`]).
    pub fields: Fields,
}

/// A `kind` field: a string on objects, `{group, version, kind}` on admission requests.
#[derive(Debug, Clone, Default, PartialEq)]
struct KindField {
    group: CompactString,
    version: CompactString,
    kind: CompactString,
    /// Whether it was given as an object (a bare AdmissionRequest).
    is_gvk: bool,
}

impl<'de> Deserialize<'de> for KindField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KindVisitor;
        impl<'de> Visitor<'de> for KindVisitor {
            type Value = KindField;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a kind name or a {group, version, kind} object")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KindField, E> {
                Ok(KindField {
                    kind: CompactString::from(v),
                    ..KindField::default()
                })
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<KindField, E> {
                Ok(KindField::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KindField, A::Error> {
                let mut k = KindField {
                    is_gvk: true,
                    ..KindField::default()
                };
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    let value = map.next_value::<Option<CompactString>>()?.unwrap_or_default();
                    match key.as_ref() {
                        "group" => k.group = value,
                        "version" => k.version = value,
                        "kind" => k.kind = value,
                        _ => {}
                    }
                }
                Ok(k)
            }
        }
        deserializer.deserialize_any(KindVisitor)
    }
}

/// `request.resource`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
struct ResourceField {
    #[serde(default, deserialize_with = "nullable")]
    resource: CompactString,
}

/// The fields of an AdmissionRequest.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestFields {
    #[serde(default, deserialize_with = "nullable")]
    uid: String,
    #[serde(default)]
    kind: Option<KindField>,
    #[serde(default)]
    resource: Option<ResourceField>,
    #[serde(default, deserialize_with = "nullable")]
    sub_resource: CompactString,
    #[serde(default, deserialize_with = "nullable")]
    name: CompactString,
    #[serde(default, deserialize_with = "nullable")]
    namespace: CompactString,
    #[serde(default)]
    operation: Option<CompactString>,
    #[serde(default)]
    object: Option<Box<ObjectFields>>,
    #[serde(default)]
    old_object: Option<Box<ObjectFields>>,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(default)]
    user_info: Option<UserInfoField>,
}

/// `request.userInfo`: only the user name is kept.
#[derive(Debug, Default, Deserialize)]
struct UserInfoField {
    #[serde(default, deserialize_with = "nullable")]
    username: CompactString,
}

/// Every top-level shape at once: an object, a List, a review or a bare request.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[serde(default, deserialize_with = "nullable")]
    api_version: CompactString,
    #[serde(default)]
    kind: Option<KindField>,
    #[serde(default)]
    metadata: Option<ObjectMeta>,
    #[serde(default)]
    spec: Option<PodSpec>,
    #[serde(default)]
    status: Option<PodStatus>,
    #[serde(default)]
    items: Option<Vec<Box<RawValue>>>,
    #[serde(default)]
    request: Option<Box<RequestFields>>,
    // A bare AdmissionRequest's own fields.
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    resource: Option<ResourceField>,
    #[serde(default, deserialize_with = "nullable")]
    sub_resource: CompactString,
    #[serde(default, deserialize_with = "nullable")]
    name: CompactString,
    #[serde(default, deserialize_with = "nullable")]
    namespace: CompactString,
    #[serde(default)]
    operation: Option<CompactString>,
    #[serde(default)]
    object: Option<Box<ObjectFields>>,
    #[serde(default)]
    old_object: Option<Box<ObjectFields>>,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(default)]
    user_info: Option<UserInfoField>,
}

/// The typed object of a request.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectFields {
    #[serde(default, deserialize_with = "nullable")]
    api_version: CompactString,
    #[serde(default)]
    kind: Option<KindField>,
    #[serde(default, deserialize_with = "nullable")]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<PodSpec>,
    #[serde(default)]
    status: Option<PodStatus>,
}

/// Nested Lists deeper than this are refused (they are never legitimate).
const MAX_LIST_DEPTH: usize = 8;

/// Parses one JSON document into the subjects it holds (a List gives one per item, nested
/// Lists flattened), in document order.
///
/// Documents are read by the engine's JSON reader when it accepts them and by serde_json
/// otherwise (see [`parse_document_reference`]); the result is the same. A document that is
/// not UTF-8 is refused, wherever the bad bytes are (in a field that is skipped too): the
/// admission service relies on it.
pub fn parse_document(json: &[u8]) -> Result<Vec<Subject>, InputError> {
    parse_document_with(json, Fields::ALL)
}

/// [`parse_document`] reading only `fields` of each pod (the rest is skipped, still checked
/// as JSON). A policy's own [`crate::evaluate::CompiledPolicy::parse_document`] passes the
/// fields its rules read.
pub fn parse_document_with(json: &[u8], fields: Fields) -> Result<Vec<Subject>, InputError> {
    let _scope = FieldsScope::new(fields);
    let mut out = Vec::with_capacity(1);
    parse_into(json, 0, "", &mut out, Reader::Fast)?;
    for subject in &mut out {
        subject.fields = fields;
    }
    Ok(out)
}

/// [`parse_document`] with serde_json as the only JSON reader: the reference the fast reader
/// is tested against (not for production use: it is slower).
#[doc(hidden)]
pub fn parse_document_reference(json: &[u8]) -> Result<Vec<Subject>, InputError> {
    let mut out = Vec::with_capacity(1);
    parse_into(json, 0, "", &mut out, Reader::Reference)?;
    Ok(out)
}

/// Whether the engine's own JSON reader reads `json` itself, as the top-level shapes
/// `parse_document` accepts, rather than leaving it to serde_json. Not for production use:
/// a refusal gives the same result, only slower, so a test watches for it.
#[doc(hidden)]
pub fn fast_reader_reads(json: &str) -> bool {
    portcullis_json::from_str::<Envelope>(json).is_some()
}

/// serde's message, without the engine's internal type names (`expected struct Envelope`).
fn plain_message(message: String) -> String {
    match message.split_once("expected struct ") {
        Some((head, rest)) => {
            let tail = rest.trim_start_matches(|c: char| c.is_alphanumeric());
            format!("{head}expected an object{tail}")
        }
        None => message,
    }
}

fn json_error(prefix: &str, e: serde_path_to_error::Error<serde_json::Error>) -> InputError {
    let path = e.path().to_string();
    // serde_path_to_error writes `?` where it cannot tell (input that ends early).
    let path = if path == "?" { ".".to_owned() } else { path };
    let path = match (prefix.is_empty(), path.as_str()) {
        (true, ".") => "(document)".to_owned(),
        (true, _) => path,
        (false, ".") => prefix.to_owned(),
        (false, _) => format!("{prefix}.{path}"),
    };
    InputError::new(path, plain_message(e.into_inner().to_string()))
}

/// Which JSON reader parses a document: the two must agree on every input (a test and the
/// fuzz target hold them to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// The engine's own reader ([`portcullis_json`]) first; whatever it refuses is read again by
    /// serde_json, so errors and every edge case serde_json decides stay serde_json's.
    Fast,
    /// serde_json only.
    Reference,
}

fn from_json<'a, T: Deserialize<'a>>(json: &'a [u8], prefix: &str, reader: Reader) -> Result<T, InputError> {
    // Fast paths without path tracking; only a failure is parsed again to name the field.
    // The document is checked as UTF-8 once, so that neither reader validates every key and
    // string again; invalid UTF-8 takes the slow path, whose error names the field.
    let utf8 = simdutf8::basic::from_utf8(json).ok();
    if let Some(text) = utf8 {
        if reader == Reader::Fast
            && let Some(value) = portcullis_json::from_str(text)
        {
            return Ok(value);
        }
        if let Ok(value) = serde_json::from_str(text) {
            return Ok(value);
        }
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(prefix, e))?;
    let whole = if prefix.is_empty() { "(document)" } else { prefix };
    de.end().map_err(|e| InputError::new(whole, e.to_string()))?;
    // serde_json does not check the strings it skips; JSON is UTF-8 (RFC 8259), so a
    // document with bad bytes only there is refused too (the scan again, for the position).
    if utf8.is_none()
        && let Err(e) = std::str::from_utf8(json)
    {
        return Err(InputError::new(
            whole,
            format!("not UTF-8 (at byte {})", e.valid_up_to()),
        ));
    }
    Ok(value)
}

fn parse_into(
    json: &[u8],
    depth: usize,
    prefix: &str,
    out: &mut Vec<Subject>,
    reader: Reader,
) -> Result<(), InputError> {
    let mut env: Envelope = from_json(json, prefix, reader)?;
    let here = |field: &str| {
        if prefix.is_empty() {
            field.to_owned()
        } else {
            format!("{prefix}.{field}")
        }
    };
    let kind = env.kind.take().unwrap_or_default();

    if kind.kind.ends_with("List") && !kind.is_gvk && env.request.is_none() {
        if depth >= MAX_LIST_DEPTH {
            return Err(InputError::new(here("items"), "Lists nested too deeply"));
        }
        // `items: null` (or none) is an empty List, as Kubernetes reads it.
        for (i, item) in env.items.iter().flatten().enumerate() {
            parse_into(
                item.get().as_bytes(),
                depth + 1,
                &here(&format!("items[{i}]")),
                out,
                reader,
            )?;
        }
        return Ok(());
    }

    if let Some(request) = env.request {
        if !kind.kind.is_empty() && kind.kind != "AdmissionReview" {
            return Err(InputError::new(
                here("kind"),
                format!(
                    "a document with `request` must be an AdmissionReview, not {:?}",
                    kind.kind
                ),
            ));
        }
        if !env.api_version.is_empty()
            && !matches!(
                env.api_version.as_str(),
                "admission.k8s.io/v1" | "admission.k8s.io/v1beta1"
            )
        {
            return Err(InputError::new(
                here("apiVersion"),
                format!("{:?} is not admission.k8s.io/v1 or v1beta1", env.api_version),
            ));
        }
        out.push(subject_from_request(
            *request,
            env.api_version,
            (prefix, "request"),
            json,
            "/request",
        )?);
        return Ok(());
    }

    if kind.is_gvk || (env.uid.is_some() && env.operation.is_some()) {
        // A bare AdmissionRequest, read as if wrapped in a review.
        let request = RequestFields {
            uid: env.uid.unwrap_or_default(),
            kind: Some(kind),
            resource: env.resource,
            sub_resource: env.sub_resource,
            name: env.name,
            namespace: env.namespace,
            operation: env.operation,
            object: env.object,
            old_object: env.old_object,
            dry_run: env.dry_run,
            user_info: env.user_info,
        };
        out.push(subject_from_request(
            request,
            CompactString::default(),
            (prefix, ""),
            json,
            "",
        )?);
        return Ok(());
    }

    if kind.kind.is_empty() {
        return Err(InputError::new(
            here("kind"),
            "missing: not a Kubernetes object, List, AdmissionReview or AdmissionRequest",
        ));
    }
    let group = CompactString::from(group_of(&env.api_version));
    let metadata = env.metadata.unwrap_or_default();
    let namespace = metadata
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| CompactString::const_new("default"));
    let name = object_name(&metadata);
    let version = CompactString::from(version_of(&env.api_version));
    out.push(Subject {
        uid: String::new(),
        review_api_version: CompactString::default(),
        operation: Operation::Create,
        group,
        kind: kind.kind.clone(),
        version,
        user: CompactString::default(),
        resource: CompactString::default(),
        sub_resource: CompactString::default(),
        namespace,
        name,
        object: Some(KubeObject {
            api_version: env.api_version,
            kind: kind.kind,
            metadata,
            spec: env.spec,
            status: env.status,
        }),
        pod_spec_unchanged: false,
        added_ephemeral_containers: Vec::new(),
        dry_run: false,
        fields: Fields::ALL,
    });
    Ok(())
}

/// The version of an `apiVersion` (`apps/v1` → `v1`, `v1` → `v1`).
pub fn version_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or(api_version, |(_, v)| v)
}

/// The API group of an `apiVersion` (`apps/v1` → `apps`, `v1` → ``).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

fn object_name(metadata: &ObjectMeta) -> CompactString {
    if metadata.name.is_empty() {
        metadata.generate_name.clone()
    } else {
        metadata.name.clone()
    }
}

fn subject_from_request(
    r: RequestFields,
    review_api_version: CompactString,
    (prefix, request): (&str, &str),
    json: &[u8],
    pointer: &str,
) -> Result<Subject, InputError> {
    // `prefix.request.field`, without the empty parts; built only for an error.
    let at = |field: &str| {
        let mut path = String::new();
        for part in [prefix, request, field] {
            if !part.is_empty() {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(part);
            }
        }
        path
    };
    let operation = match r.operation.as_deref() {
        Some("CREATE") => Operation::Create,
        Some("UPDATE") => Operation::Update,
        Some("DELETE") => Operation::Delete,
        Some("CONNECT") => Operation::Connect,
        Some(other) => {
            return Err(InputError::new(
                at("operation"),
                format!("{other:?} is not one of CREATE, UPDATE, DELETE, CONNECT"),
            ));
        }
        None => return Err(InputError::new(at("operation"), "missing")),
    };
    let Some(kind) = r.kind else {
        return Err(InputError::new(at("kind"), "missing"));
    };
    let object = r.object.map(|o| KubeObject::from(*o));
    // The request's own namespace and name first; the object's are copied only when needed.
    let namespace = if r.namespace.is_empty() {
        object
            .as_ref()
            .and_then(|o| o.metadata.namespace.as_deref())
            .filter(|n| !n.is_empty())
            .map_or_else(|| CompactString::const_new("default"), CompactString::from)
    } else {
        r.namespace
    };
    let name = if r.name.is_empty() {
        object.as_ref().map(|o| object_name(&o.metadata)).unwrap_or_default()
    } else {
        r.name
    };
    let pod_spec = pod_spec_path(&kind.group, &kind.kind);
    if matches!(operation, Operation::Create | Operation::Update) && pod_spec.is_some() && object.is_none() {
        return Err(InputError::new(
            at("object"),
            format!("missing: a {} of a {} needs the object", operation.as_str(), kind.kind),
        ));
    }

    let mut subject = Subject {
        uid: r.uid,
        review_api_version,
        operation,
        group: kind.group,
        kind: kind.kind,
        version: kind.version,
        user: r.user_info.map(|u| u.username).unwrap_or_default(),
        resource: r.resource.map(|x| x.resource).unwrap_or_default(),
        sub_resource: r.sub_resource,
        namespace,
        name,
        object,
        pod_spec_unchanged: false,
        added_ephemeral_containers: Vec::new(),
        dry_run: r.dry_run.unwrap_or(false),
        fields: Fields::ALL,
    };

    if operation == Operation::Update {
        if subject.sub_resource == "ephemeralcontainers" {
            // Without oldObject every ephemeral container counts as added: a request lacking
            // it must not let a debug container through unjudged.
            let before: Vec<&str> = r
                .old_object
                .as_ref()
                .and_then(|old| old.spec.as_ref())
                .map(|s| s.ephemeral_containers.iter().map(|c| c.name.as_str()).collect())
                .unwrap_or_default();
            subject.added_ephemeral_containers = subject
                .object
                .as_ref()
                .and_then(|o| o.spec.as_ref())
                .map(|s| {
                    s.ephemeral_containers
                        .iter()
                        .filter(|c| !before.contains(&c.name.as_str()))
                        .map(|c| c.name.as_str().to_owned())
                        .collect()
                })
                .unwrap_or_default();
        } else if r.old_object.is_some()
            && let Some(path) = pod_spec
        {
            subject.pod_spec_unchanged = pod_specs_equal(json, pointer, path)?;
        }
    }
    Ok(subject)
}

impl From<ObjectFields> for KubeObject {
    fn from(o: ObjectFields) -> KubeObject {
        let kind = o.kind.map(|k| k.kind).unwrap_or_default();
        KubeObject {
            api_version: o.api_version,
            kind,
            metadata: o.metadata,
            spec: o.spec,
            status: o.status,
        }
    }
}

/// Compares the whole pod specs of `object` and `oldObject` (every field, not only those the
/// engine reads), so that any change to the pod spec is judged, while labelling or scaling is
/// not. Only UPDATEs pay for this second, untyped read of the document.
fn pod_specs_equal(json: &[u8], request: &str, path: PodSpecPath) -> Result<bool, InputError> {
    let doc: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| InputError::new("(document)", e.to_string()))?;
    let spec = match path {
        PodSpecPath::Spec => "/spec",
        PodSpecPath::Template => "/spec/template/spec",
        PodSpecPath::JobTemplate => "/spec/jobTemplate/spec/template/spec",
    };
    let new = doc.pointer(&format!("{request}/object{spec}"));
    let old = doc.pointer(&format!("{request}/oldObject{spec}"));
    Ok(new == old)
}
