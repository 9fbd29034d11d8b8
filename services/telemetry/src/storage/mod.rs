//! [`TelemetryStore`] on a SQL database through sea-orm: PostgreSQL in distributed mode,
//! SQLite (a file) in embedded mode, from one code path.
//!
//! The service owns its tables (`tm_*`, see [`migration`]) and runs its own migrations on
//! connect. Statements are SQL text with bound parameters only ([`Sql`] numbers them in each
//! backend's style): no value is ever written into the text.
//!
//! Events are inserted on PostgreSQL by `COPY` into a per-connection temporary staging table
//! and one `INSERT ... SELECT ... ON CONFLICT DO NOTHING` into the events table (idempotent on
//! the event's key, counting only new rows); on SQLite with multi-row `INSERT ... ON CONFLICT
//! DO NOTHING` statements. On PostgreSQL the events table is partitioned by UTC day; the partitions a batch touches are
//! created before it is inserted, once per day and process (remembered in memory).

mod alerts;
mod events;
pub mod migration;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use compact_str::CompactString;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, QueryResult, Statement, TryGetable,
    Value,
};
use time::OffsetDateTime;

use crate::alert::AlertStatus;
use crate::correlate::AlertChange;
use crate::event::SecurityEvent;
use crate::query::Query;
use crate::store::{
    AdmissionFilter, AlertDetail, AlertFilter, BoxFuture, ClusterRisk, Expired, Page, PageRequest, RecordedAdmission,
    SearchResult, StoreError, StoreResult, StoredAlert, TelemetryStore, TimeRange,
};
use migration::Migrator;

/// Lock key of the PostgreSQL advisory lock that serialises the migrations of replicas.
const MIGRATION_LOCK_KEY: i64 = 0x7063_5f74_656c_656d; // "pc_telem"

/// Microseconds in a day (a partition's width).
pub const DAY_MICROS: i64 = 86_400_000_000;

/// How to open the store: the pool and SQLite settings every store shares
/// (`portcullis_sql::PoolOptions`; 10 connections on PostgreSQL, 4 on SQLite, 1 for an
/// in-memory database, a 10 s SQLite busy timeout by default).
pub type SqlStoreOptions = portcullis_sql::PoolOptions;

/// The telemetry service's store on PostgreSQL or SQLite. Cheap to clone (one shared pool).
#[derive(Debug, Clone)]
pub struct SqlStore {
    db: DatabaseConnection,
    /// The days (since the epoch) whose partition this process knows exists (PostgreSQL).
    days: Arc<Mutex<HashSet<i64>>>,
    /// Held while partitions are created, so that this process's writers do not race each
    /// other to create the same one.
    creating: Arc<tokio::sync::Mutex<()>>,
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

    /// The store on an open connection pool (shared with other stores in embedded mode);
    /// runs the migrations.
    pub async fn from_connection(db: DatabaseConnection) -> StoreResult<SqlStore> {
        let store = SqlStore {
            db,
            days: Arc::new(Mutex::new(HashSet::new())),
            creating: Arc::new(tokio::sync::Mutex::new(())),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> StoreResult<()> {
        Ok(portcullis_sql::migrate::<Migrator>(&self.db, MIGRATION_LOCK_KEY).await?)
    }

    /// PostgreSQL's `EXPLAIN (ANALYZE, BUFFERS)` of the statements a search's first page (of
    /// the default size) runs, in order, each named (`page`, `count`; for free text `probe`,
    /// `dense count` for a word in most events, `count and page`, then `page walk` and `page
    /// window`s when there are more than 10,000 matches) with its plan's lines (benchmarks and
    /// diagnosis; runs them). An error on SQLite.
    pub async fn explain_search(
        &self,
        tenant: &str,
        query: &Query,
        range: TimeRange,
    ) -> StoreResult<Vec<(String, Vec<String>)>> {
        events::explain_search(self, tenant, query, range).await
    }

    /// The connection pool (health checks, tests, benchmarks).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Begins a write transaction (IMMEDIATE on SQLite: no transaction upgrades a read lock).
    async fn begin(&self) -> StoreResult<DatabaseTransaction> {
        Ok(portcullis_sql::begin_write(&self.db).await?)
    }

    /// Makes sure the day partitions of these event times exist (PostgreSQL; nothing on
    /// SQLite). A partition that cannot be created (another replica racing, or rows of that
    /// day already in the DEFAULT partition) is not remembered: the rows go to the DEFAULT
    /// partition and the creation is tried again with the next batch of that day.
    pub async fn ensure_partitions(&self, times_micros: impl IntoIterator<Item = i64>) -> StoreResult<()> {
        if self.backend() != DbBackend::Postgres {
            return Ok(());
        }
        let wanted: HashSet<i64> = times_micros.into_iter().map(|t| t.div_euclid(DAY_MICROS)).collect();
        let missing = |wanted: &HashSet<i64>| -> StoreResult<Vec<i64>> {
            let known = self
                .days
                .lock()
                .map_err(|_| StoreError::Unavailable("poisoned lock".to_owned()))?;
            Ok(wanted.iter().copied().filter(|d| !known.contains(d)).collect())
        };
        if missing(&wanted)?.is_empty() {
            return Ok(());
        }
        let _creating = self.creating.lock().await;
        // Another writer may have created them meanwhile.
        for day in missing(&wanted)? {
            let Some(ddl) = partition_ddl(day) else { continue };
            if self.db.execute_unprepared(&ddl).await.is_ok() {
                self.days
                    .lock()
                    .map_err(|_| StoreError::Unavailable("poisoned lock".to_owned()))?
                    .insert(day);
            }
        }
        Ok(())
    }
}

/// The events as `COPY tm_events (...) FROM STDIN` text rows, in the store's column order
/// ([`EVENT_COLUMNS`]): what the PostgreSQL insert sends (benchmarks use it for a bare `COPY`).
pub fn copy_text(events: &[SecurityEvent]) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.len() * 2048);
    for e in events {
        events::push_copy_row(&mut out, e);
    }
    out
}

/// The stored event columns, in the order of [`copy_text`]'s fields.
pub const EVENT_COLUMNS: &str = events::COLUMNS;

/// The name of a day's partition (`tm_events_p20261207`); `None` for days outside the years
/// 1..=9999.
pub fn partition_name(day: i64) -> Option<String> {
    let date = OffsetDateTime::from_unix_timestamp(day.checked_mul(86_400)?)
        .ok()?
        .date();
    if date.year() < 1 {
        return None;
    }
    Some(format!(
        "tm_events_p{:04}{:02}{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    ))
}

/// The day (since the epoch) of a partition name, the inverse of [`partition_name`].
fn partition_day(name: &str) -> Option<i64> {
    let digits = name.strip_prefix("tm_events_p")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i32 = digits.get(0..4)?.parse().ok()?;
    let month: u8 = digits.get(4..6)?.parse().ok()?;
    let day: u8 = digits.get(6..8)?.parse().ok()?;
    let date = time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp().div_euclid(86_400))
}

/// `CREATE TABLE IF NOT EXISTS` of a day's partition. The text holds only integers computed
/// here, never a value from outside.
pub fn partition_ddl(day: i64) -> Option<String> {
    let name = partition_name(day)?;
    let from = day.checked_mul(DAY_MICROS)?;
    let to = from.checked_add(DAY_MICROS)?;
    Some(format!(
        "CREATE TABLE IF NOT EXISTS {name} PARTITION OF tm_events FOR VALUES FROM ({from}) TO ({to})"
    ))
}

// ---------------------------------------------------------------------------------------
// SQL text with bound parameters.

/// A statement being built: text and its bound values, numbered in the backend's style
/// (`$n` on PostgreSQL, `?` on SQLite).
#[derive(Debug)]
pub(crate) struct Sql {
    backend: DbBackend,
    text: String,
    values: Vec<Value>,
}

impl Sql {
    fn new(backend: DbBackend, text: &str) -> Sql {
        Sql {
            backend,
            text: text.to_owned(),
            values: Vec::new(),
        }
    }

    /// Appends text (never a value from outside).
    fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder bound to `value`.
    fn bind(&mut self, value: impl Into<Value>) -> &mut Sql {
        self.values.push(value.into());
        if self.backend == DbBackend::Postgres {
            self.text.push('$');
            self.text.push_str(&self.values.len().to_string());
        } else {
            self.text.push('?');
        }
        self
    }

    fn statement(&self) -> Statement {
        Statement::from_sql_and_values(self.backend, self.text.clone(), self.values.clone())
    }
}

// ---------------------------------------------------------------------------------------
// Helpers shared by the submodules.

/// A time as stored: microseconds since the epoch (saturating far outside any real date).
pub(crate) fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(if t.unix_timestamp() < 0 { i64::MIN } else { i64::MAX })
}

/// A stored time.
pub(crate) fn from_micros(us: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .map_err(|e| StoreError::Corrupt(format!("time {us}: {e}")))
}

/// A column of a row; a value that does not read is a corrupt row.
pub(crate) fn get<T: TryGetable>(row: &QueryResult, column: &str) -> StoreResult<T> {
    row.try_get::<T>("", column)
        .map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

/// A count as stored.
pub(crate) fn to_u64(n: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("{what}: {n}")))
}

/// The page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// The largest page.
pub const MAX_PAGE_SIZE: u32 = 1000;

pub(crate) fn page_size(page: &PageRequest) -> usize {
    let size = match page.size {
        0 => DEFAULT_PAGE_SIZE,
        n => Ord::min(n, MAX_PAGE_SIZE),
    };
    usize::try_from(size).unwrap_or(100)
}

/// 64-bit FNV-1a (stable across builds: page tokens rely on it).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Where a page starts: after the item at (`at`, `id`) in the listing's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) at: i64,
    pub(crate) id: String,
}

/// A page token: the cursor and a fingerprint of the listing and its filters, so that a
/// token reused with other filters is refused rather than silently skipping items.
pub(crate) fn encode_token(fingerprint_of: &str, cursor: &Cursor) -> String {
    let fingerprint = fnv1a(fingerprint_of.as_bytes());
    URL_SAFE_NO_PAD.encode(format!("v1:{fingerprint:016x}:{}:{}", cursor.at, cursor.id))
}

pub(crate) fn decode_token(fingerprint_of: &str, page: &PageRequest) -> StoreResult<Option<Cursor>> {
    let Some(token) = page.token.as_deref().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| StoreError::InvalidPageToken)?;
    let text = String::from_utf8(bytes).map_err(|_| StoreError::InvalidPageToken)?;
    let mut parts = text.splitn(4, ':');
    let (Some("v1"), Some(fingerprint), Some(at), Some(id)) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(StoreError::InvalidPageToken);
    };
    if u64::from_str_radix(fingerprint, 16).ok() != Some(fnv1a(fingerprint_of.as_bytes())) {
        return Err(StoreError::InvalidPageToken);
    }
    let at = at.parse().map_err(|_| StoreError::InvalidPageToken)?;
    Ok(Some(Cursor { at, id: id.to_owned() }))
}

/// Cuts the extra item read to know whether another page follows, and makes its token.
pub(crate) fn finish_page<T>(mut items: Vec<(T, Cursor)>, size: usize, fingerprint_of: &str) -> Page<T> {
    let next = if items.len() > size {
        items.truncate(size);
        items.last().map(|(_, c)| encode_token(fingerprint_of, c))
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

impl TelemetryStore for SqlStore {
    fn insert_events<'a>(&'a self, events: &'a [SecurityEvent]) -> BoxFuture<'a, StoreResult<u64>> {
        Box::pin(events::insert(self, events))
    }

    fn write_concurrency(&self) -> usize {
        // SQLite takes one writer at a time (a second waits on the lock); PostgreSQL's
        // connections write side by side, up to half the pool (the rest for searches).
        match self.backend() {
            DbBackend::Postgres => {
                let pool = self.db.get_postgres_connection_pool().options().get_max_connections();
                usize::try_from(pool / 2).unwrap_or(1).max(1)
            }
            _ => 1,
        }
    }

    fn search<'a>(
        &'a self,
        tenant: &'a str,
        query: &'a Query,
        range: TimeRange,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<SearchResult>> {
        Box::pin(events::search(self, tenant, query, range, page))
    }

    fn events<'a>(
        &'a self,
        tenant: &'a str,
        ids: &'a [CompactString],
    ) -> BoxFuture<'a, StoreResult<Vec<SecurityEvent>>> {
        Box::pin(events::by_ids(self, tenant, ids))
    }

    fn record_alert_changes<'a>(
        &'a self,
        changes: &'a [AlertChange],
        now: OffsetDateTime,
    ) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(alerts::record(self, changes, now))
    }

    fn list_alerts<'a>(
        &'a self,
        tenant: &'a str,
        filter: &'a AlertFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<StoredAlert>>> {
        Box::pin(alerts::list(self, tenant, filter, page))
    }

    fn alert<'a>(&'a self, tenant: &'a str, id: &'a str) -> BoxFuture<'a, StoreResult<Option<AlertDetail>>> {
        Box::pin(alerts::detail(self, tenant, id))
    }

    fn set_alert_status<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        status: AlertStatus,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, StoreResult<Option<StoredAlert>>> {
        Box::pin(alerts::set_status(self, tenant, id, status, now))
    }

    fn risk_scores<'a>(
        &'a self,
        tenant: &'a str,
        cluster: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<Vec<ClusterRisk>>> {
        Box::pin(alerts::risk(self, tenant, cluster))
    }

    fn open_alerts(&self) -> BoxFuture<'_, StoreResult<Vec<StoredAlert>>> {
        Box::pin(alerts::open(self))
    }

    fn record_admissions<'a>(&'a self, admissions: &'a [RecordedAdmission]) -> BoxFuture<'a, StoreResult<u64>> {
        Box::pin(events::record_admissions(self, admissions))
    }

    fn admissions<'a>(
        &'a self,
        tenant: &'a str,
        filter: &'a AdmissionFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<RecordedAdmission>>> {
        Box::pin(events::admissions(self, tenant, filter, page))
    }

    fn expire_tenant<'a>(
        &'a self,
        tenant: &'a str,
        before: OffsetDateTime,
        max_rows: u64,
    ) -> BoxFuture<'a, StoreResult<Expired>> {
        Box::pin(events::expire_tenant(self, tenant, before, max_rows))
    }

    fn expire_days<'a>(&'a self, before: OffsetDateTime, max_rows: u64) -> BoxFuture<'a, StoreResult<Expired>> {
        Box::pin(events::expire_days(self, before, max_rows))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_read_back_to_their_day() {
        let day = 20_429; // 2025-12-07
        let name = partition_name(day).unwrap();
        assert_eq!(name, "tm_events_p20251207");
        assert_eq!(partition_day(&name), Some(day));
        assert_eq!(partition_day("tm_events_default"), None);
        assert_eq!(
            partition_ddl(day).unwrap(),
            format!(
                "CREATE TABLE IF NOT EXISTS tm_events_p20251207 PARTITION OF tm_events FOR VALUES FROM ({}) TO ({})",
                day * DAY_MICROS,
                (day + 1) * DAY_MICROS
            )
        );
    }

    #[test]
    fn a_token_reads_back_only_for_its_listing() {
        let cursor = Cursor {
            at: 1_700_000_000_000_000,
            id: "ev:1".to_owned(),
        };
        let token = encode_token("search a", &cursor);
        let page = |t: &str| PageRequest {
            size: 10,
            token: Some(t.to_owned()),
        };
        assert_eq!(decode_token("search a", &page(&token)).unwrap(), Some(cursor));
        assert!(matches!(
            decode_token("search b", &page(&token)),
            Err(StoreError::InvalidPageToken)
        ));
        assert!(matches!(
            decode_token("search a", &page("junk")),
            Err(StoreError::InvalidPageToken)
        ));
    }
}
