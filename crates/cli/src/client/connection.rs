//! The gRPC channel to the server that `--server` names (plain http/2, or TLS through
//! rustls; built by the kit's client builder), and the interceptor that sends the key as `authorization: Bearer <key>` and the
//! call's deadline as `grpc-timeout`.

use std::path::Path;
use std::time::Duration;

use portcullis_kit::client::{ClientConfig, ClientError as KitError, Credential, Trust};
use tonic::service::Interceptor;
use tonic::transport::{Channel, Uri};
use tonic::{Request, Status};

use super::error::ClientError;

/// A parsed `--server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// `http://host:port` or `https://host:port`, what the channel dials.
    pub uri: String,
    /// Whether to speak TLS.
    pub tls: bool,
    /// The host, without IPv6 brackets: the name the server's certificate must carry.
    pub host: String,
}

/// Parses `http://HOST:PORT`, `https://HOST:PORT` (port optional with a scheme: 80 or 443)
/// or a bare `HOST:PORT` (http).
pub fn parse_server(text: &str) -> Result<ServerUrl, String> {
    let text = text.trim();
    let expected = "expected http://HOST:PORT, https://HOST:PORT or HOST:PORT";
    let (tls, rest, bare) = match text.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest, false),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest, false),
        Some((scheme, _)) => return Err(format!("--server {text:?}: unsupported scheme {scheme:?}; {expected}")),
        None => (false, text, true),
    };
    // A trailing slash is harmless; any other path would be silently ignored by gRPC.
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) || authority.contains(char::is_whitespace) {
        return Err(format!("--server {text:?}: {expected}"));
    }
    let scheme = if tls { "https" } else { "http" };
    let uri_text = format!("{scheme}://{authority}");
    let uri: Uri = uri_text.parse().map_err(|e| format!("--server {text:?}: {e}"))?;
    let host = uri.host().unwrap_or_default();
    if host.is_empty() || host == "[]" {
        return Err(format!("--server {text:?}: no host; {expected}"));
    }
    // `Uri` keeps an out-of-range port but reports none; check the text itself.
    let after_host = authority.rsplit_once(']').map_or(authority, |(_, rest)| rest);
    if let Some((_, port)) = after_host.rsplit_once(':')
        && port.parse::<u16>().is_err()
    {
        return Err(format!("--server {text:?}: bad port {port:?}"));
    }
    if bare && uri.port_u16().is_none() {
        return Err(format!("--server {text:?}: no port; {expected}"));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    Ok(ServerUrl {
        uri: uri_text,
        tls,
        host,
    })
}

/// Opens the channel (the kit's client builder): connects now (so an unreachable server is
/// one clear error), with the deadline on connecting and on every call. Plain text off this
/// host is refused unless `insecure`: every call carries a key.
pub async fn connect(
    server: &ServerUrl,
    ca_cert: Option<&Path>,
    insecure: bool,
    timeout: Duration,
) -> Result<Channel, ClientError> {
    let mut config = ClientConfig::new(&server.uri)
        .map_err(|e| ClientError::input(format!("--server {}: {e}", server.uri)))?
        .connect_timeout(timeout)
        .request_timeout(timeout);
    if !insecure {
        config
            .refuse_plain_text_off_host()
            .map_err(|e| ClientError::input(format!("--server: {e}; or pass --insecure")))?;
    }
    match (server.tls, ca_cert) {
        (true, ca) => config = config.trust(tls_config(server, ca)?),
        (false, Some(_)) => {
            return Err(ClientError::input(format!(
                "--ca-cert is for an https:// server, and --server is {}",
                server.uri
            )));
        }
        (false, None) => {}
    }
    match config.connect().await {
        Ok(channel) => Ok(channel),
        Err(KitError::Connect { reason, .. }) => Err(ClientError::Connect {
            server: server.uri.clone(),
            reason: with_hint(reason, ca_cert.is_some()),
        }),
        Err(KitError::Timeout { .. }) => Err(ClientError::Connect {
            server: server.uri.clone(),
            reason: format!("no connection within {}", super::duration::format_duration(timeout)),
        }),
        Err(e) => Err(ClientError::input(e.to_string())),
    }
}

/// A connection failure's reason with what to do about it, where that is clear.
fn with_hint(reason: String, has_ca_cert: bool) -> String {
    let hint = if reason.contains("CaUsedAsEndEntity") {
        " (the server presents a CA certificate; it needs a certificate issued by that CA)"
    } else if reason.contains("invalid peer certificate") && !reason.contains("not valid for name") && !has_ca_cert {
        " (for a self-signed or private CA certificate, pass the CA with --ca-cert)"
    } else if reason.contains("Connection refused") {
        " (is the server running? see --server)"
    } else {
        ""
    };
    format!("{reason}{hint}")
}

/// What an https channel trusts: the `--ca-cert` file, or the system's roots.
fn tls_config(_server: &ServerUrl, ca_cert: Option<&Path>) -> Result<Trust, ClientError> {
    match ca_cert {
        Some(path) => Trust::ca_file(path).map_err(|e| ClientError::input(format!("--ca-cert {e}"))),
        None => Ok(Trust::SystemRoots),
    }
}

/// Puts the key on every call as `authorization: Bearer <key>`, and the deadline as
/// `grpc-timeout` so the server stops work the client no longer waits for (the kit's
/// credential).
#[derive(Debug, Clone)]
pub struct BearerAuth(Credential);

impl BearerAuth {
    /// The interceptor for `key` (surrounding whitespace ignored). `flag` names where the key
    /// came from, for the error.
    pub fn new(key: &str, flag: &str, timeout: Duration) -> Result<BearerAuth, ClientError> {
        let credential = Credential::bearer(key).map_err(|e| ClientError::input(format!("{flag} {e}")))?;
        Ok(BearerAuth(credential.with_timeout(timeout)))
    }

    /// The interceptor for `key` without a deadline header: for a stream that lives as long as
    /// the command (`commands watch`), whose steps the command bounds itself.
    pub fn without_deadline(key: &str, flag: &str) -> Result<BearerAuth, ClientError> {
        let credential = Credential::bearer(key).map_err(|e| ClientError::input(format!("{flag} {e}")))?;
        Ok(BearerAuth(credential))
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.0.call(request)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn ok(text: &str) -> ServerUrl {
        parse_server(text).unwrap_or_else(|e| panic!("{text:?} refused: {e}"))
    }

    #[test]
    fn http_and_https_urls_keep_their_scheme() {
        assert_eq!(
            ok("http://127.0.0.1:50051"),
            ServerUrl {
                uri: "http://127.0.0.1:50051".into(),
                tls: false,
                host: "127.0.0.1".into()
            }
        );
        assert_eq!(
            ok("https://pc.example.com:8443/"),
            ServerUrl {
                uri: "https://pc.example.com:8443".into(),
                tls: true,
                host: "pc.example.com".into()
            }
        );
        assert!(ok("HTTPS://pc.example.com").tls);
    }

    #[test]
    fn a_bare_host_and_port_means_http() {
        let url = ok("localhost:50051");
        assert_eq!(url.uri, "http://localhost:50051");
        assert!(!url.tls);
    }

    #[test]
    fn ipv6_hosts_lose_their_brackets_for_tls_names() {
        let url = ok("https://[::1]:8443");
        assert_eq!(url.uri, "https://[::1]:8443");
        assert_eq!(url.host, "::1");
    }

    #[test]
    fn bad_server_urls_are_refused_with_the_expected_forms() {
        for bad in [
            "",
            "ftp://host:1",
            "unix:///tmp/sock",
            "http://",
            "http://host:1/path",
            "http://user@host:1",
            "localhost",
            "host:notaport",
            "http://host:99999",
            "http://ho st:1",
        ] {
            let err = parse_server(bad).err();
            assert!(err.is_some(), "{bad:?} was accepted");
            assert!(err.unwrap().starts_with("--server"), "{bad:?}");
        }
    }

    #[test]
    fn the_interceptor_sends_a_bearer_key_and_the_deadline() {
        let mut auth = BearerAuth::new(" pc_secret \n", "--api-key", Duration::from_secs(7)).unwrap();
        let request = auth.call(Request::new(())).unwrap();
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        assert_eq!(header, Some("Bearer pc_secret"));
        let timeout = request.metadata().get("grpc-timeout").and_then(|v| v.to_str().ok());
        assert_eq!(timeout, Some("7000000u"));
        assert!(!format!("{auth:?}").contains("pc_secret"));
    }

    #[test]
    fn keys_that_cannot_be_headers_are_refused() {
        assert!(BearerAuth::new("  ", "--api-key", Duration::from_secs(1)).is_err());
        assert!(BearerAuth::new("a b", "--api-key", Duration::from_secs(1)).is_err());
        assert!(BearerAuth::new("clé", "--api-key", Duration::from_secs(1)).is_err());
    }

    #[test]
    fn connection_failures_say_what_to_do() {
        let untrusted = "transport error: invalid peer certificate: UnknownIssuer";
        assert!(with_hint(untrusted.into(), false).ends_with("pass the CA with --ca-cert)"));
        assert_eq!(with_hint(untrusted.into(), true), untrusted);
        let name = "invalid peer certificate: certificate not valid for name \"127.0.0.1\"";
        assert_eq!(with_hint(name.into(), false), name);
        let refused = "tcp connect error: Connection refused (os error 111)";
        assert!(with_hint(refused.into(), false).ends_with("see --server)"));
    }

    #[test]
    fn a_ca_cert_without_https_is_refused_before_dialing() {
        let server = ok("http://127.0.0.1:1");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let result = rt.block_on(connect(
            &server,
            Some(Path::new("ca.pem")),
            false,
            Duration::from_secs(1),
        ));
        let Err(ClientError::Input(message)) = result else {
            panic!("expected an input error")
        };
        assert!(message.contains("--ca-cert"), "{message}");
    }

    #[test]
    fn a_ca_cert_file_must_hold_a_pem_certificate() {
        let dir = std::env::temp_dir().join(format!("pc-cli-ca-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("not-a-cert.pem");
        let _ = std::fs::write(&file, "hello");
        let server = ok("https://localhost:1");
        let Err(ClientError::Input(message)) = tls_config(&server, Some(&file)) else {
            panic!("expected an input error")
        };
        assert!(message.contains("no PEM certificate"), "{message}");
        let Err(ClientError::Input(message)) = tls_config(&server, Some(&dir.join("missing.pem"))) else {
            panic!("expected an input error")
        };
        assert!(message.contains("missing.pem"), "{message}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
