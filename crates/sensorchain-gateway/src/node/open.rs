//! Opening a chain: the genesis state, the replay of a stored chain, and
//! the check that this gateway's key may propose on it. Synchronous, and
//! heavy for a long chain (every block after the latest snapshot is
//! validated): call it off the async runtime ([`Node::open`](super::Node::open)).

use anyhow::bail;
use sensorchain_core::block::Block;
use sensorchain_core::identity::PublicKey;
use sensorchain_core::permissions::Permissions;
use sensorchain_core::state::{SigCheck, WorldState};

use crate::store::integrity::{self, IntegrityDepth};
use crate::store::{Store, StoreError};

/// Why a gateway may not run: its key lacks `VALIDATE`, so every block it
/// proposed would be refused by validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the gateway key {key} may not propose blocks: it lacks the validate permission in the chain's state at height {height}{validators}. Set key_file to a validator's key file, or grant this key validate through a gateway that is a validator: sensorchain tx grant {key} validate --key ADMIN.key --api http://VALIDATOR-API"
)]
pub struct NotValidator {
    /// The gateway's key.
    pub key: PublicKey,
    /// The height of the state checked.
    pub height: u64,
    /// `" (validators: …)"`, or empty if the chain has none.
    validators: String,
}

/// Refuses a key that may not propose blocks on `state` (no `VALIDATE`).
pub fn check_may_propose(state: &WorldState, key: &PublicKey) -> Result<(), NotValidator> {
    if state.has(key, Permissions::VALIDATE) {
        return Ok(());
    }
    let vals: Vec<String> = state
        .validators()
        .iter()
        .map(|v| v.public().to_string())
        .collect();
    let validators = if vals.is_empty() {
        String::new()
    } else {
        format!(" (validators: {})", vals.join(", "))
    };
    Err(NotValidator {
        key: *key,
        height: state.next_height().saturating_sub(1),
        validators,
    })
}

/// The state after `genesis` alone, validated.
pub fn genesis_state(genesis: &Block) -> anyhow::Result<WorldState> {
    let mut state = WorldState::new(genesis.header.chain_id);
    state
        .apply_block(genesis, None, SigCheck::Verify)
        .map_err(|e| anyhow::anyhow!("the genesis block is invalid: {e}"))?;
    Ok(state)
}

/// Rebuilds the state of the stored chain (the latest snapshot, then every
/// block after it, fully validated) without writing; `None` if the store is
/// empty. Fails if the store holds another chain than `genesis`'s.
///
/// First [`Store::check_integrity`] (the tables agree, the latest snapshot
/// is the state after its block, the last
/// [`START_RECENT_BLOCKS`](crate::store::integrity::START_RECENT_BLOCKS)
/// blocks link and hash to their roots); then the blocks after the snapshot
/// are replayed with the core's rules, and the state reached must commit to
/// the head header's `state_root`. Any failure refuses the store with what
/// is wrong and what to do ([`integrity::refusal`]).
pub fn replay(store: &Store, genesis: &Block) -> anyhow::Result<Option<WorldState>> {
    let chain_id = genesis.header.chain_id;
    let dir = store.path().parent().unwrap_or(store.path()).to_path_buf();
    let refuse = |e: StoreError| anyhow::anyhow!(integrity::refusal(&dir, &e));
    let checked = store
        .check_integrity(IntegrityDepth::Recent(integrity::START_RECENT_BLOCKS))
        .map_err(refuse)?;
    let Some(head) = checked.head else {
        return Ok(None);
    };
    let stored_genesis = store.block(0).map_err(refuse)?.ok_or_else(|| {
        refuse(StoreError::corrupt_in(
            "blocks",
            Some(0),
            "the store has a head but no genesis block",
        ))
    })?;
    if stored_genesis.hash() != genesis.hash() {
        bail!(
            "the data directory holds another chain (genesis {} here, {} configured)",
            stored_genesis.hash(),
            genesis.hash()
        );
    }
    let (mut state, from) = match checked.snapshot {
        Some((h, s)) if s.chain_id() == &chain_id => (s, h + 1),
        Some((h, _)) => {
            return Err(refuse(StoreError::corrupt_in(
                "snapshots",
                Some(h),
                "the snapshot is of another chain",
            )));
        }
        None => (WorldState::new(chain_id), 0),
    };
    for entry in store.blocks(from) {
        let (h, bytes) = entry.map_err(refuse)?;
        let block = crate::store::decode_block(h, &bytes).map_err(refuse)?;
        state
            .apply_block(&block, None, SigCheck::Verify)
            .map_err(|e| {
                refuse(StoreError::corrupt_in(
                    "blocks",
                    Some(h),
                    format!("the stored block breaks the ledger's rules: {e}"),
                ))
            })?;
    }
    let head_header = store.header(head.height).map_err(refuse)?.ok_or_else(|| {
        refuse(StoreError::corrupt_in(
            "blocks",
            Some(head.height),
            "missing",
        ))
    })?;
    if state.next_height() != head.height + 1 || state.last_hash() != head.hash {
        return Err(refuse(StoreError::corrupt_in(
            "meta",
            Some(head.height),
            format!(
                "the head record ({}, {}) does not match the blocks",
                head.height, head.hash
            ),
        )));
    }
    if state.commitment() != head_header.state_root {
        return Err(refuse(StoreError::corrupt_in(
            "snapshots",
            Some(head.height),
            "the recovered state does not commit to the head block's state_root",
        )));
    }
    Ok(Some(state))
}

/// Rebuilds the state from the store, initialising an empty store with
/// `genesis`; refuses (before writing anything) a `key` that may not
/// propose on the resulting state (`None`: a gateway waiting to be added to
/// a cluster, which learns its grant from the chain it is replicated).
pub(super) fn recover(
    store: &Store,
    genesis: &Block,
    key: Option<&PublicKey>,
) -> anyhow::Result<WorldState> {
    let check = |state: &WorldState| key.map_or(Ok(()), |k| check_may_propose(state, k));
    if let Some(state) = replay(store, genesis)? {
        check(&state)?;
        return Ok(state);
    }
    let state = genesis_state(genesis)?;
    check(&state)?;
    store.commit_block(
        genesis,
        &genesis.encoded_txs(),
        None,
        Some(&state.snapshot()),
    )?;
    Ok(state)
}
