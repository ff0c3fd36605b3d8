//! Ingest: what happens to a submission before the ledger sees it.
//!
//! In the caller's task (a link's, or the API's), in arrival order:
//! strict decoding (by the caller or [`Node::enqueue`](super::Node::enqueue)),
//! the signer check of a session, the core's own precheck
//! (`WorldState::precheck` with [`Precheck::Admission`], on the committed
//! state: no signature work for what the ledger would refuse), the
//! registration of a waiter ([`Replies`]), then the transaction takes its
//! place in the ledger's intake *and* goes to the verification pool.
//!
//! The **verification pool** is a fixed set of std threads (named
//! [`VERIFY_THREAD`]`-N`, one per core: the parallelism the tokio workers
//! gave it before), fed through a bounded queue: signature checks never
//! run on the async runtime, so they cannot delay a link's (or, later, a
//! consensus protocol's) timers. A full queue answers
//! [`Rejected::Busy`]. A signature that does not verify is answered
//! [`Rejected::BadSignature`] at once by the pool; the intake keeps arrival
//! order (one device's pipelined sequence numbers reach the proposer in
//! order), and the proposer takes a transaction only once its verdict is
//! in.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use sensorchain_core::hash::Hash32;
use sensorchain_core::state::{Precheck, SignatureCheck, TxRuleError};
use sensorchain_core::tx::Transaction;

use super::replies::{LedgerEvent, Replies};
use super::{Rejected, Shared};

/// Name prefix of the verification pool's threads.
pub const VERIFY_THREAD: &str = "sc-verify";

const PENDING: u8 = 0;
const VERIFIED: u8 = 1;
/// Refused (bad signature) or withdrawn (not queued after all): the
/// proposer skips it.
const DROPPED: u8 = 2;

/// One admitted transaction on its way to a block.
pub(super) struct Slot {
    pub(super) tx: Transaction,
    pub(super) encoded: Vec<u8>,
    pub(super) id: Hash32,
    verdict: AtomicU8,
}

impl Slot {
    /// A slot whose signature is taken as verified (tests of the ledger).
    #[cfg(test)]
    pub(super) fn verified(tx: Transaction, encoded: Vec<u8>) -> Arc<Slot> {
        Arc::new(Slot {
            id: Transaction::id_of_encoded(&encoded),
            tx,
            encoded,
            verdict: AtomicU8::new(VERIFIED),
        })
    }

    /// A transaction given back by a block the log refused: verified
    /// already.
    pub(super) fn requeued(tx: Transaction, encoded: Vec<u8>, id: Hash32) -> Arc<Slot> {
        Arc::new(Slot {
            id,
            tx,
            encoded,
            verdict: AtomicU8::new(VERIFIED),
        })
    }

    fn set(&self, v: u8, verdicts: &Verdicts) {
        self.verdict.store(v, Ordering::SeqCst);
        if verdicts.waiting.load(Ordering::SeqCst) {
            let _g = verdicts.lock();
            verdicts.ready.notify_all();
        }
    }

    /// True once verified (false: dropped), waiting for the verdict.
    pub(super) fn wait_verified(&self, verdicts: &Verdicts) -> bool {
        loop {
            match self.verdict.load(Ordering::SeqCst) {
                VERIFIED => return true,
                DROPPED => return false,
                _ => {}
            }
            let g = verdicts.lock();
            verdicts.waiting.store(true, Ordering::SeqCst);
            if self.verdict.load(Ordering::SeqCst) == PENDING {
                // the timeout only bounds a missed wake-up; verdicts notify
                let _ = verdicts.ready.wait_timeout(g, Duration::from_millis(50));
            }
            verdicts.waiting.store(false, Ordering::SeqCst);
        }
    }
}

/// Where the proposer waits for verdicts.
#[derive(Default)]
pub(super) struct Verdicts {
    lock: Mutex<()>,
    ready: Condvar,
    waiting: AtomicBool,
}

impl Verdicts {
    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Job {
    slot: Arc<Slot>,
    check: SignatureCheck,
}

/// The verification pool. Dropping it closes its queue and joins its
/// threads, after the jobs queued: no verification thread outlives the
/// node.
pub(super) struct VerifyPool {
    jobs: SyncSender<Job>,
    /// The threads' end of the queue (kept here too, so that a pool whose
    /// threads are gone fills up and answers busy).
    _queue: Arc<Mutex<Receiver<Job>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for VerifyPool {
    fn drop(&mut self) {
        // Close the queue (the threads' `recv` then fails once it is
        // empty), then wait for them.
        let (closed, _) = sync_channel(0);
        drop(std::mem::replace(&mut self.jobs, closed));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl VerifyPool {
    /// Starts `threads` verification threads (at least one, or nothing is
    /// ever verified) with a queue of `capacity`.
    pub(super) fn start(
        threads: usize,
        capacity: usize,
        replies: Arc<Replies>,
        verdicts: Arc<Verdicts>,
    ) -> anyhow::Result<VerifyPool> {
        let (jobs, rx) = sync_channel::<Job>(capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let mut pool = VerifyPool {
            jobs,
            _queue: rx.clone(),
            threads: Vec::with_capacity(threads),
        };
        for i in 0..threads {
            let (rx, replies, verdicts) = (rx.clone(), replies.clone(), verdicts.clone());
            let t = std::thread::Builder::new()
                .name(format!("{VERIFY_THREAD}-{i}"))
                .spawn(move || verify_loop(&rx, &replies, &verdicts))
                .map_err(|e| anyhow::anyhow!("cannot start verification thread {i}: {e}"))?;
            pool.threads.push(t);
        }
        Ok(pool)
    }
}

/// Jobs a verification thread takes from the queue at once: one lock and
/// at most one wake-up for several signatures (each ≈ 35 µs), while a short
/// queue still spreads over the threads.
const TAKE_AT_ONCE: usize = 8;

fn verify_loop(rx: &Mutex<Receiver<Job>>, replies: &Replies, verdicts: &Verdicts) {
    let mut jobs = Vec::with_capacity(TAKE_AT_ONCE);
    loop {
        {
            let Ok(r) = rx.lock() else { return };
            let Ok(first) = r.recv() else { return };
            jobs.push(first);
            while jobs.len() < TAKE_AT_ONCE {
                match r.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
        }
        for Job { slot, check } in jobs.drain(..) {
            // The one signature rule, once per transaction per gateway.
            match check.run(&slot.tx, &slot.encoded) {
                Ok(()) => slot.set(VERIFIED, verdicts),
                Err(_) => {
                    slot.set(DROPPED, verdicts);
                    replies.resolve(LedgerEvent::Refused(vec![(
                        slot.id,
                        Rejected::BadSignature,
                    )]));
                }
            }
        }
    }
}

/// The size of the pool: one thread per core.
pub(super) fn pool_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Admits one decoded transaction: the checks above, a waiter, the intake
/// and the pool. Returns where its outcome will arrive.
pub(super) fn admit(
    shared: &Shared,
    intake: &SyncSender<Arc<Slot>>,
    pool: &VerifyPool,
    tx: Transaction,
    encoded: Vec<u8>,
    session_identity: Option<sensorchain_core::identity::PublicKey>,
) -> Result<tokio::sync::oneshot::Receiver<super::replies::Outcome>, Rejected> {
    if !shared.may_propose.load(Ordering::Acquire) {
        // this gateway can commit nothing any more (it is stopping)
        return Err(Rejected::ShuttingDown);
    }
    if session_identity.is_some_and(|id| id != tx.body.signer) {
        return Err(Rejected::WrongSigner);
    }
    let state = shared.committed_state();
    // The core's own checks before the signature, on the committed state.
    state
        .precheck(&tx, Precheck::Admission)
        .map_err(|e| match e {
            TxRuleError::UnknownSigner => Rejected::UnknownSigner,
            e => Rejected::Rule(e),
        })?;
    let check = state
        .signature_check(&tx.body.signer)
        .map_err(|_| Rejected::UnknownSigner)?;
    drop(state);
    let id = Transaction::id_of_encoded(&encoded);
    let sequence = tx.body.sequence;
    let rx = shared.replies.register(id).map_err(|_| {
        // The very same transaction is waiting for its outcome: this copy
        // is the replay it would be once the first is applied.
        Rejected::Rule(TxRuleError::Replay {
            last: sequence,
            got: sequence,
        })
    })?;
    let slot = Arc::new(Slot {
        tx,
        encoded,
        id,
        verdict: AtomicU8::new(PENDING),
    });
    // The intake first (its order is arrival order), then the pool.
    match intake.try_send(slot.clone()) {
        Ok(()) => {}
        Err(e) => {
            shared.replies.cancel(&id);
            return Err(match e {
                TrySendError::Full(_) => Rejected::Busy,
                TrySendError::Disconnected(_) => Rejected::ShuttingDown,
            });
        }
    }
    shared.metrics.pending.inc();
    if let Err(e) = pool.jobs.try_send(Job {
        slot: slot.clone(),
        check,
    }) {
        // the proposer skips it
        slot.set(DROPPED, &shared.verdicts);
        shared.replies.cancel(&id);
        return Err(match e {
            TrySendError::Full(_) => Rejected::Busy,
            TrySendError::Disconnected(_) => Rejected::ShuttingDown,
        });
    }
    Ok(rx)
}
