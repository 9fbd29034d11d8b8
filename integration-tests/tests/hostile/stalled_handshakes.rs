//! Finding 5: the gRPC listener's bounds. Strangers open TCP connections to the TLS port and
//! never start the handshake. Each is closed after the handshake timeout; while fewer than
//! the connection bound, a tenant's calls are answered as usual; when more, a tenant waits at
//! most about one handshake timeout for a connection, never indefinitely.

use std::time::{Duration, Instant};

use portcullis_integration_tests::store::{Api, by_name, policy_doc};
use portcullis_kit::{ClientConfig, Trust};
use portcullis_policy_store::testing::{TestOptions, TestServer};
use portcullis_server::{Mode, ServerLimits, TlsFiles};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_CONNECTIONS: usize = 20;

/// `count` connections that send nothing.
async fn stall(server: &TestServer, count: usize) -> Vec<TcpStream> {
    let mut strangers = Vec::new();
    for _ in 0..count {
        strangers.push(TcpStream::connect(server.addr).await.unwrap());
    }
    strangers
}

/// Whether the server closed `stream` within `wait` (end of stream or a reset).
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0_u8; 64];
    matches!(
        tokio::time::timeout(wait, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// A tenant's client on a new TLS connection, and how long one policy read took with it.
async fn read_policy(server: &TestServer, cert_pem: &[u8], key: &str) -> Duration {
    let started = Instant::now();
    let url = format!("https://localhost:{}", server.addr.port());
    let channel = ClientConfig::new(&url)
        .unwrap()
        .trust(Trust::Pinned(cert_pem.to_vec()))
        .connect_timeout(Duration::from_secs(20))
        .connect()
        .await
        .unwrap();
    let mut api = Api::on_channel(channel, key);
    assert_eq!(api.get_policy(by_name("steady")).await.unwrap().name, "steady");
    started.elapsed()
}

pub async fn stalled_handshakes_are_cut_and_tenants_still_connect(mode: Mode) {
    let dir = portcullis_test_kit::DataDir::new().unwrap();
    let (cert, key, _) = crate::tls::pki(dir.path());
    let cert_pem = std::fs::read(&cert).unwrap();
    let options = TestOptions {
        tls: Some(TlsFiles { cert, key }),
        limits: ServerLimits {
            tls_handshake_timeout: HANDSHAKE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            ..ServerLimits::default()
        },
        ..TestOptions::new(mode)
    };
    let server = TestServer::start(options).await.unwrap();
    let admin_key = server.admin_key.clone();
    let mut admin = Api::on_channel(
        ClientConfig::new(&format!("https://localhost:{}", server.addr.port()))
            .unwrap()
            .trust(Trust::Pinned(cert_pem.clone()))
            .connect()
            .await
            .unwrap(),
        &admin_key,
    );
    admin.create_policy(&policy_doc("steady", "block")).await.unwrap();
    drop(admin);
    let usual = read_policy(&server, &cert_pem, &admin_key).await;

    // Below the bound: half the connections stalled, a tenant's new connection and call as usual.
    let mut strangers = stall(&server, MAX_CONNECTIONS / 2).await;
    let below = read_policy(&server, &cert_pem, &admin_key).await;
    assert!(
        below < usual.max(Duration::from_millis(100)) * 10,
        "with stalled handshakes below the bound a call took {below:?} (usual {usual:?})"
    );
    // Each stalled connection is cut after the handshake timeout.
    for stranger in &mut strangers {
        assert!(
            closed_within(stranger, HANDSHAKE_TIMEOUT * 5).await,
            "a connection without a handshake was kept open"
        );
    }

    // Over the bound: every connection slot stalled (and more waiting in the backlog); a
    // tenant's connection waits for the timeout to free slots, and no longer.
    let strangers = stall(&server, MAX_CONNECTIONS * 2).await;
    let over = read_policy(&server, &cert_pem, &admin_key).await;
    assert!(
        over < HANDSHAKE_TIMEOUT * 6 + usual * 2,
        "with every slot stalled a call took {over:?} (handshake timeout {HANDSHAKE_TIMEOUT:?})"
    );
    drop(strangers);
    crate::report::row(
        "5",
        &format!(
            "TCP connections to the TLS port that never start the handshake (bound {MAX_CONNECTIONS}, handshake timeout {HANDSHAKE_TIMEOUT:?})"
        ),
        "each cut after the handshake timeout",
        &format!(
            "a tenant's new connection and call: {below:.1?} with {} stalled, {over:.1?} with {} stalled (usual {usual:.1?})",
            MAX_CONNECTIONS / 2,
            MAX_CONNECTIONS * 2
        ),
    );
}

portcullis_test_kit::both! {
    embedded: portcullis_server::Mode::Embedded,
    distributed: portcullis_server::Mode::Distributed;
    stalled_handshakes_are_cut_and_tenants_still_connect,
}
