//! The bus error type.

use std::time::Duration;

/// Everything a bus operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// An argument was refused before anything was sent; `field` names it.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field (`tenant`, `topic`, `id`, `subject`, `headers`, `durable`, `config`, ...).
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The event or message is larger than `BusConfig::max_event_bytes`.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Its size in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A request found nobody serving its subject (NATS "no responders").
    #[error("no responders on subject {subject}")]
    NoResponders {
        /// The request subject.
        subject: String,
    },
    /// The operation did not complete within its deadline.
    #[error("{operation} timed out after {timeout:?}")]
    Timeout {
        /// What timed out (`publish`, `request`, `ack`, ...).
        operation: &'static str,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The NATS server could not be reached or refused the connection.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The server URL.
        url: String,
        /// The client's explanation.
        reason: String,
    },
    /// NATS or JetStream returned an error.
    #[error("{operation} failed: {reason}")]
    Nats {
        /// The operation (`publish`, `create stream`, `create consumer`, ...).
        operation: &'static str,
        /// The client's or server's explanation.
        reason: String,
    },
    /// A received request carries no reply subject, so it cannot be answered.
    #[error("the request has no reply subject")]
    NoReplySubject,
}

impl BusError {
    pub(crate) fn nats(operation: &'static str, err: impl std::fmt::Display) -> Self {
        Self::Nats {
            operation,
            reason: err.to_string(),
        }
    }

    /// Whether retrying later may succeed (timeouts and transport errors), as opposed to
    /// arguments that will always be refused.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. } | Self::Connect { .. } | Self::Nats { .. } | Self::NoResponders { .. }
        )
    }
}
