//! A whole policy store server in the background of the current runtime: the gRPC server
//! with the eight services, the outbox relay and the key sweep. `portcullis up`,
//! `portcullis serve policy-store` and the tests start it the same way.

use std::net::SocketAddr;

use portcullis_bus::Bus;
use portcullis_server::{Credentials, GrpcServer, ServerConfig, ServerError};
use portcullis_storage::Store;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{BackgroundOptions, PolicyStore};

/// A running server. Dropping it without [`RunningServer::stop`] stops it without
/// waiting for the drain.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<usize, ServerError>>,
    /// The task's result was taken (a JoinHandle must not be polled again).
    finished: bool,
}

impl RunningServer {
    /// Binds `config.listen` (port 0 picks a free port), marks the services serving,
    /// starts the relay and the sweep, and serves in a spawned task.
    pub async fn start(
        store: Store,
        bus: Bus,
        config: ServerConfig,
        credentials: Credentials,
        background: BackgroundOptions,
    ) -> Result<RunningServer, ServerError> {
        let service = PolicyStore::new(store);
        let mut server = GrpcServer::new(config, service.auth_state(credentials));
        service.register(&mut server);
        let bound = server.bind().await?;
        let addr = bound.local_addr();
        let url = bound.url();
        let tasks = service.start_background(bus, background);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // A dropped sender stops the server too.
            let served = bound
                .serve(async {
                    let _ = stopped.await;
                })
                .await;
            // After the drain: no call can write events any more, so the flush is final.
            let flushed = tasks.shutdown().await;
            served.map(|()| flushed)
        });
        tracing::info!(%url, "policy store serving");
        Ok(RunningServer {
            addr,
            url,
            stop: Some(stop),
            task,
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
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait().await
    }

    /// Waits until the server ends (it failed, or it was stopped). Cancel-safe; once it
    /// has returned, it and [`RunningServer::stop`] return `Ok(0)`.
    pub async fn wait(&mut self) -> Result<usize, ServerError> {
        if self.finished {
            return Ok(0);
        }
        let result = (&mut self.task).await;
        self.finished = true;
        result.map_err(|e| ServerError::Config(format!("server task failed: {e}")))?
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
