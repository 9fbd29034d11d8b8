//! `portcullis-loadgen`: seeds a policy store database with a benchmark dataset and
//! measures `PolicyService.GetEffectivePolicy` over gRPC, as connectors call it.
//!
//! - `seed --database-url URL --tenants N --policies M --keys-out FILE`: N tenants, M policies
//!   spread evenly over them (each a production-like document of 15 rules), one cluster per
//!   tenant with one of its policies assigned; the clusters' connector keys go to FILE.
//! - `effective-policy --server URL --keys FILE (--rate R | --closed-loop --concurrency C)
//!   --duration D`: calls GetEffectivePolicy with the connector keys in turn and reports the
//!   achieved rate, latency percentiles (from the intended start time in open loop, so a
//!   stalled server is not hidden by a generator that waits for it) and errors.

mod cpu;
mod load;
mod seed;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "portcullis-loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes the benchmark dataset straight into a policy store database.
    Seed(SeedArgs),
    /// Calls GetEffectivePolicy at a fixed rate or as fast as possible and reports latency.
    EffectivePolicy(LoadArgs),
}

/// Arguments of `seed`.
#[derive(Debug, Args)]
pub struct SeedArgs {
    /// The database (`postgres://...` or `sqlite://PATH?mode=rwc`); migrated when needed.
    #[arg(long)]
    pub database_url: String,
    /// How many tenants.
    #[arg(long, default_value_t = 1000)]
    pub tenants: usize,
    /// How many policies in all, spread evenly over the tenants (at least one each).
    #[arg(long, default_value_t = 10_000)]
    pub policies: usize,
    /// Where to write the connector keys: one `tenant<TAB>cluster id<TAB>key` line each.
    #[arg(long, default_value = "loadgen-keys.tsv")]
    pub keys_out: PathBuf,
    /// Tenants seeded at the same time.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Prefix of the tenant ids (`PREFIX-00001`, ...).
    #[arg(long, default_value = "bench")]
    pub tenant_prefix: String,
}

/// Arguments of `effective-policy`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The policy store, `http://HOST:PORT`.
    #[arg(long)]
    pub server: String,
    /// The keys file written by `seed`.
    #[arg(long)]
    pub keys: PathBuf,
    /// Open loop: requests per second, started on schedule whatever the server does.
    #[arg(long, conflicts_with = "closed_loop", required_unless_present = "closed_loop")]
    pub rate: Option<f64>,
    /// Closed loop: `--concurrency` callers, each sending its next request when the last
    /// one is answered (measures the maximum rate).
    #[arg(long)]
    pub closed_loop: bool,
    /// Callers in closed loop.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// How long to measure: `30s`, `2m`, `500ms` or plain seconds.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load sent before measuring (same rate), not recorded.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// HTTP/2 connections to the server; requests go over them in turn.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Open loop: requests in flight beyond this are not sent and count as dropped.
    #[arg(long, default_value_t = 20_000)]
    pub max_in_flight: usize,
    /// Per-request deadline.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Worker threads of the generator's runtime (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// The server's process id: its CPU use during the measurement is reported.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Also report the summed CPU use of every process with this command name
    /// (e.g. `postgres`); repeatable.
    #[arg(long)]
    pub watch_comm: Vec<String>,
    /// A label for the result line (e.g. `before`, `after`).
    #[arg(long, default_value = "")]
    pub label: String,
}

/// `30s`, `2m`, `500ms`, or plain seconds (`1.5`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 30s, 2m or 500ms"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{text:?} must be a non-negative duration"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis-loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Seed(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(seed::run(&args))
        }
        Command::EffectivePolicy(args) => {
            let runtime = if args.threads <= 1 {
                tokio::runtime::Builder::new_current_thread().enable_all().build()
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(args.threads)
                    .enable_all()
                    .build()
            }
            .context("starting the async runtime")?;
            runtime.block_on(load::run(&args))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn rate_and_closed_loop_exclude_each_other() {
        let base = [
            "portcullis-loadgen",
            "effective-policy",
            "--server",
            "http://x",
            "--keys",
            "k",
        ];
        let with = |extra: &[&str]| Cli::try_parse_from(base.iter().chain(extra.iter()));
        assert!(with(&["--rate", "100"]).is_ok());
        assert!(with(&["--closed-loop"]).is_ok());
        assert!(with(&[]).is_err(), "one mode is required");
        assert!(with(&["--rate", "100", "--closed-loop"]).is_err());
    }
}
