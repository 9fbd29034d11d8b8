//! Opening a Portcullis database, one way for every store that owns tables (the policy
//! store's `portcullis-storage`, continuous scanning, telemetry): PostgreSQL in distributed
//! mode, SQLite (a file) in embedded mode, through sea-orm.
//!
//! - [`Backend::of_url`]: the URL scheme (`postgres://`, `postgresql://` or `sqlite:`);
//!   anything else is refused ([`SqlError::UnsupportedUrl`]).
//! - [`connect_options`] / [`connect`]: the pool (10 connections on PostgreSQL, 4 on a SQLite
//!   file, exactly one kept open for an in-memory SQLite database, since each connection to
//!   `:memory:` opens a database of its own) and SQLite's options: WAL, so readers run
//!   beside the one writer; synchronous NORMAL; foreign keys on; a busy timeout for writers.
//! - [`migrate`]: a store's migrations, serialised on PostgreSQL by a transaction-scoped
//!   advisory lock of the store's own key (replicas starting together take turns; the later
//!   ones find nothing to do).
//! - [`begin_write`]: a write transaction, IMMEDIATE on SQLite, so that no transaction has
//!   to upgrade a read lock (which SQLite answers with `SQLITE_BUSY` at once).
//!
//! This is a crate of its own, not part of the service kit: the kit has no database, and the
//! services without tables (admission, signature) must not build one.

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL (distributed mode).
    Postgres,
    /// SQLite (embedded mode).
    Sqlite,
}

impl Backend {
    /// The database `url` names, by its scheme; `None` for any other scheme.
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else {
            None
        }
    }
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The URL names no database this product runs on.
    #[error("the database URL must start with postgres://, postgresql:// or sqlite:")]
    UnsupportedUrl,
    /// The database refused or could not be reached.
    #[error("{0}")]
    Database(#[from] DbErr),
}

/// The pool and SQLite settings of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOptions {
    /// The pool size; default 10 for PostgreSQL, 4 for SQLite (always 1 for an in-memory
    /// database).
    pub max_connections: Option<u32>,
    /// How long a SQLite writer waits for the write lock (stores may share the file).
    pub sqlite_busy_timeout: Duration,
}

impl Default for PoolOptions {
    /// The default pool sizes; a 10 s busy timeout.
    fn default() -> PoolOptions {
        PoolOptions {
            max_connections: None,
            sqlite_busy_timeout: Duration::from_secs(10),
        }
    }
}

/// Whether `url` is an in-memory SQLite database.
fn in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// The connection options for `url` with `options` (see the crate docs), and its backend.
pub fn connect_options(url: &str, options: &PoolOptions) -> Result<(ConnectOptions, Backend), SqlError> {
    let backend = Backend::of_url(url).ok_or(SqlError::UnsupportedUrl)?;
    let mut connect = ConnectOptions::new(url.to_owned());
    connect.sqlx_logging(false);
    match backend {
        Backend::Postgres => {
            connect.max_connections(options.max_connections.unwrap_or(10));
        }
        Backend::Sqlite => {
            // Every connection to `:memory:` opens a database of its own: keep to one.
            if in_memory(url) {
                connect
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None);
            } else {
                connect.max_connections(options.max_connections.unwrap_or(4));
            }
            let busy = options.sqlite_busy_timeout;
            connect.map_sqlx_sqlite_opts(move |o| {
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(busy)
            });
        }
    }
    Ok((connect, backend))
}

/// Opens the pool of `url` with `options` (see the crate docs).
pub async fn connect(url: &str, options: &PoolOptions) -> Result<DatabaseConnection, SqlError> {
    let (connect, _) = connect_options(url, options)?;
    Ok(Database::connect(connect).await?)
}

/// Runs `M`'s migrations on `db`; on PostgreSQL inside a transaction holding the advisory
/// lock `lock_key` (one key per store, so that stores sharing a database do not wait on
/// each other).
pub async fn migrate<M: MigratorTrait>(db: &DatabaseConnection, lock_key: i64) -> Result<(), DbErr> {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            // Replicas starting together take turns; the later ones find nothing to do.
            let tx = db.begin().await?;
            tx.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({lock_key})"))
                .await?;
            M::up(&tx, None).await?;
            tx.commit().await
        }
        _ => M::up(db, None).await,
    }
}

/// Begins a write transaction: IMMEDIATE on SQLite, so that no transaction upgrades a read
/// lock.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use sea_orm::Statement;
    use sea_orm_migration::prelude::*;

    use super::*;

    #[test]
    fn the_scheme_names_the_backend_and_anything_else_is_refused() {
        assert_eq!(Backend::of_url("postgres://u@127.0.0.1/db"), Some(Backend::Postgres));
        assert_eq!(Backend::of_url("postgresql://u@127.0.0.1/db"), Some(Backend::Postgres));
        assert_eq!(Backend::of_url("sqlite://pc.db?mode=rwc"), Some(Backend::Sqlite));
        assert_eq!(Backend::of_url("mysql://127.0.0.1/db"), None);
        assert!(matches!(
            connect_options("file:pc.db", &PoolOptions::default()),
            Err(SqlError::UnsupportedUrl)
        ));
    }

    #[test]
    fn pool_sizes_default_per_backend_and_an_in_memory_database_keeps_one_connection() {
        let defaults = PoolOptions::default();
        let size = |url: &str, options: &PoolOptions| connect_options(url, options).unwrap().0.get_max_connections();
        assert_eq!(size("postgres://u@127.0.0.1/db", &defaults), Some(10));
        assert_eq!(size("sqlite://pc.db?mode=rwc", &defaults), Some(4));
        let twenty = PoolOptions {
            max_connections: Some(20),
            ..PoolOptions::default()
        };
        assert_eq!(size("sqlite://pc.db?mode=rwc", &twenty), Some(20));
        assert_eq!(size("sqlite::memory:", &twenty), Some(1));
        assert_eq!(size("sqlite://x?mode=memory", &twenty), Some(1));
    }

    struct Migrator;

    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![Box::new(CreateThings)]
        }
    }

    #[derive(DeriveMigrationName)]
    struct CreateThings;

    #[async_trait::async_trait]
    impl MigrationTrait for CreateThings {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .get_connection()
                .execute_unprepared("CREATE TABLE things (id INTEGER PRIMARY KEY)")
                .await
                .map(drop)
        }
    }

    #[tokio::test]
    async fn migrations_run_once_and_writes_commit_in_an_immediate_transaction() {
        let db = connect("sqlite::memory:", &PoolOptions::default()).await.unwrap();
        migrate::<Migrator>(&db, 1).await.unwrap();
        // A second start finds nothing to do.
        migrate::<Migrator>(&db, 1).await.unwrap();
        let tx = begin_write(&db).await.unwrap();
        tx.execute_unprepared("INSERT INTO things (id) VALUES (7)")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let row = db
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT COUNT(*) AS n FROM things",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.try_get::<i64>("", "n").unwrap(), 1);
    }
}
