use super::*;
use crate::identity::Keypair;

fn chain() -> ChainId {
    ChainId::from_name("test")
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
        tx.verify(&ChainId::from_name("other"), &vk),
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
