//! The messages of a peer link (re-exported by [`crate::peer`]): requests
//! from the initiator ([`PeerRequest`]) and answers from the responder
//! ([`PeerAnswer`]), postcard-encoded and strictly decoded
//! ([`crate::codec`]); `docs/PROTOCOL.md`, "Peer links", gives every byte.
//!
//! A message is `varint(id) || body`: the id is the request's, chosen by
//! the initiator, and copied into its answer. The body of a Raft request or
//! answer is openraft's own type, postcard-encoded, carried as bytes: this
//! module checks only that they are bytes; the gateway decodes them.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::{MAX_REASON_LEN, PEER_MAX_MESSAGE};
use crate::block::FinalityVote;
use crate::codec::{self, DecodeError};
use crate::hash::Hash32;
use crate::link::RejectReason;

/// A request: its id (unique among the initiator's requests in flight on
/// the link) and what is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRequest<'a> {
    /// The request's id; its answer carries the same.
    pub id: u64,
    /// What is asked.
    #[serde(borrow)]
    pub body: Request<'a>,
}

/// What a peer asks (variant indices in declaration order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<'a> {
    /// Raft's AppendEntries: openraft's `AppendEntriesRequest`, postcard.
    AppendEntries(&'a [u8]),
    /// Raft's RequestVote: openraft's `VoteRequest`, postcard.
    Vote(&'a [u8]),
    /// Raft's InstallSnapshot (one chunk): openraft's
    /// `InstallSnapshotRequest`, postcard.
    InstallSnapshot(&'a [u8]),
    /// A transaction a follower received, for the leader's intake: its
    /// exact encoded bytes, as the sensor signed them.
    Forward(&'a [u8]),
    /// This gateway's finality vote for the block at `height` with `hash`,
    /// for the leader's collector.
    FinalityVote {
        /// The block's height.
        height: u64,
        /// The block's hash.
        hash: Hash32,
        /// The vote (validator key id and signature).
        vote: FinalityVote,
    },
    /// Stored blocks from height `from` on, at most `max` of them, with
    /// their finality certificates: what a member catching up by snapshot
    /// asks for the chain below the snapshot's head (the back-fill).
    Blocks {
        /// The first height asked for.
        from: u64,
        /// At most this many blocks.
        max: u32,
    },
    /// Sent by a member starting with an empty Raft log (no vote, no
    /// entry) to learn whether the cluster knew it before: a member that
    /// lost its data must not vote under its old membership.
    Rejoin,
    /// The answering member's own view of itself (role, term, heights,
    /// health), for a cluster overview on any one member.
    Status,
}

/// An answer: the id of the request it answers and the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAnswer<'a> {
    /// The id of the request answered.
    pub id: u64,
    /// The result.
    #[serde(borrow)]
    pub body: Answer<'a>,
}

/// The result of a request (variant indices in declaration order; each
/// request kind is answered by its own variant — the variant of the same
/// index for the first five, [`Answer::Blocks`] (index 6) for
/// [`Request::Blocks`] (index 5), [`Answer::Rejoin`] (index 7) for
/// [`Request::Rejoin`] (index 6), [`Answer::Status`] (index 8) for
/// [`Request::Status`] (index 7) — or by [`Answer::Malformed`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer<'a> {
    /// openraft's `Result<AppendEntriesResponse, RaftError>`, postcard.
    AppendEntries(&'a [u8]),
    /// openraft's `Result<VoteResponse, RaftError>`, postcard.
    Vote(&'a [u8]),
    /// openraft's `Result<InstallSnapshotResponse,
    /// RaftError<InstallSnapshotError>>`, postcard.
    InstallSnapshot(&'a [u8]),
    /// What the leader did with a forwarded transaction.
    Forward(ForwardAnswer),
    /// What the leader did with a finality vote.
    FinalityVote(VoteAnswer),
    /// The request's body could not be read (not the encoding of its
    /// kind): nothing was done.
    Malformed,
    /// Consecutive stored blocks from the height asked for, in height
    /// order (fewer than asked at the answering member's head or when the
    /// answer would grow too large; none when it has no block there).
    Blocks(Vec<StoredBlock<'a>>),
    /// What the leader knows of the asking member's log, and did.
    Rejoin(RejoinAnswer),
    /// The answering member's view of itself.
    Status(PeerStatus),
}

/// A member's role in its Raft, as it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberRole {
    /// It leads.
    Leader,
    /// A voter following a leader.
    Follower,
    /// A voter asking for votes.
    Candidate,
    /// A non-voting member.
    Learner,
    /// Its Raft has stopped (a storage failure, a shutdown).
    Stopped,
}

/// The answer to [`Request::Status`]: the answering member's view of
/// itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its role.
    pub role: MemberRole,
    /// Its Raft term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// The last log index applied to its chain.
    pub applied_index: Option<u64>,
    /// Its chain's head height.
    pub height: u64,
    /// Its last final (certified) height.
    pub finalized_height: Option<u64>,
    /// `ok`, or why its Raft stopped (at most [`MAX_REASON_LEN`] bytes).
    pub health: String,
}

/// The answer to [`Request::Rejoin`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejoinAnswer {
    /// The leader never matched an entry of the asker's log beyond the
    /// initial membership (index 0): a new member; start as configured.
    Fresh,
    /// The leader had matched entries the asker no longer has: it removed
    /// the asker from the membership and added it again as a learner (it
    /// is made a voter once it has caught up). Start without initialising
    /// and follow the leader.
    Learner,
    /// The answering gateway does not lead; `established` when its own log
    /// holds entries beyond the initial membership (the cluster has run).
    NotLeader {
        /// The current leader's node id, if known.
        leader: Option<u64>,
        /// Whether the answering member's log has entries beyond index 0.
        established: bool,
    },
    /// The leader could not do it (not a member, a membership change
    /// failed).
    Refused {
        /// A human-readable account (at most [`MAX_REASON_LEN`] bytes).
        message: String,
    },
}

/// A stored block as a peer serves it: its exact bytes and, if the member
/// stores one, its finality certificate's bytes. The receiver decodes and
/// validates both as it would any block and certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBlock<'a> {
    /// The block's exact encoded bytes.
    pub block: &'a [u8],
    /// Its finality certificate's encoded bytes, if stored.
    pub cert: Option<&'a [u8]>,
}

/// What the leader did with a forwarded transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardAnswer {
    /// Taken into the leader's intake: it will be in a block unless a rule
    /// refuses it there (the follower keeps its sensor waiting for the
    /// block's certificate).
    Queued,
    /// Refused for good by a ledger rule or the leader's checks.
    Refused {
        /// Why, as a sensor is told ([`crate::link::GatewayMsg::Reject`]).
        reason: RejectReason,
        /// A human-readable account (at most [`MAX_REASON_LEN`] bytes).
        message: String,
    },
    /// Already in the leader's chain, in the block at `height` (a resent
    /// copy, e.g. after a leader change).
    InBlock {
        /// The block holding it.
        height: u64,
    },
    /// The answering gateway does not lead: forward to `leader` (when it
    /// knows one) instead.
    NotLeader {
        /// The current leader's node id, if known.
        leader: Option<u64>,
    },
    /// The leader cannot take it now (intake full, shutting down): resend
    /// later.
    Busy,
}

/// What the leader did with a finality vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VoteAnswer {
    /// Counted, or already known (the same vote again, a height already
    /// certified), or kept until the leader's chain reaches its height:
    /// nothing more to do.
    Counted,
    /// Refused.
    Refused {
        /// Why.
        reason: VoteRefusal,
        /// A human-readable account (at most [`MAX_REASON_LEN`] bytes).
        message: String,
    },
    /// The answering gateway does not lead: send it to `leader` instead.
    NotLeader {
        /// The current leader's node id, if known.
        leader: Option<u64>,
    },
}

/// Why a finality vote was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VoteRefusal {
    /// Not a validator in force at that height, a signature that does not
    /// verify, a height too far ahead.
    Invalid,
    /// The validator signed another hash at that height: the leader keeps
    /// both votes as evidence.
    Equivocation,
}

/// The kind of a request, and of the answer that matches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// [`Request::AppendEntries`], [`Answer::AppendEntries`].
    AppendEntries,
    /// [`Request::Vote`], [`Answer::Vote`].
    Vote,
    /// [`Request::InstallSnapshot`], [`Answer::InstallSnapshot`].
    InstallSnapshot,
    /// [`Request::Forward`], [`Answer::Forward`].
    Forward,
    /// [`Request::FinalityVote`], [`Answer::FinalityVote`].
    FinalityVote,
    /// [`Request::Blocks`], [`Answer::Blocks`].
    Blocks,
    /// [`Request::Rejoin`], [`Answer::Rejoin`].
    Rejoin,
    /// [`Request::Status`], [`Answer::Status`].
    Status,
}

impl Request<'_> {
    /// The kind of this request.
    pub fn kind(&self) -> Kind {
        match self {
            Request::AppendEntries(_) => Kind::AppendEntries,
            Request::Vote(_) => Kind::Vote,
            Request::InstallSnapshot(_) => Kind::InstallSnapshot,
            Request::Forward(_) => Kind::Forward,
            Request::FinalityVote { .. } => Kind::FinalityVote,
            Request::Blocks { .. } => Kind::Blocks,
            Request::Rejoin => Kind::Rejoin,
            Request::Status => Kind::Status,
        }
    }
}

impl Answer<'_> {
    /// The kind of request this answers (`None` for
    /// [`Answer::Malformed`], which answers any).
    pub fn kind(&self) -> Option<Kind> {
        Some(match self {
            Answer::AppendEntries(_) => Kind::AppendEntries,
            Answer::Vote(_) => Kind::Vote,
            Answer::InstallSnapshot(_) => Kind::InstallSnapshot,
            Answer::Forward(_) => Kind::Forward,
            Answer::FinalityVote(_) => Kind::FinalityVote,
            Answer::Blocks(_) => Kind::Blocks,
            Answer::Rejoin(_) => Kind::Rejoin,
            Answer::Status(_) => Kind::Status,
            Answer::Malformed => return None,
        })
    }

    /// Whether this can answer a request of kind `kind`.
    pub fn answers(&self, kind: Kind) -> bool {
        self.kind().is_none_or(|k| k == kind)
    }
}

impl<'a> PeerRequest<'a> {
    /// Strictly decodes one request message (at most [`PEER_MAX_MESSAGE`]
    /// bytes).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        codec::decode_exact(bytes, PEER_MAX_MESSAGE)
    }

    /// The message's bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        codec::encode_to_vec(self)
    }
}

impl<'a> PeerAnswer<'a> {
    /// Strictly decodes one answer message (at most [`PEER_MAX_MESSAGE`]
    /// bytes; a refusal's message at most [`MAX_REASON_LEN`] bytes).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let a: PeerAnswer<'a> = codec::decode_exact(bytes, PEER_MAX_MESSAGE)?;
        let message = match &a.body {
            Answer::Forward(ForwardAnswer::Refused { message, .. })
            | Answer::FinalityVote(VoteAnswer::Refused { message, .. })
            | Answer::Rejoin(RejoinAnswer::Refused { message })
            | Answer::Status(PeerStatus {
                health: message, ..
            }) => message.len(),
            _ => 0,
        };
        if message > MAX_REASON_LEN {
            return Err(DecodeError::TooLong);
        }
        Ok(a)
    }

    /// The message's bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        codec::encode_to_vec(self)
    }
}

/// `message` cut to at most [`MAX_REASON_LEN`] bytes (at a character
/// boundary): what a sender puts in a refusal.
pub fn reason_text(message: &str) -> String {
    let mut end = message.len().min(MAX_REASON_LEN);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    String::from(&message[..end])
}

/// The id at the front of a message (a request's or an answer's), if it
/// is a canonical varint: what a driver reads to route an answer before
/// decoding its body.
pub fn message_id(bytes: &[u8]) -> Option<u64> {
    let mut b = bytes;
    codec::take_varint(&mut b, u64::MAX)
}
