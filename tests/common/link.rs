//! Sensor links for the tests that speak the link protocol themselves: an
//! in-process gateway serving them, frames on the wire, a raw connection's
//! next frame, a handshake's message 1; and running such tests one at a
//! time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use sensorchain_core::handshake::{HandshakeConfig, Initiator, MESSAGE1_LEN};
use sensorchain_core::hash::ChainId;
use sensorchain_core::identity::Keypair;
use sensorchain_core::link::{self, LinkFrame};
use sensorchain_gateway::app::{self, AppConfig, Running};
use sensorchain_gateway::net::codec::LinkCodec;
use sensorchain_gateway::net::{LinkHub, mono_ms};
use sensorchain_gateway::node::Node;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// A raw link: COBS-framed, no session.
pub type RawLink = Framed<TcpStream, LinkCodec>;

/// `frame` as the bytes of one link frame.
pub fn wire(frame: &LinkFrame<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let n = link::encode(frame, &mut buf).unwrap().len();
    buf.truncate(n);
    buf
}

/// Sends `frame` on a raw link.
pub async fn send_frame(f: &mut RawLink, frame: &LinkFrame<'_>) {
    f.send(&wire(frame)[..]).await.unwrap();
}

/// A raw link to `addr`.
pub async fn raw(addr: SocketAddr) -> RawLink {
    Framed::new(
        TcpStream::connect(addr).await.unwrap(),
        LinkCodec::default(),
    )
}

/// The next frame on a raw link (clear frames only), or `None` when the
/// gateway closed it (or after 5 s of silence).
pub async fn next_frame(f: &mut RawLink) -> Option<Vec<u8>> {
    match tokio::time::timeout(Duration::from_secs(5), f.next()).await {
        Ok(Some(Ok(b))) => Some(b.to_vec()),
        _ => None,
    }
}

/// A handshake of `kp` on `chain` started: the initiator and its message 1.
pub fn start_initiator(kp: &Keypair, chain: &ChainId) -> (Initiator, Vec<u8>) {
    let mut m1 = [0u8; MESSAGE1_LEN];
    let (init, n) = Initiator::start(
        &HandshakeConfig::new(*chain),
        kp,
        mono_ms(),
        &mut rand::rng(),
        &mut m1,
    )
    .unwrap();
    (init, m1[..n].to_vec())
}

/// Serialises the tests of one binary that run through [`serially`].
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `f` while no other test of this binary runs through here (so that
/// the figures they print do not skew each other), failing it after
/// `limit`.
pub async fn serially<F: std::future::Future<Output = ()>>(limit: Duration, f: F) {
    let _g = SERIAL.lock().await;
    tokio::time::timeout(limit, f)
        .await
        .expect("test exceeded its time limit");
}

/// A gateway started in this process, serving sensor links, and the
/// handles the tests use.
pub struct Served {
    /// The gateway (drop it first: its tasks are aborted).
    pub app: Running,
    /// Its node.
    pub node: Node,
    /// Its sensor links.
    pub hub: Arc<LinkHub>,
    /// Where it accepts sensor links.
    pub addr: SocketAddr,
}

impl Served {
    /// Starts the gateway `cfg` describes (it must have a TCP listener).
    pub async fn start(cfg: AppConfig) -> Served {
        let app = app::start(cfg).await.unwrap();
        let node = app.node().clone();
        let hub = app.links().clone();
        let addr = app.link_addr().unwrap();
        Served {
            app,
            node,
            hub,
            addr,
        }
    }
}
