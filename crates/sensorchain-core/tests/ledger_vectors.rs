//! Deterministic ledger vectors in `tests/vectors/ledger.json`: the chain id
//! derivation (genesis body bytes → chain id), a genesis block, a signed reading (signing input, signature, bytes, id), the next
//! block (header bytes, hash, roots, proposer signature) and a finality vote.
//!
//! Check: `cargo test -p sensorchain-core --features std --test ledger_vectors`.
//! Regenerate: the same with `UPDATE_VECTORS=1`.
//!
//! Besides comparing with the file, every value is recomputed here from the
//! byte-level rules of docs/PROTOCOL.md with plain SHA-256 and
//! ed25519-compact, independently of the crate's own helpers.

use std::path::PathBuf;

use sensorchain_core::block::FinalityCert;
use sensorchain_core::chain::Chain;
use sensorchain_core::identity::Keypair;
use sensorchain_core::permissions::Role;
use sensorchain_core::reading::Vital;
use sensorchain_core::tx::{GenesisConfig, Member, Params, Transaction, TxBody};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/ledger.json")
}

fn tagged(ctx: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([ctx.len() as u8]);
    h.update(ctx.as_bytes());
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn signing_input(ctx: &str, chain: &[u8; 32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![ctx.len() as u8];
    v.extend_from_slice(ctx.as_bytes());
    v.extend_from_slice(chain);
    v.extend_from_slice(data);
    v
}

fn ed_verify(pk: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
    ed25519_compact::PublicKey::new(*pk)
        .verify(msg, &ed25519_compact::Signature::new(*sig))
        .is_ok()
}

#[test]
fn ledger_vectors() {
    let admin = Keypair::from_seed([1; 32]);
    let gateway = Keypair::from_seed([2; 32]);
    let device = Keypair::from_seed([3; 32]);
    let members = [
        Member {
            key: admin.public(),
            permissions: Role::Admin.default_permissions(),
            role: Role::Admin,
        },
        Member {
            key: gateway.public(),
            permissions: Role::Gateway.default_permissions(),
            role: Role::Gateway,
        },
        Member {
            key: device.public(),
            permissions: Role::Device.default_permissions(),
            role: Role::Device,
        },
    ];
    let cfg = GenesisConfig::new("ward-7", Params::default(), &members).unwrap();
    let mut chain = Chain::genesis(&admin, cfg, 1_700_000_000_000).unwrap();
    let chain_id = chain.chain_id().0;
    let genesis = chain.blocks()[0].clone();
    // the chain id: the tagged hash of the genesis transaction's exact body
    // bytes (its encoding without the 64 signature bytes)
    let genesis_tx = genesis.txs[0].to_vec();
    let genesis_body = &genesis_tx[..genesis_tx.len() - 64];
    assert_eq!(
        genesis_body,
        &postcard::to_allocvec(&genesis.txs[0].body).unwrap()[..]
    );
    assert_eq!(chain_id, tagged("sensorchain/chain-id/v2", &[genesis_body]));
    assert_eq!(genesis.header.chain_id.0, chain_id);
    assert!(ed_verify(
        &admin.public().0,
        &signing_input("sensorchain/tx/v1", &chain_id, genesis_body),
        &genesis.txs[0].signature.0
    ));
    // the same name, creator and members one millisecond later: another chain
    let later = Chain::genesis(
        &admin,
        GenesisConfig::new("ward-7", Params::default(), &members).unwrap(),
        1_700_000_000_001,
    )
    .unwrap();
    let later_tx = later.blocks()[0].txs[0].to_vec();
    let later_body = &later_tx[..later_tx.len() - 64];
    assert_ne!(later.chain_id().0, chain_id);
    assert_eq!(
        later.chain_id().0,
        tagged("sensorchain/chain-id/v2", &[later_body])
    );

    // a signed reading
    let body = TxBody::reading(
        device.public(),
        1,
        1_700_000_001_000,
        0,
        Vital::HeartRate { bpm: 72 },
    );
    let tx = Transaction::sign(body.clone(), chain.chain_id(), &device).unwrap();
    let body_bytes = postcard::to_allocvec(&body).unwrap();
    let tx_bytes = tx.to_vec();
    assert_eq!(&tx_bytes[..body_bytes.len()], &body_bytes[..]);
    assert_eq!(&tx_bytes[body_bytes.len()..], &tx.signature.0[..]);
    let input = signing_input("sensorchain/tx/v1", &chain_id, &body_bytes);
    assert!(ed_verify(&device.public().0, &input, &tx.signature.0));
    let tx_id: [u8; 32] = Sha256::new()
        .chain_update([0u8])
        .chain_update(&tx_bytes)
        .finalize()
        .into();
    assert_eq!(Transaction::id_of_encoded(&tx_bytes).0, tx_id);

    // the next block
    let block = chain
        .propose(&gateway, vec![tx.clone()], 1_700_000_002_000)
        .unwrap();
    let header_bytes = postcard::to_allocvec(&block.header).unwrap();
    let hash = tagged("sensorchain/block/v1", &[&header_bytes]);
    assert_eq!(block.hash().0, hash);
    assert_eq!(
        block.header.tx_root.0, tx_id,
        "one leaf: the root is its leaf hash"
    );
    assert!(ed_verify(
        &gateway.public().0,
        &signing_input("sensorchain/block-proposal/v1", &chain_id, &hash),
        &block.proposer_sig.0
    ));
    let vote = FinalityCert::vote(&block.header, &gateway);
    let mut vote_data = block.header.height.to_le_bytes().to_vec();
    vote_data.extend_from_slice(&hash);
    assert!(ed_verify(
        &gateway.public().0,
        &signing_input("sensorchain/finality/v1", &chain_id, &vote_data),
        &vote.signature.0
    ));
    chain.add_block(block.clone(), None).unwrap();

    fn h(b: impl AsRef<[u8]>) -> String {
        hex::encode(b)
    }
    let v = json!({
        "description": "sensorchain ledger vectors; seeds: admin 01*32, gateway 02*32, device 03*32; see docs/PROTOCOL.md",
        "chain_name": "ward-7",
        "chain_id": h(chain_id),
        "chain_id_derivation": {
            "context": "sensorchain/chain-id/v2",
            "genesis_body": h(genesis_body),
            "chain_id": h(chain_id),
            "same_name_1ms_later_genesis_body": h(later_body),
            "same_name_1ms_later_chain_id": h(later.chain_id().0),
        },
        "genesis": {
            "block": h(genesis.to_vec()),
            "hash": h(genesis.hash().0),
        },
        "reading": {
            "body": h(&body_bytes),
            "signing_input": h(&input),
            "signature": h(tx.signature.0),
            "transaction": h(&tx_bytes),
            "tx_id": h(tx_id),
        },
        "block1": {
            "header": h(&header_bytes),
            "hash": h(hash),
            "tx_root": h(block.header.tx_root.0),
            "state_root": h(block.header.state_root.0),
            "proposer_sig": h(block.proposer_sig.0),
            "block": h(block.to_vec()),
        },
        "finality_vote": {
            "validator_key_id": h(vote.validator.0),
            "signed_data": h(&vote_data),
            "signature": h(vote.signature.0),
        },
        "state_root_after_block1": h(chain.state().commitment().0),
    });
    let p = path();
    if std::env::var_os("UPDATE_VECTORS").is_some() {
        std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
    } else {
        let stored: Value = serde_json::from_str(
            &std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_VECTORS=1", p.display())),
        )
        .unwrap();
        assert_eq!(stored, v, "ledger vectors differ from the implementation");
    }
}
