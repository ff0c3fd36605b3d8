//! The reply registry: who waits for which transaction's outcome.
//!
//! Ingest registers one waiter per accepted transaction, keyed by the
//! transaction id; the ledger emits [`LedgerEvent`]s ("committed at height
//! H: these ids", "refused: this id, this reason") and the registry
//! resolves the waiters. Nothing of the reply travels with the block, so
//! what "acknowledged" means (today: durably stored by this gateway; under
//! consensus: certified by a quorum) is decided by which events the ledger
//! emits, not by ingest.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Mutex;

use sensorchain_core::hash::Hash32;
use tokio::sync::oneshot;

use super::{Committed, Rejected};

/// The outcome a submitter waits for.
pub(super) type Outcome = Result<Committed, Rejected>;

/// What the ledger decided about transactions it was given.
#[derive(Debug)]
pub(super) enum LedgerEvent {
    /// These transactions are committed, in this order, at `height`.
    Committed {
        /// The block's height.
        height: u64,
        /// Their ids, by index in the block.
        tx_ids: Vec<Hash32>,
    },
    /// These transactions are not committed, each for its reason.
    Refused(Vec<(Hash32, Rejected)>),
}

/// The transaction is already waiting for its outcome (the same bytes were
/// submitted again before the first copy was decided).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AlreadyPending;

/// Waiters by transaction id.
#[derive(Default)]
pub(super) struct Replies {
    waiting: Mutex<HashMap<Hash32, oneshot::Sender<Outcome>>>,
}

impl Replies {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Hash32, oneshot::Sender<Outcome>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a waiter for `id`.
    pub(super) fn register(
        &self,
        id: Hash32,
    ) -> Result<oneshot::Receiver<Outcome>, AlreadyPending> {
        match self.lock().entry(id) {
            Entry::Occupied(_) => Err(AlreadyPending),
            Entry::Vacant(v) => {
                let (tx, rx) = oneshot::channel();
                v.insert(tx);
                Ok(rx)
            }
        }
    }

    /// Forgets the waiter of `id` (ingest could not queue it after all).
    pub(super) fn cancel(&self, id: &Hash32) {
        self.lock().remove(id);
    }

    /// Whether someone still waits for `id`'s outcome.
    pub(super) fn is_waiting(&self, id: &Hash32) -> bool {
        self.lock().contains_key(id)
    }

    /// Number of transactions waiting.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Resolves the waiters an event decides (outside the lock).
    pub(super) fn resolve(&self, event: LedgerEvent) {
        let decided: Vec<(oneshot::Sender<Outcome>, Outcome)> = {
            let mut w = self.lock();
            match event {
                LedgerEvent::Committed { height, tx_ids } => tx_ids
                    .into_iter()
                    .enumerate()
                    .filter_map(|(index, tx_id)| {
                        let reply = w.remove(&tx_id)?;
                        Some((
                            reply,
                            Ok(Committed {
                                height,
                                index: index as u32,
                                tx_id,
                            }),
                        ))
                    })
                    .collect(),
                LedgerEvent::Refused(refused) => refused
                    .into_iter()
                    .filter_map(|(id, why)| Some((w.remove(&id)?, Err(why))))
                    .collect(),
            }
        };
        for (reply, outcome) in decided {
            // a submitter that stopped waiting is not an error
            let _ = reply.send(outcome);
        }
    }
}
