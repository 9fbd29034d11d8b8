//! The service lifecycle: drain, the drain deadline, failures, readiness.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use portcullis_kit::lifecycle::{Lifecycle, Stopped};

#[tokio::test]
async fn a_running_task_gets_the_token_and_finishes_before_stop_returns() {
    let lifecycle = Lifecycle::new(Duration::from_secs(30));
    let finished = Arc::new(AtomicBool::new(false));
    let done = finished.clone();
    lifecycle.spawn("worker", |stop| async move {
        stop.cancelled().await;
        // Work after the token: the drain waits for it.
        tokio::task::yield_now().await;
        done.store(true, Ordering::SeqCst);
    });
    let stopped = lifecycle.stop().await;
    assert_eq!(stopped, Stopped::default());
    assert!(finished.load(Ordering::SeqCst));
}

#[tokio::test]
async fn the_drain_deadline_bounds_a_stuck_task() {
    let lifecycle = Lifecycle::new(Duration::from_millis(100));
    lifecycle.spawn("polite", |stop| async move { stop.cancelled().await });
    lifecycle.spawn("stuck", |_stop| std::future::pending::<()>());
    let stopped = lifecycle.stop().await;
    assert_eq!(stopped.unfinished, vec!["stuck"]);
    assert_eq!(stopped.failure, None);
}

#[tokio::test]
async fn a_failing_task_stops_the_service_and_is_reported() {
    let lifecycle = Lifecycle::new(Duration::from_secs(30));
    let other_stopped = Arc::new(AtomicBool::new(false));
    let flag = other_stopped.clone();
    lifecycle.spawn("other", |stop| async move {
        stop.cancelled().await;
        flag.store(true, Ordering::SeqCst);
    });
    lifecycle.spawn_fallible("server", |_stop| async { Err::<(), _>("port gone") });
    let stopped = lifecycle.wait().await;
    assert_eq!(stopped.result(), Err("server: port gone".to_owned()));
    assert!(other_stopped.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_signal_stops_the_service() {
    let lifecycle = Lifecycle::new(Duration::from_secs(30));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    lifecycle.stop_on(async move {
        let _ = rx.await;
    });
    tx.send(()).unwrap();
    assert_eq!(lifecycle.wait().await, Stopped::default());
}

#[tokio::test]
async fn a_served_server_is_serving_until_the_drain() {
    use portcullis_server::{AuthState, Credentials, GrpcServer, Mode, PermissionTable, ServerConfig};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    #[derive(Debug)]
    struct NoKeys;
    impl portcullis_server::Authenticator for NoKeys {
        fn authenticate<'a>(
            &'a self,
            _key: &'a str,
        ) -> portcullis_server::BoxFuture<'a, Result<portcullis_server::TenantKey, tonic::Status>> {
            Box::pin(async { Err(tonic::Status::unauthenticated("no keys")) })
        }
    }

    let auth = AuthState {
        credentials: Credentials::new(None, None).unwrap(),
        authenticator: Arc::new(NoKeys),
        table: PermissionTable::standard(),
        rate_limit: None,
    };
    let mut server = GrpcServer::new(ServerConfig::new(([127, 0, 0, 1], 0).into(), Mode::Embedded), auth);
    server.add_service(Dummy);
    let bound = server.bind().await.unwrap();
    let url = bound.url();
    let lifecycle = Lifecycle::new(Duration::from_secs(30));
    lifecycle.serve("grpc", bound).await;
    let channel = portcullis_kit::ClientConfig::new(&url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "test.Dummy".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    assert_eq!(lifecycle.stop().await, Stopped::default());
}

/// A named service that answers nothing: something for health to report on.
#[derive(Debug, Clone)]
struct Dummy;

impl tonic::server::NamedService for Dummy {
    const NAME: &'static str = "test.Dummy";
}

impl tower::Service<http::Request<tonic::body::Body>> for Dummy {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: http::Request<tonic::body::Body>) -> Self::Future {
        std::future::ready(Ok(http::Response::new(tonic::body::Body::empty())))
    }
}
