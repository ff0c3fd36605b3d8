//! Transactions whose signature this gateway has already verified
//! ([`Verified`]), so that its state machine does not verify them again.
//!
//! Every gateway verifies every signature exactly once: a transaction that
//! reached it (from a sensor, the API or a forwarding peer) is verified by
//! its ingest; the proposer (on the leader) or the forwarder (on a
//! follower) then records the transaction's id here, and `apply` skips the
//! signatures it finds. A transaction id is the hash of the transaction's
//! exact bytes, signature included, so an id found here stands for the same
//! bytes that were verified, under this chain (ingest verifies with the
//! chain's id): skipping it cannot change a verdict. Everything else in a
//! block (whatever the leader built from other gateways' transactions) is
//! verified by `apply`.
//!
//! Bounded: at most [`Verified::capacity`] ids; the oldest are forgotten
//! first (a forgotten id only costs one more verification).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use sensorchain_core::hash::Hash32;

/// A bounded set of transaction ids whose signatures this gateway verified.
#[derive(Debug)]
pub struct Verified {
    inner: Mutex<Ids>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Ids {
    set: HashSet<Hash32>,
    order: VecDeque<Hash32>,
}

impl Verified {
    /// An empty set holding at most `capacity` ids (at least one).
    pub fn new(capacity: usize) -> Verified {
        Verified {
            inner: Mutex::new(Ids::default()),
            capacity: capacity.max(1),
        }
    }

    /// Most ids held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Ids held now.
    pub fn len(&self) -> usize {
        self.lock().set.len()
    }

    /// True if no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ids> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that the signatures of `ids` verified here.
    pub fn insert_all(&self, ids: impl IntoIterator<Item = Hash32>) {
        let mut g = self.lock();
        for id in ids {
            if g.set.insert(id) {
                g.order.push_back(id);
            }
        }
        while g.set.len() > self.capacity {
            match g.order.pop_front() {
                Some(old) => {
                    g.set.remove(&old);
                }
                None => break,
            }
        }
    }

    /// For each of `ids`, whether its signature verified here; the ids
    /// found are forgotten (a block applies once).
    pub fn take(&self, ids: &[Hash32]) -> Vec<bool> {
        let mut g = self.lock();
        // `order` keeps stale entries until they reach its front: it is
        // trimmed to the set's size when it grows past twice that.
        let found: Vec<bool> = ids.iter().map(|id| g.set.remove(id)).collect();
        if g.order.len() > 2 * g.set.len() + 1024 {
            let Ids { set, order } = &mut *g;
            order.retain(|id| set.contains(id));
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u8) -> Hash32 {
        Hash32([i; 32])
    }

    #[test]
    fn found_once_and_bounded() {
        let v = Verified::new(3);
        v.insert_all([id(1), id(2)]);
        assert_eq!(v.take(&[id(1), id(3)]), vec![true, false]);
        // taken: not found again
        assert_eq!(v.take(&[id(1)]), vec![false]);
        v.insert_all([id(3), id(4), id(5)]);
        // capacity 3: the oldest (2) is forgotten
        assert_eq!(v.len(), 3);
        assert_eq!(
            v.take(&[id(2), id(3), id(4), id(5)]),
            vec![false, true, true, true]
        );
        assert!(v.is_empty());
    }

    #[test]
    fn stale_order_entries_do_not_evict_live_ids() {
        let v = Verified::new(2);
        for i in 0..200u8 {
            v.insert_all([id(i)]);
            assert_eq!(v.take(&[id(i)]), vec![true]);
        }
        v.insert_all([id(250), id(251)]);
        assert_eq!(v.take(&[id(250), id(251)]), vec![true, true]);
    }
}
