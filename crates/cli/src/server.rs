//! `portcullis up` (embedded mode: every service in one process on SQLite and the
//! in-process bus) and `portcullis serve <service>` (distributed mode: one service on
//! PostgreSQL and NATS).

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use portcullis_admission::grpc::AdmissionGrpc;
use portcullis_admission::running::grpc_service;
use portcullis_admission::webhook::WebhookOptions;
use portcullis_admission::{BusDigestStage, BusSignatureStage, Hooks, RunningAdmission, ServeOptions, Upstream};
use portcullis_bus::Bus;
use portcullis_continuous::running::grpc_service as continuous_grpc_service;
use portcullis_continuous::{ContinuousServeOptions, RunningContinuous};
use portcullis_kit::client::Trust;
use portcullis_kit::service::{Ended, Served, serve_until_signal};
use portcullis_kit::settings::Flags;
use portcullis_kit::shutdown_signal;
use portcullis_policy_store::{RunningServer, bootstrap_default_tenant, sqlite_url};
use portcullis_proto::admission::v1::admission_service_server::AdmissionServiceServer;
use portcullis_server::rate_limit::RateLimitConfig;
use portcullis_server::{Authenticator, Credentials, Mode, ServerConfig};
use portcullis_signature::running::grpc_service as signature_grpc_service;
use portcullis_signature::{PolicyStoreClient, RunningSignature, SignatureServeOptions};
use portcullis_storage::{Store, StoreOptions};
use portcullis_telemetry_service::running::grpc_service as telemetry_grpc_service;
use portcullis_telemetry_service::{RunningTelemetry, TelemetryServeOptions};
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service as TowerService, http};
use tonic::server::NamedService;

use crate::ExitStatus;
use crate::config::{Service, Settings};

/// TLS for a listener: both files or neither (also `[server] tls_cert`/`tls_key`,
/// `PORTCULLIS_TLS_CERT`/`PORTCULLIS_TLS_KEY`).
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// PEM certificate chain; serves TLS (https) together with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    fn flags(&self, flags: &mut Flags) -> Result<()> {
        flags.set_some(&["server", "tls_cert"], self.tls_cert.as_ref())?;
        flags.set_some(&["server", "tls_key"], self.tls_key.as_ref())?;
        Ok(())
    }
}

/// Where a service of distributed mode beside the store (`serve admission`, `serve
/// signature`) finds the policy store and the bus.
#[derive(Debug, Args)]
struct RemoteArgs {
    /// The policy store, e.g. https://policy-store:50051 (`[upstream] url`,
    /// PORTCULLIS_POLICY_STORE_URL); required.
    #[arg(long, value_name = "URL")]
    policy_store_url: Option<String>,
    /// CA certificate(s), PEM, to trust for an https policy store (`[upstream] ca`,
    /// PORTCULLIS_POLICY_STORE_CA).
    #[arg(long, value_name = "FILE")]
    policy_store_ca: Option<PathBuf>,
    /// NATS URL (JetStream enabled, server 2.10 or later), e.g. nats://host:4222 (`[nats] url`,
    /// PORTCULLIS_NATS_URL); required.
    #[arg(long, value_name = "URL")]
    nats_url: Option<String>,
}

impl RemoteArgs {
    fn flags(&self, flags: &mut Flags) -> Result<()> {
        flags.set_some(&["upstream", "url"], self.policy_store_url.as_ref())?;
        flags.set_some(&["upstream", "ca"], self.policy_store_ca.as_ref())?;
        flags.set_some(&["nats", "url"], self.nats_url.as_ref())?;
        Ok(())
    }
}

/// `portcullis up`. Every flag is also a setting (`portcullis config print`); a flag given
/// wins over the file and the environment.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The settings file (TOML; else PORTCULLIS_CONFIG).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the SQLite database and the bootstrap admin key live [default: ./portcullis-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The one gRPC address of every service, the admission service included
    /// [default: 127.0.0.1:50051].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The admission service's own listener, for connectors [default: 127.0.0.1:50052].
    #[arg(long, value_name = "ADDR")]
    admission_listen: Option<SocketAddr>,
    /// Serves plain text on a non-loopback address (refused otherwise: keys would cross the
    /// network in the clear). Only where the network encrypts on its own (`[up] insecure`).
    #[arg(long)]
    insecure: bool,
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
    #[arg(long, value_name = "ADDR")]
    webhook_listen: Option<SocketAddr>,
    /// Reviews per second each tenant may make (0: unlimited) [default: 1000].
    #[arg(long, value_name = "N")]
    rate_limit: Option<f64>,
    /// Reviews a tenant may make at once above its rate (the bucket size) [default: 2000].
    #[arg(long, value_name = "N")]
    rate_limit_burst: Option<u32>,
    /// A tenant's own limit, `TENANT=RATE[:BURST]`; repeatable.
    #[arg(long, value_name = "TENANT=RATE[:BURST]")]
    tenant_rate_limit: Vec<String>,
}

impl AdmissionArgs {
    fn flags(&self, flags: &mut Flags) -> Result<()> {
        flags.set_some(&["webhook", "listen"], self.webhook_listen)?;
        flags.set_some(&["admission", "rate_limit", "default", "per_second"], self.rate_limit)?;
        flags.set_some(&["admission", "rate_limit", "default", "burst"], self.rate_limit_burst)?;
        let mut parsed = RateLimitConfig::default();
        for spec in &self.tenant_rate_limit {
            parsed.add_override(spec)?;
        }
        for (tenant, limit) in &parsed.overrides {
            flags.set(&["admission", "rate_limit", "overrides", tenant], limit)?;
        }
        Ok(())
    }
}

/// The webhook's listener, when `[webhook] listen` is set (it needs the TLS files).
fn webhook(settings: &Settings) -> Result<Option<WebhookOptions>> {
    let Some(listen) = settings.webhook.listen else {
        return Ok(None);
    };
    let Some(files) = settings.tls() else {
        anyhow::bail!("--webhook-listen needs --tls-cert and --tls-key: the API server calls webhooks over HTTPS only");
    };
    Ok(Some(WebhookOptions {
        listen,
        tls_cert: files.cert,
        tls_key: files.key,
        limits: settings.webhook.limits.clone(),
    }))
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
    /// The signature service: SignatureService over gRPC, `pc.rpc.signature.verify` and
    /// `pc.rpc.signature.resolve`.
    Signature(SignatureServeArgs),
    /// The continuous scanning service: ContinuousService over gRPC (inventory, findings,
    /// mitigation commands, the impact preview).
    Continuous(ContinuousServeArgs),
    /// The telemetry service: TelemetryService over gRPC (runtime event ingest, search,
    /// alerts, risk scores) and the ingest of the other stages' events from the bus.
    Telemetry(TelemetryServeArgs),
}

#[derive(Debug, Args)]
struct TelemetryServeArgs {
    /// The settings file (TOML; else PORTCULLIS_CONFIG).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    remote: RemoteArgs,
    /// PostgreSQL URL of the service's tables, e.g. postgres://user@host:5432/portcullis
    /// (`[telemetry] database_url`); required.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// The continuous service's address, for pod labels runtime events lack
    /// (`[telemetry] continuous_url`).
    #[arg(long, value_name = "URL")]
    continuous_url: Option<String>,
    /// The gRPC listen address; a non-loopback address needs TLS (`[server] telemetry_listen`,
    /// PORTCULLIS_LISTEN) [default: 127.0.0.1:50055].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    tls: TlsArgs,
}

impl TelemetryServeArgs {
    fn settings(&self) -> Result<Settings> {
        let mut flags = Flags::new();
        self.remote.flags(&mut flags)?;
        flags.set_some(&["telemetry", "database_url"], self.database_url.as_ref())?;
        flags.set_some(&["telemetry", "continuous_url"], self.continuous_url.as_ref())?;
        flags.set_some(&["server", "telemetry_listen"], self.listen)?;
        self.tls.flags(&mut flags)?;
        Settings::load(Service::Telemetry, self.config.as_deref(), &flags)
    }
}

#[derive(Debug, Args)]
struct ContinuousServeArgs {
    /// The settings file (TOML; else PORTCULLIS_CONFIG).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    remote: RemoteArgs,
    /// PostgreSQL URL of the service's tables, e.g. postgres://user@host:5432/portcullis
    /// (`[continuous] database_url`); required.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// The gRPC listen address; a non-loopback address needs TLS (`[server] continuous_listen`,
    /// PORTCULLIS_LISTEN) [default: 127.0.0.1:50054].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    tls: TlsArgs,
}

impl ContinuousServeArgs {
    fn settings(&self) -> Result<Settings> {
        let mut flags = Flags::new();
        self.remote.flags(&mut flags)?;
        flags.set_some(&["continuous", "database_url"], self.database_url.as_ref())?;
        flags.set_some(&["server", "continuous_listen"], self.listen)?;
        self.tls.flags(&mut flags)?;
        Settings::load(Service::Continuous, self.config.as_deref(), &flags)
    }
}

#[derive(Debug, Args)]
struct SignatureServeArgs {
    /// The settings file (TOML; else PORTCULLIS_CONFIG).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    remote: RemoteArgs,
    /// The gRPC listen address; a non-loopback address needs TLS (`[server] signature_listen`,
    /// PORTCULLIS_LISTEN) [default: 127.0.0.1:50053].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    tls: TlsArgs,
}

impl SignatureServeArgs {
    fn settings(&self) -> Result<Settings> {
        let mut flags = Flags::new();
        self.remote.flags(&mut flags)?;
        flags.set_some(&["server", "signature_listen"], self.listen)?;
        self.tls.flags(&mut flags)?;
        Settings::load(Service::Signature, self.config.as_deref(), &flags)
    }
}

#[derive(Debug, Args)]
struct AdmissionServeArgs {
    /// The settings file (TOML; else PORTCULLIS_CONFIG).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    remote: RemoteArgs,
    /// The gRPC listen address; a non-loopback address needs TLS (`[server] admission_listen`,
    /// PORTCULLIS_LISTEN) [default: 127.0.0.1:50052].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    admission: AdmissionArgs,
}

#[derive(Debug, Args)]
struct PolicyStoreArgs {
    /// The settings file (TOML; else PORTCULLIS_CONFIG).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// PostgreSQL URL, e.g. postgres://user@host:5432/portcullis (`[policy_store]
    /// database_url`, PORTCULLIS_DATABASE_URL); required.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// NATS URL (JetStream enabled, server 2.10 or later), e.g. nats://host:4222 (`[nats] url`,
    /// PORTCULLIS_NATS_URL); required.
    #[arg(long, value_name = "URL")]
    nats_url: Option<String>,
    /// The gRPC listen address; a non-loopback address needs TLS (`[server] listen`,
    /// PORTCULLIS_LISTEN) [default: 127.0.0.1:50051].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    tls: TlsArgs,
}

impl UpArgs {
    fn settings(&self) -> Result<Settings> {
        let mut flags = Flags::new();
        flags.set_some(&["up", "data_dir"], self.data_dir.as_ref())?;
        flags.set_some(&["server", "listen"], self.listen)?;
        flags.set_some(&["server", "admission_listen"], self.admission_listen)?;
        if self.insecure {
            flags.set(&["up", "insecure"], true)?;
        }
        self.tls.flags(&mut flags)?;
        self.admission.flags(&mut flags)?;
        Settings::load(Service::Up, self.config.as_deref(), &flags)
    }
}

impl PolicyStoreArgs {
    fn settings(&self) -> Result<Settings> {
        let mut flags = Flags::new();
        flags.set_some(&["policy_store", "database_url"], self.database_url.as_ref())?;
        flags.set_some(&["nats", "url"], self.nats_url.as_ref())?;
        flags.set_some(&["server", "listen"], self.listen)?;
        self.tls.flags(&mut flags)?;
        Settings::load(Service::PolicyStore, self.config.as_deref(), &flags)
    }
}

impl AdmissionServeArgs {
    fn settings(&self) -> Result<Settings> {
        let mut flags = Flags::new();
        self.remote.flags(&mut flags)?;
        flags.set_some(&["server", "admission_listen"], self.listen)?;
        self.tls.flags(&mut flags)?;
        self.admission.flags(&mut flags)?;
        Settings::load(Service::Admission, self.config.as_deref(), &flags)
    }
}

/// A required setting that has no default.
fn required<'a>(value: Option<&'a String>, what: &str) -> Result<&'a str> {
    value
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .with_context(|| format!("no {what} given"))
}

/// A gRPC server configuration on `listen` from the settings.
fn server_config(settings: &Settings, listen: SocketAddr, mode: Mode) -> ServerConfig {
    let mut config = ServerConfig::new(listen, mode);
    config.tls = settings.tls();
    config.limits = settings.server.limits.clone();
    config
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
    // Settings first: a bad file or flag fails before anything starts.
    let settings = args.settings()?;
    let huge_pages = portcullis_server::process::disable_transparent_huge_pages();
    let runtime = runtime()?;
    // Declared after `runtime`, so it is dropped (flushed) first, while the workers still run.
    let _telemetry = init_telemetry(&runtime, "portcullis")?;
    warn_if_failed(huge_pages);
    runtime.block_on(run_up(&settings, credentials(operator_key)?))
}

/// Runs `portcullis serve ...` until SIGINT or SIGTERM.
pub fn serve(args: &ServeArgs, operator_key: Option<&str>) -> Result<ExitStatus> {
    let settings = match &args.service {
        ServeService::PolicyStore(ps) => ps.settings()?,
        ServeService::Admission(a) => a.settings()?,
        ServeService::Signature(s) => s.settings()?,
        ServeService::Continuous(c) => c.settings()?,
        ServeService::Telemetry(t) => t.settings()?,
    };
    let huge_pages = portcullis_server::process::disable_transparent_huge_pages();
    let runtime = runtime()?;
    let service = match &args.service {
        ServeService::PolicyStore(_) => "portcullis-policy-store",
        ServeService::Admission(_) => "portcullis-admission",
        ServeService::Signature(_) => "portcullis-signature",
        ServeService::Continuous(_) => "portcullis-continuous",
        ServeService::Telemetry(_) => "portcullis-telemetry",
    };
    let _telemetry = init_telemetry(&runtime, service)?;
    warn_if_failed(huge_pages);
    match &args.service {
        ServeService::PolicyStore(_) => runtime.block_on(run_policy_store(&settings, credentials(operator_key)?)),
        ServeService::Admission(_) => runtime.block_on(run_admission(&settings, credentials(operator_key)?)),
        ServeService::Signature(_) => runtime.block_on(run_signature(&settings, credentials(operator_key)?)),
        ServeService::Continuous(_) => runtime.block_on(run_continuous(&settings, credentials(operator_key)?)),
        ServeService::Telemetry(_) => runtime.block_on(run_telemetry(&settings, credentials(operator_key)?)),
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

async fn run_up(settings: &Settings, credentials: Credentials) -> Result<ExitStatus> {
    // Checked before anything is created or bound.
    let plain_text_off_host = [settings.server.listen, settings.server.admission_listen]
        .into_iter()
        .find(|addr| !addr.ip().is_loopback());
    if let (None, Some(addr)) = (settings.tls(), plain_text_off_host) {
        if !settings.up.insecure {
            anyhow::bail!(
                "refusing to listen on {addr} without TLS: keys would cross the network in plain text; \
                 give --tls-cert and --tls-key, listen on a loopback address, or pass --insecure"
            );
        }
        tracing::warn!("listening on {addr} without TLS (--insecure): keys travel in plain text");
    }
    let webhook = webhook(settings)?;
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
    let data_dir = create_data_dir(&settings.up.data_dir)?;
    let database = data_dir.join("portcullis.db");
    let store = Store::connect_with(&sqlite_url(&database), store_options(settings))
        .await
        .with_context(|| format!("opening {}", database.display()))?;
    if let Some(key_file) = bootstrap_default_tenant(&store, &data_dir).await? {
        tracing::info!("created tenant \"default\"; its admin key is in {}", key_file.display());
    }
    let bus = Bus::memory(settings.bus.clone()).context("starting the in-process bus")?;
    let listen = settings.server.listen;
    let config = server_config(settings, listen, Mode::Embedded);
    // One address for people: AdmissionService joins the policy store's router. It is
    // built after the store listens (admission calls the store), so the router holds a slot
    // filled once admission has started (calls before then get UNAVAILABLE; none come before
    // the ready line).
    let admission_slot = AdmissionSlot::default();
    let slot = admission_slot.clone();
    let signature_slot = SignatureSlot::default();
    let sig_slot = signature_slot.clone();
    let continuous_slot = ContinuousSlot::default();
    let cont_slot = continuous_slot.clone();
    let telemetry_slot = TelemetrySlot::default();
    let tel_slot = telemetry_slot.clone();
    let server = RunningServer::start_with_keys(
        store,
        bus.clone(),
        config.clone(),
        credentials.clone(),
        settings.policy_store.background.clone(),
        settings.policy_store.service_options(),
        settings.policy_store.credentials.key_ring(Some(&data_dir))?,
        move |router| {
            router.add_service(slot);
            router.add_service(sig_slot);
            router.add_service(cont_slot);
            router.add_service(tel_slot);
        },
    )
    .await?;
    // Admission calls the store on this process's own listener: with TLS, it trusts exactly
    // the certificate served there (whatever CA issued it and whatever names it carries).
    let trust = match settings.tls() {
        Some(files) => Some(Trust::Pinned(
            std::fs::read(&files.cert).with_context(|| format!("reading {}", files.cert.display()))?,
        )),
        None => None,
    };
    let upstream = upstream(server.url(), trust.clone(), settings, &credentials)?;
    // The continuous service joins the one router, on a SQLite file of its own beside the
    // store's; it reads policies and scans from the store as it would from another process.
    let continuous_database = data_dir.join("continuous.db");
    let continuous = start_continuous(
        &sqlite_url(&continuous_database),
        server.url(),
        trust.clone(),
        settings,
        &credentials,
        bus.clone(),
        upstream.clone(),
        None,
    )
    .await?;
    continuous_slot.fill(continuous_grpc_service(continuous.continuous()));
    // The telemetry service joins the one router, on a SQLite file of its own; it asks the
    // continuous service on this same address for the labels of pods.
    let telemetry_database = data_dir.join("telemetry.db");
    let mut telemetry_settings = settings.clone();
    if telemetry_settings.telemetry.continuous_url.is_empty() {
        telemetry_settings.telemetry.continuous_url = server.url().to_owned();
    }
    let telemetry = start_telemetry(
        &sqlite_url(&telemetry_database),
        server.url(),
        trust.clone(),
        &telemetry_settings,
        &credentials,
        bus.clone(),
        upstream.clone(),
        None,
    )
    .await?;
    telemetry_slot.fill(telemetry_grpc_service(telemetry.telemetry()));
    // The signature service joins the one router; it reads attestors from the store as it
    // would from another process.
    let signature = start_signature(
        server.url(),
        trust,
        settings,
        &credentials,
        bus.clone(),
        upstream.clone(),
        None,
    )
    .await?;
    signature_slot.fill(signature_grpc_service(signature.signature()));
    let mut admission_config = config;
    admission_config.listen = settings.server.admission_listen;
    let admission = RunningAdmission::start(
        upstream,
        bus.clone(),
        credentials,
        ServeOptions {
            grpc: admission_config,
            webhook,
            admission: settings.admission.clone(),
        },
        signature_hooks(&bus, settings),
    )
    .await?;
    admission_slot.fill(grpc_service(admission.admission()));
    announce(&format!("portcullis listening on {}", server.url()))?;
    announce(&format!("portcullis admission listening on {}", admission.url()))?;
    if let Some(addr) = admission.webhook_addr() {
        announce(&format!(
            "portcullis webhook listening on https://{addr}/validate/{{cluster}}"
        ))?;
    }
    wait_and_stop_all(server, admission, Some(signature), Some(continuous), Some(telemetry)).await
}

type AdmissionServer = AdmissionServiceServer<AdmissionGrpc>;
type SignatureServer = portcullis_proto::signature::v1::signature_service_server::SignatureServiceServer<
    portcullis_signature::grpc::Signature,
>;

/// AdmissionService on `up`'s one address: empty until admission has started.
type AdmissionSlot = Slot<AdmissionServer>;
/// SignatureService on `up`'s one address: empty until the signature service has started.
type SignatureSlot = Slot<SignatureServer>;
type ContinuousServer = portcullis_proto::continuous::v1::continuous_service_server::ContinuousServiceServer<
    portcullis_continuous::grpc::Continuous,
>;
/// ContinuousService on `up`'s one address: empty until the continuous service has started.
type ContinuousSlot = Slot<ContinuousServer>;
type TelemetryServer = portcullis_proto::telemetry::v1::telemetry_service_server::TelemetryServiceServer<
    portcullis_telemetry_service::grpc::Telemetry,
>;
/// TelemetryService on `up`'s one address: empty until the telemetry service has started.
type TelemetrySlot = Slot<TelemetryServer>;

/// A service on `up`'s one address that starts after the router (it calls the store).
struct Slot<S>(Arc<OnceLock<S>>);

impl<S> Clone for Slot<S> {
    fn clone(&self) -> Self {
        Slot(self.0.clone())
    }
}

impl<S> Default for Slot<S> {
    fn default() -> Self {
        Slot(Arc::new(OnceLock::new()))
    }
}

impl<S> Slot<S> {
    fn fill(&self, service: S) {
        // Filled once, by `up` only.
        let _ = self.0.set(service);
    }
}

impl<S: NamedService> NamedService for Slot<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> TowerService<http::Request<Body>> for Slot<S>
where
    S: TowerService<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match self.0.get() {
            Some(service) => {
                let mut service = service.clone();
                Box::pin(async move { service.call(request).await })
            }
            None => {
                let response = tonic::Status::unavailable(format!("{} is starting", S::NAME)).into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

/// A client of the policy store at `url` with the service credential, trusting `trust`.
fn upstream(url: &str, trust: Option<Trust>, settings: &Settings, credentials: &Credentials) -> Result<Upstream> {
    let token = credentials.service_token.as_ref().with_context(|| {
        format!(
            "the admission service calls the policy store with the service credential: set {}",
            portcullis_server::auth::SERVICE_TOKEN_ENV
        )
    })?;
    Ok(Upstream::new(
        url,
        trust,
        token.expose(),
        &settings.upstream.timeouts,
        settings.upstream.insecure,
    )?)
}

/// What a service of distributed mode beside the store reaches: the policy store (its URL,
/// the CA trusted for it, admission's client of it) and the bus.
struct Remote<'a> {
    policy_store_url: &'a str,
    trust: Option<Trust>,
    upstream: Upstream,
    bus: Bus,
}

/// Connects to the policy store and NATS that `settings` name (both required).
async fn connect_remote<'a>(settings: &'a Settings, credentials: &Credentials) -> Result<Remote<'a>> {
    let policy_store_url = required(
        settings.upstream.url.as_ref(),
        "policy store URL: give --policy-store-url, PORTCULLIS_POLICY_STORE_URL or [upstream] url",
    )?;
    let nats_url = required(
        settings.nats.url.as_ref(),
        "NATS URL: give --nats-url, PORTCULLIS_NATS_URL or [nats] url",
    )?;
    let trust = match &settings.upstream.ca {
        Some(path) => Some(Trust::ca_file(path)?),
        None => None,
    };
    let upstream = upstream(policy_store_url, trust.clone(), settings, credentials)?;
    let bus = Bus::connect_nats_with(nats_url, settings.bus.clone(), &settings.nats.access)
        .await
        .with_context(|| format!("connecting to NATS at {nats_url}"))?;
    Ok(Remote {
        policy_store_url,
        trust,
        upstream,
        bus,
    })
}

/// Announces `service` (`portcullis NAME listening on URL`) and serves it until SIGINT or
/// SIGTERM (then it drains and says what it did on stderr: `portcullis NAME drained: stored=...`); a
/// service that stops by itself is an error.
async fn serve_service(name: &str, service: &impl Served) -> Result<ExitStatus> {
    announce(&format!(
        "portcullis {name} listening on {}",
        service.running().url().unwrap_or_default()
    ))?;
    match serve_until_signal(service).await? {
        Ended::Signalled => {
            // After the drain: this replica's share of the work (read by bench-scaling.sh).
            report_drained(&format!(
                "portcullis {name} drained: {}",
                portcullis_kit::service::work_summary(&service.work_done())
            ))?;
            tracing::info!("stopped");
            Ok(ExitStatus::Ok)
        }
        Ended::ByItself => anyhow::bail!("the {name} service stopped unexpectedly"),
    }
}

/// Tenant keys on a service's own listener, checked by the store's introspection and cached
/// as admission caches them (recorded under admission's cache lookup metric).
fn key_authenticator(upstream: Upstream, settings: &Settings) -> Arc<dyn Authenticator> {
    Arc::new(portcullis_policy_client::keys::IntrospectingAuthenticator::new(
        upstream,
        settings.admission.key_cache.clone(),
        Arc::new(portcullis_admission::metrics::AdmissionMetrics::global()),
    ))
}

async fn run_admission(settings: &Settings, credentials: Credentials) -> Result<ExitStatus> {
    let config = server_config(settings, settings.server.admission_listen, Mode::Distributed);
    config.check()?;
    let webhook = webhook(settings)?;
    let Remote { upstream, bus, .. } = connect_remote(settings, &credentials).await?;
    let mut admission = RunningAdmission::start(
        upstream,
        bus.clone(),
        credentials,
        ServeOptions {
            grpc: config,
            webhook,
            admission: settings.admission.clone(),
        },
        signature_hooks(&bus, settings),
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
            // This replica's share of the work, as the other services say it.
            report_drained(&format!(
                "portcullis admission drained: decisions={} published={} dropped={} rejected={}",
                stats.submitted, stats.published, stats.dropped, stats.rejected
            ))?;
            tracing::info!(?stats, "stopped");
            Ok(ExitStatus::Ok)
        }
        result = admission.wait() => {
            result?;
            anyhow::bail!("the admission server stopped unexpectedly")
        }
    }
}

/// Admission's hooks, both the signature service's over `bus`: digests of tag-only images
/// (`pc.rpc.signature.resolve`, each request under admission's digest deadline) and
/// signature verdicts (`pc.rpc.signature.verify`, under its signature deadline).
fn signature_hooks(bus: &Bus, settings: &Settings) -> Hooks {
    Hooks {
        digests: Some(std::sync::Arc::new(BusDigestStage::new(
            bus.clone(),
            settings.admission.digest_deadline,
        ))),
        signatures: Some(std::sync::Arc::new(BusSignatureStage::new(
            bus.clone(),
            settings.admission.signature_deadline,
        ))),
    }
}

/// Starts the signature service over the policy store at `url`: embedded (`listen` `None`)
/// its gRPC service joins another router; distributed it listens on `listen`.
async fn start_signature(
    url: &str,
    trust: Option<Trust>,
    settings: &Settings,
    credentials: &Credentials,
    bus: Bus,
    upstream: Upstream,
    listen: Option<ServerConfig>,
) -> Result<RunningSignature> {
    let token = credentials.service_token.as_ref().with_context(|| {
        format!(
            "the signature service calls the policy store with the service credential: set {}",
            portcullis_server::auth::SERVICE_TOKEN_ENV
        )
    })?;
    let store = PolicyStoreClient::new(
        url,
        trust,
        token.expose(),
        &settings.upstream.timeouts,
        settings.upstream.insecure,
    )?;
    let authenticator = key_authenticator(upstream, settings);
    Ok(RunningSignature::start(
        Arc::new(store),
        bus,
        credentials.clone(),
        authenticator,
        SignatureServeOptions {
            grpc: listen,
            signature: settings.signature.clone(),
        },
    )
    .await?)
}

async fn run_signature(settings: &Settings, credentials: Credentials) -> Result<ExitStatus> {
    let config = server_config(settings, settings.server.signature_listen, Mode::Distributed);
    config.check()?;
    let Remote {
        policy_store_url,
        trust,
        upstream,
        bus,
    } = connect_remote(settings, &credentials).await?;
    let signature = start_signature(
        policy_store_url,
        trust,
        settings,
        &credentials,
        bus,
        upstream,
        Some(config),
    )
    .await?;
    serve_service("signature", &signature).await
}

/// Starts the continuous service on the database at `database_url` over the policy store
/// at `url`: embedded (`listen` `None`) its gRPC service joins another router; distributed
/// it listens on `listen`.
#[allow(clippy::too_many_arguments)]
async fn start_continuous(
    database_url: &str,
    url: &str,
    trust: Option<Trust>,
    settings: &Settings,
    credentials: &Credentials,
    bus: Bus,
    upstream: Upstream,
    listen: Option<ServerConfig>,
) -> Result<RunningContinuous> {
    let token = credentials.service_token.as_ref().with_context(|| {
        format!(
            "the continuous service calls the policy store with the service credential: set {}",
            portcullis_server::auth::SERVICE_TOKEN_ENV
        )
    })?;
    let store = portcullis_continuous::storage::SqlStore::connect(database_url)
        .await
        .context("opening the continuous service's database")?;
    let policies = portcullis_continuous::policies::PolicyStore::new(
        url,
        trust,
        token.expose(),
        &settings.upstream.timeouts,
        settings.upstream.insecure,
    )?;
    let authenticator = key_authenticator(upstream, settings);
    Ok(RunningContinuous::start(
        Arc::new(store),
        policies,
        bus,
        credentials.clone(),
        authenticator,
        ContinuousServeOptions {
            grpc: listen,
            continuous: settings.continuous.clone(),
        },
    )
    .await?)
}

async fn run_continuous(settings: &Settings, credentials: Credentials) -> Result<ExitStatus> {
    let config = server_config(settings, settings.server.continuous_listen, Mode::Distributed);
    config.check()?;
    let database_url = required(
        Some(&settings.continuous.database_url),
        "database URL: give --database-url, PORTCULLIS_CONTINUOUS__DATABASE_URL or [continuous] database_url",
    )?
    .to_owned();
    let Remote {
        policy_store_url,
        trust,
        upstream,
        bus,
    } = connect_remote(settings, &credentials).await?;
    let continuous = start_continuous(
        &database_url,
        policy_store_url,
        trust,
        settings,
        &credentials,
        bus,
        upstream,
        Some(config),
    )
    .await?;
    serve_service("continuous", &continuous).await
}

/// Starts the telemetry service on the database at `database_url` over the policy store
/// at `url`: embedded (`listen` `None`) its gRPC service joins another router; distributed
/// it listens on `listen`.
#[allow(clippy::too_many_arguments)]
async fn start_telemetry(
    database_url: &str,
    url: &str,
    trust: Option<Trust>,
    settings: &Settings,
    credentials: &Credentials,
    bus: Bus,
    upstream: Upstream,
    listen: Option<ServerConfig>,
) -> Result<RunningTelemetry> {
    let token = credentials.service_token.as_ref().with_context(|| {
        format!(
            "the telemetry service calls the policy store with the service credential: set {}",
            portcullis_server::auth::SERVICE_TOKEN_ENV
        )
    })?;
    let store = portcullis_telemetry_service::storage::SqlStore::connect(database_url)
        .await
        .context("opening the telemetry service's database")?;
    let policies = portcullis_telemetry_service::policies::PolicyStore::new(
        url,
        trust.clone(),
        token.expose(),
        &settings.upstream.timeouts,
        settings.upstream.insecure,
        settings.telemetry.policy_cache_ttl,
    )?;
    let continuous_url = &settings.telemetry.continuous_url;
    let continuous = if continuous_url.is_empty() {
        tracing::warn!("no [telemetry] continuous_url: runtime events without pod labels are matched with no labels");
        None
    } else {
        Some(
            portcullis_kit::upstream::service_channel(
                continuous_url,
                trust,
                token.expose(),
                &settings.upstream.timeouts,
                settings.upstream.insecure,
            )
            .context("the continuous service's address")?,
        )
    };
    let authenticator = key_authenticator(upstream, settings);
    Ok(RunningTelemetry::start(
        Arc::new(store),
        policies,
        continuous,
        bus,
        credentials.clone(),
        authenticator,
        TelemetryServeOptions {
            grpc: listen,
            telemetry: settings.telemetry.clone(),
        },
    )
    .await?)
}

async fn run_telemetry(settings: &Settings, credentials: Credentials) -> Result<ExitStatus> {
    let config = server_config(settings, settings.server.telemetry_listen, Mode::Distributed);
    config.check()?;
    let database_url = required(
        Some(&settings.telemetry.database_url),
        "database URL: give --database-url, PORTCULLIS_TELEMETRY__DATABASE_URL or [telemetry] database_url",
    )?
    .to_owned();
    let Remote {
        policy_store_url,
        trust,
        upstream,
        bus,
    } = connect_remote(settings, &credentials).await?;
    let telemetry = start_telemetry(
        &database_url,
        policy_store_url,
        trust,
        settings,
        &credentials,
        bus,
        upstream,
        Some(config),
    )
    .await?;
    serve_service("telemetry", &telemetry).await
}

async fn run_policy_store(settings: &Settings, credentials: Credentials) -> Result<ExitStatus> {
    let config = server_config(settings, settings.server.listen, Mode::Distributed);
    // Before connecting anywhere: a refused listener should fail fast.
    config.check()?;
    let database_url = required(
        settings.policy_store.database_url.as_ref(),
        "database URL: give --database-url, PORTCULLIS_DATABASE_URL or [policy_store] database_url",
    )?;
    let nats_url = required(
        settings.nats.url.as_ref(),
        "NATS URL: give --nats-url, PORTCULLIS_NATS_URL or [nats] url",
    )?;
    let store = Store::connect_with(database_url, store_options(settings))
        .await
        .context("opening the database")?;
    let bus = Bus::connect_nats_with(nats_url, settings.bus.clone(), &settings.nats.access)
        .await
        .with_context(|| format!("connecting to NATS at {nats_url}"))?;
    let server = RunningServer::start_with_keys(
        store,
        bus,
        config,
        credentials,
        settings.policy_store.background.clone(),
        settings.policy_store.service_options(),
        settings.policy_store.credentials.key_ring(None)?,
        |_| {},
    )
    .await?;
    announce(&format!("portcullis policy-store listening on {}", server.url()))?;
    wait_and_stop(server).await
}

/// The pool settings, with this process's `producer` (not a setting: it names the process).
fn store_options(settings: &Settings) -> StoreOptions {
    StoreOptions {
        producer: format!("policy-store/{}", std::process::id()),
        ..settings.store.clone()
    }
}

/// The one line on stdout that says the server is ready.
/// Writes the line a service prints after its drain (its share of the work) to standard
/// error: standard output carries only the ready line, which supervisors and tests read.
fn report_drained(line: &str) -> Result<()> {
    let mut stderr = std::io::stderr().lock();
    writeln!(stderr, "{line}").context("writing to stderr")?;
    stderr.flush().context("writing to stderr")
}

fn announce(line: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").context("writing to stdout")?;
    stdout.flush().context("writing to stdout")
}

/// Serves them until a signal (then drains admission first, then the signature service,
/// then the store) or until one fails.
async fn wait_and_stop_all(
    mut server: RunningServer,
    mut admission: RunningAdmission,
    signature: Option<RunningSignature>,
    continuous: Option<RunningContinuous>,
    telemetry: Option<RunningTelemetry>,
) -> Result<ExitStatus> {
    let signature_ended = async {
        match &signature {
            Some(signature) => signature.wait().await,
            None => std::future::pending().await,
        }
    };
    let continuous_ended = async {
        match &continuous {
            Some(continuous) => continuous.wait().await,
            None => std::future::pending().await,
        }
    };
    let telemetry_ended = async {
        match &telemetry {
            Some(telemetry) => telemetry.wait().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = shutdown_signal() => {
            let stats = admission.stop().await?;
            if let Some(signature) = &signature {
                signature.stop().await?;
            }
            if let Some(continuous) = &continuous {
                continuous.stop().await?;
            }
            // After the services whose events it stores.
            if let Some(telemetry) = &telemetry {
                telemetry.stop().await?;
            }
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
        result = signature_ended => {
            result?;
            anyhow::bail!("the signature service stopped unexpectedly")
        }
        result = continuous_ended => {
            result?;
            anyhow::bail!("the continuous service stopped unexpectedly")
        }
        result = telemetry_ended => {
            result?;
            anyhow::bail!("the telemetry service stopped unexpectedly")
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
