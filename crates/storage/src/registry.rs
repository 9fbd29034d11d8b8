//! Registry credentials per cluster (issue 18, item 3): a username and a sealed password for
//! each registry host, read back decrypted only by [`Store::get_registry_credential`] (the
//! signature service's call).
//!
//! The [`KeyRing`] is passed to each call rather than held by the [`Store`]: only these
//! methods need it, and every other caller (and `Store::connect`) stays as it was.

use portcullis_engine::policy::FieldError;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::json;

use crate::clock::from_micros;
use crate::clusters::{find_cluster, record_and_commit_unchanged};
use crate::credentials::{CredentialCryptoError, KeyRing, SealedSecret, Secret, SecretScope};
use crate::entity::registry_credential;
use crate::error::{StoreError, StoreResult};
use crate::model::{Actor, ResourceRef};
use crate::store::{Store, check_tenant_id};
use time::OffsetDateTime;

/// Longest registry host (a DNS name of 253 characters, a colon and a port).
pub const MAX_REGISTRY_LEN: usize = 259;
/// Longest username, in bytes.
pub const MAX_USERNAME_LEN: usize = 256;
/// Longest secret (password or identity token), in bytes.
pub const MAX_SECRET_LEN: usize = 8192;

/// One stored credential as listed: never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryCredentialInfo {
    /// The registry host, with its port if any.
    pub registry: String,
    /// The username.
    pub username: String,
    /// The id of the key that sealed the secret.
    pub key_id: String,
    /// When it was last set.
    pub updated_at: OffsetDateTime,
}

/// One credential in the clear: what is set, and what the signature service gets back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryCredential {
    /// The registry host.
    pub registry: String,
    /// The username.
    pub username: String,
    /// The password or identity token (redacted in `Debug`).
    pub secret: Secret,
}

/// Whether `host` is a registry host: `name[:port]`, the name of DNS labels (letters, digits,
/// `-`) joined by dots, or an IPv4 address; `localhost` included. No scheme, no path.
pub fn is_valid_registry(host: &str) -> bool {
    if host.is_empty() || host.len() > MAX_REGISTRY_LEN {
        return false;
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if let Some(port) = port
        && (port.is_empty()
            || port.len() > 5
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u16>().is_err())
    {
        return false;
    }
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Most registries with credentials on one cluster.
pub const MAX_CREDENTIALS_PER_CLUSTER: usize = 64;

/// The problems of one credential, as (field, reason).
fn check(c: &RegistryCredential) -> Vec<(&'static str, &'static str)> {
    let mut errors = Vec::new();
    if !is_valid_registry(&c.registry) {
        errors.push((
            "registry",
            "must be a registry host, name[:port], without scheme or path",
        ));
    }
    if !is_valid_username(&c.username) {
        errors.push(("username", "must be 1-256 bytes without control characters"));
    }
    let secret = c.secret.expose();
    if secret.is_empty() || secret.len() > MAX_SECRET_LEN || secret.contains('\0') {
        errors.push(("secret", "must be 1-8192 bytes without NUL"));
    }
    errors
}

/// Seals `c` for its row and inserts it.
async fn insert_sealed<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    cluster_id: &str,
    c: &RegistryCredential,
    keys: &KeyRing,
    now: i64,
) -> StoreResult<RegistryCredentialInfo> {
    let sealed = keys
        .seal(
            SecretScope {
                tenant: tenant_id,
                cluster: cluster_id,
                registry: &c.registry,
            },
            &c.secret,
        )
        .map_err(crypto_error)?;
    registry_credential::Entity::insert(registry_credential::ActiveModel {
        tenant_id: Set(tenant_id.to_owned()),
        cluster_id: Set(cluster_id.to_owned()),
        registry: Set(c.registry.clone()),
        username: Set(c.username.clone()),
        key_id: Set(sealed.key_id.clone()),
        nonce: Set(sealed.nonce),
        ciphertext: Set(sealed.ciphertext),
        updated_at: Set(now),
    })
    .exec_without_returning(db)
    .await?;
    Ok(RegistryCredentialInfo {
        registry: c.registry.clone(),
        username: c.username.clone(),
        key_id: sealed.key_id,
        updated_at: from_micros(now),
    })
}

/// Whether `username` may be stored: 1-256 bytes, no control characters.
pub fn is_valid_username(username: &str) -> bool {
    !username.is_empty() && username.len() <= MAX_USERNAME_LEN && !username.chars().any(char::is_control)
}

fn crypto_error(e: CredentialCryptoError) -> StoreError {
    // The message names a key id at most, never key material or plaintext.
    StoreError::FailedPrecondition(e.to_string())
}

impl Store {
    /// Sets (creates or replaces) the credential of one registry of a cluster, sealed under
    /// the key ring's active key. Audited without the secret; publishes `cluster.changed`
    /// with the registry-credentials aspect (no secret on the bus either).
    pub async fn set_registry_credential(
        &self,
        tenant_id: &str,
        actor: &Actor,
        cluster: &ResourceRef,
        credential: &RegistryCredential,
        keys: &KeyRing,
    ) -> StoreResult<RegistryCredentialInfo> {
        check_tenant_id(tenant_id)?;
        let errors = check(credential);
        if !errors.is_empty() {
            return Err(StoreError::InvalidArgument(
                errors.into_iter().map(|(f, r)| FieldError::new(f, r)).collect(),
            ));
        }
        let tx = self.write(actor).await?;
        let current = find_cluster(&tx.db, tenant_id, cluster).await?;
        let now = tx.now_us();
        registry_credential::Entity::delete_many()
            .filter(registry_credential::Column::TenantId.eq(tenant_id))
            .filter(registry_credential::Column::ClusterId.eq(current.id.as_str()))
            .filter(registry_credential::Column::Registry.eq(credential.registry.as_str()))
            .exec(&tx.db)
            .await?;
        let info = insert_sealed(&tx.db, tenant_id, &current.id, credential, keys, now).await?;
        record_and_commit_unchanged(
            tx,
            &current,
            "cluster.registry_credential.set",
            json!({ "registry": info.registry, "username": info.username, "key_id": info.key_id }),
        )
        .await?;
        Ok(info)
    }

    /// Replaces the complete set of a cluster's credentials in one transaction (the gRPC
    /// `SetRegistryCredentials` semantics): registries not in `credentials` lose theirs; an
    /// empty set removes them all. At most one entry per registry. Returns what is stored.
    pub async fn replace_registry_credentials(
        &self,
        tenant_id: &str,
        actor: &Actor,
        cluster: &ResourceRef,
        credentials: &[RegistryCredential],
        keys: &KeyRing,
    ) -> StoreResult<Vec<RegistryCredentialInfo>> {
        check_tenant_id(tenant_id)?;
        if credentials.len() > MAX_CREDENTIALS_PER_CLUSTER {
            return Err(StoreError::invalid(
                "credentials",
                format!("at most {MAX_CREDENTIALS_PER_CLUSTER} registries per cluster"),
            ));
        }
        check_all(credentials, &[])?;
        let tx = self.write(actor).await?;
        let current = find_cluster(&tx.db, tenant_id, cluster).await?;
        let now = tx.now_us();
        delete_rows(&tx.db, tenant_id, Some(&current.id)).await?;
        let mut out = Vec::with_capacity(credentials.len());
        for c in credentials {
            out.push(insert_sealed(&tx.db, tenant_id, &current.id, c, keys, now).await?);
        }
        out.sort_by(|a, b| a.registry.cmp(&b.registry));
        let registries: Vec<&str> = out.iter().map(|c| c.registry.as_str()).collect();
        record_and_commit_unchanged(
            tx,
            &current,
            "cluster.registry_credentials.replace",
            json!({ "registries": registries }),
        )
        .await?;
        Ok(out)
    }

    /// Changes some registries' credentials in one transaction, leaving the others as they
    /// are: each of `credentials` is set (created or replaced), each of `remove` deleted
    /// (NotFound, and nothing changed, when one has none). Returns what is stored after.
    pub async fn update_registry_credentials(
        &self,
        tenant_id: &str,
        actor: &Actor,
        cluster: &ResourceRef,
        credentials: &[RegistryCredential],
        remove: &[String],
        keys: &KeyRing,
    ) -> StoreResult<Vec<RegistryCredentialInfo>> {
        check_tenant_id(tenant_id)?;
        if credentials.is_empty() && remove.is_empty() {
            return Err(StoreError::invalid("credentials", "nothing to set or remove"));
        }
        check_all(credentials, remove)?;
        let tx = self.write(actor).await?;
        let current = find_cluster(&tx.db, tenant_id, cluster).await?;
        let now = tx.now_us();
        let stored: std::collections::BTreeSet<String> = rows_of(&tx.db, tenant_id, &current.id)
            .await?
            .into_iter()
            .map(|m| m.registry)
            .collect();
        if let Some(missing) = remove.iter().find(|r| !stored.contains(*r)) {
            return Err(StoreError::not_found("registry credential", format!("{missing:?}")));
        }
        let after = stored
            .iter()
            .filter(|r| !remove.contains(*r))
            .chain(credentials.iter().map(|c| &c.registry))
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if after > MAX_CREDENTIALS_PER_CLUSTER {
            return Err(StoreError::invalid(
                "credentials",
                format!("at most {MAX_CREDENTIALS_PER_CLUSTER} registries per cluster"),
            ));
        }
        let replaced: Vec<&str> = credentials
            .iter()
            .map(|c| c.registry.as_str())
            .chain(remove.iter().map(String::as_str))
            .collect();
        registry_credential::Entity::delete_many()
            .filter(registry_credential::Column::TenantId.eq(tenant_id))
            .filter(registry_credential::Column::ClusterId.eq(current.id.as_str()))
            .filter(registry_credential::Column::Registry.is_in(replaced))
            .exec(&tx.db)
            .await?;
        for c in credentials {
            insert_sealed(&tx.db, tenant_id, &current.id, c, keys, now).await?;
        }
        let out = infos(rows_of(&tx.db, tenant_id, &current.id).await?);
        let set: Vec<&str> = credentials.iter().map(|c| c.registry.as_str()).collect();
        record_and_commit_unchanged(
            tx,
            &current,
            "cluster.registry_credentials.update",
            json!({ "set": set, "removed": remove }),
        )
        .await?;
        Ok(out)
    }

    /// The registries with stored credentials of each of `cluster_ids` (a page of a
    /// listing), by cluster id: usernames, no secrets. Clusters without any are absent.
    pub async fn list_registry_credentials_of(
        &self,
        tenant_id: &str,
        cluster_ids: &[String],
    ) -> StoreResult<std::collections::HashMap<String, Vec<RegistryCredentialInfo>>> {
        check_tenant_id(tenant_id)?;
        let mut out = std::collections::HashMap::<String, Vec<RegistryCredentialInfo>>::new();
        if cluster_ids.is_empty() {
            return Ok(out);
        }
        let rows = registry_credential::Entity::find()
            .filter(registry_credential::Column::TenantId.eq(tenant_id))
            .filter(registry_credential::Column::ClusterId.is_in(cluster_ids.iter().map(String::as_str)))
            .order_by_asc(registry_credential::Column::Registry)
            .all(&self.inner.db)
            .await?;
        for m in rows {
            out.entry(m.cluster_id.clone()).or_default().push(info(m));
        }
        Ok(out)
    }

    /// Deletes the credential of one registry of a cluster; NotFound when there is none.
    pub async fn delete_registry_credential(
        &self,
        tenant_id: &str,
        actor: &Actor,
        cluster: &ResourceRef,
        registry: &str,
    ) -> StoreResult<()> {
        check_tenant_id(tenant_id)?;
        let tx = self.write(actor).await?;
        let current = find_cluster(&tx.db, tenant_id, cluster).await?;
        let deleted = registry_credential::Entity::delete_many()
            .filter(registry_credential::Column::TenantId.eq(tenant_id))
            .filter(registry_credential::Column::ClusterId.eq(current.id.as_str()))
            .filter(registry_credential::Column::Registry.eq(registry))
            .exec(&tx.db)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(StoreError::not_found("registry credential", format!("{registry:?}")));
        }
        record_and_commit_unchanged(
            tx,
            &current,
            "cluster.registry_credential.delete",
            json!({ "registry": registry }),
        )
        .await
    }

    /// The registries of a cluster with stored credentials, by host: usernames, no secrets.
    pub async fn list_registry_credentials(
        &self,
        tenant_id: &str,
        cluster: &ResourceRef,
    ) -> StoreResult<Vec<RegistryCredentialInfo>> {
        check_tenant_id(tenant_id)?;
        let current = find_cluster(&self.inner.db, tenant_id, cluster).await?;
        Ok(infos(rows_of(&self.inner.db, tenant_id, &current.id).await?))
    }

    /// The credentials of a cluster decrypted (every registry, or only `registry`), for the
    /// signature service. A row that does not open with `keys` fails the call
    /// (FailedPrecondition naming the key id), rather than being skipped in silence.
    pub async fn get_registry_credentials(
        &self,
        tenant_id: &str,
        cluster: &ResourceRef,
        registry: Option<&str>,
        keys: &KeyRing,
    ) -> StoreResult<Vec<RegistryCredential>> {
        check_tenant_id(tenant_id)?;
        let current = find_cluster(&self.inner.db, tenant_id, cluster).await?;
        let rows = rows_of(&self.inner.db, tenant_id, &current.id).await?;
        let mut out = Vec::new();
        for m in rows {
            if registry.is_some_and(|r| r != m.registry) {
                continue;
            }
            let secret = keys
                .open(
                    SecretScope {
                        tenant: tenant_id,
                        cluster: &current.id,
                        registry: &m.registry,
                    },
                    &SealedSecret {
                        key_id: m.key_id,
                        nonce: m.nonce,
                        ciphertext: m.ciphertext,
                    },
                )
                .map_err(crypto_error)?;
            out.push(RegistryCredential {
                registry: m.registry,
                username: m.username,
                secret,
            });
        }
        Ok(out)
    }
}

/// A row as listed, without its sealed secret.
fn info(m: registry_credential::Model) -> RegistryCredentialInfo {
    RegistryCredentialInfo {
        registry: m.registry,
        username: m.username,
        key_id: m.key_id,
        updated_at: from_micros(m.updated_at),
    }
}

fn infos(rows: Vec<registry_credential::Model>) -> Vec<RegistryCredentialInfo> {
    rows.into_iter().map(info).collect()
}

/// Checks a change before it is made: each credential (`credentials[i].field`), each registry
/// at most once across `credentials` and `remove` (`remove[i]`).
fn check_all(credentials: &[RegistryCredential], remove: &[String]) -> StoreResult<()> {
    let mut errors = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, c) in credentials.iter().enumerate() {
        for (field, reason) in check(c) {
            errors.push(FieldError::new(format!("credentials[{i}].{field}"), reason));
        }
        if !seen.insert(c.registry.as_str()) {
            errors.push(FieldError::new(format!("credentials[{i}].registry"), "given twice"));
        }
    }
    for (i, r) in remove.iter().enumerate() {
        if !is_valid_registry(r) {
            errors.push(FieldError::new(
                format!("remove[{i}]"),
                "must be a registry host, name[:port], without scheme or path",
            ));
        } else if !seen.insert(r.as_str()) {
            errors.push(FieldError::new(format!("remove[{i}]"), "given twice"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(StoreError::InvalidArgument(errors))
    }
}

async fn rows_of<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    cluster_id: &str,
) -> StoreResult<Vec<registry_credential::Model>> {
    Ok(registry_credential::Entity::find()
        .filter(registry_credential::Column::TenantId.eq(tenant_id))
        .filter(registry_credential::Column::ClusterId.eq(cluster_id))
        .order_by_asc(registry_credential::Column::Registry)
        .all(db)
        .await?)
}

/// Deletes the credentials of one cluster, or of every cluster of the tenant (`None`): before
/// the cluster rows they point at.
pub(crate) async fn delete_rows<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    cluster_id: Option<&str>,
) -> StoreResult<()> {
    let mut q = registry_credential::Entity::delete_many().filter(registry_credential::Column::TenantId.eq(tenant_id));
    if let Some(id) = cluster_id {
        q = q.filter(registry_credential::Column::ClusterId.eq(id));
    }
    q.exec(db).await?;
    Ok(())
}
