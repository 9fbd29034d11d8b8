//! How a service proves itself to NATS and protects the connection: credentials (user and
//! password, token, nkey seed or a creds file) and TLS. Settings (`[nats]`); the secrets among
//! them are redacted by `portcullis config print`.

use std::path::PathBuf;

use async_nats::ConnectOptions;
use serde::{Deserialize, Serialize};

use crate::BusError;

/// Credentials and TLS of the NATS connection. At most one kind of credential.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsAccess {
    /// User name, with `password`.
    pub user: Option<String>,
    /// Password of `user` (a secret).
    pub password: Option<String>,
    /// Authentication token (a secret).
    pub token: Option<String>,
    /// File holding an nkey seed (`SU...`).
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (user JWT and nkey seed), as `nsc` writes it.
    pub creds_file: Option<PathBuf>,
    /// Refuse a connection without TLS.
    pub require_tls: bool,
    /// CA certificate(s), PEM, trusted for the server's certificate.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate, PEM, for servers that verify clients (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// Private key of `tls_cert`, PEM.
    pub tls_key: Option<PathBuf>,
}

impl NatsAccess {
    /// Refuses settings that cannot work together, naming them.
    pub fn validate(&self) -> Result<(), BusError> {
        let invalid = |reason: &str| {
            Err(BusError::Invalid {
                field: "nats",
                reason: reason.to_owned(),
            })
        };
        let kinds = [
            self.user.is_some() || self.password.is_some(),
            self.token.is_some(),
            self.nkey_seed_file.is_some(),
            self.creds_file.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return invalid("give one kind of credential: user and password, token, nkey_seed_file or creds_file");
        }
        if self.user.is_some() != self.password.is_some() {
            return invalid("user and password go together");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return invalid("tls_cert and tls_key go together");
        }
        Ok(())
    }

    /// `options` with these credentials and TLS (files are read here).
    pub(crate) async fn apply(&self, mut options: ConnectOptions) -> Result<ConnectOptions, BusError> {
        self.validate()?;
        let unreadable = |path: &PathBuf, e: std::io::Error| BusError::Invalid {
            field: "nats",
            reason: format!("{}: {e}", path.display()),
        };
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some(path) = &self.nkey_seed_file {
            let seed = std::fs::read_to_string(path).map_err(|e| unreadable(path, e))?;
            options = options.nkey(seed.trim().to_owned());
        }
        if let Some(path) = &self.creds_file {
            options = options.credentials_file(path).await.map_err(|e| unreadable(path, e))?;
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options.require_tls(self.require_tls))
    }
}
