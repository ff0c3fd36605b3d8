//! The store's integrity check: what a gateway verifies before it serves a
//! stored chain or adds blocks to it.
//!
//! [`Store::check_integrity`] reads one snapshot of the store and checks,
//! naming the table and height of the first problem
//! ([`StoreError::Corrupt`]):
//!
//! - **the tables agree** (cheap, independent of the chain's length): the
//!   head record decodes; the `blocks` table holds exactly heights
//!   `0..=head` (first, last and length); `tx_offsets` has one entry per
//!   block; no certificate or snapshot is above the head; the two reading
//!   indexes hold one entry per reading the head record counts and the
//!   transaction index no more entries than the head counts transactions;
//! - **the latest snapshot** decodes, says it was taken after the block it
//!   is stored under (height, that block's hash) and its state commitment is
//!   that block's header's `state_root`;
//! - **the hash chain** of the blocks walked ([`IntegrityDepth`]: the last
//!   `n`, or all): each block decodes strictly, is stored under its own
//!   height, links to the previous block's header hash, its transaction
//!   offsets locate exactly its transactions and their Merkle root is the
//!   header's `tx_root`, its recorded position (`txs_before`) follows the
//!   block below's, its index entries are there (each transaction in the
//!   transaction index's epoch of the block, each reading in `by_stream`
//!   and `by_time`, all naming its location), its certificate (if stored)
//!   decodes and names it; the last one's hash and timestamp are the head
//!   record's and its position plus its transactions the head's count;
//!   walking all of them, the head's reading count is checked too.
//!
//! It checks no signature and no ledger rule: that is `sensorchain audit`
//! (the full replay with the core's rules). The gateway replays the blocks
//! after the snapshot with those rules when it starts, and checks that the
//! state it ends with commits to the head header's `state_root`.

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata};
use sensorchain_core::block::BlockHeader;
use sensorchain_core::hash::Hash32;
use sensorchain_core::state::WorldState;
use sensorchain_core::tx::TxKind;

use super::chain::{decode_block, decode_cert, header_of};
use super::indexes::IndexCheck;
use super::schema::{
    BLOCKS, BY_STREAM, BY_TIME, CERTS, META, META_HEAD, SNAPSHOTS, TX_INDEX, TX_OFFSETS, TxOffsets,
    open_ro,
};
use super::{Head, Store, StoreError, guard};

/// How many blocks [`Store::check_integrity`] walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityDepth {
    /// The last `n` blocks (at least the head, if there is one).
    Recent(u64),
    /// Every block, from genesis.
    Full,
}

/// The blocks a gateway walks at start ([`IntegrityDepth::Recent`]).
pub const START_RECENT_BLOCKS: u64 = 1024;

/// What [`Store::check_integrity`] found (on success).
#[derive(Debug, Clone)]
pub struct IntegrityReport {
    /// The head record (`None`: an empty store).
    pub head: Option<Head>,
    /// Blocks whose bytes were walked.
    pub blocks_checked: u64,
    /// Their stored bytes in total.
    pub bytes_checked: u64,
    /// The latest snapshot, checked against its block's header: the height
    /// after which it was taken and the state it restores.
    pub snapshot: Option<(u64, WorldState)>,
}

fn corrupt(table: &'static str, height: Option<u64>, what: impl Into<String>) -> StoreError {
    StoreError::corrupt_in(table, height, what)
}

impl Store {
    /// Checks the store's integrity (see the [module](self)): the tables'
    /// consistency and the latest snapshot always, the hash chain of the
    /// blocks `depth` says. `Err(StoreError::Corrupt { table, height, .. })`
    /// names the first problem.
    ///
    /// Cost: the table checks and the snapshot are independent of the
    /// chain's length (the snapshot's decoding is linear in the number of
    /// identities); the walk reads and decodes every block it checks and
    /// hashes its transactions (docs/PERFORMANCE.md has the figures).
    pub fn check_integrity(&self, depth: IntegrityDepth) -> Result<IntegrityReport, StoreError> {
        let r = guard::guarded("meta", None, || self.begin_read())?;
        let head = guard::guarded("meta", None, || {
            let Some(meta) = open_ro(&r, META)? else {
                return Ok(None);
            };
            meta.get(META_HEAD)?
                .map(|g| Head::decode(g.value()))
                .transpose()
        })?;
        let mut report = IntegrityReport {
            head,
            blocks_checked: 0,
            bytes_checked: 0,
            snapshot: None,
        };
        check_tables(&r, head)?;
        let Some(head) = head else {
            return Ok(report);
        };
        report.snapshot = check_snapshot(&r, &head)?;
        let first = match depth {
            IntegrityDepth::Full => 0,
            IntegrityDepth::Recent(n) => (head.height + 1).saturating_sub(n.max(1)),
        };
        walk(&r, &head, first, &mut report)?;
        Ok(report)
    }
}

impl Store {
    /// The first of the store's tables that does not exist, as
    /// [`StoreError::Corrupt`]: [`Store::open`] creates all of them, so a
    /// store without one (whose head and blocks then read as empty) was
    /// damaged, or is not a chain store.
    pub fn check_tables_exist(&self) -> Result<(), StoreError> {
        let r = guard::guarded("meta", None, || self.begin_read())?;
        tables_exist(&r)
    }
}

fn tables_exist(r: &ReadTransaction) -> Result<(), StoreError> {
    macro_rules! exists {
        ($($def:ident => $name:literal),*) => {
            $(
                if guard::guarded($name, None, || Ok(open_ro(r, $def)?.is_none()))? {
                    return Err(corrupt(
                        $name,
                        None,
                        "the table is missing (the file's table directory is damaged, or this is not a chain store)",
                    ));
                }
            )*
        };
    }
    exists!(META => "meta", BLOCKS => "blocks", TX_OFFSETS => "tx_offsets", CERTS => "certs",
        TX_INDEX => "tx_index", BY_STREAM => "by_stream", BY_TIME => "by_time",
        SNAPSHOTS => "snapshots");
    Ok(())
}

/// The tables' lengths and ends agree with the head record.
fn check_tables(r: &ReadTransaction, head: Option<Head>) -> Result<(), StoreError> {
    tables_exist(r)?;
    let (stored, first, last) = guard::guarded("blocks", None, || {
        Ok(match open_ro(r, BLOCKS)? {
            Some(t) => (
                t.len()?,
                t.first()?.map(|(k, _)| k.value()),
                t.last()?.map(|(k, _)| k.value()),
            ),
            None => (0, None, None),
        })
    })?;
    let Some(head) = head else {
        if stored > 0 {
            return Err(corrupt(
                "meta",
                None,
                format!("no head record, but {stored} blocks are stored"),
            ));
        }
        return Ok(());
    };
    let h = head.height;
    if first != Some(0) {
        return Err(corrupt("blocks", Some(0), "the genesis block is missing"));
    }
    if last != Some(h) {
        let what = match last {
            Some(l) => format!("the head record names height {h}, the last stored block is {l}"),
            None => format!("the head record names height {h}, no block is stored"),
        };
        return Err(corrupt("meta", Some(h), what));
    }
    if stored != h + 1 {
        return Err(corrupt(
            "blocks",
            None,
            format!(
                "{stored} blocks stored for heights 0..={h}: {} missing",
                (h + 1).saturating_sub(stored)
            ),
        ));
    }
    let (offsets, offsets_last) = guard::guarded("tx_offsets", None, || {
        Ok(match open_ro(r, TX_OFFSETS)? {
            Some(t) => (t.len()?, t.last()?.map(|(k, _)| k.value())),
            None => (0, None),
        })
    })?;
    if offsets != stored || offsets_last != Some(h) {
        return Err(corrupt(
            "tx_offsets",
            None,
            format!("{offsets} entries for {stored} blocks"),
        ));
    }
    let certs_last = guard::guarded("certs", None, || {
        Ok(match open_ro(r, CERTS)? {
            Some(t) => t.last()?.map(|(k, _)| k.value()),
            None => None,
        })
    })?;
    if let Some(c) = certs_last.filter(|&c| c > h) {
        return Err(corrupt(
            "certs",
            Some(c),
            format!("a certificate for height {c}, above the head {h}"),
        ));
    }
    for (name, def) in [("by_stream", BY_STREAM), ("by_time", BY_TIME)] {
        let n = guard::guarded(name, None, || {
            Ok(match open_ro(r, def)? {
                Some(t) => t.len()?,
                None => 0,
            })
        })?;
        if n != head.reading_count_total {
            return Err(corrupt(
                name,
                None,
                format!(
                    "{n} entries, the head record counts {} readings",
                    head.reading_count_total
                ),
            ));
        }
    }
    let ids = guard::guarded("tx_index", None, || {
        Ok(match open_ro(r, TX_INDEX)? {
            Some(t) => t.len()?,
            None => 0,
        })
    })?;
    if ids > head.tx_count_total {
        return Err(corrupt(
            "tx_index",
            None,
            format!(
                "{ids} entries, the head record counts {} transactions",
                head.tx_count_total
            ),
        ));
    }
    Ok(())
}

/// The stored block at `height` as its bytes and its layout (transaction
/// offsets, position), or why either is missing or corrupt.
fn stored_block(r: &ReadTransaction, height: u64) -> Result<(Vec<u8>, TxOffsets), StoreError> {
    guard::guarded("tx_offsets", Some(height), || {
        let (Some(blocks), Some(offs)) = (open_ro(r, BLOCKS)?, open_ro(r, TX_OFFSETS)?) else {
            return Err(corrupt("blocks", Some(height), "table missing"));
        };
        let Some(b) = blocks.get(height)? else {
            return Err(corrupt("blocks", Some(height), "block missing"));
        };
        let Some(o) = offs.get(height)? else {
            return Err(corrupt(
                "tx_offsets",
                Some(height),
                "transaction offsets missing",
            ));
        };
        let bytes = b.value().to_vec();
        let layout = TxOffsets::decode(height, o.value(), bytes.len())?;
        Ok((bytes, layout))
    })
}

/// The layout (transaction offsets, position) of the stored block at
/// `height`.
fn stored_layout(r: &ReadTransaction, height: u64) -> Result<TxOffsets, StoreError> {
    stored_block(r, height).map(|(_, layout)| layout)
}

/// The header of the stored block at `height` (decoding only the header).
fn stored_header(r: &ReadTransaction, height: u64) -> Result<BlockHeader, StoreError> {
    let (bytes, layout) = stored_block(r, height)?;
    guard::guarded("blocks", Some(height), || {
        header_of(height, &bytes, Some(&layout))
    })
}

/// The snapshots are at or below the head; the latest one restores the
/// state after the block it is stored under.
fn check_snapshot(
    r: &ReadTransaction,
    head: &Head,
) -> Result<Option<(u64, WorldState)>, StoreError> {
    let latest = guard::guarded("snapshots", None, || {
        let Some(t) = open_ro(r, SNAPSHOTS)? else {
            return Ok(None);
        };
        let mut latest = None;
        for item in t.iter()? {
            let (k, v) = item?;
            let h = k.value();
            if h > head.height {
                return Err(corrupt(
                    "snapshots",
                    Some(h),
                    format!(
                        "a snapshot after height {h}, above the head {}",
                        head.height
                    ),
                ));
            }
            latest = Some((h, v.value().to_vec()));
        }
        Ok(latest)
    })?;
    let Some((h, bytes)) = latest else {
        return Ok(None);
    };
    let bad = |what: String| corrupt("snapshots", Some(h), what);
    let state = WorldState::from_snapshot(&bytes)
        .map_err(|e| bad(format!("the snapshot does not decode: {e}")))?;
    let header = stored_header(r, h)?;
    if state.next_height() != h + 1 || state.last_hash() != header.hash() {
        return Err(bad(format!(
            "the snapshot stored after block {h} is of the state after height {} (another block)",
            state.next_height().saturating_sub(1)
        )));
    }
    if state.commitment() != header.state_root {
        return Err(bad(format!(
            "the snapshot's state commitment is not block {h}'s state_root"
        )));
    }
    Ok(Some((h, state)))
}

/// Walks blocks `first..=head.height`.
fn walk(
    r: &ReadTransaction,
    head: &Head,
    first: u64,
    report: &mut IntegrityReport,
) -> Result<(), StoreError> {
    let mut prev: Hash32 = match first {
        0 => Hash32::ZERO,
        n => stored_header(r, n - 1)?.hash(),
    };
    let (mut txs, mut readings) = (0u64, 0u64);
    let mut last_ts = None;
    // the position of the next block's first transaction in the chain
    let mut txs_before = match first {
        0 => 0,
        n => stored_layout(r, n - 1).map(|l| l.txs_before.saturating_add(l.count() as u64))?,
    };
    guard::guarded("blocks", Some(first), || {
        let (Some(blocks), Some(offs)) = (open_ro(r, BLOCKS)?, open_ro(r, TX_OFFSETS)?) else {
            return Err(corrupt("blocks", None, "table missing"));
        };
        let Some(index) = IndexCheck::open(r)? else {
            return Err(corrupt("tx_index", None, "table missing"));
        };
        let certs = open_ro(r, CERTS)?;
        let mut expected = first;
        for item in blocks.range(first..)? {
            let (k, v) = item?;
            let h = k.value();
            if h != expected {
                return Err(corrupt(
                    "blocks",
                    Some(expected),
                    format!("block {expected} is missing (next stored is {h})"),
                ));
            }
            let bytes = v.value();
            let block = decode_block(h, bytes)?;
            if block.header.prev_hash != prev {
                return Err(corrupt(
                    "blocks",
                    Some(h),
                    "the previous hash is not the hash of the block below",
                ));
            }
            let encoded = block.encoded_txs();
            let Some(o) = offs.get(h)? else {
                return Err(corrupt(
                    "tx_offsets",
                    Some(h),
                    "transaction offsets missing",
                ));
            };
            let layout = TxOffsets::decode(h, o.value(), bytes.len())?;
            if layout.count() != encoded.len()
                || (0..encoded.len()).any(|i| layout.tx(bytes, i) != Some(encoded[i].as_slice()))
            {
                return Err(corrupt(
                    "tx_offsets",
                    Some(h),
                    "the transaction offsets do not locate the block's transactions",
                ));
            }
            if !block.tx_root_matches(&encoded) {
                return Err(corrupt(
                    "blocks",
                    Some(h),
                    "the transactions do not hash to the header's tx_root",
                ));
            }
            if layout.txs_before != txs_before {
                return Err(corrupt(
                    "tx_offsets",
                    Some(h),
                    format!(
                        "the block's position says {} transactions below it, the blocks hold {txs_before}",
                        layout.txs_before
                    ),
                ));
            }
            txs_before += layout.count() as u64;
            if let Some((table, what)) = index.block(h, layout.txs_before, &block, &encoded)? {
                return Err(corrupt(table, Some(h), what));
            }
            let hash = block.header.hash();
            if let Some(c) = certs.as_ref().map(|t| t.get(h)).transpose()?.flatten() {
                let cert = decode_cert(h, c.value())
                    .map_err(|e| corrupt("certs", Some(h), e.to_string()))?;
                if cert.height != h || cert.block_hash != hash {
                    return Err(corrupt(
                        "certs",
                        Some(h),
                        "the certificate stored for this block is for another one",
                    ));
                }
            }
            txs += block.txs.len() as u64;
            readings += block
                .txs
                .iter()
                .filter(|t| matches!(t.body.kind, TxKind::Reading { .. }))
                .count() as u64;
            report.blocks_checked += 1;
            report.bytes_checked += bytes.len() as u64;
            last_ts = Some(block.header.timestamp_ms);
            prev = hash;
            expected = h + 1;
        }
        if expected != head.height + 1 {
            return Err(corrupt(
                "blocks",
                Some(expected),
                format!(
                    "the blocks end below the head record's height {}",
                    head.height
                ),
            ));
        }
        Ok(())
    })?;
    if prev != head.hash || last_ts != Some(head.timestamp_ms) {
        return Err(corrupt(
            "meta",
            Some(head.height),
            "the head record's hash or timestamp is not the last block's",
        ));
    }
    if txs_before != head.tx_count_total {
        return Err(corrupt(
            "meta",
            Some(head.height),
            format!(
                "the head record counts {} transactions, the blocks' positions {txs_before}",
                head.tx_count_total
            ),
        ));
    }
    if first == 0 && (txs != head.tx_count_total || readings != head.reading_count_total) {
        return Err(corrupt(
            "meta",
            Some(head.height),
            format!(
                "the head record counts {} transactions and {} readings, the blocks hold {txs} and {readings}",
                head.tx_count_total, head.reading_count_total
            ),
        ));
    }
    Ok(())
}

/// The message of a gateway refusing a store that failed its check: what is
/// wrong and what to do.
pub fn refusal(dir: &std::path::Path, e: &StoreError) -> String {
    format!(
        "the chain store in {dir} failed its integrity check: {e}. The gateway will not serve \
         or extend it. Run `sensorchain audit --data-dir {dir}` for the full verdict, then \
         rebuild it: a cluster member from its peers with `sensorchain resync --config \
         gateway.toml` (it moves the damaged directory aside), or any gateway from a backup \
         with `sensorchain restore --from FILE` into an empty data directory (both validate \
         everything they take)",
        dir = dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::tests::{World, overwrite_head};

    fn stored(blocks: usize) -> (tempfile::TempDir, World) {
        World::stored(3, blocks, 5)
    }

    fn table_of(e: &StoreError) -> (Option<&'static str>, Option<u64>) {
        match e {
            StoreError::Corrupt { table, height, .. } => (*table, *height),
            other => panic!("not a Corrupt error: {other}"),
        }
    }

    #[test]
    fn an_intact_store_passes_at_every_depth() {
        let (dir, w) = stored(9);
        let store = Store::open(dir.path()).unwrap();
        let full = store.check_integrity(IntegrityDepth::Full).unwrap();
        assert_eq!(full.blocks_checked, 10);
        assert_eq!(full.head.unwrap().hash, w.chain.head_hash());
        let (h, st) = full.snapshot.unwrap();
        assert_eq!(h, 8);
        assert_eq!(st.commitment(), w.chain.blocks()[8].header.state_root);
        let recent = store.check_integrity(IntegrityDepth::Recent(3)).unwrap();
        assert_eq!(recent.blocks_checked, 3);
        // an empty store is consistent too
        let empty = tempfile::tempdir().unwrap();
        let s = Store::open(empty.path()).unwrap();
        assert!(
            s.check_integrity(IntegrityDepth::Full)
                .unwrap()
                .head
                .is_none()
        );
    }

    #[test]
    fn a_tampered_block_is_named_with_its_table() {
        let (dir, _w) = stored(6);
        let store = Store::open(dir.path()).unwrap();
        // a changed header field: the next block no longer links to it
        let mut b = store.block(3).unwrap().unwrap();
        b.header.timestamp_ms += 1;
        store
            .overwrite_block_bytes_unchecked(3, &b.to_vec())
            .unwrap();
        let e = store.check_integrity(IntegrityDepth::Full).unwrap_err();
        assert_eq!(table_of(&e), (Some("blocks"), Some(4)), "{e}");
        // only the last two blocks walked: block 3's change is outside them,
        // but the link from block 4 to block 3 is checked
        let e = store
            .check_integrity(IntegrityDepth::Recent(3))
            .unwrap_err();
        assert_eq!(table_of(&e), (Some("blocks"), Some(4)), "{e}");
        assert!(store.check_integrity(IntegrityDepth::Recent(2)).is_ok());

        // a changed reading: the Merkle root disagrees
        let (dir, _w) = stored(6);
        let store = Store::open(dir.path()).unwrap();
        let mut b = store.block(5).unwrap().unwrap();
        b.txs[1].body.timestamp_ms += 1;
        store
            .overwrite_block_bytes_unchecked(5, &b.to_vec())
            .unwrap();
        let e = store
            .check_integrity(IntegrityDepth::Recent(2))
            .unwrap_err();
        assert!(matches!(table_of(&e), (Some(_), Some(5))), "{e}");
        let text = e.to_string();
        assert!(text.contains("tx_root") || text.contains("offsets"), "{e}");
    }

    #[test]
    fn head_and_table_disagreements_are_named() {
        let (dir, _w) = stored(5);
        let store = Store::open(dir.path()).unwrap();
        let head = store.head().unwrap().unwrap();
        overwrite_head(&store, Head { height: 7, ..head });
        let e = store
            .check_integrity(IntegrityDepth::Recent(1))
            .unwrap_err();
        assert_eq!(table_of(&e), (Some("meta"), Some(7)), "{e}");
        overwrite_head(
            &store,
            Head {
                reading_count_total: head.reading_count_total + 1,
                ..head
            },
        );
        let e = store
            .check_integrity(IntegrityDepth::Recent(1))
            .unwrap_err();
        assert_eq!(table_of(&e).0, Some("by_stream"), "{e}");
        overwrite_head(
            &store,
            Head {
                hash: Hash32([7; 32]),
                ..head
            },
        );
        let e = store
            .check_integrity(IntegrityDepth::Recent(1))
            .unwrap_err();
        assert_eq!(table_of(&e), (Some("meta"), Some(5)), "{e}");
        overwrite_head(&store, head);
        assert!(store.check_integrity(IntegrityDepth::Full).is_ok());
        // a snapshot of another state
        let other = store.latest_snapshot().unwrap().unwrap();
        store.put_snapshot(2, &other.1).unwrap();
        store.put_snapshot(5, &other.1).unwrap();
        let e = store
            .check_integrity(IntegrityDepth::Recent(1))
            .unwrap_err();
        assert_eq!(table_of(&e), (Some("snapshots"), Some(5)), "{e}");
    }

    /// The check's cost (run with `--release -- --ignored --nocapture`;
    /// `SC_BLOCKS` and `SC_PER_BLOCK` set the chain's size, default 10,000
    /// blocks of 20 readings).
    #[test]
    #[ignore]
    fn integrity_cost() {
        use sensorchain_core::chain::build_block;
        use sensorchain_core::state::SigCheck;
        let env = |k: &str, d: usize| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        let (blocks, per_block) = (env("SC_BLOCKS", 10_000), env("SC_PER_BLOCK", 20));
        let dir = tempfile::tempdir().unwrap();
        let mut w = World::new(8);
        let state = {
            let store = Store::open(dir.path()).unwrap();
            w.commit_genesis(&store);
            let mut st = w.chain.state().clone();
            let t0 = std::time::Instant::now();
            for b in 0..blocks {
                let ts = st.last_timestamp_ms() + 1_000;
                let txs: Vec<_> = (0..per_block).map(|i| w.reading(i % 8, 0, ts)).collect();
                let block =
                    build_block(&st, &w.gateways[0], txs, ts, SigCheck::AlreadyVerified).unwrap();
                st.apply_block(&block, None, SigCheck::AlreadyVerified)
                    .unwrap();
                let snap = (b % 64 == 63).then(|| st.snapshot());
                store
                    .commit_block(&block, &block.encoded_txs(), None, snap.as_deref())
                    .unwrap();
            }
            eprintln!("built {blocks} blocks in {:?}", t0.elapsed());
            st
        };
        let file_len = std::fs::metadata(dir.path().join(crate::store::FILE_NAME))
            .unwrap()
            .len();
        let t0 = std::time::Instant::now();
        let mut store = Store::open(dir.path()).unwrap();
        let open = t0.elapsed();
        let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        eprintln!("load before the checks: {}", load().trim());
        let t0 = std::time::Instant::now();
        assert!(store.verify_file().unwrap());
        let verify = t0.elapsed();
        let t0 = std::time::Instant::now();
        assert!(store.verify_file().unwrap());
        eprintln!(
            "verify_file again: {:?}; load {}",
            t0.elapsed(),
            load().trim()
        );
        for depth in [
            IntegrityDepth::Recent(START_RECENT_BLOCKS),
            IntegrityDepth::Full,
        ] {
            let t0 = std::time::Instant::now();
            let r = store.check_integrity(depth).unwrap();
            let dt = t0.elapsed();
            eprintln!(
                "check_integrity({depth:?}): {} blocks, {} MB in {dt:?} ({:.0} MB/s)",
                r.blocks_checked,
                r.bytes_checked / 1_000_000,
                r.bytes_checked as f64 / 1e6 / dt.as_secs_f64()
            );
        }
        eprintln!(
            "file {} MB: open {open:?}, verify_file (redb page checksums) {verify:?} ({:.0} MB/s); head {}",
            file_len / 1_000_000,
            file_len as f64 / 1e6 / verify.as_secs_f64(),
            state.next_height() - 1
        );
    }

    /// A byte of a block changed in the file itself (not through redb): the
    /// page checksums a gateway verifies at start find it, whatever its
    /// height.
    #[test]
    fn a_byte_changed_in_the_file_fails_the_page_checksums() {
        let (dir, _w) = stored(6);
        let file = dir.path().join(crate::store::FILE_NAME);
        let bytes1 = Store::open(dir.path())
            .unwrap()
            .block_bytes(1)
            .unwrap()
            .unwrap();
        let mut raw = std::fs::read(&file).unwrap();
        let at = raw
            .windows(bytes1.len())
            .position(|w| w == bytes1.as_slice())
            .expect("block 1's bytes are stored contiguously");
        raw[at + bytes1.len() - 1] ^= 0x01;
        std::fs::write(&file, &raw).unwrap();
        match Store::open_checked(dir.path()) {
            Err(e) => {
                eprintln!("refused: {e}");
                assert!(e.is_corrupt(), "{e}")
            }
            // redb repaired by going back to an earlier commit: what is left
            // must still be a consistent chain without the changed byte
            Ok(s) => {
                s.check_integrity(IntegrityDepth::Full).unwrap();
                assert_ne!(
                    s.block_bytes(1).unwrap().unwrap().last(),
                    raw.get(at + bytes1.len() - 1)
                );
            }
        }
    }

    #[test]
    fn the_refusal_says_what_to_do() {
        let e = StoreError::corrupt_in("blocks", Some(4), "x");
        let m = refusal(std::path::Path::new("/d"), &e);
        assert!(m.contains("height 4") && m.contains("table blocks"), "{m}");
        assert!(
            m.contains("sensorchain audit --data-dir /d") && m.contains("backup"),
            "{m}"
        );
    }
}
