//! `portcullis up` (embedded mode: every service in one process on SQLite and the
//! in-process bus) and `portcullis serve <service>` (distributed mode: one service on
//! PostgreSQL and NATS).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use portcullis_bus::{Bus, BusConfig};
use portcullis_policy_store::{BackgroundOptions, RunningServer, bootstrap_default_tenant, sqlite_url};
use portcullis_server::{Credentials, Mode, ServerConfig, TlsFiles, shutdown_signal};
use portcullis_storage::{Store, StoreOptions};

use crate::ExitStatus;

/// TLS for a listener: both files or neither.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// PEM certificate chain; serves TLS (https) together with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key", env = "PORTCULLIS_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert", env = "PORTCULLIS_TLS_KEY")]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    fn files(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }
}

/// `portcullis up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where the SQLite database and the bootstrap admin key live.
    #[arg(long, value_name = "DIR", default_value = "./portcullis-data")]
    data_dir: PathBuf,
    /// The gRPC listen address of every service.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    #[command(flatten)]
    tls: TlsArgs,
}

/// `portcullis serve <service>`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(subcommand)]
    service: ServeService,
}

#[derive(Debug, Subcommand)]
enum ServeService {
    /// The policy store: policies, rulesets, attestors, clusters, scans, tenants, keys, audit.
    PolicyStore(PolicyStoreArgs),
}

#[derive(Debug, Args)]
struct PolicyStoreArgs {
    /// PostgreSQL URL, e.g. postgres://user@host:5432/portcullis.
    #[arg(long, value_name = "URL", env = "PORTCULLIS_DATABASE_URL")]
    database_url: String,
    /// NATS URL (JetStream enabled, server 2.10 or later), e.g. nats://host:4222.
    #[arg(long, value_name = "URL", env = "PORTCULLIS_NATS_URL")]
    nats_url: String,
    /// The gRPC listen address; a non-loopback address needs TLS.
    #[arg(
        long,
        value_name = "ADDR",
        env = "PORTCULLIS_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    listen: SocketAddr,
    #[command(flatten)]
    tls: TlsArgs,
}

/// Logs to stderr, filtered by `RUST_LOG` (default: info, quiet migrations).
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sea_orm_migration=warn,sqlx=warn,async_nats=warn"));
    // A second call (tests calling twice) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs `portcullis up` until SIGINT or SIGTERM.
pub fn up(args: &UpArgs, operator_key: Option<&str>) -> Result<ExitStatus> {
    init_tracing();
    runtime()?.block_on(run_up(args, credentials(operator_key)?))
}

/// Runs `portcullis serve ...` until SIGINT or SIGTERM.
pub fn serve(args: &ServeArgs, operator_key: Option<&str>) -> Result<ExitStatus> {
    init_tracing();
    match &args.service {
        ServeService::PolicyStore(ps) => runtime()?.block_on(run_policy_store(ps, credentials(operator_key)?)),
    }
}

fn create_data_dir(dir: &Path) -> Result<PathBuf> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        // The folder holds the database and an admin key: owner only.
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    dir.canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))
}

/// The operator key (the global `--operator-key`, which also reads `PORTCULLIS_OPERATOR_KEY`)
/// and the service token (`PORTCULLIS_SERVICE_TOKEN`).
fn credentials(operator_key: Option<&str>) -> Result<Credentials> {
    let operator_key = operator_key.filter(|k| !k.is_empty()).map(str::to_owned);
    let service_token = std::env::var(portcullis_server::auth::SERVICE_TOKEN_ENV)
        .ok()
        .filter(|v| !v.is_empty());
    Credentials::new(operator_key, service_token).map_err(anyhow::Error::msg)
}

async fn run_up(args: &UpArgs, credentials: Credentials) -> Result<ExitStatus> {
    let data_dir = create_data_dir(&args.data_dir)?;
    let database = data_dir.join("portcullis.db");
    let store = Store::connect_with(&sqlite_url(&database), store_options())
        .await
        .with_context(|| format!("opening {}", database.display()))?;
    if let Some(key_file) = bootstrap_default_tenant(&store, &data_dir).await? {
        tracing::info!("created tenant \"default\"; its admin key is in {}", key_file.display());
    }
    let bus = Bus::memory(BusConfig::embedded()).context("starting the in-process bus")?;
    let mut config = ServerConfig::new(args.listen, Mode::Embedded);
    config.tls = args.tls.files();
    if config.tls.is_none() && !args.listen.ip().is_loopback() {
        tracing::warn!("listening on {} without TLS: keys travel in plain text", args.listen);
    }
    let server = RunningServer::start(store, bus, config, credentials, BackgroundOptions::default()).await?;
    announce(&format!("portcullis listening on {}", server.url()))?;
    wait_and_stop(server).await
}

async fn run_policy_store(args: &PolicyStoreArgs, credentials: Credentials) -> Result<ExitStatus> {
    let mut config = ServerConfig::new(args.listen, Mode::Distributed);
    config.tls = args.tls.files();
    // Before connecting anywhere: a refused listener should fail fast.
    config.check()?;
    let store = Store::connect_with(&args.database_url, store_options())
        .await
        .context("opening the database")?;
    let bus = Bus::connect_nats(&args.nats_url, BusConfig::default())
        .await
        .with_context(|| format!("connecting to NATS at {}", args.nats_url))?;
    let server = RunningServer::start(store, bus, config, credentials, BackgroundOptions::default()).await?;
    announce(&format!("portcullis policy-store listening on {}", server.url()))?;
    wait_and_stop(server).await
}

fn store_options() -> StoreOptions {
    StoreOptions {
        producer: format!("policy-store/{}", std::process::id()),
        ..StoreOptions::default()
    }
}

/// The one line on stdout that says the server is ready.
fn announce(line: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").context("writing to stdout")?;
    stdout.flush().context("writing to stdout")
}

/// Serves until a signal (then drains and exits 0) or until the server fails.
async fn wait_and_stop(mut server: RunningServer) -> Result<ExitStatus> {
    tokio::select! {
        () = shutdown_signal() => {
            let flushed = server.stop().await?;
            tracing::info!(events_flushed = flushed, "stopped");
            Ok(ExitStatus::Ok)
        }
        result = server.wait() => {
            result?;
            anyhow::bail!("the server stopped unexpectedly")
        }
    }
}
