//! Scan summaries per tenant and image digest, in memory.
//!
//! Evaluation reads them synchronously through a [`ScanView`], which records the digests
//! it did not find. The review then fetches those in one `GetScanSummaries` call under the
//! scan stage's deadline and evaluates again; when that fetch fails the missing digests are
//! *unavailable* (the cluster's failure mode decides), never "unscanned". Entries are
//! replaced by `scan.result` events (newest scan wins) and, like policies, an entry older than
//! the refresh interval (30 s) is served while it is fetched again in the background.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use portcullis_engine::scan::{CvssMetric, ScanResults, ScanSummary, ScanType, ScanUnavailable, Severity};
use portcullis_proto::common::v1 as pc;
use portcullis_proto::events::v1 as pe;
use time::OffsetDateTime;

use crate::upstream::Upstream;

/// The most digests one `GetScanSummaries` call may name.
const MAX_DIGESTS_PER_CALL: usize = 256;

/// The newest summary of each scan type of one digest.
#[derive(Debug, Clone)]
struct Entry {
    vulnerability: Option<ScanSummary>,
    malware: Option<ScanSummary>,
    secret: Option<ScanSummary>,
    fetched: Instant,
}

impl Entry {
    fn empty() -> Entry {
        Entry {
            vulnerability: None,
            malware: None,
            secret: None,
            fetched: Instant::now(),
        }
    }

    fn slot(&self, scan_type: ScanType) -> &Option<ScanSummary> {
        match scan_type {
            ScanType::Vulnerability => &self.vulnerability,
            ScanType::Malware => &self.malware,
            ScanType::Secret => &self.secret,
        }
    }

    fn slot_mut(&mut self, scan_type: ScanType) -> &mut Option<ScanSummary> {
        match scan_type {
            ScanType::Vulnerability => &mut self.vulnerability,
            ScanType::Malware => &mut self.malware,
            ScanType::Secret => &mut self.secret,
        }
    }
}

/// Sizing and timing of the scan cache.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanCacheOptions {
    /// An entry older than this is fetched again (in the background) on its next use.
    #[serde(with = "humantime_serde")]
    pub refresh_after: Duration,
    /// At most this many digests in all tenants.
    pub max_entries: usize,
}

impl Default for ScanCacheOptions {
    fn default() -> ScanCacheOptions {
        ScanCacheOptions {
            refresh_after: Duration::from_secs(30),
            max_entries: 200_000,
        }
    }
}

type Map = HashMap<String, HashMap<String, Entry>>;

#[derive(Debug)]
struct Inner {
    upstream: Upstream,
    options: ScanCacheOptions,
    map: RwLock<Map>,
    /// (tenant, digest) fetches in flight in the background.
    refreshing: Mutex<HashSet<(String, String)>>,
}

/// The cache (cheap to clone).
#[derive(Debug, Clone)]
pub struct ScanCache {
    inner: Arc<Inner>,
}

/// A read-only view of one tenant's summaries for one evaluation; records what it lacked.
pub struct ScanView<'a> {
    guard: RwLockReadGuard<'a, Map>,
    tenant: &'a str,
    refresh_after: Duration,
    /// Digests asked for and not held.
    missing: RefCell<Vec<String>>,
    /// Digests held but due for a refresh.
    stale: RefCell<Vec<String>>,
    /// When set, digests not held are unavailable (their fetch failed) rather than missing.
    unavailable: Option<&'a str>,
}

impl ScanView<'_> {
    /// The digests evaluation asked for that were not held (each once).
    pub fn missing(&self) -> Vec<String> {
        let mut m = self.missing.borrow().clone();
        m.sort_unstable();
        m.dedup();
        m
    }

    /// The digests held but due for a refresh (each once).
    pub fn stale(&self) -> Vec<String> {
        let mut m = self.stale.borrow().clone();
        m.sort_unstable();
        m.dedup();
        m
    }
}

impl ScanResults for ScanView<'_> {
    fn latest(&self, digest: &str, scan_type: ScanType) -> Result<Option<&ScanSummary>, ScanUnavailable> {
        match self.guard.get(self.tenant).and_then(|t| t.get(digest)) {
            Some(entry) => {
                if entry.fetched.elapsed() >= self.refresh_after {
                    self.stale.borrow_mut().push(digest.to_owned());
                }
                Ok(entry.slot(scan_type).as_ref())
            }
            None => match self.unavailable {
                Some(why) => Err(ScanUnavailable(why.to_owned())),
                None => {
                    self.missing.borrow_mut().push(digest.to_owned());
                    Ok(None)
                }
            },
        }
    }
}

fn severity_of(value: i32) -> Option<Severity> {
    match pc::Severity::try_from(value).ok()? {
        pc::Severity::Unspecified => None,
        pc::Severity::None => Some(Severity::None),
        pc::Severity::Unknown => Some(Severity::Unknown),
        pc::Severity::Negligible => Some(Severity::Negligible),
        pc::Severity::Low => Some(Severity::Low),
        pc::Severity::Medium => Some(Severity::Medium),
        pc::Severity::High => Some(Severity::High),
        pc::Severity::Critical => Some(Severity::Critical),
    }
}

fn scan_type_of(value: i32) -> Option<ScanType> {
    match pc::ScanType::try_from(value).ok()? {
        pc::ScanType::Vulnerability => Some(ScanType::Vulnerability),
        pc::ScanType::Malware => Some(ScanType::Malware),
        pc::ScanType::Secret => Some(ScanType::Secret),
        pc::ScanType::Unspecified => None,
    }
}

fn metric_of(value: i32) -> Option<CvssMetric> {
    match pc::CvssMetric::try_from(value).ok()? {
        pc::CvssMetric::AttackVector => Some(CvssMetric::AttackVector),
        pc::CvssMetric::AttackComplexity => Some(CvssMetric::AttackComplexity),
        pc::CvssMetric::Availability => Some(CvssMetric::Availability),
        pc::CvssMetric::Unspecified => None,
    }
}

/// The engine's summary of a protobuf one; `None` when it names no scan type.
fn summary_of(s: &pc::ScanSummary) -> Option<(ScanType, ScanSummary)> {
    let scan_type = scan_type_of(s.scan_type)?;
    let scanned_at = s
        .scanned_at
        .as_ref()
        .and_then(|t| {
            OffsetDateTime::from_unix_timestamp(t.seconds)
                .ok()
                .map(|at| at + time::Duration::nanoseconds(i64::from(t.nanos)))
        })
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let cvss = s
        .cvss
        .iter()
        .filter_map(|c| Some((metric_of(c.metric)?, c.value.as_str(), severity_of(c.max_severity)?)));
    let findings = usize::try_from(s.findings).unwrap_or(usize::MAX);
    Some((
        scan_type,
        ScanSummary::from_parts(scanned_at, findings, severity_of(s.max_severity), cvss),
    ))
}

impl ScanCache {
    /// An empty cache filled from `upstream`.
    pub fn new(upstream: Upstream, options: ScanCacheOptions) -> ScanCache {
        ScanCache {
            inner: Arc::new(Inner {
                upstream,
                options,
                map: RwLock::new(HashMap::new()),
                refreshing: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// A view of `tenant`'s summaries. Holds a read lock: drop it before awaiting anything.
    /// With `unavailable`, digests not held answer [`ScanUnavailable`] with that text.
    pub fn view<'a>(&'a self, tenant: &'a str, unavailable: Option<&'a str>) -> ScanView<'a> {
        ScanView {
            guard: self.inner.map.read().unwrap_or_else(PoisonError::into_inner),
            tenant,
            refresh_after: self.inner.options.refresh_after,
            missing: RefCell::new(Vec::new()),
            stale: RefCell::new(Vec::new()),
            unavailable,
        }
    }

    /// How many digests are held, in all tenants.
    pub fn len(&self) -> usize {
        self.inner
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(HashMap::len)
            .sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fetches `digests` of `tenant` (waiting at most `deadline`) and stores what the policy
    /// store says, "no results" included. An error means nothing is known of them.
    pub async fn fetch(&self, tenant: &str, digests: Vec<String>, deadline: Duration) -> Result<(), String> {
        let started = Instant::now();
        for chunk in digests.chunks(MAX_DIGESTS_PER_CALL) {
            let left = deadline.saturating_sub(started.elapsed());
            let call = self.inner.upstream.scan_summaries(tenant, chunk.to_vec(), left);
            let answer = match tokio::time::timeout(left, call).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(status)) => return Err(format!("{}: {}", status.code(), status.message())),
                Err(_) => return Err(format!("no answer within {deadline:?}")),
            };
            let mut map = self.inner.map.write().unwrap_or_else(PoisonError::into_inner);
            self.make_room(&mut map);
            let per_tenant = map.entry(tenant.to_owned()).or_default();
            for item in answer.digests {
                let mut entry = Entry::empty();
                for s in &item.summaries {
                    if let Some((scan_type, summary)) = summary_of(s) {
                        *entry.slot_mut(scan_type) = Some(summary);
                    }
                }
                per_tenant.insert(item.digest, entry);
            }
        }
        Ok(())
    }

    /// Fetches `digests` again in the background (each at most once at a time); failures
    /// keep what is held.
    pub fn refresh_in_background(&self, tenant: &str, digests: Vec<String>) {
        let digests: Vec<String> = {
            let mut refreshing = self.inner.refreshing.lock().unwrap_or_else(PoisonError::into_inner);
            digests
                .into_iter()
                .filter(|d| refreshing.insert((tenant.to_owned(), d.clone())))
                .collect()
        };
        if digests.is_empty() {
            return;
        }
        let this = self.clone();
        let tenant = tenant.to_owned();
        tokio::spawn(async move {
            if let Err(e) = this.fetch(&tenant, digests.clone(), Duration::from_secs(10)).await {
                tracing::debug!(%tenant, error = %e, "refreshing scan summaries failed; keeping what is held");
                // Try again on a later use, not on every review.
                let mut map = this.inner.map.write().unwrap_or_else(PoisonError::into_inner);
                if let Some(per_tenant) = map.get_mut(&tenant) {
                    for d in &digests {
                        if let Some(entry) = per_tenant.get_mut(d) {
                            entry.fetched = Instant::now();
                        }
                    }
                }
            }
            let mut refreshing = this.inner.refreshing.lock().unwrap_or_else(PoisonError::into_inner);
            for d in digests {
                refreshing.remove(&(tenant.clone(), d));
            }
        });
    }

    /// Applies a `scan.result` event: the newest scan of its digest and type wins.
    pub fn apply_event(&self, tenant: &str, stored: &pe::ScanResultStored) {
        let Some(summary) = stored.summary.as_ref() else {
            return;
        };
        let Some((scan_type, summary)) = summary_of(summary) else {
            return;
        };
        let mut map = self.inner.map.write().unwrap_or_else(PoisonError::into_inner);
        // Only digests already held are updated: the others are fetched when first needed.
        let Some(entry) = map.get_mut(tenant).and_then(|t| t.get_mut(&stored.digest)) else {
            return;
        };
        let slot = entry.slot_mut(scan_type);
        if slot.as_ref().is_none_or(|held| held.scanned_at <= summary.scanned_at) {
            *slot = Some(summary);
        }
    }

    /// Forgets everything of `tenant` (deleted), or everything when `None` (after a gap in
    /// the events: what is held is fetched again when next needed).
    pub fn clear(&self, tenant: Option<&str>) {
        let mut map = self.inner.map.write().unwrap_or_else(PoisonError::into_inner);
        match tenant {
            Some(t) => {
                map.remove(t);
            }
            None => map.clear(),
        }
    }

    /// Marks everything held as due for a refresh (after a gap in the events): it keeps
    /// serving and is fetched again in the background on its next use.
    pub fn expire_all(&self) {
        let due = Instant::now().checked_sub(self.inner.options.refresh_after);
        let mut map = self.inner.map.write().unwrap_or_else(PoisonError::into_inner);
        for per in map.values_mut() {
            for entry in per.values_mut() {
                match due {
                    Some(at) => entry.fetched = at,
                    None => entry.fetched = Instant::now(),
                }
            }
        }
    }

    fn make_room(&self, map: &mut Map) {
        let total: usize = map.values().map(HashMap::len).sum();
        if total < self.inner.options.max_entries {
            return;
        }
        // Over the bound: drop the oldest tenth.
        let mut ages: Vec<(Instant, String, String)> = map
            .iter()
            .flat_map(|(t, per)| per.iter().map(move |(d, e)| (e.fetched, t.clone(), d.clone())))
            .collect();
        ages.sort_unstable_by_key(|(at, _, _)| *at);
        for (_, t, d) in ages.into_iter().take(self.inner.options.max_entries / 10 + 1) {
            if let Some(per) = map.get_mut(&t) {
                per.remove(&d);
            }
        }
        map.retain(|_, per| !per.is_empty());
    }
}
