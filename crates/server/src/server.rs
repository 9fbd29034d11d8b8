//! The gRPC server every service runs on: a TCP listener (port 0 allowed), optional TLS
//! (rustls), health checking for every service, reflection from the Portcullis descriptor
//! set, the authentication layer, per-call deadlines, and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use serde::{Deserialize, Serialize};
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::{Routes, RoutesBuilder};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::{Layer, Service};

use crate::guard::{GuardLayer, GuardService};
use crate::layer::{AuthLayer, AuthService, AuthState};

/// How the process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `portcullis up`: everything in one process.
    Embedded,
    /// `portcullis serve <service>`: one stage; a non-loopback listener needs TLS.
    Distributed,
}

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (leaf first).
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// Where and how to listen.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The listen address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// TLS, when given.
    pub tls: Option<TlsFiles>,
    /// Embedded or distributed.
    pub mode: Mode,
    /// Deadlines, connections and streams (the `[server.limits]` settings).
    pub limits: ServerLimits,
}

impl ServerConfig {
    /// Plain text on `listen`, the default limits.
    pub fn new(listen: SocketAddr, mode: Mode) -> ServerConfig {
        ServerConfig {
            listen,
            tls: None,
            mode,
            limits: ServerLimits::default(),
        }
    }
}

/// A gRPC listener's bounds: what one client, or many, may hold of it. Settings, with the
/// defaults below.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerLimits {
    /// The longest any call may take, also when the client gives no deadline (a client's
    /// shorter `grpc-timeout` wins). Default 30 s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long a client may take to finish the TLS handshake before the connection is
    /// dropped (default 10 s): a stranger cannot hold a connection without a handshake.
    #[serde(with = "humantime_serde")]
    pub tls_handshake_timeout: Duration,
    /// Connections served at once; further clients wait in the listen backlog until one
    /// closes (default 10 000).
    pub max_connections: usize,
    /// Concurrent streams (calls) per HTTP/2 connection (default 200, hyper's own default,
    /// which tonic would otherwise lift).
    pub max_concurrent_streams: u32,
    /// HTTP/2 PING interval on idle connections, to find dead peers (default 30 s).
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is closed (default 20 s).
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_timeout: Duration,
    /// TCP keepalive on accepted connections (default 60 s).
    #[serde(with = "humantime_serde")]
    pub tcp_keepalive: Duration,
    /// The largest header block a client may send, bytes (default 64 KiB; hyper allows 16
    /// MiB).
    pub max_header_list_bytes: u32,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            request_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_concurrent_streams: 200,
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(20),
            tcp_keepalive: Duration::from_secs(60),
            max_header_list_bytes: 64 * 1024,
        }
    }
}

/// The longest duration a limit accepts (about a year): deadlines are `now + limit`.
const MAX_LIMIT: Duration = Duration::from_secs(365 * 24 * 3600);

impl ServerLimits {
    /// Refuses zero and unbounded values, naming the setting.
    pub fn check(&self) -> Result<(), ServerError> {
        let counts = [
            ("max_connections", self.max_connections),
            ("max_concurrent_streams", self.max_concurrent_streams as usize),
            ("max_header_list_bytes", self.max_header_list_bytes as usize),
        ];
        for (name, value) in counts {
            if value == 0 {
                return Err(ServerError::Config(format!("server {name} must be at least 1")));
            }
        }
        if self.max_connections > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(ServerError::Config(format!(
                "server max_connections is too large: {}",
                self.max_connections
            )));
        }
        let durations = [
            ("request_timeout", self.request_timeout),
            ("tls_handshake_timeout", self.tls_handshake_timeout),
            ("http2_keepalive_interval", self.http2_keepalive_interval),
            ("http2_keepalive_timeout", self.http2_keepalive_timeout),
            ("tcp_keepalive", self.tcp_keepalive),
        ];
        for (name, value) in durations {
            if value.is_zero() {
                return Err(ServerError::Config(format!("server {name} must be longer than zero")));
            }
            if value > MAX_LIMIT {
                return Err(ServerError::Config(format!("server {name} is too long: {value:?}")));
            }
        }
        Ok(())
    }
}

impl ServerConfig {
    /// Refuses plain text on a non-loopback address in distributed mode (what
    /// [`GrpcServer::bind`] checks first; callers may check before connecting elsewhere).
    pub fn check(&self) -> Result<(), ServerError> {
        self.limits.check()?;
        let listen = self.listen;
        if self.mode == Mode::Distributed && self.tls.is_none() && !listen.ip().is_loopback() {
            return Err(ServerError::Config(format!(
                "refusing to listen on {listen} without TLS: give --tls-cert and --tls-key, or listen on a loopback address"
            )));
        }
        Ok(())
    }
}

/// Why the server could not start or stopped with an error: the one [`ServeError`] of every
/// listener (the webhook's too).
pub use portcullis_domain::ServeError as ServerError;

/// A server being put together: services are added, then [`GrpcServer::bind`] listens.
pub struct GrpcServer {
    config: ServerConfig,
    auth: Arc<AuthState>,
    routes: RoutesBuilder,
    services: Vec<&'static str>,
}

impl std::fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServer")
            .field("config", &self.config)
            .field("services", &self.services)
            .finish_non_exhaustive()
    }
}

impl GrpcServer {
    /// A server with no services yet; every call passes `auth`.
    pub fn new(config: ServerConfig, auth: AuthState) -> GrpcServer {
        GrpcServer {
            config,
            auth: Arc::new(auth),
            routes: RoutesBuilder::default(),
            services: Vec::new(),
        }
    }

    /// Adds a generated tonic service; its health status becomes `SERVING` once bound.
    pub fn add_service<S>(&mut self, service: S) -> &mut GrpcServer
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.services.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// The names of the services added so far.
    pub fn service_names(&self) -> &[&'static str] {
        &self.services
    }

    /// The services added so far behind the guard and authentication layers, as
    /// [`BoundServer::serve`] layers them, for calls in process (the fuzz target): no
    /// listener, health, reflection or per-call deadline.
    pub fn into_service(self) -> GuardService<AuthService<Routes>> {
        GuardLayer.layer(AuthLayer::new(self.auth).layer(self.routes.routes().prepare()))
    }

    /// Checks the configuration, loads TLS and binds the listener; every service is
    /// `NOT_SERVING` until [`BoundServer::serve`] (or [`BoundServer::mark_serving`]). Plain
    /// text on a non-loopback address is refused in distributed mode.
    pub async fn bind(mut self) -> Result<BoundServer, ServerError> {
        self.config.check()?;
        let listen = self.config.listen;
        let limits = &self.config.limits;
        let mut builder = Server::builder()
            .timeout(limits.request_timeout)
            .max_concurrent_streams(limits.max_concurrent_streams)
            .http2_keepalive_interval(Some(limits.http2_keepalive_interval))
            .http2_keepalive_timeout(Some(limits.http2_keepalive_timeout))
            .http2_max_header_list_size(limits.max_header_list_bytes);
        if let Some(tls) = &self.config.tls {
            let read = |p: &PathBuf| std::fs::read(p).map_err(|e| ServerError::Tls(format!("{}: {e}", p.display())));
            let identity = Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
            builder = builder
                .tls_config(
                    ServerTlsConfig::new()
                        .identity(identity)
                        .timeout(limits.tls_handshake_timeout),
                )
                .map_err(|e| ServerError::Tls(format!("{e}: {}", error_chain(&e))))?;
        }

        let (health, health_service) = tonic_health::server::health_reporter();
        for name in &self.services {
            health.set_service_status(*name, ServingStatus::NotServing).await;
        }
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(portcullis_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ServerError::Config(format!("reflection: {e}")))?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(portcullis_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| ServerError::Config(format!("reflection: {e}")))?;
        self.routes
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);

        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ServerError::Bind { addr: listen, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr: listen, source })?;
        Ok(BoundServer {
            builder,
            auth: self.auth,
            routes: self.routes,
            listener,
            local_addr,
            tls: self.config.tls.is_some(),
            limits: self.config.limits.clone(),
            health,
            services: self.services,
        })
    }
}

/// The text of an error and its sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

/// A server listening on its address, not yet serving.
pub struct BoundServer {
    builder: Server,
    auth: Arc<AuthState>,
    routes: RoutesBuilder,
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    tls: bool,
    limits: ServerLimits,
    health: HealthReporter,
    services: Vec<&'static str>,
}

impl std::fmt::Debug for BoundServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundServer")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl BoundServer {
    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// The health reporter, to change a service's status while running.
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Marks every service `SERVING` or `NOT_SERVING` (readiness, as health checks see it).
    pub async fn mark_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in &self.services {
            self.health.set_service_status(*name, status).await;
        }
    }

    /// Marks every service `SERVING` and serves until `shutdown` completes, then marks them
    /// `NOT_SERVING`, stops accepting connections and waits for the calls in flight to finish.
    pub async fn serve<F>(self, shutdown: F) -> Result<(), ServerError>
    where
        F: Future<Output = ()> + Send,
    {
        self.mark_serving(true).await;
        let health = self.health.clone();
        let services = self.services.clone();
        let signal = async move {
            shutdown.await;
            for name in &services {
                health.set_service_status(*name, ServingStatus::NotServing).await;
            }
            tracing::info!("shutting down: draining calls in flight");
        };
        let incoming = TcpIncoming::from(self.listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(self.limits.tcp_keepalive));
        let incoming = crate::incoming::bounded(incoming, self.limits.max_connections);
        // The guard is outermost: it also catches a panic in the authentication layer.
        let mut builder = self.builder.layer(GuardLayer).layer(AuthLayer::new(self.auth));
        builder
            .add_routes(self.routes.routes())
            .serve_with_incoming_shutdown(incoming, signal)
            .await
            .map_err(|e| ServerError::Failed {
                what: "gRPC server",
                source: Box::new(e),
            })?;
        Ok(())
    }
}
