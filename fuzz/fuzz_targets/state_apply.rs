//! Block validation and state application with structured inputs: start
//! from a small valid chain, turn arbitrary operations into signed (or
//! mis-signed) transactions, cut a block with `build_block_filtered`, and
//! check that
//! - the block it builds validates on a fresh copy (`apply_block` with
//!   `SigCheck::Verify`) and gives the same state commitment;
//! - mis-signed transactions and transactions signed for another chain are
//!   never included;
//! - the snapshot of the resulting state round-trips;
//! - any byte mutation of the encoded block that still decodes to a
//!   different block is refused, and leaves the state unchanged;
//! - replaying an applied block is refused.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sensorchain_core::block::Block;
use sensorchain_core::chain::build_block_filtered;
use sensorchain_core::hash::ChainId;
use sensorchain_core::identity::Signature;
use sensorchain_core::permissions::{Permissions, Role};
use sensorchain_core::reading::Vital;
use sensorchain_core::state::{SigCheck, WorldState};
use sensorchain_core::tx::{Payload, Transaction, TxBody, TxKind};
use sensorchain_fuzz::{genesis, key};
use std::sync::OnceLock;

#[derive(Arbitrary, Debug)]
enum Kind {
    Reading { stream: u16, vital: u8, value: u16 },
    Grant { target: u8, perms: u8 },
    Revoke { target: u8, perms: u8 },
    SetRole { target: u8, role: u8 },
    Assign { device: u8, patient: u8 },
    Consent { reader: u8, granted: bool },
}

#[derive(Arbitrary, Debug)]
enum Sig {
    Good,
    OtherChain,
    Flipped(u8),
}

#[derive(Arbitrary, Debug)]
struct Op {
    signer: u8,
    sequence: u8,
    ts: u16,
    kind: Kind,
    sig: Sig,
}

#[derive(Arbitrary, Debug)]
struct Input {
    blocks: Vec<Vec<Op>>,
    mutations: Vec<(u16, u8)>,
}

fn vital(k: u8, v: u16) -> Vital {
    match k % 4 {
        0 => Vital::BodyTemperature {
            centi_celsius: v as i16,
        },
        1 => Vital::SpO2 { percent: v as u8 },
        2 => Vital::BloodPressure {
            systolic_mmhg: v,
            diastolic_mmhg: v / 2,
        },
        _ => Vital::HeartRate { bpm: v },
    }
}

fn make(op: &Op, chain: &ChainId, base_ts: u64) -> (Transaction, bool) {
    let signer = key(op.signer);
    let pk = |i: u8| key(i).public();
    let kind = match op.kind {
        Kind::Reading {
            stream,
            vital: k,
            value,
        } => TxKind::Reading {
            stream,
            payload: Payload::Plain(vital(k, value)),
        },
        Kind::Grant { target, perms } => TxKind::Grant {
            target: pk(target),
            permissions: Permissions(perms & 0x3f),
        },
        Kind::Revoke { target, perms } => TxKind::Revoke {
            target: pk(target),
            permissions: Permissions(perms & 0x3f),
        },
        Kind::SetRole { target, role } => TxKind::SetRole {
            target: pk(target),
            role: Role::ALL[role as usize % Role::ALL.len()],
        },
        Kind::Assign { device, patient } => TxKind::AssignDevice {
            device: pk(device),
            patient: pk(patient),
        },
        Kind::Consent { reader, granted } => TxKind::Consent {
            reader: pk(reader),
            granted,
        },
    };
    let body = TxBody {
        signer: signer.public(),
        sequence: op.sequence as u64 + 1,
        timestamp_ms: base_ts + op.ts as u64,
        kind,
    };
    match op.sig {
        Sig::Good => (Transaction::sign(body, chain, &signer).unwrap(), true),
        Sig::OtherChain => {
            let mut other = *chain;
            other.0[0] ^= 1;
            (Transaction::sign(body, &other, &signer).unwrap(), false)
        }
        Sig::Flipped(i) => {
            let mut t = Transaction::sign(body, chain, &signer).unwrap();
            let mut s = t.signature.0;
            s[i as usize % 64] ^= 1;
            t.signature = Signature(s);
            (t, false)
        }
    }
}

fuzz_target!(|inp: Input| {
    static GENESIS: OnceLock<sensorchain_core::chain::Chain> = OnceLock::new();
    let chain = GENESIS.get_or_init(genesis);
    let chain_id = *chain.chain_id();
    let mut state: WorldState = chain.state().clone();
    let proposer = key(1);
    let mut last: Option<Block> = None;
    for (b, ops) in inp.blocks.into_iter().take(4).enumerate() {
        // an earlier block may have revoked the proposer's VALIDATE: a
        // block it builds then is refused (ProposerNotValidator), by design
        if !state.has(&proposer.public(), Permissions::VALIDATE) {
            let block =
                build_block_filtered(&state, &proposer, Vec::new(), 20_000, SigCheck::Verify).0;
            let mut s = state.clone();
            assert!(s.apply_block(&block, None, SigCheck::Verify).is_err());
            break;
        }
        let ts = 10_000 + b as u64 * 1_000;
        let mut txs = Vec::new();
        let mut good = Vec::new();
        for op in ops.iter().take(16) {
            let (t, ok) = make(op, &chain_id, ts);
            txs.push(t);
            good.push(ok);
        }
        let candidates = txs.clone();
        let (block, rejected) =
            build_block_filtered(&state, &proposer, candidates, ts, SigCheck::Verify);
        // every badly signed candidate was left out
        for (i, ok) in good.iter().enumerate() {
            if !ok {
                assert!(
                    rejected.iter().any(|(j, _)| *j == i),
                    "bad signature included"
                );
            }
        }
        assert_eq!(block.txs.len() + rejected.len(), txs.len());
        let before = state.clone();
        let mut fresh = state.clone();
        fresh
            .apply_block(&block, None, SigCheck::Verify)
            .expect("a built block validates");
        // mutations of the encoded block
        let enc = block.to_vec();
        let mut bad = enc.clone();
        for (p, x) in inp.mutations.iter().take(4) {
            let i = *p as usize % bad.len();
            bad[i] ^= *x;
        }
        if bad != enc
            && let Ok(m) = Block::decode(&bad)
        {
            let mut s = state.clone();
            assert!(
                s.apply_block(&m, None, SigCheck::Verify).is_err(),
                "mutated block accepted"
            );
            assert!(s == before, "refused block changed the state");
        }
        state = fresh;
        // the snapshot round-trips
        let snap = state.snapshot();
        let back = WorldState::from_snapshot(&snap).expect("snapshot");
        assert_eq!(back.commitment(), state.commitment());
        // replaying the previous block or this one is refused
        let mut s = state.clone();
        assert!(s.apply_block(&block, None, SigCheck::Verify).is_err());
        if let Some(prev) = &last {
            assert!(s.apply_block(prev, None, SigCheck::Verify).is_err());
        }
        last = Some(block);
    }
});
