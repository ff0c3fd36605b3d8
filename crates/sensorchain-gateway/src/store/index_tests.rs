//! Tests of the format-2 indexes: the transaction index by epoch (lookups
//! and proofs across epochs; unit tests use epochs of 16 transactions),
//! the integrity check of index entries, by-device queries merged from
//! `by_stream`, and `reindex` from the format-1 layout.
//!
//! No test here covers a crash between a block and its index entries: they
//! are written in the block's one write transaction (all or nothing); a
//! crash during `reindex` leaves format 1 recorded, so the store is refused
//! until `reindex` runs again (`a_half_done_reindex_is_refused_then_redone`).

use proptest::prelude::*;
use redb::{ReadableTable, ReadableTableMetadata};
use sensorchain_core::hash::Hash32;
use sensorchain_core::merkle;
use sensorchain_core::tx::Transaction;

use super::keys::{EPOCH_BITS, epoch_of, key_stream, key_time, key_tx};
use super::schema::{
    BLOCKS, BY_STREAM, BY_TIME, META, META_FORMAT, OLD_BY_DEVICE, TX_INDEX, TX_OFFSETS, TxOffsets,
};
use super::tests::World;
use super::*;

/// Every stored transaction, with its location, block by block.
fn every_tx(store: &Store) -> Vec<(Hash32, TxLocation, Vec<u8>)> {
    let mut out = Vec::new();
    for item in store.blocks(0) {
        let (h, bytes) = item.unwrap();
        let b = decode_block(h, &bytes).unwrap();
        for (i, enc) in b.encoded_txs().into_iter().enumerate() {
            let loc = TxLocation {
                height: h,
                index: i as u32,
            };
            out.push((Transaction::id_of_encoded(&enc), loc, enc));
        }
    }
    out
}

/// The corrupt error's table and height.
fn named(e: &StoreError) -> (Option<&'static str>, Option<u64>) {
    match e {
        StoreError::Corrupt { table, height, .. } => (*table, *height),
        other => panic!("not a Corrupt error: {other}"),
    }
}

#[test]
fn lookups_by_id_and_proofs_across_epochs() {
    let (dir, w) = World::stored(3, 20, 7);
    let store = Store::open(dir.path()).unwrap();
    let txs = every_tx(&store);
    assert_eq!(txs.len(), 1 + 20 * 7);
    // the index spans many epochs, one entry per transaction
    let r = store.begin_read().unwrap();
    let t = r.open_table(TX_INDEX).unwrap();
    assert_eq!(t.len().unwrap(), txs.len() as u64);
    let last = t.last().unwrap().unwrap().0.value()[..4].to_vec();
    assert_eq!(u32::from_be_bytes(last.try_into().unwrap()), 8);
    drop((t, r));
    for (id, loc, enc) in &txs {
        assert_eq!(store.tx_location(id).unwrap(), Some(*loc), "{loc:?}");
        let (_, bytes) = store.tx(*loc).unwrap().unwrap();
        assert_eq!(&bytes, enc);
        let p = store.inclusion_proof(*loc).unwrap().unwrap();
        assert_eq!(p.leaf_hash, *id);
        assert_eq!(p.block_hash, w.chain.blocks()[loc.height as usize].hash());
        assert!(
            merkle::verify_inclusion(
                &p.leaf_hash,
                loc.index as u64,
                p.tree_size,
                &p.path,
                &p.tx_root
            )
            .is_ok()
        );
    }
    assert_eq!(store.tx_location(&Hash32([7; 32])).unwrap(), None);
    // an empty store has no epochs to probe
    let empty = tempfile::tempdir().unwrap();
    let s = Store::open(empty.path()).unwrap();
    assert_eq!(s.tx_location(&txs[0].0).unwrap(), None);
}

/// The Bloom filters of closed epochs are built by a lookup and kept: ids
/// stored after them, in epochs closed later, are still found, and an
/// epoch that was open at the first lookup is filtered whole once closed.
#[test]
fn lookups_stay_right_as_epochs_close_after_their_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut w = World::new(3);
    w.commit_genesis(&store);
    w.fill(&store, 5, 7);
    let first = every_tx(&store);
    for (id, loc, _) in &first {
        assert_eq!(store.tx_location(id).unwrap(), Some(*loc));
    }
    w.fill(&store, 9, 5);
    let all = every_tx(&store);
    assert!(all.len() > first.len());
    for (id, loc, _) in &all {
        assert_eq!(store.tx_location(id).unwrap(), Some(*loc), "{loc:?}");
    }
    // absent ids: none found, whatever the filters say
    for i in 0..200u32 {
        let id = sensorchain_core::hash::sha256(&[b"absent", &i.to_le_bytes()]);
        assert_eq!(store.tx_location(&id).unwrap(), None);
    }
}

#[test]
fn a_block_is_indexed_in_the_epoch_of_its_position() {
    assert_eq!(epoch_of(0), 0);
    assert_eq!(epoch_of((1 << EPOCH_BITS) - 1), 0);
    assert_eq!(epoch_of(1 << EPOCH_BITS), 1);
    assert_eq!(epoch_of(u64::MAX), u32::MAX);
    let (dir, _w) = World::stored(2, 6, 5);
    let store = Store::open(dir.path()).unwrap();
    let r = store.begin_read().unwrap();
    let (offs, blocks, ids) = (
        r.open_table(TX_OFFSETS).unwrap(),
        r.open_table(BLOCKS).unwrap(),
        r.open_table(TX_INDEX).unwrap(),
    );
    let mut before = 0u64;
    for h in 0..=6u64 {
        let len = blocks.get(h).unwrap().unwrap().value().len();
        let l = TxOffsets::decode(h, offs.get(h).unwrap().unwrap().value(), len).unwrap();
        assert_eq!(l.txs_before, before);
        let b = store.block(h).unwrap().unwrap();
        for enc in b.encoded_txs() {
            let k = key_tx(epoch_of(before), &Transaction::id_of_encoded(&enc));
            assert_eq!(ids.get(k.as_slice()).unwrap().unwrap().value().0, h);
        }
        before += l.count() as u64;
    }
}

#[test]
fn the_integrity_check_names_a_missing_or_wrong_index_entry() {
    let (dir, w) = World::stored(3, 8, 6);
    let store = Store::open(dir.path()).unwrap();
    store.check_integrity(IntegrityDepth::Full).unwrap();
    let txs = every_tx(&store);
    // transaction 2 of block 5
    let (id, loc, _) = txs
        .iter()
        .find(|t| t.1.height == 5 && t.1.index == 2)
        .unwrap();
    let before = 1 + 4 * 6;
    let key = key_tx(epoch_of(before), id);
    let edit = |f: &dyn Fn(&redb::WriteTransaction)| {
        let wt = store.begin_write().unwrap();
        f(&wt);
        wt.commit().unwrap();
    };
    // missing
    edit(&|wt| {
        wt.open_table(TX_INDEX)
            .unwrap()
            .remove(key.as_slice())
            .unwrap();
    });
    let e = store.check_integrity(IntegrityDepth::Full).unwrap_err();
    assert_eq!(named(&e), (Some("tx_index"), Some(5)), "{e}");
    let e = store
        .check_integrity(IntegrityDepth::Recent(4))
        .unwrap_err();
    assert_eq!(named(&e), (Some("tx_index"), Some(5)), "{e}");
    // blocks above it are still fine
    store.check_integrity(IntegrityDepth::Recent(3)).unwrap();
    // wrong: another index of the same block, or an earlier block
    for wrong in [(5u64, 3u32), (4, 2)] {
        edit(&|wt| {
            wt.open_table(TX_INDEX)
                .unwrap()
                .insert(key.as_slice(), wrong)
                .unwrap();
        });
        let e = store.check_integrity(IntegrityDepth::Full).unwrap_err();
        assert_eq!(named(&e), (Some("tx_index"), Some(5)), "{e}");
    }
    edit(&|wt| {
        wt.open_table(TX_INDEX)
            .unwrap()
            .insert(key.as_slice(), (loc.height, loc.index))
            .unwrap();
    });
    store.check_integrity(IntegrityDepth::Full).unwrap();
    // a reading's by_time entry names another location
    let b = &w.chain.blocks()[5];
    let tx = &b.txs[2];
    let sensorchain_core::tx::TxKind::Reading { stream, .. } = tx.body.kind else {
        panic!("a reading")
    };
    let (dev, ts, seq) = (tx.body.signer, tx.body.timestamp_ms, tx.body.sequence);
    let kt = key_time(&dev, ts, seq);
    edit(&|wt| {
        wt.open_table(BY_TIME)
            .unwrap()
            .insert(kt.as_slice(), (5u64, 1u32, stream))
            .unwrap();
    });
    let e = store
        .check_integrity(IntegrityDepth::Recent(4))
        .unwrap_err();
    assert_eq!(named(&e), (Some("by_time"), Some(5)), "{e}");
    // and the audit's check of that block says so too
    let bytes = store.block_bytes(5).unwrap().unwrap();
    let why = store
        .check_block_index(5, &bytes, b, &b.encoded_txs())
        .unwrap()
        .unwrap();
    assert!(why.contains("by_time"), "{why}");
    edit(&|wt| {
        wt.open_table(BY_TIME)
            .unwrap()
            .insert(kt.as_slice(), (5u64, 2u32, stream))
            .unwrap();
    });
    // a by_stream entry moved to another key: missing where it belongs, and
    // the count still agrees
    let ks = key_stream(&dev, stream, ts, seq);
    let mut moved = ks;
    moved[49] ^= 0x80;
    edit(&|wt| {
        let mut t = wt.open_table(BY_STREAM).unwrap();
        let v = t.remove(ks.as_slice()).unwrap().unwrap().value();
        t.insert(moved.as_slice(), v).unwrap();
    });
    let e = store.check_integrity(IntegrityDepth::Full).unwrap_err();
    assert_eq!(named(&e), (Some("by_stream"), Some(5)), "{e}");
    // a wrong position in tx_offsets
    edit(&|wt| {
        let mut t = wt.open_table(BY_STREAM).unwrap();
        t.remove(moved.as_slice()).unwrap();
        t.insert(ks.as_slice(), (5u64, 2u32, stream)).unwrap();
    });
    store.check_integrity(IntegrityDepth::Full).unwrap();
    edit(&|wt| {
        let mut t = wt.open_table(TX_OFFSETS).unwrap();
        let mut v = t.get(6u64).unwrap().unwrap().value().to_vec();
        v[0] ^= 1;
        t.insert(6u64, v.as_slice()).unwrap();
    });
    let e = store
        .check_integrity(IntegrityDepth::Recent(2))
        .unwrap_err();
    assert_eq!(named(&e).0, Some("tx_offsets"), "{e}");
}

/// Rewrites a format-2 store in the format-1 layout: `tx_index` keyed by
/// the bare id, a `by_device` index, `tx_offsets` without the position,
/// format 1 recorded.
fn downgrade_to_format_1(store: &Store) {
    let txs = every_tx(store);
    let wt = store.begin_write().unwrap();
    {
        wt.delete_table(TX_INDEX).unwrap();
        let mut ids = wt.open_table(TX_INDEX).unwrap();
        for (id, loc, _) in &txs {
            ids.insert(id.0.as_slice(), (loc.height, loc.index))
                .unwrap();
        }
        let mut by_device = wt.open_table(OLD_BY_DEVICE).unwrap();
        let streams: Vec<(Vec<u8>, (u64, u32, u16))> = wt
            .open_table(BY_STREAM)
            .unwrap()
            .iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value().to_vec(), v.value())
            })
            .collect();
        for (k, v) in streams {
            let mut old = k[..32].to_vec();
            old.extend_from_slice(&k[34..]);
            by_device.insert(old.as_slice(), v).unwrap();
        }
        let mut offs = wt.open_table(TX_OFFSETS).unwrap();
        let all: Vec<(u64, Vec<u8>)> = offs
            .iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value(), v.value()[8..].to_vec())
            })
            .collect();
        for (h, v) in all {
            offs.insert(h, v.as_slice()).unwrap();
        }
        wt.open_table(META)
            .unwrap()
            .insert(META_FORMAT, 1u32.to_be_bytes().as_slice())
            .unwrap();
    }
    wt.commit().unwrap();
}

#[test]
fn an_old_format_store_is_refused_until_reindexed() {
    let (dir, w) = World::stored(3, 9, 5);
    let want = every_tx(&Store::open(dir.path()).unwrap());
    downgrade_to_format_1(&Store::open(dir.path()).unwrap());
    // every open refuses it, naming the command
    for e in [
        Store::open(dir.path()).unwrap_err(),
        Store::open_read_only(dir.path()).unwrap_err(),
    ] {
        assert!(matches!(e, StoreError::OldFormat { version: 1, .. }), "{e}");
        let text = e.to_string();
        let cmd = format!("sensorchain reindex --data-dir {}", dir.path().display());
        assert!(text.contains(&cmd), "{text}");
    }
    let mut calls = 0;
    let (store, report) = Store::reindex(dir.path(), |_, _| calls += 1).unwrap();
    assert!(calls >= 1);
    assert_eq!(
        report,
        ReindexReport {
            from_format: 1,
            blocks: 10,
            transactions: 1 + 9 * 5,
            readings: 9 * 5,
        }
    );
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    store.check_integrity(IntegrityDepth::Full).unwrap();
    assert_eq!(every_tx(&store), want);
    for (id, loc, _) in &want {
        assert_eq!(store.tx_location(id).unwrap(), Some(*loc));
        assert!(store.inclusion_proof(*loc).unwrap().is_some());
    }
    // blocks of 5 readings round-robin over 3 devices: device 1 has 2 a block
    let d = w.devices[1].public();
    assert_eq!(
        store
            .readings_by_device(&d, 0, u64::MAX, 100)
            .unwrap()
            .len(),
        18
    );
    let r = store.begin_read().unwrap();
    assert!(r.open_table(OLD_BY_DEVICE).is_err(), "by_device is dropped");
}

#[test]
fn a_half_done_reindex_is_refused_then_redone() {
    let (dir, w) = World::stored(2, 6, 4);
    {
        let store = Store::open(dir.path()).unwrap();
        // what the first step of reindex leaves: format 1, indexes emptied
        let wt = store.begin_write().unwrap();
        wt.open_table(META)
            .unwrap()
            .insert(META_FORMAT, 1u32.to_be_bytes().as_slice())
            .unwrap();
        wt.delete_table(TX_INDEX).unwrap();
        wt.commit().unwrap();
    }
    assert!(matches!(
        Store::open(dir.path()).unwrap_err(),
        StoreError::OldFormat { .. }
    ));
    let (store, r) = Store::reindex(dir.path(), |_, _| {}).unwrap();
    assert_eq!(r.transactions, 1 + 6 * 4);
    store.check_integrity(IntegrityDepth::Full).unwrap();
    drop(store);
    // a current store whose index was damaged: reindex repairs it too
    {
        let store = Store::open(dir.path()).unwrap();
        let wt = store.begin_write().unwrap();
        wt.delete_table(BY_TIME).unwrap();
        wt.commit().unwrap();
    }
    let (store, r) = Store::reindex(dir.path(), |_, _| {}).unwrap();
    assert_eq!(r.from_format, FORMAT_VERSION);
    assert_eq!(store.readings_by_time(0, u64::MAX, 1000).unwrap().len(), 24);
    assert_eq!(store.head().unwrap().unwrap().hash, w.chain.head_hash());
    // no store there: NotFound
    let none = tempfile::tempdir().unwrap();
    assert!(matches!(
        Store::reindex(none.path(), |_, _| {}).unwrap_err(),
        StoreError::NotFound(_)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// By device (a merge of its streams) is the device's readings in the
    /// window sorted by (timestamp, sequence), the first `limit` of them.
    #[test]
    fn by_device_is_the_sorted_window_of_its_streams(
        readings in prop::collection::vec((0u16..4, 0u64..50), 1..30),
        from in 0u64..50,
        span in 0u64..60,
        limit in 1usize..40,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut w = World::new(2);
        w.commit_genesis(&store);
        let mut txs = Vec::new();
        let mut all = Vec::new();
        for (i, (stream, ts)) in readings.iter().enumerate() {
            let d = i % 2;
            txs.push(w.reading(d, *stream, 1_000 + ts));
            if d == 0 {
                all.push((1_000 + ts, w.seq[0], *stream, i as u32));
            }
        }
        let b = w.next_block(txs, 5_000);
        store.commit_block(&b, &b.encoded_txs(), None, None).unwrap();
        let (lo, hi) = (1_000 + from, 1_000 + from + span);
        all.retain(|r| (lo..=hi).contains(&r.0));
        all.sort_unstable();
        all.truncate(limit);
        let got: Vec<(u64, u64, u16, u32)> = store
            .readings_by_device(&w.devices[0].public(), lo, hi, limit)
            .unwrap()
            .iter()
            .map(|r| (r.timestamp_ms, r.sequence, r.stream, r.loc.index))
            .collect();
        prop_assert_eq!(got, all);
    }
}
