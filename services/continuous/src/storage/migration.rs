//! The continuous service's schema, as sea-orm-migration migrations (the same for PostgreSQL
//! and SQLite).
//!
//! The service owns these tables: they are prefixed `cn_` and their migrations are recorded
//! in `pc_continuous_migrations`, so that in embedded mode they share the SQLite file with
//! the policy store's tables (which record theirs in `pc_store_migrations`) without either
//! seeing the other's. Conventions as the policy store's: `tenant_id` leads every primary key
//! and index, times are BIGINT microseconds since the Unix epoch, JSON is TEXT. There are no
//! foreign keys to the policy store's tables: in distributed mode they may live in another
//! database.

use sea_orm_migration::prelude::*;

/// Runs the continuous service's migrations.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(M0001Initial)]
    }

    fn migration_table_name() -> DynIden {
        "pc_continuous_migrations".into_iden()
    }
}

fn string(name: &'static str) -> ColumnDef {
    ColumnDef::new(name).string().not_null().to_owned()
}

fn text(name: &'static str) -> ColumnDef {
    ColumnDef::new(name).text().not_null().to_owned()
}

fn bigint(name: &'static str) -> ColumnDef {
    ColumnDef::new(name).big_integer().not_null().to_owned()
}

fn nullable_bigint(name: &'static str) -> ColumnDef {
    ColumnDef::new(name).big_integer().null().to_owned()
}

fn primary_key(cols: &[&'static str]) -> IndexCreateStatement {
    let mut index = Index::create();
    for col in cols {
        index.col(*col);
    }
    index
}

fn index(name: &'static str, table: &'static str, cols: &[&'static str]) -> IndexCreateStatement {
    let mut stmt = Index::create();
    stmt.name(name).table(table);
    for col in cols {
        stmt.col(*col);
    }
    stmt.to_owned()
}

/// The first schema.
struct M0001Initial;

// Named by hand: the derive would name it after the module.
impl MigrationName for M0001Initial {
    fn name(&self) -> &str {
        "m0001_continuous_initial"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Initial {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One row per cluster with an inventory: its snapshot generation and findings version.
        manager
            .create_table(
                Table::create()
                    .table("cn_clusters")
                    .col(string("tenant_id"))
                    .col(string("cluster_id"))
                    .col(bigint("generation"))
                    .col(bigint("findings_version"))
                    .primary_key(&mut primary_key(&["tenant_id", "cluster_id"]))
                    .to_owned(),
            )
            .await?;

        // The inventory: one row per pod. `projection_hash` tells a re-sent unchanged pod
        // without reading its projection back.
        manager
            .create_table(
                Table::create()
                    .table("cn_pods")
                    .col(string("tenant_id"))
                    .col(string("cluster_id"))
                    .col(string("uid"))
                    .col(string("namespace"))
                    .col(string("name"))
                    .col(ColumnDef::new("projection").blob().not_null())
                    .col(bigint("projection_hash"))
                    .col(bigint("generation"))
                    .col(bigint("synced_at"))
                    .primary_key(&mut primary_key(&["tenant_id", "cluster_id", "uid"]))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ix_cn_pods_name",
                "cn_pods",
                &["tenant_id", "cluster_id", "namespace", "name"],
            ))
            .await?;

        // Which pods run which digest (a new scan result re-evaluates them).
        manager
            .create_table(
                Table::create()
                    .table("cn_pod_digests")
                    .col(string("tenant_id"))
                    .col(string("digest"))
                    .col(string("cluster_id"))
                    .col(string("uid"))
                    .primary_key(&mut primary_key(&["tenant_id", "digest", "cluster_id", "uid"]))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ix_cn_pod_digests_pod",
                "cn_pod_digests",
                &["tenant_id", "cluster_id", "uid"],
            ))
            .await?;

        // Findings, open (`resolved_at` NULL) and resolved. `mitigation` is its rank:
        // 0 none, 1 log, 2 isolate, 3 terminate (the minimum-mitigation filter compares it).
        manager
            .create_table(
                Table::create()
                    .table("cn_findings")
                    .col(string("tenant_id"))
                    .col(string("id"))
                    .col(string("cluster_id"))
                    .col(string("uid"))
                    .col(string("namespace"))
                    .col(string("pod"))
                    .col(text("rule"))
                    .col(ColumnDef::new("mitigation").integer().not_null())
                    .col(text("containers"))
                    .col(text("message"))
                    .col(bigint("first_seen"))
                    .col(bigint("last_seen"))
                    .col(nullable_bigint("resolved_at"))
                    .col(string("policy_id"))
                    .col(bigint("policy_revision"))
                    .primary_key(&mut primary_key(&["tenant_id", "id"]))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ix_cn_findings_pod",
                "cn_findings",
                &["tenant_id", "cluster_id", "resolved_at", "uid"],
            ))
            .await?;
        manager
            .create_index(index(
                "ix_cn_findings_seen",
                "cn_findings",
                &["tenant_id", "last_seen", "id"],
            ))
            .await?;

        // Each pod's mitigation state (pods with the default state have no row).
        manager
            .create_table(
                Table::create()
                    .table("cn_pod_states")
                    .col(string("tenant_id"))
                    .col(string("cluster_id"))
                    .col(string("uid"))
                    .col(string("isolation"))
                    .col(nullable_bigint("terminate_ordered"))
                    .primary_key(&mut primary_key(&["tenant_id", "cluster_id", "uid"]))
                    .to_owned(),
            )
            .await?;

        // Each owner's terminate backoff.
        manager
            .create_table(
                Table::create()
                    .table("cn_owners")
                    .col(string("tenant_id"))
                    .col(string("cluster_id"))
                    .col(string("owner_uid"))
                    .col(bigint("terminations"))
                    .col(bigint("last_at"))
                    .primary_key(&mut primary_key(&["tenant_id", "cluster_id", "owner_uid"]))
                    .to_owned(),
            )
            .await?;

        // Mitigation commands. `seq` orders the commands of one write (same `issued_at`).
        manager
            .create_table(
                Table::create()
                    .table("cn_commands")
                    .col(string("tenant_id"))
                    .col(string("id"))
                    .col(string("cluster_id"))
                    .col(string("namespace"))
                    .col(string("pod"))
                    .col(string("pod_uid"))
                    .col(string("order_type"))
                    .col(text("payload"))
                    .col(string("origin"))
                    .col(text("reason"))
                    .col(text("rules"))
                    .col(text("runtime_rule_ids"))
                    .col(bigint("issued_at"))
                    .col(bigint("seq"))
                    .col(string("state"))
                    .col(bigint("state_changed_at"))
                    .col(text("ack_message"))
                    .primary_key(&mut primary_key(&["tenant_id", "id"]))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ix_cn_commands_cluster",
                "cn_commands",
                &["tenant_id", "cluster_id", "state", "issued_at", "seq"],
            ))
            .await?;
        manager
            .create_index(index(
                "ix_cn_commands_issued",
                "cn_commands",
                &["tenant_id", "issued_at", "seq", "id"],
            ))
            .await?;
        Ok(())
    }

    /// All DDL in one transaction, on SQLite as on PostgreSQL.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
