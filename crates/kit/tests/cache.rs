//! The kit's refreshing cache, on tokio's paused clock (time moves only when told).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use portcullis_kit::cache::{Answer, Cache, CacheConfig, LoadAborted};
use tokio::sync::Semaphore;
use tokio::time::advance;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// The source could not be asked.
    Down,
    /// The source says there is no such thing.
    Gone,
    Aborted,
}

impl From<LoadAborted> for Failure {
    fn from(_: LoadAborted) -> Failure {
        Failure::Aborted
    }
}

const TTL: Duration = Duration::from_secs(10);

type Tested = Cache<&'static str, u32, Failure>;

fn config() -> CacheConfig<Failure> {
    CacheConfig {
        unreachable: |e| *e == Failure::Down,
        gone: |e| *e == Failure::Gone,
        ..CacheConfig::with_ttl(TTL, 100)
    }
}

/// A source stand-in: counts its loads and answers what `answer` holds; with a gate, each
/// load waits for a permit.
#[derive(Clone)]
struct Source {
    loads: Arc<AtomicUsize>,
    answer: Arc<std::sync::Mutex<Result<u32, Failure>>>,
    gate: Option<Arc<Semaphore>>,
}

impl Source {
    fn new(value: u32) -> Source {
        Source {
            loads: Arc::new(AtomicUsize::new(0)),
            answer: Arc::new(std::sync::Mutex::new(Ok(value))),
            gate: None,
        }
    }

    fn gated(value: u32) -> Source {
        Source {
            gate: Some(Arc::new(Semaphore::new(0))),
            ..Source::new(value)
        }
    }

    fn open(&self) {
        self.gate.as_ref().unwrap().add_permits(1000);
    }

    fn set(&self, answer: Result<u32, Failure>) {
        *self.answer.lock().unwrap() = answer;
    }

    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }

    fn load(&self) -> impl Future<Output = Result<u32, Failure>> + Send + 'static + use<> {
        let this = self.clone();
        this.loads.fetch_add(1, Ordering::SeqCst);
        async move {
            if let Some(gate) = &this.gate {
                gate.acquire().await.unwrap().forget();
            }
            this.answer.lock().unwrap().clone()
        }
    }
}

async fn get(cache: &Tested, key: &'static str, source: &Source) -> Result<u32, Failure> {
    cache.get(key, || source.load()).get().await
}

/// Lets spawned tasks run until `check` holds (time does not move).
async fn settle(what: &str, check: impl Fn() -> bool) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never happened: {what}");
}

#[tokio::test(start_paused = true)]
async fn concurrent_gets_share_one_load_which_completes_when_its_caller_gives_up() {
    let cache: Tested = Cache::new(config());
    let source = Source::gated(7);
    // The first caller gives up at once; its load goes on.
    let first = cache.get("k", || source.load());
    drop(first);
    let calls: Vec<_> = (0..10).map(|_| cache.get("k", || source.load()).get()).collect();
    source.open();
    for result in futures::future::join_all(calls).await {
        assert_eq!(result, Ok(7));
    }
    assert_eq!(source.loads(), 1);
    assert_eq!(cache.peek(&"k"), Some(7));
    assert!(cache.get("k", || source.load()).is_hit());
}

#[tokio::test(start_paused = true)]
async fn a_load_begun_before_an_invalidation_is_neither_stored_nor_joined() {
    let ways: [fn(&Tested); 3] = [
        |c| c.invalidate(&"k"),
        |c| c.invalidate_where(|_, _| false),
        |c| c.invalidate_all(),
    ];
    for invalidate in ways {
        let cache: Tested = Cache::new(config());
        let old = Source::gated(1);
        let before = tokio::spawn(cache.get("k", || old.load()).get());
        invalidate(&cache);
        let new = Source::new(2);
        assert_eq!(
            get(&cache, "k", &new).await,
            Ok(2),
            "a caller after it does not join the old load"
        );
        old.open();
        assert_eq!(before.await.unwrap(), Ok(1), "its own callers still get its answer");
        assert_eq!(
            get(&cache, "k", &old).await,
            Ok(2),
            "the old load did not overwrite the new entry"
        );
        assert_eq!(old.loads(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn an_entry_expires_after_its_ttl() {
    let cache: Tested = Cache::new(config());
    let source = Source::new(1);
    get(&cache, "k", &source).await.unwrap();
    source.set(Ok(2));
    advance(TTL - Duration::from_millis(1)).await;
    let answer = cache.get("k", || source.load());
    assert!(answer.is_hit());
    assert_eq!(answer.get().await, Ok(1), "served until the TTL");
    settle("the refresh it started", || cache.peek(&"k") == Some(2)).await;
    // A refreshed entry lives a whole TTL from its load; past it, the caller waits.
    advance(TTL).await;
    source.set(Ok(3));
    let answer = cache.get("k", || source.load());
    assert!(!answer.is_hit(), "expired: loaded and waited for");
    assert_eq!(answer.get().await, Ok(3));
}

#[tokio::test(start_paused = true)]
async fn a_stale_entry_serves_within_its_bound_while_the_source_is_unreachable() {
    let cache: Tested = Cache::new(CacheConfig {
        max_stale: Duration::from_secs(60),
        ..config()
    });
    let source = Source::new(1);
    get(&cache, "k", &source).await.unwrap();
    source.set(Err(Failure::Down));
    advance(Duration::from_secs(30)).await;
    assert_eq!(get(&cache, "k", &source).await, Ok(1), "past the TTL, within the bound");
    advance(Duration::from_secs(31)).await;
    assert_eq!(get(&cache, "k", &source).await, Err(Failure::Down), "past the bound");

    // An error that is not "unreachable" is never covered by a stale entry.
    let cache: Tested = Cache::new(CacheConfig {
        max_stale: Duration::from_secs(60),
        unreachable: |_| false,
        ..config()
    });
    let source = Source::new(1);
    get(&cache, "k", &source).await.unwrap();
    source.set(Err(Failure::Down));
    advance(Duration::from_secs(30)).await;
    assert_eq!(get(&cache, "k", &source).await, Err(Failure::Down));
}

#[tokio::test(start_paused = true)]
async fn a_gone_answer_is_cached_for_the_negative_ttl_only() {
    let cache: Tested = Cache::new(CacheConfig {
        negative_ttl: Duration::from_secs(2),
        ..config()
    });
    let source = Source::new(1);
    source.set(Err(Failure::Gone));
    assert_eq!(get(&cache, "k", &source).await, Err(Failure::Gone));
    assert_eq!(get(&cache, "k", &source).await, Err(Failure::Gone));
    assert_eq!(source.loads(), 1, "the refusal is served from the cache");
    advance(Duration::from_secs(2)).await;
    source.set(Ok(5));
    assert_eq!(get(&cache, "k", &source).await, Ok(5));
    assert_eq!(source.loads(), 2);

    // Off: every call asks; a gone entry leaves the cache.
    let cache: Tested = Cache::new(config());
    let source = Source::new(1);
    get(&cache, "k", &source).await.unwrap();
    advance(TTL).await;
    source.set(Err(Failure::Gone));
    assert_eq!(get(&cache, "k", &source).await, Err(Failure::Gone));
    assert_eq!(get(&cache, "k", &source).await, Err(Failure::Gone));
    assert_eq!(source.loads(), 3);
    assert!(cache.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_size_bound_is_respected_and_the_newest_entries_kept() {
    let cache: Cache<String, u32, Failure> = Cache::new(CacheConfig::with_ttl(TTL, 10));
    for i in 0..50 {
        cache.get(format!("k{i}"), || async move { Ok(i) }).get().await.unwrap();
        advance(Duration::from_millis(1)).await;
        assert!(cache.len() <= 10, "{} entries", cache.len());
    }
    assert_eq!(cache.peek(&"k49".to_owned()), Some(49));
    assert_eq!(cache.peek(&"k0".to_owned()), None);
}

#[tokio::test(start_paused = true)]
async fn an_entry_in_use_is_refreshed_in_the_background_and_hits_never_wait() {
    let cache: Tested = Cache::new(CacheConfig {
        refresh: Duration::from_secs(5)..=Duration::from_secs(8),
        ..config()
    });
    get(&cache, "k", &Source::new(1)).await.unwrap();
    let source = Source::gated(2);
    advance(Duration::from_secs(4)).await;
    assert!(cache.get("k", || source.load()).is_hit());
    assert_eq!(source.loads(), 0, "before the refresh point: no load");
    advance(Duration::from_secs(4)).await;
    for _ in 0..5 {
        // The load is held at its gate: hits keep answering the old value at once.
        let answer = cache.get("k", || source.load());
        assert!(answer.is_hit());
        assert_eq!(answer.get().await, Ok(1));
    }
    assert_eq!(source.loads(), 1, "one background load, however many callers");
    source.open();
    settle("the background load landing", || cache.peek(&"k") == Some(2)).await;
    assert!(matches!(cache.get("k", || source.load()), Answer::Ready(2)));
}

#[tokio::test(start_paused = true)]
async fn refresh_where_reloads_matching_entries_while_the_old_values_serve() {
    let cache: Tested = Cache::new(config());
    let source = Source::new(1);
    get(&cache, "a", &source).await.unwrap();
    get(&cache, "b", &source).await.unwrap();
    let newer = Source::gated(2);
    cache.refresh_where(|k, _| *k == "a", |_| newer.load());
    assert_eq!(newer.loads(), 1);
    assert!(matches!(cache.get("a", || newer.load()), Answer::Ready(1)));
    newer.open();
    settle("the refresh landing", || cache.peek(&"a") == Some(2)).await;
    assert_eq!(cache.peek(&"b"), Some(1));
    // invalidate_where drops only the matching entries.
    cache.invalidate_where(|_, v| *v == 2);
    assert_eq!((cache.peek(&"a"), cache.peek(&"b")), (None, Some(1)));
}

#[tokio::test(start_paused = true)]
async fn a_zero_ttl_turns_the_cache_off() {
    let cache: Tested = Cache::new(CacheConfig::with_ttl(Duration::ZERO, 10));
    let source = Source::new(1);
    for _ in 0..3 {
        get(&cache, "k", &source).await.unwrap();
    }
    assert_eq!(source.loads(), 3);
    assert!(cache.is_empty());
}

#[tokio::test(start_paused = true)]
async fn insert_fills_without_a_load_and_expire_all_refreshes_on_next_use() {
    let cache: Tested = Cache::new(config());
    let source = Source::gated(2);
    // A batch load (or an event) fills keys at once; they hit without loading.
    cache.insert("a", 1);
    cache.insert("b", 1);
    assert!(matches!(cache.get("a", || source.load()), Answer::Ready(1)));
    assert_eq!(source.loads(), 0);
    // A load in flight when a newer value is inserted is not stored.
    let flight = cache.get("c", || source.load());
    cache.insert("c", 3);
    source.open();
    assert_eq!(flight.get().await, Ok(2));
    assert_eq!(cache.peek(&"c"), Some(3));
    // Expired: the old value serves at once and is loaded again in the background.
    cache.expire_all();
    let again = Source::new(5);
    assert!(matches!(cache.get("a", || again.load()), Answer::Ready(1)));
    assert_eq!(again.loads(), 1);
    settle("the refresh landing", || cache.peek(&"a") == Some(5)).await;
    assert_eq!(cache.peek(&"b"), Some(1), "untouched entries keep their value");
}

type Shared = Cache<(String, u32), u32, Failure>;

fn tenant_of(key: &(String, u32)) -> &str {
    &key.0
}

/// Tenant `quiet` keeps 4 entries; tenant `noisy` then inserts 200 distinct keys into a
/// cache of 20 with a share of 8 each.
async fn noisy_neighbour(cache: &Shared) {
    for i in 0..4 {
        cache.insert(("quiet".to_owned(), i), i);
        advance(Duration::from_millis(1)).await;
    }
    for i in 0..200 {
        cache.insert(("noisy".to_owned(), i), i);
        advance(Duration::from_millis(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_tenant_over_its_share_evicts_its_own_entries_not_anothers() {
    let cache: Shared = Cache::with_shares(CacheConfig::with_ttl(TTL, 20), tenant_of, 8);
    noisy_neighbour(&cache).await;
    for i in 0..4 {
        assert_eq!(
            cache.peek(&("quiet".to_owned(), i)),
            Some(i),
            "quiet entry {i} was evicted"
        );
    }
    assert!(cache.len() <= 21, "the bound holds: {}", cache.len());
    // The noisy tenant's newest entries are the ones it kept.
    assert_eq!(cache.peek(&("noisy".to_owned(), 199)), Some(199));
    assert_eq!(cache.peek(&("noisy".to_owned(), 0)), None);

    // Without shares the same flood evicts the quiet tenant's older entries: the share is
    // what keeps them.
    let unshared: Shared = Cache::new(CacheConfig::with_ttl(TTL, 20));
    noisy_neighbour(&unshared).await;
    assert!((0..4).all(|i| unshared.peek(&("quiet".to_owned(), i)).is_none()));
}

#[tokio::test(start_paused = true)]
async fn a_tenant_may_use_more_than_its_share_while_nobody_else_needs_the_room() {
    let cache: Shared = Cache::with_shares(CacheConfig::with_ttl(TTL, 20), tenant_of, 8);
    for i in 0..20 {
        cache.insert(("alone".to_owned(), i), i);
        advance(Duration::from_millis(1)).await;
    }
    assert_eq!(cache.len(), 20);
    // Over the bound, with only partitions over their share: the oldest go, as without shares.
    cache.insert(("alone".to_owned(), 20), 20);
    assert!(cache.len() <= 20, "{}", cache.len());
    assert_eq!(cache.peek(&("alone".to_owned(), 20)), Some(20));
    assert_eq!(cache.peek(&("alone".to_owned(), 0)), None);
}
