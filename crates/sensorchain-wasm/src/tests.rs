//! The exports' safe functions against the core's own answers, a tampered
//! byte against each check.

use super::*;
use sensorchain_core::block::{BLOCK_VERSION, quorum};
use sensorchain_core::merkle::{inclusion_proof, leaf_hash, root_from_leaf_hashes};
use sensorchain_core::sealed::seal;

const CHAIN: ChainId = ChainId([7; 32]);

fn run(f: fn(&[u8], &mut [u8]) -> i32, input: &[u8]) -> Result<Vec<u8>, i32> {
    let mut out = [0u8; OUT_CAP];
    let n = f(input, &mut out);
    if n < 0 {
        Err(n)
    } else {
        Ok(out[..n as usize].to_vec())
    }
}

fn kp(b: u8) -> Keypair {
    Keypair::from_seed([b; 32])
}

fn header(height: u64, prev: Hash32, tx_root: Hash32) -> BlockHeader {
    BlockHeader {
        version: BLOCK_VERSION,
        chain_id: CHAIN,
        height,
        prev_hash: prev,
        tx_root,
        state_root: Hash32::ZERO,
        timestamp_ms: 1_000 + height,
        proposer: kp(1).public(),
        difficulty: 0,
        nonce: 0,
    }
}

fn hbytes(h: &BlockHeader) -> Vec<u8> {
    let mut b = [0u8; 256];
    h.encode(&mut b).unwrap().to_vec()
}

fn sized(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u16).to_le_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

#[test]
fn public_key_and_login() {
    let me = kp(9);
    assert_eq!(run(public_key, &[9; 32]).unwrap(), me.public().0);
    assert_eq!(run(public_key, &[9; 31]), Err(err::INPUT));
    let c = LoginChallenge {
        chain_id: CHAIN,
        gateway: kp(2).public(),
        identity: me.public(),
        nonce: [5; 32],
        expires_ms: 77,
    };
    let mut input = vec![9; 32];
    input.extend_from_slice(&CHAIN.0);
    input.extend_from_slice(&kp(2).public().0);
    input.extend_from_slice(&[5; 32]);
    input.extend_from_slice(&77u64.to_le_bytes());
    let sig = run(sign_login, &input).unwrap();
    let v = VerifyingKey::from_public(&me.public()).unwrap();
    assert_eq!(c.check(&v, &Signature(sig.try_into().unwrap()), 77), Ok(()));
}

fn signed(k: u8, a: PublicKey, b: [u8; 32]) -> Vec<u8> {
    let mut input = vec![3; 32];
    input.extend_from_slice(&CHAIN.0);
    input.extend_from_slice(&5u64.to_le_bytes());
    input.extend_from_slice(&1234u64.to_le_bytes());
    input.push(k);
    input.extend_from_slice(&a.0);
    input.extend_from_slice(&b);
    run(sign_tx, &input).unwrap()
}

#[test]
fn signs_transactions_the_core_accepts() {
    let target = kp(4).public();
    let bytes = signed(kind::REVOKE, target, [1; 32]);
    let tx = Transaction::decode(&bytes).unwrap();
    assert_eq!(tx.body.signer, kp(3).public());
    assert_eq!(tx.body.sequence, 5);
    assert_eq!(
        tx.body.kind,
        TxKind::Revoke {
            target,
            permissions: Permissions::CONNECT
        }
    );
    let v = VerifyingKey::from_public(&kp(3).public()).unwrap();
    tx.verify(&CHAIN, &v).unwrap();
    let b = signed(kind::CONSENT, target, [1; 32]);
    assert!(matches!(
        Transaction::decode(&b).unwrap().body.kind,
        TxKind::Consent { granted: true, .. }
    ));
    let mut input = vec![3; 32 + 32 + 16];
    input.push(9);
    input.extend_from_slice(&[0; 64]);
    assert_eq!(run(sign_tx, &input), Err(err::UNKNOWN_KIND));
}

fn reading_tx(device: &Keypair, v: Vital) -> Vec<u8> {
    let body = TxBody::reading(device.public(), 3, 99, 2, v);
    Transaction::sign(body, &CHAIN, device).unwrap().to_vec()
}

#[test]
fn verifies_a_reading_and_refuses_a_flipped_byte() {
    let d = kp(6);
    let bytes = reading_tx(&d, Vital::HeartRate { bpm: 72 });
    let mut input = CHAIN.0.to_vec();
    input.extend_from_slice(&d.public().0);
    input.extend_from_slice(&bytes);
    let out = run(verify_tx, &input).unwrap();
    assert_eq!(&out[..32], &leaf_hash(&bytes).0);
    assert_eq!(out[48], 1); // plain
    assert_eq!(u16::from_le_bytes([out[49], out[50]]), 2);
    assert_eq!(out[51], 4); // heart rate
    assert_eq!(i32::from_le_bytes(out[52..56].try_into().unwrap()), 72);
    let last = input.len() - 1;
    input[last] ^= 1;
    assert_eq!(run(verify_tx, &input), Err(err::BAD_SIGNATURE));
    let mut other = CHAIN.0.to_vec();
    other.extend_from_slice(&kp(8).public().0);
    other.extend_from_slice(&bytes);
    assert_eq!(run(verify_tx, &other), Err(err::WRONG_SIGNER));
}

#[test]
fn inclusion_proof_and_tamper() {
    let leaves: Vec<Hash32> = (0u8..5).map(|i| leaf_hash(&[i])).collect();
    let root = root_from_leaf_hashes(&leaves);
    let h = header(3, Hash32([1; 32]), root);
    let path = inclusion_proof(&leaves, 3).unwrap();
    let make = |leaf: Hash32, hash: Hash32| {
        let mut v = leaf.0.to_vec();
        v.extend_from_slice(&3u64.to_le_bytes());
        v.extend_from_slice(&5u64.to_le_bytes());
        v.extend_from_slice(&hash.0);
        v.extend_from_slice(&sized(&hbytes(&h)));
        v.extend_from_slice(&(path.len() as u16).to_le_bytes());
        for p in &path {
            v.extend_from_slice(&p.0);
        }
        v
    };
    let out = run(verify_proof, &make(leaves[3], h.hash())).unwrap();
    assert_eq!(&out[..32], &root.0);
    assert_eq!(
        run(verify_proof, &make(leaves[2], h.hash())),
        Err(err::ROOT_MISMATCH)
    );
    assert_eq!(
        run(verify_proof, &make(leaves[3], Hash32([0; 32]))),
        Err(err::HASH_MISMATCH)
    );
    let mut flipped = make(leaves[3], h.hash());
    let n = flipped.len();
    flipped[n - 1] ^= 0x01;
    assert_eq!(run(verify_proof, &flipped), Err(err::ROOT_MISMATCH));
}

#[test]
fn header_links() {
    let a = header(1, Hash32::ZERO, Hash32::ZERO);
    let b = header(2, a.hash(), Hash32::ZERO);
    let c = header(3, Hash32([9; 32]), Hash32::ZERO);
    let chain = |hs: &[&BlockHeader]| {
        let mut v = (hs.len() as u16).to_le_bytes().to_vec();
        for h in hs {
            v.extend_from_slice(&sized(&hbytes(h)));
        }
        v
    };
    assert_eq!(run(verify_link, &chain(&[&a, &b])).unwrap(), b.hash().0);
    assert_eq!(run(verify_link, &chain(&[&b, &c])), Err(err::BROKEN_LINK));
    let d = run(decode_header, &hbytes(&b)).unwrap();
    assert_eq!(&d[..32], &b.hash().0);
    assert_eq!(u64::from_le_bytes(d[32..40].try_into().unwrap()), 2);
}

#[test]
fn certificates() {
    let vals: Vec<Keypair> = (10u8..15).map(kp).collect();
    let h = header(4, Hash32::ZERO, Hash32::ZERO);
    let make = |signers: &[&Keypair], hash: Hash32| {
        let mut v = sized(&hbytes(&h));
        v.extend_from_slice(&4u64.to_le_bytes());
        v.extend_from_slice(&hash.0);
        v.push(signers.len() as u8);
        for s in signers {
            let vote = FinalityCert::vote(&h, s);
            v.extend_from_slice(&vote.validator.0);
            v.extend_from_slice(&vote.signature.0);
        }
        v.push(vals.len() as u8);
        for k in &vals {
            v.extend_from_slice(&k.public().0);
        }
        v
    };
    let three = [&vals[0], &vals[2], &vals[4]];
    assert_eq!(
        run(verify_cert, &make(&three, h.hash())).unwrap(),
        vec![3, quorum(5) as u8]
    );
    assert_eq!(
        run(verify_cert, &make(&three[..2], h.hash())),
        Err(err::CERT_NO_QUORUM)
    );
    assert_eq!(
        run(verify_cert, &make(&three, Hash32([1; 32]))),
        Err(err::CERT_WRONG_BLOCK)
    );
    let stranger = kp(99);
    assert_eq!(
        run(
            verify_cert,
            &make(&[&vals[0], &vals[1], &stranger], h.hash())
        ),
        Err(err::CERT_UNKNOWN_VALIDATOR)
    );
    let mut bad = make(&three, h.hash());
    let sig_byte = sized(&hbytes(&h)).len() + 8 + 32 + 1 + 8 + 3;
    bad[sig_byte] ^= 1;
    assert_eq!(run(verify_cert, &bad), Err(err::CERT_BAD_SIGNATURE));
}

#[test]
fn sealed_opens_for_readers_only() {
    let (device, patient, doctor, insurer) = (kp(20), kp(21), kp(22), kp(23));
    let binding = sealed_binding(&CHAIN, &device.public(), 1, 3);
    let mut plain = [0u8; 32];
    let v = Vital::SpO2 { percent: 97 };
    let pb = v.encode_into(&mut plain).unwrap().to_vec();
    let mut rng = rand_core_rng();
    let p = seal(
        &pb,
        &[patient.public(), doctor.public()],
        &binding,
        &mut rng,
    )
    .unwrap();
    let body = TxBody {
        signer: device.public(),
        sequence: 3,
        timestamp_ms: 5,
        kind: TxKind::Reading {
            stream: 1,
            payload: Payload::Sealed(p),
        },
    };
    let bytes = Transaction::sign(body, &CHAIN, &device).unwrap().to_vec();
    let with = |seed: u8| {
        let mut v = vec![seed; 32];
        v.extend_from_slice(&CHAIN.0);
        v.extend_from_slice(&bytes);
        v
    };
    let out = run(open_sealed, &with(21)).unwrap();
    assert_eq!(&out[..8], &patient.public().key_id().0);
    assert_eq!(out[8], 2);
    assert_eq!(i32::from_le_bytes(out[9..13].try_into().unwrap()), 97);
    assert!(run(open_sealed, &with(22)).is_ok());
    assert_eq!(run(open_sealed, &with(23)), Err(err::NOT_A_RECIPIENT));
    let _ = insurer;
    let plain_tx = reading_tx(&device, Vital::HeartRate { bpm: 60 });
    let mut v = vec![21; 32];
    v.extend_from_slice(&CHAIN.0);
    v.extend_from_slice(&plain_tx);
    assert_eq!(run(open_sealed, &v), Err(err::NOT_SEALED));
}

/// A deterministic RNG for the test's sealing (counter-mode SHA-256).
fn rand_core_rng() -> TestRng {
    TestRng(0)
}

struct TestRng(u64);

impl rand_core::TryRng for TestRng {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.try_next_u64()? as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        Ok(self.0)
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for b in dst {
            *b = self.try_next_u64()? as u8;
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for TestRng {}

#[test]
fn proposal_signatures() {
    let h = header(5, Hash32::ZERO, Hash32::ZERO);
    let sig = h.sign_proposal(&kp(1));
    let mut v = sized(&hbytes(&h));
    v.extend_from_slice(&sig.0);
    assert_eq!(run(verify_proposal, &v).unwrap(), kp(1).public().0);
    let n = v.len();
    v[n - 1] ^= 1;
    assert_eq!(run(verify_proposal, &v), Err(err::BAD_SIGNATURE));
}
