//! The cluster's Raft type configuration ([`TypeConfig`]) and the types it
//! names: a member gateway ([`GatewayNode`]), what a log entry carries
//! ([`ClusterRequest`]) and what applying one answers ([`ClusterResponse`]).

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A gateway's id in the cluster: unique among its members, stable across
/// restarts.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The type configuration of the cluster's Raft (openraft 0.9): `u64`
    /// node ids, [`GatewayNode`] members, [`ClusterRequest`] entries answered
    /// by [`ClusterResponse`], snapshots held in memory, tokio.
    pub TypeConfig:
        D = ClusterRequest,
        R = ClusterResponse,
        NodeId = NodeId,
        Node = GatewayNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// One Raft log entry of the cluster, as openraft stores and replicates it.
pub type Entry = openraft::Entry<TypeConfig>;

/// A log position: the index and the leader (term, node) that wrote it.
pub type LogId = openraft::LogId<NodeId>;

/// A vote: the term and the candidate voted for, and whether a quorum
/// granted it.
pub type Vote = openraft::Vote<NodeId>;

/// A storage error of the cluster's Raft (the log store's, the state
/// machine's).
pub type StorageError = openraft::StorageError<NodeId>;

/// A member gateway: where its peers reach it and the Ed25519 public key it
/// signs with (its gateway identity on the chain).
///
/// In human-readable formats (JSON, TOML) the key is 64 hex digits; in
/// binary ones (postcard: the Raft log) its 32 bytes.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GatewayNode {
    /// The address of its cluster endpoint (`host:port`).
    pub addr: String,
    /// Its Ed25519 public key.
    #[serde(with = "key_serde")]
    pub public_key: [u8; 32],
}

impl fmt::Debug for GatewayNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayNode")
            .field("addr", &self.addr)
            .field("public_key", &hex::encode(self.public_key))
            .finish()
    }
}

impl fmt::Display for GatewayNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.addr, hex::encode(&self.public_key[..4]))
    }
}

/// The public key as hex in human-readable formats, as bytes otherwise.
mod key_serde {
    use super::{Deserialize, Deserializer, Serializer};
    use serde::de::Error as _;

    pub fn serialize<S: Serializer>(key: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(key))
        } else {
            serde::Serialize::serialize(key, s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            let mut key = [0u8; 32];
            hex::decode_to_slice(&text, &mut key).map_err(|e| {
                D::Error::custom(format_args!("public_key: 64 hex digits expected ({e})"))
            })?;
            Ok(key)
        } else {
            <[u8; 32]>::deserialize(d)
        }
    }
}

/// What a normal Raft log entry of the cluster carries.
///
/// `Debug` and `Display` show the kind and the length, not the bytes (a
/// block may be megabytes; openraft logs entries).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterRequest {
    /// A proposed block: its exact encoded bytes, as the proposer encoded
    /// them. The state machine decodes them with the core's strict decoder
    /// and validates the block against the chain; the log never re-encodes
    /// them.
    Block(Vec<u8>),
    /// Finality-certificate votes, encoded.
    Finality(Vec<u8>),
}

impl ClusterRequest {
    /// The encoded bytes carried.
    pub fn bytes(&self) -> &[u8] {
        match self {
            ClusterRequest::Block(b) | ClusterRequest::Finality(b) => b,
        }
    }
}

impl fmt::Debug for ClusterRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ClusterRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterRequest::Block(b) => write!(f, "Block({} B)", b.len()),
            ClusterRequest::Finality(b) => write!(f, "Finality({} B)", b.len()),
        }
    }
}

/// What applying a log entry answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterResponse {
    /// The block was valid and is now part of the chain.
    Applied {
        /// Its height.
        height: u64,
        /// Its hash.
        hash: [u8; 32],
    },
    /// The certificate was valid: the block at `height` is final.
    Certified {
        /// The block's height.
        height: u64,
        /// Its hash.
        hash: [u8; 32],
    },
    /// The entry was not applied (every member rejects it alike: the
    /// decision depends only on the entry and the chain before it).
    Rejected {
        /// Why.
        reason: String,
    },
    /// A blank or membership entry: nothing in the chain changed.
    Noop,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_key_is_hex_in_json_and_bytes_in_postcard() {
        let node = GatewayNode {
            addr: "127.0.0.1:7400".into(),
            public_key: [0xab; 32],
        };
        let json = serde_json::to_string(&node).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"addr":"127.0.0.1:7400","public_key":"{}"}}"#,
                "ab".repeat(32)
            )
        );
        assert_eq!(serde_json::from_str::<GatewayNode>(&json).unwrap(), node);
        let bin = postcard::to_allocvec(&node).unwrap();
        assert_eq!(bin.len(), 1 + 14 + 32);
        assert_eq!(postcard::from_bytes::<GatewayNode>(&bin).unwrap(), node);
        assert!(
            serde_json::from_str::<GatewayNode>(r#"{"addr":"a","public_key":"abcd"}"#).is_err()
        );
    }

    #[test]
    fn request_debug_shows_length_not_bytes() {
        let r = ClusterRequest::Block(vec![7; 1000]);
        assert_eq!(format!("{r:?}"), "Block(1000 B)");
        assert_eq!(r.bytes().len(), 1000);
    }
}
