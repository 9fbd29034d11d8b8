//! What the continuous service keeps, and the contract of the storage that keeps it.
//!
//! Everything a replica needs to take over any cluster lives here, not in a replica's memory
//! (ARCHITECTURE.md: any replica can re-evaluate any cluster): each cluster's inventory (one
//! row per pod, stamped with the snapshot generation that last sent it), the findings (open
//! and resolved), each pod's mitigation state and each owner's terminate backoff, and the
//! mitigation commands with their acks.
//!
//! Every method takes the caller's tenant and reads and writes only that tenant's rows.
//!
//! Replicas may re-evaluate one cluster at the same time (an inventory change on one, a
//! `policy.changed` on another). Findings are therefore written optimistically: a
//! [`FindingsRead`] carries the cluster's findings version, [`ContinuousStore::save_findings`]
//! writes only when the version has not moved since (and moves it), else it fails with
//! [`StoreError::Conflict`] and the caller reads and judges again. The findings, pod states,
//! owners' backoffs and the commands they order commit in one transaction, so a restarted
//! service neither loses a finding nor orders a command twice.

use std::future::Future;
use std::pin::Pin;

use compact_str::CompactString;
use portcullis_engine::policy::Mitigation;
use time::OffsetDateTime;

use crate::findings::{Finding, Order, Owners, PodAddress, PodState};
use crate::inventory::PodProjection;

/// A boxed, sendable future (the store is used behind `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or failed.
    #[error("continuous store unavailable: {0}")]
    Unavailable(String),
    /// The cluster's findings changed since they were read: read and judge again.
    #[error("the cluster's findings changed since they were read")]
    Conflict,
    /// A page token that this store did not issue (or issued for other filters).
    #[error("invalid page token")]
    InvalidPageToken,
    /// A stored row that cannot be read back (a bug, or a row written by a newer version).
    #[error("unreadable stored row: {0}")]
    Corrupt(String),
}

/// A store result.
pub type StoreResult<T> = Result<T, StoreError>;

/// One change to a cluster's inventory, as the stream's sequencing accepted it
/// ([`crate::sync::SyncState`]).
#[derive(Debug, Clone, PartialEq)]
pub enum InventoryWrite {
    /// A snapshot begins: the cluster's snapshot generation moves on by one.
    BeginSnapshot,
    /// Pods added or changed (snapshot pages and deltas alike), stamped with the current
    /// generation.
    Upsert(Vec<PodProjection>),
    /// Pods deleted, by uid (uids not in the inventory are ignored).
    Delete(Vec<String>),
    /// The snapshot is complete: every pod not stamped with the current generation is gone.
    EndSnapshot,
}

/// What an inventory write changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InventoryApplied {
    /// Uids of pods that are new or whose stored projection changed (re-evaluate these only;
    /// a snapshot re-sending an unchanged pod changes nothing).
    pub changed: Vec<String>,
    /// Uids of pods removed (their findings resolve).
    pub removed: Vec<String>,
}

/// Some pods of one cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterPods {
    /// The cluster's id.
    pub cluster: String,
    /// The pods' uids.
    pub uids: Vec<String>,
}

/// A pod as the inventory holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPod {
    /// The cluster's id.
    pub cluster: String,
    /// The projection.
    pub pod: PodProjection,
    /// When the connector last sent it.
    pub synced_at: OffsetDateTime,
}

/// The findings state of a cluster (or of some of its pods), with its version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FindingsRead {
    /// Per pod uid, the open findings, isolation and terminate state (pods without any are
    /// left out); and every owner's terminate backoff.
    pub findings: crate::findings::ClusterFindings,
    /// The cluster's findings version when read.
    pub version: u64,
}

/// The policy a re-evaluation used (recorded on the findings it writes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyUsed {
    /// The policy's id (empty when the cluster has no policy assigned).
    pub id: String,
    /// Its revision.
    pub revision: u64,
}

/// What one reconciliation writes, all in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingsWrite {
    /// The version of the [`FindingsRead`] the reconciliation started from.
    pub version: u64,
    /// The new state of every pod judged or gone (a default state removes the pod's state).
    /// A pod's open findings are matched to its stored open findings by rule: a matched one
    /// keeps its id and first seen and takes the rest (last seen, mitigation, containers,
    /// message); an unmatched one is inserted with a new id.
    pub pods: Vec<(String, PodState)>,
    /// The findings that resolved (their `resolved` is set), including those of pods gone:
    /// the stored open finding of the same pod and rule is marked resolved.
    pub resolved: Vec<Finding>,
    /// Every owner's terminate backoff after reconciling (replaces the stored ones).
    pub owners: Owners,
    /// The commands to store (pending, or reported for [`Order::NotIsolatable`]).
    pub commands: Vec<NewCommand>,
    /// The policy judged with.
    pub policy: PolicyUsed,
}

/// A finding as stored: with its id and the policy that found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFinding {
    /// Server-assigned id, stable while the finding is open.
    pub id: String,
    /// The finding.
    pub finding: Finding,
    /// The policy that found it (at its last evaluation).
    pub policy: PolicyUsed,
}

/// What [`ContinuousStore::save_findings`] wrote, for the events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FindingsSaved {
    /// Findings opened (with their new ids).
    pub opened: Vec<StoredFinding>,
    /// Open findings whose stored mitigation differed from the new one.
    pub changed: Vec<StoredFinding>,
    /// Findings resolved.
    pub resolved: Vec<StoredFinding>,
    /// Commands stored.
    pub commands: Vec<StoredCommand>,
    /// The cluster's findings version after the write.
    pub version: u64,
}

/// Who made a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandOrigin {
    /// Continuous evaluation of a finding (or its clearing, for a restore).
    Continuous,
    /// A runtime ruleset matched a runtime event (`runtime.mitigation`).
    Runtime,
    /// A person, through `IssueCommand`.
    Manual,
}

/// A command's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandState {
    /// Made, not yet acked.
    Pending,
    /// The connector carried it out.
    Done,
    /// The connector tried and failed.
    Failed,
    /// The connector refused it.
    Rejected,
    /// No longer needed before it was acked.
    Cancelled,
    /// A report never sent ([`Order::NotIsolatable`]).
    Reported,
}

impl CommandState {
    /// Whether the state is final (an ack, a cancel or a report).
    pub fn is_final(self) -> bool {
        !matches!(self, CommandState::Pending)
    }
}

/// A command to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCommand {
    /// The pod.
    pub pod: PodAddress,
    /// What to do.
    pub order: Order,
    /// Who made it.
    pub origin: CommandOrigin,
    /// Why, for people.
    pub reason: String,
    /// The rules of the findings it follows from (continuous origin).
    pub rules: Vec<String>,
    /// The runtime rule ids it follows from (runtime origin).
    pub runtime_rule_ids: Vec<String>,
}

/// A command as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCommand {
    /// Server-assigned id (the connector acks by it).
    pub id: String,
    /// The cluster's id.
    pub cluster: String,
    /// The command.
    pub command: NewCommand,
    /// When it was made.
    pub issued_at: OffsetDateTime,
    /// Its state.
    pub state: CommandState,
    /// When its state last changed.
    pub state_changed_at: OffsetDateTime,
    /// The connector's message with its ack.
    pub ack_message: String,
}

/// The answer to an ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acked {
    /// The command was pending and now has the acked state.
    Now(StoredCommand),
    /// The command already had a final state (a repeated ack): nothing changed.
    Already(StoredCommand),
    /// No command of that id in this tenant's cluster.
    Unknown,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// The token of the next page; `None` on the last page.
    pub next: Option<String>,
}

/// Which page to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Items at most (the store clamps 0 to 100 and anything above 1000 to 1000).
    pub size: u32,
    /// The `next` of the previous page.
    pub token: Option<String>,
}

/// Which findings to list (all conditions hold together).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FindingFilter {
    /// Only this cluster's (by id).
    pub cluster: Option<String>,
    /// Only this namespace's.
    pub namespace: Option<CompactString>,
    /// Only this pod's (by name).
    pub pod: Option<CompactString>,
    /// Only findings of rules of this type (the rule's text starts with it).
    pub rule_type: Option<String>,
    /// Only findings whose mitigation is at least this strong.
    pub min_mitigation: Option<Mitigation>,
    /// `Some(true)`: open only; `Some(false)`: resolved only; `None`: both.
    pub open: Option<bool>,
}

/// Which commands to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandFilter {
    /// Only this cluster's (by id).
    pub cluster: Option<String>,
    /// Only in this state.
    pub state: Option<CommandState>,
    /// Only for pods of this namespace.
    pub namespace: Option<CompactString>,
    /// Only for this pod (by name).
    pub pod: Option<CompactString>,
}

/// The continuous service's storage (PostgreSQL in distributed mode, SQLite in embedded
/// mode; see `crate::storage`).
pub trait ContinuousStore: Send + Sync + 'static {
    /// Applies one inventory change of `tenant`'s `cluster` at `now`.
    fn write_inventory<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a str,
        write: InventoryWrite,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, StoreResult<InventoryApplied>>;

    /// The pods of a cluster's inventory: all of them, or those of `uids` that are there.
    fn pods<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a str,
        uids: Option<&'a [String]>,
    ) -> BoxFuture<'a, StoreResult<Vec<PodProjection>>>;

    /// One pod by namespace and name.
    fn pod<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<StoredPod>>>;

    /// The pods of any of the tenant's clusters that run `digest` (a container's image pinned
    /// to it, or its `imageID`).
    fn pods_running<'a>(&'a self, tenant: &'a str, digest: &'a str) -> BoxFuture<'a, StoreResult<Vec<ClusterPods>>>;

    /// Every (tenant, cluster) with an inventory (the periodic sweep).
    fn clusters(&self) -> BoxFuture<'_, StoreResult<Vec<(String, String)>>>;

    /// Claims `tenant`'s `cluster` for the periodic sweep at `now`: true when no replica
    /// claimed it in the last `min_gap` (this replica judges it), false when one did or the
    /// cluster has no inventory (this replica leaves it). Atomic across replicas.
    fn claim_sweep<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a str,
        now: OffsetDateTime,
        min_gap: std::time::Duration,
    ) -> BoxFuture<'a, StoreResult<bool>>;

    /// The tenant's clusters with an inventory.
    fn tenant_clusters<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, StoreResult<Vec<String>>>;

    /// Drops a cluster's inventory, findings state and pending commands (the cluster was
    /// deleted); resolved findings and acked commands stay for the record.
    fn forget_cluster<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a str,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, StoreResult<()>>;

    /// The findings state of a cluster: of every pod, or of the pods of `uids` (the owners'
    /// backoffs always whole).
    fn findings<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a str,
        uids: Option<&'a [String]>,
    ) -> BoxFuture<'a, StoreResult<FindingsRead>>;

    /// Writes a reconciliation, at `now`, when the cluster's findings version is still
    /// `write.version`; else [`StoreError::Conflict`] and nothing is written.
    fn save_findings<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a str,
        write: FindingsWrite,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, StoreResult<FindingsSaved>>;

    /// Lists findings, most recently seen first.
    fn list_findings<'a>(
        &'a self,
        tenant: &'a str,
        filter: &'a FindingFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<StoredFinding>>>;

    /// Stores commands made outside reconciliation (runtime and manual), pending.
    fn issue_commands<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a str,
        commands: Vec<NewCommand>,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, StoreResult<Vec<StoredCommand>>>;

    /// Stores one command made outside reconciliation under `id`, pending, unless a command
    /// of that id is already stored in the tenant: `None` then, and nothing changes (a
    /// redelivered event's command is made once).
    fn issue_command_once<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a str,
        id: &'a str,
        command: NewCommand,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, StoreResult<Option<StoredCommand>>>;

    /// The cluster's pending commands, oldest first (what a connector has not acked).
    fn pending_commands<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a str,
    ) -> BoxFuture<'a, StoreResult<Vec<StoredCommand>>>;

    /// One command by id.
    fn command<'a>(&'a self, tenant: &'a str, id: &'a str) -> BoxFuture<'a, StoreResult<Option<StoredCommand>>>;

    /// Records a connector's ack of a command (`state` is final) at `at`, once: a repeated
    /// ack changes nothing.
    fn ack_command<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a str,
        id: &'a str,
        state: CommandState,
        message: &'a str,
        at: OffsetDateTime,
    ) -> BoxFuture<'a, StoreResult<Acked>>;

    /// Lists commands, newest first.
    fn list_commands<'a>(
        &'a self,
        tenant: &'a str,
        filter: &'a CommandFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<StoredCommand>>>;
}
