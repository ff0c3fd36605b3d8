//! The ledger: the proposer and the one validate-and-store path.
//!
//! Two threads, so that building block N+1 overlaps storing block N:
//!
//! * the **proposer** (`block-producer`) takes admitted transactions from
//!   the intake in arrival order, waits for each one's signature verdict,
//!   and cuts a block as soon as the committer is idle (group commit: the
//!   batch is whatever arrived while the previous block was being stored),
//!   or when `batch_max_txs` are waiting, or `batch_timeout` after the
//!   first; it builds each block on the state after the previous *proposed*
//!   block and leaves out what that state refuses;
//! * the **committer** (`block-committer`) validates each block with the
//!   core rule (`WorldState::apply_block_encoded`, as every gateway and the
//!   auditor apply it) on the stored state, stores it durably (with a state
//!   snapshot every `snapshot_every` blocks), publishes the new state and
//!   emits the outcome.
//!
//! Outcomes leave as [`LedgerEvent`]s to the reply registry, each with its
//! true reason: committed; refused by the rule (the proposer's or
//! validation's, for the transaction the rule names); not stored because
//! the store failed (the store's error, also for a block that was built on
//! a block that failed to store); `Busy` (resend) for a transaction that
//! was in a block validation refused for another reason or another
//! transaction. After any failure the proposer restarts from the stored
//! state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sensorchain_core::chain::{BuiltBlock, build_block_from_pool};
use sensorchain_core::hash::Hash32;
use sensorchain_core::permissions::Permissions;
use sensorchain_core::state::{BlockError, BlockErrorKind, SigCheck, TxRuleError, WorldState};
use sensorchain_core::tx::TxKind;

use super::ingest::Slot;
use super::replies::LedgerEvent;
use super::{NodeConfig, NodeEvent, Rejected, Shared, now_ms};
use crate::store::StoreError;

/// A block proposed on the speculative state, on its way to the store.
pub(super) struct Proposed {
    pub(super) built: BuiltBlock,
    /// The ids of the block's transactions, in block order.
    pub(super) tx_ids: Vec<Hash32>,
    pub(super) snapshot: bool,
    pub(super) started: Instant,
}

/// Runs the proposer on this thread (and the committer on its own) until
/// the intake closes.
pub(super) fn produce(inner: Arc<Shared>, rx: Receiver<Arc<Slot>>, cfg: NodeConfig) {
    let in_flight = Arc::new(InFlight::default());
    let failures = Arc::new(AtomicU64::new(0));
    // One block being stored and one waiting: enough to overlap the two.
    let (to_committer, blocks) = sync_channel::<Proposed>(1);
    let committer = {
        let (inner, in_flight, failures) = (inner.clone(), in_flight.clone(), failures.clone());
        std::thread::Builder::new()
            .name("block-committer".into())
            .spawn(move || {
                let mut c = Committer::default();
                for p in blocks {
                    if !c.commit(&inner, p) {
                        failures.fetch_add(1, Ordering::AcqRel);
                    }
                    in_flight.finish();
                }
            })
    };
    let committer = match committer {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cannot start the block committer: {e}");
            return;
        }
    };
    let mut since_snapshot = 0u64;
    let mut seen_failures = 0u64;
    let mut spec = inner.committed_state();
    let max = cfg.batch_max_txs.max(1);
    loop {
        let Ok(first) = rx.recv() else { break };
        let opened = Instant::now();
        let deadline = opened + cfg.batch_timeout;
        let linger_until = opened + cfg.batch_linger.min(cfg.batch_timeout);
        let mut batch = vec![first];
        let mut closed = false;
        // No wake-up per transaction: take what is queued, then sleep until
        // the store is idle (or the linger or the deadline is over) and take
        // what arrived meanwhile.
        loop {
            closed |= drain(&rx, &mut batch, max);
            if closed || batch.len() >= max {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if now < linger_until {
                std::thread::sleep(linger_until - now);
                continue;
            }
            if in_flight.wait_idle(deadline) {
                closed |= drain(&rx, &mut batch, max);
                break;
            }
        }
        inner.metrics.pending.dec_by(batch.len() as i64);
        // Only verified transactions go on (a bad signature has been
        // answered by the pool already).
        batch.retain(|s| s.wait_verified(&inner.verdicts));
        let f = failures.load(Ordering::Acquire);
        if f != seen_failures {
            // A block failed: what was built on it is void.
            seen_failures = f;
            in_flight.wait_idle(Instant::now() + Duration::from_secs(3600));
            spec = inner.committed_state();
        }
        if !spec.has(&inner.key.public(), Permissions::VALIDATE) {
            // A block before this one took VALIDATE from this gateway: a
            // block built now would fail validation. Nothing more can be
            // committed once it is stored; the node is stopping then (see
            // `Node::lost_validate`).
            inner.replies.resolve(LedgerEvent::Refused(
                batch
                    .iter()
                    .map(|s| (s.id, Rejected::ShuttingDown))
                    .collect(),
            ));
            if closed {
                break;
            }
            continue;
        }
        if batch.is_empty() {
            if closed {
                break;
            }
            continue;
        }
        since_snapshot += 1;
        let snapshot = since_snapshot >= cfg.snapshot_every;
        if snapshot {
            since_snapshot = 0;
        }
        let proposed = propose(&inner, &spec, batch, snapshot);
        if !proposed.built.block.txs.is_empty() {
            spec = Arc::new(proposed.built.state.clone());
        }
        in_flight.add();
        if to_committer.send(proposed).is_err() || closed {
            break;
        }
    }
    drop(to_committer);
    let _ = committer.join();
}

/// Moves what is queued into `batch`, up to `max`; true if the intake is
/// closed (the node is stopping).
fn drain(rx: &Receiver<Arc<Slot>>, batch: &mut Vec<Arc<Slot>>, max: usize) -> bool {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(p) => batch.push(p),
            Err(TryRecvError::Empty) => return false,
            Err(TryRecvError::Disconnected) => return true,
        }
    }
    false
}

/// Blocks handed to the committer and not finished yet; the committer
/// signals each one it finishes.
#[derive(Default)]
struct InFlight {
    n: Mutex<usize>,
    done: Condvar,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        self.n.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self) {
        *self.lock() += 1;
    }

    fn finish(&self) {
        let mut n = self.lock();
        *n = n.saturating_sub(1);
        self.done.notify_all();
    }

    /// Waits until no block is in flight (true) or `until` passes (false).
    fn wait_idle(&self, until: Instant) -> bool {
        let mut n = self.lock();
        while *n > 0 {
            let now = Instant::now();
            if now >= until {
                return false;
            }
            n = self
                .done
                .wait_timeout(n, until - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        true
    }
}

/// What the proposer answers for a transaction the state refuses.
fn refusal(e: TxRuleError) -> Rejected {
    match e {
        TxRuleError::BlockFull => Rejected::Busy,
        e => Rejected::Rule(e),
    }
}

/// Cuts a block from `batch` on `spec` (proposal: leaves out what the state
/// refuses, and emits their refusals).
pub(super) fn propose(
    inner: &Shared,
    spec: &WorldState,
    mut batch: Vec<Arc<Slot>>,
    snapshot: bool,
) -> Proposed {
    let started = Instant::now();
    // One signer's transactions in sequence order, whatever order concurrent
    // submitters reached the intake in (stable: otherwise arrival order).
    batch.sort_by_key(|s| (s.tx.body.signer, s.tx.body.sequence));
    let ids: Vec<Hash32> = batch.iter().map(|s| s.id).collect();
    let pool = batch
        .into_iter()
        .map(|s| match Arc::try_unwrap(s) {
            Ok(s) => (s.tx, s.encoded),
            Err(s) => (s.tx.clone(), s.encoded.clone()),
        })
        .collect();
    let built = build_block_from_pool(spec, &inner.key, pool, now_ms(), SigCheck::AlreadyVerified);
    if !built.rejected.is_empty() {
        inner.replies.resolve(LedgerEvent::Refused(
            built
                .rejected
                .iter()
                .map(|&(i, e)| (ids[i], refusal(e)))
                .collect(),
        ));
    }
    let tx_ids = built.kept.iter().map(|&i| ids[i]).collect();
    inner
        .metrics
        .block_build_seconds
        .observe(started.elapsed().as_secs_f64());
    Proposed {
        built,
        tx_ids,
        snapshot,
        started,
    }
}

/// The committer's memory of the last block it could not store.
#[derive(Default)]
pub(super) struct Committer {
    /// The hash of the last block that failed to store, its height and why:
    /// a block built on it cannot be stored either, for that reason.
    failed: Option<(Hash32, u64, String)>,
}

impl Committer {
    /// Validates and stores one proposed block and emits its outcome;
    /// false if it was not committed.
    pub(super) fn commit(&mut self, inner: &Shared, p: Proposed) -> bool {
        let Proposed {
            built,
            tx_ids,
            snapshot,
            started,
        } = p;
        let block = &built.block;
        if block.txs.is_empty() {
            return true;
        }
        let height = block.header.height;
        let hash = block.header.hash();
        if let Some((below, below_height, why)) = &self.failed
            && block.header.prev_hash == *below
        {
            // Built on a block that was never stored: its transactions are
            // not stored for the same reason.
            let why = format!(
                "not stored: it was proposed on block {below_height}, which could not be stored: {why}"
            );
            tracing::error!(height, txs = block.txs.len(), "{why}");
            let e = Rejected::Storage(why.clone());
            self.failed = Some((hash, height, why));
            inner.replies.resolve(LedgerEvent::Refused(
                tx_ids.into_iter().map(|id| (id, e.clone())).collect(),
            ));
            return false;
        }
        let stored_at = Instant::now();
        let committed = inner.committed_state();
        // Validation: the one rule, as every gateway and the auditor apply
        // it, on the stored state.
        let mut next = (*committed).clone();
        if let Err(e) =
            next.apply_block_encoded(block, &built.encoded, None, SigCheck::AlreadyVerified)
        {
            // The proposer checks what validation checks: this is a bug of
            // this gateway. Nothing was committed.
            tracing::error!(
                height,
                txs = block.txs.len(),
                "proposed block failed validation, nothing committed: {e}"
            );
            inner
                .replies
                .resolve(LedgerEvent::Refused(validation_refusals(&e, &tx_ids)));
            return false;
        }
        let snap = snapshot.then(|| next.snapshot());
        if let Err(e) = self::store_block(inner, &built, snap.as_deref()) {
            tracing::error!(
                height,
                txs = block.txs.len(),
                "cannot store block, nothing committed: {e}"
            );
            let why = e.to_string();
            self.failed = Some((hash, height, why.clone()));
            let e = Rejected::Storage(why);
            inner.replies.resolve(LedgerEvent::Refused(
                tx_ids.into_iter().map(|id| (id, e.clone())).collect(),
            ));
            return false;
        }
        self.failed = None;
        let key = inner.key.public();
        let lost = !next.has(&key, Permissions::VALIDATE);
        if let Ok(mut s) = inner.state.write() {
            *s = Arc::new(next);
        }
        if lost && inner.may_propose.swap(false, Ordering::AcqRel) {
            let why = format!(
                "block {height} took the validate permission from this gateway's key {key}: it can commit nothing more and stops. \
                 To run it again, grant it validate through a gateway that is a validator (sensorchain tx grant {key} validate --key ADMIN.key --api http://VALIDATOR-API)"
            );
            tracing::error!("{why}");
            inner.lost_validate.send_replace(Some(why));
        }
        let mut readings = 0u64;
        let mut changed = Vec::new();
        for tx in &block.txs {
            match &tx.body.kind {
                TxKind::Reading { .. } => readings += 1,
                TxKind::Grant { target, .. }
                | TxKind::Revoke { target, .. }
                | TxKind::SetRole { target, .. } => changed.push(*target),
                _ => {}
            }
        }
        let m = &inner.metrics;
        m.blocks_committed.inc();
        m.block_height.set(height as i64);
        m.txs_committed.inc_by(block.txs.len() as u64);
        m.readings_committed.inc_by(readings);
        m.block_store_seconds
            .observe(stored_at.elapsed().as_secs_f64());
        m.block_commit_seconds
            .observe(started.elapsed().as_secs_f64());
        // Events before answers: a revocation reaches the sessions no later
        // than its submitter learns it is committed.
        let _ = inner.events.send(NodeEvent::Block {
            height,
            hash,
            txs: block.txs.len(),
        });
        if !changed.is_empty() {
            let _ = inner.events.send(NodeEvent::PermissionsChanged(changed));
        }
        tracing::debug!(height, txs = block.txs.len(), "block committed");
        inner
            .replies
            .resolve(LedgerEvent::Committed { height, tx_ids });
        true
    }
}

/// Who learns what when validation refuses a proposed block: the
/// transaction the rule names gets that rule's refusal; every other one was
/// refused for nothing it did and may be resent (`Busy`).
pub(super) fn validation_refusals(e: &BlockError, tx_ids: &[Hash32]) -> Vec<(Hash32, Rejected)> {
    let culprit = match (e.kind, e.tx_index) {
        (BlockErrorKind::Tx(rule), Some(i)) => Some((i as usize, refusal(rule))),
        _ => None,
    };
    tx_ids
        .iter()
        .enumerate()
        .map(|(i, id)| match &culprit {
            Some((c, why)) if *c == i => (*id, why.clone()),
            _ => (*id, Rejected::Busy),
        })
        .collect()
}

/// Stores one validated block durably (with a snapshot if given).
fn store_block(
    inner: &Shared,
    built: &BuiltBlock,
    snapshot: Option<&[u8]>,
) -> Result<(), StoreError> {
    #[cfg(test)]
    if let Some(e) = inner.faults.store_failure() {
        return Err(e);
    }
    inner
        .store
        .commit_block(&built.block, &built.encoded, None, snapshot)
}

/// Faults a test injects into the ledger.
#[cfg(test)]
#[derive(Default)]
pub(super) struct Faults {
    /// The next this-many block stores fail.
    pub(super) fail_stores: std::sync::atomic::AtomicU32,
}

#[cfg(test)]
impl Faults {
    fn store_failure(&self) -> Option<StoreError> {
        self.fail_stores
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .ok()
            .map(|_| StoreError::Invalid("injected store failure (test)".into()))
    }
}
