//! `portcullis up` on free loopback ports with a temporary data folder, for the tests that
//! run client commands (or the simulator) against every service.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{BIN, TempDir};

/// How long `up` may take to print its ready line (a cold SQLite file, migrations).
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The environment variables the client reads; removed so the caller's shell cannot leak in.
pub const CLIENT_ENV: [&str; 4] = [
    "PORTCULLIS_SERVER",
    "PORTCULLIS_API_KEY",
    "PORTCULLIS_OPERATOR_KEY",
    "PORTCULLIS_CA_CERT",
];

/// A running `portcullis up`, stopped and cleaned up when dropped.
pub struct Up {
    /// The process.
    pub child: Child,
    /// The URL from the ready line.
    pub url: String,
    /// The admission service's URL.
    pub admission_url: String,
    /// The bootstrap admin key of tenant `default`.
    pub admin_key: String,
    /// The operator key the server was started with.
    pub operator_key: String,
    /// Its data folder and log (`up.log`).
    pub dir: TempDir,
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

impl Up {
    /// Starts `up` in a fresh temporary folder.
    pub fn start() -> Up {
        Up::start_with(&[], TempDir::new("client-up"))
    }

    /// Starts `up` with extra arguments, in `dir`.
    pub fn start_with(extra: &[&str], dir: TempDir) -> Up {
        let data = dir.path("data");
        std::fs::create_dir_all(&data).unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let operator_key = format!("pc-operator-test-{:x}-{nanos:x}", std::process::id());
        let port = free_port();
        let admission_port = free_port();
        let log = std::fs::File::create(dir.path("up.log")).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["up", "--data-dir"])
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admission-listen", &format!("127.0.0.1:{admission_port}")])
            .args(extra)
            .env("PORTCULLIS_OPERATOR_KEY", &operator_key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Logs go to a file: an undrained pipe could stall the server.
            .stderr(Stdio::from(log));
        for var in CLIENT_ENV.iter().filter(|v| **v != "PORTCULLIS_OPERATOR_KEY") {
            cmd.env_remove(var);
        }
        let mut child = cmd.spawn().expect("spawn portcullis up");
        let stdout = child.stdout.take().expect("stdout");
        let (lines_tx, lines_rx) = mpsc::channel();
        // Reads stdout to its end, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    // Nobody listens any more; keep draining.
                }
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(url) = line
                        .split_whitespace()
                        .find(|w| w.starts_with("http://") || w.starts_with("https://"))
                    {
                        break url.trim_end_matches(['.', ',', ')']).to_owned();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(dir.path("up.log")).unwrap_or_default();
                    panic!("`portcullis up` printed no ready line with its URL within {READY_TIMEOUT:?}; log:\n{log}");
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.path("up.log")).unwrap_or_default();
                panic!("`portcullis up` exited with {status} before it was ready; log:\n{log}");
            }
        };
        let key_file = data.join("bootstrap-admin.key");
        let admin_key = std::fs::read_to_string(&key_file)
            .unwrap_or_else(|e| panic!("{}: {e}", key_file.display()))
            .trim()
            .to_owned();
        assert!(!admin_key.is_empty(), "empty bootstrap key");
        // The admission URL has the same scheme as the store's.
        let scheme = if url.starts_with("https://") { "https" } else { "http" };
        let admission_url = format!("{scheme}://127.0.0.1:{admission_port}");
        Up {
            child,
            url,
            admission_url,
            admin_key,
            operator_key,
            dir,
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
