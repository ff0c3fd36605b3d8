//! openraft's network over the peer links ([`crate::net::peer`]):
//! [`PeerNetwork`] is the members' [`RaftNetworkFactory`] (AppendEntries,
//! Vote and InstallSnapshot as peer requests), the way a follower forwards
//! a transaction to the leader ([`PeerNetwork::forward`]) and a member
//! gives the leader its finality vote ([`PeerNetwork::send_vote`]), and the
//! listener that serves all of them to a [`PeerHandler`] the gateway
//! supplies ([`PeerNetwork::listen`]).
//!
//! # Use
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use sensorchain_gateway::cluster::network::{PeerHandler, PeerNetwork};
//! # use sensorchain_gateway::cluster::{LogStore, LedgerStateMachine};
//! # use sensorchain_gateway::net::peer::PeerConfig;
//! # async fn f(config: PeerConfig, raft_config: Arc<openraft::Config>, log: LogStore,
//! #     sm: LedgerStateMachine, make_handler: impl FnOnce(openraft::Raft<sensorchain_gateway::cluster::TypeConfig>) -> Arc<dyn PeerHandler>)
//! # -> anyhow::Result<()> {
//! let net = PeerNetwork::new(1, config);
//! let raft = openraft::Raft::new(1, raft_config, net.clone(), log, sm).await?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:7400").await?;
//! net.listen(listener, make_handler(raft.clone()))?;
//! // ... raft.initialize / client_write / net.forward(leader, tx) ...
//! raft.shutdown().await?;
//! net.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```
//!
//! # What goes where
//!
//! * **Dialling.** One outbound link per member, to the `addr` of its
//!   [`GatewayNode`], authenticated as its `public_key` (a peer that cannot
//!   prove that key is refused by the handshake). Members are learnt from
//!   openraft's `new_client` calls, from the Raft membership once
//!   [`listen`](PeerNetwork::listen) watches it, and from
//!   [`set_nodes`](PeerNetwork::set_nodes).
//! * **Timeouts.** Raft RPCs get openraft's `RPCOption::hard_ttl`; a
//!   forward or a vote [`PeerConfig::request_timeout`]. openraft 0.9 also
//!   bounds each AppendEntries by `Config::heartbeat_interval`
//!   (`replication/mod.rs`): a block must travel and be answered within it,
//!   so the heartbeat interval must exceed the transfer time of the
//!   largest block on the cluster's network (16 MiB at 100 Mbit/s: about
//!   1.4 s) — or blocks be smaller.
//! * **Size.** A request above the peer message bound (32 MiB) is not
//!   sent: an AppendEntries with several entries answers openraft
//!   `PayloadTooLarge` with how many entries fit, so it sends fewer.
//! * **Errors.** A peer unreachable, a link that died, a refused handshake:
//!   `RPCError::Unreachable` (openraft backs off); no answer in time:
//!   `RPCError::Timeout`; an answer that does not fit:
//!   `RPCError::Network`; openraft's own error on the other member:
//!   `RPCError::RemoteError`.
//! * **Serving.** Each request runs in its own task ([`crate::net::peer`]):
//!   a forwarded transaction or a vote being checked never holds up a
//!   heartbeat. The Raft payloads (openraft's types, postcard) are decoded
//!   and encoded off the runtime when above 1 MiB.

// openraft's RPC errors are the network trait's own error type.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, Raft};
use sensorchain_core::block::FinalityVote;
use sensorchain_core::codec;
use sensorchain_core::handshake::Denial;
use sensorchain_core::hash::Hash32;
use sensorchain_core::identity::{KeyId, PublicKey, VerifyingKey};
use sensorchain_core::peer::{
    Answer, ForwardAnswer, Kind, PEER_MAX_MESSAGE, PeerRequest, PeerStatus, RejoinAnswer, Request,
    StoredBlock, VoteAnswer,
};
use sensorchain_core::permissions::Permissions;
use sensorchain_core::state::WorldState;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::types::{GatewayNode, NodeId, TypeConfig};
use crate::net::peer::metrics::PeerMetrics;
use crate::net::peer::{
    Answered, PeerConfig, PeerError, PeerLink, PeerServer, PeerService, off_runtime_if_large,
    stopped,
};

/// What a member serves to its peers; the gateway implements it.
///
/// Every method is called on a tokio worker: keep `admit` to a few map
/// lookups, and run signature checks of `forward` and `vote` on the
/// verification pool inside the returned futures.
pub trait PeerHandler: Send + Sync + 'static {
    /// This member's Raft: AppendEntries, Vote and InstallSnapshot go to
    /// it.
    fn raft(&self) -> Raft<TypeConfig>;

    /// A transaction forwarded by the member `from` (its exact bytes, as
    /// the sensor signed them): queue it if this member leads.
    fn forward(&self, from: PublicKey, tx: Vec<u8>) -> BoxFuture<'static, ForwardAnswer>;

    /// The member `from`'s finality vote for the block at `height` with
    /// `hash`: count it if this member leads.
    fn vote(
        &self,
        from: PublicKey,
        height: u64,
        hash: Hash32,
        vote: FinalityVote,
    ) -> BoxFuture<'static, VoteAnswer>;

    /// Stored blocks from height `from` on, at most `max`, each with its
    /// certificate if stored ([`Request::Blocks`], the back-fill of a
    /// member catching up by snapshot). Read the store off the runtime.
    fn blocks(&self, from: u64, max: u32) -> BoxFuture<'static, Vec<ServedBlock>>;

    /// The member with key `from` starts with an empty Raft log and asks
    /// whether the cluster knew it ([`Request::Rejoin`]): the leader
    /// answers, re-adding it as a learner if it had lost entries.
    fn rejoin(&self, from: PublicKey) -> BoxFuture<'static, RejoinAnswer>;

    /// This member's view of itself ([`Request::Status`]).
    fn status(&self) -> BoxFuture<'static, PeerStatus>;

    /// The registered key of `id` if it may hold a peer session now:
    /// `VALIDATE` and `CONNECT` in the current world state
    /// ([`admit_validator`]), and a member of the Raft membership if the
    /// gateway requires it ([`admit_member`]). Called at every handshake,
    /// before every request, and at every recheck: a key that loses it
    /// loses its session.
    fn admit(&self, id: &KeyId) -> Result<VerifyingKey, Denial>;
}

/// A stored block as served to a peer or received from one: its exact
/// bytes and its certificate's bytes, if stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedBlock {
    /// The block's exact encoded bytes.
    pub block: Vec<u8>,
    /// Its finality certificate's encoded bytes.
    pub cert: Option<Vec<u8>>,
}

/// The most blocks asked for in one [`Request::Blocks`].
pub const BLOCKS_PER_REQUEST: u32 = 256;

/// The answer to a [`Request::Blocks`] stops growing past this many bytes
/// (one block of any size is always served).
pub const BLOCKS_ANSWER_BYTES: usize = 8 << 20;

/// The rule of a peer session: `id` names a registered key that holds
/// `VALIDATE` and `CONNECT` in `state`.
pub fn admit_validator(state: &WorldState, id: &KeyId) -> Result<VerifyingKey, Denial> {
    let pk = state.by_key_id(id).ok_or(Denial::Unknown)?;
    let vk = state.verifying_key(pk).ok_or(Denial::Unknown)?;
    if !state.has(pk, Permissions::VALIDATE.union(Permissions::CONNECT)) {
        return Err(Denial::NotPermitted);
    }
    Ok(*vk)
}

/// [`admit_validator`], and the key is one of `members`' (the Raft
/// membership's nodes). An empty `members` — a member not initialized
/// yet, which learns its membership from the leader over these very
/// links — admits every validator.
pub fn admit_member<'a>(
    state: &WorldState,
    id: &KeyId,
    members: impl IntoIterator<Item = &'a GatewayNode>,
) -> Result<VerifyingKey, Denial> {
    let vk = admit_validator(state, id)?;
    let mut members = members.into_iter().peekable();
    if members.peek().is_none() || members.any(|n| n.public_key == vk.public().0) {
        Ok(vk)
    } else {
        Err(Denial::NotPermitted)
    }
}

/// The cluster's network: a member's links to its peers and its peer
/// listener (cheap to clone: every clone is the same network).
#[derive(Clone)]
pub struct PeerNetwork {
    inner: Arc<Inner>,
}

struct Inner {
    me: NodeId,
    cfg: Arc<PeerConfig>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<JoinSet<()>>,
    links: Mutex<HashMap<NodeId, (GatewayNode, PeerLink)>>,
    nodes: Mutex<BTreeMap<NodeId, GatewayNode>>,
    /// Where this member's configuration says its peers are: their
    /// addresses win over the membership's (which records each address as
    /// the member that wrote the entry saw it).
    pinned: Mutex<BTreeMap<NodeId, GatewayNode>>,
    server: Mutex<Option<PeerServer>>,
}

impl std::fmt::Debug for PeerNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerNetwork")
            .field("me", &self.inner.me)
            .field("nodes", &*lock(&self.inner.nodes))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PeerNetwork {
    /// The network of member `me` (its Raft node id) with `config` (its
    /// identity, its chain, the links' limits). Nothing is dialled until a
    /// request is made; nothing listens until [`listen`](Self::listen).
    pub fn new(me: NodeId, config: PeerConfig) -> PeerNetwork {
        let (shutdown, _) = watch::channel(false);
        PeerNetwork {
            inner: Arc::new(Inner {
                me,
                cfg: Arc::new(config),
                shutdown,
                tasks: Mutex::new(JoinSet::new()),
                links: Mutex::new(HashMap::new()),
                nodes: Mutex::new(BTreeMap::new()),
                pinned: Mutex::new(BTreeMap::new()),
                server: Mutex::new(None),
            }),
        }
    }

    /// This member's node id.
    pub fn id(&self) -> NodeId {
        self.inner.me
    }

    /// Serves peers on `listener` (the cluster's own address, not the
    /// sensors'): admission, Raft's RPCs, forwards and votes go to
    /// `handler`. Also follows `handler.raft()`'s membership to know where
    /// every member is. Returns the address it listens on. Once only; the
    /// tasks are joined by [`shutdown`](Self::shutdown).
    pub fn listen(
        &self,
        listener: TcpListener,
        handler: Arc<dyn PeerHandler>,
    ) -> std::io::Result<SocketAddr> {
        let addr = listener.local_addr()?;
        let mut server = lock(&self.inner.server);
        if server.is_some() || *self.inner.shutdown.borrow() {
            return Err(std::io::Error::other(
                "the peer network already listens or is shut down",
            ));
        }
        let mut metrics = handler.raft().metrics();
        let service: Arc<dyn PeerService> =
            Arc::new(Dispatch(handler, self.inner.cfg.metrics.clone()));
        let mut tasks = lock(&self.inner.tasks);
        *server = Some(crate::net::peer::serve_peers(
            listener,
            self.inner.cfg.clone(),
            service,
            self.inner.shutdown.subscribe(),
            &mut tasks,
        ));
        // Where every member is, from the membership (a weak handle: the
        // task does not keep the network alive).
        let net = Arc::downgrade(&self.inner);
        let mut shutdown = self.inner.shutdown.subscribe();
        tasks.spawn(async move {
            loop {
                let nodes: Vec<(NodeId, GatewayNode)> = metrics
                    .borrow_and_update()
                    .membership_config
                    .nodes()
                    .map(|(id, n)| (*id, n.clone()))
                    .collect();
                match Weak::upgrade(&net) {
                    Some(inner) => PeerNetwork { inner }.set_nodes(nodes),
                    None => return,
                }
                tokio::select! {
                    _ = stopped(&mut shutdown) => return,
                    r = metrics.changed() => if r.is_err() { return },
                }
            }
        });
        Ok(addr)
    }

    /// Records where members are (their address and key), replacing what
    /// was known of them; a member whose address or key changed gets a
    /// new link. A [pinned](Self::pin_nodes) member with the same key keeps
    /// its pinned address.
    pub fn set_nodes(&self, nodes: impl IntoIterator<Item = (NodeId, GatewayNode)>) {
        let nodes: Vec<(NodeId, GatewayNode)> = nodes
            .into_iter()
            .map(|(id, n)| (id, self.resolve(id, &n)))
            .collect();
        let mut known = lock(&self.inner.nodes);
        for (id, node) in nodes {
            if id != self.inner.me {
                known.insert(id, node);
            }
        }
    }

    /// Pins where this member reaches its configured peers: for a member
    /// of the same key, this address is dialled whatever address the Raft
    /// membership records (the member that wrote a membership entry wrote
    /// the addresses by which *it* reaches the others, its own as it
    /// listens; behind a proxy or NAT those are not this member's way).
    pub fn pin_nodes(&self, nodes: impl IntoIterator<Item = (NodeId, GatewayNode)>) {
        let nodes: Vec<(NodeId, GatewayNode)> = nodes
            .into_iter()
            .filter(|(id, _)| *id != self.inner.me)
            .collect();
        lock(&self.inner.pinned).extend(nodes.iter().cloned());
        self.set_nodes(nodes);
    }

    /// `node` as this member reaches it: its pinned address if member `id`
    /// is pinned with the same key.
    fn resolve(&self, id: NodeId, node: &GatewayNode) -> GatewayNode {
        match lock(&self.inner.pinned).get(&id) {
            Some(p) if p.public_key == node.public_key => p.clone(),
            _ => node.clone(),
        }
    }

    /// What is known of member `id`.
    pub fn node(&self, id: NodeId) -> Option<GatewayNode> {
        lock(&self.inner.nodes).get(&id).cloned()
    }

    /// Checks every peer session's admission now ([`PeerHandler::admit`]);
    /// call it when permissions change (it also runs every
    /// [`PeerConfig::recheck_every`]).
    pub fn recheck_sessions(&self) {
        if let Some(s) = lock(&self.inner.server).as_ref() {
            s.recheck();
        }
    }

    /// Whether the peer with `key` holds a session with this member's
    /// listener now.
    pub fn has_session(&self, key: &PublicKey) -> bool {
        lock(&self.inner.server)
            .as_ref()
            .is_some_and(|s| s.has_session(key))
    }

    /// Forwards a transaction (its exact bytes) to member `to`, the
    /// leader as this member knows it.
    pub async fn forward(&self, to: NodeId, tx: Vec<u8>) -> Result<ForwardAnswer, PeerError> {
        let link = self.link_to(to)?;
        let answered = link
            .request(Request::Forward(&tx), self.inner.cfg.request_timeout)
            .await?;
        match answered.body() {
            Answer::Forward(a) => Ok(a),
            _ => Err(PeerError::Protocol(format!(
                "node {to} could not read the forwarded transaction"
            ))),
        }
    }

    /// Gives member `to` (the leader) this member's finality vote for the
    /// block at `height` with `hash`.
    pub async fn send_vote(
        &self,
        to: NodeId,
        height: u64,
        hash: Hash32,
        vote: FinalityVote,
    ) -> Result<VoteAnswer, PeerError> {
        let link = self.link_to(to)?;
        let body = Request::FinalityVote { height, hash, vote };
        let answered = link.request(body, self.inner.cfg.request_timeout).await?;
        match answered.body() {
            Answer::FinalityVote(a) => Ok(a),
            _ => Err(PeerError::Protocol(format!(
                "node {to} could not read the vote"
            ))),
        }
    }

    /// Stored blocks from height `from` on (at most `max`) from member
    /// `to`, with their certificates: received as bytes, for the caller to
    /// decode and validate.
    pub async fn fetch_blocks(
        &self,
        to: NodeId,
        from: u64,
        max: u32,
    ) -> Result<Vec<ServedBlock>, PeerError> {
        let link = self.link_to(to)?;
        let body = Request::Blocks { from, max };
        let answered = link.request(body, self.inner.cfg.request_timeout).await?;
        match answered.body() {
            Answer::Blocks(blocks) => Ok(blocks
                .into_iter()
                .map(|b| ServedBlock {
                    block: b.block.to_vec(),
                    cert: b.cert.map(<[u8]>::to_vec),
                })
                .collect()),
            _ => Err(PeerError::Protocol(format!(
                "node {to} did not serve blocks"
            ))),
        }
    }

    /// Asks member `to` whether the cluster knew this member
    /// ([`Request::Rejoin`]).
    pub async fn rejoin(&self, to: NodeId) -> Result<RejoinAnswer, PeerError> {
        let link = self.link_to(to)?;
        let answered = link
            .request(Request::Rejoin, self.inner.cfg.request_timeout)
            .await?;
        match answered.body() {
            Answer::Rejoin(a) => Ok(a),
            _ => Err(PeerError::Protocol(format!(
                "node {to} could not read the rejoin request"
            ))),
        }
    }

    /// Member `to`'s view of itself ([`Request::Status`]), waiting at most
    /// `timeout`.
    pub async fn status(&self, to: NodeId, timeout: Duration) -> Result<PeerStatus, PeerError> {
        let link = self.link_to(to)?;
        let answered = link.request(Request::Status, timeout).await?;
        match answered.body() {
            Answer::Status(s) => Ok(s),
            _ => Err(PeerError::Protocol(format!(
                "node {to} could not read the status request"
            ))),
        }
    }

    /// Stops listening, ends every session (peers are told
    /// `ShuttingDown`, links get a close frame), fails what is pending and
    /// joins every task of the network, waiting at most `grace` before
    /// aborting those left. Returns whether all ended within `grace`.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.inner.shutdown.send_replace(true);
        lock(&self.inner.links).clear();
        let mut tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        let joined =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
                .await
                .is_ok();
        if !joined {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        joined
    }

    /// The link to member `to`, from what is known of it.
    fn link_to(&self, to: NodeId) -> Result<PeerLink, PeerError> {
        let node = self.node(to).ok_or(PeerError::UnknownNode(to))?;
        self.link(to, &node)
    }

    /// The link to member `to` at `node` (made on first use, or again when
    /// its address or key changed).
    fn link(&self, to: NodeId, node: &GatewayNode) -> Result<PeerLink, PeerError> {
        if *self.inner.shutdown.borrow() {
            return Err(PeerError::Shutdown);
        }
        let mut links = lock(&self.inner.links);
        if let Some((known, link)) = links.get(&to)
            && known == node
        {
            return Ok(link.clone());
        }
        let link = PeerLink::new(
            self.inner.cfg.clone(),
            node.addr.clone(),
            PublicKey(node.public_key),
            self.inner.shutdown.subscribe(),
            &mut lock(&self.inner.tasks),
        );
        links.insert(to, (node.clone(), link.clone()));
        Ok(link)
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &GatewayNode) -> PeerClient {
        let node = self.resolve(target, node);
        lock(&self.inner.nodes).insert(target, node.clone());
        PeerClient {
            net: self.clone(),
            target,
            node,
        }
    }
}

/// One member's Raft RPCs to another, over their peer link.
pub struct PeerClient {
    net: PeerNetwork,
    target: NodeId,
    node: GatewayNode,
}

type Rpc<E = openraft::error::Infallible> = RPCError<NodeId, GatewayNode, RaftError<NodeId, E>>;

/// Largest Raft payload a request may carry (the message bound less the
/// request's own bytes: an id, a variant, a length).
const MAX_PAYLOAD: usize = PEER_MAX_MESSAGE - 32;

impl PeerClient {
    /// Sends one Raft RPC's payload and decodes its answer's payload.
    async fn call<Resp, E>(
        &self,
        action: RPCTypes,
        payload: Vec<u8>,
        ttl: Duration,
    ) -> Result<Resp, Rpc<E>>
    where
        Resp: DeserializeOwned + Send + 'static,
        E: std::error::Error + DeserializeOwned + Send + 'static,
    {
        let link = self
            .net
            .link(self.target, &self.node)
            .map_err(|e| self.error(e, action))?;
        let body = match action {
            RPCTypes::AppendEntries => Request::AppendEntries(&payload),
            RPCTypes::Vote => Request::Vote(&payload),
            RPCTypes::InstallSnapshot => Request::InstallSnapshot(&payload),
        };
        let answered = link
            .request(body, ttl)
            .await
            .map_err(|e| self.error(e, action))?;
        if answered.body() == Answer::Malformed {
            return Err(RPCError::Network(NetworkError::new(&AnyError::error(
                format!("node {} could not read the request", self.target),
            ))));
        }
        let got = off_runtime_if_large(answered_len(&answered), move || match answered.body() {
            Answer::AppendEntries(b) | Answer::Vote(b) | Answer::InstallSnapshot(b) => {
                strict_postcard::<Result<Resp, RaftError<NodeId, E>>>(b)
            }
            _ => None,
        })
        .await
        .map_err(|e| self.error(e, action))?;
        match got {
            Some(Ok(resp)) => Ok(resp),
            Some(Err(e)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))),
            None => Err(RPCError::Network(NetworkError::new(&AnyError::error(
                format!("node {}: its answer does not decode", self.target),
            )))),
        }
    }

    /// The openraft error for a peer link's.
    fn error<E: std::error::Error>(&self, e: PeerError, action: RPCTypes) -> Rpc<E> {
        match e {
            PeerError::Timeout(timeout) => RPCError::Timeout(Timeout {
                action,
                id: self.net.inner.me,
                target: self.target,
                timeout,
            }),
            PeerError::Protocol(_) => RPCError::Network(NetworkError::new(&e)),
            e => RPCError::Unreachable(Unreachable::new(&e)),
        }
    }
}

fn answered_len(a: &Answered) -> usize {
    match a.body() {
        Answer::AppendEntries(b) | Answer::Vote(b) | Answer::InstallSnapshot(b) => b.len(),
        _ => 0,
    }
}

/// postcard of exactly `bytes` (no trailing bytes).
fn strict_postcard<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Some(v),
        _ => None,
    }
}

/// postcard of `v`, off the runtime when `size_hint` is large.
async fn encode_payload<T: Serialize + Send + 'static>(
    v: T,
    size_hint: usize,
) -> Result<Vec<u8>, PeerError> {
    off_runtime_if_large(size_hint, move || postcard::to_allocvec(&v))
        .await?
        .map_err(|e| PeerError::Protocol(format!("encode: {e}")))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, Rpc> {
        let entries = rpc.entries.len();
        let hint: usize = rpc.entries.iter().map(entry_len).sum();
        let payload = encode_payload(rpc, hint)
            .await
            .map_err(|e| self.error(e, RPCTypes::AppendEntries))?;
        if payload.len() > MAX_PAYLOAD {
            if entries > 1 {
                let fit = (entries * MAX_PAYLOAD / payload.len()).clamp(1, entries - 1);
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(fit as u64),
                ));
            }
            return Err(self.error(PeerError::TooLarge(payload.len()), RPCTypes::AppendEntries));
        }
        self.call(RPCTypes::AppendEntries, payload, option.hard_ttl())
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, Rpc<InstallSnapshotError>> {
        let hint = rpc.data.len();
        let payload = encode_payload(rpc, hint)
            .await
            .map_err(|e| self.error(e, RPCTypes::InstallSnapshot))?;
        if payload.len() > MAX_PAYLOAD {
            return Err(self.error(
                PeerError::TooLarge(payload.len()),
                RPCTypes::InstallSnapshot,
            ));
        }
        self.call(RPCTypes::InstallSnapshot, payload, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, Rpc> {
        let payload = encode_payload(rpc, 0)
            .await
            .map_err(|e| self.error(e, RPCTypes::Vote))?;
        self.call(RPCTypes::Vote, payload, option.hard_ttl()).await
    }
}

/// The bytes an entry carries (a size hint for its encoding).
fn entry_len(e: &super::types::Entry) -> usize {
    match &e.payload {
        openraft::EntryPayload::Normal(r) => r.bytes().len(),
        _ => 64,
    }
}

/// A request, decoded.
enum Incoming {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    Forward(Vec<u8>),
    FinalityVote {
        height: u64,
        hash: Hash32,
        vote: FinalityVote,
    },
    Blocks {
        from: u64,
        max: u32,
    },
    Rejoin,
    Status,
    Malformed,
}

impl Incoming {
    /// The request's kind (none: it did not decode).
    fn kind(&self) -> Option<Kind> {
        Some(match self {
            Incoming::AppendEntries(_) => Kind::AppendEntries,
            Incoming::Vote(_) => Kind::Vote,
            Incoming::InstallSnapshot(_) => Kind::InstallSnapshot,
            Incoming::Forward(_) => Kind::Forward,
            Incoming::FinalityVote { .. } => Kind::FinalityVote,
            Incoming::Blocks { .. } => Kind::Blocks,
            Incoming::Rejoin => Kind::Rejoin,
            Incoming::Status => Kind::Status,
            Incoming::Malformed => return None,
        })
    }
}

fn decode_request(bytes: &[u8]) -> Incoming {
    let Ok(req) = PeerRequest::decode(bytes) else {
        return Incoming::Malformed;
    };
    let decoded = match req.body {
        Request::AppendEntries(b) => strict_postcard(b).map(Incoming::AppendEntries),
        Request::Vote(b) => strict_postcard(b).map(Incoming::Vote),
        Request::InstallSnapshot(b) => strict_postcard(b).map(Incoming::InstallSnapshot),
        Request::Forward(tx) => Some(Incoming::Forward(tx.to_vec())),
        Request::FinalityVote { height, hash, vote } => {
            Some(Incoming::FinalityVote { height, hash, vote })
        }
        Request::Blocks { from, max } => Some(Incoming::Blocks { from, max }),
        Request::Rejoin => Some(Incoming::Rejoin),
        Request::Status => Some(Incoming::Status),
    };
    decoded.unwrap_or(Incoming::Malformed)
}

/// The peer listener's service: requests to the handler (each counted by
/// kind in the metrics).
struct Dispatch(Arc<dyn PeerHandler>, Arc<PeerMetrics>);

impl PeerService for Dispatch {
    fn admit(&self, id: &KeyId) -> Result<VerifyingKey, Denial> {
        self.0.admit(id)
    }

    fn serve(&self, from: PublicKey, request: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
        let h = self.0.clone();
        let metrics = self.1.clone();
        Box::pin(async move {
            let len = request.len();
            let incoming = off_runtime_if_large(len, move || decode_request(&request))
                .await
                .unwrap_or(Incoming::Malformed);
            if let Some(kind) = incoming.kind() {
                metrics.served(kind);
            }
            match incoming {
                Incoming::AppendEntries(rpc) => {
                    let r = h.raft().append_entries(rpc).await;
                    raft_answer(Kind::AppendEntries, &r)
                }
                Incoming::Vote(rpc) => {
                    let r = h.raft().vote(rpc).await;
                    raft_answer(Kind::Vote, &r)
                }
                Incoming::InstallSnapshot(rpc) => {
                    let r = h.raft().install_snapshot(rpc).await;
                    raft_answer(Kind::InstallSnapshot, &r)
                }
                Incoming::Forward(tx) => {
                    codec::encode_to_vec(&Answer::Forward(h.forward(from, tx).await))
                }
                Incoming::FinalityVote { height, hash, vote } => codec::encode_to_vec(
                    &Answer::FinalityVote(h.vote(from, height, hash, vote).await),
                ),
                Incoming::Blocks { from, max } => {
                    let blocks = h.blocks(from, max.min(BLOCKS_PER_REQUEST)).await;
                    blocks_answer(&blocks)
                }
                Incoming::Rejoin => codec::encode_to_vec(&Answer::Rejoin(h.rejoin(from).await)),
                Incoming::Status => codec::encode_to_vec(&Answer::Status(h.status().await)),
                Incoming::Malformed => codec::encode_to_vec(&Answer::Malformed),
            }
        })
    }
}

/// The encoded [`Answer::Blocks`] of `blocks`, cut after the block that
/// takes it past [`BLOCKS_ANSWER_BYTES`] (and always below the peer
/// message bound).
fn blocks_answer(blocks: &[ServedBlock]) -> Vec<u8> {
    let mut size = 0usize;
    let mut served = Vec::new();
    for b in blocks {
        let len = b.block.len() + b.cert.as_ref().map_or(0, Vec::len) + 16;
        if !served.is_empty() && size + len > BLOCKS_ANSWER_BYTES {
            break;
        }
        if size + len > PEER_MAX_MESSAGE - 64 {
            break;
        }
        size += len;
        served.push(StoredBlock {
            block: &b.block,
            cert: b.cert.as_deref(),
        });
    }
    codec::encode_to_vec(&Answer::Blocks(served))
}

/// The encoded answer of kind `kind` carrying openraft's result `r`
/// (postcard).
fn raft_answer<T: Serialize>(kind: Kind, r: &T) -> Vec<u8> {
    let Ok(payload) = postcard::to_allocvec(r) else {
        // openraft's types always encode; were one not to, the peer learns
        // that its request could not be served.
        return codec::encode_to_vec(&Answer::Malformed);
    };
    let answer = match kind {
        Kind::AppendEntries => Answer::AppendEntries(&payload),
        Kind::Vote => Answer::Vote(&payload),
        Kind::InstallSnapshot => Answer::InstallSnapshot(&payload),
        _ => Answer::Malformed,
    };
    codec::encode_to_vec(&answer)
}

#[cfg(test)]
mod tests;
