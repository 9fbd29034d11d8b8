//! `seed`: the benchmark dataset, written through the store (the same validation and
//! transactions as the gRPC API, without its network cost).

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use portcullis_storage::{Actor, NewCluster, NewTenant, ResourceRef, Role, SettingsUpdate, Store, StoreOptions};

/// Arguments of `seed`.
#[derive(Debug, Args)]
pub struct SeedArgs {
    /// The database (`postgres://...` or `sqlite://PATH?mode=rwc`); migrated when needed.
    #[arg(long)]
    pub database_url: String,
    /// How many tenants.
    #[arg(long, default_value_t = 1000)]
    pub tenants: usize,
    /// How many policies in all, spread evenly over the tenants (at least one each).
    #[arg(long, default_value_t = 10_000)]
    pub policies: usize,
    /// Where to write the connector keys: one `tenant<TAB>cluster id<TAB>key` line each.
    #[arg(long, default_value = "loadgen-keys.tsv")]
    pub keys_out: std::path::PathBuf,
    /// Tenants seeded at the same time.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Prefix of the tenant ids (`PREFIX-00001`, ...).
    #[arg(long, default_value = "bench")]
    pub tenant_prefix: String,
}

/// Rules in each generated policy (default and namespaced together).
pub const RULES_PER_POLICY: usize = 15;

/// What one tenant got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeededTenant {
    /// The tenant's id.
    pub tenant_id: String,
    /// Its cluster's id.
    pub cluster_id: String,
    /// The cluster's connector key.
    pub connector_key: String,
}

/// How many policies tenant `index` gets when `policies` are spread over `tenants`.
pub fn policies_of(index: usize, tenants: usize, policies: usize) -> usize {
    let base = policies / tenants.max(1);
    let extra = usize::from(index < policies % tenants.max(1));
    base + extra
}

/// The policy document number `policy` of tenant `tenant`: 13 default rules, 2 namespaced
/// rules, 2 exceptions; values vary with the indices so no two documents are the same.
pub fn policy_document(tenant: usize, policy: usize) -> String {
    let mut doc = String::new();
    let tag = if policy.is_multiple_of(2) { "latest" } else { "dev" };
    let severity = ["low", "medium", "high", "medium"]
        .get(policy % 4)
        .copied()
        .unwrap_or("high");
    // Writing to a String cannot fail.
    let _ = write!(
        doc,
        r#"name: t{tenant}.policy_{policy:02}
description: Benchmark policy {policy} of tenant {tenant}
default:
  rules:
    - type: podSecurityContext
      action: block
      mitigation: isolate
      statement: {{properties: [{{key: hostNetwork, value: "true"}}]}}
    - type: podSecurityContext
      action: block
      statement: {{properties: [{{key: hostPID, value: "true"}}]}}
    - type: podSecurityContext
      action: block
      statement: {{properties: [{{key: hostIPC, value: "true"}}]}}
    - type: containerSecurityContext
      action: block
      mitigation: terminate
      statement: {{properties: [{{key: privileged, value: "true"}}]}}
    - type: containerSecurityContext
      action: block
      statement: {{properties: [{{key: capabilities-rule, value: baseline}}]}}
    - type: containerSecurityContext
      action: log
      statement: {{properties: [{{key: allowPrivilegeEscalation, value: "true"}}]}}
    - type: containerSecurityContext
      action: log
      statement: {{properties: [{{key: runAsNonRoot, value: "false"}}]}}
    - type: registry
      action: block
      statement: {{properties: [{{key: equals, value: untrusted-{tenant}.example.com}}]}}
    - type: image
      action: block
      statement: {{properties: [{{key: contains, value: "/sandbox-{policy}/"}}]}}
    - type: tag
      action: log
      statement: {{properties: [{{key: equals, value: {tag}}}]}}
    - type: vulnerabilities
      action: block
      statement: {{properties: [{{key: max-severity, value: {severity}}}]}}
    - type: malware
      action: block
      statement: {{properties: [{{key: count, value: "0"}}]}}
    - type: podexec
      action: log
      statement: {{properties: [{{key: podExec, value: "true"}}]}}
  exceptions:
    - type: imagePath
      statement: {{properties: [{{key: starts-with, value: "registry.example.com/team-{tenant}/"}}]}}
      namespaces: [ops]
    - type: registry
      statement: {{properties: [{{key: equals, value: mirror-{policy}.example.com}}]}}
namespaced:
  - name: dev.relaxed
    namespaces: [dev, test]
    rules:
      - type: containerSecurityContext
        action: block
        statement: {{properties: [{{key: privileged, value: "true"}}]}}
      - type: podSecurityStandard
        action: log
        statement: {{properties: [{{key: level, value: baseline}}]}}
"#
    );
    doc
}

/// Seeds tenant `index`: the tenant, its policies, one cluster with policy
/// `index % count` assigned.
async fn seed_tenant(store: &Store, prefix: &str, index: usize, policies: usize) -> Result<SeededTenant> {
    let tenant_id = format!("{prefix}-{index:05}");
    let created = store
        .create_tenant(
            &Actor::operator(),
            &NewTenant {
                id: Some(tenant_id.clone()),
                name: format!("Benchmark tenant {index}"),
                admin_key_expires_at: None,
            },
        )
        .await
        .with_context(|| format!("creating tenant {tenant_id}"))?;
    let admin = Actor::key(created.admin_key.key.id.clone(), Role::Admin);
    let mut names = Vec::with_capacity(policies);
    for p in 0..policies {
        let policy = store
            .create_policy(&tenant_id, &admin, &policy_document(index, p))
            .await
            .with_context(|| format!("creating policy {p} of tenant {tenant_id}"))?;
        names.push(policy.name);
    }
    let assigned = names.get(index % policies.max(1)).cloned();
    let registered = store
        .register_cluster(
            &tenant_id,
            &admin,
            &NewCluster {
                name: "cluster-1".to_owned(),
                description: "benchmark cluster".to_owned(),
                policy: assigned.map(ResourceRef::Name),
                settings: SettingsUpdate::default(),
                connector_key_expires_at: None,
            },
        )
        .await
        .with_context(|| format!("registering the cluster of tenant {tenant_id}"))?;
    Ok(SeededTenant {
        tenant_id,
        cluster_id: registered.cluster.id,
        connector_key: registered.connector_key.secret,
    })
}

/// Runs `seed`.
pub async fn run(args: &SeedArgs) -> Result<()> {
    if args.tenants == 0 || args.policies < args.tenants {
        bail!("--policies must be at least --tenants (each cluster gets a policy), and --tenants at least 1");
    }
    let workers = args.concurrency.max(1);
    let options = StoreOptions {
        producer: "loadgen-seed".to_owned(),
        max_connections: Some(u32::try_from(workers + 2).unwrap_or(u32::MAX)),
        ..StoreOptions::default()
    };
    let store = Store::connect_with(&args.database_url, options)
        .await
        .context("opening the database")?;
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (store, next) = (store.clone(), next.clone());
        let (prefix, tenants, policies) = (args.tenant_prefix.clone(), args.tenants, args.policies);
        tasks.spawn(async move {
            let mut done = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= tenants {
                    return Ok::<_, anyhow::Error>(done);
                }
                let seeded = seed_tenant(&store, &prefix, index, policies_of(index, tenants, policies)).await?;
                if (index + 1) % 100 == 0 {
                    eprintln!("seeded {} tenants", index + 1);
                }
                done.push((index, seeded));
            }
        });
    }
    let mut seeded = Vec::with_capacity(args.tenants);
    while let Some(joined) = tasks.join_next().await {
        seeded.extend(joined.context("a seeding task failed")??);
    }
    seeded.sort_by_key(|(index, _)| *index);
    write_keys(&args.keys_out, seeded.iter().map(|(_, s)| s))?;
    eprintln!(
        "seeded {} tenants, {} policies ({RULES_PER_POLICY} rules each), {} clusters in {:.1} s; keys in {}",
        args.tenants,
        args.policies,
        seeded.len(),
        started.elapsed().as_secs_f64(),
        args.keys_out.display()
    );
    Ok(())
}

/// Writes the keys file (owner-readable only: it holds secrets).
fn write_keys<'a>(path: &std::path::Path, seeded: impl Iterator<Item = &'a SeededTenant>) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "# tenant\tcluster id\tconnector key")?;
    for s in seeded {
        writeln!(out, "{}\t{}\t{}", s.tenant_id, s.cluster_id, s.connector_key)?;
    }
    out.flush().with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use portcullis_engine::policy::{PolicyDocument, validate};

    use super::*;

    #[test]
    fn generated_documents_are_valid_with_fifteen_rules() {
        for (t, p) in [(0, 0), (7, 3), (999, 9)] {
            let doc = PolicyDocument::parse(&policy_document(t, p)).unwrap();
            let valid = validate(&doc).unwrap();
            let json = serde_json_value(&valid.document);
            let default_rules = json["default"]["rules"].as_array().unwrap().len();
            let namespaced_rules: usize = json["namespaced"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["rules"].as_array().unwrap().len())
                .sum();
            assert_eq!(default_rules + namespaced_rules, RULES_PER_POLICY);
            assert_eq!(json["name"], format!("t{t}.policy_{p:02}"));
        }
    }

    fn serde_json_value<T: serde::Serialize>(value: &T) -> serde_json::Value {
        serde_json::to_value(value).unwrap()
    }

    #[test]
    fn policies_are_spread_evenly_and_add_up() {
        assert_eq!(policies_of(0, 1000, 10_000), 10);
        assert_eq!(policies_of(999, 1000, 10_000), 10);
        let total: usize = (0..7).map(|i| policies_of(i, 7, 30)).sum();
        assert_eq!(total, 30);
        assert_eq!(policies_of(0, 7, 30), 5);
        assert_eq!(policies_of(6, 7, 30), 4);
    }
}
