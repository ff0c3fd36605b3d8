//! The responder driven by arbitrary message sequences, mixed with genuine
//! initiators: never panics, the half-open table never leaks a slot, only a
//! genuine message 3 completes a handshake, and a replayed message 1 is
//! refused.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sensorchain_core::handshake::{
    HandshakeConfig, Initiator, MESSAGE2_LEN, MESSAGE3_LEN, Responder, ResponderTable,
};
use sensorchain_fuzz::{Devices, FuzzRng, key};

#[derive(Arbitrary, Debug)]
enum Step {
    /// A genuine device (2..=4, or the stranger 8) starts.
    Genuine { device: u8, seed: u64 },
    /// Arbitrary message 1.
    RawHello(Vec<u8>),
    /// Replay the message 1 of the n-th genuine start.
    ReplayHello(u8),
    /// Answer the n-th pending responder with an arbitrary message 3.
    RawProof(u8, Vec<u8>),
    /// Answer the n-th pending responder with the genuine message 3 (if its
    /// initiator is known), maybe with a flipped byte.
    Proof(u8, Option<(u8, u8)>),
    /// Advance time.
    Tick(u16),
}

fuzz_target!(|steps: Vec<Step>| {
    let cfg = HandshakeConfig::new(sensorchain_fuzz::chain_id());
    let gw = key(1);
    let mut table = ResponderTable::<4, 16>::new();
    let mut rng = FuzzRng::new(7);
    let mut now = 0u64;
    let mut hellos: Vec<Vec<u8>> = Vec::new();
    // (responder, its genuine initiator and message 2, if any)
    let mut pending: Vec<(Responder, Option<(Initiator, u8, Vec<u8>)>)> = Vec::new();
    for step in steps.into_iter().take(32) {
        match step {
            Step::Genuine { device, seed } => {
                let d = [2u8, 3, 4, 8][device as usize % 4];
                let mut irng = FuzzRng::new(seed);
                let mut m1 = [0u8; 64];
                let (init, n) = Initiator::start(&cfg, &key(d), now, &mut irng, &mut m1).unwrap();
                let mut m2 = [0u8; MESSAGE2_LEN];
                match Responder::respond(
                    &cfg,
                    &gw,
                    &mut table,
                    &Devices,
                    &m1[..n],
                    now,
                    &mut rng,
                    &mut m2,
                ) {
                    Ok((r, k)) => {
                        assert!(d != 8, "stranger admitted");
                        // Only an admitted hello is remembered (one refused as
                        // busy was never answered: resending it is a retry),
                        // and the cache holds the last 16 (the table's size).
                        hellos.push(m1[..n].to_vec());
                        if hellos.len() > 16 {
                            hellos.remove(0);
                        }
                        pending.push((r, Some((init, d, m2[..k].to_vec()))));
                    }
                    Err(_) => {}
                }
            }
            Step::RawHello(b) => {
                let mut m2 = [0u8; MESSAGE2_LEN];
                if let Ok((r, _)) =
                    Responder::respond(&cfg, &gw, &mut table, &Devices, &b, now, &mut rng, &mut m2)
                {
                    pending.push((r, None));
                }
            }
            Step::ReplayHello(i) => {
                if hellos.is_empty() {
                    continue;
                }
                let h = hellos[i as usize % hellos.len()].clone();
                let mut m2 = [0u8; MESSAGE2_LEN];
                let r =
                    Responder::respond(&cfg, &gw, &mut table, &Devices, &h, now, &mut rng, &mut m2);
                assert!(r.is_err(), "replayed message 1 accepted");
            }
            Step::RawProof(i, b) => {
                if pending.is_empty() {
                    continue;
                }
                let (r, _) = pending.remove(i as usize % pending.len());
                assert!(
                    r.finish(&mut table, &b, now).is_err(),
                    "forged message 3 accepted"
                );
            }
            Step::Proof(i, flip) => {
                if pending.is_empty() {
                    continue;
                }
                let (r, genuine) = pending.remove(i as usize % pending.len());
                let Some((init, d, m2)) = genuine else {
                    r.abort(&mut table);
                    continue;
                };
                let mut m3 = [0u8; MESSAGE3_LEN];
                let trusted = [gw.public()];
                let Ok((_est, n)) = init.finish(&key(d), &trusted[..], &m2, now, &mut m3) else {
                    r.abort(&mut table);
                    continue;
                };
                let mut m3 = m3[..n].to_vec();
                let flipped = match flip {
                    Some((pos, x)) if x != 0 => {
                        let p = pos as usize % m3.len();
                        m3[p] ^= x;
                        true
                    }
                    _ => false,
                };
                let res = r.finish(&mut table, &m3, now);
                if flipped {
                    assert!(res.is_err(), "flipped message 3 accepted");
                }
            }
            Step::Tick(ms) => {
                now += ms as u64 * 10;
                table.reclaim_expired(now, cfg.timeout_ms);
            }
        }
        assert!(table.half_open() <= 4);
        assert!(table.half_open() <= pending.len());
    }
    for (r, _) in pending {
        r.abort(&mut table);
    }
    assert_eq!(table.half_open(), 0, "half-open slot leaked");
});
