//! What the telemetry service keeps, and the contract of the storage that keeps it.
//!
//! The store holds the security events (searchable, kept for each tenant's retention), the
//! correlated alerts with their events and lifecycle, and the recorded admissions (the
//! reviewed pod projections of admission decisions, for the replay of a draft policy).
//!
//! Every read takes the caller's tenant and reads only that tenant's rows. Writes of events
//! and admissions carry each item's own tenant (one ingest batch may hold several tenants).
//!
//! Times are kept to the microsecond: what is written is truncated, and what the store
//! returns is what it will read back.

use std::future::Future;
use std::pin::Pin;

use compact_str::CompactString;
use time::OffsetDateTime;

use crate::alert::{AlertStatus, InvalidTransition};
use crate::correlate::AlertChange;
use crate::entity::Workload;
use crate::event::{SecurityEvent, Severity};
use crate::query::Query;

/// A boxed, sendable future (the store is used behind `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Searches count matching events exactly up to this many; beyond, the count is this and
/// flagged as a lower bound ("10,000+").
pub const COUNT_LIMIT: u64 = 10_000;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or failed.
    #[error("telemetry store unavailable: {0}")]
    Unavailable(String),
    /// A page token that this store did not issue (or issued for another search or filter).
    #[error("invalid page token")]
    InvalidPageToken,
    /// An alert status change the lifecycle does not allow.
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    /// A time range whose end is not after its start.
    #[error("invalid time range: the end must be after the start")]
    InvalidTimeRange,
    /// A stored row that cannot be read back (a bug, or a row written by a newer version).
    #[error("unreadable stored row: {0}")]
    Corrupt(String),
}

/// A store result.
pub type StoreResult<T> = Result<T, StoreError>;

/// A half-open time range `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// The start (included).
    pub from: OffsetDateTime,
    /// The end (excluded).
    pub to: OffsetDateTime,
}

/// Which page of a listing to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Items per page; 0 for the default (100), at most 1,000.
    pub size: u32,
    /// The token of the previous page's `next`; `None` for the first page.
    pub token: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// The token of the next page; `None` on the last page.
    pub next: Option<String>,
}

/// The answer to a search: one page of events, newest first, and how many match in all.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    /// The page's events, newest first (ties by id, descending).
    pub events: Vec<SecurityEvent>,
    /// The token of the next page; `None` on the last page.
    pub next: Option<String>,
    /// How many events match the query in the range: exact up to [`COUNT_LIMIT`], else
    /// [`COUNT_LIMIT`].
    pub total: u64,
    /// True when more than [`COUNT_LIMIT`] match (`total` is a lower bound).
    pub total_is_lower_bound: bool,
}

/// An alert as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAlert {
    /// Its id (the correlator's).
    pub id: CompactString,
    /// Id of the tenant.
    pub tenant_id: CompactString,
    /// The correlation rule's name.
    pub rule: CompactString,
    /// The rule and entity key ([`crate::correlate::NewAlert::key`]).
    pub key: String,
    /// The title.
    pub title: String,
    /// The severity.
    pub severity: Severity,
    /// Its status.
    pub status: AlertStatus,
    /// The clusters of its events (it counts in each one's risk score), in order of first
    /// appearance.
    pub cluster_ids: Vec<CompactString>,
    /// The entity fields' values: (field name, value).
    pub entity: Vec<(String, String)>,
    /// How many events it has.
    pub event_count: u64,
    /// Time of its first event.
    pub first_event_at: OffsetDateTime,
    /// Time of its latest event.
    pub last_event_at: OffsetDateTime,
    /// When it was stored.
    pub created_at: OffsetDateTime,
    /// When its status last changed (its creation, at first).
    pub status_changed_at: OffsetDateTime,
}

/// An alert with its events.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertDetail {
    /// The alert.
    pub alert: StoredAlert,
    /// The ids of its events, in the order they joined it (the story's event-time order).
    pub event_ids: Vec<CompactString>,
    /// Those of its events still stored (retention may have removed some), in event-time
    /// order.
    pub events: Vec<SecurityEvent>,
}

/// Filters of the alerts listing; every filter given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    /// Alerts counting in this cluster.
    pub cluster_id: Option<String>,
    /// Alerts with one of these statuses (empty: any).
    pub statuses: Vec<AlertStatus>,
    /// Alerts of at least this severity.
    pub min_severity: Option<Severity>,
}

/// A cluster's risk score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRisk {
    /// Id of the cluster.
    pub cluster_id: String,
    /// The sum over its open and acknowledged alerts of [`crate::alert::risk_weight`].
    pub score: u64,
    /// How many open and acknowledged alerts count in it.
    pub open_alerts: u64,
}

/// An admission decision as recorded for replay: what was reviewed and what was decided.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedAdmission {
    /// Id of the tenant.
    pub tenant_id: CompactString,
    /// Id of the decision event (idempotent on tenant and this id).
    pub event_id: CompactString,
    /// Id of the cluster.
    pub cluster_id: CompactString,
    /// The namespace reviewed.
    pub namespace: CompactString,
    /// The owning workload, when known.
    pub workload: Option<Workload>,
    /// When it was decided.
    pub decided_at: OffsetDateTime,
    /// Whether it was allowed (log-only violations are allowed).
    pub allowed: bool,
    /// The violations decided, as JSON (opaque to the store).
    pub violations_json: String,
    /// The reviewed pod projection, as the admission event carries it (opaque to the store).
    pub projection: Vec<u8>,
}

/// Which recorded admissions to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdmissionFilter {
    /// Only this cluster's.
    pub cluster_id: Option<String>,
    /// Only those decided at or after this time.
    pub since: Option<OffsetDateTime>,
}

/// What one call of an expiry did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    /// Rows deleted (rows of dropped partitions are not counted: see `partitions_dropped`).
    pub deleted: u64,
    /// Whole day partitions dropped (PostgreSQL).
    pub partitions_dropped: u64,
    /// True when the bound was reached and older rows may remain: call again.
    pub more: bool,
}

/// The telemetry service's storage.
pub trait TelemetryStore: Send + Sync {
    /// Stores events (each under its own tenant); an event whose (tenant, id) is already
    /// stored is skipped. Returns how many were new.
    fn insert_events<'a>(&'a self, events: &'a [SecurityEvent]) -> BoxFuture<'a, StoreResult<u64>>;

    /// How many writes ([`TelemetryStore::insert_events`] and the others) are worth running at
    /// once: more than one only where they do not just wait for each other (default 1).
    fn write_concurrency(&self) -> usize {
        1
    }

    /// The tenant's events in `range` that match `query`, newest first, one page, with the
    /// count of all matches (exact up to [`COUNT_LIMIT`]).
    fn search<'a>(
        &'a self,
        tenant: &'a str,
        query: &'a Query,
        range: TimeRange,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<SearchResult>>;

    /// The tenant's events of these ids that are stored, newest first.
    fn events<'a>(
        &'a self,
        tenant: &'a str,
        ids: &'a [CompactString],
    ) -> BoxFuture<'a, StoreResult<Vec<SecurityEvent>>>;

    /// Records the correlator's alert changes: an opened alert is stored with its events
    /// (status open; already stored: its events are added, nothing else changes), events
    /// added to an alert join it (events already in it are skipped; an unknown alert is
    /// ignored). Each change under its own tenant; all in one transaction.
    fn record_alert_changes<'a>(
        &'a self,
        changes: &'a [AlertChange],
        now: OffsetDateTime,
    ) -> BoxFuture<'a, StoreResult<()>>;

    /// The tenant's alerts that pass `filter`, latest event first.
    fn list_alerts<'a>(
        &'a self,
        tenant: &'a str,
        filter: &'a AlertFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<StoredAlert>>>;

    /// One of the tenant's alerts with its events; `None` when there is none of that id.
    fn alert<'a>(&'a self, tenant: &'a str, id: &'a str) -> BoxFuture<'a, StoreResult<Option<AlertDetail>>>;

    /// Changes an alert's status along the lifecycle ([`AlertStatus::transition`]): the
    /// alert after the change (unchanged when it already had that status); `None` when the
    /// tenant has no alert of that id; [`StoreError::InvalidTransition`] when the lifecycle
    /// does not allow it.
    fn set_alert_status<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        status: AlertStatus,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, StoreResult<Option<StoredAlert>>>;

    /// The risk score of each of the tenant's clusters with open or acknowledged alerts (or
    /// only of `cluster` when given, with score 0 when it has none), by cluster id.
    fn risk_scores<'a>(
        &'a self,
        tenant: &'a str,
        cluster: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<Vec<ClusterRisk>>>;

    /// Every tenant's open and acknowledged alerts (the correlator re-attaches them after a
    /// restart with [`crate::correlate::Correlator::adopt_alert`]).
    fn open_alerts(&self) -> BoxFuture<'_, StoreResult<Vec<StoredAlert>>>;

    /// Records admissions for replay (each under its own tenant), idempotent on (tenant,
    /// event id). Returns how many were new.
    fn record_admissions<'a>(&'a self, admissions: &'a [RecordedAdmission]) -> BoxFuture<'a, StoreResult<u64>>;

    /// The tenant's recorded admissions that pass `filter`, oldest first.
    fn admissions<'a>(
        &'a self,
        tenant: &'a str,
        filter: &'a AdmissionFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<RecordedAdmission>>>;

    /// Deletes at most `max_rows` of the tenant's events (and recorded admissions) that
    /// occurred before `before`. Call again while [`Expired::more`].
    fn expire_tenant<'a>(
        &'a self,
        tenant: &'a str,
        before: OffsetDateTime,
        max_rows: u64,
    ) -> BoxFuture<'a, StoreResult<Expired>>;

    /// Drops, for every tenant, the stored events of the whole days (UTC) that end at or
    /// before `before` (the caller passes now minus the longest retention of any tenant). On
    /// PostgreSQL it drops day partitions; on SQLite it deletes at most `max_rows` rows.
    fn expire_days<'a>(&'a self, before: OffsetDateTime, max_rows: u64) -> BoxFuture<'a, StoreResult<Expired>>;
}
