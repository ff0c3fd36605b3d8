//! BlockHeader::decode is total and canonical; the hash of what it accepts
//! is the hash of the exact input bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sensorchain_core::block::BlockHeader;
use sensorchain_core::codec::encode_to_vec;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = BlockHeader::decode(data) {
        assert_eq!(encode_to_vec(&h), data);
        let _ = h.hash();
        let _ = h.meets_difficulty();
    }
});
