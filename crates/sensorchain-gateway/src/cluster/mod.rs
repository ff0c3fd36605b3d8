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
//!   test-only state machine and, for the last, a test-only network.
//!
//! # What does not exist yet
//!
//! - The state machine: applying a committed block to the chain store
//!   (decoding it with the core's strict decoder, validating it with
//!   `WorldState::apply_block`) and recording finality votes; its
//!   snapshots; making an applied block durable in `chain.redb` and
//!   telling openraft where the chain stands after a restart.
//! - The network between members (openraft's `RaftNetwork`), the
//!   membership's bootstrap and changes, the configuration of a cluster,
//!   the wiring into [`app::start`](crate::app::start): nothing in a
//!   running gateway uses this module yet.
//! - Operations of the log file: a page check of `raft.redb` when a gateway
//!   starts (as `Store::open_checked` does for the chain), metrics (log
//!   length, flush latency), a snapshot policy that keeps it short.

pub mod log_store;
pub mod types;

pub use log_store::LogStore;
pub use types::{ClusterRequest, ClusterResponse, GatewayNode, NodeId, TypeConfig};
