//! The `[cluster]` table: this gateway's member id, its peer links'
//! address, the other members, Raft's timing (docs/CLUSTER.md).
//!
//! ```toml
//! [cluster]
//! node_id = 1                  # this gateway's member id (1..), unique in the cluster
//! listen = "0.0.0.0:7500"      # peer links from the other gateways (encrypted, admitted by key)
//! heartbeat_ms = 250           # Raft's heartbeat
//! election_min_ms = 3000       # election timeouts: many heartbeats, for a busy Pi
//! election_max_ms = 6000
//! snapshot_every = 8192        # Raft log entries between snapshots
//! snapshot_keep = 8192         # entries kept below a snapshot (a member less behind catches up by the log)
//!
//! [[cluster.peers]]            # every other member: its id, peer address and public key
//! id = 2
//! addr = "10.0.0.12:7500"
//! key = "9f0c…"                # its public key, 64 hex digits
//! ```
//!
//! A gateway added to a running cluster (`sensorchain cluster add`) says
//! `join = true`: it waits to be added instead of starting a cluster of its
//! own.
//!
//! Without the table, the gateway is a cluster of one (member 1), on the
//! same Raft, ledger and store code. The members listed are the voters a
//! new cluster starts with (every member lists the same set); once the
//! Raft log holds a membership, the log decides.

use serde::{Deserialize, Serialize};

use super::{Problems, Range, check_addr};
use crate::cluster::settings::{
    ELECTION_MAX_MS, ELECTION_MIN_MS, HEARTBEAT_MS, KEEP_BELOW_SNAPSHOT, SNAPSHOT_EVERY_ENTRIES,
};

/// The `[cluster]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// This gateway's member id.
    pub node_id: u64,
    /// Address of the peer-link listener (`IP:port`); `None`: no peer links
    /// (a cluster of one).
    #[serde(default)]
    pub listen: Option<String>,
    /// Raft's heartbeat, in ms.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    /// Raft's shortest election timeout, in ms.
    #[serde(default = "default_election_min")]
    pub election_min_ms: u64,
    /// Raft's longest election timeout, in ms.
    #[serde(default = "default_election_max")]
    pub election_max_ms: u64,
    /// Raft log entries between snapshots.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
    /// Raft log entries kept below a snapshot: a member less far behind
    /// catches up by the log, one further behind by the snapshot and the
    /// back-fill of the blocks below it.
    #[serde(default = "default_snapshot_keep")]
    pub snapshot_keep: u64,
    /// The other members.
    #[serde(default)]
    pub peers: Vec<Peer>,
    /// This gateway joins a running cluster (it is added with `sensorchain
    /// cluster add`): it does not start a cluster of its own with `peers`.
    #[serde(default)]
    pub join: bool,
}

/// Another member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Its member id.
    pub id: u64,
    /// Its peer-link address (`IP:port` or `host:port`).
    pub addr: String,
    /// Its public key: 64 hex digits.
    pub key: String,
}

fn default_heartbeat() -> u64 {
    HEARTBEAT_MS
}
fn default_election_min() -> u64 {
    ELECTION_MIN_MS
}
fn default_election_max() -> u64 {
    ELECTION_MAX_MS
}
fn default_snapshot_every() -> u64 {
    SNAPSHOT_EVERY_ENTRIES
}
fn default_snapshot_keep() -> u64 {
    KEEP_BELOW_SNAPSHOT
}

/// Accepted ranges of `[cluster]`'s numbers.
pub const CLUSTER_RANGES: [Range; 6] = [
    Range {
        key: "cluster.node_id",
        min: 1,
        max: u32::MAX as u64,
        unit: "",
        hint: "a member id, unique in the cluster",
    },
    Range {
        key: "cluster.heartbeat_ms",
        min: 20,
        max: 10_000,
        unit: "ms",
        hint: "Raft's heartbeat",
    },
    Range {
        key: "cluster.election_min_ms",
        min: 100,
        max: 120_000,
        unit: "ms",
        hint: "several heartbeats",
    },
    Range {
        key: "cluster.election_max_ms",
        min: 100,
        max: 120_000,
        unit: "ms",
        hint: "above election_min_ms",
    },
    Range {
        key: "cluster.snapshot_every",
        min: 16,
        max: 1 << 40,
        unit: "entries",
        hint: "log entries between snapshots",
    },
    Range {
        key: "cluster.snapshot_keep",
        min: 0,
        max: 1 << 40,
        unit: "entries",
        hint: "log entries kept below a snapshot",
    },
];

/// Most members a cluster may list.
pub const MAX_MEMBERS: usize = 32;

impl ClusterSection {
    /// Checks every value (no side effects) into `p`.
    pub fn check(&self, p: &mut Problems) {
        let n = p.0.len();
        for (r, v) in CLUSTER_RANGES.iter().zip([
            self.node_id,
            self.heartbeat_ms,
            self.election_min_ms,
            self.election_max_ms,
            self.snapshot_every,
            self.snapshot_keep,
        ]) {
            r.check(p, v);
        }
        let in_range = p.0.len() == n;
        if in_range && self.election_min_ms < 3 * self.heartbeat_ms {
            p.push(
                "cluster.election_min_ms",
                self.election_min_ms,
                format!(
                    "must be at least 3 × heartbeat_ms ({}): a follower must not start elections between heartbeats",
                    3 * self.heartbeat_ms
                ),
            );
        }
        if in_range && self.election_max_ms <= self.election_min_ms {
            p.push(
                "cluster.election_max_ms",
                self.election_max_ms,
                format!(
                    "must be above election_min_ms ({}): the timeouts are drawn from that range",
                    self.election_min_ms
                ),
            );
        }
        check_addr(p, "cluster.listen", self.listen.as_deref(), 7500);
        if !self.peers.is_empty() && self.listen.is_none() {
            p.push(
                "cluster.listen",
                "(none)",
                "a gateway with peers needs a peer-link address, e.g. \"0.0.0.0:7500\"",
            );
        }
        if self.peers.len() + 1 > MAX_MEMBERS {
            p.push(
                "cluster.peers",
                self.peers.len(),
                format!("at most {} peers", MAX_MEMBERS - 1),
            );
        }
        for (i, peer) in self.peers.iter().enumerate() {
            let key = format!("cluster.peers[{i}]");
            if peer.id == 0 || peer.id > u32::MAX as u64 {
                p.push(format!("{key}.id"), peer.id, "a member id from 1");
            } else if peer.id == self.node_id {
                p.push(
                    format!("{key}.id"),
                    peer.id,
                    "is this gateway's own node_id: list only the other members",
                );
            } else if self.peers[..i].iter().any(|o| o.id == peer.id) {
                p.push(format!("{key}.id"), peer.id, "the same id is listed twice");
            }
            if peer.addr.trim().is_empty() || !peer.addr.contains(':') {
                p.push(
                    format!("{key}.addr"),
                    format!("{:?}", peer.addr),
                    "an address and port, e.g. \"10.0.0.12:7500\"",
                );
            }
            match crate::keys::parse_public(&peer.key) {
                Ok(k) => {
                    if self.peers[..i]
                        .iter()
                        .any(|o| crate::keys::parse_public(&o.key).ok() == Some(k))
                    {
                        p.push(
                            format!("{key}.key"),
                            &peer.key,
                            "the same key is listed twice",
                        );
                    }
                }
                Err(e) => p.push(format!("{key}.key"), &peer.key, format!("{e:#}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml_text: &str) -> ClusterSection {
        toml::from_str(toml_text).unwrap()
    }

    const KEY: &str = "0101010101010101010101010101010101010101010101010101010101010101";

    #[test]
    fn a_good_section_passes_and_defaults_apply() {
        let s = section(&format!(
            "node_id = 1\nlisten = \"127.0.0.1:7500\"\n[[peers]]\nid = 2\naddr = \"127.0.0.1:7501\"\nkey = \"{KEY}\"\n"
        ));
        assert_eq!(s.heartbeat_ms, HEARTBEAT_MS);
        let mut p = Problems::default();
        s.check(&mut p);
        assert!(p.0.is_empty(), "{:?}", p.0);
    }

    #[test]
    fn every_problem_is_named() {
        let s = section(&format!(
            "node_id = 2\nheartbeat_ms = 1000\nelection_min_ms = 2000\nelection_max_ms = 1500\n\
             [[peers]]\nid = 2\naddr = \"nowhere\"\nkey = \"xyz\"\n\
             [[peers]]\nid = 3\naddr = \"127.0.0.1:1\"\nkey = \"{KEY}\"\n\
             [[peers]]\nid = 3\naddr = \"127.0.0.1:2\"\nkey = \"{KEY}\"\n"
        ));
        let mut p = Problems::default();
        s.check(&mut p);
        let keys: Vec<&str> = p.0.iter().map(|x| x.key.as_str()).collect();
        for k in [
            "cluster.election_min_ms",
            "cluster.election_max_ms",
            "cluster.listen",
            "cluster.peers[0].id",
            "cluster.peers[0].addr",
            "cluster.peers[0].key",
            "cluster.peers[2].id",
            "cluster.peers[2].key",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
    }
}
