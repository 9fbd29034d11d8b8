//! Events: batched idempotent inserts, the search (the query language translated to SQL with
//! bound values), retention; and the recorded admissions.

use compact_str::CompactString;
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseTransaction, DbBackend, QueryResult, TransactionOptions, TransactionTrait,
    Value,
};
use time::OffsetDateTime;

use super::migration::SUMMARY_WORDS;
use super::{
    Cursor, DAY_MICROS, Sql, SqlStore, decode_token, finish_page, from_micros, get, micros, page_size, partition_day,
    to_u64,
};
use crate::entity::Workload;
use crate::event::{Action, Mitigation, SecurityEvent, Severity, Source};
use crate::query::{Query, Term, has_words, image_repository, text_words};
use crate::store::{
    AdmissionFilter, COUNT_LIMIT, Expired, Page, PageRequest, RecordedAdmission, SearchResult, StoreError, StoreResult,
    TimeRange,
};

/// The stored event columns, in insert order.
pub(super) const COLUMNS: &str = "tenant_id, id, occurred_at, cluster_id, source, severity, rule, summary, action, namespace, pod, pod_uid, container, image, image_repo, digest, subresource, workload_kind, workload_name, labels, mitigation, details";
const COLUMN_COUNT: usize = 22;

/// Rows per insert statement on SQLite (at most 32,766 bound values a statement).
const SQLITE_ROWS_PER_STATEMENT: usize = 1000;

/// A severity as stored: its rank (the `severity:` term compares it).
fn severity_rank(s: Severity) -> i16 {
    match s {
        Severity::Info => 0,
        Severity::Low => 1,
        Severity::Medium => 2,
        Severity::High => 3,
        Severity::Critical => 4,
    }
}

fn severity_of(rank: i64) -> StoreResult<Severity> {
    usize::try_from(rank)
        .ok()
        .and_then(|i| Severity::ALL.get(i).copied())
        .ok_or_else(|| StoreError::Corrupt(format!("severity rank {rank}")))
}

fn parse<T: std::str::FromStr>(s: &str, what: &str) -> StoreResult<T> {
    s.parse().map_err(|_| StoreError::Corrupt(format!("{what} {s:?}")))
}

fn labels_json(labels: &[(CompactString, CompactString)]) -> String {
    serde_json::Value::Array(
        labels
            .iter()
            .map(|(k, v)| serde_json::json!([k.as_str(), v.as_str()]))
            .collect(),
    )
    .to_string()
}

fn labels_of(json: &str) -> StoreResult<Vec<(CompactString, CompactString)>> {
    let pairs: Vec<(String, String)> =
        serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("labels: {e}")))?;
    Ok(pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
}

fn mitigation_of(s: &str) -> StoreResult<Mitigation> {
    [Mitigation::Log, Mitigation::Isolate, Mitigation::Terminate]
        .into_iter()
        .find(|m| m.as_str() == s)
        .ok_or_else(|| StoreError::Corrupt(format!("mitigation {s:?}")))
}

fn push_row(sql: &mut Sql, e: &SecurityEvent) {
    let at = micros(e.occurred_at);
    let (kind, name) = e.workload.as_ref().map_or((String::new(), String::new()), |w| {
        (w.kind.to_string(), w.name.to_string())
    });
    sql.push("(");
    let values: [Value; COLUMN_COUNT] = [
        e.tenant_id.as_str().into(),
        e.id.as_str().into(),
        at.into(),
        e.cluster_id.as_str().into(),
        e.source.as_str().into(),
        severity_rank(e.severity).into(),
        e.rule.as_str().into(),
        e.summary.as_str().into(),
        e.action.as_str().into(),
        e.namespace.as_str().into(),
        e.pod.as_str().into(),
        e.pod_uid.as_str().into(),
        e.container.as_str().into(),
        e.image.as_str().into(),
        image_repository(&e.image).into(),
        e.digest.as_str().into(),
        e.subresource.as_str().into(),
        kind.into(),
        name.into(),
        e.labels.as_deref().map(labels_json).into(),
        e.mitigation.map(|m| m.as_str().to_owned()).into(),
        e.details_json.as_str().into(),
    ];
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(v);
    }
    sql.push(")");
}

pub(super) async fn insert(store: &SqlStore, events: &[SecurityEvent]) -> StoreResult<u64> {
    if events.is_empty() {
        return Ok(0);
    }
    let backend = store.backend();
    store
        .ensure_partitions(events.iter().map(|e| micros(e.occurred_at)))
        .await?;
    if backend == DbBackend::Postgres {
        return copy_insert(store, events).await;
    }
    let tx = store.begin().await?;
    let mut new = 0;
    for chunk in events.chunks(SQLITE_ROWS_PER_STATEMENT) {
        let mut sql = Sql::new(backend, &format!("INSERT INTO tm_events ({COLUMNS}) VALUES "));
        for (i, e) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            push_row(&mut sql, e);
        }
        sql.push(" ON CONFLICT DO NOTHING");
        new += tx.execute_raw(sql.statement()).await?.rows_affected();
    }
    tx.commit().await?;
    Ok(new)
}

/// Rows sent to the staging table per `CopyData` message (a few MB each).
const COPY_ROWS_PER_MESSAGE: usize = 2000;

/// The per-connection staging table of [`copy_insert`]: a temporary table (not WAL-logged,
/// no index) emptied at every commit.
const STAGE_DDL: &str =
    "CREATE TEMP TABLE IF NOT EXISTS tm_events_stage (LIKE tm_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS";

fn sqlx_error(e: sea_orm::sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Appends `text` as one field of `COPY`'s text format: backslash, tab, newline and
/// carriage return escaped (a NUL is refused by PostgreSQL's text type, as with a bound
/// value: the batch fails and is retried, nothing is stored half).
fn push_copy_text(out: &mut Vec<u8>, text: &str) {
    for b in text.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// Appends one event as a line of `COPY`'s text format, in [`COLUMNS`] order.
pub(crate) fn push_copy_row(out: &mut Vec<u8>, e: &SecurityEvent) {
    use std::io::Write as _;
    let (kind, name) = e
        .workload
        .as_ref()
        .map_or(("", ""), |w| (w.kind.as_str(), w.name.as_str()));
    let text = |out: &mut Vec<u8>, t: &str| {
        push_copy_text(out, t);
        out.push(b'\t');
    };
    text(out, &e.tenant_id);
    text(out, &e.id);
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{}\t", micros(e.occurred_at));
    text(out, &e.cluster_id);
    text(out, e.source.as_str());
    let _ = write!(out, "{}\t", severity_rank(e.severity));
    text(out, &e.rule);
    text(out, &e.summary);
    text(out, e.action.as_str());
    text(out, &e.namespace);
    text(out, &e.pod);
    text(out, &e.pod_uid);
    text(out, &e.container);
    text(out, &e.image);
    text(out, image_repository(&e.image));
    text(out, &e.digest);
    text(out, &e.subresource);
    text(out, kind);
    text(out, name);
    match &e.labels {
        Some(labels) => text(out, &labels_json(labels)),
        None => out.extend_from_slice(b"\\N\t"),
    }
    match e.mitigation {
        Some(m) => text(out, m.as_str()),
        None => out.extend_from_slice(b"\\N\t"),
    }
    push_copy_text(out, &e.details_json);
    out.push(b'\n');
}

/// The PostgreSQL write. Repeats within the batch are dropped first (the primary key's
/// tenant, id and time), and the rest sorted in key order (so that two batches written at
/// once, both holding an event, wait for each other rather than deadlock). Then the fast
/// path: one `COPY` straight into `tm_events`, which counts every row as new. When an event
/// was stored already (a redelivery after a crash, a resent sensor batch: a unique
/// violation) that transaction is rolled back, nothing of it stays, and the batch takes the
/// idempotent path, [`staged_insert`].
async fn copy_insert(store: &SqlStore, events: &[SecurityEvent]) -> StoreResult<u64> {
    let mut seen = std::collections::HashSet::with_capacity(events.len());
    let mut batch: Vec<&SecurityEvent> = events
        .iter()
        .filter(|e| seen.insert((e.tenant_id.as_str(), e.id.as_str(), micros(e.occurred_at))))
        .collect();
    batch.sort_unstable_by(|a, b| {
        (a.tenant_id.as_str(), a.id.as_str(), a.occurred_at).cmp(&(b.tenant_id.as_str(), b.id.as_str(), b.occurred_at))
    });
    let pool = store.db.get_postgres_connection_pool();
    match copy_new(pool, &batch).await {
        Ok(()) => Ok(batch.len() as u64),
        Err(e) if is_unique_violation(&e) => staged_insert(pool, &batch).await,
        Err(e) => Err(sqlx_error(e)),
    }
}

fn is_unique_violation(e: &sea_orm::sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).as_deref() == Some("23505")
}

/// The fast path: `COPY`s `rows` straight into `tm_events` in one transaction.
async fn copy_new(pool: &sea_orm::sqlx::PgPool, rows: &[&SecurityEvent]) -> Result<(), sea_orm::sqlx::Error> {
    let mut tx = pool.begin().await?;
    copy_into(&mut tx, rows, "tm_events").await?;
    tx.commit().await
}

/// `COPY`s `rows` into `table` inside `tx` (text format, a few MB per message).
async fn copy_into(
    tx: &mut sea_orm::sqlx::Transaction<'_, sea_orm::sqlx::Postgres>,
    rows: &[&SecurityEvent],
    table: &str,
) -> Result<(), sea_orm::sqlx::Error> {
    let mut copy = tx.copy_in_raw(&format!("COPY {table} ({COLUMNS}) FROM STDIN")).await?;
    let mut buf = Vec::with_capacity(COPY_ROWS_PER_MESSAGE * 2048);
    for chunk in rows.chunks(COPY_ROWS_PER_MESSAGE) {
        buf.clear();
        for e in chunk {
            push_copy_row(&mut buf, e);
        }
        if let Err(e) = copy.send(buf.as_slice()).await {
            // Leaves the connection usable (the transaction then rolls back on drop).
            let _ = copy.abort(e.to_string()).await;
            return Err(e);
        }
    }
    copy.finish().await.map(|_| ())
}

/// The idempotent write: the batch is `COPY`'d into a temporary staging table, then moved
/// with one `INSERT ... SELECT ... ON CONFLICT DO NOTHING`, all in one transaction. The
/// conflict target is the primary key (tenant, id, time), so a repeat of a stored event is
/// skipped; the count is of rows new in the table. The staging table costs no WAL and no
/// index upkeep, but the move costs PostgreSQL about a fifth more than the fast path.
async fn staged_insert(pool: &sea_orm::sqlx::PgPool, rows: &[&SecurityEvent]) -> StoreResult<u64> {
    let mut tx = pool.begin().await.map_err(sqlx_error)?;
    sea_orm::sqlx::query(STAGE_DDL)
        .execute(&mut *tx)
        .await
        .map_err(sqlx_error)?;
    copy_into(&mut tx, rows, "tm_events_stage").await.map_err(sqlx_error)?;
    // The text holds only this module's constants.
    let new = sea_orm::sqlx::query(sea_orm::sqlx::AssertSqlSafe(format!(
        "INSERT INTO tm_events ({COLUMNS}) SELECT {COLUMNS} FROM tm_events_stage ON CONFLICT DO NOTHING"
    )))
    .execute(&mut *tx)
    .await
    .map_err(sqlx_error)?
    .rows_affected();
    tx.commit().await.map_err(sqlx_error)?;
    Ok(new)
}

fn event_of(row: &QueryResult) -> StoreResult<SecurityEvent> {
    let kind: String = get(row, "workload_kind")?;
    let name: String = get(row, "workload_name")?;
    let labels: Option<String> = get(row, "labels")?;
    let mitigation: Option<String> = get(row, "mitigation")?;
    Ok(SecurityEvent {
        id: get::<String>(row, "id")?.into(),
        tenant_id: get::<String>(row, "tenant_id")?.into(),
        cluster_id: get::<String>(row, "cluster_id")?.into(),
        source: parse::<Source>(&get::<String>(row, "source")?, "source")?,
        occurred_at: from_micros(get(row, "occurred_at")?)?,
        severity: severity_of(i64::from(get::<i16>(row, "severity")?))?,
        rule: get::<String>(row, "rule")?.into(),
        summary: get(row, "summary")?,
        action: parse::<Action>(&get::<String>(row, "action")?, "action")?,
        namespace: get::<String>(row, "namespace")?.into(),
        pod: get::<String>(row, "pod")?.into(),
        pod_uid: get::<String>(row, "pod_uid")?.into(),
        container: get::<String>(row, "container")?.into(),
        image: get(row, "image")?,
        digest: get::<String>(row, "digest")?.into(),
        subresource: get::<String>(row, "subresource")?.into(),
        workload: (!kind.is_empty() || !name.is_empty()).then(|| Workload {
            kind: kind.into(),
            name: name.into(),
        }),
        labels: labels.as_deref().map(labels_of).transpose()?,
        mitigation: mitigation.as_deref().map(mitigation_of).transpose()?,
        details_json: get(row, "details")?,
    })
}

/// The `tsquery` of a free-text term's words (letters and digits only, so nothing to escape):
/// all of them, the last as a prefix when `prefix`.
fn words_tsquery(words: &[&str], prefix: bool) -> String {
    let mut q = String::new();
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            q.push_str(" & ");
        }
        q.push('\'');
        q.push_str(w);
        q.push('\'');
    }
    if prefix {
        q.push_str(":*");
    }
    q
}

/// The regular expression (on the summary in ASCII lowercase) of a phrase: its words
/// consecutively, between word boundaries (a prefix ends anywhere).
fn phrase_regex(words: &[&str], prefix: bool) -> String {
    format!(
        "(^|[^a-z0-9]){}{}",
        words.join("[^a-z0-9]+"),
        if prefix { "" } else { "([^a-z0-9]|$)" }
    )
}

/// How a statement checks free text on PostgreSQL. The three select the same events (a word
/// is a run of ASCII letters and digits, `crate::query::words`); they differ in the plans
/// they leave the planner. Computing an event's words ([`SUMMARY_WORDS`], a regular
/// expression split and a `tsvector`) costs about 19 µs a row (measured at 10 million
/// events), matching the words' regular expression on the summary about 2 µs: a plan that
/// computes the words row by row over thousands of rows costs more than the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextCheck {
    /// The word index's condition (and, for a phrase, the words' order on the summary): for
    /// plans driven by the word index, which computes no row's words.
    Index,
    /// The word index's condition and the words' regular expression on the summary: a plan
    /// that reads rows by time checks the cheaper expression first and computes the words of
    /// the matching rows only.
    IndexAndSummary,
    /// The words' regular expression alone: no word index (rows read by time, each checked on
    /// its summary).
    Summary,
    /// Free text left out (the caller checks it, [`push_summary_checks`]).
    Omit,
}

/// Appends ` AND <term>` for each term of the query: every value is bound. Free text is, on
/// PostgreSQL, exact (see [`TextCheck`] for how); on SQLite a prefilter only (each word with
/// `LIKE`, ASCII case ignored), the words then checked in Rust (`sqlite_text_scan`).
fn push_terms(sql: &mut Sql, query: &Query, check: TextCheck) {
    let postgres = sql.backend == DbBackend::Postgres;
    for term in &query.terms {
        match term {
            Term::Type(s) => sql.push(" AND source = ").bind(s.as_str()),
            Term::Cluster(c) => sql.push(" AND cluster_id = ").bind(c.as_str()),
            Term::Namespace(n) => sql.push(" AND namespace = ").bind(n.as_str()),
            Term::Pod(p) => sql.push(" AND pod = ").bind(p.as_str()),
            Term::Rule(r) => sql.push(" AND rule = ").bind(r.as_str()),
            Term::Action(a) => sql.push(" AND action = ").bind(a.as_str()),
            Term::MinSeverity(s) => sql.push(" AND severity >= ").bind(severity_rank(*s)),
            Term::Workload { kind, name } => {
                sql.push(" AND workload_name = ").bind(name.as_str());
                if let Some(kind) = kind {
                    sql.push(" AND lower(workload_kind) = ").bind(kind.to_ascii_lowercase());
                }
                &mut *sql
            }
            Term::Image(i) if i.is_empty() => sql.push(" AND 1 = 0"),
            Term::Image(i) => {
                // A reference equal to `i` has `i`'s repository: the repository index serves
                // both the exact and the repository match; the digest has its own.
                sql.push(" AND ((image_repo = ")
                    .bind(image_repository(i))
                    .push(" AND (image = ")
                    .bind(i.as_str())
                    .push(" OR image_repo = ")
                    .bind(i.as_str())
                    .push(")) OR digest = ")
                    .bind(i.as_str())
                    .push(")")
            }
            Term::Text(_) if check == TextCheck::Omit => &mut *sql,
            Term::Text(t) => {
                let (words, prefix) = text_words(t);
                if words.is_empty() {
                    // The parser refuses such a term; a hand-built one matches nothing.
                    sql.push(" AND 1 = 0");
                } else if postgres {
                    if check != TextCheck::Summary {
                        sql.push(" AND ")
                            .push(SUMMARY_WORDS)
                            .push(" @@ ")
                            .bind(words_tsquery(&words, prefix))
                            .push("::tsquery");
                    }
                    // A phrase's order is only on the summary (the index has no positions).
                    if words.len() > 1 || check != TextCheck::Index {
                        sql.push(" AND lower(summary COLLATE \"C\") ~ ")
                            .bind(phrase_regex(&words, prefix));
                    }
                } else {
                    // Words are letters and digits: nothing for LIKE to escape.
                    for w in &words {
                        sql.push(" AND summary LIKE ").bind(format!("%{w}%"));
                    }
                }
                &mut *sql
            }
        };
    }
}

/// Appends a condition (PostgreSQL) on `summary` that holds when it has every free-text term's
/// words: their regular expressions.
fn push_summary_checks(sql: &mut Sql, query: &Query) {
    sql.push("TRUE");
    for term in &query.terms {
        if let Term::Text(t) = term {
            let (words, prefix) = text_words(t);
            if words.is_empty() {
                sql.push(" AND FALSE");
            } else {
                sql.push(" AND lower(summary COLLATE \"C\") ~ ")
                    .bind(phrase_regex(&words, prefix));
            }
        }
    }
}

/// The search's filter: tenant, times `[from, to)` in microseconds and terms (without the
/// page cursor).
fn push_filter(sql: &mut Sql, tenant: &str, query: &Query, from: i64, to: i64, check: TextCheck) {
    sql.push(" FROM tm_events WHERE tenant_id = ")
        .bind(tenant)
        .push(" AND occurred_at >= ")
        .bind(from)
        .push(" AND occurred_at < ")
        .bind(to);
    push_terms(sql, query, check);
}

/// Appends the keyset condition (no leading ` AND `): strictly older than the cursor.
fn push_older(sql: &mut Sql, c: &Cursor) {
    // The `<=` bound alone lets the time index start at the cursor; with the `OR` only, the
    // index is read from the range's newest row and a deep page re-reads every page before.
    sql.push("(occurred_at <= ")
        .bind(c.at)
        .push(" AND (occurred_at < ")
        .bind(c.at)
        .push(" OR (occurred_at = ")
        .bind(c.at)
        .push(" AND id < ")
        .bind(c.id.as_str())
        .push(")))");
}

/// Appends the keyset condition: strictly older than the cursor.
fn push_cursor(sql: &mut Sql, cursor: Option<&Cursor>) {
    if let Some(c) = cursor {
        sql.push(" AND ");
        push_older(sql, c);
    }
}

/// The statement of the newest `limit` events of `[from, to)` that pass the filter, older
/// than `cursor`.
#[allow(clippy::too_many_arguments)]
fn newest_sql(
    backend: DbBackend,
    tenant: &str,
    query: &Query,
    (from, to): (i64, i64),
    cursor: Option<&Cursor>,
    limit: usize,
    check: TextCheck,
    by_time_index: bool,
) -> Sql {
    let mut sql = Sql::new(backend, &format!("SELECT {COLUMNS}"));
    push_filter(&mut sql, tenant, query, from, to, check);
    push_cursor(&mut sql, cursor);
    // `+ 0` keeps the planner from walking the time index in order (and filtering every row
    // it meets) when it misjudges how many rows match.
    sql.push(if by_time_index {
        " ORDER BY occurred_at DESC, id DESC LIMIT "
    } else {
        " ORDER BY occurred_at + 0 DESC, id DESC LIMIT "
    })
    .bind(i64::try_from(limit).unwrap_or(i64::MAX));
    sql
}

/// The statement counting the events that pass the filter, up to one past [`COUNT_LIMIT`]
/// ("10,000+" costs at most 10,001 matches).
fn count_sql(backend: DbBackend, tenant: &str, query: &Query, (from, to): (i64, i64)) -> Sql {
    let mut count = Sql::new(backend, "SELECT count(*) AS n FROM (SELECT 1 AS one");
    push_filter(&mut count, tenant, query, from, to, TextCheck::Index);
    count
        .push(" LIMIT ")
        .bind(i64::try_from(COUNT_LIMIT + 1).unwrap_or(i64::MAX))
        .push(") AS limited");
    count
}

/// Days read one by one, newest first, by [`matches_sql`]; older ones are read together.
const DAY_BRANCHES: usize = 8;

/// The start of `t`'s UTC day (a partition's lower bound).
fn day_start(t: i64) -> i64 {
    t.div_euclid(DAY_MICROS).saturating_mul(DAY_MICROS)
}

/// Free text on PostgreSQL, one statement: the matches of `[from, to)` through the word index,
/// up to one past [`COUNT_LIMIT`], newest day first; of those the newest `want` events, each
/// with the number read (`n`, [`COUNT_LIMIT`] + 1 when there are more) and whether it is
/// older than the cursor (`after`), those first. When `n` is at most [`COUNT_LIMIT`], every
/// match was read: the rows with `after` are the page.
///
/// Each day is a branch of its own (a `UNION ALL` runs in order, and the limit stops it): a
/// common word is counted in the newest day, where rows are likelier cached, a rare one in
/// a word-index lookup per day (a day partition's; the planner adds the time index for a
/// small part of a day). The matches are read as keys only; the page's events are then
/// read by primary key.
fn matches_sql(tenant: &str, query: &Query, (from, to): (i64, i64), cursor: Option<&Cursor>, want: usize) -> Sql {
    let columns: Vec<String> = COLUMNS.split(", ").map(|c| format!("e.{c}")).collect();
    let mut sql = Sql::new(
        DbBackend::Postgres,
        &format!(
            "SELECT {}, p.n, p.after FROM (SELECT occurred_at, id, count(*) OVER () AS n, ",
            columns.join(", ")
        ),
    );
    match cursor {
        Some(c) => push_older(&mut sql, c),
        None => {
            sql.push("TRUE");
        }
    }
    sql.push(" AS after FROM (");
    let mut hi = to;
    let mut branches = 0;
    while hi > from {
        branches += 1;
        let lo = if branches == DAY_BRANCHES {
            from
        } else {
            day_start(hi.saturating_sub(1)).max(from)
        };
        if branches > 1 {
            sql.push(" UNION ALL ");
        }
        sql.push("(SELECT occurred_at, id");
        push_filter(&mut sql, tenant, query, lo, hi, TextCheck::Index);
        sql.push(")");
        hi = lo;
    }
    sql.push(" LIMIT ")
        .bind(i64::try_from(COUNT_LIMIT + 1).unwrap_or(i64::MAX))
        .push(") AS m ORDER BY after DESC, occurred_at DESC, id DESC LIMIT ")
        .bind(i64::try_from(want).unwrap_or(i64::MAX))
        .push(") AS p JOIN tm_events AS e ON e.tenant_id = ")
        .bind(tenant)
        .push(
            " AND e.occurred_at = p.occurred_at AND e.id = p.id ORDER BY p.after DESC, p.occurred_at DESC, p.id DESC",
        );
    sql
}

/// Newest events (of the other terms) whose summaries [`text_search_postgres`] checks first.
const PROBE_ROWS: i64 = 1000;

/// Newest events (of the other terms) the count of a dense word reads at most: enough for
/// [`COUNT_LIMIT`] + 1 matches at the density of [`is_dense`].
const DENSE_WALK_ROWS: i64 = 3 * (COUNT_LIMIT as i64 + 1);

/// Whether `hits` matches among `walked` events make the words dense: a third or more. A
/// dense word is counted faster by the words' regular expression on the newest events (≈ 2.6
/// µs an event: 30,003 events at a third, ≈ 80 ms) than by the word index (its postings of
/// a whole day, ≈ 0.13 µs each: 420,000 at a third of 1.25 million events a day). And the
/// planner, seeing most rows match, reads the day in order and computes every row's words
/// (≈ 21 µs a match: 220 ms for 10,001, measured).
fn is_dense(walked: i64, hits: i64) -> bool {
    walked == PROBE_ROWS && hits.saturating_mul(3) >= walked
}

/// Appends the subquery of the newest `rows` events of `[from, to)` that pass the terms other
/// than free text (their summaries).
fn push_newest_summaries(sql: &mut Sql, tenant: &str, query: &Query, span: (i64, i64), rows: i64) {
    sql.push("(SELECT summary");
    push_filter(sql, tenant, query, span.0, span.1, TextCheck::Omit);
    sql.push(" ORDER BY occurred_at DESC, id DESC LIMIT ")
        .bind(rows)
        .push(") AS w");
}

/// The statement of [`PROBE_ROWS`]: how many newest events it read (`walked`, fewer when the
/// range has fewer) and how many have the words (`hits`).
fn probe_sql(tenant: &str, query: &Query, span: (i64, i64)) -> Sql {
    let mut sql = Sql::new(
        DbBackend::Postgres,
        "SELECT count(*) AS walked, count(*) FILTER (WHERE ",
    );
    push_summary_checks(&mut sql, query);
    sql.push(") AS hits FROM ");
    push_newest_summaries(&mut sql, tenant, query, span, PROBE_ROWS);
    sql
}

/// The statement counting a dense word's matches among the newest [`DENSE_WALK_ROWS`] events,
/// up to one past [`COUNT_LIMIT`] (exact only when that many are found).
fn dense_count_sql(tenant: &str, query: &Query, span: (i64, i64)) -> Sql {
    let mut sql = Sql::new(DbBackend::Postgres, "SELECT count(*) AS n FROM (SELECT 1 AS one FROM ");
    push_newest_summaries(&mut sql, tenant, query, span, DENSE_WALK_ROWS);
    sql.push(" WHERE ");
    push_summary_checks(&mut sql, query);
    sql.push(" LIMIT ")
        .bind(i64::try_from(COUNT_LIMIT + 1).unwrap_or(i64::MAX))
        .push(") AS c");
    sql
}

/// The settings of a search's transaction on PostgreSQL:
/// - custom plans only: the driver prepares a statement once per connection, and after five
///   runs PostgreSQL may keep a generic plan, made without the values; a search's generic
///   plan guesses the time range and the words, and at 10 million events it read each day
///   partition's whole time index to find a rare word (2 s where the custom plan takes
///   30 ms, measured);
/// - room for exact bitmaps of a day partition: at the default 4 MB, the word index's bitmap
///   of a common word over a day partition (70,000 heap pages at 10 million events over 8
///   days, 64 bytes a page; 1.5 KB events make that 250,000) turns lossy, and every row of
///   a lossy page has its words computed again (≈ 1 s for a count, measured);
/// - no JIT: compiling costs more than any of these statements runs.
const SEARCH_SETTINGS: &str = "SELECT set_config('plan_cache_mode', 'force_custom_plan', true), \
     set_config('work_mem', '32MB', true), set_config('jit', 'off', true)";

/// A read-only transaction with [`SEARCH_SETTINGS`] (PostgreSQL).
async fn search_transaction(store: &SqlStore) -> StoreResult<DatabaseTransaction> {
    let tx = store
        .db
        .begin_with_options(TransactionOptions {
            access_mode: Some(AccessMode::ReadOnly),
            ..TransactionOptions::default()
        })
        .await?;
    tx.execute_unprepared(SEARCH_SETTINGS).await?;
    Ok(tx)
}

/// Runs a search's statements; when explaining, records each one's `EXPLAIN (ANALYZE,
/// BUFFERS)` first (the statement then runs again for its rows).
struct Reader<'a, C> {
    db: &'a C,
    plans: Option<Vec<(String, Vec<String>)>>,
}

impl<C: ConnectionTrait> Reader<'_, C> {
    async fn all(&mut self, what: &str, sql: &Sql) -> StoreResult<Vec<QueryResult>> {
        if let Some(plans) = self.plans.as_mut() {
            let explain = Sql {
                backend: sql.backend,
                text: format!("EXPLAIN (ANALYZE, BUFFERS) {}", sql.text),
                values: sql.values.clone(),
            };
            let mut lines = Vec::new();
            for row in self.db.query_all_raw(explain.statement()).await? {
                lines.push(get::<String>(&row, "QUERY PLAN")?);
            }
            plans.push((what.to_owned(), lines));
        }
        Ok(self.db.query_all_raw(sql.statement()).await?)
    }
}

/// The count of a count statement's one row.
fn count_of(rows: &[QueryResult]) -> StoreResult<u64> {
    match rows.first() {
        Some(row) => to_u64(get::<i64>(row, "n")?, "count"),
        None => Ok(0),
    }
}

/// A search without free text (or on SQLite, its page by [`sqlite_text_scan`] instead): the
/// page's rows (up to `want`, by the time index or a term's) and the count (up to one past
/// [`COUNT_LIMIT`]).
async fn terms_search<C: ConnectionTrait>(
    reader: &mut Reader<'_, C>,
    tenant: &str,
    query: &Query,
    span: (i64, i64),
    cursor: Option<&Cursor>,
    want: usize,
) -> StoreResult<(Vec<QueryResult>, u64)> {
    let backend = reader.db.get_database_backend();
    let page = newest_sql(backend, tenant, query, span, cursor, want, TextCheck::Index, true);
    let rows = reader.all("page", &page).await?;
    let n = count_of(&reader.all("count", &count_sql(backend, tenant, query, span)).await?)?;
    Ok((rows, n))
}

/// A free-text search on PostgreSQL (in a [`search_transaction`]): the page's rows (up to
/// `want`) and the count (up to one past [`COUNT_LIMIT`]). First the words are checked on the
/// newest [`PROBE_ROWS`] events: when they are dense ([`is_dense`]) the count reads the newest
/// events by time ([`dense_count_sql`]). Otherwise, or when that finds no more than
/// [`COUNT_LIMIT`], one statement ([`matches_sql`]) counts by the word index and, when the
/// matches are at most [`COUNT_LIMIT`], pages. More matches than that are common enough to
/// page newest first by time ([`text_page_postgres`]).
async fn text_search_postgres(
    reader: &mut Reader<'_, DatabaseTransaction>,
    tenant: &str,
    query: &Query,
    span: (i64, i64),
    cursor: Option<&Cursor>,
    want: usize,
) -> StoreResult<(Vec<QueryResult>, u64)> {
    let probe = reader.all("probe", &probe_sql(tenant, query, span)).await?;
    let (walked, hits) = match probe.first() {
        Some(row) => (get::<i64>(row, "walked")?, get::<i64>(row, "hits")?),
        None => (0, 0),
    };
    if is_dense(walked, hits) {
        let n = count_of(&reader.all("dense count", &dense_count_sql(tenant, query, span)).await?)?;
        if n > COUNT_LIMIT {
            return Ok((text_page_postgres(reader, tenant, query, span, cursor, want).await?, n));
        }
        // Fewer matches further back than the newest events promised: counted below.
    }
    let rows = reader
        .all("count and page", &matches_sql(tenant, query, span, cursor, want))
        .await?;
    let n = count_of(&rows)?;
    if n <= COUNT_LIMIT {
        let mut page = Vec::with_capacity(rows.len());
        for row in rows {
            if get::<bool>(&row, "after")? {
                page.push(row);
            }
        }
        return Ok((page, n));
    }
    Ok((text_page_postgres(reader, tenant, query, span, cursor, want).await?, n))
}

/// PostgreSQL's `EXPLAIN (ANALYZE, BUFFERS)` of a search's statements (benchmarks and
/// diagnosis): each statement the search runs, named, as its plan's lines. Runs them.
pub(super) async fn explain_search(
    store: &SqlStore,
    tenant: &str,
    query: &Query,
    range: TimeRange,
) -> StoreResult<Vec<(String, Vec<String>)>> {
    if store.backend() != DbBackend::Postgres {
        return Err(StoreError::Unavailable("EXPLAIN is read on PostgreSQL only".to_owned()));
    }
    let span = (micros(range.from), micros(range.to));
    let want = page_size(&PageRequest::default()) + 1;
    if !query.terms.iter().any(|t| matches!(t, Term::Text(_))) {
        let mut reader = Reader {
            db: &store.db,
            plans: Some(Vec::new()),
        };
        terms_search(&mut reader, tenant, query, span, None, want).await?;
        return Ok(reader.plans.unwrap_or_default());
    }
    let tx = search_transaction(store).await?;
    let mut reader = Reader {
        db: &tx,
        plans: Some(Vec::new()),
    };
    text_search_postgres(&mut reader, tenant, query, span, None, want).await?;
    let plans = reader.plans.take().unwrap_or_default();
    tx.commit().await?;
    Ok(plans)
}

/// The newest stretch of a common word's page on PostgreSQL, read by time with the words
/// checked on the summary; each next window is [`WINDOW_GROWTH`] times wider, back to the
/// start of the range.
const WALK_WINDOW_MICROS: i64 = 15 * 60 * 1_000_000;
const WINDOW_GROWTH: i64 = 4;

/// A page of free-text matches on PostgreSQL when there are more than [`COUNT_LIMIT`]:
/// newest window first. The newest 15 minutes (from the cursor) are walked by time, each row
/// checked by the words' regular expression (≈ 2 µs): a common word fills the page from its
/// first rows, and a word rare in those minutes costs at most their rows (≈ 13,000 at 10
/// million events over 8 days). Older windows (an hour, then 4, 16, ...) let the planner
/// combine the word index with the time index.
async fn text_page_postgres(
    reader: &mut Reader<'_, DatabaseTransaction>,
    tenant: &str,
    query: &Query,
    (from, to): (i64, i64),
    cursor: Option<&Cursor>,
    want: usize,
) -> StoreResult<Vec<QueryResult>> {
    let mut rows = Vec::new();
    let mut hi = cursor.map_or(to, |c| c.at.saturating_add(1).min(to));
    let mut width = WALK_WINDOW_MICROS;
    let mut check = TextCheck::Summary;
    while hi > from && rows.len() < want {
        let lo = hi.saturating_sub(width).max(from);
        let walk = check == TextCheck::Summary;
        let sql = newest_sql(
            DbBackend::Postgres,
            tenant,
            query,
            (lo, hi),
            cursor,
            want - rows.len(),
            check,
            walk,
        );
        rows.extend(reader.all(if walk { "page walk" } else { "page window" }, &sql).await?);
        hi = lo;
        width = width.saturating_mul(WINDOW_GROWTH);
        check = TextCheck::IndexAndSummary;
    }
    Ok(rows)
}

/// Candidate rows read per statement by [`sqlite_text_scan`].
const SQLITE_SCAN_CHUNK: usize = 1000;

/// On SQLite, free text: the candidates of the filter (each word with `LIKE`) newest first, a
/// chunk at a time, kept when their summary has the words ([`Term::matches`], the same test
/// as live matching), until `want` are kept. `columns` must include `occurred_at`, `id` and
/// `summary`.
#[allow(clippy::too_many_arguments)]
async fn sqlite_text_scan(
    store: &SqlStore,
    tenant: &str,
    query: &Query,
    (from, to): (i64, i64),
    cursor: Option<&Cursor>,
    columns: &str,
    want: usize,
) -> StoreResult<Vec<QueryResult>> {
    let texts: Vec<(Vec<&str>, bool)> = query
        .terms
        .iter()
        .filter_map(|t| match t {
            Term::Text(t) => Some(text_words(t)),
            _ => None,
        })
        .collect();
    let mut kept = Vec::new();
    let mut after = cursor.cloned();
    loop {
        let mut sql = Sql::new(store.backend(), &format!("SELECT {columns}"));
        push_filter(&mut sql, tenant, query, from, to, TextCheck::Index);
        push_cursor(&mut sql, after.as_ref());
        sql.push(" ORDER BY occurred_at DESC, id DESC LIMIT ")
            .bind(i64::try_from(SQLITE_SCAN_CHUNK).unwrap_or(i64::MAX));
        let rows = store.db.query_all_raw(sql.statement()).await?;
        let full = rows.len() == SQLITE_SCAN_CHUNK;
        for row in rows {
            after = Some(Cursor {
                at: get(&row, "occurred_at")?,
                id: get(&row, "id")?,
            });
            let summary: String = get(&row, "summary")?;
            if texts.iter().all(|(words, prefix)| has_words(&summary, words, *prefix)) {
                kept.push(row);
                if kept.len() >= want {
                    return Ok(kept);
                }
            }
        }
        if !full {
            return Ok(kept);
        }
    }
}

pub(super) async fn search(
    store: &SqlStore,
    tenant: &str,
    query: &Query,
    range: TimeRange,
    page: &PageRequest,
) -> StoreResult<SearchResult> {
    if range.to <= range.from {
        return Err(StoreError::InvalidTimeRange);
    }
    let backend = store.backend();
    let fingerprint = format!(
        "search\n{tenant}\n{query:?}\n{}\n{}",
        micros(range.from),
        micros(range.to)
    );
    let cursor = decode_token(&fingerprint, page)?;
    let size = page_size(page);
    let span = (micros(range.from), micros(range.to));
    let text = query.terms.iter().any(|t| matches!(t, Term::Text(_)));

    let (rows, n) = if text && backend == DbBackend::Postgres {
        let tx = search_transaction(store).await?;
        let mut reader = Reader { db: &tx, plans: None };
        let found = text_search_postgres(&mut reader, tenant, query, span, cursor.as_ref(), size + 1).await?;
        tx.commit().await?;
        found
    } else if text {
        let rows = sqlite_text_scan(store, tenant, query, span, cursor.as_ref(), COLUMNS, size + 1).await?;
        let limit = usize::try_from(COUNT_LIMIT + 1).unwrap_or(usize::MAX);
        let kept = sqlite_text_scan(store, tenant, query, span, None, "occurred_at, id, summary", limit).await?;
        (rows, u64::try_from(kept.len()).unwrap_or(u64::MAX))
    } else {
        let mut reader = Reader {
            db: &store.db,
            plans: None,
        };
        terms_search(&mut reader, tenant, query, span, cursor.as_ref(), size + 1).await?
    };
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        let event = event_of(row)?;
        let cursor = Cursor {
            at: micros(event.occurred_at),
            id: event.id.to_string(),
        };
        items.push((event, cursor));
    }
    let page = finish_page(items, size, &fingerprint);
    Ok(SearchResult {
        events: page.items,
        next: page.next,
        total: n.min(COUNT_LIMIT),
        total_is_lower_bound: n > COUNT_LIMIT,
    })
}

pub(super) async fn by_ids(store: &SqlStore, tenant: &str, ids: &[CompactString]) -> StoreResult<Vec<SecurityEvent>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(1000) {
        let mut sql = Sql::new(
            store.backend(),
            &format!("SELECT {COLUMNS} FROM tm_events WHERE tenant_id = "),
        );
        sql.bind(tenant).push(" AND id IN (");
        for (i, id) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(id.as_str());
        }
        sql.push(")");
        for row in store.db.query_all_raw(sql.statement()).await? {
            out.push(event_of(&row)?);
        }
    }
    out.sort_by(|a, b| (b.occurred_at, &b.id).cmp(&(a.occurred_at, &a.id)));
    out.dedup_by(|a, b| a.id == b.id);
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Retention.

pub(super) async fn expire_tenant(
    store: &SqlStore,
    tenant: &str,
    before: OffsetDateTime,
    max_rows: u64,
) -> StoreResult<Expired> {
    let before = micros(before);
    let limit = i64::try_from(max_rows.max(1)).unwrap_or(i64::MAX);
    let mut deleted = 0;
    for (table, time_col, id_col) in [
        ("tm_events", "occurred_at", "id"),
        ("tm_admissions", "decided_at", "event_id"),
    ] {
        let left = limit - i64::try_from(deleted).unwrap_or(i64::MAX);
        if left <= 0 {
            break;
        }
        // The bounded batch is chosen by key in a subquery (DELETE ... LIMIT is not portable).
        let mut sql = Sql::new(store.backend(), &format!("DELETE FROM {table} WHERE tenant_id = "));
        sql.bind(tenant)
            .push(&format!(" AND {time_col} < "))
            .bind(before)
            .push(&format!(
                " AND {id_col} IN (SELECT {id_col} FROM {table} WHERE tenant_id = "
            ))
            .bind(tenant)
            .push(&format!(" AND {time_col} < "))
            .bind(before)
            .push(" LIMIT ")
            .bind(left)
            .push(")");
        deleted += store.db.execute_raw(sql.statement()).await?.rows_affected();
    }
    Ok(Expired {
        deleted,
        partitions_dropped: 0,
        more: deleted >= max_rows.max(1),
    })
}

pub(super) async fn expire_days(store: &SqlStore, before: OffsetDateTime, max_rows: u64) -> StoreResult<Expired> {
    let before_us = micros(before);
    let mut expired = Expired::default();
    let backend = store.backend();
    if backend == DbBackend::Postgres {
        let rows = store
            .db
            .query_all_raw(sea_orm::Statement::from_string(
                backend,
                "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'tm_events'",
            ))
            .await?;
        let mut names = Vec::new();
        for row in &rows {
            names.push(get::<String>(row, "name")?);
        }
        for name in names {
            let Some(day) = partition_day(&name) else { continue };
            let ends = day.saturating_add(1).saturating_mul(DAY_MICROS);
            if ends <= before_us {
                // The name was read back and parsed as a partition name: it is our own text.
                store
                    .db
                    .execute_unprepared(&format!("DROP TABLE IF EXISTS {name}"))
                    .await?;
                if let Ok(mut days) = store.days.lock() {
                    days.remove(&day);
                }
                expired.partitions_dropped += 1;
            }
        }
    }
    // Whole days before the boundary day: on SQLite all rows, on PostgreSQL what the
    // DEFAULT partition holds. Bounded as a tenant's expiry is.
    let boundary = before_us.div_euclid(DAY_MICROS).saturating_mul(DAY_MICROS);
    let limit = i64::try_from(max_rows.max(1)).unwrap_or(i64::MAX);
    let mut sql = Sql::new(backend, "DELETE FROM tm_events WHERE occurred_at < ");
    sql.bind(boundary)
        .push(" AND (tenant_id, id) IN (SELECT tenant_id, id FROM tm_events WHERE occurred_at < ")
        .bind(boundary)
        .push(" LIMIT ")
        .bind(limit)
        .push(")");
    expired.deleted = store.db.execute_raw(sql.statement()).await?.rows_affected();
    // Recorded admissions (not partitioned) expire with the events of their days, in the
    // same bound.
    let left = limit - i64::try_from(expired.deleted).unwrap_or(i64::MAX);
    if left > 0 {
        let mut sql = Sql::new(backend, "DELETE FROM tm_admissions WHERE decided_at < ");
        sql.bind(boundary)
            .push(" AND (tenant_id, event_id) IN (SELECT tenant_id, event_id FROM tm_admissions WHERE decided_at < ")
            .bind(boundary)
            .push(" LIMIT ")
            .bind(left)
            .push(")");
        expired.deleted += store.db.execute_raw(sql.statement()).await?.rows_affected();
    }
    expired.more = expired.deleted >= max_rows.max(1);
    Ok(expired)
}

// ---------------------------------------------------------------------------------------
// Recorded admissions.

const ADMISSION_COLUMNS: &str = "tenant_id, event_id, cluster_id, namespace, workload_kind, workload_name, decided_at, allowed, violations, projection";

pub(super) async fn record_admissions(store: &SqlStore, admissions: &[RecordedAdmission]) -> StoreResult<u64> {
    if admissions.is_empty() {
        return Ok(0);
    }
    // In key order, so that two batches written at once that share an admission wait for
    // each other rather than deadlock.
    let mut admissions: Vec<&RecordedAdmission> = admissions.iter().collect();
    admissions.sort_unstable_by(|a, b| (&a.tenant_id, &a.event_id).cmp(&(&b.tenant_id, &b.event_id)));
    let tx = store.begin().await?;
    let mut new = 0;
    for chunk in admissions.chunks(1000) {
        let mut sql = Sql::new(
            store.backend(),
            &format!("INSERT INTO tm_admissions ({ADMISSION_COLUMNS}) VALUES "),
        );
        for (i, a) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            let (kind, name) = a.workload.as_ref().map_or((String::new(), String::new()), |w| {
                (w.kind.to_string(), w.name.to_string())
            });
            sql.push("(")
                .bind(a.tenant_id.as_str())
                .push(", ")
                .bind(a.event_id.as_str())
                .push(", ")
                .bind(a.cluster_id.as_str())
                .push(", ")
                .bind(a.namespace.as_str())
                .push(", ")
                .bind(kind)
                .push(", ")
                .bind(name)
                .push(", ")
                .bind(micros(a.decided_at))
                .push(", ")
                .bind(i64::from(a.allowed))
                .push(", ")
                .bind(a.violations_json.as_str())
                .push(", ")
                .bind(a.projection.clone())
                .push(")");
        }
        sql.push(" ON CONFLICT DO NOTHING");
        new += tx.execute_raw(sql.statement()).await?.rows_affected();
    }
    tx.commit().await?;
    Ok(new)
}

pub(super) async fn admissions(
    store: &SqlStore,
    tenant: &str,
    filter: &AdmissionFilter,
    page: &PageRequest,
) -> StoreResult<Page<RecordedAdmission>> {
    let fingerprint = format!(
        "admissions\n{tenant}\n{:?}\n{:?}",
        filter.cluster_id,
        filter.since.map(micros)
    );
    let cursor = decode_token(&fingerprint, page)?;
    let size = page_size(page);
    let mut sql = Sql::new(
        store.backend(),
        &format!("SELECT {ADMISSION_COLUMNS} FROM tm_admissions WHERE tenant_id = "),
    );
    sql.bind(tenant);
    if let Some(cluster) = &filter.cluster_id {
        sql.push(" AND cluster_id = ").bind(cluster.as_str());
    }
    if let Some(since) = filter.since {
        sql.push(" AND decided_at >= ").bind(micros(since));
    }
    if let Some(c) = &cursor {
        // The `>=` bound is implied by the disjunction but is what the index range starts
        // from: without it PostgreSQL walks the tenant's index from its first row and filters,
        // so page k costs k pages (a replay of 1 million in pages of 1,000 filtered about 500
        // million rows; with it, each page reads its own rows).
        sql.push(" AND decided_at >= ")
            .bind(c.at)
            .push(" AND (decided_at > ")
            .bind(c.at)
            .push(" OR (decided_at = ")
            .bind(c.at)
            .push(" AND event_id > ")
            .bind(c.id.as_str())
            .push("))");
    }
    sql.push(" ORDER BY decided_at, event_id LIMIT ")
        .bind(i64::try_from(size + 1).unwrap_or(i64::MAX));
    let mut items = Vec::new();
    for row in store.db.query_all_raw(sql.statement()).await? {
        let kind: String = get(&row, "workload_kind")?;
        let name: String = get(&row, "workload_name")?;
        let at: i64 = get(&row, "decided_at")?;
        let a = RecordedAdmission {
            tenant_id: get::<String>(&row, "tenant_id")?.into(),
            event_id: get::<String>(&row, "event_id")?.into(),
            cluster_id: get::<String>(&row, "cluster_id")?.into(),
            namespace: get::<String>(&row, "namespace")?.into(),
            workload: (!kind.is_empty() || !name.is_empty()).then(|| Workload {
                kind: kind.into(),
                name: name.into(),
            }),
            decided_at: from_micros(at)?,
            allowed: get::<i64>(&row, "allowed")? != 0,
            violations_json: get(&row, "violations")?,
            projection: get(&row, "projection")?,
        };
        let cursor = Cursor {
            at,
            id: a.event_id.to_string(),
        };
        items.push((a, cursor));
    }
    Ok(finish_page(items, size, &fingerprint))
}
