//! `portcullis verify IMAGE --attestor NAME... [--match all|any] [--cluster C]`: asks the
//! signature service for each attestor's verdict and prints one line per attestor
//! (`ATTESTOR: verified|not verified|error: reason`), then whether the match holds. Exit 0
//! when it holds, 1 when it does not, 2 on any error: a call that fails, and any attestor
//! whose check could not be made (an unknown attestor, a registry that is down), since
//! then nothing can be said of the match.

use std::io::Write as _;

use portcullis_proto::signature::v1 as ps;
use portcullis_proto::signature::v1::signature_service_client::SignatureServiceClient;

use super::error::ClientError;
use super::{Ctx, GlobalArgs, KeyChoice, MAX_MESSAGE, by_name};
use crate::ExitStatus;

/// How the attestors' verdicts combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Match {
    /// Every attestor must have signed.
    All,
    /// At least one attestor must have signed.
    Any,
}

/// Arguments of `verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The image reference, by tag or digest.
    #[arg(value_name = "IMAGE")]
    image: String,
    /// An attestor of the tenant, by name (repeat for several).
    #[arg(long = "attestor", value_name = "NAME", required = true)]
    attestors: Vec<String>,
    /// Whether all or any of the attestors must hold.
    #[arg(long = "match", value_enum, default_value = "all")]
    match_: Match,
    /// The cluster whose registry credentials to use, by name (default: anonymous).
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
}

/// Runs `verify`; errors are printed here.
pub fn run(global: &GlobalArgs, args: &VerifyArgs) -> ExitStatus {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::input(format!("cannot start the async runtime: {e}")))
        .and_then(|runtime| runtime.block_on(verify(&Ctx { global }, args)));
    match result {
        Ok(status) => status,
        Err(error) => {
            let mut stderr = std::io::stderr().lock();
            for line in error.lines() {
                let _ = writeln!(stderr, "portcullis: verify: {line}");
            }
            ExitStatus::Invalid
        }
    }
}

/// What the verdicts say under `how`: `None` when some attestor could not be checked.
pub fn holds(verdicts: &[ps::Verdict], how: Match) -> Option<bool> {
    if verdicts.is_empty()
        || verdicts
            .iter()
            .any(|v| !matches!(v, ps::Verdict::Verified | ps::Verdict::NotVerified))
    {
        return None;
    }
    let verified = |v: &ps::Verdict| *v == ps::Verdict::Verified;
    Some(match how {
        Match::All => verdicts.iter().all(verified),
        Match::Any => verdicts.iter().any(verified),
    })
}

async fn verify(ctx: &Ctx<'_>, args: &VerifyArgs) -> Result<ExitStatus, ClientError> {
    let conn = ctx.connect(KeyChoice::Tenant).await?;
    let mut client = SignatureServiceClient::with_interceptor(conn.channel.clone(), conn.auth.clone())
        .max_decoding_message_size(MAX_MESSAGE);
    let request = ps::VerifyRequest {
        tenant_id: String::new(),
        cluster: args.cluster.as_deref().and_then(by_name),
        image: args.image.clone(),
        attestors: args.attestors.clone(),
        digest: String::new(),
    };
    let answer = client.verify(request).await.map_err(|s| conn.error(s))?.into_inner();
    let mut out = String::new();
    if !answer.digest.is_empty() {
        out.push_str(&format!("{}@{}\n", args.image, answer.digest));
    }
    for verdict in &answer.verdicts {
        let word = match verdict.verdict() {
            ps::Verdict::Verified => "verified",
            ps::Verdict::NotVerified => "not verified",
            ps::Verdict::Error | ps::Verdict::Unspecified => "error",
        };
        out.push_str(&format!("{}: {word}: {}\n", verdict.attestor, verdict.reason));
    }
    let verdicts: Vec<ps::Verdict> = answer.verdicts.iter().map(ps::AttestorVerdict::verdict).collect();
    let how = match args.match_ {
        Match::All => "all",
        Match::Any => "any",
    };
    let status = match holds(&verdicts, args.match_) {
        Some(true) => {
            out.push_str(&format!("match {how}: holds\n"));
            ExitStatus::Ok
        }
        Some(false) => {
            out.push_str(&format!("match {how}: does not hold\n"));
            ExitStatus::Negative
        }
        None => {
            out.push_str(&format!("match {how}: cannot be judged\n"));
            ExitStatus::Invalid
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| ClientError::input(format!("writing to stdout: {e}")))?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_all_and_any() {
        use ps::Verdict::{Error, NotVerified, Verified};
        assert_eq!(holds(&[Verified, Verified], Match::All), Some(true));
        assert_eq!(holds(&[Verified, NotVerified], Match::All), Some(false));
        assert_eq!(holds(&[Verified, NotVerified], Match::Any), Some(true));
        assert_eq!(holds(&[NotVerified, NotVerified], Match::Any), Some(false));
        // An attestor that could not be checked makes the match unknowable, either way.
        assert_eq!(holds(&[Verified, Error], Match::Any), None);
        assert_eq!(holds(&[NotVerified, Error], Match::All), None);
        assert_eq!(holds(&[], Match::All), None);
    }
}
