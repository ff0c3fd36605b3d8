//! The responder's connection (a gateway's end of one link): handshake
//! admission as steps the driver runs around its shared table, session,
//! in-order answers with back-pressure, re-handshake and close, sans-I/O.
//!
//! See the [module documentation](super) for the life cycle and an example.

use heapless::Deque;

use super::conn::{self, BadFrame, ConnError, End, Rx, SubmitId, refusal_for};
use super::msg::{DeviceMsg, GatewayMsg, LinkFrame, Refusal};
use super::outbox::Outbox;
use crate::frame::FrameAccumulator;
use crate::handshake::{
    Admitted, HandshakeConfig, HandshakeError, Hello, MESSAGE2_LEN, MESSAGE3_LEN, Responder,
    SlotTicket,
};
use crate::hash::Hash32;
use crate::identity::{Keypair, PublicKey};
use crate::session::{FRAME_CLOSE, FRAME_DATA, MAX_FRAMES, Session};

/// Capacity of the event queue.
const EVENTS: usize = 8;
/// Largest encoded gateway message.
const ANSWER_MAX: usize = 64;

/// How a responder connection behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponderConfig {
    /// The chain and the handshake timeout (from the connection's start, or
    /// from the end of the last session, to a verified message 3).
    pub handshake: HandshakeConfig,
    /// A session with nothing in flight that receives no frame for this
    /// long ends with [`End::Idle`] (0: never).
    pub idle_timeout_ms: u64,
    /// Frames this side may send per session (at least 2; the last one is
    /// the close frame), then it closes the session for a new handshake
    /// ([`End::Rekey`]).
    pub send_limit: u64,
}

impl ResponderConfig {
    /// The handshake configuration, no idle timeout, the full frame budget.
    pub fn new(handshake: HandshakeConfig) -> Self {
        ResponderConfig {
            handshake,
            idle_timeout_ms: 0,
            send_limit: MAX_FRAMES,
        }
    }
}

/// What happened on a responder connection ([`ResponderConnection::poll_event`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum ResponderEvent<'a> {
    /// Message 1 arrived and parsed (version, encoding, chain). The driver
    /// checks the allowlist ([`Hello::check`]) and its own limits, admits
    /// the candidate to its shared table ([`crate::handshake::ResponderTable::admit`],
    /// under its lock), then calls [`ResponderConnection::accept`] — or
    /// [`ResponderConnection::refuse`] with the reason
    /// ([`refusal_for`]).
    Hello(Hello),
    /// Message 3 arrived: call [`ResponderConnection::verify_proof`] (the
    /// signature check, no lock).
    ProofReceived,
    /// The handshake completed: the initiator is authenticated.
    Established {
        /// The initiator's key.
        peer: PublicKey,
        /// The transcript hash (a session id).
        transcript: Hash32,
    },
    /// A submitted transaction (its exact bytes, undecoded). Answer it with
    /// [`ResponderConnection::answer`]; answers go out in submission order.
    Submit {
        /// The submission.
        id: SubmitId,
        /// The transaction's bytes (valid until the next `handle_input`).
        tx: &'a [u8],
    },
    /// A frame that could not be used (the driver counts these and may
    /// close the link).
    BadFrame(BadFrame),
    /// The handshake gave up its half-open slot: release it in the shared
    /// table ([`crate::handshake::ResponderTable::release`]).
    SlotFreed(SlotTicket),
    /// The session (or handshake) ended. After [`End::Rekey`],
    /// [`End::Rehandshake`] and [`End::PeerClosed`] the link stays open
    /// for a new handshake; otherwise the connection is closed
    /// ([`ResponderConnection::is_closed`]).
    Ended(End),
}

/// Events kept in the queue (the submission, borrowed, is kept apart).
#[derive(Debug)]
enum Ev {
    Hello(Hello),
    ProofReceived,
    Established { peer: PublicKey, transcript: Hash32 },
    BadFrame(BadFrame),
    SlotFreed(SlotTicket),
    Ended(End),
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    id: SubmitId,
    answer: Option<GatewayMsg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// A session close frame once every answer is out.
    Session,
    /// A refusal in clear once every answer is out.
    Refuse(Refusal),
}

enum State {
    AwaitHello,
    /// The `Hello` event is out; waiting for `accept` or `refuse`.
    HelloPending,
    AwaitProof(Responder),
    ProofReady(Responder, [u8; MESSAGE3_LEN]),
    Session(Session),
    Closed,
}

/// The responder's end of one link, sans-I/O: `RX` bytes of receive buffer
/// (the largest link frame accepted, e.g. [`super::LINK_MAX_FRAME`]), `TX`
/// bytes of transmit queue, at most `INFLIGHT` submissions awaiting their
/// answer (beyond, it stops reading: back-pressure).
///
/// It owns no shared state: the driver admits handshakes in its own table
/// (see [`ResponderEvent::Hello`]) and releases the slots it is given
/// back ([`ResponderEvent::SlotFreed`]).
pub struct ResponderConnection<const RX: usize, const TX: usize, const INFLIGHT: usize> {
    config: ResponderConfig,
    state: State,
    hs_started_ms: u64,
    last_rx_ms: u64,
    now_ms: u64,
    acc: FrameAccumulator<RX>,
    outbox: Outbox<TX>,
    inflight: Deque<Slot, INFLIGHT>,
    events: Deque<Ev, EVENTS>,
    pending_submit: Option<(SubmitId, usize, usize)>,
    pong: Option<u32>,
    closing: Option<Closing>,
    next_id: u64,
    bad_frames: u32,
    peer: Option<PublicKey>,
}

impl<const RX: usize, const TX: usize, const INFLIGHT: usize> core::fmt::Debug
    for ResponderConnection<RX, TX, INFLIGHT>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ResponderConnection")
            .field("established", &self.is_established())
            .field("closed", &self.is_closed())
            .field("in_flight", &self.inflight.len())
            .finish_non_exhaustive()
    }
}

impl<const RX: usize, const TX: usize, const INFLIGHT: usize>
    ResponderConnection<RX, TX, INFLIGHT>
{
    /// A connection for a link opened at `now_ms`, waiting for message 1.
    pub fn new(config: ResponderConfig, now_ms: u64) -> Self {
        ResponderConnection {
            config,
            state: State::AwaitHello,
            hs_started_ms: now_ms,
            last_rx_ms: now_ms,
            now_ms,
            acc: FrameAccumulator::new(),
            outbox: Outbox::new(),
            inflight: Deque::new(),
            events: Deque::new(),
            pending_submit: None,
            pong: None,
            closing: None,
            next_id: 0,
            bad_frames: 0,
            peer: None,
        }
    }

    /// Feeds bytes read from the link. Returns how many were consumed: it
    /// stops before the next frame while a submission event waits to be
    /// polled, while the driver owes a handshake step (`accept`/`refuse`,
    /// `verify_proof`), while `INFLIGHT` submissions (or the session's
    /// remaining frame budget) are taken, while closing, or when its event
    /// queue is nearly full. Keep the rest and feed it again after polling
    /// and answering.
    pub fn handle_input(&mut self, input: &[u8], now_ms: u64) -> usize {
        self.now_ms = now_ms;
        if matches!(self.state, State::Closed) {
            return input.len();
        }
        let mut used = 0;
        while used < input.len() && self.can_read() {
            let rest = input.get(used..).unwrap_or(&[]);
            let (n, ev) = self.acc.feed_mut(rest);
            used += n;
            let frame = match ev {
                None => break,
                Some(Err(e)) => {
                    self.bad(conn::bad_frame(e));
                    continue;
                }
                Some(Ok(f)) => f,
            };
            self.last_rx_ms = now_ms;
            let session = match &mut self.state {
                State::Session(s) => Some(s),
                _ => None,
            };
            let rx = conn::classify(frame, session);
            self.on_frame(rx, now_ms);
        }
        self.flush();
        used
    }

    fn can_read(&self) -> bool {
        if self.pending_submit.is_some() || self.closing.is_some() || self.events.len() + 3 > EVENTS
        {
            return false;
        }
        match &self.state {
            State::AwaitHello | State::AwaitProof(_) => true,
            State::Session(_) => self.can_accept_submit(),
            _ => false,
        }
    }

    /// Whether one more submission can be taken: a session, not closing,
    /// fewer than `INFLIGHT` in flight, and frames left for every answer
    /// owed, this one's and the close frame.
    pub fn can_accept_submit(&self) -> bool {
        let State::Session(s) = &self.state else {
            return false;
        };
        let owed = self.inflight.len() as u64 + u64::from(self.pong.is_some());
        self.closing.is_none() && !self.inflight.is_full() && s.frames_left() > owed + 1
    }

    fn on_frame(&mut self, rx: Rx, now_ms: u64) {
        match rx {
            Rx::Hello { start, len } => {
                if matches!(self.state, State::Session(_)) {
                    self.end_session(End::Rehandshake, now_ms);
                }
                if !matches!(self.state, State::AwaitHello) {
                    self.bad(BadFrame::Unexpected);
                    self.fail(HandshakeError::Malformed);
                    return;
                }
                let bytes = self.acc.buffer().get(start..start + len).unwrap_or(&[]);
                match Hello::parse(&self.config.handshake, bytes) {
                    Ok(h) => {
                        self.state = State::HelloPending;
                        self.push(Ev::Hello(h));
                    }
                    Err(e) => self.fail(e),
                }
            }
            Rx::Proof { start, len } if matches!(self.state, State::AwaitProof(_)) => {
                let m3 = self.acc.buffer().get(start..start + len).unwrap_or(&[]);
                if m3.len() != MESSAGE3_LEN {
                    self.fail(HandshakeError::Malformed);
                    return;
                }
                let mut copy = [0u8; MESSAGE3_LEN];
                copy.copy_from_slice(m3);
                if let State::AwaitProof(r) = core::mem::replace(&mut self.state, State::Closed) {
                    self.state = State::ProofReady(r, copy);
                    self.push(Ev::ProofReceived);
                }
            }
            Rx::Opened { kind, start, len } => match kind {
                FRAME_CLOSE => self.end_session(End::PeerClosed, now_ms),
                FRAME_DATA => {
                    let plain = self.acc.buffer().get(start..start + len).unwrap_or(&[]);
                    match DeviceMsg::parse(plain) {
                        Some(DeviceMsg::Submit(tx)) => {
                            let at = start + len - tx.len();
                            let id = SubmitId(self.next_id);
                            if self.inflight.push_back(Slot { id, answer: None }).is_ok() {
                                self.next_id += 1;
                                self.pending_submit = Some((id, at, tx.len()));
                            }
                        }
                        Some(DeviceMsg::Ping(n)) => {
                            let owed = self.inflight.len() as u64;
                            if let State::Session(s) = &self.state
                                && self.pong.is_none()
                                && s.frames_left() > owed + 1
                            {
                                self.pong = Some(n);
                            }
                        }
                        None => self.bad(BadFrame::MalformedMessage),
                    }
                }
                // An authenticated frame of another kind (a peer link's
                // chunk included) is the initiator's own violation, not
                // line noise: the session and the link end.
                _ => {
                    self.bad(BadFrame::MalformedMessage);
                    self.inflight.clear();
                    self.close_now(End::Protocol);
                }
            },
            Rx::Bad(b) => self.bad(b),
            _ => {
                self.bad(BadFrame::Unexpected);
                if !matches!(self.state, State::Session(_)) {
                    self.fail(HandshakeError::Malformed);
                }
            }
        }
    }

    /// Runs message 2 for an admitted message 1 (after
    /// [`ResponderEvent::Hello`]): X25519, HKDF and the signature (no
    /// table: run it outside the table's lock), then queues the challenge.
    /// On an error the slot comes back as [`ResponderEvent::SlotFreed`],
    /// the refusal is queued and the connection closes.
    pub fn accept<R: rand_core::CryptoRng + ?Sized>(
        &mut self,
        admitted: Admitted,
        identity: &Keypair,
        rng: &mut R,
        now_ms: u64,
    ) -> Result<(), ConnError> {
        self.now_ms = now_ms;
        if !matches!(self.state, State::HelloPending) {
            self.push(Ev::SlotFreed(admitted.into_slot()));
            return Err(ConnError::InvalidState);
        }
        let mut m2 = [0u8; MESSAGE2_LEN];
        match admitted.respond(&self.config.handshake, identity, rng, &mut m2) {
            Ok((resp, n2)) => {
                let frame = LinkFrame::Challenge(m2.get(..n2).unwrap_or(&[]));
                if let Err(e) = self.outbox.push_clear(&frame, MESSAGE2_LEN + 4) {
                    self.push(Ev::SlotFreed(resp.into_slot()));
                    self.fail(HandshakeError::BufferTooSmall);
                    return Err(e);
                }
                self.state = State::AwaitProof(resp);
                Ok(())
            }
            Err(f) => {
                self.push(Ev::SlotFreed(f.slot));
                self.fail(f.error);
                Err(ConnError::Handshake(f.error))
            }
        }
    }

    /// Verifies message 3 (after [`ResponderEvent::ProofReceived`]; no
    /// table: run it outside the lock). The slot always comes back as
    /// [`ResponderEvent::SlotFreed`]; on success the session is
    /// established ([`ResponderEvent::Established`]) and the initiator's
    /// key returned (check its permission once more and
    /// [`refuse`](Self::refuse) if it changed meanwhile).
    pub fn verify_proof(&mut self, now_ms: u64) -> Result<PublicKey, ConnError> {
        self.now_ms = now_ms;
        let State::ProofReady(..) = self.state else {
            return Err(ConnError::InvalidState);
        };
        let State::ProofReady(resp, m3) = core::mem::replace(&mut self.state, State::Closed) else {
            return Err(ConnError::InvalidState);
        };
        let (slot, r) = resp.verify(&m3, now_ms);
        self.push(Ev::SlotFreed(slot));
        match r {
            Ok(mut est) => {
                est.session.set_send_limit(self.config.send_limit.max(2));
                self.state = State::Session(est.session);
                self.peer = Some(est.peer);
                self.last_rx_ms = now_ms;
                self.push(Ev::Established {
                    peer: est.peer,
                    transcript: est.transcript,
                });
                Ok(est.peer)
            }
            Err(e) => {
                self.fail(e);
                Err(ConnError::Handshake(e))
            }
        }
    }

    /// Answers submission `id` with `Ack`, `Reject` or `Busy`. Answers may be
    /// given in any order; they are sent in submission order (an answer
    /// waits for those of earlier submissions).
    pub fn answer(&mut self, id: SubmitId, answer: GatewayMsg) -> Result<(), ConnError> {
        if matches!(answer, GatewayMsg::Pong(_)) {
            return Err(ConnError::UnknownSubmit);
        }
        let slot = self
            .inflight
            .iter_mut()
            .find(|s| s.id == id && s.answer.is_none())
            .ok_or(ConnError::UnknownSubmit)?;
        slot.answer = Some(answer);
        self.flush();
        Ok(())
    }

    /// Refuses at once, in clear (`Refused(r)`), and closes: a handshake is
    /// abandoned (its slot comes back), a session ends with its answers
    /// still owed dropped (e.g. [`Refusal::Revoked`]).
    pub fn refuse(&mut self, r: Refusal) {
        self.free_slot();
        self.inflight.clear();
        self.pending_submit = None;
        self.pong = None;
        if self.outbox.push_clear(&LinkFrame::Refused(r), 8).is_err() {
            self.outbox.clear();
            let _ = self.outbox.push_clear(&LinkFrame::Refused(r), 8);
        }
        self.close_now(End::Refused(r));
    }

    /// Closes gracefully: stops reading, sends the answers still owed once
    /// the driver gives them, then a session close frame (a newer session
    /// of the same identity replaces this one). Outside a session it
    /// closes at once, without a message.
    pub fn close(&mut self) {
        if matches!(self.state, State::Session(_)) {
            self.closing = Some(Closing::Session);
            self.flush();
        } else if !matches!(self.state, State::Closed) {
            self.free_slot();
            self.close_now(End::Closed);
        }
    }

    /// Like [`close`](Self::close), but ends with `Refused(r)` in clear
    /// (e.g. [`Refusal::ShuttingDown`]); outside a session it refuses at
    /// once.
    pub fn shutdown(&mut self, r: Refusal) {
        if matches!(self.state, State::Session(_)) {
            self.closing = Some(Closing::Refuse(r));
            self.flush();
        } else if !matches!(self.state, State::Closed) {
            self.refuse(r);
        }
    }

    /// Abandons the connection (the link is gone): returns the half-open
    /// slot, if a handshake held one, for the driver to release.
    pub fn take_slot(&mut self) -> Option<SlotTicket> {
        let slot = match core::mem::replace(&mut self.state, State::Closed) {
            State::AwaitProof(r) | State::ProofReady(r, _) => Some(r.into_slot()),
            other => {
                self.state = other;
                None
            }
        };
        if slot.is_some() {
            self.inflight.clear();
        }
        slot
    }

    /// Writes COBS-framed bytes to send into `buf`; `None` when nothing is
    /// queued.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.flush();
        let n = self.outbox.drain(buf);
        if n > 0 {
            self.flush();
        }
        (n > 0).then_some(n)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ResponderEvent<'_>> {
        if let Some(e) = self.events.pop_front() {
            return Some(match e {
                Ev::Hello(h) => ResponderEvent::Hello(h),
                Ev::ProofReceived => ResponderEvent::ProofReceived,
                Ev::Established { peer, transcript } => {
                    ResponderEvent::Established { peer, transcript }
                }
                Ev::BadFrame(b) => ResponderEvent::BadFrame(b),
                Ev::SlotFreed(s) => ResponderEvent::SlotFreed(s),
                Ev::Ended(e) => ResponderEvent::Ended(e),
            });
        }
        let (id, at, len) = self.pending_submit.take()?;
        Some(ResponderEvent::Submit {
            id,
            tx: self.acc.buffer().get(at..at + len).unwrap_or(&[]),
        })
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next, if a
    /// timer runs: the handshake's deadline, or the session's idle timeout.
    pub fn poll_timeout(&self) -> Option<u64> {
        match &self.state {
            State::Closed => None,
            State::Session(_) => (self.config.idle_timeout_ms > 0
                && self.inflight.is_empty()
                && self.closing.is_none())
            .then(|| self.last_rx_ms.saturating_add(self.config.idle_timeout_ms)),
            _ => Some(
                self.hs_started_ms
                    .saturating_add(self.config.handshake.timeout_ms),
            ),
        }
    }

    /// Fires the timers due at `now_ms`: a handshake past its deadline is
    /// refused (`HandshakeFailed`, [`End::HandshakeTimeout`]); an idle
    /// session closes ([`End::Idle`], nothing sent).
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        match self.poll_timeout() {
            Some(t) if now_ms >= t => {}
            _ => return,
        }
        if matches!(self.state, State::Session(_)) {
            self.inflight.clear();
            self.close_now(End::Idle);
        } else {
            self.free_slot();
            let _ = self
                .outbox
                .push_clear(&LinkFrame::Refused(Refusal::HandshakeFailed), 8);
            self.close_now(End::HandshakeTimeout);
        }
    }

    /// Whether a session is established.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Session(_))
    }

    /// Whether the connection is closed: once [`poll_transmit`](Self::poll_transmit)
    /// is drained, close the link.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The authenticated initiator of the current session.
    pub fn peer(&self) -> Option<PublicKey> {
        self.peer.filter(|_| self.is_established())
    }

    /// Submissions awaiting their answer (or waiting to be sent).
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Whether bytes wait in the transmit queue.
    pub fn has_transmit(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Frames received that could not be used, in total.
    pub fn bad_frames(&self) -> u32 {
        self.bad_frames
    }

    /// Seals what can go out now: the pong, the answers at the head of the
    /// submission order, then a pending close or re-handshake.
    fn flush(&mut self) {
        let State::Session(s) = &mut self.state else {
            return;
        };
        if let Some(n) = self.pong
            && self.outbox.has_room(ANSWER_MAX + 32)
            && seal_msg(&mut self.outbox, s, &GatewayMsg::Pong(n)).is_ok()
        {
            self.pong = None;
        }
        while let Some(Slot {
            answer: Some(a), ..
        }) = self.inflight.front().copied()
        {
            if !self.outbox.has_room(ANSWER_MAX + 32) || seal_msg(&mut self.outbox, s, &a).is_err()
            {
                break;
            }
            self.inflight.pop_front();
        }
        if !self.inflight.is_empty() || self.pong.is_some() {
            return;
        }
        match self.closing {
            Some(Closing::Session) => {
                let _ = self.outbox.push_close(s);
                self.close_now(End::Closed);
            }
            Some(Closing::Refuse(r)) => {
                let _ = self.outbox.push_clear(&LinkFrame::Refused(r), 8);
                self.close_now(End::Closed);
            }
            None if s.frames_left() <= 1 && self.pending_submit.is_none() => {
                let _ = self.outbox.push_close(s);
                let now = self.now_ms;
                self.end_session(End::Rekey, now);
            }
            None => {}
        }
    }

    fn push(&mut self, e: Ev) {
        // `handle_input` keeps room for the events of one frame.
        let _ = self.events.push_back(e);
    }

    fn bad(&mut self, b: BadFrame) {
        self.bad_frames = self.bad_frames.saturating_add(1);
        self.push(Ev::BadFrame(b));
    }

    fn free_slot(&mut self) {
        if let Some(slot) = self.take_slot() {
            self.push(Ev::SlotFreed(slot));
        }
    }

    /// A handshake step failed: the refusal in clear, the slot back, closed.
    fn fail(&mut self, e: HandshakeError) {
        self.free_slot();
        let _ = self
            .outbox
            .push_clear(&LinkFrame::Refused(refusal_for(e)), 8);
        self.close_now(End::HandshakeFailed(e));
    }

    fn close_now(&mut self, end: End) {
        self.state = State::Closed;
        self.closing = None;
        self.pending_submit = None;
        self.pong = None;
        self.push(Ev::Ended(end));
    }

    /// Ends the session; the link waits for a new message 1.
    fn end_session(&mut self, end: End, now_ms: u64) {
        self.state = State::AwaitHello;
        self.hs_started_ms = now_ms;
        self.inflight.clear();
        self.pending_submit = None;
        self.pong = None;
        self.closing = None;
        self.push(Ev::Ended(end));
    }
}

fn seal_msg<const TX: usize>(
    outbox: &mut Outbox<TX>,
    session: &mut Session,
    m: &GatewayMsg,
) -> Result<(), ConnError> {
    outbox.push_msg(session, m, ANSWER_MAX)
}
