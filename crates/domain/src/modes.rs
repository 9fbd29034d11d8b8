//! The role of an API key and the failure mode of a cluster: closed sets with one spelling
//! each (`admin`, `fail-closed`, ...) used by the API, the CLI, storage and logs.

use std::fmt;
use std::str::FromStr;

/// A string that names no value of a closed set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not one of {expected}")]
pub struct UnknownValue {
    /// What was given.
    pub value: String,
    /// The accepted spellings, comma-separated.
    pub expected: String,
}

macro_rules! closed_set {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $(
                $(#[$vdoc])*
                #[serde(rename = $text)]
                $variant,
            )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The one spelling of the value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue {
                        value: s.to_owned(),
                        expected: [$($text),+].join(", "),
                    }),
                }
            }
        }
    };
}

closed_set! {
    /// The role of a tenant API key (ARCHITECTURE.md, "Tenancy and access"). What each may
    /// call is in the server's one permission table.
    Role {
        /// Everything in the tenant, including keys and the audit log.
        Admin = "admin",
        /// Reads, and writes policies, rulesets, attestors, clusters and scan results.
        Editor = "editor",
        /// Reads only.
        #[default]
        Viewer = "viewer",
        /// Bound to one cluster: its effective policy, reviews and heartbeats.
        Connector = "connector",
    }
}

closed_set! {
    /// What happens when a stage cannot judge a request for a cluster (a deadline missed, a
    /// lookup failed, a verifier missing).
    FailureMode {
        /// Admit, and say why in the answer (the default: never break a cluster's
        /// deployments because Portcullis is down).
        #[default]
        FailOpen = "fail-open",
        /// Reject, and say why.
        FailClosed = "fail-closed",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn spellings_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(*role));
        }
        for mode in FailureMode::ALL {
            assert_eq!(mode.as_str().parse::<FailureMode>(), Ok(*mode));
        }
        assert_eq!(FailureMode::default(), FailureMode::FailOpen);
        let e = "root".parse::<Role>().unwrap_err();
        assert_eq!(e.to_string(), "\"root\" is not one of admin, editor, viewer, connector");
        assert_eq!(
            serde_json::to_string(&FailureMode::FailClosed).unwrap(),
            "\"fail-closed\""
        );
    }
}
