//! What both connections share: their errors, how a link or session ends,
//! submission ids, and how a received frame is opened.

use core::fmt;

use super::msg::{LinkFrame, Refusal};
use crate::frame::FrameError;
use crate::handshake::HandshakeError;
use crate::session::{HEADER_LEN, Session, SessionError};

/// Why a command on a connection could not be carried out. The
/// connection's state is unchanged by a failed command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ConnError {
    /// The transmit queue cannot hold the frame now: drain
    /// `poll_transmit` and try again.
    OutboxFull,
    /// The frame would exceed the link's or the queue's capacity (e.g. a
    /// transaction above what one frame carries).
    TooLarge,
    /// The maximum number of submissions is in flight: wait for answers.
    InFlightFull,
    /// No session is established (or it is ending): handshake first.
    NotEstablished,
    /// The session's send budget is spent (only the close frame is left):
    /// the connection closes it and a new handshake follows.
    Exhausted,
    /// The command does not fit the connection's state (e.g. `accept`
    /// without a pending message 1, `start` while events of the last
    /// session are still to be polled).
    InvalidState,
    /// `answer` named a submission that is not in flight (already answered,
    /// or of an ended session), or the message is not an answer.
    UnknownSubmit,
    /// A handshake step failed: the handshake ended (a responder queued the
    /// matching refusal, [`refusal_for`]).
    Handshake(HandshakeError),
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnError::OutboxFull => "transmit queue full: drain poll_transmit first",
            ConnError::TooLarge => "frame too large for the link or the transmit queue",
            ConnError::InFlightFull => "too many submissions in flight",
            ConnError::NotEstablished => "no established session",
            ConnError::Exhausted => "session send budget spent: a new handshake follows",
            ConnError::InvalidState => "command not valid in the connection's state",
            ConnError::UnknownSubmit => "no such submission in flight (or not an answer)",
            ConnError::Handshake(e) => return write!(f, "handshake: {e}"),
        })
    }
}

impl core::error::Error for ConnError {}

/// How a session (or the handshake before it) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum End {
    /// A refusal in clear: received from the responder (initiator), or sent
    /// to the initiator (responder). The link is to be closed.
    Refused(Refusal),
    /// The handshake failed on this side (the responder also sent the
    /// matching refusal, [`refusal_for`]).
    HandshakeFailed(HandshakeError),
    /// The handshake did not complete within its timeout.
    HandshakeTimeout,
    /// Initiator: the oldest submission got no answer within the answer
    /// timeout.
    AnswerTimeout,
    /// The peer sent a session close frame.
    PeerClosed,
    /// This side's send budget ran out: it sent a close frame; a new
    /// handshake follows (on the same link).
    Rekey,
    /// Responder: a message 1 arrived inside the session (the initiator
    /// restarted); its handshake is served next on the same link.
    Rehandshake,
    /// Responder: no frame arrived for the idle timeout.
    Idle,
    /// This side closed (`close`, `shutdown`).
    Closed,
    /// The peer sent an authenticated frame the protocol does not allow.
    Protocol,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Refused(r) => write!(f, "refused: {r}"),
            End::HandshakeFailed(e) => write!(f, "handshake failed: {e}"),
            End::HandshakeTimeout => f.write_str("handshake timed out"),
            End::AnswerTimeout => f.write_str("no answer in time"),
            End::PeerClosed => f.write_str("peer closed the session"),
            End::Rekey => f.write_str("send budget spent: re-handshake"),
            End::Rehandshake => f.write_str("peer restarted its handshake"),
            End::Idle => f.write_str("idle"),
            End::Closed => f.write_str("closed"),
            End::Protocol => f.write_str("protocol violation by the peer"),
        }
    }
}

/// The id a connection gives each submission, unique per connection
/// (across its sessions), increasing in submission order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SubmitId(pub u64);

/// A frame the connection could not use (counted; the connection goes on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum BadFrame {
    /// Larger than the receive buffer.
    Oversized,
    /// Not COBS, or not a link frame.
    Malformed,
    /// A link frame this state does not expect.
    Unexpected,
    /// A session frame that does not authenticate.
    Undecryptable,
    /// A session frame already received (or older than the window).
    Replayed,
    /// An authenticated frame whose message does not decode, or of an
    /// unknown kind.
    MalformedMessage,
}

impl BadFrame {
    /// A snake_case label (metrics).
    pub fn label(&self) -> &'static str {
        match self {
            BadFrame::Oversized => "oversized_frame",
            BadFrame::Malformed => "malformed_frame",
            BadFrame::Unexpected => "unexpected_frame",
            BadFrame::Undecryptable => "undecryptable",
            BadFrame::Replayed => "replayed_frame",
            BadFrame::MalformedMessage => "malformed_message",
        }
    }
}

/// What a connection counts for a frame its accumulator could not decode:
/// too large for the receive buffer, or anything else (not COBS, truncated).
pub(crate) fn bad_frame(e: FrameError) -> BadFrame {
    match e {
        FrameError::Oversized => BadFrame::Oversized,
        _ => BadFrame::Malformed,
    }
}

/// The refusal a responder sends for a handshake error (`docs/PROTOCOL.md`,
/// "Refusals"): the allowlist's verdicts, chain and version by name, a
/// full half-open table as `Busy`, anything else as `HandshakeFailed`.
pub fn refusal_for(e: HandshakeError) -> Refusal {
    match e {
        HandshakeError::UnknownIdentity => Refusal::UnknownIdentity,
        HandshakeError::NotPermitted => Refusal::NotPermitted,
        HandshakeError::WrongChain => Refusal::WrongChain,
        HandshakeError::VersionMismatch => Refusal::VersionMismatch,
        HandshakeError::TooManyHalfOpen => Refusal::Busy,
        _ => Refusal::HandshakeFailed,
    }
}

/// A received link frame, classified.
pub(crate) enum Rx {
    /// A handshake message: where its bytes are in the receive buffer.
    Hello {
        start: usize,
        len: usize,
    },
    Challenge {
        start: usize,
        len: usize,
    },
    Proof {
        start: usize,
        len: usize,
    },
    Refused(Refusal),
    /// A session frame that opened: its kind, and where its plaintext is
    /// in the receive buffer.
    Opened {
        kind: u8,
        start: usize,
        len: usize,
    },
    Bad(BadFrame),
}

/// Classifies a decoded link frame; a session frame is opened in place
/// with `session` (if any).
pub(crate) fn classify(frame: &mut [u8], session: Option<&mut Session>) -> Rx {
    // Every byte-carrying variant's bytes are the frame's tail (after the
    // variant and the length varint).
    let total = frame.len();
    let at = |b: &[u8]| (total - b.len(), b.len());
    let ct_len = match LinkFrame::parse(frame) {
        Some(LinkFrame::Hello(b)) => {
            let (start, len) = at(b);
            return Rx::Hello { start, len };
        }
        Some(LinkFrame::Challenge(b)) => {
            let (start, len) = at(b);
            return Rx::Challenge { start, len };
        }
        Some(LinkFrame::Proof(b)) => {
            let (start, len) = at(b);
            return Rx::Proof { start, len };
        }
        Some(LinkFrame::Refused(r)) => return Rx::Refused(r),
        Some(LinkFrame::Session(ct)) => ct.len(),
        None => return Rx::Bad(BadFrame::Malformed),
    };
    let Some(session) = session else {
        return Rx::Bad(BadFrame::Unexpected);
    };
    // The ciphertext is the frame's tail (after the variant and length).
    let start = frame.len() - ct_len;
    let Some(ct) = frame.get_mut(start..) else {
        return Rx::Bad(BadFrame::Malformed);
    };
    match session.open_in_place(ct) {
        Ok(o) => Rx::Opened {
            kind: o.kind,
            start: start + HEADER_LEN,
            len: o.payload.len(),
        },
        Err(SessionError::Replayed) => Rx::Bad(BadFrame::Replayed),
        Err(SessionError::Decrypt) => Rx::Bad(BadFrame::Undecryptable),
        Err(_) => Rx::Bad(BadFrame::Malformed),
    }
}
