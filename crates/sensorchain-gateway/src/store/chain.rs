//! The write path (one durable write transaction per block, certificates)
//! and the reads of blocks, headers, certificates and the head.

use redb::{ReadableTable, WriteTransaction};
use sensorchain_core::block::{Block, BlockHeader, FinalityCert};
use sensorchain_core::codec;
use sensorchain_core::hash::Hash32;
use sensorchain_core::identity::PublicKey;
use sensorchain_core::tx::{Transaction, TxKind};

use super::keys::{epoch_of, key_stream, key_time, key_tx};
use super::schema::{
    BLOCKS, BY_STREAM, BY_TIME, CERTS, META, META_HEAD, TX_INDEX, TX_OFFSETS, TxOffsets, open_ro,
};
use super::snapshots::put_snapshot;
use super::{CERT_MAX_LEN, Head, Store, StoreError, guard};

/// What a write transaction needs to index one transaction.
pub(super) struct TxEntry {
    id: Hash32,
    reading: Option<(PublicKey, u16, u64, u64)>,
}

/// What a block is stored with besides its transactions' encodings.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct With<'a> {
    /// The block's exact bytes when the caller has them (the bytes it was
    /// strictly decoded from), stored as they are instead of re-encoding the
    /// block; they must begin with the header's encoding and end with the
    /// transactions' encodings, else [`StoreError::Invalid`].
    pub(super) exact: Option<&'a [u8]>,
    /// Its finality certificate.
    pub(super) cert: Option<&'a FinalityCert>,
    /// A snapshot of the world state after it.
    pub(super) snapshot: Option<&'a [u8]>,
    /// Commit without an fsync of its own (made durable by the next durable
    /// commit).
    pub(super) relaxed: bool,
}

impl Store {
    /// Stores the next block in one durable write transaction: its bytes,
    /// the index entries of its transactions (`encoded_txs`: their exact
    /// encodings, in order, as the block's `encoded_txs()`), the new head,
    /// and optionally its finality certificate and a snapshot of the world
    /// state after it. The height must be head + 1 (0 for the first block)
    /// and `prev_hash` the head's hash, else [`StoreError::Conflict`].
    ///
    /// The block is not validated here (that is the core's
    /// `WorldState::apply_block`, which the caller runs first).
    pub fn commit_block(
        &self,
        block: &Block,
        encoded_txs: &[Vec<u8>],
        cert: Option<&FinalityCert>,
        snapshot: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        self.commit_block_with(block, encoded_txs, cert, snapshot, false)
    }

    /// [`commit_block`](Self::commit_block) without an fsync of its own:
    /// visible at once, on disk with the next durable commit (or
    /// [`sync`](Self::sync)); a crash before it loses the block, never part
    /// of it. For a store being built that is only used once whole (a
    /// restore, a re-sync), which syncs at its end.
    pub fn commit_block_unsynced(
        &self,
        block: &Block,
        encoded_txs: &[Vec<u8>],
        cert: Option<&FinalityCert>,
        snapshot: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        self.commit_block_with(block, encoded_txs, cert, snapshot, true)
    }

    /// [`commit_block`](Self::commit_block), without an fsync if `relaxed`.
    fn commit_block_with(
        &self,
        block: &Block,
        encoded_txs: &[Vec<u8>],
        cert: Option<&FinalityCert>,
        snapshot: Option<&[u8]>,
        relaxed: bool,
    ) -> Result<(), StoreError> {
        let with = With {
            cert,
            snapshot,
            relaxed,
            ..With::default()
        };
        self.commit_block_and(block, encoded_txs, with, |_| Ok(()))
    }

    /// Makes every earlier commit durable (an empty durable commit).
    pub fn sync(&self) -> Result<(), StoreError> {
        guard::guarded("meta", None, || {
            self.begin_write()?.commit()?;
            Ok(())
        })
    }

    /// [`commit_block`](Self::commit_block) with what `with` gives, and
    /// `extra` writes of the caller's in the same write transaction (all of
    /// it, or none).
    pub(super) fn commit_block_and(
        &self,
        block: &Block,
        encoded_txs: &[Vec<u8>],
        with: With<'_>,
        extra: impl FnOnce(&WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let With {
            exact,
            cert,
            snapshot,
            relaxed,
        } = with;
        let durable = !relaxed;
        guard::guarded("blocks", Some(block.header.height), || {
            let h = &block.header;
            let height = h.height;
            if encoded_txs.len() != block.txs.len() {
                return Err(StoreError::Invalid(format!(
                    "{} encodings for {} transactions",
                    encoded_txs.len(),
                    block.txs.len()
                )));
            }
            let hash = h.hash();
            if let Some(c) = cert
                && (c.height != height || c.block_hash != hash)
            {
                return Err(StoreError::Invalid(
                    "the certificate is for another block".into(),
                ));
            }
            let owned;
            let bytes = match exact {
                Some(b) => {
                    if !b.starts_with(&codec::encode_to_vec(&block.header)) {
                        return Err(StoreError::Invalid(
                            "the bytes do not begin with the block's header".into(),
                        ));
                    }
                    b
                }
                None => {
                    owned = block.to_vec();
                    &owned
                }
            };
            let mut offsets = layout_of(block, bytes, encoded_txs)?;
            let cert_bytes = cert.map(codec::encode_to_vec);
            let (entries, readings) = entries_of(block, encoded_txs);

            let w = self.begin_write_with(durable)?;
            {
                let mut meta = w.open_table(META)?;
                let head = match meta.get(META_HEAD)? {
                    Some(g) => Some(Head::decode(g.value())?),
                    None => None,
                };
                let (expected, prev, txs_before, readings_before) = match head {
                    Some(hd) => (
                        hd.height + 1,
                        hd.hash,
                        hd.tx_count_total,
                        hd.reading_count_total,
                    ),
                    None => (0, Hash32::ZERO, 0, 0),
                };
                if height != expected {
                    return Err(StoreError::Conflict(format!(
                        "block height {height}, but the next height is {expected}"
                    )));
                }
                if h.prev_hash != prev {
                    return Err(StoreError::Conflict(format!(
                        "block {height} does not link to the stored head (previous hash differs)"
                    )));
                }
                let new_head = Head {
                    height,
                    hash,
                    timestamp_ms: h.timestamp_ms,
                    tx_count_total: txs_before + block.txs.len() as u64,
                    reading_count_total: readings_before + readings,
                };
                meta.insert(META_HEAD, new_head.encode().as_slice())?;

                offsets.txs_before = txs_before;
                w.open_table(BLOCKS)?.insert(height, bytes)?;
                w.open_table(TX_OFFSETS)?
                    .insert(height, offsets.encode().as_slice())?;
                if let Some(c) = &cert_bytes {
                    w.open_table(CERTS)?.insert(height, c.as_slice())?;
                }
                put_index_entries(&w, height, txs_before, &entries)?;
                if let Some(s) = snapshot {
                    put_snapshot(&w, height, s)?;
                }
            }
            extra(&w)?;
            w.commit()?;
            Ok(())
        })
    }

    /// Stores (or replaces) the finality certificate of the stored block at
    /// `height`.
    pub fn put_cert(&self, height: u64, cert: &FinalityCert) -> Result<(), StoreError> {
        self.put_cert_and(height, cert, true, |_| Ok(()))
    }

    /// [`put_cert`](Self::put_cert), with `extra` writes of the caller's in
    /// the same write transaction.
    pub(super) fn put_cert_and(
        &self,
        height: u64,
        cert: &FinalityCert,
        durable: bool,
        extra: impl FnOnce(&WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        guard::guarded("certs", Some(height), || {
            if cert.height != height {
                return Err(StoreError::Invalid(format!(
                    "certificate for height {}, stored at {height}",
                    cert.height
                )));
            }
            let bytes = codec::encode_to_vec(cert);
            let w = self.begin_write_with(durable)?;
            {
                let blocks = w.open_table(BLOCKS)?;
                let Some(b) = blocks.get(height)? else {
                    return Err(StoreError::NotFound(format!("no block at height {height}")));
                };
                let hash = header_of(height, b.value(), None)?.hash();
                if hash != cert.block_hash {
                    return Err(StoreError::Invalid(format!(
                        "the certificate is not for the stored block {height}"
                    )));
                }
                drop(b);
                w.open_table(CERTS)?.insert(height, bytes.as_slice())?;
            }
            extra(&w)?;
            w.commit()?;
            Ok(())
        })
    }

    /// The last stored block, if any.
    pub fn head(&self) -> Result<Option<Head>, StoreError> {
        guard::guarded("meta", None, || {
            let r = self.begin_read()?;
            let Some(meta) = open_ro(&r, META)? else {
                return Ok(None);
            };
            meta.get(META_HEAD)?
                .map(|g| Head::decode(g.value()))
                .transpose()
        })
    }

    /// The exact stored bytes of the block at `height`.
    pub fn block_bytes(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        guard::guarded("blocks", Some(height), || {
            let r = self.begin_read()?;
            let Some(t) = open_ro(&r, BLOCKS)? else {
                return Ok(None);
            };
            Ok(t.get(height)?.map(|g| g.value().to_vec()))
        })
    }

    /// The block at `height`, strictly decoded; [`StoreError::Corrupt`]
    /// naming the height if its bytes do not decode or claim another height.
    pub fn block(&self, height: u64) -> Result<Option<Block>, StoreError> {
        self.block_bytes(height)?
            .map(|b| decode_block(height, &b))
            .transpose()
    }

    /// The header of the block at `height` (decodes only the header).
    pub fn header(&self, height: u64) -> Result<Option<BlockHeader>, StoreError> {
        self.with_stored_block(height, |bytes, layout| {
            header_of(height, bytes, layout.as_ref())
        })
    }

    /// How many finality certificates are stored.
    pub fn cert_count(&self) -> Result<u64, StoreError> {
        guard::guarded("certs", None, || {
            let r = self.begin_read()?;
            let Some(t) = open_ro(&r, CERTS)? else {
                return Ok(0);
            };
            Ok(redb::ReadableTableMetadata::len(&t)?)
        })
    }

    /// The finality certificate stored for `height`.
    pub fn cert(&self, height: u64) -> Result<Option<FinalityCert>, StoreError> {
        guard::guarded("certs", Some(height), || {
            let r = self.begin_read()?;
            let Some(t) = open_ro(&r, CERTS)? else {
                return Ok(None);
            };
            t.get(height)?
                .map(|g| decode_cert(height, g.value()))
                .transpose()
        })
    }

    /// Runs `f` on the stored bytes and layout of block `height`.
    pub(super) fn with_block_layout<T>(
        &self,
        height: u64,
        f: impl FnOnce(&[u8], &TxOffsets) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        self.with_stored_block(height, |bytes, layout| {
            let layout =
                layout.ok_or_else(|| StoreError::corrupt(height, "transaction offsets missing"))?;
            f(bytes, &layout)
        })
    }

    /// Runs `f` on the stored bytes of block `height` and its layout (`None`
    /// if its `tx_offsets` entry is missing); `None` if there is no such
    /// block.
    fn with_stored_block<T>(
        &self,
        height: u64,
        f: impl FnOnce(&[u8], Option<TxOffsets>) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        guard::guarded("blocks", Some(height), || {
            let r = self.begin_read()?;
            let (Some(blocks), Some(offs)) = (open_ro(&r, BLOCKS)?, open_ro(&r, TX_OFFSETS)?)
            else {
                return Ok(None);
            };
            let Some(b) = blocks.get(height)? else {
                return Ok(None);
            };
            let bytes = b.value();
            let layout = offs
                .get(height)?
                .map(|o| TxOffsets::decode(height, o.value(), bytes.len()))
                .transpose()?;
            f(bytes, layout).map(Some)
        })
    }
}

/// Writes the index entries of the block at `height` whose transactions
/// (`entries`, in block order) follow the chain's `txs_before` first ones:
/// one `tx_index` entry per transaction in the block's epoch, a `by_stream`
/// and a `by_time` entry per reading. Each table's entries are inserted in
/// key order, so each walks its B-tree's leaves once, left to right.
pub(super) fn put_index_entries(
    w: &WriteTransaction,
    height: u64,
    txs_before: u64,
    entries: &[TxEntry],
) -> Result<(), StoreError> {
    let epoch = epoch_of(txs_before);
    let mut ids: Vec<([u8; 36], u32)> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (key_tx(epoch, &e.id), i as u32))
        .collect();
    // (key, index) order: of identical transactions in one block, the
    // last one's location is kept, as a later block's replaces an earlier
    ids.sort_unstable();
    let mut tx_index = w.open_table(TX_INDEX)?;
    for (k, i) in &ids {
        tx_index.insert(k.as_slice(), (height, *i))?;
    }
    drop(ids);
    let mut streams = Vec::new();
    let mut times = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if let Some((dev, stream, ts, seq)) = e.reading {
            let v = (height, i as u32, stream);
            streams.push((key_stream(&dev, stream, ts, seq), v));
            times.push((key_time(&dev, ts, seq), v));
        }
    }
    streams.sort_unstable();
    times.sort_unstable();
    let mut by_stream = w.open_table(BY_STREAM)?;
    for (k, v) in &streams {
        by_stream.insert(k.as_slice(), *v)?;
    }
    let mut by_time = w.open_table(BY_TIME)?;
    for (k, v) in &times {
        by_time.insert(k.as_slice(), *v)?;
    }
    Ok(())
}

/// The index entries of `block`'s transactions (`encoded`: their exact
/// encodings, in order), and how many of them are readings.
pub(super) fn entries_of(block: &Block, encoded: &[Vec<u8>]) -> (Vec<TxEntry>, u64) {
    let mut readings = 0u64;
    let entries = block
        .txs
        .iter()
        .zip(encoded)
        .map(|(tx, enc)| {
            let reading = match &tx.body.kind {
                TxKind::Reading { stream, .. } => {
                    readings += 1;
                    Some((
                        tx.body.signer,
                        *stream,
                        tx.body.timestamp_ms,
                        tx.body.sequence,
                    ))
                }
                _ => None,
            };
            TxEntry {
                id: Transaction::id_of_encoded(enc),
                reading,
            }
        })
        .collect();
    (entries, readings)
}

/// Computes the layout of `bytes` (the block's encoding) and checks that
/// its transactions are exactly `encoded` (they are the tail of the
/// encoding, in order).
pub(super) fn layout_of(
    block: &Block,
    bytes: &[u8],
    encoded: &[Vec<u8>],
) -> Result<TxOffsets, StoreError> {
    let mismatch = || StoreError::Invalid("the encodings are not the block's transactions".into());
    let total: usize = encoded.iter().map(Vec::len).sum();
    let start = bytes.len().checked_sub(total).ok_or_else(mismatch)?;
    let header_len = codec::encoded_len(&block.header);
    if bytes.len() > u32::MAX as usize || header_len > start {
        return Err(StoreError::Invalid("block too large".into()));
    }
    let mut offsets = Vec::with_capacity(encoded.len() + 1);
    let mut at = start;
    for e in encoded {
        if bytes.get(at..at + e.len()) != Some(e.as_slice()) {
            return Err(mismatch());
        }
        offsets.push(at);
        at += e.len();
    }
    offsets.push(at);
    Ok(TxOffsets {
        // filled in by the write, which knows the head
        txs_before: 0,
        header_len,
        offsets,
    })
}

/// Strictly decodes a stored block, checking that it claims `height`.
pub fn decode_block(height: u64, bytes: &[u8]) -> Result<Block, StoreError> {
    let b = Block::decode(bytes)
        .map_err(|e| StoreError::corrupt(height, format!("block does not decode: {e}")))?;
    if b.header.height != height {
        return Err(StoreError::corrupt(
            height,
            format!(
                "block stored at height {height} claims height {}",
                b.header.height
            ),
        ));
    }
    Ok(b)
}

/// Strictly decodes a stored certificate.
pub fn decode_cert(height: u64, bytes: &[u8]) -> Result<FinalityCert, StoreError> {
    codec::decode_exact(bytes, CERT_MAX_LEN).map_err(|e| {
        StoreError::corrupt(height, format!("finality certificate does not decode: {e}"))
    })
}

/// The header of stored block bytes: from the layout if known, else by
/// decoding the whole block.
pub(super) fn header_of(
    height: u64,
    bytes: &[u8],
    layout: Option<&TxOffsets>,
) -> Result<BlockHeader, StoreError> {
    let h = match layout {
        Some(l) => {
            BlockHeader::decode(bytes.get(..l.header_len).unwrap_or_default()).map_err(|e| {
                StoreError::corrupt(height, format!("block header does not decode: {e}"))
            })?
        }
        None => decode_block(height, bytes)?.header,
    };
    if h.height != height {
        return Err(StoreError::corrupt(
            height,
            format!("block stored at height {height} claims height {}", h.height),
        ));
    }
    Ok(h)
}
