//! Rebuilding every index from the stored blocks ([`Store::reindex`],
//! `sensorchain reindex`): how a store of an older format (or one whose
//! indexes were damaged) becomes readable by this build.

use std::path::Path;

use super::chain::{decode_block, entries_of, layout_of, put_index_entries};
use super::schema::{
    BY_STREAM, BY_TIME, META, META_FORMAT, OLD_BY_DEVICE, TX_INDEX, TX_OFFSETS, create_tables,
};
use super::{
    DEFAULT_CACHE_BYTES, Db, FILE_NAME, FORMAT_VERSION, IntegrityDepth, REINDEXABLE_FROM, Store,
    StoreError, builder, guard,
};

/// Transactions indexed per write transaction of [`Store::reindex`] (the
/// last one is durable; the others are made durable by it).
const BATCH_TXS: u64 = 1 << 16;

/// What [`Store::reindex`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReindexReport {
    /// The format the store had.
    pub from_format: u32,
    /// Blocks whose entries were written (and then checked).
    pub blocks: u64,
    /// Transactions indexed.
    pub transactions: u64,
    /// Readings indexed.
    pub readings: u64,
}

impl Store {
    /// Rebuilds every index of the store in `dir` from its stored blocks
    /// (`tx_offsets`, `tx_index`, `by_stream`, `by_time`; format 1's
    /// `by_device` is dropped), records [`FORMAT_VERSION`], then runs
    /// [`check_integrity`](Self::check_integrity) over the whole chain
    /// (every block's index entries among its checks). The blocks,
    /// certificates, snapshots and consensus records are not changed.
    /// `progress(height, head)` is called after each batch of blocks.
    ///
    /// The store must be closed elsewhere ([`StoreError::Busy`] if a gateway
    /// holds it). A crash half way leaves the format record at
    /// [`REINDEXABLE_FROM`], so every open refuses the store until `reindex`
    /// runs again (it starts over).
    pub fn reindex(
        dir: &Path,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<(Store, ReindexReport), StoreError> {
        let path = dir.join(FILE_NAME);
        if !path.is_file() {
            return Err(StoreError::NotFound(format!(
                "no chain store at {}",
                path.display()
            )));
        }
        let store = guard::guarded("redb file", None, || {
            Ok(Store {
                db: Db::Rw(builder(DEFAULT_CACHE_BYTES).create(&path)?),
                path: path.clone(),
                filters: Default::default(),
                #[cfg(any(test, feature = "test-hooks"))]
                fail_writes: Default::default(),
            })
        })?;
        let from_format = guard::guarded("meta", None, || store.stored_format())?
            .ok_or_else(|| StoreError::corrupt_in("meta", None, "no format record"))?;
        if !(REINDEXABLE_FROM..=FORMAT_VERSION).contains(&from_format) {
            return Err(StoreError::Database(format!(
                "store format {from_format}: this build rebuilds the indexes of formats \
                 {REINDEXABLE_FROM} to {FORMAT_VERSION}"
            )));
        }
        let head = store.head()?;
        let mut report = ReindexReport {
            from_format,
            blocks: 0,
            transactions: 0,
            readings: 0,
        };
        guard::guarded("index tables", None, || {
            // the old indexes go first; until the end the file says it
            // needs this command
            let w = store.begin_write_with(false)?;
            w.open_table(META)?
                .insert(META_FORMAT, REINDEXABLE_FROM.to_be_bytes().as_slice())?;
            w.delete_table(TX_INDEX)?;
            w.delete_table(OLD_BY_DEVICE)?;
            w.delete_table(BY_STREAM)?;
            w.delete_table(BY_TIME)?;
            w.delete_table(TX_OFFSETS)?;
            create_tables(&w)?;
            w.commit()?;
            Ok(())
        })?;
        let head_height = head.map(|h| h.height);
        let mut blocks = store.blocks(0);
        let mut done = false;
        while !done {
            let w = store.begin_write_with(false)?;
            let batch_end = report.transactions + BATCH_TXS;
            loop {
                let Some(item) = blocks.next() else {
                    done = true;
                    break;
                };
                let (height, bytes) = item?;
                let block = decode_block(height, &bytes)?;
                let encoded = block.encoded_txs();
                let mut layout = layout_of(&block, &bytes, &encoded)
                    .map_err(|e| StoreError::corrupt(height, e.to_string()))?;
                layout.txs_before = report.transactions;
                let (entries, readings) = entries_of(&block, &encoded);
                guard::guarded("index tables", Some(height), || {
                    w.open_table(TX_OFFSETS)?
                        .insert(height, layout.encode().as_slice())?;
                    put_index_entries(&w, height, report.transactions, &entries)
                })?;
                report.blocks += 1;
                report.transactions += entries.len() as u64;
                report.readings += readings;
                if report.transactions >= batch_end {
                    break;
                }
            }
            w.commit()?;
            progress(report.blocks.saturating_sub(1), head_height.unwrap_or(0));
        }
        drop(blocks);
        // durable: every batch with it
        let w = store.begin_write()?;
        w.open_table(META)?
            .insert(META_FORMAT, FORMAT_VERSION.to_be_bytes().as_slice())?;
        w.commit()?;
        store.check_integrity(IntegrityDepth::Full)?;
        Ok((store, report))
    }
}
