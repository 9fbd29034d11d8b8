//! The inventory: `cn_clusters` (snapshot generations), `cn_pods` and `cn_pod_digests`.

use std::collections::{BTreeSet, HashMap, HashSet};

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Order as SqlOrder, Query};
use sea_orm::sqlx::{self, Row as _};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use time::OffsetDateTime;

use super::{
    ROWS_PER_STATEMENT, SqlStore, build_error, col_eq, fnv1a_i64, from_micros, get, in_chunks, micros, scope, truncate,
};
use crate::inventory::PodProjection;
use crate::store::{ClusterPods, InventoryApplied, InventoryWrite, StoreError, StoreResult, StoredPod};

/// Applies one inventory write in one transaction.
pub(super) async fn write(
    store: &SqlStore,
    tenant: &str,
    cluster: &str,
    write: InventoryWrite,
    now: OffsetDateTime,
) -> StoreResult<InventoryApplied> {
    let now = truncate(now);
    let ended = write == InventoryWrite::EndSnapshot;
    let write = match write {
        InventoryWrite::Upsert(pods) if store.db.get_database_backend() == DbBackend::Postgres => {
            return upsert_postgres(store.db.get_postgres_connection_pool(), tenant, cluster, pods, now).await;
        }
        other => other,
    };
    let tx = store.begin().await?;
    let applied = match write {
        InventoryWrite::BeginSnapshot => {
            let stmt = Query::insert()
                .into_table("cn_clusters")
                .columns(["tenant_id", "cluster_id", "generation", "findings_version"])
                .values([tenant.into(), cluster.into(), 1i64.into(), 0i64.into()])
                .map_err(build_error)?
                .on_conflict(
                    OnConflict::columns(["tenant_id", "cluster_id"])
                        .value("generation", Expr::col(("cn_clusters", "generation")).add(1))
                        .to_owned(),
                )
                .to_owned();
            tx.execute(&stmt).await?;
            InventoryApplied::default()
        }
        InventoryWrite::Upsert(pods) => {
            let generation = generation(&tx, tenant, cluster).await?;
            upsert(&tx, tenant, cluster, pods, generation, now).await?
        }
        InventoryWrite::Delete(uids) => InventoryApplied {
            changed: Vec::new(),
            removed: delete(&tx, tenant, cluster, Some(&uids), None).await?,
        },
        InventoryWrite::EndSnapshot => {
            let generation = generation(&tx, tenant, cluster).await?;
            InventoryApplied {
                changed: Vec::new(),
                removed: delete(&tx, tenant, cluster, None, Some(generation)).await?,
            }
        }
    };
    tx.commit().await?;
    if ended {
        analyze_if_never(&store.db).await?;
    }
    Ok(applied)
}

/// On PostgreSQL, analyzes the inventory's tables once, after the first snapshot that filled
/// them: until a table has statistics the planner reads a `uid IN (...)` list as a filter
/// over the whole cluster instead of probing the index (a 10%-changed snapshot of 100,000
/// pods rewrote its digests page after page that way), and autovacuum may be off or late.
async fn analyze_if_never(db: &DatabaseConnection) -> StoreResult<()> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let never = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS never FROM pg_class WHERE relname IN ('cn_pods', 'cn_pod_digests') \
             AND relkind = 'r' AND relnamespace = current_schema()::regnamespace AND reltuples < 0",
        ))
        .await?;
    if let Some(row) = never
        && get::<i64>(&row, "never")? > 0
    {
        db.execute_unprepared("ANALYZE cn_pods, cn_pod_digests").await?;
    }
    Ok(())
}

/// The cluster's snapshot generation (its row made, at 0, when there is none yet).
async fn generation<C: ConnectionTrait>(db: &C, tenant: &str, cluster: &str) -> StoreResult<i64> {
    let select = Query::select()
        .column("generation")
        .from("cn_clusters")
        .and_where(scope(tenant, cluster))
        .to_owned();
    if let Some(row) = db.query_one(&select).await? {
        return get(&row, "generation");
    }
    ensure_cluster(db, tenant, cluster).await?;
    Ok(0)
}

/// Makes the cluster's row (generation and findings version 0) unless it exists.
pub(super) async fn ensure_cluster<C: ConnectionTrait>(db: &C, tenant: &str, cluster: &str) -> StoreResult<()> {
    let stmt = Query::insert()
        .into_table("cn_clusters")
        .columns(["tenant_id", "cluster_id", "generation", "findings_version"])
        .values([tenant.into(), cluster.into(), 0i64.into(), 0i64.into()])
        .map_err(build_error)?
        .on_conflict(OnConflict::columns(["tenant_id", "cluster_id"]).do_nothing().to_owned())
        .to_owned();
    // `ON CONFLICT DO NOTHING` inserts nothing on a conflict: sea-orm calls that an error
    // only on its `Insert` executor, not on a raw statement.
    db.execute(&stmt).await?;
    Ok(())
}

/// `cn_pods.change` after an upsert: the pod was inserted.
const CHANGE_INSERTED: i32 = 2;
/// Updated with another projection.
const CHANGE_UPDATED: i32 = 1;
/// Re-sent unchanged (only its generation and sync time moved).
const CHANGE_NONE: i32 = 0;

/// A pod ready to write.
struct Row<'a> {
    uid: &'a str,
    namespace: &'a str,
    name: &'a str,
    projection: Vec<u8>,
    hash: i64,
    digests: BTreeSet<&'a str>,
}

/// The pods of a write as rows: one per uid, the last sent winning (a statement may not
/// upsert a row twice), in the order sent.
fn rows(pods: &[PodProjection]) -> StoreResult<Vec<Row<'_>>> {
    let mut last: HashMap<&str, usize> = HashMap::with_capacity(pods.len());
    for (i, pod) in pods.iter().enumerate() {
        last.insert(pod.uid(), i);
    }
    let mut rows = Vec::with_capacity(last.len());
    for (i, pod) in pods.iter().enumerate() {
        if last.get(pod.uid()) != Some(&i) {
            continue;
        }
        let projection = pod
            .to_row()
            .map_err(|e| StoreError::Corrupt(format!("pod {}: {e}", pod.uid())))?;
        rows.push(Row {
            uid: pod.uid(),
            namespace: pod.namespace(),
            name: pod.name(),
            hash: fnv1a_i64(&projection),
            projection,
            digests: pod.digests_run().collect(),
        });
    }
    Ok(rows)
}

/// What one chunk's upsert did, read from its `RETURNING uid, change`.
struct ChunkOutcome<'r, 'a> {
    /// Pods that existed with another projection (their stored digests are replaced).
    updated: Vec<&'a str>,
    /// Pods inserted or updated (their digests are written).
    changed: Vec<&'r Row<'a>>,
}

impl<'r, 'a> ChunkOutcome<'r, 'a> {
    /// Sorts the returned `(uid, change)` pairs of `chunk`'s upsert.
    fn read(chunk: &'r [Row<'a>], returned: impl IntoIterator<Item = (String, i32)>) -> StoreResult<Self> {
        let by_uid: HashMap<&str, &Row> = chunk.iter().map(|r| (r.uid, r)).collect();
        let mut outcome = ChunkOutcome {
            updated: Vec::new(),
            changed: Vec::new(),
        };
        for (uid, change) in returned {
            let Some(r) = by_uid.get(uid.as_str()) else {
                return Err(StoreError::Corrupt(format!("upsert returned uid {uid:?} not written")));
            };
            match change {
                CHANGE_NONE => {}
                CHANGE_UPDATED => {
                    outcome.updated.push(r.uid);
                    outcome.changed.push(r);
                }
                _ => outcome.changed.push(r),
            }
        }
        Ok(outcome)
    }

    /// The (uid, digest) pairs to write.
    fn digests(&self) -> Vec<(&'a str, &'a str)> {
        self.changed
            .iter()
            .flat_map(|r| r.digests.iter().map(|d| (r.uid, *d)))
            .collect()
    }

    /// Adds the changed uids to `applied`, in the order sent (RETURNING's order is not
    /// promised).
    fn report(&self, chunk: &[Row<'a>], applied: &mut InventoryApplied) {
        let changed_uids: HashSet<&str> = self.changed.iter().map(|r| r.uid).collect();
        applied.changed.extend(
            chunk
                .iter()
                .filter(|r| changed_uids.contains(r.uid))
                .map(|r| r.uid.to_owned()),
        );
    }
}

/// Upserts pods stamped with `generation`; reports the new and changed ones.
async fn upsert<C: ConnectionTrait>(
    db: &C,
    tenant: &str,
    cluster: &str,
    pods: Vec<PodProjection>,
    generation: i64,
    now: OffsetDateTime,
) -> StoreResult<InventoryApplied> {
    let rows = rows(&pods)?;
    let now_us = micros(now);
    let mut applied = InventoryApplied::default();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        // One upsert per chunk, whose RETURNING tells what it did (`change`): 2 inserted,
        // 1 updated with another projection, 0 re-sent unchanged (only stamped). No lookup
        // by a list of uids: before a new table's first ANALYZE, PostgreSQL plans such a
        // list as a filter over the whole cluster, and a first snapshot of 100,000 pods
        // slowed down page after page; ON CONFLICT always probes the primary key.
        let mut insert = Query::insert();
        insert.into_table("cn_pods").columns([
            "tenant_id",
            "cluster_id",
            "uid",
            "namespace",
            "name",
            "projection",
            "projection_hash",
            "generation",
            "synced_at",
            "change",
        ]);
        for r in chunk {
            insert
                .values([
                    tenant.into(),
                    cluster.into(),
                    r.uid.into(),
                    r.namespace.into(),
                    r.name.into(),
                    r.projection.clone().into(),
                    r.hash.into(),
                    generation.into(),
                    now_us.into(),
                    CHANGE_INSERTED.into(),
                ])
                .map_err(build_error)?;
        }
        insert
            .on_conflict(
                OnConflict::columns(["tenant_id", "cluster_id", "uid"])
                    .update_columns([
                        "namespace",
                        "name",
                        "projection",
                        "projection_hash",
                        "generation",
                        "synced_at",
                    ])
                    .value(
                        "change",
                        Expr::case(
                            Expr::col(("cn_pods", "projection_hash")).eq(Expr::col(("excluded", "projection_hash"))),
                            CHANGE_NONE,
                        )
                        .finally(CHANGE_UPDATED),
                    )
                    .to_owned(),
            )
            .returning(Query::returning().columns(["uid", "change"]));
        let mut returned = Vec::with_capacity(chunk.len());
        for row in db.query_all(&insert).await? {
            returned.push((get::<String>(&row, "uid")?, get::<i32>(&row, "change")?));
        }
        let outcome = ChunkOutcome::read(chunk, returned)?;
        // The digests of changed pods are written again.
        if !outcome.updated.is_empty() {
            let delete = Query::delete()
                .from_table("cn_pod_digests")
                .and_where(scope(tenant, cluster))
                .and_where(Expr::col("uid").is_in(outcome.updated.iter().copied()))
                .to_owned();
            db.execute(&delete).await?;
        }
        for part in outcome.digests().chunks(ROWS_PER_STATEMENT) {
            let mut insert = Query::insert();
            insert
                .into_table("cn_pod_digests")
                .columns(["tenant_id", "digest", "cluster_id", "uid"]);
            for (uid, digest) in part {
                insert
                    .values([tenant.into(), (*digest).into(), cluster.into(), (*uid).into()])
                    .map_err(build_error)?;
            }
            insert.on_conflict(
                OnConflict::columns(["tenant_id", "digest", "cluster_id", "uid"])
                    .do_nothing()
                    .to_owned(),
            );
            db.execute(&insert).await?;
        }
        outcome.report(chunk, &mut applied);
    }
    Ok(applied)
}

// ---------------------------------------------------------------------------------------
// PostgreSQL's path for pods written (snapshot pages and deltas).
//
// The same statements as `upsert`, the same `change` outcomes, but each column of a chunk
// is bound as one array and the rows come from `UNNEST`: 9 binds a statement instead of
// 5,000, so the statement text is the same for every chunk and sqlx prepares it once per
// connection, the server neither parses nor plans thousands of parameters, and the client
// does not build and encode them one value at a time. sea-query cannot bind arrays without
// its `postgres-array` feature (which would change every crate's sea-orm), so this path
// runs on the pool's sqlx connections, in a transaction of its own. SQLite keeps `upsert`.

/// The upsert of a chunk of pods from column arrays; `RETURNING` as `upsert`'s.
const PG_UPSERT_PODS: &str = "\
INSERT INTO cn_pods (tenant_id, cluster_id, uid, namespace, name, projection, projection_hash, \
generation, synced_at, change) \
SELECT $1, $2, p.uid, p.namespace, p.name, p.projection, p.projection_hash, $3, $4, $5 \
FROM UNNEST($6::text[], $7::text[], $8::text[], $9::bytea[], $10::int8[]) \
AS p(uid, namespace, name, projection, projection_hash) \
ON CONFLICT (tenant_id, cluster_id, uid) DO UPDATE SET namespace = excluded.namespace, \
name = excluded.name, projection = excluded.projection, projection_hash = excluded.projection_hash, \
generation = excluded.generation, synced_at = excluded.synced_at, \
change = CASE WHEN cn_pods.projection_hash = excluded.projection_hash THEN $11 ELSE $12 END \
RETURNING uid, change";

/// The digests of updated pods, dropped before their new ones are written.
const PG_DELETE_DIGESTS: &str =
    "DELETE FROM cn_pod_digests WHERE tenant_id = $1 AND cluster_id = $2 AND uid = ANY($3::text[])";

/// The digests of changed pods.
const PG_INSERT_DIGESTS: &str = "\
INSERT INTO cn_pod_digests (tenant_id, digest, cluster_id, uid) \
SELECT $1, d.digest, $2, d.uid FROM UNNEST($3::text[], $4::text[]) AS d(uid, digest) \
ON CONFLICT (tenant_id, digest, cluster_id, uid) DO NOTHING";

/// A failed sqlx call on PostgreSQL's path.
fn pg_error(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// `write` of [`InventoryWrite::Upsert`] on PostgreSQL, in one transaction.
async fn upsert_postgres(
    pool: &sqlx::PgPool,
    tenant: &str,
    cluster: &str,
    pods: Vec<PodProjection>,
    now: OffsetDateTime,
) -> StoreResult<InventoryApplied> {
    let rows = rows(&pods)?;
    let now_us = micros(now);
    let mut tx = pool.begin().await.map_err(pg_error)?;
    let generation = match sqlx::query("SELECT generation FROM cn_clusters WHERE tenant_id = $1 AND cluster_id = $2")
        .bind(tenant)
        .bind(cluster)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?
    {
        Some(row) => row
            .try_get::<i64, _>("generation")
            .map_err(|e| StoreError::Corrupt(format!("column generation: {e}")))?,
        None => {
            sqlx::query(
                "INSERT INTO cn_clusters (tenant_id, cluster_id, generation, findings_version) \
                 VALUES ($1, $2, 0, 0) ON CONFLICT (tenant_id, cluster_id) DO NOTHING",
            )
            .bind(tenant)
            .bind(cluster)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
            0
        }
    };
    let mut applied = InventoryApplied::default();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let returned = sqlx::query(PG_UPSERT_PODS)
            .bind(tenant)
            .bind(cluster)
            .bind(generation)
            .bind(now_us)
            .bind(CHANGE_INSERTED)
            .bind(chunk.iter().map(|r| r.uid).collect::<Vec<_>>())
            .bind(chunk.iter().map(|r| r.namespace).collect::<Vec<_>>())
            .bind(chunk.iter().map(|r| r.name).collect::<Vec<_>>())
            .bind(chunk.iter().map(|r| r.projection.as_slice()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|r| r.hash).collect::<Vec<_>>())
            .bind(CHANGE_NONE)
            .bind(CHANGE_UPDATED)
            .fetch_all(&mut *tx)
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get::<String, _>("uid")
                        .map_err(|e| StoreError::Corrupt(format!("column uid: {e}")))?,
                    row.try_get::<i32, _>("change")
                        .map_err(|e| StoreError::Corrupt(format!("column change: {e}")))?,
                ))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let outcome = ChunkOutcome::read(chunk, returned)?;
        if !outcome.updated.is_empty() {
            sqlx::query(PG_DELETE_DIGESTS)
                .bind(tenant)
                .bind(cluster)
                .bind(outcome.updated.clone())
                .execute(&mut *tx)
                .await
                .map_err(pg_error)?;
        }
        let digests = outcome.digests();
        if !digests.is_empty() {
            sqlx::query(PG_INSERT_DIGESTS)
                .bind(tenant)
                .bind(cluster)
                .bind(digests.iter().map(|(uid, _)| *uid).collect::<Vec<_>>())
                .bind(digests.iter().map(|(_, digest)| *digest).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await
                .map_err(pg_error)?;
        }
        outcome.report(chunk, &mut applied);
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(applied)
}

/// Deletes the pods of `uids`, or those of a generation older than `older_than`; returns the
/// uids deleted.
async fn delete<C: ConnectionTrait>(
    db: &C,
    tenant: &str,
    cluster: &str,
    uids: Option<&[String]>,
    older_than: Option<i64>,
) -> StoreResult<Vec<String>> {
    let mut removed = Vec::new();
    let run = |condition: Expr| {
        Query::delete()
            .from_table("cn_pods")
            .and_where(scope(tenant, cluster))
            .and_where(condition)
            .returning_col("uid")
            .to_owned()
    };
    let mut statements = Vec::new();
    if let Some(uids) = uids {
        for chunk in in_chunks(uids) {
            statements.push(run(Expr::col("uid").is_in(chunk.iter().map(String::as_str))));
        }
    }
    if let Some(generation) = older_than {
        statements.push(run(Expr::col("generation").lt(generation)));
    }
    for stmt in statements {
        for row in db.query_all(&stmt).await? {
            removed.push(get::<String>(&row, "uid")?);
        }
    }
    for chunk in in_chunks(&removed) {
        let stmt = Query::delete()
            .from_table("cn_pod_digests")
            .and_where(scope(tenant, cluster))
            .and_where(Expr::col("uid").is_in(chunk.iter().map(String::as_str)))
            .to_owned();
        db.execute(&stmt).await?;
    }
    removed.sort_unstable();
    Ok(removed)
}

fn projection(row: &sea_orm::QueryResult) -> StoreResult<PodProjection> {
    let bytes: Vec<u8> = get(row, "projection")?;
    PodProjection::from_row(&bytes).map_err(|e| StoreError::Corrupt(format!("pod projection: {e}")))
}

/// The pods of a cluster, or those of `uids`.
pub(super) async fn pods(
    db: &DatabaseConnection,
    tenant: &str,
    cluster: &str,
    uids: Option<&[String]>,
) -> StoreResult<Vec<PodProjection>> {
    let select = |condition: Option<Expr>| {
        let mut stmt = Query::select();
        stmt.column("projection")
            .from("cn_pods")
            .and_where(scope(tenant, cluster))
            .and_where_option(condition)
            .order_by("uid", SqlOrder::Asc);
        stmt
    };
    let mut out = Vec::new();
    match uids {
        None => {
            for row in db.query_all(&select(None)).await? {
                out.push(projection(&row)?);
            }
        }
        Some(uids) => {
            for chunk in in_chunks(uids) {
                let stmt = select(Some(Expr::col("uid").is_in(chunk.iter().map(String::as_str))));
                for row in db.query_all(&stmt).await? {
                    out.push(projection(&row)?);
                }
            }
        }
    }
    Ok(out)
}

/// One pod by namespace and name (the latest synced, should a recreated pod of the same
/// name still sit beside its predecessor).
pub(super) async fn pod(
    db: &DatabaseConnection,
    tenant: &str,
    cluster: &str,
    namespace: &str,
    name: &str,
) -> StoreResult<Option<StoredPod>> {
    let stmt = Query::select()
        .columns(["projection", "synced_at"])
        .from("cn_pods")
        .and_where(scope(tenant, cluster))
        .and_where(col_eq("namespace", namespace))
        .and_where(col_eq("name", name))
        .order_by("synced_at", SqlOrder::Desc)
        .order_by("uid", SqlOrder::Asc)
        .limit(1)
        .to_owned();
    let Some(row) = db.query_one(&stmt).await? else {
        return Ok(None);
    };
    Ok(Some(StoredPod {
        cluster: cluster.to_owned(),
        pod: projection(&row)?,
        synced_at: from_micros(get(&row, "synced_at")?)?,
    }))
}

/// The pods of the tenant's clusters that run `digest`, per cluster.
pub(super) async fn pods_running(db: &DatabaseConnection, tenant: &str, digest: &str) -> StoreResult<Vec<ClusterPods>> {
    let stmt = Query::select()
        .columns(["cluster_id", "uid"])
        .from("cn_pod_digests")
        .and_where(col_eq("tenant_id", tenant))
        .and_where(col_eq("digest", digest))
        .order_by("cluster_id", SqlOrder::Asc)
        .order_by("uid", SqlOrder::Asc)
        .to_owned();
    let mut out: Vec<ClusterPods> = Vec::new();
    for row in db.query_all(&stmt).await? {
        let cluster: String = get(&row, "cluster_id")?;
        let uid: String = get(&row, "uid")?;
        match out.last_mut() {
            Some(last) if last.cluster == cluster => last.uids.push(uid),
            _ => out.push(ClusterPods {
                cluster,
                uids: vec![uid],
            }),
        }
    }
    Ok(out)
}

/// Every (tenant, cluster) with an inventory, or the tenant's.
pub(super) async fn clusters(db: &DatabaseConnection, tenant: Option<&str>) -> StoreResult<Vec<(String, String)>> {
    let stmt = Query::select()
        .columns(["tenant_id", "cluster_id"])
        .from("cn_clusters")
        .and_where_option(tenant.map(|t| col_eq("tenant_id", t)))
        .order_by("tenant_id", SqlOrder::Asc)
        .order_by("cluster_id", SqlOrder::Asc)
        .to_owned();
    db.query_all(&stmt)
        .await?
        .iter()
        .map(|row| Ok((get(row, "tenant_id")?, get(row, "cluster_id")?)))
        .collect()
}

/// Claims `tenant`'s `cluster` for the sweep at `now`: true when no replica claimed it in the
/// last `min_gap` (one conditional UPDATE: of replicas racing, one wins), false when another
/// did or the cluster has no inventory.
pub(super) async fn claim_sweep(
    db: &DatabaseConnection,
    tenant: &str,
    cluster: &str,
    now: OffsetDateTime,
    min_gap: std::time::Duration,
) -> StoreResult<bool> {
    let now_us = micros(truncate(now));
    let gap_us = i64::try_from(min_gap.as_micros()).unwrap_or(i64::MAX);
    let stmt = Query::update()
        .table("cn_clusters")
        .value("swept_at", now_us)
        .and_where(scope(tenant, cluster))
        .and_where(
            Expr::col("swept_at")
                .is_null()
                .or(Expr::col("swept_at").lte(now_us.saturating_sub(gap_us))),
        )
        .to_owned();
    Ok(db.execute(&stmt).await?.rows_affected() > 0)
}

/// Drops a cluster's inventory and findings state: open findings resolve and pending
/// commands are cancelled at `now` (kept for the record, as resolved findings and acked
/// commands are).
pub(super) async fn forget_cluster(
    store: &SqlStore,
    tenant: &str,
    cluster: &str,
    now: OffsetDateTime,
) -> StoreResult<()> {
    let now_us = micros(truncate(now));
    let tx = store.begin().await?;
    for table in ["cn_pods", "cn_pod_digests", "cn_pod_states", "cn_owners", "cn_clusters"] {
        let stmt = Query::delete()
            .from_table(table)
            .and_where(scope(tenant, cluster))
            .to_owned();
        tx.execute(&stmt).await?;
    }
    let resolve = Query::update()
        .table("cn_findings")
        .value("resolved_at", now_us)
        .and_where(scope(tenant, cluster))
        .and_where(Expr::col("resolved_at").is_null())
        .to_owned();
    tx.execute(&resolve).await?;
    let cancel = Query::update()
        .table("cn_commands")
        .value("state", "cancelled")
        .value("state_changed_at", now_us)
        .value("ack_message", "the cluster was deleted")
        .and_where(scope(tenant, cluster))
        .and_where(col_eq("state", "pending"))
        .to_owned();
    tx.execute(&cancel).await?;
    tx.commit().await?;
    Ok(())
}
