//! # sensorchain-core
//!
//! The protocol and ledger rules of sensorchain, with no I/O of its own
//! (sans-I/O, in the style of smoltcp and quinn-proto): time comes in as an
//! argument, randomness through a caller-supplied [`rand_core::CryptoRng`],
//! bytes in and out through caller buffers.
//!
//! Everything a sensor needs works without `alloc`: [`identity`] (keys,
//! addresses, the one signature rule), [`reading`] (typed vitals),
//! [`tx`] (signed transactions), [`codec`] (strict decoding). Block bodies,
//! the world state and chain validation need the `alloc` feature.
//!
//! ## Feature flags
//! | flag | what it adds |
//! |---|---|
//! | *(none)* | identities, readings, transactions, Merkle hashing, block headers, codec; `no_std`, no `alloc` |
//! | `alloc` | blocks with bodies, Merkle proofs, world state, chain validation |
//! | `std` | `alloc` plus the precomputed basepoint tables (faster verification) |
//! | `peer` | `alloc` plus gateway-to-gateway peer links ([`peer`]: messages, chunking, the connection); gateways only |
//! | `serde` | human-readable (hex/text) serde forms for JSON and TOML |
//! | `defmt` | `defmt::Format` on errors and small types |
//!
//! ## The one validity rule
//! Every verdict that decides ledger validity goes through
//! [`identity::VerifyingKey::verify`]: the strict (cofactorless) Ed25519 rule
//! of RFC 8032 §5.1.7 with `S < L`, a canonically encoded prime-order key and
//! `R` compared by its exact encoding — the verdicts of OpenSSL and Go's
//! `crypto/ed25519` on every key the ledger admits (libsodium differs only on
//! `R` = identity, which only the key's holder can produce).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

mod serde_bytes;

pub mod access_log;
pub mod block;
#[cfg(feature = "alloc")]
pub mod chain;
pub mod codec;
pub mod crypto;
pub mod frame;
pub mod handshake;
pub mod hash;
pub mod identity;
pub mod link;
pub mod login;
pub mod merkle;
#[cfg(feature = "peer")]
pub mod peer;
pub mod permissions;
pub mod reading;
pub mod sealed;
pub mod session;
#[cfg(feature = "alloc")]
pub mod state;
pub mod tx;
