//! `portcullis validate`: checks policy documents offline (for GitOps pipelines).

use std::io::{self, Write};
use std::path::PathBuf;

use portcullis_engine::policy::{PolicyDocument, validate};
use serde_json::json;

use crate::ExitStatus;
use crate::report::OutputFormat;

/// Arguments of `portcullis validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "json")]
    pub output: OutputFormat,
    /// Policy documents (JSON or YAML).
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
}

/// Runs `validate`: one line per file; errors also go to stderr as `FILE: path: message`.
pub fn run(args: &ValidateArgs) -> anyhow::Result<ExitStatus> {
    let mut out = io::stdout().lock();
    let mut status = ExitStatus::Ok;
    for file in &args.files {
        let shown = file.display().to_string();
        let result = std::fs::read(file)
            .map_err(|e| vec![("(file)".to_owned(), e.to_string())])
            .and_then(|bytes| {
                String::from_utf8(bytes).map_err(|_| vec![("(file)".to_owned(), "not valid UTF-8".to_owned())])
            })
            .and_then(|text| {
                PolicyDocument::parse(&text)
                    .and_then(|doc| validate(&doc))
                    .map_err(|e| e.field_errors().into_iter().map(|f| (f.path, f.message)).collect())
            });
        match result {
            Ok(policy) => match args.output {
                OutputFormat::Json => writeln!(
                    out,
                    "{}",
                    json!({"file": shown, "valid": true, "name": policy.document.name})
                )?,
                OutputFormat::Table => writeln!(out, "{shown}: valid policy {:?}", policy.document.name)?,
            },
            Err(errors) => {
                status = ExitStatus::Invalid;
                for (path, message) in &errors {
                    eprintln!("{shown}: {path}: {message}");
                }
                if args.output == OutputFormat::Json {
                    let errors: Vec<_> = errors.iter().map(|(p, m)| json!({"path": p, "message": m})).collect();
                    writeln!(out, "{}", json!({"file": shown, "valid": false, "errors": errors}))?;
                }
            }
        }
    }
    Ok(status)
}
