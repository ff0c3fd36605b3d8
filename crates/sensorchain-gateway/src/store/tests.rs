use super::error::io_error;
use super::schema::{META, META_HEAD, SNAPSHOTS};
use super::*;
use redb::ReadableTableMetadata;
use sensorchain_core::block::{Block, FinalityCert, quorum};
use sensorchain_core::chain::{Chain, build_block};
use sensorchain_core::hash::Hash32;
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::merkle;
use sensorchain_core::permissions::Role;
use sensorchain_core::reading::Vital;
use sensorchain_core::state::SigCheck;
use sensorchain_core::tx::{GenesisConfig, Member, Params, Payload, Transaction, TxBody, TxKind};

/// A small network for tests: admins, validating gateways, devices.
pub(crate) struct World {
    pub gateways: Vec<Keypair>,
    pub devices: Vec<Keypair>,
    pub chain: Chain,
    pub seq: Vec<u64>,
}

fn kp(n: u8) -> Keypair {
    Keypair::from_seed([n; 32])
}

impl World {
    pub fn new(devices: usize) -> World {
        let admin = kp(1);
        let gateways: Vec<Keypair> = (10..13).map(kp).collect();
        let devices: Vec<Keypair> = (0..devices).map(|i| kp(100 + i as u8)).collect();
        let mut members = vec![Member::of_role(admin.public(), Role::Admin)];
        for g in &gateways {
            members.push(Member::of_role(g.public(), Role::Gateway));
        }
        for d in &devices {
            members.push(Member::of_role(d.public(), Role::Device));
        }
        let cfg = GenesisConfig::new("ward-7", Params::default(), &members).unwrap();
        let chain = Chain::genesis(&admin, cfg, 1_000).unwrap();
        let n = devices.len();
        World {
            gateways,
            devices,
            chain,
            seq: vec![0; n],
        }
    }

    /// A reading of device `d` on `stream` at `ts`.
    pub fn reading(&mut self, d: usize, stream: u16, ts: u64) -> Transaction {
        self.seq[d] += 1;
        let body = TxBody {
            signer: self.devices[d].public(),
            sequence: self.seq[d],
            timestamp_ms: ts,
            kind: TxKind::Reading {
                stream,
                payload: Payload::Plain(Vital::HeartRate {
                    bpm: 60 + (self.seq[d] % 40) as u16,
                }),
            },
        };
        Transaction::sign(body, self.chain.chain_id(), &self.devices[d]).unwrap()
    }

    /// A certificate signed by a quorum of the gateways.
    pub fn cert(&self, block: &Block) -> FinalityCert {
        let mut c = FinalityCert::new(&block.header);
        for g in self.gateways.iter().take(quorum(self.gateways.len())) {
            c.add(FinalityCert::vote(&block.header, g)).unwrap();
        }
        c
    }

    /// Builds the next block from `txs` at `ts` and adds it to the in-memory chain.
    pub fn next_block(&mut self, txs: Vec<Transaction>, ts: u64) -> Block {
        let b = build_block(
            self.chain.state(),
            &self.gateways[0],
            txs,
            ts,
            SigCheck::Verify,
        )
        .unwrap();
        self.chain.add_block(b.clone(), None).unwrap();
        b
    }

    /// A new directory with a store of a world of `devices` devices: its
    /// genesis, then [`World::fill`]'s `blocks` blocks of `per_block`
    /// readings (the store closed again).
    pub fn stored(devices: usize, blocks: usize, per_block: usize) -> (tempfile::TempDir, World) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut w = World::new(devices);
        w.commit_genesis(&store);
        w.fill(&store, blocks, per_block);
        (dir, w)
    }

    /// Commits the genesis block to `store`.
    pub fn commit_genesis(&self, store: &Store) {
        let g = &self.chain.blocks()[0];
        commit_plain(store, g).unwrap();
    }

    /// Builds `blocks` blocks of `per_block` readings (round-robin over
    /// devices, streams 0 and 1), certifies every other one, and commits
    /// them to `store` with a snapshot every 4 blocks.
    pub fn fill(&mut self, store: &Store, blocks: usize, per_block: usize) {
        for _ in 0..blocks {
            let ts = self.chain.state().last_timestamp_ms() + 1_000;
            let txs: Vec<Transaction> = (0..per_block)
                .map(|i| {
                    let d = i % self.devices.len();
                    self.reading(d, (i % 2) as u16, ts - 10 + (i % 7) as u64)
                })
                .collect();
            let b = self.next_block(txs, ts);
            let cert = b.header.height.is_multiple_of(2).then(|| self.cert(&b));
            let snap = b
                .header
                .height
                .is_multiple_of(4)
                .then(|| self.chain.state().snapshot());
            store
                .commit_block(&b, &b.encoded_txs(), cert.as_ref(), snap.as_deref())
                .unwrap();
        }
    }
}

/// Commits `b` with its own transaction encodings, no certificate and no
/// snapshot.
fn commit_plain(store: &Store, b: &Block) -> Result<(), StoreError> {
    store.commit_block(b, &b.encoded_txs(), None, None)
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn store_is_send_sync() {
    fn ok<T: Send + Sync>() {}
    ok::<Store>();
}

#[test]
fn commit_and_read_back() {
    let dir = tmp();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.head().unwrap(), None);
    assert_eq!(store.block(0).unwrap(), None);
    let mut w = World::new(3);
    w.commit_genesis(&store);
    w.fill(&store, 5, 12);
    let head = store.head().unwrap().unwrap();
    assert_eq!(head.height, 5);
    assert_eq!(head.hash, w.chain.head_hash());
    assert_eq!(head.tx_count_total, 1 + 5 * 12);
    assert_eq!(head.reading_count_total, 5 * 12);
    for (h, b) in w.chain.blocks().iter().enumerate() {
        let h = h as u64;
        assert_eq!(store.block(h).unwrap().as_ref(), Some(b));
        assert_eq!(store.block_bytes(h).unwrap(), Some(b.to_vec()));
        assert_eq!(store.header(h).unwrap().as_ref(), Some(&b.header));
        let cert = store.cert(h).unwrap();
        assert_eq!(cert.is_some(), h.is_multiple_of(2) && h > 0);
        if let Some(c) = cert {
            assert_eq!(c.block_hash, b.hash());
        }
        for (i, enc) in b.encoded_txs().iter().enumerate() {
            let loc = store
                .tx_location(&Transaction::id_of_encoded(enc))
                .unwrap()
                .unwrap();
            assert_eq!(
                loc,
                TxLocation {
                    height: h,
                    index: i as u32
                }
            );
            let (tx, bytes) = store.tx(loc).unwrap().unwrap();
            assert_eq!(&tx, &b.txs[i]);
            assert_eq!(&bytes, enc);
        }
        let n = b.txs.len() as u32;
        assert_eq!(
            store
                .tx(TxLocation {
                    height: h,
                    index: n
                })
                .unwrap(),
            None
        );
    }
    assert_eq!(store.tx_location(&Hash32([7; 32])).unwrap(), None);
    assert_eq!(store.block(6).unwrap(), None);
    // the latest snapshot is the state after block 4
    let (sh, snap) = store.latest_snapshot().unwrap().unwrap();
    assert_eq!(sh, 4);
    let st = sensorchain_core::state::WorldState::from_snapshot(&snap).unwrap();
    assert_eq!(st.next_height(), 5);
    // streaming
    let all: Vec<_> = store.blocks(0).collect::<Result<_, _>>().unwrap();
    assert_eq!(all.len(), 6);
    assert!(all.iter().enumerate().all(|(i, (h, _))| *h == i as u64));
    let tail: Vec<u64> = store.blocks(4).map(|r| r.unwrap().0).collect();
    assert_eq!(tail, vec![4, 5]);
    let entries: Vec<StoredBlock> = store.chain_entries(0).collect::<Result<_, _>>().unwrap();
    assert_eq!(entries.iter().filter(|e| e.cert.is_some()).count(), 2);
    for e in &entries {
        let b = decode_block(e.height, &e.bytes).unwrap();
        assert_eq!(
            store
                .check_block_index(e.height, &e.bytes, &b, &b.encoded_txs())
                .unwrap(),
            None
        );
    }
}

#[test]
fn snapshots_pruned_to_latest_few() {
    let dir = tmp();
    let store = Store::open(dir.path()).unwrap();
    for h in 0..10u64 {
        store.put_snapshot(h, &[h as u8; 3]).unwrap();
    }
    let r = store.begin_read().unwrap();
    let t = r.open_table(SNAPSHOTS).unwrap();
    assert_eq!(t.len().unwrap() as usize, SNAPSHOTS_KEPT);
    assert_eq!(store.latest_snapshot().unwrap(), Some((9, vec![9; 3])));
}

#[test]
fn reading_indexes_and_ranges() {
    let dir = tmp();
    let store = Store::open(dir.path()).unwrap();
    let mut w = World::new(2);
    w.commit_genesis(&store);
    // block 1: device 0 stream 0 at 10_000, 10_001; device 1 stream 1 at 10_002
    let t = vec![
        w.reading(0, 0, 10_000),
        w.reading(0, 0, 10_001),
        w.reading(1, 1, 10_002),
    ];
    let b1 = w.next_block(t, 20_000);
    commit_plain(&store, &b1).unwrap();
    // block 2: device 0 stream 1 at 10_003, stream 0 at 30_000, device 1 stream 1 at 10_000
    let t = vec![
        w.reading(0, 1, 10_003),
        w.reading(0, 0, 30_000),
        w.reading(1, 1, 10_000),
    ];
    let b2 = w.next_block(t, 40_000);
    commit_plain(&store, &b2).unwrap();
    let d0 = w.devices[0].public();
    let d1 = w.devices[1].public();

    let r = store.readings_by_device(&d0, 0, u64::MAX, 100).unwrap();
    let ts: Vec<u64> = r.iter().map(|x| x.timestamp_ms).collect();
    assert_eq!(ts, vec![10_000, 10_001, 10_003, 30_000]);
    assert!(r.iter().all(|x| x.device == d0));
    assert_eq!(
        r[2].loc,
        TxLocation {
            height: 2,
            index: 0
        }
    );
    assert_eq!(r[2].stream, 1);
    assert_eq!(r[2].sequence, 3);
    // bounds are inclusive, limit applies from the oldest
    let r = store.readings_by_device(&d0, 10_001, 10_003, 100).unwrap();
    assert_eq!(r.len(), 2);
    let r = store.readings_by_device(&d0, 0, u64::MAX, 2).unwrap();
    assert_eq!(
        r.iter().map(|x| x.timestamp_ms).collect::<Vec<_>>(),
        vec![10_000, 10_001]
    );
    assert!(
        store
            .readings_by_device(&d0, 0, u64::MAX, 0)
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .readings_by_device(&d0, 50, 10, 10)
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .readings_by_device(&PublicKey([9; 32]), 0, u64::MAX, 10)
            .unwrap()
            .is_empty()
    );

    let r = store.readings_by_stream(&d0, 0, 0, u64::MAX, 100).unwrap();
    assert_eq!(
        r.iter().map(|x| x.timestamp_ms).collect::<Vec<_>>(),
        vec![10_000, 10_001, 30_000]
    );
    assert!(r.iter().all(|x| x.stream == 0));
    let r = store.readings_by_stream(&d1, 1, 0, u64::MAX, 100).unwrap();
    assert_eq!(
        r.iter().map(|x| x.timestamp_ms).collect::<Vec<_>>(),
        vec![10_000, 10_002]
    );
    assert_eq!(
        r[0].loc,
        TxLocation {
            height: 2,
            index: 2
        }
    );
    assert!(
        store
            .readings_by_stream(&d1, 0, 0, u64::MAX, 100)
            .unwrap()
            .is_empty()
    );

    let r = store.readings_by_time(10_000, 10_002, 100).unwrap();
    let got: Vec<(u64, PublicKey)> = r.iter().map(|x| (x.timestamp_ms, x.device)).collect();
    let mut want = vec![(10_000, d0), (10_000, d1), (10_001, d0), (10_002, d1)];
    want.sort_by_key(|a| (a.0, a.1.0));
    assert_eq!(got, want);
    assert_eq!(store.readings_by_time(0, u64::MAX, 100).unwrap().len(), 6);
    assert_eq!(store.readings_by_time(0, u64::MAX, 5).unwrap().len(), 5);
    assert_eq!(store.readings_by_time(30_000, 30_000, 5).unwrap().len(), 1);
}

#[test]
fn height_conflicts_refused() {
    let dir = tmp();
    let store = Store::open(dir.path()).unwrap();
    let mut w = World::new(1);
    let t = vec![w.reading(0, 0, 1_500)];
    let b1 = w.next_block(t, 2_000);
    // block 1 before genesis
    let e = commit_plain(&store, &b1).unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e}");
    w.commit_genesis(&store);
    // genesis twice
    let e = store.commit_block(
        &w.chain.blocks()[0],
        &w.chain.blocks()[0].encoded_txs(),
        None,
        None,
    );
    assert!(matches!(e, Err(StoreError::Conflict(_))));
    commit_plain(&store, &b1).unwrap();
    // the same height again, and a gap
    assert!(matches!(
        commit_plain(&store, &b1),
        Err(StoreError::Conflict(_))
    ));
    let t = vec![w.reading(0, 0, 2_500)];
    let b2 = w.next_block(t, 3_000);
    let t = vec![w.reading(0, 0, 3_500)];
    let b3 = w.next_block(t, 4_000);
    assert!(matches!(
        commit_plain(&store, &b3),
        Err(StoreError::Conflict(_))
    ));
    // right height, wrong link
    let mut forged = b2.clone();
    forged.header.prev_hash = Hash32([1; 32]);
    let e = commit_plain(&store, &forged).unwrap_err();
    assert!(e.to_string().contains("link"), "{e}");
    // encodings that are not the block's
    let e = store
        .commit_block(&b2, &b3.encoded_txs(), None, None)
        .unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");
    let e = store.commit_block(&b2, &[], None, None).unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");
    // a certificate of another block
    let c3 = w.cert(&b3);
    let e = store
        .commit_block(&b2, &b2.encoded_txs(), Some(&c3), None)
        .unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");
    // nothing of the refused writes is visible
    assert_eq!(store.head().unwrap().unwrap().height, 1);
    assert_eq!(store.block(2).unwrap(), None);
    commit_plain(&store, &b2).unwrap();
    // late certificate
    let c2 = w.cert(&b2);
    store.put_cert(2, &c2).unwrap();
    assert_eq!(store.cert(2).unwrap(), Some(c2));
    assert!(matches!(
        store.put_cert(3, &c3),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.put_cert(2, &c3),
        Err(StoreError::Invalid(_))
    ));
}

#[test]
fn reopen_sees_everything() {
    let dir = tmp();
    let mut w = World::new(2);
    {
        let store = Store::open(dir.path()).unwrap();
        w.commit_genesis(&store);
        w.fill(&store, 3, 10);
    }
    let head_before;
    {
        let store = Store::open(dir.path()).unwrap();
        head_before = store.head().unwrap().unwrap();
        assert_eq!(head_before.height, 3);
        // keeps going where it was
        w.fill(&store, 2, 10);
    }
    for ro in [false, true] {
        let store = if ro {
            Store::open_read_only(dir.path()).unwrap()
        } else {
            Store::open(dir.path()).unwrap()
        };
        let head = store.head().unwrap().unwrap();
        assert_eq!((head.height, head.hash), (5, w.chain.head_hash()));
        assert_eq!(head.reading_count_total, 50);
        let blocks: Vec<Block> = store
            .blocks(0)
            .map(|r| r.map(|(h, b)| decode_block(h, &b).unwrap()))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(blocks.as_slice(), w.chain.blocks());
        let d = w.devices[1].public();
        assert_eq!(
            store
                .readings_by_device(&d, 0, u64::MAX, 1000)
                .unwrap()
                .len(),
            25
        );
        if ro {
            let g = &w.chain.blocks()[0];
            let e = commit_plain(&store, g).unwrap_err();
            assert!(matches!(e, StoreError::ReadOnly));
        }
    }
}

#[test]
fn read_only_open_of_missing_or_busy_store() {
    let dir = tmp();
    assert!(matches!(
        Store::open_read_only(dir.path()),
        Err(StoreError::NotFound(_))
    ));
    let _w = Store::open(dir.path()).unwrap();
    let e = Store::open_read_only(dir.path()).unwrap_err();
    assert!(matches!(e, StoreError::Busy), "{e}");
}

#[test]
fn corrupted_block_named_with_height() {
    let dir = tmp();
    let store = Store::open(dir.path()).unwrap();
    let mut w = World::new(2);
    w.commit_genesis(&store);
    w.fill(&store, 4, 5);
    let mut bytes = store.block_bytes(3).unwrap().unwrap();
    bytes.push(0); // trailing byte: no longer the strict encoding
    store.overwrite_block_bytes_unchecked(3, &bytes).unwrap();
    match store.block(3) {
        Err(StoreError::Corrupt {
            height: Some(3),
            what,
            ..
        }) => assert!(what.contains("decode"), "{what}"),
        other => panic!("{other:?}"),
    }
    let e = store.block(3).unwrap_err();
    assert!(e.to_string().contains("height 3"), "{e}");
    assert!(store.block(2).is_ok());
    // a block stored under the wrong height
    let b1 = store.block_bytes(1).unwrap().unwrap();
    store.overwrite_block_bytes_unchecked(2, &b1).unwrap();
    assert!(matches!(
        store.block(2),
        Err(StoreError::Corrupt {
            height: Some(2),
            ..
        })
    ));
    // a flipped byte in a transaction: decodes perhaps, but the proof notices
    let mut b4 = store.block_bytes(4).unwrap().unwrap();
    let last = b4.len() - 1;
    b4[last] ^= 0x40;
    store.overwrite_block_bytes_unchecked(4, &b4).unwrap();
    let e = store
        .inclusion_proof(TxLocation {
            height: 4,
            index: 4,
        })
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Corrupt {
                height: Some(4),
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn inclusion_proofs_verify() {
    let dir = tmp();
    let store = Store::open(dir.path()).unwrap();
    let mut w = World::new(3);
    w.commit_genesis(&store);
    w.fill(&store, 2, 13);
    for h in 0..=2u64 {
        let b = store.block(h).unwrap().unwrap();
        for i in 0..b.txs.len() as u32 {
            let loc = TxLocation {
                height: h,
                index: i,
            };
            let p = store.inclusion_proof(loc).unwrap().unwrap();
            assert_eq!(p.tx_root, b.header.tx_root);
            assert_eq!(p.block_hash, b.hash());
            assert_eq!(p.tree_size, b.txs.len() as u64);
            let (_, enc) = store.tx(loc).unwrap().unwrap();
            assert_eq!(p.leaf_hash, Transaction::id_of_encoded(&enc));
            merkle::verify_inclusion(&p.leaf_hash, i as u64, p.tree_size, &p.path, &p.tx_root)
                .unwrap();
            // a wrong index does not verify
            if p.tree_size > 1 {
                let j = (i as u64 + 1) % p.tree_size;
                assert!(
                    merkle::verify_inclusion(&p.leaf_hash, j, p.tree_size, &p.path, &p.tx_root)
                        .is_err()
                );
            }
        }
        let n = b.txs.len() as u32;
        assert_eq!(
            store
                .inclusion_proof(TxLocation {
                    height: h,
                    index: n
                })
                .unwrap(),
            None
        );
    }
    assert_eq!(
        store
            .inclusion_proof(TxLocation {
                height: 9,
                index: 0
            })
            .unwrap(),
        None
    );
}

#[test]
fn disk_full_is_named() {
    let e = io_error(std::io::Error::from_raw_os_error(libc::ENOSPC));
    assert!(e.is_disk_full());
    assert!(e.to_string().contains("disk full"), "{e}");
    let e: StoreError =
        redb::StorageError::Io(std::io::Error::from_raw_os_error(libc::ENOSPC)).into();
    assert!(e.is_disk_full());
    let e = io_error(std::io::Error::from_raw_os_error(libc::EIO));
    assert!(!e.is_disk_full());
}

/// Commit cost per block (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn commit_throughput() {
    let dir = tmp();
    let store = Store::open(dir.path()).unwrap();
    let mut w = World::new(12);
    w.commit_genesis(&store);
    for per_block in [100usize, 1000, 5000] {
        let mut blocks = Vec::new();
        for _ in 0..5 {
            let ts = w.chain.state().last_timestamp_ms() + 1_000;
            let txs: Vec<Transaction> = (0..per_block)
                .map(|i| w.reading(i % 12, (i % 4) as u16, ts))
                .collect();
            blocks.push(w.next_block(txs, ts));
        }
        let t0 = std::time::Instant::now();
        for b in &blocks {
            commit_plain(&store, b).unwrap();
        }
        let per = t0.elapsed() / blocks.len() as u32;
        eprintln!(
            "{per_block} readings/block: {per:?} per commit, {:.0} readings/s",
            per_block as f64 / per.as_secs_f64()
        );
    }
}

/// Replaces the head record without any check (for audit tests).
pub(crate) fn overwrite_head(store: &Store, head: Head) {
    let w = store.begin_write().unwrap();
    w.open_table(META)
        .unwrap()
        .insert(META_HEAD, head.encode().as_slice())
        .unwrap();
    w.commit().unwrap();
}

/// The demo's tamper write works on a store directory nobody holds, and
/// refuses one that is open (a running gateway's store): Busy, nothing
/// written.
#[test]
fn tamper_block_bytes_refuses_a_held_store() {
    let dir = tmp();
    let mut w = World::new(2);
    let store = Store::open(dir.path()).unwrap();
    w.commit_genesis(&store);
    w.fill(&store, 4, 3);
    let before = store.block_bytes(2).unwrap().unwrap();
    let mut bytes = before.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let e = tamper_block_bytes(dir.path(), 2, &bytes).unwrap_err();
    assert!(matches!(e, StoreError::Busy), "{e}");
    assert_eq!(store.block_bytes(2).unwrap().unwrap(), before);
    drop(store);
    tamper_block_bytes(dir.path(), 2, &bytes).unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.block_bytes(2).unwrap().unwrap(), bytes);
    let e = store.check_integrity(IntegrityDepth::Full).unwrap_err();
    assert!(e.to_string().contains("height 2"), "{e}");
}
