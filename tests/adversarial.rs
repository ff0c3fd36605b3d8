//! Adversarial scenarios against a gateway started in this process, over
//! real loopback TCP, that `tests/links.rs` does not cover: replay of each
//! handshake message, a device presenting another device's key id without
//! its key, transactions signed for another chain or another purpose, a
//! replayed old block, and the crafted Ed25519 edge cases of
//! `crates/sensorchain-core/tests/data/ed25519_verdicts.json` submitted to
//! the gateway's ingest (same verdict as the core rule and OpenSSL).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::link::{RawLink, Served, next_frame, raw, send_frame, serially, start_initiator};
use sensorchain_core::block::Block;
use sensorchain_core::codec::encode_to_vec;
use sensorchain_core::handshake::{Initiator, MESSAGE1_LEN, MESSAGE3_LEN, Message1};
use sensorchain_core::hash::ChainId;
use sensorchain_core::identity::{Keypair, PublicKey, Signature, VerifyingKey};
use sensorchain_core::link::{self, GatewayMsg, LinkFrame, Refusal, RejectReason};
use sensorchain_core::reading::Vital;
use sensorchain_core::state::SigCheck;
use sensorchain_core::tx::{Transaction, TxBody};
use sensorchain_gateway::app::Running;
use sensorchain_gateway::net::client::Client;
use sensorchain_gateway::net::codec::LinkCodec;
use sensorchain_gateway::net::{LinkHub, NetConfig, mono_ms};
use sensorchain_gateway::node::{Node, Rejected, now_ms};
use sensorchain_gateway::sim::reading_tx;
use sensorchain_gateway::testkit;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const TEST_LIMIT: Duration = Duration::from_secs(30);

struct Fx {
    /// The gateway (dropped first: its tasks are aborted).
    _app: Running,
    _dir: tempfile::TempDir,
    gw: Keypair,
    chain: ChainId,
    devices: Vec<Keypair>,
    node: Node,
    gateway: Arc<LinkHub>,
    addr: SocketAddr,
}

async fn start(name: &str, devices: Vec<Keypair>) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let gw = testkit::gateway();
    let others = testkit::device_members(&devices);
    let genesis = testkit::genesis_block(name, &testkit::admin(), &gw, &others);
    let chain = genesis.header.chain_id;
    let mut app_cfg = testkit::app_config(&gw, genesis, dir.path());
    app_cfg.net = NetConfig {
        handshake_timeout: Duration::from_millis(1500),
        ..NetConfig::default()
    };
    let s = Served::start(app_cfg).await;
    Fx {
        _app: s.app,
        _dir: dir,
        gw,
        chain,
        devices,
        node: s.node,
        gateway: s.hub,
        addr: s.addr,
    }
}

fn dev(i: u8) -> Keypair {
    Keypair::from_seed([0x70 + i; 32])
}

async fn guarded<F: std::future::Future<Output = ()>>(f: F) {
    serially(TEST_LIMIT, f).await
}

/// What the gateway answered: a refusal (then the link must close), a
/// challenge, or nothing (closed).
async fn answer(f: &mut Framed<TcpStream, LinkCodec>) -> Result<Vec<u8>, Option<Refusal>> {
    let Some(b) = next_frame(f).await else {
        return Err(None);
    };
    match link::decode::<LinkFrame>(&b) {
        Ok(LinkFrame::Challenge(m2)) => Ok(m2.to_vec()),
        Ok(LinkFrame::Refused(r)) => {
            assert!(
                next_frame(f).await.is_none(),
                "link stays open after a refusal"
            );
            Err(Some(r))
        }
        other => panic!("unexpected answer {other:?}"),
    }
}

impl Fx {
    /// A session of `kp` through the gateway's sensor port.
    async fn connect(&self, kp: &Keypair) -> Client {
        Client::connect(self.addr, &self.chain, kp, &[self.gw.public()])
            .await
            .unwrap()
    }
}

/// A raw link to the gateway on which `kp` sent message 1 of a new
/// handshake: the link, the handshake and its message 1.
async fn hello(fx: &Fx, kp: &Keypair) -> (RawLink, Initiator, Vec<u8>) {
    let (init, m1) = start_initiator(kp, &fx.chain);
    let mut link = raw(fx.addr).await;
    send_frame(&mut link, &LinkFrame::Hello(&m1)).await;
    (link, init, m1)
}

/// `r` ([`answer`]) is a refused handshake: `HandshakeFailed`, or the link
/// closed without a word.
fn assert_handshake_refused(r: &Result<Vec<u8>, Option<Refusal>>, what: &str) {
    assert!(
        matches!(r, Err(Some(Refusal::HandshakeFailed)) | Err(None)),
        "{what}: {r:?}"
    );
}

async fn wait_until(f: impl Fn() -> bool) {
    for _ in 0..300 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(f(), "condition not reached in 3 s");
}

async fn wait_sessions(fx: &Fx, n: usize) {
    for _ in 0..100 {
        if fx.gateway.sessions() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fx.gateway.sessions(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_message1_is_refused() {
    guarded(async {
        let fx = start("adv-m1", vec![dev(0)]).await;
        let (mut a, _init, m1) = hello(&fx, &fx.devices[0]).await;
        assert!(answer(&mut a).await.is_ok(), "first message 1 answered");
        // the same message 1 on another connection (an eavesdropper's replay)
        let mut b = raw(fx.addr).await;
        send_frame(&mut b, &LinkFrame::Hello(&m1)).await;
        let r = answer(&mut b).await;
        assert_handshake_refused(&r, "replayed message 1");
        // and again on the first connection, after its handshake started
        send_frame(&mut a, &LinkFrame::Hello(&m1)).await;
        assert!(
            answer(&mut a).await.is_err(),
            "second hello on one link accepted"
        );
        assert_eq!(fx.gateway.sessions(), 0);
        // an honest device still gets in
        let c = fx.connect(&fx.devices[0]).await;
        c.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message3_of_one_handshake_is_refused_in_another() {
    guarded(async {
        let fx = start("adv-m3", vec![dev(0)]).await;
        let d = &fx.devices[0];
        let trusted = [fx.gw.public()];
        // handshake A, completed by the device up to its message 3
        let (mut a, init_a, _) = hello(&fx, d).await;
        let m2a = answer(&mut a).await.unwrap();
        // handshake B, a second link of the same device
        let (mut b, init_b, _) = hello(&fx, d).await;
        let m2b = answer(&mut b).await.unwrap();
        // message 2 of A replayed to the device's handshake B: refused by the device
        let mut m3 = [0u8; MESSAGE3_LEN];
        assert!(
            init_b
                .finish(d, &trusted[..], &m2a, mono_ms(), &mut m3)
                .is_err(),
            "device accepted a replayed message 2"
        );
        let _ = m2b;
        let (_est, n) = init_a
            .finish(d, &trusted[..], &m2a, mono_ms(), &mut m3)
            .unwrap();
        // message 3 of A sent on link B: refused, no session
        send_frame(&mut b, &LinkFrame::Proof(&m3[..n])).await;
        let r = answer(&mut b).await;
        assert_handshake_refused(&r, "message 3 of another link");
        // only link A's handshake is still half-open (a link holds its
        // session permit from message 1 on)
        wait_until(|| fx.gateway.half_open() == 1 && fx.gateway.sessions() == 1).await;
        // the genuine message 3 on link A completes it
        send_frame(&mut a, &LinkFrame::Proof(&m3[..n])).await;
        wait_until(|| fx.gateway.half_open() == 0).await;
        assert_eq!(fx.gateway.sessions(), 1);
        // replaying it inside the established session creates nothing
        send_frame(&mut a, &LinkFrame::Proof(&m3[..n])).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(fx.gateway.sessions() <= 1);
        assert_eq!(fx.gateway.half_open(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_devices_key_id_without_its_key_fails() {
    guarded(async {
        let fx = start("adv-impersonate", vec![dev(0)]).await;
        let victim = &fx.devices[0];
        let attacker = Keypair::from_seed([0x66; 32]);
        // message 1 naming the victim, with the attacker's ephemeral key
        let (init, m1) = start_initiator(&attacker, &fx.chain);
        let mut msg: Message1 = sensorchain_core::codec::decode_exact(&m1, MESSAGE1_LEN).unwrap();
        msg.initiator = victim.public().key_id();
        let forged = encode_to_vec(&msg);
        let mut s = raw(fx.addr).await;
        send_frame(&mut s, &LinkFrame::Hello(&forged)).await;
        // the allowlist knows the victim: the gateway answers
        let m2 = answer(&mut s).await.unwrap();
        // the attacker's own state cannot complete (transcripts differ) ...
        let mut m3 = [0u8; MESSAGE3_LEN];
        assert!(
            init.finish(&attacker, &[fx.gw.public()][..], &m2, mono_ms(), &mut m3)
                .is_err()
        );
        // ... and a message 3 signed with the attacker's key is refused
        let sig = attacker.sign(&m2);
        send_frame(&mut s, &LinkFrame::Proof(&sig.0)).await;
        let r = answer(&mut s).await;
        assert_handshake_refused(&r, "an impersonator's message 3");
        wait_sessions(&fx, 0).await;
        // the victim is unaffected
        let c = fx.connect(victim).await;
        c.close().await;
    })
    .await;
}

/// `len(ctx) || ctx || chain || body`, signed with any context.
fn sign_with_ctx(kp: &Keypair, ctx: &str, chain: &ChainId, body: &TxBody) -> Vec<u8> {
    let mut m = vec![ctx.len() as u8];
    m.extend_from_slice(ctx.as_bytes());
    m.extend_from_slice(&chain.0);
    m.extend_from_slice(&encode_to_vec(body));
    Transaction {
        body: body.clone(),
        signature: kp.sign(&m),
    }
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_for_another_chain_or_purpose_are_refused() {
    guarded(async {
        let fx = start("adv-domain", vec![dev(0)]).await;
        let d = &fx.devices[0];
        let mut c = fx.connect(d).await;
        // another chain: any id but this one's (here one bit off)
        let mut other = fx.chain;
        other.0[31] ^= 1;
        let body =
            |seq: u64| TxBody::reading(d.public(), seq, now_ms(), 1, Vital::SpO2 { percent: 97 });
        let forgeries: Vec<(&str, Vec<u8>)> = vec![
            (
                "another chain id",
                Transaction::sign(body(1), &other, d).unwrap().to_vec(),
            ),
            (
                "block-proposal context",
                sign_with_ctx(
                    d,
                    sensorchain_core::hash::ctx::BLOCK_PROPOSAL,
                    &fx.chain,
                    &body(2),
                ),
            ),
            (
                "finality-vote context",
                sign_with_ctx(
                    d,
                    sensorchain_core::hash::ctx::FINALITY,
                    &fx.chain,
                    &body(3),
                ),
            ),
            (
                "handshake context",
                sign_with_ctx(d, "sensorchain/hs/v1/sig3-initiator", &fx.chain, &body(4)),
            ),
            ("no domain at all", {
                let b = body(5);
                Transaction {
                    signature: d.sign(&encode_to_vec(&b)),
                    body: b,
                }
                .to_vec()
            }),
        ];
        for (what, tx) in &forgeries {
            let seq = Transaction::decode(tx).unwrap().body.sequence;
            // through a session
            let a = c.submit(tx).await.unwrap();
            assert_eq!(
                a,
                GatewayMsg::Reject {
                    sequence: seq,
                    reason: RejectReason::BadSignature
                },
                "session: {what}"
            );
            // through the node (the API's path)
            assert_eq!(
                fx.node.submit(tx.clone(), None).await,
                Err(Rejected::BadSignature),
                "node.submit: {what}"
            );
        }
        // the same reading signed for this chain is accepted
        let ok = Transaction::sign(body(6), &fx.chain, d).unwrap().to_vec();
        assert!(matches!(
            c.submit(&ok).await.unwrap(),
            GatewayMsg::Ack { .. }
        ));
        c.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_old_block_is_refused() {
    guarded(async {
        let fx = start("adv-block", vec![dev(0)]).await;
        let d = &fx.devices[0];
        for seq in 1..=3 {
            let tx = reading_tx(d, &fx.chain, seq, now_ms(), 1, Vital::HeartRate { bpm: 70 });
            fx.node.submit(tx, None).await.unwrap();
        }
        let head = fx.node.store().head().unwrap().unwrap();
        assert!(head.height >= 1);
        let state = fx.node.state();
        for h in 0..=head.height {
            let old = fx.node.store().block(h).unwrap().unwrap();
            let mut s = (*state).clone();
            let e = s.apply_block(&old, None, SigCheck::Verify).unwrap_err();
            assert_eq!(e.height, h);
            assert_eq!(s.commitment(), state.commitment());
            // the store refuses it too (height and previous hash)
            let enc = old.encoded_txs();
            assert!(
                fx.node
                    .store()
                    .commit_block(&old, &enc, None, None)
                    .is_err()
            );
        }
        // the chain is unchanged and audits clean
        assert_eq!(fx.node.store().head().unwrap().unwrap().height, head.height);
        let report = sensorchain_gateway::audit::audit_store(
            fx.node.store(),
            Duration::from_secs(3600),
            |_| {},
        )
        .unwrap();
        assert!(report.valid, "{:?}", report.error);
    })
    .await;
}

struct EdgeCase {
    name: String,
    pk: PublicKey,
    sequence: u64,
    msg: Vec<u8>,
    sig: Signature,
    openssl: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_ed25519_cases_get_the_core_verdict_at_ingest() {
    guarded(async {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../sensorchain-core/tests/data/ed25519_verdicts.json"
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let hx = |v: &serde_json::Value| hex::decode(v.as_str().unwrap()).unwrap();
        let seed: [u8; 32] = hx(&v["seed"]).try_into().unwrap();
        let cases: Vec<EdgeCase> = v["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| EdgeCase {
                name: c["name"].as_str().unwrap().into(),
                pk: PublicKey(hx(&c["pk"]).try_into().unwrap()),
                sequence: c["sequence"].as_u64().unwrap(),
                msg: hx(&c["msg"]),
                sig: Signature(hx(&c["sig"]).try_into().unwrap()),
                openssl: c["openssl"].as_bool().unwrap(),
            })
            .collect();
        let device = Keypair::from_seed(seed);
        let fx = start(v["chain_name"].as_str().unwrap(), vec![device.clone()]).await;
        // the generator's genesis is this one: the crafted messages are
        // signed under its chain id
        assert_eq!(fx.chain.to_string(), v["chain_id"].as_str().unwrap());
        let tx_of = |c: &EdgeCase| {
            Transaction {
                body: TxBody::reading(
                    c.pk,
                    c.sequence,
                    v["timestamp_ms"].as_u64().unwrap(),
                    v["stream"].as_u64().unwrap() as u16,
                    Vital::HeartRate {
                        bpm: v["bpm"].as_u64().unwrap() as u16,
                    },
                ),
                signature: c.sig,
            }
            .to_vec()
        };
        let mut c = fx.connect(&device).await;
        let mut accepted = 0;
        for case in &cases {
            let tx = tx_of(case);
            let registrable = VerifyingKey::from_public(&case.pk).is_ok();
            // the core rule's verdict, which must be OpenSSL's
            let core = VerifyingKey::from_public(&case.pk)
                .is_ok_and(|vk| vk.verify(&case.msg, &case.sig).is_ok());
            if registrable {
                assert_eq!(core, case.openssl, "{}", case.name);
            }
            let node = fx.node.submit(tx.clone(), None).await;
            if !registrable {
                assert_eq!(node, Err(Rejected::UnknownSigner), "{}", case.name);
                continue;
            }
            assert_eq!(node.is_ok(), core, "{}: node ingest {node:?}", case.name);
            if node.is_ok() {
                accepted += 1;
                continue;
            }
            assert_eq!(node, Err(Rejected::BadSignature), "{}", case.name);
            // the same bytes through a device session
            let a = c.submit(&tx).await.unwrap();
            assert_eq!(
                a,
                GatewayMsg::Reject {
                    sequence: case.sequence,
                    reason: RejectReason::BadSignature
                },
                "{}: session",
                case.name
            );
        }
        // exactly the honest signature and the identity-R one (OpenSSL and
        // Go accept it; libsodium does not) are on the chain
        assert_eq!(accepted, 2);
        c.close().await;
        let report = sensorchain_gateway::audit::audit_store(
            fx.node.store(),
            Duration::from_secs(3600),
            |_| {},
        )
        .unwrap();
        assert!(report.valid, "{:?}", report.error);
    })
    .await;
}

// ---------------------------------------------------------------------------
// Issue 11, findings 1 and 12, with real `sensorchain` processes.

use common::run as sensorchain;

/// `sensorchain genesis --name NAME --creator admin.key --member
/// gateway:gw.key --out OUT` in `dir`; returns the chain id it printed.
fn genesis_cli(dir: &std::path::Path, name: &str, out: &str) -> String {
    let (code, stdout, stderr) = sensorchain(
        &[
            "genesis",
            "--name",
            name,
            "--creator",
            "admin.key",
            "--member",
            "gateway:gw.key",
            "--out",
            out,
        ],
        dir,
    );
    assert_eq!(code, 0, "genesis: {stdout}\n{stderr}");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("chain id"))
        .unwrap_or_else(|| panic!("no chain id line in {stdout:?}"))
        .trim()
        .to_string()
}

/// Starts `sensorchain run` in `dir/sub` on the genesis file `dir/sub/genesis.block`
/// (and `dir/gw.key`); returns the process and its API address once it answers.
fn run_gateway(dir: &std::path::Path, sub: &str) -> (common::Gateway, SocketAddr) {
    use sensorchain_gateway::config::GatewayConfig;
    let d = dir.join(sub);
    std::fs::copy(dir.join("gw.key"), d.join("gateway.key")).unwrap();
    let tcp = format!("127.0.0.1:{}", common::free_port());
    let api: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let mut cfg = GatewayConfig::new("data".into(), "gateway.key".into(), "genesis.block".into());
    cfg.listen.tcp = Some(tcp);
    cfg.listen.api = Some(api.to_string());
    cfg.batch.timeout_ms = 5;
    let config = d.join("gateway.toml");
    std::fs::write(&config, cfg.to_toml()).unwrap();
    let g = common::spawn_gateway(&config, api, &format!("gateway {sub}"));
    (g, api)
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// `POST /txs` of exact transaction bytes: (status, JSON answer).
fn post_tx(api: SocketAddr, tx: &[u8]) -> (u16, serde_json::Value) {
    let mut r = http()
        .post(format!("http://{api}/txs"))
        .content_type("application/octet-stream")
        .send(tx)
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        r.body_mut().read_json().unwrap_or(serde_json::Value::Null),
    )
}

/// The permissions the gateway at `api` reports for `pk` (none if unknown).
fn permissions_at(api: SocketAddr, admin: &Keypair, pk: &PublicKey) -> Vec<String> {
    // the identity directory needs a session: an admin's
    let (status, v) = common::get_as(
        &format!("http://{api}"),
        admin,
        &format!("/identities/{pk}"),
    );
    if status == 404 {
        return Vec::new();
    }
    assert_eq!(status, 200, "{v}");
    v["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

/// Finding 1: `sensorchain genesis --name ward-7` twice with the same admin
/// key gave one chain id, and a grant taken from chain A was accepted by
/// chain B. Now each genesis has its own id, and B refuses A's grant.
#[test]
fn same_name_geneses_are_distinct_chains_and_refuse_each_others_grants() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let admin = Keypair::from_seed([0x31; 32]);
    sensorchain_gateway::keys::write_keypair(&dir.join("admin.key"), &admin, false).unwrap();
    sensorchain_gateway::keys::write_keypair(
        &dir.join("gw.key"),
        &Keypair::from_seed([0x32; 32]),
        false,
    )
    .unwrap();
    std::fs::create_dir(dir.join("a")).unwrap();
    std::fs::create_dir(dir.join("b")).unwrap();
    let id_a = genesis_cli(dir, "ward-7", "a/genesis.block");
    // two runs are two different milliseconds (the genesis time is part of
    // the chain id; the same bytes in the same millisecond are the same chain)
    std::thread::sleep(Duration::from_millis(5));
    let id_b = genesis_cli(dir, "ward-7", "b/genesis.block");
    assert_ne!(id_a, id_b, "same name, same admin: still two chains");
    // the printed id is the one the genesis file proves
    for (sub, id) in [("a", &id_a), ("b", &id_b)] {
        let block =
            Block::decode(&std::fs::read(dir.join(sub).join("genesis.block")).unwrap()).unwrap();
        let proved = sensorchain_core::chain::genesis_chain_id(&block).unwrap();
        assert_eq!(proved.to_string(), *id);
    }
    let chain_a = ChainId(sensorchain_core::hash::parse_hex::<32>(&id_a).unwrap());

    let (_ga, api_a) = run_gateway(dir, "a");
    let (_gb, api_b) = run_gateway(dir, "b");
    // a grant of connect,send,receive built for chain A
    let target = Keypair::from_seed([0x33; 32]).public();
    let grant = Transaction::sign(
        TxBody {
            signer: admin.public(),
            sequence: 1,
            timestamp_ms: now_ms(),
            kind: sensorchain_core::tx::TxKind::Grant {
                target,
                permissions: sensorchain_core::permissions::Permissions::parse_list(
                    "connect,send,receive",
                )
                .unwrap(),
            },
        },
        &chain_a,
        &admin,
    )
    .unwrap()
    .to_vec();
    // chain B refuses it: the signature covers A's id, not B's
    let (status, answer) = post_tx(api_b, &grant);
    assert_ne!(status, 201, "chain B committed chain A's grant: {answer}");
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["code"], "bad_signature", "{answer}");
    assert!(permissions_at(api_b, &admin, &target).is_empty());
    // where it belongs it is committed
    let (status, answer) = post_tx(api_a, &grant);
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        permissions_at(api_a, &admin, &target),
        ["connect", "send", "receive"]
    );
    // and B still refuses it afterwards
    let (status, _) = post_tx(api_b, &grant);
    assert_eq!(status, 401);
    assert!(permissions_at(api_b, &admin, &target).is_empty());
}

/// Finding 12: `sensorchain tx grant` of a permission already held and
/// `tx revoke` of one not held were committed as no-op transactions. Now
/// the gateway refuses them and the CLI says why; the chain does not grow.
#[test]
fn no_op_grants_and_revocations_are_refused_through_the_cli() {
    let net = common::Net::new(1);
    let dir = net.dir.path();
    let (_gw, api) = net.start_for_admin();
    let device = net.devices[0].public().to_string();
    let height = || -> u64 {
        let mut r = http().get(format!("{api}/chain/head")).call().unwrap();
        let v: serde_json::Value = r.body_mut().read_json().unwrap();
        v["height"].as_u64().unwrap()
    };
    let before = height();
    for (op, perms, code) in [
        ("grant", "write", "nothing_to_grant"),
        ("grant", "connect,send", "nothing_to_grant"),
        ("revoke", "receive", "nothing_to_revoke"),
        ("revoke", "write,receive", "nothing_to_revoke"),
    ] {
        let (status, out, err) = sensorchain(
            &[
                "tx",
                op,
                &device,
                perms,
                "--key",
                "admin.key",
                "--api",
                &api,
            ],
            dir,
        );
        assert_ne!(status, 0, "tx {op} {perms} succeeded: {out}");
        assert!(err.contains(code), "tx {op} {perms}: {err}");
        assert!(err.contains("would change nothing"), "no hint: {err}");
    }
    assert_eq!(height(), before, "a refused no-op made a block");
    assert_eq!(
        permissions_at(net.api, &net.admin, &net.devices[0].public()),
        ["connect", "write"]
    );
    // a real change still goes through
    let (status, out, err) = sensorchain(
        &[
            "tx",
            "grant",
            &device,
            "send",
            "--key",
            "admin.key",
            "--api",
            &api,
        ],
        dir,
    );
    assert_eq!(status, 0, "{out}\n{err}");
}
