//! A session receiving arbitrary frames interleaved with genuine ones:
//! never panics, never accepts a frame the peer did not seal, never accepts
//! a genuine frame twice, and a refused frame leaves the state unchanged
//! (the next genuine frame still opens).
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sensorchain_core::session::{FRAME_DATA, Session};

#[derive(Arbitrary, Debug)]
enum Op {
    /// The peer seals this payload; it is delivered (maybe later).
    Seal(Vec<u8>),
    /// Deliver the n-th sealed frame again (a replay) or for the first time.
    Deliver(u8),
    /// Deliver an arbitrary byte string.
    Garbage(Vec<u8>),
    /// Deliver the n-th sealed frame with one bit flipped.
    Flip(u8, u16),
}

fuzz_target!(|ops: Vec<Op>| {
    let mut tx = Session::from_keys([1; 32], [2; 32]);
    let mut rx = Session::from_keys([2; 32], [1; 32]);
    let mut sealed: Vec<(Vec<u8>, Vec<u8>, bool)> = Vec::new();
    for op in ops.into_iter().take(64) {
        match op {
            Op::Seal(p) => {
                let p: Vec<u8> = p.into_iter().take(256).collect();
                let mut out = vec![0u8; p.len() + 64];
                let f = tx.seal(FRAME_DATA, &p, &mut out).expect("seal").to_vec();
                sealed.push((f, p, false));
            }
            Op::Deliver(i) => {
                if sealed.is_empty() {
                    continue;
                }
                let i = i as usize % sealed.len();
                let (f, p, seen) = &mut sealed[i];
                let mut buf = f.clone();
                match rx.open_in_place(&mut buf) {
                    Ok(o) => {
                        assert!(!*seen, "replayed frame accepted");
                        assert_eq!(o.payload, &p[..]);
                        *seen = true;
                    }
                    Err(_) => {}
                }
            }
            Op::Garbage(g) => {
                let mut g = g;
                if let Ok(o) = rx.open_in_place(&mut g) {
                    panic!("forged frame accepted: {:?}", o.counter);
                }
            }
            Op::Flip(i, bit) => {
                if sealed.is_empty() {
                    continue;
                }
                let i = i as usize % sealed.len();
                let mut buf = sealed[i].0.clone();
                let bit = bit as usize % (buf.len() * 8);
                buf[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    rx.open_in_place(&mut buf).is_err(),
                    "flipped frame accepted"
                );
            }
        }
    }
});
