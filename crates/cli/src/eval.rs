//! `portcullis eval`: offline evaluation of manifests and admission reviews.

use std::collections::HashMap;
use std::io::{self, IsTerminal};
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use portcullis_engine::evaluate::{
    CompiledPolicy, DigestMap, EvalContext, FailureMode, Signatures, TrustedImage, Verdict, VerdictMap,
};
use portcullis_engine::image_ref::ImageRef;
use portcullis_engine::scan::{MemoryScanStore, ScanResult, TrivyImportOptions, from_trivy, is_digest};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::documents::for_each_document;
use crate::report::{OutputFormat, Reporter};
use crate::{ExitStatus, load_policy};

/// Arguments of `portcullis eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The policy document (JSON or YAML).
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// Scan results: a Trivy JSON report or native results, optionally for a digest.
    #[arg(long = "scan-results", value_name = "[DIGEST=]FILE")]
    pub scan_results: Vec<String>,
    /// The digest an image reference resolves to.
    #[arg(long = "digest", value_name = "IMAGE=DIGEST")]
    pub digests: Vec<String>,
    /// Signature verdicts: `{"<image or digest>": {"<attestor>": true|false}}`.
    #[arg(long, value_name = "FILE")]
    pub verdicts: Option<PathBuf>,
    /// The evaluation time (RFC 3339); default: now.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<String>,
    /// A namespace to allow without evaluation.
    #[arg(long = "exclude-namespace", value_name = "NS")]
    pub exclude_namespaces: Vec<String>,
    /// A trusted image (`registry/image[@digest]`), always exempt.
    #[arg(long = "trusted-image", value_name = "REF")]
    pub trusted_images: Vec<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "json")]
    pub output: OutputFormat,
    /// Manifests: YAML, JSON or JSON Lines files; `-` reads standard input.
    #[arg(value_name = "MANIFEST", required = true)]
    pub manifests: Vec<String>,
}

/// Splits `KEY=VALUE` at the first `=`.
fn key_value<'a>(arg: &'a str, what: &str) -> anyhow::Result<(&'a str, &'a str)> {
    arg.split_once('=')
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .ok_or_else(|| anyhow!("{arg:?} is not {what}"))
}

fn load_scan_results(args: &[String], store: &mut MemoryScanStore, digests: &mut DigestMap) -> anyhow::Result<()> {
    for arg in args {
        // `sha256:...=FILE` pins the digest; anything else is a path (which may contain '=').
        let (digest, path) = match arg.split_once('=') {
            Some((d, p)) if is_digest(d) => (Some(d.to_owned()), p),
            _ => (None, arg.as_str()),
        };
        let bytes = std::fs::read(path).with_context(|| format!("--scan-results {path}"))?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).with_context(|| format!("--scan-results {path}: not JSON"))?;
        if value.get("SchemaVersion").is_some() {
            let import = from_trivy(
                &bytes,
                &TrivyImportOptions {
                    digest,
                    ..TrivyImportOptions::default()
                },
            )
            .with_context(|| format!("--scan-results {path}"))?;
            for r in import.results() {
                store.insert(r);
            }
            for tag in &import.repo_tags {
                digests.0.insert(tag.clone(), import.digest().to_owned());
                if let Ok(image) = ImageRef::parse(tag) {
                    digests.0.insert(image.image_path(), import.digest().to_owned());
                }
            }
        } else {
            let results: Vec<ScanResult> = if value.is_array() {
                serde_json::from_value(value).with_context(|| format!("--scan-results {path}"))?
            } else {
                vec![ScanResult::parse_native(&bytes).with_context(|| format!("--scan-results {path}"))?]
            };
            for mut r in results {
                if let Some(d) = &digest {
                    r.digest.clone_from(d);
                }
                r.validate().with_context(|| format!("--scan-results {path}"))?;
                store.insert(&r);
            }
        }
    }
    Ok(())
}

/// `message` without serde_json's trailing ` at line L column C`.
fn without_position(message: &str) -> &str {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match message.rsplit_once(" at line ") {
        Some((head, tail)) if tail.split_once(" column ").is_some_and(|(l, c)| digits(l) && digits(c)) => head,
        _ => message,
    }
}

/// Runs `eval`; bad documents are reported on stderr and evaluation goes on.
pub fn run(args: &EvalArgs) -> anyhow::Result<ExitStatus> {
    let policy = match load_policy(&args.policy) {
        Ok(p) => CompiledPolicy::new(p),
        Err(status) => return Ok(status),
    };
    let mut scans = MemoryScanStore::new();
    let mut digests = DigestMap::default();
    load_scan_results(&args.scan_results, &mut scans, &mut digests)?;
    for arg in &args.digests {
        let (image, digest) = key_value(arg, "IMAGE=DIGEST")?;
        if !is_digest(digest) {
            bail!("--digest {arg}: {digest:?} is not a digest (sha256:<64 hex>)");
        }
        digests.0.insert(image.to_owned(), digest.to_owned());
        if let Ok(parsed) = ImageRef::parse(image) {
            digests.0.insert(parsed.image_path(), digest.to_owned());
        }
    }
    let verdicts = match &args.verdicts {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("--verdicts {}", path.display()))?;
            let map: HashMap<String, HashMap<String, bool>> = serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "--verdicts {}: expected {{\"<image or digest>\": {{\"<attestor>\": true|false}}}}",
                    path.display()
                )
            })?;
            Some(VerdictMap(map))
        }
        None => None,
    };
    let now = match &args.now {
        Some(s) => OffsetDateTime::parse(s, &Rfc3339).with_context(|| format!("--now {s:?} is not RFC 3339"))?,
        None => OffsetDateTime::now_utc(),
    };
    let trusted: Vec<TrustedImage> = args
        .trusted_images
        .iter()
        .map(|t| TrustedImage::parse(t).map_err(|e| anyhow!("--trusted-image {t}: {e}")))
        .collect::<anyhow::Result<_>>()?;
    let ctx = EvalContext {
        now,
        scans: &scans,
        digests: &digests,
        signatures: Signatures::Offline(verdicts.as_ref().map(|v| v as _)),
        excluded_namespaces: &args.exclude_namespaces,
        trusted_images: &trusted,
        failure_mode: FailureMode::FailOpen,
    };

    let stdout = io::stdout();
    let colour = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut reporter = Reporter::new(
        io::BufWriter::with_capacity(64 * 1024, stdout.lock()),
        args.output,
        colour,
    );
    let mut status = ExitStatus::Ok;
    let mut write_error = None;
    for file in &args.manifests {
        let read = for_each_document(file, |doc| {
            if write_error.is_some() {
                return;
            }
            let converted = doc.converted;
            let subjects = doc.json.map_err(|e| format!("(document): {e}")).and_then(|json| {
                policy.parse_document(&json).map_err(|e| {
                    if converted {
                        format!("{}: {}", e.path, without_position(&e.message))
                    } else {
                        e.to_string()
                    }
                })
            });
            match subjects {
                Err(message) => {
                    eprintln!("{file}:{}: {message}", doc.index);
                    status = status.max(ExitStatus::Invalid);
                }
                Ok(subjects) => {
                    for subject in &subjects {
                        let decision = policy.evaluate(subject, &ctx);
                        if decision.verdict == Verdict::Block {
                            status = status.max(ExitStatus::Negative);
                        }
                        if let Err(e) = reporter.decision(policy.name(), subject, &decision) {
                            write_error = Some(e);
                            return;
                        }
                    }
                }
            }
        });
        if let Err(e) = read {
            eprintln!("{file}: {e}");
            status = status.max(ExitStatus::Invalid);
        }
    }
    if let Some(e) = write_error {
        // A closed pipe (`| head`) is not an error worth a message.
        if e.kind() != io::ErrorKind::BrokenPipe {
            return Err(e).context("writing the output");
        }
    }
    match reporter.flush() {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => return Err(e).context("writing the output"),
        _ => {}
    }
    Ok(status)
}
