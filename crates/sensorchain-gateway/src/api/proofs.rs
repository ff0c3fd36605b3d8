//! Proofs: `GET /txs/{id}/proof` (a transaction's Merkle inclusion proof in
//! its block) and `GET /chain/consistency` (that one block extends another:
//! the headers between them, docs/PROTOCOL.md "Chain consistency").

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde_json::json;

use super::errors::{ApiError, ApiResult};
use super::json::{cert_json, header_bytes, hex};
use super::params::{ConsistencyQuery, check_order, parse_consistency, parse_tx_id};
use super::{Api, MAX_CONSISTENCY_HEADERS, ok_json};

pub(super) async fn tx_proof(State(api): State<Api>, Path(id): Path<String>) -> ApiResult {
    let node = api.node.clone();
    let id = parse_tx_id(&id)?;
    api.pool.run(move || {
        let store = node.store();
        let loc = store
            .tx_location(&id)?
            .ok_or_else(|| ApiError::unknown_tx(&id))?;
        let proof = store
            .inclusion_proof(loc)?
            .ok_or_else(|| ApiError::unknown_tx(&id))?;
        let header = store
            .header(loc.height)?
            .ok_or_else(|| ApiError::internal(format!("block {} has no header", loc.height)))?;
        let cert = store.cert(loc.height)?;
        ok_json(json!({
            "tx_id": id.to_string(),
            "leaf_hash": proof.leaf_hash.to_string(),
            "index": loc.index,
            "tree_size": proof.tree_size,
            "path": proof.path.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
            "tx_root": proof.tx_root.to_string(),
            "height": loc.height,
            "block_hash": proof.block_hash.to_string(),
            "header_hex": hex(&header_bytes(&header)),
            "finality_cert": cert.as_ref().map(cert_json),
            "algorithm": "RFC 6962 / RFC 9162 inclusion proof over SHA-256 (leaf = SHA-256(0x00 || tx bytes), \
                          node = SHA-256(0x01 || left || right)); block hash = SHA-256(0x14 || \
                          \"sensorchain/block/v1\" || header bytes)",
        }))
    })
    .await
}

/// The proof that block `to` extends block `from`: the headers of heights
/// `from + 1 ..= to`, oldest first, each linking to the one before by its
/// `prev_hash` (docs/PROTOCOL.md, "Chain consistency"). `to` defaults to
/// the head; at most [`MAX_CONSISTENCY_HEADERS`] headers per answer.
pub(super) async fn chain_consistency(
    State(api): State<Api>,
    q: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> ApiResult {
    let node = api.node.clone();
    let (from, to) = parse_consistency(q)?;
    api.pool
        .run(move || {
            let store = node.store();
            let head = store.head()?.ok_or_else(ApiError::no_chain)?;
            let to = to.unwrap_or(head.height);
            for h in [from, to] {
                if h > head.height {
                    return Err(ApiError::not_found(
                        "unknown_block",
                        format!("no block at height {h} (the head is {})", head.height),
                    ));
                }
            }
            check_order(from, to)?;
            if to - from > MAX_CONSISTENCY_HEADERS {
                return Err(ApiError::bad_request(
                    "bad_range",
                    format!(
                        "{} headers asked for, at most {MAX_CONSISTENCY_HEADERS} per answer: \
                         ask from={from}&to={}, then on from there",
                        to - from,
                        from + MAX_CONSISTENCY_HEADERS
                    ),
                ));
            }
            let header = |h: u64| {
                store
                    .header(h)?
                    .ok_or_else(|| ApiError::internal(format!("block {h} has no header")))
            };
            let from_hash = header(from)?.hash();
            let mut to_hash = from_hash;
            let mut headers = Vec::with_capacity((to - from) as usize);
            for h in from + 1..=to {
                let hd = header(h)?;
                to_hash = hd.hash();
                headers.push(hex(&header_bytes(&hd)));
            }
            let cert = store.cert(to)?;
            ok_json(json!({
                "from": from,
                "to": to,
                "from_hash": from_hash.to_string(),
                "to_hash": to_hash.to_string(),
                "headers": headers,
                "finality_cert": cert.as_ref().map(cert_json),
                "algorithm": "hash chain: headers[i] is the header of block from + 1 + i; \
                              its prev_hash is the hash of the block before (from_hash for the \
                              first); block hash = SHA-256(0x14 || \"sensorchain/block/v1\" || \
                              header bytes); the last hash is to_hash",
            }))
        })
        .await
}
