//! The dashboard (docs/DASHBOARD.md): a page served by the gateway itself,
//! from bytes embedded in the binary — no CDN, nothing else to deploy —
//! and the live stream of finalized readings it draws from.
//!
//! | route | what | rule |
//! |---|---|---|
//! | `GET /` | a redirect to `/dashboard` | public |
//! | `GET /dashboard` | the page | public |
//! | `GET /assets/{file}` | its scripts, styles and the core as WebAssembly | public |
//! | `GET /readings/live` | server-sent events: each finalized reading the viewer may read, and each final block | all-readings |
//!
//! The page holds no secret of the gateway's and the gateway none of the
//! viewer's: the viewer's key stays in the page (it signs the login
//! challenge and transactions there, and opens sealed readings there), and
//! the page checks proofs, certificates and signatures with
//! `sensorchain-core` compiled to WebAssembly (`crates/sensorchain-wasm`,
//! `assets/sensorchain.wasm`, rebuilt and compared by `.ci/wasm.sh`).

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use sensorchain_core::access_log::Outcome;
use sensorchain_core::identity::PublicKey;
use sensorchain_core::permissions::Permissions;
use sensorchain_core::tx::{Transaction, TxKind};

use super::Api;
use super::access::{self, Caller, Note};
use super::json::{hex, key_hex, payload_json};
use crate::node::{NodeEvent, now_ms};

/// One embedded file: its name under `/assets/`, content type and bytes.
struct Asset {
    name: &'static str,
    ctype: &'static str,
    bytes: &'static [u8],
}

/// The page (`/dashboard`).
const INDEX: &[u8] = include_bytes!("assets/index.html");

/// Everything under `/assets/`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        ctype: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/app.js"),
    },
    Asset {
        name: "sc.js",
        ctype: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/sc.js"),
    },
    Asset {
        name: "app.css",
        ctype: "text/css; charset=utf-8",
        bytes: include_bytes!("assets/app.css"),
    },
    Asset {
        name: "sensorchain.wasm",
        ctype: "application/wasm",
        bytes: include_bytes!("assets/sensorchain.wasm"),
    },
    // uPlot 1.6.32 (MIT, its license beside it), unmodified from the npm
    // package's dist/
    Asset {
        name: "uPlot.iife.min.js",
        ctype: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/uPlot.iife.min.js"),
    },
    Asset {
        name: "uPlot.min.css",
        ctype: "text/css; charset=utf-8",
        bytes: include_bytes!("assets/uPlot.min.css"),
    },
    Asset {
        name: "uPlot.LICENSE",
        ctype: "text/plain; charset=utf-8",
        bytes: include_bytes!("assets/uPlot.LICENSE"),
    },
];

/// Bytes of the page and all its assets (docs/DASHBOARD.md states it).
pub fn page_bytes() -> usize {
    INDEX.len() + ASSETS.iter().map(|a| a.bytes.len()).sum::<usize>()
}

/// How long a browser may keep an asset before asking again (with its
/// `ETag`: an unchanged asset is a 304 then).
const ASSET_MAX_AGE: &str = "public, max-age=300";

/// `"<sha-256 of the bytes, 32 hex>"`, computed once per file.
fn etag(i: usize) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                format!(
                    "\"{}\"",
                    &hex(&sensorchain_core::hash::sha256(&[a.bytes]).0)[..32]
                )
            })
            .collect()
    });
    &tags[i]
}

/// `GET /`: to the dashboard.
pub(super) async fn root() -> Response {
    Redirect::to("/dashboard").into_response()
}

/// `GET /dashboard`.
pub(super) async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

/// `GET /assets/{file}`: an embedded file, 404 `no_route` for any other
/// name.
pub(super) async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == file) else {
        return super::errors::not_found(
            axum::http::Method::GET,
            format!("/assets/{file}").parse().unwrap_or_default(),
        )
        .await
        .into_response();
    };
    let a = &ASSETS[i];
    let tag = etag(i);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, a.ctype)], a.bytes).into_response()
    };
    let h = res.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static(tag));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(ASSET_MAX_AGE),
    );
    res
}

/// A finalized reading as the stream sends it: the fields of a reading in
/// `GET /readings`.
fn reading_json(
    state: &sensorchain_core::state::WorldState,
    tx: &Transaction,
    height: u64,
    index: usize,
) -> Option<Value> {
    let TxKind::Reading { stream, payload } = &tx.body.kind else {
        return None;
    };
    let enc = tx.to_vec();
    Some(json!({
        "device": key_hex(&tx.body.signer),
        "device_address": tx.body.signer.address().to_string(),
        "stream": stream,
        "sequence": tx.body.sequence,
        "timestamp_ms": tx.body.timestamp_ms,
        "height": height,
        "index": index,
        "tx_id": hex(&Transaction::id_of_encoded(&enc).0),
        "value": payload_json(state, payload),
    }))
}

/// What one final block gives a viewer: the block event, and its readings
/// the viewer may read now (with the devices they come from).
struct Batch {
    events: Vec<Event>,
    devices: BTreeSet<PublicKey>,
}

/// Reads the block at `height` and keeps what `me` may read under the
/// world state as it is now.
fn batch(api: &Api, me: PublicKey, height: u64) -> Result<Batch, super::ApiError> {
    let node = &api.node;
    let state = node.state();
    let mut out = Batch {
        events: Vec::new(),
        devices: BTreeSet::new(),
    };
    let Some(bytes) = node.store().block_bytes(height)? else {
        return Ok(out);
    };
    let block = crate::store::decode_block(height, &bytes)?;
    out.events.push(
        Event::default().event("block").data(
            json!({
                "height": height,
                "hash": hex(&block.header.hash().0),
                "txs": block.txs.len(),
                "timestamp_ms": block.header.timestamp_ms,
            })
            .to_string(),
        ),
    );
    for (i, tx) in block.txs.iter().enumerate() {
        if !matches!(tx.body.kind, TxKind::Reading { .. }) || !state.may_read(&tx.body.signer, &me)
        {
            continue;
        }
        if let Some(v) = reading_json(&state, tx, height, i) {
            out.devices.insert(tx.body.signer);
            out.events
                .push(Event::default().event("reading").data(v.to_string()));
        }
    }
    Ok(out)
}

/// The longest a stream stays open (a session's life): the page opens a
/// new one, which checks the session again.
const STREAM_MAX: Duration = Duration::from_millis(super::SESSION_TTL_MS);

/// `GET /readings/live`: server-sent events — `block` for each final block
/// (`{height, hash, txs, timestamp_ms}`), then `reading` for each of its
/// readings the viewer may read (the shape of a reading in `GET
/// /readings`). The devices readable at the start are recorded in the
/// access log when the stream opens (like `GET /readings`, from now on);
/// a device that becomes readable later is recorded before its first
/// reading is sent. The rule is checked again for every block against the
/// world state of that moment: a revoked viewer's stream ends (event
/// `end`), a withdrawn consent stops that device's readings.
pub(super) async fn live(State(api): State<Api>, Extension(caller): Extension<Caller>) -> Response {
    let Some(me) = caller.key else {
        return super::auth::unauthenticated("the live stream needs a session").into_response();
    };
    let now = now_ms();
    let devices = caller.readable_devices();
    let notes: Vec<Note> = devices
        .iter()
        .map(|d| Note::readings(&caller, *d, None, now, u64::MAX))
        .collect();
    let logged: BTreeSet<PublicKey> = devices.into_iter().collect();
    let rx = api.node.subscribe();
    let deadline = tokio::time::Instant::now() + STREAM_MAX;
    struct St {
        api: Api,
        me: PublicKey,
        rx: tokio::sync::broadcast::Receiver<NodeEvent>,
        last: Option<u64>,
        logged: BTreeSet<PublicKey>,
        queue: std::collections::VecDeque<Event>,
        deadline: tokio::time::Instant,
        done: bool,
    }
    let st = St {
        api,
        me,
        rx,
        last: None,
        logged,
        queue: std::collections::VecDeque::from([Event::default()
            .event("hello")
            .data(json!({ "viewer": key_hex(&me) }).to_string())]),
        deadline,
        done: false,
    };
    let stream = futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(e) = st.queue.pop_front() {
                return Some((Ok::<Event, Infallible>(e), st));
            }
            if st.done {
                return None;
            }
            let ev = tokio::select! {
                ev = st.rx.recv() => ev,
                _ = tokio::time::sleep_until(st.deadline) => {
                    st.done = true;
                    st.queue.push_back(Event::default().event("end").data("session time is up"));
                    continue;
                }
            };
            let height = match ev {
                Ok(NodeEvent::Final { height, .. }) => height,
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            };
            // the viewer still connects (a revocation ends its stream)
            let state = st.api.node.state();
            if !state.permissions(&st.me).contains(Permissions::CONNECT) {
                st.done = true;
                st.queue.push_back(
                    Event::default()
                        .event("end")
                        .data("the viewer lost connect"),
                );
                continue;
            }
            // every height since the last one sent (events may be missed
            // under load), at most 64 at once
            let from = match st.last {
                Some(l) if l < height => (l + 1).max(height.saturating_sub(63)),
                Some(_) => continue,
                None => height,
            };
            st.last = Some(height);
            for h in from..=height {
                let (api, me) = (st.api.clone(), st.me);
                let b = match st.api.pool.run(move || batch(&api, me, h)).await {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::debug!("live stream: block {h}: {}", e.message);
                        continue;
                    }
                };
                let new: Vec<Note> = b
                    .devices
                    .iter()
                    .filter(|d| !st.logged.contains(d))
                    .map(|d| {
                        let c = Caller {
                            key: Some(st.me),
                            state: state.clone(),
                        };
                        Note::readings(&c, *d, None, now_ms(), u64::MAX)
                    })
                    .collect();
                if !new.is_empty() {
                    if st
                        .api
                        .log
                        .record(st.me, &new, Outcome::Allowed)
                        .await
                        .is_err()
                    {
                        // not recorded: not served
                        st.done = true;
                        st.queue.push_back(
                            Event::default()
                                .event("end")
                                .data("the access log cannot record this read"),
                        );
                        break;
                    }
                    st.logged.extend(b.devices.iter().copied());
                }
                st.queue.extend(b.events);
            }
        }
    });
    let res = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    access::with_notes(res, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_light() {
        // docs/DASHBOARD.md states the sizes; keep the page small
        assert!(page_bytes() < 400 * 1024, "{} bytes", page_bytes());
        for a in ASSETS {
            assert!(!a.bytes.is_empty(), "{}", a.name);
        }
    }
}
