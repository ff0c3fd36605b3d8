//! In-memory Bloom filters of the transaction index's closed epochs, so
//! that [`Store::tx_location`](super::Store::tx_location) probes the
//! B-tree only in epochs that may hold the id (a lookup of an id that is
//! not stored, as a leader's check of each forwarded transaction, would
//! otherwise read one leaf per epoch).
//!
//! An epoch below the newest one in the index is closed: no later block
//! writes into it (a block's epoch is fixed by its position). A filter is
//! built from the epoch's keys the first time a lookup needs it, and is
//! only a cache: it says "absent" only for ids the epoch did not hold
//! when it was built. At most [`MAX_FILTERS`] epochs (the newest closed
//! ones) are filtered; older ones are probed directly.

use std::collections::BTreeMap;
use std::sync::Mutex;

use sensorchain_core::hash::Hash32;

/// Filtered epochs at most: 1,024 × 48 KiB (12 bits per transaction of an
/// epoch of 2^15) = 48 MiB, covering the newest 33.5M transactions (10M
/// transactions: 305 epochs, 14.3 MiB).
pub(super) const MAX_FILTERS: u32 = 1024;

/// Bits per id.
const BITS_PER_ID: usize = 12;

/// Hash functions per id (12 bits per id: ≈ 0.3 % false positives, so a
/// lookup of an absent id at 10M transactions probes about one epoch in
/// vain).
const K: u64 = 8;

/// One epoch's Bloom filter.
pub(super) struct Filter {
    words: Vec<u64>,
    /// `words.len() * 64`.
    bits: u64,
}

impl Filter {
    /// A filter for about `n` ids.
    pub(super) fn with_capacity(n: usize) -> Filter {
        let words = (n.max(16) * BITS_PER_ID).div_ceil(64);
        Filter {
            words: vec![0; words],
            bits: words as u64 * 64,
        }
    }

    /// The bit positions of `id` (ids are SHA-256 outputs: their words are
    /// independent and uniform; double hashing, then a multiply-shift
    /// reduction to the filter's size).
    fn positions(&self, id: &[u8; 32]) -> impl Iterator<Item = usize> + use<> {
        let w = |i: usize| u64::from_le_bytes(id[i..i + 8].try_into().unwrap_or_default());
        let (h1, h2, bits) = (w(0), w(8) | 1, self.bits);
        (0..K).map(move |i| {
            let h = h1.wrapping_add(i.wrapping_mul(h2));
            ((u128::from(h) * u128::from(bits)) >> 64) as usize
        })
    }

    /// Adds `id`.
    pub(super) fn insert(&mut self, id: &[u8; 32]) {
        for p in self.positions(id) {
            self.words[p / 64] |= 1 << (p % 64);
        }
    }

    /// False: `id` was never inserted.
    pub(super) fn may_contain(&self, id: &[u8; 32]) -> bool {
        self.positions(id)
            .all(|p| self.words[p / 64] & (1 << (p % 64)) != 0)
    }
}

/// The filters of a store's closed epochs.
#[derive(Default)]
pub(super) struct EpochFilters {
    by_epoch: Mutex<BTreeMap<u32, Filter>>,
}

impl EpochFilters {
    /// `Some(false)`: epoch `epoch` does not hold `id`; `Some(true)`: it
    /// may; `None`: no filter of it yet.
    pub(super) fn may_contain(&self, epoch: u32, id: &Hash32) -> Option<bool> {
        let m = self.by_epoch.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&epoch).map(|f| f.may_contain(&id.0))
    }

    /// Keeps `filter` for closed epoch `epoch`, dropping the oldest ones
    /// beyond [`MAX_FILTERS`].
    pub(super) fn insert(&self, epoch: u32, filter: Filter) {
        let mut m = self.by_epoch.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(epoch, filter);
        while m.len() > MAX_FILTERS as usize {
            m.pop_first();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensorchain_core::hash::sha256;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let id = |i: u32| sha256(&[&i.to_le_bytes()]).0;
        let mut f = Filter::with_capacity(10_000);
        for i in 0..10_000 {
            f.insert(&id(i));
        }
        assert!((0..10_000).all(|i| f.may_contain(&id(i))));
        let fp = (10_000..30_000).filter(|&i| f.may_contain(&id(i))).count();
        assert!(fp < 20_000 / 100, "{fp} false positives of 20,000");
        let filters = EpochFilters::default();
        assert_eq!(filters.may_contain(3, &Hash32(id(1))), None);
        filters.insert(3, f);
        assert_eq!(filters.may_contain(3, &Hash32(id(1))), Some(true));
        for e in 0..MAX_FILTERS + 5 {
            filters.insert(10 + e, Filter::with_capacity(1));
        }
        assert_eq!(
            filters.may_contain(3, &Hash32(id(1))),
            None,
            "oldest dropped"
        );
    }
}
