//! Sealed payloads: every listed reader opens, nobody else does, every
//! modification and a wrong binding are refused, strict decoding.
mod secure_common;

use proptest::prelude::*;
use secure_common::TestRng;
use sensorchain_core::codec::{decode_exact, encode_to_heapless, encoded_len};
use sensorchain_core::identity::Keypair;
use sensorchain_core::sealed::*;

fn readers() -> Vec<Keypair> {
    (1..=4)
        .map(|i| Keypair::from_seed([0x40 + i; 32]))
        .collect()
}

const BINDING: &[u8] = b"chain|device|stream 3|seq 42";

fn sealed(pt: &[u8], n: usize) -> (SealedPayload, Vec<Keypair>) {
    let rs = readers();
    let pks: Vec<_> = rs.iter().take(n).map(|k| k.public()).collect();
    let p = seal(pt, &pks, BINDING, &mut TestRng::from_u64(1)).unwrap();
    (p, rs)
}

#[test]
fn every_listed_reader_opens() {
    for n in 1..=MAX_RECIPIENTS {
        let (p, rs) = sealed(b"temp 3712 cC", n);
        assert_eq!(p.recipients().count(), n);
        for r in rs.iter().take(n) {
            assert!(p.is_recipient(&r.public().key_id()));
            let mut out = [0u8; MAX_SEALED_PLAINTEXT];
            assert_eq!(p.open(r, BINDING, &mut out).unwrap(), b"temp 3712 cC");
        }
        for r in rs.iter().skip(n) {
            let mut out = [0u8; MAX_SEALED_PLAINTEXT];
            assert_eq!(
                p.open(r, BINDING, &mut out).unwrap_err(),
                OpenError::NotARecipient
            );
        }
    }
}

#[test]
fn empty_and_maximal_plaintexts() {
    let (p, rs) = sealed(b"", 1);
    assert_eq!(p.open(&rs[0], BINDING, &mut []).unwrap(), b"");
    let big = [0xabu8; MAX_SEALED_PLAINTEXT];
    let (p, rs) = sealed(&big, 4);
    let mut out = [0u8; MAX_SEALED_PLAINTEXT];
    assert_eq!(p.open(&rs[3], BINDING, &mut out).unwrap(), &big[..]);
    assert_eq!(
        p.open(&rs[3], BINDING, &mut out[..95]).unwrap_err(),
        OpenError::BufferTooSmall
    );
    let enc: heapless::Vec<u8, MAX_SEALED_ENCODED_LEN> = encode_to_heapless(&p).unwrap();
    assert_eq!(enc.len(), MAX_SEALED_ENCODED_LEN);
    assert_eq!(encoded_len(&p), MAX_SEALED_ENCODED_LEN);
}

#[test]
fn seal_errors() {
    let rs = readers();
    let pk = rs[0].public();
    let mut rng = TestRng::from_u64(2);
    assert_eq!(
        seal(&[0; MAX_SEALED_PLAINTEXT + 1], &[pk], BINDING, &mut rng).unwrap_err(),
        SealError::PlaintextTooLong
    );
    assert_eq!(
        seal(b"x", &[], BINDING, &mut rng).unwrap_err(),
        SealError::RecipientCount
    );
    assert_eq!(
        seal(b"x", &[pk; 5], BINDING, &mut rng).unwrap_err(),
        SealError::RecipientCount
    );
    assert_eq!(
        seal(b"x", &[pk, pk], BINDING, &mut rng).unwrap_err(),
        SealError::DuplicateRecipient
    );
    // small-order / non-point identity keys cannot be recipients
    let mut bad = pk;
    bad.0 = [0; 32];
    bad.0[0] = 1; // the identity point
    assert_eq!(
        seal(b"x", &[bad], BINDING, &mut rng).unwrap_err(),
        SealError::InvalidRecipient
    );
}

#[test]
fn wrong_binding_is_refused() {
    let (p, rs) = sealed(b"hr 72", 2);
    let mut out = [0u8; 16];
    assert_eq!(
        p.open(&rs[0], b"chain|device|stream 3|seq 43", &mut out)
            .unwrap_err(),
        OpenError::Decrypt
    );
    assert_eq!(
        p.open(&rs[0], b"", &mut out).unwrap_err(),
        OpenError::Decrypt
    );
}

#[test]
fn every_modified_byte_is_refused_for_every_reader() {
    let (p, rs) = sealed(b"spo2 97", 3);
    let enc: heapless::Vec<u8, MAX_SEALED_ENCODED_LEN> = encode_to_heapless(&p).unwrap();
    assert_eq!(
        decode_exact::<SealedPayload>(&enc, MAX_SEALED_ENCODED_LEN).unwrap(),
        p
    );
    for i in 0..enc.len() {
        let mut t = enc.to_vec();
        t[i] ^= 0x01;
        let Ok(q) = decode_exact::<SealedPayload>(&t, MAX_SEALED_ENCODED_LEN) else {
            continue;
        };
        for r in rs.iter().take(3) {
            let mut out = [0u8; 16];
            assert!(q.open(r, BINDING, &mut out).is_err(), "byte {i}");
        }
    }
}

#[test]
fn removing_or_reordering_recipients_is_refused() {
    let (p, rs) = sealed(b"bp 120/80", 3);
    let mut q = p.clone();
    q.recipients.pop();
    let mut out = [0u8; 16];
    assert_eq!(
        q.open(&rs[0], BINDING, &mut out).unwrap_err(),
        OpenError::Decrypt
    );
    let mut q = p.clone();
    q.recipients.swap(0, 1);
    assert_eq!(
        q.open(&rs[0], BINDING, &mut out).unwrap_err(),
        OpenError::Decrypt
    );
    // a recipient entry copied under another reader's id does not open
    let mut q = p.clone();
    q.recipients[2].key_id = rs[3].public().key_id();
    assert!(q.open(&rs[3], BINDING, &mut out).is_err());
    // a duplicate entry is structurally invalid
    let mut q = p.clone();
    q.recipients[1] = q.recipients[0];
    assert_eq!(q.check_structure().unwrap_err(), OpenError::Malformed);
    let mut q = p.clone();
    q.version = 2;
    assert_eq!(
        q.open(&rs[0], BINDING, &mut out).unwrap_err(),
        OpenError::Version
    );
}

#[test]
fn strict_decoding() {
    let (p, _) = sealed(b"x", 1);
    let enc: heapless::Vec<u8, MAX_SEALED_ENCODED_LEN> = encode_to_heapless(&p).unwrap();
    let mut trailing = enc.to_vec();
    trailing.push(0);
    assert!(decode_exact::<SealedPayload>(&trailing, MAX_SEALED_ENCODED_LEN + 1).is_err());
    // over capacity recipient count (5) is refused
    let mut over = enc.to_vec();
    over[33] = 5;
    assert!(decode_exact::<SealedPayload>(&over, MAX_SEALED_ENCODED_LEN).is_err());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(p) = decode_exact::<SealedPayload>(&bytes, MAX_SEALED_ENCODED_LEN) {
            let mut out = [0u8; MAX_SEALED_PLAINTEXT];
            for r in readers() {
                prop_assert!(p.open(&r, BINDING, &mut out).is_err());
            }
        }
    }

    #[test]
    fn round_trip(pt in proptest::collection::vec(any::<u8>(), 0..=MAX_SEALED_PLAINTEXT), seed in any::<u64>()) {
        let rs = readers();
        let p = seal(&pt, &[rs[1].public(), rs[2].public()], BINDING, &mut TestRng::from_u64(seed)).unwrap();
        let mut out = [0u8; MAX_SEALED_PLAINTEXT];
        prop_assert_eq!(p.open(&rs[2], BINDING, &mut out).unwrap(), &pt[..]);
    }
}
