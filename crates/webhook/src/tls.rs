//! The server's TLS configuration from PEM files: rustls on the ring provider (as tonic's
//! `tls-ring` elsewhere in the workspace), ALPN `h2` then `http/1.1`.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use portcullis_domain::ServeError;

/// ALPN protocols offered, HTTP/2 preferred (the API server offers both).
pub(crate) const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// PEM files larger than this are refused rather than read (a chain is a few KiB).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Loads the certificate chain and private key and builds the rustls server configuration.
pub(crate) fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let cert_pem = read_pem(cert, "certificate")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServeError::Tls(format!("certificate {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(ServeError::Tls(format!(
            "certificate {}: no CERTIFICATE block in the PEM file",
            cert.display()
        )));
    }
    let key_pem = read_pem(key, "private key")?;
    // Takes the first PKCS#8, PKCS#1 (RSA) or SEC1 (EC) key block.
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        ServeError::Tls(format!(
            "private key {}: no usable PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block ({e})",
            key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(format!("protocol versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| {
            ServeError::Tls(format!(
                "certificate {} with private key {}: {e}",
                cert.display(),
                key.display()
            ))
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// Reads a PEM file, naming it and what it should hold in the error.
fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, ServeError> {
    let fail = |reason: String| ServeError::Tls(format!("{what} {}: {reason}", path.display()));
    let len = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?.len();
    if len > MAX_PEM_BYTES {
        return Err(fail(format!("{len} bytes is too large for a PEM file")));
    }
    std::fs::read(path).map_err(|e| fail(e.to_string()))
}
