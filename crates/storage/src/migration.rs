//! The schema, as sea-orm-migration migrations: the same ones for PostgreSQL and SQLite.
//!
//! Conventions: every tenant-owned table has `tenant_id` in its primary key and foreign
//! keys carry it too, so a row can only ever point at a row of its own tenant. Times are
//! BIGINT microseconds since the Unix epoch (exact and ordered alike on both backends); JSON
//! documents are TEXT; foreign keys are `NO ACTION`, checked at the end of each statement.

use sea_orm_migration::prelude::*;

/// Runs the store's migrations.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(M0001Initial),
            Box::new(M0002DeadLetters),
            Box::new(M0003RegistryCredentials),
        ]
    }

    fn migration_table_name() -> DynIden {
        "pc_store_migrations".into_iden()
    }
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    TenantId,
    KeyHash,
    SecretPrefix,
    Role,
    ClusterId,
    Description,
    CreatedAt,
    ExpiresAt,
    LastUsedAt,
    RevokedAt,
    RevokeReason,
    CreatedByKeyId,
    RotatedFrom,
    GraceEndsAt,
}

#[derive(DeriveIden)]
enum Clusters {
    Table,
    TenantId,
    Id,
    Name,
    Description,
    PolicyId,
    FailureMode,
    ExcludedNamespaces,
    TrustedImages,
    ConnectorVersion,
    KubernetesVersion,
    LastSeenAt,
    Generation,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Policies {
    Table,
    TenantId,
    Id,
    Name,
    Revision,
    Description,
    Document,
    DocumentSha256,
    AuthorKeyId,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum PolicyRevisions {
    Table,
    TenantId,
    PolicyId,
    Revision,
    AuthorKeyId,
    CreatedAt,
    Document,
    DocumentSha256,
}

/// A policy's references to one kind of named document share one shape.
#[derive(DeriveIden, Clone, Copy)]
enum Refs {
    TenantId,
    PolicyId,
    AttestorName,
    RulesetId,
}

#[derive(DeriveIden, Clone, Copy)]
enum PolicyAttestorRefs {
    Table,
}

#[derive(DeriveIden, Clone, Copy)]
enum PolicyRulesetRefs {
    Table,
}

/// Rulesets and attestors share one shape.
#[derive(DeriveIden, Clone, Copy)]
enum Object {
    TenantId,
    Id,
    Name,
    Revision,
    Description,
    Document,
    AuthorKeyId,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Rulesets {
    Table,
}

#[derive(DeriveIden, Clone, Copy)]
enum Attestors {
    Table,
}

#[derive(DeriveIden)]
enum ScanResults {
    Table,
    TenantId,
    Id,
    Digest,
    ScanType,
    ScannedAt,
    Scanner,
    Image,
    UploadedAt,
    UploaderKeyId,
    Findings,
    MaxSeverity,
    Cvss,
    IsLatest,
    Result,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Seq,
    EventId,
    TenantId,
    Topic,
    Payload,
    CreatedAt,
}

#[derive(DeriveIden)]
enum DeadLetters {
    Table,
    Id,
    OutboxSeq,
    EventId,
    TenantId,
    Topic,
    Payload,
    CreatedAt,
    Reason,
    DeadAt,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    TenantId,
    ActorKeyId,
    ActorRole,
    Action,
    ResourceType,
    ResourceId,
    ResourceName,
    Detail,
    TraceId,
    At,
}

fn fk_tenant<T: IntoIden>(table: T) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from_tbl(table)
        .from_col(Alias::new("tenant_id"))
        .to_tbl(Tenants::Table)
        .to_col(Tenants::Id)
        .on_delete(ForeignKeyAction::NoAction)
        .to_owned()
}

/// An auto-incremented BIGINT primary key: the order rows were written in.
fn serial_key<C: IntoIden>(column: C) -> ColumnDef {
    ColumnDef::new(column)
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}

/// `(tenant_id, <policy column>)` of `table` points at a policy of the same tenant.
fn fk_policy<T: IntoIden, C: IntoIden>(table: T, tenant_column: C, policy_column: C) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from_tbl(table)
        .from_col(tenant_column)
        .from_col(policy_column)
        .to_tbl(Policies::Table)
        .to_col(Policies::TenantId)
        .to_col(Policies::Id)
        .on_delete(ForeignKeyAction::NoAction)
        .to_owned()
}

fn index<T: IntoIden>(name: &str, table: T, cols: &[&str], unique: bool) -> IndexCreateStatement {
    let mut stmt = Index::create();
    stmt.name(name).table(table);
    for col in cols {
        stmt.col(Alias::new(*col));
    }
    if unique {
        stmt.unique();
    }
    stmt.to_owned()
}

/// The first schema.
#[derive(DeriveMigrationName)]
struct M0001Initial;

#[async_trait::async_trait]
impl MigrationTrait for M0001Initial {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tenants::Table)
                    .col(ColumnDef::new(Tenants::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(Tenants::Name).string().not_null())
                    .col(ColumnDef::new(Tenants::CreatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("ux_tenants_name", Tenants::Table, &["name"], true))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(ColumnDef::new(ApiKeys::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(ApiKeys::TenantId).string().not_null())
                    .col(ColumnDef::new(ApiKeys::KeyHash).string().not_null())
                    .col(ColumnDef::new(ApiKeys::SecretPrefix).string().not_null())
                    .col(ColumnDef::new(ApiKeys::Role).string().not_null())
                    .col(ColumnDef::new(ApiKeys::ClusterId).string().null())
                    .col(ColumnDef::new(ApiKeys::Description).string().not_null())
                    .col(ColumnDef::new(ApiKeys::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(ApiKeys::ExpiresAt).big_integer().null())
                    .col(ColumnDef::new(ApiKeys::LastUsedAt).big_integer().null())
                    .col(ColumnDef::new(ApiKeys::RevokedAt).big_integer().null())
                    .col(ColumnDef::new(ApiKeys::RevokeReason).string().null())
                    .col(ColumnDef::new(ApiKeys::CreatedByKeyId).string().null())
                    .col(ColumnDef::new(ApiKeys::RotatedFrom).string().null())
                    .col(ColumnDef::new(ApiKeys::GraceEndsAt).big_integer().null())
                    .foreign_key(&mut fk_tenant(ApiKeys::Table))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ix_api_keys_tenant_created",
                ApiKeys::Table,
                &["tenant_id", "created_at", "id"],
                false,
            ))
            .await?;
        manager
            .create_index(index("ix_api_keys_grace", ApiKeys::Table, &["grace_ends_at"], false))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Policies::Table)
                    .col(ColumnDef::new(Policies::TenantId).string().not_null())
                    .col(ColumnDef::new(Policies::Id).string().not_null())
                    .col(ColumnDef::new(Policies::Name).string().not_null())
                    .col(ColumnDef::new(Policies::Revision).big_integer().not_null())
                    .col(ColumnDef::new(Policies::Description).string().not_null())
                    .col(ColumnDef::new(Policies::Document).text().not_null())
                    .col(ColumnDef::new(Policies::DocumentSha256).string().not_null())
                    .col(ColumnDef::new(Policies::AuthorKeyId).string().not_null())
                    .col(ColumnDef::new(Policies::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Policies::UpdatedAt).big_integer().not_null())
                    .primary_key(Index::create().col(Policies::TenantId).col(Policies::Id))
                    .foreign_key(&mut fk_tenant(Policies::Table))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("ux_policies_name", Policies::Table, &["tenant_id", "name"], true))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(PolicyRevisions::Table)
                    .col(ColumnDef::new(PolicyRevisions::TenantId).string().not_null())
                    .col(ColumnDef::new(PolicyRevisions::PolicyId).string().not_null())
                    .col(ColumnDef::new(PolicyRevisions::Revision).big_integer().not_null())
                    .col(ColumnDef::new(PolicyRevisions::AuthorKeyId).string().not_null())
                    .col(ColumnDef::new(PolicyRevisions::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(PolicyRevisions::Document).text().not_null())
                    .col(ColumnDef::new(PolicyRevisions::DocumentSha256).string().not_null())
                    .primary_key(
                        Index::create()
                            .col(PolicyRevisions::TenantId)
                            .col(PolicyRevisions::PolicyId)
                            .col(PolicyRevisions::Revision),
                    )
                    .foreign_key(&mut fk_policy(
                        PolicyRevisions::Table,
                        PolicyRevisions::TenantId,
                        PolicyRevisions::PolicyId,
                    ))
                    .to_owned(),
            )
            .await?;

        for table in [Rulesets::Table.into_iden(), Attestors::Table.into_iden()] {
            let name = table.to_string();
            manager
                .create_table(
                    Table::create()
                        .table(table.clone())
                        .col(ColumnDef::new(Object::TenantId).string().not_null())
                        .col(ColumnDef::new(Object::Id).string().not_null())
                        .col(ColumnDef::new(Object::Name).string().not_null())
                        .col(ColumnDef::new(Object::Revision).big_integer().not_null())
                        .col(ColumnDef::new(Object::Description).string().not_null())
                        .col(ColumnDef::new(Object::Document).text().not_null())
                        .col(ColumnDef::new(Object::AuthorKeyId).string().not_null())
                        .col(ColumnDef::new(Object::CreatedAt).big_integer().not_null())
                        .col(ColumnDef::new(Object::UpdatedAt).big_integer().not_null())
                        .primary_key(Index::create().col(Object::TenantId).col(Object::Id))
                        .foreign_key(&mut fk_tenant(table.clone()))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index(&format!("ux_{name}_name"), table, &["tenant_id", "name"], true))
                .await?;
        }

        for (table, column, target, target_key) in [
            (
                PolicyAttestorRefs::Table.into_iden(),
                Refs::AttestorName,
                Attestors::Table.into_iden(),
                Object::Name,
            ),
            (
                PolicyRulesetRefs::Table.into_iden(),
                Refs::RulesetId,
                Rulesets::Table.into_iden(),
                Object::Id,
            ),
        ] {
            let name = table.to_string();
            manager
                .create_table(
                    Table::create()
                        .table(table.clone())
                        .col(ColumnDef::new(Refs::TenantId).string().not_null())
                        .col(ColumnDef::new(Refs::PolicyId).string().not_null())
                        .col(ColumnDef::new(column).string().not_null())
                        .primary_key(Index::create().col(Refs::TenantId).col(Refs::PolicyId).col(column))
                        .foreign_key(&mut fk_policy(table.clone(), Refs::TenantId, Refs::PolicyId))
                        .foreign_key(
                            ForeignKey::create()
                                .from_tbl(table.clone())
                                .from_col(Refs::TenantId)
                                .from_col(column)
                                .to_tbl(target)
                                .to_col(Object::TenantId)
                                .to_col(target_key)
                                .on_delete(ForeignKeyAction::NoAction),
                        )
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(index(
                    &format!("ix_{name}_target"),
                    table,
                    &["tenant_id", &column.into_iden().to_string()],
                    false,
                ))
                .await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(Clusters::Table)
                    .col(ColumnDef::new(Clusters::TenantId).string().not_null())
                    .col(ColumnDef::new(Clusters::Id).string().not_null())
                    .col(ColumnDef::new(Clusters::Name).string().not_null())
                    .col(ColumnDef::new(Clusters::Description).string().not_null())
                    .col(ColumnDef::new(Clusters::PolicyId).string().null())
                    .col(ColumnDef::new(Clusters::FailureMode).string().not_null())
                    .col(ColumnDef::new(Clusters::ExcludedNamespaces).text().not_null())
                    .col(ColumnDef::new(Clusters::TrustedImages).text().not_null())
                    .col(ColumnDef::new(Clusters::ConnectorVersion).string().not_null())
                    .col(ColumnDef::new(Clusters::KubernetesVersion).string().not_null())
                    .col(ColumnDef::new(Clusters::LastSeenAt).big_integer().null())
                    .col(ColumnDef::new(Clusters::Generation).big_integer().not_null())
                    .col(ColumnDef::new(Clusters::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Clusters::UpdatedAt).big_integer().not_null())
                    .primary_key(Index::create().col(Clusters::TenantId).col(Clusters::Id))
                    .foreign_key(&mut fk_tenant(Clusters::Table))
                    .foreign_key(&mut fk_policy(Clusters::Table, Clusters::TenantId, Clusters::PolicyId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("ux_clusters_name", Clusters::Table, &["tenant_id", "name"], true))
            .await?;
        manager
            .create_index(index(
                "ix_clusters_policy",
                Clusters::Table,
                &["tenant_id", "policy_id"],
                false,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ScanResults::Table)
                    .col(ColumnDef::new(ScanResults::TenantId).string().not_null())
                    .col(ColumnDef::new(ScanResults::Id).string().not_null())
                    .col(ColumnDef::new(ScanResults::Digest).string().not_null())
                    .col(ColumnDef::new(ScanResults::ScanType).string().not_null())
                    .col(ColumnDef::new(ScanResults::ScannedAt).big_integer().not_null())
                    .col(ColumnDef::new(ScanResults::Scanner).string().not_null())
                    .col(ColumnDef::new(ScanResults::Image).string().not_null())
                    .col(ColumnDef::new(ScanResults::UploadedAt).big_integer().not_null())
                    .col(ColumnDef::new(ScanResults::UploaderKeyId).string().not_null())
                    .col(ColumnDef::new(ScanResults::Findings).big_integer().not_null())
                    .col(ColumnDef::new(ScanResults::MaxSeverity).string().null())
                    .col(ColumnDef::new(ScanResults::Cvss).text().not_null())
                    .col(ColumnDef::new(ScanResults::IsLatest).boolean().not_null())
                    .col(ColumnDef::new(ScanResults::Result).text().not_null())
                    .primary_key(Index::create().col(ScanResults::TenantId).col(ScanResults::Id))
                    .foreign_key(&mut fk_tenant(ScanResults::Table))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ix_scan_results_digest",
                ScanResults::Table,
                &["tenant_id", "digest", "scan_type", "scanned_at"],
                false,
            ))
            .await?;
        manager
            .create_index(index(
                "ix_scan_results_uploaded",
                ScanResults::Table,
                &["tenant_id", "uploaded_at", "id"],
                false,
            ))
            .await?;

        // No foreign key to tenants: the events of a tenant's deletion outlive it.
        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .col(serial_key(Outbox::Seq))
                    .col(ColumnDef::new(Outbox::EventId).string().not_null())
                    .col(ColumnDef::new(Outbox::TenantId).string().not_null())
                    .col(ColumnDef::new(Outbox::Topic).string().not_null())
                    .col(ColumnDef::new(Outbox::Payload).blob().not_null())
                    .col(ColumnDef::new(Outbox::CreatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("ux_outbox_event_id", Outbox::Table, &["event_id"], true))
            .await?;

        // No foreign key to tenants either: a tenant's deletion is recorded after it is gone.
        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .col(serial_key(AuditLog::Id))
                    .col(ColumnDef::new(AuditLog::TenantId).string().not_null())
                    .col(ColumnDef::new(AuditLog::ActorKeyId).string().not_null())
                    .col(ColumnDef::new(AuditLog::ActorRole).string().null())
                    .col(ColumnDef::new(AuditLog::Action).string().not_null())
                    .col(ColumnDef::new(AuditLog::ResourceType).string().not_null())
                    .col(ColumnDef::new(AuditLog::ResourceId).string().not_null())
                    .col(ColumnDef::new(AuditLog::ResourceName).string().not_null())
                    .col(ColumnDef::new(AuditLog::Detail).text().not_null())
                    .col(ColumnDef::new(AuditLog::TraceId).string().not_null())
                    .col(ColumnDef::new(AuditLog::At).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ix_audit_log_tenant",
                AuditLog::Table,
                &["tenant_id", "id"],
                false,
            ))
            .await?;
        Ok(())
    }

    /// All DDL of a migration in one transaction, on SQLite as on PostgreSQL.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

/// The outbox's dead letters: events the bus refused for good (too large, invalid subject),
/// moved out of the outbox so the relay can go on with the others.
struct M0002DeadLetters;

// Named by hand: the derive names a migration after its module, which both share.
impl MigrationName for M0002DeadLetters {
    fn name(&self) -> &str {
        "m0002_dead_letters"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0002DeadLetters {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // No foreign key to tenants, as for the outbox: a dead letter outlives its tenant.
        manager
            .create_table(
                Table::create()
                    .table(DeadLetters::Table)
                    .col(serial_key(DeadLetters::Id))
                    .col(ColumnDef::new(DeadLetters::OutboxSeq).big_integer().not_null())
                    .col(ColumnDef::new(DeadLetters::EventId).string().not_null())
                    .col(ColumnDef::new(DeadLetters::TenantId).string().not_null())
                    .col(ColumnDef::new(DeadLetters::Topic).string().not_null())
                    .col(ColumnDef::new(DeadLetters::Payload).blob().not_null())
                    .col(ColumnDef::new(DeadLetters::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(DeadLetters::Reason).text().not_null())
                    .col(ColumnDef::new(DeadLetters::DeadAt).big_integer().not_null())
                    .to_owned(),
            )
            .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

#[derive(DeriveIden)]
enum RegistryCredentials {
    Table,
    TenantId,
    ClusterId,
    Registry,
    Username,
    KeyId,
    Nonce,
    Ciphertext,
    UpdatedAt,
}

/// Registry credentials per cluster (issue 18): the password sealed with AES-256-GCM under
/// the key named by `key_id`. Rows go with their cluster (and tenant): the store deletes them
/// first; the foreign key makes a stray row impossible.
struct M0003RegistryCredentials;

// Named by hand, as M0002.
impl MigrationName for M0003RegistryCredentials {
    fn name(&self) -> &str {
        "m0003_registry_credentials"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0003RegistryCredentials {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RegistryCredentials::Table)
                    .col(ColumnDef::new(RegistryCredentials::TenantId).string().not_null())
                    .col(ColumnDef::new(RegistryCredentials::ClusterId).string().not_null())
                    .col(ColumnDef::new(RegistryCredentials::Registry).string().not_null())
                    .col(ColumnDef::new(RegistryCredentials::Username).string().not_null())
                    .col(ColumnDef::new(RegistryCredentials::KeyId).string().not_null())
                    .col(ColumnDef::new(RegistryCredentials::Nonce).blob().not_null())
                    .col(ColumnDef::new(RegistryCredentials::Ciphertext).blob().not_null())
                    .col(ColumnDef::new(RegistryCredentials::UpdatedAt).big_integer().not_null())
                    // The primary key is the unique (tenant, cluster, registry).
                    .primary_key(
                        Index::create()
                            .col(RegistryCredentials::TenantId)
                            .col(RegistryCredentials::ClusterId)
                            .col(RegistryCredentials::Registry),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from_tbl(RegistryCredentials::Table)
                            .from_col(RegistryCredentials::TenantId)
                            .from_col(RegistryCredentials::ClusterId)
                            .to_tbl(Clusters::Table)
                            .to_col(Clusters::TenantId)
                            .to_col(Clusters::Id)
                            .on_delete(ForeignKeyAction::NoAction),
                    )
                    .to_owned(),
            )
            .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
