//! The events the store publishes: topics, the protobuf envelope, and the conversions its
//! payloads need.

use portcullis_domain::Topic;
use portcullis_engine::scan::{CvssMetric, ScanType, Severity};
use portcullis_proto::common::v1 as pc;
use portcullis_proto::events::v1 as pe;
use prost::Message;
use time::OffsetDateTime;

use crate::model::{Actor, ScanRecord};

/// The subject an event of `tenant` and `topic` is published on: `pc.<tenant>.evt.<topic>`.
pub use portcullis_domain::topic::event_subject as subject;

/// A protobuf timestamp.
pub fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        // Always below 10^9, so it fits.
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

/// The topic of a payload.
pub fn topic_of(payload: &pe::event_envelope::Payload) -> &'static str {
    use pe::event_envelope::Payload as P;
    match payload {
        P::PolicyChanged(_) => Topic::PolicyChanged,
        P::ClusterChanged(_) => Topic::ClusterChanged,
        P::AttestorChanged(_) => Topic::AttestorChanged,
        P::RulesetChanged(_) => Topic::RulesetChanged,
        P::ApiKeyRevoked(_) => Topic::ApiKeyRevoked,
        P::ScanResultStored(_) => Topic::ScanResult,
        P::AdmissionDecision(_) => Topic::AdmissionDecision,
        P::ContinuousFinding(_) => Topic::ContinuousFinding,
        P::ContinuousMitigation(_) => Topic::ContinuousMitigation,
        P::SignatureVerdict(_) => Topic::SignatureVerdict,
        P::RuntimeMitigation(_) => Topic::RuntimeMitigation,
    }
    .as_str()
}

/// An encoded envelope, ready for the outbox, with the envelope itself (for the store's
/// commit listeners).
pub(crate) struct EncodedEvent {
    pub event_id: String,
    pub topic: &'static str,
    pub payload: Vec<u8>,
    pub envelope: pe::EventEnvelope,
}

/// Builds and encodes the envelope of one event.
pub(crate) fn envelope(
    tenant_id: &str,
    producer: &str,
    actor: &Actor,
    occurred_at: OffsetDateTime,
    payload: pe::event_envelope::Payload,
) -> EncodedEvent {
    let event_id = uuid::Uuid::new_v4().to_string();
    let topic = topic_of(&payload);
    let trace = actor.traceparent.as_ref().map(|tp| pe::TraceContext {
        traceparent: tp.clone(),
        tracestate: actor.tracestate.clone().unwrap_or_default(),
    });
    let envelope = pe::EventEnvelope {
        event_id: event_id.clone(),
        tenant_id: tenant_id.to_owned(),
        topic: topic.to_owned(),
        occurred_at: Some(timestamp(occurred_at)),
        trace,
        producer: producer.to_owned(),
        payload: Some(payload),
    };
    EncodedEvent {
        event_id,
        topic,
        payload: envelope.encode_to_vec(),
        envelope,
    }
}

/// The protobuf severity.
pub fn severity_to_proto(s: Severity) -> pc::Severity {
    match s {
        Severity::None => pc::Severity::None,
        Severity::Unknown => pc::Severity::Unknown,
        Severity::Negligible => pc::Severity::Negligible,
        Severity::Low => pc::Severity::Low,
        Severity::Medium => pc::Severity::Medium,
        Severity::High => pc::Severity::High,
        Severity::Critical => pc::Severity::Critical,
    }
}

/// The protobuf scan type.
pub fn scan_type_to_proto(t: ScanType) -> pc::ScanType {
    match t {
        ScanType::Vulnerability => pc::ScanType::Vulnerability,
        ScanType::Malware => pc::ScanType::Malware,
        ScanType::Secret => pc::ScanType::Secret,
    }
}

/// The protobuf CVSS metric.
pub fn cvss_metric_to_proto(m: CvssMetric) -> pc::CvssMetric {
    match m {
        CvssMetric::AttackVector => pc::CvssMetric::AttackVector,
        CvssMetric::AttackComplexity => pc::CvssMetric::AttackComplexity,
        CvssMetric::Availability => pc::CvssMetric::Availability,
    }
}

/// The protobuf summary of a stored scan result.
pub fn scan_summary_to_proto(record: &ScanRecord) -> pc::ScanSummary {
    pc::ScanSummary {
        digest: record.digest.clone(),
        scan_type: scan_type_to_proto(record.scan_type) as i32,
        scanned_at: Some(timestamp(record.scanned_at)),
        scanner: record.scanner.clone(),
        findings: record.findings,
        max_severity: record.max_severity.map_or(pc::Severity::Unspecified, severity_to_proto) as i32,
        cvss: record
            .cvss
            .iter()
            .map(|c| pc::CvssSeverity {
                metric: cvss_metric_to_proto(c.metric) as i32,
                value: c.value.to_owned(),
                max_severity: severity_to_proto(c.max_severity) as i32,
            })
            .collect(),
        result_id: record.id.clone(),
    }
}
