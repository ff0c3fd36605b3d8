//! Blocks with bodies (needs `alloc`).

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use super::BlockHeader;
use crate::codec::{self, DecodeError};
use crate::hash::Hash32;
use crate::identity::{Keypair, Signature};
use crate::merkle;
use crate::tx::Transaction;

/// Upper bound of an encoded block, in bytes (16 MiB).
pub const BLOCK_MAX_LEN: usize = 16 << 20;

/// A block: header, the proposer's signature over its hash, transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// The header.
    pub header: BlockHeader,
    /// The proposer's signature over the header hash
    /// ([`BlockHeader::sign_proposal`]).
    pub proposer_sig: Signature,
    /// The transactions, in order.
    pub txs: Vec<Transaction>,
}

impl Block {
    /// The exact bytes of every transaction, in order (the Merkle leaves).
    pub fn encoded_txs(&self) -> Vec<Vec<u8>> {
        self.txs.iter().map(Transaction::to_vec).collect()
    }

    /// The RFC 6962 root over the given transaction encodings.
    pub fn tx_root_of(encoded: &[Vec<u8>]) -> Hash32 {
        let leaves: Vec<Hash32> = encoded.iter().map(|t| merkle::leaf_hash(t)).collect();
        merkle::root_from_leaf_hashes(&leaves)
    }

    /// The RFC 6962 root over this block's transactions.
    pub fn compute_tx_root(&self) -> Hash32 {
        Self::tx_root_of(&self.encoded_txs())
    }

    /// The block hash (the header's).
    pub fn hash(&self) -> Hash32 {
        self.header.hash()
    }

    /// Mines to `difficulty` (see [`BlockHeader::mine`]) and re-signs as
    /// `proposer` (the signature covers the nonce).
    #[doc(alias = "mine_block")]
    pub fn mine(&mut self, difficulty: u8, proposer: &Keypair) {
        self.header.mine(difficulty);
        self.proposer_sig = self.header.sign_proposal(proposer);
    }

    /// Encodes the block.
    pub fn to_vec(&self) -> Vec<u8> {
        codec::encode_to_vec(self)
    }

    /// Strictly decodes a block.
    pub fn decode(bytes: &[u8]) -> Result<Block, DecodeError> {
        codec::decode_exact(bytes, BLOCK_MAX_LEN)
    }
}

impl Block {
    /// True if `header.tx_root` is the root of the given encodings.
    pub fn tx_root_matches(&self, encoded: &[Vec<u8>]) -> bool {
        Self::tx_root_of(encoded) == self.header.tx_root
    }
}
