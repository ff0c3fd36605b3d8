//! The HTTP/JSON API of a gateway (axum 0.8), documented route by route in
//! `docs/API.md`.
//!
//! | route | what |
//! |---|---|
//! | `GET /health` | liveness, head height and hash, chain id |
//! | `GET /chain/head` | the head block and the chain parameters |
//! | `GET /chain/consistency?from=M&to=N` | the headers proving that block `N` extends block `M` |
//! | `GET /blocks/{height}` | a block's header, hash, proposer and transaction summaries |
//! | `GET /blocks/{height}/raw` | the block's exact stored bytes |
//! | `GET /txs/{id}` | a transaction decoded to JSON, and where it is |
//! | `GET /txs/{id}/proof` | its RFC 6962 Merkle inclusion proof and the block header |
//! | `GET /devices/{key}/readings` | a device's readings in a time window |
//! | `GET /devices/{key}/streams/{stream}/readings` | one stream of a device |
//! | `GET /readings` | every device's readings in a time window |
//! | `GET /identities`, `GET /identities/{key}` | identities, roles, permissions |
//! | `GET /identities/{key}/readers` | who may read a device's sealed readings |
//! | `GET /votes`, `GET /consents` | pending admin-consensus votes, patients' consents |
//! | `POST /txs` | submit a signed transaction; answers once it is durably committed |
//! | `GET /metrics` | Prometheus text exposition |
//! | `GET /cluster` | this gateway's view of its cluster, equivocation evidence |
//!
//! Every route is in one place, `router_with_pool` in this file: one line
//! each, naming its handler as `file::handler`. The handlers live in the
//! file of their resource: `status.rs` (health, metrics), `chain.rs` (head,
//! blocks), `txs.rs` (submit, lookup), `proofs.rs` (inclusion and
//! consistency proofs), `readings.rs`, `identities.rs` (identities, readers,
//! votes, consents); what they share is in `errors.rs` ([`ApiError`], the
//! fallbacks), `params.rs` (path and query parsing) and `json.rs` (the
//! answers' JSON shapes).
//!
//! Bytes are lowercase hex; keys are 64 hex digits (a path parameter naming
//! a key also accepts the identity's base58 address). Times are ms since the
//! Unix epoch. Every error is `{"error": {"code": "snake_case", "message":
//! "..."}}` with a fitting status code. The API never decrypts: a sealed
//! reading is served as its ciphertext, recipients' key ids and wrapped keys.
//!
//! Handlers that touch the store run it on a bounded pool of blocking
//! threads ([`ReadPool`]: `api.read_threads` at once, `api.read_queue`
//! waiting, 503 `busy` beyond): redb reads are quick, but a range of 10,000
//! readings or a 16 MiB block is not something to do on a runtime worker,
//! nor something to do 500 times at once. A reading list stops at
//! `api.max_response_bytes` (`truncated`, `next_from`). The server around
//! the routes ([`serve_with_shutdown`], in `api/serve.rs`) bounds
//! connections, request heads, time, requests in flight and panics, and
//! keeps the Host rule (421 `bad_host` for a Host that is not a loopback
//! name, the bound address or in `api.allowed_hosts`: no DNS rebinding);
//! see its table. [`bind`] refuses a non-loopback `listen.api` unless
//! `api.allow_non_loopback` is set.

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::Value;

use crate::node::Node;
use errors::ApiResult;

mod autoerr;
mod chain;
mod errors;
mod identities;
mod json;
mod params;
mod pool;
mod proofs;
mod readings;
mod serve;
mod status;
#[cfg(test)]
mod tests;
mod txs;

pub use errors::{ApiError, clip, rejection_status};
pub use json::kind_name;
pub use pool::ReadPool;
pub use serve::{
    MAX_HEAD_BUF, MAX_HEADER_BYTES, MAX_HEADERS, MAX_URI_BYTES, app, bind, check_listen,
    serve_with_shutdown,
};

/// Most characters of user input echoed back in an error message.
pub const MAX_ECHO_CHARS: usize = 64;

/// Largest request body accepted (a transaction is at most 1 KiB; its hex in
/// JSON twice that).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Default number of readings a range query returns.
pub const DEFAULT_LIMIT: usize = 100;

/// Most readings one range query returns.
pub const MAX_LIMIT: usize = 10_000;

/// Most headers one `GET /chain/consistency` answer holds (about 390 bytes
/// of JSON each).
pub const MAX_CONSISTENCY_HEADERS: u64 = 2048;

/// Content type of `/metrics` (the Prometheus text format).
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The handlers' state: the node, the store-read pool, the answer cap.
#[derive(Clone)]
struct Api {
    node: Node,
    pool: ReadPool,
    max_response_bytes: usize,
}

impl FromRef<Api> for Node {
    fn from_ref(api: &Api) -> Node {
        api.node.clone()
    }
}

/// The API's routes over `node` with the default `[api]` settings' store
/// pool and answer cap, and none of the server's other bounds (those are in
/// [`app`], which [`serve_with_shutdown`] serves).
pub fn router(node: Node) -> Router {
    let s = crate::config::ApiSettings::default();
    router_with_pool(
        node,
        ReadPool::new(s.read_threads, s.read_queue),
        s.max_response_bytes,
    )
}

/// The routes over `node`, reading the store on `pool`.
fn router_with_pool(node: Node, pool: ReadPool, max_response_bytes: usize) -> Router {
    Router::new()
        .route("/health", get(status::health))
        .route("/chain/head", get(chain::chain_head))
        .route("/chain/consistency", get(proofs::chain_consistency))
        .route("/blocks/{height}", get(chain::block))
        .route("/blocks/{height}/raw", get(chain::block_raw))
        .route("/txs", post(txs::submit_tx))
        .route("/txs/{id}", get(txs::tx))
        .route("/txs/{id}/proof", get(proofs::tx_proof))
        .route("/devices/{key}/readings", get(readings::device_readings))
        .route(
            "/devices/{key}/streams/{stream}/readings",
            get(readings::stream_readings),
        )
        .route("/readings", get(readings::all_readings))
        .route("/identities", get(identities::identities))
        .route("/identities/{key}", get(identities::identity))
        .route("/identities/{key}/readers", get(identities::readers))
        .route("/votes", get(identities::votes))
        .route("/consents", get(identities::consents))
        .route("/metrics", get(status::metrics))
        .route("/cluster", get(status::cluster))
        .fallback(errors::not_found)
        .method_not_allowed_fallback(errors::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Api {
            node,
            pool,
            max_response_bytes,
        })
}

/// A 200 answer with `v` as its JSON body.
fn ok_json(v: Value) -> ApiResult {
    Ok(axum::Json(v).into_response())
}
