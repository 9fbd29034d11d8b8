//! Image references as Docker reads them: `[registry/]repository[:tag][@sha256:...]`.

use std::fmt;
use std::str::FromStr;

use crate::{Digest, Error};

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker Hub's API answers on.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// Longest reference accepted (Docker's repository names are at most 255 characters).
const MAX_REFERENCE_LEN: usize = 512;
const MAX_REPOSITORY_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A parsed image reference. `registry` is normalised (`docker.io` for Docker Hub), Docker
/// Hub's single-component repositories get `library/`, and a reference with neither tag nor
/// digest means tag `latest`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses a reference; anything Docker would refuse is `Invalid`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let invalid = |why: &str| Error::Invalid(format!("image reference {:?}: {why}", crate::clip(text)));
        if text.is_empty() || text.len() > MAX_REFERENCE_LEN {
            return Err(invalid("empty or too long"));
        }
        let (name_and_tag, digest) = match text.split_once('@') {
            Some((name, digest)) => (name, Some(Digest::parse(digest).map_err(|_| invalid("bad digest"))?)),
            None => (text, None),
        };
        // A tag follows the last ':' after the last '/' (a ':' before it is a registry port).
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag.get(last_slash..).and_then(|tail| tail.rfind(':')) {
            Some(colon) => {
                let at = last_slash + colon;
                (
                    name_and_tag.get(..at).unwrap_or_default(),
                    name_and_tag.get(at + 1..).map(str::to_owned),
                )
            }
            None => (name_and_tag, None),
        };
        if let Some(tag) = &tag
            && !valid_tag(tag)
        {
            return Err(invalid("bad tag"));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" || first.starts_with('[') => {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        if !valid_registry(&registry) {
            return Err(invalid("bad registry"));
        }
        let registry = match registry.as_str() {
            "index.docker.io" | DOCKER_HUB_API => DOCKER_HUB.to_owned(),
            _ => registry,
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if !valid_repository(&repository) {
            return Err(invalid("bad repository name"));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            (tag, _) => tag,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// A reference to `digest` in the same repository (no tag).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// A reference to `tag` in the same repository (no digest); `Invalid` for a bad tag.
    pub fn with_tag(&self, tag: &str) -> Result<Self, Error> {
        if !valid_tag(tag) {
            return Err(Error::Invalid(format!("bad tag {:?}", crate::clip(tag))));
        }
        Ok(Self {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: Some(tag.to_owned()),
            digest: None,
        })
    }

    /// The registry as written in references (`docker.io` for Docker Hub), with any port.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host (and port) the registry's API answers on (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The repository path (`library/nginx`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, when there is one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, when there is one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What the manifest URL names: the digest when there is one, else the tag.
    pub fn manifest_reference(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.as_str(),
            (None, Some(tag)) => tag,
            (None, None) => "latest",
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub(crate) fn valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    tag.len() <= MAX_TAG_LEN
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Components of `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` joined by '/'.
fn valid_repository(repository: &str) -> bool {
    repository.len() <= MAX_REPOSITORY_LEN && repository.split('/').all(valid_component)
}

fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    // Between alphanumeric runs: one '.', one or two '_', or any number of '-'.
    let mut separator = String::new();
    for &b in bytes {
        if alnum(&b) {
            let ok = separator.is_empty()
                || separator == "."
                || separator == "_"
                || separator == "__"
                || separator.bytes().all(|s| s == b'-');
            if !ok {
                return false;
            }
            separator.clear();
        } else if matches!(b, b'.' | b'_' | b'-') {
            separator.push(char::from(b));
        } else {
            return false;
        }
    }
    true
}

/// A host name, IPv4 address or bracketed IPv6 address, with an optional port.
fn valid_registry(registry: &str) -> bool {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, tail)) => {
                if v6.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match tail {
                    "" => return true,
                    _ => match tail.strip_prefix(':') {
                        Some(port) => ("v6", Some(port)),
                        None => return false,
                    },
                }
            }
            None => return false,
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok());
    host_ok && port_ok
}

/// Whether plain HTTP may be used without configuration, as Docker does: loopback hosts
/// (`localhost`, 127.0.0.0/8, `::1`).
pub(crate) fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => registry.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
#[allow(clippy::panic)] // Tests fail by panicking.
mod tests {
    use super::*;

    fn parse(text: &str) -> Reference {
        match Reference::parse(text) {
            Ok(r) => r,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn docker_hub_defaults() {
        let r = parse("nginx");
        assert_eq!((r.registry(), r.api_host()), ("docker.io", "registry-1.docker.io"));
        assert_eq!((r.repository(), r.tag()), ("library/nginx", Some("latest")));
        let r = parse("docker.io/bitnami/redis:7");
        assert_eq!((r.repository(), r.tag()), ("bitnami/redis", Some("7")));
        let r = parse("index.docker.io/nginx");
        assert_eq!((r.registry(), r.repository()), ("docker.io", "library/nginx"));
        assert_eq!(parse("user/app").repository(), "user/app");
    }

    #[test]
    fn registries_tags_and_digests() {
        let r = parse("127.0.0.1:5000/team/app:v1.2");
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("127.0.0.1:5000", "team/app", Some("v1.2"))
        );
        let r = parse(&format!("ghcr.io/a/b@{D}"));
        assert_eq!((r.tag(), r.digest().map(Digest::as_str)), (None, Some(D)));
        assert_eq!(r.manifest_reference(), D);
        let r = parse(&format!("localhost/a:t@{D}"));
        assert_eq!((r.registry(), r.tag()), ("localhost", Some("t")));
        assert_eq!(r.to_string(), format!("localhost/a:t@{D}"));
        let r = parse("[::1]:5000/a");
        assert_eq!(r.registry(), "[::1]:5000");
        assert!(is_loopback(r.registry()));
        assert!(is_loopback("127.3.2.1:80") && is_loopback("localhost:5000") && is_loopback("localhost"));
        assert!(!is_loopback("registry.example:5000") && !is_loopback("10.0.0.1"));
    }

    #[test]
    fn refuses_bad_input() {
        for bad in [
            "",
            "UPPER/case",
            "a//b",
            "a/b:",
            "a/b:-x",
            "host:99999/a",
            "a@sha256:00",
            "a/b_-c",
            "-a",
            "a/",
            "[zz]:5/a",
            "a b",
            &"a".repeat(600),
            "ghcr.io/a:b:c",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
        assert!(valid_component("a__b") && valid_component("a---b") && !valid_component("a___b"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_round_trips(text in "\\PC{0,80}") {
            if let Ok(reference) = Reference::parse(&text) {
                let again = Reference::parse(&reference.to_string());
                proptest::prop_assert_eq!(again.ok(), Some(reference));
            }
        }

        #[test]
        fn reference_like_text(text in "[a-z0-9.:/@_-]{0,40}(:[a-zA-Z0-9._-]{0,10})?") {
            if let Ok(reference) = Reference::parse(&text) {
                let again = Reference::parse(&reference.to_string());
                proptest::prop_assert_eq!(again.ok(), Some(reference));
            }
        }
    }
}
