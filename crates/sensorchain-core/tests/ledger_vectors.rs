//! Deterministic ledger vectors in `tests/vectors/ledger.json`: the chain id
//! derivation (genesis body bytes → chain id), a genesis block, a signed reading (signing input, signature, bytes, id), the next
//! block (header bytes, hash, roots, proposer signature) and a finality vote.
//! `tests/vectors/merkle.json` ([`merkle_vectors`]): an RFC 6962 tree of 7
//! leaves with its prefix roots, consistency and inclusion proofs.
//!
//! Check: `cargo test -p sensorchain-core --features std --test ledger_vectors`.
//! Regenerate: the same with `UPDATE_VECTORS=1`.
//!
//! Besides comparing with the file, every value is recomputed here from the
//! byte-level rules of docs/PROTOCOL.md with plain SHA-256 and
//! ed25519-compact, independently of the crate's own helpers.

mod secure_common;

use std::path::{Path, PathBuf};

use sensorchain_core::block::FinalityCert;
use sensorchain_core::chain::Chain;
use sensorchain_core::permissions::Role;
use sensorchain_core::reading::Vital;
use sensorchain_core::tx::{GenesisConfig, Member, Params, Transaction, TxBody};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/ledger.json")
}

/// Compares `v` with the stored vectors at `p` (`what` names them in the
/// failure), or rewrites them when `UPDATE_VECTORS` is set.
fn check_or_update(p: &Path, v: &Value, what: &str) {
    if std::env::var_os("UPDATE_VECTORS").is_some() {
        std::fs::write(p, serde_json::to_string_pretty(v).unwrap() + "\n").unwrap();
    } else {
        let stored: Value = serde_json::from_str(
            &std::fs::read_to_string(p)
                .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_VECTORS=1", p.display())),
        )
        .unwrap();
        assert_eq!(&stored, v, "{what} vectors differ from the implementation");
    }
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
    let [admin, gateway, device] = secure_common::vector_keys();
    let members = secure_common::vector_members();
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
    check_or_update(&path(), &v, "ledger");
}

/// RFC 6962 root of `leaves` (leaf hashes), recomputed with plain SHA-256:
/// split at the largest power of two below `n`.
fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = n.next_power_of_two() / 2;
            node(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

fn node(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    Sha256::new()
        .chain_update([1u8])
        .chain_update(l)
        .chain_update(r)
        .finalize()
        .into()
}

/// RFC 9162 §2.1.4.2 consistency verification, written from the RFC
/// (independently of the crate's `verify_consistency`).
fn rfc9162_consistent(m: u64, n: u64, old: &[u8; 32], new: &[u8; 32], proof: &[[u8; 32]]) -> bool {
    if m == n {
        return proof.is_empty() && old == new;
    }
    if m == 0 || m > n {
        return false;
    }
    let mut path: Vec<[u8; 32]> = proof.to_vec();
    if m.is_power_of_two() {
        path.insert(0, *old);
    }
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut f_n, mut s_n) = (m - 1, n - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node(c, &fr);
            sr = node(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    &fr == old && &sr == new && s_n == 0
}

/// `tests/vectors/merkle.json`: a tree of 7 leaves (the ASCII strings
/// `"leaf 0"` .. `"leaf 6"`), its root and the roots of every prefix,
/// consistency proofs from sizes 3 and 4 to 7 and an inclusion proof, all
/// computed by `sensorchain_core::merkle` and checked here against plain
/// SHA-256 and an RFC 9162 verifier written from the RFC.
#[test]
fn merkle_vectors() {
    use sensorchain_core::merkle::{
        MerkleTree, consistency_proof, leaf_hash, verify_consistency, verify_inclusion,
    };
    let data: Vec<Vec<u8>> = (0..7).map(|i| format!("leaf {i}").into_bytes()).collect();
    let mut tree = MerkleTree::new();
    for d in &data {
        tree.push(d);
    }
    let leaves: Vec<[u8; 32]> = data
        .iter()
        .map(|d| {
            Sha256::new()
                .chain_update([0u8])
                .chain_update(d)
                .finalize()
                .into()
        })
        .collect();
    for (d, l) in data.iter().zip(&leaves) {
        assert_eq!(&leaf_hash(d).0, l);
    }
    let n = data.len() as u64;
    let roots: Vec<[u8; 32]> = (0..=n).map(|m| tree.root_at(m).unwrap().0).collect();
    for (m, r) in roots.iter().enumerate() {
        assert_eq!(r, &mth(&leaves[..m]), "root of {m} leaves");
    }
    let mut consistency = Vec::new();
    for m in [3u64, 4] {
        let proof = tree.consistency_proof(m, n).unwrap();
        assert_eq!(proof, consistency_proof(tree.leaf_hashes(), m).unwrap());
        let p: Vec<[u8; 32]> = proof.iter().map(|h| h.0).collect();
        let (old, new) = (&roots[m as usize], &roots[n as usize]);
        assert!(
            rfc9162_consistent(m, n, old, new, &p),
            "RFC 9162, {m} -> {n}"
        );
        assert!(verify_consistency(m, n, &tree.root_at(m).unwrap(), &tree.root(), &proof).is_ok());
        // a proof for another old size, or with a hash changed, fails
        assert!(!rfc9162_consistent(
            m - 1,
            n,
            &roots[m as usize - 1],
            new,
            &p
        ));
        let mut bad = p.clone();
        bad[0][0] ^= 1;
        assert!(!rfc9162_consistent(m, n, old, new, &bad));
        consistency.push(json!({
            "old_size": m,
            "new_size": n,
            "old_root": hex::encode(old),
            "new_root": hex::encode(new),
            "proof": p.iter().map(hex::encode).collect::<Vec<_>>(),
        }));
    }
    let index = 5u64;
    let incl = tree.inclusion_proof(index, n).unwrap();
    assert!(
        verify_inclusion(
            &tree.leaf_hashes()[index as usize],
            index,
            n,
            &incl,
            &tree.root()
        )
        .is_ok()
    );
    let v = json!({
        "description": "RFC 6962 Merkle tree of 7 leaves (the ASCII strings \"leaf 0\" .. \"leaf 6\"), computed by sensorchain_core::merkle (docs/PROTOCOL.md, Merkle tree). roots[m] is the root of the first m leaves (roots[0] = SHA-256 of the empty string). Consistency proofs as RFC 6962 §2.1.2 (verify as RFC 9162 §2.1.4.2): from 3 leaves (not a power of two: the old root is not in the proof) and from 4 (a power of two: the verifier puts the old root in front).",
        "leaves": data.iter().map(hex::encode).collect::<Vec<_>>(),
        "leaf_hashes": leaves.iter().map(hex::encode).collect::<Vec<_>>(),
        "roots": roots.iter().map(hex::encode).collect::<Vec<_>>(),
        "consistency": consistency,
        "inclusion": {
            "index": index,
            "tree_size": n,
            "leaf_hash": hex::encode(leaves[index as usize]),
            "proof": incl.iter().map(|h| hex::encode(h.0)).collect::<Vec<_>>(),
            "root": hex::encode(roots[n as usize]),
        },
    });
    check_or_update(&path().with_file_name("merkle.json"), &v, "merkle");
}

/// The longest transactions that decode (docs/PROTOCOL.md, "Where the
/// 1,024-byte limit applies"): a genesis with a 32-byte name, 16 members
/// and maximal varints is 713 bytes, a sealed reading for 4 readers with a
/// 96-byte plaintext 492, both under `TX_MAX_LEN`.
#[test]
fn longest_transactions_fit_tx_max_len() {
    use sensorchain_core::crypto::X25519Public;
    use sensorchain_core::identity::{KeyId, PublicKey, Signature};
    use sensorchain_core::permissions::Permissions;
    use sensorchain_core::sealed::{Recipient, SealedPayload, WrappedKey};
    use sensorchain_core::tx::{Payload, TX_MAX_LEN, TxKind};
    let members: Vec<Member> = (0..16u8)
        .map(|i| Member {
            key: PublicKey([i; 32]),
            permissions: Permissions::ALL,
            role: Role::Gateway,
        })
        .collect();
    let params = Params {
        admin_consensus_num: u8::MAX,
        admin_consensus_den: u8::MAX,
        pow_difficulty: u8::MAX,
        max_block_txs: u32::MAX,
        max_future_skew_ms: u64::MAX,
    };
    let cfg = GenesisConfig::new(&"n".repeat(32), params, &members).unwrap();
    let max_body = |kind| TxBody {
        signer: PublicKey([7; 32]),
        sequence: u64::MAX,
        timestamp_ms: u64::MAX,
        kind,
    };
    let tx = |body| {
        Transaction {
            body,
            signature: Signature([1; 64]),
        }
        .to_vec()
    };
    let genesis = tx(max_body(TxKind::Genesis(cfg)));
    assert_eq!(genesis.len(), 713);
    let sealed = SealedPayload {
        version: 1,
        ephemeral: X25519Public([9; 32]),
        recipients: (0..4u8)
            .map(|i| Recipient {
                key_id: KeyId([i; 8]),
                wrapped: WrappedKey([i; 48]),
            })
            .collect(),
        ciphertext: std::iter::repeat_n(5u8, 112).collect(),
    };
    let reading = tx(max_body(TxKind::Reading {
        stream: u16::MAX,
        payload: Payload::Sealed(sealed),
    }));
    assert_eq!(reading.len(), 492);
    assert!(genesis.len() <= TX_MAX_LEN && reading.len() <= TX_MAX_LEN);
    assert!(Transaction::decode(&genesis).is_ok() && Transaction::decode(&reading).is_ok());
}
