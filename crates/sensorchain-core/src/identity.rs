//! Identities: Ed25519 key pairs, public keys, key ids, checksummed
//! addresses, and the one signature rule that decides ledger validity.
//!
//! ```
//! use sensorchain_core::identity::{Keypair, VerifyingKey};
//! let kp = Keypair::from_seed([7; 32]);
//! let sig = kp.sign(b"hello");
//! let vk = VerifyingKey::from_public(&kp.public()).unwrap(); // registration check
//! assert!(vk.verify(b"hello", &sig).is_ok());
//! assert!(vk.verify(b"hullo", &sig).is_err());
//! println!("{}", kp.public().address()); // e.g. S9m3…
//! ```

use core::fmt;
use core::str::FromStr;

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha256, Sha512};
use zeroize::Zeroize;

use crate::hash::{ctx, tagged_hash, write_hex};
use crate::serde_bytes::bytes_newtype_serde;

/// An Ed25519 public key as its 32-byte encoding (not yet validated; see
/// [`VerifyingKey::from_public`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);
bytes_newtype_serde!(PublicKey, 32);

/// An Ed25519 signature `R || S`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);
bytes_newtype_serde!(Signature, 64);

/// A short key id for the wire: the first 8 bytes of
/// `tagged_hash("sensorchain/key-id/v1", pk)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 8]);
bytes_newtype_serde!(KeyId, 8);

impl PublicKey {
    /// The short key id of this key.
    pub fn key_id(&self) -> KeyId {
        let h = tagged_hash(ctx::KEY_ID, &[&self.0]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&h.0[..8]);
        KeyId(id)
    }

    /// The human-readable address of this key.
    pub fn address(&self) -> Address {
        Address::from_public(self)
    }

    /// Verification with ed25519-compact's (cofactored) rule, which accepts a
    /// superset of [`VerifyingKey::verify`]'s signatures. Smaller in flash;
    /// **for devices only, where the verdict does not decide ledger validity**
    /// (a sensor checking its gateway's handshake signature).
    pub fn verify_device(&self, msg: &[u8], sig: &Signature) -> Result<(), SignatureError> {
        let pk = ed25519_compact::PublicKey::new(self.0);
        let s = ed25519_compact::Signature::new(sig.0);
        pk.verify(msg, &s).map_err(|_| SignatureError::Mismatch)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PublicKey(")?;
        write_hex(f, &self.0)?;
        f.write_str(")")
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl FromStr for PublicKey {
    type Err = ParseError;
    /// Parses 64 hex digits.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        crate::hash::parse_hex::<32>(s.trim())
            .map(PublicKey)
            .ok_or(ParseError::BadHex)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signature(")?;
        write_hex(f, &self.0)?;
        f.write_str(")")
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyId(")?;
        write_hex(f, &self.0)?;
        f.write_str(")")
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for PublicKey {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{=[u8]:x}", self.0[..8])
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for KeyId {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{=[u8]:x}", self.0)
    }
}

/// An Ed25519 key pair (the secret half is wiped on drop).
pub struct Keypair {
    inner: ed25519_compact::KeyPair,
}

impl Keypair {
    /// The key pair whose RFC 8032 secret key (seed) is `seed`.
    pub fn from_seed(mut seed: [u8; 32]) -> Self {
        let inner = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
        seed.zeroize();
        Keypair { inner }
    }

    /// A fresh key pair from a caller-supplied cryptographic RNG.
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Self::from_seed(seed)
    }

    /// The 32-byte seed (secret: store it only where secrets belong).
    pub fn seed(&self) -> [u8; 32] {
        *self.inner.sk.seed()
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(*self.inner.pk)
    }

    /// Signs `msg` with deterministic RFC 8032 Ed25519. Callers sign the exact
    /// domain-separated bytes built by the module that owns the structure.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(*self.inner.sk.sign(msg, None))
    }
}

impl Clone for Keypair {
    fn clone(&self) -> Self {
        Keypair::from_seed(self.seed())
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({:?}, secret elided)", self.public())
    }
}

/// Why a public key cannot be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum KeyError {
    /// The bytes are not the encoding of any curve point.
    NotOnCurve,
    /// The point is valid but its encoding is not canonical (y ≥ p, or a
    /// negative zero x).
    NonCanonical,
    /// The point has small order (8 torsion points, the identity among them).
    SmallOrder,
    /// The point has a small-order component (mixed order): not in the
    /// prime-order subgroup.
    MixedOrder,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyError::NotOnCurve => "public key is not a curve point",
            KeyError::NonCanonical => "public key encoding is not canonical",
            KeyError::SmallOrder => "public key has small order",
            KeyError::MixedOrder => "public key is not of prime order (mixed order)",
        })
    }
}

impl core::error::Error for KeyError {}

/// Why a signature does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SignatureError {
    /// `S` is not below the group order `L`.
    NonCanonicalS,
    /// `[S]B − [k]A` does not encode to `R` (includes any non-canonical or
    /// small-order-tainted `R`).
    Mismatch,
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignatureError::NonCanonicalS => "signature scalar S is not canonical (S >= L)",
            SignatureError::Mismatch => "signature does not verify",
        })
    }
}

impl core::error::Error for SignatureError {}

/// A public key that passed registration: canonically encoded, on the curve,
/// of prime order. Only a `VerifyingKey` can verify a signature for the
/// ledger, so no unchecked key ever decides validity.
#[derive(Clone, Copy)]
pub struct VerifyingKey {
    public: PublicKey,
    minus_a: EdwardsPoint,
}

impl PartialEq for VerifyingKey {
    fn eq(&self, o: &Self) -> bool {
        self.public == o.public
    }
}
impl Eq for VerifyingKey {}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", self.public)
    }
}

impl VerifyingKey {
    /// The registration check: decodes and validates `pk`.
    ///
    /// Refuses non-canonical encodings, non-points, small-order and
    /// mixed-order points. Costs about one scalar multiplication (the
    /// prime-order check); do it once per key, not per signature.
    pub fn from_public(pk: &PublicKey) -> Result<Self, KeyError> {
        let compressed = CompressedEdwardsY(pk.0);
        let point = compressed.decompress().ok_or(KeyError::NotOnCurve)?;
        if point.compress().0 != pk.0 {
            return Err(KeyError::NonCanonical);
        }
        if point.is_small_order() {
            return Err(KeyError::SmallOrder);
        }
        if !point.is_torsion_free() {
            return Err(KeyError::MixedOrder);
        }
        Ok(VerifyingKey {
            public: *pk,
            minus_a: -point,
        })
    }

    /// The key's encoding.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// **The ledger's signature rule.** Strict RFC 8032 verification: `S < L`,
    /// `k = SHA-512(R || A || msg) mod L`, and the encoding of
    /// `[S]B − [k]A` must equal the 32 bytes `R` exactly (the cofactorless
    /// equation). The verdict equals OpenSSL's and Go's for every key that
    /// passed [`from_public`](Self::from_public); libsodium agrees except that
    /// it also refuses `R` = identity (a signature only the key's holder can
    /// make, with nonce 0). `tests/consensus_ed25519.rs` pins every case
    /// against OpenSSL and libsodium.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), SignatureError> {
        self.verify_parts(&[msg], sig)
    }

    /// [`verify`](Self::verify) over the concatenation of `parts`, without
    /// building it.
    pub fn verify_parts(&self, parts: &[&[u8]], sig: &Signature) -> Result<(), SignatureError> {
        let mut r = [0u8; 32];
        let mut s = [0u8; 32];
        r.copy_from_slice(&sig.0[..32]);
        s.copy_from_slice(&sig.0[32..]);
        let s: Option<Scalar> = Scalar::from_canonical_bytes(s).into();
        let s = s.ok_or(SignatureError::NonCanonicalS)?;
        let mut h = Sha512::new();
        h.update(r);
        h.update(self.public.0);
        for p in parts {
            h.update(p);
        }
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        let r_check = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &self.minus_a, &s);
        if r_check.compress().0 == r {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// Version byte of addresses (base58 text then starts with `S`).
pub const ADDRESS_VERSION: u8 = 0x3f;

/// A MultiChain-style human-readable address: base58 of
/// `version (1) || tagged_hash("sensorchain/address/v1", pk)[..20] || checksum (4)`,
/// where the checksum is the first 4 bytes of `SHA-256(SHA-256(first 21 bytes))`.
///
/// An address names a key for people; the ledger itself keys on public keys.
///
/// ```
/// use sensorchain_core::identity::{Address, Keypair};
/// let a = Keypair::from_seed([1; 32]).public().address();
/// let text = a.to_string();
/// assert!(text.starts_with('S'));
/// assert_eq!(text.parse::<Address>().unwrap(), a);
/// // one changed character is caught by the checksum
/// let mut bad = text.into_bytes();
/// bad[5] = if bad[5] == b'2' { b'3' } else { b'2' };
/// assert!(core::str::from_utf8(&bad).unwrap().parse::<Address>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub [u8; 25]);

/// Context string of the address hash.
pub const ADDRESS_CTX: &str = "sensorchain/address/v1";

impl Address {
    /// The address of `pk`.
    pub fn from_public(pk: &PublicKey) -> Self {
        let h = tagged_hash(ADDRESS_CTX, &[&pk.0]);
        let mut a = [0u8; 25];
        a[0] = ADDRESS_VERSION;
        a[1..21].copy_from_slice(&h.0[..20]);
        let c = checksum(&a[..21]);
        a[21..].copy_from_slice(&c);
        Address(a)
    }

    /// True if this is the address of `pk`.
    pub fn matches(&self, pk: &PublicKey) -> bool {
        Address::from_public(pk) == *self
    }
}

fn checksum(payload: &[u8]) -> [u8; 4] {
    let once = Sha256::digest(payload);
    let twice = Sha256::digest(once);
    let mut c = [0u8; 4];
    c.copy_from_slice(&twice[..4]);
    c
}

const B58: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // 25 bytes need at most 35 base58 digits.
        let mut digits = [0u8; 40];
        let mut len = 0;
        for &byte in &self.0 {
            let mut carry = byte as u32;
            for d in digits[..len].iter_mut() {
                carry += (*d as u32) << 8;
                *d = (carry % 58) as u8;
                carry /= 58;
            }
            while carry > 0 {
                digits[len] = (carry % 58) as u8;
                len += 1;
                carry /= 58;
            }
        }
        for _ in self.0.iter().take_while(|&&b| b == 0) {
            f.write_str("1")?;
        }
        for &d in digits[..len].iter().rev() {
            write!(f, "{}", B58[d as usize] as char)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

/// Why text could not be parsed as a key or address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ParseError {
    /// A character outside the alphabet, or the wrong length.
    BadHex,
    /// A character outside the base58 alphabet.
    BadBase58,
    /// The decoded address does not have 25 bytes.
    BadLength,
    /// The version byte is not [`ADDRESS_VERSION`].
    BadVersion,
    /// The checksum does not match (a typo).
    BadChecksum,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::BadHex => "expected 64 hex digits",
            ParseError::BadBase58 => "character outside the base58 alphabet",
            ParseError::BadLength => "address has the wrong length",
            ParseError::BadVersion => "address has an unknown version",
            ParseError::BadChecksum => "address checksum does not match (typo?)",
        })
    }
}

impl core::error::Error for ParseError {}

impl FromStr for Address {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let s = s.trim().as_bytes();
        if s.len() > 40 {
            return Err(ParseError::BadLength);
        }
        // big-endian base-256 accumulator, little-end first
        let mut bytes = [0u8; 40];
        let mut len = 0;
        for &c in s {
            let v = B58
                .iter()
                .position(|&d| d == c)
                .ok_or(ParseError::BadBase58)? as u32;
            let mut carry = v;
            for b in bytes[..len].iter_mut() {
                carry += (*b as u32) * 58;
                *b = (carry & 0xff) as u8;
                carry >>= 8;
            }
            while carry > 0 {
                if len == bytes.len() {
                    return Err(ParseError::BadLength);
                }
                bytes[len] = (carry & 0xff) as u8;
                len += 1;
                carry >>= 8;
            }
        }
        let zeros = s.iter().take_while(|&&c| c == b'1').count();
        if zeros + len != 25 {
            return Err(ParseError::BadLength);
        }
        let mut a = [0u8; 25];
        for (i, b) in bytes[..len].iter().enumerate() {
            a[24 - i] = *b;
        }
        if a[0] != ADDRESS_VERSION {
            return Err(ParseError::BadVersion);
        }
        if checksum(&a[..21]) != a[21..] {
            return Err(ParseError::BadChecksum);
        }
        Ok(Address(a))
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            crate::serde_bytes::serialize::<S, 25>(&self.0, s)
        }
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Address;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a base58 address")
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Address, E> {
                    v.parse().map_err(E::custom)
                }
            }
            d.deserialize_str(V)
        } else {
            crate::serde_bytes::deserialize::<D, 25>(d).map(Address)
        }
    }
}

#[cfg(test)]
mod tests;
