//! Errors of the state transition and of block validation.

use core::fmt;

use crate::block::CertError;
use crate::identity::{KeyError, SignatureError};
use crate::permissions::Permissions;
use crate::reading::ReadingError;
use crate::tx::TxError;

/// Why a transaction is refused by the rules of the world state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum TxRuleError {
    /// The signer is not a registered identity.
    UnknownSigner,
    /// The signer lacks a permission this transaction needs.
    NotPermitted {
        /// The permission needed.
        needed: Permissions,
    },
    /// The sequence number is not above the signer's last accepted one (a
    /// replay, or an old transaction).
    Replay {
        /// The last accepted sequence.
        last: u64,
        /// The sequence received.
        got: u64,
    },
    /// The timestamp is further ahead of the block than the chain allows.
    TimestampTooFarAhead,
    /// A plain reading's value is implausible.
    Reading(ReadingError),
    /// A sealed reading from a device that is assigned to no patient.
    DeviceNotAssigned,
    /// A sealed reading names a recipient key id that is not registered.
    UnknownRecipient,
    /// A sealed reading names a recipient the access rules do not allow
    /// (no `RECEIVE`, or neither the patient nor consented by the patient).
    RecipientNotAuthorised,
    /// A sealed payload with an unknown version, no recipient, or a
    /// recipient listed twice.
    BadSealedPayload,
    /// A public key in the transaction is not acceptable for registration.
    BadKey(KeyError),
    /// The transaction's signature does not verify.
    BadSignature(SignatureError),
    /// The transaction could not be encoded within bounds.
    Encoding(TxError),
    /// An identity has the wrong role for this transaction.
    WrongRole,
    /// The grant or revoke names no (or undefined) permission bits.
    InvalidPermissions,
    /// The revocation would leave the chain without an admin.
    LastAdmin,
    /// The revocation changes nothing: it names a permission bit the target
    /// does not hold (any one of them suffices), or a consent that does not
    /// exist. API code `nothing_to_revoke`.
    NothingToRevoke,
    /// The grant changes nothing: it names a permission bit the target
    /// already holds (any one of them suffices), or a consent already
    /// given. API code `nothing_to_grant`.
    NothingToGrant,
    /// The signer already has a pending admin-consensus vote for this very
    /// change (same target, bit and direction). API code `already_voted`.
    AlreadyVoted,
    /// The transaction changes nothing: a role the target already has, or a
    /// device assigned to the patient it is already assigned to. API code
    /// `nothing_to_change`.
    NothingToChange,
    /// A genesis transaction outside the genesis block, or another
    /// transaction inside it.
    GenesisMisplaced,
    /// The block already holds the most transactions the chain allows
    /// (the transaction waits for the next block).
    BlockFull,
    /// The genesis is invalid: the chain id is not the one derived from the
    /// genesis body's bytes, the sequence is not 0, the parameters are
    /// inconsistent, members repeat or carry undefined bits, or the signer
    /// is not one of its admins.
    InvalidGenesis,
}

impl fmt::Display for TxRuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxRuleError::UnknownSigner => f.write_str("signer is not registered"),
            TxRuleError::NotPermitted { needed } => {
                write!(f, "signer lacks the {needed} permission")
            }
            TxRuleError::Replay { last, got } => {
                write!(
                    f,
                    "sequence {got} is not above the last accepted {last} (replay)"
                )
            }
            TxRuleError::TimestampTooFarAhead => {
                f.write_str("timestamp too far ahead of the block")
            }
            TxRuleError::Reading(e) => write!(f, "implausible reading: {e}"),
            TxRuleError::DeviceNotAssigned => {
                f.write_str("sealed reading from a device assigned to no patient")
            }
            TxRuleError::UnknownRecipient => {
                f.write_str("sealed reading names an unregistered recipient")
            }
            TxRuleError::RecipientNotAuthorised => {
                f.write_str("sealed reading names a recipient the access rules do not allow")
            }
            TxRuleError::BadSealedPayload => {
                f.write_str("sealed payload: unknown version, no or duplicate recipients")
            }
            TxRuleError::BadKey(e) => write!(f, "bad public key: {e}"),
            TxRuleError::BadSignature(e) => write!(f, "bad signature: {e}"),
            TxRuleError::Encoding(e) => write!(f, "{e}"),
            TxRuleError::WrongRole => {
                f.write_str("identity has the wrong role for this transaction")
            }
            TxRuleError::InvalidPermissions => f.write_str("no or undefined permission bits"),
            TxRuleError::LastAdmin => f.write_str("revocation would leave no admin"),
            TxRuleError::NothingToRevoke => f.write_str(
                "nothing to revoke: the target lacks a named permission, or no such consent",
            ),
            TxRuleError::NothingToGrant => f.write_str(
                "nothing to grant: the target already holds a named permission, or the consent exists",
            ),
            TxRuleError::AlreadyVoted => {
                f.write_str("the signer already has a pending vote for this change")
            }
            TxRuleError::NothingToChange => {
                f.write_str("nothing to change: the role or assignment is already so")
            }
            TxRuleError::GenesisMisplaced => f.write_str("genesis transaction misplaced"),
            TxRuleError::BlockFull => f.write_str("block is full"),
            TxRuleError::InvalidGenesis => f.write_str("invalid genesis configuration"),
        }
    }
}

impl core::error::Error for TxRuleError {}

/// What is wrong with a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum BlockErrorKind {
    /// Unknown header version.
    Version,
    /// The header's chain id is not this chain's.
    WrongChain,
    /// The height is not the next one.
    Height {
        /// The height expected.
        expected: u64,
    },
    /// `prev_hash` is not the hash of the previous block.
    PrevHash,
    /// The timestamp is below the previous block's.
    Timestamp,
    /// The difficulty field is not the chain's parameter.
    Difficulty,
    /// The hash does not meet the difficulty.
    ProofOfWork,
    /// The proposer may not propose (no `VALIDATE`, or not the genesis signer).
    ProposerNotValidator,
    /// The proposer's signature does not verify.
    ProposerSignature,
    /// More transactions than the chain allows.
    TooManyTxs,
    /// The Merkle root does not match the transactions.
    TxRoot,
    /// The state commitment does not match the state after the block.
    StateRoot,
    /// A transaction is refused (see the error's `tx_index`).
    Tx(TxRuleError),
    /// The finality certificate does not prove finality.
    Certificate(CertError),
}

/// A block refused, with where: its height and, for a transaction, its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BlockError {
    /// The height of the block (as claimed by its header).
    pub height: u64,
    /// The index of the offending transaction, if one is.
    pub tx_index: Option<u32>,
    /// What is wrong.
    pub kind: BlockErrorKind,
}

impl fmt::Display for BlockErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockErrorKind::Version => f.write_str("unknown block version"),
            BlockErrorKind::WrongChain => f.write_str("block is for another chain"),
            BlockErrorKind::Height { expected } => write!(f, "wrong height (expected {expected})"),
            BlockErrorKind::PrevHash => f.write_str("previous-hash link broken"),
            BlockErrorKind::Timestamp => f.write_str("timestamp goes backwards"),
            BlockErrorKind::Difficulty => f.write_str("difficulty is not the chain's"),
            BlockErrorKind::ProofOfWork => f.write_str("hash does not meet the difficulty"),
            BlockErrorKind::ProposerNotValidator => f.write_str("proposer may not propose"),
            BlockErrorKind::ProposerSignature => f.write_str("proposer signature does not verify"),
            BlockErrorKind::TooManyTxs => f.write_str("too many transactions"),
            BlockErrorKind::TxRoot => f.write_str("Merkle root does not match the transactions"),
            BlockErrorKind::StateRoot => f.write_str("state commitment does not match"),
            BlockErrorKind::Tx(e) => write!(f, "{e}"),
            BlockErrorKind::Certificate(e) => write!(f, "finality certificate: {e}"),
        }
    }
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tx_index {
            Some(i) => write!(f, "block {} transaction {}: {}", self.height, i, self.kind),
            None => write!(f, "block {}: {}", self.height, self.kind),
        }
    }
}

impl core::error::Error for BlockError {}
