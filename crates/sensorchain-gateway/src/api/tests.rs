//! The API driven in memory (`tower::ServiceExt::oneshot`) and over a real
//! loopback socket, on a node in a temporary directory.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use tower::ServiceExt;

use sensorchain_core::block::{Block, BlockHeader};
use sensorchain_core::chain::Chain;
use sensorchain_core::hash::{Hash32, parse_hex};
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::login::LoginChallenge;
use sensorchain_core::merkle::verify_inclusion;
use sensorchain_core::permissions::{Permissions, Role};
use sensorchain_core::reading::Vital;
use sensorchain_core::sealed;
use sensorchain_core::tx::{
    GenesisConfig, Member, Params, Payload, Transaction, TxBody, TxKind, sealed_binding,
};

use super::*;
use crate::metrics::Metrics;
use crate::node::{NodeConfig, Rejected, now_ms};
use crate::store::Store;

struct Fx {
    admin: Keypair,
    admin2: Keypair,
    gateway: Keypair,
    device: Keypair,
    patient: Keypair,
    doctor: Keypair,
    insurer: Keypair,
    genesis: Block,
    node: Node,
    _dir: tempfile::TempDir,
}

impl Fx {
    fn chain(&self) -> sensorchain_core::hash::ChainId {
        self.genesis.header.chain_id
    }

    fn sign(&self, kp: &Keypair, sequence: u64, kind: TxKind) -> Vec<u8> {
        let body = TxBody {
            signer: kp.public(),
            sequence,
            timestamp_ms: now_ms(),
            kind,
        };
        Transaction::sign(body, &self.chain(), kp).unwrap().to_vec()
    }

    fn reading(&self, seq: u64, stream: u16, v: Vital) -> Vec<u8> {
        self.reading_at(seq, stream, now_ms(), v)
    }

    fn reading_at(&self, seq: u64, stream: u16, ts: u64, v: Vital) -> Vec<u8> {
        let body = TxBody::reading(self.device.public(), seq, ts, stream, v);
        Transaction::sign(body, &self.chain(), &self.device)
            .unwrap()
            .to_vec()
    }

    fn router(&self) -> Router {
        router(self.node.clone())
    }
}

/// A genesis of two admins (admin consensus 1/1: both must vote on
/// `ADMIN`/`VALIDATE`), a gateway, a device, a patient, a doctor and an
/// insurer, and a node on it.
fn fixture() -> Fx {
    let [admin, gateway, device, patient, doctor, insurer, admin2] =
        [1, 2, 3, 4, 5, 6, 7].map(|n| Keypair::from_seed([n; 32]));
    let m = |k: &Keypair, role: Role| Member::of_role(k.public(), role);
    let members = [
        m(&admin, Role::Admin),
        m(&admin2, Role::Admin),
        m(&gateway, Role::Gateway),
        m(&device, Role::Device),
        m(&patient, Role::Patient),
        m(&doctor, Role::Doctor),
        m(&insurer, Role::Insurer),
    ];
    let params = Params {
        admin_consensus_num: 1,
        admin_consensus_den: 1,
        ..Params::default()
    };
    let cfg = GenesisConfig::new("api-test", params, &members).unwrap();
    let genesis = Chain::genesis_block(&admin, cfg, 1_000).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let ncfg = NodeConfig {
        batch_timeout: Duration::from_millis(2),
        snapshot_every: 4,
        ..Default::default()
    };
    let node = Node::start(
        store,
        gateway.clone(),
        &genesis,
        ncfg,
        Arc::new(Metrics::new()),
    )
    .unwrap();
    Fx {
        admin,
        admin2,
        gateway,
        device,
        patient,
        doctor,
        insurer,
        genesis,
        node,
        _dir: dir,
    }
}

fn hx(pk: &PublicKey) -> String {
    hex::encode(pk.0)
}

fn h32(v: &Value) -> Hash32 {
    Hash32(parse_hex::<32>(v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))).unwrap())
}

struct Resp {
    status: StatusCode,
    ctype: String,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts a JSON error with `status` and `code`.
    fn err(&self, status: StatusCode, code: &str) {
        let j = self.json();
        assert_eq!(self.status, status, "{j}");
        assert_eq!(j["error"]["code"], code, "{j}");
        assert!(
            j["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{j}"
        );
        assert!(self.ctype.starts_with("application/json"), "{}", self.ctype);
    }
}

async fn send(r: &Router, req: Request<Body>) -> Resp {
    let res = r.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let ctype = res
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    // an event stream does not end: its head is the answer
    let body = if ctype.starts_with("text/event-stream") {
        Vec::new()
    } else {
        axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec()
    };
    Resp {
        status,
        ctype,
        body,
    }
}

async fn get(r: &Router, uri: &str) -> Resp {
    send(r, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn get_ok(r: &Router, uri: &str) -> Value {
    let res = get(r, uri).await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{uri}: {}",
        String::from_utf8_lossy(&res.body)
    );
    res.json()
}

async fn post_raw(r: &Router, tx: &[u8]) -> Resp {
    let req = Request::post("/txs")
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from(tx.to_vec()))
        .unwrap();
    send(r, req).await
}

async fn post_json(r: &Router, body: Value) -> Resp {
    let req = Request::post("/txs")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    send(r, req).await
}

/// Submits and expects 201; returns the answer.
async fn commit(r: &Router, tx: &[u8]) -> Value {
    let res = post_raw(r, tx).await;
    assert_eq!(
        res.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    res.json()
}

/// Logs `kp` in on `r` (the router whose auth state keeps the session):
/// the token.
async fn login(r: &Router, kp: &Keypair) -> String {
    let res = send(
        r,
        Request::post("/auth/challenge")
            .header(header::HOST, "localhost")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    let c = res.json();
    let ch = LoginChallenge {
        chain_id: sensorchain_core::hash::ChainId(
            parse_hex(c["chain_id"].as_str().unwrap()).unwrap(),
        ),
        gateway: PublicKey(parse_hex(c["gateway"].as_str().unwrap()).unwrap()),
        identity: kp.public(),
        nonce: parse_hex(c["challenge"].as_str().unwrap()).unwrap(),
        expires_ms: c["expires_ms"].as_u64().unwrap(),
    };
    let res = login_with(r, &ch, &ch.sign(kp)).await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    res.json()["token"].as_str().unwrap().to_string()
}

/// `POST /auth/login` of the challenge `ch` signed `sig`.
async fn login_with(
    r: &Router,
    ch: &LoginChallenge,
    sig: &sensorchain_core::identity::Signature,
) -> Resp {
    let body = json!({
        "key": hx(&ch.identity),
        "challenge": hex::encode(ch.nonce),
        "expires_ms": ch.expires_ms,
        "signature": hex::encode(sig.0),
    });
    send(
        r,
        Request::post("/auth/login")
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
    .await
}

/// `r` sending `token` with every request.
fn with_token(r: &Router, token: &str) -> Router {
    let v = header::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    r.clone().layer(axum::middleware::map_request(
        move |mut req: Request<Body>| {
            let v = v.clone();
            async move {
                req.headers_mut().insert(header::AUTHORIZATION, v);
                req
            }
        },
    ))
}

/// `r` logged in as `kp`.
async fn as_user(r: &Router, kp: &Keypair) -> Router {
    let t = login(r, kp).await;
    with_token(r, &t)
}

/// Assigns the fixture's device to its patient (the admin's sequence
/// number `seq`).
async fn assign_device(f: &Fx, r: &Router, seq: u64) {
    commit(
        r,
        &f.sign(
            &f.admin,
            seq,
            TxKind::AssignDevice {
                device: f.device.public(),
                patient: f.patient.public(),
            },
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_head_and_fallbacks() {
    let f = fixture();
    let r = f.router();
    let h = get_ok(&r, "/health").await;
    assert_eq!(h["status"], "ok");
    assert_eq!(h["height"], 0);
    assert_eq!(h32(&h["head_hash"]), f.genesis.hash());
    assert_eq!(h["chain_id"], f.chain().to_string());

    let head = get_ok(&r, "/chain/head").await;
    assert_eq!(head["height"], 0);
    assert_eq!(h32(&head["hash"]), f.genesis.hash());
    assert_eq!(head["tx_count_total"], 1);
    assert_eq!(head["reading_count_total"], 0);
    assert_eq!(head["chain_name"], "api-test");
    assert_eq!(head["params"]["admin_consensus_den"], 1);
    assert_eq!(head["params"]["max_block_txs"], 10_000);
    assert_eq!(head["admins"], 2);
    assert_eq!(head["votes_needed"], 2);
    assert_eq!(head["validators"], json!([hx(&f.gateway.public())]));
    assert_eq!(head["gateway"], hx(&f.gateway.public()));

    get(&r, "/nope")
        .await
        .err(StatusCode::NOT_FOUND, "no_route");
    let res = send(&r, Request::delete("/health").body(Body::empty()).unwrap()).await;
    res.err(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

/// `GET /cluster` of a single gateway: a cluster of one that leads, whose
/// committed blocks are final (certified by its own vote).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_of_one_status() {
    let f = fixture();
    let r = f.router();
    let c = commit(&r, &f.reading(1, 0, Vital::HeartRate { bpm: 70 })).await;
    let height = c["height"].as_u64().unwrap();
    let s = get_ok(&r, "/cluster").await;
    assert_eq!(s["node_id"], 1);
    assert_eq!(s["role"], "leader");
    assert_eq!(s["leader"], 1);
    assert_eq!(s["health"], "ok");
    assert_eq!(s["height"], height);
    // acknowledged means final
    assert!(s["finalized_height"].as_u64().unwrap() >= height, "{s}");
    assert_eq!(s["members"].as_array().unwrap().len(), 1);
    assert_eq!(s["members"][0]["key"], hx(&f.gateway.public()));
    assert_eq!(s["members"][0]["voter"], true);
    assert_eq!(s["members"][0]["lag"], 0);
    assert_eq!(s["evidence"], 0);
    assert_eq!(s["evidence_pairs"], json!([]));
    // the block's public header serves its certificate
    let b = get_ok(&r, &format!("/blocks/{height}/header")).await;
    assert!(!b["finality_cert"].is_null(), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_and_raw_bytes() {
    let f = fixture();
    let r = as_user(&f.router(), &f.gateway).await;
    let b = get_ok(&r, "/blocks/0").await;
    assert_eq!(b["height"], 0);
    assert_eq!(h32(&b["hash"]), f.genesis.hash());
    assert_eq!(b["tx_count"], 1);
    assert_eq!(b["txs"][0]["kind"], "genesis");
    assert!(
        b["txs"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("api-test"),
        "{b}"
    );
    assert_eq!(b["header"]["prev_hash"], Hash32::ZERO.to_string());
    assert_eq!(b["proposer"], hx(&f.admin.public()));
    // the header bytes hash to the block hash
    let hb = hex::decode(b["header_hex"].as_str().unwrap()).unwrap();
    assert_eq!(BlockHeader::decode(&hb).unwrap().hash(), f.genesis.hash());

    // a reading makes a block (after the access log's anchor of the read
    // above, when that went first: the gateway anchors its log's head on
    // the chain)
    let c = commit(&r, &f.reading(1, 0, Vital::HeartRate { bpm: 72 })).await;
    let h = c["height"].as_u64().unwrap();
    assert!(h >= 1);
    let prev = get_ok(&r, &format!("/blocks/{}", h - 1)).await;
    let b1 = get_ok(&r, &format!("/blocks/{h}")).await;
    assert_eq!(b1["header"]["prev_hash"], prev["hash"]);
    assert_eq!(b1["proposer"], hx(&f.gateway.public()));
    let mine = b1["txs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == c["tx_id"])
        .expect("the reading is in its block");
    assert_eq!(mine["kind"], "reading");
    assert!(mine["summary"].as_str().unwrap().contains("72 bpm"), "{b1}");

    let raw = get(&r, &format!("/blocks/{h}/raw")).await;
    assert_eq!(raw.status, StatusCode::OK);
    assert_eq!(raw.ctype, "application/octet-stream");
    assert_eq!(raw.body, f.node.store().block_bytes(h).unwrap().unwrap());
    assert_eq!(Block::decode(&raw.body).unwrap().hash(), h32(&b1["hash"]));

    get(&r, "/blocks/99")
        .await
        .err(StatusCode::NOT_FOUND, "unknown_block");
    get(&r, "/blocks/99/raw")
        .await
        .err(StatusCode::NOT_FOUND, "unknown_block");
    get(&r, "/blocks/x")
        .await
        .err(StatusCode::BAD_REQUEST, "bad_height");
    get(&r, "/blocks/-1/raw")
        .await
        .err(StatusCode::BAD_REQUEST, "bad_height");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_and_grant_through_post_change_readers() {
    let f = fixture();
    let r = as_user(&f.router(), &f.admin).await;
    let dev = hx(&f.device.public());
    // unassigned device: nobody may read
    let rd = get_ok(&r, &format!("/identities/{dev}/readers")).await;
    assert_eq!(rd["patient"], Value::Null);
    assert_eq!(rd["readers"], json!([]));

    // admin assigns the device to the patient (raw bytes)
    let assign = f.sign(
        &f.admin,
        1,
        TxKind::AssignDevice {
            device: f.device.public(),
            patient: f.patient.public(),
        },
    );
    commit(&r, &assign).await;
    // the patient consents to the doctor (JSON hex)
    let consent = f.sign(
        &f.patient,
        1,
        TxKind::Consent {
            reader: f.doctor.public(),
            granted: true,
        },
    );
    let res = post_json(&r, json!({ "tx": hex::encode(&consent) })).await;
    assert_eq!(
        res.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    let c = res.json();
    assert_eq!(c["tx_id"], Transaction::id_of_encoded(&consent).to_string());
    assert!(c["height"].as_u64().unwrap() >= 1);
    assert_eq!(c["index"], 0);
    assert!(c["block_hash"].is_string());

    let rd = get_ok(&r, &format!("/identities/{dev}/readers")).await;
    assert_eq!(rd["patient"], hx(&f.patient.public()));
    let keys: Vec<&str> = rd["readers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 2, "{rd}");
    assert!(keys.contains(&hx(&f.patient.public()).as_str()));
    assert!(keys.contains(&hx(&f.doctor.public()).as_str()));
    let doc = rd["readers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["role"] == "doctor")
        .unwrap();
    assert_eq!(doc["via"], "consent");
    // the insurer is not a reader
    assert!(!keys.contains(&hx(&f.insurer.public()).as_str()));

    // a grant: the admin gives the device SEND (one admin suffices for the
    // bits outside admin consensus)
    let grant = f.sign(
        &f.admin,
        2,
        TxKind::Grant {
            target: f.device.public(),
            permissions: Permissions::SEND,
        },
    );
    commit(&r, &grant).await;
    let d = get_ok(&r, &format!("/identities/{dev}")).await;
    assert_eq!(d["permissions"], json!(["connect", "send", "write"]));
    assert_eq!(d["role"], "device");
    assert_eq!(d["patient"], hx(&f.patient.public()));
    // by address too
    let addr = f.device.public().address().to_string();
    let d2 = get_ok(&r, &format!("/identities/{addr}")).await;
    assert_eq!(d2["key"], dev);
    assert_eq!(d2["address"], addr);

    let p = get_ok(&r, &format!("/identities/{}", hx(&f.patient.public()))).await;
    assert_eq!(p["devices"], json!([dev]));
    assert_eq!(p["consented_readers"], json!([hx(&f.doctor.public())]));
    assert_eq!(p["last_sequence"], 1);
    let doc = get_ok(&r, &format!("/identities/{}", hx(&f.doctor.public()))).await;
    assert_eq!(doc["consented_by"], json!([hx(&f.patient.public())]));

    let all = get_ok(&r, "/identities").await;
    assert_eq!(all["count"], 7);
    let admin = all["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["key"] == hx(&f.admin.public()))
        .unwrap();
    assert_eq!(admin["role"], "admin");
    assert_eq!(admin["permissions"], json!(["connect", "send", "admin"]));
    assert_eq!(admin["last_sequence"], 2);
    assert_eq!(admin["key_id"], hex::encode(f.admin.public().key_id().0));

    let cs = get_ok(&r, "/consents").await;
    assert_eq!(cs["count"], 1);
    assert_eq!(cs["consents"][0]["patient"], hx(&f.patient.public()));
    assert_eq!(cs["consents"][0]["reader"], hx(&f.doctor.public()));
    assert_eq!(cs["consents"][0]["reader_role"], "doctor");

    // withdrawing the consent removes the doctor
    let withdraw = f.sign(
        &f.patient,
        2,
        TxKind::Consent {
            reader: f.doctor.public(),
            granted: false,
        },
    );
    commit(&r, &withdraw).await;
    let rd = get_ok(&r, &format!("/identities/{dev}/readers")).await;
    assert_eq!(rd["readers"].as_array().unwrap().len(), 1, "{rd}");
    assert_eq!(get_ok(&r, "/consents").await["count"], 0);

    // errors
    get(&r, "/identities/zz")
        .await
        .err(StatusCode::BAD_REQUEST, "bad_key");
    get(&r, &format!("/identities/{}", "ab".repeat(32)))
        .await
        .err(StatusCode::NOT_FOUND, "unknown_identity");
    get(&r, &format!("/identities/{}/readers", "ab".repeat(32)))
        .await
        .err(StatusCode::NOT_FOUND, "unknown_identity");
    let stranger = Keypair::from_seed([9; 32]).public().address().to_string();
    get(&r, &format!("/identities/{stranger}"))
        .await
        .err(StatusCode::NOT_FOUND, "unknown_identity");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_consensus_votes() {
    let f = fixture();
    let r = as_user(&f.router(), &f.admin).await;
    let v = get_ok(&r, "/votes").await;
    assert_eq!(v["votes"], json!([]));
    assert_eq!(v["votes_needed"], 2);
    // one of two admins votes to make the doctor a validator: pending
    let grant = f.sign(
        &f.admin,
        1,
        TxKind::Grant {
            target: f.doctor.public(),
            permissions: Permissions::VALIDATE,
        },
    );
    commit(&r, &grant).await;
    let v = get_ok(&r, "/votes").await;
    assert_eq!(v["votes"].as_array().unwrap().len(), 1, "{v}");
    let vote = &v["votes"][0];
    assert_eq!(vote["target"], hx(&f.doctor.public()));
    assert_eq!(vote["permission"], json!(["validate"]));
    assert_eq!(vote["grant"], true);
    assert_eq!(vote["voters"], json!([hx(&f.admin.public())]));
    assert_eq!(vote["votes"], 1);
    // the second admin's vote completes it
    let grant2 = f.sign(
        &f.admin2,
        1,
        TxKind::Grant {
            target: f.doctor.public(),
            permissions: Permissions::VALIDATE,
        },
    );
    commit(&r, &grant2).await;
    assert_eq!(get_ok(&r, "/votes").await["votes"], json!([]));
    let d = get_ok(&r, &format!("/identities/{}", hx(&f.doctor.public()))).await;
    assert!(
        d["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("validate")),
        "{d}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_tx_and_inclusion_proof() {
    let f = fixture();
    let base = f.router();
    assign_device(&f, &base, 1).await;
    let r = as_user(&base, &f.patient).await;
    let dev = hx(&f.device.public());
    let t0 = now_ms() - 10_000;
    let vitals = [
        (0u16, Vital::HeartRate { bpm: 72 }),
        (
            1,
            Vital::BodyTemperature {
                centi_celsius: 3705,
            },
        ),
        (2, Vital::SpO2 { percent: 97 }),
        (
            3,
            Vital::BloodPressure {
                systolic_mmhg: 121,
                diastolic_mmhg: 79,
            },
        ),
        (0, Vital::HeartRate { bpm: 75 }),
    ];
    let mut ids = Vec::new();
    for (i, (stream, v)) in vitals.iter().enumerate() {
        let c = commit(
            &r,
            &f.reading_at(i as u64 + 1, *stream, t0 + i as u64 * 1000, v.clone()),
        )
        .await;
        ids.push(c["tx_id"].as_str().unwrap().to_string());
    }

    // by device, oldest first
    let all = get_ok(&r, &format!("/devices/{dev}/readings")).await;
    assert_eq!(all["count"], 5);
    assert_eq!(all["truncated"], false);
    let rs = all["readings"].as_array().unwrap();
    assert_eq!(rs[0]["tx_id"], ids[0]);
    assert_eq!(rs[0]["device"], dev);
    assert_eq!(rs[0]["sequence"], 1);
    assert_eq!(rs[0]["timestamp_ms"], t0);
    assert_eq!(
        rs[0]["value"],
        json!({ "encoding": "plain", "vital": "heart_rate", "bpm": 72, "display": "72 bpm" })
    );
    assert_eq!(rs[1]["value"]["centi_celsius"], 3705);
    assert_eq!(rs[2]["value"]["percent"], 97);
    assert_eq!(rs[3]["value"]["systolic_mmhg"], 121);
    assert_eq!(rs[3]["value"]["diastolic_mmhg"], 79);
    assert_eq!(rs[3]["stream"], 3);
    // a window and a limit
    let w = get_ok(
        &r,
        &format!(
            "/devices/{dev}/readings?from={}&to={}",
            t0 + 1000,
            t0 + 3000
        ),
    )
    .await;
    assert_eq!(w["count"], 3);
    assert_eq!(w["readings"][0]["sequence"], 2);
    let l = get_ok(&r, &format!("/devices/{dev}/readings?limit=2")).await;
    assert_eq!(l["count"], 2);
    assert_eq!(l["truncated"], true);
    assert_eq!(l["next_from"], t0 + 1000);
    // by stream
    let s = get_ok(&r, &format!("/devices/{dev}/streams/0/readings")).await;
    assert_eq!(s["count"], 2);
    assert_eq!(s["readings"][1]["value"]["bpm"], 75);
    // by address
    let addr = f.device.public().address().to_string();
    assert_eq!(
        get_ok(&r, &format!("/devices/{addr}/streams/3/readings")).await["count"],
        1
    );
    // every device, by time
    let t = get_ok(
        &r,
        &format!("/readings?from={t0}&to={}&limit=10000", t0 + 4000),
    )
    .await;
    assert_eq!(t["count"], 5);
    assert_eq!(t["readings"][4]["tx_id"], ids[4]);
    assert_eq!(get_ok(&r, "/readings?to=0").await["count"], 0);

    // parameter errors
    get(&r, &format!("/devices/{dev}/readings?from=5&to=4"))
        .await
        .err(StatusCode::BAD_REQUEST, "bad_range");
    get(&r, &format!("/devices/{dev}/readings?limit=10001"))
        .await
        .err(StatusCode::BAD_REQUEST, "bad_limit");
    get(&r, "/readings?limit=0")
        .await
        .err(StatusCode::BAD_REQUEST, "bad_limit");
    get(&r, "/readings?from=abc")
        .await
        .err(StatusCode::BAD_REQUEST, "bad_query");
    get(&r, "/readings?bogus=1")
        .await
        .err(StatusCode::BAD_REQUEST, "bad_query");
    get(&r, "/devices/xyz/readings")
        .await
        .err(StatusCode::BAD_REQUEST, "bad_key");
    // an unknown key is not the patient's to read: refused like another's
    get(&r, &format!("/devices/{}/readings", "cd".repeat(32)))
        .await
        .err(StatusCode::FORBIDDEN, "forbidden");
    get(&r, &format!("/devices/{dev}/streams/65536/readings"))
        .await
        .err(StatusCode::BAD_REQUEST, "bad_stream");

    // the transaction, decoded
    let tx = get_ok(&r, &format!("/txs/{}", ids[3])).await;
    assert_eq!(tx["id"], ids[3]);
    assert_eq!(tx["kind"], "reading");
    assert_eq!(tx["signer"], dev);
    assert_eq!(tx["sequence"], 4);
    assert_eq!(tx["body"]["stream"], 3);
    assert_eq!(tx["body"]["value"]["vital"], "blood_pressure");
    assert_eq!(tx["location"]["index"], 0);
    let raw = hex::decode(tx["raw"].as_str().unwrap()).unwrap();
    assert_eq!(Transaction::id_of_encoded(&raw).to_string(), ids[3]);

    // its inclusion proof checks against the header's tx_root
    let p = get_ok(&r, &format!("/txs/{}/proof", ids[3])).await;
    let path: Vec<Hash32> = p["path"].as_array().unwrap().iter().map(h32).collect();
    let header =
        BlockHeader::decode(&hex::decode(p["header_hex"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(header.hash(), h32(&p["block_hash"]));
    assert_eq!(header.tx_root, h32(&p["tx_root"]));
    assert_eq!(h32(&p["leaf_hash"]).to_string(), ids[3]);
    verify_inclusion(
        &h32(&p["leaf_hash"]),
        p["index"].as_u64().unwrap(),
        p["tree_size"].as_u64().unwrap(),
        &path,
        &header.tx_root,
    )
    .unwrap();
    assert_eq!(p["height"], tx["location"]["height"]);
    assert_eq!(p["block_hash"], tx["location"]["block_hash"]);

    get(&r, &format!("/txs/{}", "00".repeat(32)))
        .await
        .err(StatusCode::NOT_FOUND, "unknown_tx");
    get(&r, &format!("/txs/{}/proof", "00".repeat(32)))
        .await
        .err(StatusCode::NOT_FOUND, "unknown_tx");
    get(&r, "/txs/123")
        .await
        .err(StatusCode::BAD_REQUEST, "bad_tx_id");
    get(&r, "/txs/123/proof")
        .await
        .err(StatusCode::BAD_REQUEST, "bad_tx_id");
}

/// Several transactions (from different signers, submitted at once, so
/// they usually share a block): every one's proof verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_in_a_multi_tx_block() {
    let f = fixture();
    let r = f.router();
    let txs = vec![
        f.reading(1, 0, Vital::HeartRate { bpm: 61 }),
        f.sign(
            &f.patient,
            1,
            TxKind::Consent {
                reader: f.doctor.public(),
                granted: true,
            },
        ),
        f.sign(
            &f.admin,
            1,
            TxKind::Grant {
                target: f.insurer.public(),
                permissions: Permissions::SEND,
            },
        ),
        f.sign(
            &f.admin2,
            1,
            TxKind::SetRole {
                target: f.doctor.public(),
                role: Role::Nurse,
            },
        ),
        // refused (an insurer may not send): left out of the block
        f.sign(
            &f.insurer,
            1,
            TxKind::Consent {
                reader: f.doctor.public(),
                granted: true,
            },
        ),
    ];
    let handles: Vec<_> = txs
        .into_iter()
        .map(|t| {
            let n = f.node.clone();
            tokio::spawn(async move { n.submit(t, None).await })
        })
        .collect();
    let mut committed = Vec::new();
    for h in handles {
        if let Ok(c) = h.await.unwrap() {
            committed.push(c);
        }
    }
    assert!(committed.len() >= 4, "{committed:?}");
    for c in committed {
        let p = get_ok(&r, &format!("/txs/{}/proof", c.tx_id)).await;
        assert_eq!(p["index"], c.index);
        assert_eq!(p["height"], c.height);
        let path: Vec<Hash32> = p["path"].as_array().unwrap().iter().map(h32).collect();
        let header =
            BlockHeader::decode(&hex::decode(p["header_hex"].as_str().unwrap()).unwrap()).unwrap();
        verify_inclusion(
            &c.tx_id,
            c.index as u64,
            p["tree_size"].as_u64().unwrap(),
            &path,
            &header.tx_root,
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_readings_are_served_as_ciphertext() {
    let f = fixture();
    let base = f.router();
    let r = as_user(&base, &f.patient).await;
    commit(
        &r,
        &f.sign(
            &f.admin,
            1,
            TxKind::AssignDevice {
                device: f.device.public(),
                patient: f.patient.public(),
            },
        ),
    )
    .await;
    commit(
        &r,
        &f.sign(
            &f.patient,
            1,
            TxKind::Consent {
                reader: f.doctor.public(),
                granted: true,
            },
        ),
    )
    .await;
    let binding = sealed_binding(&f.chain(), &f.device.public(), 5, 1);
    let mut rng = StdRng::seed_from_u64(7);
    let payload = sealed::seal(
        b"\x03\x48",
        &[f.patient.public(), f.doctor.public()],
        &binding,
        &mut rng,
    )
    .unwrap();
    let body = TxBody {
        signer: f.device.public(),
        sequence: 1,
        timestamp_ms: now_ms(),
        kind: TxKind::Reading {
            stream: 5,
            payload: Payload::Sealed(payload.clone()),
        },
    };
    let tx = Transaction::sign(body, &f.chain(), &f.device)
        .unwrap()
        .to_vec();
    let c = commit(&r, &tx).await;
    let t = get_ok(&r, &format!("/txs/{}", c["tx_id"].as_str().unwrap())).await;
    let v = &t["body"]["value"];
    assert_eq!(v["encoding"], "sealed");
    assert_eq!(v["ciphertext"], hex::encode(&payload.ciphertext));
    assert_eq!(v["plaintext_len"], 2);
    assert_eq!(
        v["recipients"][0]["key_id"],
        hex::encode(f.patient.public().key_id().0)
    );
    assert_eq!(v["recipients"][0]["key"], hx(&f.patient.public()));
    assert_eq!(
        v["recipients"][1]["wrapped_key"],
        hex::encode(payload.recipients[1].wrapped.0)
    );
    assert!(t["summary"].as_str().unwrap().contains("sealed"), "{t}");
    let rs = get_ok(
        &r,
        &format!("/devices/{}/streams/5/readings", hx(&f.device.public())),
    )
    .await;
    assert_eq!(rs["readings"][0]["value"], *v);

    // sealed for the insurer, who has no consent: a rule violation
    let binding = sealed_binding(&f.chain(), &f.device.public(), 5, 2);
    let payload = sealed::seal(b"x", &[f.insurer.public()], &binding, &mut rng).unwrap();
    let body = TxBody {
        signer: f.device.public(),
        sequence: 2,
        timestamp_ms: now_ms(),
        kind: TxKind::Reading {
            stream: 5,
            payload: Payload::Sealed(payload),
        },
    };
    let tx = Transaction::sign(body, &f.chain(), &f.device)
        .unwrap()
        .to_vec();
    post_raw(&r, &tx)
        .await
        .err(StatusCode::UNPROCESSABLE_ENTITY, "not_authorised");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_refusals() {
    let f = fixture();
    let r = f.router();
    commit(&r, &f.reading(10, 0, Vital::HeartRate { bpm: 70 })).await;
    // malformed
    post_raw(&r, &[1, 2, 3])
        .await
        .err(StatusCode::BAD_REQUEST, "malformed");
    post_raw(&r, &[])
        .await
        .err(StatusCode::BAD_REQUEST, "malformed");
    post_json(&r, json!({ "tx": "zz" }))
        .await
        .err(StatusCode::BAD_REQUEST, "bad_hex");
    post_json(&r, json!({ "nope": 1 }))
        .await
        .err(StatusCode::BAD_REQUEST, "bad_json");
    let req = Request::post("/txs")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{"))
        .unwrap();
    send(&r, req).await.err(StatusCode::BAD_REQUEST, "bad_json");
    // bad signature
    let mut b = f.reading(11, 0, Vital::HeartRate { bpm: 70 });
    let n = b.len();
    b[n - 1] ^= 1;
    post_raw(&r, &b)
        .await
        .err(StatusCode::UNAUTHORIZED, "bad_signature");
    // replay
    let res = post_raw(&r, &f.reading(10, 0, Vital::HeartRate { bpm: 70 })).await;
    res.err(StatusCode::CONFLICT, "replay");
    // out of range
    post_raw(&r, &f.reading(12, 0, Vital::HeartRate { bpm: 60000 }))
        .await
        .err(StatusCode::UNPROCESSABLE_ENTITY, "out_of_range");
    // an unknown signer
    let stranger = Keypair::from_seed([9; 32]);
    let t = f.sign(
        &stranger,
        1,
        TxKind::Consent {
            reader: f.doctor.public(),
            granted: true,
        },
    );
    post_raw(&r, &t)
        .await
        .err(StatusCode::FORBIDDEN, "unknown_signer");
    // not permitted: a device granting permissions, a doctor writing
    let t = f.sign(
        &f.device,
        20,
        TxKind::Grant {
            target: f.insurer.public(),
            permissions: Permissions::WRITE,
        },
    );
    post_raw(&r, &t)
        .await
        .err(StatusCode::FORBIDDEN, "not_permitted");
    let body = TxBody::reading(
        f.doctor.public(),
        1,
        now_ms(),
        0,
        Vital::HeartRate { bpm: 70 },
    );
    let t = Transaction::sign(body, &f.chain(), &f.doctor)
        .unwrap()
        .to_vec();
    post_raw(&r, &t)
        .await
        .err(StatusCode::FORBIDDEN, "not_permitted");
    // ledger rules: a consent to a device, withdrawing a consent never given
    let t = f.sign(
        &f.patient,
        1,
        TxKind::Consent {
            reader: f.device.public(),
            granted: true,
        },
    );
    post_raw(&r, &t)
        .await
        .err(StatusCode::UNPROCESSABLE_ENTITY, "wrong_role");
    let t = f.sign(
        &f.patient,
        2,
        TxKind::Consent {
            reader: f.doctor.public(),
            granted: false,
        },
    );
    post_raw(&r, &t)
        .await
        .err(StatusCode::UNPROCESSABLE_ENTITY, "nothing_to_revoke");
    // too large a body
    let res = post_raw(&r, &vec![0u8; MAX_BODY_BYTES + 1]).await;
    res.err(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    // another content type
    let req = Request::post("/txs")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("x"))
        .unwrap();
    send(&r, req)
        .await
        .err(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    // the status mapping of what a test cannot easily provoke
    assert_eq!(
        rejection_status(&Rejected::Busy),
        (StatusCode::SERVICE_UNAVAILABLE, "busy")
    );
    assert_eq!(
        rejection_status(&Rejected::Storage("disk full".into())),
        (StatusCode::INSUFFICIENT_STORAGE, "storage_failed")
    );
    let busy = ApiError::from(Rejected::Busy).into_response();
    assert_eq!(busy.headers().get(header::RETRY_AFTER).unwrap(), "1");
    // and the chain still accepts the next good one
    commit(&r, &f.reading(13, 0, Vital::HeartRate { bpm: 71 })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_exposition() {
    let f = fixture();
    let r = f.router();
    commit(&r, &f.reading(1, 0, Vital::HeartRate { bpm: 70 })).await;
    let _ = post_raw(&r, &f.reading(1, 0, Vital::HeartRate { bpm: 70 })).await;
    let m = get(&r, "/metrics").await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(
        m.ctype.starts_with("text/plain; version=0.0.4"),
        "{}",
        m.ctype
    );
    let t = String::from_utf8(m.body).unwrap();
    assert!(t.contains("sensorchain_readings_committed_total 1"), "{t}");
    assert!(t.contains("sensorchain_block_height 1"), "{t}");
    assert!(
        t.contains("sensorchain_rejects_total{reason=\"replay\"} 1"),
        "{t}"
    );
    assert!(
        t.contains("sensorchain_ingest_latency_seconds_count 1"),
        "{t}"
    );
}

/// Over a real loopback socket, with a graceful shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_loopback() {
    let f = fixture();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_with_shutdown(
        f.node.clone(),
        listener,
        crate::config::ApiSettings::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let tx = f.reading(1, 0, Vital::SpO2 { percent: 98 });
    let (health, posted, missing) = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let base = format!("http://{addr}");
        let health: Value = agent
            .get(&format!("{base}/health"))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        let mut res = agent
            .post(&format!("{base}/txs"))
            .header("content-type", "application/octet-stream")
            .send(&tx[..])
            .unwrap();
        let posted = (
            res.status().as_u16(),
            res.body_mut().read_json::<Value>().unwrap(),
        );
        let mut res = agent.get(&format!("{base}/blocks/77")).call().unwrap();
        let missing = (
            res.status().as_u16(),
            res.body_mut().read_json::<Value>().unwrap(),
        );
        (health, posted, missing)
    })
    .await
    .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(posted.0, 201, "{}", posted.1);
    assert_eq!(posted.1["height"], 1);
    // a block body needs a session: anonymous, 401 before any lookup
    assert_eq!(missing.0, 401);
    assert_eq!(missing.1["error"]["code"], "unauthenticated");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

// ------------------------------------------------- limits, Host, errors (issue 11)

use crate::config::ApiSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Settings for tests: small limits where a test needs them.
fn settings() -> ApiSettings {
    ApiSettings {
        read_threads: 1,
        ..ApiSettings::default()
    }
}

/// A GET with a Host header.
async fn get_host(r: &Router, uri: &str, host: &str) -> Resp {
    send(
        r,
        Request::get(uri)
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

/// A server on a loopback port with `s`; stop it with the sender.
async fn server(
    f: &Fx,
    s: ApiSettings,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let listener = bind("127.0.0.1:0", &s).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_with_shutdown(f.node.clone(), listener, s, async {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

/// Sends `req` on a new connection and reads the answer to its end:
/// (status, headers text, body).
async fn raw(addr: std::net::SocketAddr, req: &[u8]) -> (u16, String, Vec<u8>) {
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    // the server may answer and close before all of a too-large request is
    // sent: keep what was answered
    let _ = c.write_all(req).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let t = std::time::Instant::now();
    loop {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no answer within 30 s"
        );
        match tokio::time::timeout(Duration::from_secs(30), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("no answer within 30 s"),
        }
    }
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&out)));
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status = head[9..12].parse().unwrap();
    (status, head, out[split + 4..].to_vec())
}

fn json_error(body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(body)));
    assert!(v["error"]["code"].is_string(), "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
    v
}

/// Finding 10: 414/431/400 answers are JSON, and a long id is not echoed
/// back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_errors_are_json_and_echo_is_clipped() {
    let f = fixture();
    assign_device(&f, &f.router(), 1).await;
    let (addr, stop, task) = server(&f, settings()).await;
    // the routes below need a session: the patient's, over the socket
    let patient = f.patient.clone();
    let token = tokio::task::spawn_blocking(move || {
        let agent = crate::login_client::agent(Duration::from_secs(30), None).unwrap();
        crate::login_client::login(&agent, &format!("http://{addr}"), &patient, None).unwrap()
    })
    .await
    .unwrap();
    let auth = format!("Authorization: Bearer {token}\r\n");

    // a 60 KB id: 414, JSON, not echoed
    let long = "a".repeat(60_000);
    let req = format!("GET /txs/{long} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let (status, head, body) = raw(addr, req.as_bytes()).await;
    assert_eq!(status, 414, "{head}");
    let v = json_error(&body);
    assert_eq!(v["error"]["code"], "uri_too_long");
    assert!(body.len() < 1000, "{} bytes", body.len());

    // a 5,000-character id (under the URI limit): 400, the echo clipped
    let id = "z".repeat(5_000);
    let req =
        format!("GET /txs/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n");
    let (status, _, body) = raw(addr, req.as_bytes()).await;
    assert_eq!(status, 400);
    let v = json_error(&body);
    assert_eq!(v["error"]["code"], "bad_tx_id");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains('…') && m.len() < 300, "{m}");
    // the same for a key, a height and an unknown route
    for uri in [
        format!("/devices/{id}/readings"),
        format!("/blocks/{id}"),
        format!("/nowhere/{id}"),
    ] {
        let req =
            format!("GET {uri} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
        let (status, _, body) = raw(addr, req.as_bytes()).await;
        // a block body is not the patient's to read: 403, not echoed either
        assert!(
            status == 400 || status == 404 || status == 403,
            "{uri}: {status}"
        );
        let m = json_error(&body)["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(m.len() < 300, "{uri}: {m}");
    }

    // 20 KB of headers: 431, JSON
    let big = "b".repeat(20_000);
    let req = format!(
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"
    );
    let (status, head, body) = raw(addr, req.as_bytes()).await;
    assert_eq!(status, 431, "{head}");
    assert_eq!(json_error(&body)["error"]["code"], "headers_too_large");
    // too many headers: 431, JSON
    let many: String = (0..100).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let req = format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n{many}Connection: close\r\n\r\n");
    let (status, _, body) = raw(addr, req.as_bytes()).await;
    assert_eq!(status, 431);
    json_error(&body);

    // a path that is not UTF-8 once decoded: axum's 400, made JSON
    let req =
        format!("GET /txs/%FF%FE HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n");
    let (status, head, body) = raw(addr, req.as_bytes()).await;
    assert_eq!(status, 400, "{head}");
    json_error(&body);

    // a query that does not parse: 400, JSON, clipped
    let q = "x".repeat(3000);
    let req = format!(
        "GET /readings?{q}=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    );
    let (status, _, body) = raw(addr, req.as_bytes()).await;
    assert_eq!(status, 400);
    assert!(body.len() < 1000, "{}", String::from_utf8_lossy(&body));
    json_error(&body);

    // hyper's own answers: a head over 64 KiB (431), not HTTP (400)
    let huge = "h".repeat(70_000);
    let req = format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: {huge}\r\n\r\n");
    let (status, head, body) = raw(addr, req.as_bytes()).await;
    assert_eq!(status, 431, "{head}");
    assert_eq!(json_error(&body)["error"]["code"], "headers_too_large");
    let (status, head, body) = raw(
        addr,
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{head}");
    assert_eq!(json_error(&body)["error"]["code"], "bad_request");
    let (status, head, body) = raw(addr, b"\x16\x03\x01 not http\r\n\r\n").await;
    assert_eq!(status, 400, "{head}");
    json_error(&body);

    // 405 and 413 are JSON
    let req = b"DELETE /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let (status, _, body) = raw(addr, req).await;
    assert_eq!(status, 405);
    json_error(&body);
    let n = MAX_BODY_BYTES + 10;
    let mut req = format!(
        "POST /txs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    req.extend(std::iter::repeat_n(0u8, n));
    let (status, _, body) = raw(addr, &req).await;
    assert_eq!(status, 413);
    json_error(&body);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Finding 8: a foreign Host (DNS rebinding) is refused; loopback names,
/// the bound address and the configured names are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_header_rule() {
    let f = fixture();
    let mut s = settings();
    s.allowed_hosts = vec!["gw.example".into()];
    let local: std::net::SocketAddr = "127.0.0.1:7480".parse().unwrap();
    let a = app(f.node.clone(), &s, Some(local));
    for host in [
        "evil.example",
        "evil.example:7480",
        "127.0.0.1.evil.example",
        "localhost.evil",
    ] {
        let r = get_host(&a, "/health", host).await;
        r.err(StatusCode::MISDIRECTED_REQUEST, "bad_host");
    }
    for host in [
        "localhost",
        "LOCALHOST:7480",
        "localhost.",
        "127.0.0.1:7480",
        "127.0.0.2",
        "[::1]:7480",
        "gw.example",
        "gw.example:80",
    ] {
        let r = get_host(&a, "/health", host).await;
        assert_eq!(r.status, StatusCode::OK, "{host}: {}", r.json());
    }
    // no Host at all
    get(&a, "/health")
        .await
        .err(StatusCode::BAD_REQUEST, "missing_host");
    // "*" accepts any
    s.allowed_hosts = vec!["*".into()];
    let any = app_fn(&f, &s);
    let r = get_host(&any, "/health", "evil.example").await;
    assert_eq!(r.status, StatusCode::OK);
    // a non-loopback bound address is a Host name too
    let s = settings();
    let lan: std::net::SocketAddr = "192.0.2.7:7480".parse().unwrap();
    let a = app(f.node.clone(), &s, Some(lan));
    let r = get_host(&a, "/health", "192.0.2.7:7480").await;
    assert_eq!(r.status, StatusCode::OK);
    get_host(&a, "/health", "192.0.2.8")
        .await
        .err(StatusCode::MISDIRECTED_REQUEST, "bad_host");
}

fn app_fn(f: &Fx, s: &ApiSettings) -> Router {
    app(f.node.clone(), s, None)
}

/// Finding 8: a non-loopback `listen.api` needs the opt-in.
#[test]
fn non_loopback_needs_opt_in() {
    let mut s = settings();
    let e = check_listen("0.0.0.0:7480", &s).unwrap_err().to_string();
    assert!(
        e.contains("listen.api") && e.contains("allow_plaintext") && e.contains("tls_cert"),
        "{e}"
    );
    // with TLS configured, or allow_plaintext, a public address is served
    let tls = ApiTls::files("c.pem", "k.pem");
    assert!(check_listen_with("0.0.0.0:7480", &s, &tls).is_ok());
    let plain = ApiTls {
        allow_plaintext: true,
        ..ApiTls::default()
    };
    assert!(check_listen_with("0.0.0.0:7480", &s, &plain).is_ok());
    assert!(check_listen("127.0.0.1:7480", &s).is_ok());
    assert!(check_listen("[::1]:7480", &s).is_ok());
    let e = check_listen("localhost:7480", &s).unwrap_err().to_string();
    assert!(e.contains("listen.api"), "{e}");
    s.allow_non_loopback = true;
    assert!(check_listen("0.0.0.0:7480", &s).is_ok());
}

/// Every `[api]` value is range-checked with the key in the message.
#[test]
fn settings_check_names_the_key() {
    assert!(ApiSettings::default().check().is_ok());
    let cases: Vec<(&str, ApiSettings)> = vec![
        (
            "api.max_connections",
            ApiSettings {
                max_connections: 0,
                ..settings()
            },
        ),
        (
            "api.max_in_flight",
            ApiSettings {
                max_in_flight: 0,
                ..settings()
            },
        ),
        (
            "api.header_timeout_ms",
            ApiSettings {
                header_timeout_ms: 5,
                ..settings()
            },
        ),
        (
            "api.request_timeout_ms",
            ApiSettings {
                request_timeout_ms: 0,
                ..settings()
            },
        ),
        (
            "api.read_threads",
            ApiSettings {
                read_threads: 0,
                ..settings()
            },
        ),
        (
            "api.max_response_bytes",
            ApiSettings {
                max_response_bytes: 10,
                ..settings()
            },
        ),
        (
            "api.allowed_hosts",
            ApiSettings {
                allowed_hosts: vec!["a b".into()],
                ..settings()
            },
        ),
    ];
    for (key, s) in cases {
        let e = s.check().unwrap_err();
        assert!(e.contains(key), "{key}: {e}");
    }
}

/// A request body that never arrives: holds a slot until it is dropped.
fn pending_body() -> (
    Body,
    tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (Body::from_stream(stream), tx)
}

/// Finding 2: beyond `max_in_flight` a request waits (it is not handled:
/// no store read, no memory) until a slot is free; a request over
/// `request_timeout_ms` (a body that does not arrive) gets 408.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_limit_and_request_timeout() {
    let f = fixture();
    let s = ApiSettings {
        max_in_flight: 1,
        request_timeout_ms: 60_000,
        ..settings()
    };
    let app = app_fn(&f, &s);
    let (body, hold) = pending_body();
    let slow = Request::post("/txs")
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .unwrap();
    let slow_app = app.clone();
    let slow_task = tokio::spawn(async move { slow_app.oneshot(slow).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiting = {
        let app = app.clone();
        tokio::spawn(async move { get_host(&app, "/health", "localhost").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "handled beyond max_in_flight");
    // the slow request ends (its body is empty): the waiting one is served
    drop(hold);
    let r = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    let _ = slow_task.await;

    // the request timeout: 408, JSON
    let s = ApiSettings {
        request_timeout_ms: 200,
        ..settings()
    };
    let app = app_fn(&f, &s);
    let (body, _hold) = pending_body();
    let slow = Request::post("/txs")
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .unwrap();
    send(&app, slow)
        .await
        .err(StatusCode::REQUEST_TIMEOUT, "request_timeout");
}

/// Finding 2: the store-read pool runs at most `threads` reads, queues at
/// most `queue`, and answers 503 `busy` beyond; finding 4: a panic in a read
/// is a generic 500 without its text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_pool_bounds_and_panics() {
    let pool = ReadPool::new(1, 1);
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let wait = Arc::new(std::sync::Mutex::new(wait));
    let running = {
        let (p, w) = (pool.clone(), wait.clone());
        tokio::spawn(async move {
            p.run(move || {
                let _ = w.lock().unwrap().recv();
                Ok(1)
            })
            .await
        })
    };
    let t = std::time::Instant::now();
    while pool.running() == 0 {
        assert!(t.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // one may wait ...
    let queued = {
        let p = pool.clone();
        tokio::spawn(async move { p.run(|| Ok(2)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ... the next is refused at once
    let e = pool.run(|| Ok(3)).await.unwrap_err();
    assert_eq!(
        (e.status, e.code),
        (StatusCode::SERVICE_UNAVAILABLE, "busy")
    );
    release.send(()).unwrap();
    assert_eq!(running.await.unwrap().unwrap(), 1);
    assert_eq!(queued.await.unwrap().unwrap(), 2);

    // a panic: generic 500, no text
    let e = pool
        .run::<(), _>(|| panic!("secret detail from the store"))
        .await
        .unwrap_err();
    assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(e.code, "internal");
    assert!(!e.message.contains("secret"), "{}", e.message);
    assert!(!e.message.contains("panick"), "{}", e.message);
    // still serving afterwards
    assert_eq!(pool.run(|| Ok(4)).await.unwrap(), 4);
    pool.close();
    let e = pool.run(|| Ok(5)).await.unwrap_err();
    assert_eq!(e.code, "shutting_down");
}

/// Finding 4: a handler that panics gives a generic JSON 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_panic_is_generic_500() {
    async fn boom() -> &'static str {
        panic!("secret detail: task 9 panicked")
    }
    let r = serve::with_bounds(
        Router::new().route("/boom", axum::routing::get(boom)),
        &settings(),
        None,
    );
    let res = get_host(&r, "/boom", "localhost").await;
    res.err(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    let text = String::from_utf8_lossy(&res.body);
    assert!(
        !text.contains("secret") && !text.contains("panick"),
        "{text}"
    );
}

/// A reading list stops before `max_response_bytes`, with `next_from`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_lists_are_capped() {
    let f = fixture();
    let r0 = f.router();
    assign_device(&f, &r0, 1).await;
    for seq in 1..=60u64 {
        commit(
            &r0,
            &f.reading_at(seq, 0, 10_000 + seq, Vital::HeartRate { bpm: 70 }),
        )
        .await;
    }
    let s = ApiSettings {
        max_response_bytes: 4096,
        ..settings()
    };
    let app = as_user(&app_fn(&f, &s), &f.patient).await;
    let res = get_host(&app, "/readings?limit=1000", "localhost").await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(res.body.len() <= 4096, "{} bytes", res.body.len());
    let v = res.json();
    let n = v["count"].as_u64().unwrap();
    assert!((1..60).contains(&n), "{v}");
    assert_eq!(v["readings"].as_array().unwrap().len() as u64, n);
    assert_eq!(v["truncated"], true);
    let last = v["readings"][n as usize - 1]["timestamp_ms"]
        .as_u64()
        .unwrap();
    assert_eq!(v["next_from"], last);
    // paging on with next_from reaches every reading
    let mut from = 0u64;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..100 {
        let v = get_host(
            &app,
            &format!("/readings?limit=1000&from={from}"),
            "localhost",
        )
        .await
        .json();
        for r in v["readings"].as_array().unwrap() {
            seen.insert(r["sequence"].as_u64().unwrap());
        }
        if v["truncated"] != true {
            break;
        }
        from = v["next_from"].as_u64().unwrap();
    }
    assert_eq!(seen.len(), 60);
    // without the cap, all in one answer
    let v = get_host(
        &as_user(&r0, &f.patient).await,
        "/readings?limit=1000",
        "localhost",
    )
    .await
    .json();
    assert_eq!(v["count"], 60);
    assert_eq!(v["truncated"], false);
}

/// Finding 2: connections beyond `max_connections` wait (the normal request
/// is served once one closes); a partial request head is closed after
/// `header_timeout_ms`; shutdown ends with idle connections open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_header_timeout_and_shutdown() {
    let f = fixture();
    let s = ApiSettings {
        max_connections: 2,
        header_timeout_ms: 300,
        ..settings()
    };
    let (addr, stop, task) = server(&f, s).await;
    // a partial head is closed after the header timeout
    let mut partial = tokio::net::TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"GET /health HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(30), partial.read(&mut buf))
        .await
        .expect("a partial request was not closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n]));
    drop(partial);
    // so is a keep-alive connection idle after its answer
    let (status, head, _) = raw(addr, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
    assert_eq!(status, 200, "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );

    // two connections that send a head slowly hold both slots ...
    let s2 = ApiSettings {
        max_connections: 2,
        header_timeout_ms: 60_000,
        ..settings()
    };
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let (addr, stop, task) = server(&f, s2).await;
    let mut idle1 = tokio::net::TcpStream::connect(addr).await.unwrap();
    let idle2 = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle1.write_all(b"GET /hea").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ... so a third is not served ...
    let third = tokio::spawn(raw(
        addr,
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "served beyond max_connections");
    // ... until one closes
    drop(idle1);
    let (status, _, _) = third.await.unwrap();
    assert_eq!(status, 200);
    // shutdown with an idle connection open ends within the bound
    let t = std::time::Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("shutdown did not end")
        .unwrap()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(30));
    drop(idle2);
}

/// A client's check of a `GET /chain/consistency` answer
/// (docs/PROTOCOL.md, "Chain consistency"), with nothing but the core's
/// header decoding and hash: the headers of heights `from + 1 ..` link, one
/// by one, from the block hash the client trusts (`from_hash`) to `to_hash`.
fn verify_extension(
    chain: sensorchain_core::hash::ChainId,
    from: u64,
    from_hash: Hash32,
    headers: &[Vec<u8>],
    to_hash: Hash32,
) -> Result<(), String> {
    let mut prev = from_hash;
    for (i, bytes) in headers.iter().enumerate() {
        let h = BlockHeader::decode(bytes).map_err(|e| format!("header {i}: {e:?}"))?;
        if h.chain_id != chain {
            return Err(format!("header {i} is of another chain"));
        }
        if h.height != from + 1 + i as u64 {
            return Err(format!("header {i} is of height {}", h.height));
        }
        if h.prev_hash != prev {
            return Err(format!("header {i} does not link to the block before"));
        }
        prev = h.hash();
    }
    if prev != to_hash {
        return Err("the last header is not the block to_hash names".into());
    }
    Ok(())
}

fn headers_of(v: &Value) -> Vec<Vec<u8>> {
    v["headers"]
        .as_array()
        .unwrap_or_else(|| panic!("no headers: {v}"))
        .iter()
        .map(|h| hex::decode(h.as_str().unwrap()).unwrap())
        .collect()
}

/// Spec item 11: the chain's consistency proof. A client that trusts block
/// 1 checks that block 4 (and the head) extend it; a changed, dropped or
/// reordered header, or another starting block, fails the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_consistency_proves_one_block_extends_another() {
    let f = fixture();
    let r = f.router();
    for seq in 1..=5 {
        let c = commit(&r, &f.reading(seq, 0, Vital::HeartRate { bpm: 70 })).await;
        assert_eq!(c["height"], seq);
    }
    let store = f.node.store();
    let hash = |h: u64| store.header(h).unwrap().unwrap().hash();

    let p = get_ok(&r, "/chain/consistency?from=1&to=4").await;
    assert_eq!((p["from"].clone(), p["to"].clone()), (json!(1), json!(4)));
    assert_eq!(h32(&p["from_hash"]), hash(1));
    assert_eq!(h32(&p["to_hash"]), hash(4));
    let headers = headers_of(&p);
    assert_eq!(headers.len(), 3);
    // the client checks against the hashes it trusts, not the answer's
    assert_eq!(
        verify_extension(f.chain(), 1, hash(1), &headers, hash(4)),
        Ok(())
    );
    // block 4 has a finality certificate (the node's single validator)
    let cert = f.node.store().cert(4).unwrap();
    assert_eq!(p["finality_cert"].is_null(), cert.is_none(), "{p}");

    // wrong proofs fail
    let mut changed = headers.clone();
    let last = changed[1].len() - 1;
    changed[1][last] ^= 0x01; // the nonce of block 3
    assert!(verify_extension(f.chain(), 1, hash(1), &changed, hash(4)).is_err());
    let mut swapped = headers.clone();
    swapped.swap(0, 1);
    assert!(verify_extension(f.chain(), 1, hash(1), &swapped, hash(4)).is_err());
    assert!(verify_extension(f.chain(), 1, hash(1), &headers[..2], hash(4)).is_err());
    assert!(verify_extension(f.chain(), 1, hash(1), &headers[1..], hash(4)).is_err());
    assert!(verify_extension(f.chain(), 1, hash(2), &headers, hash(4)).is_err());
    assert!(verify_extension(f.chain(), 1, hash(1), &headers, hash(5)).is_err());

    // `to` defaults to the head; from genesis
    let p = get_ok(&r, "/chain/consistency?from=0").await;
    let head = get_ok(&r, "/chain/head").await;
    assert_eq!(p["to"], head["height"]);
    assert_eq!(p["to_hash"], head["hash"]);
    let headers = headers_of(&p);
    assert_eq!(headers.len(), 5);
    assert_eq!(
        verify_extension(f.chain(), 0, f.genesis.hash(), &headers, h32(&head["hash"])),
        Ok(())
    );
    // a block extends itself with no header
    let p = get_ok(&r, "/chain/consistency?from=3&to=3").await;
    assert_eq!(p["headers"], json!([]));
    assert_eq!(p["from_hash"], p["to_hash"]);

    get(&r, "/chain/consistency")
        .await
        .err(StatusCode::BAD_REQUEST, "bad_query");
    get(&r, "/chain/consistency?from=4&to=2")
        .await
        .err(StatusCode::BAD_REQUEST, "bad_range");
    get(&r, "/chain/consistency?from=x")
        .await
        .err(StatusCode::BAD_REQUEST, "bad_query");
    get(&r, "/chain/consistency?from=1&until=3")
        .await
        .err(StatusCode::BAD_REQUEST, "bad_query");
    get(&r, "/chain/consistency?from=1&to=99")
        .await
        .err(StatusCode::NOT_FOUND, "unknown_block");
    get(&r, "/chain/consistency?from=99")
        .await
        .err(StatusCode::NOT_FOUND, "unknown_block");
}

mod auth;
