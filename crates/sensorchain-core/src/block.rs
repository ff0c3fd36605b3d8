//! Blocks: the header and its hash, optional proof of work, the proposer's
//! signature, and finality certificates.
//!
//! The block hash is `tagged_hash("sensorchain/block/v1", header bytes)`
//! over the exact postcard encoding of the [`BlockHeader`]. A light client (a
//! sensor, even) checks a block with one header and a [`FinalityCert`], and
//! its own reading with a Merkle inclusion proof against `tx_root`.

use core::fmt;
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, EncodeError};
use crate::hash::{ChainId, Hash32, TaggedHasher, ctx};
use crate::identity::{KeyId, Keypair, PublicKey, Signature, SignatureError, VerifyingKey};
use crate::tx::{SigningCtx, sign_tagged_fixed, verify_tagged};

/// The proposal signature's context (its length checked at compile time).
const PROPOSAL_CTX: SigningCtx = SigningCtx::new(ctx::BLOCK_PROPOSAL);
/// The finality vote's context (its length checked at compile time).
const FINALITY_CTX: SigningCtx = SigningCtx::new(ctx::FINALITY);

/// The header format version this crate writes and accepts.
pub const BLOCK_VERSION: u16 = 1;

/// Exact upper bound of an encoded header: version (varint u16, ≤ 3),
/// chain id (32), height (varint u64, ≤ 10), three hashes (96), timestamp
/// (≤ 10), proposer (32), difficulty (1), nonce (≤ 10).
pub const HEADER_MAX_LEN: usize = 3 + 32 + 10 + 96 + 10 + 32 + 1 + 10;

/// The most bytes postcard's LEB128 varint of a `bits`-bit integer takes.
const fn varint_max(bits: usize) -> usize {
    bits.div_ceil(7)
}

/// The largest encoding of a [`BlockHeader`], field by field: postcard
/// writes `u16`/`u64` as varints, `u8` and the 32-byte arrays raw, and a
/// struct as its fields in order with nothing between them.
const HEADER_ENCODED_MAX: usize = varint_max(u16::BITS as usize) // version
    + 32 // chain_id
    + varint_max(u64::BITS as usize) // height
    + 3 * 32 // prev_hash, tx_root, state_root
    + varint_max(u64::BITS as usize) // timestamp_ms
    + 32 // proposer
    + 1 // difficulty
    + varint_max(u64::BITS as usize); // nonce

// Every header fits the hash's fixed buffer, so encoding it cannot fail.
const _: () = assert!(HEADER_MAX_LEN >= HEADER_ENCODED_MAX);

/// A block header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BlockHeader {
    /// Format version, [`BLOCK_VERSION`].
    pub version: u16,
    /// The chain this block belongs to.
    pub chain_id: ChainId,
    /// 0 for genesis, then +1 per block.
    pub height: u64,
    /// Hash of the previous block's header ([`Hash32::ZERO`] for genesis).
    pub prev_hash: Hash32,
    /// RFC 6962 Merkle root over the exact bytes of the block's transactions.
    pub tx_root: Hash32,
    /// Commitment to the world state after this block
    /// ([`crate::state::WorldState::commitment`]).
    pub state_root: Hash32,
    /// The proposer's clock, ms since the Unix epoch; never below the
    /// previous block's.
    pub timestamp_ms: u64,
    /// The proposing validator.
    pub proposer: PublicKey,
    /// Proof-of-work difficulty (leading zero bits of the hash), the chain's
    /// parameter; 0 when proof of work is off.
    pub difficulty: u8,
    /// Proof-of-work nonce.
    pub nonce: u64,
}

impl BlockHeader {
    /// The block hash (the paper's `calculate_hash`).
    #[doc(alias = "calculate_hash")]
    pub fn hash(&self) -> Hash32 {
        let mut buf = [0u8; HEADER_MAX_LEN];
        let bytes: &[u8] = match codec::encode_to_slice(self, &mut buf) {
            Ok(bytes) => bytes,
            // Headers have fixed-size fields only, and HEADER_MAX_LEN is at
            // least their largest encoding (asserted at compile time above):
            // never a hash of anything but the header's exact bytes.
            Err(EncodeError::BufferFull) => {
                unreachable!("a block header always encodes within HEADER_MAX_LEN bytes")
            }
        };
        let mut h = TaggedHasher::new(ctx::BLOCK);
        h.update(bytes);
        h.finalize()
    }

    /// True if the hash has at least `difficulty` leading zero bits.
    pub fn meets_difficulty(&self) -> bool {
        self.hash().leading_zero_bits() >= self.difficulty as u32
    }

    /// Searches nonces until the hash meets `difficulty` (the paper's
    /// `mine_block`). Each extra bit doubles the expected work; difficulty 0
    /// returns at once.
    #[doc(alias = "mine_block")]
    pub fn mine(&mut self, difficulty: u8) {
        self.difficulty = difficulty;
        while !self.meets_difficulty() {
            self.nonce = self.nonce.wrapping_add(1);
        }
    }

    /// The exact bytes of the header.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], crate::codec::EncodeError> {
        codec::encode_to_slice(self, buf)
    }

    /// Strictly decodes a header.
    pub fn decode(bytes: &[u8]) -> Result<BlockHeader, DecodeError> {
        codec::decode_exact(bytes, HEADER_MAX_LEN)
    }

    /// The proposer's signature over this header's hash.
    pub fn sign_proposal(&self, proposer: &Keypair) -> Signature {
        sign_tagged_fixed(proposer, PROPOSAL_CTX, &self.chain_id, &self.hash().0)
    }

    /// Verifies a proposer signature over this header's hash.
    pub fn verify_proposal(
        &self,
        proposer: &VerifyingKey,
        sig: &Signature,
    ) -> Result<(), SignatureError> {
        verify_tagged(
            proposer,
            ctx::BLOCK_PROPOSAL,
            &self.chain_id,
            &self.hash().0,
            sig,
        )
    }
}

/// A validator's vote that a block is final: its signature over
/// `len || "sensorchain/finality/v1" || chain_id || height (u64 LE) || block hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalityVote {
    /// The validator's key id.
    pub validator: KeyId,
    /// Its signature.
    pub signature: Signature,
}

impl FinalityVote {
    /// Checks this vote as `validator`'s signature that the block of
    /// `chain_id` at `height` with hash `block_hash` is final (the same
    /// check [`FinalityCert::verify`] makes of each of its votes).
    ///
    /// ```
    /// use sensorchain_core::block::{BLOCK_VERSION, BlockHeader, FinalityCert};
    /// use sensorchain_core::hash::{ChainId, Hash32};
    /// use sensorchain_core::identity::{Keypair, VerifyingKey};
    /// let v = Keypair::from_seed([7; 32]);
    /// let h = BlockHeader {
    ///     version: BLOCK_VERSION,
    ///     chain_id: ChainId([1; 32]),
    ///     height: 3,
    ///     prev_hash: Hash32::ZERO,
    ///     tx_root: Hash32::ZERO,
    ///     state_root: Hash32::ZERO,
    ///     timestamp_ms: 0,
    ///     proposer: v.public(),
    ///     difficulty: 0,
    ///     nonce: 0,
    /// };
    /// let vote = FinalityCert::vote(&h, &v);
    /// let vk = VerifyingKey::from_public(&v.public()).unwrap();
    /// assert!(vote.verify(&h.chain_id, 3, &h.hash(), &vk).is_ok());
    /// assert!(vote.verify(&h.chain_id, 4, &h.hash(), &vk).is_err());
    /// ```
    pub fn verify(
        &self,
        chain_id: &ChainId,
        height: u64,
        block_hash: &Hash32,
        validator: &VerifyingKey,
    ) -> Result<(), CertError> {
        if validator.public().key_id() != self.validator {
            return Err(CertError::UnknownValidator);
        }
        let msg = vote_message(height, block_hash);
        verify_tagged(validator, ctx::FINALITY, chain_id, &msg, &self.signature)
            .map_err(|_| CertError::BadSignature)
    }
}

/// Most votes in one certificate.
pub const CERT_MAX_VOTES: usize = 32;

/// A finality certificate: a quorum of validator signatures over a block
/// hash. Kept beside the block (not inside its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalityCert {
    /// The block's height.
    pub height: u64,
    /// The block's hash.
    pub block_hash: Hash32,
    /// The votes, at most one per validator.
    pub votes: heapless::Vec<FinalityVote, CERT_MAX_VOTES>,
}

/// Why a finality certificate does not prove finality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum CertError {
    /// The certificate is for another block.
    WrongBlock,
    /// A vote names a key id that is not a validator.
    UnknownValidator,
    /// Two votes from one validator.
    DuplicateVote,
    /// A vote's signature does not verify.
    BadSignature,
    /// Fewer valid votes than the quorum.
    NoQuorum {
        /// Valid distinct votes.
        votes: u32,
        /// Votes needed.
        quorum: u32,
    },
    /// The certificate has no room for another vote.
    Full,
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::WrongBlock => f.write_str("certificate is for another block"),
            CertError::UnknownValidator => f.write_str("vote from a key that is not a validator"),
            CertError::DuplicateVote => f.write_str("two votes from one validator"),
            CertError::BadSignature => f.write_str("vote signature does not verify"),
            CertError::NoQuorum { votes, quorum } => write!(f, "{votes} votes, quorum is {quorum}"),
            CertError::Full => f.write_str("certificate is full"),
        }
    }
}

impl core::error::Error for CertError {}

/// The quorum of `n` validators: a majority, `n / 2 + 1` (Raft's crash-fault
/// model: with 5 gateways, 3 votes; 2 may fail).
pub const fn quorum(n: usize) -> usize {
    n / 2 + 1
}

fn vote_message(height: u64, block_hash: &Hash32) -> [u8; 40] {
    let mut m = [0u8; 40];
    m[..8].copy_from_slice(&height.to_le_bytes());
    m[8..].copy_from_slice(&block_hash.0);
    m
}

impl FinalityCert {
    /// An empty certificate for a block.
    pub fn new(header: &BlockHeader) -> Self {
        FinalityCert {
            height: header.height,
            block_hash: header.hash(),
            votes: heapless::Vec::new(),
        }
    }

    /// A validator's vote for `header` (what every gateway signs after it has
    /// validated and applied the block).
    pub fn vote(header: &BlockHeader, validator: &Keypair) -> FinalityVote {
        let msg = vote_message(header.height, &header.hash());
        FinalityVote {
            validator: validator.public().key_id(),
            signature: sign_tagged_fixed(validator, FINALITY_CTX, &header.chain_id, &msg),
        }
    }

    /// Adds a vote (not verified here; [`verify`](Self::verify) checks all).
    pub fn add(&mut self, vote: FinalityVote) -> Result<(), CertError> {
        if self.votes.iter().any(|v| v.validator == vote.validator) {
            return Err(CertError::DuplicateVote);
        }
        self.votes.push(vote).map_err(|_| CertError::Full)
    }

    /// Checks that the certificate proves `header` final under the validator
    /// set `validators` (keys already registered): every vote is from a
    /// distinct validator and verifies, and there are at least
    /// `quorum(validators.len())` of them.
    pub fn verify(
        &self,
        header: &BlockHeader,
        validators: &[VerifyingKey],
    ) -> Result<(), CertError> {
        let hash = header.hash();
        if self.block_hash != hash || self.height != header.height {
            return Err(CertError::WrongBlock);
        }
        let mut count = 0u32;
        for (i, v) in self.votes.iter().enumerate() {
            if self.votes[..i].iter().any(|w| w.validator == v.validator) {
                return Err(CertError::DuplicateVote);
            }
            let vk = validators
                .iter()
                .find(|k| k.public().key_id() == v.validator)
                .ok_or(CertError::UnknownValidator)?;
            v.verify(&header.chain_id, header.height, &hash, vk)?;
            count += 1;
        }
        let q = quorum(validators.len()) as u32;
        if count < q {
            return Err(CertError::NoQuorum {
                votes: count,
                quorum: q,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tx::sign_tagged;

    /// Regression: a header with maximal varints once exceeded the bound
    /// (found by the round-trip property), so its hash covered no bytes.
    #[test]
    fn max_header_fits() {
        let h = BlockHeader {
            version: u16::MAX,
            chain_id: ChainId([0xff; 32]),
            height: u64::MAX,
            prev_hash: Hash32([0xff; 32]),
            tx_root: Hash32([0xff; 32]),
            state_root: Hash32([0xff; 32]),
            timestamp_ms: u64::MAX,
            proposer: PublicKey([0xff; 32]),
            difficulty: u8::MAX,
            nonce: u64::MAX,
        };
        let mut buf = [0u8; HEADER_MAX_LEN];
        let n = h.encode(&mut buf).unwrap().len();
        assert_eq!(n, HEADER_MAX_LEN);
        // The compile-time bound is exactly the largest encoding: the hash's
        // error arm is unreachable, not merely unlikely.
        assert_eq!(n, HEADER_ENCODED_MAX);
        let mut t = TaggedHasher::new(ctx::BLOCK);
        t.update(&buf[..n]);
        assert_eq!(h.hash(), t.finalize(), "the hash covers the exact bytes");
        assert_eq!(BlockHeader::decode(&buf[..n]).unwrap(), h);
        let mut h2 = h.clone();
        h2.nonce -= 1;
        assert_ne!(h.hash(), h2.hash());
    }

    fn header(proposer: &Keypair) -> BlockHeader {
        BlockHeader {
            version: BLOCK_VERSION,
            chain_id: ChainId([7; 32]),
            height: 3,
            prev_hash: Hash32([1; 32]),
            tx_root: Hash32([2; 32]),
            state_root: Hash32([3; 32]),
            timestamp_ms: 1_700_000_000_000,
            proposer: proposer.public(),
            difficulty: 0,
            nonce: 9,
        }
    }

    /// `sign_proposal` once returned an all-zero signature if signing
    /// failed. It now cannot fail: it signs exactly what the generic
    /// (fallible) construction signs, and the signature verifies.
    #[test]
    fn proposal_signature_is_never_made_up() {
        let kp = Keypair::from_seed([5; 32]);
        let h = header(&kp);
        let sig = h.sign_proposal(&kp);
        assert_ne!(sig, Signature([0; 64]));
        let want = sign_tagged(&kp, ctx::BLOCK_PROPOSAL, &h.chain_id, &h.hash().0).unwrap();
        assert_eq!(sig, want);
        let vk = VerifyingKey::from_public(&kp.public()).unwrap();
        assert_eq!(h.verify_proposal(&vk, &sig), Ok(()));
    }

    /// A finality vote once fell back to an all-zero signature likewise; it
    /// now signs the 40-byte vote message with no fallback and verifies.
    #[test]
    fn vote_signature_is_never_made_up() {
        let kp = Keypair::from_seed([6; 32]);
        let h = header(&kp);
        let vote = FinalityCert::vote(&h, &kp);
        assert_ne!(vote.signature, Signature([0; 64]));
        let msg = vote_message(h.height, &h.hash());
        let want = sign_tagged(&kp, ctx::FINALITY, &h.chain_id, &msg).unwrap();
        assert_eq!(vote.signature, want);
        let mut cert = FinalityCert::new(&h);
        cert.add(vote).unwrap();
        let vk = VerifyingKey::from_public(&kp.public()).unwrap();
        assert_eq!(cert.verify(&h, &[vk]), Ok(()));
    }

    /// Every context the crate signs with fits the signing prefix (the
    /// `const` items would not compile otherwise; this states the bound).
    #[test]
    fn signing_contexts_fit_the_prefix() {
        for c in [ctx::BLOCK_PROPOSAL, ctx::FINALITY, ctx::TX_SIG] {
            assert!(c.len() <= crate::tx::CTX_MAX_LEN, "{c}");
        }
    }
}

#[cfg(feature = "alloc")]
mod body;
#[cfg(feature = "alloc")]
pub use body::{BLOCK_MAX_LEN, Block};
