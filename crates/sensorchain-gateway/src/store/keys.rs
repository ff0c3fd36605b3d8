//! The big-endian key codecs of the reading indexes (`by_device`,
//! `by_stream`, `by_time`) and the index value of a location.

use sensorchain_core::identity::PublicKey;

use super::TxLocation;

pub(super) fn loc_of(v: (u64, u32)) -> TxLocation {
    TxLocation {
        height: v.0,
        index: v.1,
    }
}

pub(super) fn key_device(device: &PublicKey, ts: u64, seq: u64) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..32].copy_from_slice(&device.0);
    k[32..40].copy_from_slice(&ts.to_be_bytes());
    k[40..].copy_from_slice(&seq.to_be_bytes());
    k
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
