//! The store: one connection pool, the migrations, and the transaction helper every write
//! goes through (audit entry and outbox event in the same transaction as the change).

use portcullis_domain::TenantId;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_proto::events::v1::EventEnvelope;
use portcullis_proto::events::v1::event_envelope::Payload;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, Database, DatabaseConnection, DatabaseTransaction, EntityTrait};
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::clock::{Clock, SystemClock, to_micros};
use crate::entity::{audit_log, outbox, tenant};
use crate::error::{StoreError, StoreResult};
use crate::events::envelope;
use crate::migration::Migrator;
use crate::model::{Actor, PageRequest};

/// Which database the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL (distributed mode).
    Postgres,
    /// SQLite, a file (embedded mode).
    Sqlite,
}

/// How to open the store.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreOptions {
    /// Where the store reads the time.
    #[serde(skip)]
    pub clock: Arc<dyn Clock>,
    /// The envelope's `producer`, e.g. `policy-store/3`.
    #[serde(skip)]
    pub producer: String,
    /// The pool size; default 10 for PostgreSQL, 4 for SQLite.
    pub max_connections: Option<u32>,
    /// How long a SQLite writer waits for the write lock.
    #[serde(with = "humantime_serde")]
    pub sqlite_busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            clock: Arc::new(SystemClock),
            producer: "policy-store".to_owned(),
            max_connections: None,
            sqlite_busy_timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("producer", &self.producer)
            .field("max_connections", &self.max_connections)
            .field("sqlite_busy_timeout", &self.sqlite_busy_timeout)
            .finish_non_exhaustive()
    }
}

/// The policy store's database. Cheap to clone (one shared pool).
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub db: DatabaseConnection,
    pub backend: Backend,
    pub clock: Arc<dyn Clock>,
    pub producer: String,
    /// Woken after every commit that wrote an event, so relays publish at once.
    pub outbox_signal: Arc<Notify>,
    /// Lets one relay of this process drain at a time (SQLite has no row locks).
    pub relay_lock: Arc<tokio::sync::Mutex<()>>,
    /// Told about the events of every commit (see [`CommitListener`]).
    pub listeners: RwLock<Vec<Weak<dyn CommitListener>>>,
}

/// Told, synchronously, about the events of every transaction of a store (and its clones)
/// right after it commits and before the writing method returns: an in-process cache can
/// drop what changed before the caller hears of the change. Other processes learn of it
/// from the bus instead.
pub trait CommitListener: Send + Sync + 'static {
    /// The events `events` (in the order written) were committed. Must be quick and must
    /// not block: it runs inside the writing call.
    fn committed(&self, events: &[EventEnvelope]);
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend)
            .finish_non_exhaustive()
    }
}

/// The relay lock of a database: shared by every store of this process on the same URL, so
/// that relays of two stores on one SQLite file also take turns.
fn relay_lock_for(url: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    > = std::sync::OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    locks.entry(url.to_owned()).or_default().clone()
}

/// Lock key of the PostgreSQL advisory lock that serialises migrations of several replicas.
const MIGRATION_LOCK_KEY: i64 = 0x7063_5f73_746f_7265; // "pc_store"

impl Store {
    /// Opens the store at `url` (`postgres://…`, `postgresql://…` or `sqlite://PATH?mode=rwc`)
    /// and runs the migrations.
    pub async fn connect(url: &str) -> StoreResult<Store> {
        Store::connect_with(url, StoreOptions::default()).await
    }

    /// Opens the store with options.
    pub async fn connect_with(url: &str, options: StoreOptions) -> StoreResult<Store> {
        // The pool and SQLite options every store shares (see `portcullis_sql`): WAL lets
        // readers run beside the one writer; writes begin IMMEDIATE (see `Store::write`) so
        // that no transaction has to upgrade a read lock.
        let pool = portcullis_sql::PoolOptions {
            max_connections: options.max_connections,
            sqlite_busy_timeout: options.sqlite_busy_timeout,
        };
        let (connect, backend) = portcullis_sql::connect_options(url, &pool).map_err(|_| {
            StoreError::invalid("database_url", "must start with postgres://, postgresql:// or sqlite:")
        })?;
        let backend = match backend {
            portcullis_sql::Backend::Postgres => Backend::Postgres,
            portcullis_sql::Backend::Sqlite => Backend::Sqlite,
        };
        let db = Database::connect(connect).await.map_err(StoreError::Database)?;
        let store = Store {
            inner: Arc::new(Inner {
                db,
                backend,
                clock: options.clock,
                producer: options.producer,
                outbox_signal: Arc::new(Notify::new()),
                relay_lock: relay_lock_for(url),
                listeners: RwLock::new(Vec::new()),
            }),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> StoreResult<()> {
        Ok(portcullis_sql::migrate::<Migrator>(&self.inner.db, MIGRATION_LOCK_KEY).await?)
    }

    /// The database this store runs on.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The underlying connection pool (for health checks and tests).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.inner.db
    }

    /// Now, by the store's clock.
    pub fn now(&self) -> OffsetDateTime {
        self.inner.clock.now()
    }

    /// Closes the pool.
    pub async fn close(self) -> StoreResult<()> {
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner.db.close().await.map_err(StoreError::Database),
            // Other clones (a relay) still use the pool; it closes when the last one goes.
            Err(_) => Ok(()),
        }
    }

    /// Wakes the outbox relays of this store.
    pub fn notify_outbox(&self) {
        self.inner.outbox_signal.notify_one();
    }

    /// Registers `listener` for the events of every later commit of this store (and its
    /// clones), for as long as it lives: the store keeps only a weak reference.
    pub fn add_commit_listener(&self, listener: Weak<dyn CommitListener>) {
        let mut listeners = self.inner.listeners.write().unwrap_or_else(PoisonError::into_inner);
        listeners.retain(|l| l.strong_count() > 0);
        listeners.push(listener);
    }

    fn notify_committed(&self, events: &[EventEnvelope]) {
        let listeners = self.inner.listeners.read().unwrap_or_else(PoisonError::into_inner);
        for listener in listeners.iter().filter_map(Weak::upgrade) {
            listener.committed(events);
        }
    }

    /// Begins a write transaction on behalf of `actor`.
    pub(crate) async fn write<'a>(&'a self, actor: &'a Actor) -> StoreResult<Tx<'a>> {
        let db = portcullis_sql::begin_write(&self.inner.db).await?;
        let now = crate::clock::truncate(self.now());
        Ok(Tx {
            db,
            store: self,
            actor,
            now,
            events: Vec::new(),
        })
    }

    /// A condition: column `col` contains `needle` (case-sensitive, no wildcards).
    pub(crate) fn contains(&self, col: &'static str, needle: &str) -> sea_orm::sea_query::SimpleExpr {
        // LIKE would read `_` as a wildcard and is case-insensitive on SQLite.
        let sql = match self.inner.backend {
            Backend::Postgres => format!("strpos(\"{col}\", $1)"),
            Backend::Sqlite => format!("instr(\"{col}\", ?)"),
        };
        Expr::cust_with_values(sql, [needle.to_owned()]).gt(0)
    }
}

/// A write transaction with its actor and time: records audit entries and events that commit
/// or roll back with the change.
pub(crate) struct Tx<'a> {
    pub db: DatabaseTransaction,
    store: &'a Store,
    pub actor: &'a Actor,
    /// The time of the change (truncated to microseconds, as stored).
    pub now: OffsetDateTime,
    /// The events written so far, for the commit listeners.
    events: Vec<EventEnvelope>,
}

impl Tx<'_> {
    /// The time of the change as stored.
    pub fn now_us(&self) -> i64 {
        to_micros(self.now)
    }

    /// Records an administrative change in the tenant's audit log.
    pub async fn audit(
        &self,
        tenant_id: &str,
        action: &str,
        resource: AuditResource<'_>,
        detail: serde_json::Value,
    ) -> StoreResult<()> {
        audit_log::ActiveModel {
            tenant_id: Set(tenant_id.to_owned()),
            actor_key_id: Set(self.actor.key_id_str().to_owned()),
            actor_role: Set(self.actor.role.map(|r| r.as_str().to_owned())),
            action: Set(action.to_owned()),
            resource_type: Set(resource.kind.to_owned()),
            resource_id: Set(resource.id.to_owned()),
            resource_name: Set(resource.name.to_owned()),
            detail: Set(detail.to_string()),
            trace_id: Set(self.actor.trace_id().unwrap_or("").to_owned()),
            at: Set(self.now_us()),
            ..Default::default()
        }
        .insert(&self.db)
        .await?;
        Ok(())
    }

    /// Writes an event into the outbox.
    pub async fn event(&mut self, tenant_id: &str, payload: Payload) -> StoreResult<()> {
        let encoded = envelope(tenant_id, &self.store.inner.producer, self.actor, self.now, payload);
        outbox::Entity::insert(outbox::ActiveModel {
            event_id: Set(encoded.event_id),
            tenant_id: Set(tenant_id.to_owned()),
            topic: Set(encoded.topic.to_owned()),
            payload: Set(encoded.payload),
            created_at: Set(self.now_us()),
            ..Default::default()
        })
        .exec(&self.db)
        .await?;
        self.events.push(encoded.envelope);
        Ok(())
    }

    /// Commits, then (if events were written) tells the commit listeners and wakes the relays.
    pub async fn commit(self) -> StoreResult<()> {
        let events = self.events;
        let store = self.store;
        self.db.commit().await?;
        if !events.is_empty() {
            store.notify_committed(&events);
            store.notify_outbox();
        }
        Ok(())
    }

    /// Fails with NotFound unless the tenant exists.
    pub async fn require_tenant(&self, tenant_id: &str) -> StoreResult<()> {
        check_tenant_id(tenant_id)?;
        match tenant::Entity::find_by_id(tenant_id.to_owned()).one(&self.db).await? {
            Some(_) => Ok(()),
            None => Err(StoreError::not_found("tenant", format!("{tenant_id:?}"))),
        }
    }
}

/// What an audit entry is about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuditResource<'a> {
    pub kind: &'a str,
    pub id: &'a str,
    pub name: &'a str,
}

/// Whether `id` is a tenant id: `[a-z0-9-]{1,36}` (the rule is `TenantId::is_valid`).
pub fn is_valid_tenant_id(id: &str) -> bool {
    TenantId::is_valid(id)
}

/// InvalidArgument unless `id` is a tenant id.
pub(crate) fn check_tenant_id(id: &str) -> StoreResult<()> {
    TenantId::parse(id)
        .map(drop)
        .map_err(|e| StoreError::invalid(e.field, e.reason))
}

/// The default page size.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// The largest page size; larger requests are cut to it.
pub const MAX_PAGE_SIZE: u32 = 500;

/// The number of rows to read for a page: one more than its size, to know whether another
/// page follows.
pub(crate) fn page_limit(page: &PageRequest) -> u64 {
    u64::from(page_size(page)) + 1
}

pub(crate) fn page_size(page: &PageRequest) -> u32 {
    match page.size {
        0 => DEFAULT_PAGE_SIZE,
        n => std::cmp::min(n, MAX_PAGE_SIZE),
    }
}

/// Encodes a page cursor.
pub(crate) fn encode_token(cursor: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{cursor}"))
}

/// Decodes the cursor of a page request.
pub(crate) fn decode_token(page: &PageRequest) -> StoreResult<Option<String>> {
    let Some(token) = page.token.as_deref().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let bad = || StoreError::invalid("page_token", "not a page token of this listing");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    text.strip_prefix("v1:").map(|s| Some(s.to_owned())).ok_or_else(bad)
}

/// Decodes an integer cursor.
pub(crate) fn decode_int_token(page: &PageRequest) -> StoreResult<Option<i64>> {
    decode_token(page)?
        .map(|s| {
            s.parse::<i64>()
                .map_err(|_| StoreError::invalid("page_token", "not a page token of this listing"))
        })
        .transpose()
}

/// Cuts the extra row read by [`page_limit`] and makes the next token from the last item.
pub(crate) fn finish_page<T>(
    mut items: Vec<T>,
    page: &PageRequest,
    cursor: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let size = usize::try_from(page_size(page)).unwrap_or(usize::MAX);
    if items.len() > size {
        items.truncate(size);
        let next = items.last().map(|last| encode_token(&cursor(last)));
        (items, next)
    } else {
        (items, None)
    }
}
