//! The ledger node of one gateway, by role:
//!
//! * **Ingest** (`ingest.rs`; [`Node::enqueue`], [`Node::submit`]) runs in
//!   the caller's task, in arrival order: strict decoding, the core's own
//!   precheck (`WorldState::precheck`, the rule `apply` runs first, on the
//!   committed state: no signature work for what will be refused), then
//!   the transaction takes its place in the ledger's intake and its
//!   signature goes to a dedicated **verification pool** of std threads
//!   ([`VERIFY_THREAD`]), never to the async runtime's workers. Each
//!   signature is verified exactly once per gateway.
//! * **Ledger** (`ledger.rs`): a proposer thread cuts blocks from the
//!   verified transactions (group commit), building block N+1 on the state
//!   after block N while a committer thread validates N with the core's
//!   `WorldState::apply_block` — the same rule every other gateway and the
//!   auditor apply — and stores it durably, with a state snapshot every
//!   `snapshot_every` blocks.
//! * **Replies** (`replies.rs`): a registry of waiters keyed by transaction
//!   id, resolved by the ledger's events ("committed at height H", "refused:
//!   this reason"). Nothing of the reply travels with the block, so that
//!   "acknowledged" can later mean "certified by a quorum" without touching
//!   ingest. An acknowledged reading is on disk; every refusal carries its
//!   true reason (the rule's, the store's, or busy for a transaction that
//!   was refused for nothing it did and may be resent).
//! * **Opening** (`open.rs`; [`Node::open`]): the replay of the stored chain
//!   (or the genesis of an empty store), synchronous, so that a caller can
//!   run it off the async runtime before [`Node::start_opened`].
//!
//! A consensus layer slots in between proposal and validation: it orders
//! proposals, and every gateway validates and stores what it orders.
//!
//! **The proposer must be a validator.** [`Node::start`] refuses a key that
//! lacks `VALIDATE` in the state after the stored chain ([`NotValidator`]).
//! If a committed block takes `VALIDATE` from this gateway's key, the node
//! stops taking submissions (answered [`Rejected::ShuttingDown`]) and
//! [`Node::lost_validate`] resolves, so that `sensorchain run` stops with
//! the reason; no block is built that validation would refuse.
//!
//! **Refusals are logged** (at `info`, with the reason, the signer and its
//! sequence number, and the link's identity), at most
//! [`REFUSAL_LOG_PER_SECOND`] lines a second; the number left out is given
//! on the next line logged. Busy and shutting-down answers are logged at
//! `debug`. A block that fails validation or storage is logged at `error`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sensorchain_core::block::Block;
use sensorchain_core::codec::DecodeError;
use sensorchain_core::hash::Hash32;
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::link::RejectReason;
use sensorchain_core::state::{TxRuleError, WorldState};
use sensorchain_core::tx::{Transaction, TxError};
use tokio::sync::{broadcast, oneshot, watch};

use crate::cluster::ClusterSettings;
use crate::metrics::Metrics;
use crate::store::Store;

mod consensus;
pub mod device_stats;
mod ingest;
mod ledger;
mod open;
mod replies;

pub use consensus::{
    ClusterStatus, FOLLOW_THREAD, MemberReport, MemberStatus, MembershipError, RAFT_THREAD,
};
pub use ingest::VERIFY_THREAD;
pub use open::{NotValidator, check_may_propose, genesis_state, replay};

/// Block production settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Most transactions per block (also bounded by the chain's parameter).
    pub batch_max_txs: usize,
    /// Longest wait from the first pending transaction to the cut while the
    /// store is busy (when it is idle the block is cut at once).
    pub batch_timeout: Duration,
    /// Shortest wait from the first pending transaction to the cut, even
    /// when the store is idle (zero: cut at once; more: fewer, larger
    /// blocks at a little latency).
    pub batch_linger: Duration,
    /// Most transactions waiting; beyond it submissions are answered busy.
    pub max_pending: usize,
    /// Blocks between state snapshots.
    pub snapshot_every: u64,
    /// The cluster this gateway is a member of (default: a cluster of one).
    pub cluster: ClusterSettings,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            batch_max_txs: 2000,
            batch_timeout: Duration::from_millis(20),
            batch_linger: Duration::ZERO,
            max_pending: 100_000,
            snapshot_every: 64,
            cluster: ClusterSettings::default(),
        }
    }
}

/// Where a committed transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The block's height.
    pub height: u64,
    /// The index in the block.
    pub index: u32,
    /// The transaction id (Merkle leaf hash of its exact bytes).
    pub tx_id: Hash32,
}

/// Why a submission was not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Not a canonical transaction encoding, or too large.
    #[error("malformed transaction: {0}")]
    Malformed(String),
    /// Signed by someone other than the link's identity.
    #[error("transaction signed by another identity than the session's")]
    WrongSigner,
    /// The signer is not registered on the chain.
    #[error("signer is not registered")]
    UnknownSigner,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// A ledger rule refuses it.
    #[error("{0}")]
    Rule(TxRuleError),
    /// Too many transactions are waiting; try again later.
    #[error("gateway busy")]
    Busy,
    /// It could not be stored (disk full, I/O): nothing was committed.
    #[error("storage failed: {0}")]
    Storage(String),
    /// The node is stopping.
    #[error("gateway shutting down")]
    ShuttingDown,
    /// The cluster's leader refused it (this gateway forwarded it there):
    /// the leader's reason and account.
    #[error("refused by the leader: {message}")]
    Leader {
        /// The leader's reason.
        reason: RejectReason,
        /// The leader's account.
        message: String,
    },
}

impl Rejected {
    /// The reason code sent to a sensor, or `None` for "busy, retry".
    pub fn reason(&self) -> Option<RejectReason> {
        Some(match self {
            Rejected::Malformed(_) => RejectReason::Malformed,
            Rejected::WrongSigner => RejectReason::WrongSigner,
            Rejected::UnknownSigner => RejectReason::NotPermitted,
            Rejected::BadSignature => RejectReason::BadSignature,
            Rejected::Rule(r) => match r {
                TxRuleError::Replay { .. } => RejectReason::Replay,
                TxRuleError::NotPermitted { .. } | TxRuleError::UnknownSigner => {
                    RejectReason::NotPermitted
                }
                TxRuleError::Reading(_) => RejectReason::OutOfRange,
                TxRuleError::RecipientNotAuthorised
                | TxRuleError::UnknownRecipient
                | TxRuleError::DeviceNotAssigned => RejectReason::NotAuthorised,
                TxRuleError::BadSignature(_) => RejectReason::BadSignature,
                TxRuleError::BlockFull => return None,
                _ => RejectReason::Invalid,
            },
            Rejected::Storage(_) => RejectReason::StorageFailed,
            Rejected::Leader { reason, .. } => *reason,
            Rejected::Busy | Rejected::ShuttingDown => return None,
        })
    }

    /// A snake_case label for metrics and summaries.
    pub fn label(&self) -> &'static str {
        match self.reason() {
            Some(r) => r.as_str(),
            None => match self {
                Rejected::ShuttingDown => "shutting_down",
                _ => "busy",
            },
        }
    }
}

/// Something that happened on the chain.
#[derive(Debug, Clone)]
pub enum NodeEvent {
    /// A block was committed.
    Block {
        /// Its height.
        height: u64,
        /// Its hash.
        hash: Hash32,
        /// Transactions in it.
        txs: usize,
    },
    /// The permissions of these identities changed (sessions re-check them:
    /// a revoked identity's sessions are dropped at once).
    PermissionsChanged(Vec<PublicKey>),
    /// The block at `height` is final: its certificate is stored.
    Final {
        /// Its height.
        height: u64,
        /// Its hash.
        hash: Hash32,
    },
}

/// A queued transaction's outcome, to await.
pub struct Ticket {
    rx: oneshot::Receiver<Result<Committed, Rejected>>,
    arrived: Instant,
    origin: Origin,
    refusals: Arc<Refusals>,
}

impl Ticket {
    /// Waits until the transaction is durably committed or refused.
    pub async fn wait(self) -> Result<Committed, Rejected> {
        let r = self.rx.await.unwrap_or(Err(Rejected::ShuttingDown));
        match &r {
            Ok(_) => self
                .refusals
                .metrics
                .ingest_latency
                .observe(self.arrived.elapsed().as_secs_f64()),
            Err(e) => self.refusals.refused(e, &self.origin),
        }
        r
    }
}

/// Who a submission came from (for the refusal log).
#[derive(Debug, Clone, Copy)]
struct Origin {
    /// The signer and sequence number, if it decoded.
    tx: Option<(PublicKey, u64)>,
    /// The link's identity (`None`: the HTTP API).
    link: Option<PublicKey>,
}

/// Most refusals logged per second (the rest are counted and the count is
/// given on the next line logged).
pub const REFUSAL_LOG_PER_SECOND: u32 = 20;

/// A per-second budget of log lines.
struct LogBudget {
    /// Start of the current second, lines logged in it, lines left out
    /// since the last line logged.
    window: Mutex<(Instant, u32, u64)>,
}

impl LogBudget {
    fn new() -> Self {
        LogBudget {
            window: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    /// `Some(left_out)` if a line may be logged now (`left_out`: lines not
    /// logged before it), `None` if this one is left out.
    fn admit(&self, now: Instant) -> Option<u64> {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if now.duration_since(w.0) >= Duration::from_secs(1) {
            w.0 = now;
            w.1 = 0;
        }
        if w.1 < REFUSAL_LOG_PER_SECOND {
            w.1 += 1;
            Some(std::mem::take(&mut w.2))
        } else {
            w.2 += 1;
            None
        }
    }
}

/// What the node's parts share.
struct Shared {
    store: Arc<Store>,
    events: broadcast::Sender<NodeEvent>,
    metrics: Arc<Metrics>,
    key: Keypair,
    /// False once a committed block took `VALIDATE` from `key`.
    may_propose: AtomicBool,
    /// Why the node stopped taking submissions (set once).
    lost_validate: watch::Sender<Option<String>>,
    refusals: Arc<Refusals>,
    /// Who waits for which transaction.
    replies: Arc<replies::Replies>,
    /// Where the proposer waits for the pool's verdicts.
    verdicts: Arc<ingest::Verdicts>,
    /// Raft, and what the node needs of it.
    consensus: consensus::Consensus,
    /// The proposer's blocks on their way through the log.
    pipeline: Arc<ledger::Pipeline>,
    /// The height of the last final block (`u64::MAX`: none).
    finalized: Finalized,
}

/// The height of the last final block, only ever raised (`u64::MAX`:
/// none yet).
pub(super) struct Finalized(AtomicU64);

impl Finalized {
    pub(super) fn load(&self, o: Ordering) -> u64 {
        self.0.load(o)
    }

    /// Raises it to `height` (a late certificate of an older block leaves
    /// it as it is).
    pub(super) fn fetch_max_final(&self, height: u64) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| {
                (f == u64::MAX || height > f).then_some(height)
            });
    }
}

/// Counts and logs refusals (what a [`Ticket`] keeps of the node: not the
/// store, which is released when the node stops).
struct Refusals {
    metrics: Arc<Metrics>,
    budget: LogBudget,
    /// Refusals of registered signers, per signer.
    devices: Arc<device_stats::DeviceStats>,
    /// The state after the last block: who is registered.
    state: watch::Receiver<Arc<WorldState>>,
}

struct Inner {
    shared: Arc<Shared>,
    /// Only the `Node` handles hold the senders: when the last one is
    /// dropped the pool finishes its jobs and ends, and the producer sees
    /// the intake close, finishes and releases the store.
    intake: SyncSender<Arc<ingest::Slot>>,
    pool: ingest::VerifyPool,
    /// The block producer's thread, until [`Node::take_producer`] takes it.
    producer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Refusals {
    /// Counts a refusal and logs it (within the budget).
    fn refused(&self, e: &Rejected, o: &Origin) {
        self.metrics.reject(e.label());
        if let Some((pk, _)) = o.tx
            && self.state.borrow().verifying_key(&pk).is_some()
        {
            self.devices.refused(&pk, e.label());
        }
        let signer =
            o.tx.map_or_else(|| "undecoded".to_string(), |(pk, _)| pk.to_string());
        let sequence = o.tx.map(|(_, s)| s);
        let link = o
            .link
            .map_or_else(|| "api".to_string(), |pk| pk.to_string());
        if e.reason().is_none() {
            tracing::debug!(reason = e.label(), %signer, sequence, via = %link, "submission not taken: {e}");
            return;
        }
        if let Some(left_out) = self.budget.admit(Instant::now()) {
            if left_out > 0 {
                tracing::info!(
                    left_out,
                    "{left_out} refusals not logged (more than {REFUSAL_LOG_PER_SECOND} a second)"
                );
            }
            tracing::info!(reason = e.label(), %signer, sequence, via = %link, "submission refused: {e}");
        }
    }
}

impl Shared {
    /// The state after the last stored block.
    fn committed_state(&self) -> Arc<WorldState> {
        self.consensus.state.borrow().clone()
    }
}

impl std::ops::Deref for Inner {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// A running ledger node (cheap to clone).
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

/// A handle that does not keep the node running ([`Node::downgrade`]).
#[derive(Clone)]
pub struct WeakNode(std::sync::Weak<Inner>);

impl WeakNode {
    /// The node, if it still runs.
    pub fn upgrade(&self) -> Option<Node> {
        self.0.upgrade().map(|inner| Node { inner })
    }
}

/// A chain opened and recovered, not running yet ([`Node::open`]).
pub struct Opened {
    store: Store,
    key: Keypair,
    state: WorldState,
}

impl Opened {
    /// The state after the stored chain (or the genesis just stored).
    pub fn state(&self) -> &WorldState {
        &self.state
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Node {
    /// Opens the store, initialises it with `genesis` if empty (after
    /// validating it), recovers the state (latest snapshot, then the blocks
    /// after it, fully validated), and starts the node: [`open`](Self::open)
    /// then [`start_opened`](Self::start_opened). Synchronous and, for a long
    /// chain, slow: an async caller should rather run `open` off its runtime
    /// (`tokio::task::spawn_blocking`) and then `start_opened`.
    pub fn start(
        store: Store,
        key: Keypair,
        genesis: &Block,
        cfg: NodeConfig,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Node> {
        let opened = if cfg.cluster.join {
            Node::open_joining(store, key, genesis)?
        } else {
            Node::open(store, key, genesis)?
        };
        Node::start_opened(opened, cfg, metrics)
    }

    /// Opens and recovers the chain without starting anything (no thread,
    /// no runtime needed): initialises an empty store with `genesis` (after
    /// validating it), or replays the stored chain ([`replay`]); refuses a
    /// `key` that may not propose on the resulting state ([`NotValidator`],
    /// before anything is written to an empty store).
    pub fn open(store: Store, key: Keypair, genesis: &Block) -> anyhow::Result<Opened> {
        let state = open::recover(&store, genesis, Some(&key.public()))?;
        Ok(Opened { store, key, state })
    }

    /// [`open`](Self::open) for a gateway waiting to be added to a cluster
    /// (`[cluster] join = true`): its key need not hold `VALIDATE` yet. The
    /// leader adds only a key that holds it on the chain, and the node
    /// takes submissions once the block that granted it is applied here.
    pub fn open_joining(store: Store, key: Keypair, genesis: &Block) -> anyhow::Result<Opened> {
        let state = open::recover(&store, genesis, None)?;
        Ok(Opened { store, key, state })
    }

    /// Starts the node on a chain [`open`](Self::open)ed: the verification
    /// pool, the proposer and the committer (cheap: threads only).
    pub fn start_opened(
        opened: Opened,
        cfg: NodeConfig,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Node> {
        let Opened { store, key, state } = opened;
        // false only for a gateway still waiting for its grant (joining)
        let may_propose = state.has(
            &key.public(),
            sensorchain_core::permissions::Permissions::VALIDATE,
        );
        metrics
            .block_height
            .set(state.next_height().saturating_sub(1) as i64);
        let capacity = cfg.max_pending.max(1);
        let single = cfg.cluster.is_single();
        let store = Arc::new(store);
        let consensus::Started {
            consensus,
            runtime,
            outcomes,
            votes,
            committed,
        } = consensus::start(
            store.clone(),
            state,
            &key,
            &cfg.cluster,
            cfg.snapshot_every,
            (capacity * 2).max(16_384),
            &metrics.peer,
        )?;
        // after the start, which may have finished a snapshot's install
        // (its back-filled certificates send no outcomes)
        let head = consensus.state.borrow().next_height().saturating_sub(1);
        let finalized = last_final(&store, head).unwrap_or(u64::MAX);
        let (intake, rx) = sync_channel(capacity);
        let (events, _) = broadcast::channel(1024);
        let replies = Arc::new(replies::Replies::default());
        let verdicts = Arc::new(ingest::Verdicts::default());
        let pool = ingest::VerifyPool::start(
            ingest::pool_threads(),
            capacity,
            replies.clone(),
            verdicts.clone(),
        )?;
        let shared = Arc::new(Shared {
            store,
            events,
            metrics: metrics.clone(),
            key,
            may_propose: AtomicBool::new(may_propose),
            lost_validate: watch::channel(None).0,
            refusals: Arc::new(Refusals {
                metrics,
                budget: LogBudget::new(),
                devices: Arc::default(),
                state: consensus.state.clone(),
            }),
            replies,
            verdicts,
            consensus,
            pipeline: Default::default(),
            finalized: Finalized(AtomicU64::new(finalized)),
        });
        let follower = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(FOLLOW_THREAD.into())
                .spawn(move || consensus::follow(shared, outcomes, votes))
                .context("cannot start the outcome follower")?
        };
        let producer = shared.clone();
        let producer = std::thread::Builder::new()
            .name("block-producer".into())
            .spawn(move || ledger::produce(producer, rx, cfg, runtime, follower))
            .context("cannot start the block producer")?;
        let votes_tx = shared.consensus.votes_sender();
        let inner = Arc::new(Inner {
            shared,
            intake,
            pool,
            producer: Mutex::new(Some(producer)),
        });
        let c = &inner.shared.consensus;
        c.serve(Arc::new(consensus::Peers {
            inner: Arc::downgrade(&inner),
            raft: c.raft(),
            state: c.state.clone(),
            votes: votes_tx,
        }))?;
        // What this gateway knew was committed is applied before it serves:
        // its state is then at least the state it answered from before.
        c.wait_applied(committed)?;
        if single {
            // The only voter commits every entry of its log once it leads:
            // all of them are applied before it serves.
            if c.wait_leader(Duration::from_secs(60)) {
                c.wait_applied(c.last_log_index())?;
            }
        }
        Ok(Node { inner })
    }

    /// The block producer's thread, once (`None` after the first call). It
    /// ends — after its committer thread, which it joins, has stored the
    /// last block and released its hold on the store — once every `Node`
    /// handle is dropped; joining it is how a caller knows the node has
    /// stopped ([`crate::app`] does).
    pub fn take_producer(&self) -> Option<std::thread::JoinHandle<()>> {
        self.inner
            .producer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// A handle that does not keep the node running (for a part that lives
    /// as long as the node and must not delay its stop).
    pub fn downgrade(&self) -> WeakNode {
        WeakNode(Arc::downgrade(&self.inner))
    }

    /// The state after the last committed block.
    pub fn state(&self) -> Arc<WorldState> {
        self.inner.committed_state()
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// What this gateway saw of each registered device's links: live
    /// sessions (counted by the link hub) and refused submissions by
    /// reason.
    pub fn device_stats(&self) -> &device_stats::DeviceStats {
        &self.inner.refusals.devices
    }

    /// This gateway's public key.
    pub fn public(&self) -> PublicKey {
        self.inner.key.public()
    }

    /// This gateway's key pair (for the handshake responder).
    pub fn keypair(&self) -> &Keypair {
        &self.inner.key
    }

    /// Where this gateway's peer links listen (none: a cluster of one
    /// without a `[cluster] listen` address).
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.consensus.peer_addr()
    }

    /// A transaction a follower forwarded to this gateway (`from`: the
    /// follower's key): taken into the intake if this gateway leads (its
    /// signature verified here, once), else answered with the leader.
    fn take_forwarded(
        &self,
        from: PublicKey,
        tx: Vec<u8>,
    ) -> sensorchain_core::peer::ForwardAnswer {
        use sensorchain_core::peer::ForwardAnswer;
        let c = &self.inner.consensus;
        if !c.is_leader() {
            return ForwardAnswer::NotLeader { leader: c.leader() };
        }
        let id = Transaction::id_of_encoded(&tx);
        if let Ok(Some(loc)) = self.inner.store.tx_location(&id) {
            return ForwardAnswer::InBlock { height: loc.height };
        }
        match self.enqueue(tx, None) {
            // The follower answers its sensor when the block is final there.
            Ok(_ticket) => ForwardAnswer::Queued,
            Err(Rejected::Busy | Rejected::ShuttingDown) => ForwardAnswer::Busy,
            Err(e) => {
                tracing::debug!(peer = %from, "forwarded transaction refused: {e}");
                ForwardAnswer::Refused {
                    reason: e.reason().unwrap_or(RejectReason::Invalid),
                    message: sensorchain_core::peer::reason_text(&e.to_string()),
                }
            }
        }
    }

    /// Adds a gateway to the cluster as member `id` at `node` (see
    /// docs/CLUSTER.md, "Membership follows the chain"): its key must hold
    /// `VALIDATE` and `CONNECT` on the chain; it joins as a learner, is
    /// replicated the log, then becomes a voter. On the leader only; waits
    /// until the change is committed.
    pub async fn add_member(
        &self,
        id: crate::cluster::NodeId,
        node: crate::cluster::GatewayNode,
    ) -> Result<(), MembershipError> {
        let state = self.state();
        self.inner.consensus.add_member(&state, id, node).await
    }

    /// [`cluster_status`](Self::cluster_status) with every other member's
    /// report of itself (role, term, heights, health), asked over the peer
    /// links — or why it could not be asked. The status is read on the
    /// blocking pool.
    pub async fn cluster_overview(&self) -> ClusterStatus {
        let node = self.clone();
        let mut status = match tokio::task::spawn_blocking(move || node.cluster_status()).await {
            Ok(s) => s,
            Err(_) => self.cluster_status(),
        };
        let reports = self.inner.consensus.reports().await;
        for m in &mut status.members {
            if let Some((_, r)) = reports.iter().find(|(id, _)| *id == m.id) {
                match r {
                    Ok(rep) => m.reported = Some(rep.clone()),
                    Err(e) => m.unreachable = Some(e.clone()),
                }
            }
        }
        status
    }

    /// This gateway's view of its cluster: role, term, leader, log and
    /// chain positions, members (with their lag, on the leader), evidence.
    /// Reads the store (the last certificate, the evidence): call it off
    /// the async runtime's workers for a busy store.
    pub fn cluster_status(&self) -> ClusterStatus {
        let store = &self.inner.store;
        let height = self.state().next_height().saturating_sub(1);
        let finalized = match self.inner.finalized.load(Ordering::Acquire) {
            u64::MAX => None,
            h => Some(h),
        };
        let evidence = store.evidence(1024).map(|e| e.len()).unwrap_or(0);
        self.inner.consensus.status(height, finalized, evidence)
    }

    /// Sets the metrics read at each scrape: Raft's log positions and
    /// term, whether this gateway leads, the sizes of `raft.redb` and
    /// `chain.redb` (reads two files' metadata: cheap).
    pub fn refresh_metrics(&self) {
        let dir = self
            .inner
            .store
            .path()
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        self.inner
            .consensus
            .refresh_metrics(&self.inner.metrics.log, &dir);
    }

    /// Chain events.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    /// Resolves (with the reason) once a committed block has taken the
    /// `VALIDATE` permission from this gateway's key: from then on the node
    /// can commit nothing and refuses every submission as shutting down.
    /// Never resolves otherwise.
    pub async fn lost_validate(&self) -> String {
        let mut rx = self.inner.lost_validate.subscribe();
        // the guard is gone before the next await: the future is Send
        let why = rx
            .wait_for(Option::is_some)
            .await
            .map(|v| v.clone().unwrap_or_default());
        match why {
            Ok(why) => why,
            Err(_) => std::future::pending().await,
        }
    }

    /// Raft's account of the storage error it stopped on, if it did (see
    /// [`storage_failure`](Self::storage_failure)); `None` while it runs.
    pub fn storage_failed(&self) -> Option<String> {
        self.inner.consensus.storage_failed()
    }

    /// Resolves (with Raft's account of it) once Raft has stopped on a
    /// storage error — a full disk, an I/O error: from then on the node
    /// commits nothing and refuses every submission `storage_failed` until
    /// it is stopped and started again on its store (re-opened and
    /// re-checked), which [`crate::app::run_healing`] does once the disk
    /// takes writes again. Never resolves otherwise (a shutdown is no
    /// failure).
    pub async fn storage_failure(&self) -> String {
        let failed = self.inner.consensus.storage_failure();
        failed.await
    }

    /// Submits one transaction given its exact bytes and waits until it is
    /// durably committed or refused. `session_identity`: the identity of the
    /// link it came on, which must be its signer (`None` for the API, where
    /// any registered signer may submit).
    pub async fn submit(
        &self,
        encoded: Vec<u8>,
        session_identity: Option<PublicKey>,
    ) -> Result<Committed, Rejected> {
        match self.enqueue(encoded, session_identity) {
            Ok(ticket) => ticket.wait().await,
            Err(e) => Err(e),
        }
    }

    /// The first half of [`submit`](Self::submit): decodes and prechecks
    /// the transaction now (in the caller's task), queues it for the next
    /// block and its signature for the verification pool, and returns a
    /// [`Ticket`] to await its outcome (a bad signature is answered through
    /// the ticket). A link calls this in the order its frames arrive, so one
    /// device's sequence numbers reach the block producer in order, and
    /// awaits the tickets concurrently.
    pub fn enqueue(
        &self,
        encoded: Vec<u8>,
        session_identity: Option<PublicKey>,
    ) -> Result<Ticket, Rejected> {
        let arrived = Instant::now();
        match Transaction::decode(&encoded) {
            Ok(tx) => self.ticket(tx, encoded, session_identity, arrived),
            Err(e) => {
                let e = match e {
                    TxError::Decode(d) => Rejected::Malformed(d.to_string()),
                    e => Rejected::Malformed(e.to_string()),
                };
                let origin = Origin {
                    tx: None,
                    link: session_identity,
                };
                self.inner.refusals.refused(&e, &origin);
                Err(e)
            }
        }
    }

    /// [`enqueue`](Self::enqueue) for a caller that has already decoded the
    /// transaction strictly: `tx` must be `Transaction::decode(&encoded)`
    /// (checked in debug builds). A link decodes once to learn the sequence
    /// number it answers under, and this spares the second decoding.
    pub fn enqueue_decoded(
        &self,
        tx: Transaction,
        encoded: Vec<u8>,
        session_identity: Option<PublicKey>,
    ) -> Result<Ticket, Rejected> {
        let arrived = Instant::now();
        debug_assert_eq!(Transaction::decode(&encoded).as_ref(), Ok(&tx));
        self.ticket(tx, encoded, session_identity, arrived)
    }

    fn ticket(
        &self,
        tx: Transaction,
        encoded: Vec<u8>,
        session_identity: Option<PublicKey>,
        arrived: Instant,
    ) -> Result<Ticket, Rejected> {
        let origin = Origin {
            tx: Some((tx.body.signer, tx.body.sequence)),
            link: session_identity,
        };
        let inner = &self.inner;
        match ingest::admit(
            &inner.shared,
            &inner.intake,
            &inner.pool,
            tx,
            encoded,
            session_identity,
        ) {
            Ok(rx) => Ok(Ticket {
                rx,
                arrived,
                origin,
                refusals: inner.refusals.clone(),
            }),
            Err(e) => {
                inner.refusals.refused(&e, &origin);
                Err(e)
            }
        }
    }
}

/// The height of the last certified block at or below `head` (searched
/// down at most 4,096 blocks: a chain stored before the cluster has none).
fn last_final(store: &Store, head: u64) -> Option<u64> {
    (head.saturating_sub(4096)..=head)
        .rev()
        .find(|h| matches!(store.cert(*h), Ok(Some(_))))
}

/// Maps a strict-decoding error to a rejection (for callers decoding first).
pub fn malformed(e: DecodeError) -> Rejected {
    Rejected::Malformed(e.to_string())
}

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod tests;
