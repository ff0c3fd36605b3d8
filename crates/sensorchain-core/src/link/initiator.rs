//! The initiator's connection (a sensor, a client): handshake, session,
//! pipelined submissions, re-handshake and close, sans-I/O.
//!
//! See the [module documentation](super) for the life cycle and an example.

use heapless::{Deque, Vec};

use super::conn::{self, BadFrame, ConnError, End, Rx, SubmitId};
use super::msg::{DeviceMsg, GatewayMsg, LINK_HELLO, LINK_PROOF};
use super::outbox::Outbox;
use crate::frame::FrameAccumulator;
use crate::handshake::{
    HandshakeConfig, HandshakeError, Initiator, MESSAGE1_LEN, MESSAGE2_LEN, MESSAGE3_LEN,
    TrustedResponders,
};
use crate::hash::Hash32;
use crate::identity::{Keypair, PublicKey};
use crate::session::{FRAME_CLOSE, FRAME_DATA, MAX_FRAMES, Session};

/// Bytes a `DeviceMsg::Submit` adds to its transaction (variant and length
/// varint).
pub const SUBMIT_OVERHEAD: usize = 4;
/// Capacity of the ordinary event queue.
const EVENTS: usize = 4;

/// How an initiator connection behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitiatorConfig {
    /// The chain and the handshake timeout (from [`InitiatorConnection::start`]
    /// to the challenge).
    pub handshake: HandshakeConfig,
    /// Longest wait for the answer to the oldest submission in flight, ms.
    pub answer_timeout_ms: u64,
    /// Frames this side may send per session (at least 2; the last one is
    /// the close frame), then it re-handshakes ([`End::Rekey`]).
    pub send_limit: u64,
}

impl InitiatorConfig {
    /// The handshake configuration, a 10 s answer timeout and the full
    /// frame budget ([`MAX_FRAMES`]).
    pub fn new(handshake: HandshakeConfig) -> Self {
        InitiatorConfig {
            handshake,
            answer_timeout_ms: 10_000,
            send_limit: MAX_FRAMES,
        }
    }
}

/// What happened on an initiator connection ([`InitiatorConnection::poll_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InitiatorEvent {
    /// Message 2 arrived: call [`InitiatorConnection::finish_handshake`]
    /// (the handshake's cryptography).
    ChallengeReceived,
    /// The handshake completed on this side (message 3 is queued): the
    /// session takes submissions. The responder has not confirmed it yet.
    Established {
        /// The gateway's authenticated key.
        peer: PublicKey,
        /// The transcript hash (a session id).
        transcript: Hash32,
    },
    /// The first authenticated frame of the responder arrived: it holds
    /// the session too (before it, a refusal or a dropped link means that
    /// nothing of this session was processed).
    Confirmed,
    /// The answer to a submission (`Ack`, `Reject` or `Busy`).
    Answer {
        /// The submission.
        id: SubmitId,
        /// The responder's answer.
        answer: GatewayMsg,
    },
    /// The answer to a ping.
    Pong(u32),
    /// The session ended before this submission was answered: the
    /// responder may or may not have committed it (resend the same bytes;
    /// a `Replay` rejection then means an earlier copy was committed).
    Unanswered {
        /// The submission.
        id: SubmitId,
        /// Its transaction's sequence number.
        sequence: u64,
    },
    /// The session (or the handshake) ended; every submission in flight was
    /// reported [`Unanswered`](Self::Unanswered) before this event.
    Ended(End),
}

#[derive(Debug, Clone, Copy)]
struct Flight {
    id: SubmitId,
    sequence: u64,
    sent_ms: u64,
}

enum State {
    Idle,
    AwaitChallenge(Initiator),
    /// Message 2 is at this offset of the receive buffer (which takes no
    /// input until `finish_handshake`).
    ChallengeReady(Initiator, usize),
    Session(Session),
}

/// The initiator's end of a link, sans-I/O: `RX` bytes of receive buffer
/// (the largest link frame accepted), `TX` bytes of transmit queue (it must
/// hold the largest frame submitted: the transaction plus
/// [`InitiatorConnection::FRAME_COST`]), at most `INFLIGHT` submissions
/// awaiting their answer.
pub struct InitiatorConnection<const RX: usize, const TX: usize, const INFLIGHT: usize> {
    config: InitiatorConfig,
    state: State,
    hs_started_ms: u64,
    acc: FrameAccumulator<RX>,
    outbox: Outbox<TX>,
    /// Submissions in flight, oldest first; after the session ended, the
    /// ones still to be reported unanswered.
    flights: Vec<Flight, INFLIGHT>,
    events: Deque<InitiatorEvent, EVENTS>,
    end: Option<End>,
    next_id: u64,
    confirmed: bool,
    peer: Option<PublicKey>,
    bad_frames: u32,
}

impl<const RX: usize, const TX: usize, const INFLIGHT: usize> core::fmt::Debug
    for InitiatorConnection<RX, TX, INFLIGHT>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("InitiatorConnection")
            .field("established", &self.is_established())
            .field("confirmed", &self.confirmed)
            .field("in_flight", &self.flights.len())
            .finish_non_exhaustive()
    }
}

impl<const RX: usize, const TX: usize, const INFLIGHT: usize>
    InitiatorConnection<RX, TX, INFLIGHT>
{
    /// Bytes a submitted transaction takes in the transmit queue besides
    /// its own length (link header, session header and tag, `Submit`
    /// header, queue bookkeeping).
    pub const FRAME_COST: usize = super::outbox::SESSION_HEADER_ROOM
        + crate::session::FRAME_OVERHEAD
        + SUBMIT_OVERHEAD
        + super::outbox::LEN_PREFIX
        + super::outbox::cobs_room(TX);

    /// An idle connection: call [`start`](Self::start) to handshake.
    pub fn new(config: InitiatorConfig) -> Self {
        InitiatorConnection {
            config,
            state: State::Idle,
            hs_started_ms: 0,
            acc: FrameAccumulator::new(),
            outbox: Outbox::new(),
            flights: Vec::new(),
            events: Deque::new(),
            end: None,
            next_id: 0,
            confirmed: false,
            peer: None,
            bad_frames: 0,
        }
    }

    /// Starts a handshake: draws the ephemeral key from `rng` and queues
    /// message 1. Fails with [`ConnError::InvalidState`] while a session
    /// or handshake is live, or while events of the last one are still to
    /// be polled (so that no `Unanswered` is lost).
    pub fn start<R: rand_core::CryptoRng + ?Sized>(
        &mut self,
        identity: &Keypair,
        rng: &mut R,
        now_ms: u64,
    ) -> Result<(), ConnError> {
        if !matches!(self.state, State::Idle) || !self.flights.is_empty() || self.end.is_some() {
            return Err(ConnError::InvalidState);
        }
        // Message 1 is written where it is sent from.
        let m1 = self.outbox.body_slot(MESSAGE1_LEN)?;
        let (init, n1) = Initiator::start(&self.config.handshake, identity, now_ms, rng, m1)
            .map_err(|_| ConnError::TooLarge)?;
        self.outbox.commit_link(LINK_HELLO, n1)?;
        self.acc.reset();
        self.state = State::AwaitChallenge(init);
        self.hs_started_ms = now_ms;
        self.confirmed = false;
        self.peer = None;
        Ok(())
    }

    /// Processes message 2 (after [`InitiatorEvent::ChallengeReceived`]):
    /// checks the responder against `trusted`, verifies it, queues
    /// message 3 and establishes the session. On an error the handshake
    /// ends ([`End::HandshakeFailed`]).
    pub fn finish_handshake<T: TrustedResponders + ?Sized>(
        &mut self,
        identity: &Keypair,
        trusted: &T,
        now_ms: u64,
    ) -> Result<(), HandshakeError> {
        let State::ChallengeReady(..) = self.state else {
            return Err(HandshakeError::Malformed);
        };
        let State::ChallengeReady(init, at) = core::mem::replace(&mut self.state, State::Idle)
        else {
            return Err(HandshakeError::Malformed);
        };
        let m2 = self.acc.buffer().get(at..at + MESSAGE2_LEN).unwrap_or(&[]);
        // Message 3 is written where it is sent from.
        let r = match self.outbox.body_slot(MESSAGE3_LEN) {
            Ok(m3) => init.finish(identity, trusted, m2, now_ms, m3),
            Err(_) => Err(HandshakeError::BufferTooSmall),
        }
        .and_then(|(est, n3)| {
            self.outbox
                .commit_link(LINK_PROOF, n3)
                .map_err(|_| HandshakeError::BufferTooSmall)?;
            Ok(est)
        });
        match r {
            Ok(mut est) => {
                est.session.set_send_limit(self.config.send_limit.max(2));
                self.peer = Some(est.peer);
                self.state = State::Session(est.session);
                self.push(InitiatorEvent::Established {
                    peer: est.peer,
                    transcript: est.transcript,
                });
                Ok(())
            }
            Err(e) => {
                self.end_session(End::HandshakeFailed(e));
                Err(e)
            }
        }
    }

    /// Submits one encoded transaction ([`crate::tx::Transaction::encode`])
    /// in the session. Its answer comes as [`InitiatorEvent::Answer`] with
    /// the returned id, or it is reported [`InitiatorEvent::Unanswered`].
    pub fn submit(&mut self, tx: &[u8], now_ms: u64) -> Result<SubmitId, ConnError> {
        let session = sendable(&mut self.state)?;
        if self.flights.is_full() {
            return Err(ConnError::InFlightFull);
        }
        let sequence = crate::tx::Transaction::sequence_of_encoded(tx).unwrap_or(0);
        self.outbox
            .push_device(session, &DeviceMsg::Submit(tx), tx.len() + SUBMIT_OVERHEAD)?;
        let id = SubmitId(self.next_id);
        self.next_id += 1;
        // Room was checked above; a failure here cannot happen.
        let _ = self.flights.push(Flight {
            id,
            sequence,
            sent_ms: now_ms,
        });
        Ok(id)
    }

    /// Sends a keep-alive; the answer is [`InitiatorEvent::Pong`] with the
    /// same value.
    pub fn ping(&mut self, nonce: u32) -> Result<(), ConnError> {
        let session = sendable(&mut self.state)?;
        self.outbox
            .push_device(session, &DeviceMsg::Ping(nonce), 8)?;
        self.maybe_rekey();
        Ok(())
    }

    /// Closes: a live session gets a close frame; the handshake or session
    /// ends with [`End::Closed`] (submissions in flight are reported
    /// unanswered).
    pub fn close(&mut self) {
        if let State::Session(s) = &mut self.state {
            let _ = self.outbox.push_close(s);
        }
        if !matches!(self.state, State::Idle) {
            self.end_session(End::Closed);
        }
    }

    /// Forgets the link (it is gone: nothing queued is sent, partial frames
    /// are dropped); a live session or handshake ends with [`End::Closed`].
    pub fn abort(&mut self) {
        self.outbox.clear();
        self.acc.reset();
        if !matches!(self.state, State::Idle) {
            self.end_session(End::Closed);
        }
    }

    /// Feeds bytes read from the link. Returns how many were consumed: it
    /// stops early when its event queue is nearly full, and takes nothing
    /// while message 2 waits for [`finish_handshake`](Self::finish_handshake)
    /// (it is read from the receive buffer): poll events, then feed the
    /// rest. Timers due at `now_ms` fire first
    /// ([`handle_timeout`](Self::handle_timeout)).
    pub fn handle_input(&mut self, input: &[u8], now_ms: u64) -> usize {
        // Timers first: what arrives after a deadline does not revive the
        // handshake or session that ran out (as `handle_timeout` would have
        // ended it).
        self.handle_timeout(now_ms);
        let mut used = 0;
        while used < input.len()
            && self.events.len() + 2 <= EVENTS
            && !matches!(self.state, State::ChallengeReady(..))
        {
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
            let session = match &mut self.state {
                State::Session(s) => Some(s),
                _ => None,
            };
            let rx = conn::classify(frame, session);
            self.on_frame(rx);
        }
        used
    }

    fn on_frame(&mut self, rx: Rx) {
        match rx {
            Rx::Refused(r) => {
                if !matches!(self.state, State::Idle) {
                    self.end_session(End::Refused(r));
                } else {
                    self.bad(BadFrame::Unexpected);
                }
            }
            Rx::Challenge { start, len } if matches!(self.state, State::AwaitChallenge(_)) => {
                if len != MESSAGE2_LEN {
                    self.end_session(End::HandshakeFailed(HandshakeError::Malformed));
                    return;
                }
                // Message 2 stays in the receive buffer for finish_handshake.
                if let State::AwaitChallenge(init) =
                    core::mem::replace(&mut self.state, State::Idle)
                {
                    self.state = State::ChallengeReady(init, start);
                    self.push(InitiatorEvent::ChallengeReceived);
                }
            }
            Rx::Opened { kind, start, len } => {
                if !self.confirmed {
                    self.confirmed = true;
                    self.push(InitiatorEvent::Confirmed);
                }
                match kind {
                    FRAME_CLOSE => self.end_session(End::PeerClosed),
                    FRAME_DATA => {
                        let plain = self.acc.buffer().get(start..start + len).unwrap_or(&[]);
                        match GatewayMsg::parse(plain) {
                            Some(GatewayMsg::Pong(n)) => self.push(InitiatorEvent::Pong(n)),
                            Some(answer) => self.on_answer(answer),
                            None => self.end_session(End::Protocol),
                        }
                    }
                    _ => self.end_session(End::Protocol),
                }
            }
            Rx::Bad(b) => self.bad(b),
            _ => self.bad(BadFrame::Unexpected),
        }
    }

    fn on_answer(&mut self, answer: GatewayMsg) {
        let sequence = match answer {
            GatewayMsg::Ack { sequence, .. }
            | GatewayMsg::Reject { sequence, .. }
            | GatewayMsg::Busy { sequence } => sequence,
            GatewayMsg::Pong(_) => return,
        };
        // Answers come in submission order; the first flight with this
        // sequence is the one answered (an answer to nothing in flight is a
        // stale one, counted and dropped).
        // A `Reject { sequence: 0, malformed }` answers a submission whose
        // sequence the responder could not read: the oldest one in flight.
        let unreadable = matches!(
            answer,
            GatewayMsg::Reject {
                sequence: 0,
                reason: super::msg::RejectReason::Malformed
            }
        );
        let exact = self.flights.iter().position(|f| f.sequence == sequence);
        let Some(pos) = exact.or((unreadable && !self.flights.is_empty()).then_some(0)) else {
            self.bad(BadFrame::Unexpected);
            return;
        };
        if let Some(f) = take(&mut self.flights, pos) {
            self.push(InitiatorEvent::Answer { id: f.id, answer });
        }
        self.maybe_rekey();
    }

    /// Writes COBS-framed bytes to send into `buf`; `None` when nothing is
    /// queued. A frame may span several calls.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<usize> {
        match self.outbox.drain(buf) {
            0 => None,
            n => Some(n),
        }
    }

    /// The queued COBS-framed bytes that can be written next, without a
    /// copy (the rest of one frame; empty when nothing is queued): write
    /// them, then call [`advance_transmit`](Self::advance_transmit) with how
    /// many were written. An alternative to
    /// [`poll_transmit`](Self::poll_transmit).
    pub fn transmit_slice(&self) -> &[u8] {
        self.outbox.pending()
    }

    /// Marks `n` bytes of [`transmit_slice`](Self::transmit_slice) as sent.
    pub fn advance_transmit(&mut self, n: usize) {
        self.outbox.advance(n);
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<InitiatorEvent> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        // Flights outside a session are the ended session's unanswered ones.
        if matches!(self.state, State::Idle)
            && let Some(f) = take(&mut self.flights, 0)
        {
            return Some(InitiatorEvent::Unanswered {
                id: f.id,
                sequence: f.sequence,
            });
        }
        self.end.take().map(InitiatorEvent::Ended)
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next (ms on the
    /// caller's clock), if any timer runs.
    pub fn poll_timeout(&self) -> Option<u64> {
        match &self.state {
            State::AwaitChallenge(_) | State::ChallengeReady(..) => Some(
                self.hs_started_ms
                    .saturating_add(self.config.handshake.timeout_ms),
            ),
            State::Session(_) => self
                .flights
                .first()
                .map(|f| f.sent_ms.saturating_add(self.config.answer_timeout_ms)),
            State::Idle => None,
        }
    }

    /// Fires the timers due at `now_ms`: a handshake past its timeout ends
    /// with [`End::HandshakeTimeout`], a session whose oldest submission
    /// waited longer than the answer timeout with [`End::AnswerTimeout`].
    pub fn handle_timeout(&mut self, now_ms: u64) {
        match self.poll_timeout() {
            Some(t) if now_ms >= t => {}
            _ => return,
        }
        match self.state {
            State::Session(_) => self.end_session(End::AnswerTimeout),
            State::Idle => {}
            _ => self.end_session(End::HandshakeTimeout),
        }
    }

    /// Whether a session is established (on this side).
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Session(_))
    }

    /// Whether the responder has confirmed the session (an authenticated
    /// frame of it arrived).
    pub fn is_confirmed(&self) -> bool {
        self.confirmed && self.is_established()
    }

    /// Whether [`submit`](Self::submit) can take a transaction now.
    pub fn can_submit(&self) -> bool {
        !self.flights.is_full() && matches!(&self.state, State::Session(s) if s.frames_left() > 1)
    }

    /// Submissions awaiting their answer.
    pub fn in_flight(&self) -> usize {
        if self.is_established() {
            self.flights.len()
        } else {
            0
        }
    }

    /// Whether bytes wait in the transmit queue.
    pub fn has_transmit(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Frames the session may still send (0 without a session).
    pub fn frames_left(&self) -> u64 {
        match &self.state {
            State::Session(s) => s.frames_left(),
            _ => 0,
        }
    }

    /// The authenticated gateway of the current session.
    pub fn peer(&self) -> Option<PublicKey> {
        self.peer.filter(|_| self.is_established())
    }

    /// Frames received that could not be used (malformed, unexpected,
    /// undecryptable, replayed, stale answers), in total.
    pub fn bad_frames(&self) -> u32 {
        self.bad_frames
    }

    /// Closes the session for a new handshake once its send budget is down
    /// to the close frame and nothing is in flight.
    fn maybe_rekey(&mut self) {
        if let State::Session(s) = &mut self.state
            && s.frames_left() <= 1
            && self.flights.is_empty()
        {
            let _ = self.outbox.push_close(s);
            self.end_session(End::Rekey);
        }
    }

    fn push(&mut self, e: InitiatorEvent) {
        // `handle_input` keeps room for the events of one frame.
        let _ = self.events.push_back(e);
    }

    fn bad(&mut self, _b: BadFrame) {
        self.bad_frames = self.bad_frames.saturating_add(1);
    }

    fn end_session(&mut self, end: End) {
        // The flights left are reported unanswered by `poll_event`.
        self.state = State::Idle;
        if self.end.is_none() {
            self.end = Some(end);
        }
    }
}

/// The session, if it may send one more frame besides the close frame.
fn sendable(state: &mut State) -> Result<&mut Session, ConnError> {
    match state {
        State::Session(s) if s.frames_left() > 1 => Ok(s),
        State::Session(_) => Err(ConnError::Exhausted),
        _ => Err(ConnError::NotEstablished),
    }
}

/// Removes the flight at `pos`, keeping the others in order.
fn take<const N: usize>(flights: &mut Vec<Flight, N>, pos: usize) -> Option<Flight> {
    let f = *flights.get(pos)?;
    // One by one (no memmove in a sensor's image).
    let mut i = pos;
    while let Some(next) = flights.get(i + 1).copied() {
        if let Some(slot) = flights.get_mut(i) {
            *slot = next;
        }
        i += 1;
    }
    flights.pop();
    Some(f)
}
