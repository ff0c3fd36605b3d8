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
//!
//! # What does not exist yet
//!
//! - The state machine: applying a committed block to the chain store
//!   (decoding it with the core's strict decoder, validating it with
//!   `WorldState::apply_block`) and recording finality votes; its
//!   snapshots. (The storage suite runs against a test-only in-memory
//!   state machine.)
//! - The network between members (openraft's `RaftNetwork`), the
//!   membership's bootstrap and changes, the configuration of a cluster,
//!   the wiring into [`app::start`](crate::app::start): nothing in a
//!   running gateway uses this module yet.

pub mod log_store;
pub mod types;

pub use log_store::LogStore;
pub use types::{ClusterRequest, ClusterResponse, GatewayNode, NodeId, TypeConfig};
