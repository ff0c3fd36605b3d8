//! Consensus equivalence of the Ed25519 signature checks.
//!
//! `tests/data/ed25519_verdicts.json` holds crafted edge cases over real
//! transaction signing messages, with the verdicts of OpenSSL (Python
//! `cryptography`) and libsodium (PyNaCl), written by
//! `tests/data/gen_ed25519_verdicts.py`. For each case this test checks that
//! every path of this crate that decides ledger validity gives one verdict,
//! and that it is OpenSSL's (RFC 8032's cofactorless equation, exact
//! encoding of R, S < L) for every key that passes registration. Keys that
//! fail registration (small order, mixed order, non-canonical, not a point)
//! are refused by the ledger whatever the signature, although OpenSSL and
//! sometimes libsodium accept a signature under them.
//!
//! Where the two libraries disagree (`r_identity`: R is the identity point
//! and the equation holds; OpenSSL and Go accept, libsodium refuses every
//! small-order R) the ledger follows RFC 8032 / OpenSSL / Go and accepts.
//! The paths checked: `VerifyingKey::verify`, `verify_parts`,
//! `Transaction::verify_encoded`, `Transaction::verify`,
//! `WorldState::apply_tx` and `apply_block` with `SigCheck::Verify`,
//! `Chain::add_block` and `validate_blocks` (the replay the audit does).
//! The gateway's ingest is checked in `tests/adversarial.rs`.

use sensorchain_core::block::Block;
use sensorchain_core::chain::{Chain, build_block, validate_blocks};
use sensorchain_core::hash::ChainId;
use sensorchain_core::identity::{Keypair, PublicKey, Signature, VerifyingKey};
use sensorchain_core::permissions::{Permissions, Role};
use sensorchain_core::reading::Vital;
use sensorchain_core::state::{BlockErrorKind, SigCheck, TxRuleError, WorldState};
use sensorchain_core::tx::{GenesisConfig, Member, Params, Transaction, TxBody, TxError, TxKind};
use serde_json::Value;

struct Case {
    name: String,
    pk: PublicKey,
    sequence: u64,
    msg: Vec<u8>,
    sig: Signature,
    openssl: bool,
    libsodium: bool,
}

struct Data {
    chain_name: String,
    chain_id: ChainId,
    genesis_body: Vec<u8>,
    timestamp_ms: u64,
    stream: u16,
    bpm: u16,
    seed: [u8; 32],
    cases: Vec<Case>,
}

fn load() -> Data {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/ed25519_verdicts.json"
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let hx = |v: &Value| hex::decode(v.as_str().unwrap()).unwrap();
    let cases = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            pk: PublicKey(hx(&c["pk"]).try_into().unwrap()),
            sequence: c["sequence"].as_u64().unwrap(),
            msg: hx(&c["msg"]),
            sig: Signature(hx(&c["sig"]).try_into().unwrap()),
            openssl: c["openssl"].as_bool().unwrap(),
            libsodium: c["libsodium"].as_bool().unwrap(),
        })
        .collect();
    Data {
        chain_name: v["chain_name"].as_str().unwrap().to_string(),
        chain_id: ChainId(hx(&v["chain_id"]).try_into().unwrap()),
        genesis_body: hx(&v["genesis_body"]),
        timestamp_ms: v["timestamp_ms"].as_u64().unwrap(),
        stream: v["stream"].as_u64().unwrap() as u16,
        bpm: v["bpm"].as_u64().unwrap() as u16,
        seed: hx(&v["seed"]).try_into().unwrap(),
        cases,
    }
}

fn body(d: &Data, c: &Case) -> TxBody {
    TxBody::reading(
        c.pk,
        c.sequence,
        d.timestamp_ms,
        d.stream,
        Vital::HeartRate { bpm: d.bpm },
    )
}

/// `len(ctx) || ctx || chain_id || body` as the crate signs it.
fn signing_bytes(chain: &ChainId, body: &TxBody) -> Vec<u8> {
    let ctx = b"sensorchain/tx/v1";
    let mut m = vec![ctx.len() as u8];
    m.extend_from_slice(ctx);
    m.extend_from_slice(&chain.0);
    m.extend_from_slice(&sensorchain_core::codec::encode_to_vec(body));
    m
}

fn admin() -> Keypair {
    Keypair::from_seed([1; 32])
}

fn gateway() -> Keypair {
    Keypair::from_seed([2; 32])
}

/// The chain of the vectors: its genesis (admin, gateway, the honest device
/// of `d.seed`, as the generator encodes it) gives the chain id every
/// crafted message is signed under.
fn vector_chain(d: &Data) -> Chain {
    let members = [
        (admin().public(), Role::Admin),
        (gateway().public(), Role::Gateway),
        (Keypair::from_seed(d.seed).public(), Role::Device),
    ]
    .map(|(key, role)| Member::of_role(key, role));
    let cfg = GenesisConfig::new(&d.chain_name, Params::default(), &members).unwrap();
    Chain::genesis(&admin(), cfg, d.timestamp_ms).unwrap()
}

/// The vectors' chain where `device` holds `WRITE`: a member already, or
/// granted it by the admin in block 1 (registration of its key happens
/// there, and refuses the keys it must refuse).
fn chain_with(d: &Data, device: PublicKey) -> Result<Chain, sensorchain_core::state::BlockError> {
    let mut chain = vector_chain(d);
    if chain.state().identity(&device).is_some() {
        return Ok(chain);
    }
    let grant = TxBody {
        signer: admin().public(),
        sequence: 1,
        timestamp_ms: d.timestamp_ms,
        kind: TxKind::Grant {
            target: device,
            permissions: Permissions::CONNECT
                .union(Permissions::SEND)
                .union(Permissions::WRITE),
        },
    };
    let grant = Transaction::sign(grant, chain.chain_id(), &admin()).unwrap();
    let block = chain.propose(&gateway(), vec![grant], d.timestamp_ms)?;
    chain.add_block(block, None)?;
    Ok(chain)
}

/// The generator's genesis body and chain id are the crate's.
#[test]
fn chain_id_is_the_generators() {
    let d = load();
    let chain = vector_chain(&d);
    let g = chain.blocks()[0].txs[0].to_vec();
    assert_eq!(&g[..g.len() - 64], &d.genesis_body[..]);
    assert_eq!(*chain.chain_id(), d.chain_id);
    assert_eq!(ChainId::of_genesis_body(&d.genesis_body), d.chain_id);
}

/// The verdicts of every ledger path for one case; `None` when the key is
/// refused at registration (then no path can even be asked).
fn ledger_paths(d: &Data, c: &Case) -> Option<Vec<(&'static str, bool)>> {
    let chain_id = d.chain_id;
    let vk = VerifyingKey::from_public(&c.pk).ok()?;
    let tx = Transaction {
        body: body(d, c),
        signature: c.sig,
    };
    let encoded = tx.to_vec();
    assert_eq!(Transaction::decode(&encoded).unwrap(), tx, "{}", c.name);
    let mut v = vec![
        ("VerifyingKey::verify", vk.verify(&c.msg, &c.sig).is_ok()),
        (
            "VerifyingKey::verify_parts",
            vk.verify_parts(&[&c.msg[..7], &c.msg[7..]], &c.sig).is_ok(),
        ),
        (
            "Transaction::verify_encoded",
            Transaction::verify_encoded(&encoded, &chain_id, &vk, &c.sig).is_ok(),
        ),
        ("Transaction::verify", tx.verify(&chain_id, &vk).is_ok()),
    ];
    // A refusal by a ledger path must be a signature refusal, nothing else.
    let chain = chain_with(d, c.pk).unwrap();
    let mut state = chain.state().clone();
    let r = state.apply_tx(&tx, &encoded, d.timestamp_ms, SigCheck::Verify);
    if let Err(e) = &r {
        assert!(
            matches!(e, TxRuleError::BadSignature(_)),
            "{}: {e:?}",
            c.name
        );
    }
    v.push(("WorldState::apply_tx", r.is_ok()));

    // A block holding the transaction, built without the signature check
    // (as a malicious proposer would), then validated with it.
    let block: Block = build_block(
        chain.state(),
        &gateway(),
        vec![tx.clone()],
        d.timestamp_ms,
        SigCheck::AlreadyVerified,
    )
    .unwrap();
    let mut state = chain.state().clone();
    let r = state.apply_block(&block, None, SigCheck::Verify);
    if let Err(e) = &r {
        assert_eq!(e.tx_index, Some(0), "{}", c.name);
        assert!(
            matches!(e.kind, BlockErrorKind::Tx(TxRuleError::BadSignature(_))),
            "{}: {e:?}",
            c.name
        );
    }
    v.push(("WorldState::apply_block", r.is_ok()));
    let mut state = chain.state().clone();
    let r = state.apply_block_encoded(
        &block,
        std::slice::from_ref(&encoded),
        None,
        SigCheck::Verify,
    );
    v.push(("WorldState::apply_block_encoded", r.is_ok()));

    let mut chain2 = chain.clone();
    v.push((
        "Chain::add_block",
        chain2.add_block(block.clone(), None).is_ok(),
    ));
    let mut blocks = chain.blocks().to_vec();
    blocks.push(block);
    v.push((
        "validate_blocks (audit replay)",
        validate_blocks(&blocks, &[]).is_ok(),
    ));
    Some(v)
}

#[test]
fn messages_are_the_crates_signing_bytes() {
    let d = load();
    assert!(d.cases.len() >= 15);
    let chain_id = d.chain_id;
    for c in &d.cases {
        assert_eq!(signing_bytes(&chain_id, &body(&d, c)), c.msg, "{}", c.name);
    }
    // the honest case is what Keypair::sign produces
    let kp = Keypair::from_seed(d.seed);
    let valid = d.cases.iter().find(|c| c.name == "valid").unwrap();
    assert_eq!(kp.public(), valid.pk);
    let tx = Transaction::sign(body(&d, valid), &chain_id, &kp).unwrap();
    assert_eq!(tx.signature, valid.sig);
}

#[test]
fn every_ledger_path_gives_the_strict_verdict() {
    let d = load();
    let mut table = String::new();
    for c in &d.cases {
        let expected = match ledger_paths(&d, c) {
            None => {
                // Refused at registration: genesis and a grant refuse the key,
                // and a transaction of an unregistered signer is refused.
                let e = chain_with(&d, c.pk).unwrap_err();
                assert!(
                    matches!(e.kind, BlockErrorKind::Tx(TxRuleError::BadKey(_))),
                    "{}: {e:?}",
                    c.name
                );
                let chain = chain_with(&d, Keypair::from_seed([9; 32]).public()).unwrap();
                let tx = Transaction {
                    body: body(&d, c),
                    signature: c.sig,
                };
                let mut state: WorldState = chain.state().clone();
                assert_eq!(
                    state.apply_tx(&tx, &tx.to_vec(), d.timestamp_ms, SigCheck::Verify),
                    Err(TxRuleError::UnknownSigner),
                    "{}",
                    c.name
                );
                false
            }
            Some(paths) => {
                let first = paths[0].1;
                for (path, verdict) in &paths {
                    assert_eq!(*verdict, first, "{}: {path} disagrees", c.name);
                }
                // For registrable keys the ledger's verdict is OpenSSL's.
                assert_eq!(first, c.openssl, "{}: ledger vs OpenSSL", c.name);
                first
            }
        };
        table.push_str(&format!(
            "{:30} openssl={:5} libsodium={:5} ledger={:5} ed25519-compact={}\n",
            c.name,
            c.openssl,
            c.libsodium,
            expected,
            c.pk.verify_device(&c.msg, &c.sig).is_ok()
        ));
        // The only documented disagreements with libsodium: an identity R
        // (the ledger accepts with OpenSSL/Go) and keys the ledger refuses
        // at registration anyway.
        let registered = VerifyingKey::from_public(&c.pk).is_ok();
        if registered && expected != c.libsodium {
            assert_eq!(c.name, "r_identity", "undocumented disagreement");
        }
    }
    println!("{table}");
}

/// The registration rule refuses exactly the key cases, with the reason.
#[test]
fn registration_refuses_every_crafted_key() {
    use sensorchain_core::identity::KeyError;
    let d = load();
    for c in &d.cases {
        let want = match c.name.as_str() {
            "key_mixed_order" => Some(KeyError::MixedOrder),
            "key_identity" | "key_small_order" => Some(KeyError::SmallOrder),
            "key_identity_noncanonical_y" | "key_identity_negative_zero" => {
                Some(KeyError::NonCanonical)
            }
            "key_not_on_curve" => Some(KeyError::NotOnCurve),
            _ => None,
        };
        assert_eq!(VerifyingKey::from_public(&c.pk).err(), want, "{}", c.name);
    }
}

/// Why ed25519-compact (`PublicKey::verify_device`) must never decide ledger
/// validity: the cofactored equation accepts an R with a small-order
/// component, which every strict verifier refuses.
#[test]
fn device_verifier_is_not_a_ledger_path() {
    let d = load();
    let c = d.cases.iter().find(|c| c.name == "r_mixed_order").unwrap();
    assert!(!c.openssl && !c.libsodium);
    assert!(c.pk.verify_device(&c.msg, &c.sig).is_ok());
    let vk = VerifyingKey::from_public(&c.pk).unwrap();
    assert!(vk.verify(&c.msg, &c.sig).is_err());
}

/// A non-canonical S is named as such (S ≥ L is refused before any curve
/// arithmetic).
#[test]
fn non_canonical_s_is_named() {
    use sensorchain_core::identity::SignatureError;
    let d = load();
    let chain_id = d.chain_id;
    for name in ["s_plus_l", "s_all_ones", "s_equals_l"] {
        let c = d.cases.iter().find(|c| c.name == name).unwrap();
        let vk = VerifyingKey::from_public(&c.pk).unwrap();
        assert_eq!(
            vk.verify(&c.msg, &c.sig),
            Err(SignatureError::NonCanonicalS)
        );
        let tx = Transaction {
            body: body(&d, c),
            signature: c.sig,
        };
        assert_eq!(
            tx.verify(&chain_id, &vk),
            Err(TxError::BadSignature(SignatureError::NonCanonicalS))
        );
    }
}
