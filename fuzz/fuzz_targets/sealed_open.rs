//! Sealed payloads: a genuine payload opens for each recipient with the
//! right binding and for nobody else; any mutation of its encoding (that
//! still decodes) never opens; opening never panics.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sensorchain_core::codec::{decode_exact, encode_to_vec};
use sensorchain_core::sealed::{MAX_SEALED_ENCODED_LEN, MAX_SEALED_PLAINTEXT, SealedPayload, seal};
use sensorchain_fuzz::{FuzzRng, key};

#[derive(Arbitrary, Debug)]
struct Input {
    plaintext: Vec<u8>,
    recipients: u8,
    seed: u64,
    binding: Vec<u8>,
    mutations: Vec<(u16, u8)>,
    other_binding: Vec<u8>,
}

fuzz_target!(|inp: Input| {
    let pt: Vec<u8> = inp
        .plaintext
        .into_iter()
        .take(MAX_SEALED_PLAINTEXT)
        .collect();
    let n = (inp.recipients % 4) as usize + 1;
    let readers: Vec<_> = (0..n as u8).map(|i| key(5 + i)).collect();
    let pks: Vec<_> = readers.iter().map(|k| k.public()).collect();
    let mut rng = FuzzRng::new(inp.seed);
    let s = seal(&pt, &pks, &inp.binding, &mut rng).expect("seal");
    let mut out = [0u8; MAX_SEALED_PLAINTEXT];
    for r in &readers {
        assert_eq!(s.open(r, &inp.binding, &mut out).expect("open"), &pt[..]);
        if inp.other_binding != inp.binding {
            assert!(s.open(r, &inp.other_binding, &mut out).is_err());
        }
    }
    // someone who is not a recipient
    let stranger = sensorchain_core::identity::Keypair::from_seed([0x99; 32]);
    assert!(s.open(&stranger, &inp.binding, &mut out).is_err());
    let enc = encode_to_vec(&s);
    let mut bad = enc.clone();
    for (pos, x) in inp.mutations.iter().take(8) {
        if bad.is_empty() {
            break;
        }
        let i = *pos as usize % bad.len();
        bad[i] ^= *x;
    }
    if bad != enc
        && let Ok(m) = decode_exact::<SealedPayload>(&bad, MAX_SEALED_ENCODED_LEN)
    {
        for r in &readers {
            assert!(
                m.open(r, &inp.binding, &mut out).is_err(),
                "mutated payload opened"
            );
        }
    }
});
