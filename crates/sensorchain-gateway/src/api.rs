//! The HTTP/JSON API of a gateway (axum 0.8), documented route by route in
//! `docs/API.md`.
//!
//! | route | what |
//! |---|---|
//! | `GET /health` | liveness, head height and hash, chain id |
//! | `GET /chain/head` | the head block and the chain parameters |
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
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRef, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use sensorchain_core::block::{Block, BlockHeader, FinalityCert, HEADER_MAX_LEN};
use sensorchain_core::hash::{Hash32, parse_hex};
use sensorchain_core::identity::{Address, PublicKey};
use sensorchain_core::permissions::Permissions;
use sensorchain_core::reading::Vital;
use sensorchain_core::state::{IdentityRecord, TxRuleError, WorldState};
use sensorchain_core::tx::{Payload, Transaction, TxKind};

use crate::node::{Node, Rejected};
use crate::store::{ReadingRef, StoreError, TxLocation};

mod autoerr;
mod pool;
mod serve;
#[cfg(test)]
mod tests;

pub use pool::ReadPool;
pub use serve::{
    MAX_HEAD_BUF, MAX_HEADER_BYTES, MAX_HEADERS, MAX_URI_BYTES, app, bind, check_listen,
    serve_with_shutdown,
};

/// Most characters of user input echoed back in an error message.
pub const MAX_ECHO_CHARS: usize = 64;

/// Most characters of any error message.
const MAX_MESSAGE_CHARS: usize = 512;

/// Largest request body accepted (a transaction is at most 1 KiB; its hex in
/// JSON twice that).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Default number of readings a range query returns.
pub const DEFAULT_LIMIT: usize = 100;

/// Most readings one range query returns.
pub const MAX_LIMIT: usize = 10_000;

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
        .route("/health", get(health))
        .route("/chain/head", get(chain_head))
        .route("/blocks/{height}", get(block))
        .route("/blocks/{height}/raw", get(block_raw))
        .route("/txs", axum::routing::post(submit_tx))
        .route("/txs/{id}", get(tx))
        .route("/txs/{id}/proof", get(tx_proof))
        .route("/devices/{key}/readings", get(device_readings))
        .route(
            "/devices/{key}/streams/{stream}/readings",
            get(stream_readings),
        )
        .route("/readings", get(all_readings))
        .route("/identities", get(identities))
        .route("/identities/{key}", get(identity))
        .route("/identities/{key}/readers", get(readers))
        .route("/votes", get(votes))
        .route("/consents", get(consents))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Api {
            node,
            pool,
            max_response_bytes,
        })
}

/// User input cut to [`MAX_ECHO_CHARS`] characters (with "…") for an error
/// message.
pub fn clip(s: &str) -> String {
    if s.chars().count() <= MAX_ECHO_CHARS {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX_ECHO_CHARS).collect();
        format!("{head}…")
    }
}

// ---------------------------------------------------------------- errors

/// An API error: a status code and `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A snake_case code.
    pub code: &'static str,
    /// A sentence for people.
    pub message: String,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The answer to a panic or a failed task: nothing of its cause (that
    /// is in the gateway's log).
    pub fn internal_generic() -> Self {
        Self::internal("internal error (the details are in the gateway's log)")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = if self.message.chars().count() > MAX_MESSAGE_CHARS {
            let head: String = self.message.chars().take(MAX_MESSAGE_CHARS).collect();
            format!("{head}…")
        } else {
            self.message
        };
        let body = json!({ "error": { "code": self.code, "message": message } });
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, code) = match &e {
            StoreError::DiskFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "storage_full"),
            StoreError::Corrupt { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "store_corrupt"),
            StoreError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "store_busy"),
            StoreError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
        };
        tracing::warn!("API store error: {e}");
        ApiError::new(status, code, e.to_string())
    }
}

/// The status and code a refused submission is answered with.
pub fn rejection_status(e: &Rejected) -> (StatusCode, &'static str) {
    match e {
        Rejected::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed"),
        Rejected::WrongSigner => (StatusCode::FORBIDDEN, "wrong_signer"),
        Rejected::UnknownSigner => (StatusCode::FORBIDDEN, "unknown_signer"),
        Rejected::BadSignature => (StatusCode::UNAUTHORIZED, "bad_signature"),
        Rejected::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
        Rejected::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        Rejected::Storage(_) => (StatusCode::INSUFFICIENT_STORAGE, "storage_failed"),
        Rejected::Rule(r) => match r {
            TxRuleError::Replay { .. } => (StatusCode::CONFLICT, "replay"),
            TxRuleError::UnknownSigner => (StatusCode::FORBIDDEN, "unknown_signer"),
            TxRuleError::NotPermitted { .. } => (StatusCode::FORBIDDEN, "not_permitted"),
            TxRuleError::BadSignature(_) => (StatusCode::UNAUTHORIZED, "bad_signature"),
            TxRuleError::BlockFull => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            TxRuleError::Reading(_) => (StatusCode::UNPROCESSABLE_ENTITY, "out_of_range"),
            TxRuleError::DeviceNotAssigned
            | TxRuleError::UnknownRecipient
            | TxRuleError::RecipientNotAuthorised => {
                (StatusCode::UNPROCESSABLE_ENTITY, "not_authorised")
            }
            TxRuleError::TimestampTooFarAhead => {
                (StatusCode::UNPROCESSABLE_ENTITY, "timestamp_too_far_ahead")
            }
            TxRuleError::WrongRole => (StatusCode::UNPROCESSABLE_ENTITY, "wrong_role"),
            TxRuleError::InvalidPermissions => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_permissions")
            }
            TxRuleError::LastAdmin => (StatusCode::UNPROCESSABLE_ENTITY, "last_admin"),
            TxRuleError::NothingToRevoke => (StatusCode::UNPROCESSABLE_ENTITY, "nothing_to_revoke"),
            TxRuleError::NothingToGrant => (StatusCode::UNPROCESSABLE_ENTITY, "nothing_to_grant"),
            TxRuleError::AlreadyVoted => (StatusCode::UNPROCESSABLE_ENTITY, "already_voted"),
            TxRuleError::NothingToChange => (StatusCode::UNPROCESSABLE_ENTITY, "nothing_to_change"),
            TxRuleError::BadKey(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_key"),
            _ => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        },
    }
}

impl From<Rejected> for ApiError {
    fn from(e: Rejected) -> Self {
        let (status, code) = rejection_status(&e);
        ApiError::new(status, code, e.to_string())
    }
}

type ApiResult<T = Response> = Result<T, ApiError>;

fn ok_json(v: Value) -> ApiResult {
    Ok(axum::Json(v).into_response())
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(
        "no_route",
        format!("no route for {method} {}", clip(uri.path())),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", clip(uri.path())),
    )
}

// ---------------------------------------------------------------- parsing

fn hex(b: &[u8]) -> String {
    ::hex::encode(b)
}

fn key_hex(pk: &PublicKey) -> String {
    hex(&pk.0)
}

/// A key given as 64 hex digits or as a registered identity's base58 address.
fn parse_key(state: &WorldState, s: &str) -> ApiResult<PublicKey> {
    if let Some(b) = parse_hex::<32>(s) {
        return Ok(PublicKey(b));
    }
    match s.parse::<Address>() {
        Ok(addr) => state
            .identities()
            .map(|(pk, _)| *pk)
            .find(|pk| addr.matches(pk))
            .ok_or_else(|| {
                ApiError::not_found(
                    "unknown_identity",
                    format!("no identity has the address {}", clip(s)),
                )
            }),
        Err(e) => Err(ApiError::bad_request(
            "bad_key",
            format!(
                "{:?} is neither a key (64 hex digits) nor an address ({e})",
                clip(s)
            ),
        )),
    }
}

/// A key that must name a registered identity.
fn known_key(state: &WorldState, s: &str) -> ApiResult<PublicKey> {
    let pk = parse_key(state, s)?;
    if state.identity(&pk).is_none() {
        return Err(ApiError::not_found(
            "unknown_identity",
            format!("no identity with key {pk}"),
        ));
    }
    Ok(pk)
}

fn parse_height(s: &str) -> ApiResult<u64> {
    s.parse::<u64>().map_err(|_| {
        ApiError::bad_request("bad_height", format!("{:?} is not a block height", clip(s)))
    })
}

fn parse_tx_id(s: &str) -> ApiResult<Hash32> {
    parse_hex::<32>(s).map(Hash32).ok_or_else(|| {
        ApiError::bad_request(
            "bad_tx_id",
            format!("{:?} is not a transaction id (64 hex digits)", clip(s)),
        )
    })
}

/// `?from=&to=&limit=` of the reading queries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeQuery {
    from: Option<u64>,
    to: Option<u64>,
    limit: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
struct Range {
    from: u64,
    to: u64,
    limit: usize,
}

fn parse_range(q: Result<Query<RangeQuery>, QueryRejection>) -> ApiResult<Range> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let from = q.from.unwrap_or(0);
    let to = q.to.unwrap_or(u64::MAX);
    if from > to {
        return Err(ApiError::bad_request(
            "bad_range",
            format!("from ({from}) is after to ({to})"),
        ));
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "bad_limit",
            format!("limit must be between 1 and {MAX_LIMIT}, got {limit}"),
        ));
    }
    Ok(Range { from, to, limit })
}

// ---------------------------------------------------------------- JSON shapes

fn perm_names(p: Permissions) -> Vec<String> {
    const NAMES: [&str; 6] = ["connect", "send", "receive", "write", "admin", "validate"];
    (0..6)
        .filter(|i| p.0 & (1 << i) != 0)
        .map(|i| NAMES[i].to_string())
        .collect()
}

fn identity_json(pk: &PublicKey, rec: &IdentityRecord) -> Value {
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
fn vital_json(v: &Vital) -> Value {
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
fn payload_json(state: &WorldState, p: &Payload) -> Value {
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

fn kind_name(k: &TxKind) -> &'static str {
    match k {
        TxKind::Reading { .. } => "reading",
        TxKind::Grant { .. } => "grant",
        TxKind::Revoke { .. } => "revoke",
        TxKind::SetRole { .. } => "set_role",
        TxKind::AssignDevice { .. } => "assign_device",
        TxKind::Consent { .. } => "consent",
        TxKind::Genesis(_) => "genesis",
    }
}

fn short(pk: &PublicKey) -> String {
    pk.address().to_string()
}

/// A one-line description of a transaction.
fn summary(tx: &Transaction) -> String {
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
    }
}

/// The kind-specific fields of a transaction.
fn kind_json(state: &WorldState, k: &TxKind) -> Value {
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

fn params_json(p: &sensorchain_core::tx::Params) -> Value {
    json!({
        "admin_consensus_num": p.admin_consensus_num,
        "admin_consensus_den": p.admin_consensus_den,
        "pow_difficulty": p.pow_difficulty,
        "max_block_txs": p.max_block_txs,
        "max_future_skew_ms": p.max_future_skew_ms,
    })
}

/// A transaction decoded: common fields, then the kind's.
fn tx_json(state: &WorldState, tx: &Transaction, encoded: &[u8]) -> Value {
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

fn header_bytes(h: &BlockHeader) -> Vec<u8> {
    let mut buf = [0u8; HEADER_MAX_LEN];
    h.encode(&mut buf).map(|b| b.to_vec()).unwrap_or_default()
}

fn header_json(h: &BlockHeader) -> Value {
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

fn cert_json(c: &FinalityCert) -> Value {
    json!({
        "height": c.height,
        "block_hash": c.block_hash.to_string(),
        "votes": c.votes.iter().map(|v| json!({
            "validator_key_id": hex(&v.validator.0),
            "signature": hex(&v.signature.0),
        })).collect::<Vec<_>>(),
    })
}

fn location_json(loc: TxLocation, block_hash: Option<Hash32>) -> Value {
    json!({ "height": loc.height, "index": loc.index, "block_hash": block_hash.map(|h| h.to_string()) })
}

// ---------------------------------------------------------------- handlers

async fn health(State(api): State<Api>) -> ApiResult {
    let node = api.node.clone();
    let state = node.state();
    let n = node.clone();
    let head = api.pool.run(move || Ok(n.store().head()?)).await?;
    let head = head.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_chain",
            "the store is empty",
        )
    })?;
    ok_json(json!({
        "status": "ok",
        "height": head.height,
        "head_hash": head.hash.to_string(),
        "chain_id": state.chain_id().to_string(),
    }))
}

async fn chain_head(State(api): State<Api>) -> ApiResult {
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
    let head = head.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_chain",
            "the store is empty",
        )
    })?;
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

async fn block(State(api): State<Api>, Path(height): Path<String>) -> ApiResult {
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

fn block_json(block: &Block, size: usize, cert: Option<&FinalityCert>, txs: Vec<Value>) -> Value {
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

async fn block_raw(State(api): State<Api>, Path(height): Path<String>) -> ApiResult {
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

/// Finds a transaction: (location, the block's hash, decoded, exact bytes).
fn find_tx(node: &Node, id: &Hash32) -> ApiResult<(TxLocation, Transaction, Vec<u8>)> {
    let store = node.store();
    let loc = store
        .tx_location(id)?
        .ok_or_else(|| ApiError::not_found("unknown_tx", format!("no transaction with id {id}")))?;
    let (tx, enc) = store.tx(loc)?.ok_or_else(|| {
        ApiError::internal(format!(
            "transaction {id} is indexed at {loc:?} but not stored there"
        ))
    })?;
    Ok((loc, tx, enc))
}

async fn tx(State(api): State<Api>, Path(id): Path<String>) -> ApiResult {
    let node = api.node.clone();
    let id = parse_tx_id(&id)?;
    let state = node.state();
    api.pool
        .run(move || {
            let (loc, tx, enc) = find_tx(&node, &id)?;
            let block_hash = node.store().header(loc.height)?.map(|h| h.hash());
            let mut v = tx_json(&state, &tx, &enc);
            v["location"] = location_json(loc, block_hash);
            ok_json(v)
        })
        .await
}

async fn tx_proof(State(api): State<Api>, Path(id): Path<String>) -> ApiResult {
    let node = api.node.clone();
    let id = parse_tx_id(&id)?;
    api.pool.run(move || {
        let store = node.store();
        let loc = store
            .tx_location(&id)?
            .ok_or_else(|| ApiError::not_found("unknown_tx", format!("no transaction with id {id}")))?;
        let proof = store
            .inclusion_proof(loc)?
            .ok_or_else(|| ApiError::not_found("unknown_tx", format!("no transaction with id {id}")))?;
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

/// A reading list's answer, written reading by reading into one buffer (no
/// tree of JSON values for the whole list) and stopped before it passes
/// `max_bytes` (then `truncated` with `next_from`; at least one reading is
/// always served).
fn readings_json(
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

async fn device_readings(
    State(api): State<Api>,
    Path(key): Path<String>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> ApiResult {
    let node = api.node.clone();
    let state = node.state();
    let device = known_key(&state, &key)?;
    let r = parse_range(q)?;
    let max = api.max_response_bytes;
    api.pool
        .run(move || {
            let refs = node
                .store()
                .readings_by_device(&device, r.from, r.to, r.limit)?;
            readings_json(&node, &state, refs, r, max)
        })
        .await
}

async fn stream_readings(
    State(api): State<Api>,
    Path((key, stream)): Path<(String, String)>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> ApiResult {
    let node = api.node.clone();
    let state = node.state();
    let device = known_key(&state, &key)?;
    let stream: u16 = stream.parse().map_err(|_| {
        ApiError::bad_request(
            "bad_stream",
            format!("{:?} is not a stream number (0 to 65535)", clip(&stream)),
        )
    })?;
    let r = parse_range(q)?;
    let max = api.max_response_bytes;
    api.pool
        .run(move || {
            let refs = node
                .store()
                .readings_by_stream(&device, stream, r.from, r.to, r.limit)?;
            readings_json(&node, &state, refs, r, max)
        })
        .await
}

async fn all_readings(
    State(api): State<Api>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> ApiResult {
    let node = api.node.clone();
    let state = node.state();
    let r = parse_range(q)?;
    let max = api.max_response_bytes;
    api.pool
        .run(move || {
            let refs = node.store().readings_by_time(r.from, r.to, r.limit)?;
            readings_json(&node, &state, refs, r, max)
        })
        .await
}

/// Every identity (built on the read pool: the list grows with the network).
async fn identities(State(api): State<Api>) -> ApiResult {
    let state = api.node.state();
    api.pool
        .run(move || {
            let list: Vec<Value> = state
                .identities()
                .map(|(pk, rec)| identity_json(pk, rec))
                .collect();
            ok_json(json!({ "count": list.len(), "identities": list }))
        })
        .await
}

async fn identity(State(node): State<Node>, Path(key): Path<String>) -> ApiResult {
    let state = node.state();
    let pk = known_key(&state, &key)?;
    let rec = state
        .identity(&pk)
        .ok_or_else(|| ApiError::internal("identity vanished"))?;
    let mut v = identity_json(&pk, rec);
    let devices: Vec<String> = state
        .identities()
        .filter(|(_, r)| r.patient == Some(pk))
        .map(|(d, _)| key_hex(d))
        .collect();
    let readers: Vec<String> = state
        .consents()
        .filter(|(p, _)| *p == pk)
        .map(|(_, r)| key_hex(r))
        .collect();
    let patients: Vec<String> = state
        .consents()
        .filter(|(_, r)| *r == pk)
        .map(|(p, _)| key_hex(p))
        .collect();
    v["devices"] = json!(devices);
    v["consented_readers"] = json!(readers);
    v["consented_by"] = json!(patients);
    ok_json(v)
}

async fn readers(State(node): State<Node>, Path(key): Path<String>) -> ApiResult {
    let state = node.state();
    let device = known_key(&state, &key)?;
    let patient = state.identity(&device).and_then(|r| r.patient);
    let list: Vec<Value> = state
        .authorised_readers(&device)
        .iter()
        .map(|r| {
            let rec = state.identity(r);
            json!({
                "key": key_hex(r),
                "address": r.address().to_string(),
                "key_id": hex(&r.key_id().0),
                "role": rec.and_then(|x| x.role).map(|x| x.name()),
                "via": if Some(*r) == patient { "patient" } else { "consent" },
            })
        })
        .collect();
    ok_json(json!({
        "device": key_hex(&device),
        "patient": patient.as_ref().map(key_hex),
        "readers": list,
    }))
}

async fn votes(State(node): State<Node>) -> ApiResult {
    let state = node.state();
    let list: Vec<Value> = state
        .pending_votes()
        .map(|(k, voters)| {
            json!({
                "target": key_hex(&k.target),
                "permission": perm_names(k.permission),
                "grant": k.grant,
                "voters": voters.iter().map(key_hex).collect::<Vec<_>>(),
                "votes": voters.len(),
                "votes_needed": state.votes_needed(),
            })
        })
        .collect();
    ok_json(json!({
        "admins": state.admin_count(),
        "votes_needed": state.votes_needed(),
        "votes": list,
    }))
}

/// Every consent (built on the read pool: the list grows with the network).
async fn consents(State(api): State<Api>) -> ApiResult {
    let state = api.node.state();
    api.pool
        .run(move || {
            let list: Vec<Value> = state
                .consents()
                .map(|(p, r)| {
                    json!({
                        "patient": key_hex(p),
                        "reader": key_hex(r),
                        "reader_role": state.identity(r).and_then(|x| x.role).map(|x| x.name()),
                    })
                })
                .collect();
            ok_json(json!({ "count": list.len(), "consents": list }))
        })
        .await
}

async fn metrics(State(node): State<Node>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        node.metrics().encode(),
    )
        .into_response()
}

/// `POST /txs` with `{"tx": "<hex>"}`.
#[derive(Debug, Deserialize)]
struct SubmitJson {
    tx: String,
}

async fn submit_tx(
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
