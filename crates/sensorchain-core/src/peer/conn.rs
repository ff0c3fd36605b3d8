//! One end of a peer link, sans-I/O ([`PeerConnection`]): COBS framing of
//! link frames of up to [`PEER_MAX_FRAME`] bytes, the handshake messages in
//! their order, the session, and whole messages cut into chunks and put
//! back together within [`PEER_MAX_MESSAGE`].
//!
//! The connection holds no key and does no handshake cryptography: it
//! hands each handshake message to the driver as an event
//! ([`PeerEvent::Hello`], [`PeerEvent::Challenge`], [`PeerEvent::Proof`]),
//! and the driver runs the step with [`crate::handshake`] (off its async
//! runtime if it likes) and gives the result back (`send_challenge`,
//! `send_proof`, `establish`). Until it does, the connection takes no
//! input.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;

use super::{FRAME_PEER_END, FRAME_PEER_MORE, PEER_CHUNK, PEER_MAX_FRAME, PEER_MAX_MESSAGE};
use crate::codec::{self, put_varint};
use crate::frame::{FrameAccumulator, FrameError, cobs_encode, max_encoded_len};
use crate::handshake::{HandshakeConfig, HandshakeError, Hello, MESSAGE2_LEN, MESSAGE3_LEN};
use crate::link::{LinkFrame, Refusal, refusal_for};
use crate::session::{FRAME_CLOSE, FRAME_OVERHEAD, HEADER_LEN, Session, SessionError};

/// Which end of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The dialling gateway: sends message 1, then requests.
    Initiator,
    /// The listening gateway: answers.
    Responder,
}

/// How the peer broke the protocol (the link is closed; nothing more is
/// read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// Not COBS, or a frame cut short by the end of the stream.
    Framing,
    /// A link frame above [`PEER_MAX_FRAME`] bytes.
    Oversized,
    /// Not a strictly encoded `LinkFrame`.
    NotALinkFrame,
    /// A link frame this state does not expect (a second `Hello`, a
    /// `Proof` to the initiator, a `Refused` from the initiator...).
    Unexpected,
    /// A session frame that does not authenticate.
    Undecryptable,
    /// A session frame whose counter was already seen.
    Replayed,
    /// An authenticated frame of a kind that is neither a chunk nor close
    /// (a device's data frame included).
    WrongKind,
    /// A chunk of the wrong size: a `MORE` chunk not of exactly
    /// [`PEER_CHUNK`] bytes, or an empty `END` chunk.
    ChunkSize,
    /// The message being put back together would exceed
    /// [`PEER_MAX_MESSAGE`].
    TooLarge,
    /// A message whose id or body does not decode (reported by the driver
    /// through [`PeerConnection::violation`]).
    Malformed,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Violation::Framing => "bad framing",
            Violation::Oversized => "link frame above the peer maximum",
            Violation::NotALinkFrame => "not a link frame",
            Violation::Unexpected => "unexpected link frame",
            Violation::Undecryptable => "session frame does not authenticate",
            Violation::Replayed => "session frame replayed",
            Violation::WrongKind => "session frame of a kind peers do not send",
            Violation::ChunkSize => "chunk of the wrong size",
            Violation::TooLarge => "message above the peer maximum",
            Violation::Malformed => "message does not decode",
        })
    }
}

/// How a peer link ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerEnd {
    /// A refusal in clear: received (initiator) or sent (responder).
    Refused(Refusal),
    /// Message 1 did not parse (wrong version, chain or encoding); the
    /// matching refusal was sent.
    HandshakeFailed(HandshakeError),
    /// The peer sent a session close frame.
    PeerClosed,
    /// This side closed ([`PeerConnection::close`]).
    Closed,
    /// The peer broke the protocol.
    Protocol(Violation),
    /// This side's session ran out of frames (2^48 − 1): dial again.
    Exhausted,
}

impl fmt::Display for PeerEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerEnd::Refused(r) => write!(f, "refused: {r}"),
            PeerEnd::HandshakeFailed(e) => write!(f, "handshake failed: {e}"),
            PeerEnd::PeerClosed => f.write_str("peer closed the session"),
            PeerEnd::Closed => f.write_str("closed"),
            PeerEnd::Protocol(v) => write!(f, "protocol violation: {v}"),
            PeerEnd::Exhausted => f.write_str("session frames exhausted"),
        }
    }
}

/// Why a command on a peer connection could not be carried out (its state
/// is unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerConnError {
    /// The command does not fit the connection's role or state.
    InvalidState,
    /// A message that is empty or above [`PEER_MAX_MESSAGE`], or a
    /// handshake message of the wrong length.
    BadLength,
}

impl fmt::Display for PeerConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerConnError::InvalidState => "command not valid in the connection's state",
            PeerConnError::BadLength => "message empty, too large, or of the wrong length",
        })
    }
}

impl core::error::Error for PeerConnError {}

/// What happened on a peer connection ([`PeerConnection::poll_event`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum PeerEvent {
    /// Responder: message 1 arrived and parsed (the peer version, the
    /// chain): admit it ([`Hello::check`], the shared table), run message
    /// 2, then [`PeerConnection::send_challenge`] — or
    /// [`PeerConnection::refuse`].
    Hello(Hello),
    /// Initiator: message 2 arrived: verify it
    /// ([`crate::handshake::Initiator::finish`]), then
    /// [`PeerConnection::send_proof`] — or [`PeerConnection::close`].
    Challenge([u8; MESSAGE2_LEN]),
    /// Responder: message 3 arrived: verify it
    /// ([`crate::handshake::Responder::verify`]), then
    /// [`PeerConnection::establish`] — or [`PeerConnection::refuse`].
    Proof([u8; MESSAGE3_LEN]),
    /// A whole message (a request to the responder, an answer to the
    /// initiator), at most [`PEER_MAX_MESSAGE`] bytes; not decoded.
    Message(Vec<u8>),
    /// The link ended: write what is left to transmit, then close it.
    Ended(PeerEnd),
}

enum State {
    /// Initiator, before [`PeerConnection::send_hello`].
    Start,
    AwaitChallenge,
    /// The `Challenge` event is out; waiting for `send_proof`.
    ChallengeOut,
    AwaitHello,
    /// The `Hello` event is out; waiting for `send_challenge`.
    HelloOut,
    AwaitProof,
    /// The `Proof` event is out; waiting for `establish`.
    ProofOut,
    Open(Session),
    Closed,
}

/// One end of a peer link, sans-I/O.
///
/// The driver feeds what it reads to [`handle_input`](Self::handle_input),
/// handles [`poll_event`](Self::poll_event), writes
/// [`transmit`](Self::transmit) (then [`advance`](Self::advance)), and
/// queues whole messages with [`send`](Self::send). Messages are sealed a
/// chunk at a time as the driver writes them, so a large message costs one
/// link frame of work per write, not its whole length at once.
pub struct PeerConnection {
    role: Role,
    hs: HandshakeConfig,
    state: State,
    acc: Box<FrameAccumulator<PEER_MAX_FRAME>>,
    /// COBS-framed bytes ready to write: `wire[sent..]`.
    wire: Vec<u8>,
    sent: usize,
    /// One link frame being built (reused).
    frame: Vec<u8>,
    /// Whole messages to send; the first is `out_pos` bytes in.
    outgoing: VecDeque<Vec<u8>>,
    out_pos: usize,
    outgoing_bytes: usize,
    /// The message being put back together.
    reasm: Vec<u8>,
    events: VecDeque<PeerEvent>,
}

impl fmt::Debug for PeerConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerConnection")
            .field("role", &self.role)
            .field("open", &self.is_open())
            .field("closed", &self.is_closed())
            .field("queued", &self.outgoing.len())
            .finish_non_exhaustive()
    }
}

impl PeerConnection {
    /// The dialling end: call [`send_hello`](Self::send_hello) with message
    /// 1 ([`crate::handshake::Initiator::start_peer`]).
    pub fn initiator(hs: HandshakeConfig) -> Self {
        Self::new(Role::Initiator, hs, State::Start)
    }

    /// The listening end of a link just accepted: waits for message 1.
    pub fn responder(hs: HandshakeConfig) -> Self {
        Self::new(Role::Responder, hs, State::AwaitHello)
    }

    fn new(role: Role, hs: HandshakeConfig, state: State) -> Self {
        PeerConnection {
            role,
            hs,
            state,
            acc: Box::new(FrameAccumulator::new()),
            wire: Vec::new(),
            sent: 0,
            frame: Vec::new(),
            outgoing: VecDeque::new(),
            out_pos: 0,
            outgoing_bytes: 0,
            reasm: Vec::new(),
            events: VecDeque::new(),
        }
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether the session is established (messages may be sent).
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    /// Whether the link ended: write what is left of
    /// [`transmit`](Self::transmit), then close it.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Initiator: queues message 1 (45 bytes, from
    /// [`crate::handshake::Initiator::start_peer`]).
    pub fn send_hello(&mut self, m1: &[u8]) -> Result<(), PeerConnError> {
        if !matches!(self.state, State::Start) {
            return Err(PeerConnError::InvalidState);
        }
        if m1.len() != crate::handshake::MESSAGE1_LEN {
            return Err(PeerConnError::BadLength);
        }
        self.push_clear(&LinkFrame::Hello(m1));
        self.state = State::AwaitChallenge;
        Ok(())
    }

    /// Initiator, after [`PeerEvent::Challenge`]: queues message 3 and
    /// opens the session (messages may be sent right after it; a refusal
    /// before the responder's first session frame means none was read).
    pub fn send_proof(&mut self, m3: &[u8], session: Session) -> Result<(), PeerConnError> {
        if !matches!(self.state, State::ChallengeOut) {
            return Err(PeerConnError::InvalidState);
        }
        if m3.len() != MESSAGE3_LEN {
            return Err(PeerConnError::BadLength);
        }
        self.push_clear(&LinkFrame::Proof(m3));
        self.state = State::Open(session);
        Ok(())
    }

    /// Responder, after [`PeerEvent::Hello`]: queues message 2.
    pub fn send_challenge(&mut self, m2: &[u8]) -> Result<(), PeerConnError> {
        if !matches!(self.state, State::HelloOut) {
            return Err(PeerConnError::InvalidState);
        }
        if m2.len() != MESSAGE2_LEN {
            return Err(PeerConnError::BadLength);
        }
        self.push_clear(&LinkFrame::Challenge(m2));
        self.state = State::AwaitProof;
        Ok(())
    }

    /// Responder, after [`PeerEvent::Proof`] verified: opens the session.
    pub fn establish(&mut self, session: Session) -> Result<(), PeerConnError> {
        if !matches!(self.state, State::ProofOut) {
            return Err(PeerConnError::InvalidState);
        }
        self.state = State::Open(session);
        Ok(())
    }

    /// Responder: refuses in clear and ends the link (a handshake refused,
    /// a session whose peer lost its permission, shutdown); an initiator
    /// just closes. Whatever was queued and not yet on the wire is
    /// dropped.
    pub fn refuse(&mut self, r: Refusal) {
        if self.role == Role::Initiator {
            return self.close();
        }
        if self.is_closed() {
            return;
        }
        self.drop_queued();
        self.push_clear(&LinkFrame::Refused(r));
        self.end(PeerEnd::Refused(r));
    }

    /// Ends the link: a session gets a close frame (messages not yet on the
    /// wire are dropped; a message cut short is dropped by the receiver).
    pub fn close(&mut self) {
        if self.is_closed() {
            return;
        }
        self.drop_queued();
        if let State::Open(s) = &mut self.state {
            let mut frame = core::mem::take(&mut self.frame);
            if seal_frame(&mut frame, s, FRAME_CLOSE, &[]).is_ok() {
                push_cobs(&mut self.wire, &frame);
            }
            self.frame = frame;
        }
        self.end(PeerEnd::Closed);
    }

    /// The driver found a message that does not decode (its id or body):
    /// the link ends ([`Violation::Malformed`]); a responder tells the
    /// initiator nothing.
    pub fn violation(&mut self, v: Violation) {
        if !self.is_closed() {
            self.drop_queued();
            self.end(PeerEnd::Protocol(v));
        }
    }

    /// Queues one whole message (1 ..= [`PEER_MAX_MESSAGE`] bytes) on the
    /// open session; it goes out in chunks after the messages queued
    /// before it.
    pub fn send(&mut self, message: Vec<u8>) -> Result<(), PeerConnError> {
        if !self.is_open() {
            return Err(PeerConnError::InvalidState);
        }
        if message.is_empty() || message.len() > PEER_MAX_MESSAGE {
            return Err(PeerConnError::BadLength);
        }
        self.outgoing_bytes += message.len();
        self.outgoing.push_back(message);
        Ok(())
    }

    /// Messages queued and not yet wholly on the wire.
    pub fn queued(&self) -> usize {
        self.outgoing.len()
    }

    /// Bytes of those messages not yet on the wire.
    pub fn queued_bytes(&self) -> usize {
        self.outgoing_bytes - self.out_pos
    }

    /// Whether anything waits to be written.
    pub fn has_transmit(&self) -> bool {
        self.sent < self.wire.len() || (self.is_open() && !self.outgoing.is_empty())
    }

    /// The next bytes to write (empty when nothing waits): the rest of the
    /// current link frame, sealing the next chunk of a queued message when
    /// the last frame is out. Write some, then [`advance`](Self::advance).
    pub fn transmit(&mut self) -> &[u8] {
        if self.sent >= self.wire.len() {
            self.wire.clear();
            self.sent = 0;
            self.seal_next_chunk();
        }
        self.wire.get(self.sent..).unwrap_or(&[])
    }

    /// Marks `n` bytes of [`transmit`](Self::transmit) as written.
    pub fn advance(&mut self, n: usize) {
        self.sent = self.sent.saturating_add(n).min(self.wire.len());
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    /// Feeds bytes read from the link; returns how many were taken. It
    /// stops after each event (poll it, act on it, then feed the rest),
    /// takes nothing while a handshake step is the driver's to do, and
    /// takes everything once the link ended (it is ignored).
    pub fn handle_input(&mut self, input: &[u8]) -> usize {
        let mut used = 0;
        while used < input.len() && self.events.is_empty() {
            match self.state {
                State::Closed => return input.len(),
                State::ChallengeOut | State::HelloOut | State::ProofOut | State::Start => break,
                _ => {}
            }
            let (n, ev) = self.acc.feed_mut(input.get(used..).unwrap_or(&[]));
            used += n;
            let frame = match ev {
                None => break,
                Some(Err(FrameError::Oversized)) => {
                    self.bad(Violation::Oversized);
                    continue;
                }
                Some(Err(_)) => {
                    self.bad(Violation::Framing);
                    continue;
                }
                Some(Ok(f)) => f,
            };
            let rx = classify(frame, &mut self.state);
            self.on_frame(rx);
        }
        used
    }

    /// The stream ended (EOF): a frame cut short is a violation, otherwise
    /// the link just ends ([`PeerEnd::PeerClosed`]).
    pub fn handle_eof(&mut self) {
        if self.is_closed() {
            return;
        }
        if self.acc.in_frame() {
            self.bad(Violation::Framing);
        } else {
            self.drop_queued();
            self.end(PeerEnd::PeerClosed);
        }
    }

    fn on_frame(&mut self, rx: Rx) {
        match (rx, &self.state) {
            (Rx::Hello(m1), State::AwaitHello) => match Hello::parse_peer(&self.hs, &m1) {
                Ok(h) => {
                    self.state = State::HelloOut;
                    self.events.push_back(PeerEvent::Hello(h));
                }
                Err(e) => self.fail(e),
            },
            (Rx::Challenge(m2), State::AwaitChallenge) => {
                self.state = State::ChallengeOut;
                self.events.push_back(PeerEvent::Challenge(m2));
            }
            (Rx::Proof(m3), State::AwaitProof) => {
                self.state = State::ProofOut;
                self.events.push_back(PeerEvent::Proof(m3));
            }
            (Rx::Refused(r), _) if self.role == Role::Initiator => {
                self.drop_queued();
                self.end(PeerEnd::Refused(r));
            }
            (Rx::Chunk { more, at, len }, State::Open(_)) => self.on_chunk(more, at, len),
            (Rx::Close, State::Open(_)) => {
                self.drop_queued();
                self.end(PeerEnd::PeerClosed);
            }
            (Rx::Bad(v), _) => self.bad(v),
            _ => self.bad(Violation::Unexpected),
        }
    }

    fn on_chunk(&mut self, more: bool, at: usize, len: usize) {
        let ok_size = if more {
            len == PEER_CHUNK
        } else {
            (1..=PEER_CHUNK).contains(&len)
        };
        if !ok_size {
            return self.bad(Violation::ChunkSize);
        }
        if self.reasm.len() + len > PEER_MAX_MESSAGE {
            return self.bad(Violation::TooLarge);
        }
        let chunk = self.acc.buffer().get(at..at + len).unwrap_or(&[]);
        self.reasm.extend_from_slice(chunk);
        if !more {
            let message = core::mem::take(&mut self.reasm);
            self.events.push_back(PeerEvent::Message(message));
        }
    }

    /// The peer broke the protocol: a responder still in its handshake
    /// refuses (`HandshakeFailed`), otherwise the link ends silently.
    fn bad(&mut self, v: Violation) {
        let handshaking = !matches!(self.state, State::Open(_) | State::Closed);
        if self.role == Role::Responder && handshaking {
            self.drop_queued();
            self.push_clear(&LinkFrame::Refused(Refusal::HandshakeFailed));
        } else {
            self.drop_queued();
        }
        self.end(PeerEnd::Protocol(v));
    }

    /// Message 1 did not parse: the matching refusal, and the end.
    fn fail(&mut self, e: HandshakeError) {
        self.push_clear(&LinkFrame::Refused(refusal_for(e)));
        self.end(PeerEnd::HandshakeFailed(e));
    }

    fn end(&mut self, end: PeerEnd) {
        self.state = State::Closed;
        self.reasm = Vec::new();
        self.events.push_back(PeerEvent::Ended(end));
    }

    /// Forgets the messages not yet on the wire (whole frames already
    /// framed stay: the link's byte stream stays well-formed).
    fn drop_queued(&mut self) {
        self.outgoing.clear();
        self.out_pos = 0;
        self.outgoing_bytes = 0;
    }

    /// Appends a link frame in clear.
    fn push_clear(&mut self, f: &LinkFrame<'_>) {
        let mut buf = [0u8; 128];
        if let Ok(b) = codec::encode_to_slice(f, &mut buf) {
            push_cobs(&mut self.wire, b);
        }
    }

    /// Seals the next chunk of the first queued message into `wire`.
    fn seal_next_chunk(&mut self) {
        let State::Open(session) = &mut self.state else {
            return;
        };
        let Some(msg) = self.outgoing.front() else {
            return;
        };
        let rest = msg.get(self.out_pos..).unwrap_or(&[]);
        let n = rest.len().min(PEER_CHUNK);
        let more = n < rest.len();
        let kind = if more {
            FRAME_PEER_MORE
        } else {
            FRAME_PEER_END
        };
        let mut frame = core::mem::take(&mut self.frame);
        let r = seal_frame(&mut frame, session, kind, rest.get(..n).unwrap_or(&[]));
        match r {
            Ok(()) => {
                push_cobs(&mut self.wire, &frame);
                self.frame = frame;
                if more {
                    self.out_pos += n;
                } else {
                    let len = self.outgoing.pop_front().map_or(0, |m| m.len());
                    self.outgoing_bytes -= len;
                    self.out_pos = 0;
                }
            }
            Err(_) => {
                // The session's frames are spent (2^48 − 1 of them): the
                // link ends; the driver dials again.
                self.frame = frame;
                self.drop_queued();
                self.end(PeerEnd::Exhausted);
            }
        }
    }
}

/// The variant index of `LinkFrame::Session` (a test checks it against
/// the encoder).
pub(super) const LINK_SESSION: u8 = 3;

/// Builds `LinkFrame::Session(kind ‖ counter ‖ ciphertext ‖ tag)` of
/// `payload` in `frame`.
fn seal_frame(
    frame: &mut Vec<u8>,
    session: &mut Session,
    kind: u8,
    payload: &[u8],
) -> Result<(), SessionError> {
    let ct_len = payload.len() + FRAME_OVERHEAD;
    frame.clear();
    let mut head = [0u8; 11];
    head[0] = LINK_SESSION;
    let n = put_varint(&mut head[1..], ct_len as u64).ok_or(SessionError::BufferTooSmall)?;
    let start = 1 + n;
    frame.extend_from_slice(&head[..start]);
    frame.resize(start + HEADER_LEN, 0);
    frame.extend_from_slice(payload);
    frame.resize(start + ct_len, 0);
    let sealed = session.seal_in_place(kind, &mut frame[start..], payload.len())?;
    debug_assert_eq!(sealed, ct_len);
    Ok(())
}

/// Appends the COBS frame of `bytes` to `wire`.
fn push_cobs(wire: &mut Vec<u8>, bytes: &[u8]) {
    let at = wire.len();
    wire.resize(at + max_encoded_len(bytes.len()), 0);
    match cobs_encode(bytes, &mut wire[at..]) {
        Ok(n) => wire.truncate(at + n),
        Err(_) => wire.truncate(at),
    }
}

/// A received link frame, classified (and a session frame opened in place).
enum Rx {
    Hello(Vec<u8>),
    Challenge([u8; MESSAGE2_LEN]),
    Proof([u8; MESSAGE3_LEN]),
    Refused(Refusal),
    /// An authenticated chunk: its plaintext is `acc.buffer()[at..at + len]`.
    Chunk {
        more: bool,
        at: usize,
        len: usize,
    },
    Close,
    Bad(Violation),
}

fn classify(frame: &mut [u8], state: &mut State) -> Rx {
    let total = frame.len();
    let ct_len = match codec::decode_exact::<LinkFrame<'_>>(frame, PEER_MAX_FRAME) {
        Ok(LinkFrame::Hello(m1)) => return Rx::Hello(m1.to_vec()),
        Ok(LinkFrame::Challenge(m2)) => {
            return match <[u8; MESSAGE2_LEN]>::try_from(m2) {
                Ok(m2) => Rx::Challenge(m2),
                Err(_) => Rx::Bad(Violation::Unexpected),
            };
        }
        Ok(LinkFrame::Proof(m3)) => {
            return match <[u8; MESSAGE3_LEN]>::try_from(m3) {
                Ok(m3) => Rx::Proof(m3),
                Err(_) => Rx::Bad(Violation::Unexpected),
            };
        }
        Ok(LinkFrame::Refused(r)) => return Rx::Refused(r),
        Ok(LinkFrame::Session(ct)) => ct.len(),
        Err(_) => return Rx::Bad(Violation::NotALinkFrame),
    };
    let State::Open(session) = state else {
        return Rx::Bad(Violation::Unexpected);
    };
    // The ciphertext is the frame's tail (after the variant and length).
    let start = total - ct_len;
    let Some(ct) = frame.get_mut(start..) else {
        return Rx::Bad(Violation::NotALinkFrame);
    };
    match session.open_in_place(ct) {
        Ok(o) => match o.kind {
            FRAME_PEER_MORE | FRAME_PEER_END => Rx::Chunk {
                more: o.kind == FRAME_PEER_MORE,
                at: start + HEADER_LEN,
                len: o.payload.len(),
            },
            FRAME_CLOSE => Rx::Close,
            _ => Rx::Bad(Violation::WrongKind),
        },
        Err(SessionError::Replayed) => Rx::Bad(Violation::Replayed),
        Err(SessionError::Decrypt) => Rx::Bad(Violation::Undecryptable),
        Err(_) => Rx::Bad(Violation::NotALinkFrame),
    }
}
