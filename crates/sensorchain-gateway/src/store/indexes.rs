//! The transaction index (id → location, transactions and their inclusion
//! proofs) and the reading indexes' queries (`by_device`, `by_stream`,
//! `by_time`), with the check of one block's index entries.

use redb::TableDefinition;
use sensorchain_core::block::Block;
use sensorchain_core::hash::Hash32;
use sensorchain_core::identity::PublicKey;
use sensorchain_core::merkle;
use sensorchain_core::tx::{Transaction, TxKind};

use super::chain::header_of;
use super::keys::{be64, key_device, key_stream, key_time, loc_of, pk_of};
use super::schema::{
    BY_DEVICE, BY_STREAM, BY_TIME, ReadingTable, TX_INDEX, TX_OFFSETS, TxOffsets, open_ro,
};
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
    /// bytes, `Transaction::id_of_encoded`) is.
    pub fn tx_location(&self, tx_id: &Hash32) -> Result<Option<TxLocation>, StoreError> {
        guard::guarded("tx_index", None, || {
            let r = self.begin_read()?;
            let Some(t) = open_ro(&r, TX_INDEX)? else {
                return Ok(None);
            };
            Ok(t.get(tx_id.0.as_slice())?.map(|g| loc_of(g.value())))
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

    /// Readings of `device` with device timestamps in `from_ms..=to_ms`,
    /// oldest first, at most `limit` (the oldest ones of the window; to page
    /// on, query again from the last timestamp returned and skip what was
    /// seen).
    pub fn readings_by_device(
        &self,
        device: &PublicKey,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<ReadingRef>, StoreError> {
        let lo = key_device(device, from_ms, 0);
        let hi = key_device(device, to_ms, u64::MAX);
        self.scan(BY_DEVICE, "by_device", &lo, &hi, limit, |k, v| ReadingRef {
            loc: loc_of((v.0, v.1)),
            device: pk_of(k),
            stream: v.2,
            timestamp_ms: be64(&k[32..]),
            sequence: be64(&k[40..]),
        })
    }

    /// Readings of one stream of `device` with timestamps in
    /// `from_ms..=to_ms`, oldest first, at most `limit`.
    pub fn readings_by_stream(
        &self,
        device: &PublicKey,
        stream: u16,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<ReadingRef>, StoreError> {
        let lo = key_stream(device, stream, from_ms, 0);
        let hi = key_stream(device, stream, to_ms, u64::MAX);
        self.scan(BY_STREAM, "by_stream", &lo, &hi, limit, |k, v| ReadingRef {
            loc: loc_of((v.0, v.1)),
            device: pk_of(k),
            stream: v.2,
            timestamp_ms: be64(&k[34..]),
            sequence: be64(&k[42..]),
        })
    }

    /// Readings of every device with timestamps in `from_ms..=to_ms`, oldest
    /// first, at most `limit`.
    pub fn readings_by_time(
        &self,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<ReadingRef>, StoreError> {
        let lo = key_time(&PublicKey([0; 32]), from_ms, 0);
        let hi = key_time(&PublicKey([0xff; 32]), to_ms, u64::MAX);
        self.scan(BY_TIME, "by_time", &lo, &hi, limit, |k, v| ReadingRef {
            loc: loc_of((v.0, v.1)),
            device: pk_of(&k[8..]),
            stream: v.2,
            timestamp_ms: be64(k),
            sequence: be64(&k[40..]),
        })
    }

    pub(super) fn scan(
        &self,
        def: TableDefinition<&[u8], (u64, u32, u16)>,
        name: &'static str,
        lo: &[u8],
        hi: &[u8],
        limit: usize,
        f: impl Fn(&[u8], (u64, u32, u16)) -> ReadingRef,
    ) -> Result<Vec<ReadingRef>, StoreError> {
        guard::guarded(name, None, || {
            let mut out = Vec::new();
            if limit == 0 || lo > hi {
                return Ok(out);
            }
            let r = self.begin_read()?;
            let Some(t) = open_ro(&r, def)? else {
                return Ok(out);
            };
            for item in t.range::<&[u8]>(lo..=hi)? {
                let (k, v) = item?;
                let k = k.value();
                if k.len() != lo.len() {
                    return Err(StoreError::corrupt_in(
                        name,
                        None,
                        "reading index key of the wrong length",
                    ));
                }
                out.push(f(k, v.value()));
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// Checks the index entries of the stored block at `height` against its
    /// exact stored bytes `bytes`, their strict decoding `block` and its
    /// transactions' exact encodings `encoded`: the offsets table locates
    /// exactly these transactions, every transaction id maps to its location
    /// (unless an identical transaction at a later height replaced it) and
    /// every reading is in the three reading indexes. Returns the first
    /// disagreement found.
    pub fn check_block_index(
        &self,
        height: u64,
        bytes: &[u8],
        block: &Block,
        encoded: &[Vec<u8>],
    ) -> Result<Option<String>, StoreError> {
        guard::guarded("index tables", Some(height), || {
            let r = self.begin_read()?;
            let tx_index = open_ro(&r, TX_INDEX)?;
            let by_device = open_ro(&r, BY_DEVICE)?;
            let by_stream = open_ro(&r, BY_STREAM)?;
            let by_time = open_ro(&r, BY_TIME)?;
            let offsets = open_ro(&r, TX_OFFSETS)?;
            let (Some(tx_index), Some(by_device), Some(by_stream), Some(by_time), Some(offsets)) =
                (tx_index, by_device, by_stream, by_time, offsets)
            else {
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
            for (i, (tx, enc)) in block.txs.iter().zip(encoded).enumerate() {
                let id = Transaction::id_of_encoded(enc);
                let found = guard::guarded("tx_index", Some(height), || {
                    Ok(tx_index.get(id.0.as_slice())?.map(|g| g.value()))
                })?;
                match found {
                    None => {
                        return Ok(Some(format!(
                            "transaction {i} missing from the transaction index"
                        )));
                    }
                    Some((h, j)) => {
                        if (h, j as usize) != (height, i) && h < height {
                            return Ok(Some(format!(
                                "transaction {i} indexed at height {h} index {j}"
                            )));
                        }
                    }
                }
                if let TxKind::Reading { stream, .. } = tx.body.kind {
                    let (dev, ts, seq) = (tx.body.signer, tx.body.timestamp_ms, tx.body.sequence);
                    let want = (height, i as u32, stream);
                    let keys: [(&ReadingTable, Vec<u8>, &str); 3] = [
                        (&by_device, key_device(&dev, ts, seq).to_vec(), "by_device"),
                        (
                            &by_stream,
                            key_stream(&dev, stream, ts, seq).to_vec(),
                            "by_stream",
                        ),
                        (&by_time, key_time(&dev, ts, seq).to_vec(), "by_time"),
                    ];
                    for (t, k, name) in keys {
                        let got = guard::guarded(name, Some(height), || {
                            Ok(t.get(k.as_slice())?.map(|g| g.value()))
                        })?;
                        if got != Some(want) {
                            return Ok(Some(format!(
                                "reading {i} missing or wrong in the {name} index"
                            )));
                        }
                    }
                }
            }
            Ok(None)
        })
    }
}
