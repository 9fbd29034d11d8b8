//! Events, topic filters and the subject rules shared by both implementations.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::BusError;

/// Message headers: name → value. Names are case-sensitive and travel as NATS headers.
pub type Headers = BTreeMap<String, String>;

/// W3C trace context header carrying the trace and parent span ids.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace context header carrying vendor-specific trace state.
pub const TRACESTATE: &str = "tracestate";

/// Longest accepted event id (it becomes the `Nats-Msg-Id` header).
pub const MAX_EVENT_ID_LEN: usize = 256;
/// Longest accepted topic.
pub const MAX_TOPIC_LEN: usize = 128;
/// Longest accepted core subject.
pub const MAX_SUBJECT_LEN: usize = 256;
/// Longest accepted header name.
pub const MAX_HEADER_NAME_LEN: usize = 128;
/// Longest accepted header value.
pub const MAX_HEADER_VALUE_LEN: usize = 4096;

/// One event: published to `pc.<tenant>.evt.<topic>` and kept in the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unique id; the de-duplication key (`Nats-Msg-Id`). Visible ASCII, 1 to 256 characters.
    pub id: String,
    /// Tenant id, `[a-z0-9-]{1,36}`.
    pub tenant: String,
    /// Topic, dot-separated tokens of `[a-z0-9_-]`, for example `policy.changed`.
    pub topic: String,
    /// Opaque payload (in Portcullis an encoded `EventEnvelope`).
    pub payload: Bytes,
    /// Headers such as the W3C trace context (`traceparent`, `tracestate`).
    pub headers: Headers,
}

impl Event {
    /// An event without headers.
    pub fn new(id: impl Into<String>, tenant: impl Into<String>, topic: impl Into<String>, payload: Bytes) -> Self {
        Self {
            id: id.into(),
            tenant: tenant.into(),
            topic: topic.into(),
            payload,
            headers: Headers::new(),
        }
    }

    /// Adds (or replaces) one header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// The subject this event is published on: `pc.<tenant>.evt.<topic>`.
    pub fn subject(&self) -> String {
        event_subject(&self.tenant, &self.topic)
    }

    /// The `traceparent` header, when present.
    pub fn traceparent(&self) -> Option<&str> {
        self.headers.get(TRACEPARENT).map(String::as_str)
    }

    /// Checks id, tenant, topic and headers; both implementations call it before publishing.
    pub fn validate(&self) -> Result<(), BusError> {
        validate_event_id(&self.id)?;
        validate_tenant(&self.tenant)?;
        validate_topic(&self.topic)?;
        validate_headers(&self.headers)
    }

    /// Bytes counted against the size limits: payload, headers, id and subject.
    pub fn size(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
        self.payload.len() + headers + self.id.len() + self.tenant.len() + self.topic.len() + 8
    }
}

/// The result of a publish: where the event sits in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Stream sequence of the event (of the original one when `duplicate`).
    pub sequence: u64,
    /// True when the id was already published inside the duplicate window: nothing was stored.
    pub duplicate: bool,
}

/// An event read from the stream, with its stream sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedEvent {
    /// The event.
    pub event: Event,
    /// Its stream sequence.
    pub sequence: u64,
}

/// Which events a subscription gets: some topics (or all), for every tenant or one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicFilter {
    /// Topics to receive; empty means every topic.
    pub topics: Vec<String>,
    /// Only this tenant's events; `None` means every tenant.
    pub tenant: Option<String>,
}

impl TopicFilter {
    /// Every topic of every tenant.
    pub fn all() -> Self {
        Self::default()
    }

    /// These topics, for every tenant.
    pub fn topics<I, S>(topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            topics: topics.into_iter().map(Into::into).collect(),
            tenant: None,
        }
    }

    /// Restricts the filter to one tenant.
    #[must_use]
    pub fn for_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Checks the tenant and every topic.
    pub fn validate(&self) -> Result<(), BusError> {
        if let Some(tenant) = &self.tenant {
            validate_tenant(tenant)?;
        }
        self.topics.iter().try_for_each(|t| validate_topic(t))
    }

    /// Whether an event of this tenant and topic passes the filter.
    pub fn matches(&self, tenant: &str, topic: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
            && (self.topics.is_empty() || self.topics.iter().any(|t| t == topic))
    }

    /// The NATS filter subjects, without duplicates (JetStream refuses overlapping filters).
    pub fn subjects(&self) -> Vec<String> {
        let tenant = self.tenant.as_deref().unwrap_or("*");
        if self.topics.is_empty() {
            return vec![event_subject(tenant, ">")];
        }
        let mut subjects: Vec<String> = self.topics.iter().map(|t| event_subject(tenant, t)).collect();
        subjects.sort();
        subjects.dedup();
        subjects
    }
}

/// Where a broadcast subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// Only events published after the subscription is made.
    New,
    /// From this stream sequence, inclusive (0 and 1 both mean the oldest retained event).
    /// Events already dropped by the limits are skipped.
    Sequence(u64),
}

impl StartFrom {
    /// Starts right after `last`, the value `last_sequence()` returned when a snapshot was taken.
    pub fn after(last: u64) -> Self {
        Self::Sequence(last.saturating_add(1))
    }
}

/// `pc.<tenant>.evt.<topic>` and its reading back: formatted in one place, the domain crate.
pub use portcullis_domain::topic::{event_subject, parse_event_subject};

fn invalid(field: &'static str, reason: impl Into<String>) -> BusError {
    BusError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Tenant ids are `[a-z0-9-]{1,36}`.
pub fn validate_tenant(tenant: &str) -> Result<(), BusError> {
    portcullis_domain::TenantId::parse(tenant)
        .map(drop)
        .map_err(|e| invalid("tenant", e.reason))
}

/// Topics are dot-separated non-empty tokens of `[a-z0-9_-]`, at most 128 characters.
pub fn validate_topic(topic: &str) -> Result<(), BusError> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
        return Err(invalid(
            "topic",
            format!("{topic:?} must be 1 to {MAX_TOPIC_LEN} characters"),
        ));
    }
    for token in topic.split('.') {
        if token.is_empty() {
            return Err(invalid(
                "topic",
                format!("{topic:?} has an empty token (leading, trailing or double '.')"),
            ));
        }
        if !token
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(invalid(
                "topic",
                format!("{topic:?} may only contain a-z, 0-9, '_', '-' and '.' between tokens"),
            ));
        }
    }
    Ok(())
}

/// Event ids are 1 to 256 visible ASCII characters (they travel as a header value).
pub fn validate_event_id(id: &str) -> Result<(), BusError> {
    if id.is_empty() || id.len() > MAX_EVENT_ID_LEN {
        return Err(invalid("id", format!("must be 1 to {MAX_EVENT_ID_LEN} characters")));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "id",
            format!("{id:?} may only contain visible ASCII characters"),
        ));
    }
    Ok(())
}

/// Durable (work consumer) names are 1 to 64 characters of `[A-Za-z0-9_-]`.
pub fn validate_durable(name: &str) -> Result<(), BusError> {
    if name.is_empty() || name.len() > 64 {
        return Err(invalid("durable", format!("{name:?} must be 1 to 64 characters")));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(invalid(
            "durable",
            format!("{name:?} may only contain A-Z, a-z, 0-9, '_' and '-'"),
        ));
    }
    Ok(())
}

/// Queue group names follow the durable name rules.
pub fn validate_queue_group(group: &str) -> Result<(), BusError> {
    validate_durable(group).map_err(|_| {
        invalid(
            "queue_group",
            format!("{group:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'"),
        )
    })
}

/// Header names are visible ASCII without ':'; `Nats-` names are reserved for the bus.
/// Values may not contain CR or LF.
pub fn validate_headers(headers: &Headers) -> Result<(), BusError> {
    for (name, value) in headers {
        if name.is_empty() || name.len() > MAX_HEADER_NAME_LEN {
            return Err(invalid(
                "headers",
                format!("name {name:?} must be 1 to {MAX_HEADER_NAME_LEN} characters"),
            ));
        }
        if !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(invalid(
                "headers",
                format!("name {name:?} may only contain visible ASCII without ':'"),
            ));
        }
        if name.len() >= 5 && name.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("nats-")) {
            return Err(invalid("headers", format!("name {name:?} is reserved (Nats- prefix)")));
        }
        if value.len() > MAX_HEADER_VALUE_LEN || value.contains(['\r', '\n']) {
            return Err(invalid(
                "headers",
                format!("value of {name:?} must be at most {MAX_HEADER_VALUE_LEN} characters without CR or LF"),
            ));
        }
    }
    Ok(())
}

/// Whether a header received from NATS belongs to the bus itself (`Nats-Msg-Id` and friends).
pub(crate) fn is_reserved_header(name: &str) -> bool {
    name.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("nats-"))
}

/// Validates a core subject (`publish_core`, `request`: no wildcards) or subject pattern
/// (`subscribe_core`, `serve`: `*` and a final `>` allowed). Event subjects are refused:
/// they belong to the stream and are published with `publish`.
pub fn validate_core_subject(subject: &str, allow_wildcards: bool) -> Result<(), BusError> {
    if subject.is_empty() || subject.len() > MAX_SUBJECT_LEN {
        return Err(invalid(
            "subject",
            format!("{subject:?} must be 1 to {MAX_SUBJECT_LEN} characters"),
        ));
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    let last = tokens.len().saturating_sub(1);
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err(invalid("subject", format!("{subject:?} has an empty token")));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "subject",
                format!("{subject:?} may only contain visible ASCII characters"),
            ));
        }
        let wildcard = *token == "*" || (*token == ">" && i == last);
        if token.contains(['*', '>']) && !(allow_wildcards && wildcard) {
            return Err(invalid(
                "subject",
                if allow_wildcards {
                    format!("{subject:?}: '*' must be a whole token and '>' the whole last token")
                } else {
                    format!("{subject:?} may not contain wildcards")
                },
            ));
        }
    }
    if overlaps(&tokens, &["pc", "*", "evt", ">"]) {
        return Err(invalid(
            "subject",
            format!("{subject:?} overlaps the event subjects pc.*.evt.>; events go through publish and subscriptions"),
        ));
    }
    Ok(())
}

/// Whether two subject patterns can match a common subject.
fn overlaps(a: &[&str], b: &[&str]) -> bool {
    match (a.split_first(), b.split_first()) {
        (Some((&">", _)), Some(_)) | (Some(_), Some((&">", _))) => true,
        (Some((x, ra)), Some((y, rb))) => (x == y || *x == "*" || *y == "*") && overlaps(ra, rb),
        (None, None) => true,
        _ => false,
    }
}

/// Whether `subject` (no wildcards) matches `pattern` (`*` one token, final `>` one or more).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn tenants() {
        assert!(validate_tenant("3f2a-acme").is_ok());
        assert!(validate_tenant(&"a".repeat(36)).is_ok());
        for bad in ["", "Acme", "a.b", "a*", "a b", ">", &"a".repeat(37)] {
            assert!(validate_tenant(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn topics() {
        for good in ["policy.changed", "scan.result", "a", "a_b-c.d"] {
            assert!(validate_topic(good).is_ok(), "{good:?} refused");
        }
        for bad in ["", ".a", "a.", "a..b", "a.*", "a.>", "a b", "A", "a\nb"] {
            let err = validate_topic(bad).unwrap_err();
            assert!(
                matches!(err, BusError::Invalid { field: "topic", .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn subjects_parse_back() {
        let subject = event_subject("acme", "policy.changed");
        assert_eq!(subject, "pc.acme.evt.policy.changed");
        assert_eq!(parse_event_subject(&subject), Some(("acme", "policy.changed")));
        assert_eq!(parse_event_subject("pc.acme.cmd.c1"), None);
        assert_eq!(parse_event_subject("pc.acme.evt."), None);
    }

    #[test]
    fn filters() {
        let f = TopicFilter::topics(["b", "a", "a"]);
        assert_eq!(f.subjects(), vec!["pc.*.evt.a", "pc.*.evt.b"]);
        assert!(f.matches("t1", "a") && f.matches("t2", "b") && !f.matches("t1", "c"));
        let f = f.for_tenant("t1");
        assert_eq!(f.subjects(), vec!["pc.t1.evt.a", "pc.t1.evt.b"]);
        assert!(f.matches("t1", "a") && !f.matches("t2", "a"));
        assert_eq!(TopicFilter::all().subjects(), vec!["pc.*.evt.>"]);
        assert!(TopicFilter::all().matches("x", "y.z"));
    }

    #[test]
    fn core_subjects() {
        assert!(validate_core_subject("pc.rpc.signature.verify", false).is_ok());
        assert!(validate_core_subject("pc.t1.cmd.c1", false).is_ok());
        assert!(validate_core_subject("pc.*.cmd.>", true).is_ok());
        assert!(validate_core_subject("pc.*.cmd.>", false).is_err());
        assert!(validate_core_subject("pc.t1.evt.x", false).is_err());
        assert!(validate_core_subject("pc.>", true).is_err());
        assert!(validate_core_subject(">", true).is_err());
        assert!(validate_core_subject("pc.*.evt", true).is_ok());
        assert!(validate_core_subject("a..b", false).is_err());
        assert!(validate_core_subject("a.>.b", true).is_err());
        assert!(validate_core_subject("a b", false).is_err());
    }

    #[test]
    fn matching() {
        assert!(subject_matches("pc.*.cmd.>", "pc.t1.cmd.c1"));
        assert!(subject_matches("pc.*.cmd.>", "pc.t1.cmd.c1.x"));
        assert!(!subject_matches("pc.*.cmd.>", "pc.t1.cmd"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(!subject_matches("a.*", "a"));
    }

    #[test]
    fn headers() {
        let mut h = Headers::new();
        h.insert(
            TRACEPARENT.into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        );
        assert!(validate_headers(&h).is_ok());
        for (k, v) in [("Nats-Msg-Id", "x"), ("a:b", "x"), ("a b", "x"), ("ok", "x\r\ny")] {
            let mut bad = Headers::new();
            bad.insert(k.into(), v.into());
            assert!(validate_headers(&bad).is_err(), "{k:?}={v:?} accepted");
        }
    }
}
