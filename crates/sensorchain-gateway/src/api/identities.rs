//! The world state's people and rules: `GET /identities`,
//! `GET /identities/{key}`, `GET /identities/{key}/readers`, `GET /votes`
//! and `GET /consents`.

use axum::extract::{Path, State};
use serde_json::{Value, json};

use sensorchain_core::state::WorldState;

use super::errors::{ApiError, ApiResult};
use super::json::{hex, identity_json, key_hex, perm_names};
use super::params::known_key;
use super::{Api, ok_json};
use crate::node::Node;

/// Every identity (built on the read pool: the list grows with the network).
pub(super) async fn identities(State(api): State<Api>) -> ApiResult {
    let node = api.node.clone();
    list_on_pool(&api, "identities", move |state| {
        state
            .identities()
            .map(|(pk, rec)| {
                let mut v = identity_json(pk, rec);
                v["links"] = links_json(&node, pk);
                v
            })
            .collect()
    })
    .await
}

/// What this gateway saw of `pk`'s links: live sessions here and refused
/// submissions by reason, since the gateway started.
fn links_json(node: &Node, pk: &sensorchain_core::identity::PublicKey) -> Value {
    let d = node.device_stats().of(pk);
    json!({
        "live_sessions": d.live_sessions,
        "rejected": d.rejected,
    })
}

pub(super) async fn identity(State(node): State<Node>, Path(key): Path<String>) -> ApiResult {
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
    v["links"] = links_json(&node, &pk);
    v["consented_readers"] = json!(readers);
    v["consented_by"] = json!(patients);
    ok_json(v)
}

pub(super) async fn readers(State(node): State<Node>, Path(key): Path<String>) -> ApiResult {
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

pub(super) async fn votes(State(node): State<Node>) -> ApiResult {
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
pub(super) async fn consents(State(api): State<Api>) -> ApiResult {
    list_on_pool(&api, "consents", |state| {
        state
            .consents()
            .map(|(p, r)| {
                json!({
                    "patient": key_hex(p),
                    "reader": key_hex(r),
                    "reader_role": state.identity(r).and_then(|x| x.role).map(|x| x.name()),
                })
            })
            .collect()
    })
    .await
}

/// `{"count": n, name: [...]}` of the list `build` makes from the world
/// state, built on the read pool (these lists grow with the network).
async fn list_on_pool(
    api: &Api,
    name: &'static str,
    build: impl FnOnce(&WorldState) -> Vec<Value> + Send + 'static,
) -> ApiResult {
    let state = api.node.state();
    api.pool
        .run(move || {
            let list = build(&state);
            let mut o = serde_json::Map::new();
            o.insert("count".into(), json!(list.len()));
            o.insert(name.into(), Value::Array(list));
            ok_json(Value::Object(o))
        })
        .await
}
