//! Mitigation commands (`cn_commands`).

use sea_orm::sea_query::{Expr, ExprTrait, Order as SqlOrder, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, QueryResult};
use time::OffsetDateTime;

use super::{
    Cursor, ROWS_PER_STATEMENT, SqlStore, build_error, col_eq, decode_token, finish_page, from_micros, get, micros,
    page_size, scope, truncate,
};
use crate::findings::{Order, PodAddress};
use crate::store::{
    Acked, CommandFilter, CommandOrigin, CommandState, NewCommand, Page, PageRequest, StoreError, StoreResult,
    StoredCommand,
};

const COLUMNS: [&str; 17] = [
    "tenant_id",
    "id",
    "cluster_id",
    "namespace",
    "pod",
    "pod_uid",
    "order_type",
    "payload",
    "origin",
    "reason",
    "rules",
    "runtime_rule_ids",
    "issued_at",
    "seq",
    "state",
    "state_changed_at",
    "ack_message",
];

fn origin_str(o: CommandOrigin) -> &'static str {
    match o {
        CommandOrigin::Continuous => "continuous",
        CommandOrigin::Runtime => "runtime",
        CommandOrigin::Manual => "manual",
    }
}

fn origin_of(s: &str) -> StoreResult<CommandOrigin> {
    Ok(match s {
        "continuous" => CommandOrigin::Continuous,
        "runtime" => CommandOrigin::Runtime,
        "manual" => CommandOrigin::Manual,
        other => return Err(StoreError::Corrupt(format!("command origin {other:?}"))),
    })
}

/// A state's stored name.
pub(super) fn state_str(s: CommandState) -> &'static str {
    match s {
        CommandState::Pending => "pending",
        CommandState::Done => "done",
        CommandState::Failed => "failed",
        CommandState::Rejected => "rejected",
        CommandState::Cancelled => "cancelled",
        CommandState::Reported => "reported",
    }
}

fn state_of(s: &str) -> StoreResult<CommandState> {
    Ok(match s {
        "pending" => CommandState::Pending,
        "done" => CommandState::Done,
        "failed" => CommandState::Failed,
        "rejected" => CommandState::Rejected,
        "cancelled" => CommandState::Cancelled,
        "reported" => CommandState::Reported,
        other => return Err(StoreError::Corrupt(format!("command state {other:?}"))),
    })
}

fn json_list(row: &QueryResult, column: &str) -> StoreResult<Vec<String>> {
    let text: String = get(row, column)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("command {column}: {e}")))
}

fn stored_command(row: &QueryResult) -> StoreResult<StoredCommand> {
    let order_type: String = get(row, "order_type")?;
    let order = match order_type.as_str() {
        "isolate" => {
            let payload: String = get(row, "payload")?;
            Order::Isolate {
                network_policy: serde_json::from_str(&payload)
                    .map_err(|e| StoreError::Corrupt(format!("isolate payload: {e}")))?,
            }
        }
        "terminate" => Order::Terminate,
        "restore-isolation" => Order::RestoreIsolation,
        "not-isolatable" => Order::NotIsolatable,
        other => return Err(StoreError::Corrupt(format!("command type {other:?}"))),
    };
    let namespace: String = get(row, "namespace")?;
    let pod: String = get(row, "pod")?;
    Ok(StoredCommand {
        id: get(row, "id")?,
        cluster: get(row, "cluster_id")?,
        command: NewCommand {
            pod: PodAddress {
                namespace: namespace.into(),
                name: pod.into(),
                uid: get(row, "pod_uid")?,
            },
            order,
            origin: origin_of(&get::<String>(row, "origin")?)?,
            reason: get(row, "reason")?,
            rules: json_list(row, "rules")?,
            runtime_rule_ids: json_list(row, "runtime_rule_ids")?,
        },
        issued_at: from_micros(get(row, "issued_at")?)?,
        state: state_of(&get::<String>(row, "state")?)?,
        state_changed_at: from_micros(get(row, "state_changed_at")?)?,
        ack_message: get(row, "ack_message")?,
    })
}

fn seq_of(row: &QueryResult) -> StoreResult<i64> {
    get(row, "seq")
}

/// Stores commands at `now` (already truncated): pending, or reported for
/// [`Order::NotIsolatable`] (a report never sent).
pub(super) async fn insert<C: ConnectionTrait>(
    db: &C,
    tenant: &str,
    cluster: &str,
    commands: Vec<NewCommand>,
    now: OffsetDateTime,
) -> StoreResult<Vec<StoredCommand>> {
    let stored: Vec<StoredCommand> = commands
        .into_iter()
        .map(|command| StoredCommand {
            id: uuid::Uuid::new_v4().to_string(),
            cluster: cluster.to_owned(),
            state: if command.order.is_sent() {
                CommandState::Pending
            } else {
                CommandState::Reported
            },
            command,
            issued_at: now,
            state_changed_at: now,
            ack_message: String::new(),
        })
        .collect();
    let now_us = micros(now);
    for (n, chunk) in stored.chunks(ROWS_PER_STATEMENT).enumerate() {
        let mut insert = Query::insert();
        insert.into_table("cn_commands").columns(COLUMNS);
        for (i, c) in chunk.iter().enumerate() {
            let seq = i64::try_from(n.saturating_mul(ROWS_PER_STATEMENT).saturating_add(i)).unwrap_or(i64::MAX);
            let payload = match &c.command.order {
                Order::Isolate { network_policy } => network_policy.to_string(),
                _ => String::new(),
            };
            let list =
                |l: &[String]| serde_json::to_string(l).map_err(|e| StoreError::Corrupt(format!("command list: {e}")));
            insert
                .values([
                    tenant.into(),
                    c.id.as_str().into(),
                    cluster.into(),
                    c.command.pod.namespace.as_str().into(),
                    c.command.pod.name.as_str().into(),
                    c.command.pod.uid.as_str().into(),
                    c.command.order.as_str().into(),
                    payload.into(),
                    origin_str(c.command.origin).into(),
                    c.command.reason.as_str().into(),
                    list(&c.command.rules)?.into(),
                    list(&c.command.runtime_rule_ids)?.into(),
                    now_us.into(),
                    seq.into(),
                    state_str(c.state).into(),
                    now_us.into(),
                    "".into(),
                ])
                .map_err(build_error)?;
        }
        db.execute(&insert).await?;
    }
    Ok(stored)
}

/// The cluster's pending commands, oldest first.
pub(super) async fn pending(db: &DatabaseConnection, tenant: &str, cluster: &str) -> StoreResult<Vec<StoredCommand>> {
    let stmt = Query::select()
        .columns(COLUMNS)
        .from("cn_commands")
        .and_where(scope(tenant, cluster))
        .and_where(col_eq("state", "pending"))
        .order_by("issued_at", SqlOrder::Asc)
        .order_by("seq", SqlOrder::Asc)
        .order_by("id", SqlOrder::Asc)
        .to_owned();
    db.query_all(&stmt).await?.iter().map(stored_command).collect()
}

/// One command by id (of `cluster` only, when given).
pub(super) async fn one<C: ConnectionTrait>(
    db: &C,
    tenant: &str,
    cluster: Option<&str>,
    id: &str,
) -> StoreResult<Option<StoredCommand>> {
    let stmt = Query::select()
        .columns(COLUMNS)
        .from("cn_commands")
        .and_where(col_eq("tenant_id", tenant))
        .and_where(col_eq("id", id))
        .and_where_option(cluster.map(|c| col_eq("cluster_id", c)))
        .to_owned();
    db.query_one(&stmt).await?.as_ref().map(stored_command).transpose()
}

/// Records an ack once.
pub(super) async fn ack(
    store: &SqlStore,
    tenant: &str,
    cluster: &str,
    id: &str,
    state: CommandState,
    message: &str,
    at: OffsetDateTime,
) -> StoreResult<Acked> {
    let tx = store.begin().await?;
    let Some(current) = one(&tx, tenant, Some(cluster), id).await? else {
        tx.rollback().await?;
        return Ok(Acked::Unknown);
    };
    // A repeated ack (or, which the contract rules out, an ack to `pending`) changes nothing.
    if current.state.is_final() || !state.is_final() {
        tx.rollback().await?;
        return Ok(Acked::Already(current));
    }
    let at = truncate(at);
    let stmt = Query::update()
        .table("cn_commands")
        .value("state", state_str(state))
        .value("state_changed_at", micros(at))
        .value("ack_message", message)
        .and_where(scope(tenant, cluster))
        .and_where(col_eq("id", id))
        .and_where(col_eq("state", "pending"))
        .to_owned();
    let updated = tx.execute(&stmt).await?.rows_affected();
    let after = one(&tx, tenant, Some(cluster), id).await?;
    tx.commit().await?;
    match after {
        Some(command) if updated == 1 => Ok(Acked::Now(command)),
        Some(command) => Ok(Acked::Already(command)),
        None => Ok(Acked::Unknown),
    }
}

/// Lists commands, newest first.
pub(super) async fn list(
    db: &DatabaseConnection,
    tenant: &str,
    filter: &CommandFilter,
    page: &PageRequest,
) -> StoreResult<Page<StoredCommand>> {
    let fingerprint = format!("{filter:?}");
    let cursor = decode_token("commands", &fingerprint, page)?;
    let size = page_size(page);
    let mut stmt = Query::select();
    stmt.columns(COLUMNS)
        .from("cn_commands")
        .and_where(col_eq("tenant_id", tenant))
        .and_where_option(filter.cluster.as_deref().map(|c| col_eq("cluster_id", c)))
        .and_where_option(filter.state.map(|s| col_eq("state", state_str(s))))
        .and_where_option(filter.namespace.as_deref().map(|n| col_eq("namespace", n)))
        .and_where_option(filter.pod.as_deref().map(|p| col_eq("pod", p)));
    if let Some(Cursor { at, seq, id }) = cursor {
        stmt.and_where(
            Expr::col("issued_at").lt(at).or(Expr::col("issued_at").eq(at).and(
                Expr::col("seq")
                    .lt(seq)
                    .or(Expr::col("seq").eq(seq).and(Expr::col("id").lt(id))),
            )),
        );
    }
    stmt.order_by("issued_at", SqlOrder::Desc)
        .order_by("seq", SqlOrder::Desc)
        .order_by("id", SqlOrder::Desc)
        .limit(u64::try_from(size).unwrap_or(u64::MAX).saturating_add(1));
    let mut items = Vec::new();
    for row in db.query_all(&stmt).await? {
        let c = stored_command(&row)?;
        let cursor = Cursor {
            at: micros(c.issued_at),
            seq: seq_of(&row)?,
            id: c.id.clone(),
        };
        items.push((c, cursor));
    }
    Ok(finish_page(items, size, "commands", &fingerprint))
}
