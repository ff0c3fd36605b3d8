//! The initiator given arbitrary or mutated message 2: never panics, and
//! completes only with the genuine message 2 of a trusted responder.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sensorchain_core::handshake::{
    HandshakeConfig, Initiator, MESSAGE2_LEN, MESSAGE3_LEN, Responder, ResponderTable,
};
use sensorchain_fuzz::{Devices, FuzzRng, key};

#[derive(Arbitrary, Debug)]
enum Msg2 {
    Raw(Vec<u8>),
    Mutated(Vec<(u8, u8)>),
    /// A genuine message 2 from a responder the device does not trust.
    Rogue,
    Genuine,
}

fuzz_target!(|input: (u64, u64, Msg2, u16)| {
    let (iseed, rseed, msg2, late) = input;
    let cfg = HandshakeConfig::new(sensorchain_fuzz::chain_id());
    let dev = key(2);
    let mut irng = FuzzRng::new(iseed);
    let mut m1 = [0u8; 64];
    let (init, n) = Initiator::start(&cfg, &dev, 0, &mut irng, &mut m1).unwrap();
    let mut table = ResponderTable::<2, 4>::new();
    let mut rrng = FuzzRng::new(rseed);
    let responder_key = if matches!(msg2, Msg2::Rogue) {
        key(8)
    } else {
        key(1)
    };
    let mut m2 = [0u8; MESSAGE2_LEN];
    let (_r, k) = Responder::respond(
        &cfg,
        &responder_key,
        &mut table,
        &Devices,
        &m1[..n],
        0,
        &mut rrng,
        &mut m2,
    )
    .expect("respond");
    let genuine = m2[..k].to_vec();
    let (bytes, must_fail) = match msg2 {
        Msg2::Raw(b) => {
            let same = b == genuine;
            (b, !same)
        }
        Msg2::Mutated(ms) => {
            let mut b = genuine.clone();
            for (p, x) in ms.into_iter().take(8) {
                let i = p as usize % b.len();
                b[i] ^= x;
            }
            let same = b == genuine;
            (b, !same)
        }
        Msg2::Rogue => (genuine, true),
        Msg2::Genuine => (genuine, false),
    };
    let trusted = [key(1).public()];
    let mut m3 = [0u8; MESSAGE3_LEN];
    let now = late as u64;
    let res = init.finish(&dev, &trusted[..], &bytes, now, &mut m3);
    if must_fail {
        assert!(
            res.is_err(),
            "initiator accepted a forged or rogue message 2"
        );
    } else if now <= cfg.timeout_ms {
        assert!(res.is_ok(), "genuine message 2 refused: {:?}", res.err());
    }
});
