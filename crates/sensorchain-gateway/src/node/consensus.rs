//! The node's consensus: its blocks go through Raft (openraft, the
//! [`crate::cluster`] module) and are stored by the ledger state machine on
//! every member; a single gateway is a cluster of one, on the same code.
//!
//! * Raft runs on a runtime of its own ([`RAFT_THREAD`] threads), so that
//!   nothing else a gateway does (the API, the links) delays its timers;
//!   signature checks run on the verification pool and apply's store
//!   writes on that runtime's blocking threads, never on its workers.
//! * The proposer hands each block to [`Consensus::write_block`]; the state
//!   machine applies it on every member and emits an [`Outcome`], which the
//!   follower thread ([`FOLLOW_THREAD`], `follow`) turns into the node's
//!   state, metrics and events, and this gateway's finality vote.
//! * Votes go to the leader's [`Collector`]; at a quorum it appends the
//!   certificate, and when the certificate is applied the block's
//!   transactions are **final**: only then are their submitters answered
//!   (acknowledged means final: never lost, never rolled back).

// openraft's error types are large; they are the traits' own.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use openraft::error::ClientWriteError;
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::RaftLogStorage;
use openraft::{AnyError, ChangeMembers, Raft, ServerState};
use sensorchain_core::block::{FinalityCert, FinalityVote};
use sensorchain_core::hash::Hash32;
use sensorchain_core::identity::Keypair;
use sensorchain_core::permissions::Permissions;
use sensorchain_core::state::WorldState;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{mpsc, watch};

mod rejoin;

use super::replies::LedgerEvent;
use super::{NodeEvent, Rejected, Shared};
use crate::cluster::backfill::{BlockSource, PeerBlockSource, serve_blocks};
use crate::cluster::network::{ServedBlock, admit_member};
use crate::cluster::state_machine::StateMachineConfig;
use crate::cluster::{
    ClusterRequest, ClusterResponse, ClusterSettings, Collector, GatewayNode, LedgerStateMachine,
    LogStore, NodeId, Outcome, PeerHandler, PeerNetwork, TypeConfig, Verdict, Verified,
};
use crate::net::peer::PeerConfig;
use crate::store::Store;
use futures::future::BoxFuture;
use sensorchain_core::handshake::Denial;
use sensorchain_core::identity::{KeyId, PublicKey, VerifyingKey};
use sensorchain_core::peer::{
    ForwardAnswer, MemberRole, PeerStatus, RejoinAnswer, VoteAnswer, VoteRefusal, reason_text,
};
use std::net::SocketAddr;

/// Name of the threads of Raft's runtime.
pub const RAFT_THREAD: &str = "sc-raft";

/// Name of the thread that follows the state machine's outcomes.
pub const FOLLOW_THREAD: &str = "sc-follow";

/// Worker threads of Raft's runtime.
const RAFT_WORKERS: usize = 2;

/// Outcomes the state machine may emit before it waits for the follower.
const OUTCOMES_QUEUED: usize = 1024;

/// Peers' votes waiting for the follower thread.
const VOTES_QUEUED: usize = 4096;

/// Transactions being forwarded to the leader at once (the peer link's
/// pipeline).
pub(super) const FORWARDS_IN_FLIGHT: usize = 64;

/// How often a member gives its votes for the blocks not yet final again
/// (to the leader of the moment: votes lost with a leader are not lost).
const REVOTE_EVERY: Duration = Duration::from_secs(2);

/// Longest wait at start for the committed log entries to be applied.
const REPLAY_WAIT: Duration = Duration::from_secs(3600);

/// How long the peer links may take to stop.
const PEER_GRACE: Duration = Duration::from_secs(5);

/// Heights below the head searched for this gateway's uncertified votes
/// when it starts or becomes leader.
const REVOTE_DEPTH: u64 = 4096;

/// One gateway's view of its cluster (`GET /cluster`, `sensorchain cluster
/// status`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ClusterStatus {
    /// This gateway's member id.
    pub node_id: NodeId,
    /// `leader`, `follower`, `candidate`, `learner` or `stopped`.
    pub role: String,
    /// Raft's current term.
    pub term: u64,
    /// The leader this gateway knows of.
    pub leader: Option<NodeId>,
    /// The last index of this gateway's Raft log.
    pub last_log_index: Option<u64>,
    /// The last log index applied to its chain.
    pub applied_index: Option<u64>,
    /// Its chain's head height.
    pub height: u64,
    /// The height of its last final (certified) block.
    pub finalized_height: Option<u64>,
    /// For the leader: milliseconds since a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// `ok`, or why Raft stopped here.
    pub health: String,
    /// The members, as this gateway's log has them.
    pub members: Vec<MemberStatus>,
    /// Equivocation evidence this gateway holds (pairs of votes).
    pub evidence: usize,
}

/// A [`ClusterStatus`] as a peer tells it ([`PeerStatus`]).
fn peer_status(s: &ClusterStatus) -> PeerStatus {
    PeerStatus {
        role: match s.role.as_str() {
            "leader" => MemberRole::Leader,
            "follower" => MemberRole::Follower,
            "candidate" => MemberRole::Candidate,
            "learner" => MemberRole::Learner,
            _ => MemberRole::Stopped,
        },
        term: s.term,
        leader: s.leader,
        applied_index: s.applied_index,
        height: s.height,
        finalized_height: s.finalized_height,
        health: reason_text(&s.health),
    }
}

/// What a member said of itself when asked over the peer links
/// ([`Node::cluster_overview`](super::Node::cluster_overview)).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct MemberReport {
    /// `leader`, `follower`, `candidate`, `learner` or `stopped`.
    pub role: String,
    /// Its Raft term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// The last log index applied to its chain.
    pub applied_index: Option<u64>,
    /// Its chain's head height.
    pub height: u64,
    /// Its last final height.
    pub finalized_height: Option<u64>,
    /// `ok`, or why its Raft stopped.
    pub health: String,
}

impl From<PeerStatus> for MemberReport {
    fn from(p: PeerStatus) -> Self {
        MemberReport {
            role: match p.role {
                MemberRole::Leader => "leader",
                MemberRole::Follower => "follower",
                MemberRole::Candidate => "candidate",
                MemberRole::Learner => "learner",
                MemberRole::Stopped => "stopped",
            }
            .into(),
            term: p.term,
            leader: p.leader,
            applied_index: p.applied_index,
            height: p.height,
            finalized_height: p.finalized_height,
            health: p.health,
        }
    }
}

/// A member in a [`ClusterStatus`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct MemberStatus {
    /// Its member id.
    pub id: NodeId,
    /// Its peer-link address.
    pub addr: String,
    /// Its public key (hex).
    pub key: String,
    /// A voter (else a learner).
    pub voter: bool,
    /// On the leader: the last log index known replicated to it.
    pub matched_index: Option<u64>,
    /// On the leader: log entries it is behind the leader.
    pub lag: Option<u64>,
    /// What the member said of itself when this gateway asked it (only in
    /// [`Node::cluster_overview`](super::Node::cluster_overview); this
    /// gateway's own entry is its own view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<MemberReport>,
    /// Why it could not be asked (unreachable, no answer in time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
}

/// Why a membership change was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// This gateway does not lead; the leader, if known.
    #[error("this gateway does not lead (the leader is {})", .0.map_or("unknown".to_string(), |l| format!("member {l}")))]
    NotLeader(Option<NodeId>),
    /// The key does not hold `VALIDATE` and `CONNECT` on the chain: grant
    /// them first (membership follows the chain).
    #[error(
        "key {0} does not hold validate and connect on the chain: grant them first (sensorchain tx grant {0} validate,connect --key ADMIN.key)"
    )]
    NotValidator(PublicKey),
    /// Raft refused or failed the change.
    #[error("{0}")]
    Refused(String),
}

/// How the proposer's block ended in the log.
#[derive(Debug)]
pub(super) enum Written {
    /// Applied at this height (final later, when its certificate is).
    Applied,
    /// The state machine refused it (a stale or wrong block): its
    /// transactions go back to the proposer.
    Refused(String),
    /// Not written: this gateway is not the leader (any more); Raft's
    /// answer.
    NotLeader(String),
    /// Raft has stopped (a storage failure or shutdown): nothing more can
    /// be committed here.
    Stopped(String),
}

/// A peer's finality vote on its way to the follower thread, which holds
/// the collector, and the answer it waits for.
pub(super) struct PeerVote {
    height: u64,
    hash: Hash32,
    vote: FinalityVote,
    answer: tokio::sync::oneshot::Sender<VoteAnswer>,
}

/// This gateway's Raft and what the node needs of it.
pub(super) struct Consensus {
    raft: Raft<TypeConfig>,
    id: NodeId,
    handle: Handle,
    /// The peer links (none: a cluster of one without a peer listener).
    net: Option<PeerNetwork>,
    /// Where the peer listener listens, once it does.
    peer_addr: std::sync::OnceLock<SocketAddr>,
    /// The peer-link address to listen on.
    listen: Option<String>,
    /// Peers' votes for the follower thread.
    votes: mpsc::Sender<PeerVote>,
    /// Forwards in flight to the leader, at most [`FORWARDS_IN_FLIGHT`].
    forwards: Arc<tokio::sync::Semaphore>,
    /// Set when the node stops Raft itself (a shutdown, not a failure).
    pub(super) stopping: std::sync::atomic::AtomicBool,
    /// Wakes the follower thread to end (after Raft has stopped).
    stop_follower: Arc<tokio::sync::Notify>,
    /// Transactions whose signatures this gateway verified.
    pub(super) verified: Arc<Verified>,
    /// The state after the last applied block.
    pub(super) state: watch::Receiver<Arc<WorldState>>,
    /// Where the state machine back-fills from (it holds it weakly).
    _block_source: Option<Arc<dyn BlockSource>>,
    /// The members' reports of themselves, last asked (at most once a
    /// [`REPORTS_FRESH`]: a public route must not make every request a
    /// round of peer requests).
    reports: tokio::sync::Mutex<Option<(std::time::Instant, Reports)>>,
}

/// What each other member said of itself, or why it could not be asked.
pub type Reports = Vec<(NodeId, Result<MemberReport, String>)>;

/// How long the members' reports are reused.
const REPORTS_FRESH: Duration = Duration::from_secs(1);

/// How long a member is given to report.
const REPORT_WAIT: Duration = Duration::from_secs(2);

/// What [`start`] starts besides the [`Consensus`]: the runtime (owned by
/// the producer thread, which shuts it down last) and the outcomes.
pub(super) struct Started {
    pub(super) consensus: Consensus,
    pub(super) runtime: Runtime,
    pub(super) outcomes: mpsc::Receiver<Outcome>,
    pub(super) votes: mpsc::Receiver<PeerVote>,
    /// The last log index this gateway knew was committed when it stopped.
    pub(super) committed: Option<u64>,
}

/// Starts Raft over the chain in `store` (replayed: `state` is the state
/// after its head) with `key` as this gateway's validator key.
pub(super) fn start(
    store: Arc<Store>,
    state: WorldState,
    key: &Keypair,
    settings: &ClusterSettings,
    snapshot_every: u64,
    verified_capacity: usize,
    peer_metrics: &Arc<crate::net::peer::metrics::PeerMetrics>,
) -> anyhow::Result<Started> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RAFT_WORKERS)
        .thread_name(RAFT_THREAD)
        .enable_all()
        .build()
        .context("cannot start Raft's runtime")?;
    let dir = store
        .path()
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let log = LogStore::open_in_dir(&dir)
        .map_err(|e| anyhow::anyhow!("cannot open the Raft log in {}: {e}", dir.display()))?;
    let verified = Arc::new(Verified::new(verified_capacity));
    let (tx, outcomes) = mpsc::channel(OUTCOMES_QUEUED);
    let sm = LedgerStateMachine::from_state(
        store,
        state,
        Some(Arc::new(key.clone())),
        Some(tx),
        StateMachineConfig {
            snapshot_every,
            verified: Some(verified.clone()),
        },
    )?;
    let state = sm.watch_state();
    let config = settings.raft_config()?;
    let id = settings.node_id;
    let mut members = settings.members.clone();
    members.entry(id).or_insert_with(|| GatewayNode {
        addr: settings.listen.clone().unwrap_or_default(),
        public_key: key.public().0,
    });
    let net = (settings.listen.is_some() || !settings.is_single()).then(|| {
        let chain = *state.borrow().chain_id();
        let mut cfg = PeerConfig::new(Arc::new(key.clone()), chain);
        cfg.metrics = peer_metrics.clone();
        // A member back from a restart must hear the leader before its
        // own election timeout: the leader's link to it, backing off since
        // it went down, dials again within half the shortest timeout.
        cfg.backoff_max = cfg
            .backoff_max
            .min(Duration::from_millis(settings.election_ms.0 / 2))
            .max(cfg.backoff_min);
        let net = PeerNetwork::new(id, cfg);
        net.pin_nodes(members.clone());
        net
    });
    // A member catching up by snapshot fetches the blocks below its head
    // from the peers (cluster::backfill), asking the leader first.
    let raft_cell: Arc<std::sync::OnceLock<Raft<TypeConfig>>> = Arc::default();
    let block_source = net.as_ref().map(|net| {
        let cell = raft_cell.clone();
        let source: Arc<dyn BlockSource> = Arc::new(PeerBlockSource::new(
            net.clone(),
            runtime.handle().clone(),
            Arc::new(move || cell.get().and_then(|r| r.metrics().borrow().current_leader)),
        ));
        sm.set_block_source(&source);
        source
    });
    // An install of a snapshot cut short by a crash is finished first.
    sm.resume_install()?;
    let network = net.clone();
    let mut join = settings.join;
    let peers: Vec<NodeId> = members.keys().copied().filter(|m| *m != id).collect();
    let probe_bound =
        Duration::from_millis(settings.election_ms.1 * 5).max(Duration::from_secs(30));
    let raft = run_on(&runtime, async move {
        let mut log = log;
        let committed = log
            .read_committed()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the Raft log: {e}"))?;
        let empty = log
            .get_log_state()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the Raft log: {e}"))?
            .last_log_id
            .is_none()
            && log
                .read_vote()
                .await
                .map_err(|e| anyhow::anyhow!("cannot read the Raft vote: {e}"))?
                .is_none();
        if let Some(n) = network
            .as_ref()
            .filter(|_| empty && !join && !peers.is_empty())
        {
            // An empty log under a configured membership: new, or wiped.
            if rejoin::probe(n, &peers, probe_bound).await? == rejoin::Start::Follow {
                join = true;
            }
        }
        let raft = match network {
            Some(n) => Raft::new(id, config, n, log, sm).await,
            None => Raft::new(id, config, NoPeers, log, sm).await,
        }
        .context("cannot start Raft")?;
        if !join && !raft.is_initialized().await? {
            raft.initialize(members)
                .await
                .context("cannot initialise the cluster's membership")?;
        }
        anyhow::Ok((raft, committed.map(|c| c.index)))
    })??;
    let (raft, committed) = raft;
    let _ = raft_cell.set(raft.clone());
    let (votes_tx, votes) = mpsc::channel(VOTES_QUEUED);
    Ok(Started {
        consensus: Consensus {
            raft,
            id,
            handle: runtime.handle().clone(),
            net,
            peer_addr: Default::default(),
            listen: settings.listen.clone(),
            votes: votes_tx,
            forwards: Arc::new(tokio::sync::Semaphore::new(FORWARDS_IN_FLIGHT)),
            stopping: Default::default(),
            stop_follower: Default::default(),
            verified,
            state,
            _block_source: block_source,
            reports: Default::default(),
        },
        runtime,
        outcomes,
        votes,
        committed,
    })
}

/// Runs `f` on `rt` and waits for it from this (synchronous) thread, which
/// may be a worker of another runtime: the wait is a plain channel receive.
fn run_on<T: Send + 'static>(
    rt: &Runtime,
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> anyhow::Result<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv()
        .map_err(|_| anyhow::anyhow!("Raft's runtime stopped"))
}

impl Consensus {
    /// This gateway's view of the cluster (`height`, `finalized`: its
    /// chain's; `evidence`: the pairs it holds).
    pub(super) fn status(
        &self,
        height: u64,
        finalized: Option<u64>,
        evidence: usize,
    ) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        let role = match (&m.running_state, m.state) {
            (Err(_), _) => "stopped",
            (_, ServerState::Leader) => "leader",
            (_, ServerState::Follower) => "follower",
            (_, ServerState::Candidate) => "candidate",
            (_, ServerState::Learner) => "learner",
            (_, ServerState::Shutdown) => "stopped",
        };
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let matched = m.replication.as_ref();
        let last = m.last_log_index;
        let members = membership
            .nodes()
            .map(|(id, n)| {
                let matched_index = matched
                    .and_then(|r| r.get(id).copied().flatten())
                    .map(|l| l.index)
                    .or_else(|| {
                        (*id == self.id && role == "leader")
                            .then_some(last)
                            .flatten()
                    });
                MemberStatus {
                    id: *id,
                    addr: n.addr.clone(),
                    key: sensorchain_core::identity::PublicKey(n.public_key).to_string(),
                    voter: voters.contains(id),
                    matched_index,
                    lag: (role == "leader")
                        .then(|| last.map(|l| l.saturating_sub(matched_index.unwrap_or(0))))
                        .flatten(),
                    reported: None,
                    unreachable: None,
                }
            })
            .collect();
        ClusterStatus {
            node_id: self.id,
            role: role.into(),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            height,
            finalized_height: finalized,
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            health: match &m.running_state {
                Ok(()) => "ok".into(),
                Err(e) => e.to_string(),
            },
            members,
            evidence,
        }
    }

    /// Sets the log gauges from Raft's metrics and the files' sizes in
    /// `dir` (the data directory).
    pub(super) fn refresh_metrics(&self, g: &crate::metrics::LogGauges, dir: &std::path::Path) {
        let m = self.raft.metrics().borrow().clone();
        let index = |i: Option<u64>| i.map_or(-1, |i| i as i64);
        let last = m.last_log_index;
        let purged = m.purged.map(|l| l.index);
        g.term.set(m.current_term as i64);
        g.last_log_index.set(index(last));
        g.applied_index.set(index(m.last_applied.map(|l| l.index)));
        g.purged_index.set(index(purged));
        g.entries.set(match (last, purged) {
            (Some(l), Some(p)) => l.saturating_sub(p) as i64,
            (Some(l), None) => l as i64 + 1,
            (None, _) => 0,
        });
        g.leader.set(i64::from(
            m.state == ServerState::Leader && m.running_state.is_ok(),
        ));
        let size = |name: &str| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len() as i64);
        g.log_file_bytes
            .set(size(crate::cluster::log_store::FILE_NAME));
        g.chain_file_bytes.set(size(crate::store::FILE_NAME));
    }

    /// Raft's handle.
    pub(super) fn raft(&self) -> Raft<TypeConfig> {
        self.raft.clone()
    }

    /// Where peers' votes go to the follower thread.
    pub(super) fn votes_sender(&self) -> mpsc::Sender<PeerVote> {
        self.votes.clone()
    }

    /// The leader this gateway knows of.
    pub(super) fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Every other member's report of itself, asked over the peer links
    /// (each at most [`REPORT_WAIT`], all at once; reused for
    /// [`REPORTS_FRESH`]). Empty without peer links.
    pub(super) async fn reports(&self) -> Reports {
        let Some(net) = self.net.clone() else {
            return Vec::new();
        };
        let mut cached = self.reports.lock().await;
        if let Some((at, r)) = cached.as_ref()
            && at.elapsed() < REPORTS_FRESH
        {
            return r.clone();
        }
        let me = self.id;
        let others: Vec<NodeId> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .filter(|id| *id != me)
            .collect();
        let asked = self
            .handle
            .spawn(async move {
                futures::future::join_all(others.into_iter().map(|id| {
                    let net = net.clone();
                    async move {
                        let r = net
                            .status(id, REPORT_WAIT)
                            .await
                            .map(MemberReport::from)
                            .map_err(|e| e.to_string());
                        (id, r)
                    }
                }))
                .await
            })
            .await
            .unwrap_or_default();
        *cached = Some((std::time::Instant::now(), asked.clone()));
        asked
    }

    /// Where the peer listener listens (none: no peer links).
    pub(super) fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr.get().copied()
    }

    /// Serves the peer links on the `[cluster] listen` address (if any),
    /// to `handler`.
    pub(super) fn serve(&self, handler: Arc<dyn PeerHandler>) -> anyhow::Result<()> {
        let (Some(net), Some(addr)) = (self.net.clone(), self.listen.clone()) else {
            return Ok(());
        };
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let r = async {
                let l = tokio::net::TcpListener::bind(&addr)
                    .await
                    .with_context(|| format!("cannot listen for peer links on {addr}"))?;
                net.listen(l, handler)
                    .with_context(|| format!("cannot serve peer links on {addr}"))
            }
            .await;
            let _ = tx.send(r);
        });
        let addr = rx
            .recv()
            .map_err(|_| anyhow::anyhow!("Raft's runtime stopped"))??;
        let _ = self.peer_addr.set(addr);
        tracing::info!(%addr, "peer links listening");
        Ok(())
    }

    /// Re-checks the peers' sessions against the current permissions.
    pub(super) fn recheck_peers(&self) {
        if let Some(n) = &self.net {
            n.recheck_sessions();
        }
    }

    /// Adds member `id` at `node` (its key must hold `VALIDATE` and
    /// `CONNECT` in `state`: membership follows the chain): first as a
    /// learner, replicated the log until it has caught up, then as a voter
    /// (openraft's joint consensus). On the leader only.
    pub(super) async fn add_member(
        &self,
        state: &WorldState,
        id: NodeId,
        node: GatewayNode,
    ) -> Result<(), MembershipError> {
        let key = PublicKey(node.public_key);
        if !state.has(&key, Permissions::VALIDATE.union(Permissions::CONNECT)) {
            return Err(MembershipError::NotValidator(key));
        }
        if !self.is_leader() {
            return Err(MembershipError::NotLeader(self.leader()));
        }
        let m = self.raft.metrics().borrow().membership_config.clone();
        if let Some((other, _)) = m
            .membership()
            .nodes()
            .find(|(i, n)| **i != id && n.public_key == node.public_key)
        {
            return Err(MembershipError::Refused(format!(
                "key {key} is member {other} already"
            )));
        }
        if let Some(n) = &self.net {
            n.set_nodes([(id, node.clone())]);
        }
        let raft = self.raft.clone();
        let r = self
            .handle
            .spawn(async move {
                raft.add_learner(id, node, true).await?;
                raft.change_membership(ChangeMembers::AddVoterIds([id].into()), false)
                    .await
            })
            .await
            .map_err(|e| MembershipError::Refused(format!("the change failed: {e}")))?;
        r.map(|_| ()).map_err(|e| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                MembershipError::NotLeader(f.leader_id)
            }
            e => MembershipError::Refused(e.to_string()),
        })
    }

    /// On the leader: the voters whose keys no longer hold `VALIDATE` in
    /// `state` leave the membership (this gateway excepted: a leader that
    /// lost it stops, and the next leader removes it).
    fn drop_non_validators(&self, state: &WorldState) {
        if !self.is_leader() {
            return;
        }
        let m = self.raft.metrics().borrow().membership_config.clone();
        let gone: std::collections::BTreeSet<NodeId> = m
            .membership()
            .nodes()
            .filter(|(id, n)| {
                **id != self.id && !state.has(&PublicKey(n.public_key), Permissions::VALIDATE)
            })
            .map(|(id, _)| *id)
            .collect();
        if gone.is_empty() {
            return;
        }
        tracing::info!(?gone, "members whose keys lost validate leave the cluster");
        let voters: std::collections::BTreeSet<NodeId> = m.membership().voter_ids().collect();
        let (gone_voters, gone_learners): (std::collections::BTreeSet<NodeId>, _) =
            gone.into_iter().partition(|id| voters.contains(id));
        let raft = self.raft.clone();
        self.handle.spawn(async move {
            // voters leave by joint consensus (retain = false: not kept as
            // learners), learners simply
            if !gone_voters.is_empty()
                && let Err(e) = raft
                    .change_membership(ChangeMembers::RemoveVoters(gone_voters.clone()), false)
                    .await
            {
                tracing::warn!(?gone_voters, "cannot remove members: {e}");
            }
            if !gone_learners.is_empty()
                && let Err(e) = raft
                    .change_membership(ChangeMembers::RemoveNodes(gone_learners.clone()), false)
                    .await
            {
                tracing::warn!(?gone_learners, "cannot remove learners: {e}");
            }
        });
    }

    /// Waits (blocking this thread, up to `max`) until some member leads.
    pub(super) fn wait_any_leader(&self, max: Duration) -> Option<NodeId> {
        let mut m = self.raft.metrics();
        let wait = async move {
            let _ = tokio::time::timeout(
                max,
                m.wait_for(|m| m.running_state.is_err() || m.current_leader.is_some()),
            )
            .await;
        };
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            wait.await;
            let _ = tx.send(());
        });
        let _ = rx.recv();
        self.leader()
    }

    /// This gateway's member id.
    pub(super) fn id(&self) -> NodeId {
        self.id
    }

    /// Runs `f` on Raft's runtime.
    pub(super) fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        self.handle.spawn(f);
    }

    /// Forwards a transaction (its exact bytes) to the leader `to` and
    /// waits for its answer (at most [`FORWARDS_IN_FLIGHT`] at once).
    pub(super) async fn forward(&self, to: NodeId, tx: Vec<u8>) -> Result<ForwardAnswer, String> {
        let Some(net) = self.net.clone() else {
            return Err("this gateway has no peer links".into());
        };
        let _permit = self.forwards.acquire().await;
        net.forward(to, tx).await.map_err(|e| e.to_string())
    }

    /// Gives this gateway's vote to the leader `to` (its answer only
    /// logged: the periodic re-vote makes up for a lost one).
    fn send_vote(&self, to: NodeId, height: u64, hash: Hash32, vote: FinalityVote) {
        let Some(net) = self.net.clone() else { return };
        self.handle.spawn(async move {
            match net.send_vote(to, height, hash, vote).await {
                Ok(VoteAnswer::Counted) => {}
                Ok(a) => tracing::debug!(height, to, "finality vote not counted: {a:?}"),
                Err(e) => tracing::debug!(height, to, "finality vote not delivered: {e}"),
            }
        });
    }

    /// The last index of this gateway's Raft log.
    pub(super) fn last_log_index(&self) -> Option<u64> {
        self.raft.metrics().borrow().last_log_index
    }

    /// True while this gateway leads.
    pub(super) fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// Why Raft stopped, if it did.
    pub(super) fn stopped(&self) -> Option<String> {
        match &self.raft.metrics().borrow().running_state {
            Ok(()) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// Raft's account if it has stopped on a storage error, else `None`.
    pub(super) fn storage_failed(&self) -> Option<String> {
        match &self.raft.metrics().borrow().running_state {
            Err(e @ openraft::error::Fatal::StorageError(_)) => Some(e.to_string()),
            _ => None,
        }
    }

    /// Resolves with Raft's account once Raft has stopped on a storage
    /// error (openraft's `Fatal::StorageError`: a full disk, an I/O error);
    /// never for a shutdown or while Raft runs. Holds no handle to Raft.
    pub(super) fn storage_failure(
        &self,
    ) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut m = self.raft.metrics();
        async move {
            let failed = m
                .wait_for(|m| {
                    matches!(
                        m.running_state,
                        Err(openraft::error::Fatal::StorageError(_))
                    )
                })
                .await
                .map(|m| match &m.running_state {
                    Err(e) => e.to_string(),
                    Ok(()) => String::new(),
                });
            match failed {
                Ok(why) => why,
                // Raft is gone without a storage error: nothing to report
                Err(_) => std::future::pending().await,
            }
        }
    }

    /// Waits (blocking this thread, up to `max`) until this gateway leads or
    /// Raft stops; true if it leads.
    pub(super) fn wait_leader(&self, max: Duration) -> bool {
        let mut m = self.raft.metrics();
        let id = self.id;
        let wait = async move {
            let _ = tokio::time::timeout(
                max,
                m.wait_for(|m| {
                    m.running_state.is_err()
                        || (m.state == ServerState::Leader && m.current_leader == Some(id))
                }),
            )
            .await;
        };
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            wait.await;
            let _ = tx.send(());
        });
        let _ = rx.recv();
        self.is_leader()
    }

    /// Waits (blocking this thread) until the log entry at `index` is
    /// applied here (at start: what this gateway knew was committed).
    pub(super) fn wait_applied(&self, index: Option<u64>) -> anyhow::Result<()> {
        let Some(index) = index else { return Ok(()) };
        let raft = self.raft.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let r = raft
                .wait(Some(REPLAY_WAIT))
                .applied_index_at_least(Some(index), "replay of the committed log")
                .await
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("the committed Raft log was not applied: {e}"));
            let _ = tx.send(r);
        });
        rx.recv()
            .map_err(|_| anyhow::anyhow!("Raft's runtime stopped"))?
    }

    /// Appends a proposed block (its exact bytes) to the log; `done` gets
    /// what became of it, on Raft's runtime.
    pub(super) fn write_block(&self, bytes: Vec<u8>, done: impl FnOnce(Written) + Send + 'static) {
        let raft = self.raft.clone();
        self.handle.spawn(async move {
            let written = match raft.client_write(ClusterRequest::Block(bytes)).await {
                Ok(r) => match r.data {
                    ClusterResponse::Applied { .. } => Written::Applied,
                    ClusterResponse::Rejected { reason } => Written::Refused(reason),
                    other => Written::Refused(format!("unexpected answer {other:?}")),
                },
                Err(RaftError::APIError(e)) => Written::NotLeader(e.to_string()),
                Err(RaftError::Fatal(f)) => Written::Stopped(f.to_string()),
            };
            done(written);
        });
    }

    /// Appends a certificate to the log (its outcome is the state
    /// machine's; a refused one — already certified — changes nothing).
    fn write_cert(&self, cert: &FinalityCert) {
        let bytes = sensorchain_core::codec::encode_to_vec(cert);
        let raft = self.raft.clone();
        self.handle.spawn(async move {
            if let Err(e) = raft.client_write(ClusterRequest::Finality(bytes)).await {
                tracing::debug!("certificate not appended: {e}");
            }
        });
    }

    /// Waits (blocking this thread, up to `max`) until the block at
    /// `height` is final here, or Raft stops.
    pub(super) fn wait_final(&self, finalized: &super::Finalized, height: u64, max: Duration) {
        let until = std::time::Instant::now() + max;
        while std::time::Instant::now() < until && self.stopped().is_none() {
            match finalized.load(Ordering::Acquire) {
                f if f != u64::MAX && f >= height => return,
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// Stops Raft, then the peer links (their tasks end, the state machine
    /// and the log are released once `runtime` is dropped), waiting from
    /// this thread.
    pub(super) fn shutdown(&self, runtime: &Runtime) {
        self.stopping.store(true, Ordering::Release);
        let raft = self.raft.clone();
        let net = self.net.clone();
        let _ = run_on(runtime, async move {
            let _ = raft.shutdown().await;
            if let Some(n) = net
                && !n.shutdown(PEER_GRACE).await
            {
                tracing::warn!("peer links not stopped within {PEER_GRACE:?}");
            }
        });
        // the follower ends while the runtime still runs its timers
        self.stop_follower.notify_one();
    }
}

/// Follows the state machine's outcomes until it stops: the node's state,
/// metrics and events after each applied block; this gateway's vote to the
/// leader's collector; the answers to submitters when a block is final.
/// On the leader it also counts the peers' votes; every [`REVOTE_EVERY`]
/// it gives its votes for the blocks not yet final again.
pub(super) fn follow(
    inner: Arc<Shared>,
    mut outcomes: mpsc::Receiver<Outcome>,
    mut votes: mpsc::Receiver<PeerVote>,
) {
    let mut collector = Collector::new(inner.store.clone());
    // Transactions of applied blocks, by height, until their block is final.
    let mut awaiting: BTreeMap<u64, Vec<Hash32>> = BTreeMap::new();
    let mut was_leader = false;
    let handle = inner.consensus.handle.clone();
    let stop = inner.consensus.stop_follower.clone();
    let mut last_revote = std::time::Instant::now();
    enum Next {
        Outcome(Outcome),
        Vote(PeerVote),
        Tick,
        Stop,
    }
    loop {
        let next = handle.block_on(async {
            tokio::select! {
                o = outcomes.recv() => o.map_or(Next::Stop, Next::Outcome),
                Some(v) = votes.recv() => Next::Vote(v),
                _ = tokio::time::sleep(REVOTE_EVERY) => Next::Tick,
                _ = stop.notified() => Next::Stop,
            }
        });
        let leader = inner.consensus.is_leader();
        if leader && !was_leader {
            // a new leader: members that lost validate meanwhile go
            inner
                .consensus
                .drop_non_validators(&inner.consensus.state.borrow().clone());
            revote(&inner, &mut collector);
            last_revote = std::time::Instant::now();
        }
        was_leader = leader;
        if last_revote.elapsed() >= REVOTE_EVERY {
            revote(&inner, &mut collector);
            last_revote = std::time::Instant::now();
        }
        match next {
            Next::Stop => {
                // Raft has stopped: what was applied and not final will not
                // be final here; its submitters learn why (a resend after a
                // restart is answered as the replay it then is, if it was).
                let e = if inner.consensus.stopping.load(Ordering::Acquire) {
                    Rejected::ShuttingDown
                } else {
                    // Raft failed: its metrics say why a moment later.
                    let t = std::time::Instant::now();
                    loop {
                        if let Some(why) = inner.consensus.stopped() {
                            break Rejected::Storage(why);
                        }
                        if t.elapsed() > Duration::from_secs(2) {
                            break Rejected::Storage("Raft stopped".into());
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                };
                let left: Vec<(Hash32, Rejected)> = std::mem::take(&mut awaiting)
                    .into_values()
                    .flatten()
                    .map(|id| (id, e.clone()))
                    .collect();
                if !left.is_empty() {
                    inner.replies.resolve(LedgerEvent::Refused(left));
                }
                break;
            }
            Next::Tick => {}
            Next::Vote(v) => {
                let answer = if !leader {
                    VoteAnswer::NotLeader {
                        leader: inner.consensus.leader(),
                    }
                } else {
                    match collector.add(v.height, v.hash, v.vote) {
                        Ok(verdict) => vote_answer(&inner, verdict),
                        Err(e) => VoteAnswer::Refused {
                            reason: VoteRefusal::Invalid,
                            message: reason_text(&format!("the leader cannot count it now: {e}")),
                        },
                    }
                };
                let _ = v.answer.send(answer);
            }
            Next::Outcome(Outcome::Block {
                height,
                hash,
                tx_ids,
                vote,
                changed,
                readings,
            }) => {
                applied(&inner, height, hash, tx_ids.len(), changed, readings);
                if !tx_ids.is_empty() {
                    awaiting.insert(height, tx_ids);
                }
                if leader && let Ok(early) = collector.on_block(height) {
                    for v in early {
                        counted(&inner, v);
                    }
                }
                if let Some(v) = vote {
                    give_vote(&inner, &mut collector, height, hash, v);
                }
            }
            Next::Outcome(Outcome::Final { height, hash }) => {
                collector.on_final(height);
                // a late certificate of an older block must not lower it
                inner.finalized.fetch_max_final(height);
                inner
                    .metrics
                    .finalized_height
                    .set(inner.finalized.load(Ordering::Acquire) as i64);
                tracing::debug!(height, %hash, "block final");
                let _ = inner.events.send(NodeEvent::Final { height, hash });
                // Earlier heights left without a certificate (blocks from
                // before the cluster, or certified while this gateway was
                // down) are final too: a certificate covers its ancestors.
                let done: Vec<u64> = awaiting.range(..=height).map(|(h, _)| *h).collect();
                for h in done {
                    if let Some(tx_ids) = awaiting.remove(&h) {
                        inner
                            .replies
                            .resolve(LedgerEvent::Committed { height: h, tx_ids });
                    }
                }
            }
            Next::Outcome(Outcome::Rejected { .. }) => {}
        }
    }
}

/// A vote's verdict as the answer to the peer that gave it.
fn vote_answer(inner: &Shared, v: Verdict) -> VoteAnswer {
    let answer = match &v {
        Verdict::Refused(why) => VoteAnswer::Refused {
            reason: VoteRefusal::Invalid,
            message: reason_text(why),
        },
        Verdict::Equivocation(_) => VoteAnswer::Refused {
            reason: VoteRefusal::Equivocation,
            message: "this validator signed another block at this height: evidence kept".into(),
        },
        _ => VoteAnswer::Counted,
    };
    counted(inner, v);
    answer
}

/// The node's state, metrics and events after the block at `height`.
fn applied(
    inner: &Shared,
    height: u64,
    hash: Hash32,
    txs: usize,
    changed: Vec<PublicKey>,
    readings: u64,
) {
    let state = inner.consensus.state.borrow().clone();
    let key = inner.key.public();
    let lost = !state.has(&key, Permissions::VALIDATE);
    if !lost
        && !inner.may_propose.load(Ordering::Acquire)
        && !inner.lost_validate.borrow().is_some()
    {
        // a joining gateway's grant reached it: it takes submissions now
        tracing::info!(
            height,
            "block {height} holds this gateway's validate grant: it takes submissions"
        );
        inner.may_propose.store(true, Ordering::Release);
    }
    if lost && inner.may_propose.swap(false, Ordering::AcqRel) {
        let why = format!(
            "block {height} took the validate permission from this gateway's key {key}: it can commit nothing more and stops. \
             To run it again, grant it validate through a gateway that is a validator (sensorchain tx grant {key} validate --key ADMIN.key --api http://VALIDATOR-API)"
        );
        tracing::error!("{why}");
        inner.lost_validate.send_replace(Some(why));
    }
    let m = &inner.metrics;
    m.blocks_committed.inc();
    m.block_height.set(height as i64);
    m.txs_committed.inc_by(txs as u64);
    m.readings_committed.inc_by(readings);
    // Events before answers: a revocation reaches the sessions no later
    // than its submitter learns it is final.
    let _ = inner.events.send(NodeEvent::Block { height, hash, txs });
    if !changed.is_empty() {
        inner.consensus.recheck_peers();
        inner.consensus.drop_non_validators(&state);
        let _ = inner.events.send(NodeEvent::PermissionsChanged(changed));
    }
}

/// This gateway's vote for the block at `height`: counted here if it
/// leads, else given to the leader over the peer links.
fn give_vote(
    inner: &Shared,
    collector: &mut Collector,
    height: u64,
    hash: Hash32,
    vote: FinalityVote,
) {
    if inner.consensus.is_leader() {
        match collector.add(height, hash, vote) {
            Ok(v) => counted(inner, v),
            Err(e) => tracing::error!(height, "cannot count this gateway's vote: {e}"),
        }
    } else if let Some(l) = inner.consensus.leader() {
        inner.consensus.send_vote(l, height, hash, vote);
    }
}

/// Acts on a vote's verdict: a quorum's certificate goes to the log.
fn counted(inner: &Shared, v: Verdict) {
    match v {
        Verdict::Quorum(cert) => inner.consensus.write_cert(&cert),
        Verdict::Refused(why) => tracing::warn!("finality vote refused: {why}"),
        Verdict::Equivocation(e) => tracing::error!(
            height = e.height,
            "a validator signed two blocks at one height: evidence stored"
        ),
        Verdict::Counted { .. } | Verdict::Early | Verdict::Known => {}
    }
}

/// On becoming leader, and every [`REVOTE_EVERY`]: this gateway's own
/// recorded votes for the stored blocks not yet certified are given again
/// (signing the same hash again is safe: a vote is deterministic).
fn revote(inner: &Shared, collector: &mut Collector) {
    let store = &inner.store;
    let Ok(Some(head)) = store.head() else { return };
    let chain_id = inner.consensus.state.borrow().chain_id().to_owned();
    let from = match inner.finalized.load(Ordering::Acquire) {
        u64::MAX => head.height.saturating_sub(REVOTE_DEPTH),
        f => f
            .saturating_add(1)
            .max(head.height.saturating_sub(REVOTE_DEPTH)),
    };
    let mut heights = Vec::new();
    for h in (from..=head.height).rev() {
        match store.cert(h) {
            Ok(Some(_)) => break,
            Ok(None) => heights.push(h),
            Err(_) => return,
        }
    }
    for h in heights.into_iter().rev() {
        let (Ok(Some(voted)), Ok(Some(header))) = (store.own_vote(h), store.header(h)) else {
            continue;
        };
        if header.hash() != voted || header.chain_id != chain_id {
            continue;
        }
        let vote = FinalityCert::vote(&header, &inner.key);
        give_vote(inner, collector, h, voted, vote);
    }
}

/// The network of a cluster of one: there is nobody to send to.
struct NoPeers;

type Rpc<E = openraft::error::Infallible> = RPCError<NodeId, GatewayNode, RaftError<NodeId, E>>;

fn nobody<E: std::error::Error>(to: NodeId) -> Rpc<E> {
    RPCError::Unreachable(Unreachable::new(&AnyError::error(format!(
        "member {to}: this gateway has no peer links (a cluster of one)"
    ))))
}

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoLink;

    async fn new_client(&mut self, to: NodeId, _node: &GatewayNode) -> NoLink {
        NoLink(to)
    }
}

struct NoLink(NodeId);

impl RaftNetwork<TypeConfig> for NoLink {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _o: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, Rpc> {
        Err(nobody(self.0))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _o: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, Rpc<InstallSnapshotError>> {
        Err(nobody(self.0))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _o: RPCOption,
    ) -> Result<VoteResponse<NodeId>, Rpc> {
        Err(nobody(self.0))
    }
}

/// What this gateway serves to its peers: its Raft, the leader's intake
/// (forwarded transactions), the leader's collector (votes), admission.
pub(super) struct Peers {
    /// The node (weak: the peer links must not keep it alive).
    pub(super) inner: std::sync::Weak<super::Inner>,
    pub(super) raft: Raft<TypeConfig>,
    pub(super) state: watch::Receiver<Arc<WorldState>>,
    pub(super) votes: mpsc::Sender<PeerVote>,
}

impl PeerHandler for Peers {
    fn raft(&self) -> Raft<TypeConfig> {
        self.raft.clone()
    }

    fn blocks(&self, from: u64, max: u32) -> BoxFuture<'static, Vec<ServedBlock>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let Some(inner) = inner.upgrade() else {
                return Vec::new();
            };
            let store = inner.shared.store.clone();
            tokio::task::spawn_blocking(move || serve_blocks(&store, from, max))
                .await
                .unwrap_or_default()
        })
    }

    fn rejoin(&self, from: PublicKey) -> BoxFuture<'static, RejoinAnswer> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let Some(inner) = inner.upgrade() else {
                return RejoinAnswer::NotLeader {
                    leader: None,
                    established: false,
                };
            };
            inner.consensus.rejoin(from).await
        })
    }

    fn status(&self) -> BoxFuture<'static, PeerStatus> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let Some(inner) = inner.upgrade() else {
                return PeerStatus {
                    role: MemberRole::Stopped,
                    term: 0,
                    leader: None,
                    applied_index: None,
                    height: 0,
                    finalized_height: None,
                    health: "shutting down".into(),
                };
            };
            let node = super::Node { inner };
            let s = tokio::task::spawn_blocking(move || node.cluster_status()).await;
            match s {
                Ok(s) => peer_status(&s),
                Err(e) => PeerStatus {
                    role: MemberRole::Stopped,
                    term: 0,
                    leader: None,
                    applied_index: None,
                    height: 0,
                    finalized_height: None,
                    health: reason_text(&format!("status failed: {e}")),
                },
            }
        })
    }

    fn admit(&self, id: &KeyId) -> Result<VerifyingKey, Denial> {
        let state = self.state.borrow().clone();
        let m = self.raft.metrics().borrow().membership_config.clone();
        admit_member(&state, id, m.membership().nodes().map(|(_, n)| n))
    }

    fn forward(&self, from: PublicKey, tx: Vec<u8>) -> BoxFuture<'static, ForwardAnswer> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let Some(inner) = inner.upgrade() else {
                return ForwardAnswer::Busy;
            };
            let node = super::Node { inner };
            node.take_forwarded(from, tx)
        })
    }

    fn vote(
        &self,
        _from: PublicKey,
        height: u64,
        hash: Hash32,
        vote: FinalityVote,
    ) -> BoxFuture<'static, VoteAnswer> {
        let votes = self.votes.clone();
        Box::pin(async move {
            let (answer, rx) = tokio::sync::oneshot::channel();
            let v = PeerVote {
                height,
                hash,
                vote,
                answer,
            };
            if votes.send(v).await.is_err() {
                return VoteAnswer::NotLeader { leader: None };
            }
            rx.await.unwrap_or(VoteAnswer::NotLeader { leader: None })
        })
    }
}
