//! The peer link messages (PeerRequest, PeerAnswer) and the id reader
//! decode totally and canonically.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sensorchain_core::peer::{PeerAnswer, PeerRequest, message_id};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = PeerRequest::decode(data) {
        assert_eq!(r.to_vec(), data);
        assert_eq!(message_id(data), Some(r.id));
    }
    if let Ok(a) = PeerAnswer::decode(data) {
        assert_eq!(a.to_vec(), data);
        assert_eq!(message_id(data), Some(a.id));
    }
    let _ = message_id(data);
});
