//! The registry client: transport, authentication, deadlines, concurrency and body limits.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::{AuthCache, Challenge, Credential, DEFAULT_TOKEN_LIFETIME, TokenResponse, parse_challenge};
use crate::manifest::{MANIFEST_ACCEPT, Manifest, is_manifest_type};
use crate::reference::is_loopback;
use crate::{Digest, Error, Reference};

/// The client's settings; [`ClientConfig::default`] holds the documented defaults.
#[derive(Clone)]
pub struct ClientConfig {
    /// The most one call (one public method, authentication and redirects included) may take.
    /// Default 30 s.
    pub deadline: Duration,
    /// The most a TCP connect (and TLS handshake) may take. Default 10 s.
    pub connect_timeout: Duration,
    /// Requests in flight to one registry host at once; more wait (within their deadline).
    /// Default 8.
    pub max_concurrency_per_registry: usize,
    /// Largest manifest, index or referrers list read. Default 4 MiB (what registries accept).
    pub max_manifest_bytes: usize,
    /// Largest signature layer (a simple-signing payload) read. Default 1 MiB.
    pub max_signature_layer_bytes: usize,
    /// Most layers read from one `.sig` manifest (one per signature). Default 64.
    pub max_signature_layers: usize,
    /// Registries (`host[:port]` as in references) reached over plain HTTP. Loopback ones
    /// (`localhost`, 127.0.0.0/8, `[::1]`) are too while `plain_http_loopback` holds.
    pub insecure_registries: Vec<String>,
    /// Whether loopback registries are reached over plain HTTP without being listed, as Docker
    /// does. Default true; false treats them as any other (HTTPS), for a loopback registry
    /// with TLS.
    pub plain_http_loopback: bool,
    /// PEM certificates trusted besides the webpki (Mozilla) roots: a private registry's CA.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Credentials by registry (`host[:port]` as in references; Docker Hub's under `docker.io`,
    /// `registry-1.docker.io` or `index.docker.io`).
    pub credentials: HashMap<String, Credential>,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_concurrency_per_registry: 8,
            max_manifest_bytes: 4 << 20,
            max_signature_layer_bytes: 1 << 20,
            max_signature_layers: 64,
            insecure_registries: Vec::new(),
            plain_http_loopback: true,
            extra_ca_pem: None,
            credentials: HashMap::new(),
            user_agent: format!("portcullis/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credential's Debug redacts secrets; the CA is summarised.
        f.debug_struct("ClientConfig")
            .field("deadline", &self.deadline)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_concurrency_per_registry", &self.max_concurrency_per_registry)
            .field("max_manifest_bytes", &self.max_manifest_bytes)
            .field("max_signature_layer_bytes", &self.max_signature_layer_bytes)
            .field("max_signature_layers", &self.max_signature_layers)
            .field("insecure_registries", &self.insecure_registries)
            .field("plain_http_loopback", &self.plain_http_loopback)
            .field(
                "extra_ca_pem",
                &self.extra_ca_pem.as_ref().map(|pem| format!("{} bytes", pem.len())),
            )
            .field("credentials", &self.credentials)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

/// An OCI Distribution client; cheap to clone (clones share connections, tokens and limits).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("config", &self.inner.config).finish()
    }
}

struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    auth: Mutex<AuthCache>,
    limits: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Hosts whose semaphores are kept; past it idle ones are dropped (references name any host).
const MAX_HOSTS: usize = 4096;
/// Largest error body or token answer read.
const MAX_SMALL_BODY: usize = 64 << 10;
/// Redirects followed (blob GETs are redirected to storage once, in practice).
const MAX_REDIRECTS: usize = 5;

/// A response with the permit of its host, held until its body is read.
pub(crate) struct Answer {
    pub(crate) response: reqwest::Response,
    _permit: OwnedSemaphorePermit,
}

/// What one request needs; kept whole so that it can be sent again after a challenge.
pub(crate) struct Request<'a> {
    pub(crate) method: Method,
    pub(crate) reference: &'a Reference,
    /// The part after `/v2/<repository>/`, or a whole URL (an upload location).
    pub(crate) target: Target,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Bytes>,
    /// `pull`, or `pull,push`.
    pub(crate) actions: &'static str,
}

/// Where a request goes.
pub(crate) enum Target {
    /// `/v2/<repository>/<path>`.
    Path(String),
    /// An absolute URL the registry gave (an upload location).
    Url(Url),
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent whatever panicked while holding them.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Client {
    /// A client with `config`; `Config` when the extra CA cannot be read or TLS cannot be set up.
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(pem) = &config.extra_ca_pem {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject as _;
            let mut added = 0_usize;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| Error::Config(format!("extra CA: {e}")))?;
                roots.add(cert).map_err(|e| Error::Config(format!("extra CA: {e}")))?;
                added += 1;
            }
            if added == 0 {
                return Err(Error::Config("extra CA: no certificate in the PEM".into()));
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            // Never downgrade: a redirect from https to http would expose the request.
            let downgrade = attempt.url().scheme() != "https"
                && attempt
                    .previous()
                    .last()
                    .is_some_and(|previous| previous.scheme() == "https");
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if downgrade {
                attempt.error("redirect from https to http")
            } else {
                // reqwest drops Authorization when the redirect leaves the host.
                attempt.follow()
            }
        });
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(config.connect_timeout)
            .redirect(redirects)
            .user_agent(config.user_agent.clone())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(config.max_concurrency_per_registry.max(1))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                config,
                auth: Mutex::new(AuthCache::default()),
                limits: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The settings this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Runs `call` under the configured deadline.
    pub(crate) async fn within<T>(&self, call: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        let deadline = self.inner.config.deadline;
        tokio::time::timeout(deadline, call)
            .await
            .unwrap_or(Err(Error::DeadlineExceeded(deadline)))
    }

    /// `https`, or `http` for loopback and configured insecure registries.
    fn scheme(&self, registry: &str) -> &'static str {
        if self.plain_http_allowed(registry) {
            "http"
        } else {
            "https"
        }
    }

    fn plain_http_allowed(&self, host: &str) -> bool {
        let config = &self.inner.config;
        (config.plain_http_loopback && is_loopback(host)) || config.insecure_registries.iter().any(|r| r == host)
    }

    pub(crate) fn url(&self, reference: &Reference, path: &str) -> Result<Url, Error> {
        let text = format!(
            "{}://{}/v2/{}/{path}",
            self.scheme(reference.registry()),
            reference.api_host(),
            reference.repository()
        );
        Url::parse(&text).map_err(|e| Error::Invalid(format!("URL {text}: {e}")))
    }

    async fn permit(&self, host: &str) -> Result<OwnedSemaphorePermit, Error> {
        let semaphore = {
            let mut limits = lock(&self.inner.limits);
            if limits.len() >= MAX_HOSTS && !limits.contains_key(host) {
                // Drop the hosts nobody is using (every permit back).
                let max = self.inner.config.max_concurrency_per_registry.max(1);
                limits.retain(|_, s| s.available_permits() < max);
            }
            limits
                .entry(host.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.inner.config.max_concurrency_per_registry.max(1))))
                .clone()
        };
        semaphore
            .acquire_owned()
            .await
            .map_err(|_| Error::Unavailable(format!("{host}: client closed")))
    }

    fn credential(&self, reference: &Reference) -> Option<&Credential> {
        let credentials = &self.inner.config.credentials;
        credentials.get(reference.registry()).or_else(|| {
            // Docker Hub's credentials are often stored under its other names.
            (reference.registry() == crate::DOCKER_HUB)
                .then(|| {
                    [crate::DOCKER_HUB_API, "index.docker.io"]
                        .iter()
                        .find_map(|name| credentials.get(*name))
                })
                .flatten()
        })
    }

    /// Sends `request`, answering a 401 challenge once (basic, or a bearer token fetched with
    /// the credentials), and maps error statuses to [`Error`]s. 2xx answers are returned.
    pub(crate) async fn send(&self, request: Request<'_>) -> Result<Answer, Error> {
        let reference = request.reference;
        let host = reference.api_host().to_owned();
        let scope = format!("repository:{}:{}", reference.repository(), request.actions);
        let url = match &request.target {
            Target::Path(path) => self.url(reference, path)?,
            Target::Url(url) => self.checked_location(reference, url)?,
        };
        // An upload location on another host (a storage service) gets no credentials: they
        // are the registry's, never sent elsewhere.
        let same_host = authority(&url).as_deref() == Some(host.as_str())
            || (reference.registry() == crate::DOCKER_HUB && authority(&url).as_deref() == Some(crate::DOCKER_HUB_API));
        let credential = self.credential(reference).filter(|_| same_host);
        // What we know from earlier challenges: a cached token, or a Basic host.
        let mut authorization = {
            let auth = lock(&self.inner.auth);
            match auth.token(&host, &scope) {
                Some(token) if same_host => Some(format!("Bearer {token}")),
                Some(_) => None,
                None if auth.uses_basic(&host) => credential.and_then(Credential::basic_header),
                None => None,
            }
        };
        let mut challenged = false;
        loop {
            let permit = self.permit(&host).await?;
            let mut builder = self
                .inner
                .http
                .request(request.method.clone(), url.clone())
                .headers(request.headers.clone());
            if let Some(value) = &authorization {
                builder = builder.header(header::AUTHORIZATION, sensitive(value)?);
            }
            if let Some(body) = &request.body {
                builder = builder.body(body.clone());
            }
            let response = builder.send().await.map_err(|e| transport_error(&host, &e))?;
            let status = response.status();
            if status.is_success() {
                return Ok(Answer {
                    response,
                    _permit: permit,
                });
            }
            if status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let challenge = response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_challenge);
                drop(response);
                drop(permit);
                match challenge {
                    Some(Challenge::Basic) => {
                        tracing::debug!(host = %host, "registry asks for basic auth");
                        let Some(basic) = credential.and_then(Credential::basic_header) else {
                            return Err(Error::Unauthorized(format!(
                                "{host}: basic auth asked and no username/password configured"
                            )));
                        };
                        lock(&self.inner.auth).set_basic(&host);
                        authorization = Some(basic);
                    }
                    Some(Challenge::Bearer {
                        realm,
                        service,
                        scope: asked,
                    }) => {
                        let token_scope = asked.unwrap_or_else(|| scope.clone());
                        tracing::debug!(host = %host, realm = %realm, scope = %token_scope, "fetching a bearer token");
                        let (token, lifetime) = self
                            .fetch_token(&host, credential, &realm, service.as_deref(), &token_scope)
                            .await?;
                        authorization = Some(format!("Bearer {token}"));
                        lock(&self.inner.auth).set_token(&host, &scope, token, lifetime);
                    }
                    None => {
                        return Err(Error::Unauthorized(format!(
                            "{host}: 401 without a usable WWW-Authenticate challenge"
                        )));
                    }
                }
                continue;
            }
            if status == StatusCode::UNAUTHORIZED {
                lock(&self.inner.auth).forget_token(&host, &scope);
            }
            let what = format!("{} {}", request.method, redact_url(&url));
            return Err(status_error(&host, &what, status, response).await);
        }
    }

    /// An absolute URL the registry handed out (an upload location): http(s) only, and plain
    /// HTTP only where the client allows it.
    fn checked_location(&self, reference: &Reference, url: &Url) -> Result<Url, Error> {
        let host = authority(url).unwrap_or_default();
        match url.scheme() {
            "https" => Ok(url.clone()),
            "http" if self.plain_http_allowed(&host) => Ok(url.clone()),
            scheme => Err(Error::Invalid(format!(
                "{reference}: the registry sent a {scheme}:// location for {host}"
            ))),
        }
    }

    /// Exchanges the credentials (or none: an anonymous token) for a bearer token at `realm`.
    async fn fetch_token(
        &self,
        host: &str,
        credential: Option<&Credential>,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(String, Duration), Error> {
        let realm_url =
            Url::parse(realm).map_err(|e| Error::Unauthorized(format!("{host}: token realm {realm:?}: {e}")))?;
        let realm_host = match (realm_url.host_str(), realm_url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => {
                return Err(Error::Unauthorized(format!(
                    "{host}: token realm {realm:?} has no host"
                )));
            }
        };
        // Credentials go to the realm: in plain text only to a loopback or configured insecure
        // realm host (whatever the registry's own host is).
        match realm_url.scheme() {
            "https" => {}
            "http" if self.plain_http_allowed(&realm_host) => {}
            _ => {
                return Err(Error::Unauthorized(format!(
                    "{host}: token realm {realm:?} is not https"
                )));
            }
        }
        let mut params: Vec<(&str, &str)> = Vec::new();
        if let Some(service) = service {
            params.push(("service", service));
        }
        params.push(("scope", scope));
        let permit = self.permit(&realm_host).await?;
        let builder = match credential {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form = params.clone();
                form.extend([
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                    ("client_id", "portcullis"),
                ]);
                self.inner.http.post(realm_url).form(&form)
            }
            Some(basic @ Credential::Basic { .. }) => {
                let mut builder = self.inner.http.get(realm_url).query(&params);
                if let Some(value) = basic.basic_header() {
                    builder = builder.header(header::AUTHORIZATION, sensitive(&value)?);
                }
                builder
            }
            None => self.inner.http.get(realm_url).query(&params),
        };
        let response = builder.send().await.map_err(|e| transport_error(&realm_host, &e))?;
        let status = response.status();
        if !status.is_success() {
            let error = status_error(&realm_host, "token request", status, response).await;
            return Err(match error {
                // The token service refusing the credentials is the registry refusing them.
                Error::NotFound(m) | Error::Invalid(m) => Error::Unauthorized(m),
                other => other,
            });
        }
        let answer = Answer {
            response,
            _permit: permit,
        };
        let body = read_body(answer, MAX_SMALL_BODY, "token answer").await?;
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| Error::Unauthorized(format!("{realm_host}: token answer: {e}")))?;
        let token = parsed
            .token
            .filter(|t| !t.is_empty())
            .or(parsed.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| Error::Unauthorized(format!("{realm_host}: token answer without token")))?;
        let lifetime = parsed
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, |s| Duration::from_secs(s.min(86_400)));
        Ok((token, lifetime))
    }

    /// GETs a manifest by tag or digest and checks its digest: against the reference's digest,
    /// else against `Docker-Content-Digest` when sent.
    pub(crate) async fn get_manifest(&self, reference: &Reference) -> Result<Manifest, Error> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        let answer = self
            .send(Request {
                method: Method::GET,
                reference,
                target: Target::Path(format!("manifests/{}", reference.manifest_reference())),
                headers,
                body: None,
                actions: "pull",
            })
            .await?;
        let content_type = answer
            .response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let sent_digest = header_digest(answer.response.headers())?;
        let bytes = read_body(answer, self.inner.config.max_manifest_bytes, "manifest").await?;
        let digest = Digest::of(&bytes);
        if let Some(expected) = reference.digest() {
            expected.verify(&bytes)?;
        }
        if let Some(sent) = sent_digest
            && sent != digest
        {
            return Err(Error::Invalid(format!(
                "{reference}: Docker-Content-Digest {sent} but the manifest's sha256 is {digest}"
            )));
        }
        let media_type = content_type
            .filter(|t| is_manifest_type(t))
            .or_else(|| Manifest::declared_media_type(&bytes))
            .ok_or_else(|| Error::Invalid(format!("{reference}: manifest without a known media type")))?;
        Ok(Manifest {
            digest,
            media_type,
            bytes,
        })
    }
}

fn sensitive(value: &str) -> Result<HeaderValue, Error> {
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| Error::Unauthorized("credential or token is not a valid header value".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The digest in `Docker-Content-Digest`, if sent; `Invalid` when it is malformed.
pub(crate) fn header_digest(headers: &HeaderMap) -> Result<Option<Digest>, Error> {
    match headers.get("docker-content-digest") {
        None => Ok(None),
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| Error::Invalid("Docker-Content-Digest is not text".into()))?;
            Digest::parse(text.trim()).map(Some)
        }
    }
}

/// Reads a whole body, refusing more than `limit` bytes (before reading when announced).
pub(crate) async fn read_body(answer: Answer, limit: usize, what: &str) -> Result<Bytes, Error> {
    let mut response = answer.response;
    let too_large = || Error::Invalid(format!("{what} larger than the {limit}-byte limit"));
    let announced = response.content_length();
    if announced.is_some_and(|len| len > u64::try_from(limit).unwrap_or(u64::MAX)) {
        return Err(too_large());
    }
    let capacity = announced
        .and_then(|len| usize::try_from(len).ok())
        .unwrap_or(0)
        .min(limit);
    let mut buffer = BytesMut::with_capacity(capacity);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Error::Unavailable(format!("reading {what}: {}", without_url(&e))))?
    {
        if buffer.len().saturating_add(chunk.len()) > limit {
            return Err(too_large());
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

/// Maps a non-2xx answer to an error kind, quoting the registry's error code.
async fn status_error(host: &str, what: &str, status: StatusCode, mut response: reqwest::Response) -> Error {
    // At most MAX_SMALL_BODY of the error body is read: a hostile registry's endless body
    // costs nothing more.
    let mut body = Vec::new();
    while body.len() < MAX_SMALL_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    let detail = registry_error_text(&body);
    let message = format!("{host}: {what}: {status}{detail}");
    match status {
        StatusCode::NOT_FOUND => Error::NotFound(message),
        StatusCode::UNAUTHORIZED => Error::Unauthorized(message),
        StatusCode::FORBIDDEN => Error::Denied(message),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => Error::Unavailable(message),
        s if s.is_server_error() => Error::Unavailable(message),
        _ => Error::Invalid(message),
    }
}

/// `: CODE message` from a distribution error body (`{"errors":[{"code","message"}]}`).
fn registry_error_text(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(parsed) => parsed
            .errors
            .first()
            .map(|e| format!(": {} {}", crate::clip(&e.code), crate::clip(&e.message)))
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// A transport failure: refused, reset, TLS, connect timeout: the registry is unavailable.
fn transport_error(host: &str, error: &reqwest::Error) -> Error {
    let kind = if error.is_connect() {
        "cannot connect"
    } else if error.is_timeout() {
        "timed out"
    } else if error.is_redirect() {
        "redirect refused"
    } else {
        "transport"
    };
    Error::Unavailable(format!("{host}: {kind}: {}", without_url(error)))
}

/// The error's text with its source chain and without its URL (upload URLs hold state).
fn without_url(error: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = String::new();
    let mut source = error.source();
    while let Some(cause) = source {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if text.is_empty() {
        text = error.without_url_ref_text();
    }
    crate::clip(&text).to_owned()
}

trait WithoutUrl {
    fn without_url_ref_text(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref_text(&self) -> String {
        let mut copy_text = self.to_string();
        if let Some(url) = self.url() {
            copy_text = copy_text.replace(url.as_str(), "");
        }
        copy_text
    }
}

/// `host[:port]` of a URL, with the port only when it is not the scheme's default (as hosts
/// are written in references); IPv6 hosts in brackets.
fn authority(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

/// The URL without its query (upload locations carry session state there).
fn redact_url(url: &Url) -> String {
    let mut copy = url.clone();
    copy.set_query(None);
    copy.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_and_configured_registries() -> Result<(), Error> {
        let client = Client::new(ClientConfig {
            insecure_registries: vec!["registry.lan:5000".into()],
            ..ClientConfig::default()
        })?;
        let url = |text: &str| -> Result<String, Error> {
            Ok(client.url(&Reference::parse(text)?, "manifests/x")?.to_string())
        };
        assert_eq!(url("ghcr.io/a/b")?, "https://ghcr.io/v2/a/b/manifests/x");
        assert_eq!(
            url("nginx")?,
            "https://registry-1.docker.io/v2/library/nginx/manifests/x"
        );
        assert_eq!(url("registry.lan:5000/a")?, "http://registry.lan:5000/v2/a/manifests/x");
        assert_eq!(url("registry.lan/a")?, "https://registry.lan/v2/a/manifests/x");
        assert_eq!(url("localhost:5000/a")?, "http://localhost:5000/v2/a/manifests/x");
        assert_eq!(url("127.0.0.1:5000/a")?, "http://127.0.0.1:5000/v2/a/manifests/x");
        assert_eq!(url("[::1]:5000/a")?, "http://[::1]:5000/v2/a/manifests/x");
        let strict = Client::new(ClientConfig {
            plain_http_loopback: false,
            ..ClientConfig::default()
        })?;
        let loopback = Reference::parse("127.0.0.1:5000/a")?;
        assert_eq!(
            strict.url(&loopback, "manifests/x")?.as_str(),
            "https://127.0.0.1:5000/v2/a/manifests/x"
        );
        Ok(())
    }

    #[test]
    fn docker_hub_credentials_under_any_of_its_names() -> Result<(), Error> {
        let client = Client::new(ClientConfig {
            credentials: HashMap::from([("index.docker.io".to_owned(), Credential::basic("u", "p"))]),
            ..ClientConfig::default()
        })?;
        assert!(client.credential(&Reference::parse("nginx")?).is_some());
        assert!(client.credential(&Reference::parse("ghcr.io/a/b")?).is_none());
        Ok(())
    }

    #[test]
    fn registry_error_bodies_are_quoted_briefly() {
        assert_eq!(
            registry_error_text(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#),
            ": MANIFEST_UNKNOWN unknown"
        );
        assert_eq!(registry_error_text(b"<html>"), "");
    }
}
