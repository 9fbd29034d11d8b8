//! Correlation: rules as data ([`rule`]) and the [`Correlator`] that turns a tenant's events
//! into alerts.
//!
//! # How the correlator works
//!
//! Events are taken one at a time, per tenant, in any order within a bounded lateness: each
//! tenant has a watermark (the latest event time seen); an event older than the watermark
//! minus [`CorrelatorConfig::max_lateness`] is [`TooLate`] and not correlated (it is still
//! stored by the caller). For each rule an event matches, the event joins the group of the
//! rule and its entity key ([`Rule::entity_key`]), kept sorted by event time (ties by
//! arrival), so a story is judged in event-time order whatever order its events came in.
//!
//! When a group completes its rule's story (a sequence in order within the window, or a
//! threshold reached within the window), an alert opens ([`AlertChange::Opened`]) with the
//! story's events and the rule's severity, and the group's events are consumed. While the
//! alert stays open in the correlator, each new event of the same rule and entity is appended
//! to it ([`AlertChange::EventsAdded`]) rather than opening a second alert. The caller tells
//! the correlator when an alert is closed ([`Correlator::close_alert`]); the next story of
//! that group then opens a new alert. After a restart, the caller re-attaches its stored open
//! alerts with [`Correlator::adopt_alert`].
//!
//! Memory is bounded: events older than the watermark minus (window + lateness) are dropped
//! from their group, a group with neither events nor an open alert is removed, a group keeps
//! at most [`CorrelatorConfig::max_events_per_group`] events (the oldest go first; a
//! threshold with `distinct` keeps only the latest event of each value), and a
//! tenant keeps at most [`CorrelatorConfig::max_groups_per_tenant`] groups (when over,
//! expired groups go, then the least recently active tenth). A group whose open alert is
//! forgotten that way (idle past its window and lateness, or evicted) opens a new alert on
//! its next story: its [`NewAlert::key`] is the same, so the caller can append to the stored
//! open alert with that key instead.
//!
//! Alert ids are derived (a UUID from SHA-256 over the tenant, rule, entity key and the
//! story's first event id), so re-correlating the same events after a restart gives the
//! same ids.
//!
//! # Duplicates
//!
//! A bus event is redelivered when its ack was lost, and a sensor resends what it saw no
//! answer for: the same event id again. Each tenant remembers the ids of its latest
//! [`CorrelatorConfig::max_seen_ids_per_tenant`] events and skips an event it has seen, so
//! a duplicate never counts twice towards a threshold or a sequence, not even after the
//! alert its first copy completed was closed (the group was emptied then). The memory is
//! the process's: after a restart, stories start again from the events seen since.
//!
//! # Batches and failed saves
//!
//! The caller stores the alert changes after the correlator made them. So that a failed
//! save loses no alert (the correlator would otherwise believe the alert open and append the
//! redelivered events to an alert that was never stored), a batch is a transaction:
//! [`Correlator::begin`] before it, then [`Correlator::commit`] once its changes are stored
//! or [`Correlator::rollback`] when they could not be, which puts every group the batch
//! touched, the tenants' watermarks and the remembered ids back as they were; the retried
//! events then complete the same stories again (with the same derived alert ids). An alert
//! closed while the batch was in flight stays closed after a rollback.

pub mod rule;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use compact_str::CompactString;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::event::{SecurityEvent, Severity};
pub use rule::{EntityField, Matcher, Pattern, Rule, RuleError, Step, Threshold, load_rules, shipped_rules};

/// Limits of a [`Correlator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorrelatorConfig {
    /// How far behind a tenant's latest event time an event may be and still be correlated.
    pub max_lateness: Duration,
    /// Most groups (rule and entity) kept per tenant.
    pub max_groups_per_tenant: usize,
    /// Most events kept per group.
    pub max_events_per_group: usize,
    /// Most event ids remembered per open alert (to skip an event appended twice).
    pub max_ids_per_alert: usize,
    /// Most event ids remembered per tenant, latest first (a redelivered or resent event
    /// among them is skipped; see the module documentation).
    pub max_seen_ids_per_tenant: usize,
}

impl Default for CorrelatorConfig {
    fn default() -> Self {
        Self {
            max_lateness: Duration::from_secs(5 * 60),
            max_groups_per_tenant: 50_000,
            max_events_per_group: 256,
            max_ids_per_alert: 1024,
            // Redeliveries and resends come within seconds to minutes; at the sustained
            // ingest rate of one tenant this covers well over that (about 2 MB per tenant).
            max_seen_ids_per_tenant: 32_768,
        }
    }
}

/// An event older than its tenant's watermark minus the allowed lateness: not correlated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {event_id} is more than the allowed lateness behind the tenant's latest event")]
pub struct TooLate {
    /// The event's id.
    pub event_id: CompactString,
}

/// A newly opened alert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    /// Its id (derived; see the module documentation).
    pub id: CompactString,
    /// Id of the tenant.
    pub tenant_id: CompactString,
    /// The rule's name.
    pub rule: CompactString,
    /// The rule and entity key (`<rule>\u{1e}<entity key>`): one open alert per key.
    pub key: String,
    /// The title: the rule's description.
    pub title: String,
    /// The rule's severity.
    pub severity: Severity,
    /// The ids of the story's events, in event-time order.
    pub event_ids: Vec<CompactString>,
    /// The distinct clusters of those events, in order of first appearance (an alert counts
    /// in each one's risk score).
    pub cluster_ids: Vec<CompactString>,
    /// The entity fields' values, from the first event: (field, value).
    pub entity: Vec<(EntityField, String)>,
    /// Time of the first event.
    pub first_event_at: OffsetDateTime,
    /// Time of the last event.
    pub last_event_at: OffsetDateTime,
}

/// What the correlator asks the caller to record.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertChange {
    /// An alert opened.
    Opened(NewAlert),
    /// Events joined an open alert.
    EventsAdded {
        /// Id of the tenant.
        tenant_id: CompactString,
        /// Id of the alert.
        alert_id: CompactString,
        /// The events added.
        event_ids: Vec<CompactString>,
        /// Time of the latest added event.
        last_event_at: OffsetDateTime,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    at: OffsetDateTime,
    seq: u64,
    id: CompactString,
    mask: u32,
    distinct: Option<String>,
    cluster_id: CompactString,
}

#[derive(Debug, Clone)]
struct OpenAlert {
    id: CompactString,
    /// The ids of its events the correlator remembers (at most `max_ids_per_alert`), and
    /// their order of arrival, to forget the oldest first.
    ids: HashSet<CompactString>,
    order: VecDeque<CompactString>,
}

impl OpenAlert {
    fn new(id: CompactString, ids: &[CompactString]) -> Self {
        Self {
            id,
            ids: ids.iter().cloned().collect(),
            order: ids.iter().cloned().collect(),
        }
    }

    /// Remembers `id`; false when it was already there.
    fn remember(&mut self, id: &CompactString, cap: usize) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        while self.order.len() >= cap.max(1) {
            let Some(old) = self.order.pop_front() else { break };
            self.ids.remove(&old);
        }
        self.ids.insert(id.clone());
        self.order.push_back(id.clone());
        true
    }
}

#[derive(Debug, Default, Clone)]
struct Group {
    /// Sorted by (time, arrival); a ring, so dropping the oldest costs no shift.
    entries: VecDeque<Entry>,
    /// How many of `entries` match the rule's first matcher: a sequence cannot complete
    /// without one, so the search is skipped while there is none.
    first_steps: usize,
    alert: Option<OpenAlert>,
    last_at: Option<OffsetDateTime>,
}

impl Group {
    /// Drops the first `n` entries.
    fn drain_prefix(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let dropped = self.entries.drain(..n.min(self.entries.len()));
        self.first_steps = self
            .first_steps
            .saturating_sub(dropped.filter(|e| e.mask & 1 != 0).count());
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.first_steps = 0;
    }
}

#[derive(Debug, Default)]
struct Tenant {
    watermark: Option<OffsetDateTime>,
    seq: u64,
    /// Per rule (by index), the groups by entity key.
    groups: Vec<HashMap<String, Group>>,
    ingested_since_sweep: usize,
    /// Ids of the latest events taken (duplicates are skipped), and their order of arrival.
    seen: HashSet<CompactString>,
    seen_order: VecDeque<CompactString>,
}

/// What a batch changed, to put back on [`Correlator::rollback`].
#[derive(Debug, Default)]
struct Journal {
    tenants: HashMap<CompactString, TenantUndo>,
    /// Alerts closed while the batch was in flight: a rollback must not bring them back.
    closed: Vec<(CompactString, CompactString)>,
}

/// A tenant's state before the batch: `None` for a tenant the batch created.
#[derive(Debug)]
struct TenantUndo {
    before: Option<(Option<OffsetDateTime>, u64)>,
    /// Each touched group as it was (`None`: it did not exist), by rule index and key.
    groups: HashMap<(usize, String), Option<Group>>,
    /// Ids the batch added to `seen` (the last of `seen_order`).
    seen_added: Vec<CompactString>,
}

impl Tenant {
    fn group_count(&self) -> usize {
        self.groups.iter().map(HashMap::len).sum()
    }
}

/// Correlates events into alerts, per tenant, with the given rules (module documentation).
#[derive(Debug)]
pub struct Correlator {
    rules: Vec<Rule>,
    config: CorrelatorConfig,
    tenants: HashMap<CompactString, Tenant>,
    journal: Option<Journal>,
}

/// A UUID (version 8) from SHA-256 over `parts`, each followed by a zero byte.
fn derived_id(parts: &[&[u8]]) -> CompactString {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0u8]);
    }
    crate::event::uuid_from_digest(&h.finalize())
}

/// `t - d`, or the earliest time when that is out of range (event times come from outside).
fn before(t: OffsetDateTime, d: time::Duration) -> OffsetDateTime {
    t.checked_sub(d).unwrap_or(time::PrimitiveDateTime::MIN.assume_utc())
}

/// `t + d`, or the latest time when that is out of range.
fn after(t: OffsetDateTime, d: time::Duration) -> OffsetDateTime {
    t.checked_add(d).unwrap_or(time::PrimitiveDateTime::MAX.assume_utc())
}

fn to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

impl Correlator {
    /// A correlator with `rules`.
    pub fn new(rules: Vec<Rule>, config: CorrelatorConfig) -> Self {
        Self {
            rules,
            config,
            tenants: HashMap::new(),
            journal: None,
        }
    }

    /// Starts a batch: what [`Correlator::ingest`] changes from now on can be put back with
    /// [`Correlator::rollback`] (module documentation). A batch already started is
    /// committed first.
    pub fn begin(&mut self) {
        self.journal = Some(Journal::default());
    }

    /// Ends the batch, keeping its changes (they were stored).
    pub fn commit(&mut self) {
        self.journal = None;
    }

    /// Ends the batch, putting back what it changed (its alert changes could not be
    /// stored). Without a batch, does nothing.
    pub fn rollback(&mut self) {
        let Some(journal) = self.journal.take() else { return };
        for (tenant_id, undo) in journal.tenants {
            let Some((watermark, seq)) = undo.before else {
                self.tenants.remove(&tenant_id);
                continue;
            };
            let Some(t) = self.tenants.get_mut(&tenant_id) else {
                continue;
            };
            t.watermark = watermark;
            t.seq = seq;
            for ((ri, key), group) in undo.groups {
                let Some(groups) = t.groups.get_mut(ri) else { continue };
                match group {
                    Some(g) => {
                        groups.insert(key, g);
                    }
                    None => {
                        groups.remove(&key);
                    }
                }
            }
            // The batch's ids are the last ones remembered, in order. (Ids it pushed out of
            // the bounded memory stay forgotten: at worst a later duplicate of one of the
            // oldest is taken again.)
            for id in undo.seen_added.iter().rev() {
                if t.seen_order.back() == Some(id) {
                    t.seen_order.pop_back();
                }
                t.seen.remove(id);
            }
        }
        for (tenant, alert) in journal.closed {
            self.close_alert(&tenant, &alert);
        }
    }

    /// A correlator with the shipped rules.
    pub fn with_shipped_rules(config: CorrelatorConfig) -> Result<Self, RuleError> {
        Ok(Self::new(shipped_rules()?, config))
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Number of groups kept for `tenant` (for metrics and tests).
    pub fn group_count(&self, tenant: &str) -> usize {
        self.tenants.get(tenant).map_or(0, Tenant::group_count)
    }

    /// Forgets everything about `tenant`.
    pub fn forget_tenant(&mut self, tenant: &str) {
        self.tenants.remove(tenant);
    }

    /// Forgets the open alert `alert_id` of `tenant` (it was closed): the next story of its
    /// rule and entity opens a new alert. False when the correlator did not hold it.
    pub fn close_alert(&mut self, tenant: &str, alert_id: &str) -> bool {
        if let Some(j) = &mut self.journal {
            j.closed.push((tenant.into(), alert_id.into()));
        }
        let Some(t) = self.tenants.get_mut(tenant) else {
            return false;
        };
        for g in t.groups.iter_mut().flat_map(HashMap::values_mut) {
            if g.alert.as_ref().is_some_and(|a| a.id == alert_id) {
                g.alert = None;
                return true;
            }
        }
        false
    }

    /// Re-attaches a stored open alert (after a restart): events of its rule and entity are
    /// appended to it instead of starting a new story. `key` is the alert's
    /// [`NewAlert::key`], `last_event_at` the time of its latest event (the group expires a
    /// window and the lateness after it, as any other). False when `key` names no rule of
    /// this correlator.
    pub fn adopt_alert(&mut self, tenant: &str, key: &str, alert_id: &str, last_event_at: OffsetDateTime) -> bool {
        let Some((rule_name, entity_key)) = key.split_once('\u{1e}') else {
            return false;
        };
        let Some(ri) = self.rules.iter().position(|r| r.name == rule_name) else {
            return false;
        };
        let rules = self.rules.len();
        let t = self.tenants.entry(tenant.into()).or_default();
        t.groups.resize_with(rules, HashMap::new);
        let Some(groups) = t.groups.get_mut(ri) else {
            return false;
        };
        let group = groups.entry(entity_key.to_owned()).or_default();
        group.clear();
        group.alert = Some(OpenAlert::new(alert_id.into(), &[]));
        group.last_at = Some(group.last_at.map_or(last_event_at, |l| l.max(last_event_at)));
        true
    }

    /// Takes one event (its tenant is `event.tenant_id`) and returns the alert changes it
    /// causes, or [`TooLate`].
    pub fn ingest(&mut self, event: &SecurityEvent) -> Result<Vec<AlertChange>, TooLate> {
        let config = self.config;
        if let Some(j) = &mut self.journal
            && !j.tenants.contains_key(&event.tenant_id)
        {
            let prior = self.tenants.get(&event.tenant_id).map(|t| (t.watermark, t.seq));
            j.tenants.insert(
                event.tenant_id.clone(),
                TenantUndo {
                    before: prior,
                    groups: HashMap::new(),
                    seen_added: Vec::new(),
                },
            );
        }
        let mut undo = self.journal.as_mut().and_then(|j| j.tenants.get_mut(&event.tenant_id));
        let tenant = self.tenants.entry(event.tenant_id.clone()).or_default();
        tenant.groups.resize_with(self.rules.len(), HashMap::new);
        if tenant.seen.contains(&event.id) {
            return Ok(Vec::new());
        }
        let lateness = to_time(config.max_lateness);
        if let Some(w) = tenant.watermark
            && event.occurred_at < before(w, lateness)
        {
            return Err(TooLate {
                event_id: event.id.clone(),
            });
        }
        while tenant.seen_order.len() >= config.max_seen_ids_per_tenant.max(1) {
            let Some(old) = tenant.seen_order.pop_front() else {
                break;
            };
            tenant.seen.remove(&old);
        }
        tenant.seen.insert(event.id.clone());
        tenant.seen_order.push_back(event.id.clone());
        if let Some(u) = undo.as_deref_mut() {
            u.seen_added.push(event.id.clone());
        }
        let watermark = tenant.watermark.map_or(event.occurred_at, |w| w.max(event.occurred_at));
        tenant.watermark = Some(watermark);
        tenant.seq += 1;
        let seq = tenant.seq;
        let mut changes = Vec::new();
        let mut added_group = false;
        for (ri, rule) in self.rules.iter().enumerate() {
            let mask = rule.match_mask(event);
            if mask == 0 {
                continue;
            }
            let Some(key) = rule.entity_key(event) else { continue };
            let distinct = match &rule.pattern {
                Pattern::Threshold(Threshold { distinct: Some(f), .. }) => {
                    let mut v = String::new();
                    if !f.write_value(event, &mut v) {
                        continue;
                    }
                    Some(v)
                }
                _ => None,
            };
            let Some(groups) = tenant.groups.get_mut(ri) else {
                continue;
            };
            if let Some(u) = undo.as_deref_mut() {
                u.groups
                    .entry((ri, key.clone()))
                    .or_insert_with(|| groups.get(key.as_str()).cloned());
            }
            if !groups.contains_key(key.as_str()) {
                groups.insert(key.clone(), Group::default());
                added_group = true;
            }
            let Some(group) = groups.get_mut(key.as_str()) else {
                continue;
            };
            group.last_at = Some(group.last_at.map_or(event.occurred_at, |l| l.max(event.occurred_at)));
            if let Some(alert) = &mut group.alert {
                if alert.remember(&event.id, config.max_ids_per_alert) {
                    changes.push(AlertChange::EventsAdded {
                        tenant_id: event.tenant_id.clone(),
                        alert_id: alert.id.clone(),
                        event_ids: vec![event.id.clone()],
                        last_event_at: event.occurred_at,
                    });
                }
                continue;
            }
            // The same event again (a redelivery) has the same time: only the entries of that
            // time need a look.
            // Events mostly come in order: then the searches below are skipped.
            let in_order = group.entries.back().is_none_or(|b| b.at < event.occurred_at);
            let same_time = if in_order {
                group.entries.len()
            } else {
                group.entries.partition_point(|e| e.at < event.occurred_at)
            };
            let duplicate = group
                .entries
                .range(same_time..)
                .take_while(|e| e.at == event.occurred_at)
                .any(|e| e.id == event.id);
            if duplicate {
                continue;
            }
            // A distinct threshold needs only the latest event of each value (it keeps the
            // most future windows open), which bounds the work per event by the count of
            // values rather than of events.
            if let Some(v) = &distinct
                && let Some(pos) = group.entries.iter().position(|e| e.distinct.as_ref() == Some(v))
            {
                if group.entries.get(pos).is_some_and(|e| e.at >= event.occurred_at) {
                    continue;
                }
                if let Some(removed) = group.entries.remove(pos) {
                    group.first_steps = group.first_steps.saturating_sub(usize::from(removed.mask & 1 != 0));
                }
            }
            let entry = Entry {
                at: event.occurred_at,
                seq,
                id: event.id.clone(),
                mask,
                distinct,
                cluster_id: event.cluster_id.clone(),
            };
            let pos = if in_order {
                group.entries.len()
            } else {
                group
                    .entries
                    .partition_point(|e| (e.at, e.seq) <= (entry.at, entry.seq))
            };
            group.first_steps += usize::from(entry.mask & 1 != 0);
            group.entries.insert(pos, entry);
            // Sorted by time: the expired events are a prefix.
            let horizon = before(before(watermark, to_time(rule.window)), lateness);
            if group.entries.front().is_some_and(|f| f.at < horizon) {
                let expired = group.entries.partition_point(|e| e.at < horizon);
                group.drain_prefix(expired);
            }
            if matches!(rule.pattern, Pattern::Sequence(_)) {
                // Events before every first-step event can be part of a story only if a
                // first step arrives late, and earlier; past the lateness none can.
                let settled = before(watermark, lateness);
                let orphans = group
                    .entries
                    .iter()
                    .take_while(|e| e.mask & 1 == 0 && e.at < settled)
                    .count();
                group.drain_prefix(orphans);
            }
            if group.entries.len() > config.max_events_per_group {
                let excess = group.entries.len() - config.max_events_per_group;
                group.drain_prefix(excess);
            }
            let story = match &rule.pattern {
                Pattern::Sequence(_) if group.first_steps == 0 => None,
                // No story was complete before this event (a complete one opens an alert and
                // clears the group; dropping entries completes none), so a new one holds this
                // event; the latest event of a story matches its last step. A busy workload's
                // first steps (log-only admissions) then cost no search, which is quadratic
                // in the group's size.
                Pattern::Sequence(steps) if in_order && mask & last_step_bit(steps) == 0 => None,
                Pattern::Sequence(steps) => find_sequence(&group.entries, steps, to_time(rule.window)),
                Pattern::Threshold(t) => find_threshold(&group.entries, t, to_time(rule.window)),
            };
            let Some(story) = story else { continue };
            let picked: Vec<&Entry> = story.iter().filter_map(|&i| group.entries.get(i)).collect();
            let (Some(first), Some(last)) = (picked.first(), picked.last()) else {
                continue;
            };
            let key_text = format!("{}\u{1e}{key}", rule.name);
            let id = derived_id(&[event.tenant_id.as_bytes(), key_text.as_bytes(), first.id.as_bytes()]);
            let mut cluster_ids: Vec<CompactString> = Vec::new();
            for e in &picked {
                if !cluster_ids.contains(&e.cluster_id) {
                    cluster_ids.push(e.cluster_id.clone());
                }
            }
            let entity = rule
                .entity
                .iter()
                .map(|f| {
                    let mut v = String::new();
                    f.write_value(event, &mut v);
                    (*f, v)
                })
                .collect();
            let alert = NewAlert {
                id: id.clone(),
                tenant_id: event.tenant_id.clone(),
                rule: rule.name.clone(),
                key: key_text,
                title: rule.description.clone(),
                severity: rule.severity,
                event_ids: picked.iter().map(|e| e.id.clone()).collect(),
                cluster_ids,
                entity,
                first_event_at: first.at,
                last_event_at: last.at,
            };
            group.clear();
            group.alert = Some(OpenAlert::new(id, &alert.event_ids));
            changes.push(AlertChange::Opened(alert));
        }
        tenant.ingested_since_sweep += 1;
        if (added_group && tenant.group_count() > config.max_groups_per_tenant) || tenant.ingested_since_sweep >= 4096 {
            sweep(tenant, &self.rules, &config);
        }
        Ok(changes)
    }
}

/// Drops expired events and groups; when still over the cap, the least recently active tenth.
fn sweep(tenant: &mut Tenant, rules: &[Rule], config: &CorrelatorConfig) {
    tenant.ingested_since_sweep = 0;
    let Some(watermark) = tenant.watermark else { return };
    let lateness = to_time(config.max_lateness);
    for (ri, groups) in tenant.groups.iter_mut().enumerate() {
        let window = rules.get(ri).map_or(time::Duration::ZERO, |r| to_time(r.window));
        let horizon = before(before(watermark, window), lateness);
        groups.retain(|_, g| {
            let expired = g.entries.partition_point(|e| e.at < horizon);
            g.drain_prefix(expired);
            // An open alert idle past its window and lateness is forgotten too.
            g.last_at.is_some_and(|l| l >= horizon)
        });
    }
    let count = tenant.group_count();
    if count > config.max_groups_per_tenant {
        let mut by_age: Vec<(Option<OffsetDateTime>, usize, String)> = tenant
            .groups
            .iter()
            .enumerate()
            .flat_map(|(ri, groups)| groups.iter().map(move |(k, g)| (g.last_at, ri, k.clone())))
            .collect();
        by_age.sort_by_key(|a| a.0);
        let target = config.max_groups_per_tenant - config.max_groups_per_tenant / 10;
        for (_, ri, k) in by_age.into_iter().take(count.saturating_sub(target)) {
            if let Some(groups) = tenant.groups.get_mut(ri) {
                groups.remove(&k);
            }
        }
    }
}

/// The mask bit of a sequence's last step.
fn last_step_bit(steps: &[Step]) -> u32 {
    // Past the mask's width (rules have fewer steps), every event counts as a last step.
    u32::try_from(steps.len().saturating_sub(1))
        .ok()
        .and_then(|n| 1u32.checked_shl(n))
        .unwrap_or(u32::MAX)
}

/// The indexes of the earliest-completed sequence in `entries` (sorted by time), if any.
fn find_sequence(entries: &VecDeque<Entry>, steps: &[Step], window: time::Duration) -> Option<Vec<usize>> {
    for (start, first) in entries.iter().enumerate() {
        if first.mask & 1 == 0 {
            continue;
        }
        let deadline = after(first.at, window);
        let mut picked = Vec::new();
        let mut step = 0usize;
        let mut have = 0u32;
        for (i, e) in entries.range(start..).enumerate().map(|(k, e)| (start + k, e)) {
            if e.at > deadline {
                break;
            }
            let Some(s) = steps.get(step) else { break };
            if e.mask & (1 << step) != 0 {
                picked.push(i);
                have += 1;
                if have == s.count {
                    step += 1;
                    have = 0;
                    if step == steps.len() {
                        return Some(picked);
                    }
                }
            }
        }
    }
    None
}

/// The indexes of the first window of `entries` (sorted by time) that reaches the threshold.
fn find_threshold(entries: &VecDeque<Entry>, t: &Threshold, window: time::Duration) -> Option<Vec<usize>> {
    let need = usize::try_from(t.count).unwrap_or(usize::MAX);
    for (start, first) in entries.iter().enumerate() {
        let deadline = after(first.at, window);
        let mut picked = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for (i, e) in entries.range(start..).enumerate().map(|(k, e)| (start + k, e)) {
            if e.at > deadline {
                break;
            }
            match (&t.distinct, &e.distinct) {
                (Some(_), Some(v)) => {
                    if seen.contains(&v.as_str()) {
                        continue;
                    }
                    seen.push(v);
                }
                (Some(_), None) => continue,
                (None, _) => {}
            }
            picked.push(i);
            if picked.len() >= need {
                return Some(picked);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
