//! Peer links over real TCP on loopback: the handshake, a 20 MiB message
//! each way, admission (a key without `VALIDATE` refused, a revoked key's
//! session ended), the dialled peer's key checked, a device session that
//! sends a peer message closed, timeouts, and a peer that goes away and
//! comes back. Timeouts here are generous bounds only.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use sensorchain_core::block::Block;
use sensorchain_core::chain::Chain;
use sensorchain_core::codec;
use sensorchain_core::frame::{FrameAccumulator, cobs_encode, max_encoded_len};
use sensorchain_core::handshake::{Denial, HandshakeConfig, Initiator, MESSAGE1_LEN, MESSAGE3_LEN};
use sensorchain_core::identity::{KeyId, Keypair, PublicKey, VerifyingKey};
use sensorchain_core::link::{LINK_MAX_FRAME, LinkFrame, Refusal};
use sensorchain_core::peer::{Answer, FRAME_PEER_END, ForwardAnswer, PeerRequest, Request};
use sensorchain_core::permissions::Role;
use sensorchain_core::state::{SigCheck, WorldState};
use sensorchain_core::tx::{GenesisConfig, Member, Params};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::*;
use crate::cluster::network::admit_validator;

const LONG: Duration = Duration::from_secs(60);

/// Two gateways (validators), a device, and their genesis.
struct World {
    a: Keypair,
    b: Keypair,
    device: Keypair,
    genesis: Block,
    state: WorldState,
}

fn world() -> World {
    let admin = Keypair::from_seed([1; 32]);
    let a = Keypair::from_seed([20; 32]);
    let b = Keypair::from_seed([21; 32]);
    let device = Keypair::from_seed([3; 32]);
    let members = [
        Member::of_role(admin.public(), Role::Admin),
        Member::of_role(a.public(), Role::Gateway),
        Member::of_role(b.public(), Role::Gateway),
        Member::of_role(device.public(), Role::Device),
    ];
    let cfg = GenesisConfig::new("peer-test", Params::default(), &members).unwrap();
    let genesis = Chain::genesis_block(&admin, cfg, 1_000).unwrap();
    let mut state = WorldState::new(genesis.header.chain_id);
    state.apply_block(&genesis, None, SigCheck::Verify).unwrap();
    World {
        a,
        b,
        device,
        genesis,
        state,
    }
}

fn config(w: &World, key: &Keypair) -> Arc<PeerConfig> {
    let mut c = PeerConfig::new(Arc::new(key.clone()), w.genesis.header.chain_id);
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c.recheck_every = Duration::from_millis(50);
    Arc::new(c)
}

/// A test service: admits validators of its world state (unless a key is
/// revoked), echoes AppendEntries payloads, answers forwards `Queued`, and
/// never answers a Vote (to test timeouts).
struct Echo {
    state: WorldState,
    revoked: Mutex<HashSet<PublicKey>>,
    served: AtomicUsize,
}

impl Echo {
    fn new(state: WorldState) -> Arc<Echo> {
        Arc::new(Echo {
            state,
            revoked: Mutex::new(HashSet::new()),
            served: AtomicUsize::new(0),
        })
    }
}

impl PeerService for Echo {
    fn admit(&self, id: &KeyId) -> Result<VerifyingKey, Denial> {
        let vk = admit_validator(&self.state, id)?;
        if self.revoked.lock().unwrap().contains(vk.public()) {
            return Err(Denial::NotPermitted);
        }
        Ok(vk)
    }

    fn serve(&self, _from: PublicKey, request: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
        self.served.fetch_add(1, Ordering::Relaxed);
        async move {
            let req = PeerRequest::decode(&request).unwrap();
            let answer = match req.body {
                Request::AppendEntries(b) => Answer::AppendEntries(b),
                Request::Forward(_) => Answer::Forward(ForwardAnswer::Queued),
                Request::Vote(_) => futures::future::pending().await,
                _ => Answer::Malformed,
            };
            codec::encode_to_vec(&answer)
        }
        .boxed()
    }
}

/// A peer server of `key` on a loopback port.
struct Listening {
    addr: String,
    server: PeerServer,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Listening {
    async fn start(cfg: Arc<PeerConfig>, service: Arc<dyn PeerService>) -> Listening {
        Listening::on("127.0.0.1:0", cfg, service).await
    }

    async fn on(addr: &str, cfg: Arc<PeerConfig>, service: Arc<dyn PeerService>) -> Listening {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let server = serve_peers(listener, cfg, service, rx, &mut tasks);
        Listening {
            addr,
            server,
            stop,
            tasks,
        }
    }

    async fn stop(mut self) {
        self.stop.send_replace(true);
        tokio::time::timeout(LONG, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await
        .expect("the server ends");
    }
}

/// A dialler of `key` (its link's task in `tasks`).
fn dialler(
    cfg: Arc<PeerConfig>,
    addr: &str,
    peer: &Keypair,
    tasks: &mut JoinSet<()>,
) -> (PeerLink, watch::Sender<bool>) {
    let (stop, rx) = watch::channel(false);
    (
        PeerLink::new(cfg, addr.into(), peer.public(), rx, tasks),
        stop,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mib_message_goes_and_comes_back_over_tcp() {
    let w = world();
    let service = Echo::new(w.state.clone());
    let server = Listening::start(config(&w, &w.b), service.clone()).await;
    let mut tasks = JoinSet::new();
    let (link, stop) = dialler(config(&w, &w.a), &server.addr, &w.b, &mut tasks);

    let big: Vec<u8> = (0..20 << 20).map(|i: u32| (i % 251) as u8).collect();
    let answered = link
        .request(Request::AppendEntries(&big), LONG)
        .await
        .unwrap();
    let Answer::AppendEntries(back) = answered.body() else {
        panic!("{:?}", answered.body());
    };
    assert!(back == &big[..], "the same 20 MiB came back");
    // small requests pipelined on the same session
    let mut waits = Vec::new();
    for _ in 0..20 {
        let link = link.clone();
        waits.push(tokio::spawn(async move {
            link.request(Request::Forward(b"tx"), LONG).await
        }));
    }
    for w in waits {
        let a = w.await.unwrap().unwrap();
        assert_eq!(a.body(), Answer::Forward(ForwardAnswer::Queued));
    }
    assert!(server.server.has_session(&w.a.public()));
    assert_eq!(server.server.sessions(), 1, "one session for all of it");
    stop.send_replace(true);
    drop(link);
    while tasks.join_next().await.is_some() {}
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_and_the_dialled_key_are_checked() {
    let w = world();
    let service = Echo::new(w.state.clone());
    let server = Listening::start(config(&w, &w.b), service.clone()).await;
    let mut tasks = JoinSet::new();

    // The device holds CONNECT but not VALIDATE: refused.
    let (link, _s1) = dialler(config(&w, &w.device), &server.addr, &w.b, &mut tasks);
    let e = link
        .request(Request::Forward(b"tx"), LONG)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, PeerError::Unreachable(m) if m.contains("not permitted")),
        "{e}"
    );
    // Dialled as another key than the listener's: the listener cannot
    // prove it; refused by the dialler.
    let (link, _s2) = dialler(config(&w, &w.a), &server.addr, &w.device, &mut tasks);
    let e = link
        .request(Request::Forward(b"tx"), LONG)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, PeerError::Unreachable(m) if m.contains("trusted")),
        "{e}"
    );
    // A device's handshake (its byte) on the peer listener: refused
    // `VersionMismatch` before any cryptography.
    let refused = device_handshake(&server.addr, &w, &w.device, &w.b).await;
    assert_eq!(refused.err(), Some(Refusal::VersionMismatch));
    assert_eq!(service.served.load(Ordering::Relaxed), 0, "nothing served");
    assert_eq!(server.server.sessions(), 0);

    // A validator is served; revoking it ends its session (at the next
    // recheck), and it is refused from then on.
    let (link, _s3) = dialler(config(&w, &w.a), &server.addr, &w.b, &mut tasks);
    link.request(Request::Forward(b"tx"), LONG).await.unwrap();
    assert!(server.server.has_session(&w.a.public()));
    service.revoked.lock().unwrap().insert(w.a.public());
    server.server.recheck();
    let t = tokio::time::Instant::now();
    while server.server.has_session(&w.a.public()) {
        assert!(t.elapsed() < LONG, "the revoked session ends");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let e = link
        .request(Request::Forward(b"tx"), LONG)
        .await
        .unwrap_err();
    assert!(matches!(e, PeerError::Unreachable(_)), "{e}");
    server.stop().await;
    tasks.abort_all();
}

/// A device's handshake (the device link's byte) to `addr`, expecting the
/// gateway `gw`: the refusal, or the open session's keys.
async fn device_handshake(
    addr: &str,
    w: &World,
    device: &Keypair,
    gw: &Keypair,
) -> Result<(TcpStream, sensorchain_core::session::Session), Refusal> {
    let hs = HandshakeConfig::new(w.genesis.header.chain_id);
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut m1 = [0u8; MESSAGE1_LEN];
    let (init, _) = Initiator::start(&hs, device, 0, &mut rand::rng(), &mut m1).unwrap();
    write_frame(&mut s, &LinkFrame::Hello(&m1)).await;
    let f = read_frame(&mut s).await.expect("an answer");
    match codec::decode_exact::<LinkFrame>(&f, LINK_MAX_FRAME).unwrap() {
        LinkFrame::Refused(r) => Err(r),
        LinkFrame::Challenge(m2) => {
            let mut m3 = [0u8; MESSAGE3_LEN];
            let (est, _) = init.finish(device, &[gw.public()], m2, 0, &mut m3).unwrap();
            write_frame(&mut s, &LinkFrame::Proof(&m3)).await;
            Ok((s, est.session))
        }
        f => panic!("{f:?}"),
    }
}

async fn write_frame(s: &mut TcpStream, f: &LinkFrame<'_>) {
    write_raw(s, &codec::encode_to_vec(f)).await;
}

async fn write_raw(s: &mut TcpStream, b: &[u8]) {
    let mut w = vec![0u8; max_encoded_len(b.len())];
    let n = cobs_encode(b, &mut w).unwrap();
    s.write_all(&w[..n]).await.unwrap();
}

/// The next frame, or `None` at the end of the stream.
async fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut acc = FrameAccumulator::<2048>::new();
    let mut b = [0u8; 1];
    loop {
        match tokio::time::timeout(LONG, s.read(&mut b)).await.unwrap() {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        if let (_, Some(Ok(f))) = acc.feed(&b) {
            return Some(f.to_vec());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_session_that_sends_a_peer_message_is_closed() {
    use crate::metrics::Metrics;
    use crate::net::{LinkHub, NetConfig, tcp::serve_tcp};
    use crate::node::{Node, NodeConfig};
    use crate::store::Store;
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let node = Node::start(
        store,
        w.b.clone(),
        &w.genesis,
        NodeConfig::default(),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    let hub = LinkHub::new(node.clone(), NetConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let serving = tokio::spawn(serve_tcp(hub.clone(), listener));

    // A peer's handshake on the device listener: refused by its byte.
    let hs = HandshakeConfig::new(w.genesis.header.chain_id);
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let mut m1 = [0u8; MESSAGE1_LEN];
    Initiator::start_peer(&hs, &w.a, 0, &mut rand::rng(), &mut m1).unwrap();
    write_frame(&mut s, &LinkFrame::Hello(&m1)).await;
    let f = read_frame(&mut s).await.unwrap();
    assert_eq!(
        codec::decode_exact::<LinkFrame>(&f, LINK_MAX_FRAME).unwrap(),
        LinkFrame::Refused(Refusal::VersionMismatch)
    );

    // A gateway key as a device (it holds CONNECT): a device session; a
    // peer request in it ends the session and the link at once.
    let (mut s, mut session) = device_handshake(&addr, &w, &w.a, &w.b).await.unwrap();
    let t = tokio::time::Instant::now();
    while hub.sessions() == 0 {
        assert!(t.elapsed() < LONG, "the session is established");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let msg = PeerRequest {
        id: 0,
        body: Request::Forward(b"tx"),
    }
    .to_vec();
    let mut frame = vec![0u8; msg.len() + 23];
    let n = session
        .seal(FRAME_PEER_END, &msg, &mut frame)
        .unwrap()
        .len();
    write_frame(&mut s, &LinkFrame::Session(&frame[..n])).await;
    assert_eq!(read_frame(&mut s).await, None, "closed, nothing answered");
    assert_eq!(hub.sessions(), 0);

    hub.shutdown(LONG).await;
    serving.await.unwrap();
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_a_peer_that_goes_away_and_comes_back() {
    let w = world();
    let service = Echo::new(w.state.clone());
    let server = Listening::start(config(&w, &w.b), service.clone()).await;
    let addr = server.addr.clone();
    let mut tasks = JoinSet::new();
    let (link, _stop) = dialler(config(&w, &w.a), &addr, &w.b, &mut tasks);

    // A request the peer never answers times out; the link goes on.
    let e = link
        .request(Request::Vote(b"v"), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(e, PeerError::Timeout(Duration::from_millis(200)));
    link.request(Request::Forward(b"tx"), LONG).await.unwrap();

    // The peer stops: requests fail (never hang) until it is back.
    server.stop().await;
    let e = link
        .request(Request::Forward(b"tx"), LONG)
        .await
        .unwrap_err();
    assert!(matches!(e, PeerError::Unreachable(_)), "{e}");
    let back = Listening::on(&addr, config(&w, &w.b), service.clone()).await;
    let t = tokio::time::Instant::now();
    loop {
        match link.request(Request::Forward(b"tx"), LONG).await {
            Ok(a) => {
                assert_eq!(a.body(), Answer::Forward(ForwardAnswer::Queued));
                break;
            }
            Err(PeerError::Unreachable(_)) => {
                assert!(t.elapsed() < LONG, "dialled again after the backoff");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    back.stop().await;
    tasks.abort_all();
}
