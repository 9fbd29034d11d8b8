//! `portcullis simulate --clusters N --pods M [--rate R] [--duration D]` (admin key): plays N
//! cluster connectors against a running system (the `portcullis-simulator` crate) and prints
//! what they sent and what came back. Exit 0 when nothing failed, 1 when something did, 2
//! when the simulation could not start.

use std::io::Write as _;
use std::time::Duration;

use portcullis_simulator::{Endpoints, SimulationConfig};

use super::connection::parse_server;
use super::duration::{format_duration, parse_timeout};
use super::output::{Format, OutputArg};
use super::{GlobalArgs, error::ClientError};
use crate::ExitStatus;

/// Arguments of `simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Clusters (connectors), named `<prefix>-0`, `<prefix>-1`, ...
    #[arg(long, default_value_t = 2, value_name = "N")]
    clusters: usize,
    /// Running pods per cluster (synced to the continuous service).
    #[arg(long, default_value_t = 50, value_name = "M")]
    pods: usize,
    /// Admission reviews per second, all clusters together (open loop).
    #[arg(long, default_value_t = 200, value_name = "R")]
    rate: u32,
    /// Runtime events per second, all clusters together.
    #[arg(long, default_value_t = 50, value_name = "E")]
    runtime_rate: u32,
    /// How long to send, e.g. `10s`, `2m`.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_timeout)]
    duration: Duration,
    /// Prefix of the cluster names (and of the simulation's policy and ruleset).
    #[arg(long, default_value = "sim", value_name = "PREFIX")]
    prefix: String,
    /// An admission replica (repeat for several; default: --server).
    #[arg(long = "admission", value_name = "URL")]
    admission: Vec<String>,
    /// A continuous replica (repeat for several; default: --server).
    #[arg(long = "continuous", value_name = "URL")]
    continuous: Vec<String>,
    /// A telemetry replica (repeat for several; default: --server).
    #[arg(long = "telemetry", value_name = "URL")]
    telemetry: Vec<String>,
    /// Reviews waiting for an answer at most; one due beyond it is not sent (and counted).
    #[arg(long, default_value_t = 256, value_name = "N")]
    in_flight: usize,
    #[command(flatten)]
    output: OutputArg,
}

/// The URLs of `flags`, or `--server`'s when none.
fn urls(flags: &[String], server: &str, flag: &str) -> Result<Vec<String>, ClientError> {
    let given: Vec<&str> = if flags.is_empty() {
        vec![server]
    } else {
        flags.iter().map(String::as_str).collect()
    };
    given
        .into_iter()
        .map(|text| {
            parse_server(text)
                .map(|url| url.uri)
                .map_err(|e| ClientError::input(format!("{flag}: {e}")))
        })
        .collect()
}

fn config(global: &GlobalArgs, args: &SimulateArgs) -> Result<SimulationConfig, ClientError> {
    let server = parse_server(&global.server).map_err(ClientError::Input)?.uri;
    let key = global
        .api_key
        .clone()
        .ok_or_else(|| ClientError::input("an admin key is needed: --api-key or PORTCULLIS_API_KEY"))?;
    let endpoints = Endpoints {
        policy_store: server.clone(),
        admission: urls(&args.admission, &server, "--admission")?,
        continuous: urls(&args.continuous, &server, "--continuous")?,
        telemetry: urls(&args.telemetry, &server, "--telemetry")?,
        ca_cert: global.ca_cert.clone(),
    };
    let mut config = SimulationConfig::new(endpoints, key);
    config.clusters = args.clusters;
    config.pods = args.pods;
    config.rate = args.rate;
    config.runtime_rate = args.runtime_rate;
    config.duration = args.duration;
    config.cluster_prefix = args.prefix.clone();
    config.in_flight = args.in_flight;
    config.call_timeout = global.timeout;
    config.insecure = global.insecure;
    Ok(config)
}

/// Runs `simulate`; errors are printed here.
pub fn run(global: &GlobalArgs, args: &SimulateArgs) -> ExitStatus {
    let outcome = config(global, args).and_then(|config| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| ClientError::input(format!("cannot start the async runtime: {e}")))?;
        if args.output.output == Format::Table {
            eprintln!(
                "simulating {} cluster(s) of {} pods: {} reviews/s, {} events/s for {}",
                config.clusters,
                config.pods,
                config.rate,
                config.runtime_rate,
                format_duration(config.duration)
            );
        }
        runtime
            .block_on(portcullis_simulator::run(config))
            .map_err(|e| ClientError::input(e.to_string()))
    });
    let report = match outcome {
        Ok(report) => report,
        Err(error) => {
            let mut stderr = std::io::stderr().lock();
            for line in error.lines() {
                let _ = writeln!(stderr, "portcullis: simulate: {line}");
            }
            return ExitStatus::Invalid;
        }
    };
    let text = match args.output.output {
        Format::Json => serde_json::to_string_pretty(&report).unwrap_or_default(),
        Format::Table => report.summary(),
    };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
    if report.ok() {
        ExitStatus::Ok
    } else {
        ExitStatus::Negative
    }
}
