//! Links over a real serial line: a pseudo-terminal pair, the gateway
//! opening the slave by its path as it opens a UART, the test driving the
//! master as the device.

use std::sync::Arc;
use std::time::Duration;

use sensorchain_core::block::Block;
use sensorchain_core::chain::Chain;
use sensorchain_core::identity::Keypair;
use sensorchain_core::link::GatewayMsg;
use sensorchain_core::permissions::Role;
use sensorchain_core::reading::Vital;
use sensorchain_core::tx::{GenesisConfig, Member, Params, Transaction, TxBody};
use tokio_serial::{SerialPort, SerialStream};

use super::client::Client;
use super::{LinkHub, NetConfig, serial};
use crate::metrics::Metrics;
use crate::node::{Node, NodeConfig, now_ms};
use crate::store::Store;

fn genesis(admin: &Keypair, gateway: &Keypair, device: &Keypair) -> Block {
    let m = |k: &Keypair, role: Role| Member::of_role(k.public(), role);
    let members = [
        m(admin, Role::Admin),
        m(gateway, Role::Gateway),
        m(device, Role::Device),
    ];
    let cfg = GenesisConfig::new("serial-test", Params::default(), &members).unwrap();
    Chain::genesis_block(admin, cfg, now_ms()).unwrap()
}

/// The world of these tests: a gateway and a device on their chain, the
/// gateway's node (blocks cut after 2 ms) and links.
struct Setup {
    gw_key: Keypair,
    device: Keypair,
    chain: sensorchain_core::hash::ChainId,
    node: Node,
    gw: Arc<LinkHub>,
    /// The keys a device trusts: the gateway's.
    trusted: [sensorchain_core::identity::PublicKey; 1],
    metrics: Arc<Metrics>,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let (admin, gw_key, device) = (
        Keypair::from_seed([1; 32]),
        Keypair::from_seed([2; 32]),
        Keypair::from_seed([3; 32]),
    );
    let genesis = genesis(&admin, &gw_key, &device);
    let dir = tempfile::tempdir().unwrap();
    let cfg = NodeConfig {
        batch_timeout: Duration::from_millis(2),
        ..Default::default()
    };
    let metrics = Arc::new(Metrics::new());
    let store = Store::open(dir.path()).unwrap();
    let node = Node::start(store, gw_key.clone(), &genesis, cfg, metrics.clone()).unwrap();
    Setup {
        trusted: [gw_key.public()],
        gw: LinkHub::new(node.clone(), NetConfig::default()),
        gw_key,
        device,
        chain: genesis.header.chain_id,
        node,
        metrics,
        _dir: dir,
    }
}

impl Setup {
    /// A [`late_dropping_gateway`] of this gateway for this device over
    /// the duplex end `b`, counting the Proofs it got in `proofs`.
    fn late_drop(
        &self,
        b: tokio::io::DuplexStream,
        how: LateDrop,
        proofs: &Arc<std::sync::atomic::AtomicUsize>,
    ) {
        tokio::spawn(late_dropping_gateway(
            b,
            self.gw_key.clone(),
            self.device.clone(),
            self.chain,
            how,
            proofs.clone(),
        ));
    }

    /// [`Client::deliver`] of the device's `txs` over the links `dial`
    /// opens (8 in flight, 60 s of patience), the session closed after:
    /// what it tells of each.
    async fn deliver<D, F>(&self, dial: D, txs: &[Vec<u8>]) -> Vec<super::client::Delivery>
    where
        D: FnMut() -> F,
        F: std::future::Future<Output = std::io::Result<tokio::io::DuplexStream>>,
    {
        let (c, out) = Client::deliver(
            dial,
            &self.chain,
            &self.device,
            &self.trusted,
            txs,
            8,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        c.close().await;
        out
    }
}

/// The real gateway `gw` serving a link over the duplex end `b`.
fn serve_duplex(gw: &Arc<LinkHub>, b: tokio::io::DuplexStream) {
    let gw = gw.clone();
    tokio::spawn(async move { super::responder::serve_link(gw, b, "duplex").await });
}

fn reading(device: &Keypair, chain: &sensorchain_core::hash::ChainId, seq: u64) -> Vec<u8> {
    let body = TxBody::reading(
        device.public(),
        seq,
        now_ms(),
        0,
        Vital::HeartRate { bpm: 70 },
    );
    Transaction::sign(body, chain, device).unwrap().to_vec()
}

/// A device streams over a serial line, restarts without the line closing
/// (its next bytes are a new `Hello`), handshakes again on the same line and
/// goes on; every reading is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_line_serves_a_device_that_restarts_mid_session() {
    let fx = setup();
    let (master, slave) = SerialStream::pair().expect("a pseudo-terminal pair");
    let path = slave.name().expect("the slave's path");
    tokio::spawn(serial::serve_serial(fx.gw.clone(), path.clone(), 115_200));
    // let the gateway open and configure the line before the device talks
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut c = Client::handshake(master, &fx.chain, &fx.device, &fx.trusted)
        .await
        .expect("first handshake over the serial line");
    for seq in 1..=3 {
        let ack = c
            .submit(&reading(&fx.device, &fx.chain, seq))
            .await
            .unwrap();
        assert!(
            matches!(ack, GatewayMsg::Ack { sequence, .. } if sequence == seq),
            "{ack:?}"
        );
    }
    // the device restarts: no close frame, the line stays open, a new Hello
    let master = c.into_stream();
    let mut c = Client::handshake(master, &fx.chain, &fx.device, &fx.trusted)
        .await
        .expect("a new handshake on the same line");
    let ack = c.submit(&reading(&fx.device, &fx.chain, 10)).await.unwrap();
    assert!(
        matches!(ack, GatewayMsg::Ack { sequence: 10, .. }),
        "{ack:?}"
    );
    c.close().await;
    let head = fx.node.store().head().unwrap().unwrap();
    assert_eq!(head.reading_count_total, 4);
    let text = fx.metrics.encode();
    assert!(
        text.contains("rehandshake"),
        "the restart is counted: {text}"
    );
    fx.gw.shutdown(Duration::from_secs(2)).await;
    drop(slave);
}

/// How a fake gateway ends a handshake right after the device's Proof.
#[derive(Clone, Copy)]
enum LateDrop {
    /// Closes the link without a word (a gateway that gave up).
    Silent,
    /// Sends `Refused(HandshakeFailed)` in clear and closes (what a gateway
    /// whose handshake timeout passed does).
    Refuse,
}

/// A gateway that answers message 1 genuinely (so the device accepts its
/// challenge and sends its Proof), reads the Proof and drops the link.
async fn late_dropping_gateway(
    stream: tokio::io::DuplexStream,
    gw_key: Keypair,
    device: Keypair,
    chain: sensorchain_core::hash::ChainId,
    how: LateDrop,
    proofs: Arc<std::sync::atomic::AtomicUsize>,
) {
    use sensorchain_core::handshake::{HandshakeConfig, ResponderTable};
    use sensorchain_core::link::{Refusal, ResponderConfig, ResponderConnection, ResponderEvent};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct One(sensorchain_core::identity::VerifyingKey);
    impl sensorchain_core::handshake::Allowlist for One {
        fn lookup(
            &self,
            id: &sensorchain_core::identity::KeyId,
        ) -> Result<sensorchain_core::identity::VerifyingKey, sensorchain_core::handshake::Refusal>
        {
            if *id == self.0.public().key_id() {
                Ok(self.0)
            } else {
                Err(sensorchain_core::handshake::Refusal::Unknown)
            }
        }
    }
    let allow =
        One(sensorchain_core::identity::VerifyingKey::from_public(&device.public()).unwrap());
    let hs = HandshakeConfig::new(chain);
    let mut table: ResponderTable<2, 8> = ResponderTable::new();
    let mut conn: Box<ResponderConnection<1280, 2048, 4>> = Box::new(ResponderConnection::new(
        ResponderConfig::new(hs),
        super::mono_ms(),
    ));
    let mut stream = stream;
    let mut buf = [0u8; 2048];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut input = &buf[..n];
        let mut proof = false;
        while !input.is_empty() {
            let used = conn.handle_input(input, super::mono_ms());
            input = &input[used..];
            while let Some(ev) = conn.poll_event() {
                match ev {
                    ResponderEvent::Hello(h) => {
                        let c = h.check(&allow).unwrap();
                        let a = table.admit(c, super::mono_ms(), hs.timeout_ms).unwrap();
                        conn.accept(a, &gw_key, &mut rand::rng(), super::mono_ms())
                            .unwrap();
                    }
                    ResponderEvent::ProofReceived => proof = true,
                    ResponderEvent::SlotFreed(slot) => table.release(slot),
                    _ => {}
                }
            }
            if proof {
                break;
            }
        }
        let mut out = [0u8; 2048];
        if proof {
            // the Proof is read and never verified: the link is dropped
            proofs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match how {
                LateDrop::Refuse => conn.refuse(Refusal::HandshakeFailed),
                LateDrop::Silent => {
                    if let Some(slot) = conn.take_slot() {
                        table.release(slot);
                    }
                    return;
                }
            }
        }
        while let Some(n) = conn.poll_transmit(&mut out) {
            let _ = stream.write_all(&out[..n]).await;
        }
        if proof {
            return;
        }
    }
    // the link ends here: nothing of the session is ever read
}

/// Issue 12: a gateway drops the link right after the device's Proof (its
/// handshake timeout passed under load). The client must see that it is
/// *not connected* (no session was confirmed) instead of believing it holds
/// a session, and retrying must deliver every reading exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_dropped_after_the_proof_is_seen_and_retried_without_loss() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let fx = setup();
    let proofs = Arc::new(AtomicUsize::new(0));

    // One attempt alone: both kinds of late drop are an error, not a session.
    for how in [LateDrop::Silent, LateDrop::Refuse] {
        let (a, b) = tokio::io::duplex(1 << 16);
        fx.late_drop(b, how, &proofs);
        let r = Client::handshake(a, &fx.chain, &fx.device, &fx.trusted).await;
        assert!(
            matches!(&r, Err(e) if e.is_retryable()),
            "a dropped handshake was taken for a session: {r:?}"
        );
    }
    assert_eq!(proofs.load(Ordering::SeqCst), 2, "both fakes got the Proof");

    // Retrying: two late drops, then the real gateway.
    let attempts = Arc::new(AtomicUsize::new(0));
    let dial = || {
        let n = attempts.fetch_add(1, Ordering::SeqCst);
        let (a, b) = tokio::io::duplex(1 << 16);
        match n {
            0 | 1 => {
                let how = if n == 0 {
                    LateDrop::Silent
                } else {
                    LateDrop::Refuse
                };
                fx.late_drop(b, how, &proofs);
            }
            _ => serve_duplex(&fx.gw, b),
        }
        async move { Ok(a) }
    };
    let mut c = Client::handshake_retrying(
        dial,
        &fx.chain,
        &fx.device,
        &fx.trusted,
        Duration::from_secs(60),
    )
    .await
    .expect("the third attempt reaches the real gateway");
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(proofs.load(Ordering::SeqCst), 4);
    let txs: Vec<Vec<u8>> = (1..=5).map(|s| reading(&fx.device, &fx.chain, s)).collect();
    let answers = c.submit_pipelined(&txs, 5).await.unwrap();
    for (i, a) in answers.iter().enumerate() {
        assert!(
            matches!(a, GatewayMsg::Ack { sequence, .. } if *sequence == i as u64 + 1),
            "{a:?}"
        );
    }
    c.close().await;
    let head = fx.node.store().head().unwrap().unwrap();
    assert_eq!(head.reading_count_total, 5, "every reading once, none lost");
    fx.gw.shutdown(Duration::from_secs(2)).await;
}

/// A link that breaks mid-session: forwards everything from the device to
/// the gateway; from the gateway, the Challenge and the confirming Pong
/// only. Once the gateway has answered `answers` submissions (which the
/// device never sees), the link is cut.
async fn breaking_proxy(device_side: tokio::io::DuplexStream, gw: Arc<LinkHub>, answers: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (gw_side, gw_end) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move { super::responder::serve_link(gw, gw_end, "proxy").await });
    let (mut dr, mut dw) = tokio::io::split(device_side);
    let (mut gr, mut gw_w) = tokio::io::split(gw_side);
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = dr.read(&mut buf).await {
            if n == 0 || gw_w.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    let mut buf = [0u8; 4096];
    let mut frames = 0;
    while frames < 2 + answers {
        let Ok(n) = gr.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        for &b in &buf[..n] {
            if frames < 2 && dw.write_all(&[b]).await.is_err() {
                return;
            }
            frames += usize::from(b == 0);
        }
    }
    // every submission was answered (committed): cut the device's link
    let _ = dw.shutdown().await;
}

/// A link that breaks after the gateway committed the readings but before
/// the device saw any answer: [`Client::deliver`] opens a new session and
/// resends them; each is committed once (the replay rule by sequence), the
/// highest one counts as committed (nothing above it was signed), the
/// others are reported unconfirmed, never as lost and never twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_resends_after_a_broken_session_and_counts_only_what_it_can_tell() {
    use super::client::Delivery;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let fx = setup();
    let attempts = AtomicUsize::new(0);
    let txs: Vec<Vec<u8>> = (1..=5).map(|s| reading(&fx.device, &fx.chain, s)).collect();
    let dial = || {
        let n = attempts.fetch_add(1, Ordering::SeqCst);
        let (a, b) = tokio::io::duplex(1 << 16);
        if n == 0 {
            tokio::spawn(breaking_proxy(b, fx.gw.clone(), txs.len()));
        } else {
            serve_duplex(&fx.gw, b);
        }
        async move { Ok(a) }
    };
    let out = fx.deliver(dial, &txs).await;
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        2,
        "one broken link, one resend"
    );
    assert_eq!(out[4], Delivery::CommittedEarlier, "{out:?}");
    for d in &out[..4] {
        assert_eq!(*d, Delivery::Unconfirmed, "{out:?}");
    }
    let head = fx.node.store().head().unwrap().unwrap();
    assert_eq!(
        head.reading_count_total, 5,
        "each reading once: none lost, none twice"
    );
    // the unconfirmed ones are on the chain (what the API would tell)
    for t in &txs {
        let id = sensorchain_core::tx::Transaction::id_of_encoded(t);
        assert!(fx.node.store().tx_location(&id).unwrap().is_some());
    }
    // a fresh delivery on a healthy link: plain acks
    let more: Vec<Vec<u8>> = (6..=8).map(|s| reading(&fx.device, &fx.chain, s)).collect();
    let healthy = || {
        let (a, b) = tokio::io::duplex(1 << 16);
        serve_duplex(&fx.gw, b);
        async move { Ok(a) }
    };
    let out = fx.deliver(healthy, &more).await;
    assert!(
        out.iter().all(|d| matches!(d, Delivery::Committed(_))),
        "{out:?}"
    );
    fx.gw.shutdown(Duration::from_secs(2)).await;
}
