//! A whole chain: blocks, their finality certificates and the world state —
//! the Medical-IoT paper's `Blockchain` (`create_genesis_block`, `add_block`,
//! `is_chain_valid`) under idiomatic names (needs `alloc`).
//!
//! ```
//! use sensorchain_core::{chain::Chain, identity::Keypair, permissions::*, tx::*, reading::Vital};
//! let admin = Keypair::from_seed([1; 32]);
//! let device = Keypair::from_seed([2; 32]);
//! let cfg = GenesisConfig::new("demo", Params::default(), &[
//!     Member { key: admin.public(), permissions: Permissions::ALL, role: Role::Admin },
//!     Member { key: device.public(), permissions: Role::Device.default_permissions(), role: Role::Device },
//! ]).unwrap();
//! let mut chain = Chain::genesis(&admin, cfg, 1_000).unwrap();
//! let tx = Transaction::sign(TxBody::reading(device.public(), 1, 1_500, 0,
//!     Vital::HeartRate { bpm: 70 }), chain.chain_id(), &device).unwrap();
//! let block = chain.propose(&admin, vec![tx], 2_000).unwrap();
//! chain.add_block(block, None).unwrap();
//! assert!(chain.validate().is_ok());
//! assert_eq!(chain.height(), Some(1));
//! ```

use alloc::vec::Vec;

use crate::block::{BLOCK_VERSION, Block, BlockHeader, FinalityCert};
use crate::hash::{ChainId, Hash32};
use crate::identity::Keypair;
use crate::state::{BlockError, BlockErrorKind, SigCheck, WorldState};
use crate::tx::{GenesisConfig, Member, Params, Transaction, TxBody};

/// A chain held in memory.
#[derive(Debug, Clone)]
pub struct Chain {
    blocks: Vec<Block>,
    certs: Vec<Option<FinalityCert>>,
    state: WorldState,
}

impl GenesisConfig {
    /// A configuration; `None` if the name or member list exceeds its bound.
    pub fn new(name: &str, params: Params, members: &[Member]) -> Option<GenesisConfig> {
        Some(GenesisConfig {
            name: heapless::String::try_from(name).ok()?,
            params,
            members: heapless::Vec::from_slice(members).ok()?,
        })
    }
}

/// Builds the next block on `state`: applies `txs` to a copy to compute the
/// state commitment, fills the header, mines to the chain's difficulty and
/// signs as `proposer`. Fails (saying which transaction) if any transaction
/// would be refused.
pub fn build_block(
    state: &WorldState,
    proposer: &Keypair,
    txs: Vec<Transaction>,
    timestamp_ms: u64,
    sigs: SigCheck,
) -> Result<Block, BlockError> {
    let height = state.next_height();
    let encoded: Vec<Vec<u8>> = txs.iter().map(Transaction::to_vec).collect();
    let mut next = state.clone();
    for (i, (tx, bytes)) in txs.iter().zip(&encoded).enumerate() {
        next.apply_tx(tx, bytes, timestamp_ms, sigs)
            .map_err(|e| BlockError {
                height,
                tx_index: Some(i as u32),
                kind: BlockErrorKind::Tx(e),
            })?;
    }
    Ok(finish_block(
        state,
        &next,
        proposer,
        txs,
        &encoded,
        timestamp_ms,
    ))
}

/// Like [`build_block`], but leaves out the transactions the state refuses
/// instead of failing: returns the block and, for each left-out candidate,
/// its index in `candidates` and the reason. This is how a gateway cuts a
/// block from its pool (signatures verified once at ingest: pass
/// [`SigCheck::AlreadyVerified`]).
pub fn build_block_filtered(
    state: &WorldState,
    proposer: &Keypair,
    candidates: Vec<Transaction>,
    timestamp_ms: u64,
    sigs: SigCheck,
) -> (Block, Vec<(usize, crate::state::TxRuleError)>) {
    let pool = candidates
        .into_iter()
        .map(|tx| {
            let bytes = tx.to_vec();
            (tx, bytes)
        })
        .collect();
    let built = build_block_from_pool(state, proposer, pool, timestamp_ms, sigs);
    (built.block, built.rejected)
}

/// A block cut from a pool by [`build_block_from_pool`], with everything
/// its builder learnt on the way.
#[derive(Debug, Clone)]
pub struct BuiltBlock {
    /// The block: proposed on the input state, mined and signed.
    pub block: Block,
    /// The exact encodings of `block.txs`, in block order.
    pub encoded: Vec<Vec<u8>>,
    /// For each transaction of the block, its index among the candidates.
    pub kept: Vec<usize>,
    /// The candidates left out: their index and the reason.
    pub rejected: Vec<(usize, crate::state::TxRuleError)>,
    /// The world state after the block (the one whose commitment the header
    /// carries).
    pub state: WorldState,
}

/// [`build_block_filtered`] for a pool that already holds each candidate's
/// exact encoding (a gateway has the bytes it decoded): nothing is
/// re-encoded, and the state after the block is returned, so a pipelined
/// proposer can build the next block on it before this one is stored.
///
/// Each `(tx, bytes)` must satisfy `Transaction::decode(bytes) == Ok(tx)`
/// (strict decoding guarantees `bytes` is then the canonical encoding); the
/// block's Merkle root and every transaction id are computed from `bytes`.
pub fn build_block_from_pool(
    state: &WorldState,
    proposer: &Keypair,
    candidates: Vec<(Transaction, Vec<u8>)>,
    timestamp_ms: u64,
    sigs: SigCheck,
) -> BuiltBlock {
    let ts = timestamp_ms.max(state.last_timestamp_ms());
    let mut next = state.clone();
    let mut rejected = Vec::new();
    let mut txs = Vec::with_capacity(candidates.len());
    let mut encoded = Vec::with_capacity(candidates.len());
    let mut kept = Vec::with_capacity(candidates.len());
    let max = state.params().max_block_txs as usize;
    for (i, (tx, bytes)) in candidates.into_iter().enumerate() {
        debug_assert_eq!(
            tx.to_vec(),
            bytes,
            "pool entry {i}: bytes are not its encoding"
        );
        if txs.len() >= max {
            rejected.push((i, crate::state::TxRuleError::BlockFull));
            continue;
        }
        match next.apply_tx(&tx, &bytes, ts, sigs) {
            Ok(()) => {
                txs.push(tx);
                encoded.push(bytes);
                kept.push(i);
            }
            Err(e) => rejected.push((i, e)),
        }
    }
    let block = finish_block(state, &next, proposer, txs, &encoded, ts);
    next.set_tip(&block.header);
    BuiltBlock {
        block,
        encoded,
        kept,
        rejected,
        state: next,
    }
}

fn finish_block(
    state: &WorldState,
    next: &WorldState,
    proposer: &Keypair,
    txs: Vec<Transaction>,
    encoded: &[Vec<u8>],
    timestamp_ms: u64,
) -> Block {
    let mut header = BlockHeader {
        version: BLOCK_VERSION,
        chain_id: *state.chain_id(),
        height: state.next_height(),
        prev_hash: state.last_hash(),
        tx_root: Block::tx_root_of(encoded),
        state_root: next.commitment(),
        timestamp_ms: timestamp_ms.max(state.last_timestamp_ms()),
        proposer: proposer.public(),
        difficulty: 0,
        nonce: 0,
    };
    header.mine(next.params().pow_difficulty);
    let proposer_sig = header.sign_proposal(proposer);
    Block {
        header,
        proposer_sig,
        txs,
    }
}

impl Chain {
    /// Creates a chain with its genesis block (the paper's
    /// `create_genesis_block`): `creator` (an admin member of `config`) signs
    /// the genesis transaction and proposes block 0.
    #[doc(alias = "create_genesis_block")]
    pub fn genesis(
        creator: &Keypair,
        config: GenesisConfig,
        timestamp_ms: u64,
    ) -> Result<Chain, BlockError> {
        let block = Self::genesis_block(creator, config, timestamp_ms)?;
        let mut state = WorldState::new(block.header.chain_id);
        state.apply_block(&block, None, SigCheck::Verify)?;
        Ok(Chain {
            blocks: alloc::vec![block],
            certs: alloc::vec![None],
            state,
        })
    }

    /// The genesis block for `config`, signed by `creator`. Its chain id
    /// (`block.header.chain_id`, and the id every later signature covers) is
    /// derived from the genesis transaction's body ([`TxBody::genesis_chain_id`]):
    /// creating a chain again, even with the same name and creator, gives
    /// another id unless every byte (the timestamp too) is the same.
    pub fn genesis_block(
        creator: &Keypair,
        config: GenesisConfig,
        timestamp_ms: u64,
    ) -> Result<Block, BlockError> {
        let body = TxBody::genesis(creator.public(), timestamp_ms, config);
        let encoding = |e| BlockError {
            height: 0,
            tx_index: Some(0),
            kind: BlockErrorKind::Tx(crate::state::TxRuleError::Encoding(e)),
        };
        let chain_id = body.genesis_chain_id().map_err(encoding)?;
        let tx = Transaction::sign(body, &chain_id, creator).map_err(encoding)?;
        build_block(
            &WorldState::new(chain_id),
            creator,
            alloc::vec![tx],
            timestamp_ms,
            SigCheck::Verify,
        )
    }

    /// Replays stored blocks from genesis, validating each (the paper's
    /// `is_chain_valid` over a chain received from elsewhere).
    pub fn from_blocks(
        blocks: Vec<Block>,
        certs: Vec<Option<FinalityCert>>,
    ) -> Result<Chain, BlockError> {
        let state = validate_blocks(&blocks, &certs)?;
        let mut certs = certs;
        certs.resize(blocks.len(), None);
        Ok(Chain {
            blocks,
            certs,
            state,
        })
    }

    /// The chain id.
    pub fn chain_id(&self) -> &ChainId {
        self.state.chain_id()
    }
    /// The world state after the last block.
    pub fn state(&self) -> &WorldState {
        &self.state
    }
    /// The blocks, genesis first.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }
    /// Mutable access to the blocks — for tests and demonstrations of
    /// tampering only; [`validate`](Self::validate) will notice any change.
    pub fn blocks_mut(&mut self) -> &mut [Block] {
        &mut self.blocks
    }
    /// The finality certificate of each block, if any.
    pub fn certs(&self) -> &[Option<FinalityCert>] {
        &self.certs
    }
    /// Height of the last block.
    pub fn height(&self) -> Option<u64> {
        self.blocks.last().map(|b| b.header.height)
    }
    /// Hash of the last block.
    pub fn head_hash(&self) -> Hash32 {
        self.state.last_hash()
    }

    /// Builds the next block from `txs` (see [`build_block`]); does not add it.
    pub fn propose(
        &self,
        proposer: &Keypair,
        txs: Vec<Transaction>,
        timestamp_ms: u64,
    ) -> Result<Block, BlockError> {
        build_block(&self.state, proposer, txs, timestamp_ms, SigCheck::Verify)
    }

    /// Validates `block` against the current state and appends it (the
    /// paper's `add_block`). All or nothing.
    pub fn add_block(
        &mut self,
        block: Block,
        cert: Option<FinalityCert>,
    ) -> Result<(), BlockError> {
        self.state
            .apply_block(&block, cert.as_ref(), SigCheck::Verify)?;
        self.blocks.push(block);
        self.certs.push(cert);
        Ok(())
    }

    /// Attaches a finality certificate to an existing block after checking it
    /// under the validators of the state before that block.
    pub fn attach_cert(&mut self, cert: FinalityCert) -> Result<(), BlockError> {
        let h = cert.height as usize;
        let block = self.blocks.get(h).ok_or(BlockError {
            height: cert.height,
            tx_index: None,
            kind: BlockErrorKind::Height {
                expected: self.state.next_height(),
            },
        })?;
        let vals = self.validators_before(h)?;
        cert.verify(&block.header, &vals).map_err(|e| BlockError {
            height: cert.height,
            tx_index: None,
            kind: BlockErrorKind::Certificate(e),
        })?;
        if let Some(slot) = self.certs.get_mut(h) {
            *slot = Some(cert);
        }
        Ok(())
    }

    fn validators_before(
        &self,
        h: usize,
    ) -> Result<Vec<crate::identity::VerifyingKey>, BlockError> {
        // Replaying is O(h); certificates are normally checked as blocks are
        // added, and this path serves late votes.
        let upto = if h == 0 { 1 } else { h };
        let st = validate_blocks(&self.blocks[..upto], &[])?;
        Ok(st.validators())
    }

    /// Revalidates the whole chain from genesis (the paper's
    /// `is_chain_valid`): hash links, heights, Merkle roots, signatures,
    /// permissions at each height, sequences, proof of work, state
    /// commitments and the certificates present.
    #[doc(alias = "is_chain_valid")]
    pub fn validate(&self) -> Result<(), BlockError> {
        validate_blocks(&self.blocks, &self.certs).map(|_| ())
    }
}

/// The chain id of a genesis block, after checking that `genesis` is a valid
/// genesis block of that chain (height 0, one genesis transaction signed by
/// its creator under the id derived from its body, the header naming that
/// same id, proposer signature, proof of work and state commitment). This is
/// how a gateway, a provisioning tool or an auditor learns a chain's id from
/// its genesis file: never from the name, and never from the header alone.
///
/// ```
/// # use sensorchain_core::{chain::*, identity::Keypair, permissions::*, tx::*};
/// let admin = Keypair::from_seed([1; 32]);
/// let m = [Member { key: admin.public(), permissions: Permissions::ALL, role: Role::Admin }];
/// let cfg = GenesisConfig::new("ward-7", Params::default(), &m).unwrap();
/// let mut g = Chain::genesis_block(&admin, cfg, 1_000).unwrap();
/// assert_eq!(genesis_chain_id(&g).unwrap(), g.header.chain_id);
/// g.header.chain_id.0[0] ^= 1; // a header that lies about its chain
/// assert!(genesis_chain_id(&g).is_err());
/// ```
pub fn genesis_chain_id(genesis: &Block) -> Result<ChainId, BlockError> {
    let mut state = WorldState::new(genesis.header.chain_id);
    if genesis.header.height != 0 {
        return Err(BlockError {
            height: genesis.header.height,
            tx_index: None,
            kind: BlockErrorKind::Height { expected: 0 },
        });
    }
    state.apply_block(genesis, None, SigCheck::Verify)?;
    Ok(*state.chain_id())
}

/// Validates `blocks` from genesis with their certificates (missing entries
/// mean none) and returns the resulting state.
pub fn validate_blocks(
    blocks: &[Block],
    certs: &[Option<FinalityCert>],
) -> Result<WorldState, BlockError> {
    let Some(first) = blocks.first() else {
        return Err(BlockError {
            height: 0,
            tx_index: None,
            kind: BlockErrorKind::Height { expected: 0 },
        });
    };
    let mut state = WorldState::new(first.header.chain_id);
    for (i, b) in blocks.iter().enumerate() {
        let cert = certs.get(i).and_then(Option::as_ref);
        state.apply_block(b, cert, SigCheck::Verify)?;
    }
    Ok(state)
}
