//! Runtime rulesets (POLICY.md section 5) and attestors (section 6): one shape, one set of
//! operations. Policies reference rulesets by id and attestors by name; a reference from a
//! policy's current revision keeps the referenced object from being deleted.

use std::collections::BTreeSet;

use portcullis_engine::attestor::Attestor;
use portcullis_engine::policy::FieldError;
use portcullis_engine::runtime::Ruleset;
use portcullis_proto::events::v1 as pe;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order, Query, SelectStatement};
use sea_orm::{ConnectionTrait, FromQueryResult};
use serde_json::{Value, json};

use crate::clock::from_micros;
use crate::error::{StoreError, StoreResult};
use crate::model::{Actor, Deleted, NameQuery, Page, ResourceRef, StoredAttestor, StoredRuleset, Written};
use crate::policies::{json_document, revision_u64, stale};
use crate::store::{AuditResource, Store, Tx, check_tenant_id, decode_token, finish_page, page_limit};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ruleset,
    Attestor,
}

impl Kind {
    fn table(self) -> Alias {
        Alias::new(match self {
            Kind::Ruleset => "rulesets",
            Kind::Attestor => "attestors",
        })
    }

    fn resource(self) -> &'static str {
        match self {
            Kind::Ruleset => "ruleset",
            Kind::Attestor => "attestor",
        }
    }

    fn event(self, row: &Row, change: pe::ChangeKind) -> pe::event_envelope::Payload {
        let revision = revision_u64(row.revision);
        match self {
            Kind::Ruleset => pe::event_envelope::Payload::RulesetChanged(pe::RulesetChanged {
                ruleset_id: row.id.clone(),
                name: row.name.clone(),
                revision,
                change: change as i32,
            }),
            Kind::Attestor => pe::event_envelope::Payload::AttestorChanged(pe::AttestorChanged {
                attestor_id: row.id.clone(),
                name: row.name.clone(),
                revision,
                change: change as i32,
            }),
        }
    }
}

#[derive(Debug, Clone, FromQueryResult)]
struct Row {
    tenant_id: String,
    id: String,
    name: String,
    revision: i64,
    description: String,
    document: String,
    author_key_id: String,
    created_at: i64,
    updated_at: i64,
}

const COLUMNS: [&str; 9] = [
    "tenant_id",
    "id",
    "name",
    "revision",
    "description",
    "document",
    "author_key_id",
    "created_at",
    "updated_at",
];

fn col(name: &str) -> Expr {
    Expr::col(Alias::new(name))
}

struct Parsed {
    name: String,
    description: String,
    json: String,
    canonical: serde_json::Value,
}

/// An engine document read from JSON, validated, and its canonical JSON.
type Reader<D> = (fn(&str) -> Result<D, FieldError>, fn(&D) -> Result<(), Vec<FieldError>>);

fn read_document<D: serde::Serialize>(text: &str, (from_json, validate): Reader<D>) -> StoreResult<(D, Value)> {
    let doc = from_json(json_document(text)?).map_err(|e| StoreError::InvalidArgument(vec![e]))?;
    validate(&doc).map_err(StoreError::InvalidArgument)?;
    let value = serde_json::to_value(&doc).map_err(|e| StoreError::Internal(e.to_string()))?;
    Ok((doc, value))
}

fn parse(kind: Kind, text: &str) -> StoreResult<Parsed> {
    let (name, description, canonical) = match kind {
        Kind::Ruleset => {
            let (r, value) = read_document(text, (Ruleset::from_json, Ruleset::validate))?;
            (r.name, r.description, value)
        }
        Kind::Attestor => {
            let (a, value) = read_document(text, (Attestor::from_json, Attestor::validate))?;
            (a.name, a.description, value)
        }
    };
    Ok(Parsed {
        name,
        description,
        json: canonical.to_string(),
        canonical,
    })
}

/// The canonical form of a stored document.
fn canonical_of_stored(kind: Kind, json: &str) -> StoreResult<serde_json::Value> {
    let unreadable = |e: portcullis_engine::policy::FieldError| {
        StoreError::Internal(format!("stored {} unreadable: {e}", kind.resource()))
    };
    let value = match kind {
        Kind::Ruleset => serde_json::to_value(Ruleset::from_json(json).map_err(unreadable)?),
        Kind::Attestor => serde_json::to_value(Attestor::from_json(json).map_err(unreadable)?),
    };
    value.map_err(|e| StoreError::Internal(e.to_string()))
}

fn select(kind: Kind, tenant_id: &str) -> SelectStatement {
    Query::select()
        .columns(COLUMNS.map(Alias::new))
        .from(kind.table())
        .and_where(col("tenant_id").eq(tenant_id))
        .to_owned()
}

async fn fetch_one<C: ConnectionTrait>(db: &C, stmt: &SelectStatement) -> StoreResult<Option<Row>> {
    match db.query_one(stmt).await? {
        Some(res) => Ok(Some(Row::from_query_result(&res, "")?)),
        None => Ok(None),
    }
}

async fn find<C: ConnectionTrait>(db: &C, kind: Kind, tenant_id: &str, r: &ResourceRef) -> StoreResult<Row> {
    let mut stmt = select(kind, tenant_id);
    match r {
        ResourceRef::Id(id) => stmt.and_where(col("id").eq(id.as_str())),
        ResourceRef::Name(name) => stmt.and_where(col("name").eq(name.as_str())),
    };
    fetch_one(db, &stmt)
        .await?
        .ok_or_else(|| StoreError::not_found(kind.resource(), r.describe()))
}

async fn find_by_name<C: ConnectionTrait>(db: &C, kind: Kind, tenant_id: &str, name: &str) -> StoreResult<Option<Row>> {
    let stmt = select(kind, tenant_id).and_where(col("name").eq(name)).to_owned();
    fetch_one(db, &stmt).await
}

/// Which of `names` are attestors of the tenant.
pub(crate) async fn attestor_names_in<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    names: &BTreeSet<String>,
) -> StoreResult<BTreeSet<String>> {
    values_in(db, Kind::Attestor, "name", tenant_id, names).await
}

/// Which of `ids` are rulesets of the tenant.
pub(crate) async fn ruleset_ids_in<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    ids: &BTreeSet<String>,
) -> StoreResult<BTreeSet<String>> {
    values_in(db, Kind::Ruleset, "id", tenant_id, ids).await
}

async fn values_in<C: ConnectionTrait>(
    db: &C,
    kind: Kind,
    column: &str,
    tenant_id: &str,
    values: &BTreeSet<String>,
) -> StoreResult<BTreeSet<String>> {
    let stmt = Query::select()
        .column(Alias::new(column))
        .from(kind.table())
        .and_where(col("tenant_id").eq(tenant_id))
        .and_where(col(column).is_in(values.iter().cloned()))
        .to_owned();
    let mut found = BTreeSet::new();
    for res in db.query_all(&stmt).await? {
        found.insert(res.try_get::<String>("", column)?);
    }
    Ok(found)
}

/// Names of the policies whose current revision references the object.
async fn referencing_policies<C: ConnectionTrait>(db: &C, kind: Kind, row: &Row) -> StoreResult<Vec<String>> {
    let (table, column, value) = match kind {
        Kind::Ruleset => ("policy_ruleset_refs", "ruleset_id", row.id.as_str()),
        Kind::Attestor => ("policy_attestor_refs", "attestor_name", row.name.as_str()),
    };
    let stmt = Query::select()
        .column((Alias::new("policies"), Alias::new("name")))
        .from(Alias::new(table))
        .inner_join(
            Alias::new("policies"),
            Expr::col((Alias::new("policies"), Alias::new("tenant_id")))
                .equals((Alias::new(table), Alias::new("tenant_id")))
                .and(
                    Expr::col((Alias::new("policies"), Alias::new("id")))
                        .equals((Alias::new(table), Alias::new("policy_id"))),
                ),
        )
        .and_where(Expr::col((Alias::new(table), Alias::new("tenant_id"))).eq(row.tenant_id.as_str()))
        .and_where(Expr::col((Alias::new(table), Alias::new(column))).eq(value))
        .order_by((Alias::new("policies"), Alias::new("name")), Order::Asc)
        .limit(5)
        .to_owned();
    let mut names = Vec::new();
    for res in db.query_all(&stmt).await? {
        names.push(res.try_get::<String>("", "name")?);
    }
    Ok(names)
}

fn audit_resource(kind: Kind, row: &Row) -> AuditResource<'_> {
    AuditResource {
        kind: kind.resource(),
        id: &row.id,
        name: &row.name,
    }
}

async fn insert(tx: &mut Tx<'_>, kind: Kind, tenant_id: &str, parsed: Parsed) -> StoreResult<Row> {
    let now = tx.now_us();
    let row = Row {
        tenant_id: tenant_id.to_owned(),
        id: uuid::Uuid::new_v4().to_string(),
        name: parsed.name,
        revision: 1,
        description: parsed.description,
        document: parsed.json,
        author_key_id: tx.actor.key_id_str().to_owned(),
        created_at: now,
        updated_at: now,
    };
    let stmt = Query::insert()
        .into_table(kind.table())
        .columns(COLUMNS.map(Alias::new))
        .values_panic([
            row.tenant_id.clone().into(),
            row.id.clone().into(),
            row.name.clone().into(),
            row.revision.into(),
            row.description.clone().into(),
            row.document.clone().into(),
            row.author_key_id.clone().into(),
            row.created_at.into(),
            row.updated_at.into(),
        ])
        .to_owned();
    tx.db
        .execute(&stmt)
        .await
        .map_err(|e| crate::policies::unique_to_exists(e, kind.resource(), &row.name))?;
    tx.audit(
        tenant_id,
        &format!("{}.create", kind.resource()),
        audit_resource(kind, &row),
        json!({ "revision": 1 }),
    )
    .await?;
    tx.event(tenant_id, kind.event(&row, pe::ChangeKind::Created)).await?;
    Ok(row)
}

async fn update(
    tx: &mut Tx<'_>,
    kind: Kind,
    tenant_id: &str,
    current: Row,
    parsed: Parsed,
    expected_revision: Option<u64>,
) -> StoreResult<Written<Row>> {
    if parsed.name != current.name {
        return Err(StoreError::invalid(
            "name",
            format!(
                "renaming is refused: the {} is named {:?}",
                kind.resource(),
                current.name
            ),
        ));
    }
    if let Some(expected) = expected_revision
        && expected != revision_u64(current.revision)
    {
        return Err(stale(
            kind.resource(),
            &current.name,
            expected,
            revision_u64(current.revision),
        ));
    }
    if canonical_of_stored(kind, &current.document)? == parsed.canonical {
        return Ok(Written {
            value: current,
            created: false,
            changed: false,
        });
    }
    let next = Row {
        revision: current.revision + 1,
        description: parsed.description,
        document: parsed.json,
        author_key_id: tx.actor.key_id_str().to_owned(),
        updated_at: tx.now_us(),
        ..current.clone()
    };
    let stmt = Query::update()
        .table(kind.table())
        .value(Alias::new("revision"), next.revision)
        .value(Alias::new("description"), next.description.clone())
        .value(Alias::new("document"), next.document.clone())
        .value(Alias::new("author_key_id"), next.author_key_id.clone())
        .value(Alias::new("updated_at"), next.updated_at)
        .and_where(col("tenant_id").eq(tenant_id))
        .and_where(col("id").eq(current.id.as_str()))
        .and_where(col("revision").eq(current.revision))
        .to_owned();
    if tx.db.execute(&stmt).await?.rows_affected() != 1 {
        return Err(StoreError::FailedPrecondition(format!(
            "{} {:?} was changed concurrently; read it again and retry",
            kind.resource(),
            current.name
        )));
    }
    tx.audit(
        tenant_id,
        &format!("{}.update", kind.resource()),
        audit_resource(kind, &next),
        json!({ "revision": next.revision }),
    )
    .await?;
    tx.event(tenant_id, kind.event(&next, pe::ChangeKind::Updated)).await?;
    Ok(Written {
        value: next,
        created: false,
        changed: true,
    })
}

impl Store {
    async fn create_object(&self, kind: Kind, tenant_id: &str, actor: &Actor, document: &str) -> StoreResult<Row> {
        check_tenant_id(tenant_id)?;
        let parsed = parse(kind, document)?;
        let mut tx = self.write(actor).await?;
        tx.require_tenant(tenant_id).await?;
        if find_by_name(&tx.db, kind, tenant_id, &parsed.name).await?.is_some() {
            return Err(StoreError::exists(kind.resource(), &parsed.name));
        }
        let row = insert(&mut tx, kind, tenant_id, parsed).await?;
        tx.commit().await?;
        Ok(row)
    }

    async fn get_object(&self, kind: Kind, tenant_id: &str, r: &ResourceRef) -> StoreResult<Row> {
        check_tenant_id(tenant_id)?;
        find(&self.inner.db, kind, tenant_id, r).await
    }

    async fn list_objects(&self, kind: Kind, tenant_id: &str, query: &NameQuery) -> StoreResult<Page<Row>> {
        check_tenant_id(tenant_id)?;
        let after = decode_token(&query.page)?;
        let mut stmt = select(kind, tenant_id);
        if let Some(after) = after {
            stmt.and_where(col("name").gt(after));
        }
        if !query.name_filter.is_empty() {
            stmt.and_where(self.contains("name", &query.name_filter));
        }
        stmt.order_by(Alias::new("name"), Order::Asc)
            .limit(page_limit(&query.page));
        let mut rows = Vec::new();
        for res in self.inner.db.query_all(&stmt).await? {
            rows.push(Row::from_query_result(&res, "")?);
        }
        let (items, next_token) = finish_page(rows, &query.page, |r: &Row| r.name.clone());
        Ok(Page { items, next_token })
    }

    async fn update_object(
        &self,
        kind: Kind,
        tenant_id: &str,
        actor: &Actor,
        r: &ResourceRef,
        document: &str,
        expected_revision: Option<u64>,
    ) -> StoreResult<Written<Row>> {
        check_tenant_id(tenant_id)?;
        let parsed = parse(kind, document)?;
        let mut tx = self.write(actor).await?;
        let current = find(&tx.db, kind, tenant_id, r).await?;
        let written = update(&mut tx, kind, tenant_id, current, parsed, expected_revision).await?;
        if written.changed {
            tx.commit().await?;
        }
        Ok(written)
    }

    async fn apply_object(
        &self,
        kind: Kind,
        tenant_id: &str,
        actor: &Actor,
        document: &str,
        expected_revision: Option<u64>,
    ) -> StoreResult<Written<Row>> {
        check_tenant_id(tenant_id)?;
        let parsed = parse(kind, document)?;
        let mut tx = self.write(actor).await?;
        tx.require_tenant(tenant_id).await?;
        let written = match find_by_name(&tx.db, kind, tenant_id, &parsed.name).await? {
            Some(current) => update(&mut tx, kind, tenant_id, current, parsed, expected_revision).await?,
            None => {
                if let Some(expected) = expected_revision {
                    return Err(StoreError::FailedPrecondition(format!(
                        "{} {:?} does not exist, so it is not at revision {expected}",
                        kind.resource(),
                        parsed.name
                    )));
                }
                Written {
                    value: insert(&mut tx, kind, tenant_id, parsed).await?,
                    created: true,
                    changed: true,
                }
            }
        };
        if written.changed {
            tx.commit().await?;
        }
        Ok(written)
    }

    async fn delete_object(&self, kind: Kind, tenant_id: &str, actor: &Actor, r: &ResourceRef) -> StoreResult<Deleted> {
        check_tenant_id(tenant_id)?;
        let mut tx = self.write(actor).await?;
        let current = find(&tx.db, kind, tenant_id, r).await?;
        let users = referencing_policies(&tx.db, kind, &current).await?;
        if !users.is_empty() {
            return Err(StoreError::FailedPrecondition(format!(
                "{} {:?} is referenced by the current revision of policy(ies) {}",
                kind.resource(),
                current.name,
                users.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
            )));
        }
        let stmt = Query::delete()
            .from_table(kind.table())
            .and_where(col("tenant_id").eq(tenant_id))
            .and_where(col("id").eq(current.id.as_str()))
            .to_owned();
        // A policy that started referencing it meanwhile makes this fail on its foreign key.
        tx.db.execute(&stmt).await.map_err(|e| match e.sql_err() {
            Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_)) => StoreError::FailedPrecondition(format!(
                "{} {:?} is referenced by a policy",
                kind.resource(),
                current.name
            )),
            _ => StoreError::from(e),
        })?;
        tx.audit(
            tenant_id,
            &format!("{}.delete", kind.resource()),
            audit_resource(kind, &current),
            json!({ "revision": current.revision }),
        )
        .await?;
        tx.event(tenant_id, kind.event(&current, pe::ChangeKind::Deleted))
            .await?;
        tx.commit().await?;
        Ok(Deleted {
            id: current.id,
            name: current.name,
            revision: revision_u64(current.revision),
        })
    }
}

fn to_ruleset(row: Row) -> StoredRuleset {
    let rule_count = Ruleset::from_json(&row.document)
        .map(|r| u32::try_from(r.rules.len()).unwrap_or(u32::MAX))
        .unwrap_or(0);
    StoredRuleset {
        id: row.id,
        name: row.name,
        revision: revision_u64(row.revision),
        document_json: row.document,
        description: row.description,
        rule_count,
        author_key_id: row.author_key_id,
        created_at: from_micros(row.created_at),
        updated_at: from_micros(row.updated_at),
    }
}

fn to_attestor(row: Row) -> StoredAttestor {
    let attestor_type = Attestor::from_json(&row.document)
        .map(|a| a.attestor_type)
        .unwrap_or_default();
    StoredAttestor {
        id: row.id,
        name: row.name,
        revision: revision_u64(row.revision),
        document_json: row.document,
        description: row.description,
        attestor_type,
        author_key_id: row.author_key_id,
        created_at: from_micros(row.created_at),
        updated_at: from_micros(row.updated_at),
    }
}

fn map_written<T>(w: Written<Row>, f: fn(Row) -> T) -> Written<T> {
    Written {
        value: f(w.value),
        created: w.created,
        changed: w.changed,
    }
}

fn map_page<T>(p: Page<Row>, f: fn(Row) -> T) -> Page<T> {
    Page {
        items: p.items.into_iter().map(f).collect(),
        next_token: p.next_token,
    }
}

/// The typed operations of one kind of named document over the shared `*_object` ones:
/// one implementation, instantiated per kind.
macro_rules! named_document_store {
    (
        $kind:expr, $what:literal, $stored:ty, $from_row:path, $refs:literal,
        $create:ident, $get:ident, $list:ident, $update:ident, $apply:ident, $delete:ident $(,)?
    ) => {
        impl Store {
            #[doc = concat!("Creates ", $what, " (JSON), validated by the engine; AlreadyExists when the name is taken.")]
            pub async fn $create(&self, tenant_id: &str, actor: &Actor, document: &str) -> StoreResult<$stored> {
                self.create_object($kind, tenant_id, actor, document).await.map($from_row)
            }

            #[doc = concat!(" ", $what, " by id or name.")]
            pub async fn $get(&self, tenant_id: &str, reference: &ResourceRef) -> StoreResult<$stored> {
                self.get_object($kind, tenant_id, reference).await.map($from_row)
            }

            #[doc = concat!("The tenant's documents of this kind (", $what, ") by name.")]
            pub async fn $list(&self, tenant_id: &str, query: &NameQuery) -> StoreResult<Page<$stored>> {
                self.list_objects($kind, tenant_id, query)
                    .await
                    .map(|p| map_page(p, $from_row))
            }

            #[doc = concat!("Replaces the document of ", $what, "; the name is immutable; an identical document changes nothing.")]
            pub async fn $update(
                &self,
                tenant_id: &str,
                actor: &Actor,
                reference: &ResourceRef,
                document: &str,
                expected_revision: Option<u64>,
            ) -> StoreResult<Written<$stored>> {
                self.update_object($kind, tenant_id, actor, reference, document, expected_revision)
                    .await
                    .map(|w| map_written(w, $from_row))
            }

            #[doc = concat!("Creates ", $what, " named in the document, or updates the one of that name.")]
            pub async fn $apply(
                &self,
                tenant_id: &str,
                actor: &Actor,
                document: &str,
                expected_revision: Option<u64>,
            ) -> StoreResult<Written<$stored>> {
                self.apply_object($kind, tenant_id, actor, document, expected_revision)
                    .await
                    .map(|w| map_written(w, $from_row))
            }

            #[doc = concat!("Deletes ", $what, "; FailedPrecondition while a policy's current revision ", $refs, " it.")]
            pub async fn $delete(&self, tenant_id: &str, actor: &Actor, reference: &ResourceRef) -> StoreResult<Deleted> {
                self.delete_object($kind, tenant_id, actor, reference).await
            }
        }
    };
}

named_document_store!(
    Kind::Ruleset,
    "a ruleset",
    StoredRuleset,
    to_ruleset,
    "references",
    create_ruleset,
    get_ruleset,
    list_rulesets,
    update_ruleset,
    apply_ruleset,
    delete_ruleset,
);

named_document_store!(
    Kind::Attestor,
    "an attestor",
    StoredAttestor,
    to_attestor,
    "names",
    create_attestor,
    get_attestor,
    list_attestors,
    update_attestor,
    apply_attestor,
    delete_attestor,
);
