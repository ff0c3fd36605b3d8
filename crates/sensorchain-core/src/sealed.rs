//! Sealed payloads: a reading encrypted once, readable only by its listed
//! readers, verifiable by anyone.
//!
//! The plaintext is encrypted under a fresh random 32-byte content key with
//! ChaCha20-Poly1305. The content key is wrapped for each reader: one
//! ephemeral X25519 key per payload, X25519 with the reader's key derived
//! from the reader's Ed25519 identity, HKDF-SHA256, ChaCha20-Poly1305 over
//! the content key. A caller-supplied *binding* (chain id, device, stream,
//! sequence — chosen by the transaction that carries the payload) is
//! authenticated by every AEAD, so a sealed payload cannot be transplanted
//! into another transaction. The device's signature is the carrying
//! transaction's: nothing is signed here.
//!
//! Byte layout and derivations: `docs/PROTOCOL.md`, "Sealed payloads".

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::crypto::{self, SecretKey, X25519Public, X25519Secret, hkdf_expand_key, hkdf_extract};
use crate::hash::{Hash32, TaggedHasher, tagged_hash};
use crate::identity::{KeyId, Keypair, PublicKey};
use crate::serde_bytes::bytes_newtype_serde;

/// Version of the sealed payload format.
pub const SEALED_VERSION: u8 = 1;
/// Most readers one payload can be wrapped for.
pub const MAX_RECIPIENTS: usize = 4;
/// Longest plaintext (a postcard-encoded `reading::Vital` fits easily).
pub const MAX_SEALED_PLAINTEXT: usize = 96;
/// Length of a Poly1305 tag.
pub const SEALED_TAG_LEN: usize = 16;
/// Length of a wrapped content key: 32 bytes of ciphertext and a 16-byte tag.
pub const WRAPPED_KEY_LEN: usize = 32 + SEALED_TAG_LEN;
/// Capacity of [`SealedPayload::ciphertext`].
pub const MAX_SEALED_CIPHERTEXT: usize = MAX_SEALED_PLAINTEXT + SEALED_TAG_LEN;
/// Upper bound of an encoded [`SealedPayload`]: version (1), ephemeral (32),
/// recipient count (1) and entries (4 × 56), ciphertext length (1) and bytes (112).
pub const MAX_SEALED_ENCODED_LEN: usize =
    1 + 32 + 1 + MAX_RECIPIENTS * (8 + WRAPPED_KEY_LEN) + 1 + MAX_SEALED_CIPHERTEXT;

/// A content key encrypted for one reader: `ciphertext (32) || tag (16)`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct WrappedKey(pub [u8; WRAPPED_KEY_LEN]);
bytes_newtype_serde!(WrappedKey, 48);

impl core::fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("WrappedKey(")?;
        crate::hash::write_hex(f, &self.0)?;
        f.write_str(")")
    }
}

/// One reader of a sealed payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The reader's key id (`PublicKey::key_id` of its Ed25519 identity).
    pub key_id: KeyId,
    /// The content key, wrapped for this reader.
    pub wrapped: WrappedKey,
}

/// A reading encrypted for a fixed list of readers (serde type; decode with
/// [`crate::codec::decode_exact`] and [`MAX_SEALED_ENCODED_LEN`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedPayload {
    /// Format version, [`SEALED_VERSION`].
    pub version: u8,
    /// The payload's ephemeral X25519 public key.
    pub ephemeral: X25519Public,
    /// The readers, in the order the sealer listed them (no duplicates).
    pub recipients: heapless::Vec<Recipient, MAX_RECIPIENTS>,
    /// The plaintext encrypted under the content key, followed by the tag.
    pub ciphertext: heapless::Vec<u8, MAX_SEALED_CIPHERTEXT>,
}

/// Domain-separation labels of sealed payloads.
pub mod label {
    /// Hash of the caller's binding (associated data of every AEAD).
    pub const BINDING: &str = "sensorchain/sealed/v1/binding";
    /// HKDF info prefix of a recipient's key-wrapping key.
    pub const WRAP: &str = "sensorchain/sealed/v1/wrap";
    /// Hash of the header (associated data of the content encryption).
    pub const HEADER: &str = "sensorchain/sealed/v1/header";
}

/// Why a payload could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SealError {
    /// The plaintext is longer than [`MAX_SEALED_PLAINTEXT`].
    PlaintextTooLong,
    /// No recipients, or more than [`MAX_RECIPIENTS`].
    RecipientCount,
    /// The same recipient (key id) is listed twice.
    DuplicateRecipient,
    /// A recipient key cannot be converted to X25519 (not a valid point, or
    /// of small order).
    InvalidRecipient,
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SealError::PlaintextTooLong => "plaintext too long to seal",
            SealError::RecipientCount => "recipient count out of range",
            SealError::DuplicateRecipient => "recipient listed twice",
            SealError::InvalidRecipient => "recipient key unusable for X25519",
        })
    }
}

impl core::error::Error for SealError {}

/// Why a sealed payload could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum OpenError {
    /// The payload's version is not [`SEALED_VERSION`].
    Version,
    /// The reader is not among the recipients.
    NotARecipient,
    /// The wrapped key or the ciphertext does not authenticate (modified
    /// payload, wrong binding, or a payload transplanted from elsewhere).
    Decrypt,
    /// The ciphertext is shorter than a tag, or the structure is invalid
    /// (a small-order ephemeral key).
    Malformed,
    /// The output buffer is smaller than the plaintext.
    BufferTooSmall,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpenError::Version => "unknown sealed payload version",
            OpenError::NotARecipient => "reader is not a recipient",
            OpenError::Decrypt => "sealed payload does not authenticate",
            OpenError::Malformed => "malformed sealed payload",
            OpenError::BufferTooSmall => "output buffer too small",
        })
    }
}

impl core::error::Error for OpenError {}

/// All-zero nonce: every key below encrypts exactly one message (the
/// content key is fresh per payload, the wrapping key is unique per payload
/// and recipient), so a fixed nonce is safe.
const ZERO_NONCE: [u8; crypto::NONCE_LEN] = [0; crypto::NONCE_LEN];

fn binding_hash(binding: &[u8]) -> Hash32 {
    tagged_hash(label::BINDING, &[binding])
}

/// The key-wrapping key of one recipient:
/// `HKDF-Expand(HKDF-Extract(salt = E || R, ikm = X25519(e, R)), WRAP || kid, 32)`
/// where `E` is the ephemeral public key and `R` the recipient's X25519 key.
fn wrapping_key(
    shared: &crypto::SharedSecret,
    ephemeral: &X25519Public,
    recipient_x: &X25519Public,
    kid: &KeyId,
) -> SecretKey {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(&ephemeral.0);
    salt[32..].copy_from_slice(&recipient_x.0);
    let prk = hkdf_extract(&salt, shared.as_bytes());
    hkdf_expand_key(&prk, &[label::WRAP.as_bytes(), &kid.0])
}

/// Associated data of the content encryption: a hash of everything else in
/// the payload and the binding, so no field can be swapped.
fn header_hash(
    version: u8,
    ephemeral: &X25519Public,
    recipients: &[Recipient],
    binding: &Hash32,
) -> Hash32 {
    let mut h = TaggedHasher::new(label::HEADER);
    h.update(&[version]).update(&ephemeral.0);
    // The recipient count fits a byte (at most MAX_RECIPIENTS).
    h.update(&[recipients.len() as u8]);
    for r in recipients {
        h.update(&r.key_id.0).update(&r.wrapped.0);
    }
    h.update(&binding.0);
    h.finalize()
}

/// Seals `plaintext` for `recipients` (1 to [`MAX_RECIPIENTS`] Ed25519
/// identities, no duplicates), bound to `binding` (the carrying
/// transaction's chain id, device, stream and sequence, encoded by the
/// caller; the same bytes are needed to open).
pub fn seal<R: rand_core::CryptoRng + ?Sized>(
    plaintext: &[u8],
    recipients: &[PublicKey],
    binding: &[u8],
    rng: &mut R,
) -> Result<SealedPayload, SealError> {
    if plaintext.len() > MAX_SEALED_PLAINTEXT {
        return Err(SealError::PlaintextTooLong);
    }
    if recipients.is_empty() || recipients.len() > MAX_RECIPIENTS {
        return Err(SealError::RecipientCount);
    }
    let bh = binding_hash(binding);
    let content_key = SecretKey::generate(rng);
    let eph = X25519Secret::generate(rng);
    let eph_pub = eph.public();

    let mut list: heapless::Vec<Recipient, MAX_RECIPIENTS> = heapless::Vec::new();
    for pk in recipients {
        let kid = pk.key_id();
        if list.iter().any(|r| r.key_id == kid) {
            return Err(SealError::DuplicateRecipient);
        }
        let rx = X25519Public::from_identity(pk).map_err(|_| SealError::InvalidRecipient)?;
        let shared = eph
            .diffie_hellman(&rx)
            .map_err(|_| SealError::InvalidRecipient)?;
        let kek = wrapping_key(&shared, &eph_pub, &rx, &kid);
        let mut wrapped = [0u8; WRAPPED_KEY_LEN];
        wrapped[..32].copy_from_slice(content_key.as_bytes());
        let tag = crypto::seal_in_place(&kek, &ZERO_NONCE, &bh.0, &mut wrapped[..32])
            .map_err(|_| SealError::PlaintextTooLong)?;
        wrapped[32..].copy_from_slice(&tag);
        list.push(Recipient {
            key_id: kid,
            wrapped: WrappedKey(wrapped),
        })
        .map_err(|_| SealError::RecipientCount)?;
    }

    let hh = header_hash(SEALED_VERSION, &eph_pub, &list, &bh);
    let mut ciphertext: heapless::Vec<u8, MAX_SEALED_CIPHERTEXT> = heapless::Vec::new();
    ciphertext
        .extend_from_slice(plaintext)
        .map_err(|_| SealError::PlaintextTooLong)?;
    let tag = crypto::seal_in_place(&content_key, &ZERO_NONCE, &hh.0, &mut ciphertext)
        .map_err(|_| SealError::PlaintextTooLong)?;
    ciphertext
        .extend_from_slice(&tag)
        .map_err(|_| SealError::PlaintextTooLong)?;
    Ok(SealedPayload {
        version: SEALED_VERSION,
        ephemeral: eph_pub,
        recipients: list,
        ciphertext,
    })
}

impl SealedPayload {
    /// The key ids of the readers, for a gateway that validates the payload
    /// against the access rules without being able to read it.
    pub fn recipients(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.recipients.iter().map(|r| r.key_id)
    }

    /// True when `id` is a listed reader.
    pub fn is_recipient(&self, id: &KeyId) -> bool {
        self.recipients.iter().any(|r| r.key_id == *id)
    }

    /// Length of the plaintext inside.
    pub fn plaintext_len(&self) -> usize {
        self.ciphertext.len().saturating_sub(SEALED_TAG_LEN)
    }

    /// Structural checks a gateway can make without a key: version, 1 to
    /// [`MAX_RECIPIENTS`] distinct recipients, a ciphertext with a tag.
    pub fn check_structure(&self) -> Result<(), OpenError> {
        if self.version != SEALED_VERSION {
            return Err(OpenError::Version);
        }
        if self.recipients.is_empty() || self.ciphertext.len() < SEALED_TAG_LEN {
            return Err(OpenError::Malformed);
        }
        for (i, r) in self.recipients.iter().enumerate() {
            if self
                .recipients
                .iter()
                .skip(i + 1)
                .any(|o| o.key_id == r.key_id)
            {
                return Err(OpenError::Malformed);
            }
        }
        Ok(())
    }

    /// Opens the payload as `reader`, with the same `binding` it was sealed
    /// with; writes the plaintext to the front of `out` and returns it.
    pub fn open<'o>(
        &self,
        reader: &Keypair,
        binding: &[u8],
        out: &'o mut [u8],
    ) -> Result<&'o [u8], OpenError> {
        self.check_structure()?;
        let me = reader.public();
        let kid = me.key_id();
        let entry = self
            .recipients
            .iter()
            .find(|r| r.key_id == kid)
            .ok_or(OpenError::NotARecipient)?;
        let n = self.plaintext_len();
        if out.len() < n {
            return Err(OpenError::BufferTooSmall);
        }
        let bh = binding_hash(binding);

        let secret = X25519Secret::from_identity(reader);
        let my_x = secret.public();
        let shared = secret
            .diffie_hellman(&self.ephemeral)
            .map_err(|_| OpenError::Malformed)?;
        let kek = wrapping_key(&shared, &self.ephemeral, &my_x, &kid);
        drop(shared);
        let mut ck = [0u8; 32];
        ck.copy_from_slice(&entry.wrapped.0[..32]);
        let mut tag = [0u8; SEALED_TAG_LEN];
        tag.copy_from_slice(&entry.wrapped.0[32..]);
        let opened = crypto::open_in_place(&kek, &ZERO_NONCE, &bh.0, &mut ck, &tag);
        let content_key = SecretKey::from_bytes(ck);
        zeroize::Zeroize::zeroize(&mut ck);
        opened.map_err(|_| OpenError::Decrypt)?;

        let hh = header_hash(self.version, &self.ephemeral, &self.recipients, &bh);
        let (ct, tag_bytes) = self.ciphertext.split_at(n);
        tag.copy_from_slice(tag_bytes);
        let buf = out.get_mut(..n).ok_or(OpenError::BufferTooSmall)?;
        buf.copy_from_slice(ct);
        if crypto::open_in_place(&content_key, &ZERO_NONCE, &hh.0, buf, &tag).is_err() {
            zeroize::Zeroize::zeroize(buf);
            return Err(OpenError::Decrypt);
        }
        Ok(buf)
    }
}
