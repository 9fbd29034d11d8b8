//! Clusters: registration with a connector key, policy assignment, settings, heartbeats,
//! connector key rotation, and the effective policy connectors read.

use std::collections::BTreeMap;

use portcullis_engine::evaluate::TrustedImage;
use portcullis_engine::policy::{FieldError, is_valid_namespace, is_valid_object_name};
use portcullis_proto::events::v1 as pe;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::clock::{from_micros, to_micros};
use crate::entity::{api_key, cluster, policy};
use crate::error::{StoreError, StoreResult};
use crate::keys::{RevocationReason, issue_key, revoke_in_tx};
use crate::model::{
    Actor, Cluster, ClusterQuery, ClusterSettings, DeletedCluster, EffectivePolicy, FailureMode, HeartbeatInfo,
    KeyRotation, NewCluster, Page, RegisteredCluster, ResourceRef, Role, SettingsUpdate,
};
use crate::policies::{find_policy, policy_from, revision_u64};
use crate::store::{AuditResource, Store, Tx, check_tenant_id, decode_token, finish_page, page_limit};

/// The grace period of a rotated connector key when none is given.
pub const DEFAULT_ROTATION_GRACE: Duration = Duration::hours(24);

/// The longest cluster description.
const MAX_DESCRIPTION_CHARS: usize = 128;

pub(crate) async fn find_cluster<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    r: &ResourceRef,
) -> StoreResult<cluster::Model> {
    let query = cluster::Entity::find().filter(cluster::Column::TenantId.eq(tenant_id));
    let query = match r {
        ResourceRef::Id(id) => query.filter(cluster::Column::Id.eq(id.as_str())),
        ResourceRef::Name(name) => query.filter(cluster::Column::Name.eq(name.as_str())),
    };
    query
        .one(db)
        .await?
        .ok_or_else(|| StoreError::not_found("cluster", r.describe()))
}

fn settings_of(m: &cluster::Model) -> StoreResult<ClusterSettings> {
    let unreadable = |e: serde_json::Error| StoreError::Internal(format!("stored cluster settings unreadable: {e}"));
    Ok(ClusterSettings {
        failure_mode: m.failure_mode.parse::<FailureMode>().map_err(|e| {
            StoreError::invalid(
                "settings.failure_mode",
                format!("{:?} is not a failure mode ({})", e.value, e.expected),
            )
        })?,
        excluded_namespaces: serde_json::from_str(&m.excluded_namespaces).map_err(unreadable)?,
        trusted_images: serde_json::from_str(&m.trusted_images).map_err(unreadable)?,
    })
}

fn cluster_from(m: cluster::Model, policy_name: Option<String>) -> StoreResult<Cluster> {
    let settings = settings_of(&m)?;
    Ok(Cluster {
        id: m.id,
        name: m.name,
        description: m.description,
        policy_id: m.policy_id,
        policy_name,
        settings,
        last_seen_at: m.last_seen_at.map(from_micros),
        connector_version: m.connector_version,
        kubernetes_version: m.kubernetes_version,
        created_at: from_micros(m.created_at),
        updated_at: from_micros(m.updated_at),
        generation: revision_u64(m.generation),
    })
}

/// The settings after applying `update` to `base`, every value checked.
fn apply_settings(base: ClusterSettings, update: &SettingsUpdate) -> StoreResult<ClusterSettings> {
    let mut errors = Vec::new();
    if let Some(namespaces) = &update.excluded_namespaces {
        for (i, ns) in namespaces.iter().enumerate() {
            if !is_valid_namespace(ns) {
                errors.push(FieldError::new(
                    format!("settings.excluded_namespaces[{i}]"),
                    format!("{ns:?} is not a namespace name (an RFC 1123 label)"),
                ));
            }
        }
    }
    if let Some(images) = &update.trusted_images {
        for (i, image) in images.iter().enumerate() {
            if let Err(e) = TrustedImage::parse(image) {
                errors.push(FieldError::new(
                    format!("settings.trusted_images[{i}]"),
                    format!("{image:?}: {e}"),
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(StoreError::InvalidArgument(errors));
    }
    Ok(ClusterSettings {
        failure_mode: update.failure_mode.unwrap_or(base.failure_mode),
        excluded_namespaces: update.excluded_namespaces.clone().unwrap_or(base.excluded_namespaces),
        trusted_images: update.trusted_images.clone().unwrap_or(base.trusted_images),
    })
}

fn json_list(items: &[String]) -> String {
    serde_json::Value::from(items.to_vec()).to_string()
}

fn audit_resource(m: &cluster::Model) -> AuditResource<'_> {
    AuditResource {
        kind: "cluster",
        id: &m.id,
        name: &m.name,
    }
}

/// Ends every change of a cluster: the audit entry `action` with `detail` and the
/// `cluster.changed` event of `m` (its state after the change) with `aspects`, then the commit.
async fn record_and_commit(
    mut tx: Tx<'_>,
    m: &cluster::Model,
    action: &str,
    detail: serde_json::Value,
    change: pe::ChangeKind,
    aspects: &[pe::ClusterChangeAspect],
) -> StoreResult<()> {
    tx.audit(&m.tenant_id, action, audit_resource(m), detail).await?;
    let event = changed_event(&tx.db, m, change, aspects).await?;
    tx.event(&m.tenant_id, event).await?;
    tx.commit().await
}

/// Ends a change of a cluster's registry credentials: the audit entry, and `cluster.changed`
/// with the registry-credentials aspect (so the signature service drops its cached client) at
/// the cluster's unchanged generation, since the credentials are not part of what connectors
/// read.
pub(crate) async fn record_and_commit_unchanged(
    mut tx: Tx<'_>,
    m: &cluster::Model,
    action: &str,
    detail: serde_json::Value,
) -> StoreResult<()> {
    tx.audit(&m.tenant_id, action, audit_resource(m), detail).await?;
    let event = changed_event(
        &tx.db,
        m,
        pe::ChangeKind::Updated,
        &[pe::ClusterChangeAspect::RegistryCredentials],
    )
    .await?;
    tx.event(&m.tenant_id, event).await?;
    tx.commit().await
}

/// The `cluster.changed` payload of a cluster after a change.
async fn changed_event<C: ConnectionTrait>(
    db: &C,
    m: &cluster::Model,
    change: pe::ChangeKind,
    aspects: &[pe::ClusterChangeAspect],
) -> StoreResult<pe::event_envelope::Payload> {
    let policy_revision = match &m.policy_id {
        Some(id) => find_policy(db, &m.tenant_id, &ResourceRef::Id(id.clone()))
            .await
            .map(|p| revision_u64(p.revision))
            .unwrap_or(0),
        None => 0,
    };
    Ok(pe::event_envelope::Payload::ClusterChanged(pe::ClusterChanged {
        cluster_id: m.id.clone(),
        name: m.name.clone(),
        change: change as i32,
        aspects: aspects.iter().map(|a| *a as i32).collect(),
        generation: revision_u64(m.generation),
        policy_id: m.policy_id.clone().unwrap_or_default(),
        policy_revision,
        settings: Some(settings_of(m)?.to_proto()),
    }))
}

/// Writes the next generation of a cluster, unless another writer got there first.
async fn save_generation(tx: &Tx<'_>, current: &cluster::Model, next: &cluster::Model) -> StoreResult<()> {
    let result = cluster::Entity::update_many()
        .col_expr(cluster::Column::PolicyId, Expr::value(next.policy_id.clone()))
        .col_expr(cluster::Column::FailureMode, Expr::value(next.failure_mode.clone()))
        .col_expr(
            cluster::Column::ExcludedNamespaces,
            Expr::value(next.excluded_namespaces.clone()),
        )
        .col_expr(cluster::Column::TrustedImages, Expr::value(next.trusted_images.clone()))
        .col_expr(cluster::Column::Generation, Expr::value(next.generation))
        .col_expr(cluster::Column::UpdatedAt, Expr::value(next.updated_at))
        .filter(cluster::Column::TenantId.eq(current.tenant_id.as_str()))
        .filter(cluster::Column::Id.eq(current.id.as_str()))
        .filter(cluster::Column::Generation.eq(current.generation))
        .exec(&tx.db)
        .await?;
    if result.rows_affected == 1 {
        Ok(())
    } else {
        Err(StoreError::FailedPrecondition(format!(
            "cluster {:?} was changed concurrently; read it again and retry",
            current.name
        )))
    }
}

/// Connector keys of a cluster that still work at `now`, newest first.
async fn active_connector_keys<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    cluster_id: &str,
    now: OffsetDateTime,
) -> StoreResult<Vec<api_key::Model>> {
    let now_us = to_micros(now);
    Ok(api_key::Entity::find()
        .filter(api_key::Column::TenantId.eq(tenant_id))
        .filter(api_key::Column::ClusterId.eq(cluster_id))
        .filter(api_key::Column::RevokedAt.is_null())
        .filter(
            api_key::Column::ExpiresAt
                .is_null()
                .or(api_key::Column::ExpiresAt.gt(now_us)),
        )
        .filter(
            api_key::Column::GraceEndsAt
                .is_null()
                .or(api_key::Column::GraceEndsAt.gt(now_us)),
        )
        .order_by_desc(api_key::Column::CreatedAt)
        .order_by_desc(api_key::Column::Id)
        .all(db)
        .await?)
}

impl Store {
    async fn policy_name<C: ConnectionTrait>(
        &self,
        db: &C,
        tenant_id: &str,
        policy_id: Option<&str>,
    ) -> StoreResult<Option<String>> {
        match policy_id {
            Some(id) => Ok(Some(find_policy(db, tenant_id, &ResourceRef::id(id)).await?.name)),
            None => Ok(None),
        }
    }

    /// Registers a cluster and creates its connector key (shown this once). AlreadyExists when
    /// the name is taken; NotFound for an unknown policy.
    pub async fn register_cluster(
        &self,
        tenant_id: &str,
        actor: &Actor,
        new: &NewCluster,
    ) -> StoreResult<RegisteredCluster> {
        check_tenant_id(tenant_id)?;
        let mut errors = Vec::new();
        if !is_valid_object_name(&new.name) {
            errors.push(FieldError::new(
                "name",
                format!(
                    "{:?} must be 1-64 characters of A-Z, a-z, 0-9, '_', '.' and '-'",
                    new.name
                ),
            ));
        }
        if new.description.chars().count() > MAX_DESCRIPTION_CHARS {
            errors.push(FieldError::new(
                "description",
                format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        let settings = match apply_settings(ClusterSettings::default(), &new.settings) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.extend(e.field_errors().iter().cloned());
                None
            }
        };
        let tx = self.write(actor).await?;
        if let Some(expires) = new.connector_key_expires_at
            && expires <= tx.now
        {
            errors.push(FieldError::new("connector_key_expires_at", "must be in the future"));
        }
        let settings = match (settings, errors.is_empty()) {
            (Some(settings), true) => settings,
            _ => return Err(StoreError::InvalidArgument(errors)),
        };
        tx.require_tenant(tenant_id).await?;
        if cluster::Entity::find()
            .filter(cluster::Column::TenantId.eq(tenant_id))
            .filter(cluster::Column::Name.eq(new.name.as_str()))
            .one(&tx.db)
            .await?
            .is_some()
        {
            return Err(StoreError::exists("cluster", &new.name));
        }
        let assigned = match &new.policy {
            Some(r) => Some(find_policy(&tx.db, tenant_id, r).await?),
            None => None,
        };
        let now = tx.now_us();
        let model = cluster::Model {
            tenant_id: tenant_id.to_owned(),
            id: uuid::Uuid::new_v4().to_string(),
            name: new.name.clone(),
            description: new.description.clone(),
            policy_id: assigned.as_ref().map(|p| p.id.clone()),
            failure_mode: settings.failure_mode.as_str().to_owned(),
            excluded_namespaces: json_list(&settings.excluded_namespaces),
            trusted_images: json_list(&settings.trusted_images),
            connector_version: String::new(),
            kubernetes_version: String::new(),
            last_seen_at: None,
            generation: 1,
            created_at: now,
            updated_at: now,
        };
        cluster::Entity::insert(cluster::ActiveModel::from(model.clone()))
            .exec(&tx.db)
            .await
            .map_err(|e| crate::policies::unique_to_exists(e, "cluster", &model.name))?;
        let key = issue_key(
            &tx,
            tenant_id,
            Role::Connector,
            Some(model.id.clone()),
            new.connector_key_expires_at,
            format!("connector key of cluster {}", model.name),
            None,
        )
        .await?;
        let mut aspects = vec![pe::ClusterChangeAspect::Lifecycle];
        if assigned.is_some() {
            aspects.push(pe::ClusterChangeAspect::Assignment);
        }
        record_and_commit(
            tx,
            &model,
            "cluster.register",
            json!({ "policy_id": model.policy_id, "connector_key_id": key.key.id }),
            pe::ChangeKind::Created,
            &aspects,
        )
        .await?;
        Ok(RegisteredCluster {
            cluster: cluster_from(model, assigned.map(|p| p.name))?,
            connector_key: key,
        })
    }

    /// A cluster with its settings and connector liveness.
    pub async fn get_cluster(&self, tenant_id: &str, cluster: &ResourceRef) -> StoreResult<Cluster> {
        check_tenant_id(tenant_id)?;
        let m = find_cluster(&self.inner.db, tenant_id, cluster).await?;
        let name = self
            .policy_name(&self.inner.db, tenant_id, m.policy_id.as_deref())
            .await?;
        cluster_from(m, name)
    }

    /// The tenant's clusters by name.
    pub async fn list_clusters(&self, tenant_id: &str, query: &ClusterQuery) -> StoreResult<Page<Cluster>> {
        check_tenant_id(tenant_id)?;
        let after = decode_token(&query.page)?;
        let mut select = cluster::Entity::find().filter(cluster::Column::TenantId.eq(tenant_id));
        if let Some(after) = after {
            select = select.filter(cluster::Column::Name.gt(after));
        }
        if !query.name_filter.is_empty() {
            select = select.filter(self.contains("name", &query.name_filter));
        }
        if let Some(r) = &query.policy {
            let p = find_policy(&self.inner.db, tenant_id, r).await?;
            select = select.filter(cluster::Column::PolicyId.eq(p.id));
        }
        let rows = select
            .order_by_asc(cluster::Column::Name)
            .limit(page_limit(&query.page))
            .all(&self.inner.db)
            .await?;
        let policy_ids: Vec<String> = rows.iter().filter_map(|c| c.policy_id.clone()).collect();
        let names: BTreeMap<String, String> = if policy_ids.is_empty() {
            BTreeMap::new()
        } else {
            policy::Entity::find()
                .filter(policy::Column::TenantId.eq(tenant_id))
                .filter(policy::Column::Id.is_in(policy_ids))
                .select_only()
                .column(policy::Column::Id)
                .column(policy::Column::Name)
                .into_tuple::<(String, String)>()
                .all(&self.inner.db)
                .await?
                .into_iter()
                .collect()
        };
        let clusters = rows
            .into_iter()
            .map(|m| {
                let name = m.policy_id.as_ref().and_then(|id| names.get(id).cloned());
                cluster_from(m, name)
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let (items, next_token) = finish_page(clusters, &query.page, |c: &Cluster| c.name.clone());
        Ok(Page { items, next_token })
    }

    /// Assigns a policy to a cluster (`None` removes the assignment). NotFound for an
    /// unknown policy; assigning the current policy again writes nothing.
    pub async fn assign_policy(
        &self,
        tenant_id: &str,
        actor: &Actor,
        cluster: &ResourceRef,
        policy: Option<&ResourceRef>,
    ) -> StoreResult<Cluster> {
        check_tenant_id(tenant_id)?;
        let tx = self.write(actor).await?;
        let current = find_cluster(&tx.db, tenant_id, cluster).await?;
        let target = match policy {
            Some(r) => Some(find_policy(&tx.db, tenant_id, r).await?),
            None => None,
        };
        let target_id = target.as_ref().map(|p| p.id.clone());
        let target_name = target.map(|p| p.name);
        if current.policy_id == target_id {
            return cluster_from(current, target_name);
        }
        let next = cluster::Model {
            policy_id: target_id,
            generation: current.generation + 1,
            updated_at: tx.now_us(),
            ..current.clone()
        };
        save_generation(&tx, &current, &next).await?;
        record_and_commit(
            tx,
            &next,
            "cluster.assign",
            json!({ "policy_id": next.policy_id, "policy_name": target_name, "previous_policy_id": current.policy_id }),
            pe::ChangeKind::Updated,
            &[pe::ClusterChangeAspect::Assignment],
        )
        .await?;
        cluster_from(next, target_name)
    }

    /// Changes a cluster's settings; `None` fields keep their value. With
    /// `expected_generation`, the cluster must be at that generation. No change writes
    /// nothing.
    pub async fn update_cluster_settings(
        &self,
        tenant_id: &str,
        actor: &Actor,
        cluster: &ResourceRef,
        update: &SettingsUpdate,
        expected_generation: Option<u64>,
    ) -> StoreResult<Cluster> {
        check_tenant_id(tenant_id)?;
        let tx = self.write(actor).await?;
        let current = find_cluster(&tx.db, tenant_id, cluster).await?;
        if let Some(expected) = expected_generation
            && expected != revision_u64(current.generation)
        {
            return Err(StoreError::FailedPrecondition(format!(
                "cluster {:?} is at generation {}, not {expected}; read it again and retry",
                current.name, current.generation
            )));
        }
        let before = settings_of(&current)?;
        let after = apply_settings(before.clone(), update)?;
        let policy_name = self
            .policy_name(&tx.db, tenant_id, current.policy_id.as_deref())
            .await?;
        if before == after {
            return cluster_from(current, policy_name);
        }
        let next = cluster::Model {
            failure_mode: after.failure_mode.as_str().to_owned(),
            excluded_namespaces: json_list(&after.excluded_namespaces),
            trusted_images: json_list(&after.trusted_images),
            generation: current.generation + 1,
            updated_at: tx.now_us(),
            ..current.clone()
        };
        save_generation(&tx, &current, &next).await?;
        record_and_commit(
            tx,
            &next,
            "cluster.settings",
            json!({
                "failure_mode": after.failure_mode.as_str(),
                "excluded_namespaces": after.excluded_namespaces,
                "trusted_images": after.trusted_images,
                "generation": next.generation,
            }),
            pe::ChangeKind::Updated,
            &[pe::ClusterChangeAspect::Settings],
        )
        .await?;
        cluster_from(next, policy_name)
    }

    /// Records that the cluster's connector is alive. Not audited, publishes nothing.
    pub async fn heartbeat(
        &self,
        tenant_id: &str,
        cluster: &ResourceRef,
        connector_version: &str,
        kubernetes_version: &str,
    ) -> StoreResult<HeartbeatInfo> {
        check_tenant_id(tenant_id)?;
        let m = find_cluster(&self.inner.db, tenant_id, cluster).await?;
        let now = crate::clock::truncate(self.now());
        cluster::Entity::update_many()
            .col_expr(cluster::Column::LastSeenAt, Expr::value(Some(to_micros(now))))
            .col_expr(
                cluster::Column::ConnectorVersion,
                Expr::value(connector_version.to_owned()),
            )
            .col_expr(
                cluster::Column::KubernetesVersion,
                Expr::value(kubernetes_version.to_owned()),
            )
            .filter(cluster::Column::TenantId.eq(tenant_id))
            .filter(cluster::Column::Id.eq(m.id.as_str()))
            .exec(&self.inner.db)
            .await?;
        let policy_revision = match &m.policy_id {
            Some(id) => revision_u64(
                find_policy(&self.inner.db, tenant_id, &ResourceRef::id(id.as_str()))
                    .await?
                    .revision,
            ),
            None => 0,
        };
        Ok(HeartbeatInfo {
            server_time: now,
            policy_id: m.policy_id,
            policy_revision,
            cluster_generation: revision_u64(m.generation),
        })
    }

    /// Issues a new connector key; the cluster's previous connector keys keep working for
    /// `grace` (default 24 h; zero revokes them at once), then stop.
    pub async fn rotate_connector_key(
        &self,
        tenant_id: &str,
        actor: &Actor,
        cluster: &ResourceRef,
        grace: Option<Duration>,
        expires_at: Option<OffsetDateTime>,
    ) -> StoreResult<KeyRotation> {
        check_tenant_id(tenant_id)?;
        let grace = grace.unwrap_or(DEFAULT_ROTATION_GRACE);
        if grace.is_negative() {
            return Err(StoreError::invalid("grace_period", "must not be negative"));
        }
        let mut tx = self.write(actor).await?;
        if let Some(expires) = expires_at
            && expires <= tx.now
        {
            return Err(StoreError::invalid("expires_at", "must be in the future"));
        }
        let current = find_cluster(&tx.db, tenant_id, cluster).await?;
        let previous = active_connector_keys(&tx.db, tenant_id, &current.id, tx.now).await?;
        // Checked: the store is a library, and a caller past the gRPC edge's range check
        // must get an error, not a panic.
        let ends = tx
            .now
            .checked_add(grace)
            .ok_or_else(|| StoreError::invalid("grace_period", "is too long"))?;
        let new_key = issue_key(
            &tx,
            tenant_id,
            Role::Connector,
            Some(current.id.clone()),
            expires_at,
            format!("connector key of cluster {}", current.name),
            previous.first().map(|k| k.id.clone()),
        )
        .await?;
        for key in &previous {
            if grace.is_zero() {
                revoke_in_tx(&mut tx, key, RevocationReason::Rotated).await?;
            } else {
                let grace_end = key
                    .grace_ends_at
                    .map_or(to_micros(ends), |g| std::cmp::min(g, to_micros(ends)));
                api_key::Entity::update_many()
                    .col_expr(api_key::Column::GraceEndsAt, Expr::value(Some(grace_end)))
                    .filter(api_key::Column::Id.eq(key.id.as_str()))
                    .filter(api_key::Column::TenantId.eq(tenant_id))
                    .exec(&tx.db)
                    .await?;
            }
        }
        let next = cluster::Model {
            generation: current.generation + 1,
            updated_at: tx.now_us(),
            ..current.clone()
        };
        save_generation(&tx, &current, &next).await?;
        let previous_key_ids: Vec<String> = previous.iter().map(|k| k.id.clone()).collect();
        record_and_commit(
            tx,
            &next,
            "cluster.rotate-key",
            json!({ "new_key_id": new_key.key.id, "previous_key_ids": previous_key_ids, "grace_seconds": grace.whole_seconds() }),
            pe::ChangeKind::Updated,
            &[pe::ClusterChangeAspect::ConnectorKey],
        )
        .await?;
        Ok(KeyRotation {
            new_key,
            previous_keys_expire_at: ends,
            previous_key_ids,
        })
    }

    /// Deletes a cluster and revokes its connector keys.
    pub async fn delete_cluster(
        &self,
        tenant_id: &str,
        actor: &Actor,
        cluster: &ResourceRef,
    ) -> StoreResult<DeletedCluster> {
        check_tenant_id(tenant_id)?;
        let mut tx = self.write(actor).await?;
        let current = find_cluster(&tx.db, tenant_id, cluster).await?;
        let keys = api_key::Entity::find()
            .filter(api_key::Column::TenantId.eq(tenant_id))
            .filter(api_key::Column::ClusterId.eq(current.id.as_str()))
            .filter(api_key::Column::RevokedAt.is_null())
            .all(&tx.db)
            .await?;
        for key in &keys {
            revoke_in_tx(&mut tx, key, RevocationReason::ClusterDeleted).await?;
        }
        crate::registry::delete_rows(&tx.db, tenant_id, Some(&current.id)).await?;
        cluster::Entity::delete_many()
            .filter(cluster::Column::TenantId.eq(tenant_id))
            .filter(cluster::Column::Id.eq(current.id.as_str()))
            .exec(&tx.db)
            .await?;
        let revoked_key_ids: Vec<String> = keys.into_iter().map(|k| k.id).collect();
        let last = cluster::Model {
            generation: current.generation + 1,
            ..current
        };
        record_and_commit(
            tx,
            &last,
            "cluster.delete",
            json!({ "revoked_key_ids": revoked_key_ids }),
            pe::ChangeKind::Deleted,
            &[pe::ClusterChangeAspect::Lifecycle],
        )
        .await?;
        Ok(DeletedCluster {
            id: last.id,
            revoked_key_ids,
        })
    }

    /// The policy assigned to a cluster at its current revision, with the cluster's settings.
    pub async fn effective_policy(&self, tenant_id: &str, cluster: &ResourceRef) -> StoreResult<EffectivePolicy> {
        check_tenant_id(tenant_id)?;
        let m = find_cluster(&self.inner.db, tenant_id, cluster).await?;
        let policy = match &m.policy_id {
            Some(id) => Some(policy_from(
                find_policy(&self.inner.db, tenant_id, &ResourceRef::id(id.as_str())).await?,
                true,
            )),
            None => None,
        };
        Ok(EffectivePolicy {
            settings: settings_of(&m)?,
            cluster_id: m.id,
            cluster_name: m.name,
            policy,
            cluster_generation: revision_u64(m.generation),
        })
    }
}
