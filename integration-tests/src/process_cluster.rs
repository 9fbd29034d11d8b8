//! Distributed mode as it is deployed: every service its own OS process of the real
//! `portcullis` binary, on a private PostgreSQL cluster (made with `initdb` on a free port)
//! and a private nats-server, with replicas that a test kills and restarts, and PostgreSQL
//! and NATS that it restarts (the `faults` suite).
//!
//! The binary is `$PORTCULLIS_BIN`, else `portcullis` beside the test's own target folder
//! (`target/<profile>/portcullis`): `cargo test --workspace` builds it; a run of this crate
//! alone needs `cargo build -p portcullis-cli --bin portcullis` first (the error says so).
//!
//! Everything is cleaned up when the [`ProcessCluster`] is dropped, also while a failed test
//! unwinds: the service processes are killed, PostgreSQL is stopped, nats-server is killed
//! and the temporary folder (data, logs) is removed. Every wait has a deadline.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use portcullis_policy_store::testing::authed;
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::tenant_service_client::TenantServiceClient;
use portcullis_test_kit::NatsServer;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long a process may take to print its ready line and answer its health check.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The operator key of the processes.
pub const OPERATOR_KEY: &str = "operator-key-of-the-process-cluster";

/// The service credential the processes share.
pub const SERVICE_TOKEN: &str = "service-token-of-the-process-cluster";

/// One of the five services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// `serve policy-store`.
    PolicyStore,
    /// `serve admission`.
    Admission,
    /// `serve signature`.
    Signature,
    /// `serve continuous`.
    Continuous,
    /// `serve telemetry`.
    Telemetry,
}

impl Service {
    /// Its name on the command line and in its ready line.
    pub fn name(self) -> &'static str {
        match self {
            Service::PolicyStore => "policy-store",
            Service::Admission => "admission",
            Service::Signature => "signature",
            Service::Continuous => "continuous",
            Service::Telemetry => "telemetry",
        }
    }

    /// The gRPC service its health check names.
    pub fn health_name(self) -> &'static str {
        match self {
            Service::PolicyStore => "portcullis.policystore.v1.PolicyService",
            Service::Admission => "portcullis.admission.v1.AdmissionService",
            Service::Signature => "portcullis.signature.v1.SignatureService",
            Service::Continuous => "portcullis.continuous.v1.ContinuousService",
            Service::Telemetry => "portcullis.telemetry.v1.TelemetryService",
        }
    }
}

/// A replica: a service and its index among that service's replicas.
pub type Replica = (Service, usize);

/// How many replicas of each service [`ProcessCluster::start`] runs.
#[derive(Debug, Clone)]
pub struct Replicas {
    /// Admission replicas.
    pub admission: usize,
    /// Signature replicas.
    pub signature: usize,
    /// Continuous replicas.
    pub continuous: usize,
    /// Telemetry replicas.
    pub telemetry: usize,
}

impl Default for Replicas {
    /// The suite's layout: one policy store, two admission, two signature, two continuous,
    /// one telemetry.
    fn default() -> Self {
        Replicas {
            admission: 2,
            signature: 2,
            continuous: 2,
            telemetry: 1,
        }
    }
}

/// The private PostgreSQL cluster: trust authentication, user `postgres`, loopback only.
#[derive(Debug)]
struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// initdb refuses root: when the test runs as root, PostgreSQL runs as `postgres`.
    as_postgres: bool,
    running: bool,
}

impl Postgres {
    fn init(dir: PathBuf) -> Postgres {
        let bin = pg_bin_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let as_postgres = is_root();
        if as_postgres {
            // Its folder must belong to the user it runs as.
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir));
        }
        let mut pg = Postgres {
            bin,
            dir,
            port: portcullis_test_kit::free_port().unwrap(),
            as_postgres,
            running: false,
        };
        let data = pg.dir.join("data");
        run(pg
            .command("initdb")
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "-D"])
            .arg(&data));
        pg.start();
        pg
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        };
        // A folder the user it runs as can enter.
        command.current_dir(&self.dir);
        command
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn start(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            self.port,
            self.dir.display()
        );
        // `-w`: returns once the server accepts connections (pg_ctl's own deadline, 60 s).
        run(self
            .command("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-o", &options, "start"]));
        self.running = true;
    }

    /// Stops it as a crash would (`immediate`: no checkpoint, connections cut).
    fn stop(&mut self) {
        if !self.running {
            return;
        }
        let _ = self
            .command("pg_ctl")
            .args(["-m", "immediate", "-w", "-t", "30", "-D"])
            .arg(self.dir.join("data"))
            .arg("stop")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.running = false;
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_root() -> bool {
    // No libc call: `id -u` says who we are.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb`, else the folder of `initdb`
/// on `PATH`.
fn pg_bin_dir() -> PathBuf {
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.flatten()
                .filter_map(|d| {
                    let version = d.file_name().to_str()?.parse().ok()?;
                    let bin = d.path().join("bin");
                    bin.join("initdb").is_file().then_some((version, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return bin;
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path).find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
        })
        .expect("the faults suite needs PostgreSQL's initdb and pg_ctl (/usr/lib/postgresql/*/bin or PATH)")
}

fn run(command: &mut Command) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} exited with {}: {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The `portcullis` binary (see the module documentation).
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PORTCULLIS_BIN") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/<test>-<hash> → target/<profile>/portcullis
    let exe = std::env::current_exe().expect("the test's own path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("portcullis"))
        .expect("the test runs from target/<profile>/deps");
    assert!(
        path.is_file(),
        "{} is missing: `cargo test --workspace` builds it; for this crate alone run \
         `cargo build -p portcullis-cli --bin portcullis` first (or set PORTCULLIS_BIN)",
        path.display()
    );
    path
}

/// One service process: its fixed address (kept across restarts) and its log file.
#[derive(Debug)]
struct Process {
    port: u16,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Process {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The processes of one distributed deployment (see the module documentation).
#[derive(Debug)]
pub struct ProcessCluster {
    binary: PathBuf,
    processes: BTreeMap<Replica, Process>,
    /// Dropped after the processes (they are killed in `Drop` first), before the folder.
    nats: NatsServer,
    postgres: Postgres,
    dir: tempfile::TempDir,
    /// The admin key of the tenant `faults`, made by the operator.
    pub admin_key: String,
}

impl ProcessCluster {
    /// Starts PostgreSQL, nats-server, the policy store and the `replicas`, each waited for
    /// (ready line and gRPC health), and makes the tenant `faults`.
    pub async fn start(replicas: Replicas) -> ProcessCluster {
        let binary = binary();
        let dir = tempfile::Builder::new()
            .prefix("portcullis-processes-")
            .tempdir()
            .unwrap();
        // PostgreSQL's user must reach its folder inside.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let pg_dir = dir.path().join("pg");
        let postgres = tokio::task::spawn_blocking(move || Postgres::init(pg_dir))
            .await
            .unwrap();
        let nats = NatsServer::start().await.unwrap();
        let mut cluster = ProcessCluster {
            binary,
            processes: BTreeMap::new(),
            nats,
            postgres,
            dir,
            admin_key: String::new(),
        };
        // The store first: every other service calls it at start.
        cluster.add((Service::PolicyStore, 0)).await;
        let mut rest = Vec::new();
        for (service, count) in [
            (Service::Continuous, replicas.continuous),
            (Service::Signature, replicas.signature),
            (Service::Admission, replicas.admission),
        ] {
            rest.extend((0..count).map(|i| (service, i)));
        }
        for replica in rest {
            cluster.add(replica).await;
        }
        // Telemetry last: it asks continuous for pod labels.
        for i in 0..replicas.telemetry {
            cluster.add((Service::Telemetry, i)).await;
        }
        cluster.admin_key = TenantServiceClient::connect(cluster.policy_store())
            .await
            .unwrap()
            .create_tenant(authed(
                OPERATOR_KEY,
                pb::CreateTenantRequest {
                    name: "Faults".into(),
                    id: "faults".into(),
                    admin_key_expires_at: None,
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .admin_key;
        cluster
    }

    async fn add(&mut self, replica: Replica) {
        let log = self.dir.path().join(format!("{}-{}.log", replica.0.name(), replica.1));
        self.processes.insert(
            replica,
            Process {
                port: portcullis_test_kit::free_port().unwrap(),
                log,
                child: None,
                starts: 0,
            },
        );
        self.launch(replica).await;
    }

    /// The process id of `replica`, while it runs.
    pub fn pid(&self, replica: Replica) -> Option<u32> {
        self.processes.get(&replica)?.child.as_ref().map(Child::id)
    }

    /// The temporary folder (PostgreSQL's data, the logs); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The ports of PostgreSQL and nats-server.
    pub fn infrastructure_ports(&self) -> (u16, u16) {
        (self.postgres.port, self.nats.port())
    }

    /// The URL of the PostgreSQL database every service uses.
    pub fn database_url(&self) -> String {
        self.postgres.url()
    }

    /// The URL of the nats-server.
    pub fn nats_url(&self) -> String {
        self.nats.url()
    }

    /// The policy store's URL.
    pub fn policy_store(&self) -> String {
        self.url((Service::PolicyStore, 0))
    }

    /// A replica's URL (the same after a restart).
    pub fn url(&self, replica: Replica) -> String {
        self.processes
            .get(&replica)
            .unwrap_or_else(|| panic!("no replica {replica:?}"))
            .url()
    }

    /// The URLs of every replica of `service`, by index.
    pub fn urls(&self, service: Service) -> Vec<String> {
        self.processes
            .iter()
            .filter(|((s, _), _)| *s == service)
            .map(|(_, p)| p.url())
            .collect()
    }

    /// The arguments of `replica` (everything but the environment).
    fn arguments(&self, replica: Replica) -> Vec<String> {
        let process = &self.processes[&replica];
        let mut args = vec![
            "serve".to_owned(),
            replica.0.name().to_owned(),
            "--nats-url".to_owned(),
            self.nats.url(),
            "--listen".to_owned(),
            format!("127.0.0.1:{}", process.port),
        ];
        if replica.0 != Service::PolicyStore {
            args.extend(["--policy-store-url".to_owned(), self.policy_store()]);
        }
        if matches!(
            replica.0,
            Service::PolicyStore | Service::Continuous | Service::Telemetry
        ) {
            args.extend(["--database-url".to_owned(), self.postgres.url()]);
        }
        if replica.0 == Service::Telemetry
            && let Some(continuous) = self.urls(Service::Continuous).first()
        {
            args.extend(["--continuous-url".to_owned(), continuous.clone()]);
        }
        if replica.0 == Service::Admission {
            // Load, not abuse: the suite's reviews must not meet the tenant's rate limit.
            args.extend(["--rate-limit".to_owned(), "0".to_owned()]);
        }
        args
    }

    /// Spawns `replica` and waits for its ready line and its health check.
    async fn launch(&mut self, replica: Replica) {
        let args = self.arguments(replica);
        let process = self.processes.get_mut(&replica).unwrap();
        assert!(process.child.is_none(), "{replica:?} is already running");
        process.starts += 1;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&process.log)
            .unwrap();
        writeln!(log, "==== start {} ====", process.starts).unwrap();
        let mut command = Command::new(&self.binary);
        command.args(&args);
        // Only what is given here: no setting of the caller's environment leaks in.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("PORTCULLIS_") || name.starts_with("OTEL_") {
                command.env_remove(name.as_ref());
            }
        }
        command
            .env("PORTCULLIS_OPERATOR_KEY", OPERATOR_KEY)
            .env("PORTCULLIS_SERVICE_TOKEN", SERVICE_TOKEN)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", self.binary.display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        // Drains stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        process.child = Some(child);
        let prefix = format!("portcullis {} listening on ", replica.0.name());
        let expected = process.url();
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            match lines.try_recv() {
                Ok(line) if line.starts_with(&prefix) => {
                    assert_eq!(line[prefix.len()..].trim(), expected, "{replica:?} listens elsewhere");
                    break;
                }
                Ok(_) => continue,
                Err(_) => {}
            }
            if let Some(status) = self.exited(replica) {
                panic!(
                    "{replica:?} exited with {status} before it was ready:\n{}",
                    self.log(replica)
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{replica:?}: no ready line within {READY_TIMEOUT:?}:\n{}",
                self.log(replica)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.wait_healthy(replica, deadline).await;
    }

    /// Waits until `replica`'s gRPC health check says SERVING, or panics at `deadline`.
    async fn wait_healthy(&mut self, replica: Replica, deadline: tokio::time::Instant) {
        let url = self.url(replica);
        loop {
            if serving(&url, replica.0.health_name()).await {
                return;
            }
            if let Some(status) = self.exited(replica) {
                panic!("{replica:?} exited with {status}:\n{}", self.log(replica));
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{replica:?} not serving within {READY_TIMEOUT:?}:\n{}",
                self.log(replica)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The exit status of `replica` if it has ended by itself.
    fn exited(&mut self, replica: Replica) -> Option<std::process::ExitStatus> {
        let process = self.processes.get_mut(&replica)?;
        let status = process.child.as_mut()?.try_wait().ok()??;
        process.child = None;
        Some(status)
    }

    /// `replica`'s log (stderr of every start), for a failure message.
    pub fn log(&self, replica: Replica) -> String {
        self.processes
            .get(&replica)
            .and_then(|p| std::fs::read_to_string(&p.log).ok())
            .map(|text| {
                // The end is what explains a failure.
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(60)..].join("\n")
            })
            .unwrap_or_default()
    }

    /// Kills `replica` (SIGKILL, as a crashed node or an evicted pod) and reaps it.
    pub fn kill(&mut self, replica: Replica) {
        let process = self
            .processes
            .get_mut(&replica)
            .unwrap_or_else(|| panic!("no replica {replica:?}"));
        if let Some(mut child) = process.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts `replica` again (killing it first if it runs) on the same address, and waits
    /// until it is ready and healthy.
    pub async fn restart(&mut self, replica: Replica) {
        self.kill(replica);
        self.launch(replica).await;
    }

    /// Whether `replica` is running and says SERVING.
    pub async fn is_serving(&mut self, replica: Replica) -> bool {
        if self.exited(replica).is_some() || self.processes.get(&replica).is_none_or(|p| p.child.is_none()) {
            return false;
        }
        serving(&self.url(replica), replica.0.health_name()).await
    }

    /// Kills nats-server and starts it again on the same port and JetStream store.
    pub async fn restart_nats(&mut self, down_for: Duration) {
        self.nats.stop();
        tokio::time::sleep(down_for).await;
        self.nats.restart().await.unwrap();
    }

    /// Stops PostgreSQL as a crash would, leaves it down for `down_for`, and starts it again
    /// on the same port (it recovers its data from the WAL).
    pub async fn restart_postgres(&mut self, down_for: Duration) {
        // pg_ctl blocks; the test's runtime is multi-threaded (the suite's tests are).
        tokio::task::block_in_place(|| self.postgres.stop());
        tokio::time::sleep(down_for).await;
        tokio::task::block_in_place(|| self.postgres.start());
    }

    /// Every replica that is not running or does not say SERVING, with its log.
    pub async fn unhealthy(&mut self) -> Vec<(Replica, String)> {
        let replicas: Vec<Replica> = self.processes.keys().copied().collect();
        let mut bad = Vec::new();
        for replica in replicas {
            if !self.is_serving(replica).await {
                bad.push((replica, self.log(replica)));
            }
        }
        bad
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for process in self.processes.values_mut() {
            if let Some(mut child) = process.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Then nats-server and PostgreSQL (their own Drop), then the folder.
    }
}

/// Whether the gRPC health check of `service` at `url` answers SERVING within 2 s.
async fn serving(url: &str, service: &str) -> bool {
    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .connect()
            .await
            .ok()?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .ok()?;
        Some(answer.into_inner().status == ServingStatus::Serving as i32)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), check).await,
        Ok(Some(true))
    )
}
