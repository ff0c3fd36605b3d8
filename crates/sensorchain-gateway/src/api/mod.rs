//! The HTTP/JSON API of a gateway (axum 0.8), documented route by route in
//! `docs/API.md`, with its access control.
//!
//! | route | what | rule |
//! |---|---|---|
//! | `GET /health` | liveness, head height and hash, chain id | public |
//! | `GET /chain/head` | the head block and the chain parameters | public |
//! | `GET /chain/consistency?from=M&to=N` | the headers proving that block `N` extends block `M` | public |
//! | `GET /blocks/{height}/header` | a block's header, proposer signature, finality certificate | public |
//! | `GET /blocks/{height}` | a block's header, hash, proposer and transaction summaries | block-body |
//! | `GET /blocks/{height}/raw` | the block's exact stored bytes | block-body |
//! | `GET /txs/{id}` | a transaction decoded to JSON, and where it is | tx |
//! | `GET /txs/{id}/proof` | its RFC 6962 Merkle inclusion proof and the block header | public |
//! | `GET /devices/{key}/readings` | a device's readings in a time window | readings |
//! | `GET /devices/{key}/streams/{stream}/readings` | one stream of a device | readings |
//! | `GET /readings` | the readings of every device the caller may read | all-readings |
//! | `GET /identities`, `GET /identities/{key}` | identities, roles, permissions | directory, identity |
//! | `GET /identities/{key}/readers` | who may read a device's sealed readings | identity |
//! | `GET /votes`, `GET /consents` | pending admin-consensus votes, patients' consents | directory |
//! | `POST /txs` | submit a signed transaction; answers once it is durably committed | signed-tx |
//! | `GET /metrics` | Prometheus text exposition | public |
//! | `GET /cluster` | this gateway's view of its cluster, equivocation evidence | public |
//! | `POST /cluster/members` | add a gateway (its key validates on the chain) to the cluster | admin |
//! | `POST /auth/challenge`, `POST /auth/login` | log in with a chain identity | login |
//! | `POST /auth/logout`, `GET /auth/session` | end a session, who it is | public, session |
//! | `GET /access-log`, `/access-log/head`, `/access-log/entries` | the access log | access-log, session, audit |
//! | `GET /`, `GET /dashboard`, `GET /assets/{file}` | the dashboard (`dashboard/`): the page and its embedded assets | public |
//! | `GET /readings/live` | server-sent events of the finalized readings the caller may read | all-readings |
//!
//! Every route is in one place, `build` in this file: one line each,
//! naming its access [`Rule`] and its handler as `file::handler`; the router
//! and the route table ([`route_table`]) come from the same lines, so no
//! route exists without a rule. `access::enforce` runs before each
//! handler: it resolves the session (`auth.rs`), applies the rule against
//! the world state as it is now, and records reads of patients' data in the
//! access log ([`access_log`]) before the answer leaves. The handlers live
//! in the file of their resource: `status.rs` (health, metrics), `chain.rs`
//! (head, headers, blocks), `txs.rs` (submit, lookup), `proofs.rs`
//! (inclusion and consistency proofs), `readings.rs`, `identities.rs`
//! (identities, readers, votes, consents), `auth.rs` (login), `access_log.rs`,
//! `dashboard/` (the dashboard page, its embedded assets, the live stream);
//! what they share is in `errors.rs` ([`ApiError`], the fallbacks),
//! `params.rs` (path and query parsing) and `json.rs` (the answers' JSON
//! shapes).
//!
//! Bytes are lowercase hex; keys are 64 hex digits (a path parameter naming
//! a key also accepts the identity's base58 address). Times are ms since the
//! Unix epoch. Every error is `{"error": {"code": "snake_case", "message":
//! "..."}}` with a fitting status code (401 `unauthenticated`, 403
//! `forbidden` for the access rules). The API never decrypts: a sealed
//! reading is served as its ciphertext, recipients' key ids and wrapped keys.
//!
//! Handlers that touch the store run it on a bounded pool of blocking
//! threads ([`ReadPool`]: `api.read_threads` at once, `api.read_queue`
//! waiting, 503 `busy` beyond): redb reads are quick, but a range of 10,000
//! readings or a 16 MiB block is not something to do on a runtime worker,
//! nor something to do 500 times at once. A reading list stops at
//! `api.max_response_bytes` (`truncated`, `next_from`). The server around
//! the routes ([`serve_secure`], in `api/serve.rs`) bounds connections,
//! request heads, time, requests in flight and panics, speaks TLS when
//! configured ([`tls`]), and keeps the Host rule (421 `bad_host` for a Host
//! that is not a loopback name, the bound address or in
//! `api.allowed_hosts`: no DNS rebinding); see its table. [`bind_with`]
//! refuses a non-loopback `listen.api` without TLS unless
//! `listen.allow_plaintext` is set.

use std::path::Path;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::handler::Handler;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post};
use serde_json::Value;

use crate::node::Node;
pub use access::{CONTENT_SECURITY_POLICY, RouteRow, Rule};
use errors::ApiResult;

mod access;
pub mod access_log;
mod auth;
mod autoerr;
mod chain;
pub mod dashboard;
mod errors;
mod identities;
mod json;
mod params;
mod pool;
mod proofs;
mod ratelimit;
mod readings;
mod serve;
mod status;
#[cfg(test)]
mod tests;
pub mod tls;
mod txs;

pub use auth::{
    CHALLENGE_TTL_MS, COOKIE, MAX_CHALLENGES, MAX_SESSIONS, MAX_SESSIONS_PER_IDENTITY,
    SESSION_TTL_MS,
};
pub use errors::{ApiError, clip, rejection_status};
pub use json::kind_name;
pub use pool::ReadPool;
pub use serve::{
    MAX_HEAD_BUF, MAX_HEADER_BYTES, MAX_HEADERS, MAX_URI_BYTES, app, bind, bind_with, check_listen,
    check_listen_with, serve_secure, serve_with_shutdown,
};
pub use tls::ApiTls;

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

/// The handlers' state: the node, the store-read pool, the answer cap,
/// the sessions and the access log.
#[derive(Clone)]
struct Api {
    node: Node,
    pool: ReadPool,
    max_response_bytes: usize,
    auth: auth::Auth,
    log: access_log::AccessLog,
}

impl FromRef<Api> for Node {
    fn from_ref(api: &Api) -> Node {
        api.node.clone()
    }
}

/// How the auth layer is set up: its clock (tests inject one) and whether
/// the API is served over TLS (the session cookie is then `Secure` and
/// answers carry HSTS).
#[derive(Clone)]
pub(crate) struct AuthOptions {
    pub(crate) clock: auth::Clock,
    pub(crate) tls: bool,
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions {
            clock: auth::Auth::system_clock(),
            tls: false,
        }
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

/// Every route of the API over `node`, with its access rule: the rows the
/// router is built from (docs/API.md, "Access control", lists them).
pub fn route_table(node: Node) -> Vec<RouteRow> {
    build(node, ReadPool::new(1, 0), 4096, AuthOptions::default()).1
}

/// The routes over `node`, reading the store on `pool`.
fn router_with_pool(node: Node, pool: ReadPool, max_response_bytes: usize) -> Router {
    build(node, pool, max_response_bytes, AuthOptions::default()).0
}

/// The routes over `node` with the auth layer set up by `opts`.
pub(crate) fn router_with(
    node: Node,
    pool: ReadPool,
    max_response_bytes: usize,
    opts: AuthOptions,
) -> Router {
    build(node, pool, max_response_bytes, opts).0
}

/// The router and its route table, built together: every route is added
/// with its rule ([`Table::route`]), so none exists without one.
struct Table {
    router: Router<Api>,
    rows: Vec<RouteRow>,
    api: Api,
}

impl Table {
    /// Adds `method path` served by `mr` under `rule` ([`access::enforce`]
    /// runs before the handler).
    fn route(
        mut self,
        method: &'static str,
        path: &'static str,
        rule: Rule,
        mr: MethodRouter<Api>,
    ) -> Self {
        let layer = axum::middleware::from_fn_with_state((self.api.clone(), rule), access::enforce);
        self.router = self.router.route(path, mr.route_layer(layer));
        self.rows.push(RouteRow { method, path, rule });
        self
    }

    fn get<H: Handler<T, Api>, T: 'static>(self, path: &'static str, rule: Rule, h: H) -> Self {
        self.route("GET", path, rule, get(h))
    }

    fn post<H: Handler<T, Api>, T: 'static>(self, path: &'static str, rule: Rule, h: H) -> Self {
        self.route("POST", path, rule, post(h))
    }
}

/// How the access log anchors its head: an `AccessAnchor` transaction
/// signed with this gateway's key, submitted to its own node (which
/// forwards it to the leader in a cluster).
fn anchor_fn(node: &Node) -> access_log::AnchorFn {
    let weak = node.downgrade();
    std::sync::Arc::new(move |count, hash| {
        let weak = weak.clone();
        Box::pin(async move {
            let Some(node) = weak.upgrade() else {
                return false;
            };
            let key = node.keypair().clone();
            let state = node.state();
            let sequence = state
                .identity(&key.public())
                .and_then(|i| i.last_sequence)
                .map_or(1, |s| s + 1);
            let body = sensorchain_core::tx::TxBody {
                signer: key.public(),
                sequence,
                timestamp_ms: crate::node::now_ms(),
                kind: sensorchain_core::tx::TxKind::AccessAnchor { count, hash },
            };
            let tx = match sensorchain_core::tx::Transaction::sign(body, state.chain_id(), &key) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!("cannot sign the access log's anchor: {e}");
                    return false;
                }
            };
            match node.submit(tx.to_vec(), None).await {
                Ok(c) => {
                    tracing::debug!(count, height = c.height, "access log anchored on the chain");
                    true
                }
                Err(e) => {
                    tracing::info!(
                        count,
                        "access log anchor not committed (tried again later): {e}"
                    );
                    false
                }
            }
        })
    })
}

fn build(
    node: Node,
    pool: ReadPool,
    max_response_bytes: usize,
    opts: AuthOptions,
) -> (Router, Vec<RouteRow>) {
    let dir = node
        .store()
        .path()
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let chain = *node.state().chain_id();
    let log = access_log::AccessLog::open(
        &dir,
        chain,
        node.keypair(),
        opts.clock.clone(),
        Some(anchor_fn(&node)),
    );
    let api = Api {
        node,
        pool,
        max_response_bytes,
        auth: auth::Auth::new(opts.clock.clone(), opts.tls),
        log,
    };
    use Rule::*;
    let t = Table {
        router: Router::new(),
        rows: Vec::new(),
        api: api.clone(),
    }
    .get("/health", Public, status::health)
    .get("/chain/head", Public, chain::chain_head)
    .get("/chain/consistency", Public, proofs::chain_consistency)
    .get("/blocks/{height}/header", Public, chain::block_header)
    .get("/blocks/{height}", BlockBody, chain::block)
    .get("/blocks/{height}/raw", BlockBody, chain::block_raw)
    .post("/txs", SignedTx, txs::submit_tx)
    .get("/txs/{id}", Tx, txs::tx)
    .get("/txs/{id}/proof", Public, proofs::tx_proof)
    .get(
        "/devices/{key}/readings",
        Readings,
        readings::device_readings,
    )
    .get(
        "/devices/{key}/streams/{stream}/readings",
        Readings,
        readings::stream_readings,
    )
    .get("/readings", AllReadings, readings::all_readings)
    .get("/identities", Directory, identities::identities)
    .get("/identities/{key}", Identity, identities::identity)
    .get("/identities/{key}/readers", Identity, identities::readers)
    .get("/votes", Directory, identities::votes)
    .get("/consents", Directory, identities::consents)
    .get("/metrics", Public, status::metrics)
    .get("/cluster", Public, status::cluster)
    .post("/cluster/members", Admin, status::add_member)
    .post("/auth/challenge", Login, auth::challenge)
    .post("/auth/login", Login, auth::login)
    .post("/auth/logout", Public, auth::logout)
    .get("/auth/session", Session, auth::session)
    .get("/access-log", AccessLog, access_log::patient_log)
    .get("/access-log/head", Session, access_log::head)
    .get("/access-log/entries", Audit, access_log::entries)
    .get("/", Public, dashboard::root)
    .get("/dashboard", Public, dashboard::index)
    .get("/assets/{file}", Public, dashboard::asset)
    .get("/readings/live", AllReadings, dashboard::live);
    let router = t
        .router
        .fallback(errors::not_found)
        .method_not_allowed_fallback(errors::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response_with_state(
            opts.tls,
            access::security_headers,
        ))
        .with_state(api);
    (router, t.rows)
}

/// A 200 answer with `v` as its JSON body.
fn ok_json(v: Value) -> ApiResult {
    Ok(axum::Json(v).into_response())
}
