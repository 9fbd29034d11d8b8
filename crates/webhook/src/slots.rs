//! Request slots by owner: at most `limit` requests in flight per bearer key and per peer
//! address, on top of the server-wide slots. One key or one address that trickles bodies
//! holds its own share only, never every slot.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

/// Counters of requests in flight per owner (a key, an address).
#[derive(Debug)]
pub(crate) struct SlotsBy<K: Eq + Hash + Clone> {
    limit: usize,
    held: Arc<Mutex<HashMap<K, usize>>>,
}

/// One request's slot; given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot<K: Eq + Hash + Clone> {
    owner: K,
    held: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Eq + Hash + Clone> SlotsBy<K> {
    /// At most `limit` slots per owner.
    pub(crate) fn new(limit: usize) -> SlotsBy<K> {
        SlotsBy {
            limit,
            held: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A slot for `owner`, or `None` when it holds `limit` already (the caller answers at once
    /// rather than queueing behind the owner's own requests).
    pub(crate) fn try_take(&self, owner: &K) -> Option<Slot<K>> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(owner.clone()).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(Slot {
            owner: owner.clone(),
            held: Arc::clone(&self.held),
        })
    }

    /// Owners holding a slot now (the map forgets an owner when its last slot is back).
    #[cfg(test)]
    pub(crate) fn owners(&self) -> usize {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl<K: Eq + Hash + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.owner) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.owner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn each_owner_holds_its_own_share_and_gives_it_back() {
        let slots = SlotsBy::new(2);
        let a1 = slots.try_take(&"a").unwrap();
        let _a2 = slots.try_take(&"a").unwrap();
        assert!(slots.try_take(&"a").is_none(), "a third slot for a");
        let b = slots.try_take(&"b").unwrap();
        drop(a1);
        assert!(slots.try_take(&"a").is_some(), "a slot given back is taken again");
        drop(b);
        assert_eq!(slots.owners(), 1, "b is forgotten once its last slot is back");
    }
}
