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
///
/// Kept as one string, the normalised image path, with the ends of its parts: one
/// allocation per reference (evaluation parses every container's image on every review).
/// Equality, hashing and `Debug` are those of the four parts.
#[derive(Clone)]
pub struct ImageRef {
    /// `registry/image[:tag][@digest]`.
    path: String,
    /// The registry is `path[..registry_end]` (the `/` follows it).
    registry_end: usize,
    /// The image is `path[registry_end + 1..image_end]`.
    image_end: usize,
    /// When there is a tag: `path[image_end + 1..tag_end]`.
    tag_end: Option<usize>,
    /// Whether a digest ends the path (after the tag, or the image, and an `@`).
    has_digest: bool,
}

impl ImageRef {
    fn tag_part(&self) -> Option<&str> {
        self.tag_end.and_then(|end| self.path.get(self.image_end + 1..end))
    }
}

impl PartialEq for ImageRef {
    fn eq(&self, other: &ImageRef) -> bool {
        self.registry() == other.registry()
            && self.image() == other.image()
            && self.tag_part() == other.tag_part()
            && self.digest() == other.digest()
    }
}

impl Eq for ImageRef {}

impl std::hash::Hash for ImageRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.registry().hash(state);
        self.image().hash(state);
        self.tag_part().hash(state);
        self.digest().hash(state);
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageRef")
            .field("registry", &self.registry())
            .field("image", &self.image())
            .field("tag", &self.tag_part())
            .field("digest", &self.digest())
            .finish()
    }
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

        // Byte search: both delimiters are ASCII, which never occurs inside a UTF-8 sequence.
        let (path, suffix) = match split.rest.bytes().position(|b| b == b':' || b == b'@') {
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

        let tag = match (tag, digest) {
            (Some(tag), _) => Some(tag),
            (None, None) => Some(DEFAULT_TAG),
            (None, Some(_)) => None,
        };
        let mut out = String::with_capacity(
            split.registry.len()
                + 1
                + prefix.len()
                + path.len()
                + tag.map_or(0, |t| 1 + t.len())
                + digest.map_or(0, |d| 1 + d.len()),
        );
        out.push_str(split.registry);
        out.make_ascii_lowercase();
        let registry_end = out.len();
        out.push('/');
        out.push_str(prefix);
        out.push_str(path);
        let image_end = out.len();
        let tag_end = tag.map(|tag| {
            out.push(':');
            out.push_str(tag);
            out.len()
        });
        if let Some(digest) = digest {
            out.push('@');
            out.push_str(digest);
        }
        Ok(ImageRef {
            path: out,
            registry_end,
            image_end,
            tag_end,
            has_digest: digest.is_some(),
        })
    }
    /// `host[:port]`, lower-cased (`docker.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        self.path.get(..self.registry_end).unwrap_or_default()
    }
    /// The repository path without the registry (`library/nginx`).
    pub fn image(&self) -> &str {
        self.path.get(self.registry_end + 1..self.image_end).unwrap_or_default()
    }
    /// The tag; `latest` when neither tag nor digest was given; empty when only a digest was.
    pub fn tag(&self) -> &str {
        self.tag_part().unwrap_or("")
    }
    /// The digest (`sha256:...`), when the reference has one.
    pub fn digest(&self) -> Option<&str> {
        if !self.has_digest {
            return None;
        }
        self.path.get(self.tag_end.unwrap_or(self.image_end) + 1..)
    }
    /// `registry/image`.
    pub fn repository(&self) -> String {
        self.path.get(..self.image_end).unwrap_or_default().to_owned()
    }
    /// `registry/image[:tag][@digest]`.
    pub fn image_path(&self) -> String {
        self.path.clone()
    }
    /// Replaces the contents of `buf` with [`ImageRef::image_path`], reusing its allocation.
    pub fn write_image_path(&self, buf: &mut String) {
        buf.clear();
        buf.push_str(&self.path);
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
        f.write_str(&self.path)
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
        || first.bytes().any(|b| b == b'.' || b == b':')
        // Path components are lower-case, so an upper-case first segment can only be a host.
        || has_uppercase(first)
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
        let (host, after) = match domain.bytes().position(|b| b == b':') {
            Some(at) => domain.split_at(at),
            None => (domain, ""),
        };
        if !is_domain_name(host) {
            return false;
        }
        after
    };
    port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Domain components joined by `.`, each `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`;
/// one pass over the bytes.
fn is_domain_name(host: &str) -> bool {
    // The byte before the current one; `.` at the start, as after a separator.
    let mut prev = b'.';
    for b in host.bytes() {
        let valid = match b {
            // A component ends with an alphanumeric (so it is not empty either).
            b'.' => prev.is_ascii_alphanumeric(),
            // A component does not start with a dash.
            b'-' => prev != b'.',
            _ => b.is_ascii_alphanumeric(),
        };
        if !valid {
            return false;
        }
        prev = b;
    }
    prev.is_ascii_alphanumeric()
}

/// Whether `s` has an upper-case letter (`char::is_uppercase`), without decoding ASCII.
fn has_uppercase(s: &str) -> bool {
    for b in s.bytes() {
        if b.is_ascii_uppercase() {
            return true;
        }
        if !b.is_ascii() {
            return s.chars().any(char::is_uppercase);
        }
    }
    false
}

fn validate_path(path: &str) -> Result<(), ImageRefError> {
    // The common case in one pass; a valid path has no upper-case letter. Anything else is
    // checked again below, in order, to name what is wrong.
    if is_valid_path(path) {
        return Ok(());
    }
    if has_uppercase(path) {
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

/// Path components ([`is_path_component`]) joined by `/`, none empty; one pass.
fn is_valid_path(path: &str) -> bool {
    let mut separator = 0u8;
    let mut separator_len = 0usize;
    let mut seen_alphanumeric = false;
    for b in path.bytes() {
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
            b'/' => {
                if !seen_alphanumeric || separator_len > 0 {
                    return false;
                }
                seen_alphanumeric = false;
            }
            _ => return false,
        }
    }
    seen_alphanumeric && separator_len == 0
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`: a path of one component (only the error path
/// names the component that is wrong, so this need not be one pass over the whole path).
fn is_path_component(component: &str) -> bool {
    !component.contains('/') && is_valid_path(component)
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
    // One pass over the hex for both of the checks below.
    let (mut hex, mut upper) = (true, false);
    for b in encoded.bytes() {
        hex &= b.is_ascii_hexdigit();
        upper |= b.is_ascii_uppercase();
    }
    // distribution's grammar: at least 128 bits of hex after a well-formed algorithm.
    if !is_digest_algorithm(algorithm) || encoded.len() < 32 || !hex {
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
    if upper {
        return Err(ImageRefError::new(format!(
            "digest {} must be lower-case hex",
            quoted(digest)
        )));
    }
    Ok(())
}

/// `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*`.
fn is_digest_algorithm(algorithm: &str) -> bool {
    matches!(algorithm, "sha256" | "sha384" | "sha512")
        || algorithm.split(['-', '_', '+', '.']).all(|component| {
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

#[cfg(test)]
mod tests {
    //! The one-pass checks against the definitions they replace, on every short string over
    //! an alphabet of the bytes that matter; the one-string layout against the four parts.
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    /// Every string of up to `max_len` characters from `alphabet`.
    fn all_strings(alphabet: &[char], max_len: usize) -> Vec<String> {
        let mut out = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..max_len {
            let next: Vec<String> = last
                .iter()
                .flat_map(|s| {
                    alphabet.iter().map(move |c| {
                        let mut t = s.clone();
                        t.push(*c);
                        t
                    })
                })
                .collect();
            out.extend(next.iter().cloned());
            last = next;
        }
        out
    }

    #[test]
    fn is_domain_name_is_split_into_domain_components() {
        let component = |c: &str| {
            let b = c.as_bytes();
            match (b.first(), b.last()) {
                (Some(f), Some(l)) => {
                    f.is_ascii_alphanumeric()
                        && l.is_ascii_alphanumeric()
                        && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
                }
                _ => false,
            }
        };
        for s in all_strings(&['a', 'Z', '0', '-', '.', '_', 'é'], 6) {
            assert_eq!(is_domain_name(&s), s.split('.').all(component), "{s:?}");
        }
    }

    #[test]
    fn is_valid_path_is_the_component_checks() {
        // `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*` read another way: alphanumeric runs at
        // both ends, and between them runs of `.`, `_`, `__` or dashes.
        let component = |c: &str| {
            let runs: Vec<&str> = c
                .split(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
                .collect();
            !c.is_empty()
                && runs.first() == Some(&"")
                && runs.last() == Some(&"")
                && runs
                    .iter()
                    .all(|r| matches!(*r, "." | "_" | "__") || r.chars().all(|ch| ch == '-'))
        };
        for s in all_strings(&['a', '0', '.', '_', '-', '/', 'A', 'é'], 6) {
            let reference = !has_uppercase(&s) && !s.is_empty() && s.split('/').all(component);
            assert_eq!(is_valid_path(&s), reference, "{s:?}");
            assert_eq!(is_path_component(&s), component(&s), "{s:?}");
        }
    }

    #[test]
    fn has_uppercase_is_char_is_uppercase() {
        for s in all_strings(&['a', 'A', '0', 'é', 'É', 'ß', 'Σ'], 4) {
            assert_eq!(has_uppercase(&s), s.chars().any(char::is_uppercase), "{s:?}");
        }
    }

    /// The four-field layout `ImageRef` had before it kept one string.
    mod old {
        #[derive(Debug, Hash)]
        pub struct ImageRef {
            pub registry: String,
            pub image: String,
            pub tag: Option<String>,
            pub digest: Option<String>,
        }
    }

    fn hash_of(value: &impl std::hash::Hash) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        BuildHasherDefault::<DefaultHasher>::default().hash_one(value)
    }

    #[test]
    fn one_string_layout_keeps_parts_debug_hash_and_equality() {
        let digest = "sha256:3e7a9c1b5d7f9e1a3c5b7d9f1e3a5c7b9d1f3e5a7c9b1d3f5e7a9c1b3d5f7e9a";
        let refs = [
            "nginx".to_owned(),
            "Registry.Example.com:5000/team/app:v1".to_owned(),
            format!("ghcr.io/org/app@{digest}"),
            format!("localhost/app:1.0@{digest}"),
            "index.docker.io/user/app".to_owned(),
        ];
        let parsed: Vec<ImageRef> = refs.iter().map(|r| ImageRef::parse(r).unwrap()).collect();
        for (r, image) in refs.iter().zip(&parsed) {
            let model = old::ImageRef {
                registry: image.registry().to_owned(),
                image: image.image().to_owned(),
                tag: image.tag_part().map(str::to_owned),
                digest: image.digest().map(str::to_owned),
            };
            assert_eq!(format!("{image:?}"), format!("{model:?}"), "{r}");
            assert_eq!(format!("{image:#?}"), format!("{model:#?}"), "{r}");
            assert_eq!(hash_of(image), hash_of(&model), "{r}");
            assert_eq!(image.to_string(), image.image_path());
            assert_eq!(image.repository(), format!("{}/{}", image.registry(), image.image()));
            let mut path = format!("{}/{}", image.registry(), image.image());
            if let Some(tag) = image.tag_part() {
                path.push(':');
                path.push_str(tag);
            }
            if let Some(digest) = image.digest() {
                path.push('@');
                path.push_str(digest);
            }
            assert_eq!(image.image_path(), path);
        }
        let nginx = &parsed[0];
        assert_eq!(
            (nginx.registry(), nginx.image(), nginx.tag(), nginx.digest()),
            ("docker.io", "library/nginx", "latest", None)
        );
        let local = &parsed[1];
        assert_eq!(
            (local.registry(), local.image(), local.tag(), local.digest()),
            ("registry.example.com:5000", "team/app", "v1", None)
        );
        let by_digest = &parsed[2];
        assert_eq!(
            (
                by_digest.registry(),
                by_digest.image(),
                by_digest.tag(),
                by_digest.digest()
            ),
            ("ghcr.io", "org/app", "", Some(digest))
        );
        let both = &parsed[3];
        assert_eq!((both.tag(), both.digest()), ("1.0", Some(digest)));
        for (i, a) in parsed.iter().enumerate() {
            for (j, b) in parsed.iter().enumerate() {
                assert_eq!(a == b, i == j);
            }
        }
    }

    #[test]
    fn digest_algorithm_fast_path_agrees_with_the_grammar() {
        for a in ["sha256", "sha384", "sha512"] {
            let grammar = a.split(['-', '_', '+', '.']).all(|component| {
                let mut bytes = component.bytes();
                bytes.next().is_some_and(|b| b.is_ascii_alphabetic()) && bytes.all(|b| b.is_ascii_alphanumeric())
            });
            assert!(grammar && is_digest_algorithm(a));
        }
    }
}
