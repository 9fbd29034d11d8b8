//! Tenants, API keys and their introspection.
//!
//! A key is `pck_<key id>_<base64url of 32 random bytes>`; the store keeps the hex SHA-256 of
//! the whole key, so a leaked table reveals no usable key. The key id in the key lets
//! introspection find the row by primary key.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_proto::events::v1 as pe;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::clock::{from_micros, to_micros};
use crate::clusters::find_cluster;
use crate::entity::{
    api_key, audit_log, cluster, policy, policy_attestor_ref, policy_revision, policy_ruleset_ref, scan_result, tenant,
};
use crate::error::{InactiveReason, StoreError, StoreResult};
use crate::events::timestamp;
use crate::model::{
    Actor, ApiKey, ApiKeyQuery, CreatedTenant, IssuedKey, KeyIdentity, NewApiKey, NewTenant, Page, PageRequest, Role,
    Tenant, ToProto,
};
use crate::policies::sha256_hex;
use crate::store::{AuditResource, Store, Tx, check_tenant_id, decode_token, finish_page, page_limit};

/// The prefix of every key.
pub const KEY_PREFIX: &str = "pck_";

/// How often at most `last_used_at` is written per key.
const LAST_USED_RESOLUTION: Duration = Duration::minutes(1);
const LAST_USED_RESOLUTION_US: i64 = 60_000_000;

/// The longest key description and tenant name.
const MAX_TEXT_CHARS: usize = 128;

/// Why a key stopped working (the event's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RevocationReason {
    Revoked,
    Rotated,
    ClusterDeleted,
    TenantDeleted,
}

impl RevocationReason {
    fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Revoked => "revoked",
            RevocationReason::Rotated => "rotated",
            RevocationReason::ClusterDeleted => "cluster-deleted",
            RevocationReason::TenantDeleted => "tenant-deleted",
        }
    }

    fn to_proto(self) -> pe::RevocationReason {
        match self {
            RevocationReason::Revoked => pe::RevocationReason::Revoked,
            RevocationReason::Rotated => pe::RevocationReason::Rotated,
            RevocationReason::ClusterDeleted => pe::RevocationReason::ClusterDeleted,
            RevocationReason::TenantDeleted => pe::RevocationReason::TenantDeleted,
        }
    }
}

/// The key id inside a presented key, when it has the key's shape.
fn key_id_of(secret: &str) -> Option<&str> {
    let rest = secret.strip_prefix(KEY_PREFIX)?;
    let (id, random) = rest.split_once('_')?;
    let id_ok = id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (id_ok && !random.is_empty()).then_some(id)
}

/// Compares without an early exit, so the time taken tells nothing about the hash.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn key_from(m: api_key::Model) -> StoreResult<ApiKey> {
    Ok(ApiKey {
        role: m
            .role
            .parse::<Role>()
            .map_err(|_| StoreError::Internal(format!("stored key {} has role {:?}", m.id, m.role)))?,
        id: m.id,
        tenant_id: m.tenant_id,
        description: m.description,
        cluster_id: m.cluster_id,
        secret_prefix: m.secret_prefix,
        created_at: from_micros(m.created_at),
        expires_at: m.expires_at.map(from_micros),
        last_used_at: m.last_used_at.map(from_micros),
        revoked_at: m.revoked_at.map(from_micros),
        created_by_key_id: m.created_by_key_id,
        rotated_from: m.rotated_from,
        grace_ends_at: m.grace_ends_at.map(from_micros),
    })
}

/// Creates a key in the transaction and returns it with its secret.
pub(crate) async fn issue_key(
    tx: &Tx<'_>,
    tenant_id: &str,
    role: Role,
    cluster_id: Option<String>,
    expires_at: Option<OffsetDateTime>,
    description: String,
    rotated_from: Option<String>,
) -> StoreResult<IssuedKey> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut random = [0u8; 32];
    rand::fill(&mut random[..]);
    let secret = format!("{KEY_PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode(random));
    let model = api_key::Model {
        id: id.clone(),
        tenant_id: tenant_id.to_owned(),
        key_hash: sha256_hex(&secret),
        secret_prefix: secret.chars().take(12).collect(),
        role: role.as_str().to_owned(),
        cluster_id,
        description,
        created_at: tx.now_us(),
        expires_at: expires_at.map(to_micros),
        last_used_at: None,
        revoked_at: None,
        revoke_reason: None,
        created_by_key_id: tx.actor.key_id.clone(),
        rotated_from,
        grace_ends_at: None,
    };
    api_key::Entity::insert(api_key::ActiveModel::from(model.clone()))
        .exec(&tx.db)
        .await?;
    Ok(IssuedKey {
        key: key_from(model)?,
        secret,
    })
}

/// Revokes a key in the transaction and writes its `apikey.revoked` event.
pub(crate) async fn revoke_in_tx(tx: &mut Tx<'_>, key: &api_key::Model, reason: RevocationReason) -> StoreResult<()> {
    let at = match reason {
        // A rotated key stopped at the end of its grace period, which may lie before now.
        RevocationReason::Rotated => key.grace_ends_at.map_or(tx.now_us(), |g| std::cmp::min(g, tx.now_us())),
        _ => tx.now_us(),
    };
    api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAt, Expr::value(Some(at)))
        .col_expr(
            api_key::Column::RevokeReason,
            Expr::value(Some(reason.as_str().to_owned())),
        )
        .filter(api_key::Column::Id.eq(key.id.as_str()))
        .filter(api_key::Column::RevokedAt.is_null())
        .exec(&tx.db)
        .await?;
    let role = key
        .role
        .parse::<Role>()
        .map(ToProto::to_proto)
        .unwrap_or(portcullis_proto::common::v1::Role::Unspecified);
    tx.event(
        &key.tenant_id,
        pe::event_envelope::Payload::ApiKeyRevoked(pe::ApiKeyRevoked {
            key_id: key.id.clone(),
            role: role as i32,
            cluster_id: key.cluster_id.clone().unwrap_or_default(),
            reason: reason.to_proto() as i32,
            revoked_at: Some(timestamp(from_micros(at))),
        }),
    )
    .await
}

fn check_text(field: &str, text: &str) -> StoreResult<()> {
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(StoreError::invalid(
            field,
            format!("must be at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    Ok(())
}

impl Store {
    /// Creates an API key; its secret is in the answer and never again. A connector key needs
    /// a cluster; other roles must not name one; an expiry must lie in the future.
    pub async fn create_api_key(&self, tenant_id: &str, actor: &Actor, new: &NewApiKey) -> StoreResult<IssuedKey> {
        check_tenant_id(tenant_id)?;
        check_text("description", &new.description)?;
        match (new.role, &new.cluster) {
            (Role::Connector, None) => {
                return Err(StoreError::invalid(
                    "cluster",
                    "a connector key must be bound to a cluster",
                ));
            }
            (role, Some(_)) if role != Role::Connector => {
                return Err(StoreError::invalid(
                    "cluster",
                    format!("only connector keys are bound to a cluster, not {role} keys"),
                ));
            }
            _ => {}
        }
        let tx = self.write(actor).await?;
        if let Some(expires) = new.expires_at
            && expires <= tx.now
        {
            return Err(StoreError::invalid("expires_at", "must be in the future"));
        }
        tx.require_tenant(tenant_id).await?;
        let cluster_id = match &new.cluster {
            Some(r) => Some(find_cluster(&tx.db, tenant_id, r).await?.id),
            None => None,
        };
        let issued = issue_key(
            &tx,
            tenant_id,
            new.role,
            cluster_id,
            new.expires_at,
            new.description.clone(),
            None,
        )
        .await?;
        tx.audit(
            tenant_id,
            "apikey.create",
            AuditResource {
                kind: "apikey",
                id: &issued.key.id,
                name: &issued.key.description,
            },
            json!({ "role": new.role.as_str(), "cluster_id": issued.key.cluster_id, "expires_at": new.expires_at.map(|t| t.unix_timestamp()) }),
        )
        .await?;
        tx.commit().await?;
        Ok(issued)
    }

    /// The tenant's keys, newest first, never their secrets.
    pub async fn list_api_keys(&self, tenant_id: &str, query: &ApiKeyQuery) -> StoreResult<Page<ApiKey>> {
        check_tenant_id(tenant_id)?;
        let mut select = api_key::Entity::find().filter(api_key::Column::TenantId.eq(tenant_id));
        if let Some(cursor) = decode_token(&query.page)? {
            let bad = || StoreError::invalid("page_token", "not a page token of this listing");
            let (created, id) = cursor.split_once(':').ok_or_else(bad)?;
            let created: i64 = created.parse().map_err(|_| bad())?;
            select = select.filter(
                api_key::Column::CreatedAt
                    .lt(created)
                    .or(api_key::Column::CreatedAt.eq(created).and(api_key::Column::Id.lt(id))),
            );
        }
        if let Some(role) = query.role {
            select = select.filter(api_key::Column::Role.eq(role.as_str()));
        }
        if let Some(r) = &query.cluster {
            let c = find_cluster(&self.inner.db, tenant_id, r).await?;
            select = select.filter(api_key::Column::ClusterId.eq(c.id));
        }
        if !query.include_inactive {
            let now = to_micros(self.now());
            select = select
                .filter(api_key::Column::RevokedAt.is_null())
                .filter(
                    api_key::Column::ExpiresAt
                        .is_null()
                        .or(api_key::Column::ExpiresAt.gt(now)),
                )
                .filter(
                    api_key::Column::GraceEndsAt
                        .is_null()
                        .or(api_key::Column::GraceEndsAt.gt(now)),
                );
        }
        let rows = select
            .order_by_desc(api_key::Column::CreatedAt)
            .order_by_desc(api_key::Column::Id)
            .limit(page_limit(&query.page))
            .all(&self.inner.db)
            .await?;
        let keys = rows.into_iter().map(key_from).collect::<StoreResult<Vec<_>>>()?;
        let (items, next_token) = finish_page(keys, &query.page, |k: &ApiKey| {
            format!("{}:{}", to_micros(k.created_at), k.id)
        });
        Ok(Page { items, next_token })
    }

    /// One key of the tenant, without its secret.
    pub async fn get_api_key(&self, tenant_id: &str, key_id: &str) -> StoreResult<ApiKey> {
        check_tenant_id(tenant_id)?;
        let m = api_key::Entity::find_by_id(key_id.to_owned())
            .filter(api_key::Column::TenantId.eq(tenant_id))
            .one(&self.inner.db)
            .await?
            .ok_or_else(|| StoreError::not_found("API key", format!("{key_id:?}")))?;
        key_from(m)
    }

    /// Revokes a key at once (`apikey.revoked`); revoking a revoked key returns it unchanged.
    pub async fn revoke_api_key(&self, tenant_id: &str, actor: &Actor, key_id: &str) -> StoreResult<ApiKey> {
        check_tenant_id(tenant_id)?;
        let mut tx = self.write(actor).await?;
        let m = api_key::Entity::find_by_id(key_id.to_owned())
            .filter(api_key::Column::TenantId.eq(tenant_id))
            .one(&tx.db)
            .await?
            .ok_or_else(|| StoreError::not_found("API key", format!("{key_id:?}")))?;
        if m.revoked_at.is_some() {
            return key_from(m);
        }
        revoke_in_tx(&mut tx, &m, RevocationReason::Revoked).await?;
        tx.audit(
            tenant_id,
            "apikey.revoke",
            AuditResource {
                kind: "apikey",
                id: &m.id,
                name: &m.description,
            },
            json!({ "role": m.role, "cluster_id": m.cluster_id }),
        )
        .await?;
        let now = tx.now_us();
        tx.commit().await?;
        key_from(api_key::Model {
            revoked_at: Some(now),
            revoke_reason: Some(RevocationReason::Revoked.as_str().to_owned()),
            ..m
        })
    }

    /// What a presented key is. Unauthenticated (with the reason) when it is unknown, does
    /// not match, was revoked or has expired. Updates `last_used_at` at most once a minute.
    pub async fn introspect(&self, secret: &str) -> StoreResult<KeyIdentity> {
        let unknown = StoreError::Unauthenticated(InactiveReason::Unknown);
        let Some(key_id) = key_id_of(secret) else {
            return Err(unknown);
        };
        let Some(m) = api_key::Entity::find_by_id(key_id.to_owned())
            .one(&self.inner.db)
            .await?
        else {
            return Err(unknown);
        };
        if !constant_time_eq(sha256_hex(secret).as_bytes(), m.key_hash.as_bytes()) {
            return Err(unknown);
        }
        let now = self.now();
        let key = key_from(m)?;
        if key.revoked_at.is_some() {
            return Err(StoreError::Unauthenticated(InactiveReason::Revoked));
        }
        let expiry = key.effective_expiry();
        if expiry.is_some_and(|t| t <= now) {
            return Err(StoreError::Unauthenticated(InactiveReason::Expired));
        }
        if key.last_used_at.is_none_or(|t| now - t >= LAST_USED_RESOLUTION) {
            let now_us = to_micros(now);
            // The condition keeps concurrent introspections from all writing.
            api_key::Entity::update_many()
                .col_expr(api_key::Column::LastUsedAt, Expr::value(Some(now_us)))
                .filter(api_key::Column::Id.eq(key.id.as_str()))
                .filter(
                    api_key::Column::LastUsedAt
                        .is_null()
                        .or(api_key::Column::LastUsedAt.lte(now_us.saturating_sub(LAST_USED_RESOLUTION_US))),
                )
                .exec(&self.inner.db)
                .await?;
        }
        Ok(KeyIdentity {
            tenant_id: key.tenant_id,
            role: key.role,
            cluster_id: key.cluster_id,
            key_id: key.id,
            expires_at: expiry,
        })
    }

    /// Marks rotated connector keys whose grace period has ended as revoked and publishes
    /// `apikey.revoked` (reason rotated) for them; returns how many. Run it periodically (the
    /// keys stop working at the end of their grace period whether or not it runs).
    pub async fn sweep_rotated_keys(&self) -> StoreResult<usize> {
        let system = Actor::operator();
        let mut tx = self.write(&system).await?;
        let due = api_key::Entity::find()
            .filter(api_key::Column::RevokedAt.is_null())
            .filter(api_key::Column::GraceEndsAt.lte(tx.now_us()))
            .limit(1000)
            .all(&tx.db)
            .await?;
        for key in &due {
            revoke_in_tx(&mut tx, key, RevocationReason::Rotated).await?;
        }
        tx.commit().await?;
        Ok(due.len())
    }

    /// Creates a tenant and its first admin key (shown this once). AlreadyExists when the id
    /// or the name is taken.
    pub async fn create_tenant(&self, actor: &Actor, new: &NewTenant) -> StoreResult<CreatedTenant> {
        let id = match &new.id {
            Some(id) => {
                check_tenant_id(id)?;
                id.clone()
            }
            None => uuid::Uuid::new_v4().to_string(),
        };
        if new.name.trim().is_empty() {
            return Err(StoreError::invalid("name", "must not be empty"));
        }
        check_text("name", &new.name)?;
        let tx = self.write(actor).await?;
        if let Some(expires) = new.admin_key_expires_at
            && expires <= tx.now
        {
            return Err(StoreError::invalid("admin_key_expires_at", "must be in the future"));
        }
        if tenant::Entity::find_by_id(id.clone()).one(&tx.db).await?.is_some() {
            return Err(StoreError::AlreadyExists {
                resource: "tenant",
                reference: format!("id {id:?}"),
            });
        }
        if tenant::Entity::find()
            .filter(tenant::Column::Name.eq(new.name.as_str()))
            .one(&tx.db)
            .await?
            .is_some()
        {
            return Err(StoreError::exists("tenant", &new.name));
        }
        let model = tenant::Model {
            id: id.clone(),
            name: new.name.clone(),
            created_at: tx.now_us(),
        };
        tenant::Entity::insert(tenant::ActiveModel::from(model.clone()))
            .exec(&tx.db)
            .await
            .map_err(|e| crate::policies::unique_to_exists(e, "tenant", &new.name))?;
        let admin_key = issue_key(
            &tx,
            &id,
            Role::Admin,
            None,
            new.admin_key_expires_at,
            "first admin key".to_owned(),
            None,
        )
        .await?;
        tx.audit(
            &id,
            "tenant.create",
            AuditResource {
                kind: "tenant",
                id: &id,
                name: &model.name,
            },
            json!({ "admin_key_id": admin_key.key.id }),
        )
        .await?;
        tx.commit().await?;
        Ok(CreatedTenant {
            tenant: tenant_from(model),
            admin_key,
        })
    }

    /// A tenant.
    pub async fn get_tenant(&self, tenant_id: &str) -> StoreResult<Tenant> {
        check_tenant_id(tenant_id)?;
        tenant::Entity::find_by_id(tenant_id.to_owned())
            .one(&self.inner.db)
            .await?
            .map(tenant_from)
            .ok_or_else(|| StoreError::not_found("tenant", format!("{tenant_id:?}")))
    }

    /// Tenants by id; `name_filter` keeps names containing it (case-sensitive).
    pub async fn list_tenants(&self, page: &PageRequest, name_filter: &str) -> StoreResult<Page<Tenant>> {
        let mut select = tenant::Entity::find();
        if let Some(after) = decode_token(page)? {
            select = select.filter(tenant::Column::Id.gt(after));
        }
        if !name_filter.is_empty() {
            select = select.filter(self.contains("name", name_filter));
        }
        let rows = select
            .order_by_asc(tenant::Column::Id)
            .limit(page_limit(page))
            .all(&self.inner.db)
            .await?;
        let tenants = rows.into_iter().map(tenant_from).collect();
        let (items, next_token) = finish_page(tenants, page, |t: &Tenant| t.id.clone());
        Ok(Page { items, next_token })
    }

    /// Deletes a tenant and everything it owns; its working keys get `apikey.revoked`. The
    /// deletion itself stays in the audit log under the tenant's id.
    pub async fn delete_tenant(&self, actor: &Actor, tenant_id: &str) -> StoreResult<Tenant> {
        check_tenant_id(tenant_id)?;
        let mut tx = self.write(actor).await?;
        let t = tenant::Entity::find_by_id(tenant_id.to_owned())
            .one(&tx.db)
            .await?
            .ok_or_else(|| StoreError::not_found("tenant", format!("{tenant_id:?}")))?;
        let keys = api_key::Entity::find()
            .filter(api_key::Column::TenantId.eq(tenant_id))
            .filter(api_key::Column::RevokedAt.is_null())
            .all(&tx.db)
            .await?;
        for key in &keys {
            revoke_in_tx(&mut tx, key, RevocationReason::TenantDeleted).await?;
        }
        delete_tenant_rows(&tx.db, tenant_id).await?;
        tx.audit(
            tenant_id,
            "tenant.delete",
            AuditResource {
                kind: "tenant",
                id: tenant_id,
                name: &t.name,
            },
            json!({ "revoked_key_ids": keys.iter().map(|k| k.id.clone()).collect::<Vec<_>>() }),
        )
        .await?;
        tx.commit().await?;
        Ok(tenant_from(t))
    }
}

/// Deletes every row of a tenant, children before parents.
async fn delete_tenant_rows<C: ConnectionTrait>(db: &C, tenant_id: &str) -> StoreResult<()> {
    api_key::Entity::delete_many()
        .filter(api_key::Column::TenantId.eq(tenant_id))
        .exec(db)
        .await?;
    crate::registry::delete_rows(db, tenant_id, None).await?;
    cluster::Entity::delete_many()
        .filter(cluster::Column::TenantId.eq(tenant_id))
        .exec(db)
        .await?;
    policy_attestor_ref::Entity::delete_many()
        .filter(policy_attestor_ref::Column::TenantId.eq(tenant_id))
        .exec(db)
        .await?;
    policy_ruleset_ref::Entity::delete_many()
        .filter(policy_ruleset_ref::Column::TenantId.eq(tenant_id))
        .exec(db)
        .await?;
    policy_revision::Entity::delete_many()
        .filter(policy_revision::Column::TenantId.eq(tenant_id))
        .exec(db)
        .await?;
    policy::Entity::delete_many()
        .filter(policy::Column::TenantId.eq(tenant_id))
        .exec(db)
        .await?;
    for table in ["rulesets", "attestors"] {
        let stmt = sea_orm::sea_query::Query::delete()
            .from_table(sea_orm::sea_query::Alias::new(table))
            .and_where(Expr::col(sea_orm::sea_query::Alias::new("tenant_id")).eq(tenant_id))
            .to_owned();
        db.execute(&stmt).await?;
    }
    scan_result::Entity::delete_many()
        .filter(scan_result::Column::TenantId.eq(tenant_id))
        .exec(db)
        .await?;
    audit_log::Entity::delete_many()
        .filter(audit_log::Column::TenantId.eq(tenant_id))
        .exec(db)
        .await?;
    tenant::Entity::delete_many()
        .filter(tenant::Column::Id.eq(tenant_id))
        .exec(db)
        .await?;
    Ok(())
}

fn tenant_from(m: tenant::Model) -> Tenant {
    Tenant {
        id: m.id,
        name: m.name,
        created_at: from_micros(m.created_at),
    }
}
