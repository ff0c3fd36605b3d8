//! The link protocol between a sensor (or any initiator) and a gateway, in
//! one place: its messages ([`LinkFrame`], [`DeviceMsg`], [`GatewayMsg`])
//! and the two ends of a link as sans-I/O connections in the shape of
//! quinn-proto's `Connection`: [`InitiatorConnection`] and
//! [`ResponderConnection`].
//!
//! A connection owns everything between the bytes of the stream and the
//! application: COBS framing ([`crate::frame`]), the handshake
//! ([`crate::handshake`]), the session ([`crate::session`]), pipelined
//! submissions answered in order, the re-handshake when a session's frame
//! budget runs out, and close. It does no I/O and keeps no clock: the
//! driver
//!
//! * feeds what it read with `handle_input(bytes, now_ms)` (which returns how
//!   many bytes it took: it stops early to apply back-pressure; feed the
//!   rest later),
//! * writes what `poll_transmit(buf)` returns (COBS-framed bytes),
//! * handles what `poll_event()` returns,
//! * calls `handle_timeout(now_ms)` at `poll_timeout()`,
//! * and gives commands: `start`, `submit`, `ping`, `close` (initiator);
//!   `accept`, `verify_proof`, `answer`, `refuse`, `close`, `shutdown`
//!   (responder).
//!
//! Capacities are const generics (receive buffer, transmit queue,
//! submissions in flight); nothing is allocated; a full queue is an error
//! ([`ConnError`]), never a panic. Randomness comes in as an argument where
//! the handshake needs it.
//!
//! # The rules the connections keep
//!
//! * **After the Proof.** The initiator's session is *established* when it
//!   has sent message 3, and *confirmed* at the first authenticated frame of
//!   the responder ([`InitiatorEvent::Confirmed`]). Until then a refusal or
//!   a dropped link means that nothing of this session was processed.
//! * **No silent loss.** Every submission gets exactly one of
//!   [`InitiatorEvent::Answer`] or, when its session ends first,
//!   [`InitiatorEvent::Unanswered`] (before [`InitiatorEvent::Ended`]).
//! * **In order.** The responder sends answers in submission order (the
//!   driver may give them in any order) and takes at most `INFLIGHT`
//!   submissions at a time; beyond, it stops reading.
//! * **Re-handshake.** Each side keeps its last frame of a session for the
//!   close frame: an initiator with one frame left submits nothing more,
//!   waits for its answers, sends the close frame and ends the session
//!   ([`End::Rekey`]); its driver starts a new handshake on the same link.
//!   A responder takes a submission only while it has frames for every
//!   answer it owes, and closes the same way. A responder that receives a
//!   close frame or a message 1 inside a session serves a new handshake on
//!   the same link.
//! * **Bad frames.** Frames that do not decode, authenticate or fit the
//!   state are counted and dropped (a responder reports each as
//!   [`ResponderEvent::BadFrame`]); an authenticated message that does not
//!   decode ends an initiator's session ([`End::Protocol`]), and an
//!   authenticated frame of a kind other than data or close (a peer link's
//!   chunk, [`crate::peer`]) ends a responder's session and its link
//!   ([`End::Protocol`]).
//!
//! # The responder and a shared handshake table
//!
//! The responder does not own the gateway's [`crate::handshake::ResponderTable`]:
//! on [`ResponderEvent::Hello`] the driver checks the allowlist and its own
//! limits, admits the candidate under its table's lock (a few comparisons),
//! then calls [`ResponderConnection::accept`] (message 2's cryptography,
//! without the lock); on [`ResponderEvent::ProofReceived`] it calls
//! [`ResponderConnection::verify_proof`] (without the lock). Each half-open
//! slot comes back as [`ResponderEvent::SlotFreed`] to be released.
//!
//! # Both ends in memory
//!
//! ```
//! use sensorchain_core::handshake::*;
//! use sensorchain_core::hash::ChainId;
//! use sensorchain_core::identity::{KeyId, Keypair, VerifyingKey};
//! use sensorchain_core::link::*;
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
//! let (device, gateway) = (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]));
//! let hs = HandshakeConfig::new(ChainId([7; 32]));
//! struct One(VerifyingKey);
//! impl Allowlist for One {
//!     fn lookup(&self, id: &KeyId) -> Result<VerifyingKey, Denial> {
//!         if *id == self.0.public().key_id() { Ok(self.0) } else { Err(Denial::Unknown) }
//!     }
//! }
//! let allow = One(VerifyingKey::from_public(&device.public()).unwrap());
//! let mut table: ResponderTable<8, 64> = ResponderTable::new();
//! let trusted = [gateway.public()];
//!
//! let mut ini: InitiatorConnection<256, 600, 4> = InitiatorConnection::new(InitiatorConfig::new(hs));
//! let mut res: ResponderConnection<1280, 1024, 4> = ResponderConnection::new(ResponderConfig::new(hs), 0);
//! ini.start(&device, &mut rng, 0).unwrap();
//! let mut wire = [0u8; 2048];
//! let mut answered = None;
//! let mut submitted = false;
//! for _round in 0..10 {
//!     // initiator → responder
//!     while let Some(n) = ini.poll_transmit(&mut wire) {
//!         let mut input = &wire[..n];
//!         while !input.is_empty() {
//!             let used = res.handle_input(input, 1);
//!             input = &input[used..];
//!             while let Some(ev) = res.poll_event() {
//!                 match ev {
//!                     ResponderEvent::Hello(hello) => {
//!                         let candidate = hello.check(&allow).unwrap();
//!                         let admitted = table.admit(candidate, 1, hs.timeout_ms).unwrap(); // under the lock
//!                         res.accept(admitted, &gateway, &mut rng, 1).unwrap(); // no lock
//!                     }
//!                     ResponderEvent::ProofReceived => { res.verify_proof(1).unwrap(); }
//!                     ResponderEvent::SlotFreed(slot) => table.release(slot), // under the lock
//!                     ResponderEvent::Submit { id, tx } => {
//!                         assert_eq!(tx, b"tx bytes");
//!                         let ack = GatewayMsg::Ack { sequence: 0, tx_id: Default::default(), height: 1 };
//!                         res.answer(id, ack).unwrap(); // later, once committed
//!                     }
//!                     _ => {}
//!                 }
//!             }
//!         }
//!     }
//!     // responder → initiator
//!     while let Some(n) = res.poll_transmit(&mut wire) {
//!         let mut input = &wire[..n];
//!         while !input.is_empty() {
//!             let used = ini.handle_input(input, 2);
//!             input = &input[used..];
//!             while let Some(ev) = ini.poll_event() {
//!                 match ev {
//!                     InitiatorEvent::ChallengeReceived => ini.finish_handshake(&device, &trusted, 2).unwrap(),
//!                     InitiatorEvent::Answer { answer, .. } => answered = Some(answer),
//!                     _ => {}
//!                 }
//!             }
//!         }
//!     }
//!     if ini.is_established() && !submitted {
//!         ini.submit(b"tx bytes", 3).unwrap();
//!         submitted = true;
//!     }
//! }
//! assert!(matches!(answered, Some(GatewayMsg::Ack { height: 1, .. })));
//! assert!(ini.is_confirmed());
//! ```

mod conn;
pub mod initiator;
mod msg;
mod outbox;
pub mod responder;

#[cfg(test)]
mod tests;

pub use conn::{BadFrame, ConnError, End, SubmitId, refusal_for};
pub use initiator::{InitiatorConfig, InitiatorConnection, InitiatorEvent};
pub use msg::*;
pub use responder::{ResponderConfig, ResponderConnection, ResponderEvent};
