//! SealedPayload decoding is total and canonical; structure checks and
//! opening a decoded payload never panic, and forged payloads never open.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sensorchain_core::codec::{decode_exact, encode_to_vec};
use sensorchain_core::sealed::{MAX_SEALED_ENCODED_LEN, MAX_SEALED_PLAINTEXT, SealedPayload};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = decode_exact::<SealedPayload>(data, MAX_SEALED_ENCODED_LEN) {
        assert_eq!(encode_to_vec(&s), data);
        let _ = s.check_structure();
        let _ = s.plaintext_len();
        let _ = s.recipients().count();
        let mut out = [0u8; MAX_SEALED_PLAINTEXT];
        let reader = sensorchain_fuzz::key(5);
        // nobody but a real sealer can produce a payload that opens
        assert!(s.open(&reader, b"binding", &mut out).is_err());
    }
});
