//! The chain: `GET /chain/head`, `GET /blocks/{height}/header` (public),
//! `GET /blocks/{height}` and `GET /blocks/{height}/raw` (block bodies).

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use sensorchain_core::tx::{Transaction, TxKind};

use super::errors::{ApiError, ApiResult};
use super::json::{block_json, hex, key_hex, kind_name, params_json, summary};
use super::params::parse_height;
use super::{Api, ok_json};
use crate::store::TxLocation;

pub(super) async fn chain_head(State(api): State<Api>) -> ApiResult {
    let node = api.node.clone();
    let state = node.state();
    let n = node.clone();
    let (head, genesis) = api
        .pool
        .run(move || {
            let head = n.store().head()?;
            let genesis = n.store().tx(TxLocation {
                height: 0,
                index: 0,
            })?;
            Ok((head, genesis))
        })
        .await?;
    let head = head.ok_or_else(ApiError::no_chain)?;
    let name = genesis.and_then(|(tx, _)| match tx.body.kind {
        TxKind::Genesis(g) => Some(g.name.as_str().to_string()),
        _ => None,
    });
    ok_json(json!({
        "height": head.height,
        "hash": head.hash.to_string(),
        "timestamp_ms": head.timestamp_ms,
        "tx_count_total": head.tx_count_total,
        "reading_count_total": head.reading_count_total,
        "chain_id": state.chain_id().to_string(),
        "chain_name": name,
        "params": params_json(state.params()),
        "identities": state.identities().count(),
        "admins": state.admin_count(),
        "votes_needed": state.votes_needed(),
        "validators": state.validators().iter().map(|v| key_hex(v.public())).collect::<Vec<_>>(),
        "gateway": key_hex(&node.public()),
    }))
}

pub(super) async fn block(State(api): State<Api>, Path(height): Path<String>) -> ApiResult {
    let node = api.node.clone();
    let height = parse_height(&height)?;
    api.pool
        .run(move || {
            let store = node.store();
            let bytes = store.block_bytes(height)?.ok_or_else(|| {
                ApiError::not_found("unknown_block", format!("no block at height {height}"))
            })?;
            let block = crate::store::decode_block(height, &bytes)?;
            let cert = store.cert(height)?;
            let txs: Vec<Value> = block
                .txs
                .iter()
                .enumerate()
                .map(|(i, tx)| {
                    let enc = tx.to_vec();
                    json!({
                        "index": i,
                        "id": hex(&Transaction::id_of_encoded(&enc).0),
                        "kind": kind_name(&tx.body.kind),
                        "signer": key_hex(&tx.body.signer),
                        "sequence": tx.body.sequence,
                        "summary": summary(tx),
                    })
                })
                .collect();
            ok_json(block_json(&block, bytes.len(), cert.as_ref(), txs))
        })
        .await
}

pub(super) async fn block_raw(State(api): State<Api>, Path(height): Path<String>) -> ApiResult {
    let node = api.node.clone();
    let height = parse_height(&height)?;
    let bytes = api
        .pool
        .run(move || {
            node.store().block_bytes(height)?.ok_or_else(|| {
                ApiError::not_found("unknown_block", format!("no block at height {height}"))
            })
        })
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// `GET /blocks/{height}/header`: the header, its hash, the proposer's
/// signature and the finality certificate, without the transactions
/// (public: light clients need it; it says nothing about a reading).
pub(super) async fn block_header(State(api): State<Api>, Path(height): Path<String>) -> ApiResult {
    let node = api.node.clone();
    let height = parse_height(&height)?;
    api.pool
        .run(move || {
            let store = node.store();
            let bytes = store.block_bytes(height)?.ok_or_else(|| {
                ApiError::not_found("unknown_block", format!("no block at height {height}"))
            })?;
            let block = crate::store::decode_block(height, &bytes)?;
            let cert = store.cert(height)?;
            let mut v = block_json(&block, bytes.len(), cert.as_ref(), Vec::new());
            if let Some(o) = v.as_object_mut() {
                o.remove("txs");
            }
            ok_json(v)
        })
        .await
}
