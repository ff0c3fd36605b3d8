//! The JSON shapes of the API's answers: identities, vitals, payloads,
//! transactions, headers, certificates, locations.

use serde_json::{Value, json};

use sensorchain_core::block::{Block, BlockHeader, FinalityCert, HEADER_MAX_LEN};
use sensorchain_core::hash::Hash32;
use sensorchain_core::identity::PublicKey;
use sensorchain_core::permissions::Permissions;
use sensorchain_core::reading::Vital;
use sensorchain_core::state::{IdentityRecord, WorldState};
use sensorchain_core::tx::{Payload, Transaction, TxKind};

use crate::store::TxLocation;

pub(super) fn hex(b: &[u8]) -> String {
    ::hex::encode(b)
}

pub(super) fn key_hex(pk: &PublicKey) -> String {
    hex(&pk.0)
}

pub(super) fn perm_names(p: Permissions) -> Vec<String> {
    const NAMES: [&str; 7] = [
        "connect", "send", "receive", "write", "admin", "validate", "audit",
    ];
    (0..7)
        .filter(|i| p.0 & (1 << i) != 0)
        .map(|i| NAMES[i].to_string())
        .collect()
}

pub(super) fn identity_json(pk: &PublicKey, rec: &IdentityRecord) -> Value {
    json!({
        "key": key_hex(pk),
        "address": pk.address().to_string(),
        "key_id": hex(&pk.key_id().0),
        "role": rec.role.map(|r| r.name()),
        "permissions": perm_names(rec.permissions),
        "last_sequence": rec.last_sequence,
        "patient": rec.patient.as_ref().map(key_hex),
    })
}

/// A vital in fixed-point fields with units in the names.
pub(super) fn vital_json(v: &Vital) -> Value {
    let mut o = match v {
        Vital::BodyTemperature { centi_celsius } => {
            json!({ "vital": "body_temperature", "centi_celsius": centi_celsius })
        }
        Vital::SpO2 { percent } => json!({ "vital": "spo2", "percent": percent }),
        Vital::BloodPressure {
            systolic_mmhg,
            diastolic_mmhg,
        } => json!({
            "vital": "blood_pressure", "systolic_mmhg": systolic_mmhg, "diastolic_mmhg": diastolic_mmhg,
        }),
        Vital::HeartRate { bpm } => json!({ "vital": "heart_rate", "bpm": bpm }),
        Vital::Opaque { kind, data } => {
            json!({ "vital": "opaque", "opaque_kind": kind, "data": hex(data) })
        }
    };
    o["display"] = Value::String(v.to_string());
    o
}

/// A reading's value: plain, or sealed (never decrypted here).
pub(super) fn payload_json(state: &WorldState, p: &Payload) -> Value {
    match p {
        Payload::Plain(v) => {
            let mut o = json!({ "encoding": "plain" });
            if let (Value::Object(o), Value::Object(v)) = (&mut o, vital_json(v)) {
                o.extend(v);
            }
            o
        }
        Payload::Sealed(s) => json!({
            "encoding": "sealed",
            "version": s.version,
            "ephemeral": hex(&s.ephemeral.0),
            "recipients": s.recipients.iter().map(|r| json!({
                "key_id": hex(&r.key_id.0),
                "key": state.by_key_id(&r.key_id).map(key_hex),
                "wrapped_key": hex(&r.wrapped.0),
            })).collect::<Vec<_>>(),
            "ciphertext": hex(&s.ciphertext),
            "plaintext_len": s.plaintext_len(),
        }),
    }
}

/// The API's name of a transaction kind (the `kind` of its JSON).
pub fn kind_name(k: &TxKind) -> &'static str {
    match k {
        TxKind::Reading { .. } => "reading",
        TxKind::Grant { .. } => "grant",
        TxKind::Revoke { .. } => "revoke",
        TxKind::SetRole { .. } => "set_role",
        TxKind::AssignDevice { .. } => "assign_device",
        TxKind::Consent { .. } => "consent",
        TxKind::Genesis(_) => "genesis",
        TxKind::AccessAnchor { .. } => "access_anchor",
    }
}

pub(super) fn short(pk: &PublicKey) -> String {
    pk.address().to_string()
}

/// A one-line description of a transaction.
pub(super) fn summary(tx: &Transaction) -> String {
    let b = &tx.body;
    let who = short(&b.signer);
    match &b.kind {
        TxKind::Reading {
            stream,
            payload: Payload::Plain(v),
        } => {
            format!("reading #{} of {who} stream {stream}: {v}", b.sequence)
        }
        TxKind::Reading {
            stream,
            payload: Payload::Sealed(s),
        } => format!(
            "sealed reading #{} of {who} stream {stream} for {} reader(s)",
            b.sequence,
            s.recipients.len()
        ),
        TxKind::Grant {
            target,
            permissions,
        } => format!("{who} grants {permissions} to {}", short(target)),
        TxKind::Revoke {
            target,
            permissions,
        } => format!("{who} revokes {permissions} from {}", short(target)),
        TxKind::SetRole { target, role } => {
            format!("{who} sets the role of {} to {role}", short(target))
        }
        TxKind::AssignDevice { device, patient } => {
            format!(
                "{who} assigns device {} to patient {}",
                short(device),
                short(patient)
            )
        }
        TxKind::Consent {
            reader,
            granted: true,
        } => format!("patient {who} consents to reader {}", short(reader)),
        TxKind::Consent {
            reader,
            granted: false,
        } => {
            format!(
                "patient {who} withdraws consent from reader {}",
                short(reader)
            )
        }
        TxKind::Genesis(g) => format!(
            "genesis of chain {:?} with {} members",
            g.name.as_str(),
            g.members.len()
        ),
        TxKind::AccessAnchor { count, hash } => {
            format!("gateway {who} anchors its access log: {count} entries, hash {hash}")
        }
    }
}

/// The kind-specific fields of a transaction.
pub(super) fn kind_json(state: &WorldState, k: &TxKind) -> Value {
    match k {
        TxKind::Reading { stream, payload } => {
            json!({ "stream": stream, "value": payload_json(state, payload) })
        }
        TxKind::Grant {
            target,
            permissions,
        }
        | TxKind::Revoke {
            target,
            permissions,
        } => json!({
            "target": key_hex(target), "permissions": perm_names(*permissions),
        }),
        TxKind::SetRole { target, role } => {
            json!({ "target": key_hex(target), "role": role.name() })
        }
        TxKind::AssignDevice { device, patient } => {
            json!({ "device": key_hex(device), "patient": key_hex(patient) })
        }
        TxKind::Consent { reader, granted } => {
            json!({ "reader": key_hex(reader), "granted": granted })
        }
        TxKind::AccessAnchor { count, hash } => {
            json!({ "count": count, "hash": hash.to_string() })
        }
        TxKind::Genesis(g) => json!({
            "name": g.name.as_str(),
            "params": params_json(&g.params),
            "members": g.members.iter().map(|m| json!({
                "key": key_hex(&m.key),
                "address": m.key.address().to_string(),
                "role": m.role.name(),
                "permissions": perm_names(m.permissions),
            })).collect::<Vec<_>>(),
        }),
    }
}

pub(super) fn params_json(p: &sensorchain_core::tx::Params) -> Value {
    json!({
        "admin_consensus_num": p.admin_consensus_num,
        "admin_consensus_den": p.admin_consensus_den,
        "pow_difficulty": p.pow_difficulty,
        "max_block_txs": p.max_block_txs,
        "max_future_skew_ms": p.max_future_skew_ms,
    })
}

/// A transaction decoded: common fields, then the kind's.
pub(super) fn tx_json(state: &WorldState, tx: &Transaction, encoded: &[u8]) -> Value {
    let b = &tx.body;
    json!({
        "id": hex(&Transaction::id_of_encoded(encoded).0),
        "kind": kind_name(&b.kind),
        "signer": key_hex(&b.signer),
        "signer_address": b.signer.address().to_string(),
        "sequence": b.sequence,
        "timestamp_ms": b.timestamp_ms,
        "summary": summary(tx),
        "body": kind_json(state, &b.kind),
        "signature": hex(&tx.signature.0),
        "size_bytes": encoded.len(),
        "raw": hex(encoded),
    })
}

pub(super) fn header_bytes(h: &BlockHeader) -> Vec<u8> {
    let mut buf = [0u8; HEADER_MAX_LEN];
    h.encode(&mut buf).map(|b| b.to_vec()).unwrap_or_default()
}

pub(super) fn header_json(h: &BlockHeader) -> Value {
    json!({
        "version": h.version,
        "chain_id": h.chain_id.to_string(),
        "height": h.height,
        "prev_hash": h.prev_hash.to_string(),
        "tx_root": h.tx_root.to_string(),
        "state_root": h.state_root.to_string(),
        "timestamp_ms": h.timestamp_ms,
        "proposer": key_hex(&h.proposer),
        "proposer_address": h.proposer.address().to_string(),
        "difficulty": h.difficulty,
        "nonce": h.nonce,
    })
}

pub(super) fn cert_json(c: &FinalityCert) -> Value {
    json!({
        "height": c.height,
        "block_hash": c.block_hash.to_string(),
        "votes": c.votes.iter().map(|v| json!({
            "validator_key_id": hex(&v.validator.0),
            "signature": hex(&v.signature.0),
        })).collect::<Vec<_>>(),
    })
}

pub(super) fn location_json(loc: TxLocation, block_hash: Option<Hash32>) -> Value {
    json!({ "height": loc.height, "index": loc.index, "block_hash": block_hash.map(|h| h.to_string()) })
}

pub(super) fn block_json(
    block: &Block,
    size: usize,
    cert: Option<&FinalityCert>,
    txs: Vec<Value>,
) -> Value {
    json!({
        "height": block.header.height,
        "hash": block.hash().to_string(),
        "header": header_json(&block.header),
        "header_hex": hex(&header_bytes(&block.header)),
        "proposer": key_hex(&block.header.proposer),
        "proposer_sig": hex(&block.proposer_sig.0),
        "size_bytes": size,
        "tx_count": block.txs.len(),
        "finality_cert": cert.map(cert_json),
        "txs": txs,
    })
}
