//! Transaction::decode is total, and whatever it accepts re-encodes to the
//! exact input (strict, canonical decoding).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sensorchain_core::tx::Transaction;

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = Transaction::decode(data) {
        assert_eq!(tx.to_vec(), data);
    }
});
