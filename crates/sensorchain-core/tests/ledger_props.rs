//! Properties of the ledger encodings and rules: round trips for every wire
//! type, decoders that never panic, every single-bit flip in a stored block
//! or transaction detected, and a deterministic state transition.

mod secure_common;

use proptest::prelude::*;
use sensorchain_core::block::{Block, BlockHeader, FinalityCert};
use sensorchain_core::chain::{Chain, validate_blocks};
use sensorchain_core::codec::decode_exact;
use sensorchain_core::hash::{ChainId, Hash32};
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::link::{DeviceMsg, GatewayMsg, LinkFrame};
use sensorchain_core::permissions::{Permissions, Role};
use sensorchain_core::reading::Vital;
use sensorchain_core::state::WorldState;
use sensorchain_core::tx::{GenesisConfig, Params, Payload, Transaction, TxBody, TxKind};

fn vital() -> impl Strategy<Value = Vital> {
    prop_oneof![
        any::<i16>().prop_map(|c| Vital::BodyTemperature { centi_celsius: c }),
        any::<u8>().prop_map(|p| Vital::SpO2 { percent: p }),
        (any::<u16>(), any::<u16>()).prop_map(|(s, d)| Vital::BloodPressure {
            systolic_mmhg: s,
            diastolic_mmhg: d
        }),
        any::<u16>().prop_map(|b| Vital::HeartRate { bpm: b }),
        (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(k, d)| {
            Vital::Opaque {
                kind: k,
                data: heapless::Vec::from_slice(&d).unwrap(),
            }
        }),
    ]
}

fn key() -> impl Strategy<Value = PublicKey> {
    any::<[u8; 32]>().prop_map(PublicKey)
}

fn kind() -> impl Strategy<Value = TxKind> {
    let role = prop::sample::select(Role::ALL.to_vec());
    prop_oneof![
        (any::<u16>(), vital()).prop_map(|(stream, v)| TxKind::Reading {
            stream,
            payload: Payload::Plain(v)
        }),
        (key(), any::<u8>()).prop_map(|(t, p)| TxKind::Grant {
            target: t,
            permissions: Permissions(p)
        }),
        (key(), any::<u8>()).prop_map(|(t, p)| TxKind::Revoke {
            target: t,
            permissions: Permissions(p)
        }),
        (key(), role).prop_map(|(t, r)| TxKind::SetRole { target: t, role: r }),
        (key(), key()).prop_map(|(d, p)| TxKind::AssignDevice {
            device: d,
            patient: p
        }),
        (key(), any::<bool>()).prop_map(|(r, g)| TxKind::Consent {
            reader: r,
            granted: g
        }),
    ]
}

fn tx() -> impl Strategy<Value = Transaction> {
    (any::<[u8; 32]>(), any::<u64>(), any::<u64>(), kind()).prop_map(|(seed, seq, ts, kind)| {
        let kp = Keypair::from_seed(seed);
        let body = TxBody {
            signer: kp.public(),
            sequence: seq,
            timestamp_ms: ts,
            kind,
        };
        Transaction::sign(body, &ChainId([0x70; 32]), &kp).unwrap()
    })
}

fn header() -> impl Strategy<Value = BlockHeader> {
    (
        any::<u16>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        key(),
        any::<u8>(),
        any::<u64>(),
    )
        .prop_map(
            |(version, c, height, h, ts, proposer, difficulty, nonce)| BlockHeader {
                version,
                chain_id: ChainId(c),
                height,
                prev_hash: Hash32(h),
                tx_root: Hash32(h),
                state_root: Hash32(c),
                timestamp_ms: ts,
                proposer,
                difficulty,
                nonce,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn transaction_roundtrip(t in tx()) {
        let b = t.to_vec();
        prop_assert_eq!(Transaction::decode(&b).unwrap(), t);
    }

    #[test]
    fn header_and_block_roundtrip(h in header(), txs in proptest::collection::vec(tx(), 0..4)) {
        let mut buf = [0u8; 256];
        let hb = h.encode(&mut buf).unwrap().to_vec();
        prop_assert_eq!(BlockHeader::decode(&hb).unwrap(), h.clone());
        let block = Block { header: h, proposer_sig: sensorchain_core::identity::Signature([7; 64]), txs };
        prop_assert_eq!(Block::decode(&block.to_vec()).unwrap(), block);
    }

    #[test]
    fn vital_and_link_roundtrip(v in vital(), seq in any::<u64>(), n in any::<u32>(), bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let b = postcard::to_allocvec(&v).unwrap();
        prop_assert_eq!(decode_exact::<Vital>(&b, 1024).unwrap(), v);
        for m in [GatewayMsg::Ack { sequence: seq, tx_id: Hash32([1; 32]), height: seq / 2 }, GatewayMsg::Busy { sequence: seq }, GatewayMsg::Pong(n)] {
            let b = postcard::to_allocvec(&m).unwrap();
            prop_assert_eq!(sensorchain_core::link::decode::<GatewayMsg>(&b).unwrap(), m);
        }
        for m in [DeviceMsg::Submit(&bytes), DeviceMsg::Ping(n)] {
            let b = postcard::to_allocvec(&m).unwrap();
            prop_assert_eq!(sensorchain_core::link::decode::<DeviceMsg>(&b).unwrap(), m);
        }
        let f = LinkFrame::Session(&bytes);
        let b = postcard::to_allocvec(&f).unwrap();
        prop_assert_eq!(sensorchain_core::link::decode::<LinkFrame>(&b).unwrap(), f);
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Transaction::decode(&bytes);
        let _ = BlockHeader::decode(&bytes);
        let _ = Block::decode(&bytes);
        let _ = decode_exact::<FinalityCert>(&bytes, 4096);
        let _ = decode_exact::<Vital>(&bytes, 4096);
        let _ = decode_exact::<GenesisConfig>(&bytes, 4096);
        let _ = sensorchain_core::link::decode::<LinkFrame>(&bytes);
        let _ = sensorchain_core::link::decode::<DeviceMsg>(&bytes);
        let _ = sensorchain_core::link::decode::<GatewayMsg>(&bytes);
        let _ = WorldState::from_snapshot(&bytes);
    }
}

fn small_chain() -> Chain {
    let [admin, gw, dev] = secure_common::vector_keys();
    let m = secure_common::vector_members();
    let mut chain = Chain::genesis(
        &admin,
        GenesisConfig::new("flip", Params::default(), &m).unwrap(),
        1000,
    )
    .unwrap();
    let id = *chain.chain_id();
    for i in 0..2u64 {
        let txs = (0..2)
            .map(|j| {
                let b = TxBody::reading(
                    dev.public(),
                    1 + 2 * i + j,
                    2000,
                    0,
                    Vital::HeartRate { bpm: 70 + j as u16 },
                );
                Transaction::sign(b, &id, &dev).unwrap()
            })
            .collect();
        let b = chain.propose(&gw, txs, 3000 + i).unwrap();
        chain.add_block(b, None).unwrap();
    }
    chain
}

/// Exhaustive: every single-bit flip of every stored block's bytes is
/// detected (it fails to decode, or the chain fails validation).
#[test]
fn every_bit_flip_in_stored_blocks_detected() {
    let chain = small_chain();
    let blocks: Vec<Vec<u8>> = chain.blocks().iter().map(Block::to_vec).collect();
    let mut flips = 0;
    for (bi, bytes) in blocks.iter().enumerate() {
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            flips += 1;
            let Ok(decoded) = Block::decode(&b) else {
                continue;
            };
            let mut all: Vec<Block> = blocks.iter().map(|x| Block::decode(x).unwrap()).collect();
            all[bi] = decoded;
            assert!(
                validate_blocks(&all, &[]).is_err(),
                "flip of bit {bit} in block {bi} undetected"
            );
        }
    }
    assert!(flips > 5000);
}

#[test]
fn apply_is_deterministic_across_replays() {
    let chain = small_chain();
    let a = validate_blocks(chain.blocks(), &[]).unwrap();
    let b = validate_blocks(chain.blocks(), &[]).unwrap();
    assert!(a == b);
    assert_eq!(a.snapshot(), b.snapshot());
    assert!(a == *chain.state());
}
