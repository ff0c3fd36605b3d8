//! The ledger state machine under real openraft: members in one process,
//! Raft's messages passed by a router (the peer links come later). Every
//! verdict is read from what each member *stored*.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::{Config, Raft, SnapshotPolicy};
use sensorchain_core::block::{Block, FinalityCert};
use sensorchain_core::chain::{Chain, build_block_from_pool};
use sensorchain_core::codec;
use sensorchain_core::identity::Keypair;
use sensorchain_core::permissions::Role;
use sensorchain_core::reading::Vital;
use sensorchain_core::state::{SigCheck, WorldState};
use sensorchain_core::tx::{GenesisConfig, Member, Params, Transaction, TxBody};
use tokio::sync::mpsc;

use super::LogStore;
use super::finality::{Collector, Verdict};
use super::state_machine::{LedgerStateMachine, Outcome, StateMachineConfig};
use super::testnet::Router;
use super::types::{ClusterRequest, ClusterResponse, GatewayNode, NodeId, TypeConfig};
use crate::store::Store;

/// Keys and the genesis of a network of `n` validating gateways and one
/// device.
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
        let cfg = GenesisConfig::new("cluster-test", Params::default(), &members).unwrap();
        let genesis = Chain::genesis_block(&admin, cfg, 1_000).unwrap();
        Net {
            gateways,
            device,
            genesis,
        }
    }

    fn node(&self, id: NodeId) -> GatewayNode {
        GatewayNode {
            addr: format!("member-{id}"),
            public_key: self.gateways[id as usize - 1].public().0,
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

/// One member: its stores, its state machine, its Raft.
struct Gw {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    sm: LedgerStateMachine,
    raft: Raft<TypeConfig>,
    outcomes: mpsc::Receiver<Outcome>,
}

fn raft_config() -> Arc<Config> {
    // Generous timeouts: a busy test machine must not make elections flap.
    let c = Config {
        heartbeat_interval: 100,
        election_timeout_min: 1_000,
        election_timeout_max: 2_000,
        snapshot_policy: SnapshotPolicy::Never,
        ..Default::default()
    };
    Arc::new(c.validate().unwrap())
}

impl Gw {
    async fn start(net: &Net, router: &Router, id: NodeId) -> Gw {
        Gw::open(net, router, id, tempfile::tempdir().unwrap()).await
    }

    /// Stops this member (its Raft and both stores closed), then opens it
    /// again from what it stored.
    async fn restart(self, net: &Net, router: &Router, id: NodeId) -> Gw {
        self.raft.shutdown().await.unwrap();
        router.remove(id);
        let Gw {
            _dir: dir,
            store,
            sm,
            raft,
            outcomes,
        } = self;
        drop((store, sm, raft, outcomes));
        Gw::open(net, router, id, dir).await
    }

    async fn open(net: &Net, router: &Router, id: NodeId, dir: tempfile::TempDir) -> Gw {
        // After a shutdown, openraft's tasks drop the stores they own a
        // little later: wait for the files to be free (bounded).
        let t = std::time::Instant::now();
        let (store, log) = loop {
            match (Store::open(dir.path()), LogStore::open_in_dir(dir.path())) {
                (Ok(s), Ok(l)) => break (Arc::new(s), l),
                (s, l) => {
                    assert!(t.elapsed() < Duration::from_secs(60), "stores still held");
                    drop((s, l));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let (tx, outcomes) = mpsc::channel(1024);
        let key = Arc::new(net.gateways[id as usize - 1].clone());
        let sm = LedgerStateMachine::open(
            store.clone(),
            &net.genesis,
            Some(key),
            Some(tx),
            StateMachineConfig {
                snapshot_every: 2,
                ..Default::default()
            },
        )
        .unwrap();
        let raft = Raft::new(id, raft_config(), router.member(id), log, sm.clone())
            .await
            .unwrap();
        router.add(id, raft.clone());
        Gw {
            _dir: dir,
            store,
            sm,
            raft,
            outcomes,
        }
    }

    /// Waits until this member has applied the log up to `index`.
    async fn applied(&self, index: u64) {
        self.raft
            .wait(Some(Duration::from_secs(60)))
            .applied_index_at_least(Some(index), "applied")
            .await
            .unwrap();
    }

    /// The next outcome (bounded wait).
    async fn outcome(&mut self) -> Outcome {
        tokio::time::timeout(Duration::from_secs(60), self.outcomes.recv())
            .await
            .expect("an outcome in time")
            .expect("the state machine is running")
    }

    /// Every stored block's exact bytes, by height.
    fn chain(&self) -> Vec<Vec<u8>> {
        let head = self.store.head().unwrap().unwrap().height;
        (0..=head)
            .map(|h| self.store.block_bytes(h).unwrap().unwrap())
            .collect()
    }
}

async fn cluster(net: &Net, n: u64) -> (Router, Vec<Gw>) {
    let router = Router::default();
    let mut members = Vec::new();
    for id in 1..=n {
        members.push(Gw::start(net, &router, id).await);
    }
    let voters: BTreeMap<NodeId, GatewayNode> = (1..=n).map(|id| (id, net.node(id))).collect();
    members[0].raft.initialize(voters).await.unwrap();
    members[0]
        .raft
        .wait(Some(Duration::from_secs(60)))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .unwrap();
    (router, members)
}

/// The leader's index in `members`.
fn leader(members: &[Gw]) -> usize {
    let id = members[0].raft.metrics().borrow().current_leader.unwrap();
    id as usize - 1
}

/// A block of `txs` on `state`, proposed by `proposer`.
fn block_on(state: &WorldState, proposer: &Keypair, txs: Vec<(Transaction, Vec<u8>)>) -> Block {
    let ts = state.last_timestamp_ms() + 1_000;
    let built = build_block_from_pool(state, proposer, txs, ts, SigCheck::Verify);
    assert!(built.rejected.is_empty());
    built.block
}

async fn write(m: &Gw, req: ClusterRequest) -> (u64, ClusterResponse) {
    let r = m.raft.client_write(req).await.unwrap();
    (r.log_id.index, r.data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_store_the_same_chain_refuse_the_same_bad_block_and_certify_by_quorum() {
    let net = Net::new(3);
    let (_router, mut members) = cluster(&net, 3).await;
    let l = leader(&members);
    let proposer = &net.gateways[l];

    // Two good blocks through the log: every member stores them.
    let mut state = (*members[l].sm.state()).clone();
    let mut last = 0;
    for round in 0..2u64 {
        let block = block_on(&state, proposer, net.readings(round * 10, 10));
        state.apply_block(&block, None, SigCheck::Verify).unwrap();
        let (index, resp) = write(&members[l], ClusterRequest::Block(block.to_vec())).await;
        assert_eq!(
            resp,
            ClusterResponse::Applied {
                height: block.header.height,
                hash: block.hash().0
            }
        );
        last = index;
    }
    for m in &members {
        m.applied(last).await;
    }
    let chain = members[0].chain();
    assert_eq!(chain.len(), 3, "genesis and two blocks");
    for m in &members[1..] {
        assert_eq!(m.chain(), chain, "every member stores the same bytes");
    }

    // A block with a forged reading signature, as a lying leader would
    // propose it: rejected alike everywhere, stored nowhere, signed by no one.
    let good = block_on(&state, proposer, net.readings(20, 3));
    let mut bad = good.clone();
    bad.txs[1].signature.0[5] ^= 1;
    let bad = Block::decode(&resign(bad, proposer)).unwrap();
    let (bad_index, resp) = write(&members[l], ClusterRequest::Block(bad.to_vec())).await;
    let ClusterResponse::Rejected { reason } = resp else {
        panic!("a forged signature must be rejected, got {resp:?}");
    };
    assert!(reason.contains("signature"), "{reason}");
    for m in &members {
        m.applied(bad_index).await;
        assert_eq!(m.chain(), chain, "nothing of the bad block is stored");
        let rej = m.store.rejections(bad_index, 10).unwrap();
        assert_eq!(
            rej,
            vec![(bad_index, reason.clone())],
            "the same record everywhere"
        );
        assert_eq!(
            m.store.own_vote(bad.header.height).unwrap(),
            None,
            "never signed"
        );
    }

    // Votes: every member signed each stored block once; a quorum (2 of 3)
    // certifies block 2 for everyone.
    let mut votes = Vec::new();
    for m in &mut members {
        let mut mine = BTreeMap::new();
        loop {
            match m.outcome().await {
                Outcome::Block {
                    height, hash, vote, ..
                } => {
                    let vote = vote.expect("a validator votes");
                    assert_eq!(m.store.own_vote(height).unwrap(), Some(hash));
                    mine.insert(height, vote);
                }
                Outcome::Rejected { .. } => break,
                o => panic!("unexpected {o:?}"),
            }
        }
        votes.push(mine);
    }
    let header2 = members[0].store.header(2).unwrap().unwrap();
    let mut weak = FinalityCert::new(&header2);
    weak.add(votes[0][&2]).unwrap();
    let (weak_index, resp) = write(
        &members[l],
        ClusterRequest::Finality(codec::encode_to_vec(&weak)),
    )
    .await;
    assert!(
        matches!(resp, ClusterResponse::Rejected { .. }),
        "one vote is no quorum: {resp:?}"
    );
    let mut cert = weak.clone();
    cert.add(votes[2][&2]).unwrap();
    let (_, resp) = write(
        &members[l],
        ClusterRequest::Finality(codec::encode_to_vec(&cert)),
    )
    .await;
    assert_eq!(
        resp,
        ClusterResponse::Certified {
            height: 2,
            hash: header2.hash().0
        }
    );
    // The same certificate again: already certified.
    let (dup_index, resp) = write(
        &members[l],
        ClusterRequest::Finality(codec::encode_to_vec(&cert)),
    )
    .await;
    assert!(matches!(resp, ClusterResponse::Rejected { .. }), "{resp:?}");
    let validators: Vec<_> = state.validators();
    for m in &members {
        m.applied(dup_index).await;
        let stored = m
            .store
            .cert(2)
            .unwrap()
            .expect("every member stores the certificate");
        assert_eq!(stored, cert);
        stored.verify(&header2, &validators).unwrap();
        assert_eq!(m.store.cert(1).unwrap(), None);
        let rejected: Vec<u64> = m
            .store
            .rejections(0, 10)
            .unwrap()
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(rejected, vec![bad_index, weak_index, dup_index]);
    }
}

/// Re-signs a block's header after its body changed (the lying proposer
/// signs what it proposes).
fn resign(mut b: Block, proposer: &Keypair) -> Vec<u8> {
    b.header.tx_root = Block::tx_root_of(&b.encoded_txs());
    b.proposer_sig = b.header.sign_proposal(proposer);
    b.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_refuses_a_stale_block_and_a_restarted_member_catches_up() {
    let net = Net::new(3);
    let (router, mut members) = cluster(&net, 3).await;
    let old = leader(&members);
    let mut state = (*members[old].sm.state()).clone();
    let b1 = block_on(&state, &net.gateways[old], net.readings(0, 5));
    let (i1, _) = write(&members[old], ClusterRequest::Block(b1.to_vec())).await;
    for m in &members {
        m.applied(i1).await;
    }
    state.apply_block(&b1, None, SigCheck::Verify).unwrap();

    // The leader is cut off: the other two elect a new one and go on.
    let old_id = old as NodeId + 1;
    router.cut(old_id);
    let other = (old + 1) % 3;
    members[other]
        .raft
        .wait(Some(Duration::from_secs(60)))
        .metrics(
            |m| m.current_leader.is_some_and(|l| l != old_id),
            "a new leader",
        )
        .await
        .unwrap();
    let new = members[other]
        .raft
        .metrics()
        .borrow()
        .current_leader
        .unwrap() as usize
        - 1;
    let b2 = block_on(&state, &net.gateways[new], net.readings(5, 5));
    // What the old leader had built on the same head, late: same height.
    let stale = block_on(&state, &net.gateways[old], net.readings(10, 5));
    let (i2, r2) = write(&members[new], ClusterRequest::Block(b2.to_vec())).await;
    assert!(
        matches!(r2, ClusterResponse::Applied { height: 2, .. }),
        "{r2:?}"
    );
    let (i3, r3) = write(&members[new], ClusterRequest::Block(stale.to_vec())).await;
    let ClusterResponse::Rejected { reason } = r3 else {
        panic!("a block on an old head must be refused: {r3:?}");
    };
    assert!(reason.contains("height"), "{reason}");

    // The old leader rejoins after a restart from its own disk and catches up
    // on everything it missed, the rejection included.
    router.heal();
    let restarted = members.remove(old).restart(&net, &router, old_id).await;
    members.insert(old, restarted);
    for m in &members {
        m.applied(i3).await;
    }
    let chain = members[new].chain();
    assert_eq!(chain.len(), 3);
    for m in &members {
        assert_eq!(m.chain(), chain);
        assert_eq!(
            m.store.rejections(0, 10).unwrap(),
            vec![(i3, reason.clone())]
        );
        assert_eq!(m.sm.applied().map(|l| l.index), Some(i3.max(i2)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaders_collector_certifies_every_block_and_keeps_equivocation_as_evidence() {
    let net = Net::new(3);
    let (_router, mut members) = cluster(&net, 3).await;
    let l = leader(&members);
    let mut state = (*members[l].sm.state()).clone();
    let mut last = 0;
    for round in 0..3u64 {
        let block = block_on(&state, &net.gateways[l], net.readings(round * 4, 4));
        state.apply_block(&block, None, SigCheck::Verify).unwrap();
        last = write(&members[l], ClusterRequest::Block(block.to_vec()))
            .await
            .0;
    }
    for m in &members {
        m.applied(last).await;
    }

    // A vote for a height the leader's chain has not reached waits.
    let mut collector = Collector::new(members[l].store.clone());
    let ahead = members[l].store.header(3).unwrap().unwrap();
    let mut future = ahead.clone();
    future.height = 9;
    let early = FinalityCert::vote(&future, &net.gateways[0]);
    assert_eq!(
        collector.add(9, future.hash(), early).unwrap(),
        Verdict::Early
    );

    // Every member's votes: one certificate per block, at the second vote.
    let mut certs = Vec::new();
    for m in &mut members {
        for _ in 0..3 {
            let Outcome::Block {
                height, hash, vote, ..
            } = m.outcome().await
            else {
                panic!("a block outcome");
            };
            match collector.add(height, hash, vote.unwrap()).unwrap() {
                Verdict::Quorum(c) => certs.push(*c),
                Verdict::Counted {
                    votes: 1,
                    quorum: 2,
                }
                | Verdict::Known => {}
                v => panic!("unexpected {v:?}"),
            }
        }
    }
    assert_eq!(
        certs.iter().map(|c| c.height).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );

    // Refused: a forged vote, a vote by a key that is not a validator.
    let h1 = members[l].store.header(1).unwrap().unwrap();
    let mut forged = FinalityCert::vote(&h1, &net.gateways[1]);
    forged.signature.0[0] ^= 1;
    assert!(matches!(
        collector.add(1, h1.hash(), forged).unwrap(),
        Verdict::Refused(_)
    ));
    let outsider = FinalityCert::vote(&h1, &net.device);
    assert!(matches!(
        collector.add(1, h1.hash(), outsider).unwrap(),
        Verdict::Refused(_)
    ));

    // Equivocation: gateway 2 also signs another block at height 1.
    let mut other = h1.clone();
    other.timestamp_ms += 1;
    let second = FinalityCert::vote(&other, &net.gateways[1]);
    let Verdict::Equivocation(e) = collector.add(1, other.hash(), second).unwrap() else {
        panic!("two hashes at one height by one validator");
    };
    assert_eq!(e.validator, net.gateways[1].public());
    assert_eq!(members[l].store.evidence(10).unwrap(), vec![*e]);

    // The certificates through the log: every member stores all three.
    let mut idx = 0;
    for c in &certs {
        let (i, r) = write(
            &members[l],
            ClusterRequest::Finality(codec::encode_to_vec(c)),
        )
        .await;
        assert!(matches!(r, ClusterResponse::Certified { .. }), "{r:?}");
        collector.on_final(c.height);
        idx = i;
    }
    for m in &members {
        m.applied(idx).await;
        for c in &certs {
            assert_eq!(m.store.cert(c.height).unwrap().as_ref(), Some(c));
        }
    }
    // Late votes for certified blocks change nothing; the early vote waits.
    let late = FinalityCert::vote(&h1, &net.gateways[2]);
    assert_eq!(collector.add(1, h1.hash(), late).unwrap(), Verdict::Known);
    assert_eq!(collector.pending(), 1, "only the early vote is kept");
    assert!(
        collector.on_block(3).unwrap().is_empty(),
        "height 9 not reached"
    );
}

/// The safety checks, read from what the members stored: one chain (every
/// member's stored blocks are the same bytes at each height: no fork), and
/// every stored certificate valid under the validator set of its height.
fn assert_safe(members: &[Gw]) {
    let chains: Vec<Vec<Vec<u8>>> = members.iter().map(Gw::chain).collect();
    let longest = chains.iter().max_by_key(|c| c.len()).unwrap();
    for (i, c) in chains.iter().enumerate() {
        assert_eq!(
            c[..],
            longest[..c.len()],
            "member {} stores another block at some height",
            i + 1
        );
    }
    for m in members {
        for h in 0..m.chain().len() as u64 {
            if let Some(cert) = m.store.cert(h).unwrap() {
                let header = m.store.header(h).unwrap().unwrap();
                let set = m.store.validator_set_at(h).unwrap().unwrap();
                let keys: Vec<_> = set
                    .iter()
                    .map(|k| sensorchain_core::identity::VerifyingKey::from_public(k).unwrap())
                    .collect();
                cert.verify(&header, &keys).unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_go_on_without_two_stop_without_three_and_never_fork() {
    let net = Net::new(5);
    let (router, members) = cluster(&net, 5).await;
    let l = leader(&members);
    let mut state = (*members[l].sm.state()).clone();
    let followers: Vec<usize> = (0..5).filter(|&i| i != l).collect();

    // Two members down: the other three still commit.
    for &f in &followers[..2] {
        router.cut(f as NodeId + 1);
    }
    let b1 = block_on(&state, &net.gateways[l], net.readings(0, 5));
    let (i1, r1) = write(&members[l], ClusterRequest::Block(b1.to_vec())).await;
    assert!(
        matches!(r1, ClusterResponse::Applied { height: 1, .. }),
        "{r1:?}"
    );
    state.apply_block(&b1, None, SigCheck::Verify).unwrap();
    for &i in [l].iter().chain(&followers[2..]) {
        members[i].applied(i1).await;
        assert_eq!(members[i].chain().len(), 2);
    }

    // A third one down: nothing can be committed (no quorum), so no member
    // stores the next block, however long it waits.
    router.cut(followers[2] as NodeId + 1);
    let b2 = block_on(&state, &net.gateways[l], net.readings(5, 5));
    let raft = members[l].raft.clone();
    let pending =
        tokio::spawn(async move { raft.client_write(ClusterRequest::Block(b2.to_vec())).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !pending.is_finished(),
        "a write without a quorum must not complete"
    );
    for m in &members {
        assert!(m.chain().len() <= 2, "nothing beyond block 1 is stored");
    }
    assert_safe(&members);

    // All back: the members converge on one chain, whoever leads now; the
    // pending block is stored by all or by none.
    router.heal();
    let answer = tokio::time::timeout(Duration::from_secs(120), pending)
        .await
        .expect("the pending write is answered once a quorum is back")
        .unwrap();
    let last = members
        .iter()
        .map(|m| m.raft.metrics().borrow().last_log_index.unwrap_or(0))
        .max()
        .unwrap();
    for m in &members {
        m.applied(last).await;
    }
    assert_safe(&members);
    let heads: Vec<usize> = members.iter().map(|m| m.chain().len()).collect();
    assert!(
        heads.iter().all(|&h| h == heads[0]),
        "every member at one head: {heads:?}"
    );
    if let Ok(r) = answer {
        assert!(
            matches!(r.data, ClusterResponse::Applied { height: 2, .. }),
            "{:?}",
            r.data
        );
        assert_eq!(heads[0], 3, "an applied block is stored by all");
    }
}
