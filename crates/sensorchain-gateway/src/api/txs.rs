//! Transactions: `POST /txs` (submit, answered once durably committed) and
//! `GET /txs/{id}`.

use axum::Extension;
use axum::extract::Path;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use sensorchain_core::hash::Hash32;
use sensorchain_core::tx::Transaction;

use super::access::{self, Caller};
use super::auth::forbidden;
use super::errors::{ApiError, ApiResult};
use super::json::{location_json, tx_json};
use super::params::parse_tx_id;
use super::{Api, MAX_BODY_BYTES, ok_json};
use crate::node::Node;
use crate::store::TxLocation;

/// Finds a transaction: (location, the block's hash, decoded, exact bytes).
pub(super) fn find_tx(node: &Node, id: &Hash32) -> ApiResult<(TxLocation, Transaction, Vec<u8>)> {
    let store = node.store();
    let loc = store
        .tx_location(id)?
        .ok_or_else(|| ApiError::unknown_tx(id))?;
    let (tx, enc) = store.tx(loc)?.ok_or_else(|| {
        ApiError::internal(format!(
            "transaction {id} is indexed at {loc:?} but not stored there"
        ))
    })?;
    Ok((loc, tx, enc))
}

/// `GET /txs/{id}`: the transaction if the caller may read it
/// ([`access::tx_decision`]: a reading by its readers and by block-body
/// readers, another transaction by the directory and the identities it
/// names); a reading's read is logged.
pub(super) async fn tx(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    let node = api.node.clone();
    let id = parse_tx_id(&id)?;
    let state = caller.state.clone();
    api.pool
        .run(move || {
            let (loc, tx, enc) = find_tx(&node, &id)?;
            let (allowed, notes) = access::tx_decision(&caller, &tx, id, loc);
            if !allowed {
                return Ok(access::refused_with(
                    forbidden(format!(
                        "{} may not read transaction {id}",
                        caller.key.map(|k| k.to_string()).unwrap_or_default()
                    )),
                    notes,
                ));
            }
            let block_hash = node.store().header(loc.height)?.map(|h| h.hash());
            let mut v = tx_json(&state, &tx, &enc);
            v["location"] = location_json(loc, block_hash);
            Ok(access::with_notes(ok_json(v)?, notes))
        })
        .await
}

/// `POST /txs` with `{"tx": "<hex>"}`.
#[derive(Debug, Deserialize)]
pub(super) struct SubmitJson {
    tx: String,
}

pub(super) async fn submit_tx(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let node = api.node.clone();
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body larger than {MAX_BODY_BYTES} bytes"),
            )
        } else {
            ApiError::new(e.status(), "bad_body", e.body_text())
        }
    })?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let encoded = match ctype.as_deref() {
        Some("application/json") => {
            let j: SubmitJson = serde_json::from_slice(&body).map_err(|e| {
                ApiError::bad_request("bad_json", format!("expected {{\"tx\": \"<hex>\"}}: {e}"))
            })?;
            ::hex::decode(j.tx.trim())
                .map_err(|e| ApiError::bad_request("bad_hex", format!("\"tx\" is not hex: {e}")))?
        }
        Some("application/octet-stream") | None => body.to_vec(),
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "content type {other} is not accepted: send application/octet-stream or application/json"
                ),
            ));
        }
    };
    if encoded.is_empty() {
        return Err(ApiError::bad_request("malformed", "empty transaction"));
    }
    let c = node.submit(encoded, None).await.map_err(|e| {
        tracing::debug!(reason = e.label(), "API submission refused: {e}");
        ApiError::from(e)
    })?;
    let n = node.clone();
    let block_hash = api
        .pool
        .run(move || Ok(n.store().header(c.height)?.map(|h| h.hash())))
        .await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/txs/{}", c.tx_id))],
        axum::Json(json!({
            "tx_id": c.tx_id.to_string(),
            "height": c.height,
            "index": c.index,
            "block_hash": block_hash.map(|h| h.to_string()),
        })),
    )
        .into_response())
}
