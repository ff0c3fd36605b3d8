//! Edge cases of the one signature rule, pinned.
//!
//! Expected verdicts are those of RFC 8032 §5.1.7 as OpenSSL and Go's
//! `crypto/ed25519` implement it (cofactorless, `R` compared by encoding,
//! `S < L`). libsodium additionally rejects a small-order `R`; such a
//! signature can only be made by the key's holder (nonce 0 or a torsion
//! nonce), see `small_order_r_with_identity_nonce`.
use super::*;
use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT as B, EIGHT_TORSION};
use std::vec::Vec;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// The secret scalar `a` of an RFC 8032 seed.
fn secret_scalar(seed: &[u8; 32]) -> Scalar {
    let d = Sha512::digest(seed);
    let mut a = [0u8; 32];
    a.copy_from_slice(&d[..32]);
    a[0] &= 248;
    a[31] &= 63;
    a[31] |= 64;
    Scalar::from_bytes_mod_order(a)
}

fn challenge(r: &[u8; 32], a: &[u8; 32], m: &[u8]) -> Scalar {
    let mut hh = Sha512::new();
    hh.update(r);
    hh.update(a);
    hh.update(m);
    Scalar::from_bytes_mod_order_wide(&hh.finalize().into())
}

/// Signs with an arbitrary nonce point `R = r·B + extra` (extra: torsion).
fn sign_with_nonce(seed: &[u8; 32], r: Scalar, extra: EdwardsPoint, m: &[u8]) -> Signature {
    let a = secret_scalar(seed);
    let pk = (a * B).compress().0;
    let big_r = (r * B + extra).compress().0;
    let k = challenge(&big_r, &pk, m);
    let s = r + k * a;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&big_r);
    sig[32..].copy_from_slice(s.as_bytes());
    Signature(sig)
}

// RFC 8032 §7.1 TEST 1, TEST 2, TEST 3.
const RFC8032: [(&str, &str, &str, &str); 3] = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
];

#[test]
fn rfc8032_known_answers() {
    for (sk, pk, msg, sig) in RFC8032 {
        let kp = Keypair::from_seed(h(sk).try_into().unwrap());
        assert_eq!(kp.public().0.to_vec(), h(pk));
        let s = kp.sign(&h(msg));
        assert_eq!(s.0.to_vec(), h(sig));
        let vk = VerifyingKey::from_public(&kp.public()).unwrap();
        assert_eq!(vk.verify(&h(msg), &s), Ok(()));
        assert_eq!(kp.public().verify_device(&h(msg), &s), Ok(()));
    }
}

#[test]
fn rejects_wrong_message_and_key() {
    let kp = Keypair::from_seed([3; 32]);
    let other = Keypair::from_seed([4; 32]);
    let sig = kp.sign(b"m");
    let vk = VerifyingKey::from_public(&kp.public()).unwrap();
    let vk2 = VerifyingKey::from_public(&other.public()).unwrap();
    assert_eq!(vk.verify(b"n", &sig), Err(SignatureError::Mismatch));
    assert_eq!(vk2.verify(b"m", &sig), Err(SignatureError::Mismatch));
    assert_eq!(vk.verify_parts(&[b"a", b"bc"], &kp.sign(b"abc")), Ok(()));
}

#[test]
fn s_not_below_l_rejected() {
    // S + L encodes the same scalar mod L; OpenSSL, Go and libsodium reject it.
    let kp = Keypair::from_seed([5; 32]);
    let sig = kp.sign(b"msg");
    // L = 2^252 + 27742317777372353535851937790883648493, little endian
    let l: [u8; 32] = h("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010")
        .try_into()
        .unwrap();
    let mut s = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let v = sig.0[32 + i] as u16 + l[i] as u16 + carry;
        s[i] = v as u8;
        carry = v >> 8;
    }
    assert_eq!(carry, 0);
    let mut bad = sig;
    bad.0[32..].copy_from_slice(&s);
    let vk = VerifyingKey::from_public(&kp.public()).unwrap();
    assert_eq!(vk.verify(b"msg", &bad), Err(SignatureError::NonCanonicalS));
    // all-ones S
    bad.0[32..].copy_from_slice(&[0xff; 32]);
    assert_eq!(vk.verify(b"msg", &bad), Err(SignatureError::NonCanonicalS));
}

#[test]
fn small_order_component_in_r_rejected_but_cofactored_accepts() {
    // R = r·B + T with T of order 8: the cofactored equation (ed25519-compact's
    // verify) holds, the cofactorless one (OpenSSL, Go, libsodium) does not.
    let seed = [9u8; 32];
    let kp = Keypair::from_seed(seed);
    let vk = VerifyingKey::from_public(&kp.public()).unwrap();
    for t in EIGHT_TORSION.iter().skip(1) {
        let sig = sign_with_nonce(&seed, Scalar::from(12345u64), *t, b"reading");
        assert_eq!(vk.verify(b"reading", &sig), Err(SignatureError::Mismatch));
        assert_eq!(
            kp.public().verify_device(b"reading", &sig),
            Ok(()),
            "cofactored accepts"
        );
    }
    // control: the same construction without torsion verifies everywhere
    let sig = sign_with_nonce(
        &seed,
        Scalar::from(12345u64),
        EdwardsPoint::default(),
        b"reading",
    );
    assert_eq!(vk.verify(b"reading", &sig), Ok(()));
}

#[test]
fn small_order_r_with_identity_nonce() {
    // nonce r = 0 gives R = identity (small order). RFC 8032 / OpenSSL / Go
    // accept (the equation holds exactly); libsodium rejects small-order R.
    // Only the key holder can make it. The ledger follows RFC 8032.
    let seed = [11u8; 32];
    let kp = Keypair::from_seed(seed);
    let vk = VerifyingKey::from_public(&kp.public()).unwrap();
    let sig = sign_with_nonce(&seed, Scalar::ZERO, EdwardsPoint::default(), b"x");
    assert_eq!(&sig.0[..32], &{
        let mut id = [0u8; 32];
        id[0] = 1;
        id
    });
    assert_eq!(vk.verify(b"x", &sig), Ok(()));
}

#[test]
fn non_canonical_r_rejected() {
    // R given as the non-canonical encoding y = p + 1 of the identity, with
    // S chosen so that [S]B - [k]A is the identity: the recomputed R encodes
    // canonically (01 00 .. 00), which differs from the received bytes.
    let seed = [13u8; 32];
    let kp = Keypair::from_seed(seed);
    let vk = VerifyingKey::from_public(&kp.public()).unwrap();
    let mut r = [0xffu8; 32];
    r[0] = 0xee;
    r[31] = 0x7f;
    let a = secret_scalar(&seed);
    let k = challenge(&r, &kp.public().0, b"m");
    let s = k * a;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&r);
    sig[32..].copy_from_slice(s.as_bytes());
    assert_eq!(
        vk.verify(b"m", &Signature(sig)),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn small_order_keys_refused() {
    for t in EIGHT_TORSION.iter() {
        let pk = PublicKey(t.compress().0);
        assert_eq!(
            VerifyingKey::from_public(&pk).unwrap_err(),
            KeyError::SmallOrder,
            "{pk}"
        );
    }
}

#[test]
fn mixed_order_keys_refused() {
    let a = Keypair::from_seed([17; 32]).public();
    let point = CompressedEdwardsY(a.0).decompress().unwrap();
    for t in EIGHT_TORSION.iter().skip(1) {
        let mixed = PublicKey((point + t).compress().0);
        assert_eq!(
            VerifyingKey::from_public(&mixed).unwrap_err(),
            KeyError::MixedOrder
        );
    }
}

#[test]
fn non_canonical_keys_refused() {
    // y + p for every y < 19 that has one, with both sign bits: each is
    // refused (non-canonical first; none is a valid registration).
    let mut refused = 0;
    for y in 0u8..19 {
        for sign in [0u8, 0x80] {
            // p + y = 2^255 - 19 + y, little endian
            let mut e = [0xffu8; 32];
            e[0] = 0xed + y;
            e[31] = 0x7f | sign;
            let r = VerifyingKey::from_public(&PublicKey(e));
            assert!(r.is_err(), "{e:02x?}");
            refused += 1;
        }
    }
    assert_eq!(refused, 38);
    // a valid key with the sign bit flipped on a zero-x point: the identity with sign bit set
    let mut neg_zero = [0u8; 32];
    neg_zero[0] = 1;
    neg_zero[31] = 0x80;
    assert!(VerifyingKey::from_public(&PublicKey(neg_zero)).is_err());
}

#[test]
fn not_on_curve_refused() {
    // y = 2 is not on the curve (x^2 would be a non-square).
    let mut e = [0u8; 32];
    e[0] = 2;
    assert_eq!(
        VerifyingKey::from_public(&PublicKey(e)).unwrap_err(),
        KeyError::NotOnCurve
    );
}

#[test]
fn key_id_and_address_are_stable() {
    let pk = Keypair::from_seed([1; 32]).public();
    let a = pk.address();
    assert_eq!(a.0[0], ADDRESS_VERSION);
    assert!(a.matches(&pk));
    let text = std::format!("{a}");
    assert_eq!(text.len(), 34);
    assert_eq!(text.parse::<Address>(), Ok(a));
    assert_eq!("0OIl".parse::<Address>(), Err(ParseError::BadBase58));
    assert_eq!("S".parse::<Address>(), Err(ParseError::BadLength));
    assert_ne!(pk.key_id(), Keypair::from_seed([2; 32]).public().key_id());
}

#[test]
fn generate_uses_the_rng() {
    struct Fixed(u8);
    impl rand_core::TryRng for Fixed {
        type Error = core::convert::Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            Ok(self.0 as u32)
        }
        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            Ok(self.0 as u64)
        }
        fn try_fill_bytes(&mut self, d: &mut [u8]) -> Result<(), Self::Error> {
            d.fill(self.0);
            Ok(())
        }
    }
    impl rand_core::TryCryptoRng for Fixed {}
    let kp = Keypair::generate(&mut Fixed(7));
    assert_eq!(kp.public(), Keypair::from_seed([7; 32]).public());
}
