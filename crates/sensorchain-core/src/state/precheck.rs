//! The checks of a transaction that come before its signature (the
//! precheck) and the signature check itself, detached from the state.
//!
//! [`WorldState::apply_tx`] runs, for every transaction: the precheck
//! ([`WorldState::precheck`] with [`Precheck::InBlock`]), then the
//! signature ([`SignatureCheck`]), then the effect (which may refuse a no-op,
//! `LastAdmin` or a bad key to register: the effect-dependent refusals of
//! docs/PROTOCOL.md, "No-op transactions"). A gateway runs the same
//! precheck on admission ([`Precheck::Admission`]) before it spends a
//! signature check, so the rule exists once.

use crate::hash::ChainId;
use crate::identity::{PublicKey, VerifyingKey};
use crate::permissions::{Permissions, Role};
use crate::tx::{Payload, Transaction, TxKind};

use super::{TxRuleError, WorldState, rule};

/// Where a transaction is prechecked, and so which of the rules before its
/// signature [`WorldState::precheck`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Precheck {
    /// Inside a block with this timestamp, on the state the transaction is
    /// applied to: every rule before the signature, in the order of
    /// docs/PROTOCOL.md ("Validation rules", step 4). This is what
    /// [`WorldState::apply_tx`] runs.
    InBlock {
        /// The block's timestamp (for `TimestampTooFarAhead`).
        timestamp_ms: u64,
    },
    /// On admission to a gateway's pool, on its committed state, which may
    /// lag behind the state the transaction will be applied to (the
    /// transactions admitted before it may not be in a block yet), and
    /// before the block's timestamp is known. The subset of
    /// [`InBlock`](Self::InBlock)'s rules that the signer's own record and
    /// the transaction's own content decide, in the same order: the signer
    /// is registered, the sequence is above its last, the signer holds the
    /// kind's permission (and, for a consent, the patient role; for a
    /// sealed reading, an assigned patient), a plain reading is plausible,
    /// a sealed payload is well formed (version, 1–4 distinct recipients),
    /// a grant or revoke names defined bits. Not checked here (they depend
    /// on other identities' records, which transactions admitted before
    /// this one may change, or on the block): the timestamp, the
    /// recipients' registration and authorisation, the targets of
    /// `AssignDevice` and `Consent`. A transaction admitted is then checked
    /// in full when its block is built and validated.
    Admission,
}

/// The check of one signer's transaction signatures, detached from the
/// state so that it can run on another thread: the chain id and the key
/// the signer is registered under. [`run`](Self::run) is exactly what
/// [`WorldState::apply_tx`] runs under
/// [`SigCheck::Verify`](super::SigCheck::Verify).
#[derive(Debug, Clone, Copy)]
pub struct SignatureCheck {
    chain_id: ChainId,
    key: VerifyingKey,
}

impl SignatureCheck {
    /// The check a state of chain `chain_id` will run for `signer` once it
    /// is registered, for a verifier running ahead of the state (an
    /// auditor checking later blocks' signatures in parallel): the key is
    /// the one registration stores ([`registration_key`]), which never
    /// changes afterwards. `BadKey` if `signer` can never be registered
    /// (the state then refuses its transactions as `UnknownSigner`).
    pub fn ahead(chain_id: ChainId, signer: &PublicKey) -> Result<SignatureCheck, TxRuleError> {
        Ok(SignatureCheck {
            chain_id,
            key: registration_key(signer)?,
        })
    }

    /// Verifies `tx`'s signature over its exact encoding `encoded`
    /// (`Transaction::verify_encoded`, the one strict rule).
    pub fn run(&self, tx: &Transaction, encoded: &[u8]) -> Result<(), TxRuleError> {
        Transaction::verify_encoded(encoded, &self.chain_id, &self.key, &tx.signature).map_err(
            |e| match e {
                crate::tx::TxError::BadSignature(s) => TxRuleError::BadSignature(s),
                e => TxRuleError::Encoding(e),
            },
        )
    }
}

/// The key a public key is registered under (the one registration rule:
/// `VerifyingKey::from_public`, refusing small-order, mixed-order and
/// non-canonical keys). `BadKey` if it cannot be registered.
pub fn registration_key(pk: &PublicKey) -> Result<VerifyingKey, TxRuleError> {
    VerifyingKey::from_public(pk).map_err(TxRuleError::BadKey)
}

impl WorldState {
    /// True while the state awaits its genesis transaction.
    pub(super) fn before_genesis(&self) -> bool {
        self.next_height == 0 && self.identities.is_empty()
    }

    /// The rules of `tx` that come before its signature (see [`Precheck`]
    /// for which apply where), in the order of docs/PROTOCOL.md: a
    /// misplaced genesis; the signer registered; the sequence above the
    /// signer's last (`Replay`); the timestamp (in a block); the kind's
    /// permission and role rules; a reading's plausibility or sealed
    /// payload (format, the device's patient, the recipients); a grant's or
    /// revoke's bits; the registrations and roles `AssignDevice` and
    /// `Consent` name. The signature and the effect-dependent refusals
    /// (`NothingToGrant`, `NothingToRevoke`, `AlreadyVoted`,
    /// `NothingToChange`, `LastAdmin`, a target's `BadKey`) come after,
    /// in [`apply_tx`](Self::apply_tx).
    ///
    /// A genesis transaction passes only on a state before genesis; its own
    /// checks need its exact bytes and run in `apply_tx`.
    pub fn precheck(&self, tx: &Transaction, at: Precheck) -> Result<(), TxRuleError> {
        let body = &tx.body;
        if let TxKind::Genesis(_) = &body.kind {
            return if self.before_genesis() {
                Ok(())
            } else {
                rule(TxRuleError::GenesisMisplaced)
            };
        }
        let in_block = match at {
            Precheck::InBlock { timestamp_ms } => Some(timestamp_ms),
            Precheck::Admission => None,
        };
        let signer = body.signer;
        let Some(rec) = self.identities.get(&signer) else {
            return rule(TxRuleError::UnknownSigner);
        };
        if let Some(last) = rec.last_sequence
            && body.sequence <= last
        {
            return rule(TxRuleError::Replay {
                last,
                got: body.sequence,
            });
        }
        if let Some(ts) = in_block
            && body.timestamp_ms > ts.saturating_add(self.params.max_future_skew_ms)
        {
            return rule(TxRuleError::TimestampTooFarAhead);
        }
        let perms = rec.permissions;
        let need = |p: Permissions| {
            if perms.contains(p) {
                Ok(())
            } else {
                Err(TxRuleError::NotPermitted { needed: p })
            }
        };
        match &body.kind {
            TxKind::Reading { payload, .. } => {
                need(Permissions::WRITE)?;
                match payload {
                    Payload::Plain(v) => v.check().map_err(TxRuleError::Reading)?,
                    Payload::Sealed(s) => {
                        if rec.patient.is_none() {
                            return rule(TxRuleError::DeviceNotAssigned);
                        }
                        if s.version != crate::sealed::SEALED_VERSION || s.recipients.is_empty() {
                            return rule(TxRuleError::BadSealedPayload);
                        }
                        for (i, r) in s.recipients.iter().enumerate() {
                            if s.recipients[..i].iter().any(|o| o.key_id == r.key_id) {
                                return rule(TxRuleError::BadSealedPayload);
                            }
                            if in_block.is_none() {
                                continue;
                            }
                            let reader = self
                                .by_key_id
                                .get(&r.key_id)
                                .ok_or(TxRuleError::UnknownRecipient)?;
                            if !self.may_read(&signer, reader) {
                                return rule(TxRuleError::RecipientNotAuthorised);
                            }
                        }
                    }
                }
            }
            TxKind::Grant { permissions, .. } | TxKind::Revoke { permissions, .. } => {
                need(Permissions::ADMIN)?;
                if permissions.is_empty() || !permissions.is_valid() {
                    return rule(TxRuleError::InvalidPermissions);
                }
            }
            TxKind::SetRole { .. } => need(Permissions::ADMIN)?,
            TxKind::AssignDevice { device, patient } => {
                need(Permissions::ADMIN)?;
                if in_block.is_some() {
                    let d = self
                        .identities
                        .get(device)
                        .ok_or(TxRuleError::UnknownRecipient)?;
                    let p = self
                        .identities
                        .get(patient)
                        .ok_or(TxRuleError::UnknownRecipient)?;
                    if d.role != Some(Role::Device) || p.role != Some(Role::Patient) {
                        return rule(TxRuleError::WrongRole);
                    }
                }
            }
            TxKind::Consent { reader, .. } => {
                need(Permissions::SEND)?;
                if rec.role != Some(Role::Patient) {
                    return rule(TxRuleError::WrongRole);
                }
                if in_block.is_some() {
                    let r = self
                        .identities
                        .get(reader)
                        .ok_or(TxRuleError::UnknownRecipient)?;
                    if !r.role.is_some_and(Role::may_receive_consent) {
                        return rule(TxRuleError::WrongRole);
                    }
                }
            }
            TxKind::AccessAnchor { count, .. } => {
                need(Permissions::VALIDATE)?;
                if *count == 0 {
                    return rule(TxRuleError::NothingToChange);
                }
            }
            // handled above
            TxKind::Genesis(_) => return rule(TxRuleError::GenesisMisplaced),
        }
        Ok(())
    }

    /// The check of `signer`'s signatures under its registered key
    /// (`UnknownSigner` if it is not registered), to run here or on another
    /// thread: what [`apply_tx`](Self::apply_tx) runs after the precheck
    /// under [`SigCheck::Verify`](super::SigCheck::Verify).
    pub fn signature_check(&self, signer: &PublicKey) -> Result<SignatureCheck, TxRuleError> {
        let key = *self.keys.get(signer).ok_or(TxRuleError::UnknownSigner)?;
        Ok(SignatureCheck {
            chain_id: self.chain_id,
            key,
        })
    }
}
