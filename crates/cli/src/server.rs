//! `portcullis up` (embedded mode: every service in one process on SQLite and the
//! in-process bus) and `portcullis serve <service>` (distributed mode: one service on
//! PostgreSQL and NATS).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use portcullis_admission::rate_limit::{RateLimitConfig, TenantLimit};
use portcullis_admission::webhook::WebhookOptions;
use portcullis_admission::{AdmissionOptions, Hooks, RunningAdmission, ServeOptions, Upstream};
use portcullis_bus::{Bus, BusConfig};
use portcullis_kit::shutdown_signal;
use portcullis_policy_store::{BackgroundOptions, RunningServer, bootstrap_default_tenant, sqlite_url};
use portcullis_server::{Credentials, Mode, ServerConfig, TlsFiles};
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
    /// The gRPC listen address of the policy store's services.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// The gRPC listen address of the admission service (connectors call it).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50052")]
    admission_listen: SocketAddr,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    admission: AdmissionArgs,
}

/// The admission service's own flags (in `up` and `serve admission`).
#[derive(Debug, Clone, Args)]
struct AdmissionArgs {
    /// Also serve the Kubernetes validating webhook (`POST /validate/{cluster}`) over HTTPS
    /// on this address, with --tls-cert and --tls-key.
    #[arg(long, value_name = "ADDR", env = "PORTCULLIS_WEBHOOK_LISTEN")]
    webhook_listen: Option<SocketAddr>,
    /// Reviews per second each tenant may make (0: unlimited).
    #[arg(long, value_name = "N", default_value_t = portcullis_admission::rate_limit::DEFAULT_PER_SECOND)]
    rate_limit: f64,
    /// Reviews a tenant may make at once above its rate (the bucket size).
    #[arg(long, value_name = "N", default_value_t = portcullis_admission::rate_limit::DEFAULT_BURST)]
    rate_limit_burst: u32,
    /// A tenant's own limit, `TENANT=RATE[:BURST]`; repeatable.
    #[arg(long, value_name = "TENANT=RATE[:BURST]")]
    tenant_rate_limit: Vec<String>,
}

impl AdmissionArgs {
    fn options(&self) -> Result<AdmissionOptions> {
        let mut rate_limit = RateLimitConfig::default();
        rate_limit.default = if self.rate_limit == 0.0 {
            TenantLimit::UNLIMITED
        } else {
            TenantLimit {
                per_second: self.rate_limit,
                burst: self.rate_limit_burst,
            }
        };
        for spec in &self.tenant_rate_limit {
            rate_limit.add_override(spec)?;
        }
        rate_limit.validate()?;
        Ok(AdmissionOptions {
            rate_limit,
            ..AdmissionOptions::default()
        })
    }

    fn webhook(&self, tls: &TlsArgs) -> Result<Option<WebhookOptions>> {
        let Some(listen) = self.webhook_listen else {
            return Ok(None);
        };
        let Some(files) = tls.files() else {
            anyhow::bail!(
                "--webhook-listen needs --tls-cert and --tls-key: the API server calls webhooks over HTTPS only"
            );
        };
        Ok(Some(WebhookOptions {
            listen,
            tls_cert: files.cert,
            tls_key: files.key,
        }))
    }
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
    /// The admission service: AdmissionService over gRPC and, optionally, the webhook.
    Admission(AdmissionServeArgs),
}

#[derive(Debug, Args)]
struct AdmissionServeArgs {
    /// The policy store, e.g. https://policy-store:50051.
    #[arg(long, value_name = "URL", env = "PORTCULLIS_POLICY_STORE_URL")]
    policy_store_url: String,
    /// CA certificate(s), PEM, to trust for an https policy store.
    #[arg(long, value_name = "FILE", env = "PORTCULLIS_POLICY_STORE_CA")]
    policy_store_ca: Option<PathBuf>,
    /// NATS URL (JetStream enabled, server 2.10 or later), e.g. nats://host:4222.
    #[arg(long, value_name = "URL", env = "PORTCULLIS_NATS_URL")]
    nats_url: String,
    /// The gRPC listen address; a non-loopback address needs TLS.
    #[arg(
        long,
        value_name = "ADDR",
        env = "PORTCULLIS_LISTEN",
        default_value = "127.0.0.1:50052"
    )]
    listen: SocketAddr,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    admission: AdmissionArgs,
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

/// Logs to stderr (`RUST_LOG`, default info with quiet migrations); spans and metrics over
/// OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Called inside the runtime; the guard
/// flushes the exporters when dropped.
fn init_telemetry(
    runtime: &tokio::runtime::Runtime,
    service: &str,
) -> Result<Option<portcullis_telemetry::TelemetryGuard>> {
    use portcullis_telemetry::{TelemetryConfig, TelemetryError, init};
    let _entered = runtime.enter();
    let config = TelemetryConfig::from_env_or(
        service,
        "info,sea_orm_migration=warn,sqlx=warn,async_nats=warn,opentelemetry=warn",
    );
    match init(config) {
        Ok(guard) => Ok(Some(guard)),
        // A second call (tests calling twice) keeps the first setup.
        Err(TelemetryError::AlreadyInitialized | TelemetryError::SubscriberAlreadySet(_)) => Ok(None),
        Err(err) => Err(err).context("setting up telemetry"),
    }
}

/// Servers run without transparent huge pages (their faults stall requests; see
/// [`portcullis_server::process::disable_transparent_huge_pages`]); where the kernel refuses,
/// the server runs anyway and says so.
fn warn_if_failed(huge_pages: std::io::Result<()>) {
    if let Err(error) = huge_pages {
        tracing::warn!(%error, "could not turn off transparent huge pages; latency may show their faults");
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs `portcullis up` until SIGINT or SIGTERM.
pub fn up(args: &UpArgs, operator_key: Option<&str>) -> Result<ExitStatus> {
    let huge_pages = portcullis_server::process::disable_transparent_huge_pages();
    let runtime = runtime()?;
    // Declared after `runtime`, so it is dropped (flushed) first, while the workers still run.
    let _telemetry = init_telemetry(&runtime, "portcullis")?;
    warn_if_failed(huge_pages);
    runtime.block_on(run_up(args, credentials(operator_key)?))
}

/// Runs `portcullis serve ...` until SIGINT or SIGTERM.
pub fn serve(args: &ServeArgs, operator_key: Option<&str>) -> Result<ExitStatus> {
    let huge_pages = portcullis_server::process::disable_transparent_huge_pages();
    let runtime = runtime()?;
    let service = match &args.service {
        ServeService::PolicyStore(_) => "portcullis-policy-store",
        ServeService::Admission(_) => "portcullis-admission",
    };
    let _telemetry = init_telemetry(&runtime, service)?;
    warn_if_failed(huge_pages);
    match &args.service {
        ServeService::PolicyStore(ps) => runtime.block_on(run_policy_store(ps, credentials(operator_key)?)),
        ServeService::Admission(a) => runtime.block_on(run_admission(a, credentials(operator_key)?)),
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
    let admission_options = args.admission.options()?;
    let webhook = args.admission.webhook(&args.tls)?;
    // In one process the services still talk as they would apart; admission calls the store
    // with the service credential, made up here when none is configured.
    let credentials = match credentials.service_token {
        Some(_) => credentials,
        None => Credentials::new(
            credentials.operator_key.as_ref().map(|k| k.expose().to_owned()),
            Some(format!("svc-{}", uuid::Uuid::new_v4().simple())),
        )
        .map_err(anyhow::Error::msg)?,
    };
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
    let server = RunningServer::start(
        store,
        bus.clone(),
        config.clone(),
        credentials.clone(),
        BackgroundOptions::default(),
    )
    .await?;
    let upstream = upstream(server.url(), None, &credentials)?;
    let mut admission_config = config;
    admission_config.listen = args.admission_listen;
    let admission = RunningAdmission::start(
        upstream,
        bus,
        credentials,
        ServeOptions {
            grpc: admission_config,
            webhook,
            admission: admission_options,
        },
        Hooks::default(),
    )
    .await?;
    announce(&format!("portcullis listening on {}", server.url()))?;
    announce(&format!("portcullis admission listening on {}", admission.url()))?;
    if let Some(addr) = admission.webhook_addr() {
        announce(&format!(
            "portcullis webhook listening on https://{addr}/validate/{{cluster}}"
        ))?;
    }
    wait_and_stop_both(server, admission).await
}

/// A client of the policy store at `url` with the service credential.
fn upstream(url: &str, ca: Option<&Path>, credentials: &Credentials) -> Result<Upstream> {
    let token = credentials.service_token.as_ref().with_context(|| {
        format!(
            "the admission service calls the policy store with the service credential: set {}",
            portcullis_server::auth::SERVICE_TOKEN_ENV
        )
    })?;
    let ca = match ca {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?),
        None => None,
    };
    Ok(Upstream::new(
        url,
        ca.as_deref(),
        token.expose(),
        std::time::Duration::from_secs(5),
    )?)
}

async fn run_admission(args: &AdmissionServeArgs, credentials: Credentials) -> Result<ExitStatus> {
    let mut config = ServerConfig::new(args.listen, Mode::Distributed);
    config.tls = args.tls.files();
    config.check()?;
    let options = args.admission.options()?;
    let webhook = args.admission.webhook(&args.tls)?;
    let upstream = upstream(&args.policy_store_url, args.policy_store_ca.as_deref(), &credentials)?;
    let bus = Bus::connect_nats(&args.nats_url, BusConfig::default())
        .await
        .with_context(|| format!("connecting to NATS at {}", args.nats_url))?;
    let mut admission = RunningAdmission::start(
        upstream,
        bus,
        credentials,
        ServeOptions {
            grpc: config,
            webhook,
            admission: options,
        },
        Hooks::default(),
    )
    .await?;
    announce(&format!("portcullis admission listening on {}", admission.url()))?;
    if let Some(addr) = admission.webhook_addr() {
        announce(&format!(
            "portcullis webhook listening on https://{addr}/validate/{{cluster}}"
        ))?;
    }
    tokio::select! {
        () = shutdown_signal() => {
            let stats = admission.stop().await?;
            tracing::info!(?stats, "stopped");
            Ok(ExitStatus::Ok)
        }
        result = admission.wait() => {
            result?;
            anyhow::bail!("the admission server stopped unexpectedly")
        }
    }
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

/// Serves both until a signal (then drains admission first, then the store) or until one
/// fails.
async fn wait_and_stop_both(mut server: RunningServer, mut admission: RunningAdmission) -> Result<ExitStatus> {
    tokio::select! {
        () = shutdown_signal() => {
            let stats = admission.stop().await?;
            let flushed = server.stop().await?;
            tracing::info!(events_flushed = flushed, ?stats, "stopped");
            Ok(ExitStatus::Ok)
        }
        result = server.wait() => {
            result?;
            anyhow::bail!("the policy store stopped unexpectedly")
        }
        result = admission.wait() => {
            result?;
            anyhow::bail!("the admission server stopped unexpectedly")
        }
    }
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
