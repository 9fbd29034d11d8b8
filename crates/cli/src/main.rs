//! `portcullis`: one binary for the Portcullis CLI (and, later, its services).

mod certs;
mod client;
mod config;
mod documents;
mod eval;
mod report;
mod server;
mod validate;

use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portcullis_engine::policy::{PolicyDocument, ValidPolicy, validate as validate_policy};

/// Keeps Kubernetes clusters inside their container protection policies.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about)]
struct Cli {
    /// Connection flags of the client commands.
    #[command(flatten)]
    client: client::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Evaluates manifests or admission reviews against a policy, offline.
    Eval(eval::EvalArgs),
    /// Checks policy documents offline.
    Validate(validate::ValidateArgs),
    /// Runs every service in one process (SQLite, in-process bus) until SIGINT or SIGTERM.
    Up(server::UpArgs),
    /// Runs one service in distributed mode (PostgreSQL, NATS) until SIGINT or SIGTERM.
    Serve(server::ServeArgs),
    /// Sends an AdmissionReview to the admission service with a connector key (--api-key) and
    /// prints the response AdmissionReview; exit 0 when allowed, 1 when denied.
    Review(client::review::ReviewArgs),
    /// Verifies an image's signatures against the tenant's attestors with the signature
    /// service; prints each attestor's result; exit 0 when the match holds, 1 when not, 2 on
    /// error (an unknown attestor, a registry that cannot be reached).
    Verify(client::verify::VerifyArgs),
    /// Plays cluster connectors against a running system (admin key): inventory, admission
    /// reviews, exec attempts, runtime events, command acks; prints what was sent and what
    /// came back; exit 0 when nothing failed, 1 when something did, 2 on a setup error.
    Simulate(client::simulate::SimulateArgs),
    /// Checks a settings file or prints the effective settings of `up` or of a service.
    Config(config::ConfigArgs),
    /// Makes a private CA and TLS certificates for the services of distributed mode.
    Certs(certs::CertsArgs),
    /// Asks a server's gRPC health service; exit 0 when SERVING, 1 when not, 2 when it cannot
    /// be asked (container health checks, Kubernetes exec probes).
    Health(client::health::HealthArgs),
    /// Client commands against a running server.
    #[command(flatten)]
    Client(client::ClientCommand),
}

/// Exit statuses: 0 success, 1 a negative verdict only, 2 any error (2 wins over 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitStatus {
    /// Nothing blocked, nothing wrong.
    Ok = 0,
    /// Something was blocked.
    Negative = 1,
    /// Bad input.
    Invalid = 2,
}

/// Reads and validates a policy file; on error prints `FILE: path: message` lines.
pub fn load_policy(path: &Path) -> Result<ValidPolicy, ExitStatus> {
    let shown = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{shown}: {e}");
            return Err(ExitStatus::Invalid);
        }
    };
    PolicyDocument::parse(&text)
        .and_then(|doc| validate_policy(&doc))
        .map_err(|e| {
            for f in e.field_errors() {
                eprintln!("{shown}: {f}");
            }
            ExitStatus::Invalid
        })
}

/// mimalloc instead of the system allocator: a review allocates a few hundred small strings
/// and buffers, and the admission service under load served ~48% more reviews per core with
/// it (BENCHMARKS.md, "Admission service").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Eval(args) => eval::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Up(args) => server::up(args, cli.client.operator_key.as_deref()),
        Command::Serve(args) => server::serve(args, cli.client.operator_key.as_deref()),
        Command::Config(args) => config::run(args, cli.client.operator_key.as_deref()),
        Command::Certs(args) => certs::run(args),
        Command::Health(args) => Ok(client::health::run(&cli.client, args)),
        Command::Review(args) => Ok(client::review::run(&cli.client, args)),
        Command::Verify(args) => Ok(client::verify::run(&cli.client, args)),
        Command::Simulate(args) => Ok(client::simulate::run(&cli.client, args)),
        Command::Client(command) => Ok(client::run(&cli.client, command)),
    };
    match result {
        Ok(status) => ExitCode::from(status as u8),
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::from(ExitStatus::Invalid as u8)
        }
    }
}
