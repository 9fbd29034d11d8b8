//! Credentials, `WWW-Authenticate` challenges and the token cache.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// What the client presents to one registry. `Debug` shows the username only.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Username and password: sent as basic auth, or exchanged for a bearer token.
    Basic {
        /// The username.
        username: String,
        /// The password (or a personal access token used as one).
        password: String,
    },
    /// An identity (refresh) token, as `docker login` stores for some registries: exchanged
    /// for a bearer token with the OAuth2 refresh-token grant.
    IdentityToken(String),
}

impl Credential {
    /// Basic credentials.
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self::Basic {
            username: username.into(),
            password: password.into(),
        }
    }

    pub(crate) fn basic_header(&self) -> Option<String> {
        match self {
            Self::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            Self::IdentityToken(_) => None,
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Self::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `Basic realm=...`.
    Basic,
    /// `Bearer realm=...,service=...,scope=...`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses the first challenge of a `WWW-Authenticate` value; `None` for other schemes or
/// a Bearer challenge without realm.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(char::is_whitespace).unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    let get = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    };
    Some(Challenge::Bearer {
        realm: get("realm")?,
        service: get("service"),
        scope: get("scope"),
    })
}

/// `key=value` or `key="quoted, value"` pairs separated by commas.
fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return params;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => {
                        if let Some(escaped) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    _ => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.push((key.trim().to_owned(), value.trim().to_owned()));
        // A challenge header is a few hundred bytes; a hostile one is cut here.
        if params.len() >= 32 {
            return params;
        }
    }
}

/// How a host asked to be authenticated, and the bearer tokens it handed out.
#[derive(Default)]
pub(crate) struct AuthCache {
    /// Hosts that answered with a Basic challenge: credentials are sent up front.
    basic_hosts: HashMap<String, ()>,
    /// (host, scope) → token and expiry.
    tokens: HashMap<(String, String), (String, Instant)>,
}

/// At most this many tokens are kept; beyond it the cache starts over (tokens are cheap to get).
const MAX_TOKENS: usize = 1024;
/// Tokens are dropped this long before they expire, so none expires in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// A token without `expires_in` is taken to last this long (the distribution spec's default).
pub(crate) const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

impl AuthCache {
    pub(crate) fn uses_basic(&self, host: &str) -> bool {
        self.basic_hosts.contains_key(host)
    }

    pub(crate) fn set_basic(&mut self, host: &str) {
        if self.basic_hosts.len() >= MAX_TOKENS {
            self.basic_hosts.clear();
        }
        self.basic_hosts.insert(host.to_owned(), ());
    }

    pub(crate) fn token(&self, host: &str, scope: &str) -> Option<&str> {
        self.tokens
            .get(&(host.to_owned(), scope.to_owned()))
            .filter(|(_, expiry)| Instant::now() < *expiry)
            .map(|(token, _)| token.as_str())
    }

    pub(crate) fn set_token(&mut self, host: &str, scope: &str, token: String, lifetime: Duration) {
        if self.tokens.len() >= MAX_TOKENS {
            let now = Instant::now();
            self.tokens.retain(|_, (_, expiry)| *expiry > now);
            if self.tokens.len() >= MAX_TOKENS {
                self.tokens.clear();
            }
        }
        let expiry = Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN);
        self.tokens.insert((host.to_owned(), scope.to_owned()), (token, expiry));
    }

    pub(crate) fn forget_token(&mut self, host: &str, scope: &str) {
        self.tokens.remove(&(host.to_owned(), scope.to_owned()));
    }
}

/// The token endpoint's answer (`token`, or OAuth2's `access_token`).
#[derive(serde::Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub(crate) token: Option<String>,
    #[serde(default)]
    pub(crate) access_token: Option<String>,
    #[serde(default)]
    pub(crate) expires_in: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(parse_challenge("Basic realm=\"x\""), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge("bearer realm=http://x/t"),
            Some(Challenge::Bearer {
                realm: "http://x/t".into(),
                service: None,
                scope: None
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge(""), None);
        assert_eq!(
            parse_challenge("Bearer realm=\"unterminated"),
            parse_challenge("Bearer realm=unterminated")
        );
    }

    #[test]
    fn debug_redacts() {
        let text = format!(
            "{:?} {:?}",
            Credential::basic("alice", "s3cret"),
            Credential::IdentityToken("tok3n".into())
        );
        assert!(text.contains("alice") && !text.contains("s3cret") && !text.contains("tok3n"));
    }

    proptest::proptest! {
        #[test]
        fn challenge_parsing_never_panics(text in "\\PC{0,200}") {
            let _ = parse_challenge(&text);
            let _ = parse_challenge(&format!("Bearer {text}"));
        }
    }
}
