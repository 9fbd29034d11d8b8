//! The one set of test fixtures of the workspace, a dev-dependency of every suite that needs
//! infrastructure:
//!
//! - [`TestDatabase`]: a fresh PostgreSQL database per test, dropped afterwards, on the server
//!   named by `PORTCULLIS_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//!   when that variable is unset and no server answers there, a private cluster made with
//!   `initdb` on a free port (see [`postgres`]).
//! - [`NatsServer`]: a private nats-server >= 2.10 with JetStream on a free loopback port
//!   (`PORTCULLIS_NATS_SERVER`, else `.venv/bin/nats-server` of the workspace), killed on drop.
//! - [`Registry`]: a private OCI registry (Debian's `docker-registry`) on a free loopback port,
//!   anonymous, with htpasswd basic auth or with bearer-token auth (an in-process token
//!   service issuing the JWTs docker-registry's `auth: token` verifies), plain HTTP or TLS, that a test can stop and restart
//!   (`PORTCULLIS_DOCKER_REGISTRY`, else `docker-registry` on `PATH`).
//! - [`DataDir`]: a temporary data folder with the URL of an SQLite file in it.
//! - [`both!`]: one scenario, run embedded (SQLite + in-process bus) and distributed
//!   (PostgreSQL + nats-server).
//! - [`eventually`]: poll for a state under a deadline, failing with the last state seen.
//! - [`docs`]: policy documents (JSON and YAML) and AdmissionReview documents.
//!
//! Fixtures return [`FixtureError`] rather than panicking, so a service's own `testing`
//! module can build on them; the assertion helpers ([`eventually`]) panic, as tests do.

use std::net::TcpListener;

pub mod docs;
mod eventually;
pub mod nats;
pub mod postgres;
pub mod registry;
mod sqlite;
mod token;

pub use eventually::{POLL_MAX, eventually, until};
pub use nats::NatsServer;
pub use postgres::TestDatabase;
pub use registry::{Registry, RegistryOptions};
pub use sqlite::{DataDir, sqlite_url};

/// Why a fixture could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// A program the fixture needs (nats-server, initdb, docker-registry) was not found or is too old.
    #[error("not found: {0}")]
    NotFound(String),
    /// Starting or reaching it failed.
    #[error("{0}")]
    Start(String),
}

/// A free TCP port on the loopback interface (free when asked: the caller binds it next).
pub fn free_port() -> Result<u16, FixtureError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| FixtureError::Start(format!("no free port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| FixtureError::Start(format!("no free port: {e}")))
}

/// Test material from the shared conformance folder beside the repository
/// (`../shared/conformance/<path>`); panics naming the path when it cannot be read.
pub fn shared(path: &str) -> String {
    let full = format!("{}/../../../shared/conformance/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic_at(&full, &e))
}

#[allow(clippy::panic)] // A test helper: a missing file fails the test that asked for it.
fn panic_at(path: &str, error: &dyn std::fmt::Display) -> ! {
    panic!("{path}: {error}")
}

/// For each `scenario` (or `module::scenario`), a test `embedded::scenario` and a test
/// `distributed::scenario` (multi-threaded tokio runtime, two workers), each calling
/// `scenario(FIXTURE).await` (a name as seen where `both!` is called) with the fixture
/// expression of its mode. The
/// expressions are evaluated inside the test (they may `.await`); a temporary such as
/// `&mut TestServer::embedded().await.unwrap()` lives until the scenario returns.
///
/// ```text
/// portcullis_test_kit::both! {
///     embedded: &mut TestServer::embedded().await.unwrap(),
///     distributed: &mut TestServer::distributed().await.unwrap();
///     create,
///     history,
/// }
/// ```
///
/// The calling crate needs `tokio` (with `macros` and `rt-multi-thread`).
#[macro_export]
macro_rules! both {
    (
        embedded: $embedded:expr,
        distributed: $distributed:expr;
        $($name:ident),* $(,)?
    ) => {
        mod embedded {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($embedded).await;
                }
            )*
        }
        mod distributed {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($distributed).await;
                }
            )*
        }
    };
    (
        embedded: $embedded:expr,
        distributed: $distributed:expr;
        $($module:ident :: $name:ident),* $(,)?
    ) => {
        mod embedded {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$module::$name($embedded).await;
                }
            )*
        }
        mod distributed {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$module::$name($distributed).await;
                }
            )*
        }
    };
}
