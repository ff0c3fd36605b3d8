//! The messages of the link protocol (re-exported by [`crate::link`]):
//! what travels inside each COBS frame ([`crate::frame`]) on TCP or serial.
//!
//! Outside a session, a frame is a [`LinkFrame`]: a handshake message, an
//! encrypted session frame, or a refusal. Inside an established session, the
//! plaintext of each session frame is a [`DeviceMsg`] (initiator to gateway)
//! or a [`GatewayMsg`] (gateway to initiator). All are postcard-encoded and
//! strictly decoded ([`crate::codec`]); `docs/PROTOCOL.md` gives every byte.
//!
//! ```
//! use sensorchain_core::link::*;
//! let mut buf = [0u8; 64];
//! let n = encode(&LinkFrame::Hello(&[1, 2, 3]), &mut buf).unwrap().len();
//! assert_eq!(decode::<LinkFrame>(&buf[..n]).unwrap(), LinkFrame::Hello(&[1, 2, 3]));
//! ```

use core::fmt;
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, EncodeError};
use crate::hash::Hash32;

/// Largest link frame, before COBS, in bytes. A frame above it is refused
/// unread.
pub const LINK_MAX_FRAME: usize = 1280;

/// A frame on the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkFrame<'a> {
    /// Handshake message 1 (initiator → responder).
    Hello(&'a [u8]),
    /// Handshake message 2 (responder → initiator).
    Challenge(&'a [u8]),
    /// Handshake message 3 (initiator → responder).
    Proof(&'a [u8]),
    /// An encrypted session frame (layout: [`crate::session`]).
    Session(&'a [u8]),
    /// The responder refuses the handshake or ends the link, in clear, and
    /// closes it.
    Refused(Refusal),
}

/// Why a gateway refuses or closes a link (sent in clear; says no more than
/// the initiator needs to know).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Refusal {
    /// The identity is not on the allowlist.
    UnknownIdentity,
    /// The identity is known but lacks `CONNECT` (or was revoked).
    NotPermitted,
    /// The first message was for another chain.
    WrongChain,
    /// Unsupported protocol version.
    VersionMismatch,
    /// The gateway has too many half-open handshakes or sessions; retry later.
    Busy,
    /// The handshake failed (bad signature, malformed or replayed message, timeout).
    HandshakeFailed,
    /// The session's identity was revoked: the session is closed.
    Revoked,
    /// The gateway is shutting down.
    ShuttingDown,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::UnknownIdentity => "unknown identity",
            Refusal::NotPermitted => "not permitted to connect",
            Refusal::WrongChain => "wrong chain",
            Refusal::VersionMismatch => "protocol version mismatch",
            Refusal::Busy => "gateway busy",
            Refusal::HandshakeFailed => "handshake failed",
            Refusal::Revoked => "identity revoked",
            Refusal::ShuttingDown => "gateway shutting down",
        })
    }
}

/// A message from the initiator inside a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceMsg<'a> {
    /// Submit one signed transaction (its exact encoding,
    /// [`crate::tx::Transaction::encode`]). A device may only submit
    /// transactions it signed itself.
    Submit(&'a [u8]),
    /// Keep-alive; the gateway answers [`GatewayMsg::Pong`].
    Ping(u32),
}

/// A message from the gateway inside a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatewayMsg {
    /// The transaction with this sequence number is durably stored in a
    /// block.
    Ack {
        /// The transaction's sequence number.
        sequence: u64,
        /// Its id (the Merkle leaf hash of its exact bytes).
        tx_id: Hash32,
        /// The block that holds it.
        height: u64,
    },
    /// The transaction with this sequence number is refused for good
    /// (resending it unchanged will fail again).
    Reject {
        /// The transaction's sequence number (0 if it did not decode).
        sequence: u64,
        /// Why.
        reason: RejectReason,
    },
    /// The gateway cannot take the transaction now; resend it later.
    Busy {
        /// The transaction's sequence number.
        sequence: u64,
    },
    /// Answer to [`DeviceMsg::Ping`].
    Pong(u32),
}

/// Why a submitted transaction is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RejectReason {
    /// Not a canonical transaction encoding, or too large.
    Malformed,
    /// Signed by someone other than the session's identity.
    WrongSigner,
    /// The signature does not verify.
    BadSignature,
    /// The signer lacks the permission.
    NotPermitted,
    /// The sequence number was already used (a replay).
    Replay,
    /// The reading's value is implausible.
    OutOfRange,
    /// A sealed reading's recipients are not all authorised readers.
    NotAuthorised,
    /// Refused by another ledger rule (timestamp, roles, ...).
    Invalid,
    /// The gateway could not store it (disk full, I/O error): nothing was
    /// committed.
    StorageFailed,
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RejectReason {
    /// A short snake_case name (metrics labels, JSON).
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::WrongSigner => "wrong_signer",
            RejectReason::BadSignature => "bad_signature",
            RejectReason::NotPermitted => "not_permitted",
            RejectReason::Replay => "replay",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::NotAuthorised => "not_authorised",
            RejectReason::Invalid => "invalid",
            RejectReason::StorageFailed => "storage_failed",
        }
    }
}

/// Encodes a link value into `buf`.
pub fn encode<'b, T: Serialize>(value: &T, buf: &'b mut [u8]) -> Result<&'b mut [u8], EncodeError> {
    codec::encode_to_slice(value, buf)
}

/// Strictly decodes a link value (at most [`LINK_MAX_FRAME`] bytes).
pub fn decode<'a, T: Deserialize<'a> + Serialize>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    codec::decode_exact(bytes, LINK_MAX_FRAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_strictness() {
        let msgs = [
            GatewayMsg::Ack {
                sequence: 7,
                tx_id: Hash32([3; 32]),
                height: 9,
            },
            GatewayMsg::Reject {
                sequence: 8,
                reason: RejectReason::Replay,
            },
            GatewayMsg::Busy { sequence: 1 },
            GatewayMsg::Pong(5),
        ];
        for m in msgs {
            let mut buf = [0u8; 64];
            let b = encode(&m, &mut buf).unwrap();
            assert_eq!(decode::<GatewayMsg>(b).unwrap(), m);
        }
        // borrowed bytes with an over-long length varint are non-canonical
        assert_eq!(
            decode::<DeviceMsg>(&[0, 0x81, 0x00, 1]),
            Err(DecodeError::NonCanonical)
        );
        assert_eq!(decode::<DeviceMsg>(&[0, 1, 9]), Ok(DeviceMsg::Submit(&[9])));
        assert_eq!(decode::<DeviceMsg>(&[0, 2, 9]), Err(DecodeError::Malformed));
        assert_eq!(decode::<LinkFrame>(&[9]), Err(DecodeError::Malformed));
    }
}
