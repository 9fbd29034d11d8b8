//! A whole policy store server in the background of the current runtime: the gRPC server
//! with the eight services, the outbox relay and the key sweep, on one kit `Lifecycle`.
//! `portcullis up`, `portcullis serve policy-store` and the tests start it the same way.

use std::net::SocketAddr;
use std::sync::Arc;

use portcullis_bus::Bus;
use portcullis_kit::lifecycle::Lifecycle;
use portcullis_server::{Credentials, GrpcServer, ServerConfig, ServerError};
use portcullis_storage::Store;
use portcullis_storage::credentials::KeyRing;

use crate::{Background, BackgroundOptions, PolicyStore, ServiceOptions};

/// A running server. Dropping it without [`RunningServer::stop`] stops it without
/// waiting for the drain.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    url: String,
    background: Background,
    /// The result was taken: later waits return `Ok(0)`.
    finished: bool,
}

impl RunningServer {
    /// Binds `config.listen` (port 0 picks a free port), starts the relay, the sweep and
    /// the cache follower, then marks the services serving and serves.
    pub async fn start(
        store: Store,
        bus: Bus,
        config: ServerConfig,
        credentials: Credentials,
        background: BackgroundOptions,
    ) -> Result<RunningServer, ServerError> {
        RunningServer::start_with(
            store,
            bus,
            config,
            credentials,
            background,
            ServiceOptions::default(),
            |_| {},
        )
        .await
    }

    /// [`RunningServer::start`] with these caches and rate limit and more services on the
    /// same listener (`add`): `up` serves the admission service on the one address too.
    pub async fn start_with(
        store: Store,
        bus: Bus,
        config: ServerConfig,
        credentials: Credentials,
        background: BackgroundOptions,
        options: ServiceOptions,
        add: impl FnOnce(&mut GrpcServer),
    ) -> Result<RunningServer, ServerError> {
        RunningServer::start_with_keys(store, bus, config, credentials, background, options, None, add).await
    }

    /// [`RunningServer::start_with`], with the key ring registry credentials are sealed
    /// with (`None`: the credential calls are refused, see [`PolicyStore::with_credential_keys`]).
    #[allow(clippy::too_many_arguments)] // start_with's arguments and the keys, all distinct.
    pub async fn start_with_keys(
        store: Store,
        bus: Bus,
        config: ServerConfig,
        credentials: Credentials,
        background: BackgroundOptions,
        options: ServiceOptions,
        credential_keys: Option<Arc<KeyRing>>,
        add: impl FnOnce(&mut GrpcServer),
    ) -> Result<RunningServer, ServerError> {
        let mut service = PolicyStore::with_options(store, options);
        if let Some(keys) = credential_keys {
            service = service.with_credential_keys(keys);
        }
        let mut server = GrpcServer::new(config, service.auth_state(credentials));
        service.register(&mut server);
        add(&mut server);
        let bound = server.bind().await?;
        let addr = bound.local_addr();
        let url = bound.url();
        let lifecycle = Lifecycle::new(background.drain_deadline);
        let background = service.start_background_on(lifecycle, bus, background);
        background.lifecycle().serve("policy store gRPC", bound).await;
        tracing::info!(%url, "policy store serving");
        Ok(RunningServer {
            addr,
            url,
            background,
            finished: false,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops accepting calls, waits for those in flight, stops the relay and the sweep, and
    /// flushes the outbox once more. Returns how many events the final flush published.
    pub async fn stop(mut self) -> Result<usize, ServerError> {
        self.background.lifecycle().token().cancel();
        self.wait().await
    }

    /// Waits until the server ends (it failed, or it was stopped), then drains and flushes.
    /// Cancel-safe; once it has returned, it and [`RunningServer::stop`] return `Ok(0)`.
    pub async fn wait(&mut self) -> Result<usize, ServerError> {
        if self.finished {
            return Ok(0);
        }
        self.background.lifecycle().stopping().await;
        let (stopped, flushed) = self.background.drain().await;
        self.finished = true;
        stopped.result().map_err(ServerError::Config)?;
        Ok(flushed)
    }
}
