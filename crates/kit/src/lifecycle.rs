//! Start, readiness, drain and stop of a service, in one place.
//!
//! A [`Lifecycle`] holds one [`CancellationToken`] and one [`TaskTracker`]. Background tasks
//! are spawned on it and get the token; gRPC servers are served on it until the token is
//! cancelled (health `SERVING` from [`Lifecycle::serve`] on, `NOT_SERVING` once draining).
//! [`Lifecycle::stop`] cancels the token and waits for every task, at most the drain
//! deadline; tasks still running then are aborted and named. A task that fails (a server
//! that stops with an error) cancels the token too, so the whole service stops, and
//! [`Lifecycle::wait`] reports the failure. [`shutdown_signal`] (SIGINT/SIGTERM) is what a
//! process passes to [`Lifecycle::stop_on`].

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use portcullis_server::BoundServer;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How a service ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stopped {
    /// The first task failure, which stopped the service (`None`: it was asked to stop).
    pub failure: Option<String>,
    /// Tasks still running at the drain deadline (aborted).
    pub unfinished: Vec<&'static str>,
}

impl Stopped {
    /// `Err` with the failure when a task failed, else `Ok`.
    pub fn result(&self) -> Result<(), String> {
        self.failure.clone().map_or(Ok(()), Err)
    }
}

type Failure = Arc<Mutex<Option<String>>>;

/// The running tasks of one service. Dropping it cancels the token without waiting.
#[derive(Debug)]
pub struct Lifecycle {
    token: CancellationToken,
    tracker: TaskTracker,
    tasks: Mutex<Vec<(&'static str, AbortHandle)>>,
    failure: Failure,
    drain_deadline: Duration,
}

impl Lifecycle {
    /// A lifecycle whose [`Lifecycle::stop`] waits at most `drain_deadline` for its tasks.
    pub fn new(drain_deadline: Duration) -> Lifecycle {
        Lifecycle {
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
            tasks: Mutex::new(Vec::new()),
            failure: Arc::new(Mutex::new(None)),
            drain_deadline,
        }
    }

    /// The token cancelled when the service stops.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Spawns background task `name`; it gets the token and must end soon after it is
    /// cancelled.
    pub fn spawn<F, Fut>(&self, name: &'static str, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handle = self.tracker.spawn(task(self.token.clone()));
        lock(&self.tasks).push((name, handle.abort_handle()));
    }

    /// Spawns task `name` that may fail: a failure is recorded and stops the service.
    pub fn spawn_fallible<F, Fut, E>(&self, name: &'static str, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let (token, failure) = (self.token.clone(), self.failure.clone());
        let running = task(token.clone());
        self.spawn(name, move |_| async move {
            if let Err(e) = running.await {
                tracing::error!(task = name, error = %e, "task failed; stopping the service");
                lock(&failure).get_or_insert_with(|| format!("{name}: {e}"));
                token.cancel();
            }
        });
    }

    /// Marks `server`'s services `SERVING` (the service is ready) and serves it until the
    /// token is cancelled; then they turn `NOT_SERVING` and the calls in flight drain.
    pub async fn serve(&self, name: &'static str, server: BoundServer) {
        server.mark_serving(true).await;
        self.spawn_fallible(name, |token| async move { server.serve(token.cancelled_owned()).await });
    }

    /// Stops the service when `signal` completes (for example [`shutdown_signal`]).
    pub fn stop_on<S>(&self, signal: S)
    where
        S: Future<Output = ()> + Send + 'static,
    {
        let token = self.token.clone();
        // Not tracked: it must not hold up the drain.
        tokio::spawn(async move {
            tokio::select! {
                () = signal => token.cancel(),
                () = token.cancelled() => {}
            }
        });
    }

    /// Completes once the service is stopping (asked to, or a task failed). Cancel-safe.
    pub async fn stopping(&self) {
        self.token.cancelled().await;
    }

    /// Cancels the token and waits for every task, at most the drain deadline; tasks still
    /// running then are aborted.
    pub async fn stop(&self) -> Stopped {
        self.token.cancel();
        self.tracker.close();
        let unfinished = match tokio::time::timeout(self.drain_deadline, self.tracker.wait()).await {
            Ok(()) => Vec::new(),
            Err(_) => {
                let tasks = lock(&self.tasks);
                let stuck: Vec<&'static str> = tasks
                    .iter()
                    .filter(|(_, handle)| !handle.is_finished())
                    .map(|(name, _)| *name)
                    .collect();
                tracing::warn!(tasks = ?stuck, deadline = ?self.drain_deadline, "drain deadline passed; aborting");
                tasks.iter().for_each(|(_, handle)| handle.abort());
                stuck
            }
        };
        Stopped {
            failure: lock(&self.failure).clone(),
            unfinished,
        }
    }

    /// Waits until the service stops (a task failed, a signal came), then drains as
    /// [`Lifecycle::stop`] does.
    pub async fn wait(&self) -> Stopped {
        self.stopping().await;
        self.stop().await
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Completes on SIGINT or SIGTERM (on other platforms: Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => tracing::info!("SIGINT received"),
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                }
            }
            _ => {
                // Without signal handlers the process can only be killed; keep serving.
                tracing::warn!("cannot install signal handlers");
                std::future::pending::<()>().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
