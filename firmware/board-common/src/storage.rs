//! The device crate's [`Storage`] on the [`StateLog`]: the 16 bytes of
//! [`PersistentState`] are a record's payload.

use embedded_storage::nor_flash::NorFlash;
use sensorchain_device::storage::{PersistentState, Storage};

use crate::state_log::{self, StateLog};

/// Why the flash storage failed (the driver's own error is dropped: the
/// board logs this one with defmt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum StorageError {
    /// The flash driver failed.
    Flash,
    /// The state pages are not two erase pages of whole records.
    Geometry,
    /// A record did not read back after three attempts.
    Verify,
    /// Writes kept failing up to a page switch that would erase the
    /// newest state.
    WornOut,
}

impl<E> From<state_log::Error<E>> for StorageError {
    fn from(e: state_log::Error<E>) -> Self {
        match e {
            state_log::Error::Flash(_) => StorageError::Flash,
            state_log::Error::Geometry => StorageError::Geometry,
            state_log::Error::Verify => StorageError::Verify,
            state_log::Error::WornOut => StorageError::WornOut,
        }
    }
}

/// [`PersistentState`] in two flash pages (see [`crate::state_log`]).
pub struct FlashStorage<F>(StateLog<F>);

impl<F: NorFlash> FlashStorage<F> {
    /// Scans the state pages of `flash` (its offsets `0..2 * ERASE_SIZE`).
    pub fn open(flash: F) -> Result<Self, StorageError> {
        Ok(FlashStorage(StateLog::open(flash)?))
    }

    /// The log (generation, erase count).
    pub fn log(&self) -> &StateLog<F> {
        &self.0
    }
}

impl<F: NorFlash> Storage for FlashStorage<F> {
    type Error = StorageError;

    fn load(&mut self) -> Result<PersistentState, StorageError> {
        Ok(self
            .0
            .latest()
            .map(|b| PersistentState::from_bytes(&b))
            .unwrap_or_default())
    }

    fn save(&mut self, state: &PersistentState) -> Result<(), StorageError> {
        Ok(self.0.save(&state.to_bytes())?)
    }
}
