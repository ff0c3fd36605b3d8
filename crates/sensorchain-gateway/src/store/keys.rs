//! The big-endian key codecs of the transaction index (`tx_index`, by
//! epoch) and the reading indexes (`by_stream`, `by_time`), and the index
//! value of a location.

use sensorchain_core::hash::Hash32;
use sensorchain_core::identity::PublicKey;

use super::TxLocation;

/// log2 of the transactions per transaction-index epoch: 32,768. Inserts
/// only touch the current epoch's key range, a B-tree subtree of at most
/// that many entries (≈ 600 leaves), so their cost does not grow with the
/// chain; a lookup by id goes through the epochs newest first (305 at 10M
/// transactions; closed ones behind a Bloom filter, `filters.rs`). The
/// crate's unit tests use epochs of 16 transactions, so that every test
/// chain spans several.
pub(super) const EPOCH_BITS: u32 = if cfg!(test) { 4 } else { 15 };

/// The transaction-index epoch of a block whose first transaction is the
/// chain's transaction number `txs_before` (from 0): every transaction of a
/// block is in its block's epoch, fixed by the stored chain alone.
pub(super) fn epoch_of(txs_before: u64) -> u32 {
    // 2^32 epochs of 2^17 transactions: 5.6e14 transactions
    u32::try_from(txs_before >> EPOCH_BITS).unwrap_or(u32::MAX)
}

/// The transaction index's key: epoch `u32 BE` ‖ transaction id.
pub(super) fn key_tx(epoch: u32, id: &Hash32) -> [u8; 36] {
    let mut k = [0u8; 36];
    k[..4].copy_from_slice(&epoch.to_be_bytes());
    k[4..].copy_from_slice(&id.0);
    k
}

pub(super) fn loc_of(v: (u64, u32)) -> TxLocation {
    TxLocation {
        height: v.0,
        index: v.1,
    }
}

pub(super) fn key_stream(device: &PublicKey, stream: u16, ts: u64, seq: u64) -> [u8; 50] {
    let mut k = [0u8; 50];
    k[..32].copy_from_slice(&device.0);
    k[32..34].copy_from_slice(&stream.to_be_bytes());
    k[34..42].copy_from_slice(&ts.to_be_bytes());
    k[42..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn key_time(device: &PublicKey, ts: u64, seq: u64) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..8].copy_from_slice(&ts.to_be_bytes());
    k[8..40].copy_from_slice(&device.0);
    k[40..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

pub(super) fn pk_of(b: &[u8]) -> PublicKey {
    let mut a = [0u8; 32];
    a.copy_from_slice(&b[..32]);
    PublicKey(a)
}
