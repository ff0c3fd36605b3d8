//! Sensor links over real loopback TCP, against a gateway started in this
//! process (temporary directory): handshakes, acknowledgements, refusals,
//! revocation, replays, bad frames, slow and half-open connections, and
//! 1,000 concurrent sensors without loss.
//!
//! Tests run one at a time (a shared lock) so that the figures they print
//! (ack rate under attack, time for 1,000 sensors) are not skewed by each
//! other on a small machine. Every loop is bounded by count and time.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::link::{Served, next_frame, serially, start_initiator, wire};
use futures::SinkExt;
use sensorchain_core::handshake::HandshakeError;
use sensorchain_core::hash::ChainId;
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::link::{self, DeviceMsg, GatewayMsg, LinkFrame, Refusal, RejectReason};
use sensorchain_core::permissions::{Permissions, Role};
use sensorchain_core::reading::Vital;
use sensorchain_core::tx::{Member, Transaction, TxBody, TxKind};
use sensorchain_gateway::app::Running;
use sensorchain_gateway::net::client::{Client, ClientError};
use sensorchain_gateway::net::codec::LinkCodec;
use sensorchain_gateway::net::{LinkHub, NetConfig};
use sensorchain_gateway::node::{Node, now_ms};
use sensorchain_gateway::sim::{SimSensor, reading_tx};
use sensorchain_gateway::testkit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// Upper bound of any one test.
const TEST_LIMIT: Duration = Duration::from_secs(40);

struct Fx {
    /// The gateway (dropped first: its tasks are aborted).
    _app: Running,
    _dir: tempfile::TempDir,
    admin: Keypair,
    admin_seq: AtomicU64,
    gw_key: PublicKey,
    chain: ChainId,
    devices: Vec<Keypair>,
    /// Registered as a device but without CONNECT.
    no_connect: Keypair,
    node: Node,
    gateway: Arc<LinkHub>,
    addr: SocketAddr,
}

fn device(i: u32) -> Keypair {
    let mut seed = [0x5a; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    Keypair::from_seed(seed)
}

async fn start(n_genesis_devices: u32, net: NetConfig) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let (admin, gw) = (testkit::admin(), testkit::gateway());
    let no_connect = Keypair::from_seed([3; 32]);
    let devices: Vec<Keypair> = (0..n_genesis_devices).map(device).collect();
    let mut others = vec![Member {
        key: no_connect.public(),
        permissions: Permissions::WRITE,
        role: Role::Device,
    }];
    others.extend(testkit::device_members(&devices));
    let genesis = testkit::genesis_block("links", &admin, &gw, &others);
    let chain = genesis.header.chain_id;
    let mut app_cfg = testkit::app_config(&gw, genesis, dir.path());
    app_cfg.net = net;
    let s = Served::start(app_cfg).await;
    Fx {
        _app: s.app,
        _dir: dir,
        admin,
        admin_seq: AtomicU64::new(1),
        gw_key: gw.public(),
        chain,
        devices,
        no_connect,
        node: s.node,
        gateway: s.hub,
        addr: s.addr,
    }
}

impl Fx {
    async fn connect(&self, kp: &Keypair) -> Result<Client, ClientError> {
        Client::connect(self.addr, &self.chain, kp, &[self.gw_key]).await
    }

    fn admin_tx(&self, kind: TxKind) -> Vec<u8> {
        let seq = self.admin_seq.fetch_add(1, Ordering::SeqCst);
        let body = TxBody {
            signer: self.admin.public(),
            sequence: seq,
            timestamp_ms: now_ms(),
            kind,
        };
        Transaction::sign(body, &self.chain, &self.admin)
            .unwrap()
            .to_vec()
    }

    /// Grants CONNECT and WRITE to `keys` (registering them), pipelined.
    async fn grant_all(&self, keys: &[PublicKey]) {
        let futs: Vec<_> = keys
            .iter()
            .map(|k| {
                let tx = self.admin_tx(TxKind::Grant {
                    target: *k,
                    permissions: Permissions::CONNECT.union(Permissions::WRITE),
                });
                self.node.enqueue(tx, None).unwrap().wait()
            })
            .collect();
        for r in futures::future::join_all(futs).await {
            r.unwrap();
        }
    }

    fn metric(&self, needle: &str) -> u64 {
        self.node
            .metrics()
            .encode()
            .lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
            .unwrap_or(0)
    }

    fn committed(&self, m: &GatewayMsg) -> bool {
        match m {
            GatewayMsg::Ack { tx_id, height, .. } => self
                .node
                .store()
                .tx_location(tx_id)
                .unwrap()
                .is_some_and(|l| l.height == *height),
            _ => false,
        }
    }
}

fn hr(kp: &Keypair, chain: &ChainId, seq: u64) -> Vec<u8> {
    reading_tx(
        kp,
        chain,
        seq,
        now_ms(),
        3,
        Vital::HeartRate {
            bpm: 60 + (seq % 40) as u16,
        },
    )
}

fn fast_net() -> NetConfig {
    NetConfig {
        handshake_timeout: Duration::from_millis(1500),
        ..NetConfig::default()
    }
}

/// Message 1 of a new handshake of `kp` on `chain`, as a `Hello` frame.
fn hello(kp: &Keypair, chain: &ChainId) -> Vec<u8> {
    wire(&LinkFrame::Hello(&start_initiator(kp, chain).1))
}

async fn guarded<F: std::future::Future<Output = ()>>(f: F) {
    serially(TEST_LIMIT, f).await
}

/// How long a sensor keeps retrying a retryable connect failure in these
/// tests (a bound, not the thing tested).
const PATIENCE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_gets_readings_acknowledged_and_committed() {
    guarded(async {
        let fx = start(2, fast_net()).await;
        let d = &fx.devices[0];
        let mut c = fx.connect(d).await.unwrap();
        assert_eq!(c.gateway(), fx.gw_key);
        c.ping(7).await.unwrap();
        // simulated vitals, pipelined
        let mut s = SimSensor::new(d.clone(), fx.chain, 1, 1);
        let txs: Vec<Vec<u8>> = (0..40).map(|_| s.next_tx(now_ms()).unwrap().1).collect();
        let answers = c.submit_pipelined(&txs, 16).await.unwrap();
        for (i, a) in answers.iter().enumerate() {
            assert!(
                matches!(a, GatewayMsg::Ack { sequence, .. } if *sequence == i as u64 + 1),
                "{a:?}"
            );
            assert!(
                fx.committed(a),
                "ack of a transaction not in the store: {a:?}"
            );
        }
        // one at a time
        let a = c.submit(&hr(d, &fx.chain, 100)).await.unwrap();
        assert!(fx.committed(&a));
        // replayed reading (same sequence): refused
        let a = c.submit(&hr(d, &fx.chain, 100)).await.unwrap();
        assert_eq!(
            a,
            GatewayMsg::Reject {
                sequence: 100,
                reason: RejectReason::Replay
            }
        );
        // a reading signed by another device on this session
        let a = c.submit(&hr(&fx.devices[1], &fx.chain, 5)).await.unwrap();
        assert_eq!(
            a,
            GatewayMsg::Reject {
                sequence: 5,
                reason: RejectReason::WrongSigner
            }
        );
        // implausible value
        let bad = reading_tx(
            d,
            &fx.chain,
            101,
            now_ms(),
            3,
            Vital::HeartRate { bpm: 900 },
        );
        let a = c.submit(&bad).await.unwrap();
        assert_eq!(
            a,
            GatewayMsg::Reject {
                sequence: 101,
                reason: RejectReason::OutOfRange
            }
        );
        // replayed session frame: the copy is dropped and counted, the link lives on
        let frame = c.seal(&DeviceMsg::Submit(&hr(d, &fx.chain, 102))).unwrap();
        c.send_wire(&frame).await.unwrap();
        c.send_wire(&frame).await.unwrap();
        let a = c.recv().await.unwrap();
        assert!(fx.committed(&a), "{a:?}");
        c.ping(8).await.unwrap();
        assert_eq!(
            fx.metric("sensorchain_bad_frames_total{reason=\"replayed_frame\"}"),
            1
        );
        assert_eq!(fx.metric("sensorchain_sessions_total"), 1);
        assert_eq!(fx.metric("sensorchain_sessions_active"), 1);
        // the device's own counts (GET /identities' `links`)
        let links = fx.node.device_stats().of(&d.public());
        assert_eq!(links.live_sessions, 1, "{links:?}");
        assert_eq!(links.rejected.get("replay"), Some(&1), "{links:?}");
        assert_eq!(links.rejected.get("out_of_range"), Some(&1), "{links:?}");
        c.close().await;
        let t = Instant::now();
        while fx.gateway.sessions() > 0 && t.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(fx.gateway.sessions(), 0);
        assert_eq!(fx.node.device_stats().of(&d.public()).live_sessions, 0);
        assert_eq!(
            fx.metric("sensorchain_links_closed_total{reason=\"peer_closed\"}"),
            1
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_unpermitted_wrong_chain_and_rogue_gateway_are_refused() {
    guarded(async {
        let fx = start(1, fast_net()).await;
        let stranger = Keypair::from_seed([99; 32]);
        assert!(matches!(
            fx.connect(&stranger).await,
            Err(ClientError::Refused(Refusal::UnknownIdentity))
        ));
        assert!(matches!(
            fx.connect(&fx.no_connect).await,
            Err(ClientError::Refused(Refusal::NotPermitted))
        ));
        let other = ChainId([0xe1; 32]);
        let r = Client::connect(fx.addr, &other, &fx.devices[0], &[fx.gw_key]).await;
        assert!(
            matches!(r, Err(ClientError::Refused(Refusal::WrongChain))),
            "{r:?}"
        );
        // the device trusts another gateway only: this one is rogue to it
        let trusted = Keypair::from_seed([77; 32]).public();
        let r = Client::connect(fx.addr, &fx.chain, &fx.devices[0], &[trusted]).await;
        assert!(
            matches!(
                r,
                Err(ClientError::Handshake(HandshakeError::UntrustedResponder))
            ),
            "{r:?}"
        );
        assert_eq!(
            fx.metric("sensorchain_handshake_failures_total{reason=\"unknown_identity\"}"),
            1
        );
        assert_eq!(
            fx.metric("sensorchain_handshake_failures_total{reason=\"not_permitted\"}"),
            1
        );
        assert_eq!(fx.metric("sensorchain_sessions_total"), 0);
        // and the device still gets in with the right gateway key
        let mut c = fx.connect(&fx.devices[0]).await.unwrap();
        c.ping(1).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_device_session_is_dropped_at_once() {
    guarded(async {
        let fx = start(2, fast_net()).await;
        let d = &fx.devices[0];
        let mut c = fx.connect(d).await.unwrap();
        let mut other = fx.connect(&fx.devices[1]).await.unwrap();
        assert!(fx.committed(&c.submit(&hr(d, &fx.chain, 1)).await.unwrap()));
        let revoke = fx.admin_tx(TxKind::Revoke {
            target: d.public(),
            permissions: Permissions::CONNECT,
        });
        fx.node.submit(revoke, None).await.unwrap();
        let committed = Instant::now();
        let r = c.recv().await;
        let dropped_after = committed.elapsed();
        assert!(
            matches!(r, Err(ClientError::Refused(Refusal::Revoked))),
            "{r:?}"
        );
        println!(
            "revoked session dropped {:.1} ms after the revoke was committed",
            dropped_after.as_secs_f64() * 1e3
        );
        // "at once": the session does not wait for anything but the event;
        // the bound is generous so that a loaded machine cannot fail it
        assert!(dropped_after < Duration::from_secs(20), "{dropped_after:?}");
        assert!(matches!(
            fx.connect(d).await,
            Err(ClientError::Refused(Refusal::NotPermitted))
        ));
        // another device is not affected
        assert!(
            fx.committed(
                &other
                    .submit(&hr(&fx.devices[1], &fx.chain, 1))
                    .await
                    .unwrap()
            )
        );
        assert_eq!(
            fx.metric("sensorchain_links_closed_total{reason=\"revoked\"}"),
            1
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_truncated_and_garbage_frames() {
    guarded(async {
        let fx = start(1, fast_net()).await;
        let d = &fx.devices[0];
        let mut c = fx.connect(d).await.unwrap();
        // oversized: counted, skipped, the link lives on
        let mut big = vec![0x42u8; 3000];
        big.push(0);
        c.send_wire(&big).await.unwrap();
        c.ping(1).await.unwrap();
        assert_eq!(
            fx.metric("sensorchain_bad_frames_total{reason=\"oversized\"}"),
            1
        );
        // garbage after a valid frame: the reading is acknowledged, the garbage counted
        let mut w = c.seal(&DeviceMsg::Submit(&hr(d, &fx.chain, 1))).unwrap();
        w.extend_from_slice(&[0x07, 1, 2, 0]); // COBS block cut short
        w.extend_from_slice(&[0x03, 0xff, 0xee, 0]); // valid COBS, not a link frame
        c.send_wire(&w).await.unwrap();
        assert!(fx.committed(&c.recv().await.unwrap()));
        c.ping(2).await.unwrap();
        // one label for both since the link runs on core's connection (its
        // `BadFrame::Malformed` covers bad COBS and a frame that is not a
        // link frame; the label was `malformed_cobs` for the first before)
        assert_eq!(
            fx.metric("sensorchain_bad_frames_total{reason=\"malformed_frame\"}"),
            2
        );
        // repeated garbage closes the link
        let junk: Vec<u8> = (0..20).flat_map(|_| [0x05u8, 9, 0]).collect();
        c.send_wire(&junk).await.unwrap();
        let r = c.recv().await;
        assert!(
            matches!(r, Err(ClientError::Closed) | Err(ClientError::Io(_))),
            "{r:?}"
        );
        // a truncated frame, then the peer goes away
        let mut s = TcpStream::connect(fx.addr).await.unwrap();
        let h = hello(d, &fx.chain);
        let mut enc = bytes::BytesMut::new();
        tokio_util::codec::Encoder::<&[u8]>::encode(&mut LinkCodec::default(), &h[..], &mut enc)
            .unwrap();
        s.write_all(&enc[..enc.len() / 2]).await.unwrap();
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            fx.metric("sensorchain_bad_frames_total{reason=\"truncated\"}"),
            1
        );
        // garbage instead of a handshake: refused in clear
        let s = TcpStream::connect(fx.addr).await.unwrap();
        let mut f = Framed::new(s, LinkCodec::default());
        f.send(&[9u8, 9, 9][..]).await.unwrap();
        let r = next_frame(&mut f).await.unwrap();
        assert_eq!(
            link::decode::<LinkFrame>(&r).unwrap(),
            LinkFrame::Refused(Refusal::HandshakeFailed)
        );
        assert!(
            next_frame(&mut f).await.is_none(),
            "closed after the refusal"
        );
        // the gateway still serves
        let mut c = fx.connect(d).await.unwrap();
        assert!(fx.committed(&c.submit(&hr(d, &fx.chain, 2)).await.unwrap()));
    })
    .await;
}

/// Streams readings one after the other until `stop`, counting acks.
async fn honest_stream(
    mut c: Client,
    kp: Keypair,
    chain: ChainId,
    first: u64,
    acks: Arc<AtomicU64>,
    stop: Instant,
) -> Client {
    let mut seq = first;
    while Instant::now() < stop {
        match c.submit(&hr(&kp, &chain, seq)).await.unwrap() {
            GatewayMsg::Ack { .. } => {
                acks.fetch_add(1, Ordering::Relaxed);
            }
            other => panic!("honest sensor got {other:?}"),
        }
        seq += 1;
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_hits_the_handshake_timeout_while_honest_sensor_is_served() {
    guarded(async {
        let fx = start(1, NetConfig { handshake_timeout: Duration::from_millis(1000), ..NetConfig::default() }).await;
        let d = fx.devices[0].clone();
        let c = fx.connect(&d).await.unwrap();
        let acks = Arc::new(AtomicU64::new(0));
        let stop = Instant::now() + Duration::from_millis(2500);
        let honest = tokio::spawn(honest_stream(c, d, fx.chain, 1, acks.clone(), stop));
        // 20 silent connections and 20 that send one byte every 200 ms
        let mut slow = Vec::new();
        for i in 0..40 {
            let addr = fx.addr;
            slow.push(tokio::spawn(async move {
                let started = Instant::now();
                let mut s = TcpStream::connect(addr).await.unwrap();
                let mut buf = vec![0u8; 64];
                let mut got = Vec::new();
                for _ in 0..40 {
                    if i % 2 == 1 && s.write_all(&[0x2d]).await.is_err() {
                        break;
                    }
                    match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                        Err(_) => {}
                    }
                }
                (started.elapsed(), got)
            }));
        }
        for h in slow {
            let (t, got) = h.await.unwrap();
            assert!(t < Duration::from_millis(2000), "slow connection lived {t:?}");
            let mut m = bytes::BytesMut::from(&got[..]);
            let f = tokio_util::codec::Decoder::decode(&mut LinkCodec::default(), &mut m).unwrap().unwrap();
            assert_eq!(link::decode::<LinkFrame>(&f).unwrap(), LinkFrame::Refused(Refusal::HandshakeFailed));
        }
        honest.await.unwrap();
        let n = acks.load(Ordering::Relaxed);
        println!("slowloris: 40 slow connections closed by the handshake timeout; honest sensor: {n} acks in 2.5 s");
        assert!(n >= 20, "honest sensor starved: {n} acks");
        assert_eq!(fx.metric("sensorchain_handshake_failures_total{reason=\"timeout\"}"), 40);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_flood_does_not_starve_honest_sensors() {
    guarded(async {
        let _ = raise_fd_limit();
        let fx = start(5, NetConfig { handshake_timeout: Duration::from_secs(30), ..NetConfig::default() }).await;
        let max_half_open = fx.gateway.config().max_half_open;
        // the attacker uses 500 registered key ids (they are public), so
        // the per-identity handshake rate does not stop it: the half-open
        // bound must
        let flood_ids: Vec<Keypair> = (0..500).map(|i| device(50_000 + i)).collect();
        fx.grant_all(&flood_ids.iter().map(|k| k.public()).collect::<Vec<_>>()).await;
        // four honest sensors are connected before the attack
        let mut honest = Vec::new();
        for d in &fx.devices[..4] {
            honest.push((fx.connect(d).await.unwrap(), d.clone()));
        }
        // baseline ack rate, 1 s
        let acks = Arc::new(AtomicU64::new(0));
        let stop = Instant::now() + Duration::from_secs(1);
        let hs: Vec<_> = honest
            .into_iter()
            .map(|(c, d)| tokio::spawn(honest_stream(c, d, fx.chain, 1, acks.clone(), stop)))
            .collect();
        let mut honest = Vec::new();
        for (h, d) in hs.into_iter().zip(&fx.devices) {
            honest.push((h.await.unwrap(), d.clone()));
        }
        let base = acks.swap(0, Ordering::Relaxed);
        // the flood: 500 connections send message 1 (registered key ids,
        // fresh ephemerals) and never message 3
        let flood_start = Instant::now();
        let victim = fx.devices[4].clone();
        let mut attackers = Vec::new();
        for id in &flood_ids {
            let s = TcpStream::connect(fx.addr).await.unwrap();
            let mut f = Framed::new(s, LinkCodec::default());
            f.send(&hello(id, &fx.chain)[..]).await.unwrap();
            attackers.push(f);
        }
        let flood_sent = flood_start.elapsed();
        // what the attackers got: a challenge (a slot) or Busy. Reading
        // every answer first means the flood's crypto (one X25519 and one
        // signature per admitted message 1, at most max_half_open of them:
        // bounded work whose duration depends on the machine) is done; what
        // is measured next is what the attack can hold: the slots.
        let (mut challenged, mut busy) = (0, 0);
        for f in attackers.iter_mut() {
            match next_frame(f).await.map(|b| link::decode::<LinkFrame>(&b).map(|l| matches!(l, LinkFrame::Challenge(_)))) {
                Some(Ok(true)) => challenged += 1,
                Some(_) => busy += 1,
                None => {}
            }
        }
        let flood_answered = flood_start.elapsed();
        // honest sensors stream while the attack holds every slot (1 s)
        let stop = Instant::now() + Duration::from_secs(1);
        let hs: Vec<_> = honest
            .into_iter()
            .enumerate()
            .map(|(i, (c, d))| tokio::spawn(honest_stream(c, d, fx.chain, 10_000 + i as u64, acks.clone(), stop)))
            .collect();
        // meanwhile a new honest connection is refused as busy, not hung
        tokio::time::sleep(Duration::from_millis(200)).await;
        let half_open = fx.gateway.half_open();
        let during = fx.connect(&victim).await;
        for h in hs {
            h.await.unwrap();
        }
        let attack = acks.load(Ordering::Relaxed);
        println!("half-open flood: all 500 answered after {:.0} ms", flood_answered.as_secs_f64() * 1e3);
        println!(
            "half-open flood: 500 message-1 connections sent in {:.0} ms; {challenged} got a slot, {busy} refused busy \
             (max_half_open {max_half_open}, {half_open} half-open); honest ack rate {:.0}/s before, {:.0}/s during the attack \
             ({:.0} %)",
            flood_sent.as_secs_f64() * 1e3,
            base as f64,
            attack as f64,
            100.0 * attack as f64 / base.max(1) as f64
        );
        assert_eq!(challenged, max_half_open.min(500));
        assert_eq!(half_open, max_half_open.min(500));
        assert!(matches!(during, Err(ClientError::Refused(Refusal::Busy))), "{during:?}");
        assert!(attack * 4 >= base, "honest sensors starved: {attack} acks vs {base} before");
        // once the attackers' connections close (their slots are released
        // at once; the 30 s handshake timeout is only a bound on a busy
        // machine), a new sensor gets in
        drop(attackers);
        let t = Instant::now();
        let c = loop {
            match fx.connect(&victim).await {
                Ok(c) => break c,
                Err(ClientError::Refused(Refusal::Busy)) if t.elapsed() < Duration::from_secs(60) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("{e}"),
            }
        };
        drop(c);
        assert!(fx.metric("sensorchain_handshake_failures_total{reason=\"busy\"}") >= busy);
    })
    .await;
}

fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        let want = r.rlim_max.min(65_536);
        if r.rlim_cur < want {
            r.rlim_cur = want;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_sensors_without_loss() {
    // On a loaded machine handshakes take longer than the 1.5 s handshake
    // timeout and the gateway drops some after the sensor's Proof: the
    // client sees that (its session is confirmed before `connect` returns)
    // and retries. The test may take longer under load; it never fails for it.
    serially(Duration::from_secs(600), async {
        const SENSORS: u32 = 1000;
        const READINGS: usize = 3;
        let limit = raise_fd_limit();
        assert!(limit >= 2 * SENSORS as u64 + 100, "open-file limit {limit} too low for this test");
        let fx = start(0, fast_net()).await;
        let keys: Vec<Keypair> = (0..SENSORS).map(|i| device(1000 + i)).collect();
        let t0 = Instant::now();
        fx.grant_all(&keys.iter().map(|k| k.public()).collect::<Vec<_>>()).await;
        let granted = t0.elapsed();
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for (i, kp) in keys.into_iter().enumerate() {
            let (addr, chain, gw) = (fx.addr, fx.chain, fx.gw_key);
            tasks.push(tokio::spawn(async move {
                let mut c = Client::connect_retrying(addr, &chain, &kp, &[gw], PATIENCE)
                    .await
                    .unwrap_or_else(|e| panic!("sensor {i}: {e}"));
                let mut s = SimSensor::new(kp, chain, i as u64, 1);
                let txs: Vec<Vec<u8>> = (0..READINGS).map(|_| s.next_tx(now_ms()).unwrap().1).collect();
                let answers = c.submit_pipelined(&txs, READINGS).await.unwrap();
                (c, answers)
            }));
        }
        let mut clients = Vec::new();
        let mut acks = Vec::new();
        for t in tasks {
            let (c, answers) = t.await.unwrap();
            clients.push(c);
            acks.extend(answers);
        }
        let elapsed = t0.elapsed();
        let concurrent = fx.gateway.sessions();
        assert_eq!(concurrent, SENSORS as usize, "every sensor holds its session at the end");
        assert_eq!(acks.len(), SENSORS as usize * READINGS);
        let mut missing = 0;
        for a in &acks {
            assert!(matches!(a, GatewayMsg::Ack { .. }), "{a:?}");
            if !fx.committed(a) {
                missing += 1;
            }
        }
        assert_eq!(missing, 0, "acknowledged readings missing from the store");
        println!(
            "1,000 sensors: {} grants in {:.2} s; connect + handshake + {} readings each, all acked and stored, in {:.2} s \
             ({} handshakes refused busy, {} dropped by the handshake timeout and retried, {} sessions open at once)",
            SENSORS,
            granted.as_secs_f64(),
            READINGS,
            elapsed.as_secs_f64(),
            fx.metric("sensorchain_handshake_failures_total{reason=\"busy\"}"),
            fx.metric("sensorchain_handshake_failures_total{reason=\"timeout\"}"),
            concurrent
        );
        drop(clients);
    })
    .await;
}

// ---------------------------------------------------------------------------
// Issue 11 finding 5 and issue 12: sensor links under hostile and busy
// conditions.

/// Waits (bounded) until `f` holds.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(30), "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Finding 5: with `max_sessions = 4`, four sensors sharing ONE key used to
/// hold every slot and lock an honest sensor out (`busy`). Now one identity
/// holds one live session: each new handshake of the key replaces the
/// previous session, which first answers what it has in flight (the reading
/// is acknowledged and committed) and then closes with a close frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_on_four_sensors_holds_one_session_and_an_honest_sensor_is_served() {
    guarded(async {
        let fx = start(
            2,
            NetConfig {
                max_sessions: 4,
                ..fast_net()
            },
        )
        .await;
        let (dup, honest) = (&fx.devices[0], &fx.devices[1]);
        // the first copy of the key has a reading in flight...
        let mut first = fx.connect(dup).await.unwrap();
        first
            .send(&DeviceMsg::Submit(&hr(dup, &fx.chain, 1)))
            .await
            .unwrap();
        first.send(&DeviceMsg::Ping(9)).await.unwrap();
        let mut answered = Vec::new();
        loop {
            match first.recv().await.unwrap() {
                GatewayMsg::Pong(9) => break,
                m => answered.push(m),
            }
        }
        // ...when three more sensors with the same key connect
        let mut copies = Vec::new();
        for _ in 0..3 {
            copies.push(fx.connect(dup).await.unwrap());
        }
        let end = loop {
            match first.recv().await {
                Ok(m) => answered.push(m),
                Err(e) => break e,
            }
        };
        assert!(matches!(end, ClientError::Closed), "{end:?}");
        assert_eq!(answered.len(), 1, "{answered:?}");
        assert!(fx.committed(&answered[0]), "{answered:?}");
        for c in copies.iter_mut().take(2) {
            let r = c.recv().await;
            assert!(matches!(r, Err(ClientError::Closed)), "{r:?}");
        }
        assert_eq!(fx.gateway.live_sessions_of(&dup.public()), 1);
        eventually("the replaced sessions give their slots back", || {
            fx.gateway.sessions() == 1
        })
        .await;
        let mut h = fx
            .connect(honest)
            .await
            .expect("the honest sensor is served");
        assert!(fx.committed(&h.submit(&hr(honest, &fx.chain, 1)).await.unwrap()));
        // the newest copy holds the key's one session
        let last = copies.last_mut().unwrap();
        assert!(fx.committed(&last.submit(&hr(dup, &fx.chain, 2)).await.unwrap()));
        assert_eq!(
            fx.metric("sensorchain_links_closed_total{reason=\"replaced\"}"),
            3
        );
        assert_eq!(fx.gateway.sessions(), 2);
    })
    .await;
}

/// Finding 5: a handshake storm by one identity (40 message 1s at once) is
/// held to its rate (a burst of 4, then 1 per second: the bound below is
/// computed from the time the storm took, so a slow machine cannot fail
/// it), refused `busy` and counted `rate_limited` before any cryptography,
/// while another identity connects and is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_storm_of_one_identity_is_rate_limited_while_another_is_served() {
    use sensorchain_gateway::net::peers::{HANDSHAKE_BURST, HANDSHAKE_REFILL_MS};
    guarded(async {
        const STORM: u64 = 40;
        let fx = start(2, fast_net()).await;
        let (storm, honest) = (&fx.devices[0], &fx.devices[1]);
        let t0 = Instant::now();
        let mut conns = Vec::new();
        for _ in 0..STORM {
            let s = TcpStream::connect(fx.addr).await.unwrap();
            let mut f = Framed::new(s, LinkCodec::default());
            f.send(&hello(storm, &fx.chain)[..]).await.unwrap();
            conns.push(f);
        }
        let mut h = fx
            .connect(honest)
            .await
            .expect("served during the storm");
        assert!(fx.committed(&h.submit(&hr(honest, &fx.chain, 1)).await.unwrap()));
        let (mut challenged, mut limited) = (0u64, 0u64);
        for f in conns.iter_mut() {
            let b = next_frame(f).await.expect("an answer to every message 1");
            match link::decode::<LinkFrame>(&b).unwrap() {
                LinkFrame::Challenge(_) => challenged += 1,
                LinkFrame::Refused(Refusal::Busy) => limited += 1,
                other => panic!("{other:?}"),
            }
        }
        let took = t0.elapsed();
        let allowed = HANDSHAKE_BURST + took.as_millis() as u64 / HANDSHAKE_REFILL_MS + 1;
        println!(
            "handshake storm: {STORM} message 1s of one identity in {:.0} ms: {challenged} admitted, {limited} rate-limited \
             (bound {allowed}); the other identity was served",
            took.as_secs_f64() * 1e3
        );
        assert!(challenged >= 1);
        assert!(
            challenged <= allowed,
            "{challenged} handshakes admitted, the rate allows {allowed}"
        );
        assert_eq!(challenged + limited, STORM);
        assert_eq!(
            fx.metric("sensorchain_handshake_failures_total{reason=\"rate_limited\"}"),
            limited
        );
    })
    .await;
}

/// Issue 12, the demo's "NOT dropped (bug)": `connect` used to return as
/// soon as the Proof was written, before the gateway had verified it. A
/// revocation committed in that gap was then (correctly) refused by the
/// gateway's CONNECT re-check as `NotPermitted` at the end of the
/// handshake, which the scene misread as a live session not dropped. Now
/// `connect` returns once the gateway holds the session, so a revoke
/// issued right after always meets a live session and drops it with
/// `Revoked`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_returns_once_the_gateway_holds_the_session_and_an_immediate_revoke_drops_it() {
    guarded(async {
        let fx = start(4, fast_net()).await;
        for d in &fx.devices[..4] {
            let mut c = fx.connect(d).await.unwrap();
            assert_eq!(
                fx.gateway.live_sessions_of(&d.public()),
                1,
                "connect returned before the gateway held the session"
            );
            let revoke = fx.admin_tx(TxKind::Revoke {
                target: d.public(),
                permissions: Permissions::CONNECT,
            });
            fx.node.submit(revoke, None).await.unwrap();
            let r = c.recv().await;
            assert!(
                matches!(r, Err(ClientError::Refused(Refusal::Revoked))),
                "{r:?}"
            );
        }
        // the link counts its close after it sent the refusal: the last
        // one may be counted just after its client read it
        eventually("four links closed as revoked", || {
            fx.metric("sensorchain_links_closed_total{reason=\"revoked\"}") == 4
        })
        .await;
    })
    .await;
}

/// Issue 12, at process level: the README's demo command. On a loaded
/// machine its revocation scene printed "its live session was NOT dropped
/// (bug)" in 4 of 5 runs: the gateway had not missed the revocation (it
/// refused the half-finished handshake `not permitted`, and a reconnect was
/// refused), the scene misread it because `connect` returned before the
/// gateway held the session. Run under `/work/shared/tools/under-load`, this
/// failed before the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_revocation_scene_sees_the_live_session_dropped() {
    serially(Duration::from_secs(600), async {
        let out = tokio::task::spawn_blocking(|| {
            std::process::Command::new(env!("CARGO_BIN_EXE_sensorchain"))
                .args(["demo", "--seconds", "5", "--json"])
                .output()
        })
        .await
        .unwrap()
        .expect("run sensorchain demo");
        let text = String::from_utf8_lossy(&out.stdout);
        let summary: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "demo --json printed no JSON ({e}): {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(
            summary["revoked_sensor_cut_off"],
            serde_json::Value::Bool(true),
            "{summary:#}"
        );
        // and the reconnect after the revoke was refused as not permitted
        assert!(
            summary["handshakes_refused"]["not_permitted"].as_u64() >= Some(1),
            "{summary:#}"
        );
        // the demo runs five gateway processes (the leader killed and
        // restarted on the way): their stored chains end identical and
        // hold every reading a sensor was acknowledged
        assert_eq!(summary["gateways"], 5, "{summary:#}");
        assert_eq!(summary["chains_identical"], true, "{summary:#}");
        assert_eq!(summary["acknowledged_in_chain"], true, "{summary:#}");
    })
    .await;
}

// ---------------------------------------------------------------------------
// Issue 12: link behaviour the port onto core's sans-I/O connections must
// keep (written against main's drivers first).

/// The wire bytes of many sealed submissions of `kp`, sequences `seqs`.
fn sealed_submits(
    c: &mut Client,
    kp: &Keypair,
    chain: &ChainId,
    seqs: std::ops::RangeInclusive<u64>,
) -> Vec<u8> {
    let mut wire = Vec::new();
    for seq in seqs {
        wire.extend(c.seal(&DeviceMsg::Submit(&hr(kp, chain, seq))).unwrap());
    }
    wire
}

/// Readings of this test's gateway now committed.
fn readings_committed(fx: &Fx) -> u64 {
    fx.node
        .store()
        .head()
        .unwrap()
        .map_or(0, |h| h.reading_count_total)
}

/// More submissions in flight than `max_inflight` (the link stops reading
/// beyond it, then goes on): every one answered exactly once, acknowledged
/// and committed, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_beyond_max_inflight_answers_every_submission_once() {
    guarded(async {
        let fx = start(
            1,
            NetConfig {
                max_inflight: 8,
                ..fast_net()
            },
        )
        .await;
        let d = &fx.devices[0];
        let mut c = fx.connect(d).await.unwrap();
        // (at most `client::MAX_WINDOW` unanswered on one client)
        const N: u64 = 250;
        let wire = sealed_submits(&mut c, d, &fx.chain, 1..=N);
        c.send_wire(&wire).await.unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 1..=N {
            let a = c.recv().await.unwrap();
            let GatewayMsg::Ack { sequence, .. } = a else {
                panic!("{a:?}")
            };
            assert!(seen.insert(sequence), "answered twice: {sequence}");
            assert!(fx.committed(&a), "{a:?}");
        }
        assert_eq!(seen, (1..=N).collect());
        c.ping(1).await.unwrap();
        assert_eq!(readings_committed(&fx), N);
    })
    .await;
}

/// Shutdown with submissions in flight: the session stops reading, answers
/// every submission it took (each answer an `Ack` of a committed reading,
/// each once), then sends `Refused(ShuttingDown)` and closes; what it did not
/// read is neither answered nor committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_what_is_in_flight_then_refuses_shutting_down() {
    guarded(async {
        let fx = start(1, fast_net()).await;
        let d = &fx.devices[0];
        let mut c = fx.connect(d).await.unwrap();
        const N: u64 = 200;
        let wire = sealed_submits(&mut c, d, &fx.chain, 1..=N);
        c.send_wire(&wire).await.unwrap();
        let first = c.recv().await.unwrap();
        assert!(
            matches!(first, GatewayMsg::Ack { sequence: 1, .. }),
            "{first:?}"
        );
        let gw = fx.gateway.clone();
        let shutdown = tokio::spawn(async move { gw.shutdown(Duration::from_secs(30)).await });
        let mut seen = std::collections::BTreeSet::from([1u64]);
        let end = loop {
            match c.recv().await {
                Ok(a @ GatewayMsg::Ack { sequence, .. }) => {
                    assert!(seen.insert(sequence), "answered twice: {sequence}");
                    assert!(fx.committed(&a), "{a:?}");
                }
                Ok(other) => panic!("unexpected answer during the drain: {other:?}"),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(end, ClientError::Refused(Refusal::ShuttingDown)),
            "{end:?}"
        );
        assert!(
            shutdown.await.unwrap(),
            "every session closed within the grace"
        );
        assert_eq!(fx.gateway.sessions(), 0);
        assert_eq!(
            readings_committed(&fx),
            seen.len() as u64,
            "every committed reading was answered, nothing unanswered was committed"
        );
        assert_eq!(
            fx.metric("sensorchain_links_closed_total{reason=\"shutting_down\"}"),
            1
        );
        // and a new handshake is refused while shutting down (or the
        // listener is gone)
        assert!(fx.connect(d).await.is_err());
    })
    .await;
}

/// A revocation committed while a session has submissions in flight ends
/// the session at once with `Refused(Revoked)`: no answer follows it, every
/// acknowledgement before it was committed, the identity cannot come back,
/// another session is not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_mid_stream_ends_the_session_at_once() {
    guarded(async {
        let fx = start(2, fast_net()).await;
        let (d, other) = (&fx.devices[0], &fx.devices[1]);
        let mut c = fx.connect(d).await.unwrap();
        let mut o = fx.connect(other).await.unwrap();
        const N: u64 = 200;
        let wire = sealed_submits(&mut c, d, &fx.chain, 1..=N);
        c.send_wire(&wire).await.unwrap();
        let first = c.recv().await.unwrap();
        assert!(fx.committed(&first), "{first:?}");
        let revoke = fx.admin_tx(TxKind::Revoke {
            target: d.public(),
            permissions: Permissions::CONNECT,
        });
        let node = fx.node.clone();
        let revoked = tokio::spawn(async move { node.submit(revoke, None).await.map(|_| Instant::now()) });
        let mut answered = 1u64;
        let end = loop {
            match c.recv().await {
                Ok(a @ GatewayMsg::Ack { .. }) => {
                    answered += 1;
                    assert!(fx.committed(&a), "{a:?}");
                }
                Ok(other) => panic!("unexpected answer: {other:?}"),
                Err(e) => break e,
            }
        };
        let ended = Instant::now();
        assert!(matches!(end, ClientError::Refused(Refusal::Revoked)), "{end:?}");
        let committed_at = revoked.await.unwrap().unwrap();
        let after = ended.saturating_duration_since(committed_at);
        println!(
            "revoked mid-stream: {answered} of {N} answered; the session ended {:.1} ms after the revoke was committed",
            after.as_secs_f64() * 1e3
        );
        assert!(after < Duration::from_secs(20), "{after:?}");
        assert!(matches!(
            fx.connect(d).await,
            Err(ClientError::Refused(Refusal::NotPermitted))
        ));
        assert!(fx.committed(&o.submit(&hr(other, &fx.chain, 1)).await.unwrap()));
        assert_eq!(fx.metric("sensorchain_links_closed_total{reason=\"revoked\"}"), 1);
        eventually("the revoked session gives its slot back", || fx.gateway.sessions() == 1).await;
    })
    .await;
}

/// A session with no frame and nothing in flight for the idle timeout is
/// closed (without a word), counted `idle`, and its slot comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_closed_and_counted() {
    guarded(async {
        let fx = start(
            1,
            NetConfig {
                idle_timeout: Duration::from_millis(300),
                ..fast_net()
            },
        )
        .await;
        let d = &fx.devices[0];
        let mut c = fx.connect(d).await.unwrap();
        assert!(fx.committed(&c.submit(&hr(d, &fx.chain, 1)).await.unwrap()));
        c.set_timeout(Duration::from_secs(30));
        let r = c.recv().await;
        assert!(
            matches!(r, Err(ClientError::Closed) | Err(ClientError::Io(_))),
            "{r:?}"
        );
        eventually("the idle session gives its slot back", || {
            fx.gateway.sessions() == 0
        })
        .await;
        assert_eq!(
            fx.metric("sensorchain_links_closed_total{reason=\"idle\"}"),
            1
        );
    })
    .await;
}

/// Bad input inside a session, each counted under its label while the
/// session lives on: a session frame that does not authenticate
/// (`undecryptable`), one too short for a header and a tag
/// (`malformed_frame`; `malformed_session_frame` before the port onto core's
/// connection, whose `BadFrame` does not tell it apart), a handshake message (`unexpected_frame`);
/// one more than `max_bad_frames` closes the link (`bad_frames`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_inside_a_session_are_counted_then_close_the_link() {
    guarded(async {
        let fx = start(
            1,
            NetConfig {
                max_bad_frames: 3,
                ..fast_net()
            },
        )
        .await;
        let d = &fx.devices[0];
        let mut c = fx.connect(d).await.unwrap();
        let cobs = |f: &LinkFrame<'_>| {
            let mut enc = bytes::BytesMut::new();
            tokio_util::codec::Encoder::<&[u8]>::encode(
                &mut LinkCodec::default(),
                &wire(f)[..],
                &mut enc,
            )
            .unwrap();
            enc.to_vec()
        };
        c.send_wire(&cobs(&LinkFrame::Session(&[0x01; 40])))
            .await
            .unwrap();
        c.ping(1).await.unwrap();
        c.send_wire(&cobs(&LinkFrame::Session(&[0x01; 10])))
            .await
            .unwrap();
        c.ping(2).await.unwrap();
        c.send_wire(&cobs(&LinkFrame::Challenge(&[7; 104])))
            .await
            .unwrap();
        c.ping(3).await.unwrap();
        assert_eq!(
            fx.metric("sensorchain_bad_frames_total{reason=\"undecryptable\"}"),
            1
        );
        assert_eq!(
            fx.metric("sensorchain_bad_frames_total{reason=\"malformed_frame\"}"),
            1
        );
        assert_eq!(
            fx.metric("sensorchain_bad_frames_total{reason=\"unexpected_frame\"}"),
            1
        );
        assert!(fx.committed(&c.submit(&hr(d, &fx.chain, 1)).await.unwrap()));
        c.send_wire(&cobs(&LinkFrame::Session(&[0x01; 40])))
            .await
            .unwrap();
        let r = c.recv().await;
        assert!(
            matches!(r, Err(ClientError::Closed) | Err(ClientError::Io(_))),
            "{r:?}"
        );
        eventually("the link is counted closed for bad frames", || {
            fx.metric("sensorchain_links_closed_total{reason=\"bad_frames\"}") == 1
        })
        .await;
    })
    .await;
}

/// Answers leave a link in submission order, however the node's commits
/// wake them (core's responder orders them). On main before the port onto
/// core's connections this failed under a deep pipeline: an answer whose
/// wait had not been polled yet overtook earlier ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_answers_come_back_in_submission_order() {
    guarded(async {
        let fx = start(1, fast_net()).await;
        let d = &fx.devices[0];
        let mut c = fx.connect(d).await.unwrap();
        const N: u64 = 250;
        let wire = sealed_submits(&mut c, d, &fx.chain, 1..=N);
        c.send_wire(&wire).await.unwrap();
        for seq in 1..=N {
            let a = c.recv().await.unwrap();
            assert!(
                matches!(a, GatewayMsg::Ack { sequence, .. } if sequence == seq),
                "answer {seq} out of order: {a:?}"
            );
        }
    })
    .await;
}
