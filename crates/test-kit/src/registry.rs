//! A private OCI registry (Debian's `docker-registry`, distribution 2.8) on a free loopback port,
//! anonymous, with htpasswd basic auth, or with bearer-token auth (an in-process token service).
//!
//! The binary is, in order: `$PORTCULLIS_DOCKER_REGISTRY`; `docker-registry` on `PATH`
//! (`/usr/bin/docker-registry` from the Debian package of that name).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::FixtureError;

/// How to get the registry, quoted by every "not found" error.
pub const INSTALL_HINT: &str = "install it with `apt-get install -y docker-registry` (./test.sh does so when root), \
     or set PORTCULLIS_DOCKER_REGISTRY to a registry 2.x binary";

/// How to start a [`Registry`]: anonymous and plain HTTP by default.
#[derive(Clone, Default)]
pub struct RegistryOptions {
    /// The one user of htpasswd basic auth (username, password); anyone may pull and push
    /// without it.
    pub basic_auth: Option<(String, String)>,
    /// Serve HTTPS with this certificate chain and key (PEM) instead of plain HTTP.
    pub tls: Option<(String, String)>,
    /// Bearer-token auth (docker-registry's `auth: token`): clients are sent to an in-process
    /// token service that grants JWTs to this one user (username, password) only; nobody
    /// may pull or push without a token.
    pub token_auth: Option<(String, String)>,
}

impl std::fmt::Debug for RegistryOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryOptions")
            .field("basic_auth", &self.basic_auth.as_ref().map(|(name, _)| name))
            .field("tls", &self.tls.is_some())
            .field("token_auth", &self.token_auth.as_ref().map(|(name, _)| name))
            .finish()
    }
}

/// A running docker-registry owned by a test: killed and its storage removed on drop.
pub struct Registry {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    options: RegistryOptions,
    token: Option<crate::token::TokenService>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("binary", &self.binary)
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .field("running", &self.child.is_some())
            .field("options", &self.options)
            .finish()
    }
}

/// Finds the docker-registry binary (see the module documentation).
pub fn find_binary() -> Result<PathBuf, FixtureError> {
    let (binary, origin) = match std::env::var_os("PORTCULLIS_DOCKER_REGISTRY") {
        Some(path) => (PathBuf::from(path), "PORTCULLIS_DOCKER_REGISTRY: "),
        None => (PathBuf::from("docker-registry"), ""),
    };
    let output = Command::new(&binary)
        .arg("--version")
        .output()
        .map_err(|e| FixtureError::NotFound(format!("{origin}{}: {e}; {INSTALL_HINT}", binary.display())))?;
    if !output.status.success() {
        return Err(FixtureError::NotFound(format!(
            "{origin}{} --version failed; {INSTALL_HINT}",
            binary.display()
        )));
    }
    Ok(binary)
}

impl Registry {
    /// Starts an anonymous registry (anyone may pull and push) on a free loopback port with a
    /// new storage folder, and waits until it answers.
    pub async fn start() -> Result<Self, FixtureError> {
        Self::start_with(RegistryOptions::default()).await
    }

    /// [`Registry::start`] with htpasswd basic auth: only `username`/`password` may pull or push.
    pub async fn start_with_basic_auth(username: &str, password: &str) -> Result<Self, FixtureError> {
        Self::start_with(RegistryOptions {
            basic_auth: Some((username.to_owned(), password.to_owned())),
            ..RegistryOptions::default()
        })
        .await
    }

    /// Starts a registry with `options` (basic auth, TLS) and waits until it answers.
    pub async fn start_with(options: RegistryOptions) -> Result<Self, FixtureError> {
        let binary = find_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("portcullis-registry-")
            .tempdir()
            .map_err(|e| FixtureError::Start(format!("temp dir: {e}")))?;
        let token = match &options.token_auth {
            Some((username, password)) => Some(crate::token::TokenService::start(username, password).await?),
            None => None,
        };
        let mut registry = Self {
            binary,
            port: crate::free_port()?,
            dir,
            child: None,
            options,
            token,
        };
        registry.write_config()?;
        registry.launch().await?;
        Ok(registry)
    }

    /// `127.0.0.1:<port>`: the registry part of an image reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port>`, or `https://` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The storage folder (kept across restarts).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The token service's realm (`http://127.0.0.1:<port>/token`) with token auth.
    pub fn token_realm(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.realm.as_str())
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the registry (as a crash would); the storage stays for [`Registry::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the registry if running and starts it again on the same port and storage.
    pub async fn restart(&mut self) -> Result<(), FixtureError> {
        self.stop();
        self.launch().await
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    fn write_config(&self) -> Result<(), FixtureError> {
        let write = |path: &Path, text: &str| {
            std::fs::write(path, text).map_err(|e| FixtureError::Start(format!("writing {}: {e}", path.display())))
        };
        let storage = self.storage_dir();
        // The registry's own HTTP secret, fixed so that a restart keeps upload sessions valid.
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {:?}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{}\n  secret: portcullis-test-secret\n",
            storage.display().to_string(),
            self.port
        );
        if let Some((certificate, key)) = &self.options.tls {
            let (cert_path, key_path) = (self.dir.path().join("tls.crt"), self.dir.path().join("tls.key"));
            write(&cert_path, certificate)?;
            write(&key_path, key)?;
            config.push_str(&format!(
                "  tls:\n    certificate: {:?}\n    key: {:?}\n",
                cert_path.display().to_string(),
                key_path.display().to_string()
            ));
        }
        if let Some((username, password)) = &self.options.basic_auth {
            // The registry reads bcrypt hashes only; cost 4 (the minimum) keeps tests fast.
            let hash = bcrypt::hash_with_result(password, 4)
                .map_err(|e| FixtureError::Start(format!("bcrypt: {e}")))?
                .format_for_version(bcrypt::Version::TwoY);
            let htpasswd = self.dir.path().join("htpasswd");
            write(&htpasswd, &format!("{username}:{hash}\n"))?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: portcullis-test\n    path: {:?}\n",
                htpasswd.display().to_string()
            ));
        }
        if let Some(token) = &self.token {
            let bundle = self.dir.path().join("token.crt");
            write(&bundle, &token.certificate_pem)?;
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {:?}\n    service: {:?}\n    issuer: {:?}\n    rootcertbundle: {:?}\n",
                token.realm,
                crate::token::SERVICE,
                crate::token::ISSUER,
                bundle.display().to_string()
            ));
        }
        write(&self.config_path(), &config)
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.log_path()) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines
            .iter()
            .skip(lines.len().saturating_sub(20))
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn launch(&mut self) -> Result<(), FixtureError> {
        let log = std::fs::File::create(self.log_path())
            .map_err(|e| FixtureError::Start(format!("creating {}: {e}", self.log_path().display())))?;
        let log_err = log
            .try_clone()
            .map_err(|e| FixtureError::Start(format!("log file: {e}")))?;
        let child = Command::new(&self.binary)
            .arg("serve")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| FixtureError::Start(format!("cannot run {}: {e}", self.binary.display())))?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(FixtureError::Start(format!(
                    "docker-registry exited with {status}:\n{}",
                    self.log_tail()
                )));
            }
            if self.answers().await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                self.stop();
                return Err(FixtureError::Start(format!(
                    "docker-registry not answering on port {} after 20 s:\n{}",
                    self.port,
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// True once `GET /v2/` gets an HTTP answer: 200, 401 with basic auth, or with TLS the 400
    /// Go's server sends to plain HTTP (enough to know it listens; no TLS client needed here).
    async fn answers(&self) -> bool {
        let attempt = async {
            let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
            socket
                .write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                .await
                .ok()?;
            let mut buffer = [0_u8; 12];
            socket.read_exact(&mut buffer).await.ok()?;
            Some(
                buffer.starts_with(b"HTTP/1.")
                    && (buffer.ends_with(b"200") || buffer.ends_with(b"401") || buffer.ends_with(b"400")),
            )
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), attempt).await,
            Ok(Some(true))
        )
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
