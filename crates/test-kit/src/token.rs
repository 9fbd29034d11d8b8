//! The token service of a [`crate::Registry`] started with token auth: docker-registry's
//! `auth: token` sends clients to this realm, which grants what they ask to its one user
//! (HTTP basic auth) as an ES256 JWT the registry verifies with the certificate in its
//! `rootcertbundle` (found by the `kid` header, libtrust's key id of that certificate's key).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::PublicKeyData as _;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::FixtureError;

/// The `service` the registry and its tokens name.
pub const SERVICE: &str = "portcullis-test-registry";
/// The `iss` of the tokens.
pub const ISSUER: &str = "portcullis-test-token-issuer";

/// A running token service: its realm URL and the certificate the registry trusts.
pub(crate) struct TokenService {
    /// `http://127.0.0.1:<port>/token`.
    pub realm: String,
    /// The signing key's self-signed certificate (PEM): the registry's `rootcertbundle`.
    pub certificate_pem: String,
    /// Ends the service when dropped.
    _task: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Signer {
    pair: EcdsaKeyPair,
    kid: String,
    username: String,
    password: String,
}

fn start_error(what: &str, e: impl std::fmt::Display) -> FixtureError {
    FixtureError::Start(format!("token service: {what}: {e}"))
}

impl TokenService {
    /// Starts the service on the current tokio runtime for `username`/`password`.
    pub(crate) async fn start(username: &str, password: &str) -> Result<TokenService, FixtureError> {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).map_err(|e| start_error("key", e))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|e| start_error("key", e))?;
        let key = rcgen::KeyPair::try_from(pkcs8.as_ref()).map_err(|e| start_error("key", e))?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| start_error("cert", e))?;
        params.distinguished_name.push(rcgen::DnType::CommonName, ISSUER);
        let certificate = params.self_signed(&key).map_err(|e| start_error("cert", e))?;
        let kid = libtrust_key_id(&key.subject_public_key_info());
        let signer = std::sync::Arc::new(Signer {
            pair,
            kid,
            username: username.to_owned(),
            password: password.to_owned(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| start_error("bind", e))?;
        let port = listener.local_addr().map_err(|e| start_error("bind", e))?.port();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let signer = signer.clone();
                tokio::spawn(async move {
                    let _ = serve(socket, &signer).await;
                });
            }
        });
        Ok(TokenService {
            realm: format!("http://127.0.0.1:{port}/token"),
            certificate_pem: certificate.pem(),
            _task: AbortOnDrop(task),
        })
    }
}

/// libtrust's key id: the first 240 bits of the SHA-256 of the SubjectPublicKeyInfo, base32,
/// in colon-separated groups of four.
fn libtrust_key_id(spki_der: &[u8]) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, spki_der);
    let encoded = base32(hash.as_ref().get(..30).unwrap_or_default());
    let groups: Vec<&str> = (0..encoded.len())
        .step_by(4)
        .filter_map(|i| encoded.get(i..(i + 4).min(encoded.len())))
        .collect();
    groups.join(":")
}

fn symbol(value: u32) -> char {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    char::from(ALPHABET.get(value as usize).copied().unwrap_or(b'A'))
}

/// RFC 4648 base32 without padding.
fn base32(bytes: &[u8]) -> String {
    let (mut out, mut buffer, mut bits) = (String::new(), 0u32, 0u32);
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(symbol((buffer >> bits) & 31));
        }
    }
    if bits > 0 {
        out.push(symbol((buffer << (5 - bits)) & 31));
    }
    out
}

/// One request per connection: `GET /token?service=..&scope=..` with basic auth.
async fn serve(mut socket: tokio::net::TcpStream, signer: &Signer) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buffer).await?;
        if n == 0 || request.len() > 64 * 1024 {
            return Ok(());
        }
        request.extend_from_slice(buffer.get(..n).unwrap_or_default());
    }
    let text = String::from_utf8_lossy(&request);
    let target = text
        .lines()
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or_default();
    let authorization = text
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("authorization")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", signer.username, signer.password))
    );
    let (status, body) = if authorization != expected {
        (
            "401 Unauthorized",
            r#"{"details":"wrong username or password"}"#.to_owned(),
        )
    } else {
        match token(signer, target) {
            Some(token) => (
                "200 OK",
                serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string(),
            ),
            None => (
                "500 Internal Server Error",
                r#"{"details":"signing failed"}"#.to_owned(),
            ),
        }
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(answer.as_bytes()).await?;
    socket.shutdown().await
}

/// A JWT granting every scope the query asks (`repository:<name>:<actions>`).
fn token(signer: &Signer, target: &str) -> Option<String> {
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let access: Vec<serde_json::Value> = query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("scope="))
        .map(percent_decode)
        .filter_map(|scope| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "kid": signer.kid});
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": signer.username,
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now.saturating_sub(10),
        "iat": now,
        "jti": uuid::Uuid::new_v4().to_string(),
        "access": access,
    });
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = signer.pair.sign(&SystemRandom::new(), signed.as_bytes()).ok()?;
    Some(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref())))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn base32_and_key_id_shape() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        let id = libtrust_key_id(b"anything");
        assert_eq!(id.len(), 12 * 4 + 11, "{id}");
        assert_eq!(id.split(':').count(), 12);
    }

    #[test]
    fn scopes_are_percent_decoded() {
        assert_eq!(
            percent_decode("repository%3Aapp%3Apull%2Cpush"),
            "repository:app:pull,push"
        );
    }
}
