//! Domain-separated SHA-256 and the 32-byte digest type.
//!
//! Every hash that names a purpose is computed as
//! `SHA-256(len(ctx) as u8 || ctx || parts…)`, where `ctx` is an ASCII context
//! string such as `"sensorchain/block/v1"`. The length prefix makes the
//! boundary between context and data unambiguous.

use core::fmt;
use sha2::{Digest, Sha256};

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash32(pub [u8; 32]);

crate::serde_bytes::bytes_newtype_serde!(Hash32, 32);

impl Hash32 {
    /// The all-zero digest, used where a field has no value (the genesis
    /// block's previous hash, an absent state commitment).
    pub const ZERO: Hash32 = Hash32([0; 32]);

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Number of leading zero bits (for proof of work).
    ///
    /// ```
    /// # use sensorchain_core::hash::Hash32;
    /// let mut b = [0xffu8; 32];
    /// b[0] = 0; b[1] = 0x1f;
    /// assert_eq!(Hash32(b).leading_zero_bits(), 11);
    /// ```
    pub fn leading_zero_bits(&self) -> u32 {
        let mut n = 0;
        for b in self.0 {
            if b == 0 {
                n += 8;
            } else {
                return n + b.leading_zeros();
            }
        }
        n
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash32(")?;
        write_hex(f, &self.0)?;
        write!(f, ")")
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Hash32 {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{=[u8]:x}", self.0)
    }
}

/// Writes bytes as lowercase hex.
pub fn write_hex(f: &mut impl fmt::Write, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// Parses exactly `N` bytes of hex (either case). Returns `None` on any other input.
///
/// ```
/// # use sensorchain_core::hash::parse_hex;
/// assert_eq!(parse_hex::<2>("0aFf"), Some([0x0a, 0xff]));
/// assert_eq!(parse_hex::<2>("0aF"), None);
/// ```
pub fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        let hi = hex_val(s[2 * i])?;
        let lo = hex_val(s[2 * i + 1])?;
        *o = (hi << 4) | lo;
    }
    Some(out)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A domain-separated SHA-256 hasher: starts with `len(ctx) || ctx`.
#[derive(Clone)]
pub struct TaggedHasher(Sha256);

impl TaggedHasher {
    /// Starts a hash for the purpose `ctx` (at most 255 bytes, by construction
    /// all context strings of this crate are short constants).
    pub fn new(ctx: &str) -> Self {
        let mut h = Sha256::new();
        // Context strings are crate constants well under 256 bytes.
        h.update([ctx.len() as u8]);
        h.update(ctx.as_bytes());
        TaggedHasher(h)
    }

    /// Absorbs more bytes.
    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        self.0.update(data);
        self
    }

    /// Finishes the hash.
    pub fn finalize(self) -> Hash32 {
        Hash32(self.0.finalize().into())
    }
}

/// `SHA-256(len(ctx) || ctx || parts[0] || parts[1] || …)`.
///
/// ```
/// # use sensorchain_core::hash::tagged_hash;
/// let a = tagged_hash("sensorchain/test/v1", &[b"ab", b"c"]);
/// let b = tagged_hash("sensorchain/test/v1", &[b"abc"]);
/// assert_eq!(a, b);
/// assert_ne!(a, tagged_hash("sensorchain/other/v1", &[b"abc"]));
/// ```
pub fn tagged_hash(ctx: &str, parts: &[&[u8]]) -> Hash32 {
    let mut h = TaggedHasher::new(ctx);
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// Plain SHA-256 of one byte string (no domain tag; for RFC-defined
/// constructions that fix their own prefixes, such as RFC 6962).
pub fn sha256(parts: &[&[u8]]) -> Hash32 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    Hash32(h.finalize().into())
}

/// Context strings of every domain-separated hash and signature, in one place
/// so that none is used for two purposes. `docs/PROTOCOL.md` lists them.
pub mod ctx {
    /// Key ids: `tagged_hash(KEY_ID, pk)[..8]`.
    pub const KEY_ID: &str = "sensorchain/key-id/v1";
    /// Chain ids: hash of the exact bytes of the genesis transaction's body
    /// (v1 hashed the chain name alone, so two chains of one name shared an id).
    pub const CHAIN_ID: &str = "sensorchain/chain-id/v2";
    /// Transaction signatures.
    pub const TX_SIG: &str = "sensorchain/tx/v1";
    /// Transaction ids (the Merkle leaf data is the exact transaction bytes).
    pub const TX_ID: &str = "sensorchain/tx-id/v1";
    /// Block header hash.
    pub const BLOCK: &str = "sensorchain/block/v1";
    /// Proposer signature over a block hash.
    pub const BLOCK_PROPOSAL: &str = "sensorchain/block-proposal/v1";
    /// Validator signature over a block hash (finality certificates).
    pub const FINALITY: &str = "sensorchain/finality/v1";
    /// World-state commitment.
    pub const STATE: &str = "sensorchain/state/v1";
    /// Binding of a sealed payload to the reading that carries it.
    pub const SEALED_BINDING: &str = "sensorchain/sealed-binding/v1";
    /// A person's (or tool's) login to a gateway's API: its signature over
    /// the gateway's challenge (`login.rs`).
    pub const LOGIN: &str = "sensorchain/login/v1";
    /// The hash chain of a gateway's access log (`access_log.rs`).
    pub const ACCESS_LOG: &str = "sensorchain/access-log/v1";
    /// A gateway's signature over its access log's head (`access_log.rs`).
    pub const ACCESS_HEAD: &str = "sensorchain/access-head/v1";
}

/// The id of one chain (one network). Every signature and every
/// domain-separated hash of the ledger and the handshake covers it, so nothing
/// signed for one network verifies on another. It is fixed by the genesis:
/// `tagged_hash("sensorchain/chain-id/v2", genesis body bytes)`, the exact
/// encoded `TxBody` of the genesis transaction (creator key, sequence,
/// timestamp, name, parameters, members), so two chains created apart never
/// share an id, even under one name and one admin key. The chain's name is a
/// label only.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ChainId(pub [u8; 32]);

crate::serde_bytes::bytes_newtype_serde!(ChainId, 32);

impl ChainId {
    /// The chain id a genesis transaction whose body encodes to exactly
    /// `body` creates: `tagged_hash("sensorchain/chain-id/v2", body)`. The
    /// bytes are the body as signed and received (a genesis transaction's
    /// encoding without its last 64 signature bytes), never a re-encoding.
    /// See also `TxBody::genesis_chain_id` and `chain::genesis_chain_id`.
    ///
    /// ```
    /// # use sensorchain_core::hash::ChainId;
    /// assert_ne!(ChainId::of_genesis_body(b"one"), ChainId::of_genesis_body(b"two"));
    /// ```
    pub fn of_genesis_body(body: &[u8]) -> Self {
        ChainId(tagged_hash(ctx::CHAIN_ID, &[body]).0)
    }

    /// The first 4 bytes, sent in clear in the first handshake message so a
    /// node can say "wrong chain" precisely. Never used alone for security:
    /// the full id is in every transcript and signature.
    pub fn tag(&self) -> [u8; 4] {
        [self.0[0], self.0[1], self.0[2], self.0[3]]
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for ChainId {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{=[u8]:x}", self.0[..4])
    }
}

impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainId(")?;
        write_hex(f, &self.0)?;
        write!(f, ")")
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}
