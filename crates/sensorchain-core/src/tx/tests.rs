use super::*;
use crate::identity::Keypair;

fn chain() -> ChainId {
    ChainId([0x7e; 32])
}

fn reading_tx(seq: u64) -> (Keypair, Transaction) {
    let kp = Keypair::from_seed([1; 32]);
    let tx = Transaction::sign(
        TxBody::reading(kp.public(), seq, 1000, 2, Vital::SpO2 { percent: 97 }),
        &chain(),
        &kp,
    )
    .unwrap();
    (kp, tx)
}

#[test]
fn sign_verify_roundtrip() {
    let (kp, tx) = reading_tx(5);
    let vk = VerifyingKey::from_public(&kp.public()).unwrap();
    assert_eq!(tx.verify(&chain(), &vk), Ok(()));
    let mut buf = [0u8; TX_MAX_LEN];
    let bytes = tx.encode(&mut buf).unwrap();
    assert_eq!(Transaction::decode(bytes).unwrap(), tx);
    assert_eq!(
        Transaction::verify_encoded(bytes, &chain(), &vk, &tx.signature),
        Ok(())
    );
}

#[test]
fn other_chain_rejected() {
    let (kp, tx) = reading_tx(5);
    let vk = VerifyingKey::from_public(&kp.public()).unwrap();
    assert!(matches!(
        tx.verify(&ChainId([0x0e; 32]), &vk),
        Err(TxError::BadSignature(_))
    ));
}

#[test]
fn other_purpose_rejected() {
    // A signature over the same body bytes made for another purpose (the
    // finality context) does not verify as a transaction.
    let (kp, tx) = reading_tx(5);
    let mut buf = [0u8; TX_MAX_LEN];
    let body = codec::encode_to_slice(&tx.body, &mut buf).unwrap();
    let forged = sign_tagged(&kp, ctx::FINALITY, &chain(), body).unwrap();
    let vk = VerifyingKey::from_public(&kp.public()).unwrap();
    let t2 = Transaction {
        body: tx.body.clone(),
        signature: forged,
    };
    assert!(t2.verify(&chain(), &vk).is_err());
}

#[test]
fn every_bit_flip_is_caught() {
    let (kp, tx) = reading_tx(9);
    let vk = VerifyingKey::from_public(&kp.public()).unwrap();
    let mut buf = [0u8; TX_MAX_LEN];
    let bytes = tx.encode(&mut buf).unwrap().to_vec();
    for i in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[i / 8] ^= 1 << (i % 8);
        let ok = match Transaction::decode(&b) {
            Err(_) => false,
            Ok(t) => {
                // the signer itself may have changed: then its key is another
                match VerifyingKey::from_public(&t.body.signer) {
                    Ok(k) if k == vk => {
                        Transaction::verify_encoded(&b, &chain(), &k, &t.signature).is_ok()
                    }
                    _ => false,
                }
            }
        };
        assert!(!ok, "bit {i} flip not detected");
    }
}

#[test]
fn trailing_and_oversized_rejected() {
    let (_, tx) = reading_tx(1);
    let mut buf = [0u8; TX_MAX_LEN];
    let mut bytes = tx.encode(&mut buf).unwrap().to_vec();
    bytes.push(0);
    assert_eq!(
        Transaction::decode(&bytes),
        Err(TxError::Decode(DecodeError::TrailingBytes))
    );
    assert_eq!(
        Transaction::decode(&[0u8; TX_MAX_LEN + 1]),
        Err(TxError::TooLarge)
    );
}

use std::vec;
use std::vec::Vec;

/// Bodies of every size class the signing path sees: plain and sealed
/// readings (for 1 and 4 readers), administrative transactions.
fn sample_bodies(kp: &Keypair) -> Vec<TxBody> {
    use crate::crypto::X25519Public;
    use crate::identity::KeyId;
    use crate::sealed::{MAX_RECIPIENTS, Recipient, SealedPayload, WrappedKey};
    let me = kp.public();
    let other = Keypair::from_seed([7; 32]).public();
    let sealed = |readers: usize| SealedPayload {
        version: 1,
        ephemeral: X25519Public([9; 32]),
        recipients: (0..readers)
            .map(|i| Recipient {
                key_id: KeyId([i as u8; 8]),
                wrapped: WrappedKey([0xA0 | i as u8; 48]),
            })
            .collect(),
        ciphertext: (0..18u8).collect(),
    };
    let mut bodies = vec![
        TxBody::reading(me, 1, 1000, 0, Vital::HeartRate { bpm: 72 }),
        TxBody::reading(
            me,
            u64::MAX - 1,
            u64::MAX,
            u16::MAX,
            Vital::SpO2 { percent: 97 },
        ),
        TxBody {
            signer: me,
            sequence: 3,
            timestamp_ms: 5,
            kind: TxKind::Consent {
                reader: other,
                granted: true,
            },
        },
        TxBody {
            signer: me,
            sequence: 4,
            timestamp_ms: 6,
            kind: TxKind::AssignDevice {
                device: other,
                patient: me,
            },
        },
    ];
    for readers in [1, MAX_RECIPIENTS] {
        bodies.push(TxBody {
            signer: me,
            sequence: 9,
            timestamp_ms: 1_700_000_000_000,
            kind: TxKind::Reading {
                stream: 2,
                payload: Payload::Sealed(sealed(readers)),
            },
        });
    }
    bodies
}

#[test]
fn one_buffer_signing_signs_the_same_bytes() {
    // The reference: encode the body into its own buffer, then sign the
    // prefixed copy (the two-buffer path `sign` used before).
    let kp = Keypair::from_seed([3; 32]);
    for body in sample_bodies(&kp) {
        let mut b = [0u8; TX_MAX_LEN];
        let bytes = codec::encode_to_slice(&body, &mut b).unwrap();
        let want = sign_tagged(&kp, ctx::TX_SIG, &chain(), bytes).unwrap();
        let tx = Transaction::sign(body.clone(), &chain(), &kp).unwrap();
        assert_eq!(tx.signature, want);
    }
}

#[test]
fn sign_into_writes_the_encoded_transaction() {
    let kp = Keypair::from_seed([3; 32]);
    let vk = VerifyingKey::from_public(&kp.public()).unwrap();
    for body in sample_bodies(&kp) {
        let tx = Transaction::sign(body.clone(), &chain(), &kp).unwrap();
        let mut want = [0u8; TX_MAX_LEN];
        let want = tx.encode(&mut want).unwrap();
        // exactly the room the encoding needs (64 > the 50-byte prefix)
        let mut buf = vec![0xEEu8; want.len()];
        let got = Transaction::sign_into(&body, &chain(), &kp, &mut buf).unwrap();
        assert_eq!(got, want);
        let got = got.to_vec();
        assert_eq!(Transaction::decode(&got).unwrap(), tx);
        assert_eq!(
            Transaction::verify_encoded(&got, &chain(), &vk, &tx.signature),
            Ok(())
        );
        // a byte short: refused, never a truncated transaction
        let mut short = vec![0u8; want.len() - 1];
        assert_eq!(
            Transaction::sign_into(&body, &chain(), &kp, &mut short),
            Err(TxError::TooLarge)
        );
    }
    let body = TxBody::reading(kp.public(), 1, 1, 0, Vital::HeartRate { bpm: 1 });
    assert_eq!(
        Transaction::sign_into(&body, &chain(), &kp, &mut [0u8; 10]),
        Err(TxError::TooLarge)
    );
}

/// `sign_reading_into` writes exactly `sign_into`'s bytes (the hand-written
/// body encoding equals postcard's) for every kind of reading, plain and
/// sealed, at the integers' edges; `Vital::encode_into` equals
/// `encode_to_slice`; any other kind of body is refused.
#[test]
fn sign_reading_into_equals_sign_into() {
    use crate::crypto::X25519Public;
    use crate::identity::KeyId;
    use crate::reading::OPAQUE_MAX;
    use crate::sealed::{MAX_SEALED_CIPHERTEXT, Recipient, SealedPayload, WrappedKey};

    let chain = ChainId([7; 32]);
    let kp = Keypair::from_seed([1; 32]);
    let mut vitals = std::vec::Vec::new();
    for t in [i16::MIN, -1, 0, 1, 63, 64, -64, -65, 3712, i16::MAX] {
        vitals.push(Vital::BodyTemperature { centi_celsius: t });
    }
    for p in [0u8, 97, 127, 128, 255] {
        vitals.push(Vital::SpO2 { percent: p });
    }
    for (s, d) in [(0u16, 0u16), (120, 80), (127, 128), (u16::MAX, 16_384)] {
        vitals.push(Vital::BloodPressure {
            systolic_mmhg: s,
            diastolic_mmhg: d,
        });
    }
    for b in [0u16, 72, 127, 128, u16::MAX] {
        vitals.push(Vital::HeartRate { bpm: b });
    }
    for n in [0usize, 1, 2, 63, OPAQUE_MAX] {
        let data = heapless::Vec::from_slice(&std::vec![0xA5u8; n]).unwrap();
        vitals.push(Vital::Opaque {
            kind: (n as u16) << 9,
            data,
        });
    }
    let mut payloads: std::vec::Vec<Payload> = vitals.iter().cloned().map(Payload::Plain).collect();
    for readers in 1..=4usize {
        for ct in [0usize, 16, 17, 111, MAX_SEALED_CIPHERTEXT] {
            let recipients = (0..readers)
                .map(|i| Recipient {
                    key_id: KeyId([i as u8 + 1; 8]),
                    wrapped: WrappedKey([0x80 | i as u8; 48]),
                })
                .collect();
            payloads.push(Payload::Sealed(SealedPayload {
                version: 1,
                ephemeral: X25519Public([9; 32]),
                recipients,
                ciphertext: heapless::Vec::from_slice(&std::vec![0u8; ct]).unwrap(),
            }));
        }
    }
    let mut buf = [0u8; 1024];
    let mut want = [0u8; 1024];
    for v in &vitals {
        let n = codec::encode_to_slice(v, &mut want).unwrap().len();
        assert_eq!(v.encode_into(&mut buf).unwrap(), &want[..n], "{v:?}");
        assert!(v.encode_into(&mut buf[..n - 1]).is_err());
    }
    for (i, payload) in payloads.into_iter().enumerate() {
        for (sequence, timestamp_ms, stream) in [
            (0u64, 0u64, 0u16),
            (127, 128, 127),
            (128, 1_700_000_000_000, 128),
            (u64::MAX, u64::MAX, u16::MAX),
        ] {
            let body = TxBody {
                signer: kp.public(),
                sequence: sequence ^ i as u64,
                timestamp_ms,
                kind: TxKind::Reading {
                    stream,
                    payload: payload.clone(),
                },
            };
            let want = Transaction::sign_into(&body, &chain, &kp, &mut want)
                .unwrap()
                .to_vec();
            let got = Transaction::sign_reading_into(&body, &chain, &kp, &mut buf).unwrap();
            assert_eq!(&got[..], &want[..], "{body:?}");
            // too small a buffer is an error, not a panic
            assert!(
                Transaction::sign_reading_into(&body, &chain, &kp, &mut buf[..want.len() - 1])
                    .is_err()
            );
        }
    }
    let other = TxBody {
        signer: kp.public(),
        sequence: 1,
        timestamp_ms: 0,
        kind: TxKind::Grant {
            target: kp.public(),
            permissions: crate::permissions::Permissions(1),
        },
    };
    assert!(Transaction::sign_reading_into(&other, &chain, &kp, &mut buf).is_err());
}
