//! Sensor links: TCP and serial byte streams carrying the link protocol
//! (framing, handshake, session: core's connections,
//! [`sensorchain_core::link`]), driven by the gateway's responder
//! ([`responder`]), the listeners ([`tcp`], [`serial`]) and the initiator
//! used by simulated sensors, the demo and tests ([`client`]); raw frames
//! for tests and tools ([`codec`]). Gateway-to-gateway links (the
//! cluster's own listener and dialler, [`peer`]) use the same core
//! machinery with the peer link's handshake byte and frames.
//!
//! One [`LinkHub`] holds what all links share: the node, the limits, the
//! responder table that bounds half-open handshakes across every link, the
//! session semaphore and the shutdown signal.

pub mod client;
pub mod codec;
pub mod peer;
pub mod peers;
pub mod responder;
pub mod serial;
pub mod tcp;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sensorchain_core::handshake::{HandshakeConfig, ResponderTable};
use tokio::sync::{Semaphore, watch};

use crate::config::Limits;
use crate::node::Node;

/// Capacity of the shared half-open table (the configured
/// `limits.max_half_open` is clamped to it).
pub const HALF_OPEN_CAPACITY: usize = 1024;
/// Initiator ephemeral keys remembered against replayed message 1s.
pub const REPLAY_CACHE: usize = 4096;
/// Bad frames tolerated on one link before it is closed (default).
pub const DEFAULT_MAX_BAD_FRAMES: u32 = 8;

/// Handshake cryptography sections (message 2's X25519 and signature,
/// message 3's verification) that may run at once: half the cores, at least
/// one, so that a flood of half-open handshakes leaves the other cores to
/// the established sessions. Waiting for a lane is an async wait (no worker
/// thread blocks) and holds no lock; the responder table's lock is never
/// held across cryptography.
pub fn crypto_lanes() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() / 2)
        .unwrap_or(1)
        .max(1)
}

/// The responder table shared by all links.
pub type Table = ResponderTable<HALF_OPEN_CAPACITY, REPLAY_CACHE>;

/// Link limits (from the `[limits]` section of the configuration).
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// A handshake must complete within this time from the first byte.
    pub handshake_timeout: Duration,
    /// An established session with no frame and nothing in flight for this
    /// long is closed.
    pub idle_timeout: Duration,
    /// Most established sessions.
    pub max_sessions: usize,
    /// Most half-open handshakes across all links.
    pub max_half_open: usize,
    /// Most submissions in flight per link (the link stops reading beyond;
    /// at most [`responder::INFLIGHT_CAPACITY`]).
    pub max_inflight: usize,
    /// Bad frames tolerated per link before it is closed.
    pub max_bad_frames: u32,
    /// Longest time one frame may take to write.
    pub write_timeout: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig::from_limits(&Limits::default())
    }
}

impl NetConfig {
    /// The link limits of a gateway configuration.
    pub fn from_limits(l: &Limits) -> Self {
        NetConfig {
            handshake_timeout: Duration::from_millis(l.handshake_timeout_ms.max(1)),
            idle_timeout: Duration::from_millis(l.idle_timeout_ms.max(1)),
            max_sessions: l.max_sessions.max(1),
            max_half_open: l.max_half_open.clamp(1, HALF_OPEN_CAPACITY),
            max_inflight: 256,
            max_bad_frames: DEFAULT_MAX_BAD_FRAMES,
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// What every link of a gateway shares (cheap to clone through `Arc`).
pub struct LinkHub {
    node: Node,
    cfg: NetConfig,
    hs: HandshakeConfig,
    table: Mutex<Box<Table>>,
    sessions: Arc<Semaphore>,
    crypto_lanes: Semaphore,
    peers: peers::Peers,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for LinkHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkHub")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Milliseconds on a monotonic clock (the handshake's time base).
pub fn mono_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl LinkHub {
    /// The shared link state of `node`, handshaking for the node's chain.
    pub fn new(node: Node, cfg: NetConfig) -> Arc<LinkHub> {
        let chain = *node.state().chain_id();
        let mut hs = HandshakeConfig::new(chain);
        hs.timeout_ms = cfg.handshake_timeout.as_millis() as u64;
        let (shutdown, _) = watch::channel(false);
        Arc::new(LinkHub {
            sessions: Arc::new(Semaphore::new(cfg.max_sessions)),
            node,
            cfg,
            hs,
            table: Mutex::new(Box::new(Table::new())),
            crypto_lanes: Semaphore::new(crypto_lanes()),
            peers: peers::Peers::default(),
            shutdown,
        })
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The limits.
    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// Established sessions now.
    pub fn sessions(&self) -> usize {
        self.cfg.max_sessions - self.sessions.available_permits()
    }

    /// Half-open handshakes now (including expired ones not yet reclaimed).
    pub fn half_open(&self) -> usize {
        self.table.lock().map(|t| t.half_open()).unwrap_or(0)
    }

    /// Live sessions of `device` now (0 or 1: one live session per
    /// identity).
    pub fn live_sessions_of(&self, device: &sensorchain_core::identity::PublicKey) -> usize {
        self.peers.live_sessions(device)
    }

    /// A receiver that sees `true` once shutdown has begun.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// True once shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Begins a graceful shutdown: listeners stop accepting, handshakes in
    /// progress are refused, sessions stop reading new submissions, answer
    /// those in flight once committed, send `Refused(ShuttingDown)` and
    /// close. Waits (at most `grace`) until every session has closed;
    /// returns whether they all did.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.shutdown.send_replace(true);
        let deadline = Instant::now() + grace;
        while self.sessions() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}
