//! What a gateway knows of its cluster at start ([`ClusterSettings`]):
//! its member id, the members it bootstraps with, Raft's timing.

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::{Config, SnapshotPolicy};

use super::types::{GatewayNode, NodeId};

/// The Raft heartbeat, in ms (a leader's empty append every interval).
pub const HEARTBEAT_MS: u64 = 250;
/// The shortest election timeout, in ms: twelve heartbeats, so that a Pi
/// whose cores are busy verifying signatures (off Raft's runtime) or a
/// stalled SD-card fsync of a second does not start elections.
pub const ELECTION_MIN_MS: u64 = 3_000;
/// The longest election timeout, in ms.
pub const ELECTION_MAX_MS: u64 = 6_000;
/// Log entries between Raft snapshots (the world state and the head).
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 8_192;
/// Log entries kept below a snapshot, for a follower a little behind.
pub const KEEP_BELOW_SNAPSHOT: u64 = 8_192;

/// A gateway's cluster settings (the `[cluster]` section of gateway.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// This gateway's member id.
    pub node_id: NodeId,
    /// The voters a new cluster starts with, this gateway included (empty:
    /// a cluster of one, this gateway). Used once, when the Raft log is
    /// empty; afterwards the membership is what the log says.
    pub members: BTreeMap<NodeId, GatewayNode>,
    /// Raft's heartbeat, in ms.
    pub heartbeat_ms: u64,
    /// Raft's election timeout range, in ms.
    pub election_ms: (u64, u64),
    /// This gateway's peer-link address (none: no peer links).
    pub listen: Option<String>,
    /// Join a running cluster (be added by its leader) rather than start
    /// one with `members`.
    pub join: bool,
    /// Raft log entries between snapshots.
    pub snapshot_every: u64,
    /// Raft log entries kept below a snapshot.
    pub snapshot_keep: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            node_id: 1,
            members: BTreeMap::new(),
            heartbeat_ms: HEARTBEAT_MS,
            election_ms: (ELECTION_MIN_MS, ELECTION_MAX_MS),
            listen: None,
            join: false,
            snapshot_every: SNAPSHOT_EVERY_ENTRIES,
            snapshot_keep: KEEP_BELOW_SNAPSHOT,
        }
    }
}

impl ClusterSettings {
    /// The settings of a `[cluster]` table (checked: its keys parse).
    pub fn from_section(c: &crate::config::ClusterSection) -> anyhow::Result<ClusterSettings> {
        let mut members = BTreeMap::new();
        for p in &c.peers {
            let key = crate::keys::parse_public(&p.key)
                .map_err(|e| anyhow::anyhow!("cluster.peers: member {}: {e:#}", p.id))?;
            members.insert(
                p.id,
                GatewayNode {
                    addr: p.addr.clone(),
                    public_key: key.0,
                },
            );
        }
        Ok(ClusterSettings {
            node_id: c.node_id,
            members,
            heartbeat_ms: c.heartbeat_ms,
            election_ms: (c.election_min_ms, c.election_max_ms),
            listen: c.listen.clone(),
            join: c.join,
            snapshot_every: c.snapshot_every,
            snapshot_keep: c.snapshot_keep,
        })
    }

    /// openraft's configuration from these settings.
    pub fn raft_config(&self) -> anyhow::Result<Arc<Config>> {
        let c = Config {
            cluster_name: "sensorchain".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_ms.0,
            election_timeout_max: self.election_ms.1,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.snapshot_keep,
            ..Default::default()
        };
        Ok(Arc::new(
            c.validate()
                .map_err(|e| anyhow::anyhow!("cluster timing: {e}"))?,
        ))
    }

    /// True for a cluster of this gateway alone.
    pub fn is_single(&self) -> bool {
        self.members.keys().all(|id| *id == self.node_id)
    }
}
