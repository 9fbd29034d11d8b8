//! Security events: the one shape every stage's events take in telemetry, and the
//! conversions into it.
//!
//! # Sources and actions
//!
//! | source       | from                         | actions                                                         |
//! |--------------|------------------------------|-----------------------------------------------------------------|
//! | `runtime`    | a sensor's Falco JSON event  | the Falco priority: `emergency`, `alert`, `critical`, `error`, `warning`, `notice`, `informational`, `debug` |
//! | `admission`  | `admission.decision`         | `allow`, `log` (admitted with log-only violations), `block`      |
//! | `finding`    | `continuous.finding`         | `open` (opened or updated), `resolve`                           |
//! | `mitigation` | `continuous.mitigation`      | `isolate`, `terminate`, `restore`, `not-isolatable`             |
//! | `signature`  | `signature.verdict`          | `verified`, `failed` (an attestor did not verify), `error` (could not be checked) |
//!
//! # Severity
//!
//! Falco priorities map to severities: Emergency, Alert, Critical → critical; Error → high;
//! Warning → medium; Notice → low; Informational (Info), Debug → info. Other sources:
//! admission block high, log medium, allow info; an open finding high when its mitigation
//! isolates or terminates, else medium, a resolved one info; an isolate or terminate command
//! medium, restore and not-isolatable low; a failed signature high, an unverifiable one
//! medium, a verified one info.
//!
//! # Event ids
//!
//! A bus event keeps its envelope's `event_id`. A runtime event's id is derived from its
//! content: the first 128 bits of SHA-256 over the cluster id, a zero byte and the raw event
//! bytes, written as a UUID (version 8, RFC 9562's custom layout). The same event of the same
//! cluster ingested twice (a sensor's retry, a replayed stream) has the same id, so storing
//! it is idempotent; two identical events of different clusters differ.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use compact_str::CompactString;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::entity::{Labels, Workload, workload_of};

/// Largest raw runtime event accepted, in bytes.
pub const MAX_RAW_EVENT_BYTES: usize = 64 * 1024;
/// Longest summary kept, in bytes (longer ones are cut at a character boundary).
pub const MAX_SUMMARY_BYTES: usize = 4096;
/// How far in the future an event's time may be.
pub const MAX_FUTURE_SKEW: Duration = Duration::from_secs(5 * 60);

/// Where a security event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// A runtime detection of a cluster's sensor.
    Runtime,
    /// An admission decision.
    Admission,
    /// A continuous finding.
    Finding,
    /// A continuous mitigation command.
    Mitigation,
    /// An image signature verdict.
    Signature,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 5] = [
        Self::Runtime,
        Self::Admission,
        Self::Finding,
        Self::Mitigation,
        Self::Signature,
    ];

    /// The name used in queries, rules and storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Runtime => "runtime",
            Self::Admission => "admission",
            Self::Finding => "finding",
            Self::Mitigation => "mitigation",
            Self::Signature => "signature",
        }
    }
}

/// An unknown name of an enumeration (source, severity, action, mitigation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}`; expected one of: {expected}")]
pub struct UnknownName {
    /// What was being named.
    pub what: &'static str,
    /// The name given.
    pub value: String,
    /// The names accepted.
    pub expected: &'static str,
}

impl FromStr for Source {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownName {
                what: "type",
                value: s.to_owned(),
                expected: "runtime, admission, finding, mitigation, signature",
            })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A security event's severity, least severe first (so `>=` means "at least").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// Informational.
    Info,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// Every severity, least severe first.
    pub const ALL: [Severity; 5] = [Self::Info, Self::Low, Self::Medium, Self::High, Self::Critical];

    /// The name used in queries, rules and storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// The severity of a Falco priority (any case; `Info` is accepted for `Informational`).
    pub fn from_falco_priority(priority: &str) -> Option<Self> {
        Some(match FalcoPriority::parse(priority)? {
            FalcoPriority::Emergency | FalcoPriority::Alert | FalcoPriority::Critical => Self::Critical,
            FalcoPriority::Error => Self::High,
            FalcoPriority::Warning => Self::Medium,
            FalcoPriority::Notice => Self::Low,
            FalcoPriority::Informational | FalcoPriority::Debug => Self::Info,
        })
    }
}

impl FromStr for Severity {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownName {
                what: "severity",
                value: s.to_owned(),
                expected: "info, low, medium, high, critical",
            })
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Severity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// Falco's priorities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FalcoPriority {
    Emergency,
    Alert,
    Critical,
    Error,
    Warning,
    Notice,
    Informational,
    Debug,
}

impl FalcoPriority {
    fn parse(s: &str) -> Option<Self> {
        const NAMES: [(&str, FalcoPriority); 9] = [
            ("emergency", FalcoPriority::Emergency),
            ("alert", FalcoPriority::Alert),
            ("critical", FalcoPriority::Critical),
            ("error", FalcoPriority::Error),
            ("warning", FalcoPriority::Warning),
            ("notice", FalcoPriority::Notice),
            ("informational", FalcoPriority::Informational),
            ("info", FalcoPriority::Informational),
            ("debug", FalcoPriority::Debug),
        ];
        let s = s.trim();
        NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)).map(|(_, p)| *p)
    }

    fn action(self) -> Action {
        match self {
            Self::Emergency => Action::Emergency,
            Self::Alert => Action::Alert,
            Self::Critical => Action::Critical,
            Self::Error => Action::Error,
            Self::Warning => Action::Warning,
            Self::Notice => Action::Notice,
            Self::Informational => Action::Informational,
            Self::Debug => Action::Debug,
        }
    }
}

/// What happened, in each source's small vocabulary (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Admission: admitted without violations.
    Allow,
    /// Admission: admitted with log-only violations.
    Log,
    /// Admission: rejected.
    Block,
    /// Finding: opened (or changed while open).
    Open,
    /// Finding: resolved.
    Resolve,
    /// Mitigation: isolate the pod.
    Isolate,
    /// Mitigation: terminate the pod.
    Terminate,
    /// Mitigation: lift an isolation.
    Restore,
    /// Mitigation: isolation wanted but impossible (host network).
    NotIsolatable,
    /// Signature: every attestor verified.
    Verified,
    /// Signature: an attestor did not verify.
    Failed,
    /// Signature: could not be checked; runtime: Falco priority Error.
    Error,
    /// Runtime: Falco priority Emergency.
    Emergency,
    /// Runtime: Falco priority Alert.
    Alert,
    /// Runtime: Falco priority Critical.
    Critical,
    /// Runtime: Falco priority Warning.
    Warning,
    /// Runtime: Falco priority Notice.
    Notice,
    /// Runtime: Falco priority Informational.
    Informational,
    /// Runtime: Falco priority Debug.
    Debug,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 19] = [
        Self::Allow,
        Self::Log,
        Self::Block,
        Self::Open,
        Self::Resolve,
        Self::Isolate,
        Self::Terminate,
        Self::Restore,
        Self::NotIsolatable,
        Self::Verified,
        Self::Failed,
        Self::Error,
        Self::Emergency,
        Self::Alert,
        Self::Critical,
        Self::Warning,
        Self::Notice,
        Self::Informational,
        Self::Debug,
    ];

    /// The name used in queries, rules and storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Log => "log",
            Self::Block => "block",
            Self::Open => "open",
            Self::Resolve => "resolve",
            Self::Isolate => "isolate",
            Self::Terminate => "terminate",
            Self::Restore => "restore",
            Self::NotIsolatable => "not-isolatable",
            Self::Verified => "verified",
            Self::Failed => "failed",
            Self::Error => "error",
            Self::Emergency => "emergency",
            Self::Alert => "alert",
            Self::Critical => "critical",
            Self::Warning => "warning",
            Self::Notice => "notice",
            Self::Informational => "informational",
            Self::Debug => "debug",
        }
    }
}

impl FromStr for Action {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // `info` is Falco's other spelling of `informational`.
        if s.eq_ignore_ascii_case("info") {
            return Ok(Self::Informational);
        }
        Self::ALL.into_iter().find(|v| v.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| UnknownName {
            what: "action",
            value: s.to_owned(),
            expected: "allow, log, block, open, resolve, isolate, terminate, restore, not-isolatable, verified, failed, error, emergency, alert, critical, warning, notice, informational, debug",
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// The mitigation attached to an event, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mitigation {
    /// Recorded only.
    Log,
    /// The pod is cut off the network.
    Isolate,
    /// The pod is deleted.
    Terminate,
}

impl Mitigation {
    /// The name used in storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Isolate => "isolate",
            Self::Terminate => "terminate",
        }
    }

    /// From the protobuf value; `None` for unspecified and `none`.
    pub fn from_proto(m: i32) -> Option<Self> {
        use portcullis_proto::common::v1::Mitigation as P;
        match P::try_from(m).ok()? {
            P::Log => Some(Self::Log),
            P::Isolate => Some(Self::Isolate),
            P::Terminate => Some(Self::Terminate),
            P::Unspecified | P::None => None,
        }
    }
}

/// One security event.
#[derive(Debug, Clone, PartialEq)]
pub struct SecurityEvent {
    /// Its id: the bus event id, or the content-derived id of a runtime event (see the module
    /// documentation).
    pub id: CompactString,
    /// Id of the tenant.
    pub tenant_id: CompactString,
    /// Id of the cluster.
    pub cluster_id: CompactString,
    /// Where it came from.
    pub source: Source,
    /// When it happened (the event's own time).
    pub occurred_at: OffsetDateTime,
    /// How severe.
    pub severity: Severity,
    /// The rule: a Falco rule name, a policy rule type, a finding's rule, an attestor.
    pub rule: CompactString,
    /// One line for people.
    pub summary: String,
    /// What happened (see the module documentation).
    pub action: Action,
    /// The namespace; empty when none.
    pub namespace: CompactString,
    /// The pod's name; empty when none.
    pub pod: CompactString,
    /// The pod's uid; empty when not known.
    pub pod_uid: CompactString,
    /// The container's name; empty when none.
    pub container: CompactString,
    /// The image reference (`repository[:tag]`); empty when none.
    pub image: String,
    /// The image digest (`sha256:...`); empty when not known.
    pub digest: CompactString,
    /// For admission decisions, the subresource reviewed (`exec`, `attach`, ...); empty
    /// otherwise.
    pub subresource: CompactString,
    /// The owning workload, when the event is about one.
    pub workload: Option<Workload>,
    /// The pod's labels, sorted by key; `None` when the event does not say.
    pub labels: Option<Labels>,
    /// The mitigation attached (a finding's rule mitigation, a command's), when any.
    pub mitigation: Option<Mitigation>,
    /// The whole event as JSON: the raw Falco event, or a JSON rendering of the bus payload.
    pub details_json: String,
}

/// Why an event could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Not JSON, or not the expected shape.
    #[error("the event is not a valid Falco JSON event: {0}")]
    Json(String),
    /// A required field is missing or empty.
    #[error("field `{0}` is missing")]
    Missing(&'static str),
    /// A field has an invalid value.
    #[error("field `{field}` is invalid: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The raw event is larger than [`MAX_RAW_EVENT_BYTES`].
    #[error("the event is {0} bytes, more than the limit of {MAX_RAW_EVENT_BYTES}")]
    TooLarge(usize),
}

/// Why an event's time refuses it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeRefusal {
    /// Older than the retention.
    #[error("the event time {at} is older than the retention of {retention_secs} s")]
    TooOld {
        /// The event's time (RFC 3339).
        at: String,
        /// The retention in seconds.
        retention_secs: u64,
    },
    /// More than [`MAX_FUTURE_SKEW`] ahead of now.
    #[error("the event time {at} is more than 5 minutes in the future")]
    InFuture {
        /// The event's time (RFC 3339).
        at: String,
    },
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Refuses an event time older than `now - retention` or later than `now + 5 minutes`
/// (both bounds inclusive of acceptance).
pub fn check_time(occurred_at: OffsetDateTime, now: OffsetDateTime, retention: Duration) -> Result<(), TimeRefusal> {
    let retention_d = time::Duration::try_from(retention).unwrap_or(time::Duration::MAX);
    let oldest = now
        .checked_sub(retention_d)
        .unwrap_or(time::PrimitiveDateTime::MIN.assume_utc());
    if occurred_at < oldest {
        return Err(TimeRefusal::TooOld {
            at: rfc3339(occurred_at),
            retention_secs: retention.as_secs(),
        });
    }
    let skew = time::Duration::try_from(MAX_FUTURE_SKEW).unwrap_or(time::Duration::ZERO);
    if now.checked_add(skew).is_some_and(|latest| occurred_at > latest) {
        return Err(TimeRefusal::InFuture {
            at: rfc3339(occurred_at),
        });
    }
    Ok(())
}

/// The content-derived id of a runtime event (see the module documentation).
pub fn runtime_event_id(cluster_id: &str, raw: &[u8]) -> CompactString {
    let mut h = Sha256::new();
    h.update(cluster_id.as_bytes());
    h.update([0u8]);
    h.update(raw);
    uuid_from_digest(&h.finalize())
}

/// The UUID (version 8, RFC 9562 variant) of the first 128 bits of a digest.
pub(crate) fn uuid_from_digest(d: &[u8]) -> CompactString {
    let mut b = [0u8; 16];
    for (dst, src) in b.iter_mut().zip(d.iter()) {
        *dst = *src;
    }
    // Version 8 and the RFC 9562 variant, so the id is a well-formed UUID.
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut s = CompactString::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(hex_digit(byte >> 4));
        s.push(hex_digit(byte & 0x0f));
    }
    s
}

/// The lowercase hex digit of a nibble.
fn hex_digit(n: u8) -> char {
    char::from_digit(u32::from(n & 0x0f), 16).unwrap_or('0')
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

// ---------------------------------------------------------------------------------------------
// Falco JSON events.

/// A Falco JSON output event, borrowed from the raw bytes where it can be.
#[derive(Deserialize)]
struct FalcoEvent<'a> {
    #[serde(borrow, default)]
    rule: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    priority: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    output: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    output_fields: Option<OutputFields<'a>>,
}

/// The output fields telemetry reads; Falco prints `<NA>` for fields it could not fill. The
/// owner names come from the k8smeta plugin (`k8smeta.*`) or older Falcos (`k8s.*`); both
/// may be present, so they are separate fields (serde aliases would refuse the pair).
#[derive(Deserialize, Default)]
struct OutputFields<'a> {
    #[serde(borrow, default, rename = "k8s.ns.name")]
    namespace: Option<Field<'a>>,
    #[serde(borrow, default, rename = "k8s.pod.name")]
    pod: Option<Field<'a>>,
    #[serde(borrow, default, rename = "k8s.pod.uid")]
    pod_uid: Option<Field<'a>>,
    #[serde(borrow, default, rename = "k8s.pod.labels")]
    labels: Option<LabelsField<'a>>,
    #[serde(borrow, default, rename = "container.name")]
    container: Option<Field<'a>>,
    #[serde(borrow, default, rename = "container.image.repository")]
    repository: Option<Field<'a>>,
    #[serde(borrow, default, rename = "container.image.tag")]
    tag: Option<Field<'a>>,
    #[serde(borrow, default, rename = "container.image.digest")]
    digest: Option<Field<'a>>,
    #[serde(borrow, default, rename = "k8smeta.deployment.name")]
    deployment: Option<Field<'a>>,
    #[serde(borrow, default, rename = "k8s.deployment.name")]
    deployment_legacy: Option<Field<'a>>,
    #[serde(borrow, default, rename = "k8smeta.rs.name")]
    replicaset: Option<Field<'a>>,
    #[serde(borrow, default, rename = "k8s.rs.name")]
    replicaset_legacy: Option<Field<'a>>,
    #[serde(borrow, default, rename = "k8smeta.statefulset.name")]
    statefulset: Option<Field<'a>>,
    #[serde(borrow, default, rename = "k8s.statefulset.name")]
    statefulset_legacy: Option<Field<'a>>,
    #[serde(borrow, default, rename = "k8smeta.daemonset.name")]
    daemonset: Option<Field<'a>>,
    #[serde(borrow, default, rename = "k8s.daemonset.name")]
    daemonset_legacy: Option<Field<'a>>,
    #[serde(borrow, default, rename = "k8smeta.job.name")]
    job: Option<Field<'a>>,
    #[serde(borrow, default, rename = "k8s.job.name")]
    job_legacy: Option<Field<'a>>,
    #[serde(borrow, default, rename = "k8smeta.cronjob.name")]
    cronjob: Option<Field<'a>>,
    #[serde(borrow, default, rename = "k8s.cronjob.name")]
    cronjob_legacy: Option<Field<'a>>,
}

/// A string output field; numbers, objects, lists and other values are read as absent (a
/// sensor's odd field must not cost the whole event).
struct Field<'a>(Option<Cow<'a, str>>);

impl<'a> Field<'a> {
    /// The value, unless absent, empty or Falco's `<NA>`.
    fn get(f: &'a Option<Field<'a>>) -> Option<&'a str> {
        let s = f.as_ref()?.0.as_deref()?;
        (!s.is_empty() && s != "<NA>").then_some(s)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Field<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Field(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Field(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Field(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Field(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Field(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Field(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Field(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Field(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
                Ok(Field(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Field(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// `k8s.pod.labels`: a JSON object, or Falco's string form `[app:web, tier:fe]`.
enum LabelsField<'a> {
    Map(Labels),
    Text(Cow<'a, str>),
    Absent,
}

impl<'de: 'a, 'a> Deserialize<'de> for LabelsField<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LabelsField<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of labels or a string `[k:v, ...]`")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(LabelsField::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(LabelsField::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(LabelsField::Absent)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(LabelsField::Absent)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut labels = Labels::new();
                while let Some((k, v)) = map.next_entry::<Cow<'de, str>, Cow<'de, str>>()? {
                    labels.push((CompactString::from(k.as_ref()), CompactString::from(v.as_ref())));
                }
                Ok(LabelsField::Map(labels))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses Falco's string form of labels, `[app:web, tier:fe]` (brackets optional; a label
/// value may itself contain `:`; an item without `:` is a key with an empty value).
pub fn parse_label_text(text: &str) -> Labels {
    let inner = text.trim();
    let inner = inner.strip_prefix('[').unwrap_or(inner);
    let inner = inner.strip_suffix(']').unwrap_or(inner);
    let mut labels = Labels::new();
    for item in inner.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (k, v) = item.split_once(':').unwrap_or((item, ""));
        labels.push((k.trim().into(), v.trim().into()));
    }
    normalize_labels(&mut labels);
    labels
}

/// Sorts labels by key and keeps the last value of a repeated key.
fn normalize_labels(labels: &mut Labels) {
    // A stable sort keeps a repeated key's values in input order; the last one wins.
    labels.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Labels = Labels::with_capacity(labels.len());
    for (k, v) in labels.drain(..) {
        match out.last_mut() {
            Some(last) if last.0 == k => last.1 = v,
            _ => out.push((k, v)),
        }
    }
    *labels = out;
}

impl SecurityEvent {
    /// Reads one Falco JSON output event of `cluster_id`'s sensor (module documentation for
    /// ids and severities). Required: `rule`, `priority` (a Falco priority), `time` (RFC 3339);
    /// `output` may be absent (the summary is then the rule). Check the time with
    /// [`check_time`] before storing.
    pub fn from_falco_json(tenant_id: &str, cluster_id: &str, raw: &[u8]) -> Result<Self, EventError> {
        if raw.len() > MAX_RAW_EVENT_BYTES {
            return Err(EventError::TooLarge(raw.len()));
        }
        let text = std::str::from_utf8(raw).map_err(|e| EventError::Json(e.to_string()))?;
        let ev: FalcoEvent<'_> = serde_json::from_str(text).map_err(|e| EventError::Json(e.to_string()))?;

        let rule = non_empty(ev.rule.as_deref()).ok_or(EventError::Missing("rule"))?;
        let priority_text = non_empty(ev.priority.as_deref()).ok_or(EventError::Missing("priority"))?;
        let priority = FalcoPriority::parse(priority_text).ok_or_else(|| EventError::Invalid {
            field: "priority",
            reason: format!(
                "`{priority_text}` is not a Falco priority (emergency, alert, critical, error, warning, notice, informational, debug)"
            ),
        })?;
        let time_text = non_empty(ev.time.as_deref()).ok_or(EventError::Missing("time"))?;
        let occurred_at = OffsetDateTime::parse(time_text, &Rfc3339).map_err(|e| EventError::Invalid {
            field: "time",
            reason: format!("`{time_text}` is not RFC 3339: {e}"),
        })?;

        let f = ev.output_fields.unwrap_or_default();
        let labels = match f.labels {
            Some(LabelsField::Map(mut l)) => {
                normalize_labels(&mut l);
                Some(l)
            }
            Some(LabelsField::Text(t)) if !t.is_empty() && t != "<NA>" => Some(parse_label_text(&t)),
            _ => None,
        };
        let pod = Field::get(&f.pod).unwrap_or("");
        let namespace = Field::get(&f.namespace).unwrap_or("");
        let workload = if pod.is_empty() {
            None
        } else {
            let either = |a: &'_ Option<Field<'_>>, b: &'_ Option<Field<'_>>| {
                Field::get(a).or_else(|| Field::get(b)).map(str::to_owned)
            };
            let owner_name = [
                ("Deployment", either(&f.deployment, &f.deployment_legacy)),
                ("ReplicaSet", either(&f.replicaset, &f.replicaset_legacy)),
                ("StatefulSet", either(&f.statefulset, &f.statefulset_legacy)),
                ("DaemonSet", either(&f.daemonset, &f.daemonset_legacy)),
                ("CronJob", either(&f.cronjob, &f.cronjob_legacy)),
                ("Job", either(&f.job, &f.job_legacy)),
            ]
            .into_iter()
            .find_map(|(kind, name)| name.map(|n| (kind, n)));
            let owner = owner_name.as_ref().map(|(k, n)| (*k, n.as_str()));
            Some(workload_of(pod, owner, labels.as_ref()))
        };
        let image = match (Field::get(&f.repository), Field::get(&f.tag)) {
            (Some(r), Some(t)) => {
                let mut s = String::with_capacity(r.len() + 1 + t.len());
                s.push_str(r);
                s.push(':');
                s.push_str(t);
                s
            }
            (Some(r), None) => r.to_owned(),
            _ => String::new(),
        };
        let summary = non_empty(ev.output.as_deref()).unwrap_or(rule);
        Ok(Self {
            id: runtime_event_id(cluster_id, raw),
            tenant_id: tenant_id.into(),
            cluster_id: cluster_id.into(),
            source: Source::Runtime,
            occurred_at,
            severity: Severity::from_falco_priority(priority_text).unwrap_or(Severity::Info),
            rule: rule.into(),
            summary: truncate(summary, MAX_SUMMARY_BYTES).to_owned(),
            action: priority.action(),
            namespace: namespace.into(),
            pod: pod.into(),
            pod_uid: Field::get(&f.pod_uid).unwrap_or("").into(),
            container: Field::get(&f.container).unwrap_or("").into(),
            image,
            digest: Field::get(&f.digest).unwrap_or("").into(),
            subresource: CompactString::default(),
            workload,
            labels,
            mitigation: None,
            details_json: text.to_owned(),
        })
    }
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.trim().is_empty())
}

mod bus;
pub use bus::BusEventError;

#[cfg(test)]
pub(crate) mod tests;
