//! Catch-up by snapshot: the blocks below a snapshot's head, from the
//! peers ([`BlockSource`]), and what a member serves of its own chain to a
//! peer catching up ([`serve_blocks`]).
//!
//! A member that installs a snapshot ahead of its own chain (a new or
//! wiped member, or one that was away while the others purged their logs)
//! asks its peers for the blocks between its head and the snapshot's head
//! ([`sensorchain_core::peer::Request::Blocks`]), validates every one with
//! the core rule from its own state, checks every certificate against the
//! validator set of its height, stores them, and adopts the snapshot only
//! if its state then equals the snapshot's state
//! ([`super::LedgerStateMachine`], `install`). Nothing a peer sends is
//! trusted: a block that does not decode or validate, or a certificate
//! that does not verify, ends that answer and the next peer is asked.

use std::sync::Arc;
use std::time::Duration;

use sensorchain_core::codec;

use super::network::{BLOCKS_ANSWER_BYTES, PeerNetwork, ServedBlock};
use super::types::{GatewayNode, NodeId};
use crate::store::{Store, StoreError};

/// Where a member catching up gets the blocks below a snapshot's head.
pub trait BlockSource: Send + Sync + 'static {
    /// Stored blocks from height `from` on (at most `max`), with their
    /// certificates, from one of `members` (the snapshot's membership),
    /// as bytes; `attempt` counts the tries for the same `from`, so a
    /// source can ask another member each time. Blocking: called on the
    /// state machine's blocking thread, never on an async worker.
    fn fetch(
        &self,
        from: u64,
        max: u32,
        members: &[(NodeId, GatewayNode)],
        attempt: u32,
    ) -> Result<Vec<ServedBlock>, String>;
}

/// How many times a back-fill asks for the same height (trying the members
/// in turn, waiting [`BACKFILL_PAUSE`] after a round that got nothing)
/// before the install fails.
pub const BACKFILL_TRIES: u32 = 120;

/// The wait after a failed try of a back-fill.
pub const BACKFILL_PAUSE: Duration = Duration::from_millis(500);

/// A fault-injection hook for tests: the environment variable
/// `SENSORCHAIN_TEST_BACKFILL_PAUSE_MS` makes every back-filled block wait
/// that long, so that a test can kill a member half way through its
/// catch-up (tests/cluster.rs). Read once; absent (as in any deployment),
/// nothing waits.
pub(super) fn test_pause() -> Option<Duration> {
    static PAUSE: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    *PAUSE.get_or_init(|| {
        std::env::var("SENSORCHAIN_TEST_BACKFILL_PAUSE_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    })
}

/// The stored blocks from `from` on, at most `max` of them and about
/// [`BLOCKS_ANSWER_BYTES`] in all, with their certificates: what this
/// member serves to a peer's [`BlockSource`]. Stops at the head or at the
/// first height it cannot read.
pub fn serve_blocks(store: &Store, from: u64, max: u32) -> Vec<ServedBlock> {
    let mut out = Vec::new();
    let mut size = 0usize;
    for h in from..from.saturating_add(u64::from(max)) {
        let Ok(Some(block)) = store.block_bytes(h) else {
            break;
        };
        let cert = match store.cert(h) {
            Ok(c) => c.map(|c| codec::encode_to_vec(&c)),
            Err(_) => break,
        };
        size += block.len() + cert.as_ref().map_or(0, Vec::len);
        out.push(ServedBlock { block, cert });
        if size >= BLOCKS_ANSWER_BYTES {
            break;
        }
    }
    out
}

/// A [`BlockSource`] over the peer links: asks the member `attempt` places
/// after the leader (as this member knows it) in the membership, skipping
/// itself.
pub struct PeerBlockSource {
    net: PeerNetwork,
    runtime: tokio::runtime::Handle,
    leader: Arc<dyn Fn() -> Option<NodeId> + Send + Sync>,
}

impl PeerBlockSource {
    /// A source over `net`, whose requests run on `runtime`; `leader`
    /// names the current leader, if known.
    pub fn new(
        net: PeerNetwork,
        runtime: tokio::runtime::Handle,
        leader: Arc<dyn Fn() -> Option<NodeId> + Send + Sync>,
    ) -> PeerBlockSource {
        PeerBlockSource {
            net,
            runtime,
            leader,
        }
    }
}

impl BlockSource for PeerBlockSource {
    fn fetch(
        &self,
        from: u64,
        max: u32,
        members: &[(NodeId, GatewayNode)],
        attempt: u32,
    ) -> Result<Vec<ServedBlock>, String> {
        let me = self.net.id();
        let mut order: Vec<NodeId> = members
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| *id != me)
            .collect();
        if order.is_empty() {
            return Err("no other member to ask for blocks".into());
        }
        if let Some(l) = (self.leader)()
            && let Some(i) = order.iter().position(|id| *id == l)
        {
            order.rotate_left(i);
        }
        let to = order[attempt as usize % order.len()];
        self.net
            .set_nodes(members.iter().filter(|(id, _)| *id == to).cloned());
        self.runtime
            .block_on(self.net.fetch_blocks(to, from, max))
            .map_err(|e| format!("member {to}: {e}"))
    }
}

/// Why a back-filled block or certificate was not taken.
#[derive(Debug)]
pub(super) enum BackfillError {
    /// What a peer sent is not the chain (does not decode, validate or
    /// verify): ask another.
    Peer(String),
    /// This member's store failed: the install fails.
    Store(StoreError),
}

impl From<StoreError> for BackfillError {
    fn from(e: StoreError) -> Self {
        BackfillError::Store(e)
    }
}
