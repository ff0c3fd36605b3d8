//! Transactions: what a signer asks the ledger to record, signed over
//! domain-separated exact bytes.
//!
//! A [`Transaction`] is a [`TxBody`] followed by the signer's Ed25519
//! signature. The signature covers
//! `len(ctx) || "sensorchain/tx/v1" || chain_id (32) || body bytes`,
//! where the body bytes are the exact postcard encoding of the body; the
//! encoding of a transaction is the body bytes followed by the 64 signature
//! bytes. Every transaction carries the signer's sequence number: replay
//! protection is by meaning (signer, sequence), not by hash.
//!
//! Building and signing a reading needs no `alloc`:
//!
//! ```
//! use sensorchain_core::{hash::ChainId, identity::Keypair, reading::Vital, tx::*};
//! let chain = ChainId([7; 32]); // in practice: the id of the chain's genesis
//! let device = Keypair::from_seed([1; 32]);
//! let tx = Transaction::sign(
//!     TxBody::reading(device.public(), 1, 1_700_000_000_000, 0, Vital::HeartRate { bpm: 72 }),
//!     &chain,
//!     &device,
//! ).unwrap();
//! let mut buf = [0u8; TX_MAX_LEN];
//! let bytes = tx.encode(&mut buf).unwrap();
//! let decoded = Transaction::decode(bytes).unwrap();
//! assert_eq!(decoded, tx);
//! ```

use core::fmt;
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, EncodeError};
use crate::hash::{ChainId, Hash32, ctx};
use crate::identity::{Keypair, PublicKey, Signature, SignatureError, VerifyingKey};
use crate::permissions::{Permissions, Role};
use crate::reading::Vital;
use crate::sealed::SealedPayload;

/// Upper bound of an encoded transaction, in bytes. Larger inputs are refused
/// before decoding.
pub const TX_MAX_LEN: usize = 1024;

/// Most members a genesis configuration can list (more join later by grants).
pub const GENESIS_MAX_MEMBERS: usize = 16;

/// Longest chain name, in bytes.
pub const CHAIN_NAME_MAX: usize = 32;

/// A reading's value: in clear, or sealed for its authorised readers.
// Fixed capacity without alloc: boxing the sealed variant is not an option.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// A value every gateway and API client with access can read.
    Plain(Vital),
    /// A value only the listed readers can decrypt.
    Sealed(SealedPayload),
}

/// Chain parameters, fixed at genesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Params {
    /// Admin consensus for granting or revoking `ADMIN` and `VALIDATE`: the
    /// fraction `num/den` of current admins whose votes are needed (rounded
    /// up, at least one), like MultiChain's `admin-consensus-admin`.
    pub admin_consensus_num: u8,
    /// Denominator of the admin consensus fraction (non-zero).
    pub admin_consensus_den: u8,
    /// Proof-of-work difficulty in leading zero bits of the block hash
    /// (0: no proof of work, the default).
    pub pow_difficulty: u8,
    /// Most transactions in one block.
    pub max_block_txs: u32,
    /// How far a transaction's timestamp may be ahead of its block's, in ms.
    pub max_future_skew_ms: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            admin_consensus_num: 1,
            admin_consensus_den: 2,
            pow_difficulty: 0,
            max_block_txs: 10_000,
            max_future_skew_ms: 5 * 60 * 1000,
        }
    }
}

/// An identity listed at genesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its public key.
    pub key: PublicKey,
    /// Its permissions.
    pub permissions: Permissions,
    /// Its role.
    pub role: Role,
}

impl Member {
    /// A member with `role` and that role's default permissions
    /// ([`Role::default_permissions`]).
    ///
    /// ```
    /// use sensorchain_core::identity::Keypair;
    /// use sensorchain_core::permissions::Role;
    /// use sensorchain_core::tx::Member;
    /// let key = Keypair::from_seed([1; 32]).public();
    /// let m = Member::of_role(key, Role::Gateway);
    /// assert_eq!(m.permissions, Role::Gateway.default_permissions());
    /// ```
    pub fn of_role(key: PublicKey, role: Role) -> Member {
        Member {
            key,
            permissions: role.default_permissions(),
            role,
        }
    }
}

/// The configuration recorded by the genesis transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisConfig {
    /// The network's human-readable name: a label only. The chain id is
    /// derived from the whole genesis body ([`TxBody::genesis_chain_id`]),
    /// so two chains of one name have different ids.
    pub name: heapless::String<CHAIN_NAME_MAX>,
    /// Parameters.
    pub params: Params,
    /// The first admins, validators and other identities.
    pub members: heapless::Vec<Member, GENESIS_MAX_MEMBERS>,
}

/// What a transaction does.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxKind {
    /// A device's reading on one of its streams. Needs `WRITE`.
    Reading {
        /// The device's stream (channel) number, device-defined.
        stream: u16,
        /// The value.
        payload: Payload,
    },
    /// Grant permissions (needs `ADMIN`; `ADMIN`/`VALIDATE` bits are votes
    /// under admin consensus).
    Grant {
        /// Who receives them.
        target: PublicKey,
        /// Which bits.
        permissions: Permissions,
    },
    /// Revoke permissions (same rules as [`TxKind::Grant`]).
    Revoke {
        /// From whom.
        target: PublicKey,
        /// Which bits.
        permissions: Permissions,
    },
    /// Set an identity's role (needs `ADMIN`).
    SetRole {
        /// Whose.
        target: PublicKey,
        /// The role.
        role: Role,
    },
    /// Assign a device to the patient it measures (needs `ADMIN`).
    AssignDevice {
        /// The device.
        device: PublicKey,
        /// The patient.
        patient: PublicKey,
    },
    /// A patient's consent that `reader` may (or may no longer) read the
    /// patient's sealed readings. Signed by the patient; needs `SEND`.
    Consent {
        /// The reader (a doctor, nurse or insurer).
        reader: PublicKey,
        /// `true` grants, `false` revokes.
        granted: bool,
    },
    /// The first transaction of a chain (only in the genesis block).
    Genesis(GenesisConfig),
    /// A gateway commits the head of its access log to the chain (the
    /// record of who read which patient's data, docs/API.md "Access log"):
    /// after `count` entries, the log's chain hash is `hash`. Signed by the
    /// gateway that keeps the log; needs `VALIDATE`. Once on the chain, the
    /// log's first `count` entries cannot be rewritten unseen, not even by
    /// someone holding the gateway's key and disk.
    AccessAnchor {
        /// Entries of the log the anchor covers (at least 1).
        count: u64,
        /// The log's chain hash after entry `count - 1`.
        hash: Hash32,
    },
}

/// The signed part of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxBody {
    /// Who signs.
    pub signer: PublicKey,
    /// The signer's sequence number: strictly increasing per signer (gaps
    /// allowed).
    pub sequence: u64,
    /// The signer's clock, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// What it does.
    pub kind: TxKind,
}

impl TxBody {
    /// The body of a chain's genesis transaction: signed by `creator` (who
    /// must be an admin member of `config`) with sequence 0.
    pub fn genesis(creator: PublicKey, timestamp_ms: u64, config: GenesisConfig) -> Self {
        TxBody {
            signer: creator,
            sequence: 0,
            timestamp_ms,
            kind: TxKind::Genesis(config),
        }
    }

    /// The chain id a genesis transaction with this body creates:
    /// [`ChainId::of_genesis_body`] of this body's exact (canonical)
    /// encoding. Meaningful for a [`TxKind::Genesis`] body; fails only if the
    /// body exceeds [`TX_MAX_LEN`].
    ///
    /// ```
    /// # use sensorchain_core::{identity::Keypair, permissions::*, tx::*};
    /// let admin = Keypair::from_seed([1; 32]);
    /// let m = [Member { key: admin.public(), permissions: Permissions::ALL, role: Role::Admin }];
    /// let cfg = GenesisConfig::new("ward-7", Params::default(), &m).unwrap();
    /// let a = TxBody::genesis(admin.public(), 1_000, cfg.clone()).genesis_chain_id().unwrap();
    /// let b = TxBody::genesis(admin.public(), 1_001, cfg).genesis_chain_id().unwrap();
    /// assert_ne!(a, b, "same name, same creator, another time: another chain");
    /// ```
    pub fn genesis_chain_id(&self) -> Result<ChainId, TxError> {
        let mut buf = [0u8; TX_MAX_LEN];
        let bytes = codec::encode_to_slice(self, &mut buf)?;
        Ok(ChainId::of_genesis_body(bytes))
    }

    /// A plain reading.
    pub fn reading(
        device: PublicKey,
        sequence: u64,
        timestamp_ms: u64,
        stream: u16,
        value: Vital,
    ) -> Self {
        TxBody {
            signer: device,
            sequence,
            timestamp_ms,
            kind: TxKind::Reading {
                stream,
                payload: Payload::Plain(value),
            },
        }
    }
}

/// A signed transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// The signed body.
    pub body: TxBody,
    /// The signer's signature over the domain-separated body bytes.
    pub signature: Signature,
}

/// Why a transaction could not be built or checked on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum TxError {
    /// The encoding is longer than [`TX_MAX_LEN`] or a buffer was too small.
    TooLarge,
    /// The bytes are not a canonical transaction.
    Decode(DecodeError),
    /// The signature does not verify under the signer's key.
    BadSignature(SignatureError),
}

impl fmt::Display for TxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxError::TooLarge => write!(f, "transaction larger than {TX_MAX_LEN} bytes"),
            TxError::Decode(e) => write!(f, "transaction does not decode: {e}"),
            TxError::BadSignature(e) => write!(f, "transaction signature: {e}"),
        }
    }
}

impl core::error::Error for TxError {}

impl From<EncodeError> for TxError {
    fn from(_: EncodeError) -> Self {
        TxError::TooLarge
    }
}

/// The binding a sealed reading's payload is encrypted under (the
/// associated data of [`crate::sealed::seal`] and `open`):
/// `tagged_hash("sensorchain/sealed-binding/v1", chain_id ‖ device ‖ stream (u16 LE) ‖ sequence (u64 LE))`.
/// A sealed payload moved to another device, stream, sequence or chain no
/// longer opens.
///
/// ```
/// # use sensorchain_core::{hash::ChainId, identity::Keypair, tx::sealed_binding};
/// let d = Keypair::from_seed([1; 32]).public();
/// let c = ChainId([7; 32]);
/// assert_ne!(sealed_binding(&c, &d, 0, 1), sealed_binding(&c, &d, 0, 2));
/// ```
pub fn sealed_binding(chain: &ChainId, device: &PublicKey, stream: u16, sequence: u64) -> [u8; 32] {
    crate::hash::tagged_hash(
        ctx::SEALED_BINDING,
        &[
            &chain.0,
            &device.0,
            &stream.to_le_bytes(),
            &sequence.to_le_bytes(),
        ],
    )
    .0
}

/// Length of the signing prefix `len(ctx) || ctx || chain_id`.
const fn prefix_len(ctx: &str) -> usize {
    1 + ctx.len() + 32
}

/// Writes `len(ctx) || ctx || chain_id` into the front of `buf`, returning its length.
pub(crate) fn write_signing_prefix(
    buf: &mut [u8],
    ctx: &str,
    chain: &ChainId,
) -> Result<usize, EncodeError> {
    let n = prefix_len(ctx);
    let out = buf.get_mut(..n).ok_or(EncodeError::BufferFull)?;
    out[0] = ctx.len() as u8;
    out[1..1 + ctx.len()].copy_from_slice(ctx.as_bytes());
    out[1 + ctx.len()..].copy_from_slice(&chain.0);
    Ok(n)
}

/// Longest context string a signature names: the signing prefix
/// `len(ctx) || ctx || chain_id` is then at most [`SIGNING_PREFIX_MAX`]
/// bytes, the buffer [`verify_tagged`] builds it in.
pub(crate) const CTX_MAX_LEN: usize = 31;

/// Longest signing prefix, `prefix_len` of a [`CTX_MAX_LEN`]-byte context.
pub(crate) const SIGNING_PREFIX_MAX: usize = 1 + CTX_MAX_LEN + 32;

/// Longest message [`sign_tagged_fixed`] signs (checked per call site at
/// compile time): the 104-byte login message is the longest.
pub(crate) const FIXED_MSG_MAX: usize = 104;

/// A context string known to fit the signing prefix: built by a `const`
/// item, so an over-long context is a compile error, not a runtime one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SigningCtx(&'static str);

impl SigningCtx {
    /// Wraps `ctx`; use only in a `const` item, where the length check
    /// runs at compile time.
    pub(crate) const fn new(ctx: &'static str) -> SigningCtx {
        assert!(ctx.len() <= CTX_MAX_LEN, "signing context too long");
        SigningCtx(ctx)
    }
}

/// Signs `len(ctx) || ctx || chain_id || data` for a fixed-size `data`
/// (at most [`FIXED_MSG_MAX`] bytes, checked at compile time): the bytes
/// [`verify_tagged`] checks. Infallible by construction: the buffer holds
/// the longest prefix plus the longest message, so no arm can make up a
/// signature.
pub(crate) fn sign_tagged_fixed<const N: usize>(
    kp: &Keypair,
    ctx: SigningCtx,
    chain: &ChainId,
    data: &[u8; N],
) -> Signature {
    const { assert!(N <= FIXED_MSG_MAX, "message too long for sign_tagged_fixed") };
    let mut buf = [0u8; SIGNING_PREFIX_MAX + FIXED_MSG_MAX];
    let c = ctx.0.len(); // <= CTX_MAX_LEN by SigningCtx's invariant
    let p = prefix_len(ctx.0); // <= SIGNING_PREFIX_MAX
    buf[0] = c as u8;
    buf[1..1 + c].copy_from_slice(ctx.0.as_bytes());
    buf[1 + c..p].copy_from_slice(&chain.0);
    buf[p..p + N].copy_from_slice(data);
    kp.sign(&buf[..p + N])
}

/// Signs `len(ctx) || ctx || chain_id || data` (data at most [`TX_MAX_LEN`]).
#[cfg(test)]
pub(crate) fn sign_tagged(
    kp: &Keypair,
    ctx: &str,
    chain: &ChainId,
    data: &[u8],
) -> Result<Signature, EncodeError> {
    let mut buf = [0u8; 64 + TX_MAX_LEN];
    let n = write_signing_prefix(&mut buf, ctx, chain)?;
    let end = n.checked_add(data.len()).ok_or(EncodeError::BufferFull)?;
    buf.get_mut(n..end)
        .ok_or(EncodeError::BufferFull)?
        .copy_from_slice(data);
    Ok(kp.sign(&buf[..end]))
}

/// Encodes `body` (at most [`TX_MAX_LEN`] bytes) into `buf` behind the
/// transaction signing prefix and signs `len(ctx) || ctx || chain_id ||
/// body` in place: the same bytes [`sign_tagged`] signs, without copying the
/// body. Returns the signature and the body's length (the body bytes are
/// `buf[prefix_len(TX_SIG)..][..len]`).
fn sign_body(
    body: &TxBody,
    chain: &ChainId,
    kp: &Keypair,
    buf: &mut [u8],
) -> Result<(Signature, usize), TxError> {
    let p = prefix_len(ctx::TX_SIG);
    let end = buf.len().min(p + TX_MAX_LEN);
    let room = buf.get_mut(p..end).ok_or(TxError::TooLarge)?;
    let n = codec::encode_to_slice(body, room)?.len();
    write_signing_prefix(buf, ctx::TX_SIG, chain)?;
    let signed = buf.get(..p + n).ok_or(TxError::TooLarge)?;
    Ok((kp.sign(signed), n))
}

/// Writes the postcard encoding of a reading's body (what
/// `codec::encode_to_slice(body)` writes) into `buf`; returns its length.
fn write_reading(body: &TxBody, buf: &mut [u8]) -> Result<usize, TxError> {
    let TxKind::Reading { stream, payload } = &body.kind else {
        return Err(TxError::Decode(DecodeError::Malformed));
    };
    let mut w = codec::Writer::new(buf);
    (|| {
        w.bytes(&body.signer.0)?;
        w.varint(body.sequence)?;
        w.varint(body.timestamp_ms)?;
        w.varint(0)?; // TxKind::Reading
        w.varint(u64::from(*stream))?;
        match payload {
            Payload::Plain(v) => {
                w.varint(0)?;
                v.write(&mut w)
            }
            Payload::Sealed(sp) => {
                w.varint(1)?;
                w.bytes(&[sp.version])?;
                w.bytes(&sp.ephemeral.0)?;
                w.varint(sp.recipients.len() as u64)?;
                for r in &sp.recipients {
                    w.bytes(&r.key_id.0)?;
                    w.bytes(&r.wrapped.0)?;
                }
                w.seq(&sp.ciphertext)
            }
        }
    })()
    .ok_or(TxError::TooLarge)?;
    Ok(w.len())
}

/// Verifies a signature over `len(ctx) || ctx || chain_id || data` with the
/// one strict rule.
pub fn verify_tagged(
    vk: &VerifyingKey,
    ctx: &str,
    chain: &ChainId,
    data: &[u8],
    sig: &Signature,
) -> Result<(), SignatureError> {
    let mut prefix = [0u8; SIGNING_PREFIX_MAX];
    // Context strings are crate constants of at most CTX_MAX_LEN bytes; an
    // over-long one is refused (never verified against other bytes).
    let n = write_signing_prefix(&mut prefix, ctx, chain).map_err(|_| SignatureError::Mismatch)?;
    vk.verify_parts(&[&prefix[..n], data], sig)
}

impl Transaction {
    /// Signs `body` for chain `chain` with `kp` (whose public key should be
    /// `body.signer`; the ledger checks that it is).
    ///
    /// One stack buffer: the body is encoded right behind the signing
    /// prefix, so the signed bytes are built without a second copy.
    pub fn sign(body: TxBody, chain: &ChainId, kp: &Keypair) -> Result<Transaction, TxError> {
        let mut buf = [0u8; prefix_len(ctx::TX_SIG) + TX_MAX_LEN];
        let (signature, _) = sign_body(&body, chain, kp, &mut buf)?;
        Ok(Transaction { body, signature })
    }

    /// Signs `body` for chain `chain` with `kp` and writes the complete
    /// encoded transaction (body bytes then the 64 signature bytes, exactly
    /// what [`sign`](Self::sign) then [`encode`](Self::encode) produce) into
    /// `buf`, returning it. No other buffer is used: `buf` first holds the
    /// signed bytes (`len(ctx) || ctx || chain_id || body`), then the body
    /// is encoded again at its front and the signature appended, so it
    /// needs room for the longer of the two (the encoded transaction, body +
    /// 64 bytes, since the prefix is 50). For a device that keeps the
    /// encoding, not the [`Transaction`].
    ///
    /// ```
    /// # use sensorchain_core::{hash::ChainId, identity::Keypair, reading::Vital, tx::*};
    /// let chain = ChainId([7; 32]);
    /// let device = Keypair::from_seed([1; 32]);
    /// let body = TxBody::reading(device.public(), 1, 1_700_000_000_000, 0, Vital::HeartRate { bpm: 72 });
    /// let mut buf = [0u8; 256];
    /// let n = Transaction::sign_into(&body, &chain, &device, &mut buf).unwrap().len();
    /// let tx = Transaction::sign(body, &chain, &device).unwrap();
    /// let mut want = [0u8; 256];
    /// assert_eq!(&buf[..n], tx.encode(&mut want).unwrap());
    /// ```
    pub fn sign_into<'b>(
        body: &TxBody,
        chain: &ChainId,
        kp: &Keypair,
        buf: &'b mut [u8],
    ) -> Result<&'b mut [u8], TxError> {
        let (signature, n) = sign_body(body, chain, kp, buf)?;
        let end = n.checked_add(64).ok_or(TxError::TooLarge)?;
        let bytes = buf.get_mut(..end).ok_or(TxError::TooLarge)?;
        // The body again, now at the front (encoding is deterministic: the
        // same n bytes; smaller in a firmware than moving them).
        let (body_bytes, sig) = bytes.split_at_mut(n);
        codec::encode_to_slice(body, body_bytes)?;
        sig.copy_from_slice(&signature.0);
        Ok(bytes)
    }

    /// [`sign_into`](Self::sign_into) for a reading (`body.kind` is
    /// [`TxKind::Reading`]; any other kind is refused with
    /// `TxError::Decode(DecodeError::Malformed)`): the same bytes, with the
    /// body's postcard encoding written out by hand, so that a sensor's
    /// firmware carries no serde code for every kind of transaction.
    pub fn sign_reading_into<'b>(
        body: &TxBody,
        chain: &ChainId,
        kp: &Keypair,
        buf: &'b mut [u8],
    ) -> Result<&'b mut [u8], TxError> {
        let p = prefix_len(ctx::TX_SIG);
        let end = buf.len().min(p + TX_MAX_LEN);
        let room = buf.get_mut(p..end).ok_or(TxError::TooLarge)?;
        let n = write_reading(body, room)?;
        write_signing_prefix(buf, ctx::TX_SIG, chain)?;
        let signature = kp.sign(buf.get(..p + n).ok_or(TxError::TooLarge)?);
        let bytes = buf.get_mut(..n + 64).ok_or(TxError::TooLarge)?;
        // The body again, now at the front (as in `sign_into`).
        let (body_bytes, sig) = bytes.split_at_mut(n);
        write_reading(body, body_bytes)?;
        sig.copy_from_slice(&signature.0);
        Ok(bytes)
    }

    /// Encodes into `buf`: body bytes then the 64 signature bytes.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], TxError> {
        Ok(codec::encode_to_slice(self, buf)?)
    }

    /// Encodes into a new vector.
    #[cfg(feature = "alloc")]
    pub fn to_vec(&self) -> alloc::vec::Vec<u8> {
        codec::encode_to_vec(self)
    }

    /// The sequence number of an encoded transaction, read from its first
    /// fields (the signer's key, then the sequence) without decoding the
    /// rest; `None` if they do not decode.
    pub fn sequence_of_encoded(encoded: &[u8]) -> Option<u64> {
        // The signer's key is 32 raw bytes (a tuple), the sequence a varint.
        let mut rest = encoded.get(32..)?;
        codec::take_varint(&mut rest, u64::MAX)
    }

    /// Strictly decodes one transaction from exactly `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Transaction, TxError> {
        codec::decode_exact(bytes, TX_MAX_LEN).map_err(|e| match e {
            DecodeError::TooLong => TxError::TooLarge,
            e => TxError::Decode(e),
        })
    }

    /// Verifies the signature given this transaction's exact encoding
    /// `encoded` (as received, or as produced by [`encode`](Self::encode))
    /// and the signer's registered key. The signed body bytes are `encoded`
    /// without its last 64 bytes.
    pub fn verify_encoded(
        encoded: &[u8],
        chain: &ChainId,
        signer: &VerifyingKey,
        sig: &Signature,
    ) -> Result<(), TxError> {
        let body_len = encoded
            .len()
            .checked_sub(64)
            .ok_or(TxError::Decode(DecodeError::Malformed))?;
        let body = encoded
            .get(..body_len)
            .ok_or(TxError::Decode(DecodeError::Malformed))?;
        verify_tagged(signer, ctx::TX_SIG, chain, body, sig).map_err(TxError::BadSignature)
    }

    /// Verifies the signature, re-encoding the transaction (see
    /// [`verify_encoded`](Self::verify_encoded) to avoid the re-encoding).
    pub fn verify(&self, chain: &ChainId, signer: &VerifyingKey) -> Result<(), TxError> {
        let mut buf = [0u8; TX_MAX_LEN];
        let bytes = self.encode(&mut buf)?;
        Self::verify_encoded(bytes, chain, signer, &self.signature)
    }

    /// The transaction id: the RFC 6962 leaf hash of its exact encoding, the
    /// value the block's Merkle tree commits to.
    pub fn id_of_encoded(encoded: &[u8]) -> Hash32 {
        crate::merkle::leaf_hash(encoded)
    }
}

#[cfg(test)]
mod tests;
