//! Gateway-to-gateway peer links (feature `peer`; gateways only): the
//! messages Raft, forwarded transactions and finality votes travel in, and
//! one end of a link as a sans-I/O connection ([`PeerConnection`]).
//!
//! A peer link is the device link's machinery with three differences, so
//! that no frame of one kind of link is ever taken for the other
//! (`docs/PROTOCOL.md`, "Peer links"):
//!
//! * **Its own handshake byte.** Message 1 starts with [`PEER_VERSION`]
//!   (`0x81`) instead of a device's `0x01` ([`Initiator::start_peer`],
//!   [`Hello::parse_peer`]); the byte is in the transcript, so a peer
//!   handshake never completes on a device listener (refused
//!   `VersionMismatch` before any cryptography) nor a device's on a peer
//!   listener, and changing it in flight breaks both signatures. The rest
//!   of the handshake — labels, keys, sizes — is the device link's.
//! * **Its own session frame kinds.** A message travels as one or more
//!   chunks, each one session frame of kind [`FRAME_PEER_MORE`] (`0x10`,
//!   more chunks of this message follow) or [`FRAME_PEER_END`] (`0x11`,
//!   its last chunk). A device's data frame (`0x01`) on a peer link, or a
//!   chunk on a device link, is a protocol violation that ends the session.
//! * **Larger frames.** A link frame holds up to [`PEER_MAX_FRAME`] bytes
//!   (a [`PEER_CHUNK`] of 64 KiB of message and its framing), not the
//!   device link's 1,280.
//!
//! Chunks are canonical: every chunk but the last carries exactly
//! [`PEER_CHUNK`] bytes, the last 1 ..= [`PEER_CHUNK`]; the chunks of one
//! message are consecutive frames; a message is at most
//! [`PEER_MAX_MESSAGE`] (32 MiB: a 16 MiB block with its Raft framing,
//! twice over), and a chunk that would take it beyond closes the link.
//! Every violation closes the link: a TCP link between gateways does not
//! lose or damage bytes, so a bad frame is an attack or a bug.
//!
//! Requests ([`PeerRequest`]) go from the initiator to the responder;
//! answers ([`PeerAnswer`]) back, matched by id, in any order (a slow
//! forwarded transaction does not hold up a Raft heartbeat).
//!
//! [`Initiator::start_peer`]: crate::handshake::Initiator::start_peer
//! [`Hello::parse_peer`]: crate::handshake::Hello::parse_peer
//!
//! # Both ends in memory
//!
//! ```
//! use sensorchain_core::handshake::*;
//! use sensorchain_core::hash::ChainId;
//! use sensorchain_core::identity::{KeyId, Keypair, VerifyingKey};
//! use sensorchain_core::peer::*;
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
//! let (a, b) = (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]));
//! let hs = HandshakeConfig::new(ChainId([7; 32]));
//! struct Validators(VerifyingKey);
//! impl Allowlist for Validators {
//!     fn lookup(&self, id: &KeyId) -> Result<VerifyingKey, Denial> {
//!         if *id == self.0.public().key_id() { Ok(self.0) } else { Err(Denial::Unknown) }
//!     }
//! }
//! let allow = Validators(VerifyingKey::from_public(&a.public()).unwrap());
//! let mut table: ResponderTable<4, 16> = ResponderTable::new();
//!
//! let mut ini = PeerConnection::initiator(hs);
//! let mut res = PeerConnection::responder(hs);
//! let mut m1 = [0u8; MESSAGE1_LEN];
//! let (init, _) = Initiator::start_peer(&hs, &a, 0, &mut rng, &mut m1).unwrap();
//! ini.send_hello(&m1).unwrap();
//! let mut init = Some(init);
//! let mut responder = None;
//! let mut answer = None;
//! for _ in 0..10 {
//!     // initiator → responder
//!     let bytes = ini.transmit().to_vec();
//!     ini.advance(bytes.len());
//!     let mut input = &bytes[..];
//!     loop {
//!         let used = res.handle_input(input);
//!         input = &input[used..];
//!         let Some(ev) = res.poll_event() else { break };
//!         match ev {
//!             PeerEvent::Hello(hello) => {
//!                 let admitted = table.admit(hello.check(&allow).unwrap(), 0, hs.timeout_ms).unwrap();
//!                 let mut m2 = [0u8; MESSAGE2_LEN];
//!                 let (r, _) = admitted.respond(&hs, &b, &mut rng, &mut m2).unwrap();
//!                 res.send_challenge(&m2).unwrap();
//!                 responder = Some(r);
//!             }
//!             PeerEvent::Proof(m3) => {
//!                 let (slot, est) = responder.take().unwrap().verify(&m3, 0);
//!                 table.release(slot);
//!                 res.establish(est.unwrap().session).unwrap();
//!             }
//!             PeerEvent::Message(m) => {
//!                 let req = PeerRequest::decode(&m).unwrap();
//!                 assert_eq!(req.body, Request::Forward(b"tx bytes"));
//!                 let a = PeerAnswer { id: req.id, body: Answer::Forward(ForwardAnswer::Queued) };
//!                 res.send(a.to_vec()).unwrap();
//!             }
//!             e => panic!("{e:?}"),
//!         }
//!     }
//!     // responder → initiator
//!     let bytes = res.transmit().to_vec();
//!     res.advance(bytes.len());
//!     let mut input = &bytes[..];
//!     loop {
//!         let used = ini.handle_input(input);
//!         input = &input[used..];
//!         let Some(ev) = ini.poll_event() else { break };
//!         match ev {
//!             PeerEvent::Challenge(m2) => {
//!                 let mut m3 = [0u8; MESSAGE3_LEN];
//!                 let (est, _) = init.take().unwrap().finish(&a, &[b.public()], &m2, 0, &mut m3).unwrap();
//!                 ini.send_proof(&m3, est.session).unwrap();
//!                 let req = PeerRequest { id: 7, body: Request::Forward(b"tx bytes") };
//!                 ini.send(req.to_vec()).unwrap();
//!             }
//!             PeerEvent::Message(m) => {
//!                 let a = PeerAnswer::decode(&m).unwrap();
//!                 assert_eq!(a.body, Answer::Forward(ForwardAnswer::Queued));
//!                 answer = Some(a.id);
//!             }
//!             e => panic!("{e:?}"),
//!         }
//!     }
//! }
//! assert_eq!(answer, Some(7));
//! ```

mod conn;
mod msg;

#[cfg(test)]
mod tests;

pub use conn::{PeerConnError, PeerConnection, PeerEnd, PeerEvent, Role, Violation};
pub use msg::*;

use crate::session::FRAME_OVERHEAD;

/// The first byte of a peer link's handshake message 1
/// ([`crate::handshake::PEER_VERSION`]).
pub use crate::handshake::PEER_VERSION;

/// Bytes of a message in one chunk (every chunk but a message's last holds
/// exactly this many).
pub const PEER_CHUNK: usize = 64 * 1024;

/// Largest decoded link frame on a peer link: a `LinkFrame::Session`
/// (variant byte, 3-byte length) holding a session frame (23 bytes of
/// header and tag) of one full chunk. 65,563 bytes.
pub const PEER_MAX_FRAME: usize = 1 + 3 + FRAME_OVERHEAD + PEER_CHUNK;

/// Largest message (request or answer), in bytes: 32 MiB.
pub const PEER_MAX_MESSAGE: usize = 32 * 1024 * 1024;

/// Session frame kind of a chunk that more chunks of its message follow.
pub const FRAME_PEER_MORE: u8 = 0x10;

/// Session frame kind of the last (or only) chunk of a message.
pub const FRAME_PEER_END: u8 = 0x11;

/// Longest human-readable message in a refusal ([`ForwardAnswer::Refused`],
/// [`VoteAnswer::Refused`]), in bytes.
pub const MAX_REASON_LEN: usize = 1024;
