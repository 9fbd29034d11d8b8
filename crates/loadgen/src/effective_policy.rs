//! `effective-policy`: GetEffectivePolicy with the seeded connector keys, in turn, through
//! the [`crate::load`] driver.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use portcullis_proto::policystore::v1::GetEffectivePolicyRequest;
use portcullis_proto::policystore::v1::policy_service_client::PolicyServiceClient;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Channel;

use crate::load::{self, LoadOptions, Outcome, Report};

/// Arguments of `effective-policy`.
#[derive(Debug, Args)]
pub struct EffectivePolicyArgs {
    /// The policy store, `http://HOST:PORT`.
    #[arg(long)]
    pub server: String,
    /// The keys file written by `seed`.
    #[arg(long)]
    pub keys: PathBuf,
    /// How to load the server.
    #[command(flatten)]
    pub load: LoadOptions,
}

/// The connector keys of a keys file, as `authorization` values. Blank lines and `#`
/// comments are skipped; the key is a line's last tab-separated field.
pub fn parse_keys(text: &str) -> Result<Vec<AsciiMetadataValue>> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line.rsplit('\t').next().unwrap_or(line).trim();
        let value = MetadataValue::try_from(format!("Bearer {key}"))
            .with_context(|| format!("line {}: the key is not valid metadata", n + 1))?;
        keys.push(value);
    }
    if keys.is_empty() {
        bail!("no keys");
    }
    Ok(keys)
}

fn read_keys(path: &Path) -> Result<Vec<AsciiMetadataValue>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_keys(&text).with_context(|| format!("in {}", path.display()))
}

/// One GetEffectivePolicy call with `key`; a response counts only when it names the
/// cluster and carries the policy.
async fn call(channel: Channel, key: AsciiMetadataValue) -> Outcome {
    let mut request = tonic::Request::new(GetEffectivePolicyRequest::default());
    request.metadata_mut().insert("authorization", key);
    match PolicyServiceClient::new(channel).get_effective_policy(request).await {
        Ok(response) => {
            let answer = response.into_inner();
            if answer.cluster_id.is_empty() || answer.policy.is_none() {
                Err("bad-response".to_owned())
            } else {
                Ok(())
            }
        }
        Err(status) => Err(format!("{:?}", status.code())),
    }
}

/// Runs `effective-policy`: call `i` uses key `i % keys`.
pub async fn run(args: &EffectivePolicyArgs) -> Result<Report> {
    let keys = Arc::new(read_keys(&args.keys)?);
    let connections = load::connect(std::slice::from_ref(&args.server), &args.load).await?;
    load::drive(&args.load, connections, "GetEffectivePolicy", move |i, channel| {
        let key = keys
            .get(usize::try_from(i % keys.len().max(1) as u64).unwrap_or(0))
            .cloned();
        async move {
            match key {
                Some(key) => call(channel, key).await,
                None => Err("no-key".to_owned()),
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn keys_are_the_last_field_of_each_line() {
        let text = "# tenant\tcluster\tkey\n\nbench-00000\tc1\tpck_a_b\nbench-00001\tc2\tpck_c_d\n";
        let keys = parse_keys(text).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].to_str().unwrap(), "Bearer pck_a_b");
        assert_eq!(keys[1].to_str().unwrap(), "Bearer pck_c_d");
        assert!(parse_keys("# only a comment\n").is_err());
    }
}
