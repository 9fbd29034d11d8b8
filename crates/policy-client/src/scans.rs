//! Scan summaries per tenant and image digest, in memory: the kit's refreshing cache
//! ([`portcullis_kit::cache`]) keyed by (tenant, digest).
//!
//! Evaluation reads them synchronously through a [`ScanView`], which takes each digest it
//! is asked for from the cache once per view and records the digests it did not find. The
//! review then fetches those in one `GetScanSummaries` call (up to 256 digests each) under
//! the scan stage's deadline, stores the answers ([`Cache::insert`]) and evaluates again;
//! when that fetch fails the missing digests are *unavailable* (the cluster's failure mode
//! decides), never "unscanned". Entries are replaced by `scan.result` events (newest scan
//! wins); an entry older than the refresh interval (30 s) is served while the cache loads
//! it again in the background, and a failed refresh keeps what is held.

use std::cell::{OnceCell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_engine::scan::{
    CvssMetric, DigestSummaries, ScanResults, ScanSummary, ScanType, ScanUnavailable, Severity,
};
use portcullis_kit::cache::{Cache, CacheConfig, LoadAborted};
use portcullis_proto::common::v1 as pc;
use portcullis_proto::events::v1 as pe;
use portcullis_proto::policystore::v1 as pb;
use time::OffsetDateTime;

use crate::upstream::Upstream;

/// The most digests one `GetScanSummaries` call may name.
const MAX_DIGESTS_PER_CALL: usize = 256;

/// How long a background refresh of one digest may take.
const REFRESH_DEADLINE: Duration = Duration::from_secs(10);

/// The newest summary of each scan type of one digest.
type Entry = DigestSummaries;

/// The entry of one digest of a `GetScanSummaries` answer.
fn entry_of(item: &pb::DigestScanSummaries) -> Entry {
    let mut entry = Entry::default();
    for s in &item.summaries {
        if let Some((scan_type, summary)) = summary_of(s) {
            *entry.slot_mut(scan_type) = Some(summary);
        }
    }
    entry
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
    /// The digests one tenant keeps when the cache is full: a tenant holding more loses its
    /// own least recently used entries first, so a tenant reviewing endless new digests
    /// cannot push another tenant's summaries out (it may use more while there is room).
    pub max_per_tenant: usize,
}

impl Default for ScanCacheOptions {
    fn default() -> ScanCacheOptions {
        ScanCacheOptions {
            refresh_after: Duration::from_secs(30),
            max_entries: 200_000,
            max_per_tenant: 50_000,
        }
    }
}

/// Why summaries could not be fetched.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ScanFetchError(String);

impl From<LoadAborted> for ScanFetchError {
    fn from(e: LoadAborted) -> ScanFetchError {
        ScanFetchError(e.to_string())
    }
}

/// (tenant, digest).
type Key = (String, String);

/// The partition of a key: its tenant.
fn tenant_of(key: &Key) -> &str {
    &key.0
}

#[derive(Debug)]
struct Inner {
    upstream: Upstream,
    entries: Cache<Key, Arc<Entry>, ScanFetchError>,
}

/// The cache (cheap to clone).
#[derive(Debug, Clone)]
pub struct ScanCache {
    inner: Arc<Inner>,
}

/// Digests a view has looked up, each with its entry (`None`: not held): an append-only
/// store that hands out references while it grows (slots are set once, chunks never move).
#[derive(Default)]
struct Seen {
    slots: [OnceCell<(String, Option<Arc<Entry>>)>; 8],
    more: OnceCell<Box<Seen>>,
}

/// A view of one tenant's summaries for one evaluation; records what it lacked.
pub struct ScanView<'a> {
    cache: &'a ScanCache,
    tenant: &'a str,
    seen: Seen,
    /// Digests asked for and not held.
    missing: RefCell<Vec<String>>,
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

    /// The entry of `digest`: taken from the cache on the first ask, then from the view.
    fn entry(&self, digest: &str) -> Option<&Entry> {
        let mut seen = &self.seen;
        loop {
            for slot in &seen.slots {
                match slot.get() {
                    Some((d, entry)) if d == digest => return entry.as_deref(),
                    Some(_) => {}
                    None => {
                        let (_, entry) =
                            slot.get_or_init(|| (digest.to_owned(), self.cache.cached(self.tenant, digest)));
                        if entry.is_none() && self.unavailable.is_none() {
                            self.missing.borrow_mut().push(digest.to_owned());
                        }
                        return entry.as_deref();
                    }
                }
            }
            seen = seen.more.get_or_init(Box::default);
        }
    }
}

impl ScanResults for ScanView<'_> {
    fn latest(&self, digest: &str, scan_type: ScanType) -> Result<Option<&ScanSummary>, ScanUnavailable> {
        match self.entry(digest) {
            Some(entry) => Ok(entry.slot(scan_type).as_ref()),
            None => match self.unavailable {
                Some(why) => Err(ScanUnavailable(why.to_owned())),
                None => Ok(None),
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
        let config = CacheConfig {
            // No expiry: what is held serves however old while the store cannot be asked.
            ttl: Duration::MAX,
            refresh: options.refresh_after..=options.refresh_after,
            max_stale: Duration::MAX,
            unreachable: |_| true,
            gone: |_| false,
            negative_ttl: Duration::ZERO,
            max_entries: options.max_entries,
        };
        ScanCache {
            inner: Arc::new(Inner {
                upstream,
                entries: Cache::with_shares(config, tenant_of, options.max_per_tenant),
            }),
        }
    }

    /// Whether a summary of `tenant`'s `digest` is held ("no results" included), without
    /// using it.
    pub fn holds(&self, tenant: &str, digest: &str) -> bool {
        self.inner
            .entries
            .peek(&(tenant.to_owned(), digest.to_owned()))
            .is_some()
    }

    /// A view of `tenant`'s summaries. With `unavailable`, digests not held answer
    /// [`ScanUnavailable`] with that text.
    pub fn view<'a>(&'a self, tenant: &'a str, unavailable: Option<&'a str>) -> ScanView<'a> {
        ScanView {
            cache: self,
            tenant,
            seen: Seen::default(),
            missing: RefCell::new(Vec::new()),
            unavailable,
        }
    }

    /// The held entry of `digest` (refreshed in the background when due).
    fn cached(&self, tenant: &str, digest: &str) -> Option<Arc<Entry>> {
        let key = (tenant.to_owned(), digest.to_owned());
        self.inner.entries.get_cached(&key, || self.load(&key))
    }

    /// A fetch of one digest's summaries, for the cache's background refresh.
    fn load(&self, key: &Key) -> impl Future<Output = Result<Arc<Entry>, ScanFetchError>> + Send + 'static + use<> {
        let (upstream, (tenant, digest)) = (self.inner.upstream.clone(), key.clone());
        async move {
            let answer = upstream
                .scan_summaries(&tenant, vec![digest.clone()], REFRESH_DEADLINE)
                .await
                .map_err(|status| {
                    tracing::debug!(%tenant, error = %status, "refreshing scan summaries failed; keeping what is held");
                    ScanFetchError(format!("{}: {}", status.code(), status.message()))
                })?;
            let entry = answer
                .digests
                .iter()
                .find(|item| item.digest == digest)
                .map(entry_of)
                .unwrap_or_default();
            Ok(Arc::new(entry))
        }
    }

    /// How many digests are held, in all tenants.
    pub fn len(&self) -> usize {
        self.inner.entries.len()
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
            for item in &answer.digests {
                self.inner
                    .entries
                    .insert((tenant.to_owned(), item.digest.clone()), Arc::new(entry_of(item)));
            }
        }
        Ok(())
    }

    /// Applies a `scan.result` event: the newest scan of its digest and type wins.
    pub fn apply_event(&self, tenant: &str, stored: &pe::ScanResultStored) {
        let Some(summary) = stored.summary.as_ref() else {
            return;
        };
        let Some((scan_type, summary)) = summary_of(summary) else {
            return;
        };
        let key = (tenant.to_owned(), stored.digest.clone());
        // Only digests already held are updated: the others are fetched when first needed.
        let Some(held) = self.inner.entries.peek(&key) else {
            return;
        };
        if held
            .slot(scan_type)
            .as_ref()
            .is_none_or(|held| held.scanned_at <= summary.scanned_at)
        {
            let mut entry = Entry::clone(&held);
            *entry.slot_mut(scan_type) = Some(summary);
            self.inner.entries.insert(key, Arc::new(entry));
        }
    }

    /// Forgets everything of `tenant` (deleted), or everything when `None` (after a gap in
    /// the events: what is held is fetched again when next needed).
    pub fn clear(&self, tenant: Option<&str>) {
        match tenant {
            Some(t) => self.inner.entries.invalidate_where(|(held, _), _| held == t),
            None => self.inner.entries.invalidate_all(),
        }
    }

    /// Marks everything held as due for a refresh (after a gap in the events): it keeps
    /// serving and is fetched again in the background on its next use.
    pub fn expire_all(&self) {
        self.inner.entries.expire_all();
    }
}
