//! NATS credentials: a server that requires a user and password refuses a bus without them
//! or with a wrong password, and takes one with them; conflicting settings are refused before
//! anything is dialled.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_bus::{Bus, BusConfig, BusError, NatsAccess};
use portcullis_test_kit::NatsServer;

fn access(user: &str, password: &str) -> NatsAccess {
    NatsAccess {
        user: Some(user.to_owned()),
        password: Some(password.to_owned()),
        ..NatsAccess::default()
    }
}

#[tokio::test]
async fn a_server_with_authorization_takes_only_the_right_credentials() {
    let server = NatsServer::start_with_config("authorization {\n  user: \"svc\"\n  password: \"s3cret-pw\"\n}")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let connect = |access: NatsAccess| {
        let url = server.url();
        async move { Bus::connect_nats_with(&url, BusConfig::default(), &access).await }
    };
    let Err(refused) = connect(NatsAccess::default()).await else {
        panic!("connected without credentials");
    };
    assert!(matches!(refused, BusError::Connect { .. }), "{refused}");
    let Err(refused) = connect(access("svc", "wrong")).await else {
        panic!("connected with a wrong password");
    };
    assert!(matches!(refused, BusError::Connect { .. }), "{refused}");
    let bus = connect(access("svc", "s3cret-pw")).await.unwrap();
    assert!(bus.config().max_event_bytes > 0);
}

#[test]
fn conflicting_credentials_are_refused_naming_them() {
    let mut both = access("svc", "pw");
    both.token = Some("t".to_owned());
    let problem = both.validate().unwrap_err().to_string();
    assert!(problem.contains("one kind of credential"), "{problem}");
    let half = NatsAccess {
        user: Some("svc".to_owned()),
        ..NatsAccess::default()
    };
    assert!(half.validate().unwrap_err().to_string().contains("user and password"));
    let cert_alone = NatsAccess {
        tls_cert: Some("client.pem".into()),
        ..NatsAccess::default()
    };
    assert!(
        cert_alone
            .validate()
            .unwrap_err()
            .to_string()
            .contains("tls_cert and tls_key")
    );
    assert!(NatsAccess::default().validate().is_ok());
}
