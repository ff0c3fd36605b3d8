//! Helpers shared by the `secure_*` integration tests: a deterministic RNG
//! and fixed allowlists; and, with the `ledger_*` tests, the keys and
//! members of the vector chain.
#![allow(dead_code)]

use sensorchain_core::handshake::{Allowlist, Refusal};
use sensorchain_core::hash::tagged_hash;
use sensorchain_core::identity::{KeyId, Keypair, PublicKey, VerifyingKey};
use std::cell::Cell;
use std::vec::Vec;

/// A deterministic test RNG: block `i` is
/// `SHA-256(len || "sensorchain/test-rng/v1" || seed || i as u64 LE)`.
/// Documented in docs/PROTOCOL.md so the vectors can be regenerated
/// elsewhere. Counts the bytes it produced.
pub struct TestRng {
    seed: [u8; 32],
    block: u64,
    buf: [u8; 32],
    pos: usize,
    pub drawn: Cell<usize>,
}

impl TestRng {
    pub fn new(seed: [u8; 32]) -> Self {
        TestRng {
            seed,
            block: 0,
            buf: [0; 32],
            pos: 32,
            drawn: Cell::new(0),
        }
    }

    pub fn from_u64(n: u64) -> Self {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&n.to_le_bytes());
        Self::new(s)
    }

    fn byte(&mut self) -> u8 {
        if self.pos == 32 {
            self.buf = tagged_hash(
                "sensorchain/test-rng/v1",
                &[&self.seed, &self.block.to_le_bytes()],
            )
            .0;
            self.block += 1;
            self.pos = 0;
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        self.drawn.set(self.drawn.get() + 1);
        b
    }
}

impl rand_core::TryRng for TestRng {
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
            *d = self.byte();
        }
        Ok(())
    }
}
impl rand_core::TryCryptoRng for TestRng {}

/// A fixed allowlist: permitted keys, and known-but-refused keys. Counts
/// lookups.
pub struct FixedAllowlist {
    pub permitted: Vec<VerifyingKey>,
    pub refused: Vec<PublicKey>,
    pub lookups: Cell<usize>,
}

impl FixedAllowlist {
    pub fn new(permitted: &[&Keypair]) -> Self {
        FixedAllowlist {
            permitted: permitted
                .iter()
                .map(|k| VerifyingKey::from_public(&k.public()).unwrap())
                .collect(),
            refused: Vec::new(),
            lookups: Cell::new(0),
        }
    }
}

impl Allowlist for FixedAllowlist {
    fn lookup(&self, id: &KeyId) -> Result<VerifyingKey, Refusal> {
        self.lookups.set(self.lookups.get() + 1);
        if let Some(vk) = self.permitted.iter().find(|v| v.public().key_id() == *id) {
            return Ok(*vk);
        }
        if self.refused.iter().any(|p| p.key_id() == *id) {
            return Err(Refusal::NotPermitted);
        }
        Err(Refusal::Unknown)
    }
}

pub fn device() -> Keypair {
    Keypair::from_seed([0x11; 32])
}
pub fn gateway() -> Keypair {
    Keypair::from_seed([0x22; 32])
}
pub fn rogue() -> Keypair {
    Keypair::from_seed([0x33; 32])
}

/// The keys of the vector chain's genesis ([`vector_chain_id`]): its
/// creator and admin (seed 01×32), gateway (02×32) and device (03×32).
pub fn vector_keys() -> [Keypair; 3] {
    [1, 2, 3].map(|n| Keypair::from_seed([n; 32]))
}

/// The members of the vector chain's genesis: [`vector_keys`] as an admin,
/// a gateway and a device with their roles' default permissions.
pub fn vector_members() -> [sensorchain_core::tx::Member; 3] {
    use sensorchain_core::permissions::Role;
    let [admin, gateway, device] = vector_keys();
    [
        (admin, Role::Admin),
        (gateway, Role::Gateway),
        (device, Role::Device),
    ]
    .map(|(k, role)| sensorchain_core::tx::Member::of_role(k.public(), role))
}

/// The chain of `tests/vectors/ledger.json` (and of the handshake vectors):
/// the id its genesis transaction derives (creator seed 01×32, gateway
/// 02×32, device 03×32, name "ward-7", default parameters, time
/// 1 700 000 000 000 ms). Built without `alloc`, like a device would.
pub fn vector_chain_id() -> sensorchain_core::hash::ChainId {
    use sensorchain_core::tx::{GenesisConfig, Params, TxBody};
    let cfg = GenesisConfig {
        name: "ward-7".try_into().unwrap(),
        params: Params::default(),
        members: vector_members()[..].try_into().unwrap(),
    };
    TxBody::genesis(vector_keys()[0].public(), 1_700_000_000_000, cfg)
        .genesis_chain_id()
        .unwrap()
}
