//! `portcullis review -f REVIEW.json`: sends an AdmissionReview to the admission service with
//! a connector key (`--api-key`) and prints the response AdmissionReview JSON. Exit 0 when
//! allowed, 1 when denied, 2 on any error.

use std::io::Write as _;

use portcullis_proto::admission::v1 as pa;
use portcullis_proto::admission::v1::admission_service_client::AdmissionServiceClient;

use super::document::read_source;
use super::error::ClientError;
use super::{Ctx, GlobalArgs, KeyChoice, MAX_MESSAGE, by_name};
use crate::ExitStatus;

/// Arguments of `review`.
#[derive(Debug, clap::Args)]
pub struct ReviewArgs {
    /// The AdmissionReview JSON (`-` for standard input).
    #[arg(short = 'f', long = "file", value_name = "REVIEW")]
    file: String,
    /// The cluster by name (default: the connector key's own cluster).
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
}

/// Runs `review`; errors are printed here.
pub fn run(global: &GlobalArgs, args: &ReviewArgs) -> ExitStatus {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::input(format!("cannot start the async runtime: {e}")))
        .and_then(|runtime| runtime.block_on(review(&Ctx { global }, args)));
    match result {
        Ok(true) => ExitStatus::Ok,
        Ok(false) => ExitStatus::Negative,
        Err(error) => {
            let mut stderr = std::io::stderr().lock();
            for line in error.lines() {
                let _ = writeln!(stderr, "portcullis: review: {line}");
            }
            ExitStatus::Invalid
        }
    }
}

async fn review(ctx: &Ctx<'_>, args: &ReviewArgs) -> Result<bool, ClientError> {
    let bytes = read_source(&args.file)?;
    let conn = ctx.connect(KeyChoice::Tenant).await?;
    let mut client = AdmissionServiceClient::with_interceptor(conn.channel.clone(), conn.auth.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let request = pa::ReviewRequest {
        cluster: args.cluster.as_deref().and_then(by_name),
        admission_review_json: bytes.into(),
        request_id: String::new(),
    };
    let answer = client.review(request).await.map_err(|s| conn.error(s))?.into_inner();
    let allowed = answer.decision.as_ref().is_some_and(|d| d.allowed);
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_all(&answer.admission_review_json)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    written.map_err(|e| ClientError::input(format!("writing to stdout: {e}")))?;
    Ok(allowed)
}
