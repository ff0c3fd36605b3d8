//! FinalityCert and FinalityVote decoding is total and canonical; verifying
//! a decoded certificate never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sensorchain_core::block::{FinalityCert, FinalityVote};
use sensorchain_core::codec::{decode_exact, encode_to_vec};
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static CHAIN: OnceLock<sensorchain_core::chain::Chain> = OnceLock::new();
    let chain = CHAIN.get_or_init(sensorchain_fuzz::genesis);
    if let Ok(c) = decode_exact::<FinalityCert>(data, 4096) {
        assert_eq!(encode_to_vec(&c), data);
        let header = &chain.blocks()[0].header;
        let _ = c.verify(header, &chain.state().validators());
    }
    if let Ok(v) = decode_exact::<FinalityVote>(data, 128) {
        assert_eq!(encode_to_vec(&v), data);
    }
});
