//! A channel that trusts exactly one certificate: the one a process serves itself. In
//! embedded mode the admission service calls the policy store on the process's own TLS
//! listener; that certificate may come from a private CA the process was never given, and
//! name a host other than the loopback address dialled. Pinning the served leaf (its DER,
//! byte for byte) proves the peer holds the listener's private key, which is all the trust
//! an in-process call needs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{CertificateError, ClientConfig, DigitallySignedStruct, Error, SignatureScheme};
use tonic::transport::Uri;

/// The leaf certificate of a PEM chain (the first certificate), as DER.
fn leaf_of(pem: &[u8]) -> Result<CertificateDer<'static>, String> {
    CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or_else(|| "no PEM certificate".to_owned())?
        .map_err(|e| format!("bad PEM certificate: {e}"))
}

/// Accepts the pinned certificate only; the handshake's signatures are still checked, so
/// the peer must hold its private key.
#[derive(Debug)]
struct PinnedVerifier {
    pinned: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS connector trusting `pinned` alone, speaking HTTP/2.
fn connector(pinned: CertificateDer<'static>) -> Result<TlsConnector, String> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let verifier = PinnedVerifier {
        pinned,
        provider: Arc::clone(&provider),
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The channel's connector: dials `host:port` of the channel's (plain `http://`) URI and
/// runs the TLS handshake, naming `server_name` (SNI).
#[derive(Clone)]
pub(crate) struct PinnedConnector {
    tls: TlsConnector,
    server_name: ServerName<'static>,
}

impl PinnedConnector {
    /// Trusting the leaf of `pem` alone, sending `host` as the server name.
    pub(crate) fn new(pem: &[u8], host: &str) -> Result<PinnedConnector, String> {
        let tls = connector(leaf_of(pem)?)?;
        let server_name = ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: {e}"))?;
        Ok(PinnedConnector { tls, server_name })
    }
}

type Stream = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower::Service<Uri> for PinnedConnector {
    type Response = Stream;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Stream>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (tls, server_name) = (self.tls.clone(), self.server_name.clone());
        Box::pin(async move {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            Ok(TokioIo::new(tls.connect(server_name, tcp).await?))
        })
    }
}
