//! The counters the connectors update as they go, and the [`Report`] made from them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Distinct error lines kept (the first ones).
const MAX_ERRORS: usize = 10;

/// What a simulation sent and what came back.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Admission reviews sent (workload reviews and exec/attach CONNECTs), each counted once
    /// however many attempts it took.
    pub reviews_sent: u64,
    /// Reviews answered `allowed`.
    pub reviews_allowed: u64,
    /// Reviews answered `denied`.
    pub reviews_denied: u64,
    /// Reviews with no answer after every attempt (or refused).
    pub reviews_failed: u64,
    /// Extra attempts, on another admission replica, after a break or a replica going away.
    pub reviews_retried: u64,
    /// Reviews never sent: the in-flight limit was reached (the system answered slower than
    /// the rate asked for).
    pub reviews_not_sent: u64,
    /// Of the reviews sent, exec/attach CONNECTs.
    pub exec_sent: u64,
    /// Of those, denied.
    pub exec_denied: u64,
    /// Median review latency, microseconds, from the review's scheduled time (retries
    /// included).
    pub review_p50_us: u64,
    /// 99th percentile review latency, microseconds.
    pub review_p99_us: u64,
    /// Largest review latency, microseconds.
    pub review_max_us: u64,
    /// Pods of the inventory snapshots the continuous service acked without error.
    pub pods_synced: u64,
    /// Pods the continuous service reported as added or changed (0 for an unchanged
    /// snapshot on a re-run).
    pub pods_upserted: u64,
    /// Runtime events sent (each counted once however many attempts it took).
    pub events_sent: u64,
    /// Runtime events the telemetry service accepted.
    pub events_accepted: u64,
    /// Runtime events the telemetry service rejected or refused (with why in `errors`).
    pub events_rejected: u64,
    /// Runtime events with no answer after every attempt.
    pub events_failed: u64,
    /// Extra attempts of event batches after a break.
    pub events_retried: u64,
    /// Mitigations the telemetry service reported for the events.
    pub events_mitigations: u64,
    /// Distinct mitigation commands received on the command streams.
    pub commands_received: u64,
    /// Distinct commands acked (as done).
    pub commands_acked: u64,
    /// Commands received by kind (`isolate`, `terminate`, `restore`).
    pub commands_by_kind: BTreeMap<String, u64>,
    /// Commands received again (same id: treated as done, acked again).
    pub commands_repeated: u64,
    /// Command streams reopened after a break (another continuous replica when there are
    /// several).
    pub reconnects: u64,
    /// Wall time from the start of sending to the stop, milliseconds.
    pub elapsed_ms: u64,
    /// Per cluster.
    pub clusters: Vec<ClusterReport>,
    /// The first distinct failures (what made the run fail).
    pub errors: Vec<String>,
    /// The first distinct breaks that were retried (not failures).
    pub retry_reasons: Vec<String>,
}

impl Report {
    /// Whether nothing failed: every review answered, every event accepted, every command
    /// acked, no error.
    pub fn ok(&self) -> bool {
        self.reviews_failed == 0
            && self.reviews_not_sent == 0
            && self.events_failed == 0
            && self.events_rejected == 0
            && self.commands_acked == self.commands_received
            && self.errors.is_empty()
    }
}

/// One simulated cluster in a [`Report`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClusterReport {
    /// The cluster's name.
    pub name: String,
    /// Its id (what telemetry's `cluster:` search term takes).
    pub id: String,
    /// Reviews sent for it.
    pub reviews_sent: u64,
    /// Pods synced.
    pub pods_synced: u64,
    /// Runtime events sent: sequence numbers `0..events_sent` (see the crate documentation).
    pub events_sent: u64,
    /// Runtime events accepted.
    pub events_accepted: u64,
    /// Distinct commands received.
    pub commands_received: u64,
    /// Distinct commands acked.
    pub commands_acked: u64,
}

/// Per-cluster counters.
#[derive(Debug, Default)]
pub(crate) struct ClusterStats {
    pub(crate) reviews_sent: AtomicU64,
    pub(crate) pods_synced: AtomicU64,
    pub(crate) events_sent: AtomicU64,
    pub(crate) events_accepted: AtomicU64,
    /// Ids of the commands received, and of those acked.
    pub(crate) commands: Mutex<CommandIds>,
}

/// Ids of one cluster's commands.
#[derive(Debug, Default)]
pub(crate) struct CommandIds {
    pub(crate) received: HashSet<String>,
    pub(crate) acked: HashSet<String>,
}

/// Every counter of a simulation.
pub(crate) struct Stats {
    pub(crate) reviews_sent: AtomicU64,
    pub(crate) reviews_allowed: AtomicU64,
    pub(crate) reviews_denied: AtomicU64,
    pub(crate) reviews_failed: AtomicU64,
    pub(crate) reviews_retried: AtomicU64,
    pub(crate) reviews_not_sent: AtomicU64,
    pub(crate) exec_sent: AtomicU64,
    pub(crate) exec_denied: AtomicU64,
    pub(crate) pods_upserted: AtomicU64,
    pub(crate) events_rejected: AtomicU64,
    pub(crate) events_failed: AtomicU64,
    pub(crate) events_retried: AtomicU64,
    pub(crate) events_mitigations: AtomicU64,
    pub(crate) commands_repeated: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) by_kind: Mutex<BTreeMap<String, u64>>,
    pub(crate) latency: Mutex<Histogram<u64>>,
    pub(crate) errors: Mutex<Vec<String>>,
    pub(crate) retry_reasons: Mutex<Vec<String>>,
    pub(crate) clusters: Vec<(String, String, ClusterStats)>,
    /// When sending started, and when it stopped (set by `stop`).
    pub(crate) started: Mutex<Instant>,
    pub(crate) stopped: Mutex<Option<Instant>>,
}

impl Stats {
    /// Counters for `clusters` (`(name, id)` each).
    pub(crate) fn new(clusters: &[(String, String)]) -> Result<Stats, crate::SimulateError> {
        // 1 µs to 10 min, 3 significant digits (larger values are clamped).
        let latency = Histogram::new_with_bounds(1, 600_000_000, 3)
            .map_err(|e| crate::SimulateError::Config(format!("latency histogram: {e}")))?;
        Ok(Stats {
            reviews_sent: AtomicU64::new(0),
            reviews_allowed: AtomicU64::new(0),
            reviews_denied: AtomicU64::new(0),
            reviews_failed: AtomicU64::new(0),
            reviews_retried: AtomicU64::new(0),
            reviews_not_sent: AtomicU64::new(0),
            exec_sent: AtomicU64::new(0),
            exec_denied: AtomicU64::new(0),
            pods_upserted: AtomicU64::new(0),
            events_rejected: AtomicU64::new(0),
            events_failed: AtomicU64::new(0),
            events_retried: AtomicU64::new(0),
            events_mitigations: AtomicU64::new(0),
            commands_repeated: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            by_kind: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(latency),
            errors: Mutex::new(Vec::new()),
            retry_reasons: Mutex::new(Vec::new()),
            clusters: clusters
                .iter()
                .map(|(name, id)| (name.clone(), id.clone(), ClusterStats::default()))
                .collect(),
            started: Mutex::new(Instant::now()),
            stopped: Mutex::new(None),
        })
    }

    /// Cluster `index`'s counters.
    pub(crate) fn cluster(&self, index: usize) -> Option<&ClusterStats> {
        self.clusters.get(index).map(|(_, _, stats)| stats)
    }

    /// Records a failure (kept when among the first distinct ones).
    pub(crate) fn error(&self, line: String) {
        keep(&self.errors, line);
    }

    /// Records a break that was retried.
    pub(crate) fn retry_reason(&self, line: String) {
        keep(&self.retry_reasons, line);
    }

    /// Records one review's latency.
    pub(crate) fn latency(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        if let Ok(mut h) = self.latency.lock() {
            h.saturating_record(micros);
        }
    }

    /// The counters now.
    pub(crate) fn report(&self) -> Report {
        let (p50, p99, max) = match self.latency.lock() {
            Ok(h) if !h.is_empty() => (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max()),
            _ => (0, 0, 0),
        };
        let stopped = self.stopped.lock().ok().and_then(|s| *s).unwrap_or_else(Instant::now);
        let started = self.started.lock().map(|s| *s).unwrap_or(stopped);
        let mut report = Report {
            reviews_sent: self.reviews_sent.load(Relaxed),
            reviews_allowed: self.reviews_allowed.load(Relaxed),
            reviews_denied: self.reviews_denied.load(Relaxed),
            reviews_failed: self.reviews_failed.load(Relaxed),
            reviews_retried: self.reviews_retried.load(Relaxed),
            reviews_not_sent: self.reviews_not_sent.load(Relaxed),
            exec_sent: self.exec_sent.load(Relaxed),
            exec_denied: self.exec_denied.load(Relaxed),
            review_p50_us: p50,
            review_p99_us: p99,
            review_max_us: max,
            pods_upserted: self.pods_upserted.load(Relaxed),
            events_rejected: self.events_rejected.load(Relaxed),
            events_failed: self.events_failed.load(Relaxed),
            events_retried: self.events_retried.load(Relaxed),
            events_mitigations: self.events_mitigations.load(Relaxed),
            commands_by_kind: self.by_kind.lock().map(|m| m.clone()).unwrap_or_default(),
            commands_repeated: self.commands_repeated.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            elapsed_ms: u64::try_from(stopped.saturating_duration_since(started).as_millis()).unwrap_or(u64::MAX),
            errors: self.errors.lock().map(|e| e.clone()).unwrap_or_default(),
            retry_reasons: self.retry_reasons.lock().map(|e| e.clone()).unwrap_or_default(),
            ..Report::default()
        };
        for (name, id, c) in &self.clusters {
            let (received, acked) = c
                .commands
                .lock()
                .map(|ids| (ids.received.len() as u64, ids.acked.len() as u64))
                .unwrap_or_default();
            let cluster = ClusterReport {
                name: name.clone(),
                id: id.clone(),
                reviews_sent: c.reviews_sent.load(Relaxed),
                pods_synced: c.pods_synced.load(Relaxed),
                events_sent: c.events_sent.load(Relaxed),
                events_accepted: c.events_accepted.load(Relaxed),
                commands_received: received,
                commands_acked: acked,
            };
            report.pods_synced += cluster.pods_synced;
            report.events_sent += cluster.events_sent;
            report.events_accepted += cluster.events_accepted;
            report.commands_received += cluster.commands_received;
            report.commands_acked += cluster.commands_acked;
            report.clusters.push(cluster);
        }
        report
    }
}

fn keep(list: &Mutex<Vec<String>>, line: String) {
    if let Ok(mut list) = list.lock()
        && list.len() < MAX_ERRORS
        && !list.contains(&line)
    {
        list.push(line);
    }
}

impl Report {
    /// The report for people, a line per part: what was sent and what came back.
    pub fn summary(&self) -> String {
        let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
        let kinds = if self.commands_by_kind.is_empty() {
            String::new()
        } else {
            let parts: Vec<String> = self.commands_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
            format!(" ({})", parts.join(", "))
        };
        let mut lines = vec![
            format!(
                "reviews:    {} sent: {} allowed, {} denied, {} failed ({} retried, {} not sent); latency p50 {}, p99 {}, max {}",
                self.reviews_sent,
                self.reviews_allowed,
                self.reviews_denied,
                self.reviews_failed,
                self.reviews_retried,
                self.reviews_not_sent,
                ms(self.review_p50_us),
                ms(self.review_p99_us),
                ms(self.review_max_us),
            ),
            format!(
                "exec:       {} exec/attach sent, {} denied",
                self.exec_sent, self.exec_denied
            ),
            format!(
                "inventory:  {} pods synced ({} added or changed)",
                self.pods_synced, self.pods_upserted
            ),
            format!(
                "runtime:    {} events sent: {} accepted, {} rejected, {} failed ({} re-sent); {} mitigations",
                self.events_sent,
                self.events_accepted,
                self.events_rejected,
                self.events_failed,
                self.events_retried,
                self.events_mitigations
            ),
            format!(
                "commands:   {} received, {} acked{kinds}; {} repeated",
                self.commands_received, self.commands_acked, self.commands_repeated
            ),
            format!("reconnects: {}", self.reconnects),
            format!("elapsed:    {:.1} s", self.elapsed_ms as f64 / 1000.0),
        ];
        for r in &self.retry_reasons {
            lines.push(format!("retried:    {r}"));
        }
        if self.errors.is_empty() {
            lines.push("errors:     none".to_owned());
        }
        for e in &self.errors {
            lines.push(format!("error:      {e}"));
        }
        lines.push(
            if self.ok() {
                "result:     ok"
            } else {
                "result:     FAILED"
            }
            .to_owned(),
        );
        lines.join("\n")
    }
}
