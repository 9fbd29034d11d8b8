//! Content digests (`sha256:<64 lowercase hex>`), the only algorithm registries use in practice.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::Error;

/// A validated `sha256:<hex>` content digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

const PREFIX: &str = "sha256:";
const HEX_LEN: usize = 64;

impl Digest {
    /// Parses `sha256:<64 lowercase hex digits>`; any other algorithm or form is `Invalid`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let valid = text
            .strip_prefix(PREFIX)
            .is_some_and(|hex| hex.len() == HEX_LEN && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(Error::Invalid(format!("not a sha256 digest: {:?}", crate::clip(text))))
        }
    }

    /// The sha256 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let hash = Sha256::digest(bytes);
        let mut text = String::with_capacity(PREFIX.len() + HEX_LEN);
        text.push_str(PREFIX);
        for byte in hash {
            text.push_str(&format!("{byte:02x}"));
        }
        Self(text)
    }

    /// `Ok` when `bytes` hash to this digest, else `Invalid` naming both digests.
    pub fn verify(&self, bytes: &[u8]) -> Result<(), Error> {
        let actual = Self::of(bytes);
        if &actual == self {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "digest mismatch: expected {self}, content is {actual}"
            )))
        }
    }

    /// The whole digest, `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        self.0.get(PREFIX.len()..).unwrap_or_default()
    }

    /// `sha256-<hex>`: the tag cosign and the referrers tag schema derive from a digest.
    pub fn tag_form(&self) -> String {
        format!("sha256-{}", self.hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_hashes() {
        let d = Digest::of(b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(d.as_str()).ok(), Some(d.clone()));
        assert!(d.verify(b"").is_ok());
        assert!(matches!(d.verify(b"x"), Err(Error::Invalid(_))));
        assert_eq!(
            d.tag_form(),
            "sha256-e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        for bad in ["", "sha256:", "sha256:E3B0", "sha512:00", "sha256:é", &format!("{d}0")] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }
}
