//! The cluster: five (or more) gateways keeping one chain under Raft
//! (openraft 0.9, `storage-v2`).
//!
//! A Raft log entry is a whole proposed block, its exact encoded bytes
//! ([`ClusterRequest::Block`]), or finality-certificate votes
//! ([`ClusterRequest::Finality`]); every member applies the committed
//! entries in log order to its own chain store, so all members hold the
//! same chain.
//!
//! # What exists
//!
//! - [`types`]: the Raft type configuration ([`TypeConfig`]) and the types
//!   it names: members ([`GatewayNode`]), entries ([`ClusterRequest`]),
//!   answers ([`ClusterResponse`]).
//! - [`log_store`]: the Raft log's storage ([`LogStore`]) on redb, in its
//!   own file (`raft.redb`, beside `chain.redb`), to openraft's storage
//!   contract, tested by openraft's storage test suite and a kill test.
//! - [`state_machine`]: the ledger as Raft's state machine
//!   ([`LedgerStateMachine`]): every committed block validated with the
//!   core rule and stored, or the same recorded rejection on every member;
//!   this gateway's finality vote, recorded before it is given; certificates
//!   checked against the validator set of their height and stored; the
//!   applied mark written with each of them. Tested under real openraft with
//!   in-process members (`tests.rs`: the same stored chain on all, a forged
//!   block refused alike, certification by quorum, a stale leader's block
//!   refused by the new leader's log, a restarted member catching up).
//!
//! # What does not exist yet
//!
//! - The network between members (openraft's `RaftNetwork` over the peer
//!   links), the vote collection that turns votes into certificate
//!   entries, forwarding of readings to the leader, the membership's
//!   bootstrap and changes, the `[cluster]` configuration, catch-up by
//!   snapshot with block back-fill, and the wiring into
//!   [`app::start`](crate::app::start): nothing in a running gateway uses
//!   this module yet (docs/CLUSTER.md has the design).

pub mod log_store;
pub mod state_machine;
pub mod types;

pub use log_store::LogStore;
pub use state_machine::{LedgerStateMachine, Outcome};
pub use types::{ClusterRequest, ClusterResponse, GatewayNode, NodeId, TypeConfig};

#[cfg(test)]
mod tests;
