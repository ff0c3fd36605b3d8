//! The ledger's proposer: blocks cut from the verified transactions and
//! handed to the log (Raft), where the state machine applies them with the
//! one validate-and-store path on every member (`cluster::state_machine`).
//!
//! The **proposer** (`block-producer` thread) takes admitted transactions
//! from the intake in arrival order, waits for each one's signature
//! verdict, and cuts a block as soon as the log is idle (group commit: the
//! batch is whatever arrived while the previous block was being written and
//! applied), or when `batch_max_txs` are waiting, or `batch_timeout` after
//! the first; it builds each block on the state after the previous
//! *proposed* block (at most two in the pipeline) and leaves out what that
//! state refuses, answering each with the rule's reason.
//!
//! Only the leader proposes. A block the log refuses (a stale leader's, or
//! one built on a block that failed) gives its transactions back: the
//! proposer builds again on the applied state, so each is committed or
//! refused with its own true reason (after [`MAX_REQUEUES`] times, busy:
//! resend). If Raft stops (a storage failure), every transaction waiting
//! and every later one is refused `storage_failed` with the reason, until
//! the node is stopped and started again on its store: by hand, or by the
//! supervisor that `sensorchain run` runs once the disk takes writes again
//! ([`crate::app::heal`]).
//!
//! Submitters are answered by the follower (`consensus::follow`) when their
//! block is final: acknowledged means certified by a quorum.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sensorchain_core::chain::{BuiltBlock, build_block_from_pool};
use sensorchain_core::hash::Hash32;
use sensorchain_core::permissions::Permissions;
use sensorchain_core::state::{Precheck, SigCheck, TxRuleError, WorldState};

use super::consensus::Written;
use super::ingest::Slot;
use super::replies::LedgerEvent;
use super::{NodeConfig, Rejected, Shared, now_ms};
use sensorchain_core::identity::PublicKey;
use sensorchain_core::peer::ForwardAnswer;

/// A block proposed on the speculative state, on its way to the log.
pub(super) struct Proposed {
    pub(super) built: BuiltBlock,
    /// The ids of the block's transactions, in block order.
    pub(super) tx_ids: Vec<Hash32>,
    pub(super) started: Instant,
}

/// Blocks in the log's pipeline at once (one being applied, one waiting).
const PIPELINE: usize = 2;

/// Times a transaction goes back to the proposer after its block was
/// refused before it is answered busy (resend later).
const MAX_REQUEUES: u8 = 3;

/// How long the proposer waits for this gateway to lead before it answers
/// what it holds busy.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// How long a signer's forwarding task stays without work before it ends.
const FORWARDER_IDLE: Duration = Duration::from_secs(30);

/// Attempts to forward one transaction before its submitter is told busy.
const MAX_FORWARD_TRIES: u32 = 8;

/// The first wait between attempts to forward (growing by itself).
const FORWARD_RETRY: Duration = Duration::from_millis(100);

/// How long a stopping node waits for its last applied block to be final.
const FINAL_AT_STOP: Duration = Duration::from_secs(5);

/// How long a forwarded transaction's submitter waits for its block to be
/// final here before it is told busy (resend): the leader lost it (a leader
/// change) or refused it for a reason this gateway's state does not show.
const FORWARD_FINAL_WAIT: Duration = Duration::from_secs(30);

/// How long after it was forwarded a transaction not yet in this gateway's
/// chain is checked again against the committed state: if the state now
/// refuses it (most often a replay: another copy of its sequence number
/// reached the leader first, which then left this one out), its submitter
/// is told that reason at once instead of busy after [`FORWARD_FINAL_WAIT`].
const FORWARD_RECHECK_AFTER: Duration = Duration::from_secs(1);

/// How often the proposer looks for transactions given back while the
/// intake is quiet.
const REQUEUE_POLL: Duration = Duration::from_millis(50);

/// A signer's queue of transactions to forward.
type ForwardQueue = tokio::sync::mpsc::UnboundedSender<Arc<Slot>>;

/// What the log's writes share with the proposer.
#[derive(Default)]
pub(super) struct Pipeline {
    in_flight: InFlight,
    /// Blocks that did not make it into the chain since the start.
    failures: AtomicU64,
    /// Transactions of refused blocks, to propose again.
    requeue: Mutex<Vec<Arc<Slot>>>,
    /// Raft stopped: why (every submission is then refused with it).
    stopped: Mutex<Option<String>>,
    /// Transactions forwarded to the leader and taken there, not yet
    /// answered here, in the order they are to be looked at again
    /// (`expire_forwarded`).
    forwarded: Mutex<std::collections::VecDeque<Forwarded>>,
    /// Each signer's forwarding task (its generation and its queue).
    forwarders: Mutex<HashMap<PublicKey, (u64, ForwardQueue)>>,
    next_forwarder: AtomicU64,
}

/// A transaction the leader took from this gateway, not yet final here.
struct Forwarded {
    /// When the leader took it.
    at: Instant,
    /// When it is looked at next (the queue is in this order).
    next_check: Instant,
    slot: Arc<Slot>,
}

/// Runs the proposer on this thread until the intake closes, then stops
/// Raft (owning its runtime) and joins the outcome follower.
pub(super) fn produce(
    inner: Arc<Shared>,
    rx: Receiver<Arc<Slot>>,
    cfg: NodeConfig,
    runtime: tokio::runtime::Runtime,
    follower: std::thread::JoinHandle<()>,
) {
    let pipe = inner.pipeline.clone();
    propose_loop(&inner, &rx, &cfg, &pipe);
    drop(rx);
    pipe.in_flight
        .wait_idle(Instant::now() + Duration::from_secs(60));
    // What was applied is answered when final: give the last blocks'
    // certificates a moment (they follow within a round trip).
    if inner.metrics.blocks_committed.get() > 0 {
        // a block applied in this run: its certificate is on its way
        let height = inner.committed_state().next_height().saturating_sub(1);
        inner
            .consensus
            .wait_final(&inner.finalized, height, FINAL_AT_STOP);
    }
    inner.consensus.shutdown(&runtime);
    let _ = follower.join();
    // Dropping the runtime ends Raft's tasks; the state machine and the log
    // are released with them.
    drop(runtime);
}

fn propose_loop(
    inner: &Arc<Shared>,
    rx: &Receiver<Arc<Slot>>,
    cfg: &NodeConfig,
    pipe: &Arc<Pipeline>,
) {
    let mut seen_failures = 0u64;
    let mut leading = false;
    let mut spec = inner.committed_state();
    let mut requeues: HashMap<Hash32, u8> = HashMap::new();
    let max = cfg.batch_max_txs.max(1);
    loop {
        // also on a quiet follower: forwarded transactions not final in time
        expire_forwarded(inner, pipe);
        let mut batch = take_requeued(inner, pipe, &mut requeues);
        let mut closed = false;
        if batch.is_empty() {
            match rx.recv_timeout(REQUEUE_POLL) {
                Ok(first) => batch.push(first),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let opened = Instant::now();
        let deadline = opened + cfg.batch_timeout;
        let linger_until = opened + cfg.batch_linger.min(cfg.batch_timeout);
        // No wake-up per transaction: take what is queued, then sleep until
        // the log is idle (or the linger or the deadline is over) and take
        // what arrived meanwhile.
        loop {
            closed |= drain(rx, &mut batch, max);
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
            if pipe.in_flight.wait_idle(deadline) {
                closed |= drain(rx, &mut batch, max);
                break;
            }
        }
        inner.metrics.pending.dec_by(batch.len() as i64);
        // Only verified transactions go on (a bad signature has been
        // answered by the pool already).
        batch.retain(|s| s.wait_verified(&inner.verdicts));
        if let Some(why) = stopped(inner, pipe) {
            refuse_all(inner, &batch, Rejected::Storage(why));
            if closed {
                break;
            }
            continue;
        }
        if !inner.consensus.is_leader() {
            leading = false;
            match inner.consensus.wait_any_leader(LEADER_WAIT) {
                Some(_) if !inner.consensus.is_leader() => {
                    // A follower: the leader proposes.
                    forward(inner, pipe, batch);
                    if closed {
                        break;
                    }
                    continue;
                }
                Some(_) => {}
                None => {
                    let e = match stopped(inner, pipe) {
                        Some(why) => Rejected::Storage(why),
                        None => Rejected::Busy,
                    };
                    refuse_all(inner, &batch, e);
                    if closed {
                        break;
                    }
                    continue;
                }
            }
        }
        let f = pipe.failures.load(Ordering::Acquire);
        if f != seen_failures || !leading {
            // A block failed (what was built on it is void), or this
            // gateway just became the leader: start again from the applied
            // state.
            seen_failures = f;
            leading = true;
            pipe.in_flight
                .wait_idle(Instant::now() + Duration::from_secs(3600));
            spec = inner.committed_state();
        }
        if !spec.has(&inner.key.public(), Permissions::VALIDATE) {
            // A block before this one took VALIDATE from this gateway: a
            // block built now would fail validation. Nothing more can be
            // committed once it is stored; the node is stopping then (see
            // `Node::lost_validate`).
            refuse_all(inner, &batch, Rejected::ShuttingDown);
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
        let proposed = propose(inner, &spec, batch);
        if !proposed.built.block.txs.is_empty() {
            spec = Arc::new(proposed.built.state.clone());
            pipe.in_flight.wait_below(PIPELINE);
            pipe.in_flight.add();
            write(inner, proposed);
        }
        if closed {
            break;
        }
    }
}

/// Why Raft stopped, if it did (remembered once seen).
fn stopped(inner: &Shared, pipe: &Pipeline) -> Option<String> {
    let mut s = pipe.stopped.lock().unwrap_or_else(|p| p.into_inner());
    if s.is_none() {
        *s = inner.consensus.stopped();
    }
    s.clone()
}

fn refuse_all(inner: &Shared, batch: &[Arc<Slot>], e: Rejected) {
    if !batch.is_empty() {
        inner.replies.resolve(LedgerEvent::Refused(
            batch.iter().map(|s| (s.id, e.clone())).collect(),
        ));
    }
}

/// The transactions given back by refused blocks and failed forwards;
/// those given back too often are answered busy (resend).
fn take_requeued(
    inner: &Shared,
    pipe: &Pipeline,
    requeues: &mut HashMap<Hash32, u8>,
) -> Vec<Arc<Slot>> {
    let back = std::mem::take(&mut *pipe.requeue.lock().unwrap_or_else(|p| p.into_inner()));
    if requeues.len() > 100_000 {
        requeues.clear();
    }
    let (again, given_up): (Vec<_>, Vec<_>) = back.into_iter().partition(|s| {
        let n = requeues.entry(s.id).or_insert(0);
        *n = n.saturating_add(1);
        *n <= MAX_REQUEUES
    });
    for s in &given_up {
        requeues.remove(&s.id);
    }
    refuse_all(inner, &given_up, Rejected::Busy);
    again
}

/// Answers the submitters of forwarded transactions the leader took but
/// that are not final here yet, each looked at once per
/// [`FORWARD_RECHECK_AFTER`]: with the rule's reason if the committed state
/// now refuses one that is not in the chain (the leader's proposer left it
/// out for that reason), busy (resend) after [`FORWARD_FINAL_WAIT`]; those
/// answered meanwhile are forgotten.
fn expire_forwarded(inner: &Shared, pipe: &Pipeline) {
    let now = Instant::now();
    let due: Vec<Forwarded> = {
        let mut q = pipe.forwarded.lock().unwrap_or_else(|p| p.into_inner());
        let n = q.iter().take_while(|f| f.next_check <= now).count();
        q.drain(..n).collect()
    };
    if due.is_empty() {
        return;
    }
    // The state first, the chain after: a transaction applied in this
    // state is in the store by then, so it is never taken for a replay of
    // itself.
    let state = inner.committed_state();
    let mut answered = Vec::new();
    let mut again = Vec::new();
    for mut f in due {
        if !inner.replies.is_waiting(&f.slot.id) {
            continue;
        }
        let in_chain = matches!(inner.store.tx_location(&f.slot.id), Ok(Some(_)));
        let refused = if in_chain {
            None
        } else {
            state.precheck(&f.slot.tx, Precheck::Admission).err()
        };
        if let Some(e) = refused {
            answered.push((f.slot.id, refusal(e)));
        } else if now.saturating_duration_since(f.at) >= FORWARD_FINAL_WAIT {
            answered.push((f.slot.id, Rejected::Busy));
        } else {
            f.next_check = now + FORWARD_RECHECK_AFTER;
            again.push(f);
        }
    }
    if !again.is_empty() {
        // later than every entry still queued: the queue stays in order
        pipe.forwarded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(again);
    }
    if !answered.is_empty() {
        inner.replies.resolve(LedgerEvent::Refused(answered));
    }
}

/// A follower's transactions go to the leader, each signer's in the order
/// they arrived: one forwarding task per signer (`forwarder`), which sends
/// the next only once the leader answered the one before (the leader would
/// refuse a sequence number below one it already took as a replay). Each
/// is answered when its block is final here, or with the leader's refusal.
fn forward(inner: &Arc<Shared>, pipe: &Arc<Pipeline>, batch: Vec<Arc<Slot>>) {
    // This gateway verified their signatures: its apply skips them.
    inner
        .consensus
        .verified
        .insert_all(batch.iter().map(|s| s.id));
    let mut q = pipe.forwarders.lock().unwrap_or_else(|p| p.into_inner());
    for slot in batch {
        let signer = slot.tx.body.signer;
        if let Some((_, tx)) = q.get(&signer)
            && tx.send(slot.clone()).is_ok()
        {
            continue;
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let _ = tx.send(slot);
        let generation = pipe.next_forwarder.fetch_add(1, Ordering::AcqRel);
        q.insert(signer, (generation, tx));
        let (inner2, pipe2) = (inner.clone(), pipe.clone());
        inner
            .consensus
            .spawn(forwarder(inner2, pipe2, signer, generation, rx));
    }
}

/// Forwards one signer's transactions in order until it is idle for
/// [`FORWARDER_IDLE`].
async fn forwarder(
    inner: Arc<Shared>,
    pipe: Arc<Pipeline>,
    signer: PublicKey,
    generation: u64,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Arc<Slot>>,
) {
    loop {
        match tokio::time::timeout(FORWARDER_IDLE, rx.recv()).await {
            Ok(Some(slot)) => forward_one(&inner, &pipe, slot).await,
            Ok(None) => return,
            Err(_) => {
                {
                    let mut q = pipe.forwarders.lock().unwrap_or_else(|p| p.into_inner());
                    if q.get(&signer).is_some_and(|(g, _)| *g == generation) {
                        q.remove(&signer);
                    }
                }
                // what was queued before it left the map
                while let Ok(slot) = rx.try_recv() {
                    forward_one(&inner, &pipe, slot).await;
                }
                return;
            }
        }
    }
}

/// Forwards one transaction to the leader of the moment, trying again (a
/// new leader, a busy one, a link down) up to [`MAX_FORWARD_TRIES`] times
/// before its submitter is told busy (resend).
async fn forward_one(inner: &Shared, pipe: &Pipeline, slot: Arc<Slot>) {
    for attempt in 0..MAX_FORWARD_TRIES {
        let c = &inner.consensus;
        let leader = match c.leader() {
            Some(l) if l == c.id() => {
                // this gateway leads now: its proposer takes it
                pipe.requeue
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(slot);
                return;
            }
            Some(l) => l,
            None => {
                tokio::time::sleep(FORWARD_RETRY * (attempt + 1)).await;
                continue;
            }
        };
        match c.forward(leader, slot.encoded.clone()).await {
            Ok(ForwardAnswer::Queued | ForwardAnswer::InBlock { .. }) => {
                let at = Instant::now();
                pipe.forwarded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back(Forwarded {
                        at,
                        next_check: at + FORWARD_RECHECK_AFTER,
                        slot,
                    });
                return;
            }
            Ok(ForwardAnswer::Refused { reason, message }) => {
                inner.replies.resolve(LedgerEvent::Refused(vec![(
                    slot.id,
                    Rejected::Leader { reason, message },
                )]));
                return;
            }
            Ok(ForwardAnswer::NotLeader { .. } | ForwardAnswer::Busy) => {}
            Err(e) => tracing::debug!(leader, "forward failed, tried again: {e}"),
        }
        tokio::time::sleep(FORWARD_RETRY * (attempt + 1)).await;
    }
    inner
        .replies
        .resolve(LedgerEvent::Refused(vec![(slot.id, Rejected::Busy)]));
}

/// Hands a proposed block to the log; its transactions are answered when it
/// is final (by the follower) or go back to the proposer if it is refused.
pub(super) fn write(inner: &Arc<Shared>, p: Proposed) {
    let pipe = &inner.pipeline;
    let Proposed {
        built,
        tx_ids,
        started,
    } = p;
    let height = built.block.header.height;
    let bytes = built.block.to_vec();
    let txs = built.block.txs;
    let encoded = built.encoded;
    // This gateway verified every signature of its own block.
    inner.consensus.verified.insert_all(tx_ids.iter().copied());
    let (inner2, pipe2) = (inner.clone(), pipe.clone());
    inner.consensus.write_block(bytes, move |written| {
        let inner = inner2;
        let pipe = pipe2;
        match written {
            Written::Applied => {
                inner
                    .metrics
                    .block_commit_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            Written::Refused(_) | Written::NotLeader(_) => {
                match &written {
                    Written::Refused(why) => tracing::warn!(
                        height,
                        txs = txs.len(),
                        "proposed block refused by the log's ledger rule, its transactions proposed again: {why}"
                    ),
                    Written::NotLeader(why) => tracing::info!(
                        height,
                        txs = txs.len(),
                        "proposed block not written, its transactions proposed again: {why}"
                    ),
                    _ => {}
                }
                pipe.failures.fetch_add(1, Ordering::AcqRel);
                let back = txs
                    .into_iter()
                    .zip(encoded)
                    .zip(tx_ids)
                    .map(|((tx, encoded), id)| Slot::requeued(tx, encoded, id));
                pipe.requeue
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(back);
            }
            Written::Stopped(why) => {
                tracing::error!(height, "Raft stopped, nothing more is committed here: {why}");
                pipe.failures.fetch_add(1, Ordering::AcqRel);
                *pipe.stopped.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
                let e = Rejected::Storage(why);
                inner.replies.resolve(LedgerEvent::Refused(
                    tx_ids.into_iter().map(|id| (id, e.clone())).collect(),
                ));
            }
        }
        pipe.in_flight.finish();
    });
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

    /// Waits until fewer than `n` blocks are in flight.
    fn wait_below(&self, n: usize) {
        let mut g = self.lock();
        while *g >= n {
            g = self.done.wait(g).unwrap_or_else(|p| p.into_inner());
        }
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
pub(super) fn propose(inner: &Shared, spec: &WorldState, mut batch: Vec<Arc<Slot>>) -> Proposed {
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
        started,
    }
}
