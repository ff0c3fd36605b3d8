//! What must survive a reboot: the sequence numbers reserved so far and the
//! boot counter. Flash (or EEPROM, FRAM) on a board, memory in tests.

/// The persisted state of a device, 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PersistentState {
    /// The highest sequence number reserved (possibly signed and sent). The
    /// next boot starts above it: a sequence number is never signed twice,
    /// even when a reboot loses the transaction it was reserved for (the
    /// ledger allows gaps).
    pub sequence_ceiling: u64,
    /// Boots so far (incremented and stored at every boot, before any
    /// randomness is drawn): feeds [`crate::rng::Drbg`] so a board without
    /// a hardware RNG never repeats its random stream.
    pub boot_count: u64,
}

/// Length of [`PersistentState::to_bytes`].
pub const STATE_LEN: usize = 16;

impl PersistentState {
    /// Little-endian `sequence_ceiling || boot_count`.
    pub fn to_bytes(&self) -> [u8; STATE_LEN] {
        let mut b = [0u8; STATE_LEN];
        b[..8].copy_from_slice(&self.sequence_ceiling.to_le_bytes());
        b[8..].copy_from_slice(&self.boot_count.to_le_bytes());
        b
    }

    /// The inverse of [`to_bytes`](Self::to_bytes). Erased flash (all
    /// `0xFF`) reads as the blank state.
    pub fn from_bytes(b: &[u8; STATE_LEN]) -> Self {
        if b.iter().all(|&x| x == 0xFF) {
            return PersistentState::default();
        }
        let mut s = [0u8; 8];
        let mut c = [0u8; 8];
        s.copy_from_slice(&b[..8]);
        c.copy_from_slice(&b[8..]);
        PersistentState {
            sequence_ceiling: u64::from_le_bytes(s),
            boot_count: u64::from_le_bytes(c),
        }
    }
}

/// Durable storage of [`PersistentState`]. `save` must be durable when it
/// returns (the loop sends nothing signed under a sequence number before its
/// reservation is saved). A flash implementation should write a new slot
/// per save (wear levelling, and a torn write leaves the previous slot
/// valid); the loop reserves sequence numbers in blocks
/// ([`crate::DeviceConfig::sequence_block`]) to save less often.
pub trait Storage {
    /// Why storage failed.
    type Error: core::fmt::Debug;
    /// The last saved state (the default state if nothing was ever saved).
    fn load(&mut self) -> Result<PersistentState, Self::Error>;
    /// Saves `state` durably.
    fn save(&mut self, state: &PersistentState) -> Result<(), Self::Error>;
}

impl<S: Storage + ?Sized> Storage for &mut S {
    type Error = S::Error;
    fn load(&mut self) -> Result<PersistentState, Self::Error> {
        (**self).load()
    }
    fn save(&mut self, state: &PersistentState) -> Result<(), Self::Error> {
        (**self).save(state)
    }
}

/// Storage in RAM: for tests, and for a board whose RAM survives a warm
/// reset (a `.uninit` section) when no flash is to be written.
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    /// The stored state.
    pub state: PersistentState,
    /// Number of saves (tests check when saves happen).
    pub saves: u32,
}

impl Storage for MemoryStorage {
    type Error = core::convert::Infallible;
    fn load(&mut self) -> Result<PersistentState, Self::Error> {
        Ok(self.state)
    }
    fn save(&mut self, state: &PersistentState) -> Result<(), Self::Error> {
        self.state = *state;
        self.saves += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_roundtrip_and_erased_flash() {
        let s = PersistentState {
            sequence_ceiling: 0x0102_0304_0506_0708,
            boot_count: 9,
        };
        assert_eq!(PersistentState::from_bytes(&s.to_bytes()), s);
        assert_eq!(
            PersistentState::from_bytes(&[0xFF; STATE_LEN]),
            PersistentState::default()
        );
    }
}
