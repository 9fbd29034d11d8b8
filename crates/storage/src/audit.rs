//! Reading the audit log (entries are written by [`crate::store::Tx::audit`] in the
//! transaction of the change they record).

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::clock::{from_micros, to_micros};
use crate::entity::audit_log;
use crate::error::{StoreError, StoreResult};
use crate::model::{AuditEntry, AuditQuery, Page, Role};
use crate::store::{Store, check_tenant_id, decode_int_token, finish_page, page_limit};

impl Store {
    /// The tenant's audit entries, newest first.
    pub async fn list_audit(&self, tenant_id: &str, query: &AuditQuery) -> StoreResult<Page<AuditEntry>> {
        check_tenant_id(tenant_id)?;
        let mut select = audit_log::Entity::find().filter(audit_log::Column::TenantId.eq(tenant_id));
        if let Some(before) = decode_int_token(&query.page)? {
            select = select.filter(audit_log::Column::Id.lt(before));
        }
        if let Some(since) = query.since {
            select = select.filter(audit_log::Column::At.gte(to_micros(since)));
        }
        if let Some(until) = query.until {
            select = select.filter(audit_log::Column::At.lt(to_micros(until)));
        }
        if let Some(actor) = &query.actor_key_id {
            select = select.filter(audit_log::Column::ActorKeyId.eq(actor.as_str()));
        }
        if let Some(kind) = &query.resource_type {
            select = select.filter(audit_log::Column::ResourceType.eq(kind.as_str()));
        }
        if let Some(id) = &query.resource_id {
            select = select.filter(audit_log::Column::ResourceId.eq(id.as_str()));
        }
        if let Some(action) = &query.action {
            select = select.filter(audit_log::Column::Action.eq(action.as_str()));
        }
        let rows = select
            .order_by_desc(audit_log::Column::Id)
            .limit(page_limit(&query.page))
            .all(&self.inner.db)
            .await?;
        let entries = rows
            .into_iter()
            .map(|m| {
                let actor_role = m
                    .actor_role
                    .as_deref()
                    .map(|r| {
                        r.parse::<Role>()
                            .map_err(|_| StoreError::Internal(format!("audit entry {} has role {r:?}", m.id)))
                    })
                    .transpose()?;
                Ok(AuditEntry {
                    id: m.id.to_string(),
                    time: from_micros(m.at),
                    actor_key_id: m.actor_key_id,
                    actor_role,
                    action: m.action,
                    resource_type: m.resource_type,
                    resource_id: m.resource_id,
                    resource_name: m.resource_name,
                    details_json: m.detail,
                    trace_id: m.trace_id,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let (items, next_token) = finish_page(entries, &query.page, |e: &AuditEntry| e.id.clone());
        Ok(Page { items, next_token })
    }
}
