//! The telemetry service's schema.
//!
//! The service owns these tables: they are prefixed `tm_` and their migrations are recorded
//! in `pc_telemetry_migrations`, so that in embedded mode they share the SQLite file with the
//! other services' tables without either seeing the other's. `tenant_id` leads every primary
//! key and index, times are BIGINT microseconds since the Unix epoch, JSON is TEXT.
//!
//! The DDL is written per backend because the events table differs: on PostgreSQL it is
//! partitioned by range of `occurred_at`, one partition per UTC day (created on demand by
//! the store, see [`super::partition_ddl`]) and a DEFAULT partition as a safety net, so that
//! retention drops whole days; its primary key must then hold the partition key, and is
//! (tenant, id, occurred_at) — an event id always comes with the same time, since ids are
//! bus ids or derived from the event's content. Free text was first served by a trigram index
//! (`pg_trgm`); the second migration replaces it with a word index ([`SUMMARY_WORDS`], see
//! `crate::query` for the word semantics). On SQLite it is one plain table keyed by (tenant,
//! id).

use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

/// Runs the telemetry service's migrations.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(M0001Initial), Box::new(M0002SummaryWords)]
    }

    fn migration_table_name() -> DynIden {
        "pc_telemetry_migrations".into_iden()
    }
}

/// The first schema.
struct M0001Initial;

impl MigrationName for M0001Initial {
    fn name(&self) -> &str {
        "m0001_telemetry_initial"
    }
}

/// The words of an event's summary as PostgreSQL indexes them: a `tsvector` of the runs of
/// ASCII letters and digits, lowercased (the `C` collation lowers ASCII only), built without
/// the text-search parser so that a word is exactly what `crate::query::words` calls one.
/// Without positions: a phrase is checked again on the summary (`storage::events`).
pub(crate) const SUMMARY_WORDS: &str =
    r#"array_to_tsvector(array_remove(regexp_split_to_array(lower(summary COLLATE "C"), '[^a-z0-9]+'), ''))"#;

/// The word index of free text instead of the trigram index (issue 20: free text over 10
/// million events in under 200 ms). A GIN of the summary's words holds a few dozen entries per
/// event where the trigram index held hundreds, so it also costs the insert less. Built on
/// the partitioned table, hence on every partition, existing and future; SQLite has nothing
/// to do (its search reads candidates with `LIKE` and checks the words, `storage::events`).
struct M0002SummaryWords;

impl MigrationName for M0002SummaryWords {
    fn name(&self) -> &str {
        "m0002_telemetry_summary_words"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0002SummaryWords {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX IF EXISTS ix_tm_events_summary")
            .await?;
        db.execute_unprepared(&format!(
            "CREATE INDEX ix_tm_events_summary_words ON tm_events USING gin (({SUMMARY_WORDS}))"
        ))
        .await?;
        Ok(())
    }
}

/// The event columns after the key, shared by both backends (type names are portable).
const EVENT_COLUMNS: &str = "
    cluster_id TEXT NOT NULL,
    source TEXT NOT NULL,
    severity SMALLINT NOT NULL,
    rule TEXT NOT NULL,
    summary TEXT NOT NULL,
    action TEXT NOT NULL,
    namespace TEXT NOT NULL,
    pod TEXT NOT NULL,
    pod_uid TEXT NOT NULL,
    container TEXT NOT NULL,
    image TEXT NOT NULL,
    image_repo TEXT NOT NULL,
    digest TEXT NOT NULL,
    subresource TEXT NOT NULL,
    workload_kind TEXT NOT NULL,
    workload_name TEXT NOT NULL,
    labels TEXT NULL,
    mitigation TEXT NULL,
    details TEXT NOT NULL";

/// The search indexes: time alone, then one per term field, each ending with the time so a
/// term's newest matches are read in order.
const EVENT_INDEXES: &[(&str, &str)] = &[
    ("ix_tm_events_time", "tenant_id, occurred_at DESC, id DESC"),
    ("ix_tm_events_cluster", "tenant_id, cluster_id, occurred_at DESC"),
    ("ix_tm_events_namespace", "tenant_id, namespace, occurred_at DESC"),
    ("ix_tm_events_pod", "tenant_id, pod, occurred_at DESC"),
    ("ix_tm_events_rule", "tenant_id, rule, occurred_at DESC"),
    ("ix_tm_events_image_repo", "tenant_id, image_repo, occurred_at DESC"),
    ("ix_tm_events_digest", "tenant_id, digest, occurred_at DESC"),
    ("ix_tm_events_workload", "tenant_id, workload_name, occurred_at DESC"),
    ("ix_tm_events_source", "tenant_id, source, occurred_at DESC"),
    ("ix_tm_events_action", "tenant_id, action, occurred_at DESC"),
];

#[async_trait::async_trait]
impl MigrationTrait for M0001Initial {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let backend = manager.get_database_backend();
        let mut statements = Vec::new();
        match backend {
            DbBackend::Postgres => {
                statements.push("CREATE EXTENSION IF NOT EXISTS pg_trgm".to_owned());
                statements.push(format!(
                    "CREATE TABLE tm_events (tenant_id TEXT NOT NULL, id TEXT NOT NULL, occurred_at BIGINT NOT NULL, {EVENT_COLUMNS}, PRIMARY KEY (tenant_id, id, occurred_at)) PARTITION BY RANGE (occurred_at)"
                ));
                statements.push("CREATE TABLE tm_events_default PARTITION OF tm_events DEFAULT".to_owned());
                statements
                    .push("CREATE INDEX ix_tm_events_summary ON tm_events USING gin (summary gin_trgm_ops)".to_owned());
            }
            _ => {
                statements.push(format!(
                    "CREATE TABLE tm_events (tenant_id TEXT NOT NULL, id TEXT NOT NULL, occurred_at BIGINT NOT NULL, {EVENT_COLUMNS}, PRIMARY KEY (tenant_id, id))"
                ));
            }
        }
        for (name, cols) in EVENT_INDEXES {
            statements.push(format!("CREATE INDEX {name} ON tm_events ({cols})"));
        }
        let blob = if backend == DbBackend::Postgres {
            "BYTEA"
        } else {
            "BLOB"
        };
        statements.extend([
            "CREATE TABLE tm_alerts (
                tenant_id TEXT NOT NULL, id TEXT NOT NULL, rule TEXT NOT NULL, alert_key TEXT NOT NULL,
                title TEXT NOT NULL, severity SMALLINT NOT NULL, status TEXT NOT NULL, entity TEXT NOT NULL,
                event_count BIGINT NOT NULL, first_event_at BIGINT NOT NULL, last_event_at BIGINT NOT NULL,
                created_at BIGINT NOT NULL, status_changed_at BIGINT NOT NULL,
                PRIMARY KEY (tenant_id, id))"
                .to_owned(),
            "CREATE INDEX ix_tm_alerts_last ON tm_alerts (tenant_id, last_event_at DESC, id DESC)".to_owned(),
            "CREATE INDEX ix_tm_alerts_status ON tm_alerts (status)".to_owned(),
            // The clusters an alert counts in (an alert over several clusters counts in each).
            "CREATE TABLE tm_alert_clusters (
                tenant_id TEXT NOT NULL, alert_id TEXT NOT NULL, cluster_id TEXT NOT NULL, position BIGINT NOT NULL,
                PRIMARY KEY (tenant_id, alert_id, cluster_id))"
                .to_owned(),
            "CREATE INDEX ix_tm_alert_clusters_cluster ON tm_alert_clusters (tenant_id, cluster_id)".to_owned(),
            "CREATE TABLE tm_alert_events (
                tenant_id TEXT NOT NULL, alert_id TEXT NOT NULL, event_id TEXT NOT NULL, seq BIGINT NOT NULL,
                PRIMARY KEY (tenant_id, alert_id, event_id))"
                .to_owned(),
            format!(
                "CREATE TABLE tm_admissions (
                    tenant_id TEXT NOT NULL, event_id TEXT NOT NULL, cluster_id TEXT NOT NULL, namespace TEXT NOT NULL,
                    workload_kind TEXT NOT NULL, workload_name TEXT NOT NULL, decided_at BIGINT NOT NULL,
                    allowed BIGINT NOT NULL, violations TEXT NOT NULL, projection {blob} NOT NULL,
                    PRIMARY KEY (tenant_id, event_id))"
            ),
            "CREATE INDEX ix_tm_admissions_time ON tm_admissions (tenant_id, decided_at, event_id)".to_owned(),
            "CREATE INDEX ix_tm_admissions_cluster ON tm_admissions (tenant_id, cluster_id, decided_at, event_id)"
                .to_owned(),
        ]);
        for sql in statements {
            db.execute_unprepared(&sql).await?;
        }
        Ok(())
    }
}
