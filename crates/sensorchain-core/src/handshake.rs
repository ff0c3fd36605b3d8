//! The connection handshake, both roles, sans-I/O.
//!
//! A SIGMA-style exchange of three messages (213 bytes in total) that gives
//! mutual authentication with Ed25519 identities, key confirmation, forward
//! secrecy (the session keys come from ephemeral X25519 keys only), replay
//! and reflection resistance, and a bounded number of half-open handshakes
//! on the responder:
//!
//! ```text
//! initiator (device)                                   responder (gateway)
//!   Message1 { version, chain tag, kid_I, E_I }   ──►  allowlist(kid_I)?  (no DH, no signature before)
//!                                                      replay cache, half-open slot
//!   ◄──  Message2 { kid_R, E_R, Sig_R(TH2 || MAC2) }
//!   trusted(kid_R)? verify
//!   Message3 { Sig_I(TH3 || MAC3) }               ──►  verify (the strict rule)
//!   both: session keys = HKDF(DH(E_I, E_R), TH4)
//! ```
//!
//! `MAC2` and `MAC3` are derived from the X25519 shared secret and are *not*
//! transmitted: each side signs a value only the holder of the shared secret
//! can compute, so a verified signature is also key confirmation, at no wire
//! cost (as EDHOC's signature methods). The full 32-byte chain id, both full
//! public keys and role-specific labels are in the transcript hashes, so a
//! message of one chain, session or role never verifies for another.
//!
//! Every byte, hash input and label is in `docs/PROTOCOL.md`, "Handshake".
//!
//! # A table shared between connections
//!
//! [`Responder::respond`] and [`Responder::finish`] take the table for the
//! whole call. A responder that shares one [`ResponderTable`] between links
//! behind a lock runs the steps instead, parsing apart from verifying as
//! lakers does, and holds the lock only for the bookkeeping:
//! [`Hello::parse`] and [`Hello::check`] (the allowlist) without the table;
//! [`ResponderTable::admit`] under the lock (replay cache, half-open slot:
//! comparisons only) returning an [`Admitted`] ticket; [`Admitted::respond`]
//! (X25519, HKDF, the signature, message 2) and [`Responder::verify`]
//! (message 3) without it; [`ResponderTable::release`] under the lock.
//!
//! # Use
//!
//! ```
//! use sensorchain_core::handshake::*;
//! use sensorchain_core::hash::ChainId;
//! use sensorchain_core::identity::{KeyId, Keypair, VerifyingKey};
//! # struct Rng(u64);
//! # impl rand_core::TryRng for Rng {
//! #     type Error = core::convert::Infallible;
//! #     fn try_next_u32(&mut self) -> Result<u32, Self::Error> { Ok(self.try_next_u64()? as u32) }
//! #     fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
//! #         self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); Ok(self.0) }
//! #     fn try_fill_bytes(&mut self, d: &mut [u8]) -> Result<(), Self::Error> {
//! #         for b in d { *b = (self.try_next_u64()? >> 56) as u8; } Ok(()) }
//! # }
//! # impl rand_core::TryCryptoRng for Rng {}
//! # let mut rng = Rng(1);
//! let device = Keypair::from_seed([1; 32]);
//! let gateway = Keypair::from_seed([2; 32]);
//! let config = HandshakeConfig::new(ChainId([7; 32])); // the chain's id, from its genesis
//!
//! // The gateway's allowlist (backed by the world state in a real gateway).
//! struct OneDevice(VerifyingKey);
//! impl Allowlist for OneDevice {
//!     fn lookup(&self, id: &KeyId) -> Result<VerifyingKey, Denial> {
//!         if *id == self.0.public().key_id() { Ok(self.0) } else { Err(Denial::Unknown) }
//!     }
//! }
//! let allow = OneDevice(VerifyingKey::from_public(&device.public()).unwrap());
//! let mut table: ResponderTable<8, 64> = ResponderTable::new();
//! let trusted = [gateway.public()];
//!
//! let (mut m1, mut m2, mut m3) = ([0u8; MESSAGE1_LEN], [0u8; MESSAGE2_LEN], [0u8; MESSAGE3_LEN]);
//! let (init, n1) = Initiator::start(&config, &device, 0, &mut rng, &mut m1)?;
//! let (resp, n2) = Responder::respond(&config, &gateway, &mut table, &allow, &m1[..n1], 5, &mut rng, &mut m2)?;
//! let (dev_done, n3) = init.finish(&device, &trusted, &m2[..n2], 10, &mut m3)?;
//! let gw_done = resp.finish(&mut table, &m3[..n3], 15)?;
//! assert_eq!(dev_done.transcript, gw_done.transcript);
//! assert_eq!(gw_done.peer, device.public());
//! # Ok::<(), HandshakeError>(())
//! ```

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::codec::{decode_exact, encode_to_slice};
use crate::crypto::{
    KEY_LEN, SecretKey, X25519Public, X25519Secret, hkdf_expand_key, hkdf_extract,
};
use crate::hash::{ChainId, Hash32, TaggedHasher};
use crate::identity::{KeyId, Keypair, PublicKey, Signature, VerifyingKey};
use crate::session::Session;

/// Protocol version carried in the first byte of message 1: the link
/// between a device (or any client) and a gateway, version 1.
pub const VERSION: u8 = 1;
/// The first byte of message 1 on a gateway-to-gateway peer link
/// ([`crate::peer`]): the peer link, version 1. The byte is part of `TH2`,
/// so a handshake made for one kind of link never completes as the other:
/// a device listener refuses it (`VersionMismatch`) before any
/// cryptography, and a relayed message 1 with the byte changed fails both
/// signatures.
pub const PEER_VERSION: u8 = 0x81;
/// Encoded length of [`Message1`].
pub const MESSAGE1_LEN: usize = 1 + 4 + 8 + 32;
/// Encoded length of [`Message2`].
pub const MESSAGE2_LEN: usize = 8 + 32 + 64;
/// Encoded length of [`Message3`].
pub const MESSAGE3_LEN: usize = 64;
// The design budget: at most 230 bytes on the wire for the three messages.
const _: () = assert!(MESSAGE1_LEN + MESSAGE2_LEN + MESSAGE3_LEN <= 230);

/// Default time a handshake may take from its first message, in ms.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// Domain-separation labels of the handshake (hash contexts, signature
/// contexts and HKDF info prefixes). `docs/PROTOCOL.md` lists them.
pub mod label {
    /// Transcript hash after message 2's clear part.
    pub const TH2: &str = "sensorchain/hs/v1/th2";
    /// Transcript hash after message 2.
    pub const TH3: &str = "sensorchain/hs/v1/th3";
    /// Transcript hash after message 3 (the handshake's result).
    pub const TH4: &str = "sensorchain/hs/v1/th4";
    /// HKDF info prefix of the responder's key-confirmation value.
    pub const MAC2: &str = "sensorchain/hs/v1/mac2";
    /// HKDF info prefix of the initiator's key-confirmation value.
    pub const MAC3: &str = "sensorchain/hs/v1/mac3";
    /// Signature context of the responder (message 2).
    pub const SIG2: &str = "sensorchain/hs/v1/sig2-responder";
    /// Signature context of the initiator (message 3).
    pub const SIG3: &str = "sensorchain/hs/v1/sig3-initiator";
    /// HKDF info prefix of the initiator→responder session key.
    pub const KEY_I2R: &str = "sensorchain/hs/v1/key-i2r";
    /// HKDF info prefix of the responder→initiator session key.
    pub const KEY_R2I: &str = "sensorchain/hs/v1/key-r2i";
}

/// Why a handshake step failed. Every error ends the handshake: the state is
/// consumed, a new handshake starts from message 1. [`HandshakeError::blame`]
/// tells caller misuse from a peer's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum HandshakeError {
    /// Responder: the initiator's key id is not in the allowlist.
    UnknownIdentity,
    /// Responder: the initiator is known but lacks the permission to connect
    /// (e.g. revoked).
    NotPermitted,
    /// A signature does not verify over the transcript and the
    /// key-confirmation value (a forged, replayed, reflected or cross-session
    /// message, or a peer that does not share the X25519 secret).
    BadSignature,
    /// Responder: message 1 carries an ephemeral key seen recently.
    Replayed,
    /// Message 1 names another chain (its 4-byte chain tag differs).
    WrongChain,
    /// Message 1 has another protocol version.
    VersionMismatch,
    /// The handshake state is older than its configured timeout.
    Timeout,
    /// The message is not a strict encoding of the expected message, or
    /// carries a small-order ephemeral key.
    Malformed,
    /// Initiator: the responder's key id is not in the trusted set (a rogue
    /// gateway).
    UntrustedResponder,
    /// The caller's output buffer cannot hold the outgoing message (caller
    /// misuse: [`Blame::Caller`]).
    BufferTooSmall,
    /// Responder: all half-open slots are taken by live handshakes.
    TooManyHalfOpen,
    /// Initiator: `finish` was called with another key pair than `start`
    /// (caller misuse: [`Blame::Caller`]).
    IdentityMismatch,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeError::UnknownIdentity => "unknown identity",
            HandshakeError::NotPermitted => "identity not permitted to connect",
            HandshakeError::BadSignature => "handshake signature does not verify",
            HandshakeError::Replayed => "replayed handshake message",
            HandshakeError::WrongChain => "peer is on another chain",
            HandshakeError::VersionMismatch => "unsupported handshake version",
            HandshakeError::Timeout => "handshake timed out",
            HandshakeError::Malformed => "malformed handshake message",
            HandshakeError::UntrustedResponder => "responder is not a trusted gateway",
            HandshakeError::BufferTooSmall => "output buffer too small",
            HandshakeError::TooManyHalfOpen => "too many half-open handshakes",
            HandshakeError::IdentityMismatch => "finish called with another identity than start",
        })
    }
}

impl core::error::Error for HandshakeError {}

/// Who is to blame for a [`HandshakeError`] ([`HandshakeError::blame`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Blame {
    /// This side's code misused the API (a buffer too small, another key
    /// pair than at the start): a bug to fix, not something to retry.
    Caller,
    /// The peer (or the network): a bad, replayed, late or foreign message,
    /// an identity that may not connect, an untrusted responder.
    Peer,
    /// This side's capacity (all half-open slots live): retry later.
    Capacity,
}

impl HandshakeError {
    /// Who is to blame: caller misuse, the peer, or this side's capacity.
    pub fn blame(&self) -> Blame {
        match self {
            HandshakeError::BufferTooSmall | HandshakeError::IdentityMismatch => Blame::Caller,
            HandshakeError::TooManyHalfOpen => Blame::Capacity,
            _ => Blame::Peer,
        }
    }
}

/// Why an allowlist denies an identity (the link's refusal in clear is
/// [`crate::link::Refusal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Denial {
    /// No registered identity has this key id.
    Unknown,
    /// The identity is registered but may not connect.
    NotPermitted,
}

/// The former name of [`Denial`], kept so that existing callers build; use
/// [`Denial`] (`Refusal` is the link's refusal, [`crate::link::Refusal`]).
#[doc(hidden)]
pub type Refusal = Denial;

/// The responder's view of who may connect (a gateway backs it with the
/// world state's `connect` permission). Called once per message 1, before
/// any Diffie–Hellman or signature work; it should be cheap.
pub trait Allowlist {
    /// The registered (validated) key of `id`, or why it may not connect.
    fn lookup(&self, id: &KeyId) -> Result<VerifyingKey, Denial>;
}

impl<T: Allowlist + ?Sized> Allowlist for &T {
    fn lookup(&self, id: &KeyId) -> Result<VerifyingKey, Denial> {
        (**self).lookup(id)
    }
}

/// The initiator's set of trusted responders (a device's gateways).
pub trait TrustedResponders {
    /// The trusted public key with key id `id`, if any.
    fn trusted(&self, id: &KeyId) -> Option<PublicKey>;
}

impl TrustedResponders for [PublicKey] {
    fn trusted(&self, id: &KeyId) -> Option<PublicKey> {
        self.iter().find(|pk| pk.key_id() == *id).copied()
    }
}

impl<const N: usize> TrustedResponders for [PublicKey; N] {
    fn trusted(&self, id: &KeyId) -> Option<PublicKey> {
        self.as_slice().trusted(id)
    }
}

impl<T: TrustedResponders + ?Sized> TrustedResponders for &T {
    fn trusted(&self, id: &KeyId) -> Option<PublicKey> {
        (**self).trusted(id)
    }
}

/// Parameters both roles agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeConfig {
    /// The chain (network) this node belongs to.
    pub chain: ChainId,
    /// A handshake state older than this (ms since its first step) refuses
    /// to advance; the responder also reclaims its half-open slot then.
    pub timeout_ms: u64,
}

impl HandshakeConfig {
    /// The configuration for `chain` with [`DEFAULT_TIMEOUT_MS`].
    pub fn new(chain: ChainId) -> Self {
        HandshakeConfig {
            chain,
            timeout_ms: DEFAULT_TIMEOUT_MS,
        }
    }
}

/// Message 1, initiator → responder (45 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message1 {
    /// [`VERSION`] (or [`PEER_VERSION`] on a peer link).
    pub version: u8,
    /// [`ChainId::tag`] of the initiator's chain.
    pub chain_tag: [u8; 4],
    /// The initiator's key id.
    pub initiator: KeyId,
    /// The initiator's ephemeral X25519 key.
    pub ephemeral: X25519Public,
}

/// Message 2, responder → initiator (104 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message2 {
    /// The responder's key id.
    pub responder: KeyId,
    /// The responder's ephemeral X25519 key (also the challenge).
    pub ephemeral: X25519Public,
    /// The responder's signature over `TH2 || MAC2`.
    pub signature: Signature,
}

/// Message 3, initiator → responder (64 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message3 {
    /// The initiator's signature over `TH3 || MAC3`.
    pub signature: Signature,
}

/// A completed handshake: who the peer is, the transcript hash, and the
/// session channel.
#[derive(Debug)]
pub struct Established {
    /// The authenticated peer's public key.
    pub peer: PublicKey,
    /// Its key id.
    pub peer_id: KeyId,
    /// `TH4`, the hash of the whole transcript (unique per handshake; may be
    /// used as a session id or for channel binding).
    pub transcript: Hash32,
    /// The encrypted channel.
    pub session: Session,
}

// ---------------------------------------------------------------------------
// Key schedule, shared by both roles.

fn th2(
    chain: &ChainId,
    msg1: &[u8],
    initiator: &PublicKey,
    responder_id: &KeyId,
    responder_eph: &X25519Public,
    responder: &PublicKey,
) -> Hash32 {
    let mut h = TaggedHasher::new(label::TH2);
    h.update(&chain.0)
        .update(msg1)
        .update(&initiator.0)
        .update(&responder_id.0)
        .update(&responder_eph.0)
        .update(&responder.0);
    h.finalize()
}

fn th_next(label: &str, th: &Hash32, sig: &Signature) -> Hash32 {
    let mut h = TaggedHasher::new(label);
    h.update(&th.0).update(&sig.0);
    h.finalize()
}

fn mac(prk: &SecretKey, label: &str, th: &Hash32) -> SecretKey {
    hkdf_expand_key(prk, &[label.as_bytes(), &th.0])
}

/// The bytes a handshake signature covers:
/// `len(ctx) || ctx || TH || MAC` (the MAC never goes on the wire).
fn signed_parts<'a>(
    ctx_len: &'a [u8; 1],
    ctx: &'a str,
    th: &'a Hash32,
    mac: &'a SecretKey,
) -> [&'a [u8]; 4] {
    [ctx_len, ctx.as_bytes(), &th.0, mac.as_bytes()]
}

/// Longest handshake signature label: [`sign_parts`]'s buffer holds
/// `len(ctx) || ctx || TH || MAC` for any label up to this length.
const SIG_LABEL_MAX: usize = 40;
const _: () = assert!(label::SIG2.len() <= SIG_LABEL_MAX && label::SIG3.len() <= SIG_LABEL_MAX);

/// Signs exactly the bytes [`signed_parts`] lists (what the peer verifies).
/// `ctx` is [`label::SIG2`] or [`label::SIG3`], whose lengths are checked
/// against the buffer at compile time, so every part is copied: no part is
/// ever skipped.
fn sign_parts(kp: &Keypair, ctx: &'static str, th: &Hash32, mac: &SecretKey) -> Signature {
    let mut buf = [0u8; 1 + SIG_LABEL_MAX + 32 + KEY_LEN];
    let ctx_len = [ctx.len() as u8];
    let mut pos = 0;
    for part in signed_parts(&ctx_len, ctx, th, mac) {
        buf[pos..pos + part.len()].copy_from_slice(part);
        pos += part.len();
    }
    let sig = kp.sign(&buf[..pos]);
    zeroize::Zeroize::zeroize(&mut buf);
    sig
}

fn session_keys(prk: &SecretKey, th4: &Hash32) -> (SecretKey, SecretKey) {
    (
        hkdf_expand_key(prk, &[label::KEY_I2R.as_bytes(), &th4.0]),
        hkdf_expand_key(prk, &[label::KEY_R2I.as_bytes(), &th4.0]),
    )
}

fn elapsed(started: u64, now: u64) -> u64 {
    now.saturating_sub(started)
}

// ---------------------------------------------------------------------------
// Initiator.

/// The initiator after sending message 1, waiting for message 2.
pub struct Initiator {
    chain: ChainId,
    timeout_ms: u64,
    started_ms: u64,
    me: PublicKey,
    ephemeral: X25519Secret,
    msg1: [u8; MESSAGE1_LEN],
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator")
            .field("me", &self.me.key_id())
            .field("started_ms", &self.started_ms)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// Starts a handshake: draws an ephemeral key from `rng` and writes
    /// message 1 ([`MESSAGE1_LEN`] bytes) into `out`. Returns the state and
    /// the number of bytes written.
    pub fn start<R: rand_core::CryptoRng + ?Sized>(
        config: &HandshakeConfig,
        identity: &Keypair,
        now_ms: u64,
        rng: &mut R,
        out: &mut [u8],
    ) -> Result<(Initiator, usize), HandshakeError> {
        Self::start_version(VERSION, config, identity, now_ms, rng, out)
    }

    /// [`start`](Self::start) for a gateway-to-gateway peer link: message 1
    /// carries [`PEER_VERSION`] (a peer listener accepts nothing else, a
    /// device listener refuses it). The rest of the handshake is the same
    /// ([`finish`](Self::finish)).
    #[cfg(feature = "peer")]
    pub fn start_peer<R: rand_core::CryptoRng + ?Sized>(
        config: &HandshakeConfig,
        identity: &Keypair,
        now_ms: u64,
        rng: &mut R,
        out: &mut [u8],
    ) -> Result<(Initiator, usize), HandshakeError> {
        Self::start_version(PEER_VERSION, config, identity, now_ms, rng, out)
    }

    // Inlined into each caller, so a device's `start` compiles to what it
    // was before the peer link's byte became a parameter.
    #[inline(always)]
    fn start_version<R: rand_core::CryptoRng + ?Sized>(
        version: u8,
        config: &HandshakeConfig,
        identity: &Keypair,
        now_ms: u64,
        rng: &mut R,
        out: &mut [u8],
    ) -> Result<(Initiator, usize), HandshakeError> {
        if out.len() < MESSAGE1_LEN {
            return Err(HandshakeError::BufferTooSmall);
        }
        let ephemeral = X25519Secret::generate(rng);
        let me = identity.public();
        let m1 = Message1 {
            version,
            chain_tag: config.chain.tag(),
            initiator: me.key_id(),
            ephemeral: ephemeral.public(),
        };
        let mut msg1 = [0u8; MESSAGE1_LEN];
        let n = encode_to_slice(&m1, &mut msg1)
            .map_err(|_| HandshakeError::BufferTooSmall)?
            .len();
        if n != MESSAGE1_LEN {
            return Err(HandshakeError::Malformed);
        }
        out.get_mut(..n)
            .ok_or(HandshakeError::BufferTooSmall)?
            .copy_from_slice(&msg1);
        Ok((
            Initiator {
                chain: config.chain,
                timeout_ms: config.timeout_ms,
                started_ms: now_ms,
                me,
                ephemeral,
                msg1,
            },
            n,
        ))
    }

    /// The time this handshake started.
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// Processes message 2: checks the responder against `trusted`,
    /// verifies its signature (which includes key confirmation), writes
    /// message 3 ([`MESSAGE3_LEN`] bytes) into `out` and returns the
    /// established session and the number of bytes written.
    ///
    /// The responder's signature is checked with
    /// [`PublicKey::verify_device`]: this verdict decides a device's trust in
    /// its gateway, never ledger validity.
    pub fn finish<T: TrustedResponders + ?Sized>(
        self,
        identity: &Keypair,
        trusted: &T,
        msg2: &[u8],
        now_ms: u64,
        out: &mut [u8],
    ) -> Result<(Established, usize), HandshakeError> {
        if elapsed(self.started_ms, now_ms) > self.timeout_ms {
            return Err(HandshakeError::Timeout);
        }
        if out.len() < MESSAGE3_LEN {
            return Err(HandshakeError::BufferTooSmall);
        }
        if identity.public() != self.me {
            return Err(HandshakeError::IdentityMismatch);
        }
        let m2: Message2 =
            decode_exact(msg2, MESSAGE2_LEN).map_err(|_| HandshakeError::Malformed)?;
        let responder = trusted
            .trusted(&m2.responder)
            .ok_or(HandshakeError::UntrustedResponder)?;
        let dh = self
            .ephemeral
            .diffie_hellman(&m2.ephemeral)
            .map_err(|_| HandshakeError::Malformed)?;
        let th2 = th2(
            &self.chain,
            &self.msg1,
            &self.me,
            &m2.responder,
            &m2.ephemeral,
            &responder,
        );
        let prk = hkdf_extract(&th2.0, dh.as_bytes());
        drop(dh);
        let mac2 = mac(&prk, label::MAC2, &th2);
        let ctx_len = [label::SIG2.len() as u8];
        let parts = signed_parts(&ctx_len, label::SIG2, &th2, &mac2);
        verify_device_parts(&responder, &parts, &m2.signature)?;

        let th3 = th_next(label::TH3, &th2, &m2.signature);
        let mac3 = mac(&prk, label::MAC3, &th3);
        let sig3 = sign_parts(identity, label::SIG3, &th3, &mac3);
        let m3 = Message3 { signature: sig3 };
        let n = encode_to_slice(&m3, out)
            .map_err(|_| HandshakeError::BufferTooSmall)?
            .len();
        let th4 = th_next(label::TH4, &th3, &sig3);
        let (i2r, r2i) = session_keys(&prk, &th4);
        Ok((
            Established {
                peer: responder,
                peer_id: m2.responder,
                transcript: th4,
                session: Session::from_secret_keys(i2r, r2i),
            },
            n,
        ))
    }
}

/// `verify_device` over parts: ed25519-compact needs one contiguous message.
fn verify_device_parts(
    pk: &PublicKey,
    parts: &[&[u8]; 4],
    sig: &Signature,
) -> Result<(), HandshakeError> {
    let mut buf = [0u8; 1 + 40 + 64];
    let mut pos = 0;
    for p in parts {
        let end = pos + p.len();
        buf.get_mut(pos..end)
            .ok_or(HandshakeError::BadSignature)?
            .copy_from_slice(p);
        pos = end;
    }
    let msg = buf.get(..pos).ok_or(HandshakeError::BadSignature)?;
    pk.verify_device(msg, sig)
        .map_err(|_| HandshakeError::BadSignature)
}

// ---------------------------------------------------------------------------
// Responder.
//
// The responder's work is split in the way lakers splits parsing from
// verifying, so that the shared table is held only for bookkeeping:
//
// 1. [`Hello::parse`]: version, strict encoding, chain tag (no table, no
//    crypto);
// 2. [`Hello::check`]: the allowlist (the application's lookup, no table);
// 3. [`ResponderTable::admit`] (*under the table's lock*, a few comparisons):
//    reclaims expired slots, refuses a replayed ephemeral key, takes a
//    half-open slot and remembers the ephemeral key; returns an
//    [`Admitted`] ticket;
// 4. [`Admitted::respond`] (*no table*): X25519, HKDF, the Ed25519
//    signature, message 2;
// 5. [`Responder::verify`] (*no table*): message 3's strict verification;
// 6. [`ResponderTable::release`] (*under the lock*): gives the slot back.
//
// [`Responder::respond`] and [`Responder::finish`] run the steps in one
// call for callers that own their table.

#[derive(Clone, Copy)]
struct Slot {
    ticket: u64,
    started_ms: u64,
}

#[derive(Clone, Copy)]
struct Seen {
    ephemeral: [u8; 32],
    used: bool,
}

/// A half-open slot taken by [`ResponderTable::admit`]: give it back with
/// [`ResponderTable::release`] when the handshake ends (the table also
/// reclaims it once it is older than the timeout, so a lost ticket costs
/// a slot for at most the timeout).
#[must_use = "a half-open slot is held until it is released (or expires)"]
#[derive(Debug, PartialEq, Eq)]
pub struct SlotTicket {
    ticket: u64,
}

/// The responder's shared admission state, held across connections: at most
/// `HALF_OPEN` handshakes between message 1 and message 3 at a time, and a
/// cache of the last `REPLAY` initiator ephemeral keys (so a replayed
/// message 1 is refused with [`HandshakeError::Replayed`] before any
/// expensive work). Slots of handshakes older than the timeout are reclaimed
/// automatically; [`ResponderTable::release`] (or [`Responder::finish`],
/// [`Responder::abort`]) gives one back.
///
/// No method of the table does any cryptography: a gateway that shares one
/// table between links behind a lock holds that lock for a few comparisons
/// per handshake step, never across X25519 or a signature.
pub struct ResponderTable<const HALF_OPEN: usize, const REPLAY: usize> {
    slots: [Option<Slot>; HALF_OPEN],
    next_ticket: u64,
    seen: [Seen; REPLAY],
    seen_pos: usize,
}

impl<const HALF_OPEN: usize, const REPLAY: usize> Default for ResponderTable<HALF_OPEN, REPLAY> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const HALF_OPEN: usize, const REPLAY: usize> fmt::Debug for ResponderTable<HALF_OPEN, REPLAY> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponderTable")
            .field("half_open", &self.half_open())
            .field("capacity", &HALF_OPEN)
            .finish_non_exhaustive()
    }
}

impl<const HALF_OPEN: usize, const REPLAY: usize> ResponderTable<HALF_OPEN, REPLAY> {
    /// An empty table.
    pub const fn new() -> Self {
        ResponderTable {
            slots: [None; HALF_OPEN],
            next_ticket: 0,
            seen: [Seen {
                ephemeral: [0; 32],
                used: false,
            }; REPLAY],
            seen_pos: 0,
        }
    }

    /// Number of slots taken (including expired ones not yet reclaimed).
    pub fn half_open(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Frees the slots of handshakes older than `timeout_ms`.
    pub fn reclaim_expired(&mut self, now_ms: u64, timeout_ms: u64) {
        for s in self.slots.iter_mut() {
            if let Some(slot) = s
                && elapsed(slot.started_ms, now_ms) > timeout_ms
            {
                *s = None;
            }
        }
    }

    fn was_seen(&self, eph: &X25519Public) -> bool {
        self.seen.iter().any(|s| s.used && s.ephemeral == eph.0)
    }

    fn remember(&mut self, eph: &X25519Public) {
        if REPLAY == 0 {
            return;
        }
        if let Some(s) = self.seen.get_mut(self.seen_pos) {
            *s = Seen {
                ephemeral: eph.0,
                used: true,
            };
        }
        self.seen_pos = (self.seen_pos + 1) % REPLAY;
    }

    fn take_slot(&mut self, now_ms: u64, timeout_ms: u64) -> Result<u64, HandshakeError> {
        self.reclaim_expired(now_ms, timeout_ms);
        let ticket = self.next_ticket;
        let free = self
            .slots
            .iter_mut()
            .find(|s| s.is_none())
            .ok_or(HandshakeError::TooManyHalfOpen)?;
        *free = Some(Slot {
            ticket,
            started_ms: now_ms,
        });
        self.next_ticket = self.next_ticket.wrapping_add(1);
        Ok(ticket)
    }

    /// Admits an allowlisted message 1: reclaims expired slots, refuses an
    /// ephemeral key seen recently ([`HandshakeError::Replayed`]), takes a
    /// half-open slot ([`HandshakeError::TooManyHalfOpen`] when all are
    /// live) and remembers the ephemeral key. No cryptography: this is the
    /// only step of message 1 that needs the table (a shared table's lock
    /// is held for it alone). A refused candidate leaves no trace (a
    /// message 1 refused as busy may be sent again).
    pub fn admit(
        &mut self,
        candidate: Candidate,
        now_ms: u64,
        timeout_ms: u64,
    ) -> Result<Admitted, HandshakeError> {
        if self.was_seen(&candidate.hello.m1.ephemeral) {
            return Err(HandshakeError::Replayed);
        }
        let ticket = self.take_slot(now_ms, timeout_ms)?;
        self.remember(&candidate.hello.m1.ephemeral);
        Ok(Admitted {
            slot: SlotTicket { ticket },
            started_ms: now_ms,
            timeout_ms,
            hello: candidate.hello,
            initiator: candidate.initiator,
        })
    }

    /// Gives a half-open slot back (a finished, failed or abandoned
    /// handshake). A ticket whose slot already expired is a no-op.
    pub fn release(&mut self, slot: SlotTicket) {
        for s in self.slots.iter_mut() {
            if matches!(s, Some(x) if x.ticket == slot.ticket) {
                *s = None;
            }
        }
    }
}

/// Message 1 after its cheap checks (version, strict encoding, chain tag):
/// who claims to connect. Nothing is verified yet.
#[derive(Debug, Clone)]
pub struct Hello {
    m1: Message1,
    raw: [u8; MESSAGE1_LEN],
}

impl Hello {
    /// Parses message 1: the version first (so another version is named as
    /// such), then the strict encoding, then the chain tag. No table, no
    /// cryptography.
    pub fn parse(config: &HandshakeConfig, msg1: &[u8]) -> Result<Hello, HandshakeError> {
        Self::parse_version(VERSION, config, msg1)
    }

    /// [`parse`](Self::parse) on a peer link's listener: message 1 must
    /// carry [`PEER_VERSION`] (a device's message 1 is refused
    /// `VersionMismatch`).
    #[cfg(feature = "peer")]
    pub fn parse_peer(config: &HandshakeConfig, msg1: &[u8]) -> Result<Hello, HandshakeError> {
        Self::parse_version(PEER_VERSION, config, msg1)
    }

    #[inline(always)]
    fn parse_version(
        version: u8,
        config: &HandshakeConfig,
        msg1: &[u8],
    ) -> Result<Hello, HandshakeError> {
        match msg1.first() {
            None => return Err(HandshakeError::Malformed),
            Some(&v) if v != version => return Err(HandshakeError::VersionMismatch),
            Some(_) => {}
        }
        let m1: Message1 =
            decode_exact(msg1, MESSAGE1_LEN).map_err(|_| HandshakeError::Malformed)?;
        if m1.chain_tag != config.chain.tag() {
            return Err(HandshakeError::WrongChain);
        }
        let mut raw = [0u8; MESSAGE1_LEN];
        raw.copy_from_slice(msg1.get(..MESSAGE1_LEN).ok_or(HandshakeError::Malformed)?);
        Ok(Hello { m1, raw })
    }

    /// The key id the initiator claims (not authenticated until message 3).
    pub fn initiator_id(&self) -> KeyId {
        self.m1.initiator
    }

    /// The initiator's ephemeral X25519 key (fresh per handshake).
    pub fn ephemeral(&self) -> X25519Public {
        self.m1.ephemeral
    }

    /// Looks the claimed identity up in `allowlist` (the application's
    /// cheap check, before any table or cryptography).
    pub fn check<A: Allowlist + ?Sized>(self, allowlist: &A) -> Result<Candidate, HandshakeError> {
        let initiator = allowlist.lookup(&self.m1.initiator).map_err(|r| match r {
            Denial::Unknown => HandshakeError::UnknownIdentity,
            Denial::NotPermitted => HandshakeError::NotPermitted,
        })?;
        if initiator.public().key_id() != self.m1.initiator {
            return Err(HandshakeError::UnknownIdentity);
        }
        Ok(Candidate {
            hello: self,
            initiator,
        })
    }
}

/// An allowlisted message 1, not yet admitted to a table.
#[derive(Debug, Clone)]
pub struct Candidate {
    hello: Hello,
    initiator: VerifyingKey,
}

impl Candidate {
    /// The initiator's registered key (not yet proven: message 3 does).
    pub fn initiator(&self) -> &PublicKey {
        self.initiator.public()
    }
}

/// A message 1 admitted by [`ResponderTable::admit`]: it holds a half-open
/// slot; [`respond`](Admitted::respond) does the cryptography without the
/// table.
#[must_use = "an admitted handshake holds a half-open slot"]
pub struct Admitted {
    slot: SlotTicket,
    started_ms: u64,
    timeout_ms: u64,
    hello: Hello,
    initiator: VerifyingKey,
}

impl fmt::Debug for Admitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admitted")
            .field("initiator", &self.hello.m1.initiator)
            .field("started_ms", &self.started_ms)
            .finish_non_exhaustive()
    }
}

/// A handshake step that failed after admission: the error, and the
/// half-open slot to give back with [`ResponderTable::release`].
#[must_use = "the half-open slot must be released"]
#[derive(Debug)]
pub struct Failed {
    /// Why the step failed.
    pub error: HandshakeError,
    /// The slot to release.
    pub slot: SlotTicket,
}

impl Admitted {
    /// The initiator's key id.
    pub fn initiator_id(&self) -> KeyId {
        self.hello.m1.initiator
    }

    /// Writes message 2 ([`MESSAGE2_LEN`] bytes) into `out`: the
    /// responder's ephemeral key, X25519, HKDF and its signature. Needs no
    /// table (runs outside any shared lock). On error the slot comes back
    /// in [`Failed`] to be released.
    pub fn respond<R: rand_core::CryptoRng + ?Sized>(
        self,
        config: &HandshakeConfig,
        identity: &Keypair,
        rng: &mut R,
        out: &mut [u8],
    ) -> Result<(Responder, usize), Failed> {
        let Admitted {
            slot,
            started_ms,
            timeout_ms,
            hello,
            initiator,
        } = self;
        if out.len() < MESSAGE2_LEN {
            return Err(Failed {
                error: HandshakeError::BufferTooSmall,
                slot,
            });
        }
        match respond_crypto(config, identity, &hello, &initiator, rng, out) {
            Ok((prk, th3, n)) => Ok((
                Responder {
                    slot,
                    started_ms,
                    timeout_ms,
                    initiator,
                    initiator_id: hello.m1.initiator,
                    prk,
                    th3,
                },
                n,
            )),
            Err(error) => Err(Failed { error, slot }),
        }
    }

    /// Gives up before message 2, returning the slot (to release under a
    /// lock taken later).
    pub fn into_slot(self) -> SlotTicket {
        self.slot
    }

    /// Gives up before message 2 and frees the slot.
    pub fn abort<const HALF_OPEN: usize, const REPLAY: usize>(
        self,
        table: &mut ResponderTable<HALF_OPEN, REPLAY>,
    ) {
        table.release(self.slot);
    }
}

fn respond_crypto<R: rand_core::CryptoRng + ?Sized>(
    config: &HandshakeConfig,
    identity: &Keypair,
    hello: &Hello,
    initiator: &VerifyingKey,
    rng: &mut R,
    out: &mut [u8],
) -> Result<(SecretKey, Hash32, usize), HandshakeError> {
    let ephemeral = X25519Secret::generate(rng);
    let eph_pub = ephemeral.public();
    let dh = ephemeral
        .diffie_hellman(&hello.m1.ephemeral)
        .map_err(|_| HandshakeError::Malformed)?;
    drop(ephemeral);
    let me = identity.public();
    let my_id = me.key_id();
    let th2 = th2(
        &config.chain,
        &hello.raw,
        initiator.public(),
        &my_id,
        &eph_pub,
        &me,
    );
    let prk = hkdf_extract(&th2.0, dh.as_bytes());
    drop(dh);
    let mac2 = mac(&prk, label::MAC2, &th2);
    let sig2 = sign_parts(identity, label::SIG2, &th2, &mac2);
    let m2 = Message2 {
        responder: my_id,
        ephemeral: eph_pub,
        signature: sig2,
    };
    let n = encode_to_slice(&m2, out)
        .map_err(|_| HandshakeError::BufferTooSmall)?
        .len();
    let th3 = th_next(label::TH3, &th2, &sig2);
    Ok((prk, th3, n))
}

/// The responder after sending message 2, waiting for message 3. Holds a
/// half-open slot of its [`ResponderTable`] until the slot is released
/// (after [`verify`](Responder::verify), or by `finish` or `abort`) or
/// expires.
pub struct Responder {
    slot: SlotTicket,
    started_ms: u64,
    timeout_ms: u64,
    initiator: VerifyingKey,
    initiator_id: KeyId,
    prk: SecretKey,
    th3: Hash32,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("initiator", &self.initiator_id)
            .field("started_ms", &self.started_ms)
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// Processes message 1 and writes message 2 ([`MESSAGE2_LEN`] bytes)
    /// into `out`, all steps in one call: [`Hello::parse`],
    /// [`Hello::check`], [`ResponderTable::admit`], [`Admitted::respond`].
    ///
    /// Checks, in this order and before any Diffie–Hellman or signature:
    /// version, encoding, chain tag, output buffer, `allowlist`, replay
    /// cache, half-open admission. A table shared behind a lock should use
    /// the steps instead, holding the lock for `admit` only.
    #[allow(clippy::too_many_arguments)]
    pub fn respond<A, R, const HALF_OPEN: usize, const REPLAY: usize>(
        config: &HandshakeConfig,
        identity: &Keypair,
        table: &mut ResponderTable<HALF_OPEN, REPLAY>,
        allowlist: &A,
        msg1: &[u8],
        now_ms: u64,
        rng: &mut R,
        out: &mut [u8],
    ) -> Result<(Responder, usize), HandshakeError>
    where
        A: Allowlist + ?Sized,
        R: rand_core::CryptoRng + ?Sized,
    {
        let hello = Hello::parse(config, msg1)?;
        if out.len() < MESSAGE2_LEN {
            return Err(HandshakeError::BufferTooSmall);
        }
        let candidate = hello.check(allowlist)?;
        let admitted = table.admit(candidate, now_ms, config.timeout_ms)?;
        admitted.respond(config, identity, rng, out).map_err(|f| {
            table.release(f.slot);
            f.error
        })
    }

    /// The initiator's key id (claimed in message 1, not yet authenticated).
    pub fn initiator_id(&self) -> KeyId {
        self.initiator_id
    }

    /// Processes message 3 without the table: verifies the initiator's
    /// signature with the strict rule ([`VerifyingKey::verify_parts`]),
    /// which also confirms the shared key. Returns the half-open slot (to
    /// give back with [`ResponderTable::release`], on success and on
    /// error) and the outcome.
    pub fn verify(
        self,
        msg3: &[u8],
        now_ms: u64,
    ) -> (SlotTicket, Result<Established, HandshakeError>) {
        let Responder {
            slot,
            started_ms,
            timeout_ms,
            initiator,
            initiator_id,
            prk,
            th3,
        } = self;
        let r = verify_message3(
            started_ms,
            timeout_ms,
            &initiator,
            initiator_id,
            &prk,
            &th3,
            msg3,
            now_ms,
        );
        (slot, r)
    }

    /// Processes message 3 ([`verify`](Responder::verify)) and releases the
    /// half-open slot (on success and on error).
    pub fn finish<const HALF_OPEN: usize, const REPLAY: usize>(
        self,
        table: &mut ResponderTable<HALF_OPEN, REPLAY>,
        msg3: &[u8],
        now_ms: u64,
    ) -> Result<Established, HandshakeError> {
        let (slot, r) = self.verify(msg3, now_ms);
        table.release(slot);
        r
    }

    /// Gives up this handshake and frees its half-open slot.
    pub fn abort<const HALF_OPEN: usize, const REPLAY: usize>(
        self,
        table: &mut ResponderTable<HALF_OPEN, REPLAY>,
    ) {
        table.release(self.slot);
    }

    /// Gives up this handshake, returning its slot (to release later, e.g.
    /// under a lock taken after the state was dropped).
    pub fn into_slot(self) -> SlotTicket {
        self.slot
    }
}

#[allow(clippy::too_many_arguments)]
fn verify_message3(
    started_ms: u64,
    timeout_ms: u64,
    initiator: &VerifyingKey,
    initiator_id: KeyId,
    prk: &SecretKey,
    th3: &Hash32,
    msg3: &[u8],
    now_ms: u64,
) -> Result<Established, HandshakeError> {
    if elapsed(started_ms, now_ms) > timeout_ms {
        return Err(HandshakeError::Timeout);
    }
    let m3: Message3 = decode_exact(msg3, MESSAGE3_LEN).map_err(|_| HandshakeError::Malformed)?;
    let mac3 = mac(prk, label::MAC3, th3);
    let ctx_len = [label::SIG3.len() as u8];
    let parts = signed_parts(&ctx_len, label::SIG3, th3, &mac3);
    initiator
        .verify_parts(&parts, &m3.signature)
        .map_err(|_| HandshakeError::BadSignature)?;
    let th4 = th_next(label::TH4, th3, &m3.signature);
    let (i2r, r2i) = session_keys(prk, &th4);
    Ok(Established {
        peer: *initiator.public(),
        peer_id: initiator_id,
        transcript: th4,
        session: Session::from_secret_keys(r2i, i2r),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blame_splits_caller_misuse_from_peer_faults() {
        assert_eq!(HandshakeError::BufferTooSmall.blame(), Blame::Caller);
        assert_eq!(HandshakeError::IdentityMismatch.blame(), Blame::Caller);
        assert_eq!(HandshakeError::TooManyHalfOpen.blame(), Blame::Capacity);
        for e in [
            HandshakeError::BadSignature,
            HandshakeError::Malformed,
            HandshakeError::UnknownIdentity,
            HandshakeError::UntrustedResponder,
            HandshakeError::Timeout,
        ] {
            assert_eq!(e.blame(), Blame::Peer, "{e}");
        }
    }

    /// `sign_parts` once skipped a part that did not fit its buffer, so it
    /// would have signed other bytes than the peer verifies. Now every part
    /// is copied: for both labels the signature is over exactly
    /// `len(ctx) || ctx || TH || MAC` and verifies against `signed_parts`.
    #[test]
    fn sign_parts_signs_every_part() {
        let kp = Keypair::from_seed([3; 32]);
        let vk = VerifyingKey::from_public(&kp.public()).unwrap();
        let th = Hash32([0xa5; 32]);
        let mac = SecretKey([0x5a; KEY_LEN]);
        for ctx in [label::SIG2, label::SIG3] {
            let sig = sign_parts(&kp, ctx, &th, &mac);
            let mut whole = std::vec![ctx.len() as u8];
            whole.extend_from_slice(ctx.as_bytes());
            whole.extend_from_slice(&th.0);
            whole.extend_from_slice(mac.as_bytes());
            assert_eq!(whole.len(), 1 + ctx.len() + 64);
            assert_eq!(sig, kp.sign(&whole), "{ctx}");
            let len = [ctx.len() as u8];
            assert_eq!(
                vk.verify_parts(&signed_parts(&len, ctx, &th, &mac), &sig),
                Ok(())
            );
            assert!(ctx.len() <= SIG_LABEL_MAX);
        }
    }
}
