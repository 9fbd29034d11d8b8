//! Findings (`cn_findings`), pod states (`cn_pod_states`), owners' backoffs (`cn_owners`)
//! and the cluster's findings version (`cn_clusters.findings_version`).

use std::collections::HashMap;

use portcullis_engine::policy::Mitigation;
use sea_orm::sea_query::{Expr, ExprTrait, Func, OnConflict, Order as SqlOrder, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, QueryResult};
use time::OffsetDateTime;

use super::{
    Cursor, ROWS_PER_STATEMENT, SqlStore, build_error, col_eq, decode_token, finish_page, from_micros, get, in_chunks,
    inventory, micros, page_size, scope, to_i64, to_u64, truncate,
};
use crate::findings::{Backoff, ClusterFindings, Finding, Isolation, Owners, PodState, RuleKey};
use crate::store::{
    FindingFilter, FindingsRead, FindingsSaved, FindingsWrite, Page, PageRequest, PolicyUsed, StoreError, StoreResult,
    StoredFinding,
};

const FINDING_COLUMNS: [&str; 15] = [
    "tenant_id",
    "id",
    "cluster_id",
    "uid",
    "namespace",
    "pod",
    "rule",
    "mitigation",
    "containers",
    "message",
    "first_seen",
    "last_seen",
    "resolved_at",
    "policy_id",
    "policy_revision",
];

/// A mitigation's rank as stored (the order of strength).
pub(super) fn mitigation_rank(m: Mitigation) -> i32 {
    match m {
        Mitigation::None => 0,
        Mitigation::Log => 1,
        Mitigation::Isolate => 2,
        Mitigation::Terminate => 3,
    }
}

fn mitigation_of(rank: i32) -> StoreResult<Mitigation> {
    Ok(match rank {
        0 => Mitigation::None,
        1 => Mitigation::Log,
        2 => Mitigation::Isolate,
        3 => Mitigation::Terminate,
        n => return Err(StoreError::Corrupt(format!("mitigation rank {n}"))),
    })
}

fn isolation_str(i: Isolation) -> &'static str {
    match i {
        Isolation::None => "none",
        Isolation::Isolated => "isolated",
        Isolation::NotIsolatable => "not-isolatable",
    }
}

fn isolation_of(s: &str) -> StoreResult<Isolation> {
    Ok(match s {
        "none" => Isolation::None,
        "isolated" => Isolation::Isolated,
        "not-isolatable" => Isolation::NotIsolatable,
        other => return Err(StoreError::Corrupt(format!("isolation {other:?}"))),
    })
}

fn stored_finding(row: &QueryResult) -> StoreResult<StoredFinding> {
    let containers: String = get(row, "containers")?;
    let containers: Vec<String> =
        serde_json::from_str(&containers).map_err(|e| StoreError::Corrupt(format!("finding containers: {e}")))?;
    let namespace: String = get(row, "namespace")?;
    let pod: String = get(row, "pod")?;
    Ok(StoredFinding {
        id: get(row, "id")?,
        finding: Finding {
            cluster: get(row, "cluster_id")?,
            namespace: namespace.into(),
            pod: pod.into(),
            uid: get(row, "uid")?,
            rule: RuleKey(get(row, "rule")?),
            mitigation: mitigation_of(get(row, "mitigation")?)?,
            containers,
            message: get(row, "message")?,
            first_seen: from_micros(get(row, "first_seen")?)?,
            last_seen: from_micros(get(row, "last_seen")?)?,
            resolved: get::<Option<i64>>(row, "resolved_at")?.map(from_micros).transpose()?,
        },
        policy: PolicyUsed {
            id: get(row, "policy_id")?,
            revision: to_u64(get(row, "policy_revision")?, "policy revision")?,
        },
    })
}

/// The open findings of a cluster, or of the pods of `uids`.
async fn open_findings<C: ConnectionTrait>(
    db: &C,
    tenant: &str,
    cluster: &str,
    uids: Option<&[String]>,
) -> StoreResult<Vec<StoredFinding>> {
    let select = |condition: Option<Expr>| {
        Query::select()
            .columns(FINDING_COLUMNS)
            .from("cn_findings")
            .and_where(scope(tenant, cluster))
            .and_where(Expr::col("resolved_at").is_null())
            .and_where_option(condition)
            .order_by("first_seen", SqlOrder::Asc)
            .order_by("id", SqlOrder::Asc)
            .to_owned()
    };
    let statements: Vec<_> = match uids {
        None => vec![select(None)],
        Some(uids) => in_chunks(uids)
            .map(|chunk| select(Some(Expr::col("uid").is_in(chunk.iter().map(String::as_str)))))
            .collect(),
    };
    let mut out = Vec::new();
    for stmt in statements {
        for row in db.query_all(&stmt).await? {
            out.push(stored_finding(&row)?);
        }
    }
    Ok(out)
}

/// Reads the findings state of a cluster (or of some pods) and its version.
pub(super) async fn read(
    store: &SqlStore,
    tenant: &str,
    cluster: &str,
    uids: Option<&[String]>,
) -> StoreResult<FindingsRead> {
    let db = &store.db;
    // The version first: anything written after it is read moves it, so a save from this
    // read fails with a conflict rather than overwrite what it did not see.
    let version = Query::select()
        .column("findings_version")
        .from("cn_clusters")
        .and_where(scope(tenant, cluster))
        .to_owned();
    let version = match db.query_one(&version).await? {
        Some(row) => to_u64(get(&row, "findings_version")?, "findings version")?,
        None => 0,
    };
    let mut findings = ClusterFindings::default();
    for f in open_findings(db, tenant, cluster, uids).await? {
        findings
            .pods
            .entry(f.finding.uid.clone())
            .or_default()
            .open
            .push(f.finding);
    }
    let states = |condition: Option<Expr>| {
        Query::select()
            .columns(["uid", "isolation", "terminate_ordered"])
            .from("cn_pod_states")
            .and_where(scope(tenant, cluster))
            .and_where_option(condition)
            .to_owned()
    };
    let statements: Vec<_> = match uids {
        None => vec![states(None)],
        Some(uids) => in_chunks(uids)
            .map(|chunk| states(Some(Expr::col("uid").is_in(chunk.iter().map(String::as_str)))))
            .collect(),
    };
    for stmt in statements {
        for row in db.query_all(&stmt).await? {
            let state = findings.pods.entry(get(&row, "uid")?).or_default();
            state.isolation = isolation_of(&get::<String>(&row, "isolation")?)?;
            state.terminate_ordered = get::<Option<i64>>(&row, "terminate_ordered")?
                .map(from_micros)
                .transpose()?;
        }
    }
    findings.owners = owners(db, tenant, cluster).await?;
    Ok(FindingsRead { findings, version })
}

async fn owners(db: &DatabaseConnection, tenant: &str, cluster: &str) -> StoreResult<Owners> {
    let stmt = Query::select()
        .columns(["owner_uid", "terminations", "last_at"])
        .from("cn_owners")
        .and_where(scope(tenant, cluster))
        .to_owned();
    let mut owners = Owners::new();
    for row in db.query_all(&stmt).await? {
        let terminations = get::<i64>(&row, "terminations")?;
        owners.insert(
            get(&row, "owner_uid")?,
            Backoff {
                terminations: u32::try_from(terminations)
                    .map_err(|_| StoreError::Corrupt(format!("terminations {terminations}")))?,
                last: from_micros(get(&row, "last_at")?)?,
            },
        );
    }
    Ok(owners)
}

/// A finding to write (new, confirmed or resolved).
struct Write {
    stored: StoredFinding,
}

/// Writes a reconciliation when the version has not moved.
pub(super) async fn save(
    store: &SqlStore,
    tenant: &str,
    cluster: &str,
    write: FindingsWrite,
    now: OffsetDateTime,
) -> StoreResult<FindingsSaved> {
    let now = truncate(now);
    let tx = store.begin().await?;
    inventory::ensure_cluster(&tx, tenant, cluster).await?;
    // Check and move the version first: on PostgreSQL the row stays locked until commit, so
    // a concurrent save waits here and then finds the version moved.
    let bump = Query::update()
        .table("cn_clusters")
        .value("findings_version", Expr::col("findings_version").add(1))
        .and_where(scope(tenant, cluster))
        .and_where(col_eq("findings_version", to_i64(write.version)))
        .to_owned();
    if tx.execute(&bump).await?.rows_affected() == 0 {
        tx.rollback().await?;
        return Err(StoreError::Conflict);
    }
    let version = write.version.saturating_add(1);

    // The stored open findings of every pod the write is about, by uid.
    let mut uids: Vec<String> = write.pods.iter().map(|(uid, _)| uid.clone()).collect();
    uids.extend(write.resolved.iter().map(|f| f.uid.clone()));
    uids.sort_unstable();
    uids.dedup();
    let mut stored: HashMap<String, Vec<StoredFinding>> = HashMap::new();
    for f in open_findings(&tx, tenant, cluster, Some(&uids)).await? {
        stored.entry(f.finding.uid.clone()).or_default().push(f);
    }

    let mut saved = FindingsSaved {
        version,
        ..FindingsSaved::default()
    };
    let mut writes: Vec<Write> = Vec::new();
    let take = |stored: &mut HashMap<String, Vec<StoredFinding>>, uid: &str, rule: &RuleKey| {
        let list = stored.get_mut(uid)?;
        let at = list.iter().position(|s| &s.finding.rule == rule)?;
        Some(list.swap_remove(at))
    };
    for f in write.resolved {
        // A resolution of nothing open (already resolved) is nothing to write.
        let Some(s) = take(&mut stored, &f.uid, &f.rule) else {
            continue;
        };
        let mut finding = f;
        finding.first_seen = s.finding.first_seen;
        finding.last_seen = truncate(finding.last_seen);
        finding.resolved = Some(truncate(finding.resolved.unwrap_or(now)));
        let resolved = StoredFinding {
            id: s.id,
            finding,
            policy: s.policy,
        };
        saved.resolved.push(resolved.clone());
        writes.push(Write { stored: resolved });
    }

    let mut state_rows: Vec<(String, PodState)> = Vec::new();
    let mut no_state: Vec<String> = Vec::new();
    for (uid, state) in write.pods {
        let PodState {
            open,
            isolation,
            terminate_ordered,
        } = state;
        for f in open {
            let mut finding = f;
            finding.resolved = None;
            finding.last_seen = truncate(finding.last_seen);
            match take(&mut stored, &uid, &finding.rule) {
                Some(s) => {
                    finding.first_seen = s.finding.first_seen;
                    let changed = s.finding.mitigation != finding.mitigation;
                    let w = StoredFinding {
                        id: s.id,
                        finding,
                        policy: write.policy.clone(),
                    };
                    if changed {
                        saved.changed.push(w.clone());
                    }
                    writes.push(Write { stored: w });
                }
                None => {
                    finding.first_seen = truncate(finding.first_seen);
                    let w = StoredFinding {
                        id: uuid::Uuid::new_v4().to_string(),
                        finding,
                        policy: write.policy.clone(),
                    };
                    saved.opened.push(w.clone());
                    writes.push(Write { stored: w });
                }
            }
        }
        // A stored open finding the new state no longer holds resolves now (the pod's
        // state is its whole state).
        for mut s in stored.remove(&uid).unwrap_or_default() {
            s.finding.resolved = Some(now);
            saved.resolved.push(s.clone());
            writes.push(Write { stored: s });
        }
        if isolation == Isolation::None && terminate_ordered.is_none() {
            no_state.push(uid);
        } else {
            state_rows.push((
                uid,
                PodState {
                    open: Vec::new(),
                    isolation,
                    terminate_ordered,
                },
            ));
        }
    }

    write_findings(&tx, tenant, &writes).await?;
    write_states(&tx, tenant, cluster, &state_rows, &no_state).await?;
    write_owners(&tx, tenant, cluster, &write.owners).await?;
    saved.commands = super::commands::insert(&tx, tenant, cluster, write.commands, now).await?;
    tx.commit().await?;
    Ok(saved)
}

/// Inserts or updates findings by id (one multi-row upsert per chunk).
async fn write_findings<C: ConnectionTrait>(db: &C, tenant: &str, writes: &[Write]) -> StoreResult<()> {
    for chunk in writes.chunks(ROWS_PER_STATEMENT) {
        let mut insert = Query::insert();
        insert.into_table("cn_findings").columns(FINDING_COLUMNS);
        for w in chunk {
            let s = &w.stored;
            let f = &s.finding;
            let containers = serde_json::to_string(&f.containers)
                .map_err(|e| StoreError::Corrupt(format!("finding containers: {e}")))?;
            insert
                .values([
                    tenant.into(),
                    s.id.as_str().into(),
                    f.cluster.as_str().into(),
                    f.uid.as_str().into(),
                    f.namespace.as_str().into(),
                    f.pod.as_str().into(),
                    f.rule.as_str().into(),
                    mitigation_rank(f.mitigation).into(),
                    containers.into(),
                    f.message.as_str().into(),
                    micros(f.first_seen).into(),
                    micros(f.last_seen).into(),
                    f.resolved.map(micros).into(),
                    s.policy.id.as_str().into(),
                    to_i64(s.policy.revision).into(),
                ])
                .map_err(build_error)?;
        }
        insert.on_conflict(
            OnConflict::columns(["tenant_id", "id"])
                .update_columns([
                    "namespace",
                    "pod",
                    "mitigation",
                    "containers",
                    "message",
                    "last_seen",
                    "resolved_at",
                    "policy_id",
                    "policy_revision",
                ])
                .to_owned(),
        );
        db.execute(&insert).await?;
    }
    Ok(())
}

async fn write_states<C: ConnectionTrait>(
    db: &C,
    tenant: &str,
    cluster: &str,
    rows: &[(String, PodState)],
    none: &[String],
) -> StoreResult<()> {
    for chunk in in_chunks(none) {
        let stmt = Query::delete()
            .from_table("cn_pod_states")
            .and_where(scope(tenant, cluster))
            .and_where(Expr::col("uid").is_in(chunk.iter().map(String::as_str)))
            .to_owned();
        db.execute(&stmt).await?;
    }
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut insert = Query::insert();
        insert.into_table("cn_pod_states").columns([
            "tenant_id",
            "cluster_id",
            "uid",
            "isolation",
            "terminate_ordered",
        ]);
        for (uid, state) in chunk {
            insert
                .values([
                    tenant.into(),
                    cluster.into(),
                    uid.as_str().into(),
                    isolation_str(state.isolation).into(),
                    state.terminate_ordered.map(micros).into(),
                ])
                .map_err(build_error)?;
        }
        insert.on_conflict(
            OnConflict::columns(["tenant_id", "cluster_id", "uid"])
                .update_columns(["isolation", "terminate_ordered"])
                .to_owned(),
        );
        db.execute(&insert).await?;
    }
    Ok(())
}

/// Replaces the cluster's owners' backoffs.
async fn write_owners<C: ConnectionTrait>(db: &C, tenant: &str, cluster: &str, owners: &Owners) -> StoreResult<()> {
    let stmt = Query::delete()
        .from_table("cn_owners")
        .and_where(scope(tenant, cluster))
        .to_owned();
    db.execute(&stmt).await?;
    let owners: Vec<(&String, &Backoff)> = owners.iter().collect();
    for chunk in owners.chunks(ROWS_PER_STATEMENT) {
        let mut insert = Query::insert();
        insert
            .into_table("cn_owners")
            .columns(["tenant_id", "cluster_id", "owner_uid", "terminations", "last_at"]);
        for (uid, b) in chunk {
            insert
                .values([
                    tenant.into(),
                    cluster.into(),
                    uid.as_str().into(),
                    i64::from(b.terminations).into(),
                    micros(b.last).into(),
                ])
                .map_err(build_error)?;
        }
        db.execute(&insert).await?;
    }
    Ok(())
}

/// Lists findings, most recently seen first.
pub(super) async fn list(
    db: &DatabaseConnection,
    tenant: &str,
    filter: &FindingFilter,
    page: &PageRequest,
) -> StoreResult<Page<StoredFinding>> {
    let fingerprint = format!("{filter:?}");
    let cursor = decode_token("findings", &fingerprint, page)?;
    let size = page_size(page);
    let mut stmt = Query::select();
    stmt.columns(FINDING_COLUMNS)
        .from("cn_findings")
        .and_where(col_eq("tenant_id", tenant))
        .and_where_option(filter.cluster.as_deref().map(|c| col_eq("cluster_id", c)))
        .and_where_option(filter.namespace.as_deref().map(|n| col_eq("namespace", n)))
        .and_where_option(filter.pod.as_deref().map(|p| col_eq("pod", p)))
        .and_where_option(
            filter
                .min_mitigation
                .map(|m| Expr::col("mitigation").gte(mitigation_rank(m))),
        )
        .and_where_option(filter.open.map(|open| {
            if open {
                Expr::col("resolved_at").is_null()
            } else {
                Expr::col("resolved_at").is_not_null()
            }
        }));
    if let Some(prefix) = filter.rule_type.as_deref().filter(|p| !p.is_empty()) {
        // A prefix without LIKE's wildcards (`_` is common in rule types) and case-sensitive
        // on both backends.
        let length = i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX);
        let head = Func::cust("substr").arg(Expr::col("rule")).arg(1i32).arg(length);
        stmt.and_where(Expr::from(head).eq(prefix));
    }
    if let Some(Cursor { at, id, .. }) = cursor {
        stmt.and_where(
            Expr::col("last_seen")
                .lt(at)
                .or(Expr::col("last_seen").eq(at).and(Expr::col("id").lt(id))),
        );
    }
    stmt.order_by("last_seen", SqlOrder::Desc)
        .order_by("id", SqlOrder::Desc)
        .limit(u64::try_from(size).unwrap_or(u64::MAX).saturating_add(1));
    let mut items = Vec::new();
    for row in db.query_all(&stmt).await? {
        let f = stored_finding(&row)?;
        let cursor = Cursor {
            at: micros(f.finding.last_seen),
            seq: 0,
            id: f.id.clone(),
        };
        items.push((f, cursor));
    }
    Ok(finish_page(items, size, "findings", &fingerprint))
}
