//! The settings of `up` and `serve <service>` (one section per service and per shared
//! concern, each the service's own option struct), read through the kit's one scheme: the
//! TOML file (`--config FILE` or `PORTCULLIS_CONFIG`), then `PORTCULLIS_<SECTION>__<KEY>`
//! variables, then flags. `portcullis config check FILE` and `portcullis config print`.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use portcullis_admission::AdmissionOptions;
use portcullis_bus::BusConfig;
use portcullis_kit::settings::{Environment, Flags, Layers, SettingsError, config_file};
use portcullis_policy_store::BackgroundOptions;
use portcullis_policy_store::cache::CacheOptions;
use portcullis_server::rate_limit::RateLimitConfig;
use portcullis_storage::StoreOptions;
use portcullis_storage::credentials::{KeyRing, load_or_generate_key_file};
use serde::{Deserialize, Serialize};

use crate::ExitStatus;

/// Every setting of every service. A service reads the sections it uses
/// ([`Service::sections`]); `config print --service S` shows those.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The gRPC listeners.
    pub server: ServerSettings,
    /// `portcullis up` only.
    pub up: UpSettings,
    /// The event bus: stream limits, deadlines, queues (embedded and NATS).
    pub bus: BusConfig,
    /// NATS, in distributed mode.
    pub nats: NatsSettings,
    /// The database pool.
    pub store: StoreOptions,
    /// The policy store service.
    pub policy_store: PolicyStoreSettings,
    /// The admission service: deadlines, rate limits, caches, decision events.
    pub admission: AdmissionOptions,
    /// The admission service's client of the policy store (distributed mode).
    pub upstream: UpstreamSettings,
    /// The admission service's Kubernetes webhook.
    pub webhook: WebhookSettings,
    /// The signature service: verdict caches, the registry client, request/reply.
    pub signature: portcullis_signature::SignatureOptions,
    /// The continuous scanning service: its database, sweep, queues, rate limit.
    pub continuous: portcullis_continuous::ContinuousOptions,
    /// The telemetry service: its database, retention, batches, queues, rate limit.
    pub telemetry: portcullis_telemetry_service::TelemetryOptions,
}

/// The gRPC listeners.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// The one address for people: every service of `up`, the policy store of `serve
    /// policy-store` (`--listen`, `PORTCULLIS_LISTEN` for `serve policy-store`).
    pub listen: SocketAddr,
    /// The admission service's own listener for connectors: `up --admission-listen`, `serve
    /// admission --listen` (`PORTCULLIS_LISTEN` for `serve admission`).
    pub admission_listen: SocketAddr,
    /// The signature service's own listener: `serve signature --listen`
    /// (`PORTCULLIS_LISTEN` for `serve signature`); `up` serves it on `listen`.
    pub signature_listen: SocketAddr,
    /// The continuous scanning service's own listener: `serve continuous --listen`
    /// (`PORTCULLIS_LISTEN` for `serve continuous`); `up` serves it on `listen`.
    pub continuous_listen: SocketAddr,
    /// The telemetry service's own listener: `serve telemetry --listen`
    /// (`PORTCULLIS_LISTEN` for `serve telemetry`); `up` serves it on `listen`.
    pub telemetry_listen: SocketAddr,
    /// PEM certificate chain; with `tls_key`, every listener serves TLS
    /// (`--tls-cert`, `PORTCULLIS_TLS_CERT`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (`--tls-key`, `PORTCULLIS_TLS_KEY`).
    pub tls_key: Option<PathBuf>,
    /// Deadlines, connections and streams of every gRPC listener.
    pub limits: portcullis_server::ServerLimits,
}

impl Default for ServerSettings {
    fn default() -> ServerSettings {
        ServerSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            admission_listen: SocketAddr::from(([127, 0, 0, 1], 50052)),
            signature_listen: SocketAddr::from(([127, 0, 0, 1], 50053)),
            continuous_listen: SocketAddr::from(([127, 0, 0, 1], 50054)),
            telemetry_listen: SocketAddr::from(([127, 0, 0, 1], 50055)),
            tls_cert: None,
            tls_key: None,
            limits: portcullis_server::ServerLimits::default(),
        }
    }
}

/// `portcullis up` only.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpSettings {
    /// Where the SQLite database and the bootstrap admin key live (`--data-dir`).
    pub data_dir: PathBuf,
    /// Serve plain text on a non-loopback address (`--insecure`); refused otherwise.
    pub insecure: bool,
}

impl Default for UpSettings {
    fn default() -> UpSettings {
        UpSettings {
            data_dir: PathBuf::from("./portcullis-data"),
            insecure: false,
        }
    }
}

/// NATS, in distributed mode.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSettings {
    /// NATS URL, JetStream enabled, e.g. `nats://host:4222` (`--nats-url`,
    /// `PORTCULLIS_NATS_URL`); required by `serve`.
    pub url: Option<String>,
    /// Credentials (user and password, token, nkey seed or creds file) and TLS.
    pub access: portcullis_bus::NatsAccess,
}

/// The policy store service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyStoreSettings {
    /// PostgreSQL URL (`--database-url`, `PORTCULLIS_DATABASE_URL`); required by `serve
    /// policy-store`. Its password is redacted by `config print`.
    pub database_url: Option<String>,
    /// The key and effective-policy caches (lifetimes at most 30 s, ARCHITECTURE.md).
    pub cache: CacheOptions,
    /// The per-tenant limit of every call made with a tenant's key (connectors' heartbeats
    /// and policy reads, people's calls), per replica.
    pub rate_limit: RateLimitConfig,
    /// The outbox relay, the key sweep, the drain at shutdown.
    pub background: BackgroundOptions,
    /// The keys registry credentials are encrypted with at rest.
    pub credentials: CredentialKeySettings,
    /// Images every new cluster trusts from its creation (Portcullis's own repository by
    /// default); shown and removable like any other trusted image. Empty: none.
    pub default_trusted_images: Vec<String>,
}

/// `[policy_store.credentials]`: the AES-256 key files registry credentials are sealed with.
/// Distributed mode needs them for the credential calls; embedded `up` without any uses
/// `DATA_DIR/credentials.key`, created (mode 0600) on first start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CredentialKeySettings {
    /// The id of the key new rows are sealed with; empty when only one key is configured.
    pub active_key: String,
    /// Key files by id (32 random bytes, base64, one line). Keep old ids while rows sealed
    /// under them remain: that is how keys rotate.
    pub keys: BTreeMap<String, PathBuf>,
}

impl CredentialKeySettings {
    /// The key ring: from the configured files, else (embedded, `data_dir` given) the data
    /// folder's key, else none (the credential calls are then refused).
    pub fn key_ring(&self, data_dir: Option<&Path>) -> Result<Option<Arc<KeyRing>>> {
        if self.keys.is_empty() {
            let Some(dir) = data_dir else {
                return Ok(None);
            };
            let path = dir.join("credentials.key");
            let key = load_or_generate_key_file(&path).with_context(|| format!("credential key {}", path.display()))?;
            let ring = KeyRing::new([(EMBEDDED_KEY_ID.to_owned(), key)], EMBEDDED_KEY_ID)?;
            return Ok(Some(Arc::new(ring)));
        }
        let active = match (self.active_key.as_str(), self.keys.keys().next()) {
            ("", Some(only)) if self.keys.len() == 1 => only.clone(),
            ("", _) => anyhow::bail!("policy_store.credentials.active_key: required when several keys are configured"),
            (active, _) => active.to_owned(),
        };
        let ring = KeyRing::from_files(self.keys.iter().map(|(id, p)| (id.as_str(), p.as_path())), &active)
            .context("policy_store.credentials")?;
        Ok(Some(Arc::new(ring)))
    }
}

/// The id of embedded mode's generated key.
const EMBEDDED_KEY_ID: &str = "embedded";

impl Default for PolicyStoreSettings {
    fn default() -> PolicyStoreSettings {
        PolicyStoreSettings {
            database_url: None,
            cache: CacheOptions::default(),
            rate_limit: portcullis_policy_store::default_rate_limit(),
            background: BackgroundOptions::default(),
            credentials: CredentialKeySettings::default(),
            default_trusted_images: vec![portcullis_policy_store::DEFAULT_TRUSTED_IMAGE.to_owned()],
        }
    }
}

impl PolicyStoreSettings {
    /// The gRPC services' options.
    pub fn service_options(&self) -> portcullis_policy_store::ServiceOptions {
        portcullis_policy_store::ServiceOptions {
            cache: self.cache.clone(),
            rate_limit: self.rate_limit.clone(),
            default_trusted_images: self.default_trusted_images.clone(),
        }
    }
}

/// The admission and signature services' client of the policy store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamSettings {
    /// The policy store, e.g. `https://policy-store:50051` (`--policy-store-url`,
    /// `PORTCULLIS_POLICY_STORE_URL`); required by `serve admission`. `http://` only on this
    /// host (a loopback address), unless `insecure`.
    pub url: Option<String>,
    /// CA certificate(s), PEM, for an https policy store (`--policy-store-ca`,
    /// `PORTCULLIS_POLICY_STORE_CA`).
    pub ca: Option<PathBuf>,
    /// Allows an `http://` policy store off this host: the service credential then crosses
    /// the network in the clear, so only where the network encrypts on its own (a service
    /// mesh with mutual TLS).
    pub insecure: bool,
    /// Call deadline, connect timeout and keepalive.
    pub timeouts: portcullis_admission::UpstreamTimeouts,
}

/// The admission service's Kubernetes webhook.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Serve `POST /validate/{cluster}` over HTTPS here, with the server's TLS files
    /// (`--webhook-listen`, `PORTCULLIS_WEBHOOK_LISTEN`); off when unset.
    pub listen: Option<SocketAddr>,
    /// Body size, deadlines, connections and requests in flight.
    pub limits: portcullis_admission::webhook::WebhookLimits,
}

/// Which settings: those of `up` or of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Service {
    /// `portcullis up`: every service in one process.
    Up,
    /// `portcullis serve policy-store`.
    PolicyStore,
    /// `portcullis serve admission`.
    Admission,
    /// `portcullis serve signature`.
    Signature,
    /// `portcullis serve continuous`.
    Continuous,
    /// `portcullis serve telemetry`.
    Telemetry,
    /// Every section (the defaults of distributed mode).
    All,
}

const ALL_SECTIONS: &[&str] = &[
    "server",
    "up",
    "bus",
    "nats",
    "store",
    "policy_store",
    "admission",
    "upstream",
    "webhook",
    "signature",
    "continuous",
    "telemetry",
];

impl Service {
    /// The sections this service reads.
    pub fn sections(self) -> &'static [&'static str] {
        match self {
            Service::Up => &[
                "server",
                "up",
                "bus",
                "store",
                "policy_store",
                "admission",
                "webhook",
                "signature",
                "continuous",
                "telemetry",
            ],
            Service::PolicyStore => &["server", "bus", "nats", "store", "policy_store"],
            Service::Admission => &["server", "bus", "nats", "admission", "upstream", "webhook"],
            Service::Signature => &["server", "bus", "nats", "upstream", "signature"],
            Service::Continuous => &["server", "bus", "nats", "upstream", "continuous"],
            Service::Telemetry => &["server", "bus", "nats", "upstream", "telemetry"],
            Service::All => ALL_SECTIONS,
        }
    }

    /// The defaults: the option structs' own, with the in-process bus's memory-sized stream
    /// limits for `up`.
    pub fn defaults(self) -> Settings {
        let mut settings = Settings::default();
        if self == Service::Up {
            settings.bus = BusConfig::embedded();
        }
        settings
    }

    /// The environment with the single-name variables of the earlier flags read as keys.
    fn environment(self, env: Environment) -> Environment {
        let env = env
            .alias("PORTCULLIS_TLS_CERT", "server.tls_cert")
            .alias("PORTCULLIS_TLS_KEY", "server.tls_key")
            .alias("PORTCULLIS_WEBHOOK_LISTEN", "webhook.listen")
            .alias("PORTCULLIS_NATS_URL", "nats.url")
            .alias("PORTCULLIS_DATABASE_URL", "policy_store.database_url")
            .alias("PORTCULLIS_POLICY_STORE_URL", "upstream.url")
            .alias("PORTCULLIS_POLICY_STORE_CA", "upstream.ca");
        match self {
            Service::PolicyStore => env.alias("PORTCULLIS_LISTEN", "server.listen"),
            Service::Admission => env.alias("PORTCULLIS_LISTEN", "server.admission_listen"),
            Service::Signature => env.alias("PORTCULLIS_LISTEN", "server.signature_listen"),
            Service::Continuous => env.alias("PORTCULLIS_LISTEN", "server.continuous_listen"),
            Service::Telemetry => env.alias("PORTCULLIS_LISTEN", "server.telemetry_listen"),
            Service::Up | Service::All => env,
        }
    }
}

impl Settings {
    /// `service`'s settings: its defaults, the file (`config`, else `PORTCULLIS_CONFIG`),
    /// the process's `PORTCULLIS_*` variables, then `flags`; checked.
    pub fn load(service: Service, config: Option<&Path>, flags: &Flags) -> Result<Settings> {
        Settings::load_from(service, config, Environment::process(), flags)
    }

    fn load_from(service: Service, config: Option<&Path>, env: Environment, flags: &Flags) -> Result<Settings> {
        let file = config_file(config, &env);
        let env = service.environment(env);
        let settings = Layers {
            defaults: service.defaults(),
            file: file.as_deref(),
            env: &env,
            flags,
        }
        .load(ALL_SECTIONS)
        .and_then(Settings::checked)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("reading the settings")?;
        Ok(settings)
    }

    /// The checks of values serde cannot make (rates, queue sizes, durations that must not
    /// be zero), each naming its key.
    fn checked(self) -> Result<Settings, SettingsError> {
        let mut problems = Vec::new();
        if let Err(e) = self.bus.validate() {
            problems.push(format!("bus: {e}"));
        }
        if let Err(e) = self.admission.rate_limit.validate() {
            problems.push(format!("admission.rate_limit: {e}"));
        }
        if let Err(e) = self.policy_store.rate_limit.validate() {
            problems.push(format!("policy_store.rate_limit: {e}"));
        }
        // Checked here too, so that a bad seed stops the store at start rather than failing
        // every cluster registration.
        for (i, image) in self.policy_store.default_trusted_images.iter().enumerate() {
            if let Err(e) = portcullis_engine::evaluate::TrustedImage::parse(image) {
                problems.push(format!("policy_store.default_trusted_images[{i}]: {image:?}: {e}"));
            }
        }
        if let Err(e) = self.admission.events.validate() {
            problems.push(format!("admission.events: {e}"));
        }
        if let Err(e) = self.nats.access.validate() {
            problems.push(e.to_string());
        }
        if let Err(e) = self.server.limits.check() {
            problems.push(format!("server.limits: {e}"));
        }
        if let Err(e) = self.webhook.limits.check() {
            problems.push(format!("webhook.limits: {e}"));
        }
        if let Err(e) = check_signature(&self.signature) {
            problems.push(format!("signature: {e}"));
        }
        if let Err(e) = self.signature.rate_limit.validate() {
            problems.push(format!("signature.rate_limit: {e}"));
        }
        if let Err(e) = self.continuous.rate_limit.validate() {
            problems.push(format!("continuous.rate_limit: {e}"));
        }
        if self.continuous.sweep_interval.is_zero() {
            problems.push("continuous.sweep_interval: must be more than zero".to_owned());
        }
        if self.continuous.command_poll.is_zero() {
            problems.push("continuous.command_poll: must be more than zero".to_owned());
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            problems.push("server: tls_cert and tls_key go together: give both or neither".to_owned());
        }
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(SettingsError { problems })
        }
    }

    /// The listeners' TLS files, when both are given.
    pub fn tls(&self) -> Option<portcullis_server::TlsFiles> {
        match (&self.server.tls_cert, &self.server.tls_key) {
            (Some(cert), Some(key)) => Some(portcullis_server::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }

    /// The settings of `service` as TOML, secrets redacted.
    pub fn to_toml(&self, service: Service) -> Result<String> {
        let mut redacted = self.clone();
        if let Some(url) = &mut redacted.policy_store.database_url {
            *url = redact_password(url);
        }
        if let Some(url) = &mut redacted.nats.url {
            *url = redact_password(url);
        }
        for value in [&mut redacted.nats.access.password, &mut redacted.nats.access.token]
            .into_iter()
            .flatten()
        {
            *value = "<redacted>".to_owned();
        }
        let value = toml::Table::try_from(&redacted).context("printing the settings")?;
        let sections = service.sections();
        let table: toml::Table = value
            .into_iter()
            .filter(|(key, _)| sections.contains(&key.as_str()))
            .collect();
        toml::to_string(&table).context("printing the settings")
    }
}

/// The `[signature]` values serde cannot check.
fn check_signature(options: &portcullis_signature::SignatureOptions) -> Result<(), String> {
    if options.resolve_ttl > portcullis_signature::MAX_RESOLVE_TTL {
        return Err(format!(
            "resolve_ttl: at most {:?} (a tag may move)",
            portcullis_signature::MAX_RESOLVE_TTL
        ));
    }
    if options.max_entries == 0 || options.event_queue == 0 || options.rpc.max_in_flight == 0 {
        return Err("max_entries, event_queue and rpc.max_in_flight must be at least 1".to_owned());
    }
    if options.registry.max_concurrency_per_registry == 0 || options.registry.deadline.is_zero() {
        return Err("registry: max_concurrency_per_registry and deadline must not be zero".to_owned());
    }
    if options.rpc.queue_group.is_empty() {
        return Err("rpc.queue_group: required".to_owned());
    }
    Ok(())
}

/// `scheme://user:password@host` with the password replaced by `<redacted>`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:<redacted>@{host}{tail}"),
        None => url.to_owned(),
    }
}

/// `portcullis config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Checks a settings file: exit 0 when good; an unknown setting or a bad value exits 2,
    /// naming the file and the key (`FILE: key.path: message` on stderr).
    Check {
        /// The settings file (TOML).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Prints the effective settings (TOML) of `up` or of one service: the defaults, the file
    /// (--config or PORTCULLIS_CONFIG) and the PORTCULLIS_* variables; secrets redacted.
    Print {
        /// Whose settings.
        #[arg(long, value_enum, default_value = "up")]
        service: Service,
        /// The settings file (else PORTCULLIS_CONFIG).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The defaults only (no file, no environment).
        #[arg(long, conflicts_with = "config")]
        defaults: bool,
    },
}

/// Runs `portcullis config ...`.
pub fn run(args: &ConfigArgs, operator_key: Option<&str>) -> Result<ExitStatus> {
    match &args.command {
        ConfigCommand::Check { file } => Ok(check(file)),
        ConfigCommand::Print {
            service,
            config,
            defaults,
        } => {
            let settings = if *defaults {
                service.defaults()
            } else {
                match Settings::load(*service, config.as_deref(), &Flags::new()) {
                    Ok(settings) => settings,
                    Err(e) => {
                        eprintln!("{e:#}");
                        return Ok(ExitStatus::Invalid);
                    }
                }
            };
            let mut out = std::io::stdout().lock();
            write!(out, "{}", settings.to_toml(*service)?)?;
            if !*defaults {
                write!(out, "{}", secrets(operator_key))?;
            }
            Ok(ExitStatus::Ok)
        }
    }
}

/// The secrets a server reads that are not settings: named, never shown.
fn secrets(operator_key: Option<&str>) -> String {
    let state = |set: bool| if set { "set, <redacted>" } else { "not set" };
    let operator = operator_key.is_some_and(|k| !k.is_empty());
    let token = std::env::var(portcullis_server::auth::SERVICE_TOKEN_ENV).is_ok_and(|v| !v.is_empty());
    format!(
        "\n# Secrets (not settings; read from their own flag or variable, never printed):\n\
         # operator key (--operator-key, PORTCULLIS_OPERATOR_KEY): {}\n\
         # service token ({}): {}\n",
        state(operator),
        portcullis_server::auth::SERVICE_TOKEN_ENV,
        state(token),
    )
}

/// `config check FILE`: the file alone over the defaults of every section.
fn check(file: &Path) -> ExitStatus {
    let result = portcullis_kit::settings::check_file(Service::All.defaults(), file).and_then(Settings::checked);
    match result {
        Ok(_) => {
            println!("{}: valid settings", file.display());
            ExitStatus::Ok
        }
        Err(e) => {
            let shown = file.display().to_string();
            for problem in &e.problems {
                // Problems found after reading (value checks) do not name the file yet.
                if problem.starts_with(&shown) {
                    eprintln!("{problem}");
                } else {
                    eprintln!("{shown}: {problem}");
                }
            }
            ExitStatus::Invalid
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::Duration;

    use super::*;

    #[test]
    fn credential_keys_from_files_or_the_data_folder() {
        let dir = portcullis_test_kit::DataDir::new().unwrap();
        // None configured, no data folder (distributed): no ring.
        assert!(CredentialKeySettings::default().key_ring(None).unwrap().is_none());
        // Embedded: the data folder's key, created once, mode 0600.
        let ring = CredentialKeySettings::default()
            .key_ring(Some(dir.path()))
            .unwrap()
            .unwrap();
        assert_eq!(ring.active_key_id(), EMBEDDED_KEY_ID);
        let path = dir.path().join("credentials.key");
        let first = std::fs::read(&path).unwrap();
        CredentialKeySettings::default().key_ring(Some(dir.path())).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), first);
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        // Configured files: one key needs no active id; several do.
        let one = CredentialKeySettings {
            active_key: String::new(),
            keys: BTreeMap::from([("k1".to_owned(), path.clone())]),
        };
        assert_eq!(one.key_ring(None).unwrap().unwrap().active_key_id(), "k1");
        let two = CredentialKeySettings {
            active_key: String::new(),
            keys: BTreeMap::from([("k1".to_owned(), path.clone()), ("k2".to_owned(), path.clone())]),
        };
        assert!(two.key_ring(None).is_err());
        let two = CredentialKeySettings {
            active_key: "k2".to_owned(),
            ..two
        };
        assert_eq!(two.key_ring(None).unwrap().unwrap().active_key_id(), "k2");
        let missing = CredentialKeySettings {
            active_key: String::new(),
            keys: BTreeMap::from([("k1".to_owned(), dir.path().join("absent.key"))]),
        };
        assert!(missing.key_ring(None).is_err());
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_password("postgres://app:s3cret@db:5432/portcullis?sslmode=require"),
            "postgres://app:<redacted>@db:5432/portcullis?sslmode=require"
        );
        assert_eq!(redact_password("postgres://app@db/p"), "postgres://app@db/p");
        assert_eq!(redact_password("nats://host:4222"), "nats://host:4222");
    }

    #[test]
    fn every_service_reads_its_flags_over_file_and_env() {
        let env = Environment::from_vars([
            ("PORTCULLIS_LISTEN", "127.0.0.1:7000"),
            ("PORTCULLIS_ADMISSION__POLICY_DEADLINE", "3s"),
            ("PORTCULLIS_SERVER", "http://not-a-setting"),
        ]);
        let admission = Settings::load_from(Service::Admission, None, env.clone(), &Flags::new()).unwrap();
        assert_eq!(admission.server.admission_listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(admission.admission.policy_deadline, Duration::from_secs(3));
        let mut flags = Flags::new();
        flags.set(&["server", "listen"], "127.0.0.1:7001").unwrap();
        let store = Settings::load_from(Service::PolicyStore, None, env, &flags).unwrap();
        assert_eq!(store.server.listen, "127.0.0.1:7001".parse().unwrap());
    }

    #[test]
    fn up_has_the_embedded_stream_limits() {
        assert_eq!(Service::Up.defaults().bus, BusConfig::embedded());
        assert_eq!(Service::PolicyStore.defaults().bus, BusConfig::default());
    }
}
