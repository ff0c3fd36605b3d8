//! Block::decode is total and canonical; a decoded block can be asked for
//! its hash and Merkle root, and validated against a real chain without
//! panicking (it is refused unless it is byte-identical to a valid block).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sensorchain_core::block::Block;
use sensorchain_core::state::SigCheck;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static CHAIN: OnceLock<sensorchain_core::chain::Chain> = OnceLock::new();
    let chain = CHAIN.get_or_init(sensorchain_fuzz::genesis);
    if let Ok(b) = Block::decode(data) {
        assert_eq!(b.to_vec(), data);
        let _ = b.hash();
        let _ = b.compute_tx_root();
        let mut s = chain.state().clone();
        let _ = s.apply_block(&b, None, SigCheck::Verify);
    }
});
