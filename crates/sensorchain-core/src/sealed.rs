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

use serde::{Deserialize, Serialize};

use crate::crypto::X25519Public;
use crate::identity::KeyId;
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
