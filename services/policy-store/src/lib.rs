//! The policy store service: thin tonic adapters implementing PolicyService,
//! RulesetService, AttestorService, ClusterService, ScanResultService, TenantService,
//! AuthService, AuditService and OperatorService over [`portcullis_storage::Store`].
//!
//! Requests are checked at the edge (a missing or malformed field is `InvalidArgument`
//! naming it); documents are validated by the engine inside the store; every store error
//! becomes its status in one place ([`error::store_status`]). Who may call what is decided
//! by `portcullis_server`'s permission table before a handler runs; handlers add the checks
//! that need the request (a connector key only for its own cluster).
//!
//! Beside the gRPC services, [`PolicyStore::start_background`] runs the outbox relay (events
//! to the bus through [`BusSink`]), a periodic sweep of rotated connector keys, and the
//! follower of other replicas' changes that keeps the [`cache`]s honest;
//! [`Background::shutdown`] stops them and flushes the outbox once more. Both run on the
//! kit's `Lifecycle` and `Follower`.
//!
//! Connector calls are served from in-process caches of key introspections and effective
//! policies (at most 30 s old, dropped at once on this process's changes and on the bus
//! events of the others'): see [`cache`].
//!
//! Starting a whole server: see `portcullis up` / `portcullis serve policy-store` in the CLI,
//! and the `testing` feature ([`testing::TestServer`]) for tests.

pub mod cache;
mod cluster;
pub mod convert;
pub mod error;
mod objects;
mod operator;
mod policy;
mod running;
mod scan;
mod sink;
mod tenancy;
#[cfg(feature = "testing")]
pub mod testing;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use portcullis_bus::{Bus, TopicFilter};
use portcullis_domain::Topic;
use portcullis_kit::follow::{FollowHandler, FollowedEvent, Follower, Gap};
use portcullis_kit::lifecycle::{Lifecycle, Stopped};
use portcullis_proto::policystore::v1 as pb;
use portcullis_server::rate_limit::{RateLimitConfig, TenantLimit, TenantRateLimiter};
use portcullis_server::status::invalid_field;
use portcullis_server::{
    AuthState, Authenticator, BoxFuture, CallLimit, Caller, Credentials, GrpcServer, PermissionTable, Role, TenantKey,
};
use portcullis_storage::credentials::KeyRing;
use portcullis_storage::{NewTenant, OutboxRelay, RelayConfig, ResourceRef, Store, StoreError};
use tonic::Status;

pub use cache::{CacheOptions, Caches};
pub use running::RunningServer;
pub use sink::BusSink;

use crate::error::store_status;

/// Largest request accepted (scan reports can be large).
const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// Default per-tenant limit of the calls made with a tenant's keys, per replica: far above
/// what a tenant's connectors (a heartbeat every 30 s, a policy read on a change) and people
/// send, low enough that one tenant cannot fill the database with heartbeat writes.
pub const DEFAULT_CALLS_PER_SECOND: f64 = 100.0;
/// Default burst of [`DEFAULT_CALLS_PER_SECOND`]: a script's or a rollout's spike passes.
pub const DEFAULT_CALL_BURST: u32 = 500;

/// The policy store's default rate limit ([`DEFAULT_CALLS_PER_SECOND`],
/// [`DEFAULT_CALL_BURST`], no overrides).
pub fn default_rate_limit() -> RateLimitConfig {
    RateLimitConfig {
        default: TenantLimit {
            per_second: DEFAULT_CALLS_PER_SECOND,
            burst: DEFAULT_CALL_BURST,
        },
        ..RateLimitConfig::default()
    }
}

/// How the gRPC services behave: their caches and the per-tenant rate limit.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceOptions {
    /// The key and effective-policy caches.
    pub cache: CacheOptions,
    /// The limit of every call made with a tenant's key (connectors' heartbeats and policy
    /// reads, people's calls): one budget per tenant and replica.
    pub rate_limit: RateLimitConfig,
    /// Images every new cluster trusts from its creation (added to the trusted images its
    /// registration gives): Portcullis's own components, so that a policy never blocks or
    /// mitigates the product that enforces it. Shown and removable like any other trusted
    /// image; removing it later is not undone. Empty: no seed.
    pub default_trusted_images: Vec<String>,
}

/// Portcullis's own image repository (every service runs from this one image).
pub const DEFAULT_TRUSTED_IMAGE: &str = "ghcr.io/portcullis/portcullis";

impl Default for ServiceOptions {
    /// Default caches, [`default_rate_limit`], [`DEFAULT_TRUSTED_IMAGE`] as the seed.
    fn default() -> ServiceOptions {
        ServiceOptions {
            cache: CacheOptions::default(),
            rate_limit: default_rate_limit(),
            default_trusted_images: vec![DEFAULT_TRUSTED_IMAGE.to_owned()],
        }
    }
}

/// The policy store's gRPC services, over one store. Cheap to clone (clones share the
/// caches and the rate limiter).
#[derive(Debug, Clone)]
pub struct PolicyStore {
    store: Store,
    caches: Arc<Caches>,
    limiter: Arc<TenantRateLimiter>,
    /// The keys registry credentials are sealed with; `None` leaves the credential calls
    /// FAILED_PRECONDITION (set) and UNIMPLEMENTED (get: "no stored credentials" to the
    /// signature service).
    credential_keys: Option<Arc<KeyRing>>,
    /// [`ServiceOptions::default_trusted_images`].
    default_trusted_images: Arc<[String]>,
}

impl PolicyStore {
    /// The services over `store`, with the default caches and rate limit.
    pub fn new(store: Store) -> PolicyStore {
        PolicyStore::with_options(store, ServiceOptions::default())
    }

    /// The services over `store`, with caches sized and timed and calls limited by
    /// `options`. The caches hear of every commit of `store` (and its clones) at once.
    pub fn with_options(store: Store, options: ServiceOptions) -> PolicyStore {
        let caches = Arc::new(Caches::new(options.cache));
        let listener: std::sync::Weak<Caches> = Arc::downgrade(&caches);
        store.add_commit_listener(listener);
        PolicyStore {
            store,
            caches,
            limiter: Arc::new(TenantRateLimiter::new(options.rate_limit)),
            credential_keys: None,
            default_trusted_images: options.default_trusted_images.into(),
        }
    }

    /// The services with `keys` to seal and open registry credentials. A builder step rather
    /// than a [`ServiceOptions`] field, which stays comparable and printable as settings.
    #[must_use]
    pub fn with_credential_keys(mut self, keys: Arc<KeyRing>) -> PolicyStore {
        self.credential_keys = Some(keys);
        self
    }

    /// The key ring for registry credentials, when configured.
    pub fn credential_keys(&self) -> Option<&KeyRing> {
        self.credential_keys.as_deref()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The caches of key introspections and effective policies.
    pub fn caches(&self) -> &Caches {
        &self.caches
    }

    /// The authenticator of tenant keys: the store's own introspection, through the key
    /// cache.
    pub fn authenticator(&self) -> StoreAuthenticator {
        StoreAuthenticator {
            store: self.store.clone(),
            caches: self.caches.clone(),
        }
    }

    /// The per-tenant rate limiter of tenant-key calls (its counters).
    pub fn limiter(&self) -> &TenantRateLimiter {
        &self.limiter
    }

    /// The authentication state of a server running this service: `credentials`, the
    /// store's authenticator, the standard permission table, the per-tenant rate limit.
    pub fn auth_state(&self, credentials: Credentials) -> AuthState {
        AuthState {
            credentials,
            authenticator: Arc::new(self.authenticator()),
            table: PermissionTable::standard(),
            rate_limit: Some(CallLimit {
                limiter: self.limiter.clone(),
                package_prefix: portcullis_server::permissions::POLICY_STORE_PACKAGE,
            }),
        }
    }

    /// Adds the nine services to `server`.
    pub fn register(&self, server: &mut GrpcServer) {
        use pb::attestor_service_server::AttestorServiceServer;
        use pb::audit_service_server::AuditServiceServer;
        use pb::auth_service_server::AuthServiceServer;
        use pb::cluster_service_server::ClusterServiceServer;
        use pb::operator_service_server::OperatorServiceServer;
        use pb::policy_service_server::PolicyServiceServer;
        use pb::ruleset_service_server::RulesetServiceServer;
        use pb::scan_result_service_server::ScanResultServiceServer;
        use pb::tenant_service_server::TenantServiceServer;
        server
            .add_service(PolicyServiceServer::new(self.clone()).max_decoding_message_size(MAX_REQUEST_BYTES))
            .add_service(RulesetServiceServer::new(self.clone()).max_decoding_message_size(MAX_REQUEST_BYTES))
            .add_service(AttestorServiceServer::new(self.clone()).max_decoding_message_size(MAX_REQUEST_BYTES))
            .add_service(ClusterServiceServer::new(self.clone()))
            .add_service(ScanResultServiceServer::new(self.clone()).max_decoding_message_size(MAX_REQUEST_BYTES))
            .add_service(TenantServiceServer::new(self.clone()))
            .add_service(AuthServiceServer::new(self.clone()))
            .add_service(AuditServiceServer::new(self.clone()))
            .add_service(OperatorServiceServer::new(self.clone()));
    }

    /// The cluster a connector-facing call is about. A connector key gets its own cluster
    /// (when the request names none) and PermissionDenied for any other (also an unknown
    /// one, so a connector cannot probe for names); other callers must name one.
    async fn cluster_of_caller(
        &self,
        caller: &Caller,
        tenant: &str,
        requested: Option<ResourceRef>,
    ) -> Result<ResourceRef, Status> {
        if caller.role() != Some(Role::Connector) {
            return requested.ok_or_else(|| invalid_field("cluster", "required: an id or a name"));
        }
        let denied = || Status::permission_denied("a connector key may act only for its own cluster");
        let own = caller.connector_cluster().ok_or_else(denied)?;
        match requested {
            None => Ok(ResourceRef::id(own)),
            Some(ResourceRef::Id(id)) if id == own => Ok(ResourceRef::Id(id)),
            Some(ResourceRef::Id(_)) => Err(denied()),
            Some(by_name @ ResourceRef::Name(_)) => match self.store.get_cluster(tenant, &by_name).await {
                Ok(cluster) if cluster.id == own => Ok(ResourceRef::Id(cluster.id)),
                Ok(_) | Err(StoreError::NotFound { .. }) => Err(denied()),
                Err(e) => Err(store_status(e)),
            },
        }
    }

    /// Starts the outbox relay (publishing to `bus`), the rotated-key sweep, and the
    /// follower of `bus` events that drops cache entries other replicas made stale.
    pub fn start_background(&self, bus: Bus, options: BackgroundOptions) -> Background {
        self.start_background_on(Lifecycle::new(options.drain_deadline), bus, options)
    }

    /// [`PolicyStore::start_background`] on `lifecycle` (which a server shares).
    pub(crate) fn start_background_on(&self, lifecycle: Lifecycle, bus: Bus, options: BackgroundOptions) -> Background {
        let caches = self.caches.clone();
        let follow = options.follower;
        lifecycle.spawn("cache follower", |stop| {
            let filter = TopicFilter::topics([Topic::ApiKeyRevoked, Topic::ClusterChanged, Topic::PolicyChanged]);
            // No snapshot sequence: the caches fill lazily, so the follower's own start is
            // a gap (entries filled before it may predate a change it will never report).
            Follower::new(bus.clone(), filter)
                .options(&follow)
                .run(CacheFollower(caches), stop)
        });
        let relay = Arc::new(OutboxRelay::with_config(
            self.store.clone(),
            BusSink::new(bus),
            options.relay,
        ));
        observe_dead_letters(&relay);
        observe_rate_limited(&self.limiter);
        lifecycle.spawn("outbox relay", |stop| {
            let relay = relay.clone();
            async move { relay.run(stop.cancelled_owned()).await }
        });
        let store = self.store.clone();
        let interval = options.sweep_interval;
        lifecycle.spawn("rotated key sweep", |stop| async move {
            loop {
                match store.sweep_rotated_keys().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(keys = n, "rotated connector keys past their grace period revoked"),
                    Err(e) => tracing::warn!(error = %e, "sweeping rotated keys failed"),
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                }
            }
        });
        Background {
            lifecycle,
            relay,
            flush_timeout: options.flush_timeout,
        }
    }
}

/// Name of the meter the policy store records through.
pub const METER_NAME: &str = "portcullis-policy-store";

/// Reports the relay's count of events moved to the dead letters as the observable counter
/// `portcullis.policy_store.events.dead_lettered`, read at each collection (no tenant
/// attribute: tenants are unbounded; the operator lists the letters themselves). The callback
/// holds the relay weakly, so it does not keep it alive after a shutdown.
fn observe_dead_letters(relay: &Arc<OutboxRelay<BusSink>>) {
    let relay = Arc::downgrade(relay);
    // The returned handle is a marker: the SDK keeps the callback.
    let _dead_lettered = opentelemetry::global::meter(METER_NAME)
        .u64_observable_counter("portcullis.policy_store.events.dead_lettered")
        .with_description("Outbox events the bus refused for good, moved to the dead letters.")
        .with_unit("{event}")
        .with_callback(move |observer| {
            if let Some(relay) = relay.upgrade() {
                observer.observe(relay.dead_lettered(), &[]);
            }
        })
        .build();
}

/// Reports the calls refused by the per-tenant rate limit as the observable counter
/// `portcullis.policy_store.rate_limited` (no tenant attribute: tenants are unbounded; the
/// refusal itself names the tenant in its log line and status).
fn observe_rate_limited(limiter: &Arc<TenantRateLimiter>) {
    let limiter = Arc::downgrade(limiter);
    let _rate_limited = opentelemetry::global::meter(METER_NAME)
        .u64_observable_counter("portcullis.policy_store.rate_limited")
        .with_description("Calls made with a tenant's key refused by the tenant's rate limit.")
        .with_unit("{call}")
        .with_callback(move |observer| {
            if let Some(limiter) = limiter.upgrade() {
                observer.observe(limiter.rejected(), &[]);
            }
        })
        .build();
}

/// Applies the bus's `apikey.revoked`, `cluster.changed` and `policy.changed` events to the
/// caches. The events of this process's own commits were applied already; these are for
/// other replicas'. After a gap the caches are cleared (their TTL bounds what is missed
/// while no subscription is up).
struct CacheFollower(Arc<Caches>);

impl FollowHandler for CacheFollower {
    fn event(&mut self, event: &FollowedEvent) {
        self.0.apply(&event.envelope);
    }

    fn gap(&mut self, _gap: &Gap) {
        self.0.clear();
    }

    fn following(&mut self, following: bool) {
        self.0.set_following(following);
    }
}

/// Pacing of the background tasks.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackgroundOptions {
    /// The outbox relay's pacing.
    pub relay: RelayConfig,
    /// The cache follower: retries and the outage bound.
    pub follower: portcullis_kit::FollowOptions,
    /// How often rotated connector keys past their grace period are revoked.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// How long the final outbox flush at shutdown may take.
    #[serde(with = "humantime_serde")]
    pub flush_timeout: Duration,
    /// How long calls in flight and background tasks may take to finish at shutdown.
    #[serde(with = "humantime_serde")]
    pub drain_deadline: Duration,
}

impl Default for BackgroundOptions {
    fn default() -> BackgroundOptions {
        BackgroundOptions {
            relay: RelayConfig::default(),
            follower: portcullis_kit::FollowOptions::default(),
            sweep_interval: Duration::from_secs(60),
            flush_timeout: Duration::from_secs(15),
            drain_deadline: Duration::from_secs(30),
        }
    }
}

/// The running relay, sweep and cache follower (and, in a server, the gRPC server).
pub struct Background {
    lifecycle: Lifecycle,
    relay: Arc<OutboxRelay<BusSink>>,
    flush_timeout: Duration,
}

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Background")
            .field("lifecycle", &self.lifecycle)
            .finish_non_exhaustive()
    }
}

impl Background {
    /// The lifecycle the tasks run on.
    pub(crate) fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// Stops the relay, the sweep and the cache follower, then publishes what is still in
    /// the outbox (within the flush timeout). Returns how many events the final flush
    /// published; events it could not publish stay in the outbox for the next start.
    pub async fn shutdown(self) -> usize {
        self.drain().await.1
    }

    /// Stops every task of the lifecycle (waiting at most its drain deadline), then
    /// flushes: after the drain no call can write events any more, so the flush is final.
    pub(crate) async fn drain(&self) -> (Stopped, usize) {
        let stopped = self.lifecycle.stop().await;
        let flushed = match tokio::time::timeout(self.flush_timeout, self.relay.publish_pending()).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "final outbox flush failed; the events stay in the outbox");
                0
            }
            Err(_) => {
                tracing::warn!("final outbox flush timed out; the remaining events stay in the outbox");
                0
            }
        };
        (stopped, flushed)
    }
}

/// Resolves tenant keys through the store (the policy store owns the keys), reusing
/// answers from the key cache (see [`cache`]). A cached answer does not move the key's
/// last-used time, which therefore lags by up to the cache's TTL on top of its one-minute
/// resolution.
#[derive(Debug, Clone)]
pub struct StoreAuthenticator {
    store: Store,
    caches: Arc<Caches>,
}

impl Authenticator for StoreAuthenticator {
    fn authenticate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<TenantKey, Status>> {
        let read = || -> cache::Fetch<TenantKey> {
            let (store, secret) = (self.store.clone(), key.to_owned());
            Box::pin(async move {
                let identity = store.introspect(&secret).await.map_err(store_status)?;
                Ok(TenantKey {
                    tenant_id: identity.tenant_id,
                    role: identity.role,
                    cluster_id: identity.cluster_id,
                    key_id: identity.key_id,
                    expires_at: identity.expires_at,
                })
            })
        };
        Box::pin(self.caches.key(cache::key_hash(key), self.store.now(), read).get())
    }
}

/// The tenant `portcullis up` creates on first start.
pub const DEFAULT_TENANT: &str = "default";
/// The file in the data folder holding the default tenant's first admin key.
pub const BOOTSTRAP_KEY_FILE: &str = "bootstrap-admin.key";

/// Why bootstrapping failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The store failed.
    #[error("creating tenant {DEFAULT_TENANT:?}: {0}")]
    Store(#[from] StoreError),
    /// The key file could not be written.
    #[error("writing {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// First start of embedded mode: when neither `DIR/bootstrap-admin.key` nor tenant
/// `default` exists, creates the tenant and writes its admin key to that file (mode 0600,
/// created new, so an existing file is never overwritten). Returns the file when it was
/// written now, `None` when there was nothing to do.
pub async fn bootstrap_default_tenant(store: &Store, data_dir: &Path) -> Result<Option<PathBuf>, BootstrapError> {
    let path = data_dir.join(BOOTSTRAP_KEY_FILE);
    if path.exists() {
        return Ok(None);
    }
    match store.get_tenant(DEFAULT_TENANT).await {
        Ok(_) => {
            tracing::info!(
                "tenant {DEFAULT_TENANT:?} exists and {} is absent: not bootstrapping",
                path.display()
            );
            return Ok(None);
        }
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let created = store
        .create_tenant(
            &portcullis_storage::Actor::operator(),
            &NewTenant {
                id: Some(DEFAULT_TENANT.to_owned()),
                name: DEFAULT_TENANT.to_owned(),
                admin_key_expires_at: None,
            },
        )
        .await?;
    let written = write_secret_file(&path, &created.admin_key.secret);
    if let Err(source) = written {
        // Without the file nobody would ever learn the key: undo, so the next start retries.
        if let Err(e) = store
            .delete_tenant(&portcullis_storage::Actor::operator(), DEFAULT_TENANT)
            .await
        {
            tracing::error!(error = %e, "could not undo the bootstrap tenant");
        }
        return Err(BootstrapError::Io { path, source });
    }
    Ok(Some(path))
}

/// Writes `secret` and a newline to a new file readable by its owner only.
fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// The SQLite URL of the database file at `path` (created when missing).
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}
