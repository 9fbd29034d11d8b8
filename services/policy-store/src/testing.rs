//! Test support (feature `testing`): a policy store server on a free loopback port, in
//! embedded mode (a temporary SQLite file, the in-process bus, the `portcullis up`
//! bootstrap) or distributed mode (a fresh PostgreSQL database, a private nats-server with
//! JetStream), with an admin key of tenant `default`, the operator key and the service
//! credential. Everything it made is removed when it is dropped.
//!
//! ```text
//! let server = TestServer::embedded().await?;          // or TestServer::distributed()
//! let mut policies = PolicyServiceClient::new(server.channel().await?);
//! policies.get_policy(server.request(&server.admin_key, req)).await?;
//! ```
//!
//! The infrastructure (the PostgreSQL database, the nats-server, the data folder) comes from
//! `portcullis_test_kit`; see there for the environment variables.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use portcullis_bus::{Bus, BusConfig};
use portcullis_server::{Credentials, Mode, ServerConfig, ServerLimits, TENANT_METADATA, TlsFiles};
use portcullis_storage::credentials::KeyRing;
use portcullis_storage::{Actor, NewTenant, Store};
use portcullis_test_kit::{DataDir, NatsServer, TestDatabase};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::{BackgroundOptions, DEFAULT_TENANT, RunningServer, ServiceOptions, bootstrap_default_tenant, sqlite_url};

/// Why a test server could not be started.
#[derive(Debug, thiserror::Error)]
#[error("test server: {0}")]
pub struct TestError(pub String);

fn err(context: &str) -> impl Fn(&dyn std::fmt::Display) -> TestError + '_ {
    move |e| TestError(format!("{context}: {e}"))
}

/// How to start a test server.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// Embedded (SQLite + in-process bus) or distributed (PostgreSQL + NATS).
    pub mode: Mode,
    /// TLS, when given (the client then needs the CA and the name in the certificate).
    pub tls: Option<TlsFiles>,
    /// The background pacing.
    pub background: BackgroundOptions,
    /// The caches and the per-tenant rate limit (the production defaults unless a test
    /// changes them).
    pub service: ServiceOptions,
    /// The listener's bounds (connections, handshake timeout, streams).
    pub limits: ServerLimits,
    /// The registry credential key ring (none: the credential calls are refused).
    pub credential_keys: Option<Arc<KeyRing>>,
}

impl TestOptions {
    /// Plain text, default pacing.
    pub fn new(mode: Mode) -> TestOptions {
        TestOptions {
            mode,
            tls: None,
            background: BackgroundOptions::default(),
            service: ServiceOptions::default(),
            limits: ServerLimits::default(),
            credential_keys: None,
        }
    }
}

/// A running policy store for tests.
#[derive(Debug)]
pub struct TestServer {
    /// `http://127.0.0.1:PORT` (`https://` with TLS).
    pub url: String,
    /// The bound address.
    pub addr: SocketAddr,
    /// The tenant the admin key belongs to (`default`).
    pub tenant_id: String,
    /// An admin key of `tenant_id`.
    pub admin_key: String,
    /// The operator key the server accepts.
    pub operator_key: String,
    /// The service credential the server accepts.
    pub service_token: String,
    /// The store the server runs on (a second handle on the same database).
    pub store: Store,
    /// The bus the server publishes on (for subscribing in tests).
    pub bus: Bus,
    /// The database URL.
    pub database_url: String,
    /// The options it was started with.
    pub options: TestOptions,
    server: Option<RunningServer>,
    // Field order is drop order: the server stops before its database and NATS go.
    nats: Option<NatsServer>,
    _postgres: Option<TestDatabase>,
    data_dir: Option<DataDir>,
}

impl TestServer {
    /// Embedded mode: SQLite in a temporary data folder, the in-process bus, the
    /// `portcullis up` bootstrap (the admin key is read from `bootstrap-admin.key`).
    pub async fn embedded() -> Result<TestServer, TestError> {
        TestServer::start(TestOptions::new(Mode::Embedded)).await
    }

    /// Distributed mode: a fresh PostgreSQL database and a private nats-server.
    pub async fn distributed() -> Result<TestServer, TestError> {
        TestServer::start(TestOptions::new(Mode::Distributed)).await
    }

    /// A server in `mode` (each scenario runs embedded and distributed).
    pub async fn in_mode(mode: Mode) -> Result<TestServer, TestError> {
        TestServer::start(TestOptions::new(mode)).await
    }

    /// Starts a server as `options` say.
    pub async fn start(options: TestOptions) -> Result<TestServer, TestError> {
        let operator_key = format!("op-{}", uuid::Uuid::new_v4().simple());
        let service_token = format!("svc-{}", uuid::Uuid::new_v4().simple());
        let (mut nats, mut postgres, mut data_dir) = (None, None, None);
        let (store, bus, database_url, admin_key) = match options.mode {
            Mode::Embedded => {
                let dir = DataDir::new().map_err(|e| err("data folder")(&e))?;
                let url = sqlite_url(&dir.path().join("portcullis.db"));
                let store = Store::connect(&url).await.map_err(|e| err("opening SQLite")(&e))?;
                let key_file = bootstrap_default_tenant(&store, dir.path())
                    .await
                    .map_err(|e| err("bootstrap")(&e))?
                    .ok_or_else(|| TestError("bootstrap wrote no key file".to_owned()))?;
                let admin_key = std::fs::read_to_string(&key_file)
                    .map_err(|e| err("reading the key file")(&e))?
                    .trim()
                    .to_owned();
                let bus = Bus::memory(BusConfig::embedded()).map_err(|e| err("memory bus")(&e))?;
                data_dir = Some(dir);
                (store, bus, url, admin_key)
            }
            Mode::Distributed => {
                let guard = TestDatabase::create().await.map_err(|e| err("PostgreSQL")(&e))?;
                let url = guard.url.clone();
                postgres = Some(guard);
                let store = Store::connect(&url).await.map_err(|e| err("opening PostgreSQL")(&e))?;
                let created = store
                    .create_tenant(
                        &Actor::operator(),
                        &NewTenant {
                            id: Some(DEFAULT_TENANT.to_owned()),
                            name: DEFAULT_TENANT.to_owned(),
                            admin_key_expires_at: None,
                        },
                    )
                    .await
                    .map_err(|e| err("creating the tenant")(&e))?;
                let server = NatsServer::start().await.map_err(|e| err("nats-server")(&e))?;
                let bus = Bus::connect_nats(&server.url(), BusConfig::default())
                    .await
                    .map_err(|e| err("connecting to NATS")(&e))?;
                nats = Some(server);
                (store, bus, url, created.admin_key.secret)
            }
        };
        let mut test = TestServer {
            url: String::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tenant_id: DEFAULT_TENANT.to_owned(),
            admin_key,
            operator_key,
            service_token,
            store,
            bus,
            database_url,
            options,
            server: None,
            nats,
            _postgres: postgres,
            data_dir,
        };
        test.launch(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        Ok(test)
    }

    async fn launch(&mut self, listen: SocketAddr) -> Result<(), TestError> {
        let mut config = ServerConfig::new(listen, self.options.mode);
        config.tls = self.options.tls.clone();
        config.limits = self.options.limits.clone();
        let credentials = Credentials::new(Some(self.operator_key.clone()), Some(self.service_token.clone()))
            .map_err(|e| err("credentials")(&e))?;
        let server = RunningServer::start_with_keys(
            self.store.clone(),
            self.bus.clone(),
            config,
            credentials,
            self.options.background.clone(),
            self.options.service.clone(),
            self.options.credential_keys.clone(),
            |_| {},
        )
        .await
        .map_err(|e| err("starting the server")(&e))?;
        self.url = server.url().to_owned();
        self.addr = server.local_addr();
        self.server = Some(server);
        Ok(())
    }

    /// The data folder (embedded mode).
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_ref().map(DataDir::path)
    }

    /// The database of a service beside this store that owns its tables: embedded, the
    /// SQLite file `file` beside the store's; distributed, the store's PostgreSQL database
    /// (the service's tables are its own).
    pub fn service_database_url(&self, file: &str) -> String {
        match self.data_dir() {
            Some(dir) => sqlite_url(&dir.join(file)),
            None => self.database_url.clone(),
        }
    }

    /// The operator key and service credential this server accepts, for a service started
    /// beside it.
    pub fn credentials(&self) -> Result<Credentials, TestError> {
        Credentials::new(Some(self.operator_key.clone()), Some(self.service_token.clone()))
            .map_err(|e| err("credentials")(&e))
    }

    /// The nats-server (distributed mode), e.g. to stop and restart it.
    pub fn nats(&mut self) -> Option<&mut NatsServer> {
        self.nats.as_mut()
    }

    /// A plain-text channel to the server (for TLS, build an endpoint with the CA).
    pub async fn channel(&self) -> Result<Channel, TestError> {
        Endpoint::from_shared(self.url.clone())
            .map_err(|e| err("endpoint")(&e))?
            .connect()
            .await
            .map_err(|e| err("connecting")(&e))
    }

    /// `message` with `authorization: Bearer <key>`.
    pub fn request<T>(&self, key: &str, message: T) -> tonic::Request<T> {
        authed(key, message)
    }

    /// `message` with the service credential acting for `tenant`.
    pub fn service_request<T>(&self, tenant: &str, message: T) -> tonic::Request<T> {
        let mut request = authed(&self.service_token, message);
        if let Ok(value) = MetadataValue::try_from(tenant) {
            request.metadata_mut().insert(TENANT_METADATA, value);
        }
        request
    }

    /// Stops the server gracefully (drain, final outbox flush); the data stays. Returns how
    /// many events the final flush published.
    pub async fn stop(&mut self) -> Result<usize, TestError> {
        match self.server.take() {
            Some(server) => server.stop().await.map_err(|e| err("stopping")(&e)),
            None => Ok(0),
        }
    }

    /// Stops the server and starts it again on the same address, database and bus, as a
    /// process restart would.
    pub async fn restart(&mut self) -> Result<(), TestError> {
        self.stop().await?;
        // A new store handle, as a new process would open.
        self.store = Store::connect(&self.database_url)
            .await
            .map_err(|e| err("reopening the store")(&e))?;
        self.launch(self.addr).await
    }
}

/// A gRPC listener on a free loopback port, as a distributed service's own.
pub fn loopback_listener() -> ServerConfig {
    ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), Mode::Distributed)
}

/// `message` with `authorization: Bearer <key>`.
pub fn authed<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = MetadataValue::try_from(format!("Bearer {key}")) {
        request.metadata_mut().insert("authorization", value);
    }
    request
}
