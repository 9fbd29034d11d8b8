//! Policies: every revision kept, optimistic concurrency, duplicate naming, references to
//! attestors and rulesets kept by foreign keys.

use std::collections::BTreeSet;

use portcullis_engine::policy::{
    AttestorRequirement, FieldError, ImageVerificationRule, PolicyDocument, ValidPolicy, validate,
};
use portcullis_proto::events::v1 as pe;
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::clock::from_micros;
use crate::entity::{cluster, policy, policy_attestor_ref, policy_revision, policy_ruleset_ref};
use crate::error::{StoreError, StoreResult};
use crate::model::{Actor, Deleted, Page, PageRequest, Policy, PolicyQuery, PolicyRevisionInfo, ResourceRef, Written};
use crate::objects::{attestor_names_in, ruleset_ids_in};
use crate::store::{
    AuditResource, Store, Tx, check_tenant_id, decode_int_token, decode_token, finish_page, page_limit,
};

/// The longest policy name.
const MAX_NAME_LEN: usize = 64;

/// A policy's revisions, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyHistory {
    /// Id of the policy.
    pub policy_id: String,
    /// The revisions of this page.
    pub revisions: Page<PolicyRevisionInfo>,
}

/// A parsed and validated policy document in the form the store keeps.
struct Parsed {
    valid: ValidPolicy,
    json: String,
    canonical: serde_json::Value,
}

fn parse(document: &str) -> StoreResult<Parsed> {
    let doc = PolicyDocument::from_json(json_document(document)?.as_bytes())
        .map_err(|e| StoreError::InvalidArgument(e.field_errors()))?;
    normalise(doc)
}

/// A document as the API takes it (`document_json`): at most the engine's size limit, and
/// JSON. YAML is the client's to read and convert (the CLI does, refusing anchors and
/// aliases): a YAML reader here would expand a small request's aliases in the store's memory.
pub(crate) fn json_document(text: &str) -> StoreResult<&str> {
    portcullis_engine::limits::check_document_size(text).map_err(|e| StoreError::InvalidArgument(vec![e]))?;
    if !text.trim_start().starts_with('{') {
        return Err(StoreError::invalid(
            "(document)",
            "must be a JSON object: the API takes documents as JSON text (the CLI converts YAML files)",
        ));
    }
    Ok(text)
}

fn normalise(doc: PolicyDocument) -> StoreResult<Parsed> {
    let valid = validate(&doc).map_err(|e| StoreError::InvalidArgument(e.field_errors()))?;
    let canonical = serde_json::to_value(&valid.document).map_err(|e| StoreError::Internal(e.to_string()))?;
    let json = canonical.to_string();
    Ok(Parsed { valid, json, canonical })
}

/// The canonical form of a stored document, to tell whether a new one is identical.
fn canonical_of_stored(json: &str) -> StoreResult<serde_json::Value> {
    let doc = PolicyDocument::from_json(json.as_bytes())
        .map_err(|e| StoreError::Internal(format!("stored policy unreadable: {e}")))?;
    serde_json::to_value(&doc).map_err(|e| StoreError::Internal(e.to_string()))
}

pub(crate) fn sha256_hex(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// References with the field path of each: `(path, attestor name or ruleset id)`.
type PathedRefs = Vec<(String, String)>;

/// The attestor names and ruleset ids a document references, each with its field path.
fn references(doc: &PolicyDocument) -> (PathedRefs, PathedRefs) {
    fn rules(prefix: &str, rules: &[ImageVerificationRule], out: &mut PathedRefs) {
        for (i, rule) in rules.iter().enumerate() {
            let (key, names) = match &rule.attestors {
                AttestorRequirement::All(n) => ("all", n),
                AttestorRequirement::Any(n) => ("any", n),
            };
            for (j, name) in names.iter().enumerate() {
                out.push((
                    format!("{prefix}.imageVerification[{i}].attestors.{key}[{j}]"),
                    name.clone(),
                ));
            }
        }
    }
    let mut attestors = Vec::new();
    rules("default", &doc.default.image_verification, &mut attestors);
    for (k, ns) in doc.namespaced.iter().enumerate() {
        if let Some(iv) = &ns.image_verification {
            rules(&format!("namespaced[{k}]"), iv, &mut attestors);
        }
    }
    let rulesets = doc
        .runtime
        .iter()
        .flat_map(|r| r.rulesets.iter())
        .enumerate()
        .map(|(i, r)| (format!("runtime.rulesets[{i}].id"), r.id.clone()))
        .collect();
    (attestors, rulesets)
}

/// Checks that every referenced attestor and ruleset exists in the tenant; returns the
/// distinct names and ids to record.
async fn check_references<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    doc: &PolicyDocument,
) -> StoreResult<(BTreeSet<String>, BTreeSet<String>)> {
    let (attestors, rulesets) = references(doc);
    let attestor_names: BTreeSet<String> = attestors.iter().map(|(_, n)| n.clone()).collect();
    let ruleset_ids: BTreeSet<String> = rulesets.iter().map(|(_, n)| n.clone()).collect();
    let found_attestors: BTreeSet<String> = if attestor_names.is_empty() {
        BTreeSet::new()
    } else {
        attestor_names_in(db, tenant_id, &attestor_names).await?
    };
    let found_rulesets: BTreeSet<String> = if ruleset_ids.is_empty() {
        BTreeSet::new()
    } else {
        ruleset_ids_in(db, tenant_id, &ruleset_ids).await?
    };
    let mut errors = Vec::new();
    for (path, name) in &attestors {
        if !found_attestors.contains(name) {
            errors.push(FieldError::new(
                path.clone(),
                format!("attestor {name:?} does not exist in this tenant"),
            ));
        }
    }
    for (path, id) in &rulesets {
        if !found_rulesets.contains(id) {
            errors.push(FieldError::new(
                path.clone(),
                format!("ruleset id {id:?} does not exist in this tenant"),
            ));
        }
    }
    if errors.is_empty() {
        Ok((attestor_names, ruleset_ids))
    } else {
        Err(StoreError::InvalidArgument(errors))
    }
}

/// Replaces the recorded references of a policy.
async fn write_references(
    tx: &Tx<'_>,
    tenant_id: &str,
    policy_id: &str,
    refs: (BTreeSet<String>, BTreeSet<String>),
) -> StoreResult<()> {
    policy_attestor_ref::Entity::delete_many()
        .filter(policy_attestor_ref::Column::TenantId.eq(tenant_id))
        .filter(policy_attestor_ref::Column::PolicyId.eq(policy_id))
        .exec(&tx.db)
        .await?;
    policy_ruleset_ref::Entity::delete_many()
        .filter(policy_ruleset_ref::Column::TenantId.eq(tenant_id))
        .filter(policy_ruleset_ref::Column::PolicyId.eq(policy_id))
        .exec(&tx.db)
        .await?;
    let (attestors, rulesets) = refs;
    if !attestors.is_empty() {
        policy_attestor_ref::Entity::insert_many(attestors.into_iter().map(|name| policy_attestor_ref::ActiveModel {
            tenant_id: Set(tenant_id.to_owned()),
            policy_id: Set(policy_id.to_owned()),
            attestor_name: Set(name),
        }))
        .exec(&tx.db)
        .await?;
    }
    if !rulesets.is_empty() {
        policy_ruleset_ref::Entity::insert_many(rulesets.into_iter().map(|id| policy_ruleset_ref::ActiveModel {
            tenant_id: Set(tenant_id.to_owned()),
            policy_id: Set(policy_id.to_owned()),
            ruleset_id: Set(id),
        }))
        .exec(&tx.db)
        .await?;
    }
    Ok(())
}

pub(crate) fn revision_u64(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

fn revision_i64(r: u64) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

pub(crate) fn policy_from(m: policy::Model, with_document: bool) -> Policy {
    Policy {
        id: m.id,
        name: m.name,
        revision: revision_u64(m.revision),
        document_json: if with_document { m.document } else { String::new() },
        description: m.description,
        author_key_id: m.author_key_id,
        created_at: from_micros(m.created_at),
        updated_at: from_micros(m.updated_at),
    }
}

/// The policy `r` of the tenant.
pub(crate) async fn find_policy<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    r: &ResourceRef,
) -> StoreResult<policy::Model> {
    let query = policy::Entity::find().filter(policy::Column::TenantId.eq(tenant_id));
    let query = match r {
        ResourceRef::Id(id) => query.filter(policy::Column::Id.eq(id.as_str())),
        ResourceRef::Name(name) => query.filter(policy::Column::Name.eq(name.as_str())),
    };
    query
        .one(db)
        .await?
        .ok_or_else(|| StoreError::not_found("policy", r.describe()))
}

async fn find_by_name<C: ConnectionTrait>(db: &C, tenant_id: &str, name: &str) -> StoreResult<Option<policy::Model>> {
    Ok(policy::Entity::find()
        .filter(policy::Column::TenantId.eq(tenant_id))
        .filter(policy::Column::Name.eq(name))
        .one(db)
        .await?)
}

fn changed_event(m: &policy::Model, change: pe::ChangeKind) -> pe::event_envelope::Payload {
    pe::event_envelope::Payload::PolicyChanged(pe::PolicyChanged {
        policy_id: m.id.clone(),
        name: m.name.clone(),
        revision: revision_u64(m.revision),
        change: change as i32,
        author_key_id: m.author_key_id.clone(),
    })
}

/// Writes a new policy at revision 1. The caller checked that the name is free (a race
/// still ends in AlreadyExists through the unique index).
async fn insert_policy(
    tx: &mut Tx<'_>,
    tenant_id: &str,
    parsed: Parsed,
    action: &str,
    detail: serde_json::Value,
) -> StoreResult<Policy> {
    let refs = check_references(&tx.db, tenant_id, &parsed.valid.document).await?;
    let now = tx.now_us();
    let sha = sha256_hex(&parsed.json);
    let model = policy::Model {
        tenant_id: tenant_id.to_owned(),
        id: uuid::Uuid::new_v4().to_string(),
        name: parsed.valid.document.name.clone(),
        revision: 1,
        description: parsed.valid.document.description.clone(),
        document: parsed.json.clone(),
        document_sha256: sha.clone(),
        author_key_id: tx.actor.key_id_str().to_owned(),
        created_at: now,
        updated_at: now,
    };
    policy::Entity::insert(policy::ActiveModel::from(model.clone()))
        .exec(&tx.db)
        .await
        .map_err(|e| unique_to_exists(e, "policy", &model.name))?;
    insert_revision(tx, &model).await?;
    write_references(tx, tenant_id, &model.id, refs).await?;
    tx.audit(tenant_id, action, resource(&model), detail).await?;
    tx.event(tenant_id, changed_event(&model, pe::ChangeKind::Created))
        .await?;
    Ok(policy_from(model, true))
}

async fn insert_revision(tx: &Tx<'_>, m: &policy::Model) -> StoreResult<()> {
    policy_revision::Entity::insert(policy_revision::ActiveModel {
        tenant_id: Set(m.tenant_id.clone()),
        policy_id: Set(m.id.clone()),
        revision: Set(m.revision),
        author_key_id: Set(m.author_key_id.clone()),
        created_at: Set(m.updated_at),
        document: Set(m.document.clone()),
        document_sha256: Set(m.document_sha256.clone()),
    })
    .exec(&tx.db)
    .await?;
    Ok(())
}

fn resource(m: &policy::Model) -> AuditResource<'_> {
    AuditResource {
        kind: "policy",
        id: &m.id,
        name: &m.name,
    }
}

pub(crate) fn unique_to_exists(e: sea_orm::DbErr, resource: &'static str, name: &str) -> StoreError {
    match e.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => StoreError::exists(resource, name),
        _ => StoreError::from(e),
    }
}

/// Writes the next revision of `current`, unless the document is identical.
async fn update_existing(
    tx: &mut Tx<'_>,
    tenant_id: &str,
    current: policy::Model,
    parsed: Parsed,
    expected_revision: u64,
) -> StoreResult<Written<Policy>> {
    if parsed.valid.document.name != current.name {
        return Err(StoreError::invalid(
            "name",
            format!(
                "renaming is refused: the policy is named {:?} (duplicate it to get a copy under another name)",
                current.name
            ),
        ));
    }
    let current_revision = revision_u64(current.revision);
    if expected_revision != current_revision {
        return Err(stale("policy", &current.name, expected_revision, current_revision));
    }
    if canonical_of_stored(&current.document)? == parsed.canonical {
        return Ok(Written {
            value: policy_from(current, true),
            created: false,
            changed: false,
        });
    }
    let refs = check_references(&tx.db, tenant_id, &parsed.valid.document).await?;
    let sha = sha256_hex(&parsed.json);
    let next = policy::Model {
        revision: current.revision + 1,
        description: parsed.valid.document.description.clone(),
        document: parsed.json,
        document_sha256: sha,
        author_key_id: tx.actor.key_id_str().to_owned(),
        updated_at: tx.now_us(),
        ..current.clone()
    };
    // The revision condition makes a concurrent writer that got here first win.
    let updated = policy::Entity::update_many()
        .col_expr(policy::Column::Revision, Expr::value(next.revision))
        .col_expr(policy::Column::Description, Expr::value(next.description.clone()))
        .col_expr(policy::Column::Document, Expr::value(next.document.clone()))
        .col_expr(
            policy::Column::DocumentSha256,
            Expr::value(next.document_sha256.clone()),
        )
        .col_expr(policy::Column::AuthorKeyId, Expr::value(next.author_key_id.clone()))
        .col_expr(policy::Column::UpdatedAt, Expr::value(next.updated_at))
        .filter(policy::Column::TenantId.eq(tenant_id))
        .filter(policy::Column::Id.eq(current.id.as_str()))
        .filter(policy::Column::Revision.eq(current.revision))
        .exec(&tx.db)
        .await?;
    if updated.rows_affected != 1 {
        return Err(StoreError::FailedPrecondition(format!(
            "policy {:?} was changed concurrently; read it again and retry",
            current.name
        )));
    }
    insert_revision(tx, &next).await?;
    write_references(tx, tenant_id, &next.id, refs).await?;
    tx.audit(
        tenant_id,
        "policy.update",
        resource(&next),
        json!({ "revision": next.revision }),
    )
    .await?;
    tx.event(tenant_id, changed_event(&next, pe::ChangeKind::Updated))
        .await?;
    Ok(Written {
        value: policy_from(next, true),
        created: false,
        changed: true,
    })
}

pub(crate) fn stale(resource: &str, name: &str, expected: u64, current: u64) -> StoreError {
    StoreError::FailedPrecondition(format!(
        "{resource} {name:?} is at revision {current}, not {expected}; read it again and retry"
    ))
}

impl Store {
    /// Creates a policy from a JSON document. InvalidArgument names the field path
    /// of every problem; AlreadyExists when the name is taken. Revision 1.
    pub async fn create_policy(&self, tenant_id: &str, actor: &Actor, document: &str) -> StoreResult<Policy> {
        check_tenant_id(tenant_id)?;
        let parsed = parse(document)?;
        let mut tx = self.write(actor).await?;
        tx.require_tenant(tenant_id).await?;
        if find_by_name(&tx.db, tenant_id, &parsed.valid.document.name)
            .await?
            .is_some()
        {
            return Err(StoreError::exists("policy", &parsed.valid.document.name));
        }
        let detail = json!({ "revision": 1 });
        let policy = insert_policy(&mut tx, tenant_id, parsed, "policy.create", detail).await?;
        tx.commit().await?;
        Ok(policy)
    }

    /// A policy at its current revision.
    pub async fn get_policy(&self, tenant_id: &str, policy: &ResourceRef) -> StoreResult<Policy> {
        check_tenant_id(tenant_id)?;
        Ok(policy_from(find_policy(&self.inner.db, tenant_id, policy).await?, true))
    }

    /// The tenant's policies by name, a page at a time.
    pub async fn list_policies(&self, tenant_id: &str, query: &PolicyQuery) -> StoreResult<Page<Policy>> {
        check_tenant_id(tenant_id)?;
        let after = decode_token(&query.page)?;
        let mut select = policy::Entity::find().filter(policy::Column::TenantId.eq(tenant_id));
        if let Some(after) = after {
            select = select.filter(policy::Column::Name.gt(after));
        }
        if !query.name_filter.is_empty() {
            select = select.filter(self.contains("name", &query.name_filter));
        }
        let rows = select
            .order_by_asc(policy::Column::Name)
            .limit(page_limit(&query.page))
            .all(&self.inner.db)
            .await?;
        let policies = rows
            .into_iter()
            .map(|m| policy_from(m, query.include_documents))
            .collect();
        let (items, next_token) = finish_page(policies, &query.page, |p: &Policy| p.name.clone());
        Ok(Page { items, next_token })
    }

    /// Replaces a policy's document with a new revision. `expected_revision` must be the
    /// current one (FailedPrecondition otherwise, nothing written); the name must not change
    /// (InvalidArgument); an identical document writes nothing (`changed` false).
    pub async fn update_policy(
        &self,
        tenant_id: &str,
        actor: &Actor,
        policy: &ResourceRef,
        document: &str,
        expected_revision: u64,
    ) -> StoreResult<Written<Policy>> {
        check_tenant_id(tenant_id)?;
        let parsed = parse(document)?;
        let mut tx = self.write(actor).await?;
        let current = find_policy(&tx.db, tenant_id, policy).await?;
        let written = update_existing(&mut tx, tenant_id, current, parsed, expected_revision).await?;
        if written.changed {
            tx.commit().await?;
        }
        Ok(written)
    }

    /// Creates the policy named in the document, or updates the policy of that name. With
    /// `expected_revision`, the policy must exist at that revision.
    pub async fn apply_policy(
        &self,
        tenant_id: &str,
        actor: &Actor,
        document: &str,
        expected_revision: Option<u64>,
    ) -> StoreResult<Written<Policy>> {
        check_tenant_id(tenant_id)?;
        let parsed = parse(document)?;
        let mut tx = self.write(actor).await?;
        tx.require_tenant(tenant_id).await?;
        match find_by_name(&tx.db, tenant_id, &parsed.valid.document.name).await? {
            Some(current) => {
                let expected = expected_revision.unwrap_or_else(|| revision_u64(current.revision));
                let written = update_existing(&mut tx, tenant_id, current, parsed, expected).await?;
                if written.changed {
                    tx.commit().await?;
                }
                Ok(written)
            }
            None => {
                if let Some(expected) = expected_revision {
                    return Err(StoreError::FailedPrecondition(format!(
                        "policy {:?} does not exist, so it is not at revision {expected}",
                        parsed.valid.document.name
                    )));
                }
                let detail = json!({ "revision": 1 });
                let policy = insert_policy(&mut tx, tenant_id, parsed, "policy.create", detail).await?;
                tx.commit().await?;
                Ok(Written {
                    value: policy,
                    created: true,
                    changed: true,
                })
            }
        }
    }

    /// Copies a policy's current document under a new name: `new_name`, else `<name>Policy`,
    /// then `<name>Policy2`, ... A generated name over 64 characters is InvalidArgument asking
    /// for an explicit name.
    pub async fn duplicate_policy(
        &self,
        tenant_id: &str,
        actor: &Actor,
        policy: &ResourceRef,
        new_name: Option<&str>,
    ) -> StoreResult<Policy> {
        check_tenant_id(tenant_id)?;
        let mut tx = self.write(actor).await?;
        let source = find_policy(&tx.db, tenant_id, policy).await?;
        let name = match new_name {
            Some(name) => {
                if find_by_name(&tx.db, tenant_id, name).await?.is_some() {
                    return Err(StoreError::exists("policy", name));
                }
                name.to_owned()
            }
            None => generated_copy_name(&tx, tenant_id, &source.name).await?,
        };
        let mut doc = PolicyDocument::from_json(source.document.as_bytes())
            .map_err(|e| StoreError::Internal(format!("stored policy unreadable: {e}")))?;
        doc.name = name;
        let parsed = normalise(doc).map_err(|e| match e {
            // The only part of a stored document that can be invalid here is the new name.
            StoreError::InvalidArgument(errors) => StoreError::InvalidArgument(
                errors
                    .into_iter()
                    .map(|fe| {
                        if fe.path == "name" {
                            FieldError::new("new_name", fe.message)
                        } else {
                            fe
                        }
                    })
                    .collect(),
            ),
            other => other,
        })?;
        let detail = json!({ "revision": 1, "source_policy_id": source.id, "source_revision": source.revision });
        let copy = insert_policy(&mut tx, tenant_id, parsed, "policy.duplicate", detail).await?;
        tx.commit().await?;
        Ok(copy)
    }

    /// Deletes a policy and its history. FailedPrecondition while a cluster is assigned to
    /// it, or when `expected_revision` is given and stale.
    pub async fn delete_policy(
        &self,
        tenant_id: &str,
        actor: &Actor,
        policy: &ResourceRef,
        expected_revision: Option<u64>,
    ) -> StoreResult<Deleted> {
        check_tenant_id(tenant_id)?;
        let mut tx = self.write(actor).await?;
        let current = find_policy(&tx.db, tenant_id, policy).await?;
        if let Some(expected) = expected_revision
            && expected != revision_u64(current.revision)
        {
            return Err(stale("policy", &current.name, expected, revision_u64(current.revision)));
        }
        let assigned: Vec<String> = cluster::Entity::find()
            .filter(cluster::Column::TenantId.eq(tenant_id))
            .filter(cluster::Column::PolicyId.eq(current.id.as_str()))
            .order_by_asc(cluster::Column::Name)
            .limit(5)
            .all(&tx.db)
            .await?
            .into_iter()
            .map(|c| c.name)
            .collect();
        if !assigned.is_empty() {
            return Err(StoreError::FailedPrecondition(format!(
                "policy {:?} is assigned to cluster(s) {}; assign them another policy first",
                current.name,
                assigned.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
            )));
        }
        write_references(&tx, tenant_id, &current.id, (BTreeSet::new(), BTreeSet::new())).await?;
        policy_revision::Entity::delete_many()
            .filter(policy_revision::Column::TenantId.eq(tenant_id))
            .filter(policy_revision::Column::PolicyId.eq(current.id.as_str()))
            .exec(&tx.db)
            .await?;
        // A cluster assigned meanwhile makes this fail on its foreign key.
        policy::Entity::delete_many()
            .filter(policy::Column::TenantId.eq(tenant_id))
            .filter(policy::Column::Id.eq(current.id.as_str()))
            .exec(&tx.db)
            .await
            .map_err(|e| match e.sql_err() {
                Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_)) => {
                    StoreError::FailedPrecondition(format!("policy {:?} is assigned to a cluster", current.name))
                }
                _ => StoreError::from(e),
            })?;
        tx.audit(
            tenant_id,
            "policy.delete",
            resource(&current),
            json!({ "revision": current.revision }),
        )
        .await?;
        let deleted = policy::Model {
            author_key_id: tx.actor.key_id_str().to_owned(),
            ..current
        };
        tx.event(tenant_id, changed_event(&deleted, pe::ChangeKind::Deleted))
            .await?;
        tx.commit().await?;
        Ok(Deleted {
            id: deleted.id,
            name: deleted.name,
            revision: revision_u64(deleted.revision),
        })
    }

    /// A policy's revisions, newest first, without documents.
    pub async fn policy_history(
        &self,
        tenant_id: &str,
        policy: &ResourceRef,
        page: &PageRequest,
    ) -> StoreResult<PolicyHistory> {
        check_tenant_id(tenant_id)?;
        let current = find_policy(&self.inner.db, tenant_id, policy).await?;
        let before = decode_int_token(page)?;
        let mut select = policy_revision::Entity::find()
            .filter(policy_revision::Column::TenantId.eq(tenant_id))
            .filter(policy_revision::Column::PolicyId.eq(current.id.as_str()));
        if let Some(before) = before {
            select = select.filter(policy_revision::Column::Revision.lt(before));
        }
        let rows = select
            .select_only()
            .column(policy_revision::Column::Revision)
            .column(policy_revision::Column::AuthorKeyId)
            .column(policy_revision::Column::CreatedAt)
            .column(policy_revision::Column::DocumentSha256)
            .order_by_desc(policy_revision::Column::Revision)
            .limit(page_limit(page))
            .into_tuple::<(i64, String, i64, String)>()
            .all(&self.inner.db)
            .await?;
        let infos: Vec<PolicyRevisionInfo> = rows
            .into_iter()
            .map(
                |(revision, author_key_id, created_at, document_sha256)| PolicyRevisionInfo {
                    revision: revision_u64(revision),
                    author_key_id,
                    created_at: from_micros(created_at),
                    document_sha256,
                },
            )
            .collect();
        let (items, next_token) = finish_page(infos, page, |r: &PolicyRevisionInfo| r.revision.to_string());
        Ok(PolicyHistory {
            policy_id: current.id,
            revisions: Page { items, next_token },
        })
    }

    /// A policy as it was at one revision (`updated_at` is when that revision was written).
    pub async fn get_policy_revision(
        &self,
        tenant_id: &str,
        policy: &ResourceRef,
        revision: u64,
    ) -> StoreResult<Policy> {
        check_tenant_id(tenant_id)?;
        let current = find_policy(&self.inner.db, tenant_id, policy).await?;
        let row =
            policy_revision::Entity::find_by_id((tenant_id.to_owned(), current.id.clone(), revision_i64(revision)))
                .one(&self.inner.db)
                .await?
                .ok_or_else(|| StoreError::not_found("policy revision", format!("{revision} of {:?}", current.name)))?;
        let description = PolicyDocument::from_json(row.document.as_bytes())
            .map(|d| d.description)
            .unwrap_or_default();
        Ok(Policy {
            id: current.id,
            name: current.name,
            revision: revision_u64(row.revision),
            document_json: row.document,
            description,
            author_key_id: row.author_key_id,
            created_at: from_micros(current.created_at),
            updated_at: from_micros(row.created_at),
        })
    }

    /// The number of policies of a tenant.
    pub async fn count_policies(&self, tenant_id: &str) -> StoreResult<u64> {
        check_tenant_id(tenant_id)?;
        Ok(policy::Entity::find()
            .filter(policy::Column::TenantId.eq(tenant_id))
            .count(&self.inner.db)
            .await?)
    }
}

/// `<name>Policy`, else the first free `<name>PolicyN` (N from 2).
async fn generated_copy_name(tx: &Tx<'_>, tenant_id: &str, name: &str) -> StoreResult<String> {
    let base = format!("{name}Policy");
    // LIKE's `_` wildcard only widens the match; the exact names are compared below.
    let taken: BTreeSet<String> = policy::Entity::find()
        .filter(policy::Column::TenantId.eq(tenant_id))
        .filter(policy::Column::Name.like(format!("{base}%")))
        .select_only()
        .column(policy::Column::Name)
        .into_tuple::<String>()
        .all(&tx.db)
        .await?
        .into_iter()
        .collect();
    let mut candidate = base.clone();
    let mut n: u64 = 2;
    while taken.contains(&candidate) {
        candidate = format!("{base}{n}");
        n += 1;
    }
    if candidate.len() > MAX_NAME_LEN {
        return Err(StoreError::invalid(
            "new_name",
            format!(
                "the generated name {candidate:?} is longer than {MAX_NAME_LEN} characters; give the copy a name explicitly"
            ),
        ));
    }
    Ok(candidate)
}
