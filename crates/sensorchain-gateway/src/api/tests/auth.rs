//! Issue 14: logins, the route × role matrix, the access log, the browser
//! defaults. Time is injected (the auth state's clock), never slept on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::ConnectInfo;
use sensorchain_core::access_log::chain_hash;
use sensorchain_core::hash::ChainId;
use sensorchain_core::identity::Signature;

use super::*;
use crate::api::access_log::{self as alog, AccessLogFault};

/// A network with every role of the matrix, a reading of the patient's
/// device, and an API whose clock the test moves.
struct World {
    r: Router,
    node: Node,
    offset: Arc<AtomicU64>,
    admin: Keypair,
    device: Keypair,
    patient: Keypair,
    doctor_c: Keypair,
    doctor_u: Keypair,
    nurse: Keypair,
    insurer_c: Keypair,
    insurer_u: Keypair,
    auditor: Keypair,
    gateway: Keypair,
    revoked: Keypair,
    reading_id: String,
    height: u64,
    dir: tempfile::TempDir,
}

fn clock(offset: &Arc<AtomicU64>) -> crate::api::auth::Clock {
    let o = offset.clone();
    Arc::new(move || now_ms() + o.load(Ordering::SeqCst))
}

impl World {
    /// Moves the API's clock on by `ms`.
    fn advance(&self, ms: u64) {
        self.offset.fetch_add(ms, Ordering::SeqCst);
    }

    fn chain(&self) -> ChainId {
        *self.node.state().chain_id()
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

    /// Logs `kp` in (letting the login bucket refill first).
    async fn login(&self, kp: &Keypair) -> String {
        self.advance(5_000);
        login(&self.r, kp).await
    }
}

async fn world() -> World {
    let [
        admin,
        gateway,
        device,
        patient,
        doctor_c,
        insurer_c,
        doctor_u,
        nurse,
        insurer_u,
        auditor,
        revoked,
    ] = [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12].map(|n| Keypair::from_seed([n; 32]));
    let m = |k: &Keypair, role: Role| Member::of_role(k.public(), role);
    let members = [
        m(&admin, Role::Admin),
        m(&gateway, Role::Gateway),
        m(&device, Role::Device),
        m(&patient, Role::Patient),
        m(&doctor_c, Role::Doctor),
        m(&insurer_c, Role::Insurer),
        m(&doctor_u, Role::Doctor),
        m(&nurse, Role::Nurse),
        m(&insurer_u, Role::Insurer),
        m(&auditor, Role::Auditor),
        m(&revoked, Role::Doctor),
    ];
    let cfg = GenesisConfig::new("matrix", Params::default(), &members).unwrap();
    let genesis = Chain::genesis_block(&admin, cfg, 1_000).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let ncfg = NodeConfig {
        batch_timeout: Duration::from_millis(2),
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
    let offset = Arc::new(AtomicU64::new(0));
    let r = router_with(
        node.clone(),
        ReadPool::new(2, 64),
        1 << 20,
        AuthOptions {
            clock: clock(&offset),
            tls: false,
        },
    );
    let mut w = World {
        r,
        node,
        offset,
        admin,
        device,
        patient,
        doctor_c,
        doctor_u,
        nurse,
        insurer_c,
        insurer_u,
        auditor,
        gateway,
        revoked,
        reading_id: String::new(),
        height: 0,
        dir,
    };
    let r = w.r.clone();
    commit(
        &r,
        &w.sign(
            &w.admin,
            1,
            TxKind::AssignDevice {
                device: w.device.public(),
                patient: w.patient.public(),
            },
        ),
    )
    .await;
    for (i, reader) in [&w.doctor_c, &w.insurer_c, &w.revoked].iter().enumerate() {
        commit(
            &r,
            &w.sign(
                &w.patient,
                i as u64 + 1,
                TxKind::Consent {
                    reader: reader.public(),
                    granted: true,
                },
            ),
        )
        .await;
    }
    let body = TxBody::reading(
        w.device.public(),
        1,
        now_ms(),
        0,
        Vital::HeartRate { bpm: 71 },
    );
    let tx = Transaction::sign(body, &w.chain(), &w.device)
        .unwrap()
        .to_vec();
    let c = commit(&r, &tx).await;
    w.reading_id = c["tx_id"].as_str().unwrap().to_string();
    w.height = c["height"].as_u64().unwrap();
    w
}

/// `r` with `token` (if any) from the client address `peer`.
fn as_peer(r: &Router, token: Option<&str>, peer: SocketAddr) -> Router {
    let v = token.map(|t| header::HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
    r.clone().layer(axum::middleware::map_request(
        move |mut req: Request<Body>| {
            let v = v.clone();
            async move {
                if let Some(v) = v {
                    req.headers_mut().insert(header::AUTHORIZATION, v);
                }
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            }
        },
    ))
}

/// The matrix's roles, in the order of docs/API.md's columns.
const ROLES: [&str; 12] = [
    "anon",
    "device",
    "patient",
    "doctor+",
    "doctor−",
    "nurse",
    "insurer+",
    "insurer−",
    "admin",
    "auditor",
    "gateway",
    "revoked",
];

/// docs/API.md's route × role table: (route, rule, allowed per role).
fn documented_matrix() -> Vec<(String, String, Vec<bool>)> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/API.md");
    let text = std::fs::read_to_string(&p).unwrap();
    let mut lines = text
        .lines()
        .skip_while(|l| !l.starts_with("| route | rule | anon |"));
    let head: Vec<String> = lines
        .next()
        .expect("docs/API.md has no route × role table")
        .split('|')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(&head[2..], &ROLES, "the table's role columns");
    lines
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l
                .split('|')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            assert_eq!(cells.len(), 2 + ROLES.len(), "{l}");
            let route = cells[0].trim_matches('`').to_string();
            let allowed = cells[2..]
                .iter()
                .map(|c| match *c {
                    "✓" => true,
                    "✗" => false,
                    x => panic!("cell {x:?} of {route}"),
                })
                .collect();
            (route, cells[1].to_string(), allowed)
        })
        .collect()
}

/// Every route of the router × every role, as docs/API.md's table says; a
/// route without a row (or a row without a route) fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_role_matrix() {
    let w = world().await;
    let rows = route_table(w.node.clone());
    let docs = documented_matrix();
    let routes: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    for (route, _, _) in &docs {
        assert!(
            routes.contains(route),
            "docs/API.md lists {route}, the router has no such route"
        );
    }
    // sessions of every role; `revoked` then loses connect
    let keys: Vec<Option<&Keypair>> = vec![
        None,
        Some(&w.device),
        Some(&w.patient),
        Some(&w.doctor_c),
        Some(&w.doctor_u),
        Some(&w.nurse),
        Some(&w.insurer_c),
        Some(&w.insurer_u),
        Some(&w.admin),
        Some(&w.auditor),
        Some(&w.gateway),
        Some(&w.revoked),
    ];
    let mut tokens = Vec::new();
    for k in &keys {
        tokens.push(match k {
            Some(k) => Some(w.login(k).await),
            None => None,
        });
    }
    commit(
        &w.r,
        &w.sign(
            &w.admin,
            2,
            TxKind::Revoke {
                target: w.revoked.public(),
                permissions: Permissions::CONNECT,
            },
        ),
    )
    .await;
    let dev = hx(&w.device.public());
    let fill = |path: &str| {
        let p = path
            .replace("{key}", &dev)
            .replace("{height}", &w.height.to_string())
            .replace("{id}", &w.reading_id)
            .replace("{stream}", "0")
            .replace("{file}", "app.js");
        match p.as_str() {
            "/chain/consistency" => "/chain/consistency?from=0".to_string(),
            "/access-log" => format!("/access-log?patient={}", hx(&w.patient.public())),
            _ => p,
        }
    };
    // logout last: it ends the session it is sent with
    let mut order: Vec<&RouteRow> = rows.iter().collect();
    order.sort_by_key(|r| r.path == "/auth/logout");
    let mut failures = Vec::new();
    for row in order {
        let route = format!("{} {}", row.method, row.path);
        let Some((_, rule, want)) = docs.iter().find(|(r, _, _)| *r == route) else {
            panic!(
                "{route} (rule {}) has no row in docs/API.md's route × role table",
                row.rule.name()
            );
        };
        assert_eq!(rule, row.rule.name(), "{route}: the documented rule");
        for (i, role) in ROLES.iter().enumerate() {
            let peer = SocketAddr::from(([10, 0, 0, i as u8 + 1], 4000));
            let r = as_peer(&w.r, tokens[i].as_deref(), peer);
            let uri = fill(row.path);
            let req = match row.method {
                "GET" => Request::get(&uri).body(Body::empty()).unwrap(),
                "POST" if row.path == "/auth/login" => Request::post(&uri)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from("{}"))
                    .unwrap(),
                "POST" => Request::post(&uri)
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(Body::empty())
                    .unwrap(),
                m => panic!("method {m}"),
            };
            let res = send(&r, req).await;
            assert_ne!(
                res.status,
                StatusCode::TOO_MANY_REQUESTS,
                "{route} as {role}"
            );
            let allowed = !matches!(res.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
            if allowed != want[i] {
                failures.push(format!(
                    "{route} as {role}: {} ({}), the table says {}",
                    res.status,
                    String::from_utf8_lossy(&res.body),
                    if want[i] { "allowed" } else { "refused" }
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cells differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A fresh challenge of `r`.
async fn challenge(w: &World, kp: &Keypair) -> LoginChallenge {
    let res = send(
        &w.r,
        Request::post("/auth/challenge")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    let c = res.json();
    assert_eq!(c["gateway"], hx(&w.gateway.public()));
    LoginChallenge {
        chain_id: ChainId(parse_hex(c["chain_id"].as_str().unwrap()).unwrap()),
        gateway: PublicKey(parse_hex(c["gateway"].as_str().unwrap()).unwrap()),
        identity: kp.public(),
        nonce: parse_hex(c["challenge"].as_str().unwrap()).unwrap(),
        expires_ms: c["expires_ms"].as_u64().unwrap(),
    }
}

/// Wrong key, another chain, another gateway, replay, expiry, an
/// unregistered key, a token after revocation and after its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_refusals() {
    let w = world().await;
    let me = &w.doctor_c;
    // a good login, then its replay
    let ch = challenge(&w, me).await;
    let sig = ch.sign(me);
    assert_eq!(login_with(&w.r, &ch, &sig).await.status, StatusCode::OK);
    let replay = login_with(&w.r, &ch, &sig).await;
    replay.err(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert!(
        replay.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already used")
    );

    // signed by another key
    let ch = challenge(&w, me).await;
    login_with(&w.r, &ch, &ch.sign(&w.nurse))
        .await
        .err(StatusCode::UNAUTHORIZED, "unauthenticated");
    // a challenge used once fails is used up: the right signature after it fails
    login_with(&w.r, &ch, &ch.sign(me))
        .await
        .err(StatusCode::UNAUTHORIZED, "unauthenticated");
    // signed for another chain, for another gateway, with another expiry
    for bad in [
        |c: LoginChallenge| LoginChallenge {
            chain_id: ChainId([9; 32]),
            ..c
        },
        |c: LoginChallenge| LoginChallenge {
            gateway: Keypair::from_seed([77; 32]).public(),
            ..c
        },
    ] {
        let ch = challenge(&w, me).await;
        let sig = bad(ch).sign(me);
        let res = login_with(&w.r, &ch, &sig).await;
        res.err(StatusCode::UNAUTHORIZED, "unauthenticated");
        assert!(
            res.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("signature"),
            "{}",
            res.json()
        );
    }
    let ch = challenge(&w, me).await;
    let longer = LoginChallenge {
        expires_ms: ch.expires_ms + 1,
        ..ch
    };
    login_with(&w.r, &longer, &longer.sign(me))
        .await
        .err(StatusCode::UNAUTHORIZED, "unauthenticated");
    // expired: the clock passes the challenge's expiry
    let ch = challenge(&w, me).await;
    w.advance(CHALLENGE_TTL_MS + 1);
    let res = login_with(&w.r, &ch, &ch.sign(me)).await;
    res.err(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert!(
        res.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    // a key the chain does not know
    let stranger = Keypair::from_seed([99; 32]);
    let ch = challenge(&w, &stranger).await;
    login_with(&w.r, &ch, &ch.sign(&stranger))
        .await
        .err(StatusCode::UNAUTHORIZED, "unauthenticated");
    // garbage
    let res = send(
        &w.r,
        Request::post("/auth/login")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({"key": "zz", "challenge": "00", "expires_ms": 1, "signature": "00"})
                    .to_string(),
            ))
            .unwrap(),
    )
    .await;
    res.err(StatusCode::BAD_REQUEST, "bad_login");

    // a session ends at the next request once its identity loses connect
    let t = w.login(&w.revoked).await;
    let r = with_token(&w.r, &t);
    let dev = hx(&w.device.public());
    assert_eq!(
        get(&r, &format!("/devices/{dev}/readings")).await.status,
        StatusCode::OK
    );
    commit(
        &w.r,
        &w.sign(
            &w.admin,
            2,
            TxKind::Revoke {
                target: w.revoked.public(),
                permissions: Permissions::CONNECT,
            },
        ),
    )
    .await;
    let res = get(&r, &format!("/devices/{dev}/readings")).await;
    res.err(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert!(
        res.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("connect")
    );
    // and it cannot log in again
    let ch = challenge(&w, &w.revoked).await;
    login_with(&w.r, &ch, &ch.sign(&w.revoked))
        .await
        .err(StatusCode::UNAUTHORIZED, "unauthenticated");

    // a token after its time
    let t = w.login(&w.patient).await;
    let r = with_token(&w.r, &t);
    assert_eq!(get(&r, "/auth/session").await.status, StatusCode::OK);
    w.advance(SESSION_TTL_MS + 1);
    let res = get(&r, "/auth/session").await;
    res.err(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert!(
        res.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    // a token that is not hex, one that was never issued
    get(&with_token(&w.r, "xyz"), "/auth/session")
        .await
        .err(StatusCode::UNAUTHORIZED, "unauthenticated");
    get(&with_token(&w.r, &"ab".repeat(32)), "/auth/session")
        .await
        .err(StatusCode::UNAUTHORIZED, "unauthenticated");
}

/// The cookie's attributes, logging in and out with it, one identity's
/// sessions bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_logout_and_session_bound() {
    let w = world().await;
    let ch = challenge(&w, &w.patient).await;
    let res = send(
        &w.r,
        Request::post("/auth/login")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({
                    "key": hx(&ch.identity), "challenge": hex::encode(ch.nonce),
                    "expires_ms": ch.expires_ms, "signature": hex::encode(ch.sign(&w.patient).0),
                })
                .to_string(),
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    let token = res.json()["token"].as_str().unwrap().to_string();
    // the cookie as the answer set it (the in-memory send drops headers: ask again)
    let r2 =
        w.r.clone()
            .oneshot(Request::post("/auth/logout").body(Body::empty()).unwrap())
            .await
            .unwrap();
    let cleared = r2.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cleared.starts_with("sc_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let cookie = format!("{COOKIE}={token}");
    let with_cookie = |uri: &str| {
        Request::get(uri)
            .header(header::COOKIE, format!("theme=dark; {cookie}"))
            .body(Body::empty())
            .unwrap()
    };
    let res = send(&w.r, with_cookie("/auth/session")).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.json()["key"], hx(&w.patient.public()));
    assert_eq!(res.json()["role"], "patient");
    // logout with the cookie ends that session
    let out =
        w.r.clone()
            .oneshot(
                Request::post("/auth/logout")
                    .header(header::COOKIE, cookie.clone())
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    send(&w.r, with_cookie("/auth/session"))
        .await
        .err(StatusCode::UNAUTHORIZED, "unauthenticated");
    // the login's own Set-Cookie
    let ch = challenge(&w, &w.patient).await;
    let body = json!({
        "key": hx(&ch.identity), "challenge": hex::encode(ch.nonce),
        "expires_ms": ch.expires_ms, "signature": hex::encode(ch.sign(&w.patient).0),
    });
    let res =
        w.r.clone()
            .oneshot(
                Request::post("/auth/login")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body.to_string()))
                    .unwrap(),
            )
            .await
            .unwrap();
    let set = res.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    for part in [
        "sc_session=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=900",
    ] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Secure"), "no TLS here: {set}");
    // at most MAX_SESSIONS_PER_IDENTITY sessions of one identity: the oldest goes
    let first = w.login(&w.nurse).await;
    for _ in 0..MAX_SESSIONS_PER_IDENTITY {
        w.login(&w.nurse).await;
    }
    get(&with_token(&w.r, &first), "/auth/session")
        .await
        .err(StatusCode::UNAUTHORIZED, "unauthenticated");
}

/// A brute-forcer from one address gets 429; an honest user from another
/// address still logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_is_rate_limited_and_honest_users_are_served() {
    let w = world().await;
    let attacker = as_peer(&w.r, None, SocketAddr::from(([127, 0, 0, 2], 5000)));
    let honest = as_peer(&w.r, None, SocketAddr::from(([127, 0, 0, 3], 5000)));
    let mut limited = 0;
    for _ in 0..100 {
        let res = send(
            &attacker,
            Request::post("/auth/challenge")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        if res.status == StatusCode::TOO_MANY_REQUESTS {
            res.err(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
            limited += 1;
            continue;
        }
        let c = res.json();
        let ch = LoginChallenge {
            chain_id: w.chain(),
            gateway: w.gateway.public(),
            identity: w.patient.public(),
            nonce: parse_hex(c["challenge"].as_str().unwrap()).unwrap(),
            expires_ms: c["expires_ms"].as_u64().unwrap(),
        };
        // a guessed signature
        let res = login_with(&attacker, &ch, &Signature([7; 64])).await;
        if res.status == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
        } else {
            res.err(StatusCode::UNAUTHORIZED, "unauthenticated");
        }
    }
    // 100 tries (a challenge, then a login, when the challenge is granted):
    // past the burst of 20 requests almost all are refused (the bucket
    // refills 1 a second of real time while the test runs)
    assert!(limited >= 50, "only {limited} of the 100 tries limited");
    // the honest user, from another address, at the same moment
    let t = login(&honest, &w.patient).await;
    assert_eq!(
        get(&with_token(&w.r, &t), "/auth/session").await.status,
        StatusCode::OK
    );
    // the attacker's bucket refills with time
    w.advance(10_000);
    let res = send(
        &attacker,
        Request::post("/auth/challenge")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
}

/// Security headers on every answer (errors included), no CORS, a preflight
/// is 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_defaults() {
    let w = world().await;
    for req in [
        Request::get("/health").body(Body::empty()).unwrap(),
        Request::get("/readings")
            .header(header::ORIGIN, "https://evil.example")
            .body(Body::empty())
            .unwrap(),
        Request::get("/nowhere").body(Body::empty()).unwrap(),
    ] {
        let res = w.r.clone().oneshot(req).await.unwrap();
        let h = res.headers();
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        assert!(CONTENT_SECURITY_POLICY.starts_with("default-src 'self'"));
        assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert!(
            h.get(header::STRICT_TRANSPORT_SECURITY).is_none(),
            "no HSTS without TLS"
        );
        assert!(
            h.keys().all(|k| !k.as_str().starts_with("access-control-")),
            "{h:?}"
        );
    }
    let res = send(
        &w.r,
        Request::options("/readings")
            .header(header::ORIGIN, "https://evil.example")
            .header("access-control-request-method", "GET")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED);
}

/// Each allowed read appears once with the right reader and range; a refused
/// read appears as refused; anonymous and 400 requests are not logged; the
/// patient sees its entries, others do not; every entry chains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_records_reads_once() {
    let w = world().await;
    let dev = hx(&w.device.public());
    let pat = hx(&w.patient.public());
    let doctor = with_token(&w.r, &w.login(&w.doctor_c).await);
    let stranger = with_token(&w.r, &w.login(&w.doctor_u).await);
    let auditor = with_token(&w.r, &w.login(&w.auditor).await);
    let patient = with_token(&w.r, &w.login(&w.patient).await);
    // an allowed read with a range, a refused one, one not logged (400), an anonymous one
    assert_eq!(
        get(
            &doctor,
            &format!("/devices/{dev}/readings?from=5&to=9000000000000")
        )
        .await
        .status,
        StatusCode::OK
    );
    get(&stranger, &format!("/devices/{dev}/streams/0/readings"))
        .await
        .err(StatusCode::FORBIDDEN, "forbidden");
    get(&doctor, &format!("/devices/{dev}/readings?from=9&to=5"))
        .await
        .err(StatusCode::BAD_REQUEST, "bad_range");
    get(&w.r, &format!("/devices/{dev}/readings"))
        .await
        .err(StatusCode::UNAUTHORIZED, "unauthenticated");
    // a reading's transaction, a block body
    assert_eq!(
        get(&doctor, &format!("/txs/{}", w.reading_id)).await.status,
        StatusCode::OK
    );
    get(&stranger, &format!("/txs/{}", w.reading_id))
        .await
        .err(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(
        get(&auditor, &format!("/blocks/{}", w.height)).await.status,
        StatusCode::OK
    );
    // the patient's own reads are logged too
    assert_eq!(get(&patient, "/readings").await.status, StatusCode::OK);

    let log = get_ok(&patient, &format!("/access-log?patient={pat}")).await;
    let e = log["entries"].as_array().unwrap();
    let summary: Vec<(String, String, String, Value, Value, Value)> = e
        .iter()
        .map(|x| {
            (
                x["reader"].as_str().unwrap().to_string(),
                x["kind"].as_str().unwrap().to_string(),
                x["outcome"].as_str().unwrap().to_string(),
                x["stream"].clone(),
                x["from"].clone(),
                x["to"].clone(),
            )
        })
        .collect();
    let doc = hx(&w.doctor_c.public());
    let str_ = hx(&w.doctor_u.public());
    let aud = hx(&w.auditor.public());
    let h = json!(w.height);
    assert_eq!(
        summary,
        vec![
            (
                doc.clone(),
                "readings".into(),
                "allowed".into(),
                Value::Null,
                json!(5),
                json!(9_000_000_000_000u64)
            ),
            (
                str_.clone(),
                "readings".into(),
                "refused".into(),
                json!(0),
                json!(0),
                json!(u64::MAX)
            ),
            (
                doc.clone(),
                "transaction".into(),
                "allowed".into(),
                json!(0),
                h.clone(),
                json!(0)
            ),
            (
                str_,
                "transaction".into(),
                "refused".into(),
                json!(0),
                h.clone(),
                json!(0)
            ),
            (
                aud,
                "block_body".into(),
                "allowed".into(),
                Value::Null,
                h.clone(),
                h
            ),
            (
                pat.clone(),
                "readings".into(),
                "allowed".into(),
                Value::Null,
                json!(0),
                json!(u64::MAX)
            ),
        ],
        "{log}"
    );
    assert_eq!(e[0]["patient"], pat);
    assert_eq!(e[0]["device"], dev);
    assert_eq!(e[0]["reader_role"], "doctor");
    assert_eq!(e[2]["subject"], w.reading_id);
    assert_eq!(e[4]["patient"], Value::Null);
    // every entry chains from the one before, to the signed head
    let (chain, gw) = (w.chain(), w.gateway.public());
    for x in e {
        let bytes = hex::decode(x["entry"].as_str().unwrap()).unwrap();
        let prev = h32(&x["prev_hash"]);
        assert_eq!(chain_hash(&chain, &gw, &prev, &bytes), h32(&x["hash"]));
    }
    let head = &log["head"];
    assert_eq!(head["count"], 6);
    assert_eq!(head["hash"], e[5]["hash"]);
    // others may not read the patient's log; the auditor may (and that is logged)
    get(&doctor, &format!("/access-log?patient={pat}"))
        .await
        .err(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(
        get(&auditor, &format!("/access-log?patient={pat}"))
            .await
            .status,
        StatusCode::OK
    );
    get(&doctor, "/access-log/entries")
        .await
        .err(StatusCode::FORBIDDEN, "forbidden");
    let all = get_ok(&auditor, "/access-log/entries?limit=1000").await;
    let kinds: Vec<&str> = all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["kind"].as_str().unwrap())
        .collect();
    // the doctor's refused look at the log and the auditor's read of it
    assert_eq!(kinds.len(), 7, "{all}");
    assert_eq!(kinds[6], "access_log");
}

/// The log verifies while untouched; a flipped byte in an entry is named by
/// the verifier and makes the gateway refuse reads it cannot log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_tampering_is_detected() {
    let w = world().await;
    let dev = hx(&w.device.public());
    let patient = with_token(&w.r, &w.login(&w.patient).await);
    for _ in 0..3 {
        assert_eq!(
            get(&patient, &format!("/devices/{dev}/readings"))
                .await
                .status,
            StatusCode::OK
        );
    }
    let auditor = with_token(&w.r, &w.login(&w.auditor).await);
    let entries = get_ok(&auditor, "/access-log/entries").await["entries"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(entries.len(), 3);
    let (chain, gw) = (w.chain(), w.gateway.public());
    let dir = w.dir.path().to_path_buf();
    // the routers hold the log open: close them first
    let World {
        r, node, dir: keep, ..
    } = w;
    drop((r, patient, auditor));
    let head = alog::verify_dir(&dir, &chain, &gw).unwrap().unwrap();
    assert_eq!(head.head.count, 3);
    // flip one bit of the middle entry's reader
    let mut bytes = hex::decode(entries[1]["entry"].as_str().unwrap()).unwrap();
    bytes[20] ^= 0x01;
    alog::overwrite_entry_unchecked(&dir, 1, &bytes).unwrap();
    let AccessLogFault { what, .. } = alog::verify_dir(&dir, &chain, &gw).unwrap_err();
    assert!(what.contains("entry 1"), "{what}");
    // the last entry changed: the gateway refuses reads it would log
    let mut last = hex::decode(entries[2]["entry"].as_str().unwrap()).unwrap();
    last[30] ^= 0x80;
    alog::overwrite_entry_unchecked(&dir, 2, &last).unwrap();
    let r = router(node.clone());
    let t = login(&r, &Keypair::from_seed([4; 32])).await;
    get(&with_token(&r, &t), &format!("/devices/{dev}/readings"))
        .await
        .err(StatusCode::SERVICE_UNAVAILABLE, "access_log_unavailable");
    // public routes are still served
    assert_eq!(get(&r, "/health").await.status, StatusCode::OK);
    drop(keep);
}

/// The access log's head is anchored on the chain (an `AccessAnchor`
/// transaction signed by the gateway): a log rewritten consistently with
/// the gateway's own key — which the signed head alone cannot tell — fails
/// against the anchor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_is_anchored_on_the_chain() {
    let w = world().await;
    let dev = hx(&w.device.public());
    let patient = with_token(&w.r, &w.login(&w.patient).await);
    for _ in 0..3 {
        assert_eq!(
            get(&patient, &format!("/devices/{dev}/readings"))
                .await
                .status,
            StatusCode::OK
        );
    }
    let (chain, gw) = (w.chain(), w.gateway.public());
    // a minute later (the gateway's clock), the next read's write anchors
    // the head: wait for the anchor to be on the chain
    w.advance(alog::ANCHOR_EVERY_MS + 1);
    assert_eq!(
        get(&patient, &format!("/devices/{dev}/readings"))
            .await
            .status,
        StatusCode::OK
    );
    let t = std::time::Instant::now();
    let anchors = loop {
        let a = alog::anchors_in_chain(w.node.store(), &gw).unwrap();
        if !a.is_empty() {
            break a;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(60),
            "no anchor"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(anchors[0].0 >= 1);
    let auditor = with_token(&w.r, &w.login(&w.auditor).await);
    let entries = get_ok(&auditor, "/access-log/entries").await["entries"]
        .as_array()
        .unwrap()
        .clone();
    let dir = w.dir.path().to_path_buf();
    let World {
        r,
        node,
        dir: keep,
        gateway,
        ..
    } = w;
    drop((r, patient, auditor));
    assert_eq!(
        alog::verify_anchors(&dir, &chain, &gw, &anchors).unwrap(),
        anchors.len()
    );
    // someone with the gateway's key and disk rewrites the first entry
    let mut first = hex::decode(entries[0]["entry"].as_str().unwrap()).unwrap();
    first[20] ^= 0x01;
    alog::rewrite_with_key_unchecked(&dir, &chain, &gateway, 0, &first).unwrap();
    // consistent and signed: the log alone does not tell
    alog::verify_dir(&dir, &chain, &gw).unwrap();
    // the chain does
    let AccessLogFault { what, .. } =
        alog::verify_anchors(&dir, &chain, &gw, &anchors).unwrap_err();
    assert!(what.contains("anchored entry was changed"), "{what}");
    drop((node, keep));
}

/// `GET /readings/live` (the dashboard's stream): a consented doctor
/// receives the next final reading of the patient's device; opening the
/// stream is recorded in the patient's access log; an insurer without
/// consent is refused (and that refusal is not a stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_readings_stream() {
    use futures::StreamExt;
    let w = world().await;
    let peer = SocketAddr::from(([10, 0, 0, 1], 4000));
    let doctor = as_peer(&w.r, Some(&w.login(&w.doctor_c).await), peer);
    let res = doctor
        .clone()
        .oneshot(Request::get("/readings/live").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = res.into_body().into_data_stream();
    let tx = w.sign(
        &w.device,
        2,
        TxKind::Reading {
            stream: 0,
            payload: sensorchain_core::tx::Payload::Plain(Vital::HeartRate { bpm: 72 }),
        },
    );
    let id = commit(&w.r, &tx).await["tx_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(chunk) = body.next().await {
            seen.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
            if seen.contains(&id) {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no reading event for {id}: {seen}"));
    assert!(seen.contains("event: hello"), "{seen}");
    assert!(seen.contains("event: block"), "{seen}");
    assert!(seen.contains("event: reading"), "{seen}");
    assert!(seen.contains("\"bpm\":72"), "{seen}");
    drop(body);

    let insurer = as_peer(&w.r, Some(&w.login(&w.insurer_u).await), peer);
    get(&insurer, "/readings/live")
        .await
        .err(StatusCode::FORBIDDEN, "forbidden");

    let pat = hx(&w.patient.public());
    let patient = as_peer(&w.r, Some(&w.login(&w.patient).await), peer);
    let log = get_ok(&patient, &format!("/access-log?patient={pat}")).await;
    let doc = hx(&w.doctor_c.public());
    assert!(
        log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reader"] == doc
                && e["kind"] == "readings"
                && e["outcome"] == "allowed"
                && e["to"] == json!(u64::MAX)),
        "{log}"
    );
}

/// The dashboard's page and assets: embedded, typed, the strict CSP on the
/// page, a short cache with an ETag on assets only, 404 for other names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_assets() {
    let w = world().await;
    let page = get(&w.r, "/dashboard").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.ctype.starts_with("text/html"));
    assert!(String::from_utf8_lossy(&page.body).contains("/assets/app.js"));
    let root =
        w.r.clone()
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
    assert!(root.status().is_redirection());
    assert_eq!(root.headers()[header::LOCATION], "/dashboard");
    for (name, ctype) in [
        ("app.js", "text/javascript"),
        ("sc.js", "text/javascript"),
        ("app.css", "text/css"),
        ("sensorchain.wasm", "application/wasm"),
        ("uPlot.iife.min.js", "text/javascript"),
    ] {
        let res =
            w.r.clone()
                .oneshot(
                    Request::get(format!("/assets/{name}"))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{name}");
        let h = res.headers();
        assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(ctype));
        assert_eq!(h[header::CACHE_CONTROL], "public, max-age=300");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        let tag = h[header::ETAG].clone();
        let again =
            w.r.clone()
                .oneshot(
                    Request::get(format!("/assets/{name}"))
                        .header(header::IF_NONE_MATCH, tag)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{name}");
    }
    let wasm = get(&w.r, "/assets/sensorchain.wasm").await;
    assert_eq!(&wasm.body[..4], b"\0asm");
    get(&w.r, "/assets/../Cargo.toml")
        .await
        .err(StatusCode::NOT_FOUND, "no_route");
    get(&w.r, "/assets/nothing.js")
        .await
        .err(StatusCode::NOT_FOUND, "no_route");
    // answers with data keep no-store
    let h =
        w.r.clone()
            .oneshot(Request::get("/health").body(Body::empty()).unwrap())
            .await
            .unwrap();
    assert_eq!(h.headers()[header::CACHE_CONTROL], "no-store");
}
