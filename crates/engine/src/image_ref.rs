//! Image references, parsed as container runtimes do (distribution's `ParseNormalizedNamed`).
//!
//! The grammar and the normalisation follow `github.com/distribution/reference` v0.6.0
//! (`reference.go`, `regexp.go`, `normalize.go`) with digests validated as
//! `github.com/opencontainers/go-digest` v1.0.0 does:
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [ domain "/" ] path
//! domain           := host [ ":" port ]        host: domain-name | "[" IPv6 hex and colons "]"
//! domain-name      := component ("." component)*, component [a-zA-Z0-9] with inner "-"
//! path             := path-component ("/" path-component)*
//! path-component   := [a-z0-9]+ ( ("." | "_" | "__" | "-"+) [a-z0-9]+ )*
//! tag              := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest           := "sha256:" 64 hex | "sha384:" 96 hex | "sha512:" 128 hex   (lower-case hex)
//! ```
//!
//! The first path segment is the registry only when a `/` follows it and it contains `.` or
//! `:`, is `localhost`, or has an upper-case letter; otherwise the registry is `docker.io`,
//! `index.docker.io` becomes `docker.io`, and a single-segment Docker Hub path gets `library/`.
//! The repository path (after `library/` is added, without the registry) is at most 255
//! characters, and a bare 64-character lower-case hex string is refused, as an image id.
//!
//! Where we differ from `ParseNormalizedNamed`, on purpose:
//! - The registry is lower-cased in our output (POLICY.md section 2): host names are
//!   case-insensitive, and rules compare case-sensitively. Normalisation is therefore not
//!   idempotent for an upper-case registry that means something else once lower-cased:
//!   `LOCALDOMAIN/app` has registry `localdomain`, but `localdomain/app` is a Docker Hub
//!   path; `DOCKER.IO/app` (which distribution treats as a registry other than Docker Hub,
//!   so without `library/`) has registry `docker.io` and image `app`.
//! - A first segment taken as a registry that is not a valid `host[:port]` but is a valid
//!   path component (`foo_bar.com/app`) makes distribution return a name with an empty
//!   domain; such a reference has no registry we could report, so it is refused.
//! - Digest algorithms other than sha256, sha384 and sha512 are refused, as go-digest
//!   refuses algorithms it has no hash for (`ErrDigestUnsupported`); sha384 and sha512 are
//!   accepted because container runtimes link those hashes in.

use std::fmt;
use std::str::FromStr;

/// The registry of references that name none (Docker Hub).
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// Docker Hub's legacy name, normalised to [`DEFAULT_REGISTRY`].
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
/// Always a registry when it is the first of several segments.
const LOCALHOST: &str = "localhost";
/// Namespace of Docker Hub's single-segment ("official") repositories.
const OFFICIAL_PREFIX: &str = "library/";
/// The tag of a reference that gives neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
/// Longest repository path (without the registry), as distribution's `RepositoryNameTotalLengthMax`.
pub const MAX_PATH_LEN: usize = 255;
/// Longest tag.
const MAX_TAG_LEN: usize = 128;
/// How much of an offending part an error message quotes.
const MAX_QUOTED: usize = 80;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    image: String,
    tag: Option<String>,
    digest: Option<String>,
}

/// Why an image reference does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference: {reason}")]
pub struct ImageRefError {
    /// What is wrong with it.
    pub reason: String,
}

impl ImageRefError {
    fn new(reason: impl Into<String>) -> ImageRefError {
        ImageRefError { reason: reason.into() }
    }
}

impl ImageRef {
    /// Parses and normalises a reference (`nginx` → `docker.io/library/nginx:latest`).
    pub fn parse(reference: &str) -> Result<ImageRef, ImageRefError> {
        if reference.is_empty() {
            return Err(ImageRefError::new("the reference is empty"));
        }
        // A bare image id is refused so that it is never mistaken for a Docker Hub name.
        if is_identifier(reference) {
            return Err(ImageRefError::new(format!(
                "repository name {} cannot be a 64-byte hexadecimal string (an image id)",
                quoted(reference)
            )));
        }

        let split = split_registry(reference);
        if split.explicit && !is_domain_and_port(split.registry) {
            return Err(ImageRefError::new(format!(
                "registry {} is not a valid host[:port]",
                quoted(split.registry)
            )));
        }

        let (path, suffix) = match split.rest.find([':', '@']) {
            Some(at) => split.rest.split_at(at),
            None => (split.rest, ""),
        };
        let (tag, digest) = if let Some(after) = suffix.strip_prefix(':') {
            match after.split_once('@') {
                Some((tag, digest)) => (Some(tag), Some(digest)),
                None => (Some(after), None),
            }
        } else {
            (None, suffix.strip_prefix('@'))
        };

        validate_path(path)?;
        let prefix = if split.library { OFFICIAL_PREFIX } else { "" };
        if prefix.len() + path.len() > MAX_PATH_LEN {
            return Err(ImageRefError::new(format!(
                "repository name must not be more than {MAX_PATH_LEN} characters"
            )));
        }
        if let Some(tag) = tag {
            validate_tag(tag)?;
        }
        if let Some(digest) = digest {
            validate_digest(digest)?;
        }

        let mut image = String::with_capacity(prefix.len() + path.len());
        image.push_str(prefix);
        image.push_str(path);
        let tag = match (tag, digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (None, Some(_)) => None,
        };
        Ok(ImageRef {
            registry: split.registry.to_ascii_lowercase(),
            image,
            tag,
            digest: digest.map(str::to_owned),
        })
    }
    /// `host[:port]`, lower-cased (`docker.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }
    /// The repository path without the registry (`library/nginx`).
    pub fn image(&self) -> &str {
        &self.image
    }
    /// The tag; `latest` when neither tag nor digest was given; empty when only a digest was.
    pub fn tag(&self) -> &str {
        self.tag.as_deref().unwrap_or("")
    }
    /// The digest (`sha256:...`), when the reference has one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }
    /// `registry/image`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.registry, self.image)
    }
    /// `registry/image[:tag][@digest]`.
    pub fn image_path(&self) -> String {
        let mut s = String::new();
        self.write_image_path(&mut s);
        s
    }
    /// Replaces the contents of `buf` with [`ImageRef::image_path`], reusing its allocation.
    pub fn write_image_path(&self, buf: &mut String) {
        buf.clear();
        buf.push_str(&self.registry);
        buf.push('/');
        buf.push_str(&self.image);
        if let Some(tag) = &self.tag {
            buf.push(':');
            buf.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            buf.push('@');
            buf.push_str(digest);
        }
    }
}

impl FromStr for ImageRef {
    type Err = ImageRefError;

    fn from_str(s: &str) -> Result<ImageRef, ImageRefError> {
        ImageRef::parse(s)
    }
}

/// Shows the normalised image path.
impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.registry)?;
        f.write_str("/")?;
        f.write_str(&self.image)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Where the registry ends, as distribution's `splitDockerDomain` decides it.
struct Split<'a> {
    /// The registry as written (not yet lower-cased), or [`DEFAULT_REGISTRY`].
    registry: &'a str,
    /// The registry was written in the reference (so it must be checked against the grammar).
    explicit: bool,
    /// The path gets [`OFFICIAL_PREFIX`].
    library: bool,
    /// Path, tag and digest.
    rest: &'a str,
}

fn split_registry(reference: &str) -> Split<'_> {
    // No `/` at all: a Docker Hub official image, even `localhost` or `example.com`.
    let Some((first, rest)) = reference.split_once('/') else {
        return Split {
            registry: DEFAULT_REGISTRY,
            explicit: false,
            library: true,
            rest: reference,
        };
    };
    let (registry, explicit, rest) = if first == LEGACY_DEFAULT_REGISTRY {
        (DEFAULT_REGISTRY, false, rest)
    } else if first == LOCALHOST
        || first.contains(['.', ':'])
        // Path components are lower-case, so an upper-case first segment can only be a host.
        || first.chars().any(char::is_uppercase)
    {
        (first, true, rest)
    } else {
        (DEFAULT_REGISTRY, false, reference)
    };
    // Case-sensitive, as distribution: `DOCKER.IO/app` is not given `library/`.
    let library = registry == DEFAULT_REGISTRY && !rest.contains('/');
    Split {
        registry,
        explicit,
        library,
        rest,
    }
}

/// `^[a-f0-9]{64}$`: an image id, not a name.
fn is_identifier(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'a'..=b'f' | b'0'..=b'9'))
}

/// `host[:port]` with host a domain name, an IPv4 address or a bracketed IPv6 address.
fn is_domain_and_port(domain: &str) -> bool {
    let port = if let Some(bracketed) = domain.strip_prefix('[') {
        let Some((address, after)) = bracketed.split_once(']') else {
            return false;
        };
        if address.is_empty() || !address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        after
    } else {
        let (host, after) = match domain.find(':') {
            Some(at) => domain.split_at(at),
            None => (domain, ""),
        };
        if !host.split('.').all(is_domain_component) {
            return false;
        }
        after
    };
    port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn is_domain_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

fn validate_path(path: &str) -> Result<(), ImageRefError> {
    if path.chars().any(char::is_uppercase) {
        return Err(ImageRefError::new(format!(
            "repository name {} must be lowercase",
            quoted(path)
        )));
    }
    if path.is_empty() {
        return Err(ImageRefError::new("the repository name is empty"));
    }
    for component in path.split('/') {
        if component.is_empty() {
            return Err(ImageRefError::new(format!(
                "repository name {} has an empty path component",
                quoted(path)
            )));
        }
        if !is_path_component(component) {
            return Err(ImageRefError::new(format!(
                "path component {} is not lower-case letters and digits joined by '.', '_', '__' or dashes",
                quoted(component)
            )));
        }
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`.
fn is_path_component(component: &str) -> bool {
    // The separator run since the last alphanumeric: its byte and its length.
    let mut separator = 0u8;
    let mut separator_len = 0usize;
    let mut seen_alphanumeric = false;
    for b in component.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' => {
                let allowed = match separator {
                    b'.' => separator_len <= 1,
                    b'_' => separator_len <= 2,
                    _ => true,
                };
                if !allowed {
                    return false;
                }
                separator = 0;
                separator_len = 0;
                seen_alphanumeric = true;
            }
            b'.' | b'_' | b'-' => {
                if !seen_alphanumeric || (separator_len > 0 && separator != b) {
                    return false;
                }
                separator = b;
                separator_len += 1;
            }
            _ => return false,
        }
    }
    seen_alphanumeric && separator_len == 0
}

/// `[\w][\w.-]{0,127}`, `\w` being ASCII.
fn validate_tag(tag: &str) -> Result<(), ImageRefError> {
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut bytes = tag.bytes();
    let valid = bytes.next().is_some_and(is_word)
        && bytes.all(|b| is_word(b) || b == b'.' || b == b'-')
        && tag.len() <= MAX_TAG_LEN;
    if valid {
        Ok(())
    } else {
        Err(ImageRefError::new(format!(
            "tag {} is not 1 to {MAX_TAG_LEN} of letters, digits, '_', '.' and '-' (not starting with '.' or '-')",
            quoted(tag)
        )))
    }
}

/// The reference grammar's digest, then go-digest's check of a supported algorithm.
fn validate_digest(digest: &str) -> Result<(), ImageRefError> {
    let malformed = || ImageRefError::new(format!("digest {} is not algorithm:hex", quoted(digest)));
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return Err(malformed());
    };
    // distribution's grammar: at least 128 bits of hex after a well-formed algorithm.
    if !is_digest_algorithm(algorithm) || encoded.len() < 32 || !encoded.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed());
    }
    let expected_len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            return Err(ImageRefError::new(format!(
                "digest algorithm {} is not supported (sha256, sha384 or sha512)",
                quoted(algorithm)
            )));
        }
    };
    if encoded.len() != expected_len {
        return Err(ImageRefError::new(format!(
            "{algorithm} digest has {} hex characters, not {expected_len}",
            encoded.len()
        )));
    }
    if encoded.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ImageRefError::new(format!(
            "digest {} must be lower-case hex",
            quoted(digest)
        )));
    }
    Ok(())
}

/// `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*`.
fn is_digest_algorithm(algorithm: &str) -> bool {
    algorithm.split(['-', '_', '+', '.']).all(|component| {
        let mut bytes = component.bytes();
        bytes.next().is_some_and(|b| b.is_ascii_alphabetic()) && bytes.all(|b| b.is_ascii_alphanumeric())
    })
}

/// The offending part, quoted and cut short so that a hostile reference cannot bloat messages.
fn quoted(part: &str) -> String {
    match part.char_indices().nth(MAX_QUOTED) {
        Some((end, _)) => format!("{:?}…", part.get(..end).unwrap_or_default()),
        None => format!("{part:?}"),
    }
}
