use super::*;
use sensorchain_core::chain::Chain;
use sensorchain_core::permissions::{Permissions, Role};
use sensorchain_core::reading::Vital;
use sensorchain_core::state::SigCheck;
use sensorchain_core::tx::{GenesisConfig, Member, Params, TxBody, TxKind};

use super::ingest::{Slot, VerifyPool};
use super::ledger::{propose, write};
use crate::testkit;

struct Fixture {
    admin: Keypair,
    gateway: Keypair,
    device: Keypair,
    genesis: Block,
    dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let (admin, gateway) = (testkit::admin(), testkit::gateway());
    let device = Keypair::from_seed([3; 32]);
    let others = testkit::device_members(std::slice::from_ref(&device));
    let genesis = testkit::genesis_block("node-test", &admin, &gateway, &others);
    Fixture {
        admin,
        gateway,
        device,
        genesis,
        dir: tempfile::tempdir().unwrap(),
    }
}

/// [`Node::start`] as `key` on `store` and the fixture's genesis, with
/// fresh metrics.
fn start_as(f: &Fixture, store: Store, key: &Keypair, cfg: NodeConfig) -> anyhow::Result<Node> {
    Node::start(
        store,
        key.clone(),
        &f.genesis,
        cfg,
        Arc::new(Metrics::new()),
    )
}

/// The sequence number of the fixture device's last committed transaction.
fn device_seq(node: &Node, f: &Fixture) -> u64 {
    node.state()
        .identity(&f.device.public())
        .unwrap()
        .last_sequence
        .unwrap()
}

fn start(f: &Fixture) -> Node {
    let store = Store::open(f.dir.path()).unwrap();
    let cfg = NodeConfig {
        batch_timeout: Duration::from_millis(5),
        snapshot_every: 3,
        ..Default::default()
    };
    start_as(f, store, &f.gateway, cfg).unwrap()
}

/// A [`fixture`] and its node, [`start`]ed.
fn started() -> (Fixture, Node) {
    let f = fixture();
    let node = start(&f);
    (f, node)
}

fn reading(f: &Fixture, seq: u64, bpm: u16) -> Vec<u8> {
    let body = TxBody::reading(
        f.device.public(),
        seq,
        now_ms(),
        0,
        Vital::HeartRate { bpm },
    );
    Transaction::sign(body, &f.genesis.header.chain_id, &f.device)
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_acks_and_refuses() {
    let (f, node) = started();
    let dev = Some(f.device.public());
    // many concurrent submissions: every one committed, in blocks
    let mut handles = Vec::new();
    for seq in 1..=200u64 {
        let n = node.clone();
        let b = reading(&f, seq, 60 + (seq % 50) as u16);
        handles.push(tokio::spawn(async move { n.submit(b, dev).await }));
    }
    let mut ok = 0;
    let mut replays = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(c) => {
                ok += 1;
                let loc = node.store().tx_location(&c.tx_id).unwrap().unwrap();
                assert_eq!((loc.height, loc.index), (c.height, c.index));
            }
            // concurrent submissions may reach different blocks out of
            // order: a lower sequence after a higher one is then a replay
            Err(Rejected::Rule(TxRuleError::Replay { .. })) => replays += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok + replays, 200);
    assert!(ok > 0);
    // submissions enqueued in order are all accepted, however they are awaited
    let base = device_seq(&node, &f) + 1000;
    let tickets: Vec<_> = (0..100)
        .map(|i| node.enqueue(reading(&f, base + i, 70), dev).unwrap())
        .collect();
    let waits: Vec<_> = tickets
        .into_iter()
        .rev()
        .map(|t| tokio::spawn(t.wait()))
        .collect();
    for w in waits {
        w.await.unwrap().unwrap();
    }
    // sequential: every one accepted
    let last = device_seq(&node, &f);
    for seq in last + 1..last + 20 {
        node.submit(reading(&f, seq, 70), dev).await.unwrap();
    }
    // replay
    let e = node
        .submit(reading(&f, last + 1, 70), dev)
        .await
        .unwrap_err();
    assert!(
        matches!(e, Rejected::Rule(TxRuleError::Replay { .. })),
        "{e}"
    );
    assert_eq!(e.reason(), Some(RejectReason::Replay));
    // implausible
    let e = node
        .submit(reading(&f, last + 100, 60000), dev)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), Some(RejectReason::OutOfRange));
    // bad signature
    let mut b = reading(&f, last + 101, 70);
    let n = b.len();
    b[n - 1] ^= 1;
    assert_eq!(
        node.submit(b, dev).await.unwrap_err(),
        Rejected::BadSignature
    );
    // wrong session identity
    let e = node
        .submit(reading(&f, last + 102, 70), Some(f.gateway.public()))
        .await
        .unwrap_err();
    assert_eq!(e, Rejected::WrongSigner);
    // garbage
    assert!(matches!(
        node.submit(vec![1, 2, 3], dev).await.unwrap_err(),
        Rejected::Malformed(_)
    ));
    assert!(node.metrics().encode().contains("reason=\"replay\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_recovers_everything() {
    let f = fixture();
    let mut ids = Vec::new();
    {
        let node = start(&f);
        for seq in 1..=30 {
            ids.push(
                node.submit(reading(&f, seq, 70), Some(f.device.public()))
                    .await
                    .unwrap(),
            );
        }
    }
    // the producer thread of the first node holds the database open until it
    // sees its queue close; give it a moment
    let node = loop {
        match Store::open(f.dir.path()) {
            Ok(store) => {
                let cfg = NodeConfig::default();
                break start_as(&f, store, &f.gateway, cfg).unwrap();
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    for c in &ids {
        assert!(node.store().tx_location(&c.tx_id).unwrap().is_some());
    }
    assert_eq!(
        node.state()
            .identity(&f.device.public())
            .unwrap()
            .last_sequence,
        Some(30)
    );
    // and continues
    node.submit(reading(&f, 31, 70), Some(f.device.public()))
        .await
        .unwrap();
}

#[test]
fn other_genesis_refused() {
    let f = fixture();
    drop(start(&f));
    std::thread::sleep(Duration::from_millis(50));
    let admin = Keypair::from_seed([9; 32]);
    let cfg = GenesisConfig::new(
        "other",
        Params::default(),
        &[Member::of_role(admin.public(), Role::Admin)],
    )
    .unwrap();
    let other = Chain::genesis_block(&admin, cfg, 1).unwrap();
    let store = Store::open(f.dir.path());
    if let Ok(store) = store {
        let e = Node::start(
            store,
            f.gateway.clone(),
            &other,
            NodeConfig::default(),
            Arc::new(Metrics::new()),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("another chain"), "{e}");
    }
}

/// A full disk: submissions are refused with `storage_failed` (counted),
/// nothing acknowledged is lost, and after space is freed a restarted
/// gateway has every acknowledged reading and a valid chain. Needs a small
/// tmpfs (root); where mounting is not allowed the test says so and stops.
/// The node's own contract, restarted here by hand; the restart without a
/// hand is `app::heal`'s (`a_full_disk_heals_in_place`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_and_loses_nothing() {
    let f = fixture();
    let mnt = f.dir.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!(
            "SKIPPED full_disk_refuses_and_loses_nothing: cannot mount a tmpfs here (needs root)"
        );
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let data = mnt.join("data");
    let metrics = Arc::new(Metrics::new());
    let mut acked = Vec::new();
    let mut storage_failed = 0;
    {
        let store = Store::open(&data).unwrap();
        let cfg = NodeConfig {
            batch_timeout: Duration::from_millis(2),
            ..Default::default()
        };
        let node = Node::start(store, f.gateway.clone(), &f.genesis, cfg, metrics.clone()).unwrap();
        // leave little room
        let filler = mnt.join("filler");
        let free = {
            let out = std::process::Command::new("df")
                .args(["--output=avail", "-B1"])
                .arg(&mnt)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .nth(1)
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        };
        std::fs::write(&filler, vec![0u8; free.saturating_sub(256 * 1024) as usize]).unwrap();
        let dev = Some(f.device.public());
        for seq in 1..=20_000u64 {
            match node.submit(reading(&f, seq, 70), dev).await {
                Ok(c) => acked.push(c.tx_id),
                Err(Rejected::Storage(_)) => {
                    storage_failed += 1;
                    if storage_failed >= 3 {
                        break;
                    }
                }
                Err(e) => panic!("unexpected refusal {e}"),
            }
        }
        assert!(storage_failed >= 1, "the disk never filled");
        assert!(metrics.reject_count("storage_failed") >= 1);
        // the node still answers (reads, refusals) while the disk is full
        assert!(node.store().head().unwrap().is_some());
        std::fs::remove_file(&filler).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // restart with space: every acknowledged reading is there, the chain is valid
    let store = loop {
        match Store::open(&data) {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let node = start_as(&f, store, &f.gateway, NodeConfig::default()).unwrap();
    for id in &acked {
        assert!(
            node.store().tx_location(id).unwrap().is_some(),
            "acknowledged reading lost"
        );
    }
    let next = device_seq(&node, &f) + 1;
    node.submit(reading(&f, next, 70), Some(f.device.public()))
        .await
        .unwrap();
    eprintln!(
        "full disk: {} acknowledged before the disk filled, {storage_failed} refused with storage_failed",
        acked.len()
    );
}

#[test]
fn refusal_log_budget_per_second_reports_what_it_left_out() {
    let b = LogBudget::new();
    let t0 = b.window.lock().unwrap().0;
    for _ in 0..REFUSAL_LOG_PER_SECOND {
        assert_eq!(b.admit(t0), Some(0));
    }
    for _ in 0..7 {
        assert_eq!(b.admit(t0 + Duration::from_millis(999)), None);
    }
    // the next second: the first line logged gives the count left out
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(b.admit(t1), Some(7));
    assert_eq!(b.admit(t1), Some(0));
}

#[test]
fn non_validator_key_refused_before_the_store_is_written() {
    let f = fixture();
    let store = Store::open(f.dir.path()).unwrap();
    let e = start_as(&f, store, &f.device, NodeConfig::default())
        .err()
        .unwrap();
    let ne = e
        .downcast_ref::<NotValidator>()
        .expect("a NotValidator error");
    assert_eq!(ne.key, f.device.public());
    assert_eq!(ne.height, 0);
    let msg = e.to_string();
    assert!(
        msg.contains(&f.gateway.public().to_string()) && msg.contains("validate"),
        "{msg}"
    );
    // nothing was committed: the store is still empty, and the validator starts on it
    std::thread::sleep(Duration::from_millis(50));
    let store = Store::open(f.dir.path()).unwrap();
    assert!(store.head().unwrap().is_none());
    drop(store);
    drop(start(&f));
}

/// An admin transaction of the fixture's admin with this sequence.
fn admin_tx(f: &Fixture, seq: u64, kind: TxKind) -> (Transaction, Vec<u8>) {
    let body = TxBody {
        signer: f.admin.public(),
        sequence: seq,
        timestamp_ms: now_ms(),
        kind,
    };
    let t = Transaction::sign(body, &f.genesis.header.chain_id, &f.admin).unwrap();
    let b = t.to_vec();
    (t, b)
}

/// A waiter of the reply registry.
type Waiter = oneshot::Receiver<Result<Committed, Rejected>>;

/// Admitted and verified slots of these encoded transactions, each with a
/// waiter registered.
fn slots(node: &Node, txs: &[Vec<u8>]) -> (Vec<Arc<Slot>>, Vec<Waiter>) {
    let mut slots = Vec::new();
    let mut waiters = Vec::new();
    for b in txs {
        let s = Slot::verified(Transaction::decode(b).unwrap(), b.clone());
        waiters.push(node.inner.replies.register(s.id).unwrap());
        slots.push(s);
    }
    (slots, waiters)
}

/// Waits (bounded) for a waiter's outcome.
fn outcome_within(rx: Waiter) -> Result<Committed, Rejected> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .expect("answered within 60 s")
            .expect("the waiter was resolved")
    })
}

/// A block the log's ledger rule refuses (the proposer and validation
/// disagree: a bug, or a stale leader's block) stores nothing; its
/// transactions go back to the proposer, which builds again on the applied
/// state: each is then committed or refused with its own true reason (none
/// of them `storage_failed`).
#[test]
fn a_block_the_log_refuses_gives_its_transactions_back() {
    let (f, node) = started();
    let shared = &node.inner.shared;
    let committed = node.state();
    // The proposer's view is wrong: it believes the device holds ADMIN.
    let (grant, grant_bytes) = admin_tx(
        &f,
        1,
        TxKind::Grant {
            target: f.device.public(),
            permissions: Permissions::ADMIN,
        },
    );
    let wrong_view = || {
        let mut spec = (*committed).clone();
        // an admin grant of ADMIN is a vote; with one admin it completes
        spec.apply_tx(&grant, &grant_bytes, now_ms(), SigCheck::AlreadyVerified)
            .unwrap();
        assert!(spec.has(&f.device.public(), Permissions::ADMIN));
        spec
    };
    // the device sets the gateway's role
    let sets_role = |seq: u64, role: Role| {
        let body = TxBody {
            signer: f.device.public(),
            sequence: seq,
            timestamp_ms: now_ms(),
            kind: TxKind::SetRole {
                target: f.gateway.public(),
                role,
            },
        };
        Transaction::sign(body, &f.genesis.header.chain_id, &f.device)
            .unwrap()
            .to_vec()
    };
    let txs = [
        reading(&f, 1, 70),
        sets_role(2, Role::Admin),
        reading(&f, 3, 71),
    ];
    let (batch, waiters) = slots(&node, &txs);
    let proposed = propose(shared, &wrong_view(), batch);
    assert_eq!(proposed.built.block.txs.len(), 3);
    write(shared, proposed);
    let got: Vec<_> = waiters.into_iter().map(outcome_within).collect();
    assert!(got[0].is_ok(), "{got:?}");
    assert_eq!(
        got[1],
        Err(Rejected::Rule(TxRuleError::NotPermitted {
            needed: Permissions::ADMIN
        }))
    );
    assert!(got[2].is_ok(), "{got:?}");
    // one refusal recorded in the store, the same on every member
    assert_eq!(node.store().rejections(0, 10).unwrap().len(), 1);
    assert!(!node.state().has(&f.device.public(), Permissions::ADMIN));
    assert_eq!(node.inner.replies.len(), 0);
}

/// A block that fails to store stops Raft on this gateway (openraft treats
/// a state machine's storage failure as fatal): the submitters of the
/// block learn the store's error, and so does every later submitter,
/// until the gateway is restarted. Nothing acknowledged is lost then, and
/// the block that failed to store, being in the log, is applied at the
/// restart (`storage_failed` means "not acknowledged", not "never
/// stored"); what was refused after Raft stopped never reached the log.
#[test]
fn a_failed_store_stops_the_log_and_every_submitter_learns_why() {
    let (f, node) = started();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dev = Some(f.device.public());
    let ok = rt.block_on(node.submit(reading(&f, 1, 70), dev)).unwrap();
    node.store().fail_next_writes(1);
    for seq in 2..=3 {
        match rt.block_on(node.submit(reading(&f, seq, 70), dev)) {
            Err(Rejected::Storage(why)) => {
                assert!(why.contains("injected store failure"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }
    drop(rt);
    let producer = node.take_producer().unwrap();
    drop(node);
    producer.join().unwrap();
    let node = start_as(
        &f,
        Store::open(f.dir.path()).unwrap(),
        &f.gateway,
        NodeConfig::default(),
    )
    .unwrap();
    assert!(node.store().tx_location(&ok.tx_id).unwrap().is_some());
    assert_eq!(device_seq(&node, &f), 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let next = device_seq(&node, &f) + 1;
    rt.block_on(node.submit(reading(&f, next, 70), dev))
        .unwrap();
}

/// The same bytes submitted again while the first copy waits are refused
/// as the replay they are; the first copy is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_submission_is_a_replay() {
    let (f, node) = started();
    let dev = Some(f.device.public());
    let b = reading(&f, 1, 70);
    let first = node.enqueue(b.clone(), dev).unwrap();
    let second = match node.enqueue(b, dev) {
        Ok(t) => t.wait().await,
        Err(e) => Err(e),
    };
    assert_eq!(
        second,
        Err(Rejected::Rule(TxRuleError::Replay { last: 1, got: 1 }))
    );
    first.wait().await.unwrap();
    assert_eq!(node.inner.replies.len(), 0);
}

/// A full verification queue answers busy and forgets the waiter; a bad
/// signature is answered by the pool without reaching a block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_verification_pool_answers_busy() {
    let (f, node) = started();
    let shared = &node.inner.shared;
    // a pool with no thread: its queue of 1 fills
    let pool = VerifyPool::start(0, 1, shared.replies.clone(), shared.verdicts.clone()).unwrap();
    let (intake, _rx) = sync_channel(16);
    let dev = Some(f.device.public());
    let admit = |seq| {
        let b = reading(&f, seq, 70);
        let t = Transaction::decode(&b).unwrap();
        ingest::admit(shared, &intake, &pool, t, b, dev)
    };
    let _queued = admit(1).unwrap();
    assert_eq!(admit(2).err(), Some(Rejected::Busy));
    assert_eq!(shared.replies.len(), 1);
    // through the node's own pool: a bad signature
    let mut b = reading(&f, 5, 70);
    let n = b.len();
    b[n - 1] ^= 1;
    let t = node.enqueue(b, dev).unwrap();
    assert_eq!(t.wait().await, Err(Rejected::BadSignature));
}
