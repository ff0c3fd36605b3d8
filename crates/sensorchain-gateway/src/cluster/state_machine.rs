//! The ledger as the cluster's Raft state machine ([`LedgerStateMachine`]).
//!
//! Every member applies the committed log entries in log order to its own
//! chain store (`chain.redb`), with the core's one validation rule, reading
//! nothing local (no clock, no configuration, no node id): the same log
//! gives the same chain on every member.
//!
//! * [`ClusterRequest::Block`]: strictly decoded, validated with
//!   `WorldState::apply_block_encoded` against the state after the last
//!   accepted block. Valid: stored (one durable write with the applied mark,
//!   the next validator set if the block changed it, and this gateway's own
//!   vote record), answered [`ClusterResponse::Applied`], and — if this
//!   gateway is a validator at that height — signed: its
//!   [`FinalityVote`] leaves in [`Outcome::Block`]. Invalid: the same
//!   recorded rejection on every member ([`Store::rejections`]), answered
//!   [`ClusterResponse::Rejected`]; never an `Err` (openraft treats that as
//!   fatal), never stored, never signed.
//! * [`ClusterRequest::Finality`]: a [`FinalityCert`] for a stored block,
//!   checked against the validator set in force at its height
//!   ([`Store::validator_set_at`]) with core's `FinalityCert::verify` (all
//!   or nothing); stored beside the block ([`Outcome::Final`]) or a recorded
//!   rejection (unknown block, already certified, not a quorum, a bad vote).
//! * Blank and membership entries: only the applied mark (and the
//!   membership) is written.
//!
//! The applied mark (the last applied log id and the membership) is written
//! in the same redb transaction as the block, certificate or rejection of
//! its entry, so an entry is applied exactly once across crashes: on
//! restart openraft re-applies from the mark.
//!
//! Decoding, validation and the redb commit run on tokio's blocking pool
//! (`spawn_blocking`), never on the runtime's workers that drive Raft's
//! timers; a large block's signatures are checked on all cores first (the
//! audit's check), and the core's sequential check runs only when one
//! fails, to name the first error.
//!
//! **Snapshots.** A snapshot is the world state after the head block, with
//! the head's height and hash and how many certificates the member that
//! built it had stored. Installing one on a member whose chain is at that
//! head adopts it. A member *behind* it first back-fills the blocks below
//! the head from its peers ([`super::backfill`]): each block validated with
//! the core rule from its own state, each certificate checked against the
//! validator set of its height, stored; the snapshot is adopted only when
//! the state so reached equals the snapshot's state and at least as many
//! certificates are stored. A member *ahead* of it (a chain that does not
//! have the snapshot's head) refuses it: that is a storage error, which
//! stops this member's Raft, never a silent rewrite of a stored chain —
//! unless the chain holds the snapshot's head block: a chain restored or
//! re-synced outside Raft (`sensorchain restore`, `resync`: no Raft state)
//! then takes the snapshot's position only. Such a chain replays the log's
//! earlier entries too: a block or certificate it holds already is a
//! recorded rejection saying so, logged at debug level, never applied
//! twice.

// openraft's `StorageError` is the error type of the traits implemented
// here (over 200 bytes); boxing it would only move the size elsewhere.
#![allow(clippy::result_large_err)]

use crate::crash_point::{self, Point};
use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, SnapshotMeta,
    StorageIOError, StoredMembership,
};
use sensorchain_core::block::{Block, BlockHeader, FinalityCert, FinalityVote};
use sensorchain_core::codec;
use sensorchain_core::hash::Hash32;
use sensorchain_core::identity::{Keypair, PublicKey, VerifyingKey};
use sensorchain_core::state::{SigCheck, WorldState};
use sensorchain_core::tx::{Transaction, TxKind};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::backfill::{BACKFILL_PAUSE, BACKFILL_TRIES, BackfillError, BlockSource};
use super::network::{BLOCKS_PER_REQUEST, ServedBlock};
use super::types::{ClusterRequest, ClusterResponse, Entry, GatewayNode, LogId, NodeId};
use super::types::{StorageError, TypeConfig};
use super::verified::Verified;
use crate::audit::block_signatures_verified;
use crate::node::{genesis_state, replay};
use crate::store::{Applied, CERT_MAX_LEN, Store, StoreError};

/// The membership as openraft records it.
pub type Membership = StoredMembership<NodeId, GatewayNode>;

/// What the ledger did with a committed entry, for the gateway's other
/// parts (the reply registry, the sessions, the vote sender).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A block is stored at `height`.
    Block {
        /// Its height.
        height: u64,
        /// Its hash.
        hash: Hash32,
        /// Its transactions' ids, in block order.
        tx_ids: Vec<Hash32>,
        /// This gateway's finality vote for it (recorded durably first), if
        /// it is a validator at that height.
        vote: Option<FinalityVote>,
        /// The identities whose permissions or role it changed.
        changed: Vec<PublicKey>,
        /// How many of its transactions are readings.
        readings: u64,
    },
    /// The log entry at `index` was refused by the ledger rule.
    Rejected {
        /// Its Raft log index.
        index: u64,
        /// Why.
        reason: String,
    },
    /// The block at `height` is final: its certificate is stored.
    Final {
        /// Its height.
        height: u64,
        /// Its hash.
        hash: Hash32,
    },
}

/// The store's applied mark: what the state machine has applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Mark {
    log_id: Option<LogId>,
    membership: Membership,
}

/// A snapshot's data: the world state after the head block.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotBody {
    head_height: u64,
    head_hash: Hash32,
    state: Vec<u8>,
    /// How many certificates the member that built it had stored.
    certified: u64,
}

/// Settings of the state machine.
#[derive(Debug, Clone)]
pub struct StateMachineConfig {
    /// Blocks between world-state snapshots in the chain store.
    pub snapshot_every: u64,
    /// The transactions whose signatures this gateway's ingest verified
    /// (not verified again by `apply`); none: `apply` verifies every one.
    pub verified: Option<Arc<Verified>>,
}

impl Default for StateMachineConfig {
    fn default() -> Self {
        StateMachineConfig {
            snapshot_every: 64,
            verified: None,
        }
    }
}

/// What the state machine holds between calls.
struct Core {
    store: Arc<Store>,
    /// The state after the last accepted block.
    state: Arc<WorldState>,
    /// Publishes `state` (read without the core's lock).
    published: watch::Sender<Arc<WorldState>>,
    mark: Mark,
    /// This gateway's validator key (none: it never votes).
    key: Option<Arc<Keypair>>,
    outcomes: Option<mpsc::Sender<Outcome>>,
    cfg: StateMachineConfig,
    since_snapshot: u64,
    /// Entries applied since the last durable write.
    since_durable: u64,
    /// The last snapshot built or installed.
    current: Option<(SnapshotMeta<NodeId, GatewayNode>, Vec<u8>)>,
    /// Where the blocks below an installed snapshot's head come from
    /// (weak: the source holds the network, which may hold this state
    /// machine; its owner keeps it).
    source: Option<std::sync::Weak<dyn BlockSource>>,
}

/// The ledger as openraft's state machine (see the module docs).
#[derive(Clone)]
pub struct LedgerStateMachine {
    core: Arc<Mutex<Core>>,
    state: watch::Receiver<Arc<WorldState>>,
}

impl LedgerStateMachine {
    /// Opens the state machine over `store`: replays the stored chain (the
    /// start-up integrity check and full validation of `node::replay`), or
    /// stores `genesis` in an empty store. `key` is this gateway's
    /// validator key; `outcomes` receives an [`Outcome`] for each block,
    /// rejection and certificate applied (the state machine waits when it
    /// is full: its receiver must not wait for the state machine). Synchronous and heavy for a long chain: call it off the
    /// async runtime.
    pub fn open(
        store: Arc<Store>,
        genesis: &Block,
        key: Option<Arc<Keypair>>,
        outcomes: Option<mpsc::Sender<Outcome>>,
        cfg: StateMachineConfig,
    ) -> anyhow::Result<LedgerStateMachine> {
        let state = match replay(&store, genesis)? {
            Some(s) => s,
            None => {
                let s = genesis_state(genesis)?;
                let mark = encode_mark(&Mark::default())?;
                store.commit_block_applied(
                    genesis,
                    &genesis.to_vec(),
                    &genesis.encoded_txs(),
                    Some(&s.snapshot()),
                    Applied {
                        mark: &mark,
                        validators_next: Some(&validator_keys(&s)),
                        own_vote: false,
                        durable: true,
                    },
                )?;
                s
            }
        };
        LedgerStateMachine::from_state(store, state, key, outcomes, cfg)
    }

    /// [`open`](Self::open) for a caller that has replayed the stored chain
    /// already (the gateway's start-up check): `state` must be the state
    /// after the stored head (or after the genesis just stored).
    pub fn from_state(
        store: Arc<Store>,
        state: WorldState,
        key: Option<Arc<Keypair>>,
        outcomes: Option<mpsc::Sender<Outcome>>,
        cfg: StateMachineConfig,
    ) -> anyhow::Result<LedgerStateMachine> {
        // A chain stored before the cluster recorded no validator sets: the
        // set in force from here on is the current one.
        if store.validator_set_at(state.next_height())?.is_none() {
            store.record_validator_set(state.next_height(), &validator_keys(&state))?;
        }
        let mark = match store.applied_mark()? {
            Some(b) => decode_mark(&b)?,
            None => Mark::default(),
        };
        let state = Arc::new(state);
        let (published, state_rx) = watch::channel(state.clone());
        Ok(LedgerStateMachine {
            state: state_rx,
            core: Arc::new(Mutex::new(Core {
                store,
                state,
                published,
                mark,
                key,
                outcomes,
                cfg,
                since_snapshot: 0,
                since_durable: 0,
                current: None,
                source: None,
            })),
        })
    }

    /// The state after the last accepted block.
    pub fn state(&self) -> Arc<WorldState> {
        self.state.borrow().clone()
    }

    /// A receiver of the state after each accepted block.
    pub fn watch_state(&self) -> watch::Receiver<Arc<WorldState>> {
        self.state.clone()
    }

    /// Sets where the blocks below a snapshot's head come from when this
    /// member installs a snapshot ahead of its chain (the peers; without a
    /// source such an install fails). Held weakly: the caller keeps
    /// `source` for as long as the state machine is to use it.
    pub fn set_block_source(&self, source: &Arc<dyn BlockSource>) {
        self.lock().source = Some(Arc::downgrade(source));
    }

    /// Finishes the install of a Raft snapshot that a crash cut short (the
    /// back-fill of the blocks below its head, recorded in the chain store
    /// when it began): openraft may have purged its log past this member's
    /// applied mark meanwhile, so the state machine must reach the
    /// snapshot before Raft starts. Call it once the block source is set,
    /// before `Raft::new`, off the async runtime (it waits on the peers).
    /// Returns whether there was one to finish.
    pub fn resume_install(&self) -> anyhow::Result<bool> {
        let mut c = self.lock();
        let Some(blob) = c.store.pending_snapshot()? else {
            return Ok(false);
        };
        let (meta, data): (SnapshotMeta<NodeId, GatewayNode>, Vec<u8>) =
            postcard::from_bytes(&blob).map_err(|e| {
                anyhow::anyhow!("the snapshot being installed does not decode: {e}")
            })?;
        if c.mark.log_id >= meta.last_log_id {
            c.store.set_pending_snapshot(None)?;
            return Ok(false);
        }
        tracing::warn!(
            snapshot = %meta.snapshot_id,
            "the install of a Raft snapshot was cut short (a crash): finishing it first"
        );
        // This runs at the start, before anything reads the outcomes: a
        // back-fill of more blocks than the channel holds would wait on it
        // for good (the soak found a start hung there). Nobody waits on
        // these blocks' outcomes — a new process has no pending answers,
        // and the node reads its state from the store once started — so
        // none are sent.
        let outcomes = c.outcomes.take();
        let r = c.install(&meta, data);
        c.outcomes = outcomes;
        r.map_err(|e| anyhow::anyhow!("finishing the snapshot's install: {e}"))?;
        Ok(true)
    }

    /// The chain store it applies to.
    pub fn store(&self) -> Arc<Store> {
        self.lock().store.clone()
    }

    /// The last applied log id.
    pub fn applied(&self) -> Option<LogId> {
        self.lock().mark.log_id
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the core on tokio's blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Core) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let core = self.core.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = core.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c)
        })
        .await
        .map_err(|e| sm_error(ErrorVerb::Write, format!("the apply task failed: {e}")))?
    }
}

/// A block (or a blank entry or a rejection) is written durably only one
/// in this many times; the writes between are not (redb's
/// `Durability::None`: on disk with the next durable commit). Certificates
/// and membership changes are always written durably, and a durable commit
/// makes every write before it durable: when a block's transactions are
/// acknowledged (its certificate applied), the block is on this gateway's
/// disk. The Raft log holds every committed entry durably, so a crash loses
/// at most the last applied marks, and openraft applies those entries again
/// from the durable mark at the restart, to the same result (the same log
/// gives the same chain, and the same block the same vote). The log is
/// purged only below a snapshot, which is built after a durable write.
pub const DURABLE_EVERY: u64 = 256;

/// The sorted public keys of the `VALIDATE` holders of `state`.
fn validator_keys(state: &WorldState) -> Vec<PublicKey> {
    let mut v: Vec<PublicKey> = state.validators().iter().map(|k| *k.public()).collect();
    v.sort_unstable_by_key(|k| k.0);
    v
}

fn encode_mark(m: &Mark) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(m)
        .map_err(|e| StoreError::Invalid(format!("cannot encode the applied mark: {e}")))
}

fn decode_mark(b: &[u8]) -> Result<Mark, StoreError> {
    postcard::from_bytes(b).map_err(|e| {
        StoreError::corrupt_in(
            "meta",
            None,
            format!("the applied mark does not decode: {e}"),
        )
    })
}

fn sm_error(verb: ErrorVerb, msg: impl Into<String>) -> StorageError {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        AnyError::error(msg.into()),
    )
    .into()
}

fn store_error(verb: ErrorVerb) -> impl Fn(StoreError) -> StorageError {
    move |e| StorageIOError::new(ErrorSubject::StateMachine, verb, AnyError::new(&e)).into()
}

impl Core {
    /// Applies one committed entry; `Err` only for a storage failure.
    fn apply(&mut self, entry: Entry) -> Result<ClusterResponse, StoreError> {
        self.mark.log_id = Some(entry.log_id);
        let index = entry.log_id.index;
        match entry.payload {
            EntryPayload::Blank => {
                let durable = self.durable_now();
                self.store
                    .record_applied(&encode_mark(&self.mark)?, None, durable)?;
                Ok(ClusterResponse::Noop)
            }
            EntryPayload::Membership(m) => {
                self.mark.membership = StoredMembership::new(Some(entry.log_id), m);
                self.store
                    .record_applied(&encode_mark(&self.mark)?, None, true)?;
                self.since_durable = 0;
                Ok(ClusterResponse::Noop)
            }
            EntryPayload::Normal(ClusterRequest::Block(bytes)) => self.apply_block(index, &bytes),
            EntryPayload::Normal(ClusterRequest::Finality(bytes)) => self.apply_cert(index, &bytes),
        }
    }

    /// Whether the write of the entry being applied is to be durable: one
    /// in [`DURABLE_EVERY`] (the others are made durable by it).
    fn durable_now(&mut self) -> bool {
        self.since_durable += 1;
        if self.since_durable >= DURABLE_EVERY {
            self.since_durable = 0;
            true
        } else {
            false
        }
    }

    /// Makes every write so far durable (an empty durable commit of the
    /// mark).
    fn flush(&mut self) -> Result<(), StoreError> {
        self.store
            .record_applied(&encode_mark(&self.mark)?, None, true)?;
        self.since_durable = 0;
        Ok(())
    }

    /// Records the refusal of the entry at `index`, the same on every member.
    fn reject(&mut self, index: u64, reason: String) -> Result<ClusterResponse, StoreError> {
        self.refuse(index, reason, false)
    }

    /// [`reject`](Self::reject), logged as a warning unless `held`: the
    /// entry carries a block or certificate this chain holds already (a
    /// chain restored or re-synced outside Raft replays the log's earlier
    /// entries), which is expected, not a fault.
    fn refuse(
        &mut self,
        index: u64,
        reason: String,
        held: bool,
    ) -> Result<ClusterResponse, StoreError> {
        let durable = self.durable_now();
        self.store
            .record_applied(&encode_mark(&self.mark)?, Some((index, &reason)), durable)?;
        if held {
            tracing::debug!(index, "log entry refused: {reason}");
        } else {
            tracing::warn!(index, "log entry refused by the ledger rule: {reason}");
        }
        self.emit(Outcome::Rejected {
            index,
            reason: reason.clone(),
        });
        Ok(ClusterResponse::Rejected { reason })
    }

    fn emit(&self, o: Outcome) {
        if let Some(tx) = &self.outcomes {
            // No receiver left: nobody is listening, nothing to tell.
            let _ = tx.blocking_send(o);
        }
    }

    fn apply_block(&mut self, index: u64, bytes: &[u8]) -> Result<ClusterResponse, StoreError> {
        let block = match Block::decode(bytes) {
            Ok(b) => b,
            Err(e) => return self.reject(index, format!("the block does not decode: {e}")),
        };
        let height = block.header.height;
        if height < self.state.next_height()
            && self
                .store
                .header(height)?
                .is_some_and(|h| h.hash() == block.header.hash())
        {
            let why = format!("this chain holds block {height} already");
            return self.refuse(index, why, true);
        }
        let encoded = block.encoded_txs();
        let tx_ids: Vec<Hash32> = encoded
            .iter()
            .map(|t| Transaction::id_of_encoded(t))
            .collect();
        let known = match &self.cfg.verified {
            Some(v) => v.take(&tx_ids),
            None => vec![false; tx_ids.len()],
        };
        let next = match self.validate(&block, &encoded, &known) {
            Ok(next) => next,
            Err(e) => return self.reject(index, format!("invalid block: {e}")),
        };
        crash_point::reached(Point::ApplyValidated);
        let durable = self.durable_now();
        let (height, hash) =
            self.store_valid(&block, bytes, &encoded, tx_ids, next, true, durable)?;
        crash_point::reached(Point::ApplyStored);
        Ok(ClusterResponse::Applied {
            height,
            hash: hash.0,
        })
    }

    /// The state after `block` if the core rule accepts it from the
    /// current state; the signatures not `known` (verified by this
    /// gateway's ingest) are checked on all cores first, and the core's
    /// own sequential check runs only when one fails, to name the error.
    fn validate(
        &self,
        block: &Block,
        encoded: &[Vec<u8>],
        known: &[bool],
    ) -> Result<WorldState, sensorchain_core::state::BlockError> {
        let sigs = if block_signatures_verified(self.state.chain_id(), block, encoded, known) {
            SigCheck::AlreadyVerified
        } else {
            SigCheck::Verify
        };
        let mut next = (*self.state).clone();
        next.apply_block_encoded(block, encoded, None, sigs)?;
        Ok(next)
    }

    /// Stores a block validated into `next` (with the applied mark, the
    /// next validator set if it changed it, a state snapshot at the
    /// cadence, and — if `may_vote` and this gateway validates at that
    /// height — its own vote record), publishes the state and emits the
    /// block's outcome. Returns its height and hash.
    #[allow(clippy::too_many_arguments)]
    fn store_valid(
        &mut self,
        block: &Block,
        bytes: &[u8],
        encoded: &[Vec<u8>],
        tx_ids: Vec<Hash32>,
        next: WorldState,
        may_vote: bool,
        durable: bool,
    ) -> Result<(u64, Hash32), StoreError> {
        let height = block.header.height;
        let hash = block.header.hash();
        let before = validator_keys(&self.state);
        let after = validator_keys(&next);
        let voter = self
            .key
            .clone()
            .filter(|k| may_vote && before.contains(&k.public()));
        self.since_snapshot += 1;
        let snapshot = (self.since_snapshot >= self.cfg.snapshot_every).then(|| next.snapshot());
        let mark = encode_mark(&self.mark)?;
        if snapshot.is_some() {
            crash_point::reached(Point::StateSnapshot);
        }
        self.store.commit_block_applied(
            block,
            bytes,
            encoded,
            snapshot.as_deref(),
            Applied {
                mark: &mark,
                validators_next: (after != before).then_some(after.as_slice()),
                own_vote: voter.is_some(),
                durable,
            },
        )?;
        if snapshot.is_some() {
            self.since_snapshot = 0;
        }
        self.state = Arc::new(next);
        self.published.send_replace(self.state.clone());
        let vote = voter.map(|k| FinalityCert::vote(&block.header, &k));
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
        self.emit(Outcome::Block {
            height,
            hash,
            tx_ids,
            vote,
            changed,
            readings,
        });
        Ok((height, hash))
    }

    /// A certificate's bytes checked against the stored block at its
    /// height and the validator set in force there (and, if
    /// `refuse_certified`, refused for a block already certified): the
    /// certificate and that block's header, or why not (`Ok(Err)`; `Err`
    /// only for a storage failure).
    fn check_cert(
        &self,
        bytes: &[u8],
        refuse_certified: bool,
    ) -> Result<Result<(FinalityCert, BlockHeader), String>, StoreError> {
        let cert: FinalityCert = match codec::decode_exact(bytes, CERT_MAX_LEN) {
            Ok(c) => c,
            Err(e) => return Ok(Err(format!("the certificate does not decode: {e}"))),
        };
        let h = cert.height;
        let Some(header) = self.store.header(h)? else {
            return Ok(Err(format!("a certificate for height {h}: no block there")));
        };
        if refuse_certified && self.store.cert(h)?.is_some() {
            return Ok(Err(format!("block {h} is already certified")));
        }
        let Some(set) = self.store.validator_set_at(h)? else {
            return Ok(Err(format!("no validator set is recorded at height {h}")));
        };
        let keys: Vec<VerifyingKey> = set
            .iter()
            .filter_map(|k| VerifyingKey::from_public(k).ok())
            .collect();
        if let Err(e) = cert.verify(&header, &keys) {
            return Ok(Err(format!("certificate of block {h}: {e}")));
        }
        Ok(Ok((cert, header)))
    }

    fn apply_cert(&mut self, index: u64, bytes: &[u8]) -> Result<ClusterResponse, StoreError> {
        if let Ok(c) = codec::decode_exact::<FinalityCert>(bytes, CERT_MAX_LEN)
            && self.store.cert(c.height)?.is_some_and(|stored| stored == c)
        {
            let why = format!(
                "this chain holds the certificate of block {} already",
                c.height
            );
            return self.refuse(index, why, true);
        }
        let (cert, header) = match self.check_cert(bytes, true)? {
            Ok(c) => c,
            Err(why) => return self.reject(index, why),
        };
        let h = cert.height;
        // Durable: the block's transactions are acknowledged once this is
        // applied, so the certificate and everything applied before it (the
        // block included) are on this gateway's disk by then.
        self.store
            .put_cert_applied(h, &cert, &encode_mark(&self.mark)?, true)?;
        crash_point::reached(Point::CertStored);
        self.since_durable = 0;
        let hash = header.hash();
        self.emit(Outcome::Final { height: h, hash });
        Ok(ClusterResponse::Certified {
            height: h,
            hash: hash.0,
        })
    }

    fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StoreError> {
        // openraft purges the log below a snapshot: what it applied must be
        // on disk first.
        self.flush()?;
        let body = SnapshotBody {
            head_height: self.state.next_height().saturating_sub(1),
            head_hash: self.state.last_hash(),
            state: self.state.snapshot(),
            certified: self.store.cert_count()?,
        };
        let data = postcard::to_allocvec(&body)
            .map_err(|e| StoreError::Invalid(format!("cannot encode the snapshot: {e}")))?;
        let last = self.mark.log_id;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.mark.membership.clone(),
            snapshot_id: format!(
                "{}-{}-h{}",
                last.map(|l| l.leader_id.term).unwrap_or(0),
                last.map(|l| l.index).unwrap_or(0),
                body.head_height
            ),
        };
        self.current = Some((meta.clone(), data.clone()));
        crash_point::reached(Point::RaftSnapshot);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }

    fn install(
        &mut self,
        meta: &SnapshotMeta<NodeId, GatewayNode>,
        data: Vec<u8>,
    ) -> Result<(), StoreError> {
        let body: SnapshotBody = postcard::from_bytes(&data)
            .map_err(|e| StoreError::Invalid(format!("the snapshot does not decode: {e}")))?;
        let head = self.store.head()?.map(|h| (h.height, h.hash));
        let at = |h: Option<(u64, Hash32)>| h.map_or_else(|| "nothing".into(), |h| h.0.to_string());
        if self.holds_beyond(head, &body)? {
            // A chain restored or re-synced past the snapshot (`sensorchain
            // restore`, `resync`: no Raft state, so the leader sends its
            // snapshot), which holds the snapshot's head block: the
            // snapshot's state is this chain's state at that block (the
            // block's hash commits to it), so only Raft's position is
            // taken. The entries after it that carry blocks this chain
            // holds already are refused when applied (their heights are
            // taken), the same chain either way.
            tracing::info!(
                snapshot = body.head_height,
                head = head.map_or(0, |h| h.0),
                "this chain holds the snapshot's head block and more: taking the snapshot's position only"
            );
            // Certificates its source lacked (a backup's tip) are asked
            // of the peers, as after a back-fill.
            let fill = self.store.cert_count()? < body.certified;
            if fill {
                self.set_pending(meta, &data)?;
                self.backfill(meta, &body)?;
            }
            self.mark = Mark {
                log_id: meta.last_log_id,
                membership: meta.last_membership.clone(),
            };
            self.flush()?;
            if fill {
                self.store.set_pending_snapshot(None)?;
            }
            self.current = Some((meta.clone(), data));
            return Ok(());
        }
        // Behind the snapshot's head, or at it with fewer certificates
        // (a chain restored from a backup whose tip was not certified
        // yet): back-filled (the blocks, then the certificates).
        let behind = head.is_none_or(|(h, _)| h < body.head_height)
            || (head == Some((body.head_height, body.head_hash))
                && self.store.cert_count()? < body.certified);
        if behind {
            // A crash during the (long) back-fill must not leave this
            // member with openraft's log purged past its applied mark:
            // the install is recorded first and resumed at the next start
            // ([`LedgerStateMachine::resume_install`]).
            self.set_pending(meta, &data)?;
            self.backfill(meta, &body)?;
        }
        let head = self.store.head()?.map(|h| (h.height, h.hash));
        if head != Some((body.head_height, body.head_hash)) {
            return Err(StoreError::Invalid(format!(
                "the snapshot is at block {} and this chain at {}, on another block: this member's chain is not the cluster's",
                body.head_height,
                at(head),
            )));
        }
        let state = WorldState::from_snapshot(&body.state)
            .map_err(|e| StoreError::Invalid(format!("the snapshot's state: {e}")))?;
        if state.commitment() != self.state.commitment() {
            return Err(StoreError::Invalid(
                "the snapshot's state differs from the state of the same chain here".into(),
            ));
        }
        let certified = self.store.cert_count()?;
        if certified < body.certified {
            return Err(StoreError::Invalid(format!(
                "{certified} certificates stored here, the snapshot's member had {}",
                body.certified
            )));
        }
        self.mark = Mark {
            log_id: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        self.flush()?;
        if behind {
            self.store.set_pending_snapshot(None)?;
        }
        self.current = Some((meta.clone(), data));
        Ok(())
    }

    /// Records the snapshot being installed in the chain store, for
    /// [`LedgerStateMachine::resume_install`].
    fn set_pending(
        &self,
        meta: &SnapshotMeta<NodeId, GatewayNode>,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let pending = postcard::to_allocvec(&(meta, data)).map_err(|e| {
            StoreError::Invalid(format!("cannot record the snapshot being installed: {e}"))
        })?;
        self.store.set_pending_snapshot(Some(&pending))
    }

    /// Whether this chain (its head `head`) goes beyond the snapshot's
    /// head and holds its head block there. Only a chain stored outside
    /// Raft (restored, re-synced) can: a member's own chain is built by the
    /// entries it applied, which reach no further than the snapshot it is
    /// sent.
    fn holds_beyond(
        &self,
        head: Option<(u64, Hash32)>,
        body: &SnapshotBody,
    ) -> Result<bool, StoreError> {
        let Some((h, _)) = head else {
            return Ok(false);
        };
        if h <= body.head_height {
            return Ok(false);
        }
        Ok(self.store.header(body.head_height)?.map(|hd| hd.hash()) == Some(body.head_hash))
    }

    /// Fetches, validates and stores the blocks from this member's head to
    /// the snapshot's head (module docs), then the certificates still
    /// missing, until as many are stored as the snapshot's member had.
    fn backfill(
        &mut self,
        meta: &SnapshotMeta<NodeId, GatewayNode>,
        body: &SnapshotBody,
    ) -> Result<(), StoreError> {
        let Some(source) = self.source.as_ref().and_then(std::sync::Weak::upgrade) else {
            return Err(StoreError::Invalid(format!(
                "the snapshot is at block {} and this chain behind it, with no peers to fetch the blocks between from",
                body.head_height
            )));
        };
        let members: Vec<(NodeId, GatewayNode)> = meta
            .last_membership
            .nodes()
            .map(|(id, n)| (*id, n.clone()))
            .collect();
        let start = self.state.next_height();
        tracing::info!(
            from = start,
            to = body.head_height,
            "catching up by snapshot: fetching the blocks below its head from the peers"
        );
        let mut attempt = 0u32;
        while self.state.next_height() <= body.head_height {
            let from = self.state.next_height();
            let max = (body.head_height - from + 1).min(u64::from(BLOCKS_PER_REQUEST)) as u32;
            let problem = match source.fetch(from, max, &members, attempt) {
                Ok(blocks) if blocks.is_empty() => format!("no block {from} served"),
                Ok(blocks) => match self.take_blocks(blocks, body.head_height) {
                    Ok(()) => {
                        attempt = 0;
                        continue;
                    }
                    Err(BackfillError::Store(e)) => return Err(e),
                    Err(BackfillError::Peer(why)) => why,
                },
                Err(why) => why,
            };
            attempt += 1;
            if attempt >= BACKFILL_TRIES {
                return Err(StoreError::Invalid(format!(
                    "catching up by snapshot: block {from} not obtained from the peers after {attempt} tries (last: {problem})"
                )));
            }
            tracing::warn!(from, attempt, "back-fill: {problem}");
            std::thread::sleep(BACKFILL_PAUSE);
        }
        // Certificates applied by the snapshot's member that this member
        // lacks — the peers asked first had not applied them yet, or a
        // crash lost the (not yet durable) write of one — are asked for
        // again, height by height from the head down, of every member in
        // turn; a height nobody certifies yet (the tip) is passed over.
        let count = self.store.cert_count()?;
        if count < body.certified {
            let need = (body.certified - count) as usize;
            let mut heights = Vec::new();
            let mut h = body.head_height;
            while h >= 1 && heights.len() < need + 1_024 {
                if self.store.cert(h)?.is_none() {
                    heights.push(h);
                }
                h -= 1;
            }
            for h in heights {
                if self.store.cert_count()? >= body.certified {
                    break;
                }
                for attempt in 0..members.len() as u32 {
                    let Ok(b) = source.fetch(h, 1, &members, attempt) else {
                        continue;
                    };
                    let Some(cert) = b.first().and_then(|b| b.cert.clone()) else {
                        continue;
                    };
                    match self.take_cert(h, &cert) {
                        Ok(()) => break,
                        Err(BackfillError::Store(e)) => return Err(e),
                        Err(BackfillError::Peer(_)) => {}
                    }
                }
            }
        }
        tracing::info!(
            blocks = self.state.next_height() - start,
            "caught up to the snapshot's head"
        );
        Ok(())
    }

    /// Validates and stores the served blocks in order, up to `last`.
    fn take_blocks(&mut self, blocks: Vec<ServedBlock>, last: u64) -> Result<(), BackfillError> {
        for served in blocks {
            let h = self.state.next_height();
            if h > last {
                break;
            }
            if let Some(pause) = super::backfill::test_pause() {
                std::thread::sleep(pause);
            }
            self.take_block(&served.block)?;
            if let Some(c) = served.cert {
                self.take_cert(h, &c)?;
            }
        }
        Ok(())
    }

    /// One back-filled block: strictly decoded, validated from this
    /// member's state with every signature checked, stored (not durably:
    /// the install's last write is), never voted on.
    fn take_block(&mut self, bytes: &[u8]) -> Result<(), BackfillError> {
        let want = self.state.next_height();
        let block = Block::decode(bytes)
            .map_err(|e| BackfillError::Peer(format!("block {want} does not decode: {e}")))?;
        if block.header.height != want {
            return Err(BackfillError::Peer(format!(
                "block {} served for height {want}",
                block.header.height
            )));
        }
        let encoded = block.encoded_txs();
        let next = self
            .validate(&block, &encoded, &vec![false; encoded.len()])
            .map_err(|e| BackfillError::Peer(format!("block {want} is invalid: {e}")))?;
        let tx_ids = encoded
            .iter()
            .map(|t| Transaction::id_of_encoded(t))
            .collect();
        self.store_valid(&block, bytes, &encoded, tx_ids, next, false, false)?;
        Ok(())
    }

    /// A back-filled certificate of the stored block at `h`: checked
    /// against the validator set of its height, stored.
    fn take_cert(&mut self, h: u64, bytes: &[u8]) -> Result<(), BackfillError> {
        let (cert, header) = self
            .check_cert(bytes, false)?
            .map_err(BackfillError::Peer)?;
        if cert.height != h {
            return Err(BackfillError::Peer(format!(
                "a certificate for height {} served for block {h}",
                cert.height
            )));
        }
        self.store
            .put_cert_applied(h, &cert, &encode_mark(&self.mark)?, false)?;
        self.emit(Outcome::Final {
            height: h,
            hash: header.hash(),
        });
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for LedgerStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.blocking(|c| c.build_snapshot().map_err(store_error(ErrorVerb::Read)))
            .await
    }
}

impl RaftStateMachine<TypeConfig> for LedgerStateMachine {
    type SnapshotBuilder = LedgerStateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        let c = self.lock();
        Ok((c.mark.log_id, c.mark.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ClusterResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.blocking(move |c| {
            entries
                .into_iter()
                .map(|e| c.apply(e).map_err(store_error(ErrorVerb::Write)))
                .collect()
        })
        .await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, GatewayNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let meta = meta.clone();
        let data = snapshot.into_inner();
        self.blocking(move |c| {
            c.install(&meta, data)
                .map_err(store_error(ErrorVerb::Write))
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let c = self.lock();
        Ok(c.current.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests;
