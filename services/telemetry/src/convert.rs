//! Conversions between the domain types and the `portcullis.telemetry.v1` messages.

use portcullis_proto::common::v1 as pc;
use portcullis_proto::telemetry::v1 as pt;
use time::OffsetDateTime;

use crate::alert::AlertStatus;
use crate::entity::Workload;
use crate::event::{Mitigation, SecurityEvent, Severity, Source};

/// A protobuf timestamp.
pub fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    // The nanosecond is always below 10^9, so it fits.
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

/// The time of a protobuf timestamp; `None` when out of range.
pub fn time_of(ts: &prost_types::Timestamp) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos)).ok()
}

impl Source {
    /// The protobuf value.
    pub const fn to_proto(self) -> pt::EventSource {
        match self {
            Self::Runtime => pt::EventSource::Runtime,
            Self::Admission => pt::EventSource::Admission,
            Self::Finding => pt::EventSource::Finding,
            Self::Mitigation => pt::EventSource::Mitigation,
            Self::Signature => pt::EventSource::Signature,
        }
    }

    /// From the protobuf value; `None` for unspecified or unknown values.
    pub fn from_proto(v: i32) -> Option<Self> {
        Some(match pt::EventSource::try_from(v).ok()? {
            pt::EventSource::Runtime => Self::Runtime,
            pt::EventSource::Admission => Self::Admission,
            pt::EventSource::Finding => Self::Finding,
            pt::EventSource::Mitigation => Self::Mitigation,
            pt::EventSource::Signature => Self::Signature,
            pt::EventSource::Unspecified => return None,
        })
    }
}

impl Severity {
    /// The protobuf value.
    pub const fn to_proto(self) -> pt::EventSeverity {
        match self {
            Self::Info => pt::EventSeverity::Info,
            Self::Low => pt::EventSeverity::Low,
            Self::Medium => pt::EventSeverity::Medium,
            Self::High => pt::EventSeverity::High,
            Self::Critical => pt::EventSeverity::Critical,
        }
    }

    /// From the protobuf value; `None` for unspecified or unknown values.
    pub fn from_proto(v: i32) -> Option<Self> {
        Some(match pt::EventSeverity::try_from(v).ok()? {
            pt::EventSeverity::Info => Self::Info,
            pt::EventSeverity::Low => Self::Low,
            pt::EventSeverity::Medium => Self::Medium,
            pt::EventSeverity::High => Self::High,
            pt::EventSeverity::Critical => Self::Critical,
            pt::EventSeverity::Unspecified => return None,
        })
    }
}

impl AlertStatus {
    /// The protobuf value.
    pub const fn to_proto(self) -> pt::AlertStatus {
        match self {
            Self::Open => pt::AlertStatus::Open,
            Self::Acknowledged => pt::AlertStatus::Acknowledged,
            Self::Closed => pt::AlertStatus::Closed,
        }
    }

    /// From the protobuf value; `None` for unspecified or unknown values.
    pub fn from_proto(v: i32) -> Option<Self> {
        Some(match pt::AlertStatus::try_from(v).ok()? {
            pt::AlertStatus::Open => Self::Open,
            pt::AlertStatus::Acknowledged => Self::Acknowledged,
            pt::AlertStatus::Closed => Self::Closed,
            pt::AlertStatus::Unspecified => return None,
        })
    }
}

impl Mitigation {
    /// The protobuf value.
    pub const fn to_proto(self) -> pc::Mitigation {
        match self {
            Self::Log => pc::Mitigation::Log,
            Self::Isolate => pc::Mitigation::Isolate,
            Self::Terminate => pc::Mitigation::Terminate,
        }
    }
}

impl Workload {
    /// The protobuf message.
    pub fn to_proto(&self) -> pt::Workload {
        pt::Workload {
            kind: self.kind.to_string(),
            name: self.name.to_string(),
        }
    }
}

impl SecurityEvent {
    /// The protobuf message, with the ids of the alerts it is part of.
    pub fn to_proto(&self, alert_ids: Vec<String>) -> pt::SecurityEvent {
        pt::SecurityEvent {
            id: self.id.to_string(),
            source: self.source.to_proto() as i32,
            cluster_id: self.cluster_id.to_string(),
            occurred_at: Some(timestamp(self.occurred_at)),
            severity: self.severity.to_proto() as i32,
            rule: self.rule.to_string(),
            summary: self.summary.clone(),
            pod: (!self.pod.is_empty()).then(|| pc::PodKey {
                namespace: self.namespace.to_string(),
                name: self.pod.to_string(),
                uid: self.pod_uid.to_string(),
            }),
            container: self.container.to_string(),
            image: self.image.clone(),
            details_json: self.details_json.clone().into_bytes().into(),
            mitigation: self.mitigation.map_or(pc::Mitigation::None, Mitigation::to_proto) as i32,
            alert_ids,
            action: self.action.as_str().to_owned(),
            namespace: self.namespace.to_string(),
            workload: self.workload.as_ref().map(Workload::to_proto),
            digest: self.digest.to_string(),
            subresource: self.subresource.to_string(),
            labels: self
                .labels
                .iter()
                .flatten()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;
    use crate::event::tests::sample_event;

    #[test]
    fn enums_round_trip() {
        for s in Source::ALL {
            assert_eq!(Source::from_proto(s.to_proto() as i32), Some(s));
        }
        for s in Severity::ALL {
            assert_eq!(Severity::from_proto(s.to_proto() as i32), Some(s));
        }
        for s in AlertStatus::ALL {
            assert_eq!(AlertStatus::from_proto(s.to_proto() as i32), Some(s));
        }
        assert_eq!(Source::from_proto(0), None);
        assert_eq!(Severity::from_proto(99), None);
    }

    #[test]
    fn event_to_proto_keeps_the_fields() {
        let e = sample_event();
        let p = e.to_proto(vec!["a1".into()]);
        assert_eq!(p.id, "e1");
        assert_eq!(p.source, pt::EventSource::Runtime as i32);
        assert_eq!(p.severity, pt::EventSeverity::High as i32);
        assert_eq!(p.action, "notice");
        assert_eq!(p.pod.unwrap().name, "web-7c9f8d6b5-x2x4q");
        assert_eq!(p.workload.unwrap().kind, "Deployment");
        assert_eq!(p.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(p.mitigation, pc::Mitigation::None as i32);
        assert_eq!(time_of(&p.occurred_at.unwrap()), Some(e.occurred_at));
        assert_eq!(p.alert_ids, vec!["a1"]);
    }
}
