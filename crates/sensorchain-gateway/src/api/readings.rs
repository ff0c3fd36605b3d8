//! Readings: `GET /devices/{key}/readings`,
//! `GET /devices/{key}/streams/{stream}/readings` and `GET /readings`, each
//! a time window of an index, answered in at most `api.max_response_bytes`.

use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use sensorchain_core::block::Block;
use sensorchain_core::state::WorldState;
use sensorchain_core::tx::{Transaction, TxKind};

use super::Api;
use super::access::{self, Caller, Note};
use super::errors::{ApiError, ApiResult, clip};
use super::json::{hex, key_hex, payload_json};
use super::params::{Range, RangeQuery, known_key, parse_range};
use crate::node::Node;
use crate::store::{ReadingRef, Store, StoreError};

/// A reading list's answer, written reading by reading into one buffer (no
/// tree of JSON values for the whole list) and stopped before it passes
/// `max_bytes` (then `truncated` with `next_from`; at least one reading is
/// always served).
pub(super) fn readings_json(
    node: &Node,
    state: &WorldState,
    refs: Vec<ReadingRef>,
    r: Range,
    max_bytes: usize,
) -> ApiResult {
    /// Room kept for the fields around the list.
    const HEAD_RESERVE: usize = 256;
    let store = node.store();
    let budget = max_bytes.saturating_sub(HEAD_RESERVE);
    let mut items: Vec<u8> = Vec::with_capacity(budget.min(64 * 1024));
    items.push(b'[');
    let mut count = 0usize;
    let mut last_ts = None;
    let mut cut = false;
    // readings of one block are neighbours: each block is read and decoded
    // once, not once per reading
    let mut block: Option<Block> = None;
    for rr in &refs {
        if block.as_ref().map(|b| b.header.height) != Some(rr.loc.height) {
            let bytes = store.block_bytes(rr.loc.height)?.ok_or_else(|| {
                ApiError::internal(format!(
                    "reading indexed at {:?} is in no stored block",
                    rr.loc
                ))
            })?;
            block = Some(crate::store::decode_block(rr.loc.height, &bytes)?);
        }
        let Some(tx) = block
            .as_ref()
            .and_then(|b| b.txs.get(rr.loc.index as usize))
        else {
            return Err(ApiError::internal(format!(
                "reading indexed at {:?} is not stored",
                rr.loc
            )));
        };
        let enc = tx.to_vec();
        let value = match &tx.body.kind {
            TxKind::Reading { payload, .. } => payload_json(state, payload),
            _ => Value::Null,
        };
        let one = json!({
            "device": key_hex(&rr.device),
            "device_address": rr.device.address().to_string(),
            "stream": rr.stream,
            "sequence": rr.sequence,
            "timestamp_ms": rr.timestamp_ms,
            "height": rr.loc.height,
            "index": rr.loc.index,
            "tx_id": hex(&Transaction::id_of_encoded(&enc).0),
            "value": value,
        });
        let bytes = serde_json::to_vec(&one)
            .map_err(|e| ApiError::internal(format!("cannot encode a reading: {e}")))?;
        if count > 0 && items.len() + 2 + bytes.len() > budget {
            cut = true;
            break;
        }
        if count > 0 {
            items.push(b',');
        }
        items.extend_from_slice(&bytes);
        count += 1;
        last_ts = Some(rr.timestamp_ms);
    }
    items.push(b']');
    let truncated = cut || refs.len() >= r.limit;
    let head = json!({
        "from": r.from,
        "to": r.to,
        "limit": r.limit,
        "count": count,
        "truncated": truncated,
        "next_from": if truncated { last_ts } else { None },
    });
    let mut out = serde_json::to_vec(&head)
        .map_err(|e| ApiError::internal(format!("cannot encode an answer: {e}")))?;
    out.pop(); // the closing brace
    out.extend_from_slice(b",\"readings\":");
    out.extend_from_slice(&items);
    out.push(b'}');
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}

pub(super) async fn device_readings(
    State(api): State<Api>,
    Path(key): Path<String>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> ApiResult {
    let state = api.node.state();
    let device = known_key(&state, &key)?;
    let r = parse_range(q)?;
    serve_readings(&api, state, r, move |store| {
        store.readings_by_device(&device, r.from, r.to, r.limit)
    })
    .await
}

pub(super) async fn stream_readings(
    State(api): State<Api>,
    Path((key, stream)): Path<(String, String)>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> ApiResult {
    let state = api.node.state();
    let device = known_key(&state, &key)?;
    let stream: u16 = stream.parse().map_err(|_| {
        ApiError::bad_request(
            "bad_stream",
            format!("{:?} is not a stream number (0 to 65535)", clip(&stream)),
        )
    })?;
    let r = parse_range(q)?;
    serve_readings(&api, state, r, move |store| {
        store.readings_by_stream(&device, stream, r.from, r.to, r.limit)
    })
    .await
}

/// `GET /readings`: the readings of every device the caller may read
/// (the ledger's recipient rule), merged in time order; each device's read
/// is logged.
pub(super) async fn all_readings(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> ApiResult {
    let state = caller.state.clone();
    let r = parse_range(q)?;
    let devices = caller.readable_devices();
    let notes: Vec<Note> = devices
        .iter()
        .map(|d| Note::readings(&caller, *d, None, r.from, r.to))
        .collect();
    let res = serve_readings(&api, state, r, move |store| {
        let mut all = Vec::new();
        for d in &devices {
            all.extend(store.readings_by_device(d, r.from, r.to, r.limit)?);
        }
        // each device's list is in time order and at most `limit` long, so
        // the first `limit` of the merge are the first `limit` of all
        all.sort_by_key(|x| (x.timestamp_ms, x.loc.height, x.loc.index));
        all.truncate(r.limit);
        Ok(all)
    })
    .await?;
    Ok(access::with_notes(res, notes))
}

/// Runs the index query `query` on the read pool and answers with its
/// readings ([`readings_json`], capped at `api.max_response_bytes`).
async fn serve_readings(
    api: &Api,
    state: Arc<WorldState>,
    r: Range,
    query: impl FnOnce(&Store) -> Result<Vec<ReadingRef>, StoreError> + Send + 'static,
) -> ApiResult {
    let node = api.node.clone();
    let max = api.max_response_bytes;
    api.pool
        .run(move || {
            let refs = query(node.store())?;
            readings_json(&node, &state, refs, r, max)
        })
        .await
}
