//! The ledger node of one gateway: ingest, block production, validation and
//! durable storage, as three separate parts.
//!
//! * **Ingest** ([`Node::submit`]) runs in the caller's task (one per link,
//!   on every core): strict decoding, the cheap state checks, then the one
//!   signature rule — each signature is verified exactly once per gateway.
//! * **Proposal**: a proposer thread takes verified transactions from a
//!   bounded queue and cuts a block as soon as the store is idle (group
//!   commit: the block holds whatever arrived while the previous one was
//!   being stored), or when `batch.max_txs` are waiting, or `batch.timeout_ms`
//!   after the first; it leaves out what the state refuses, and builds on the
//!   state after the previous *proposed* block, so building block N+1
//!   overlaps storing block N.
//! * **Validation**: the proposed block goes through the core's
//!   `WorldState::apply_block` — the same rule every other gateway and the
//!   auditor apply — before it is stored.
//! * **Storage**: a committer thread makes one durable redb transaction per
//!   block; only then is every submitter answered. An acknowledged reading is
//!   on disk. If a block cannot be stored, its transactions and those of the
//!   block proposed on it are refused, and the proposer restarts from the
//!   stored state.
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
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use sensorchain_core::block::Block;
use sensorchain_core::chain::{BuiltBlock, build_block_from_pool};
use sensorchain_core::codec::DecodeError;
use sensorchain_core::hash::Hash32;
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::link::RejectReason;
use sensorchain_core::permissions::Permissions;
use sensorchain_core::state::{SigCheck, TxRuleError, WorldState};
use sensorchain_core::tx::{Payload, Transaction, TxError, TxKind};
use tokio::sync::{broadcast, oneshot, watch};

use crate::metrics::Metrics;
use crate::store::integrity::{self, IntegrityDepth};
use crate::store::{Store, StoreError};

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
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            batch_max_txs: 2000,
            batch_timeout: Duration::from_millis(20),
            batch_linger: Duration::ZERO,
            max_pending: 100_000,
            snapshot_every: 64,
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

/// Where a submitter awaits its outcome.
type Reply = oneshot::Sender<Result<Committed, Rejected>>;

struct Pending {
    tx: Transaction,
    encoded: Vec<u8>,
    reply: Reply,
}

/// What the block producer shares with the submitters.
struct Shared {
    store: Arc<Store>,
    state: RwLock<Arc<WorldState>>,
    events: broadcast::Sender<NodeEvent>,
    metrics: Arc<Metrics>,
    key: Keypair,
    /// False once a committed block took `VALIDATE` from `key`.
    may_propose: AtomicBool,
    /// Why the node stopped taking submissions (set once).
    lost_validate: watch::Sender<Option<String>>,
    refusals: Arc<Refusals>,
}

/// Counts and logs refusals (what a [`Ticket`] keeps of the node: not the
/// store, which is released when the node stops).
struct Refusals {
    metrics: Arc<Metrics>,
    budget: LogBudget,
}

struct Inner {
    shared: Arc<Shared>,
    /// Only the `Node` handles hold the sender: when the last one is dropped
    /// the producer sees the queue close, finishes and releases the store.
    queue: SyncSender<Pending>,
}

impl Refusals {
    /// Counts a refusal and logs it (within the budget).
    fn refused(&self, e: &Rejected, o: &Origin) {
        self.metrics.reject(e.label());
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
        self.state
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
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
    /// after it, fully validated), and starts the block producer.
    pub fn start(
        store: Store,
        key: Keypair,
        genesis: &Block,
        cfg: NodeConfig,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Node> {
        let store = Arc::new(store);
        let state = recover(&store, genesis, &key.public())?;
        metrics
            .block_height
            .set(state.next_height().saturating_sub(1) as i64);
        let (queue, rx) = sync_channel(cfg.max_pending.max(1));
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            store,
            state: RwLock::new(Arc::new(state)),
            events,
            metrics: metrics.clone(),
            key,
            may_propose: AtomicBool::new(true),
            lost_validate: watch::channel(None).0,
            refusals: Arc::new(Refusals {
                metrics,
                budget: LogBudget::new(),
            }),
        });
        let producer = shared.clone();
        let inner = Arc::new(Inner { shared, queue });
        std::thread::Builder::new()
            .name("block-producer".into())
            .spawn(move || produce(producer, rx, cfg))
            .context("cannot start the block producer")?;
        Ok(Node { inner })
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

    /// This gateway's public key.
    pub fn public(&self) -> PublicKey {
        self.inner.key.public()
    }

    /// This gateway's key pair (for the handshake responder).
    pub fn keypair(&self) -> &Keypair {
        &self.inner.key
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
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or_default(),
            Err(_) => std::future::pending().await,
        }
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

    /// The first half of [`submit`](Self::submit): decodes, checks and
    /// verifies the transaction now (in the caller's task) and queues it for
    /// the next block, returning a [`Ticket`] to await its outcome. A link
    /// calls this in the order its frames arrive, so one device's sequence
    /// numbers reach the block producer in order, and awaits the tickets
    /// concurrently.
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
        match self.check_and_enqueue(tx, encoded, session_identity) {
            Ok(rx) => Ok(Ticket {
                rx,
                arrived,
                origin,
                refusals: self.inner.refusals.clone(),
            }),
            Err(e) => {
                self.inner.refusals.refused(&e, &origin);
                Err(e)
            }
        }
    }

    fn check_and_enqueue(
        &self,
        tx: Transaction,
        encoded: Vec<u8>,
        session_identity: Option<PublicKey>,
    ) -> Result<oneshot::Receiver<Result<Committed, Rejected>>, Rejected> {
        if !self.inner.may_propose.load(Ordering::Acquire) {
            // this gateway can commit nothing any more (it is stopping)
            return Err(Rejected::ShuttingDown);
        }
        if session_identity.is_some_and(|id| id != tx.body.signer) {
            return Err(Rejected::WrongSigner);
        }
        if matches!(tx.body.kind, TxKind::Genesis(_)) {
            return Err(Rejected::Rule(TxRuleError::GenesisMisplaced));
        }
        let state = self.state();
        let rec = state
            .identity(&tx.body.signer)
            .ok_or(Rejected::UnknownSigner)?;
        // Cheap checks first: no signature work for what will be refused.
        if let Some(last) = rec.last_sequence
            && tx.body.sequence <= last
        {
            return Err(Rejected::Rule(TxRuleError::Replay {
                last,
                got: tx.body.sequence,
            }));
        }
        if let TxKind::Reading { payload, .. } = &tx.body.kind {
            if !rec.permissions.contains(Permissions::WRITE) {
                return Err(Rejected::Rule(TxRuleError::NotPermitted {
                    needed: Permissions::WRITE,
                }));
            }
            if let Payload::Plain(v) = payload {
                v.check()
                    .map_err(|e| Rejected::Rule(TxRuleError::Reading(e)))?;
            }
        }
        let vk = state
            .verifying_key(&tx.body.signer)
            .ok_or(Rejected::UnknownSigner)?;
        // The one signature rule, once per transaction per gateway.
        Transaction::verify_encoded(&encoded, state.chain_id(), vk, &tx.signature)
            .map_err(|_| Rejected::BadSignature)?;
        let (reply, rx) = oneshot::channel();
        match self.inner.queue.try_send(Pending { tx, encoded, reply }) {
            Ok(()) => {
                self.inner.metrics.pending.inc();
                Ok(rx)
            }
            Err(TrySendError::Full(_)) => Err(Rejected::Busy),
            Err(TrySendError::Disconnected(_)) => Err(Rejected::ShuttingDown),
        }
    }
}

/// Why a gateway may not run: its key lacks `VALIDATE`, so every block it
/// proposed would be refused by validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the gateway key {key} may not propose blocks: it lacks the validate permission in the chain's state at height {height}{validators}. Set key_file to a validator's key file, or grant this key validate through a gateway that is a validator: sensorchain tx grant {key} validate --key ADMIN.key --api http://VALIDATOR-API"
)]
pub struct NotValidator {
    /// The gateway's key.
    pub key: PublicKey,
    /// The height of the state checked.
    pub height: u64,
    /// `" (validators: …)"`, or empty if the chain has none.
    validators: String,
}

/// Refuses a key that may not propose blocks on `state` (no `VALIDATE`).
pub fn check_may_propose(state: &WorldState, key: &PublicKey) -> Result<(), NotValidator> {
    if state.has(key, Permissions::VALIDATE) {
        return Ok(());
    }
    let vals: Vec<String> = state
        .validators()
        .iter()
        .map(|v| v.public().to_string())
        .collect();
    let validators = if vals.is_empty() {
        String::new()
    } else {
        format!(" (validators: {})", vals.join(", "))
    };
    Err(NotValidator {
        key: *key,
        height: state.next_height().saturating_sub(1),
        validators,
    })
}

/// The state after `genesis` alone, validated.
pub fn genesis_state(genesis: &Block) -> anyhow::Result<WorldState> {
    let mut state = WorldState::new(genesis.header.chain_id);
    state
        .apply_block(genesis, None, SigCheck::Verify)
        .map_err(|e| anyhow::anyhow!("the genesis block is invalid: {e}"))?;
    Ok(state)
}

/// Rebuilds the state of the stored chain (the latest snapshot, then every
/// block after it, fully validated) without writing; `None` if the store is
/// empty. Fails if the store holds another chain than `genesis`'s.
///
/// First [`Store::check_integrity`] (the tables agree, the latest snapshot
/// is the state after its block, the last
/// [`START_RECENT_BLOCKS`](crate::store::integrity::START_RECENT_BLOCKS)
/// blocks link and hash to their roots); then the blocks after the snapshot
/// are replayed with the core's rules, and the state reached must commit to
/// the head header's `state_root`. Any failure refuses the store with what
/// is wrong and what to do ([`integrity::refusal`]).
pub fn replay(store: &Store, genesis: &Block) -> anyhow::Result<Option<WorldState>> {
    let chain_id = genesis.header.chain_id;
    let dir = store.path().parent().unwrap_or(store.path()).to_path_buf();
    let refuse = |e: StoreError| anyhow::anyhow!(integrity::refusal(&dir, &e));
    let checked = store
        .check_integrity(IntegrityDepth::Recent(integrity::START_RECENT_BLOCKS))
        .map_err(refuse)?;
    let Some(head) = checked.head else {
        return Ok(None);
    };
    let stored_genesis = store.block(0).map_err(refuse)?.ok_or_else(|| {
        refuse(StoreError::corrupt_in(
            "blocks",
            Some(0),
            "the store has a head but no genesis block",
        ))
    })?;
    if stored_genesis.hash() != genesis.hash() {
        bail!(
            "the data directory holds another chain (genesis {} here, {} configured)",
            stored_genesis.hash(),
            genesis.hash()
        );
    }
    let (mut state, from) = match checked.snapshot {
        Some((h, s)) if s.chain_id() == &chain_id => (s, h + 1),
        Some((h, _)) => {
            return Err(refuse(StoreError::corrupt_in(
                "snapshots",
                Some(h),
                "the snapshot is of another chain",
            )));
        }
        None => (WorldState::new(chain_id), 0),
    };
    for entry in store.blocks(from) {
        let (h, bytes) = entry.map_err(refuse)?;
        let block = crate::store::decode_block(h, &bytes).map_err(refuse)?;
        state
            .apply_block(&block, None, SigCheck::Verify)
            .map_err(|e| {
                refuse(StoreError::corrupt_in(
                    "blocks",
                    Some(h),
                    format!("the stored block breaks the ledger's rules: {e}"),
                ))
            })?;
    }
    let head_header = store.header(head.height).map_err(refuse)?.ok_or_else(|| {
        refuse(StoreError::corrupt_in(
            "blocks",
            Some(head.height),
            "missing",
        ))
    })?;
    if state.next_height() != head.height + 1 || state.last_hash() != head.hash {
        return Err(refuse(StoreError::corrupt_in(
            "meta",
            Some(head.height),
            format!(
                "the head record ({}, {}) does not match the blocks",
                head.height, head.hash
            ),
        )));
    }
    if state.commitment() != head_header.state_root {
        return Err(refuse(StoreError::corrupt_in(
            "snapshots",
            Some(head.height),
            "the recovered state does not commit to the head block's state_root",
        )));
    }
    Ok(Some(state))
}

/// Rebuilds the state from the store, initialising an empty store with
/// `genesis`; refuses (before writing anything) a `key` that may not
/// propose on the resulting state.
fn recover(store: &Store, genesis: &Block, key: &PublicKey) -> anyhow::Result<WorldState> {
    if let Some(state) = replay(store, genesis)? {
        check_may_propose(&state, key)?;
        return Ok(state);
    }
    let state = genesis_state(genesis)?;
    check_may_propose(&state, key)?;
    store.commit_block(
        genesis,
        &genesis.encoded_txs(),
        None,
        Some(&state.snapshot()),
    )?;
    Ok(state)
}

/// A block proposed on the speculative state, on its way to the store.
struct Proposed {
    built: BuiltBlock,
    /// Every submitter of the batch and its outcome (`None` until decided:
    /// the transactions in the block are decided when it is stored).
    replies: Vec<(Reply, Option<Result<Committed, Rejected>>)>,
    snapshot: bool,
    started: Instant,
}

/// The block producer, in two threads so that building block N+1 overlaps
/// storing block N:
///
/// * the **proposer** (this thread) collects verified transactions and cuts
///   a block as soon as the committer is idle (group commit: the batch is
///   whatever arrived while the previous block was being stored), or when
///   `batch_max_txs` are waiting, or `batch_timeout` after the first; it
///   builds each block on the state after the previous *proposed* block;
/// * the **committer** validates each block with the core rule, stores it
///   durably, publishes the new state and answers the submitters.
///
/// If storing a block fails, the blocks proposed on top of it are refused
/// too (they no longer link to the stored head) and the proposer restarts
/// from the stored state.
fn produce(inner: Arc<Shared>, rx: Receiver<Pending>, cfg: NodeConfig) {
    let in_flight = Arc::new(InFlight::default());
    let failures = Arc::new(AtomicU64::new(0));
    // One block being stored and one waiting: enough to overlap the two.
    let (to_committer, blocks) = sync_channel::<Proposed>(1);
    let committer = {
        let (inner, in_flight, failures) = (inner.clone(), in_flight.clone(), failures.clone());
        std::thread::Builder::new()
            .name("block-committer".into())
            .spawn(move || {
                for p in blocks {
                    commit_proposed(&inner, p, &failures);
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
        let f = failures.load(Ordering::Acquire);
        if f != seen_failures {
            // A block failed to store: what was built on it is void.
            seen_failures = f;
            in_flight.wait_idle(Instant::now() + Duration::from_secs(3600));
            spec = inner.committed_state();
        }
        if !spec.has(&inner.key.public(), Permissions::VALIDATE) {
            // A block before this one took VALIDATE from this gateway: a
            // block built now would fail validation. Nothing more can be
            // committed once it is stored; the node is stopping then (see
            // `Node::lost_validate`).
            for p in batch {
                let _ = p.reply.send(Err(Rejected::ShuttingDown));
            }
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

/// Moves what is queued into `batch`, up to `max`; true if the queue is
/// closed (the node is stopping).
fn drain(rx: &Receiver<Pending>, batch: &mut Vec<Pending>, max: usize) -> bool {
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

/// Cuts a block from `batch` on `spec` (proposal: leaves out what the state
/// refuses).
fn propose(inner: &Shared, spec: &WorldState, mut batch: Vec<Pending>, snapshot: bool) -> Proposed {
    let started = Instant::now();
    // One signer's transactions in sequence order, whatever order concurrent
    // submitters reached the queue in (stable: otherwise arrival order).
    batch.sort_by_key(|p| (p.tx.body.signer, p.tx.body.sequence));
    let mut replies = Vec::with_capacity(batch.len());
    let mut pool = Vec::with_capacity(batch.len());
    for p in batch {
        pool.push((p.tx, p.encoded));
        replies.push((p.reply, None));
    }
    let built = build_block_from_pool(spec, &inner.key, pool, now_ms(), SigCheck::AlreadyVerified);
    for (i, e) in &built.rejected {
        replies[*i].1 = Some(Err(match e {
            TxRuleError::BlockFull => Rejected::Busy,
            e => Rejected::Rule(*e),
        }));
    }
    inner
        .metrics
        .block_build_seconds
        .observe(started.elapsed().as_secs_f64());
    Proposed {
        built,
        replies,
        snapshot,
        started,
    }
}

/// Validates and stores one proposed block and answers its submitters.
fn commit_proposed(inner: &Shared, p: Proposed, failures: &AtomicU64) {
    let Proposed {
        built,
        mut replies,
        snapshot,
        started,
    } = p;
    let block = &built.block;
    if !block.txs.is_empty() {
        let stored_at = Instant::now();
        let committed = inner.committed_state();
        // Validation: the one rule, as every gateway and the auditor apply
        // it, on the stored state (which also refuses a block built on a
        // block that failed to store).
        let mut next = (*committed).clone();
        let result = next
            .apply_block_encoded(block, &built.encoded, None, SigCheck::AlreadyVerified)
            .map_err(|e| {
                // The proposer checks what validation checks: this is a bug,
                // not the senders' fault. Nothing was committed.
                tracing::error!(
                    height = block.header.height,
                    txs = block.txs.len(),
                    "proposed block failed validation, nothing committed: {e}"
                );
                Rejected::Storage(format!("internal: proposed block failed validation: {e}"))
            })
            .and_then(|()| {
                let snap = snapshot.then(|| next.snapshot());
                inner
                    .store
                    .commit_block(block, &built.encoded, None, snap.as_deref())
                    .map_err(|e: StoreError| {
                        tracing::error!(
                            height = block.header.height,
                            txs = block.txs.len(),
                            "cannot store block, nothing committed: {e}"
                        );
                        Rejected::Storage(e.to_string())
                    })
            });
        match result {
            Ok(()) => {
                let height = block.header.height;
                let hash = block.header.hash();
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
                for (k, (&i, tx)) in built.kept.iter().zip(&block.txs).enumerate() {
                    replies[i].1 = Some(Ok(Committed {
                        height,
                        index: k as u32,
                        tx_id: Transaction::id_of_encoded(&built.encoded[k]),
                    }));
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
                // Events before answers: a revocation reaches the sessions
                // no later than its submitter learns it is committed.
                let _ = inner.events.send(NodeEvent::Block {
                    height,
                    hash,
                    txs: block.txs.len(),
                });
                if !changed.is_empty() {
                    let _ = inner.events.send(NodeEvent::PermissionsChanged(changed));
                }
                tracing::debug!(height, txs = block.txs.len(), "block committed");
            }
            Err(e) => {
                failures.fetch_add(1, Ordering::AcqRel);
                for &i in &built.kept {
                    replies[i].1 = Some(Err(e.clone()));
                }
            }
        }
    }
    for (reply, outcome) in replies {
        let outcome =
            outcome.unwrap_or_else(|| Err(Rejected::Storage("internal: no outcome".into())));
        let _ = reply.send(outcome);
    }
}

/// Maps a strict-decoding error to a rejection (for callers decoding first).
pub fn malformed(e: DecodeError) -> Rejected {
    Rejected::Malformed(e.to_string())
}

#[cfg(test)]
mod tests;
