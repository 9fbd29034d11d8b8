//! The registry of event topics and the one place subjects are formatted.
//!
//! Events travel on `pc.<tenant>.evt.<topic>` (stored in the JetStream stream over
//! [`EVENT_SUBJECTS`]); mitigation commands on core NATS `pc.<tenant>.cmd.<cluster>`;
//! request/reply on `pc.rpc.<service>.<method>` with the tenant in the message.

use std::fmt;
use std::str::FromStr;

use crate::ids::{ClusterId, TenantId};
use crate::modes::UnknownValue;

/// Every event subject: the JetStream stream's subject filter.
pub const EVENT_SUBJECTS: &str = "pc.*.evt.>";

/// The request/reply subject of signature verification (tenant in the message).
pub const SIGNATURE_VERIFY_SUBJECT: &str = "pc.rpc.signature.verify";

/// The request/reply subject of tag-to-digest resolution (tenant in the message), served
/// by the signature service in the same queue group as [`SIGNATURE_VERIFY_SUBJECT`].
pub const SIGNATURE_RESOLVE_SUBJECT: &str = "pc.rpc.signature.resolve";

macro_rules! topics {
    ($($(#[$doc:meta])* $variant:ident = $text:literal by $owner:literal),+ $(,)?) => {
        /// An event topic (ARCHITECTURE.md, "The five services"). The publisher of each is
        /// [`Topic::publisher`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Topic {
            $($(#[$doc])* $variant,)+
        }

        impl Topic {
            /// Every topic.
            pub const ALL: &'static [Topic] = &[$(Topic::$variant),+];

            /// The topic as it stands in subjects (`policy.changed`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Topic::$variant => $text,)+
                }
            }

            /// The service that publishes it.
            pub fn publisher(self) -> &'static str {
                match self {
                    $(Topic::$variant => $owner,)+
                }
            }
        }

        impl FromStr for Topic {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Topic, UnknownValue> {
                match s {
                    $($text => Ok(Topic::$variant),)+
                    _ => Err(UnknownValue { value: s.to_owned(), expected: [$($text),+].join(", ") }),
                }
            }
        }
    };
}

topics! {
    /// A policy was created, changed or deleted.
    PolicyChanged = "policy.changed" by "policy-store",
    /// A cluster was registered, changed (assignment, settings) or deleted.
    ClusterChanged = "cluster.changed" by "policy-store",
    /// An attestor was created, changed or deleted.
    AttestorChanged = "attestor.changed" by "policy-store",
    /// A runtime ruleset was created, changed or deleted.
    RulesetChanged = "ruleset.changed" by "policy-store",
    /// An API key stopped working (revoked, or a rotated key past its grace period).
    ApiKeyRevoked = "apikey.revoked" by "policy-store",
    /// An image scan result was stored.
    ScanResult = "scan.result" by "policy-store",
    /// Admission decided a review.
    AdmissionDecision = "admission.decision" by "admission",
    /// A continuous finding opened or resolved.
    ContinuousFinding = "continuous.finding" by "continuous",
    /// A mitigation command was issued or acknowledged.
    ContinuousMitigation = "continuous.mitigation" by "continuous",
    /// A signature verification verdict.
    SignatureVerdict = "signature.verdict" by "signature",
    /// A runtime detection asks for a mitigation.
    RuntimeMitigation = "runtime.mitigation" by "telemetry",
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Topic> for String {
    fn from(topic: Topic) -> String {
        topic.as_str().to_owned()
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// The subject of an event: `pc.<tenant>.evt.<topic>`. The one place it is formatted; the
/// bus validates both parts.
pub fn event_subject(tenant: &str, topic: &str) -> String {
    format!("pc.{tenant}.evt.{topic}")
}

/// Splits `pc.<tenant>.evt.<topic>` into tenant and topic (neither validated).
pub fn parse_event_subject(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix("pc.")?;
    let (tenant, rest) = rest.split_once('.')?;
    let topic = rest.strip_prefix("evt.")?;
    (!tenant.is_empty() && !topic.is_empty()).then_some((tenant, topic))
}

/// The core subject carrying a cluster's mitigation commands between continuous replicas:
/// `pc.<tenant>.cmd.<cluster>`. Both ids are validated, so neither can add a token.
pub fn command_subject(tenant: &TenantId, cluster: &ClusterId) -> String {
    format!("pc.{tenant}.cmd.{cluster}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn topics_round_trip_and_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for topic in Topic::ALL {
            assert_eq!(topic.as_str().parse::<Topic>(), Ok(*topic));
            assert!(seen.insert(topic.as_str()), "{topic} twice");
        }
        assert!("policy".parse::<Topic>().is_err());
    }

    #[test]
    fn subjects() {
        let s = event_subject("acme", Topic::PolicyChanged.as_str());
        assert_eq!(s, "pc.acme.evt.policy.changed");
        assert_eq!(parse_event_subject(&s), Some(("acme", "policy.changed")));
        assert_eq!(parse_event_subject("pc.acme.cmd.c1"), None);
        let (t, c) = (TenantId::parse("acme").unwrap(), ClusterId::parse("c-1").unwrap());
        assert_eq!(command_subject(&t, &c), "pc.acme.cmd.c-1");
    }
}
