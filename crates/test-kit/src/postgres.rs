//! A fresh PostgreSQL database per test, dropped (with its connections) afterwards.
//!
//! The server: `PORTCULLIS_TEST_POSTGRES` (an admin URL naming a database, e.g.
//! `postgres://postgres@127.0.0.1:5432/postgres`) when set, and it must answer. Unset, the
//! local server at [`DEFAULT_ADMIN_URL`]; when none answers there, a private cluster made with
//! `initdb` (from `PATH` or `/usr/lib/postgresql/*/bin`) on a free loopback port, in a
//! temporary folder, shared by the databases of one test process and stopped when the last
//! of them is dropped. `initdb` refuses to run as root: there, start the machine's server
//! (`./test.sh` does).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, Weak};

use sea_orm::{ConnectionTrait, Database};

use crate::FixtureError;

/// The admin URL used when `PORTCULLIS_TEST_POSTGRES` is not set.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database with a unique name, dropped when this is dropped (also after a panic).
#[derive(Debug)]
pub struct TestDatabase {
    /// Its URL.
    pub url: String,
    admin_url: String,
    name: String,
    // Dropped after the database (field order): the private cluster, if one was started.
    _cluster: Option<Arc<Cluster>>,
}

impl TestDatabase {
    /// Creates a database with a unique name (see the module documentation for the server).
    pub async fn create() -> Result<TestDatabase, FixtureError> {
        let (admin_url, cluster) = match std::env::var("PORTCULLIS_TEST_POSTGRES") {
            Ok(url) => (url, None),
            Err(_) if reachable(DEFAULT_ADMIN_URL).await => (DEFAULT_ADMIN_URL.to_owned(), None),
            Err(_) => {
                let cluster = tokio::task::spawn_blocking(Cluster::shared)
                    .await
                    .map_err(|e| FixtureError::Start(format!("initdb: {e}")))??;
                (cluster.admin_url(), Some(cluster))
            }
        };
        let admin = Database::connect(admin_url.as_str()).await.map_err(|e| {
            FixtureError::Start(format!(
                "PostgreSQL is needed at {admin_url} (set PORTCULLIS_TEST_POSTGRES): {e}"
            ))
        })?;
        let name = format!("pc_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| FixtureError::Start(format!("creating the test database: {e}")))?;
        let _ = admin.close().await;
        let base = admin_url
            .rsplit_once('/')
            .map(|(base, _)| base)
            .filter(|base| base.len() > "postgres://".len())
            .ok_or_else(|| FixtureError::Start(format!("admin URL {admin_url} names no database")))?;
        Ok(TestDatabase {
            url: format!("{base}/{name}"),
            admin_url,
            name,
            _cluster: cluster,
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // A runtime of its own: Drop cannot await, and the test's runtime may be unwinding.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                if let Ok(admin) = Database::connect(admin_url.as_str()).await {
                    let _ = admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

async fn reachable(url: &str) -> bool {
    let attempt = async { Database::connect(url).await.ok()?.close().await.ok() };
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(5), attempt).await,
        Ok(Some(()))
    )
}

/// A private PostgreSQL cluster (trust authentication, user `postgres`), stopped on drop.
#[derive(Debug)]
struct Cluster {
    pg_ctl: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
}

/// The running private cluster, while some database uses it.
static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());

impl Cluster {
    /// The running cluster, or a new one.
    fn shared() -> Result<Arc<Cluster>, FixtureError> {
        let mut shared = SHARED
            .lock()
            .map_err(|_| FixtureError::Start("a previous initdb panicked".into()))?;
        if let Some(cluster) = shared.upgrade() {
            return Ok(cluster);
        }
        let cluster = Arc::new(Cluster::start()?);
        *shared = Arc::downgrade(&cluster);
        Ok(cluster)
    }

    fn start() -> Result<Cluster, FixtureError> {
        let initdb = find_program("initdb")?;
        let pg_ctl = initdb.with_file_name("pg_ctl");
        let dir = tempfile::Builder::new()
            .prefix("portcullis-pg-")
            .tempdir()
            .map_err(|e| FixtureError::Start(format!("temp dir: {e}")))?;
        let data = dir.path().join("data");
        run(Command::new(&initdb)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-D"])
            .arg(&data))?;
        let port = crate::free_port()?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.path().display()
        );
        // `-w`: pg_ctl returns once the server accepts connections.
        run(Command::new(&pg_ctl)
            .args(["-w", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("postgres.log"))
            .args(["-o", &options, "start"]))?;
        Ok(Cluster { pg_ctl, port, dir })
    }

    fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(&self.pg_ctl)
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn run(command: &mut Command) -> Result<(), FixtureError> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| FixtureError::Start(format!("{command:?}: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(FixtureError::Start(format!(
            "{command:?} exited with {}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

/// `name` on `PATH`, else in the newest `/usr/lib/postgresql/<version>/bin` (Debian's layout).
fn find_program(name: &str) -> Result<PathBuf, FixtureError> {
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.flatten().map(|d| d.path().join("bin").join(name)).collect())
        .unwrap_or_default();
    debian.sort_by_key(|p| version_of(p));
    debian.reverse();
    on_path.into_iter().chain(debian).find(|p| p.is_file()).ok_or_else(|| {
        FixtureError::NotFound(format!(
            "no PostgreSQL server answers at {DEFAULT_ADMIN_URL} and no {name} to start one; \
                 start PostgreSQL or set PORTCULLIS_TEST_POSTGRES"
        ))
    })
}

fn version_of(bin: &Path) -> u32 {
    bin.ancestors()
        .nth(2)
        .and_then(Path::file_name)
        .and_then(|v| v.to_str())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
