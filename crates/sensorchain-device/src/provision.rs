//! The key page: what provisioning writes into a device's flash.
//!
//! A real board keeps its identity out of the firmware image: the same image
//! runs on every device, and `sensorchain provision` writes one fixed-size
//! page per device (the device seed, DRBG entropy, the chain id, the trusted
//! gateway keys and, optionally, the readers its readings are sealed for)
//! into a dedicated flash page. At boot the firmware reads that page with
//! [`KeyPage::decode`]; erased flash, a torn write or a corrupted page is an
//! error, never a device with a wrong identity.
//!
//! Layout ([`KEY_PAGE_LEN`] = 332 bytes, every field at a fixed offset):
//!
//! | offset | len | field |
//! |---|---|---|
//! | 0 | 8 | magic `"SCKEYPG\0"` |
//! | 8 | 1 | version, `1` |
//! | 9 | 1 | number of gateway keys `g`, 1..=[`MAX_GATEWAYS`] |
//! | 10 | 1 | number of sealed-for readers `r`, 0..=[`MAX_READERS`] |
//! | 11 | 1 | reserved, `0` |
//! | 12 | 32 | chain id |
//! | 44 | 32 | device Ed25519 seed |
//! | 76 | 32 | DRBG entropy ([`crate::rng::Drbg`]) |
//! | 108 | 4 × 32 | gateway public keys; slots `g..4` are zero |
//! | 236 | 2 × 32 | reader public keys; slots `r..2` are zero |
//! | 300 | 32 | check: `tagged_hash("sensorchain/device/key-page/v1"; bytes[0..300])` |
//!
//! The check is a domain-separated SHA-256, not a MAC: it catches erased,
//! torn and bit-flipped pages. Protecting the page from being read out is
//! the board's job (flash read-out protection, APPROTECT on the nRF52840).
//!
//! ```
//! use sensorchain_core::hash::ChainId;
//! use sensorchain_core::identity::Keypair;
//! use sensorchain_device::provision::{KeyPage, KEY_PAGE_LEN};
//!
//! let gateway = Keypair::from_seed([2; 32]).public();
//! let page = KeyPage::new(ChainId([7; 32]), [10; 32], [11; 32], &[gateway], &[])?;
//! let bytes: [u8; KEY_PAGE_LEN] = page.encode();
//! assert_eq!(KeyPage::decode(&bytes)?, page);
//! assert!(KeyPage::decode(&[0xFF; KEY_PAGE_LEN]).is_err()); // erased flash
//! # Ok::<(), sensorchain_device::provision::KeyPageError>(())
//! ```

use core::fmt;

use sensorchain_core::hash::{ChainId, tagged_hash};
use sensorchain_core::identity::{Keypair, PublicKey};

/// Length of an encoded key page.
pub const KEY_PAGE_LEN: usize = 332;
/// Most gateway keys a page holds.
pub const MAX_GATEWAYS: usize = 4;
/// Most sealed-for readers a page holds.
pub const MAX_READERS: usize = 2;
/// The first 8 bytes of a key page.
pub const KEY_PAGE_MAGIC: [u8; 8] = *b"SCKEYPG\0";
/// The layout version this module reads and writes.
pub const KEY_PAGE_VERSION: u8 = 1;
/// Domain-separation context of the page check.
pub const KEY_PAGE_LABEL: &str = "sensorchain/device/key-page/v1";

const OFF_CHAIN: usize = 12;
const OFF_SEED: usize = 44;
const OFF_ENTROPY: usize = 76;
const OFF_GATEWAYS: usize = 108;
const OFF_READERS: usize = OFF_GATEWAYS + 32 * MAX_GATEWAYS;
const OFF_CHECK: usize = OFF_READERS + 32 * MAX_READERS;

/// Why a key page was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum KeyPageError {
    /// Not [`KEY_PAGE_LEN`] bytes.
    Length,
    /// Every byte is `0xFF` (or `0x00`): the page was never provisioned.
    Blank,
    /// The magic is not [`KEY_PAGE_MAGIC`].
    Magic,
    /// A layout version this firmware does not know.
    Version(u8),
    /// The check hash does not match: a torn or corrupted write.
    Check,
    /// No gateway key, or more than [`MAX_GATEWAYS`].
    GatewayCount(u8),
    /// More than [`MAX_READERS`] readers.
    ReaderCount(u8),
    /// A reserved byte or an unused key slot is not zero.
    NotCanonical,
}

impl fmt::Display for KeyPageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPageError::Length => write!(f, "key page is not {KEY_PAGE_LEN} bytes"),
            KeyPageError::Blank => f.write_str("key page is blank (device not provisioned)"),
            KeyPageError::Magic => f.write_str("not a sensorchain key page (bad magic)"),
            KeyPageError::Version(v) => write!(f, "key page version {v} is not supported"),
            KeyPageError::Check => f.write_str("key page check failed (torn or corrupted)"),
            KeyPageError::GatewayCount(n) => {
                write!(
                    f,
                    "key page holds {n} gateway keys (1..={MAX_GATEWAYS} allowed)"
                )
            }
            KeyPageError::ReaderCount(n) => {
                write!(f, "key page holds {n} readers (at most {MAX_READERS})")
            }
            KeyPageError::NotCanonical => f.write_str("key page has non-zero reserved bytes"),
        }
    }
}

impl core::error::Error for KeyPageError {}

/// A device's provisioned secrets and trust anchors (see the module docs for
/// the byte layout).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPage {
    /// The chain the device belongs to.
    pub chain: ChainId,
    /// The device's Ed25519 seed (its identity).
    pub seed: [u8; 32],
    /// Secret DRBG entropy, unique per device.
    pub entropy: [u8; 32],
    gateways: [PublicKey; MAX_GATEWAYS],
    gateway_count: u8,
    readers: [PublicKey; MAX_READERS],
    reader_count: u8,
}

impl fmt::Debug for KeyPage {
    // Never prints the seed or the entropy.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPage")
            .field("chain", &self.chain)
            .field("device", &self.keypair().public())
            .field("gateways", &self.gateways())
            .field("readers", &self.readers())
            .finish_non_exhaustive()
    }
}

impl KeyPage {
    /// A page for `seed` on `chain`, trusting `gateways` (1..=4) and sealing
    /// for `readers` (0..=2).
    pub fn new(
        chain: ChainId,
        seed: [u8; 32],
        entropy: [u8; 32],
        gateways: &[PublicKey],
        readers: &[PublicKey],
    ) -> Result<Self, KeyPageError> {
        if gateways.is_empty() || gateways.len() > MAX_GATEWAYS {
            return Err(KeyPageError::GatewayCount(gateways.len().min(255) as u8));
        }
        if readers.len() > MAX_READERS {
            return Err(KeyPageError::ReaderCount(readers.len().min(255) as u8));
        }
        let mut page = KeyPage {
            chain,
            seed,
            entropy,
            gateways: [PublicKey([0; 32]); MAX_GATEWAYS],
            gateway_count: gateways.len() as u8,
            readers: [PublicKey([0; 32]); MAX_READERS],
            reader_count: readers.len() as u8,
        };
        page.gateways[..gateways.len()].copy_from_slice(gateways);
        page.readers[..readers.len()].copy_from_slice(readers);
        Ok(page)
    }

    /// The device's key pair.
    pub fn keypair(&self) -> Keypair {
        Keypair::from_seed(self.seed)
    }

    /// The trusted gateway keys.
    pub fn gateways(&self) -> &[PublicKey] {
        &self.gateways[..self.gateway_count as usize]
    }

    /// The readers the device's readings are sealed for (empty: plain).
    pub fn readers(&self) -> &[PublicKey] {
        &self.readers[..self.reader_count as usize]
    }

    /// The page's bytes, check included.
    pub fn encode(&self) -> [u8; KEY_PAGE_LEN] {
        let mut b = [0u8; KEY_PAGE_LEN];
        b[..8].copy_from_slice(&KEY_PAGE_MAGIC);
        b[8] = KEY_PAGE_VERSION;
        b[9] = self.gateway_count;
        b[10] = self.reader_count;
        b[OFF_CHAIN..OFF_SEED].copy_from_slice(&self.chain.0);
        b[OFF_SEED..OFF_ENTROPY].copy_from_slice(&self.seed);
        b[OFF_ENTROPY..OFF_GATEWAYS].copy_from_slice(&self.entropy);
        for (i, g) in self.gateways().iter().enumerate() {
            b[OFF_GATEWAYS + 32 * i..OFF_GATEWAYS + 32 * (i + 1)].copy_from_slice(&g.0);
        }
        for (i, r) in self.readers().iter().enumerate() {
            b[OFF_READERS + 32 * i..OFF_READERS + 32 * (i + 1)].copy_from_slice(&r.0);
        }
        let check = tagged_hash(KEY_PAGE_LABEL, &[&b[..OFF_CHECK]]);
        b[OFF_CHECK..].copy_from_slice(&check.0);
        b
    }

    /// Reads a page. Total: any input gives a page or a [`KeyPageError`];
    /// an accepted page re-encodes to exactly `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, KeyPageError> {
        let b: &[u8; KEY_PAGE_LEN] = bytes.try_into().map_err(|_| KeyPageError::Length)?;
        if b.iter().all(|&x| x == 0xFF) || b.iter().all(|&x| x == 0) {
            return Err(KeyPageError::Blank);
        }
        if b[..8] != KEY_PAGE_MAGIC {
            return Err(KeyPageError::Magic);
        }
        if b[8] != KEY_PAGE_VERSION {
            return Err(KeyPageError::Version(b[8]));
        }
        if tagged_hash(KEY_PAGE_LABEL, &[&b[..OFF_CHECK]]).0 != b[OFF_CHECK..] {
            return Err(KeyPageError::Check);
        }
        let (g, r) = (b[9] as usize, b[10] as usize);
        if g == 0 || g > MAX_GATEWAYS {
            return Err(KeyPageError::GatewayCount(b[9]));
        }
        if r > MAX_READERS {
            return Err(KeyPageError::ReaderCount(b[10]));
        }
        let zero_tail = b[OFF_GATEWAYS + 32 * g..OFF_READERS]
            .iter()
            .all(|&x| x == 0)
            && b[OFF_READERS + 32 * r..OFF_CHECK].iter().all(|&x| x == 0);
        if b[11] != 0 || !zero_tail {
            return Err(KeyPageError::NotCanonical);
        }
        let key = |off: usize| {
            let mut k = [0u8; 32];
            k.copy_from_slice(&b[off..off + 32]);
            k
        };
        let mut page = KeyPage {
            chain: ChainId(key(OFF_CHAIN)),
            seed: key(OFF_SEED),
            entropy: key(OFF_ENTROPY),
            gateways: [PublicKey([0; 32]); MAX_GATEWAYS],
            gateway_count: g as u8,
            readers: [PublicKey([0; 32]); MAX_READERS],
            reader_count: r as u8,
        };
        for i in 0..g {
            page.gateways[i] = PublicKey(key(OFF_GATEWAYS + 32 * i));
        }
        for i in 0..r {
            page.readers[i] = PublicKey(key(OFF_READERS + 32 * i));
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KeyPage {
        let gws = [
            Keypair::from_seed([2; 32]).public(),
            Keypair::from_seed([3; 32]).public(),
        ];
        let readers = [Keypair::from_seed([4; 32]).public()];
        KeyPage::new(ChainId([7; 32]), [10; 32], [11; 32], &gws, &readers).unwrap()
    }

    #[test]
    fn round_trip_and_layout() {
        let page = sample();
        let b = page.encode();
        assert_eq!(&b[..8], b"SCKEYPG\0");
        assert_eq!((b[8], b[9], b[10], b[11]), (1, 2, 1, 0));
        assert_eq!(&b[44..76], &[10; 32]);
        assert_eq!(&b[108..140], &Keypair::from_seed([2; 32]).public().0);
        assert_eq!(&b[236..268], &Keypair::from_seed([4; 32]).public().0);
        assert!(b[268..300].iter().all(|&x| x == 0));
        let back = KeyPage::decode(&b).unwrap();
        assert_eq!(back, page);
        assert_eq!(back.gateways().len(), 2);
        assert_eq!(back.readers().len(), 1);
        assert_eq!(
            back.keypair().public(),
            Keypair::from_seed([10; 32]).public()
        );
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let b = sample().encode();
        for i in 0..KEY_PAGE_LEN {
            for bit in 0..8 {
                let mut m = b;
                m[i] ^= 1 << bit;
                assert!(
                    KeyPage::decode(&m).is_err(),
                    "flip at byte {i} bit {bit} accepted"
                );
            }
        }
    }

    #[test]
    fn blank_short_and_bad_counts() {
        assert_eq!(
            KeyPage::decode(&[0xFF; KEY_PAGE_LEN]),
            Err(KeyPageError::Blank)
        );
        assert_eq!(
            KeyPage::decode(&[0; KEY_PAGE_LEN]),
            Err(KeyPageError::Blank)
        );
        assert_eq!(KeyPage::decode(&[0; 10]), Err(KeyPageError::Length));
        let chain = ChainId([7; 32]);
        assert_eq!(
            KeyPage::new(chain, [1; 32], [2; 32], &[], &[]),
            Err(KeyPageError::GatewayCount(0))
        );
        let pk = PublicKey([9; 32]);
        assert_eq!(
            KeyPage::new(chain, [1; 32], [2; 32], &[pk; 5], &[]),
            Err(KeyPageError::GatewayCount(5))
        );
        assert_eq!(
            KeyPage::new(chain, [1; 32], [2; 32], &[pk], &[pk; 3]),
            Err(KeyPageError::ReaderCount(3))
        );
    }

    #[test]
    fn count_and_slot_checks_after_a_valid_check() {
        // Pages whose check is right but whose contents are not canonical.
        let reseal = |mut b: [u8; KEY_PAGE_LEN]| {
            let c = tagged_hash(KEY_PAGE_LABEL, &[&b[..OFF_CHECK]]);
            b[OFF_CHECK..].copy_from_slice(&c.0);
            b
        };
        let good = sample().encode();
        let mut b = good;
        b[9] = 0;
        assert_eq!(
            KeyPage::decode(&reseal(b)),
            Err(KeyPageError::GatewayCount(0))
        );
        b = good;
        b[10] = 3;
        assert_eq!(
            KeyPage::decode(&reseal(b)),
            Err(KeyPageError::ReaderCount(3))
        );
        b = good;
        b[11] = 1;
        assert_eq!(KeyPage::decode(&reseal(b)), Err(KeyPageError::NotCanonical));
        b = good;
        b[OFF_GATEWAYS + 32 * 3] = 1; // unused gateway slot 3
        assert_eq!(KeyPage::decode(&reseal(b)), Err(KeyPageError::NotCanonical));
        b = good;
        b[8] = 2;
        assert_eq!(KeyPage::decode(&reseal(b)), Err(KeyPageError::Version(2)));
    }

    #[test]
    fn debug_hides_secrets() {
        let s = alloc_free_debug(&sample());
        assert!(!s.contains("10, 10"));
    }

    fn alloc_free_debug(p: &KeyPage) -> heapless::String<1024> {
        use core::fmt::Write;
        let mut s = heapless::String::new();
        write!(s, "{p:?}").unwrap();
        s
    }
}
