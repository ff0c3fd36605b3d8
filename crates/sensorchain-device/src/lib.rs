//! # sensorchain-device
//!
//! The sensor side of sensorchain, for microcontrollers: `no_std`, no
//! `alloc`, no `unsafe`.
//!
//! - [`device`]: the device loop. A provisioned identity ([`Keypair`]) and
//!   the keys of the gateways it trusts; over any byte transport ([`Transport`]: a
//!   UART, a TCP socket, an in-memory pipe) it runs the handshake as
//!   initiator, then submits signed (optionally sealed) readings with
//!   strictly increasing sequence numbers inside the encrypted session and
//!   waits for each answer (`Ack`, `Reject`, `Busy`). It reconnects and
//!   resends after a link drop or a gateway restart. A sequence number is
//!   persisted through [`Storage`] *before* the transaction that uses it is
//!   signed, so a reboot never reuses one; every connection runs a fresh
//!   handshake (fresh ephemeral key, fresh session keys, counters from 0),
//!   so no session nonce is reused either.
//! - [`rng`]: a ChaCha20 DRBG for boards without a hardware RNG, seeded from
//!   provisioned entropy and a persisted boot counter.
//! - [`provision`]: the key page `sensorchain provision` writes into a
//!   board's flash (identity, DRBG entropy, chain, trusted gateways).
//! - [`sensor`]: embedded-hal 1.0 I2C drivers for the MAX30205 (body
//!   temperature) and MAX30102 (pulse oximeter: heart rate and SpO2), the
//!   [`VitalSensor`](sensor::VitalSensor) trait, and simulated parts behind
//!   a simulated I2C bus (the same drivers run against them).
//!
//! Feature `defmt`: the loop logs through `defmt` and the error types derive
//! `defmt::Format`.
//!
//! [`Keypair`]: sensorchain_core::identity::Keypair
//! [`Transport`]: transport::Transport
//! [`Storage`]: storage::Storage
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[macro_use]
mod log;

pub mod device;
pub mod provision;
pub mod rng;
pub mod sensor;
pub mod storage;
pub mod transport;

pub use device::{Device, DeviceConfig, DeviceError, Outcome};
/// The former name of [`Transport`] (kept so that existing boards build).
#[doc(hidden)]
pub use transport::Transport as Link;
pub use transport::{Clock, Transport};
/// The former path of [`transport`] (kept so that existing code builds).
#[doc(hidden)]
pub mod link {
    pub use crate::transport::{Clock, Transport, Transport as Link};
}
pub use provision::{KEY_PAGE_LEN, KeyPage, KeyPageError};
pub use rng::Drbg;
pub use storage::{MemoryStorage, PersistentState, Storage};
