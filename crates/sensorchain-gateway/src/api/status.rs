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

pub(super) async fn metrics(State(node): State<Node>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        node.metrics().encode(),
    )
        .into_response()
}
