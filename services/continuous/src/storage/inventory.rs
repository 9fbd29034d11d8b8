//! The inventory: `cn_clusters` (snapshot generations), `cn_pods` and `cn_pod_digests`.

use std::collections::{BTreeSet, HashMap};

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Order as SqlOrder, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection};
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
    Ok(applied)
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

/// A pod ready to write.
struct Row<'a> {
    uid: &'a str,
    namespace: &'a str,
    name: &'a str,
    projection: Vec<u8>,
    hash: i64,
    digests: BTreeSet<&'a str>,
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
    // One row per uid, the last sent winning (a statement may not upsert a row twice).
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
    let now_us = micros(now);
    let mut applied = InventoryApplied::default();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        // What is stored of these pods: a pod whose projection is unchanged is only stamped.
        let select = Query::select()
            .columns(["uid", "projection_hash"])
            .from("cn_pods")
            .and_where(scope(tenant, cluster))
            .and_where(Expr::col("uid").is_in(chunk.iter().map(|r| r.uid)))
            .to_owned();
        let mut stored: HashMap<String, i64> = HashMap::with_capacity(chunk.len());
        for row in db.query_all(&select).await? {
            stored.insert(get(&row, "uid")?, get(&row, "projection_hash")?);
        }
        let (same, changed): (Vec<&Row>, Vec<&Row>) = chunk.iter().partition(|r| stored.get(r.uid) == Some(&r.hash));

        if !same.is_empty() {
            let stamp = Query::update()
                .table("cn_pods")
                .value("generation", generation)
                .value("synced_at", now_us)
                .and_where(scope(tenant, cluster))
                .and_where(Expr::col("uid").is_in(same.iter().map(|r| r.uid)))
                .to_owned();
            db.execute(&stamp).await?;
        }
        if changed.is_empty() {
            continue;
        }
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
        ]);
        for r in &changed {
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
                ])
                .map_err(build_error)?;
        }
        insert.on_conflict(
            OnConflict::columns(["tenant_id", "cluster_id", "uid"])
                .update_columns([
                    "namespace",
                    "name",
                    "projection",
                    "projection_hash",
                    "generation",
                    "synced_at",
                ])
                .to_owned(),
        );
        db.execute(&insert).await?;

        // The digests of changed pods are written again.
        let existed: Vec<&str> = changed
            .iter()
            .filter(|r| stored.contains_key(r.uid))
            .map(|r| r.uid)
            .collect();
        if !existed.is_empty() {
            let delete = Query::delete()
                .from_table("cn_pod_digests")
                .and_where(scope(tenant, cluster))
                .and_where(Expr::col("uid").is_in(existed))
                .to_owned();
            db.execute(&delete).await?;
        }
        let digests: Vec<(&str, &str)> = changed
            .iter()
            .flat_map(|r| r.digests.iter().map(|d| (r.uid, *d)))
            .collect();
        for part in digests.chunks(ROWS_PER_STATEMENT) {
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
        applied.changed.extend(changed.iter().map(|r| r.uid.to_owned()));
    }
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
