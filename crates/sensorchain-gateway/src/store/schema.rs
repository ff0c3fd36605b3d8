//! The tables and their record formats (the table of the store's module
//! docs), and the format check of an opened file.

use redb::{
    ReadOnlyTable, ReadTransaction, ReadableTable, TableDefinition, TableError, WriteTransaction,
};
use sensorchain_core::hash::Hash32;

use super::{FORMAT_VERSION, REINDEXABLE_FROM, Store, StoreError};

pub(super) const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
pub(super) const TX_OFFSETS: TableDefinition<u64, &[u8]> = TableDefinition::new("tx_offsets");
pub(super) const CERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("certs");
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(super) const TX_INDEX: TableDefinition<&[u8], (u64, u32)> = TableDefinition::new("tx_index");
pub(super) const BY_STREAM: TableDefinition<&[u8], (u64, u32, u16)> =
    TableDefinition::new("by_stream");
pub(super) const BY_TIME: TableDefinition<&[u8], (u64, u32, u16)> = TableDefinition::new("by_time");
pub(super) const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");
pub(super) const REJECTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("rejections");
pub(super) const VALIDATOR_SETS: TableDefinition<u64, &[u8]> =
    TableDefinition::new("validator_sets");
pub(super) const OWN_VOTES: TableDefinition<u64, &[u8]> = TableDefinition::new("own_votes");
pub(super) const EVIDENCE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("evidence");

/// Format 1's `by_device` index (device ‖ timestamp ‖ sequence), which
/// [`Store::reindex`] drops: format 2 answers by device from `by_stream`.
pub(super) const OLD_BY_DEVICE: TableDefinition<&[u8], (u64, u32, u16)> =
    TableDefinition::new("by_device");

/// A reading index opened for reading.
pub(super) type ReadingTable = ReadOnlyTable<&'static [u8], (u64, u32, u16)>;

pub(super) const META_HEAD: &str = "head";
pub(super) const META_FORMAT: &str = "format";
pub(super) const META_APPLIED: &str = "applied";
/// A Raft snapshot being installed (its meta and data, postcard), kept
/// until the install is done so that a crash half way resumes it.
pub(super) const META_PENDING_SNAPSHOT: &str = "pending_snapshot";
pub(super) const HEAD_LEN: usize = 64;

/// The last stored block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Its height.
    pub height: u64,
    /// Its hash.
    pub hash: Hash32,
    /// Its header's timestamp.
    pub timestamp_ms: u64,
    /// Transactions in blocks `0..=height`.
    pub tx_count_total: u64,
    /// Readings (`TxKind::Reading` transactions) in blocks `0..=height`.
    pub reading_count_total: u64,
}

impl Head {
    pub(super) fn encode(&self) -> [u8; HEAD_LEN] {
        let mut b = [0u8; HEAD_LEN];
        b[..8].copy_from_slice(&self.height.to_be_bytes());
        b[8..40].copy_from_slice(&self.hash.0);
        b[40..48].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        b[48..56].copy_from_slice(&self.tx_count_total.to_be_bytes());
        b[56..64].copy_from_slice(&self.reading_count_total.to_be_bytes());
        b
    }

    pub(super) fn decode(b: &[u8]) -> Result<Head, StoreError> {
        let b: &[u8; HEAD_LEN] = b.try_into().map_err(|_| {
            StoreError::corrupt_in(
                "meta",
                None,
                format!("head record is {} bytes, expected {HEAD_LEN}", b.len()),
            )
        })?;
        let u = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&b[8..40]);
        Ok(Head {
            height: u(0),
            hash: Hash32(hash),
            timestamp_ms: u(40),
            tx_count_total: u(48),
            reading_count_total: u(56),
        })
    }
}

/// Opens a table of a read transaction; `None` if it does not exist (a store
/// written by an older layout, or never written).
pub(super) fn open_ro<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<Option<ReadOnlyTable<K, V>>, StoreError> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The layout of a block's bytes: header length and transaction offsets,
/// and the block's position in the chain's transactions.
pub(super) struct TxOffsets {
    /// Transactions in the blocks below this one (fixes the block's
    /// transaction-index epoch, [`super::keys::epoch_of`]).
    pub(super) txs_before: u64,
    pub(super) header_len: usize,
    /// `n + 1` offsets.
    pub(super) offsets: Vec<usize>,
}

impl TxOffsets {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + 4 * (self.offsets.len() + 1));
        v.extend_from_slice(&self.txs_before.to_le_bytes());
        v.extend_from_slice(&(self.header_len as u32).to_le_bytes());
        for o in &self.offsets {
            v.extend_from_slice(&(*o as u32).to_le_bytes());
        }
        v
    }

    /// Decodes and checks against the block bytes' length.
    pub(super) fn decode(height: u64, b: &[u8], block_len: usize) -> Result<TxOffsets, StoreError> {
        let bad = |what: &str| StoreError::corrupt(height, format!("transaction offsets: {what}"));
        if b.len() < 16 || !b.len().is_multiple_of(4) {
            return Err(bad("bad length"));
        }
        let (before, b) = b.split_at(8);
        let txs_before = u64::from_le_bytes(before.try_into().unwrap_or_default());
        let mut it = b
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize);
        let header_len = it.next().ok_or_else(|| bad("empty"))?;
        let offsets: Vec<usize> = it.collect();
        let ordered = offsets.windows(2).all(|w| w[0] <= w[1]);
        if !ordered
            || offsets.last() != Some(&block_len)
            || offsets[0] < header_len
            || header_len > block_len
        {
            return Err(bad("do not fit the block bytes"));
        }
        Ok(TxOffsets {
            txs_before,
            header_len,
            offsets,
        })
    }

    pub(super) fn count(&self) -> usize {
        self.offsets.len() - 1
    }

    pub(super) fn tx<'b>(&self, bytes: &'b [u8], i: usize) -> Option<&'b [u8]> {
        let (s, e) = (*self.offsets.get(i)?, *self.offsets.get(i + 1)?);
        bytes.get(s..e)
    }
}

impl Store {
    /// Creates every table and the format record.
    pub(super) fn init(&self) -> Result<(), StoreError> {
        let w = self.begin_write()?;
        {
            let mut meta = w.open_table(META)?;
            let existing = meta.get(META_FORMAT)?.map(|g| g.value().to_vec());
            match existing {
                Some(v) => check_format_version(format_of(&v)?, &self.path)?,
                None => {
                    meta.insert(META_FORMAT, FORMAT_VERSION.to_be_bytes().as_slice())?;
                }
            }
        }
        create_tables(&w)?;
        w.commit()?;
        Ok(())
    }

    pub(super) fn check_format(&self) -> Result<(), StoreError> {
        match self.stored_format()? {
            Some(v) => check_format_version(v, &self.path),
            None => Ok(()),
        }
    }

    /// The format version recorded in the file, if any.
    pub(super) fn stored_format(&self) -> Result<Option<u32>, StoreError> {
        let r = self.begin_read()?;
        let Some(meta) = open_ro(&r, META)? else {
            return Ok(None);
        };
        meta.get(META_FORMAT)?
            .map(|g| format_of(g.value()))
            .transpose()
    }
}

/// Creates the tables of the current format that do not exist (those of
/// the block's write path; the consensus layer's are created when first
/// written).
pub(super) fn create_tables(w: &WriteTransaction) -> Result<(), StoreError> {
    w.open_table(BLOCKS)?;
    w.open_table(TX_OFFSETS)?;
    w.open_table(CERTS)?;
    w.open_table(TX_INDEX)?;
    w.open_table(BY_STREAM)?;
    w.open_table(BY_TIME)?;
    w.open_table(SNAPSHOTS)?;
    Ok(())
}

/// Decodes the `meta/format` record.
pub(super) fn format_of(v: &[u8]) -> Result<u32, StoreError> {
    <[u8; 4]>::try_from(v)
        .map(u32::from_be_bytes)
        .map_err(|_| StoreError::corrupt_in("meta", None, "format record damaged"))
}

/// [`StoreError::OldFormat`] (a layout whose indexes `sensorchain reindex`
/// rebuilds) or [`StoreError::Database`] (a newer build's) unless `version`
/// is [`FORMAT_VERSION`]; `file` is the store's file.
pub(super) fn check_format_version(version: u32, file: &std::path::Path) -> Result<(), StoreError> {
    if version == FORMAT_VERSION {
        return Ok(());
    }
    if (REINDEXABLE_FROM..FORMAT_VERSION).contains(&version) {
        let dir = file.parent().unwrap_or(file).to_path_buf();
        return Err(StoreError::OldFormat { version, dir });
    }
    Err(StoreError::Database(format!(
        "store format {version}, this build reads format {FORMAT_VERSION}"
    )))
}
