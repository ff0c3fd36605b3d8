//! `GET /health` and `GET /metrics`.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::errors::{ApiError, ApiResult};
use super::{Api, METRICS_CONTENT_TYPE, ok_json};
use crate::node::Node;

pub(super) async fn health(State(api): State<Api>) -> ApiResult {
    let node = api.node.clone();
    let state = node.state();
    let n = node.clone();
    let head = api.pool.run(move || Ok(n.store().head()?)).await?;
    let head = head.ok_or_else(ApiError::no_chain)?;
    ok_json(json!({
        "status": "ok",
        "height": head.height,
        "head_hash": head.hash.to_string(),
        "chain_id": state.chain_id().to_string(),
    }))
}

/// `GET /cluster`: this gateway's view of its cluster (role, term, leader,
/// log and chain positions, members with their lag on the leader) and the
/// equivocation evidence it holds (each pair of votes, hex).
pub(super) async fn cluster(State(api): State<Api>) -> ApiResult {
    let node = api.node.clone();
    let (status, evidence) = api
        .pool
        .run(move || {
            let evidence = node.store().evidence(MAX_EVIDENCE_SHOWN)?;
            Ok((node.cluster_status(), evidence))
        })
        .await?;
    let mut v = serde_json::to_value(&status).map_err(|e| ApiError::internal(e.to_string()))?;
    v["evidence_pairs"] = evidence
        .iter()
        .map(|e| {
            json!({
                "height": e.height,
                "validator": e.validator.to_string(),
                "first": {"hash": e.first.0.to_string(), "vote": hex::encode(sensorchain_core::codec::encode_to_vec(&e.first.1))},
                "second": {"hash": e.second.0.to_string(), "vote": hex::encode(sensorchain_core::codec::encode_to_vec(&e.second.1))},
            })
        })
        .collect();
    ok_json(v)
}

/// Most evidence pairs `GET /cluster` lists.
const MAX_EVIDENCE_SHOWN: usize = 64;

pub(super) async fn metrics(State(node): State<Node>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        node.metrics().encode(),
    )
        .into_response()
}
