//! A service's start-up and stop on the kit, one way for every service beside the policy
//! store: its tasks on one [`Lifecycle`], its own gRPC listener when distributed (none when
//! embedded, where another server's router carries its gRPC service), and the same `url`,
//! `stop` and `wait` for `portcullis up`, `portcullis serve NAME` and the tests.
//!
//! A service's `Running…` type holds a [`RunningService`] and implements [`Served`] (one
//! method), so that a caller serving it until a signal ([`serve_until_signal`]) needs
//! nothing else of it.

use std::net::SocketAddr;

use portcullis_server::{AuthState, GrpcServer, ServerConfig, ServerError};

use crate::lifecycle::{Lifecycle, shutdown_signal};

/// A started service's lifecycle and, when it has one, its own listener.
#[derive(Debug)]
pub struct RunningService {
    url: Option<String>,
    addr: Option<SocketAddr>,
    lifecycle: Lifecycle,
}

impl RunningService {
    /// A service running on `lifecycle`, with no listener of its own yet.
    pub fn new(lifecycle: Lifecycle) -> RunningService {
        RunningService {
            url: None,
            addr: None,
            lifecycle,
        }
    }

    /// The lifecycle its tasks run on.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// Binds its own gRPC listener on `config` (port 0 picks a free port) with `auth`,
    /// carrying the services `add` adds, and serves it on the lifecycle as `name` (health
    /// `SERVING` from now on).
    pub async fn listen(
        &mut self,
        name: &'static str,
        config: ServerConfig,
        auth: AuthState,
        add: impl FnOnce(&mut GrpcServer),
    ) -> Result<(), ServerError> {
        let mut server = GrpcServer::new(config, auth);
        add(&mut server);
        let bound = server.bind().await?;
        self.addr = Some(bound.local_addr());
        self.url = Some(bound.url());
        self.lifecycle.serve(name, bound).await;
        Ok(())
    }

    /// `http://ADDR` or `https://ADDR` of its own listener, when it has one.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// Its own listener's address, when it has one.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Stops: no new calls, work in flight finished (within the drain deadline).
    pub async fn stop(&self) -> Result<(), ServerError> {
        self.lifecycle.token().cancel();
        self.wait().await
    }

    /// Waits until the service ends (it failed, or it was stopped), then drains.
    pub async fn wait(&self) -> Result<(), ServerError> {
        self.lifecycle.stopping().await;
        self.lifecycle.stop().await.result().map_err(ServerError::Config)
    }
}

/// A started service, as a caller that serves it needs it.
pub trait Served {
    /// Its lifecycle and listener.
    fn running(&self) -> &RunningService;

    /// What this replica has done since it started, as named counts (events stored,
    /// verifications answered, ...), said when it drains: with several replicas of a
    /// service, how the work split over them. None by default.
    fn work_done(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// `name=count` pairs separated by spaces (`stored=12 duplicates=0`), or `nothing counted`.
pub fn work_summary(work: &[(&'static str, u64)]) -> String {
    if work.is_empty() {
        return "nothing counted".to_owned();
    }
    work.iter()
        .map(|(name, count)| format!("{name}={count}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Served for RunningService {
    fn running(&self) -> &RunningService {
        self
    }
}

/// How [`serve_until_signal`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// SIGINT or SIGTERM came, and the service drained and stopped.
    Signalled,
    /// The service stopped by itself (it was stopped elsewhere, or a task ended) without
    /// failing: for a server process that is unexpected.
    ByItself,
}

/// Serves `service` until SIGINT or SIGTERM, then stops it (draining); or until it stops by
/// itself. A failure of the service, or of its drain, is the error.
pub async fn serve_until_signal(service: &impl Served) -> Result<Ended, ServerError> {
    let running = service.running();
    tokio::select! {
        () = shutdown_signal() => {
            running.stop().await?;
            Ok(Ended::Signalled)
        }
        result = running.wait() => {
            result?;
            Ok(Ended::ByItself)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn work_is_summarised_as_name_count_pairs() {
        assert_eq!(
            work_summary(&[("stored", 12), ("duplicates", 0)]),
            "stored=12 duplicates=0"
        );
        assert_eq!(work_summary(&[]), "nothing counted");
        assert!(
            RunningService::new(Lifecycle::new(Duration::from_secs(1)))
                .work_done()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_service_without_a_listener_stops_cleanly_and_has_no_url() {
        let service = RunningService::new(Lifecycle::new(Duration::from_secs(5)));
        service
            .lifecycle()
            .spawn("idle", |stop| async move { stop.cancelled().await });
        assert_eq!((service.url(), service.local_addr()), (None, None));
        service.stop().await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_task_ends_the_service_with_its_failure() {
        let service = RunningService::new(Lifecycle::new(Duration::from_secs(5)));
        service.lifecycle().spawn_fallible("broken", |_| async {
            Err::<(), _>("the subscription ended".to_owned())
        });
        let Err(ServerError::Config(why)) = serve_until_signal(&service).await else {
            panic!("expected the task's failure")
        };
        assert!(why.contains("the subscription ended"), "{why}");
    }

    #[tokio::test]
    async fn a_service_stopped_elsewhere_ends_by_itself() {
        let service = RunningService::new(Lifecycle::new(Duration::from_secs(5)));
        service.lifecycle().token().cancel();
        assert_eq!(serve_until_signal(&service).await.unwrap(), Ended::ByItself);
    }
}
