//! The link messages (LinkFrame, DeviceMsg, GatewayMsg) decode totally and
//! canonically.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sensorchain_core::codec::encode_to_vec;
use sensorchain_core::link::{DeviceMsg, GatewayMsg, LinkFrame, decode};

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = decode::<LinkFrame>(data) {
        assert_eq!(encode_to_vec(&f), data);
    }
    if let Ok(m) = decode::<DeviceMsg>(data) {
        assert_eq!(encode_to_vec(&m), data);
    }
    if let Ok(m) = decode::<GatewayMsg>(data) {
        assert_eq!(encode_to_vec(&m), data);
    }
});
