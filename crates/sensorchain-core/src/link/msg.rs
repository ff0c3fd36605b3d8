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

// The connections' own codec for these messages: the same bytes as
// `encode` and the same verdicts as `decode` (tests below compare them on
// every kind of input), written out because postcard's generic code for
// them is about a kilobyte of a sensor's flash. postcard writes an enum as
// its variant index (a varint), a byte slice as its length (a varint) then
// its bytes, an integer as an unsigned LEB128 varint, and a `Hash32` as its
// 32 raw bytes; `decode` accepts only what `encode` writes (canonical
// varints, no trailing bytes, at most `LINK_MAX_FRAME` bytes).

/// Variant indices of [`LinkFrame`] (its declaration order).
pub(crate) const LINK_HELLO: u8 = 0;
pub(crate) const LINK_PROOF: u8 = 2;
pub(crate) const LINK_SESSION: u8 = 3;
const LINK_REFUSED: u8 = 4;

pub(crate) use crate::codec::put_varint;

/// Writes a variant index and, if any, a byte slice (length and bytes);
/// returns the bytes written.
fn put_tagged(out: &mut [u8], tag: u8, bytes: &[u8]) -> Option<usize> {
    let t = put_varint(out, u64::from(tag))?;
    let l = put_varint(out.get_mut(t..)?, bytes.len() as u64)?;
    let end = (t + l).checked_add(bytes.len())?;
    out.get_mut(t + l..end)?.copy_from_slice(bytes);
    Some(end)
}

/// A strict reader of what `encode` writes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Option<Self> {
        (bytes.len() <= LINK_MAX_FRAME).then_some(Reader(bytes))
    }

    /// A canonical (shortest) varint of at most `max`.
    fn varint(&mut self, max: u64) -> Option<u64> {
        codec::take_varint(&mut self.0, max)
    }

    fn tag(&mut self) -> Option<u64> {
        self.varint(u64::from(u32::MAX))
    }

    fn u64(&mut self) -> Option<u64> {
        self.varint(u64::MAX)
    }

    fn u32(&mut self) -> Option<u32> {
        self.varint(u64::from(u32::MAX)).map(|v| v as u32)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = self.0.split_at_checked(n)?;
        self.0 = b;
        Some(a)
    }

    /// A length-prefixed byte slice that ends the input.
    fn last_bytes(mut self) -> Option<&'a [u8]> {
        let n = self.u32()?;
        (n as usize == self.0.len()).then_some(self.0)
    }

    fn end<T>(self, value: T) -> Option<T> {
        self.0.is_empty().then_some(value)
    }
}

impl<'a> LinkFrame<'a> {
    /// Decodes exactly `bytes` (the verdict of `decode::<LinkFrame>`).
    pub(crate) fn parse(bytes: &'a [u8]) -> Option<Self> {
        let mut r = Reader::new(bytes)?;
        Some(match r.tag()? {
            0 => LinkFrame::Hello(r.last_bytes()?),
            1 => LinkFrame::Challenge(r.last_bytes()?),
            2 => LinkFrame::Proof(r.last_bytes()?),
            3 => LinkFrame::Session(r.last_bytes()?),
            4 => {
                let refusal = match r.tag()? {
                    0 => Refusal::UnknownIdentity,
                    1 => Refusal::NotPermitted,
                    2 => Refusal::WrongChain,
                    3 => Refusal::VersionMismatch,
                    4 => Refusal::Busy,
                    5 => Refusal::HandshakeFailed,
                    6 => Refusal::Revoked,
                    7 => Refusal::ShuttingDown,
                    _ => return None,
                };
                return r.end(LinkFrame::Refused(refusal));
            }
            _ => return None,
        })
    }

    /// Writes the bytes of `encode(self)` into `out`; returns their length.
    pub(crate) fn write(&self, out: &mut [u8]) -> Option<usize> {
        let (tag, bytes) = match *self {
            LinkFrame::Hello(b) => (LINK_HELLO, b),
            LinkFrame::Challenge(b) => (1, b),
            LinkFrame::Proof(b) => (LINK_PROOF, b),
            LinkFrame::Session(b) => (LINK_SESSION, b),
            LinkFrame::Refused(r) => {
                let t = put_varint(out, u64::from(LINK_REFUSED))?;
                return Some(t + put_varint(out.get_mut(t..)?, r as u64)?);
            }
        };
        put_tagged(out, tag, bytes)
    }
}

impl<'a> DeviceMsg<'a> {
    /// Decodes exactly `bytes` (the verdict of `decode::<DeviceMsg>`).
    pub(crate) fn parse(bytes: &'a [u8]) -> Option<Self> {
        let mut r = Reader::new(bytes)?;
        match r.tag()? {
            0 => r.last_bytes().map(DeviceMsg::Submit),
            1 => {
                let n = r.u32()?;
                r.end(DeviceMsg::Ping(n))
            }
            _ => None,
        }
    }

    /// Writes the bytes of `encode(self)` into `out`; returns their length.
    pub(crate) fn write(&self, out: &mut [u8]) -> Option<usize> {
        match *self {
            DeviceMsg::Submit(tx) => put_tagged(out, 0, tx),
            DeviceMsg::Ping(n) => {
                let t = put_varint(out, 1)?;
                Some(t + put_varint(out.get_mut(t..)?, u64::from(n))?)
            }
        }
    }
}

impl GatewayMsg {
    /// Decodes exactly `bytes` (the verdict of `decode::<GatewayMsg>`).
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader::new(bytes)?;
        let tag = r.tag()?;
        if tag == 3 {
            let n = r.u32()?;
            return r.end(GatewayMsg::Pong(n));
        }
        // Ack, Reject and Busy start with the sequence number.
        let sequence = r.u64()?;
        let m = match tag {
            0 => {
                let mut tx_id = Hash32([0; 32]);
                tx_id.0.copy_from_slice(r.take(32)?);
                let height = r.u64()?;
                GatewayMsg::Ack {
                    sequence,
                    tx_id,
                    height,
                }
            }
            1 => {
                let reason = match r.tag()? {
                    0 => RejectReason::Malformed,
                    1 => RejectReason::WrongSigner,
                    2 => RejectReason::BadSignature,
                    3 => RejectReason::NotPermitted,
                    4 => RejectReason::Replay,
                    5 => RejectReason::OutOfRange,
                    6 => RejectReason::NotAuthorised,
                    7 => RejectReason::Invalid,
                    8 => RejectReason::StorageFailed,
                    _ => return None,
                };
                GatewayMsg::Reject { sequence, reason }
            }
            2 => GatewayMsg::Busy { sequence },
            _ => return None,
        };
        r.end(m)
    }
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

    fn all_messages() -> (
        std::vec::Vec<LinkFrame<'static>>,
        std::vec::Vec<DeviceMsg<'static>>,
        std::vec::Vec<GatewayMsg>,
    ) {
        static BYTES: [u8; 1300] = [0x5a; 1300];
        let lens = [0usize, 1, 2, 127, 128, 300, 1275, 1276, 1277, 1279, 1280];
        let refusals = [
            Refusal::UnknownIdentity,
            Refusal::NotPermitted,
            Refusal::WrongChain,
            Refusal::VersionMismatch,
            Refusal::Busy,
            Refusal::HandshakeFailed,
            Refusal::Revoked,
            Refusal::ShuttingDown,
        ];
        let mut frames = std::vec::Vec::new();
        for n in lens {
            let b = &BYTES[..n];
            frames.extend([
                LinkFrame::Hello(b),
                LinkFrame::Challenge(b),
                LinkFrame::Proof(b),
                LinkFrame::Session(b),
            ]);
        }
        frames.extend(refusals.map(LinkFrame::Refused));
        let nums = [
            0u64,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            1 << 35,
            u64::MAX,
        ];
        let mut dev: std::vec::Vec<DeviceMsg> = lens
            .iter()
            .map(|&n| DeviceMsg::Submit(&BYTES[..n]))
            .collect();
        let reasons = [
            RejectReason::Malformed,
            RejectReason::WrongSigner,
            RejectReason::BadSignature,
            RejectReason::NotPermitted,
            RejectReason::Replay,
            RejectReason::OutOfRange,
            RejectReason::NotAuthorised,
            RejectReason::Invalid,
            RejectReason::StorageFailed,
        ];
        let mut gw = std::vec::Vec::new();
        for n in nums {
            let n32 = n.min(u64::from(u32::MAX)) as u32;
            dev.push(DeviceMsg::Ping(n32));
            gw.push(GatewayMsg::Ack {
                sequence: n,
                tx_id: Hash32([n as u8; 32]),
                height: n.rotate_left(7),
            });
            gw.extend(reasons.map(|reason| GatewayMsg::Reject {
                sequence: n,
                reason,
            }));
            gw.push(GatewayMsg::Busy { sequence: n });
            gw.push(GatewayMsg::Pong(n32));
        }
        (frames, dev, gw)
    }

    /// Both verdicts on `b`: the connections' parsers and `decode`.
    fn same_verdicts(b: &[u8]) {
        assert_eq!(LinkFrame::parse(b), decode::<LinkFrame>(b).ok(), "{b:02x?}");
        assert_eq!(DeviceMsg::parse(b), decode::<DeviceMsg>(b).ok(), "{b:02x?}");
        assert_eq!(
            GatewayMsg::parse(b),
            decode::<GatewayMsg>(b).ok(),
            "{b:02x?}"
        );
    }

    /// The hand-written writers give `encode`'s bytes; the parsers give
    /// `decode`'s verdict on every encoding, every prefix and extension of
    /// one, every one-byte change and many random inputs (over-long and
    /// oversized varints included).
    #[test]
    fn connection_codec_equals_postcard() {
        let (frames, dev, gw) = all_messages();
        let mut encodings = std::vec::Vec::new();
        let mut buf = [0u8; 1400];
        let mut mine = [0u8; 1400];
        for f in &frames {
            let want = encode(f, &mut buf).unwrap().to_vec();
            let n = f.write(&mut mine).unwrap();
            assert_eq!(&mine[..n], &want[..], "{f:?}");
            assert!(f.write(&mut mine[..want.len() - 1]).is_none());
            encodings.push(want);
        }
        for m in &dev {
            let want = encode(m, &mut buf).unwrap().to_vec();
            let n = m.write(&mut mine).unwrap();
            assert_eq!(&mine[..n], &want[..], "{m:?}");
            encodings.push(want);
        }
        for m in &gw {
            encodings.push(encode(m, &mut buf).unwrap().to_vec());
        }
        let mut x = 0x9e37_79b9u32;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for e in &encodings {
            same_verdicts(e);
            for cut in [0, 1, 2, 3, e.len() / 2, e.len().saturating_sub(1)] {
                same_verdicts(&e[..cut.min(e.len())]);
            }
            for extra in [&[0u8][..], &[0x80, 0], &[1, 2, 3]] {
                let mut v = e.clone();
                v.extend_from_slice(extra);
                same_verdicts(&v);
            }
            if e.len() < 80 {
                for i in 0..e.len() {
                    for b in [0u8, 1, 2, 3, 4, 7, 8, 9, 0x7f, 0x80, 0x81, 0xff] {
                        let mut v = e.clone();
                        v[i] = b;
                        same_verdicts(&v);
                        // and the same with an over-long varint at `i`
                        let mut w = e.clone();
                        w[i] |= 0x80;
                        w.insert(i + 1, 0);
                        same_verdicts(&w);
                    }
                }
            }
        }
        for _ in 0..20_000 {
            let len = (next() % 48) as usize;
            let v: std::vec::Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    match r % 4 {
                        0 => (r >> 8) as u8 % 10,
                        1 => 0x80 | (r >> 8) as u8,
                        _ => (r >> 8) as u8,
                    }
                })
                .collect();
            same_verdicts(&v);
        }
        // varints at their limits
        for v in [
            &[3, 0x80, 0x80, 0x80, 0x80, 0x10][..],
            &[3, 0xff, 0xff, 0xff, 0xff, 0x0f],
            &[3, 0xff, 0xff, 0xff, 0xff, 0x1f],
            &[
                2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            &[
                2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ],
            &[
                2, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
            ],
            &[0x84, 0x00, 0x01],
        ] {
            same_verdicts(v);
        }
        // the length bound
        let mut big = std::vec![0u8; LINK_MAX_FRAME + 1];
        big[..3].copy_from_slice(&[0, 0xfe, 0x09]);
        same_verdicts(&big);
    }
}
