//! Three gateways in one process, each a [`Node`] with its own Raft over
//! real peer links on loopback TCP: readings submitted to any of them are
//! acknowledged once final, and every member stores the same chain with
//! the same certificates. Verdicts are read from what each member stored.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sensorchain_core::block::Block;
use sensorchain_core::identity::Keypair;
use sensorchain_core::permissions::Role;
use sensorchain_core::reading::Vital;
use sensorchain_core::tx::{Member, Transaction, TxBody};

use super::{Node, NodeConfig, now_ms};
use crate::cluster::{ClusterSettings, GatewayNode};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::testkit;

/// Generous bound on anything a test waits for (a busy machine).
const BOUND: Duration = Duration::from_secs(120);

struct Cluster {
    genesis: Block,
    keys: Vec<Keypair>,
    device: Keypair,
    dirs: Vec<tempfile::TempDir>,
    settings: Vec<ClusterSettings>,
}

/// A free loopback port (bound and released: a race with other processes
/// that the bounded waits below absorb no worse than a refused connect).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        let admin = testkit::admin();
        let keys: Vec<Keypair> = (0..n)
            .map(|i| Keypair::from_seed([40 + i as u8; 32]))
            .collect();
        let device = Keypair::from_seed([3; 32]);
        let mut others = testkit::device_members(std::slice::from_ref(&device));
        others.extend(
            keys[1..]
                .iter()
                .map(|k| Member::of_role(k.public(), Role::Gateway)),
        );
        let genesis = testkit::genesis_block("cluster-node-test", &admin, &keys[0], &others);
        let members: BTreeMap<u64, GatewayNode> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                (
                    i as u64 + 1,
                    GatewayNode {
                        addr: format!("127.0.0.1:{}", free_port()),
                        public_key: k.public().0,
                    },
                )
            })
            .collect();
        let settings = (0..n)
            .map(|i| {
                let id = i as u64 + 1;
                ClusterSettings {
                    node_id: id,
                    listen: Some(members[&id].addr.clone()),
                    members: members.clone(),
                    heartbeat_ms: 100,
                    election_ms: (1_000, 2_000),
                    join: false,
                    ..Default::default()
                }
            })
            .collect();
        Cluster {
            genesis,
            keys,
            device,
            dirs: (0..n).map(|_| tempfile::tempdir().unwrap()).collect(),
            settings,
        }
    }

    /// Starts member `i` (0-based) on its directory.
    fn start(&self, i: usize) -> Node {
        let cfg = NodeConfig {
            batch_timeout: Duration::from_millis(5),
            cluster: self.settings[i].clone(),
            ..Default::default()
        };
        let t = Instant::now();
        // a member stopped just before releases its files a little later
        let store = loop {
            match Store::open(self.dirs[i].path()) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(t.elapsed() < BOUND, "store still held: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        Node::start(
            store,
            self.keys[i].clone(),
            &self.genesis,
            cfg,
            Arc::new(Metrics::new()),
        )
        .unwrap()
    }

    fn reading(&self, seq: u64) -> Vec<u8> {
        self.reading_of(seq, 60 + (seq % 40) as u16)
    }

    /// Reading `seq` with heart rate `bpm` (two values: two transactions
    /// under one sequence number).
    fn reading_of(&self, seq: u64, bpm: u16) -> Vec<u8> {
        let body = TxBody::reading(
            self.device.public(),
            seq,
            now_ms(),
            0,
            Vital::HeartRate { bpm },
        );
        Transaction::sign(body, &self.genesis.header.chain_id, &self.device)
            .unwrap()
            .to_vec()
    }
}

/// Waits (bounded) until `f` holds.
fn until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < BOUND, "{what}: not within {BOUND:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Submits reading `seq` to `node` until it is taken (busy while there is
/// no leader), and returns its outcome.
fn submit(
    c: &Cluster,
    rt: &tokio::runtime::Runtime,
    node: &Node,
    seq: u64,
) -> Result<super::Committed, super::Rejected> {
    let t = Instant::now();
    loop {
        match rt.block_on(node.submit(c.reading(seq), Some(c.device.public()))) {
            Err(super::Rejected::Busy) if t.elapsed() < BOUND => {
                std::thread::sleep(Duration::from_millis(100));
            }
            r => return r,
        }
    }
}

/// Stops a node and waits for its threads (and so its stores) to end.
fn stop(node: Node) {
    let producer = node.take_producer().unwrap();
    drop(node);
    producer.join().unwrap();
}

/// What a member stored: (height, hash, certificate present) for every
/// block.
fn stored(node: &Node) -> Vec<(u64, sensorchain_core::hash::Hash32, bool)> {
    let s = node.store();
    let head = s.head().unwrap().unwrap().height;
    (0..=head)
        .map(|h| {
            let header = s.header(h).unwrap().unwrap();
            (h, header.hash(), s.cert(h).unwrap().is_some())
        })
        .collect()
}

#[test]
fn three_members_one_chain_submitted_anywhere() {
    let c = Cluster::new(3);
    // members start together: each waits for nothing but its own log
    let nodes: Vec<Node> = std::thread::scope(|s| {
        let c = &c;
        let hs: Vec<_> = (0..3).map(|i| s.spawn(move || c.start(i))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dev = Some(c.device.public());
    // sequence numbers go up across members: submit in order, each
    // acknowledged (final) before the next, to a different member each
    let mut acked = Vec::new();
    for seq in 1..=30u64 {
        let node = &nodes[seq as usize % 3];
        let t = Instant::now();
        let r = loop {
            match rt.block_on(node.submit(c.reading(seq), dev)) {
                Err(super::Rejected::Busy) if t.elapsed() < BOUND => {
                    // no leader yet: resend
                    std::thread::sleep(Duration::from_millis(100));
                }
                r => break r,
            }
        };
        let committed =
            r.unwrap_or_else(|e| panic!("reading {seq} via member {}: {e}", seq % 3 + 1));
        acked.push(committed);
    }
    // every member stores every acknowledged reading, final, in one chain
    let t = Instant::now();
    loop {
        let views: Vec<_> = nodes.iter().map(stored).collect();
        let all_there = nodes.iter().all(|n| {
            acked.iter().all(|a| {
                n.store()
                    .tx_location(&a.tx_id)
                    .unwrap()
                    .is_some_and(|l| n.store().cert(l.height).unwrap().is_some())
            })
        });
        if all_there && views.iter().all(|v| v == &views[0]) {
            break;
        }
        assert!(t.elapsed() < BOUND, "members differ: {views:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // one leader, the others following it
    let statuses: Vec<_> = nodes.iter().map(|n| n.cluster_status()).collect();
    let leaders: Vec<_> = statuses.iter().filter(|s| s.role == "leader").collect();
    assert_eq!(leaders.len(), 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| s.leader == Some(leaders[0].node_id))
    );
    // any member gives every other member's report of itself (asked over
    // the peer links): its role, term and heights
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let overview = rt.block_on(nodes[0].cluster_overview());
    let others: Vec<_> = overview
        .members
        .iter()
        .filter(|m| m.id != overview.node_id)
        .collect();
    assert_eq!(others.len(), 2, "{overview:?}");
    for m in others {
        let r = m.reported.as_ref().unwrap_or_else(|| panic!("{m:?}"));
        let s = statuses.iter().find(|s| s.node_id == m.id).unwrap();
        assert!(r.role == "leader" || r.role == "follower", "{r:?}");
        assert!(r.term >= s.term && r.height >= s.height, "{r:?} {s:?}");
        assert_eq!(r.health, "ok");
    }
    // the links and the log in the metrics: the leader's appends were
    // answered, every member's log has entries, its files a size
    let scraped: Vec<String> = nodes
        .iter()
        .map(|n| {
            n.refresh_metrics();
            n.metrics().encode()
        })
        .collect();
    let value = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in:\n{text}"))
    };
    let l = statuses.iter().position(|s| s.role == "leader").unwrap();
    assert!(
        value(
            &scraped[l],
            "sensorchain_peer_requests_total{kind=\"append_entries\",outcome=\"answered\"}"
        ) > 0.0
    );
    assert_eq!(value(&scraped[l], "sensorchain_raft_leader"), 1.0);
    for (i, text) in scraped.iter().enumerate() {
        assert!(
            value(text, "sensorchain_raft_term") >= 1.0,
            "member {}",
            i + 1
        );
        assert!(value(text, "sensorchain_raft_log_entries") >= 1.0);
        assert!(value(text, "sensorchain_raft_log_file_bytes") > 0.0);
        assert!(value(text, "sensorchain_chain_file_bytes") > 0.0);
        assert!(
            value(
                text,
                "sensorchain_peer_dials_total{outcome=\"established\"}"
            ) >= 1.0
        );
        if i != l {
            assert!(
                value(
                    text,
                    "sensorchain_peer_served_total{kind=\"append_entries\"}"
                ) > 0.0,
                "member {}",
                i + 1
            );
        }
    }
    for n in nodes {
        stop(n);
    }
}

/// Membership follows the chain: a gateway whose key validates joins a
/// running two-member cluster (as a learner, then a voter) and takes
/// readings; when an admin revokes its `validate`, the leader removes it.
#[test]
fn a_validator_joins_and_leaves_by_the_chain() {
    let mut c = Cluster::new(3);
    // members 1 and 2 start the cluster; 3 waits to be added
    let first_two: BTreeMap<u64, GatewayNode> = c.settings[0]
        .members
        .iter()
        .filter(|(id, _)| **id <= 2)
        .map(|(id, n)| (*id, n.clone()))
        .collect();
    for s in &mut c.settings[..2] {
        s.members = first_two.clone();
    }
    c.settings[2].join = true;
    let nodes: Vec<Node> = std::thread::scope(|s| {
        let c = &c;
        let hs: Vec<_> = (0..3).map(|i| s.spawn(move || c.start(i))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    submit(&c, &rt, &nodes[0], 1).unwrap();
    let leader = || {
        nodes
            .iter()
            .position(|n| n.cluster_status().role == "leader")
    };
    until("a leader", || leader().is_some());
    let l = leader().unwrap();
    assert!(l < 2, "member 3 cannot lead before it is added");
    let third = c.settings[2].members[&3].clone();
    // a key the chain has not granted validate is refused
    let stranger = GatewayNode {
        public_key: Keypair::from_seed([99; 32]).public().0,
        ..third.clone()
    };
    assert!(matches!(
        rt.block_on(nodes[l].add_member(9, stranger)),
        Err(super::MembershipError::NotValidator(_))
    ));
    rt.block_on(nodes[l].add_member(3, third)).unwrap();
    let voters = |n: &Node| {
        n.cluster_status()
            .members
            .iter()
            .filter(|m| m.voter)
            .count()
    };
    until("three voters everywhere", || {
        nodes.iter().all(|n| voters(n) == 3)
    });
    // the new member takes readings, final on all three
    let r = submit(&c, &rt, &nodes[2], 2).unwrap();
    until("reading 2 final everywhere", || {
        nodes.iter().all(|n| {
            n.store()
                .tx_location(&r.tx_id)
                .unwrap()
                .is_some_and(|loc| n.store().cert(loc.height).unwrap().is_some())
        })
    });
    // the admin revokes validate from member 3's key: the leader removes it
    let admin = testkit::admin();
    let l = leader().unwrap();
    let seq = nodes[l]
        .state()
        .identity(&admin.public())
        .and_then(|i| i.last_sequence)
        .unwrap_or(0)
        + 1;
    let revoke = Transaction::sign(
        TxBody {
            signer: admin.public(),
            sequence: seq,
            timestamp_ms: now_ms(),
            kind: sensorchain_core::tx::TxKind::Revoke {
                target: c.keys[2].public(),
                permissions: sensorchain_core::permissions::Permissions::VALIDATE,
            },
        },
        &c.genesis.header.chain_id,
        &admin,
    )
    .unwrap();
    rt.block_on(nodes[l].submit(revoke.to_vec(), None)).unwrap();
    until("member 3 removed", || {
        nodes[..2]
            .iter()
            .all(|n| n.cluster_status().members.iter().all(|m| m.id != 3))
    });
    // the two go on (a quorum of the two validators left)
    let r = submit(&c, &rt, &nodes[l], 3).unwrap();
    assert!(r.height > 0);
    for n in nodes {
        stop(n);
    }
}

/// Two copies of one sequence number sent at once through the two
/// followers: both are forwarded and may both be taken by the leader, whose
/// proposer then leaves the second out (a replay of the first). Each
/// submitter hears the truth: one acknowledged, the other refused as a
/// replay (the follower sees it in its committed state), never "busy"
/// after the follower's 30 s wait.
#[test]
fn copies_of_one_sequence_sent_through_two_followers_each_answered_truly() {
    let c = Cluster::new(3);
    let nodes: Vec<Node> = std::thread::scope(|s| {
        let c = &c;
        let hs: Vec<_> = (0..3).map(|i| s.spawn(move || c.start(i))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    submit(&c, &rt, &nodes[0], 1).unwrap();
    let leader = || {
        nodes
            .iter()
            .position(|n| n.cluster_status().role == "leader")
    };
    until("a leader", || leader().is_some());
    let l = leader().unwrap();
    let followers: Vec<&Node> = (0..3).filter(|i| *i != l).map(|i| &nodes[i]).collect();
    let dev = Some(c.device.public());
    let mut kept = Vec::new();
    for seq in 2..=11u64 {
        let (a, b) = (c.reading_of(seq, 61), c.reading_of(seq, 62));
        let (ra, rb) = rt.block_on(async {
            tokio::join!(followers[0].submit(a, dev), followers[1].submit(b, dev))
        });
        let outcomes = [ra, rb];
        let acked: Vec<_> = outcomes.iter().filter_map(|r| r.as_ref().ok()).collect();
        let refused: Vec<_> = outcomes.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(acked.len(), 1, "sequence {seq}: {outcomes:?}");
        assert_eq!(
            refused[0].reason(),
            Some(sensorchain_core::link::RejectReason::Replay),
            "sequence {seq}: {outcomes:?}"
        );
        kept.push(acked[0].tx_id);
    }
    // the chain holds exactly the acknowledged copy of each
    until("every acknowledged copy final on the leader", || {
        kept.iter().all(|id| {
            nodes[l]
                .store()
                .tx_location(id)
                .unwrap()
                .is_some_and(|loc| nodes[l].store().cert(loc.height).unwrap().is_some())
        })
    });
    let head = nodes[l].store().head().unwrap().unwrap();
    assert_eq!(
        head.reading_count_total, 11,
        "one reading per sequence number"
    );
    for n in nodes {
        stop(n);
    }
}

/// A member whose disk fills stops (Raft's storage error) while the other
/// two keep finalizing; once space is freed it restarts by itself
/// ([`crate::app::run_healing`]) and catches up: the same chain, with the
/// same certificates, on all three, and its store passes the checks.
#[test]
fn a_member_with_a_full_disk_heals_and_catches_up() {
    use crate::app::{HealSettings, run_healing};
    use crate::testkit::Tmpfs;
    let Some(disk) = Tmpfs::mount("8m", "a_member_with_a_full_disk_heals_and_catches_up") else {
        return;
    };
    let c = Cluster::new(3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // member 3 runs healing, its data directory on the small disk
    let data = disk.path().join("data");
    let mut cfg = testkit::app_config(&c.keys[2], c.genesis.clone(), &data);
    cfg.tcp = None;
    cfg.node.cluster = c.settings[2].clone();
    cfg.heal = HealSettings {
        probe_every: Duration::from_millis(100),
        probe_bytes: 1 << 20,
    };
    let metrics = cfg.metrics.clone();
    let (nodes3, started) = tokio::sync::watch::channel(None::<super::WeakNode>);
    let (stop3, stopping) = tokio::sync::oneshot::channel::<()>();
    let run3 = rt.spawn(run_healing(
        cfg,
        async {
            let _ = stopping.await;
        },
        move |r| {
            nodes3.send_replace(Some(r.node().downgrade()));
        },
    ));
    let nodes: Vec<Node> = std::thread::scope(|s| {
        let c = &c;
        let hs: Vec<_> = (0..2).map(|i| s.spawn(move || c.start(i))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let third = || started.borrow().as_ref().and_then(|w| w.upgrade());
    until("member 3 started", || third().is_some());
    let mut acked = vec![submit(&c, &rt, &nodes[0], 1).unwrap()];

    // its disk fills: readings go on through members 1 and 2 (in order,
    // many at once) until member 3 has failed
    disk.fill(256 * 1024);
    let dev = Some(c.device.public());
    let mut seq = 2;
    let t = Instant::now();
    while metrics.storage_failed.get() != 1 {
        assert!(t.elapsed() < BOUND, "member 3's disk never filled");
        let tickets: Vec<_> = (seq..seq + 50)
            .filter_map(|s| nodes[0].enqueue(c.reading(s), dev).ok())
            .collect();
        seq += 50;
        for t in tickets {
            if let Ok(r) = rt.block_on(t.wait()) {
                acked.push(r);
            }
        }
    }
    // the others keep finalizing without it
    for _ in 0..10 {
        acked.push(submit(&c, &rt, &nodes[1], seq).unwrap());
        seq += 1;
    }
    assert_eq!(metrics.storage_heals.get(), 0, "healed on a full disk");

    // space is freed: member 3 is back by itself and catches up
    disk.empty();
    until("member 3 healed", || metrics.storage_heals.get() == 1);
    for _ in 0..10 {
        acked.push(submit(&c, &rt, &nodes[0], seq).unwrap());
        seq += 1;
    }
    until("member 3 caught up, the same chain everywhere", || {
        let Some(n3) = third() else { return false };
        let views = [stored(&nodes[0]), stored(&nodes[1]), stored(&n3)];
        // final: its block or a later one certified (a certificate covers
        // its ancestors; a block in flight when a leader failed may have
        // none of its own, on every member alike)
        let last_cert = views[2].iter().rev().find(|v| v.2).map(|v| v.0);
        views.iter().all(|v| v == &views[0])
            && acked.iter().all(|a| {
                n3.store()
                    .tx_location(&a.tx_id)
                    .unwrap()
                    .is_some_and(|l| last_cert.is_some_and(|c| c >= l.height))
            })
    });
    let status = third().unwrap().cluster_status();
    assert_eq!(status.health, "ok", "{status:?}");
    eprintln!(
        "member 3 healed and caught up at height {} ({} readings acknowledged)",
        status.height,
        acked.len()
    );
    // stopped: its store passes the checks and replays
    let _ = stop3.send(());
    let stopped = rt
        .block_on(async { tokio::time::timeout(BOUND, run3).await })
        .expect("member 3 stopped")
        .unwrap()
        .unwrap();
    assert_eq!(stopped.heals, 1);
    for n in nodes {
        stop(n);
    }
    let store = Store::open(&data).unwrap();
    store
        .check_integrity(crate::store::integrity::IntegrityDepth::Full)
        .unwrap();
    assert!(super::replay(&store, &c.genesis).unwrap().is_some());
}
