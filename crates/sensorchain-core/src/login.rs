//! Logging in to a gateway's HTTP API with a chain identity: the
//! challenge–signature idea of the sensors' handshake applied to people and
//! tools (docs/PROTOCOL.md, "API login").
//!
//! The gateway hands out a fresh random challenge (`nonce`) and an expiry;
//! the client signs the [`LoginChallenge`] (the chain id, the gateway's key,
//! its own key, the nonce and the expiry) with its identity's key; the
//! gateway checks it with [`LoginChallenge::check`] — the one strict
//! signature rule under the identity's registered key — and then the
//! identity's current permissions. The gateway keeps each nonce until it is
//! used once or expires, so a signature cannot be replayed; one made for
//! another chain, another gateway or another purpose verifies nowhere else.
//!
//! ```text
//! message       = gateway (32) || identity (32) || nonce (32) || expires_ms (u64 LE)   (104 bytes)
//! signed bytes  = 0x14 || "sensorchain/login/v1" || chain_id (32) || message          (157 bytes)
//! ```
//!
//! ```
//! use sensorchain_core::hash::ChainId;
//! use sensorchain_core::identity::{Keypair, VerifyingKey};
//! use sensorchain_core::login::{LoginChallenge, LoginError};
//! let (gw, me) = (Keypair::from_seed([2; 32]), Keypair::from_seed([9; 32]));
//! let c = LoginChallenge {
//!     chain_id: ChainId([7; 32]),
//!     gateway: gw.public(),
//!     identity: me.public(),
//!     nonce: [5; 32],
//!     expires_ms: 1_000,
//! };
//! let sig = c.sign(&me);
//! let vk = VerifyingKey::from_public(&me.public()).unwrap();
//! assert_eq!(c.check(&vk, &sig, 1_000), Ok(()));
//! assert_eq!(c.check(&vk, &sig, 1_001), Err(LoginError::Expired));
//! let other_chain = LoginChallenge { chain_id: ChainId([8; 32]), ..c };
//! assert!(matches!(other_chain.check(&vk, &sig, 0), Err(LoginError::BadSignature(_))));
//! ```

use core::fmt;

use crate::hash::{ChainId, ctx};
use crate::identity::{Keypair, PublicKey, Signature, SignatureError, VerifyingKey};
use crate::tx::{SigningCtx, sign_tagged_fixed, verify_tagged};

/// The login signature's context (its length checked at compile time).
const LOGIN_CTX: SigningCtx = SigningCtx::new(ctx::LOGIN);

/// Length of the login message (without the signing prefix).
pub const LOGIN_MESSAGE_LEN: usize = 32 + 32 + 32 + 8;

/// Length of the bytes a login signature covers: `len(ctx) || ctx ||
/// chain_id || message`.
pub const LOGIN_SIGNED_LEN: usize = 1 + ctx::LOGIN.len() + 32 + LOGIN_MESSAGE_LEN;

/// Length of a challenge nonce.
pub const NONCE_LEN: usize = 32;

/// What an identity signs to log in to one gateway of one chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginChallenge {
    /// The chain the gateway serves.
    pub chain_id: ChainId,
    /// The gateway's public key (the login is good at this gateway only).
    pub gateway: PublicKey,
    /// The identity logging in.
    pub identity: PublicKey,
    /// The gateway's fresh random challenge.
    pub nonce: [u8; NONCE_LEN],
    /// The last millisecond (Unix time) at which the signature is accepted.
    pub expires_ms: u64,
}

/// Why a login signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LoginError {
    /// The key given to check with is not the challenge's identity.
    WrongKey,
    /// `now_ms` is after the challenge's expiry.
    Expired,
    /// The signature does not verify under the identity's key (another
    /// chain, gateway, nonce, expiry or key; or not a signature at all).
    BadSignature(SignatureError),
}

impl fmt::Display for LoginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginError::WrongKey => f.write_str("the key is not the challenge's identity"),
            LoginError::Expired => f.write_str("the login challenge has expired"),
            LoginError::BadSignature(e) => write!(f, "login signature refused: {e}"),
        }
    }
}

impl core::error::Error for LoginError {}

impl LoginChallenge {
    /// The message: `gateway || identity || nonce || expires_ms (u64 LE)`.
    pub fn message(&self) -> [u8; LOGIN_MESSAGE_LEN] {
        let mut m = [0u8; LOGIN_MESSAGE_LEN];
        m[..32].copy_from_slice(&self.gateway.0);
        m[32..64].copy_from_slice(&self.identity.0);
        m[64..96].copy_from_slice(&self.nonce);
        m[96..].copy_from_slice(&self.expires_ms.to_le_bytes());
        m
    }

    /// The exact bytes the signature covers: `0x14 || "sensorchain/login/v1"
    /// || chain_id || message`.
    pub fn signed_bytes(&self) -> [u8; LOGIN_SIGNED_LEN] {
        let mut out = [0u8; LOGIN_SIGNED_LEN];
        let c = ctx::LOGIN.len();
        out[0] = c as u8;
        out[1..1 + c].copy_from_slice(ctx::LOGIN.as_bytes());
        out[1 + c..33 + c].copy_from_slice(&self.chain_id.0);
        out[33 + c..].copy_from_slice(&self.message());
        out
    }

    /// Signs the challenge with `kp` (the identity's key pair).
    pub fn sign(&self, kp: &Keypair) -> Signature {
        sign_tagged_fixed(kp, LOGIN_CTX, &self.chain_id, &self.message())
    }

    /// The gateway's check: `vk` is the identity's registered key, `now_ms`
    /// is not after the expiry, and `sig` verifies with the one strict rule
    /// over [`signed_bytes`](Self::signed_bytes). Whether the identity may
    /// log in (its permissions now) and whether the nonce is one the gateway
    /// issued and not yet used are the gateway's to check.
    pub fn check(&self, vk: &VerifyingKey, sig: &Signature, now_ms: u64) -> Result<(), LoginError> {
        if *vk.public() != self.identity {
            return Err(LoginError::WrongKey);
        }
        if now_ms > self.expires_ms {
            return Err(LoginError::Expired);
        }
        verify_tagged(vk, ctx::LOGIN, &self.chain_id, &self.message(), sig)
            .map_err(LoginError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge() -> (LoginChallenge, Keypair) {
        let me = Keypair::from_seed([9; 32]);
        (
            LoginChallenge {
                chain_id: ChainId([7; 32]),
                gateway: Keypair::from_seed([2; 32]).public(),
                identity: me.public(),
                nonce: [5; 32],
                expires_ms: 10_000,
            },
            me,
        )
    }

    #[test]
    fn signs_the_documented_bytes() {
        let (c, me) = challenge();
        let sig = c.sign(&me);
        let vk = VerifyingKey::from_public(&me.public()).unwrap();
        assert_eq!(vk.verify(&c.signed_bytes(), &sig), Ok(()));
        assert_eq!(c.signed_bytes().len(), 157);
        assert_eq!(c.signed_bytes()[0], 20);
    }

    #[test]
    fn every_field_is_bound() {
        let (c, me) = challenge();
        let sig = c.sign(&me);
        let vk = VerifyingKey::from_public(&me.public()).unwrap();
        assert_eq!(c.check(&vk, &sig, 10_000), Ok(()));
        let other = Keypair::from_seed([3; 32]).public();
        let variants = [
            LoginChallenge {
                chain_id: ChainId([8; 32]),
                ..c
            },
            LoginChallenge {
                gateway: other,
                ..c
            },
            LoginChallenge {
                nonce: [6; 32],
                ..c
            },
            LoginChallenge {
                expires_ms: 10_001,
                ..c
            },
        ];
        for v in variants {
            assert!(matches!(
                v.check(&vk, &sig, 0),
                Err(LoginError::BadSignature(_))
            ));
        }
        // another identity's key
        let ovk = VerifyingKey::from_public(&other).unwrap();
        assert_eq!(c.check(&ovk, &sig, 0), Err(LoginError::WrongKey));
        // expiry is inclusive
        assert_eq!(c.check(&vk, &sig, 10_001), Err(LoginError::Expired));
        // a signature of the same bytes for another purpose does not verify
        let tx_sig = sign_tagged_fixed(
            &me,
            SigningCtx::new(ctx::FINALITY),
            &c.chain_id,
            &c.message(),
        );
        assert!(c.check(&vk, &tx_sig, 0).is_err());
    }
}
