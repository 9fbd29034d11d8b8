//! The alert lifecycle and the cluster risk score.
//!
//! An alert is `open` when it opens, `acknowledged` once someone looks at it, `closed` when
//! dealt with. Allowed changes: open → acknowledged, open → closed, acknowledged → closed,
//! and closed → open (a person reopens an alert closed too early). Acknowledged → open is not
//! allowed (nothing is gained by un-acknowledging; close or keep it). Asking for the status
//! an alert already has is not a change: [`AlertStatus::transition`] answers `Ok(false)`, so
//! a retried request succeeds. Every other change is an [`InvalidTransition`].
//!
//! An acknowledged alert is still open: it counts in the risk score and keeps receiving the
//! events of its rule and entity. The risk score of a cluster is the sum over its open and
//! acknowledged alerts of critical 10, high 5, medium 2, low 1 (info 0).

use std::fmt;
use std::str::FromStr;

use crate::event::{Severity, UnknownName};

/// An alert's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertStatus {
    /// New; nobody has looked at it.
    Open,
    /// Someone is looking at it; still open.
    Acknowledged,
    /// Dealt with.
    Closed,
}

/// A status change the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an alert cannot go from {from} to {to}")]
pub struct InvalidTransition {
    /// The status it has.
    pub from: AlertStatus,
    /// The status asked for.
    pub to: AlertStatus,
}

impl AlertStatus {
    /// Every status.
    pub const ALL: [AlertStatus; 3] = [Self::Open, Self::Acknowledged, Self::Closed];

    /// The name used in the API, the CLI and storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Acknowledged => "acknowledged",
            Self::Closed => "closed",
        }
    }

    /// True for open and acknowledged alerts (they count in the risk score and take new
    /// events).
    pub const fn is_open(self) -> bool {
        matches!(self, Self::Open | Self::Acknowledged)
    }

    /// Checks the change to `to`: `Ok(true)` when it is a change, `Ok(false)` when the alert
    /// already has that status, an error when the lifecycle does not allow it.
    pub fn transition(self, to: AlertStatus) -> Result<bool, InvalidTransition> {
        use AlertStatus::{Acknowledged, Closed, Open};
        match (self, to) {
            (a, b) if a == b => Ok(false),
            (Open, Acknowledged) | (Open, Closed) | (Acknowledged, Closed) | (Closed, Open) => Ok(true),
            (from, to) => Err(InvalidTransition { from, to }),
        }
    }
}

impl fmt::Display for AlertStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AlertStatus {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownName {
                what: "alert status",
                value: s.to_owned(),
                expected: "open, acknowledged, closed",
            })
    }
}

/// What an alert of `severity` adds to its cluster's risk score while open.
pub const fn risk_weight(severity: Severity) -> u64 {
    match severity {
        Severity::Critical => 10,
        Severity::High => 5,
        Severity::Medium => 2,
        Severity::Low => 1,
        Severity::Info => 0,
    }
}

/// The risk score of a cluster from its alerts' (status, severity): the sum of
/// [`risk_weight`] over the open and acknowledged ones.
pub fn risk_score<I: IntoIterator<Item = (AlertStatus, Severity)>>(alerts: I) -> u64 {
    alerts
        .into_iter()
        .filter(|(status, _)| status.is_open())
        .map(|(_, s)| risk_weight(s))
        .sum()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
    use super::AlertStatus::{Acknowledged, Closed, Open};
    use super::*;

    #[test]
    fn allowed_transitions() {
        assert_eq!(Open.transition(Acknowledged), Ok(true));
        assert_eq!(Open.transition(Closed), Ok(true));
        assert_eq!(Acknowledged.transition(Closed), Ok(true));
        assert_eq!(Closed.transition(Open), Ok(true));
    }

    #[test]
    fn same_status_is_no_change() {
        for s in AlertStatus::ALL {
            assert_eq!(s.transition(s), Ok(false));
        }
    }

    #[test]
    fn invalid_transitions_are_errors() {
        assert_eq!(
            Acknowledged.transition(Open),
            Err(InvalidTransition {
                from: Acknowledged,
                to: Open
            })
        );
        assert_eq!(
            Closed.transition(Acknowledged),
            Err(InvalidTransition {
                from: Closed,
                to: Acknowledged
            })
        );
        assert_eq!(
            Closed.transition(Acknowledged).unwrap_err().to_string(),
            "an alert cannot go from closed to acknowledged"
        );
    }

    #[test]
    fn status_names_round_trip() {
        for s in AlertStatus::ALL {
            assert_eq!(s.as_str().parse::<AlertStatus>(), Ok(s));
        }
        assert!("resolved".parse::<AlertStatus>().is_err());
    }

    #[test]
    fn risk_score_sums_open_and_acknowledged_alerts() {
        let alerts = [
            (Open, Severity::Critical),
            (Acknowledged, Severity::High),
            (Open, Severity::Medium),
            (Open, Severity::Low),
            (Open, Severity::Info),
            (Closed, Severity::Critical),
        ];
        assert_eq!(risk_score(alerts), 10 + 5 + 2 + 1);
        assert_eq!(risk_score([(Closed, Severity::High)]), 0);
        assert_eq!(risk_score([]), 0);
    }
}
