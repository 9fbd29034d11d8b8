//! The one gRPC client builder: a channel from a URL (`http://` or `https://`), TLS with a
//! given CA or the system roots, connect and request timeouts, HTTP/2 keepalive; and the
//! credential every call carries ([`Credential`]: `authorization: Bearer <key>`, the call's
//! deadline, and for the service credential `x-portcullis-tenant` per call).

use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_server::TENANT_METADATA;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri};
use tonic::{Request, Status};

use crate::pinned::PinnedConnector;

/// Why a channel could not be built or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The URL is not one a channel can dial.
    #[error("{url}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The CA file could not be read or holds no PEM certificate.
    #[error("{}: {reason}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A CA was given for a plain-text URL.
    #[error("a CA certificate is for an https:// server, and the URL is {url}")]
    CaWithoutTls {
        /// The URL.
        url: String,
    },
    /// TLS could not be set up.
    #[error("TLS for {url}: {reason}")]
    Tls {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Connecting failed.
    #[error("cannot reach {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// Why, with its sources.
        reason: String,
    },
    /// A plain-text URL off this host, where a key would cross the network in the clear.
    #[error(
        "refusing to send a key in plain text to {url}: use https://, or a loopback address (127.0.0.1, ::1, localhost)"
    )]
    PlainText {
        /// The URL.
        url: String,
    },
    /// No connection (TCP, TLS and HTTP/2 handshakes) within the connect timeout.
    #[error("cannot reach {url}: no connection within {timeout:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The connect timeout.
        timeout: Duration,
    },
}

/// Which certificates an `https://` channel trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The system's roots.
    SystemRoots,
    /// This CA (PEM), besides the system's roots.
    Ca(Vec<u8>),
    /// Exactly the leaf (first) certificate of this PEM chain, whatever its issuer and the
    /// names it carries: the process's own listener, called in embedded mode.
    Pinned(Vec<u8>),
}

impl Trust {
    /// The CA in `path`, which must hold a PEM certificate.
    pub fn ca_file(path: &Path) -> Result<Trust, ClientError> {
        let bad = |reason: String| ClientError::CaFile {
            path: path.to_owned(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
            return Err(bad("no PEM certificate in the file".to_owned()));
        }
        Ok(Trust::Ca(pem))
    }
}

/// How to reach one server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    url: String,
    uri: Uri,
    trust: Option<Trust>,
    connect_timeout: Duration,
    request_timeout: Duration,
    keepalive: Option<Duration>,
}

impl ClientConfig {
    /// `url` (`http://HOST:PORT` or `https://HOST:PORT`), system roots for https, 5 s to
    /// connect, 30 s per call, an HTTP/2 ping every 20 s (also while idle).
    pub fn new(url: &str) -> Result<ClientConfig, ClientError> {
        let uri: Uri = url.parse().map_err(|e: http::uri::InvalidUri| ClientError::Url {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(ClientError::Url {
                url: url.to_owned(),
                reason: "expected http://HOST:PORT or https://HOST:PORT".to_owned(),
            });
        }
        Ok(ClientConfig {
            url: url.to_owned(),
            uri,
            trust: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            keepalive: Some(Duration::from_secs(20)),
        })
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the channel speaks TLS (an `https://` URL).
    pub fn is_tls(&self) -> bool {
        self.uri.scheme_str() == Some("https")
    }

    /// Whether the server is this host: a loopback address or `localhost`.
    pub fn is_loopback(&self) -> bool {
        let host = self.uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// Refuses a plain-text (`http://`) URL off this host: every call carries a key.
    pub fn refuse_plain_text_off_host(&self) -> Result<(), ClientError> {
        if self.is_tls() || self.is_loopback() {
            Ok(())
        } else {
            Err(ClientError::PlainText { url: self.url.clone() })
        }
    }

    /// Trusts `trust` (refused for a plain-text URL by [`ClientConfig::endpoint`]).
    #[must_use]
    pub fn trust(mut self, trust: Trust) -> ClientConfig {
        self.trust = Some(trust);
        self
    }

    /// Bounds connecting (TCP, TLS and HTTP/2 handshakes).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientConfig {
        self.connect_timeout = timeout;
        self
    }

    /// Bounds every call.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> ClientConfig {
        self.request_timeout = timeout;
        self
    }

    /// The HTTP/2 keepalive ping interval (`None`: no pings).
    #[must_use]
    pub fn keepalive(mut self, interval: Option<Duration>) -> ClientConfig {
        self.keepalive = interval;
        self
    }

    /// The tonic endpoint of `uri` with the timeouts and keepalive, no TLS yet.
    fn base_endpoint(&self, uri: Uri) -> Endpoint {
        let endpoint = Endpoint::from(uri)
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .tcp_nodelay(true);
        match self.keepalive {
            Some(interval) => endpoint.http2_keep_alive_interval(interval).keep_alive_while_idle(true),
            None => endpoint,
        }
    }

    /// A pinned certificate's endpoint (plain `http://`: the connector speaks TLS) and
    /// connector, when the trust is [`Trust::Pinned`].
    fn pinned(&self) -> Result<Option<(Endpoint, PinnedConnector)>, ClientError> {
        let Some(Trust::Pinned(pem)) = &self.trust else {
            return Ok(None);
        };
        let tls_error = |reason: String| ClientError::Tls {
            url: self.url.clone(),
            reason,
        };
        if !self.is_tls() {
            return Err(ClientError::CaWithoutTls { url: self.url.clone() });
        }
        let host = self.uri.host().unwrap_or_default();
        let connector =
            PinnedConnector::new(pem, host.trim_start_matches('[').trim_end_matches(']')).map_err(tls_error)?;
        let mut parts = self.uri.clone().into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        let uri = Uri::from_parts(parts).map_err(|e| tls_error(e.to_string()))?;
        Ok(Some((self.base_endpoint(uri), connector)))
    }

    /// The tonic endpoint, TLS configured (not for [`Trust::Pinned`], which
    /// [`ClientConfig::connect`] and [`ClientConfig::connect_lazy`] serve with a connector of
    /// their own).
    pub fn endpoint(&self) -> Result<Endpoint, ClientError> {
        let endpoint = self.base_endpoint(self.uri.clone());
        if !self.is_tls() {
            if self.trust.is_some() {
                return Err(ClientError::CaWithoutTls { url: self.url.clone() });
            }
            return Ok(endpoint);
        }
        // The name the certificate must carry, without IPv6 brackets.
        let host = self.uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tls = ClientTlsConfig::new().domain_name(host).with_enabled_roots();
        let tls = match &self.trust {
            Some(Trust::Ca(pem)) => tls.ca_certificate(Certificate::from_pem(pem)),
            Some(Trust::Pinned(_)) => {
                return Err(ClientError::Tls {
                    url: self.url.clone(),
                    reason: "a pinned certificate has no tonic endpoint: use connect or connect_lazy".to_owned(),
                });
            }
            Some(Trust::SystemRoots) | None => tls,
        };
        endpoint.tls_config(tls).map_err(|e| ClientError::Tls {
            url: self.url.clone(),
            reason: error_chain(&e),
        })
    }

    /// Connects now, so that an unreachable server is one clear error.
    pub async fn connect(&self) -> Result<Channel, ClientError> {
        let connecting = async {
            match self.pinned()? {
                Some((endpoint, connector)) => Ok(endpoint.connect_with_connector(connector).await),
                None => Ok(self.endpoint()?.connect().await),
            }
        };
        // The endpoint's connect timeout covers TCP only; this bounds the handshakes too.
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Err(e)) => Err(e),
            Ok(Ok(connected)) => match connected {
                Ok(channel) => Ok(channel),
                Err(e) => Err(ClientError::Connect {
                    url: self.url.clone(),
                    reason: error_chain(&e),
                }),
            },
            Err(_) => Err(ClientError::Timeout {
                url: self.url.clone(),
                timeout: self.connect_timeout,
            }),
        }
    }

    /// A channel that connects on first use (and reconnects after failures).
    pub fn connect_lazy(&self) -> Result<Channel, ClientError> {
        Ok(match self.pinned()? {
            Some((endpoint, connector)) => endpoint.connect_with_connector_lazy(connector),
            None => self.endpoint()?.connect_lazy(),
        })
    }
}

/// An error and every cause under it, as one line (a cause already in the text is not
/// repeated).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !cause_text.is_empty() && !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text.split(['\n', '\r', '\t'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a key cannot be a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The key is empty (or only whitespace).
    #[error("is empty")]
    Empty,
    /// The key has characters a key cannot have.
    #[error("has characters a key cannot have (only printable ASCII, no spaces)")]
    BadCharacters,
}

/// What every call carries: `authorization: Bearer <key>`, when set the deadline as
/// `grpc-timeout` (so the server stops work the client no longer waits for), and while
/// spans are exported the current span's trace context (`traceparent`). An
/// [`Interceptor`]: `XClient::with_interceptor(channel, credential)`.
#[derive(Clone)]
pub struct Credential {
    authorization: AsciiMetadataValue,
    timeout: Option<Duration>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.debug_struct("Credential")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// The credential of `key` (surrounding whitespace ignored).
    pub fn bearer(key: &str) -> Result<Credential, CredentialError> {
        let key = key.trim();
        if key.is_empty() {
            return Err(CredentialError::Empty);
        }
        if !key.chars().all(|c| c.is_ascii_graphic()) {
            return Err(CredentialError::BadCharacters);
        }
        let mut authorization: AsciiMetadataValue = format!("Bearer {key}")
            .parse()
            .map_err(|_| CredentialError::BadCharacters)?;
        authorization.set_sensitive(true);
        Ok(Credential {
            authorization,
            timeout: None,
        })
    }

    /// Also sends `timeout` as every call's deadline.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Credential {
        self.timeout = Some(timeout);
        self
    }

    /// Puts the credential and the deadline on `request` (a deadline it carries already
    /// wins: a call may be given a shorter one).
    pub fn apply<T>(&self, request: &mut Request<T>) {
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        if let Some(timeout) = self.timeout
            && !request.metadata().contains_key("grpc-timeout")
        {
            request.set_timeout(timeout);
        }
        // The caller's trace goes on (a context the call carries already wins; a
        // `crate::Traced` channel underneath replaces it with its client span's).
        if crate::trace::exporting_traces() && !request.metadata().contains_key(crate::trace::TRACEPARENT) {
            crate::trace::inject_current_metadata(request.metadata_mut());
        }
    }
}

impl Interceptor for Credential {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        self.apply(&mut request);
        Ok(request)
    }
}

/// `message` as a call of the service credential acting for `tenant` (`x-portcullis-tenant`).
pub fn for_tenant<T>(tenant: &str, message: T) -> Result<Request<T>, Status> {
    let mut request = Request::new(message);
    let value = tenant
        .parse()
        .map_err(|_| Status::invalid_argument("tenant: not valid metadata text"))?;
    request.metadata_mut().insert(TENANT_METADATA, value);
    Ok(request)
}
