//! Validated ids. Each newtype can only hold a well-formed value, so code that takes one
//! needs no check of its own; `parse` is the one place the rule is written.

use std::fmt;

/// Why a string is not a valid id; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct IdError {
    /// The field (`tenant_id`, `cluster_id`, `key_id`).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr, $allowed:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The field name used in errors.
            pub const FIELD: &'static str = $field;
            /// The longest valid value, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Whether `s` is valid.
            pub fn is_valid(s: &str) -> bool {
                (1..=Self::MAX_LEN).contains(&s.len()) && s.bytes().all($allowed)
            }

            /// Checks `s` and returns it as an id.
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                if Self::is_valid(&s) {
                    Ok(Self(s))
                } else {
                    Err(IdError {
                        field: Self::FIELD,
                        reason: format!("{s:?} must be 1-{} characters of {}", Self::MAX_LEN, $what),
                    })
                }
            }

            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(s).map_err(serde::de::Error::custom)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

fn tenant_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
}

/// Ids the store generates (UUIDs, with or without hyphens) and that travel in subjects:
/// letters, digits, `-` and `_`, never `.`, `*`, `>` or white space.
fn generated_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

id_type!(
    /// A tenant id: `[a-z0-9-]{1,36}` (ARCHITECTURE.md). Tenants are addressed by id, never
    /// by name, in keys, subjects and logs.
    TenantId,
    "tenant_id",
    36,
    tenant_byte,
    "a-z, 0-9 and '-'"
);

id_type!(
    /// A cluster id: `[A-Za-z0-9_-]{1,64}` (the store makes UUIDs). It is a subject token
    /// (`pc.<tenant>.cmd.<cluster>`), so it never holds `.`, `*` or `>`.
    ClusterId,
    "cluster_id",
    64,
    generated_byte,
    "A-Z, a-z, 0-9, '-' and '_'"
);

id_type!(
    /// An API key id: `[A-Za-z0-9_-]{1,64}` (the store makes UUIDs).
    KeyId,
    "key_id",
    64,
    generated_byte,
    "A-Z, a-z, 0-9, '-' and '_'"
);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn tenant_ids() {
        for good in ["a", "default", "3f2a-acme", &"a".repeat(36)] {
            assert!(TenantId::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "Acme", "a.b", "a b", "a*", ">", "é", &"a".repeat(37)] {
            let e = TenantId::parse(bad).unwrap_err();
            assert_eq!(e.field, "tenant_id");
        }
    }

    #[test]
    fn cluster_and_key_ids() {
        for good in ["0b6f8a3e-4c1d-4e6b-9a55-1f0e2d3c4b5a", "abc_DEF-1"] {
            assert!(ClusterId::parse(good).is_ok() && KeyId::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "a.b", "a*", "a>", "a b", &"a".repeat(65)] {
            assert_eq!(ClusterId::parse(bad).unwrap_err().field, "cluster_id");
            assert_eq!(KeyId::parse(bad).unwrap_err().field, "key_id");
        }
    }

    #[test]
    fn deserialising_validates() {
        let ok: TenantId = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(ok, "acme");
        assert!(serde_json::from_str::<TenantId>("\"ACME\"").is_err());
    }
}
