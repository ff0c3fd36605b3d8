//! Randomness for boards without a hardware RNG.
//!
//! The loop takes any [`rand_core::CryptoRng`]: on a board with a true RNG
//! (nRF52840's RNG peripheral, RP2040's ROSC-based source through a
//! conditioner, STM32's RNG) pass that. On a board without one (the QEMU
//! MPS2 machine, many small MCUs) use [`Drbg`]: ChaCha20 keyed with
//!
//! ```text
//! seed = H("sensorchain/device/drbg/v1"; entropy (32) || boot_count (u64 LE) || extra)
//! ```
//!
//! where `entropy` is 32 secret random bytes provisioned into the device
//! with its identity (never shared with another device), `boot_count` the
//! persisted counter that [`crate::Device::new`] increments and saves
//! *before* any randomness is drawn, and `extra` anything the board can add
//! (an ADC noise sample, a unique id, the RTC). Each boot therefore gets a
//! new stream, even if the board resets in the middle of a handshake: no
//! handshake ephemeral key and no sealed-payload key is ever drawn twice.
//! Security rests on the provisioned entropy staying secret, like the
//! identity key next to it.

use core::convert::Infallible;

use chacha20::ChaCha20Rng;
use rand_core::{SeedableRng, TryCryptoRng, TryRng};
use sensorchain_core::hash::tagged_hash;

/// The DRBG's domain-separation label.
pub const DRBG_LABEL: &str = "sensorchain/device/drbg/v1";

/// A ChaCha20 generator seeded from provisioned entropy and the boot
/// counter (see the module documentation).
pub struct Drbg(ChaCha20Rng);

impl core::fmt::Debug for Drbg {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Drbg(..)")
    }
}

impl Drbg {
    /// The generator of boot `boot_count` with provisioned `entropy` and
    /// optional `extra` input.
    pub fn new(entropy: &[u8; 32], boot_count: u64, extra: &[u8]) -> Self {
        let seed = tagged_hash(DRBG_LABEL, &[entropy, &boot_count.to_le_bytes(), extra]);
        Drbg(ChaCha20Rng::from_seed(seed.0))
    }
}

impl TryRng for Drbg {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        self.0.try_next_u32()
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        self.0.try_next_u64()
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.try_fill_bytes(dst)
    }
}

impl TryCryptoRng for Drbg {}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::Rng;

    #[test]
    fn boots_differ_and_are_reproducible() {
        let e = [7u8; 32];
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        let mut c = [0u8; 32];
        Drbg::new(&e, 1, &[]).fill_bytes(&mut a);
        Drbg::new(&e, 2, &[]).fill_bytes(&mut b);
        Drbg::new(&e, 1, &[]).fill_bytes(&mut c);
        assert_ne!(a, b);
        assert_eq!(a, c);
        let mut d = [0u8; 32];
        Drbg::new(&e, 1, b"adc").fill_bytes(&mut d);
        assert_ne!(a, d);
    }
}
