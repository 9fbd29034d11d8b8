//! Alerts: the correlator's changes, listing, detail, lifecycle and the clusters' risk scores.

use std::collections::BTreeMap;

use compact_str::CompactString;
use sea_orm::{ConnectionTrait, DatabaseTransaction, QueryResult};
use time::OffsetDateTime;

use super::{Cursor, Sql, SqlStore, decode_token, finish_page, from_micros, get, micros, page_size, to_u64};
use crate::alert::{AlertStatus, risk_weight};
use crate::correlate::{AlertChange, NewAlert};
use crate::event::Severity;
use crate::store::{AlertDetail, AlertFilter, ClusterRisk, Page, PageRequest, StoreError, StoreResult, StoredAlert};

const ALERT_COLUMNS: &str = "tenant_id, id, rule, alert_key, title, severity, status, entity, event_count, first_event_at, last_event_at, created_at, status_changed_at";

fn severity_rank(s: Severity) -> i16 {
    match s {
        Severity::Info => 0,
        Severity::Low => 1,
        Severity::Medium => 2,
        Severity::High => 3,
        Severity::Critical => 4,
    }
}

fn alert_of(row: &QueryResult, clusters: Vec<CompactString>) -> StoreResult<StoredAlert> {
    let rank: i16 = get(row, "severity")?;
    let status: String = get(row, "status")?;
    let entity: String = get(row, "entity")?;
    Ok(StoredAlert {
        id: get::<String>(row, "id")?.into(),
        tenant_id: get::<String>(row, "tenant_id")?.into(),
        rule: get::<String>(row, "rule")?.into(),
        key: get(row, "alert_key")?,
        title: get(row, "title")?,
        severity: usize::try_from(rank)
            .ok()
            .and_then(|i| Severity::ALL.get(i).copied())
            .ok_or_else(|| StoreError::Corrupt(format!("alert severity {rank}")))?,
        status: status
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("alert status {status:?}")))?,
        cluster_ids: clusters,
        entity: serde_json::from_str(&entity).map_err(|e| StoreError::Corrupt(format!("alert entity: {e}")))?,
        event_count: to_u64(get(row, "event_count")?, "event count")?,
        first_event_at: from_micros(get(row, "first_event_at")?)?,
        last_event_at: from_micros(get(row, "last_event_at")?)?,
        created_at: from_micros(get(row, "created_at")?)?,
        status_changed_at: from_micros(get(row, "status_changed_at")?)?,
    })
}

/// The clusters of these alerts, in their order.
async fn clusters_of(
    db: &impl ConnectionTrait,
    store: &SqlStore,
    tenant: &str,
    ids: &[String],
) -> StoreResult<BTreeMap<String, Vec<CompactString>>> {
    let mut out: BTreeMap<String, Vec<CompactString>> = BTreeMap::new();
    for chunk in ids.chunks(1000) {
        let mut sql = Sql::new(
            store.backend(),
            "SELECT alert_id, cluster_id FROM tm_alert_clusters WHERE tenant_id = ",
        );
        sql.bind(tenant).push(" AND alert_id IN (");
        for (i, id) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(id.as_str());
        }
        sql.push(") ORDER BY alert_id, position");
        for row in db.query_all_raw(sql.statement()).await? {
            out.entry(get(&row, "alert_id")?)
                .or_default()
                .push(get::<String>(&row, "cluster_id")?.into());
        }
    }
    Ok(out)
}

/// Rows of tm_alerts, with their clusters.
async fn alerts_of(
    db: &impl ConnectionTrait,
    store: &SqlStore,
    tenant: Option<&str>,
    rows: Vec<QueryResult>,
) -> StoreResult<Vec<StoredAlert>> {
    // Group ids by tenant (open_alerts reads every tenant's).
    let mut by_tenant: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in &rows {
        let t: String = match tenant {
            Some(t) => t.to_owned(),
            None => get(row, "tenant_id")?,
        };
        by_tenant.entry(t).or_default().push(get(row, "id")?);
    }
    let mut clusters = BTreeMap::new();
    for (t, ids) in &by_tenant {
        for (id, cs) in clusters_of(db, store, t, ids).await? {
            clusters.insert((t.clone(), id), cs);
        }
    }
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let t: String = get(row, "tenant_id")?;
        let id: String = get(row, "id")?;
        let cs = clusters.remove(&(t, id)).unwrap_or_default();
        out.push(alert_of(row, cs)?);
    }
    Ok(out)
}

async fn add_events(
    tx: &DatabaseTransaction,
    store: &SqlStore,
    tenant: &str,
    alert_id: &str,
    event_ids: &[CompactString],
) -> StoreResult<u64> {
    // The sequence continues after the alert's current events.
    let mut sql = Sql::new(
        store.backend(),
        "SELECT count(*) AS n FROM tm_alert_events WHERE tenant_id = ",
    );
    sql.bind(tenant).push(" AND alert_id = ").bind(alert_id);
    let mut seq = match tx.query_one_raw(sql.statement()).await? {
        Some(row) => get::<i64>(&row, "n")?,
        None => 0,
    };
    let mut added = 0;
    for chunk in event_ids.chunks(1000) {
        let mut sql = Sql::new(
            store.backend(),
            "INSERT INTO tm_alert_events (tenant_id, alert_id, event_id, seq) VALUES ",
        );
        for (i, id) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(")
                .bind(tenant)
                .push(", ")
                .bind(alert_id)
                .push(", ")
                .bind(id.as_str())
                .push(", ")
                .bind(seq)
                .push(")");
            seq += 1;
        }
        sql.push(" ON CONFLICT DO NOTHING");
        added += tx.execute_raw(sql.statement()).await?.rows_affected();
    }
    Ok(added)
}

async fn add_clusters(
    tx: &DatabaseTransaction,
    store: &SqlStore,
    tenant: &str,
    alert_id: &str,
    clusters: &[CompactString],
) -> StoreResult<()> {
    let mut sql = Sql::new(
        store.backend(),
        "SELECT count(*) AS n FROM tm_alert_clusters WHERE tenant_id = ",
    );
    sql.bind(tenant).push(" AND alert_id = ").bind(alert_id);
    let mut position = match tx.query_one_raw(sql.statement()).await? {
        Some(row) => get::<i64>(&row, "n")?,
        None => 0,
    };
    for cluster in clusters {
        let mut sql = Sql::new(
            store.backend(),
            "INSERT INTO tm_alert_clusters (tenant_id, alert_id, cluster_id, position) VALUES (",
        );
        sql.bind(tenant)
            .push(", ")
            .bind(alert_id)
            .push(", ")
            .bind(cluster.as_str())
            .push(", ")
            .bind(position)
            .push(") ON CONFLICT DO NOTHING");
        position += tx.execute_raw(sql.statement()).await?.rows_affected() as i64;
    }
    Ok(())
}

async fn opened(tx: &DatabaseTransaction, store: &SqlStore, a: &NewAlert, now: i64) -> StoreResult<()> {
    let entity: Vec<(&str, &str)> = a.entity.iter().map(|(f, v)| (f.as_str(), v.as_str())).collect();
    let entity = serde_json::to_string(&entity).map_err(|e| StoreError::Corrupt(format!("alert entity: {e}")))?;
    let mut sql = Sql::new(
        store.backend(),
        &format!("INSERT INTO tm_alerts ({ALERT_COLUMNS}) VALUES ("),
    );
    sql.bind(a.tenant_id.as_str())
        .push(", ")
        .bind(a.id.as_str())
        .push(", ")
        .bind(a.rule.as_str())
        .push(", ")
        .bind(a.key.as_str())
        .push(", ")
        .bind(a.title.as_str())
        .push(", ")
        .bind(severity_rank(a.severity))
        .push(", ")
        .bind(AlertStatus::Open.as_str())
        .push(", ")
        .bind(entity)
        .push(", 0, ")
        .bind(micros(a.first_event_at))
        .push(", ")
        .bind(micros(a.last_event_at))
        .push(", ")
        .bind(now)
        .push(", ")
        .bind(now)
        .push(") ON CONFLICT DO NOTHING");
    tx.execute_raw(sql.statement()).await?;
    add_clusters(tx, store, &a.tenant_id, &a.id, &a.cluster_ids).await?;
    let added = add_events(tx, store, &a.tenant_id, &a.id, &a.event_ids).await?;
    bump(tx, store, &a.tenant_id, &a.id, added, micros(a.last_event_at)).await
}

/// Adds `added` to the alert's event count and moves its latest event time forward.
async fn bump(
    tx: &DatabaseTransaction,
    store: &SqlStore,
    tenant: &str,
    id: &str,
    added: u64,
    last: i64,
) -> StoreResult<()> {
    let mut sql = Sql::new(store.backend(), "UPDATE tm_alerts SET event_count = event_count + ");
    sql.bind(i64::try_from(added).unwrap_or(i64::MAX))
        .push(", last_event_at = CASE WHEN last_event_at < ")
        .bind(last)
        .push(" THEN ")
        .bind(last)
        .push(" ELSE last_event_at END WHERE tenant_id = ")
        .bind(tenant)
        .push(" AND id = ")
        .bind(id);
    tx.execute_raw(sql.statement()).await?;
    Ok(())
}

pub(super) async fn record(store: &SqlStore, changes: &[AlertChange], now: OffsetDateTime) -> StoreResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let now = micros(now);
    let tx = store.begin().await?;
    for change in changes {
        match change {
            AlertChange::Opened(a) => opened(&tx, store, a, now).await?,
            AlertChange::EventsAdded {
                tenant_id,
                alert_id,
                event_ids,
                last_event_at,
            } => {
                let mut sql = Sql::new(store.backend(), "SELECT id FROM tm_alerts WHERE tenant_id = ");
                sql.bind(tenant_id.as_str()).push(" AND id = ").bind(alert_id.as_str());
                if tx.query_one_raw(sql.statement()).await?.is_none() {
                    continue;
                }
                // The clusters of the added events, as stored (the change does not carry them).
                let mut sql = Sql::new(
                    store.backend(),
                    "SELECT DISTINCT cluster_id FROM tm_events WHERE tenant_id = ",
                );
                sql.bind(tenant_id.as_str()).push(" AND id IN (");
                for (i, id) in event_ids.iter().take(1000).enumerate() {
                    if i > 0 {
                        sql.push(", ");
                    }
                    sql.bind(id.as_str());
                }
                sql.push(") ORDER BY cluster_id");
                let mut clusters = Vec::new();
                if !event_ids.is_empty() {
                    for row in tx.query_all_raw(sql.statement()).await? {
                        clusters.push(CompactString::from(get::<String>(&row, "cluster_id")?));
                    }
                }
                add_clusters(&tx, store, tenant_id, alert_id, &clusters).await?;
                let added = add_events(&tx, store, tenant_id, alert_id, event_ids).await?;
                bump(&tx, store, tenant_id, alert_id, added, micros(*last_event_at)).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn list(
    store: &SqlStore,
    tenant: &str,
    filter: &AlertFilter,
    page: &PageRequest,
) -> StoreResult<Page<StoredAlert>> {
    let fingerprint = format!("alerts\n{tenant}\n{filter:?}");
    let cursor = decode_token(&fingerprint, page)?;
    let size = page_size(page);
    let mut sql = Sql::new(
        store.backend(),
        &format!("SELECT {ALERT_COLUMNS} FROM tm_alerts WHERE tenant_id = "),
    );
    sql.bind(tenant);
    if let Some(cluster) = &filter.cluster_id {
        sql.push(" AND id IN (SELECT alert_id FROM tm_alert_clusters WHERE tenant_id = ")
            .bind(tenant)
            .push(" AND cluster_id = ")
            .bind(cluster.as_str())
            .push(")");
    }
    if !filter.statuses.is_empty() {
        sql.push(" AND status IN (");
        for (i, s) in filter.statuses.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(s.as_str());
        }
        sql.push(")");
    }
    if let Some(s) = filter.min_severity {
        sql.push(" AND severity >= ").bind(severity_rank(s));
    }
    if let Some(c) = &cursor {
        // The `<=` bound lets an index on the time start at the cursor (see the events'
        // keyset condition).
        sql.push(" AND last_event_at <= ")
            .bind(c.at)
            .push(" AND (last_event_at < ")
            .bind(c.at)
            .push(" OR (last_event_at = ")
            .bind(c.at)
            .push(" AND id < ")
            .bind(c.id.as_str())
            .push("))");
    }
    sql.push(" ORDER BY last_event_at DESC, id DESC LIMIT ")
        .bind(i64::try_from(size + 1).unwrap_or(i64::MAX));
    let rows = store.db.query_all_raw(sql.statement()).await?;
    let alerts = alerts_of(&store.db, store, Some(tenant), rows).await?;
    let items = alerts
        .into_iter()
        .map(|a| {
            let c = Cursor {
                at: micros(a.last_event_at),
                id: a.id.to_string(),
            };
            (a, c)
        })
        .collect();
    Ok(finish_page(items, size, &fingerprint))
}

async fn one(db: &impl ConnectionTrait, store: &SqlStore, tenant: &str, id: &str) -> StoreResult<Option<StoredAlert>> {
    let mut sql = Sql::new(
        store.backend(),
        &format!("SELECT {ALERT_COLUMNS} FROM tm_alerts WHERE tenant_id = "),
    );
    sql.bind(tenant).push(" AND id = ").bind(id);
    let rows = db.query_all_raw(sql.statement()).await?;
    Ok(alerts_of(db, store, Some(tenant), rows).await?.into_iter().next())
}

pub(super) async fn detail(store: &SqlStore, tenant: &str, id: &str) -> StoreResult<Option<AlertDetail>> {
    let Some(alert) = one(&store.db, store, tenant, id).await? else {
        return Ok(None);
    };
    let mut sql = Sql::new(
        store.backend(),
        "SELECT event_id FROM tm_alert_events WHERE tenant_id = ",
    );
    sql.bind(tenant).push(" AND alert_id = ").bind(id).push(" ORDER BY seq");
    let mut event_ids = Vec::new();
    for row in store.db.query_all_raw(sql.statement()).await? {
        event_ids.push(CompactString::from(get::<String>(&row, "event_id")?));
    }
    let mut events = super::events::by_ids(store, tenant, &event_ids).await?;
    events.sort_by(|a, b| (a.occurred_at, &a.id).cmp(&(b.occurred_at, &b.id)));
    Ok(Some(AlertDetail {
        alert,
        event_ids,
        events,
    }))
}

pub(super) async fn set_status(
    store: &SqlStore,
    tenant: &str,
    id: &str,
    status: AlertStatus,
    now: OffsetDateTime,
) -> StoreResult<Option<StoredAlert>> {
    let tx = store.begin().await?;
    let Some(alert) = one(&tx, store, tenant, id).await? else {
        return Ok(None);
    };
    if !alert.status.transition(status)? {
        return Ok(Some(alert));
    }
    // Guarded by the status read: a concurrent change makes this update match nothing.
    let mut sql = Sql::new(store.backend(), "UPDATE tm_alerts SET status = ");
    sql.bind(status.as_str())
        .push(", status_changed_at = ")
        .bind(micros(now))
        .push(" WHERE tenant_id = ")
        .bind(tenant)
        .push(" AND id = ")
        .bind(id)
        .push(" AND status = ")
        .bind(alert.status.as_str());
    if tx.execute_raw(sql.statement()).await?.rows_affected() == 0 {
        return Err(StoreError::Unavailable(
            "the alert's status changed meanwhile; try again".to_owned(),
        ));
    }
    let updated = one(&tx, store, tenant, id).await?;
    tx.commit().await?;
    Ok(updated)
}

pub(super) async fn risk(store: &SqlStore, tenant: &str, cluster: Option<&str>) -> StoreResult<Vec<ClusterRisk>> {
    let mut sql = Sql::new(
        store.backend(),
        "SELECT c.cluster_id AS cluster_id, a.severity AS severity, count(*) AS n FROM tm_alert_clusters c \
         JOIN tm_alerts a ON a.tenant_id = c.tenant_id AND a.id = c.alert_id WHERE c.tenant_id = ",
    );
    sql.bind(tenant).push(" AND a.status IN (");
    let open: Vec<AlertStatus> = AlertStatus::ALL.into_iter().filter(|s| s.is_open()).collect();
    for (i, s) in open.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(s.as_str());
    }
    sql.push(")");
    if let Some(c) = cluster {
        sql.push(" AND c.cluster_id = ").bind(c);
    }
    sql.push(" GROUP BY c.cluster_id, a.severity");
    let mut scores: BTreeMap<String, ClusterRisk> = BTreeMap::new();
    if let Some(c) = cluster {
        scores.insert(
            c.to_owned(),
            ClusterRisk {
                cluster_id: c.to_owned(),
                score: 0,
                open_alerts: 0,
            },
        );
    }
    for row in store.db.query_all_raw(sql.statement()).await? {
        let cluster_id: String = get(&row, "cluster_id")?;
        let rank: i16 = get(&row, "severity")?;
        let severity = usize::try_from(rank)
            .ok()
            .and_then(|i| Severity::ALL.get(i).copied())
            .ok_or_else(|| StoreError::Corrupt(format!("alert severity {rank}")))?;
        let n = to_u64(get(&row, "n")?, "alert count")?;
        let entry = scores.entry(cluster_id.clone()).or_insert(ClusterRisk {
            cluster_id,
            score: 0,
            open_alerts: 0,
        });
        entry.score += risk_weight(severity) * n;
        entry.open_alerts += n;
    }
    Ok(scores.into_values().collect())
}

pub(super) async fn open(store: &SqlStore) -> StoreResult<Vec<StoredAlert>> {
    let mut sql = Sql::new(
        store.backend(),
        &format!("SELECT {ALERT_COLUMNS} FROM tm_alerts WHERE status IN ("),
    );
    let open: Vec<AlertStatus> = AlertStatus::ALL.into_iter().filter(|s| s.is_open()).collect();
    for (i, s) in open.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(s.as_str());
    }
    sql.push(") ORDER BY tenant_id, last_event_at, id");
    let rows = store.db.query_all_raw(sql.statement()).await?;
    alerts_of(&store.db, store, None, rows).await
}
