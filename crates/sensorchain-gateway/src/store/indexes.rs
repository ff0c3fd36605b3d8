//! The transaction index (id → location, by epoch: transactions and their
//! inclusion proofs) and the check of one block's index entries (the
//! transaction index and the reading indexes); the reading queries are in
//! `readings.rs`.

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable};
use sensorchain_core::block::Block;
use sensorchain_core::hash::Hash32;
use sensorchain_core::identity::PublicKey;
use sensorchain_core::merkle;
use sensorchain_core::tx::{Transaction, TxKind};

use super::chain::header_of;
use super::filters::{Filter, MAX_FILTERS};
use super::keys::{EPOCH_BITS, epoch_of, key_stream, key_time, key_tx, loc_of};
use super::schema::{BY_STREAM, BY_TIME, ReadingTable, TX_INDEX, TX_OFFSETS, TxOffsets, open_ro};
use super::{Store, StoreError, guard};

/// Where a transaction is: block height and index in the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxLocation {
    /// The block's height.
    pub height: u64,
    /// The transaction's index in the block, from 0.
    pub index: u32,
}

/// A reading found by an index query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadingRef {
    /// Where the reading's transaction is.
    pub loc: TxLocation,
    /// The device (the transaction's signer).
    pub device: PublicKey,
    /// The device's stream.
    pub stream: u16,
    /// The device's sequence number.
    pub sequence: u64,
    /// The device's timestamp.
    pub timestamp_ms: u64,
}

/// A Merkle inclusion proof of a transaction in its block (RFC 6962 `PATH`,
/// bottom to top), for `sensorchain_core::merkle::verify_inclusion(
/// &leaf_hash, index, tree_size, &path, &tx_root)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// Where the transaction is.
    pub loc: TxLocation,
    /// The transaction id: the RFC 6962 leaf hash of its exact bytes.
    pub leaf_hash: Hash32,
    /// Number of transactions in the block.
    pub tree_size: u64,
    /// The sibling hashes, bottom to top.
    pub path: Vec<Hash32>,
    /// The block header's `tx_root`.
    pub tx_root: Hash32,
    /// The block's hash.
    pub block_hash: Hash32,
}

impl Store {
    /// Where the transaction with id `tx_id` (the leaf hash of its exact
    /// bytes, `Transaction::id_of_encoded`) is: the latest location, if an
    /// identical transaction was stored twice. Probes the index's epochs
    /// newest first, each closed one only if its in-memory Bloom filter
    /// (`filters.rs`, built the first time it is needed) says it may hold
    /// the id: about one B-tree lookup, plus one per 50 epochs.
    pub fn tx_location(&self, tx_id: &Hash32) -> Result<Option<TxLocation>, StoreError> {
        guard::guarded("tx_index", None, || {
            let r = self.begin_read()?;
            let Some(t) = open_ro(&r, TX_INDEX)? else {
                return Ok(None);
            };
            let newest = match t.last()? {
                Some((k, _)) => epoch_in_key(k.value())?,
                None => return Ok(None),
            };
            let filtered = newest.saturating_sub(MAX_FILTERS)..newest;
            for epoch in (0..=newest).rev() {
                if filtered.contains(&epoch) {
                    let may = match self.filters.may_contain(epoch, tx_id) {
                        Some(may) => may,
                        None => {
                            let f = epoch_filter(&t, epoch)?;
                            let may = f.may_contain(&tx_id.0);
                            self.filters.insert(epoch, f);
                            may
                        }
                    };
                    if !may {
                        continue;
                    }
                }
                if let Some(g) = t.get(key_tx(epoch, tx_id).as_slice())? {
                    return Ok(Some(loc_of(g.value())));
                }
            }
            Ok(None)
        })
    }

    /// The transaction at `loc`, decoded, with its exact bytes.
    pub fn tx(&self, loc: TxLocation) -> Result<Option<(Transaction, Vec<u8>)>, StoreError> {
        self.with_block_layout(loc.height, |bytes, layout| {
            let Some(enc) = layout.tx(bytes, loc.index as usize) else {
                return Ok(None);
            };
            let tx = Transaction::decode(enc).map_err(|e| {
                StoreError::corrupt(
                    loc.height,
                    format!("transaction {} does not decode: {e}", loc.index),
                )
            })?;
            Ok(Some((tx, enc.to_vec())))
        })
        .map(Option::flatten)
    }

    /// The Merkle inclusion proof of the transaction at `loc` against its
    /// block's `tx_root`. [`StoreError::Corrupt`] if the stored transactions
    /// do not hash to the header's root.
    pub fn inclusion_proof(&self, loc: TxLocation) -> Result<Option<InclusionProof>, StoreError> {
        self.with_block_layout(loc.height, |bytes, layout| {
            let n = layout.count();
            if loc.index as usize >= n {
                return Ok(None);
            }
            let header = header_of(loc.height, bytes, Some(layout))?;
            let leaves: Vec<Hash32> = (0..n)
                .map(|i| merkle::leaf_hash(layout.tx(bytes, i).unwrap_or_default()))
                .collect();
            if merkle::root_from_leaf_hashes(&leaves) != header.tx_root {
                return Err(StoreError::corrupt(
                    loc.height,
                    "stored transactions do not match the header's Merkle root",
                ));
            }
            let path = merkle::inclusion_proof(&leaves, loc.index as u64)
                .map_err(|e| StoreError::corrupt(loc.height, format!("inclusion proof: {e:?}")))?;
            Ok(Some(InclusionProof {
                loc,
                leaf_hash: leaves[loc.index as usize],
                tree_size: n as u64,
                path,
                tx_root: header.tx_root,
                block_hash: header.hash(),
            }))
        })
        .map(Option::flatten)
    }

    /// Checks the index entries of the stored block at `height` against its
    /// exact stored bytes `bytes`, their strict decoding `block` and its
    /// transactions' exact encodings `encoded`: the offsets table locates
    /// exactly these transactions, every transaction id maps to its location
    /// in the block's epoch (unless an identical transaction in a later
    /// block of that epoch replaced it) and every reading is in the two
    /// reading indexes. Returns the first disagreement found.
    pub fn check_block_index(
        &self,
        height: u64,
        bytes: &[u8],
        block: &Block,
        encoded: &[Vec<u8>],
    ) -> Result<Option<String>, StoreError> {
        guard::guarded("index tables", Some(height), || {
            let r = self.begin_read()?;
            let Some(check) = IndexCheck::open(&r)? else {
                return Ok(Some("index tables missing".into()));
            };
            let Some(offsets) = open_ro(&r, TX_OFFSETS)? else {
                return Ok(Some("index tables missing".into()));
            };
            let o = guard::guarded("tx_offsets", Some(height), || {
                Ok(offsets.get(height)?.map(|g| g.value().to_vec()))
            })?;
            let Some(o) = o else {
                return Ok(Some("transaction offsets missing".into()));
            };
            let layout = match TxOffsets::decode(height, &o, bytes.len()) {
                Ok(l) => l,
                Err(e) => return Ok(Some(e.to_string())),
            };
            if layout.count() != encoded.len()
                || (0..encoded.len()).any(|i| layout.tx(bytes, i) != Some(encoded[i].as_slice()))
            {
                return Ok(Some(
                    "transaction offsets do not locate the block's transactions".into(),
                ));
            }
            Ok(check
                .block(height, layout.txs_before, block, encoded)?
                .map(|(_, what)| what))
        })
    }
}

/// The Bloom filter of the ids in epoch `epoch` of the transaction index.
fn epoch_filter(
    t: &ReadOnlyTable<&'static [u8], (u64, u32)>,
    epoch: u32,
) -> Result<Filter, StoreError> {
    let (lo, hi) = (
        key_tx(epoch, &Hash32([0; 32])),
        key_tx(epoch, &Hash32([0xff; 32])),
    );
    let mut f = Filter::with_capacity(1 << EPOCH_BITS);
    for item in t.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
        let (k, _) = item?;
        let k = k.value();
        let id: &[u8; 32] = k
            .get(4..)
            .and_then(|id| id.try_into().ok())
            .ok_or_else(|| {
                StoreError::corrupt_in(
                    "tx_index",
                    None,
                    "transaction index key of the wrong length",
                )
            })?;
        f.insert(id);
    }
    Ok(f)
}

/// The epoch of a `tx_index` key.
fn epoch_in_key(k: &[u8]) -> Result<u32, StoreError> {
    k.get(..4)
        .and_then(|e| <[u8; 4]>::try_from(e).ok())
        .filter(|_| k.len() == 36)
        .map(u32::from_be_bytes)
        .ok_or_else(|| {
            StoreError::corrupt_in(
                "tx_index",
                None,
                "transaction index key of the wrong length",
            )
        })
}

/// The index tables of one read snapshot, to check blocks' entries
/// against (the audit, one block at a time; the integrity check's walk).
pub(super) struct IndexCheck {
    tx_index: ReadOnlyTable<&'static [u8], (u64, u32)>,
    by_stream: ReadingTable,
    by_time: ReadingTable,
}

impl IndexCheck {
    /// The index tables of `r`; `None` if one is missing.
    pub(super) fn open(r: &ReadTransaction) -> Result<Option<IndexCheck>, StoreError> {
        let (Some(tx_index), Some(by_stream), Some(by_time)) = (
            open_ro(r, TX_INDEX)?,
            open_ro(r, BY_STREAM)?,
            open_ro(r, BY_TIME)?,
        ) else {
            return Ok(None);
        };
        Ok(Some(IndexCheck {
            tx_index,
            by_stream,
            by_time,
        }))
    }

    /// The first disagreement of the index entries of the stored block at
    /// `height` (its transactions following the chain's `txs_before` first
    /// ones) with its strict decoding `block` and its transactions' exact
    /// encodings `encoded`, as (table, what).
    pub(super) fn block(
        &self,
        height: u64,
        txs_before: u64,
        block: &Block,
        encoded: &[Vec<u8>],
    ) -> Result<Option<(&'static str, String)>, StoreError> {
        let epoch = epoch_of(txs_before);
        for (i, (tx, enc)) in block.txs.iter().zip(encoded).enumerate() {
            let id = Transaction::id_of_encoded(enc);
            let found = guard::guarded("tx_index", Some(height), || {
                Ok(self
                    .tx_index
                    .get(key_tx(epoch, &id).as_slice())?
                    .map(|g| g.value()))
            })?;
            match found {
                None => {
                    return Ok(Some((
                        "tx_index",
                        format!("transaction {i} missing from the transaction index"),
                    )));
                }
                Some((h, j)) => {
                    // a later identical transaction (a later block, or later
                    // in this one) holds the entry; nothing earlier may
                    let j = j as usize;
                    let later_here =
                        j > i && encoded.get(j).map(|e| Transaction::id_of_encoded(e)) == Some(id);
                    if h < height || (h == height && j != i && !later_here) {
                        return Ok(Some((
                            "tx_index",
                            format!("transaction {i} indexed at height {h} index {j}"),
                        )));
                    }
                }
            }
            if let TxKind::Reading { stream, .. } = tx.body.kind {
                let (dev, ts, seq) = (tx.body.signer, tx.body.timestamp_ms, tx.body.sequence);
                let want = (height, i as u32, stream);
                let keys: [(&ReadingTable, &[u8], &'static str); 2] = [
                    (
                        &self.by_stream,
                        &key_stream(&dev, stream, ts, seq),
                        "by_stream",
                    ),
                    (&self.by_time, &key_time(&dev, ts, seq), "by_time"),
                ];
                for (t, k, name) in keys {
                    let got =
                        guard::guarded(name, Some(height), || Ok(t.get(k)?.map(|g| g.value())))?;
                    if got != Some(want) {
                        return Ok(Some((
                            name,
                            format!("reading {i} missing or wrong in the {name} index"),
                        )));
                    }
                }
            }
        }
        Ok(None)
    }
}
