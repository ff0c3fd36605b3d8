//! Parsing of path and query parameters: keys (hex or address), heights,
//! transaction ids and the reading queries' `?from=&to=&limit=`.

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use serde::Deserialize;

use sensorchain_core::hash::{Hash32, parse_hex};
use sensorchain_core::identity::{Address, PublicKey};
use sensorchain_core::state::WorldState;

use super::errors::{ApiError, ApiResult, clip};
use super::{DEFAULT_LIMIT, MAX_LIMIT};

/// A key given as 64 hex digits or as a registered identity's base58 address.
pub(super) fn parse_key(state: &WorldState, s: &str) -> ApiResult<PublicKey> {
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
pub(super) fn known_key(state: &WorldState, s: &str) -> ApiResult<PublicKey> {
    let pk = parse_key(state, s)?;
    if state.identity(&pk).is_none() {
        return Err(ApiError::not_found(
            "unknown_identity",
            format!("no identity with key {pk}"),
        ));
    }
    Ok(pk)
}

pub(super) fn parse_height(s: &str) -> ApiResult<u64> {
    s.parse::<u64>().map_err(|_| {
        ApiError::bad_request("bad_height", format!("{:?} is not a block height", clip(s)))
    })
}

pub(super) fn parse_tx_id(s: &str) -> ApiResult<Hash32> {
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
pub(super) struct RangeQuery {
    from: Option<u64>,
    to: Option<u64>,
    limit: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Range {
    pub(super) from: u64,
    pub(super) to: u64,
    pub(super) limit: usize,
}

pub(super) fn parse_range(q: Result<Query<RangeQuery>, QueryRejection>) -> ApiResult<Range> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let from = q.from.unwrap_or(0);
    let to = q.to.unwrap_or(u64::MAX);
    check_order(from, to)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "bad_limit",
            format!("limit must be between 1 and {MAX_LIMIT}, got {limit}"),
        ));
    }
    Ok(Range { from, to, limit })
}

/// `?from=&to=` of `GET /chain/consistency` (`from` is required).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConsistencyQuery {
    from: Option<u64>,
    to: Option<u64>,
}

/// The heights of a consistency query: `from`, and `to` if given.
pub(super) fn parse_consistency(
    q: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> ApiResult<(u64, Option<u64>)> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let from = q.from.ok_or_else(|| {
        ApiError::bad_request(
            "bad_query",
            "from (the height of the block you hold) is required: ?from=M[&to=N]",
        )
    })?;
    Ok((from, q.to))
}

/// 400 `bad_range` if `from` is after `to`.
pub(super) fn check_order(from: u64, to: u64) -> ApiResult<()> {
    if from > to {
        return Err(ApiError::bad_request(
            "bad_range",
            format!("from ({from}) is after to ({to})"),
        ));
    }
    Ok(())
}
