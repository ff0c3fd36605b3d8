//! # sensorchain-gateway
//!
//! A gateway of sensorchain: accepts sensor links over TCP and serial (the
//! same COBS-framed postcard frames), runs the core handshake as responder
//! and the session channel, verifies every reading once, cuts blocks by size
//! or time, stores them durably in redb before acknowledging, and serves an
//! HTTP/JSON API and Prometheus metrics. [`app::start`] starts all of it
//! (the one composition root); the `sensorchain` binary wraps it with a CLI
//! (the CLI is the binary's, not this library's).
//!
//! Seams for the cluster: block *proposal* ([`node`]), *validation* (the
//! core's `WorldState::apply_block`) and *storage* ([`store`]) are separate
//! parts, so that a consensus layer can order proposals between them.
//! [`cluster`] is that layer on openraft (the Raft log store, the ledger as
//! Raft's state machine, the finality collector), built and tested
//! in-process but not yet started by [`app::start`]: a gateway today is
//! still a single node (docs/CLUSTER.md).

pub mod api;
pub mod app;
pub mod audit;
pub mod backup;
pub mod chain_source;
pub mod cluster;
pub mod config;
pub mod crash_point;
pub mod export;
pub mod keys;
pub mod login_client;
pub mod metrics;
pub mod net;
pub mod node;
pub mod procfs;
pub mod sim;
pub mod store;
#[cfg(any(test, feature = "test-hooks"))]
pub mod testkit;
