//! # sensorchain-gateway
//!
//! A gateway of sensorchain: accepts sensor links over TCP and serial (the
//! same COBS-framed postcard frames), runs the core handshake as responder
//! and the session channel, verifies every reading once, cuts blocks by size
//! or time, stores them durably in redb before acknowledging, and serves an
//! HTTP/JSON API and Prometheus metrics. The `sensorchain` binary wraps it
//! with a CLI.
//!
//! Seams for the cluster: block *proposal* ([`node`]), *validation* (the
//! core's `WorldState::apply_block`) and *storage* ([`store`]) are separate
//! parts, so that a consensus layer can order proposals between them.

pub mod api;
pub mod cli;
pub mod config;
pub mod keys;
pub mod metrics;
pub mod net;
pub mod node;
pub mod sim;
pub mod store;
