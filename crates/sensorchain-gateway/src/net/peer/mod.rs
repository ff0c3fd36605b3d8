//! Gateway-to-gateway peer links over TCP: tokio drivers around core's
//! sans-I/O [`PeerConnection`](sensorchain_core::peer::PeerConnection)
//! (framing, handshake order, session, chunks; `docs/PROTOCOL.md`, "Peer
//! links").
//!
//! * [`dial`]: the initiator's side — one [`PeerLink`] per peer: connected
//!   lazily on its first request, handshaken against the key the peer must
//!   prove, requests pipelined with ids and answered in any order, each
//!   with its own timeout; a link that fails fails every request it holds
//!   ([`PeerError::Unreachable`]) and is dialled again, with backoff, for
//!   the next one.
//! * [`serve`]: the responder's side — a listener ([`serve_peers`]) that
//!   admits a session only for a key its [`PeerService`] admits (a
//!   gateway: `VALIDATE` and `CONNECT`), re-checks that on every request
//!   and on every [`PeerServer::recheck`], and serves each request in its
//!   own task.
//!
//! The handshake's cryptography (X25519, the signatures) runs on tokio's
//! blocking pool, never on a worker that drives Raft's timers; so does
//! decoding or encoding a message above [`OFF_RUNTIME_ABOVE`] bytes.
//!
//! Nothing here knows Raft: requests and answers are core's
//! [`Request`](sensorchain_core::peer::Request) and
//! [`Answer`](sensorchain_core::peer::Answer); [`crate::cluster::network`]
//! puts openraft's RPCs in them and serves them.

pub mod dial;
pub mod metrics;
pub mod serve;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use sensorchain_core::handshake::HandshakeConfig;
use sensorchain_core::hash::ChainId;
use sensorchain_core::identity::Keypair;

pub use dial::{Answered, PeerLink};
pub use serve::{PeerServer, PeerService, serve_peers};

/// Messages larger than this are decoded and encoded on tokio's blocking
/// pool (a 16 MiB block would otherwise hold a worker for tens of ms on a
/// Raspberry Pi).
pub const OFF_RUNTIME_ABOVE: usize = 1 << 20;

/// How peer links behave (both sides).
#[derive(Clone)]
pub struct PeerConfig {
    /// This gateway's identity (its validator key).
    pub identity: Arc<Keypair>,
    /// The chain: handshakes of another chain are refused.
    pub chain: ChainId,
    /// Longest time from a TCP connection to an established session.
    pub handshake_timeout: Duration,
    /// Longest time a TCP connect may take.
    pub connect_timeout: Duration,
    /// A link that has requests unanswered and for this long neither
    /// received a byte nor had one taken by the peer is taken for dead: it
    /// is closed and its requests fail.
    pub dead_after: Duration,
    /// Longest time one write to the socket may block.
    pub write_timeout: Duration,
    /// Requests in flight per link: unanswered on the initiator (a request
    /// beyond waits in the queue), being served on the responder (beyond,
    /// it stops reading).
    pub max_inflight: usize,
    /// Requests waiting for a link (beyond, a request waits, within its
    /// timeout, for room).
    pub queue: usize,
    /// First wait before dialling a peer again after a failure; doubled
    /// per failure up to `backoff_max`. Requests made meanwhile fail at
    /// once ([`PeerError::Unreachable`]).
    pub backoff_min: Duration,
    /// Longest wait between two dials of one peer.
    pub backoff_max: Duration,
    /// Responder: most peer sessions at once.
    pub max_sessions: usize,
    /// Responder: most handshakes between message 1 and message 3 at once.
    pub max_half_open: usize,
    /// Responder: every live session's admission is checked again at this
    /// interval (and at each request, and at [`PeerServer::recheck`]).
    pub recheck_every: Duration,
    /// Timeout of a forwarded transaction or a vote sent by
    /// [`crate::cluster::network::PeerNetwork`].
    pub request_timeout: Duration,
    /// Where the links count their requests, dials and sessions (the
    /// gateway's, registered in [`crate::metrics::Metrics`]; a fresh,
    /// unregistered set by default).
    pub metrics: Arc<metrics::PeerMetrics>,
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("identity", &self.identity.public())
            .field("handshake_timeout", &self.handshake_timeout)
            .field("dead_after", &self.dead_after)
            .field("max_inflight", &self.max_inflight)
            .finish_non_exhaustive()
    }
}

impl PeerConfig {
    /// The defaults for `identity` on `chain`: 5 s to connect and to
    /// handshake, a link dead after 30 s without a byte while it owes
    /// answers, 64 requests in flight and 64 queued per link, backoff from
    /// 100 ms to 5 s, 64 sessions and 16 half-open handshakes, a recheck of
    /// admissions every second, 10 s for a forward or a vote.
    pub fn new(identity: Arc<Keypair>, chain: ChainId) -> Self {
        PeerConfig {
            identity,
            chain,
            handshake_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            dead_after: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_inflight: 64,
            queue: 64,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_sessions: 64,
            max_half_open: 16,
            recheck_every: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            metrics: Arc::default(),
        }
    }

    /// The handshake configuration (the chain, the timeout).
    pub fn handshake(&self) -> HandshakeConfig {
        let mut hs = HandshakeConfig::new(self.chain);
        hs.timeout_ms = self.handshake_timeout.as_millis() as u64;
        hs
    }
}

/// Why a request to a peer did not get its answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The peer could not be reached, refused the link, failed the
    /// handshake, or the link died before the answer (the request may or
    /// may not have been served).
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// No answer within the request's time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The request is larger than a peer message may be.
    #[error("request of {0} bytes is above the peer link's maximum")]
    TooLarge(usize),
    /// The peer's answer does not fit the request (another kind, or an
    /// answer `Malformed`: it could not read the request).
    #[error("peer protocol: {0}")]
    Protocol(String),
    /// No address is known for this node.
    #[error("no address known for node {0}")]
    UnknownNode(u64),
    /// This gateway's peer network is shut down.
    #[error("the peer network is shut down")]
    Shutdown,
}

/// Runs `f` on tokio's blocking pool when `len` is above
/// [`OFF_RUNTIME_ABOVE`], in place otherwise. A panic in `f` is
/// propagated; a runtime shutting down gives [`PeerError::Shutdown`].
pub(crate) async fn off_runtime_if_large<T, F>(len: usize, f: F) -> Result<T, PeerError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if len > OFF_RUNTIME_ABOVE {
        blocking(f).await
    } else {
        Ok(f())
    }
}

/// Runs `f` on tokio's blocking pool (a panic in `f` is propagated).
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, PeerError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(t) => Ok(t),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(PeerError::Shutdown),
    }
}

/// Resolves once `shutdown` turns true or its sender is dropped.
pub(crate) async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
