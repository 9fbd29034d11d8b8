//! Image references, parsed as container runtimes do (distribution's `ParseNormalizedNamed`).

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

impl ImageRef {
    /// Parses and normalises a reference (`nginx` → `docker.io/library/nginx:latest`).
    pub fn parse(reference: &str) -> Result<ImageRef, ImageRefError> {
        let _ = reference;
        Err(ImageRefError { reason: "not implemented".into() })
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
        let mut s = self.repository();
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            s.push('@');
            s.push_str(digest);
        }
        s
    }
}
