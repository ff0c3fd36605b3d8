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
#[non_exhaustive]
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

const _: () = assert!(KEY_LEN <= HKDF_MAX_OUTPUT);

/// HKDF-Expand to one 32-byte key.
pub fn hkdf_expand_key(prk: &SecretKey, info_parts: &[&[u8]]) -> SecretKey {
    let mut k = SecretKey([0; KEY_LEN]);
    match hkdf_expand(prk, info_parts, &mut k.0) {
        Ok(()) => k,
        // A PRK is a 32-byte SHA-256 output and one key is KEY_LEN bytes,
        // at most HKDF_MAX_OUTPUT (asserted at compile time below): never an
        // all-zero key.
        Err(e) => unreachable!("HKDF-Expand of one key cannot fail: {e}"),
    }
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

#[cfg(test)]
mod tests {
    //! Known-answer tests from the RFCs, through this module's wrappers.
    use super::*;
    use std::vec::Vec;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }
    fn h32(s: &str) -> [u8; 32] {
        h(s).try_into().unwrap()
    }

    /// RFC 7748 §5.2: the two scalar-multiplication vectors (the second has
    /// the u-coordinate's top bit set, which must be masked).
    #[test]
    fn rfc7748_section_5_2() {
        let cases = [
            (
                "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
                "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
                "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
            ),
            (
                "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
                "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
                "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
            ),
        ];
        for (k, u, out) in cases {
            let s = X25519Secret::from_bytes(h32(k));
            let shared = s.diffie_hellman(&X25519Public(h32(u))).unwrap();
            assert_eq!(shared.as_bytes(), &h32(out));
        }
    }

    /// RFC 7748 §5.2 iterated vector: `k, u = X25519(k, u), k`.
    fn iterate(n: usize) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[0] = 9;
        let mut u = k;
        for _ in 0..n {
            let out = X25519Secret::from_bytes(k)
                .diffie_hellman(&X25519Public(u))
                .unwrap();
            u = k;
            k = *out.as_bytes();
        }
        k
    }

    #[test]
    fn rfc7748_iterated() {
        assert_eq!(
            iterate(1),
            h32("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079")
        );
        assert_eq!(
            iterate(1000),
            h32("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51")
        );
    }

    /// RFC 7748 §6.1: Alice and Bob.
    #[test]
    fn rfc7748_section_6_1() {
        let a = X25519Secret::from_bytes(h32(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        let b = X25519Secret::from_bytes(h32(
            "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        ));
        let a_pub = a.public();
        let b_pub = b.public();
        assert_eq!(
            a_pub.0,
            h32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        assert_eq!(
            b_pub.0,
            h32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
        );
        let k = h32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(a.diffie_hellman(&b_pub).unwrap().as_bytes(), &k);
        assert_eq!(b.diffie_hellman(&a_pub).unwrap().as_bytes(), &k);
    }

    /// Small-order peer keys give an all-zero secret: refused.
    #[test]
    fn x25519_rejects_small_order_points() {
        let s = X25519Secret::from_bytes([0x42; 32]);
        let small_order = [
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0100000000000000000000000000000000000000000000000000000000000000",
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
            "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        ];
        for p in small_order {
            assert_eq!(
                s.diffie_hellman(&X25519Public(h32(p))).unwrap_err(),
                CryptoError::WeakSharedSecret,
                "{p}"
            );
        }
    }

    /// RFC 8439 §2.8.2: the AEAD vector, sealed and opened in place.
    #[test]
    fn rfc8439_aead() {
        let key = SecretKey::from_bytes(h32(
            "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
        ));
        let nonce: [u8; 12] = h("070000004041424344454647").try_into().unwrap();
        let ad = h("50515253c0c1c2c3c4c5c6c7");
        let pt = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let ct = h(
            "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116",
        );
        let tag: [u8; 16] = h("1ae10b594f09e26a7e902ecbd0600691").try_into().unwrap();
        let mut buf = pt.to_vec();
        assert_eq!(seal_in_place(&key, &nonce, &ad, &mut buf).unwrap(), tag);
        assert_eq!(buf, ct);
        open_in_place(&key, &nonce, &ad, &mut buf, &tag).unwrap();
        assert_eq!(&buf[..], &pt[..]);
        // any change is refused
        let mut bad = ct.clone();
        bad[3] ^= 1;
        assert_eq!(
            open_in_place(&key, &nonce, &ad, &mut bad, &tag),
            Err(CryptoError::Decrypt)
        );
        let mut buf = ct.clone();
        assert_eq!(
            open_in_place(&key, &nonce, &ad[1..], &mut buf, &tag),
            Err(CryptoError::Decrypt)
        );
    }

    /// RFC 5869 Appendix A, test cases 1–3 (SHA-256).
    type HkdfCase = (Vec<u8>, Vec<u8>, Vec<u8>, &'static str, &'static str);

    #[test]
    fn rfc5869_hkdf() {
        let range = |a: u8, b: u8| (a..=b).collect::<Vec<u8>>();
        let cases: [HkdfCase; 3] = [
            (
                std::vec![0x0b; 22],
                range(0x00, 0x0c),
                range(0xf0, 0xf9),
                "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
                "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
            ),
            (
                range(0x00, 0x4f),
                range(0x60, 0xaf),
                range(0xb0, 0xff),
                "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
                "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87",
            ),
            (
                std::vec![0x0b; 22],
                Vec::new(),
                Vec::new(),
                "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
                "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
            ),
        ];
        for (ikm, salt, info, prk_hex, okm_hex) in cases {
            let prk = hkdf_extract(&salt, &ikm);
            assert_eq!(prk.as_bytes().to_vec(), h(prk_hex));
            let want = h(okm_hex);
            let mut okm = std::vec![0u8; want.len()];
            hkdf_expand(&prk, &[&info], &mut okm).unwrap();
            assert_eq!(okm, want);
            // split info gives the same output
            if info.len() > 3 {
                let mut okm2 = std::vec![0u8; want.len()];
                hkdf_expand(&prk, &[&info[..3], &info[3..]], &mut okm2).unwrap();
                assert_eq!(okm2, want);
            }
        }
        let prk = hkdf_extract(b"", b"x");
        let mut too_long = std::vec![0u8; HKDF_MAX_OUTPUT + 1];
        assert_eq!(
            hkdf_expand(&prk, &[], &mut too_long),
            Err(CryptoError::OutputTooLong)
        );
    }

    /// The identity-derived X25519 keys agree with each other (and match
    /// libsodium's conversion, which is pinned in tests/vectors/kdf.json).
    #[test]
    fn identity_conversion_agrees() {
        let a = Keypair::from_seed([1; 32]);
        let b = Keypair::from_seed([2; 32]);
        let sa = X25519Secret::from_identity(&a);
        let sb = X25519Secret::from_identity(&b);
        let pa = X25519Public::from_identity(&a.public()).unwrap();
        let pb = X25519Public::from_identity(&b.public()).unwrap();
        assert_eq!(sa.public(), pa);
        assert_eq!(sb.public(), pb);
        assert_eq!(
            sa.diffie_hellman(&pb).unwrap().as_bytes(),
            sb.diffie_hellman(&pa).unwrap().as_bytes()
        );
    }

    /// `hkdf_expand_key` once ignored an HKDF error with `let _ =`, which
    /// would have left an all-zero key. It has no such arm now: the key is
    /// exactly the first 32 bytes of HKDF-Expand.
    #[test]
    fn hkdf_expand_key_is_the_expand_output() {
        let prk = hkdf_extract(b"salt", b"input keying material");
        let parts: [&[u8]; 2] = [b"sensorchain/", b"test"];
        let k = hkdf_expand_key(&prk, &parts);
        let mut want = [0u8; KEY_LEN];
        hkdf_expand(&prk, &parts, &mut want).unwrap();
        assert_eq!(k.as_bytes(), &want);
        assert_ne!(k.as_bytes(), &[0u8; KEY_LEN]);
    }
}
