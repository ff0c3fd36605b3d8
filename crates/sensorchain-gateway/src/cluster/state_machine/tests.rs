//! The state machine on its own: whatever bytes a log entry carries, apply
//! answers (never an error), and the chain grows only by valid blocks.

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload};
use proptest::prelude::*;
use sensorchain_core::chain::build_block_from_pool;
use sensorchain_core::reading::Vital;
use sensorchain_core::tx::{Transaction, TxBody};

use super::*;
use crate::audit::PARALLEL_FROM_TXS;
use crate::testkit;

struct Fx {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    sm: LedgerStateMachine,
    good: Vec<u8>,
}

fn fixture() -> Fx {
    fixture_with(3)
}

fn fixture_with(readings: u64) -> Fx {
    let (admin, gateway) = (testkit::admin(), testkit::gateway());
    let device = Keypair::from_seed([3; 32]);
    let genesis = testkit::genesis_block(
        "sm-props",
        &admin,
        &gateway,
        &testkit::device_members(std::slice::from_ref(&device)),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let sm = LedgerStateMachine::open(
        store.clone(),
        &genesis,
        Some(Arc::new(gateway.clone())),
        None,
        StateMachineConfig::default(),
    )
    .unwrap();
    let txs = (1..=readings)
        .map(|seq| {
            let body =
                TxBody::reading(device.public(), seq, 2_000, 0, Vital::HeartRate { bpm: 70 });
            let tx = Transaction::sign(body, &genesis.header.chain_id, &device).unwrap();
            let enc = tx.to_vec();
            (tx, enc)
        })
        .collect();
    let state = sm.state();
    let built = build_block_from_pool(&state, &gateway, txs, 3_000, SigCheck::Verify);
    Fx {
        _dir: dir,
        store,
        sm,
        good: built.block.to_vec(),
    }
}

fn entry(index: u64, req: ClusterRequest) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(req),
    }
}

/// A valid block's bytes, changed: a byte flipped, cut short, or other bytes.
fn mutation() -> impl Strategy<Value = (u8, usize, u8)> {
    (0u8..3, any::<usize>(), 1u8..=255)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_entry_bytes_are_answered_and_only_valid_blocks_stored(
        muts in proptest::collection::vec(mutation(), 1..6),
        junk in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut fx = fixture();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut index = 0;
        for (kind, at, x) in muts {
            index += 1;
            let mut bytes = fx.good.clone();
            match kind {
                0 => { let i = at % bytes.len(); bytes[i] ^= x; }
                1 => bytes.truncate(at % bytes.len()),
                _ => bytes = junk.clone(),
            }
            let req = if x % 2 == 0 { ClusterRequest::Block(bytes.clone()) } else { ClusterRequest::Finality(bytes.clone()) };
            let is_block = matches!(req, ClusterRequest::Block(_));
            let out = rt.block_on(fx.sm.apply(vec![entry(index, req)])).expect("apply never fails on entry bytes");
            let head = fx.store.head().unwrap().unwrap().height;
            match &out[..] {
                [ClusterResponse::Applied { height, .. }] => {
                    prop_assert!(is_block);
                    prop_assert_eq!(fx.store.block_bytes(*height).unwrap(), Some(bytes));
                }
                [ClusterResponse::Rejected { reason }] => {
                    prop_assert_eq!(head, 0, "nothing stored");
                    let rec = fx.store.rejections(index, 1).unwrap();
                    prop_assert_eq!(rec, vec![(index, reason.clone())]);
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
            prop_assert_eq!(fx.sm.applied().map(|l| l.index), Some(index));
        }
        // The untouched block is still accepted after all that.
        index += 1;
        let out = rt.block_on(fx.sm.apply(vec![entry(index, ClusterRequest::Block(fx.good.clone()))])).unwrap();
        prop_assert!(matches!(out[..], [ClusterResponse::Applied { height: 1, .. }]), "{:?}", out);
    }
}

/// A block large enough for the parallel signature check: applied when all
/// verify; with one forged signature, refused with exactly the core's own
/// verdict (`SigCheck::Verify`), stored nowhere.
#[test]
fn a_large_block_is_judged_as_the_core_judges_it() {
    let n = 3 * PARALLEL_FROM_TXS as u64;
    let fx = fixture_with(n);
    let mut bad = Block::decode(&fx.good).unwrap();
    assert_eq!(bad.txs.len() as u64, n);
    bad.txs[100].signature.0[7] ^= 1;
    bad.header.tx_root = Block::tx_root_of(&bad.encoded_txs());
    bad.proposer_sig = bad.header.sign_proposal(&testkit::gateway());
    let core_says = {
        let mut s = (*fx.sm.state()).clone();
        s.apply_block(&bad, None, SigCheck::Verify).unwrap_err()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut sm = fx.sm.clone();
    let out = rt
        .block_on(sm.apply(vec![entry(1, ClusterRequest::Block(bad.to_vec()))]))
        .unwrap();
    assert_eq!(
        out,
        vec![ClusterResponse::Rejected {
            reason: format!("invalid block: {core_says}")
        }]
    );
    assert_eq!(core_says.tx_index, Some(100));
    assert_eq!(fx.store.head().unwrap().unwrap().height, 0);
    let out = rt
        .block_on(sm.apply(vec![entry(2, ClusterRequest::Block(fx.good.clone()))]))
        .unwrap();
    assert!(
        matches!(out[..], [ClusterResponse::Applied { height: 1, .. }]),
        "{out:?}"
    );
}

/// The exact bytes stored with a block must be that block's: a header or a
/// transaction that differs is refused and nothing is written.
#[test]
fn exact_bytes_that_are_not_the_blocks_are_refused() {
    let fx = fixture();
    let block = Block::decode(&fx.good).unwrap();
    let encoded = block.encoded_txs();
    let applied = Applied {
        mark: b"m",
        validators_next: None,
        own_vote: false,
        durable: true,
    };
    let mut other_header = fx.good.clone();
    other_header[3] ^= 1;
    let mut other_tx = fx.good.clone();
    *other_tx.last_mut().unwrap() ^= 1;
    for bad in [other_header, other_tx] {
        let r = fx
            .store
            .commit_block_applied(&block, &bad, &encoded, None, applied);
        assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
        assert_eq!(fx.store.head().unwrap().unwrap().height, 0);
    }
    fx.store
        .commit_block_applied(&block, &fx.good, &encoded, None, applied)
        .unwrap();
    assert_eq!(fx.store.block_bytes(1).unwrap(), Some(fx.good.clone()));
}

/// Serves the blocks of `from` (a store), the first answer with one byte
/// of the first block flipped: a peer that lies once.
struct LyingOnce {
    store: Arc<Store>,
    lied: std::sync::atomic::AtomicBool,
    asked: Arc<std::sync::atomic::AtomicU32>,
}

impl BlockSource for LyingOnce {
    fn fetch(
        &self,
        from: u64,
        max: u32,
        _members: &[(NodeId, GatewayNode)],
        _attempt: u32,
    ) -> Result<Vec<ServedBlock>, String> {
        use std::sync::atomic::Ordering;
        self.asked.fetch_add(1, Ordering::Relaxed);
        let mut blocks = crate::cluster::backfill::serve_blocks(&self.store, from, max);
        if !self.lied.swap(true, Ordering::Relaxed)
            && let Some(b) = blocks.first_mut()
        {
            let last = b.block.len() - 1;
            b.block[last] ^= 1;
        }
        Ok(blocks)
    }
}

/// A member whose chain is behind a snapshot back-fills the blocks below
/// its head from a source, refusing what does not validate (a flipped
/// byte) and asking again, and ends with the snapshot member's chain and
/// state; without a source the install fails, saying why.
#[test]
fn a_snapshot_ahead_is_installed_by_backfill_refusing_a_forged_block() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let a = fixture();
    let b = fixture();
    let mut sm = a.sm.clone();
    let (snapshot, cert) = rt.block_on(async {
        let r = sm
            .apply(vec![entry(1, ClusterRequest::Block(a.good.clone()))])
            .await
            .unwrap();
        assert!(matches!(r[0], ClusterResponse::Applied { .. }), "{r:?}");
        let mut builder = sm.get_snapshot_builder().await;
        let s = builder.build_snapshot().await.unwrap();
        (s, a.store.cert_count().unwrap())
    });
    assert_eq!(cert, 0);
    let data = snapshot.snapshot.into_inner();

    // No source: refused, nothing stored.
    let mut target = b.sm.clone();
    let r = rt.block_on(
        target.install_snapshot(&snapshot.meta, Box::new(std::io::Cursor::new(data.clone()))),
    );
    assert!(format!("{:?}", r.unwrap_err()).contains("no peers"));
    assert_eq!(b.store.head().unwrap().unwrap().height, 0);

    let asked = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let source: Arc<dyn BlockSource> = Arc::new(LyingOnce {
        store: a.store.clone(),
        lied: Default::default(),
        asked: asked.clone(),
    });
    b.sm.set_block_source(&source);
    rt.block_on(target.install_snapshot(&snapshot.meta, Box::new(std::io::Cursor::new(data))))
        .unwrap();
    assert_eq!(b.store.block_bytes(1).unwrap().unwrap(), a.good);
    assert_eq!(b.sm.state().commitment(), a.sm.state().commitment());
    assert_eq!(b.sm.applied(), snapshot.meta.last_log_id);
    assert_eq!(
        asked.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "the forged answer was refused and the blocks asked for again"
    );
}

/// A chain restored past a snapshot (`sensorchain restore`: no Raft
/// state) that holds the snapshot's head block takes the snapshot's
/// position only; the entry of a block it already holds is refused, the
/// next block is applied: the same chain.
#[test]
fn a_restored_chain_past_a_snapshot_takes_its_position() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let a = fixture();
    let mut sm = a.sm.clone();
    let device = Keypair::from_seed([3; 32]);
    let gateway = testkit::gateway();
    let chain = *sm.state().chain_id();
    let block_after = |state: &WorldState, seq: u64, ts: u64| {
        let body = TxBody::reading(device.public(), seq, ts, 0, Vital::HeartRate { bpm: 71 });
        let tx = Transaction::sign(body, &chain, &device).unwrap();
        let enc = tx.to_vec();
        build_block_from_pool(
            state,
            &gateway,
            vec![(tx, enc)],
            ts + 1_000,
            SigCheck::Verify,
        )
        .block
        .to_vec()
    };
    let snapshot = rt.block_on(async {
        let r = sm
            .apply(vec![entry(1, ClusterRequest::Block(a.good.clone()))])
            .await
            .unwrap();
        assert!(matches!(r[0], ClusterResponse::Applied { .. }), "{r:?}");
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap()
    });
    let second = block_after(&sm.state(), 10, 4_000);
    rt.block_on(sm.apply(vec![entry(2, ClusterRequest::Block(second.clone()))]))
        .unwrap();
    assert_eq!(a.store.head().unwrap().unwrap().height, 2);

    // a's chain (heights 0 to 2) restored into a new directory
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("a.backup");
    crate::export::export_store(&a.store, &backup).unwrap();
    let target = dir.path().join("data");
    crate::backup::restore(&backup, &target, None).unwrap();
    let store = Arc::new(Store::open(&target).unwrap());
    let genesis = store.block(0).unwrap().unwrap();
    let mut restored =
        LedgerStateMachine::open(store.clone(), &genesis, None, None, Default::default()).unwrap();
    assert_eq!(restored.applied(), None);

    let data = snapshot.snapshot.into_inner();
    rt.block_on(restored.install_snapshot(&snapshot.meta, Box::new(std::io::Cursor::new(data))))
        .unwrap();
    assert_eq!(restored.applied(), snapshot.meta.last_log_id);
    assert_eq!(restored.state().commitment(), a.sm.state().commitment());
    let third = block_after(&a.sm.state(), 11, 6_000);
    let r = rt
        .block_on(restored.apply(vec![
            entry(2, ClusterRequest::Block(second)),
            entry(3, ClusterRequest::Block(third.clone())),
        ]))
        .unwrap();
    assert!(matches!(r[0], ClusterResponse::Rejected { .. }), "{r:?}");
    assert!(
        matches!(r[1], ClusterResponse::Applied { height: 3, .. }),
        "{r:?}"
    );
    assert_eq!(store.block_bytes(3).unwrap().unwrap(), third);
    let rec = store.rejections(2, 1).unwrap();
    assert!(rec[0].1.contains("holds block 2 already"), "{rec:?}");
}

/// A snapshot install cut short by a crash is finished at the next start
/// ([`LedgerStateMachine::resume_install`]), before anything reads the
/// outcomes channel: the back-fill must not wait on it. The 100-kill soak
/// found a start that hung for good there once the back-fill passed the
/// channel's capacity (1,024 outcomes, ~600 blocks); here the capacity is
/// one and three blocks are back-filled.
#[test]
fn a_resumed_install_does_not_wait_on_the_unread_outcomes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let a = fixture();
    let mut sm = a.sm.clone();
    let device = Keypair::from_seed([3; 32]);
    let gateway = testkit::gateway();
    let chain = *sm.state().chain_id();
    let block_after = |state: &WorldState, seq: u64, ts: u64| {
        let body = TxBody::reading(device.public(), seq, ts, 0, Vital::HeartRate { bpm: 72 });
        let tx = Transaction::sign(body, &chain, &device).unwrap();
        let enc = tx.to_vec();
        build_block_from_pool(
            state,
            &gateway,
            vec![(tx, enc)],
            ts + 1_000,
            SigCheck::Verify,
        )
        .block
        .to_vec()
    };
    rt.block_on(sm.apply(vec![entry(1, ClusterRequest::Block(a.good.clone()))]))
        .unwrap();
    for (i, seq) in [(2u64, 10u64), (3, 11)] {
        let next = block_after(&sm.state(), seq, 2_000 + 2_000 * seq);
        let r = rt
            .block_on(sm.apply(vec![entry(i, ClusterRequest::Block(next))]))
            .unwrap();
        assert!(matches!(r[0], ClusterResponse::Applied { .. }), "{r:?}");
    }
    let snapshot = rt.block_on(async {
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap()
    });
    assert_eq!(a.store.head().unwrap().unwrap().height, 3);

    // b: at genesis, its install of that snapshot recorded and cut short
    let (admin, gw) = (testkit::admin(), testkit::gateway());
    let genesis = testkit::genesis_block(
        "sm-props",
        &admin,
        &gw,
        &testkit::device_members(std::slice::from_ref(&device)),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let (tx, _unread) = mpsc::channel(1);
    let b = LedgerStateMachine::open(
        store.clone(),
        &genesis,
        Some(Arc::new(gw)),
        Some(tx),
        StateMachineConfig::default(),
    )
    .unwrap();
    let data = snapshot.snapshot.into_inner();
    let pending = postcard::to_allocvec(&(&snapshot.meta, &data)).unwrap();
    store.set_pending_snapshot(Some(&pending)).unwrap();
    let source: Arc<dyn BlockSource> = Arc::new(LyingOnce {
        store: a.store.clone(),
        lied: std::sync::atomic::AtomicBool::new(true),
        asked: Default::default(),
    });
    b.set_block_source(&source);

    let (done_tx, done) = std::sync::mpsc::channel();
    let b2 = b.clone();
    std::thread::spawn(move || {
        let _ = done_tx.send(b2.resume_install().map_err(|e| e.to_string()));
    });
    // a generous bound on a deadlock, not a speed
    let resumed = done
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the resumed install did not return: it waits on the unread outcomes");
    assert_eq!(resumed, Ok(true));
    assert_eq!(store.head().unwrap().unwrap().height, 3);
    assert_eq!(b.state().commitment(), a.sm.state().commitment());
    assert_eq!(store.pending_snapshot().unwrap(), None);
}
