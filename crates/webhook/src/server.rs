//! The listener: TLS, HTTP/1.1 or HTTP/2 by ALPN, bounded connections, idle and drain
//! deadlines, graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::slots::SlotsBy;

use crate::config::WebhookConfig;
use crate::handler::WebhookHandler;
use crate::route::{RouteState, respond};
use crate::tls::{ALPN_H2, server_config};
use portcullis_domain::ServeError;

/// Largest HTTP/2 header list accepted; an AdmissionReview request has a handful of headers.
const MAX_H2_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// Pause after a failed `accept` (for example out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The webhook server's entry point.
#[derive(Debug)]
pub struct WebhookServer;

impl WebhookServer {
    /// Checks the configuration, loads the certificate chain and key (an error names the
    /// file) and binds the listener. Serving starts with [`BoundWebhook::serve`].
    pub async fn bind(config: WebhookConfig, handler: Arc<dyn WebhookHandler>) -> Result<BoundWebhook, ServeError> {
        config.check()?;
        let tls = server_config(&config.tls_cert, &config.tls_key)?;
        let listen = config.listen;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ServeError::Bind { addr: listen, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr: listen, source })?;
        Ok(BoundWebhook {
            listener,
            local_addr,
            acceptor: TlsAcceptor::from(tls),
            handler,
            config,
        })
    }
}

/// A webhook listening on its address, not yet serving.
pub struct BoundWebhook {
    listener: TcpListener,
    local_addr: SocketAddr,
    acceptor: TlsAcceptor,
    handler: Arc<dyn WebhookHandler>,
    config: WebhookConfig,
}

impl std::fmt::Debug for BoundWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundWebhook")
            .field("local_addr", &self.local_addr)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What every connection task shares.
struct Shared {
    route: Arc<RouteState>,
    acceptor: TlsAcceptor,
    /// Without ALPN: HTTP/1.1 or HTTP/2 by the connection preface.
    auto: auto::Builder<TokioExecutor>,
    /// ALPN `http/1.1`.
    http1: auto::Builder<TokioExecutor>,
    /// ALPN `h2`.
    http2: auto::Builder<TokioExecutor>,
    tls_handshake_timeout: Duration,
    idle_timeout: Duration,
    drain_timeout: Duration,
}

impl BoundWebhook {
    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `https://ADDR`.
    pub fn url(&self) -> String {
        format!("https://{}", self.local_addr)
    }

    /// Serves until `shutdown` completes, then stops accepting connections, lets the
    /// requests in flight finish (HTTP/1 connections close after their response, HTTP/2 ones
    /// get GOAWAY) and returns once every connection is closed, or when
    /// [`WebhookConfig::drain_timeout`] has passed, dropping the connections still open.
    pub async fn serve<F>(self, shutdown: F) -> Result<(), ServeError>
    where
        F: Future<Output = ()> + Send,
    {
        let config = &self.config;
        let mut base = auto::Builder::new(TokioExecutor::new());
        base.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.limits.header_read_timeout)
            .keep_alive(true);
        base.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.limits.max_concurrent_streams)
            .max_header_list_size(MAX_H2_HEADER_LIST_BYTES);
        let shared = Arc::new(Shared {
            route: Arc::new(RouteState {
                handler: self.handler.clone(),
                max_body_bytes: config.limits.max_body_bytes,
                request_timeout: config.limits.request_timeout,
                in_flight: Arc::new(Semaphore::new(config.limits.max_in_flight)),
                per_key: SlotsBy::new(config.limits.max_in_flight_per_key),
                per_peer: SlotsBy::new(config.limits.max_in_flight_per_peer),
            }),
            acceptor: self.acceptor.clone(),
            http1: base.clone().http1_only(),
            http2: base.clone().http2_only(),
            auto: base,
            tls_handshake_timeout: config.limits.tls_handshake_timeout,
            idle_timeout: config.limits.idle_timeout,
            drain_timeout: config.limits.drain_timeout,
        });
        let connections = Arc::new(Semaphore::new(config.limits.max_connections));
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);

        loop {
            // A connection slot first, so a full server leaves new clients in the backlog.
            let permit = tokio::select! {
                () = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
                permit = connections.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_closed) => break,
                },
            };
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    tasks.spawn(connection(shared.clone(), tcp, peer, stopped.clone(), permit));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
            // Reap finished connections so the set holds only live ones.
            while tasks.try_join_next().is_some() {}
        }

        drop(self.listener);
        let _ = stop.send(true);
        // Each connection bounds its own drain by `drain_timeout`; this is the backstop.
        let backstop = Instant::now() + shared.drain_timeout + Duration::from_secs(1);
        while !tasks.is_empty() {
            if tokio::time::timeout_at(backstop, tasks.join_next()).await.is_err() {
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                break;
            }
        }
        Ok(())
    }
}

/// One client connection: the TLS handshake, then HTTP until the client leaves, the
/// connection is idle too long, or the server shuts down.
async fn connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    mut stopped: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let _ = tcp.set_nodelay(true);
    let handshake = tokio::select! {
        handshake = tokio::time::timeout(shared.tls_handshake_timeout, shared.acceptor.accept(tcp)) => handshake,
        _ = stopped.wait_for(|stop| *stop) => return,
    };
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
            return;
        }
        Err(_elapsed) => {
            tracing::debug!(%peer, "webhook TLS handshake timed out");
            return;
        }
    };
    let builder = match tls.get_ref().1.alpn_protocol() {
        Some(ALPN_H2) => &shared.http2,
        Some(_) => &shared.http1,
        None => &shared.auto,
    };

    let activity = Arc::new(Activity::new());
    let service = {
        let route = shared.route.clone();
        let activity = activity.clone();
        service_fn(move |request| {
            let route = route.clone();
            let busy = activity.begin();
            async move {
                let response = respond(route, peer, request).await;
                drop(busy);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    let mut conn = std::pin::pin!(conn);
    let mut drain_deadline: Option<Instant> = None;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
                }
                return;
            }
            _ = stopped.wait_for(|stop| *stop), if drain_deadline.is_none() => {
                conn.as_mut().graceful_shutdown();
                drain_deadline = Some(Instant::now() + shared.drain_timeout);
            }
            () = activity.idle(shared.idle_timeout), if drain_deadline.is_none() => {
                conn.as_mut().graceful_shutdown();
                drain_deadline = Some(Instant::now() + shared.drain_timeout);
            }
            () = sleep_until_some(drain_deadline), if drain_deadline.is_some() => {
                tracing::debug!(%peer, "webhook connection dropped: it did not drain in time");
                return;
            }
        }
    }
}

/// Sleeps until the instant (forever when there is none).
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A connection's requests in flight and when the last one started or ended.
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `start`.
    last: AtomicU64,
}

/// Marks a request in flight until dropped.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(0),
        }
    }

    fn begin(self: &Arc<Activity>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        Busy(self.clone())
    }

    fn touch(&self) {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(elapsed, Ordering::AcqRel);
    }

    /// Completes once no request has been in flight for `timeout`.
    async fn idle(&self, timeout: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last.load(Ordering::Acquire));
            let due = last + timeout;
            let now = Instant::now();
            if self.in_flight.load(Ordering::Acquire) > 0 {
                tokio::time::sleep_until(now + timeout).await;
            } else if now >= due {
                return;
            } else {
                tokio::time::sleep_until(due).await;
            }
        }
    }
}
