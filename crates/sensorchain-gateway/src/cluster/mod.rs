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
//!   contract. Tested by openraft's storage test suite, a kill test
//!   (SIGKILLed child processes), a power-cut test (a simulated disk that
//!   loses unsynced writes) and three in-process members under openraft's
//!   engine (replication, purge after snapshots, restart); all with a
//!   test-only state machine and, for the last, a test-only in-process
//!   network (`testnet.rs`, kept for tests that cut members off at will).
//! - [`state_machine`]: the ledger as Raft's state machine
//!   ([`LedgerStateMachine`]): every committed block validated with the
//!   core rule and stored, or the same recorded rejection on every member;
//!   this gateway's finality vote, recorded before it is given; certificates
//!   checked against the validator set of their height and stored; the
//!   applied mark written with each of them, so a restarted member tells
//!   openraft exactly where its chain stands. Tested under real openraft
//!   with in-process members (`tests.rs`: the same stored chain on all, a
//!   forged block refused alike, certification by quorum, a stale leader's
//!   block refused by the new leader's log, a restarted member catching
//!   up; five members going on without two, committing nothing without
//!   three, never forking), and on its own with arbitrary entry bytes
//!   (`state_machine/tests.rs`: always answered, never an error, only valid
//!   blocks stored).
//!
//! - [`finality`]: the leader's [`Collector`]: votes verified under the
//!   validator set of their height and counted into a certificate at a
//!   quorum; a validator's two hashes at one height kept as evidence.
//! - [`network`]: the network between members over the peer links
//!   ([`crate::net::peer`]: the project's handshake and session
//!   encryption on TCP, admission by `VALIDATE` + `CONNECT`):
//!   [`PeerNetwork`] is openraft's `RaftNetworkFactory`, carries forwarded
//!   transactions ([`PeerNetwork::forward`]) and finality votes
//!   ([`PeerNetwork::send_vote`]) to the leader, and serves all of them to
//!   the gateway's [`PeerHandler`] ([`PeerNetwork::listen`]). Tested with
//!   three members under real openraft on loopback TCP with the real log
//!   store and state machine (`network/tests.rs`: election, identical
//!   chains, a forward and a vote, the leader stopped and another
//!   elected, the stopped member restarted and caught up).
//!
//! - [`local`]: a cluster of gateway *processes* on this machine
//!   ([`local::LocalCluster`]: keys, genesis, configurations on free
//!   loopback ports; start, kill, terminate, restart; `GET /cluster`; the
//!   stored chains compared), for `sensorchain demo`, `sensorchain bench
//!   cluster` and tests.
//!
//! - [`settings`] ([`ClusterSettings`], from `[cluster]`), [`verified`]
//!   (the signatures a gateway's ingest verified, skipped by its apply).
//! - [`backfill`]: catch-up by snapshot — the blocks below a snapshot's
//!   head fetched from the peers, each validated, each certificate checked,
//!   before the snapshot is adopted; and what a member serves of its chain.
//!
//! Every running gateway uses this module: `node::consensus` starts its
//! Raft over these parts (a single gateway is a cluster of one), serves
//! the peer links to the node (forwards into the leader's intake, votes
//! into its collector, admission by the node's state and membership) and
//! follows the membership on the chain (docs/CLUSTER.md); a gateway
//! starting with an empty Raft log asks the leader whether it lost its data
//! and, if so, comes back as a learner, never as a voter with a forgotten
//! vote (`node/consensus/rejoin.rs`).
//!
//! # What does not exist yet
//!
//! - Metrics of the log file (log length, flush latency) and of the peer
//!   links. (`raft.redb`'s pages are checked at every open:
//!   [`LogStore::open`].)

pub mod backfill;
pub mod finality;
pub mod local;
pub mod log_store;
pub mod network;
pub mod settings;
pub mod state_machine;
pub mod types;
pub mod verified;

pub use finality::{Collector, Verdict};
pub use log_store::LogStore;
pub use network::{PeerHandler, PeerNetwork};
pub use settings::ClusterSettings;
pub use state_machine::{LedgerStateMachine, Outcome};
pub use types::{ClusterRequest, ClusterResponse, GatewayNode, NodeId, TypeConfig};
pub use verified::Verified;

#[cfg(test)]
mod testnet;
#[cfg(test)]
mod tests;
