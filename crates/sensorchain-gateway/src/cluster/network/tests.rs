//! Three members under real openraft over [`PeerNetwork`] on loopback TCP,
//! with the real [`LogStore`] and [`LedgerStateMachine`]: a leader is
//! elected, blocks written on it are stored identically by all three (read
//! from each member's [`Store`]), forwards and votes reach the leader, the
//! leader stops (its network shut down: listener and links) and the other
//! two elect another and go on, and the stopped member, restarted from its
//! disk on the same address, catches up. Timeouts are generous bounds
//! only; nothing is timed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use openraft::{Config, Raft, SnapshotPolicy};
use sensorchain_core::block::{Block, FinalityCert, FinalityVote};
use sensorchain_core::chain::{Chain, build_block_from_pool};
use sensorchain_core::handshake::Denial;
use sensorchain_core::hash::Hash32;
use sensorchain_core::identity::{KeyId, Keypair, PublicKey, VerifyingKey};
use sensorchain_core::peer::{ForwardAnswer, MemberRole, PeerStatus, RejoinAnswer, VoteAnswer};
use sensorchain_core::permissions::Role;
use sensorchain_core::reading::Vital;
use sensorchain_core::state::{SigCheck, WorldState};
use sensorchain_core::tx::{GenesisConfig, Member, Params, Transaction, TxBody};
use tokio::net::TcpListener;

use super::{PeerHandler, PeerNetwork, ServedBlock, admit_member};
use crate::cluster::LogStore;
use crate::cluster::backfill::{BlockSource, PeerBlockSource};
use crate::cluster::state_machine::{LedgerStateMachine, StateMachineConfig};
use crate::cluster::types::{ClusterRequest, ClusterResponse, GatewayNode, NodeId, TypeConfig};
use crate::net::peer::PeerConfig;
use crate::store::Store;

const LONG: Duration = Duration::from_secs(120);

/// Keys and the genesis of three validating gateways and one device.
struct Net {
    gateways: Vec<Keypair>,
    device: Keypair,
    genesis: Block,
}

impl Net {
    fn new(n: usize) -> Net {
        let admin = Keypair::from_seed([1; 32]);
        let gateways: Vec<Keypair> = (0..n)
            .map(|i| Keypair::from_seed([20 + i as u8; 32]))
            .collect();
        let device = Keypair::from_seed([3; 32]);
        let mut members = vec![
            Member::of_role(admin.public(), Role::Admin),
            Member::of_role(device.public(), Role::Device),
        ];
        members.extend(
            gateways
                .iter()
                .map(|g| Member::of_role(g.public(), Role::Gateway)),
        );
        let cfg = GenesisConfig::new("peer-cluster-test", Params::default(), &members).unwrap();
        let genesis = Chain::genesis_block(&admin, cfg, 1_000).unwrap();
        Net {
            gateways,
            device,
            genesis,
        }
    }

    /// Signed heart-rate readings of the device, sequences `from..from + n`.
    fn readings(&self, from: u64, n: u64) -> Vec<(Transaction, Vec<u8>)> {
        (from..from + n)
            .map(|seq| {
                let body = TxBody::reading(
                    self.device.public(),
                    seq,
                    2_000 + seq,
                    0,
                    Vital::HeartRate {
                        bpm: 60 + seq as u16 % 40,
                    },
                );
                let tx =
                    Transaction::sign(body, &self.genesis.header.chain_id, &self.device).unwrap();
                let enc = tx.to_vec();
                (tx, enc)
            })
            .collect()
    }
}

fn raft_config() -> Arc<Config> {
    raft_config_with(SnapshotPolicy::Never)
}

fn raft_config_with(snapshot_policy: SnapshotPolicy) -> Arc<Config> {
    // Generous timeouts: a busy test machine must not make elections flap.
    let c = Config {
        heartbeat_interval: 200,
        election_timeout_min: 1_500,
        election_timeout_max: 3_000,
        snapshot_policy,
        // Snapshots purge the whole log below them: a member behind must
        // catch up by snapshot.
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Default::default()
    };
    Arc::new(c.validate().unwrap())
}

/// The test's handler: Raft's RPCs to the member's Raft; forwards and
/// votes recorded by the leader; admission by `VALIDATE` + `CONNECT` in
/// the member's own state and membership.
struct Handler {
    id: NodeId,
    raft: Raft<TypeConfig>,
    sm: LedgerStateMachine,
    forwarded: Mutex<Vec<(PublicKey, Vec<u8>)>>,
    votes: Mutex<Vec<(PublicKey, u64, Hash32, FinalityVote)>>,
}

impl Handler {
    fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }
}

impl PeerHandler for Handler {
    fn raft(&self) -> Raft<TypeConfig> {
        self.raft.clone()
    }

    fn forward(&self, from: PublicKey, tx: Vec<u8>) -> BoxFuture<'static, ForwardAnswer> {
        let answer = match self.leader() {
            Some(l) if l == self.id => {
                self.forwarded.lock().unwrap().push((from, tx));
                ForwardAnswer::Queued
            }
            leader => ForwardAnswer::NotLeader { leader },
        };
        async move { answer }.boxed()
    }

    fn vote(
        &self,
        from: PublicKey,
        height: u64,
        hash: Hash32,
        vote: FinalityVote,
    ) -> BoxFuture<'static, VoteAnswer> {
        let answer = match self.leader() {
            Some(l) if l == self.id => {
                self.votes.lock().unwrap().push((from, height, hash, vote));
                VoteAnswer::Counted
            }
            leader => VoteAnswer::NotLeader { leader },
        };
        async move { answer }.boxed()
    }

    fn blocks(&self, from: u64, max: u32) -> BoxFuture<'static, Vec<ServedBlock>> {
        let blocks = crate::cluster::backfill::serve_blocks(&self.sm.store(), from, max);
        async move { blocks }.boxed()
    }

    fn rejoin(&self, _from: PublicKey) -> BoxFuture<'static, RejoinAnswer> {
        async move { RejoinAnswer::Fresh }.boxed()
    }

    fn status(&self) -> BoxFuture<'static, PeerStatus> {
        let s = PeerStatus {
            role: if self.leader() == Some(self.id) {
                MemberRole::Leader
            } else {
                MemberRole::Follower
            },
            term: self.raft.metrics().borrow().current_term,
            leader: self.leader(),
            applied_index: None,
            height: self.sm.state().next_height().saturating_sub(1),
            finalized_height: None,
            health: "ok".into(),
        };
        async move { s }.boxed()
    }

    fn admit(&self, id: &KeyId) -> Result<VerifyingKey, Denial> {
        let members: Vec<GatewayNode> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .nodes()
            .map(|(_, n)| n.clone())
            .collect();
        admit_member(&self.sm.state(), id, &members)
    }
}

/// One member: its stores, its state machine, its Raft, its network.
struct Gw {
    id: NodeId,
    dir: tempfile::TempDir,
    store: Arc<Store>,
    raft: Raft<TypeConfig>,
    net: PeerNetwork,
    handler: Arc<Handler>,
    /// Where its state machine back-fills from (held here, weakly there).
    _source: Arc<dyn BlockSource>,
}

impl Gw {
    /// Opens member `id` from `dir`, listening on `listener`.
    async fn open(net_keys: &Net, id: NodeId, dir: tempfile::TempDir, listener: TcpListener) -> Gw {
        Gw::open_with(net_keys, id, dir, listener, raft_config()).await
    }

    /// [`Gw::open`] with the Raft configuration `config`; the member
    /// back-fills from its peers when it installs a snapshot.
    async fn open_with(
        net_keys: &Net,
        id: NodeId,
        dir: tempfile::TempDir,
        listener: TcpListener,
        config: Arc<Config>,
    ) -> Gw {
        // After a shutdown, openraft's tasks drop the stores they own a
        // little later: wait for the files to be free (bounded).
        let t = std::time::Instant::now();
        let (store, log) = loop {
            match (Store::open(dir.path()), LogStore::open_in_dir(dir.path())) {
                (Ok(s), Ok(l)) => break (Arc::new(s), l),
                (s, l) => {
                    assert!(t.elapsed() < LONG, "stores still held");
                    drop((s, l));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let key = Arc::new(net_keys.gateways[id as usize - 1].clone());
        let sm = LedgerStateMachine::open(
            store.clone(),
            &net_keys.genesis,
            Some(key.clone()),
            None,
            StateMachineConfig {
                snapshot_every: 2,
                ..Default::default()
            },
        )
        .unwrap();
        let mut cfg = PeerConfig::new(key, net_keys.genesis.header.chain_id);
        cfg.backoff_min = Duration::from_millis(50);
        cfg.backoff_max = Duration::from_millis(500);
        let net = PeerNetwork::new(id, cfg);
        let raft_cell: Arc<std::sync::OnceLock<Raft<TypeConfig>>> = Arc::default();
        let cell = raft_cell.clone();
        let source: Arc<dyn BlockSource> = Arc::new(PeerBlockSource::new(
            net.clone(),
            tokio::runtime::Handle::current(),
            Arc::new(move || cell.get().and_then(|r| r.metrics().borrow().current_leader)),
        ));
        sm.set_block_source(&source);
        let raft = Raft::new(id, config, net.clone(), log, sm.clone())
            .await
            .unwrap();
        let _ = raft_cell.set(raft.clone());
        let handler = Arc::new(Handler {
            id,
            raft: raft.clone(),
            sm,
            forwarded: Mutex::new(vec![]),
            votes: Mutex::new(vec![]),
        });
        net.listen(listener, handler.clone()).unwrap();
        Gw {
            id,
            dir,
            store,
            raft,
            net,
            handler,
            _source: source,
        }
    }

    /// Stops this member: its Raft, then its network (listener and links
    /// closed, every task joined). Returns its directory.
    async fn stop(self) -> tempfile::TempDir {
        self.raft.shutdown().await.unwrap();
        assert!(
            self.net.shutdown(LONG).await,
            "the network's tasks end within the grace"
        );
        self.dir
    }

    async fn applied(&self, index: u64) {
        self.raft
            .wait(Some(LONG))
            .applied_index_at_least(Some(index), "applied")
            .await
            .unwrap();
    }

    /// Every stored block's exact bytes, by height.
    fn chain(&self) -> Vec<Vec<u8>> {
        let head = self.store.head().unwrap().unwrap().height;
        (0..=head)
            .map(|h| self.store.block_bytes(h).unwrap().unwrap())
            .collect()
    }

    fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }
}

/// Binds `addr`, again until it is free (a restarted member listens on
/// its address in the membership).
async fn bind(addr: &str) -> TcpListener {
    let t = std::time::Instant::now();
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) => {
                assert!(t.elapsed() < LONG, "{addr}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A block of `txs` on `state`, proposed by `proposer`.
fn block_on(state: &WorldState, proposer: &Keypair, txs: Vec<(Transaction, Vec<u8>)>) -> Block {
    let ts = state.last_timestamp_ms() + 1_000;
    let built = build_block_from_pool(state, proposer, txs, ts, SigCheck::Verify);
    assert!(built.rejected.is_empty());
    built.block
}

/// Writes a block of `n` readings from `from` on the leader `l`; returns
/// the log index.
async fn write_block(
    net: &Net,
    members: &[Gw],
    l: usize,
    state: &mut WorldState,
    from: u64,
    n: u64,
) -> u64 {
    let block = block_on(state, &net.gateways[l], net.readings(from, n));
    state.apply_block(&block, None, SigCheck::Verify).unwrap();
    let r = members[l]
        .raft
        .client_write(ClusterRequest::Block(block.to_vec()))
        .await
        .unwrap();
    assert_eq!(
        r.data,
        ClusterResponse::Applied {
            height: block.header.height,
            hash: block.hash().0
        }
    );
    r.log_id.index
}

/// Waits until some member of `members` (other than `not`) names a leader
/// other than `not`, and returns its index in `members`.
async fn wait_leader(members: &[Gw], not: Option<NodeId>) -> usize {
    let t = std::time::Instant::now();
    loop {
        for m in members {
            if let Some(l) = m.leader()
                && Some(l) != not
                && Some(m.id) != not
                && let Some(i) = members.iter().position(|g| g.id == l)
            {
                return i;
            }
        }
        assert!(t.elapsed() < LONG, "a leader is elected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_over_tcp_elect_replicate_lose_one_and_catch_it_up() {
    let net = Net::new(3);
    let mut listeners = Vec::new();
    let mut nodes = BTreeMap::new();
    for id in 1..=3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let node = GatewayNode {
            addr: l.local_addr().unwrap().to_string(),
            public_key: net.gateways[id as usize - 1].public().0,
        };
        nodes.insert(id, node);
        listeners.push(l);
    }
    let mut members = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        members.push(Gw::open(&net, id, tempfile::tempdir().unwrap(), l).await);
    }
    members[0].raft.initialize(nodes.clone()).await.unwrap();

    // A leader is elected over the peer links; two blocks written on it
    // are stored, byte for byte, by all three.
    let l = wait_leader(&members, None).await;
    let mut state = (*members[l].handler.sm.state()).clone();
    let mut last = 0;
    for round in 0..2u64 {
        last = write_block(&net, &members, l, &mut state, round * 10, 10).await;
    }
    for m in &members {
        m.applied(last).await;
    }
    let chain = members[l].chain();
    assert_eq!(chain.len(), 3, "genesis and two blocks");
    for m in &members {
        assert_eq!(m.chain(), chain, "member {} stores the same bytes", m.id);
    }

    // Forwards and votes reach the leader; another member answers
    // NotLeader, naming it.
    let f = (l + 1) % 3;
    let leader_id = members[l].id;
    let tx = net.readings(100, 1).remove(0).1;
    assert_eq!(
        members[f].net.forward(leader_id, tx.clone()).await.unwrap(),
        ForwardAnswer::Queued
    );
    let other = members[(l + 2) % 3].id;
    assert_eq!(
        members[f].net.forward(other, tx.clone()).await.unwrap(),
        ForwardAnswer::NotLeader {
            leader: Some(leader_id)
        }
    );
    let header = members[f].store.header(2).unwrap().unwrap();
    let vote = FinalityCert::vote(&header, &net.gateways[f]);
    assert_eq!(
        members[f]
            .net
            .send_vote(leader_id, 2, header.hash(), vote)
            .await
            .unwrap(),
        VoteAnswer::Counted
    );
    {
        let fwd = members[l].handler.forwarded.lock().unwrap();
        assert_eq!(fwd.as_slice(), &[(net.gateways[f].public(), tx)]);
        let votes = members[l].handler.votes.lock().unwrap();
        assert_eq!(
            votes.as_slice(),
            &[(net.gateways[f].public(), 2, header.hash(), vote)],
            "the vote arrives with its sender authenticated"
        );
    }

    // The leader stops (its listener and links gone): the other two elect
    // another leader over TCP and go on.
    let stopped_id = members[l].id;
    let stopped_addr = nodes[&stopped_id].addr.clone();
    let gone = members.remove(l);
    let dir = gone.stop().await;
    let nl = wait_leader(&members, Some(stopped_id)).await;
    let mut last2 = 0;
    for round in 2..4u64 {
        last2 = write_block(&net, &members, nl, &mut state, round * 10, 10).await;
    }
    for m in &members {
        m.applied(last2).await;
        assert_eq!(m.chain().len(), 5, "member {} goes on", m.id);
    }

    // Restarted from its disk on the same address, it catches up.
    let back = Gw::open(&net, stopped_id, dir, bind(&stopped_addr).await).await;
    back.applied(last2).await;
    members.push(back);
    let chain = members[nl].chain();
    assert_eq!(chain.len(), 5);
    for m in &members {
        assert_eq!(m.chain(), chain, "member {} stores the same chain", m.id);
        assert!(m.store.rejections(0, 10).unwrap().is_empty());
    }

    for m in members {
        m.stop().await;
    }
}

/// A member that joins after the others purged their logs below a
/// snapshot installs the snapshot, fetching every block below its head
/// from the peers (validated, with their certificates), and then follows
/// the log: the same chain and certificates as the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joining_after_a_purge_catches_up_by_snapshot_and_backfill() {
    let net = Net::new(4);
    let config = raft_config_with(SnapshotPolicy::LogsSinceLast(4));
    let mut listeners = Vec::new();
    let mut nodes = BTreeMap::new();
    for id in 1..=4u64 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let node = GatewayNode {
            addr: l.local_addr().unwrap().to_string(),
            public_key: net.gateways[id as usize - 1].public().0,
        };
        nodes.insert(id, node);
        listeners.push(l);
    }
    let mut members = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let dir = tempfile::tempdir().unwrap();
        members.push(Gw::open_with(&net, id, dir, l, config.clone()).await);
    }
    let mut first: BTreeMap<NodeId, GatewayNode> = nodes.clone();
    first.remove(&4);
    members[0].raft.initialize(first).await.unwrap();
    let l = wait_leader(&members[..3], None).await;

    // Twelve blocks, the first two certified by a quorum of the four
    // validators of the genesis, with snapshots every four entries and
    // the log purged below them.
    let mut state = (*members[l].handler.sm.state()).clone();
    let mut last = 0;
    for round in 0..12u64 {
        last = write_block(&net, &members, l, &mut state, round * 5, 5).await;
        if round < 2 {
            let h = round + 1;
            let header = members[l].store.header(h).unwrap().unwrap();
            let mut cert = FinalityCert::new(&header);
            for g in &net.gateways[..3] {
                cert.add(FinalityCert::vote(&header, g)).unwrap();
            }
            let r = members[l]
                .raft
                .client_write(ClusterRequest::Finality(
                    sensorchain_core::codec::encode_to_vec(&cert),
                ))
                .await
                .unwrap();
            last = r.log_id.index;
        }
    }
    for m in &members[..3] {
        m.applied(last).await;
    }
    let t = std::time::Instant::now();
    while members[l].raft.metrics().borrow().purged.is_none() {
        assert!(t.elapsed() < LONG, "the leader purges its log");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Member 4 joins as a learner: its log and chain are empty, the
    // leader's log starts above its snapshot, so it installs the snapshot
    // and back-fills the blocks below the snapshot's head.
    members[l]
        .raft
        .add_learner(4, nodes[&4].clone(), true)
        .await
        .unwrap();
    members[3].applied(last).await;
    let chain = members[l].chain();
    assert_eq!(chain.len(), 13, "genesis and twelve blocks");
    assert!(
        members[3].raft.metrics().borrow().snapshot.is_some(),
        "member 4 installed a snapshot"
    );
    for m in &members {
        assert_eq!(m.chain(), chain, "member {} stores the same chain", m.id);
        for h in 1..=2 {
            assert!(
                m.store.cert(h).unwrap().is_some(),
                "member {}: cert {h}",
                m.id
            );
        }
        assert_eq!(
            m.handler.sm.state().commitment(),
            state.commitment(),
            "member {}: the same state",
            m.id
        );
    }
    // And it follows the log from there.
    let next = write_block(&net, &members, l, &mut state, 500, 5).await;
    members[3].applied(next).await;
    assert_eq!(members[3].chain(), members[l].chain());

    for m in members {
        m.stop().await;
    }
}

/// An AppendEntries above the peer message bound is not sent: openraft is
/// told how many entries fit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_above_the_bound_asks_openraft_for_fewer_entries() {
    use openraft::error::RPCError;
    use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
    use openraft::raft::AppendEntriesRequest;
    use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};

    let key = Arc::new(Keypair::from_seed([20; 32]));
    let mut net = PeerNetwork::new(1, PeerConfig::new(key, Net::new(1).genesis.header.chain_id));
    let node = GatewayNode {
        addr: "127.0.0.1:9".into(),
        public_key: [0; 32],
    };
    let mut client = net.new_client(2, &node).await;
    let entries = (1..=3)
        .map(|i| openraft::Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
            payload: EntryPayload::Normal(ClusterRequest::Block(vec![7; 11 << 20])),
        })
        .collect();
    let rpc = AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries,
        leader_commit: None,
    };
    match client
        .append_entries(rpc, RPCOption::new(Duration::from_secs(5)))
        .await
    {
        Err(RPCError::PayloadTooLarge(p)) => assert_eq!(p.entries_hint(), 2),
        r => panic!("{r:?}"),
    }
    assert!(net.shutdown(LONG).await);
}
