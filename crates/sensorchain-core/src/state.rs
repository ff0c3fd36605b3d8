//! The world state and the deterministic state transition (needs `alloc`).
//!
//! The state holds, per identity, its registered key, MultiChain-style
//! [`Permissions`], its [`Role`], its last accepted sequence number and (for
//! devices) the patient it measures; pending admin-consensus votes; and the
//! patients' consents. [`WorldState::apply_block`] is deterministic and
//! all-or-nothing: a block with one bad transaction is refused whole and the
//! state is left unchanged.
//!
//! ## Sequence numbers
//! Every signer's transactions carry a sequence number that must be strictly
//! above the last one accepted from that signer: an equal or lower number is a
//! replay and is refused ([`TxRuleError::Replay`]). Gaps are allowed: a
//! reading a device dropped (it failed locally, or was never acknowledged and
//! then abandoned) must not block the device forever; the size of each gap is
//! visible to anyone comparing consecutive sequences. A device must therefore
//! persist its counter before it sends (the device crate does), so that a
//! reboot never reuses a number. Revocation keeps the record, so a re-granted
//! identity cannot replay its old transactions.
//!
//! ## Nothing is committed that changes nothing
//! A grant naming a bit the target already holds, a revocation naming one it
//! lacks (votes on `ADMIN`/`VALIDATE` included), a second pending vote of the
//! same admin, a role or device assignment that is already so, and a consent
//! given twice or withdrawn when absent are refused
//! ([`TxRuleError::NothingToGrant`], [`TxRuleError::NothingToRevoke`],
//! [`TxRuleError::AlreadyVoted`], [`TxRuleError::NothingToChange`]), after the
//! signature check. One bit that would not change refuses the whole
//! transaction (docs/PROTOCOL.md, "No-op transactions").
//!
//! ## Access rules (who may read a sealed reading)
//! A sealed reading's recipients must each hold `RECEIVE` and be either the
//! patient the device is assigned to, or a reader (doctor, nurse, insurer)
//! that patient has consented to. An insurer therefore reads nothing without
//! consent. A reader added later gets access to *new* readings only:
//! re-wrapping old content keys is a documented non-goal (the device, which
//! alone had the content key, has forgotten it).

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::block::{Block, BlockHeader, FinalityCert};
use crate::hash::{ChainId, Hash32, ctx};
use crate::identity::{KeyId, PublicKey, VerifyingKey};
use crate::permissions::{Permissions, Role};
use crate::tx::{GenesisConfig, Params, Transaction, TxKind};

mod errors;
mod precheck;
pub use errors::{BlockError, BlockErrorKind, TxRuleError};
pub use precheck::{Precheck, SignatureCheck, registration_key};

/// Whether signatures still need verifying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigCheck {
    /// Verify every signature with the one strict rule.
    Verify,
    /// The caller has already verified every transaction signature of this
    /// block with [`Transaction::verify_encoded`] under the signer's
    /// registered key (a gateway verifies each reading once, at ingest, in
    /// parallel). Permissions, sequences and everything else are still
    /// checked.
    AlreadyVerified,
}

/// What the ledger knows about one identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    /// Its permissions.
    pub permissions: Permissions,
    /// Its role, once set.
    pub role: Option<Role>,
    /// The last accepted sequence number, if any.
    pub last_sequence: Option<u64>,
    /// For a device: the patient it measures.
    pub patient: Option<PublicKey>,
}

/// A pending admin-consensus vote: (target, single permission bit, grant?).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VoteKey {
    /// Whose permission.
    pub target: PublicKey,
    /// The bit (`ADMIN` or `VALIDATE`).
    pub permission: Permissions,
    /// `true` for a grant, `false` for a revocation.
    pub grant: bool,
}

/// The world state of one chain.
#[derive(Debug, Clone)]
pub struct WorldState {
    chain_id: ChainId,
    params: Params,
    /// Height of the next block.
    next_height: u64,
    last_hash: Hash32,
    last_timestamp_ms: u64,
    identities: BTreeMap<PublicKey, IdentityRecord>,
    keys: BTreeMap<PublicKey, VerifyingKey>,
    by_key_id: BTreeMap<KeyId, PublicKey>,
    votes: BTreeMap<VoteKey, BTreeSet<PublicKey>>,
    consents: BTreeSet<(PublicKey, PublicKey)>,
}

/// The part of the state the commitment covers, in a fixed order.
#[derive(Serialize)]
struct Committed<'a> {
    chain_id: &'a ChainId,
    params: &'a Params,
    identities: &'a BTreeMap<PublicKey, IdentityRecord>,
    votes: &'a BTreeMap<VoteKey, BTreeSet<PublicKey>>,
    consents: &'a BTreeSet<(PublicKey, PublicKey)>,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    chain_id: ChainId,
    params: Params,
    next_height: u64,
    last_hash: Hash32,
    last_timestamp_ms: u64,
    identities: BTreeMap<PublicKey, IdentityRecord>,
    votes: BTreeMap<VoteKey, BTreeSet<PublicKey>>,
    consents: BTreeSet<(PublicKey, PublicKey)>,
}

/// A postcard flavor feeding SHA-256.
struct HashFlavor(crate::hash::TaggedHasher);

impl postcard::ser_flavors::Flavor for HashFlavor {
    type Output = Hash32;
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.update(data);
        Ok(())
    }
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.update(&[data]);
        Ok(())
    }
    fn finalize(self) -> postcard::Result<Hash32> {
        Ok(self.0.finalize())
    }
}

fn rule(e: TxRuleError) -> Result<(), TxRuleError> {
    Err(e)
}

impl WorldState {
    /// The empty state of a chain that has no genesis block yet.
    pub fn new(chain_id: ChainId) -> Self {
        WorldState {
            chain_id,
            params: Params::default(),
            next_height: 0,
            last_hash: Hash32::ZERO,
            last_timestamp_ms: 0,
            identities: BTreeMap::new(),
            keys: BTreeMap::new(),
            by_key_id: BTreeMap::new(),
            votes: BTreeMap::new(),
            consents: BTreeSet::new(),
        }
    }

    /// The chain id.
    pub fn chain_id(&self) -> &ChainId {
        &self.chain_id
    }
    /// The chain parameters (defaults until genesis).
    pub fn params(&self) -> &Params {
        &self.params
    }
    /// The height the next block must have (0 before genesis).
    pub fn next_height(&self) -> u64 {
        self.next_height
    }
    /// The hash of the last applied block ([`Hash32::ZERO`] before genesis).
    pub fn last_hash(&self) -> Hash32 {
        self.last_hash
    }
    /// The timestamp of the last applied block.
    pub fn last_timestamp_ms(&self) -> u64 {
        self.last_timestamp_ms
    }
    /// An identity's record.
    pub fn identity(&self, pk: &PublicKey) -> Option<&IdentityRecord> {
        self.identities.get(pk)
    }
    /// Every identity, ordered by key.
    pub fn identities(&self) -> impl Iterator<Item = (&PublicKey, &IdentityRecord)> {
        self.identities.iter()
    }
    /// The registered key of an identity.
    pub fn verifying_key(&self, pk: &PublicKey) -> Option<&VerifyingKey> {
        self.keys.get(pk)
    }
    /// The public key with this key id, if registered.
    pub fn by_key_id(&self, id: &KeyId) -> Option<&PublicKey> {
        self.by_key_id.get(id)
    }
    /// An identity's permissions (none if unknown).
    pub fn permissions(&self, pk: &PublicKey) -> Permissions {
        self.identities
            .get(pk)
            .map(|r| r.permissions)
            .unwrap_or_default()
    }
    /// True if `pk` holds every bit of `p`.
    pub fn has(&self, pk: &PublicKey, p: Permissions) -> bool {
        self.permissions(pk).contains(p)
    }
    /// The validators (`VALIDATE`), ordered by key.
    pub fn validators(&self) -> Vec<VerifyingKey> {
        self.identities
            .iter()
            .filter(|(_, r)| r.permissions.contains(Permissions::VALIDATE))
            .filter_map(|(pk, _)| self.keys.get(pk).copied())
            .collect()
    }
    /// Number of admins.
    pub fn admin_count(&self) -> usize {
        self.identities
            .values()
            .filter(|r| r.permissions.contains(Permissions::ADMIN))
            .count()
    }
    /// Pending admin-consensus votes.
    pub fn pending_votes(&self) -> impl Iterator<Item = (&VoteKey, &BTreeSet<PublicKey>)> {
        self.votes.iter()
    }
    /// True if `patient` has consented to `reader`.
    pub fn has_consent(&self, patient: &PublicKey, reader: &PublicKey) -> bool {
        self.consents.contains(&(*patient, *reader))
    }
    /// Every (patient, reader) consent.
    pub fn consents(&self) -> impl Iterator<Item = &(PublicKey, PublicKey)> {
        self.consents.iter()
    }

    /// Votes needed under admin consensus with the current admins.
    pub fn votes_needed(&self) -> usize {
        let admins = self.admin_count();
        let num = self.params.admin_consensus_num as usize;
        let den = (self.params.admin_consensus_den as usize).max(1);
        (admins * num).div_ceil(den).max(1)
    }

    /// True if `reader` may be a recipient of `device`'s sealed readings.
    pub fn may_read(&self, device: &PublicKey, reader: &PublicKey) -> bool {
        let Some(patient) = self.identities.get(device).and_then(|d| d.patient) else {
            return false;
        };
        if !self.has(reader, Permissions::RECEIVE) {
            return false;
        }
        *reader == patient || self.has_consent(&patient, reader)
    }

    /// The readers authorised for `device`'s sealed readings now: its patient
    /// (if it may receive) and every consented reader with `RECEIVE`.
    pub fn authorised_readers(&self, device: &PublicKey) -> Vec<PublicKey> {
        let Some(patient) = self.identities.get(device).and_then(|d| d.patient) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if self.has(&patient, Permissions::RECEIVE) {
            out.push(patient);
        }
        for (_, reader) in self
            .consents
            .range((patient, PublicKey([0; 32]))..=(patient, PublicKey([0xff; 32])))
        {
            if self.has(reader, Permissions::RECEIVE) {
                out.push(*reader);
            }
        }
        out
    }

    /// The commitment to the state (`state_root` of block headers):
    /// `tagged_hash("sensorchain/state/v1", postcard(chain_id, params,
    /// identities, votes, consents))` with maps and sets in key order.
    pub fn commitment(&self) -> Hash32 {
        let c = Committed {
            chain_id: &self.chain_id,
            params: &self.params,
            identities: &self.identities,
            votes: &self.votes,
            consents: &self.consents,
        };
        match postcard::serialize_with_flavor(
            &c,
            HashFlavor(crate::hash::TaggedHasher::new(ctx::STATE)),
        ) {
            Ok(root) => root,
            // HashFlavor never fails, and postcard's serializer fails only on
            // a sequence or map of unknown length or a Serialize impl that
            // reports an error: `Committed` holds fixed-size values,
            // heapless strings and B-tree maps and sets (exact lengths), and
            // none of their impls errs (`commitment_covers_every_field`
            // exercises each). Never a made-up commitment such as zero.
            Err(e) => unreachable!("the state commitment cannot fail to serialize: {e}"),
        }
    }

    /// A snapshot of the whole state (for a gateway's fast restart):
    /// postcard of (chain id, params, next height, last hash, last
    /// timestamp, identities, votes, consents).
    pub fn snapshot(&self) -> Vec<u8> {
        crate::codec::encode_to_vec(&Snapshot {
            chain_id: self.chain_id,
            params: self.params,
            next_height: self.next_height,
            last_hash: self.last_hash,
            last_timestamp_ms: self.last_timestamp_ms,
            identities: self.identities.clone(),
            votes: self.votes.clone(),
            consents: self.consents.clone(),
        })
    }

    /// Restores a [`snapshot`](Self::snapshot), re-registering every key
    /// (a key that fails registration makes the snapshot invalid).
    pub fn from_snapshot(bytes: &[u8]) -> Result<WorldState, crate::codec::DecodeError> {
        let s: Snapshot = crate::codec::decode_exact(bytes, usize::MAX)?;
        let mut st = WorldState::new(s.chain_id);
        st.params = s.params;
        st.next_height = s.next_height;
        st.last_hash = s.last_hash;
        st.last_timestamp_ms = s.last_timestamp_ms;
        for pk in s.identities.keys() {
            let vk = registration_key(pk).map_err(|_| crate::codec::DecodeError::Malformed)?;
            st.keys.insert(*pk, vk);
            st.by_key_id.insert(pk.key_id(), *pk);
        }
        st.identities = s.identities;
        st.votes = s.votes;
        st.consents = s.consents;
        Ok(st)
    }

    fn register(&mut self, pk: &PublicKey) -> Result<&mut IdentityRecord, TxRuleError> {
        if !self.keys.contains_key(pk) {
            let vk = registration_key(pk)?;
            self.keys.insert(*pk, vk);
            self.by_key_id.insert(pk.key_id(), *pk);
        }
        Ok(self.identities.entry(*pk).or_insert(IdentityRecord {
            permissions: Permissions::NONE,
            role: None,
            last_sequence: None,
            patient: None,
        }))
    }

    /// Checks and applies one transaction given its exact encoding. Atomic:
    /// on error the state is unchanged. A reading (the hot path) is checked
    /// fully before anything changes; rarer administrative transactions are
    /// applied to a copy.
    pub fn apply_tx(
        &mut self,
        tx: &Transaction,
        encoded: &[u8],
        block_timestamp_ms: u64,
        sigs: SigCheck,
    ) -> Result<(), TxRuleError> {
        if matches!(tx.body.kind, TxKind::Reading { .. }) {
            return self.apply_tx_inner(tx, encoded, block_timestamp_ms, sigs);
        }
        let mut next = self.clone();
        next.apply_tx_inner(tx, encoded, block_timestamp_ms, sigs)?;
        *self = next;
        Ok(())
    }

    fn apply_tx_inner(
        &mut self,
        tx: &Transaction,
        encoded: &[u8],
        block_timestamp_ms: u64,
        sigs: SigCheck,
    ) -> Result<(), TxRuleError> {
        // Everything before the signature, defined once (a gateway's ingest
        // runs the same precheck on admission).
        self.precheck(
            tx,
            Precheck::InBlock {
                timestamp_ms: block_timestamp_ms,
            },
        )?;
        let body = &tx.body;
        let signer = body.signer;
        match &body.kind {
            TxKind::Genesis(cfg) => return self.apply_genesis(tx, encoded, cfg, sigs),
            TxKind::Reading { .. } => self.verify_sig(tx, encoded, sigs)?,
            TxKind::Grant {
                target,
                permissions,
            }
            | TxKind::Revoke {
                target,
                permissions,
            } => {
                let grant = matches!(body.kind, TxKind::Grant { .. });
                self.verify_sig(tx, encoded, sigs)?;
                self.change_permissions(&signer, target, *permissions, grant)?;
            }
            TxKind::SetRole { target, role } => {
                self.verify_sig(tx, encoded, sigs)?;
                let rec = self.register(target)?;
                if rec.role == Some(*role) {
                    return rule(TxRuleError::NothingToChange);
                }
                rec.role = Some(*role);
            }
            TxKind::AssignDevice { device, patient } => {
                self.verify_sig(tx, encoded, sigs)?;
                let Some(d) = self.identities.get_mut(device) else {
                    // the precheck found it registered
                    return rule(TxRuleError::UnknownRecipient);
                };
                if d.patient == Some(*patient) {
                    return rule(TxRuleError::NothingToChange);
                }
                d.patient = Some(*patient);
            }
            TxKind::Consent { reader, granted } => {
                self.verify_sig(tx, encoded, sigs)?;
                if *granted {
                    if !self.consents.insert((signer, *reader)) {
                        return rule(TxRuleError::NothingToGrant);
                    }
                } else if !self.consents.remove(&(signer, *reader)) {
                    return rule(TxRuleError::NothingToRevoke);
                }
            }
            // On the chain for the access log's checkers; no state besides
            // the signer's sequence.
            TxKind::AccessAnchor { .. } => self.verify_sig(tx, encoded, sigs)?,
        }
        if let Some(r) = self.identities.get_mut(&signer) {
            r.last_sequence = Some(body.sequence);
        }
        Ok(())
    }

    fn verify_sig(
        &self,
        tx: &Transaction,
        encoded: &[u8],
        sigs: SigCheck,
    ) -> Result<(), TxRuleError> {
        if sigs == SigCheck::AlreadyVerified {
            return Ok(());
        }
        self.signature_check(&tx.body.signer)?.run(tx, encoded)
    }

    /// Grants or revokes `perms` of `target` on behalf of `admin` (whose
    /// signature has been checked). Nothing is silently a no-op: a grant
    /// naming any bit the target already holds is refused
    /// ([`TxRuleError::NothingToGrant`]), a revocation naming any bit it
    /// lacks too ([`TxRuleError::NothingToRevoke`]), and so is a second
    /// pending vote of the same admin on the same change
    /// ([`TxRuleError::AlreadyVoted`]). Otherwise every direct bit changes
    /// and every `ADMIN`/`VALIDATE` bit gets this admin's vote.
    fn change_permissions(
        &mut self,
        admin: &PublicKey,
        target: &PublicKey,
        perms: Permissions,
        grant: bool,
    ) -> Result<(), TxRuleError> {
        let held = self.permissions(target);
        if grant && !held.intersect(perms).is_empty() {
            return rule(TxRuleError::NothingToGrant);
        }
        if !grant && !held.contains(perms) {
            return rule(TxRuleError::NothingToRevoke);
        }
        let direct = perms.without(Permissions::CONSENSUS);
        let voted = perms.intersect(Permissions::CONSENSUS);
        for bit in voted.bits() {
            let key = VoteKey {
                target: *target,
                permission: bit,
                grant,
            };
            if self.votes.get(&key).is_some_and(|v| v.contains(admin)) {
                return rule(TxRuleError::AlreadyVoted);
            }
        }
        let rec = self.register(target)?;
        if grant {
            rec.permissions = rec.permissions.union(direct);
        } else {
            rec.permissions = rec.permissions.without(direct);
        }
        for bit in voted.bits() {
            if !grant && bit == Permissions::ADMIN && self.admin_count() <= 1 {
                return rule(TxRuleError::LastAdmin);
            }
            let key = VoteKey {
                target: *target,
                permission: bit,
                grant,
            };
            self.votes.entry(key).or_default().insert(*admin);
            // only votes of current admins count
            let voters: BTreeSet<PublicKey> = self.votes[&key]
                .iter()
                .filter(|v| self.has(v, Permissions::ADMIN))
                .copied()
                .collect();
            if voters.len() >= self.votes_needed() {
                self.votes.remove(&key);
                if let Some(r) = self.identities.get_mut(target) {
                    r.permissions = if grant {
                        r.permissions.union(bit)
                    } else {
                        r.permissions.without(bit)
                    };
                }
            } else {
                self.votes.insert(key, voters);
            }
        }
        Ok(())
    }

    /// Applies the genesis transaction (see docs/PROTOCOL.md, "Genesis"):
    /// the state's chain id must be the id derived from the exact body
    /// bytes received (`encoded` without its 64 signature bytes), the
    /// sequence 0, the parameters sane, the members distinct with defined
    /// permission bits, the signer an admin member; the signature is
    /// verified under that chain id. The signer's record is left with last
    /// sequence 0.
    fn apply_genesis(
        &mut self,
        tx: &Transaction,
        encoded: &[u8],
        cfg: &GenesisConfig,
        sigs: SigCheck,
    ) -> Result<(), TxRuleError> {
        if !self.before_genesis() {
            return rule(TxRuleError::GenesisMisplaced);
        }
        let body_bytes = encoded
            .len()
            .checked_sub(64)
            .and_then(|n| encoded.get(..n))
            .ok_or(TxRuleError::Encoding(crate::tx::TxError::Decode(
                crate::codec::DecodeError::Malformed,
            )))?;
        if ChainId::of_genesis_body(body_bytes) != self.chain_id
            || tx.body.sequence != 0
            || cfg.params.admin_consensus_den == 0
            || cfg.params.admin_consensus_num > cfg.params.admin_consensus_den
            || cfg.params.max_block_txs == 0
        {
            return rule(TxRuleError::InvalidGenesis);
        }
        let signer_is_admin = cfg
            .members
            .iter()
            .any(|m| m.key == tx.body.signer && m.permissions.contains(Permissions::ADMIN));
        if !signer_is_admin {
            return rule(TxRuleError::InvalidGenesis);
        }
        self.params = cfg.params;
        for m in &cfg.members {
            if self.identities.contains_key(&m.key) || !m.permissions.is_valid() {
                return rule(TxRuleError::InvalidGenesis);
            }
            let r = self.register(&m.key)?;
            r.permissions = m.permissions;
            r.role = Some(m.role);
        }
        self.verify_sig(tx, encoded, sigs)?;
        if let Some(r) = self.identities.get_mut(&tx.body.signer) {
            r.last_sequence = Some(tx.body.sequence);
        }
        Ok(())
    }

    /// Checks the header of the next block against this state, without its
    /// transactions.
    pub fn check_header(&self, h: &BlockHeader) -> Result<(), BlockErrorKind> {
        if h.version != crate::block::BLOCK_VERSION {
            return Err(BlockErrorKind::Version);
        }
        if h.chain_id != self.chain_id {
            return Err(BlockErrorKind::WrongChain);
        }
        if h.height != self.next_height {
            return Err(BlockErrorKind::Height {
                expected: self.next_height,
            });
        }
        if h.prev_hash != self.last_hash {
            return Err(BlockErrorKind::PrevHash);
        }
        if h.timestamp_ms < self.last_timestamp_ms {
            return Err(BlockErrorKind::Timestamp);
        }
        Ok(())
    }

    /// Validates `block` as the next block and applies it, all or nothing.
    ///
    /// Checks, in order: header fields against the chain (version, chain id,
    /// height, previous hash, timestamp), proposer permission and signature,
    /// difficulty and proof of work, transaction count, Merkle root, every
    /// transaction (signature unless `sigs` says they were verified, then
    /// permissions, sequence, plausibility, access rules) in order, the state
    /// commitment, and the finality certificate if one is given (under the
    /// validators before this block). On error the state is unchanged and the
    /// error says where.
    pub fn apply_block(
        &mut self,
        block: &Block,
        cert: Option<&FinalityCert>,
        sigs: SigCheck,
    ) -> Result<(), BlockError> {
        let encoded = block.encoded_txs();
        self.apply_block_encoded(block, &encoded, cert, sigs)
    }

    /// [`apply_block`](Self::apply_block) with the transactions' exact
    /// encodings supplied by the caller (who has them already).
    pub fn apply_block_encoded(
        &mut self,
        block: &Block,
        encoded: &[Vec<u8>],
        cert: Option<&FinalityCert>,
        sigs: SigCheck,
    ) -> Result<(), BlockError> {
        let h = &block.header;
        let err = |kind, tx_index: Option<usize>| BlockError {
            height: h.height,
            tx_index: tx_index.map(|i| i as u32),
            kind,
        };
        self.check_header(h).map_err(|k| err(k, None))?;
        let genesis = h.height == 0;
        // Proposer: a validator, or for genesis the genesis signer.
        let proposer_key = if genesis {
            match block.txs.first() {
                Some(t) if t.body.signer == h.proposer => {
                    VerifyingKey::from_public(&h.proposer).ok()
                }
                _ => None,
            }
        } else if self.has(&h.proposer, Permissions::VALIDATE) {
            self.keys.get(&h.proposer).copied()
        } else {
            None
        };
        let proposer_key = proposer_key.ok_or(err(BlockErrorKind::ProposerNotValidator, None))?;
        h.verify_proposal(&proposer_key, &block.proposer_sig)
            .map_err(|_| err(BlockErrorKind::ProposerSignature, None))?;
        if encoded.len() != block.txs.len() {
            return Err(err(BlockErrorKind::TxRoot, None));
        }
        if !block.tx_root_matches(encoded) {
            return Err(err(BlockErrorKind::TxRoot, None));
        }
        let mut next = self.clone();
        if genesis {
            if block.txs.len() != 1 || !matches!(block.txs[0].body.kind, TxKind::Genesis(_)) {
                return Err(err(
                    BlockErrorKind::Tx(TxRuleError::GenesisMisplaced),
                    Some(0),
                ));
            }
        } else if block.txs.len() > self.params.max_block_txs as usize {
            return Err(err(BlockErrorKind::TooManyTxs, None));
        }
        for (i, (tx, bytes)) in block.txs.iter().zip(encoded).enumerate() {
            next.apply_tx(tx, bytes, h.timestamp_ms, sigs)
                .map_err(|e| err(BlockErrorKind::Tx(e), Some(i)))?;
        }
        // Difficulty is the chain's parameter (known only after genesis applies).
        if h.difficulty != next.params.pow_difficulty {
            return Err(err(BlockErrorKind::Difficulty, None));
        }
        if !h.meets_difficulty() {
            return Err(err(BlockErrorKind::ProofOfWork, None));
        }
        if h.state_root != next.commitment() {
            return Err(err(BlockErrorKind::StateRoot, None));
        }
        if let Some(c) = cert {
            // The genesis block is final under its own validators.
            let vals = if genesis {
                next.validators()
            } else {
                self.validators()
            };
            c.verify(h, &vals)
                .map_err(|e| err(BlockErrorKind::Certificate(e), None))?;
        }
        next.set_tip(h);
        *self = next;
        Ok(())
    }

    /// Moves the chain position past the block with header `h` (whose
    /// transactions have been applied).
    pub(crate) fn set_tip(&mut self, h: &BlockHeader) {
        self.next_height = h.height + 1;
        self.last_hash = h.hash();
        self.last_timestamp_ms = h.timestamp_ms;
    }
}

impl PartialEq for WorldState {
    /// Equal when chain position and committed content are equal.
    fn eq(&self, o: &Self) -> bool {
        self.next_height == o.next_height
            && self.last_hash == o.last_hash
            && self.last_timestamp_ms == o.last_timestamp_ms
            && self.commitment() == o.commitment()
    }
}

#[cfg(test)]
mod tests;
