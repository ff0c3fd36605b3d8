//! Handshake messages 1–3 decode totally and canonically, at their fixed
//! lengths.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sensorchain_core::codec::{decode_exact, encode_to_vec};
use sensorchain_core::handshake::{
    MESSAGE1_LEN, MESSAGE2_LEN, MESSAGE3_LEN, Message1, Message2, Message3,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = decode_exact::<Message1>(data, MESSAGE1_LEN) {
        assert_eq!(encode_to_vec(&m), data);
        assert_eq!(data.len(), MESSAGE1_LEN);
    }
    if let Ok(m) = decode_exact::<Message2>(data, MESSAGE2_LEN) {
        assert_eq!(encode_to_vec(&m), data);
        assert_eq!(data.len(), MESSAGE2_LEN);
    }
    if let Ok(m) = decode_exact::<Message3>(data, MESSAGE3_LEN) {
        assert_eq!(encode_to_vec(&m), data);
        assert_eq!(data.len(), MESSAGE3_LEN);
    }
});
