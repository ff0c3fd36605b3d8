//! Helpers shared by the fuzz targets: a deterministic RNG, fixed
//! identities, an allowlist and a small valid chain.

use sensorchain_core::chain::Chain;
use sensorchain_core::handshake::{Allowlist, Refusal};
use sensorchain_core::hash::tagged_hash;
use sensorchain_core::identity::{KeyId, Keypair, VerifyingKey};
use sensorchain_core::permissions::{Permissions, Role};
use sensorchain_core::tx::{GenesisConfig, Member, Params};

/// A deterministic RNG: SHA-256 blocks of a seed and a counter (the same
/// construction as the core tests' `TestRng`). Not for production.
pub struct FuzzRng {
    seed: [u8; 32],
    block: u64,
    buf: [u8; 32],
    pos: usize,
}

impl FuzzRng {
    pub fn new(seed: u64) -> Self {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        FuzzRng {
            seed: s,
            block: 0,
            buf: [0; 32],
            pos: 32,
        }
    }
}

impl rand_core::TryRng for FuzzRng {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for d in dst {
            if self.pos == 32 {
                self.buf = tagged_hash(
                    "sensorchain/fuzz-rng/v1",
                    &[&self.seed, &self.block.to_le_bytes()],
                )
                .0;
                self.block += 1;
                self.pos = 0;
            }
            *d = self.buf[self.pos];
            self.pos += 1;
        }
        Ok(())
    }
}
impl rand_core::TryCryptoRng for FuzzRng {}

/// The fixed identities: 0 admin, 1 gateway (validator), 2..=4 devices,
/// 5 patient, 6 doctor, 7 insurer, 8 a stranger (not on the chain).
pub fn key(i: u8) -> Keypair {
    Keypair::from_seed([0x40 + (i % 9); 32])
}

pub const CHAIN_NAME: &str = "fuzz-ward";

/// A genesis with every fixed identity but the stranger.
pub fn genesis() -> Chain {
    let role = |i: u8| match i {
        0 => Role::Admin,
        1 => Role::Gateway,
        2..=4 => Role::Device,
        5 => Role::Patient,
        6 => Role::Doctor,
        _ => Role::Insurer,
    };
    let perms = |i: u8| match i {
        0 => Permissions::ALL,
        1 => Permissions::CONNECT
            .union(Permissions::VALIDATE)
            .union(Permissions::SEND),
        2..=4 => Permissions::CONNECT
            .union(Permissions::SEND)
            .union(Permissions::WRITE),
        _ => Permissions::CONNECT
            .union(Permissions::SEND)
            .union(Permissions::RECEIVE),
    };
    let members: Vec<Member> = (0..8)
        .map(|i| Member {
            key: key(i).public(),
            permissions: perms(i),
            role: role(i),
        })
        .collect();
    let cfg = GenesisConfig::new(CHAIN_NAME, Params::default(), &members).expect("config");
    Chain::genesis(&key(0), cfg, 1_000).expect("genesis")
}

/// The id of [`genesis`]'s chain (derived from its genesis block), computed once.
pub fn chain_id() -> sensorchain_core::hash::ChainId {
    static ID: std::sync::OnceLock<sensorchain_core::hash::ChainId> = std::sync::OnceLock::new();
    *ID.get_or_init(|| *genesis().chain_id())
}

/// An allowlist that admits the fixed devices (2..=4).
pub struct Devices;

impl Allowlist for Devices {
    fn lookup(&self, id: &KeyId) -> Result<VerifyingKey, Refusal> {
        for i in 2..=4 {
            let pk = key(i).public();
            if pk.key_id() == *id {
                return VerifyingKey::from_public(&pk).map_err(|_| Refusal::Unknown);
            }
        }
        Err(Refusal::Unknown)
    }
}
