//! [`ContinuousStore`] on a SQL database through sea-orm: PostgreSQL in distributed mode,
//! SQLite (a file) in embedded mode, from one code path.
//!
//! The service owns its tables (`cn_*`, see [`migration`]) and runs its own migrations on
//! connect. Statements are built with sea-query, which writes each backend's dialect; the
//! inventory's upserts are multi-row `INSERT ... ON CONFLICT DO UPDATE` statements of at
//! most [`ROWS_PER_STATEMENT`] rows (PostgreSQL binds at most 65,535 values per statement,
//! SQLite 32,766).
//!
//! Times are stored as microseconds since the Unix epoch: what is written is truncated to
//! the microsecond, and what the store returns is what it will read back.
//!
//! Where the contract leaves room, this store:
//! - tells a re-sent unchanged pod by a 64-bit FNV-1a hash of its row (`projection_hash`):
//!   each page reads the stored hashes of its pods, stamps the unchanged ones with the
//!   generation and upserts the others (a hash collision would miss one change, odds 2^-64);
//! - in [`ContinuousStore::save_findings`], resolves at `now` (and reports as resolved) a
//!   stored open finding of a written pod that neither the pod's new state nor `resolved`
//!   holds (the pod's state is its whole state); a resolution of a finding not open is
//!   ignored; findings are written with the cluster and pod uid they are saved under;
//! - in [`ContinuousStore::forget_cluster`], resolves the open findings and cancels the
//!   pending commands at `now` (kept for the record) and drops the cluster's row, so its
//!   generation and findings version start again from 0 (a replica's save from an older read
//!   then conflicts);
//! - answers an ack to a non-final state (which the contract rules out) like a repeated one:
//!   [`Acked::Already`], nothing changed;
//! - pages listings by keyset on (last seen or issued at, then id): a finding confirmed while
//!   someone pages moves to the front and may be missed or seen twice by that listing. A
//!   token carries a fingerprint of the listing and its filters; reused with other filters
//!   it is [`StoreError::InvalidPageToken`].

mod commands;
mod findings;
mod inventory;
pub mod migration;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr, QueryResult, TryGetable};
use time::OffsetDateTime;

use crate::inventory::PodProjection;
use crate::store::{
    Acked, BoxFuture, ClusterPods, CommandFilter, CommandState, ContinuousStore, FindingFilter, FindingsRead,
    FindingsSaved, FindingsWrite, InventoryApplied, InventoryWrite, NewCommand, Page, PageRequest, StoreError,
    StoreResult, StoredCommand, StoredFinding, StoredPod,
};
use migration::Migrator;

/// Rows per multi-row statement (the widest row has 17 columns: 8,500 values).
pub const ROWS_PER_STATEMENT: usize = 500;

/// Values per `IN (...)` list.
const IN_LIST: usize = 1000;

/// Lock key of the PostgreSQL advisory lock that serialises the migrations of replicas.
const MIGRATION_LOCK_KEY: i64 = 0x7063_5f63_6f6e_7469; // "pc_conti"

/// How to open the store: the pool and SQLite settings every store shares
/// (`portcullis_sql::PoolOptions`; 10 connections on PostgreSQL, 4 on SQLite, 1 for an
/// in-memory database, a 10 s SQLite busy timeout by default).
pub type SqlStoreOptions = portcullis_sql::PoolOptions;

/// The continuous service's store on PostgreSQL or SQLite. Cheap to clone (one shared pool).
#[derive(Debug, Clone)]
pub struct SqlStore {
    db: DatabaseConnection,
}

impl From<DbErr> for StoreError {
    fn from(e: DbErr) -> StoreError {
        StoreError::Unavailable(e.to_string())
    }
}

impl SqlStore {
    /// Opens the store at `url` (`postgres://…`, `postgresql://…` or `sqlite://PATH?mode=rwc`)
    /// and runs its migrations.
    pub async fn connect(url: &str) -> StoreResult<SqlStore> {
        SqlStore::connect_with(url, SqlStoreOptions::default()).await
    }

    /// Opens the store with options (`portcullis_sql::connect`).
    pub async fn connect_with(url: &str, options: SqlStoreOptions) -> StoreResult<SqlStore> {
        let db = portcullis_sql::connect(url, &options).await.map_err(|e| match e {
            portcullis_sql::SqlError::UnsupportedUrl => StoreError::Unavailable(e.to_string()),
            portcullis_sql::SqlError::Database(e) => StoreError::from(e),
        })?;
        SqlStore::from_connection(db).await
    }

    /// The store on an open connection pool (shared with the policy store in embedded
    /// mode); runs the migrations.
    pub async fn from_connection(db: DatabaseConnection) -> StoreResult<SqlStore> {
        let store = SqlStore { db };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> StoreResult<()> {
        Ok(portcullis_sql::migrate::<Migrator>(&self.db, MIGRATION_LOCK_KEY).await?)
    }

    /// The connection pool (health checks, tests).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Begins a write transaction (IMMEDIATE on SQLite: no transaction upgrades a read lock).
    async fn begin(&self) -> StoreResult<DatabaseTransaction> {
        Ok(portcullis_sql::begin_write(&self.db).await?)
    }
}

// ---------------------------------------------------------------------------------------
// Helpers shared by the submodules.

/// `column = value`.
fn col_eq(column: &'static str, value: impl Into<Expr>) -> Expr {
    Expr::col(column).eq(value)
}

/// `tenant_id = tenant AND cluster_id = cluster`.
fn scope(tenant: &str, cluster: &str) -> Expr {
    col_eq("tenant_id", tenant).and(col_eq("cluster_id", cluster))
}

/// A time as stored: microseconds since the epoch (saturating far outside any real date).
fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(if t.unix_timestamp() < 0 { i64::MIN } else { i64::MAX })
}

/// A time truncated as it is stored.
fn truncate(t: OffsetDateTime) -> OffsetDateTime {
    from_micros(micros(t)).unwrap_or(t)
}

/// A stored time.
fn from_micros(us: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .map_err(|e| StoreError::Corrupt(format!("time {us}: {e}")))
}

/// A column of a row; a value that does not read is a corrupt row.
fn get<T: TryGetable>(row: &QueryResult, column: &str) -> StoreResult<T> {
    row.try_get::<T>("", column)
        .map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

/// A count or version as stored (BIGINT).
fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored count or version.
fn to_u64(n: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("{what}: {n}")))
}

/// A statement that could not be built (a bug: columns and values disagree).
fn build_error(e: sea_orm::sea_query::error::Error) -> StoreError {
    StoreError::Unavailable(format!("building a statement: {e}"))
}

/// 64-bit FNV-1a: stable across builds and releases (the stored projection hash and the
/// page tokens' filter fingerprints rely on that).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The same as a BIGINT.
fn fnv1a_i64(bytes: &[u8]) -> i64 {
    i64::from_ne_bytes(fnv1a(bytes).to_ne_bytes())
}

// ---------------------------------------------------------------------------------------
// Paging.

/// The page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// The largest page.
pub const MAX_PAGE_SIZE: u32 = 1000;

fn page_size(page: &PageRequest) -> usize {
    let size = match page.size {
        0 => DEFAULT_PAGE_SIZE,
        n => Ord::min(n, MAX_PAGE_SIZE),
    };
    usize::try_from(size).unwrap_or(100)
}

/// Where a page of a newest-first listing starts: after the item at (`at`, `seq`, `id`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    at: i64,
    seq: i64,
    id: String,
}

/// A page token: the cursor and a fingerprint of the listing and its filters, so that a
/// token reused with other filters is refused rather than silently skipping items.
fn encode_token(listing: &str, filter: &str, cursor: &Cursor) -> String {
    let fingerprint = fnv1a(format!("{listing}\n{filter}").as_bytes());
    URL_SAFE_NO_PAD.encode(format!(
        "v1:{fingerprint:016x}:{}:{}:{}",
        cursor.at, cursor.seq, cursor.id
    ))
}

fn decode_token(listing: &str, filter: &str, page: &PageRequest) -> StoreResult<Option<Cursor>> {
    let Some(token) = page.token.as_deref().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| StoreError::InvalidPageToken)?;
    let text = String::from_utf8(bytes).map_err(|_| StoreError::InvalidPageToken)?;
    let mut parts = text.splitn(5, ':');
    let (Some("v1"), Some(fingerprint), Some(at), Some(seq), Some(id)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(StoreError::InvalidPageToken);
    };
    let expected = fnv1a(format!("{listing}\n{filter}").as_bytes());
    if u64::from_str_radix(fingerprint, 16).ok() != Some(expected) {
        return Err(StoreError::InvalidPageToken);
    }
    let at = at.parse().map_err(|_| StoreError::InvalidPageToken)?;
    let seq = seq.parse().map_err(|_| StoreError::InvalidPageToken)?;
    Ok(Some(Cursor {
        at,
        seq,
        id: id.to_owned(),
    }))
}

/// Cuts the extra item read to know whether another page follows, and makes its token.
fn finish_page<T>(mut items: Vec<(T, Cursor)>, size: usize, listing: &str, filter: &str) -> Page<T> {
    let next = if items.len() > size {
        items.truncate(size);
        items.last().map(|(_, c)| encode_token(listing, filter, c))
    } else {
        None
    };
    Page {
        items: items.into_iter().map(|(item, _)| item).collect(),
        next,
    }
}

// ---------------------------------------------------------------------------------------
// The contract.

impl ContinuousStore for SqlStore {
    fn write_inventory<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a str,
        write: InventoryWrite,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, StoreResult<InventoryApplied>> {
        Box::pin(inventory::write(self, tenant, cluster, write, now))
    }

    fn pods<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a str,
        uids: Option<&'a [String]>,
    ) -> BoxFuture<'a, StoreResult<Vec<PodProjection>>> {
        Box::pin(inventory::pods(&self.db, tenant, cluster, uids))
    }

    fn pod<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<StoredPod>>> {
        Box::pin(inventory::pod(&self.db, tenant, cluster, namespace, name))
    }

    fn pods_running<'a>(&'a self, tenant: &'a str, digest: &'a str) -> BoxFuture<'a, StoreResult<Vec<ClusterPods>>> {
        Box::pin(inventory::pods_running(&self.db, tenant, digest))
    }

    fn clusters(&self) -> BoxFuture<'_, StoreResult<Vec<(String, String)>>> {
        Box::pin(inventory::clusters(&self.db, None))
    }

    fn claim_sweep<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a str,
        now: OffsetDateTime,
        min_gap: Duration,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        Box::pin(inventory::claim_sweep(&self.db, tenant, cluster, now, min_gap))
    }

    fn tenant_clusters<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, StoreResult<Vec<String>>> {
        Box::pin(async move {
            Ok(inventory::clusters(&self.db, Some(tenant))
                .await?
                .into_iter()
                .map(|(_, cluster)| cluster)
                .collect())
        })
    }

    fn forget_cluster<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a str,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(inventory::forget_cluster(self, tenant, cluster, now))
    }

    fn findings<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a str,
        uids: Option<&'a [String]>,
    ) -> BoxFuture<'a, StoreResult<FindingsRead>> {
        Box::pin(findings::read(self, tenant, cluster, uids))
    }

    fn save_findings<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a str,
        write: FindingsWrite,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, StoreResult<FindingsSaved>> {
        Box::pin(findings::save(self, tenant, cluster, write, now))
    }

    fn list_findings<'a>(
        &'a self,
        tenant: &'a str,
        filter: &'a FindingFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<StoredFinding>>> {
        Box::pin(findings::list(&self.db, tenant, filter, page))
    }

    fn issue_commands<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a str,
        commands: Vec<NewCommand>,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, StoreResult<Vec<StoredCommand>>> {
        Box::pin(async move {
            let tx = self.begin().await?;
            let stored = commands::insert(&tx, tenant, cluster, commands, truncate(now)).await?;
            tx.commit().await?;
            Ok(stored)
        })
    }

    fn issue_command_once<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a str,
        id: &'a str,
        command: NewCommand,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, StoreResult<Option<StoredCommand>>> {
        Box::pin(commands::insert_once(
            &self.db,
            tenant,
            cluster,
            id,
            command,
            truncate(now),
        ))
    }

    fn pending_commands<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a str,
    ) -> BoxFuture<'a, StoreResult<Vec<StoredCommand>>> {
        Box::pin(commands::pending(&self.db, tenant, cluster))
    }

    fn command<'a>(&'a self, tenant: &'a str, id: &'a str) -> BoxFuture<'a, StoreResult<Option<StoredCommand>>> {
        Box::pin(commands::one(&self.db, tenant, None, id))
    }

    fn ack_command<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a str,
        id: &'a str,
        state: CommandState,
        message: &'a str,
        at: OffsetDateTime,
    ) -> BoxFuture<'a, StoreResult<Acked>> {
        Box::pin(commands::ack(self, tenant, cluster, id, state, message, at))
    }

    fn list_commands<'a>(
        &'a self,
        tenant: &'a str,
        filter: &'a CommandFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<StoredCommand>>> {
        Box::pin(commands::list(&self.db, tenant, filter, page))
    }
}

/// Runs `f` on `items` in chunks of `n` (statements stay under the bind limits).
fn chunks<T>(items: &[T], n: usize) -> impl Iterator<Item = &[T]> {
    items.chunks(n.max(1))
}

/// The same for `IN (...)` lists.
fn in_chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    chunks(items, IN_LIST)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_only_for_its_listing_and_filters() {
        let cursor = Cursor {
            at: 1_700_000_000_000_000,
            seq: 3,
            id: "0b9c2c1e-aaaa-4bbb-8ccc-123456789abc".to_owned(),
        };
        let token = encode_token("findings", "filter-a", &cursor);
        let page = |token: &str| PageRequest {
            size: 10,
            token: Some(token.to_owned()),
        };
        assert_eq!(
            decode_token("findings", "filter-a", &page(&token)).unwrap(),
            Some(cursor)
        );
        assert!(matches!(
            decode_token("findings", "filter-b", &page(&token)),
            Err(StoreError::InvalidPageToken)
        ));
        assert!(matches!(
            decode_token("commands", "filter-a", &page(&token)),
            Err(StoreError::InvalidPageToken)
        ));
        assert!(matches!(
            decode_token("findings", "filter-a", &page("not a token")),
            Err(StoreError::InvalidPageToken)
        ));
        assert_eq!(
            decode_token("findings", "filter-a", &PageRequest::default()).unwrap(),
            None
        );
    }

    #[test]
    fn page_sizes_are_clamped() {
        let size = |n| page_size(&PageRequest { size: n, token: None });
        assert_eq!(size(0), 100);
        assert_eq!(size(7), 7);
        assert_eq!(size(5000), 1000);
    }

    #[test]
    fn stored_times_are_microseconds() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_765_000_000_123_456_789).unwrap();
        assert_eq!(micros(t), 1_765_000_000_123_456);
        assert_eq!(
            from_micros(micros(t)).unwrap(),
            OffsetDateTime::from_unix_timestamp_nanos(1_765_000_000_123_456_000).unwrap()
        );
    }
}
