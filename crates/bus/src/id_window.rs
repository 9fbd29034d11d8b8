//! The event ids the in-process bus remembers for its duplicate window.
//!
//! Two generations of fixed-size tables: ids go into the current one; when it is full, or
//! its oldest id has left the window, it becomes the previous one and the old previous
//! table, emptied, takes its place. Nothing is ever removed one by one, so no table fills
//! with tombstones and none is ever rehashed. A single table of the 100,000 newest string
//! ids, forgetting the oldest at every publish, filled with tombstones and then rehashed
//! every key in one step: 20–30 ms at 10,000 events/s, under the bus lock, while every
//! review waited (BENCHMARKS.md, "Admission service").
//!
//! An id is kept as two 64-bit keyed hashes (SipHash with random keys, fresh for each bus):
//! no string to allocate per event, nothing to hash again when a table is searched. Two
//! different ids are taken for one only if both hashes collide, about 1 in 2^128 per pair.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::time::Duration;

use tokio::time::Instant;

/// An event id as remembered: `hash` places it in a table, `check` tells ids with the same
/// `hash` apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IdKey {
    hash: u64,
    check: u64,
}

impl Hash for IdKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Passes an [`IdKey`]'s hash through: it already is a keyed hash of the id.
#[derive(Debug, Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (by `IdKey`); this keeps the hasher correct for any key.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type Table = HashMap<IdKey, (u64, Instant), BuildHasherDefault<PassThrough>>;

/// One generation: its ids with their sequences and times, and its oldest and newest time.
#[derive(Debug)]
struct Generation {
    ids: Table,
    oldest: Option<Instant>,
    newest: Option<Instant>,
}

impl Generation {
    fn with_capacity(capacity: usize) -> Generation {
        Generation {
            ids: Table::with_capacity_and_hasher(capacity, BuildHasherDefault::default()),
            oldest: None,
            newest: None,
        }
    }

    /// Empties it, keeping its table's memory.
    fn clear(&mut self) {
        self.ids.clear();
        self.oldest = None;
        self.newest = None;
    }
}

/// The ids published inside the duplicate window: at least the `per_generation` newest
/// (when they are inside the window), at most twice that many.
#[derive(Debug)]
pub(crate) struct IdWindow {
    window: Duration,
    per_generation: usize,
    current: Generation,
    previous: Generation,
    keys: (RandomState, RandomState),
}

/// Each table is allocated up front for at most this many ids (5 MB); a larger one grows
/// while it first fills, and keeps its size when it is emptied for reuse.
const PRESIZED_IDS: usize = 131_072;

impl IdWindow {
    /// Remembers ids for `window`, and at least the `per_generation` newest of them
    /// (`usize::MAX`: no count limit, only the window; nothing is allocated up front).
    pub(crate) fn new(window: Duration, per_generation: usize) -> IdWindow {
        let per_generation = per_generation.max(1);
        let capacity = if per_generation == usize::MAX {
            0
        } else {
            per_generation.min(PRESIZED_IDS)
        };
        IdWindow {
            window,
            per_generation,
            current: Generation::with_capacity(capacity),
            previous: Generation::with_capacity(capacity),
            keys: (RandomState::new(), RandomState::new()),
        }
    }

    fn key(&self, id: &str) -> IdKey {
        IdKey {
            hash: self.keys.0.hash_one(id),
            check: self.keys.1.hash_one(id),
        }
    }

    /// Whether a time `at` has left the window (no `Instant + Duration`, which would panic
    /// on overflow with a huge window).
    fn expired(&self, at: Option<Instant>, now: Instant) -> bool {
        at.is_some_and(|at| now.saturating_duration_since(at) >= self.window)
    }

    /// Makes the current generation the previous one (whose table, emptied, becomes the
    /// current one).
    fn rotate(&mut self) {
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current.clear();
    }

    /// Forgets the generations that hold nothing inside the window any more.
    fn expire(&mut self, now: Instant) {
        if self.expired(self.previous.newest, now) {
            self.previous.clear();
        }
        if self.expired(self.current.oldest, now) {
            // A generation spans at most the window, so the previous one (entirely older
            // than the current one's oldest id) has already expired and may be dropped.
            self.rotate();
            if self.expired(self.previous.newest, now) {
                self.previous.clear();
            }
        }
    }

    /// If `id` was published inside the window, the sequence it was stored under (and
    /// nothing is remembered); otherwise remembers it as stored under `sequence` at `now`
    /// and returns `None`. One expiry pass and one hashing of the id for both.
    pub(crate) fn check_and_remember(&mut self, id: &str, sequence: u64, now: Instant) -> Option<u64> {
        self.expire(now);
        let key = self.key(id);
        if let Some(earlier) = self.lookup(key, now) {
            return Some(earlier);
        }
        self.store(key, sequence, now);
        None
    }

    /// The sequence `key` was stored under, if inside the window.
    fn lookup(&self, key: IdKey, now: Instant) -> Option<u64> {
        [&self.current, &self.previous]
            .into_iter()
            .find_map(|generation| generation.ids.get(&key))
            .filter(|(_, at)| !self.expired(Some(*at), now))
            .map(|(sequence, _)| *sequence)
    }

    /// Remembers `key` as stored under `sequence` at `now`.
    fn store(&mut self, key: IdKey, sequence: u64, now: Instant) {
        if self.current.ids.len() >= self.per_generation {
            self.rotate();
        }
        self.current.ids.insert(key, (sequence, now));
        self.current.oldest.get_or_insert(now);
        self.current.newest = Some(now);
    }

    /// [`Self::lookup`] of an id at `now`, after the expiry pass (tests).
    #[cfg(test)]
    fn get(&mut self, id: &str, now: Instant) -> Option<u64> {
        self.expire(now);
        self.lookup(self.key(id), now)
    }

    /// [`Self::store`] of an id at `now`, after the expiry pass (tests).
    #[cfg(test)]
    fn insert(&mut self, id: &str, sequence: u64, now: Instant) {
        self.expire(now);
        self.store(self.key(id), sequence, now);
    }

    /// How many ids are remembered (both generations, expired ones included until dropped).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.ids.len() + self.previous.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(120);

    #[test]
    fn a_published_id_is_found_with_its_sequence() {
        let now = Instant::now();
        let mut ids = IdWindow::new(WINDOW, 10);
        ids.insert("a", 1, now);
        ids.insert("b", 2, now);
        assert_eq!(ids.get("a", now), Some(1));
        assert_eq!(ids.get("b", now), Some(2));
        assert_eq!(ids.get("c", now), None);
        assert_eq!(ids.get("", now), None);
    }

    #[test]
    fn the_newest_ids_are_kept_and_at_most_twice_as_many() {
        let now = Instant::now();
        let mut ids = IdWindow::new(WINDOW, 3);
        for sequence in 1..=100_u64 {
            ids.insert(&format!("id-{sequence}"), sequence, now);
            assert!(ids.len() <= 6, "{} ids after {sequence}", ids.len());
            // The three newest are always there.
            for back in 0..3_u64.min(sequence) {
                let newer = sequence - back;
                assert_eq!(ids.get(&format!("id-{newer}"), now), Some(newer), "after {sequence}");
            }
        }
        // 100 = 3 * 33 + 1: the current generation holds id-100, the previous id-97..id-99.
        assert_eq!(ids.get("id-96", now), None);
        assert_eq!(ids.get("id-97", now), Some(97));
    }

    #[test]
    fn an_id_older_than_the_window_is_not_found() {
        let start = Instant::now();
        let mut ids = IdWindow::new(Duration::from_secs(10), 1000);
        ids.insert("old", 1, start);
        ids.insert("newer", 2, start + Duration::from_secs(6));
        assert_eq!(ids.get("old", start + Duration::from_secs(9)), Some(1));
        // Ten seconds on, "old" is out of the window, "newer" (six seconds younger) is not.
        let later = start + Duration::from_secs(10);
        assert_eq!(ids.get("old", later), None);
        assert_eq!(ids.get("newer", later), Some(2));
        assert_eq!(ids.get("newer", start + Duration::from_secs(16)), None);
    }

    #[test]
    fn expired_generations_are_dropped() {
        let start = Instant::now();
        let mut ids = IdWindow::new(Duration::from_secs(10), 1000);
        for i in 0..50_u64 {
            ids.insert(&format!("early-{i}"), i, start);
        }
        // The current generation's oldest id leaves the window: it becomes the previous one,
        // which is then dropped too, as everything in it is older than the window.
        let later = start + Duration::from_secs(11);
        ids.insert("late", 50, later);
        assert_eq!(ids.len(), 1);
        assert_eq!(ids.get("late", later), Some(50));
        assert_eq!(ids.get("early-0", later), None);
    }

    #[test]
    fn a_generation_spans_at_most_the_window() {
        let start = Instant::now();
        let mut ids = IdWindow::new(Duration::from_secs(10), 1000);
        // One id a second for 30 s: every id stays findable for the whole window and is
        // gone after it.
        for second in 0..30_u64 {
            let now = start + Duration::from_secs(second);
            ids.insert(&format!("s{second}"), second, now);
            for back in 0..10_u64.min(second + 1) {
                let earlier = second - back;
                assert_eq!(ids.get(&format!("s{earlier}"), now), Some(earlier), "at {second} s");
            }
            if second >= 10 {
                assert_eq!(ids.get(&format!("s{}", second - 10), now), None, "at {second} s");
            }
            assert!(ids.len() <= 21, "{} ids at {second} s", ids.len());
        }
    }

    #[test]
    fn check_and_remember_stores_a_new_id_and_refuses_a_known_one() {
        let start = Instant::now();
        let mut ids = IdWindow::new(Duration::from_secs(10), 10);
        assert_eq!(ids.check_and_remember("a", 1, start), None);
        assert_eq!(ids.check_and_remember("a", 2, start), Some(1));
        assert_eq!(ids.len(), 1);
        // Past the window "a" is new again, under its new sequence.
        let later = start + Duration::from_secs(10);
        assert_eq!(ids.check_and_remember("a", 3, later), None);
        assert_eq!(ids.check_and_remember("a", 4, later), Some(3));
    }

    #[test]
    fn without_a_count_limit_only_the_window_forgets() {
        let start = Instant::now();
        let mut ids = IdWindow::new(Duration::from_secs(10), usize::MAX);
        for i in 0..5_000_u64 {
            ids.insert(&format!("id-{i}"), i, start);
        }
        assert_eq!(ids.len(), 5_000);
        assert_eq!(ids.get("id-0", start + Duration::from_secs(9)), Some(0));
        assert_eq!(ids.get("id-4999", start + Duration::from_secs(10)), None);
    }

    #[test]
    fn the_longest_window_does_not_overflow() {
        let now = Instant::now();
        let mut ids = IdWindow::new(Duration::MAX, 10);
        ids.insert("a", 1, now);
        assert_eq!(ids.get("a", now + Duration::from_secs(3600)), Some(1));
    }

    #[test]
    fn unequal_ids_with_equal_hashes_are_told_apart() {
        let now = Instant::now();
        let mut ids = IdWindow::new(WINDOW, 10);
        // Two keys with the same table hash but different checks: both stored, each found.
        let a = IdKey { hash: 7, check: 1 };
        let b = IdKey { hash: 7, check: 2 };
        ids.current.ids.insert(a, (1, now));
        ids.current.ids.insert(b, (2, now));
        assert_eq!(ids.current.ids.get(&a), Some(&(1, now)));
        assert_eq!(ids.current.ids.get(&b), Some(&(2, now)));
    }
}
