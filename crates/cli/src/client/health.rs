//! `portcullis health [URL] [--service NAME]`: asks a server's `grpc.health.v1.Health/Check`,
//! for container health checks and Kubernetes exec probes (kubelet's own gRPC probes cannot
//! speak TLS to a private CA). Exit 0 when `SERVING`, 1 when the server answers anything
//! else (`NOT_SERVING` while starting or draining, an unknown service), 2 when it cannot be
//! asked (no connection, a certificate not trusted, the deadline).
//!
//! Without `--service` the server's overall status is asked (`""`: the process answers,
//! a liveness check); with it, one service's (`portcullis.admission.v1.AdmissionService`:
//! ready to take calls, a readiness check). The health service needs no credential, so no
//! key is sent and plain text to another host is allowed.

use std::io::Write as _;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::GlobalArgs;
use super::connection::{connect, parse_server};
use super::error::ClientError;
use crate::ExitStatus;

/// Arguments of `health`.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// The server, as --server takes it (default: --server).
    #[arg(value_name = "URL")]
    url: Option<String>,
    /// The service whose status to ask, e.g. portcullis.admission.v1.AdmissionService
    /// (default: the server as a whole).
    #[arg(long, value_name = "NAME", default_value = "")]
    service: String,
}

/// Runs `health`; prints the status (`SERVING`, `NOT_SERVING`, ...) on stdout, errors on
/// stderr.
pub fn run(global: &GlobalArgs, args: &HealthArgs) -> ExitStatus {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::input(format!("cannot start the async runtime: {e}")))
        .and_then(|runtime| runtime.block_on(check(global, args)));
    match result {
        Ok(status) => {
            let _ = writeln!(std::io::stdout().lock(), "{}", status.as_str_name());
            if status == ServingStatus::Serving {
                ExitStatus::Ok
            } else {
                ExitStatus::Negative
            }
        }
        Err(error) => {
            let mut stderr = std::io::stderr().lock();
            for line in error.lines() {
                let _ = writeln!(stderr, "portcullis: health: {line}");
            }
            ExitStatus::Invalid
        }
    }
}

async fn check(global: &GlobalArgs, args: &HealthArgs) -> Result<ServingStatus, ClientError> {
    let server = parse_server(args.url.as_deref().unwrap_or(&global.server)).map_err(ClientError::Input)?;
    // No key is sent: plain text off this host leaks nothing.
    let channel = connect(&server, global.ca_cert.as_deref(), true, global.timeout).await?;
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: args.service.clone(),
    };
    match client.check(request).await {
        Ok(answer) => Ok(ServingStatus::try_from(answer.into_inner().status).unwrap_or(ServingStatus::Unknown)),
        // The health protocol's answer for a service the server does not have.
        Err(status) if status.code() == tonic::Code::NotFound => Ok(ServingStatus::ServiceUnknown),
        Err(status) => Err(ClientError::input(format!(
            "{}: {:?}: {}",
            server.uri,
            status.code(),
            status.message()
        ))),
    }
}
