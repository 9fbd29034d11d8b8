//! `portcullis-loadgen`: seeds a policy store database and load-tests the Portcullis gRPC
//! services; also serves the no-op admission baseline.
//!
//! - `seed --database-url URL --tenants N --policies M --keys-out FILE`: N tenants, M policies
//!   spread evenly over them (each a production-like document of 15 rules), one cluster per
//!   tenant with one of its policies assigned; the clusters' connector keys go to FILE.
//! - `effective-policy --server URL --keys FILE (--rate R | --closed-loop --concurrency C)
//!   --duration D`: calls GetEffectivePolicy with the connector keys in turn.
//! - `admission --server URL [--server URL2 ...] --key KEY [--cluster ID] --review FILE
//!   (--rate R | --closed-loop --concurrency C) --duration D`: calls AdmissionService.Review
//!   with the review, its `request.uid` fresh for every call; with several servers (replicas)
//!   the connections are spread over them and the calls each answered are counted.
//! - `noop-server --listen ADDR [--key KEY]`: an AdmissionService that judges nothing,
//!   behind the real server stack; prints `noop-server listening on http://ADDR` when ready
//!   and serves until SIGINT or SIGTERM.
//! - `webhook --server https://HOST:PORT --ca-cert CA --key KEY --cluster ID --review FILE
//!   [--protocol h2|http1.1] [--expect allowed|denied] (--rate R | --closed-loop
//!   --concurrency C) --duration D`: POSTs the review to the HTTPS webhook.
//! - `noop-webhook --listen ADDR --tls-cert F --tls-key F [--key KEY] [--review FILE]`: a
//!   webhook that judges nothing, behind the real HTTPS transport; prints `noop-webhook
//!   listening on https://ADDR` when ready and serves until SIGINT or SIGTERM.
//!
//! The load commands report the achieved rate, latency percentiles (from the intended start
//! time in open loop, so a stalled server is not hidden by a generator that waits for it),
//! errors by gRPC code and CPU use (server, generator, machine); `--json` prints one JSON
//! object instead.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use portcullis_loadgen::admission::AdmissionArgs;
use portcullis_loadgen::admission::ReviewTemplate;
use portcullis_loadgen::effective_policy::EffectivePolicyArgs;
use portcullis_loadgen::engine_cost::EngineCostArgs;
use portcullis_loadgen::seed::SeedArgs;
use portcullis_loadgen::webhook::WebhookArgs;
use portcullis_loadgen::{admission, effective_policy, engine_cost, noop, noop_webhook, runtime, seed, webhook};

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
    EffectivePolicy(EffectivePolicyArgs),
    /// Calls AdmissionService.Review at a fixed rate or as fast as possible and reports latency.
    Admission(AdmissionArgs),
    /// Serves the no-op AdmissionService (the throughput baseline) until SIGINT or SIGTERM.
    NoopServer(NoopArgs),
    /// POSTs AdmissionReviews to the HTTPS webhook (HTTP/2 or HTTP/1.1) at a fixed rate or as
    /// fast as possible and reports latency.
    Webhook(WebhookArgs),
    /// Serves the no-op webhook (the webhook's throughput baseline) until SIGINT or SIGTERM.
    NoopWebhook(NoopWebhookArgs),
    /// Parses and evaluates one review with one policy in a hot loop and prints the engine's
    /// cost a review (the bound on the admission benchmark's ratio).
    EngineCost(EngineCostArgs),
}

/// Arguments of `noop-server`.
#[derive(Debug, Args)]
struct NoopArgs {
    /// The listen address; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:50061")]
    listen: SocketAddr,
    /// The connector key to accept.
    #[arg(long, default_value = noop::DEFAULT_NOOP_KEY)]
    key: String,
}

/// Arguments of `noop-webhook`.
#[derive(Debug, Args)]
struct NoopWebhookArgs {
    /// The listen address; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8444")]
    listen: SocketAddr,
    /// The certificate chain, PEM (e.g. from `portcullis certs init DIR`).
    #[arg(long)]
    tls_cert: PathBuf,
    /// The private key, PEM.
    #[arg(long)]
    tls_key: PathBuf,
    /// The connector key to accept.
    #[arg(long, default_value = noop::DEFAULT_NOOP_KEY)]
    key: String,
    /// The review the generator sends: a body that is it with another uid has its uid cut
    /// out instead of parsed (as the gRPC no-op reads `request_id`).
    #[arg(long)]
    review: Option<PathBuf>,
}

/// The same allocator as `portcullis`, so that the no-op baseline server runs on the same
/// footing as the real service.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Command::Seed(args) => multi_thread()?.block_on(seed::run(&args)),
        Command::EffectivePolicy(args) => {
            let report = runtime(args.load.threads)?.block_on(effective_policy::run(&args))?;
            report.print(args.load.json);
            Ok(())
        }
        Command::Admission(args) => {
            let report = runtime(args.load.threads)?.block_on(admission::run(&args))?;
            report.print(args.load.json);
            Ok(())
        }
        Command::NoopServer(args) => {
            // The footing of `portcullis up`: no transparent huge pages, and its runtime (one
            // worker per core the process may run on).
            server_footing("noop-server");
            let runtime = multi_thread()?;
            runtime.block_on(async {
                let server = noop::bind(args.listen, &args.key).await?;
                announce(&format!("noop-server listening on {}", server.url()))?;
                server.serve(portcullis_kit::shutdown_signal()).await?;
                Ok(())
            })
        }
        Command::Webhook(args) => {
            let report = runtime(args.load.threads)?.block_on(webhook::run(&args))?;
            report.print(args.load.json);
            Ok(())
        }
        Command::NoopWebhook(args) => {
            server_footing("noop-webhook");
            let template = match &args.review {
                Some(path) => {
                    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                    Some(ReviewTemplate::new(&text).with_context(|| format!("in {}", path.display()))?)
                }
                None => None,
            };
            let runtime = multi_thread()?;
            runtime.block_on(async {
                let server = noop_webhook::bind(args.listen, args.tls_cert, args.tls_key, &args.key, template).await?;
                announce(&format!("noop-webhook listening on {}", server.url()))?;
                server.serve(portcullis_kit::shutdown_signal()).await?;
                Ok(())
            })
        }
        Command::EngineCost(args) => {
            // The server's footing here too (the engine runs on the same allocator).
            server_footing("engine-cost");
            engine_cost::run(&args)
        }
    }
}

/// A multi-thread runtime, one worker per core the process may run on (as `portcullis up`).
fn multi_thread() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Prints a readiness line on stdout at once (a script waits for it).
fn announce(line: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").context("writing to stdout")?;
    stdout.flush().context("writing to stdout")
}

/// Puts this process on `portcullis up`'s footing: transparent huge pages off (where the
/// kernel refuses, `what` says so and goes on, as the server does).
fn server_footing(what: &str) {
    if let Err(error) = portcullis_server::process::disable_transparent_huge_pages() {
        eprintln!("{what}: could not turn off transparent huge pages: {error}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn rate_and_closed_loop_exclude_each_other() {
        for base in [
            &[
                "portcullis-loadgen",
                "effective-policy",
                "--server",
                "http://x",
                "--keys",
                "k",
            ][..],
            &[
                "portcullis-loadgen",
                "admission",
                "--server",
                "http://x",
                "--key",
                "k",
                "--review",
                "r.json",
            ][..],
            &[
                "portcullis-loadgen",
                "webhook",
                "--server",
                "https://127.0.0.1:8443",
                "--ca-cert",
                "ca.crt",
                "--key",
                "k",
                "--cluster",
                "c",
                "--review",
                "r.json",
                "--protocol",
                "http1.1",
            ][..],
        ] {
            let with = |extra: &[&str]| Cli::try_parse_from(base.iter().chain(extra.iter()));
            assert!(with(&["--rate", "100"]).is_ok());
            assert!(with(&["--closed-loop"]).is_ok());
            assert!(with(&[]).is_err(), "one mode is required");
            assert!(with(&["--rate", "100", "--closed-loop"]).is_err());
        }
    }

    #[test]
    fn noop_server_takes_a_listen_address_and_an_optional_key() {
        let cli = Cli::try_parse_from(["portcullis-loadgen", "noop-server", "--listen", "127.0.0.1:0"]).unwrap();
        let Command::NoopServer(args) = cli.command else {
            panic!("not noop-server");
        };
        assert_eq!(args.key, noop::DEFAULT_NOOP_KEY);
        assert_eq!(args.listen.port(), 0);
    }
}
