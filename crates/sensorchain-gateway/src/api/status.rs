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
    let mut body = json!({
        "status": "ok",
        "height": head.height,
        "head_hash": head.hash.to_string(),
        "chain_id": state.chain_id().to_string(),
    });
    // stopped on a full disk: refusing until it heals (app::heal)
    if let Some(why) = node.storage_failed() {
        body["status"] = "storage_failed".into();
        body["reason"] = why.into();
    }
    ok_json(body)
}

/// `GET /cluster`: this gateway's view of its cluster (role, term, leader,
/// log and chain positions, members with their lag on the leader) and the
/// equivocation evidence it holds (each pair of votes, hex).
pub(super) async fn cluster(State(api): State<Api>) -> ApiResult {
    let node = api.node.clone();
    let evidence = api
        .pool
        .run(move || Ok(node.store().evidence(MAX_EVIDENCE_SHOWN)?))
        .await?;
    // every member's report of itself, asked over the peer links
    let status = api.node.cluster_overview().await;
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

/// The body of `POST /cluster/members`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewMember {
    id: u64,
    addr: String,
    key: String,
}

/// `POST /cluster/members` (`ADMIN`): adds a gateway whose key holds
/// `VALIDATE` and `CONNECT` on the chain as member `id` at peer address
/// `addr` — a learner until it has caught up, then a voter. Answers once the
/// change is committed (`200`, the new status), `409 not_leader` (with the
/// leader's id) on a follower, `422 not_validator` for a key the chain has
/// not granted validate, `422 membership_refused` otherwise.
pub(super) async fn add_member(
    State(api): State<Api>,
    body: Result<axum::Json<NewMember>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    use axum::http::StatusCode;
    let axum::Json(m) = body.map_err(|e| {
        ApiError::bad_request(
            "bad_member",
            format!("want {{\"id\", \"addr\", \"key\"}}: {e}"),
        )
    })?;
    if m.id == 0 || m.id > u64::from(u32::MAX) {
        return Err(ApiError::bad_request(
            "bad_member",
            "id: a member id from 1",
        ));
    }
    if m.addr.trim().is_empty() || !m.addr.contains(':') {
        return Err(ApiError::bad_request(
            "bad_member",
            "addr: HOST:PORT of its peer links",
        ));
    }
    let key: sensorchain_core::identity::PublicKey = m
        .key
        .parse()
        .map_err(|_| ApiError::bad_request("bad_member", "key: 64 hex digits"))?;
    let node = crate::cluster::GatewayNode {
        addr: m.addr,
        public_key: key.0,
    };
    match api.node.add_member(m.id, node).await {
        Ok(()) => {
            let n = api.node.clone();
            let status = api.pool.run(move || Ok(n.cluster_status())).await?;
            ok_json(serde_json::to_value(&status).map_err(|e| ApiError::internal(e.to_string()))?)
        }
        Err(e @ crate::node::MembershipError::NotLeader(_)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_leader",
            e.to_string(),
        )),
        Err(e @ crate::node::MembershipError::NotValidator(_)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_validator",
            e.to_string(),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "membership_refused",
            e.to_string(),
        )),
    }
}

/// Most evidence pairs `GET /cluster` lists.
const MAX_EVIDENCE_SHOWN: usize = 64;

pub(super) async fn metrics(State(node): State<Node>) -> Response {
    node.refresh_metrics();
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        node.metrics().encode(),
    )
        .into_response()
}
