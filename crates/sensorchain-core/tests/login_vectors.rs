//! Deterministic vectors of the API login signature and the access log in
//! `tests/vectors/login.json` (docs/PROTOCOL.md, "API login" and "Access
//! log"), on the chain of `tests/vectors/ledger.json`.
//!
//! Check: `cargo test -p sensorchain-core --features std --test login_vectors`.
//! Regenerate: the same with `UPDATE_VECTORS=1`.
//!
//! Every value is also recomputed here from the byte layout with plain
//! SHA-256 and ed25519-compact, independently of the crate's helpers.

mod secure_common;

use std::path::PathBuf;

use sensorchain_core::access_log::{AccessEntry, AccessHead, AccessKind, ChainVerifier, Outcome};
use sensorchain_core::hash::Hash32;
use sensorchain_core::identity::{Keypair, VerifyingKey};
use sensorchain_core::login::LoginChallenge;
use sensorchain_core::tx::{Transaction, TxBody, TxKind};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Appends `v` as an unsigned LEB128 varint (postcard's integers).
fn leb128(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn h(b: impl AsRef<[u8]>) -> String {
    hex::encode(b)
}

fn ed_verify(pk: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
    ed25519_compact::PublicKey::new(*pk)
        .verify(msg, &ed25519_compact::Signature::new(*sig))
        .is_ok()
}

fn prefix(ctx: &str, chain: &[u8; 32]) -> Vec<u8> {
    let mut v = vec![ctx.len() as u8];
    v.extend_from_slice(ctx.as_bytes());
    v.extend_from_slice(chain);
    v
}

#[test]
fn login_and_access_log_vectors() {
    let [_, gateway, device] = secure_common::vector_keys();
    let patient = Keypair::from_seed([4; 32]);
    let chain = secure_common::vector_chain_id();
    let nonce: [u8; 32] = core::array::from_fn(|i| i as u8);
    let c = LoginChallenge {
        chain_id: chain,
        gateway: gateway.public(),
        identity: patient.public(),
        nonce,
        expires_ms: 1_700_000_060_000,
    };
    let sig = c.sign(&patient);
    // independently: the signed bytes and the signature
    let mut signed = prefix("sensorchain/login/v1", &chain.0);
    signed.extend_from_slice(&gateway.public().0);
    signed.extend_from_slice(&patient.public().0);
    signed.extend_from_slice(&nonce);
    signed.extend_from_slice(&1_700_000_060_000u64.to_le_bytes());
    assert_eq!(signed, c.signed_bytes());
    assert!(ed_verify(&patient.public().0, &signed, &sig.0));
    let vk = VerifyingKey::from_public(&patient.public()).unwrap();
    c.check(&vk, &sig, 1_700_000_000_000).unwrap();

    // two access-log entries and the signed head
    let entries = [
        AccessEntry {
            seq: 0,
            time_ms: 1_700_000_001_000,
            reader: Keypair::from_seed([5; 32]).public(),
            patient: patient.public(),
            device: device.public(),
            kind: AccessKind::Readings,
            outcome: Outcome::Allowed,
            stream: None,
            from: 0,
            to: u64::MAX,
            subject: Hash32::ZERO,
        },
        AccessEntry {
            seq: 1,
            time_ms: 1_700_000_002_000,
            reader: Keypair::from_seed([6; 32]).public(),
            patient: patient.public(),
            device: device.public(),
            kind: AccessKind::Readings,
            outcome: Outcome::Refused,
            stream: Some(2),
            from: 1_700_000_000_000,
            to: 1_700_000_001_000,
            subject: Hash32::ZERO,
        },
    ];
    let mut v = ChainVerifier::new(chain, gateway.public());
    let mut prev = [0u8; 32];
    let mut rows = Vec::new();
    for e in &entries {
        let bytes = e.encode();
        v.push(&bytes).unwrap();
        let mut hs = Sha256::new();
        hs.update(prefix("sensorchain/access-log/v1", &chain.0));
        hs.update(gateway.public().0);
        hs.update(prev);
        hs.update(bytes);
        prev = hs.finalize().into();
        assert_eq!(prev, v.hash().0);
        rows.push(json!({ "entry": h(bytes), "hash": h(prev) }));
    }
    let head = AccessHead {
        count: 2,
        hash: v.hash(),
        time_ms: 1_700_000_003_000,
    };
    let head_sig = head.sign(&chain, &gateway);
    let mut head_signed = prefix("sensorchain/access-head/v1", &chain.0);
    head_signed.extend_from_slice(&gateway.public().0);
    head_signed.extend_from_slice(&2u64.to_le_bytes());
    head_signed.extend_from_slice(&prev);
    head_signed.extend_from_slice(&1_700_000_003_000u64.to_le_bytes());
    assert!(ed_verify(&gateway.public().0, &head_signed, &head_sig.0));

    // the head anchored on the chain: an AccessAnchor transaction (TxKind
    // 7), its body bytes written out by hand
    let anchor = Transaction::sign(
        TxBody {
            signer: gateway.public(),
            sequence: 1,
            timestamp_ms: 1_700_000_004_000,
            kind: TxKind::AccessAnchor {
                count: 2,
                hash: v.hash(),
            },
        },
        &chain,
        &gateway,
    )
    .unwrap();
    let anchor_bytes = anchor.to_vec();
    let mut body = gateway.public().0.to_vec();
    body.push(0x01); // sequence
    leb128(&mut body, 1_700_000_004_000);
    body.push(0x07); // TxKind::AccessAnchor
    body.push(0x02); // count
    body.extend_from_slice(&prev);
    assert_eq!(&anchor_bytes[..anchor_bytes.len() - 64], &body[..]);
    assert_eq!(Transaction::decode(&anchor_bytes).unwrap(), anchor);

    let out: Value = json!({
        "chain_id": h(chain.0),
        "login": {
            "gateway": h(gateway.public().0),
            "identity_seed": h(patient.seed()),
            "identity": h(patient.public().0),
            "nonce": h(nonce),
            "expires_ms": 1_700_000_060_000u64,
            "signed_bytes": h(&signed),
            "signature": h(sig.0),
        },
        "access_log": {
            "gateway": h(gateway.public().0),
            "entries": rows,
            "head": { "count": 2, "hash": h(prev), "time_ms": 1_700_000_003_000u64 },
            "head_signed_bytes": h(&head_signed),
            "head_signature": h(head_sig.0),
            "anchor": {
                "description": "the head above anchored on the chain: TxKind 7 AccessAnchor { count: 2, hash }, signed by the gateway (sequence 1, timestamp_ms 1700000004000)",
                "body": h(&body),
                "transaction": h(&anchor_bytes),
            },
        }
    });
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/login.json");
    if std::env::var_os("UPDATE_VECTORS").is_some() {
        std::fs::write(&p, serde_json::to_string_pretty(&out).unwrap() + "\n").unwrap();
    } else {
        let stored: Value = serde_json::from_str(
            &std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_VECTORS=1", p.display())),
        )
        .unwrap();
        assert_eq!(stored, out, "login vectors differ from the implementation");
    }
}
