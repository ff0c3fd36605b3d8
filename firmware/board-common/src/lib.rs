//! What the sensorchain board firmwares share.
//!
//! - [`state_log`]: the device's 16-byte persistent state in two NOR flash
//!   pages, appended as checked records so that a power cut in the middle
//!   of a write or an erase never loses the last good state. Pure logic
//!   over `embedded_storage::nor_flash::NorFlash`, tested on the host
//!   (`cargo test` in this directory).
//! - `storage` (feature `device`): the device crate's `Storage` on top of it.
//! - `app` (feature `device`): the key page check and the streaming loop
//!   (measure, submit, back off and retry transient errors, halt on final
//!   ones).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod state_log;

#[cfg(feature = "device")]
pub mod app;
#[cfg(feature = "device")]
pub mod storage;
