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

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use rand_core::{TryCryptoRng, TryRng};
use sensorchain_core::hash::tagged_hash;

/// The DRBG's domain-separation label.
pub const DRBG_LABEL: &str = "sensorchain/device/drbg/v1";

/// A ChaCha20 generator seeded from provisioned entropy and the boot
/// counter (see the module documentation). The output is the ChaCha20
/// keystream under the seed (nonce 0): the same cipher code the session
/// AEAD links anyway, so the generator costs almost no flash. After 256 GiB
/// (never, on a sensor) it rekeys with `H(label; key)` instead of panicking.
pub struct Drbg {
    cipher: ChaCha20,
    key: [u8; 32],
}

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
        Self::keyed(seed.0)
    }

    fn keyed(key: [u8; 32]) -> Self {
        Drbg {
            cipher: ChaCha20::new(&key.into(), &[0u8; 12].into()),
            key,
        }
    }
}

impl Drop for Drbg {
    fn drop(&mut self) {
        self.key = [0; 32];
    }
}

impl TryRng for Drbg {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        dst.fill(0);
        if self.cipher.try_apply_keystream(dst).is_err() {
            let next = tagged_hash(DRBG_LABEL, &[b"rekey", &self.key]).0;
            *self = Self::keyed(next);
            dst.fill(0);
            let _ = self.cipher.try_apply_keystream(dst);
        }
        Ok(())
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
