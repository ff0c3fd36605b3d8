//! Both ends of a peer link in memory: the handshake, messages of every
//! size around the chunk boundaries, the bound on a message, every kind of
//! violation, and arbitrary bytes (never a panic).

use std::boxed::Box;
use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use super::conn::LINK_SESSION;
use super::*;
use crate::block::FinalityVote;
use crate::codec::{self, DecodeError};
use crate::frame::{cobs_encode, max_encoded_len};
use crate::handshake::{
    Allowlist, Denial, HandshakeConfig, HandshakeError, Initiator, MESSAGE1_LEN, MESSAGE2_LEN,
    MESSAGE3_LEN, Responder, ResponderTable,
};
use crate::hash::{ChainId, Hash32};
use crate::identity::{KeyId, Keypair, Signature, VerifyingKey};
use crate::link::{LinkFrame, Refusal, RejectReason};
use crate::session::{FRAME_CLOSE, FRAME_DATA, Session};

/// A deterministic RNG (xorshift; tests only).
struct Rng(u64);

impl rand_core::TryRng for Rng {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.try_next_u64()? as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Ok(self.0)
    }
    fn try_fill_bytes(&mut self, d: &mut [u8]) -> Result<(), Self::Error> {
        for b in d {
            *b = (self.try_next_u64()? >> 56) as u8;
        }
        Ok(())
    }
}
impl rand_core::TryCryptoRng for Rng {}

fn hs() -> HandshakeConfig {
    HandshakeConfig::new(ChainId([7; 32]))
}

struct Keys(Vec<VerifyingKey>);
impl Allowlist for Keys {
    fn lookup(&self, id: &KeyId) -> Result<VerifyingKey, Denial> {
        self.0
            .iter()
            .find(|k| k.public().key_id() == *id)
            .copied()
            .ok_or(Denial::Unknown)
    }
}

/// Both ends of one link, the responder's table, and what each received.
struct Pair {
    ini: PeerConnection,
    res: PeerConnection,
    a: Keypair,
    b: Keypair,
    table: ResponderTable<4, 16>,
    rng: Rng,
    init: Option<Initiator>,
    responder: Option<Responder>,
    /// Keep the initiator's and responder's sessions (to forge frames).
    at_res: Vec<Vec<u8>>,
    at_ini: Vec<Vec<u8>>,
    ini_end: Option<PeerEnd>,
    res_end: Option<PeerEnd>,
}

impl Pair {
    fn new() -> Pair {
        let a = Keypair::from_seed([1; 32]);
        let b = Keypair::from_seed([2; 32]);
        let mut rng = Rng(9);
        let mut ini = PeerConnection::initiator(hs());
        let mut m1 = [0u8; MESSAGE1_LEN];
        let (init, _) = Initiator::start_peer(&hs(), &a, 0, &mut rng, &mut m1).unwrap();
        ini.send_hello(&m1).unwrap();
        Pair {
            ini,
            res: PeerConnection::responder(hs()),
            a,
            b,
            table: ResponderTable::new(),
            rng,
            init: Some(init),
            responder: None,
            at_res: vec![],
            at_ini: vec![],
            ini_end: None,
            res_end: None,
        }
    }

    /// A pair whose session is open on both ends.
    fn open() -> Pair {
        let mut p = Pair::new();
        p.run();
        assert!(p.ini.is_open() && p.res.is_open());
        p
    }

    /// Moves bytes both ways and handles events until nothing moves.
    fn run(&mut self) {
        for _ in 0..100_000 {
            let a = self.pump_to_res();
            let b = self.pump_to_ini();
            if !a && !b {
                return;
            }
        }
        panic!("no quiescence");
    }

    fn pump_to_res(&mut self) -> bool {
        let bytes = self.ini.transmit().to_vec();
        self.ini.advance(bytes.len());
        let moved = !bytes.is_empty();
        self.feed_res(&bytes);
        moved || self.res_events()
    }

    fn feed_res(&mut self, mut input: &[u8]) {
        loop {
            let used = self.res.handle_input(input);
            input = &input[used..];
            let had = self.res_events();
            if input.is_empty() || (!had && used == 0) {
                break;
            }
        }
    }

    fn res_events(&mut self) -> bool {
        let mut any = false;
        while let Some(ev) = self.res.poll_event() {
            any = true;
            match ev {
                PeerEvent::Hello(h) => {
                    let allow = Keys(vec![VerifyingKey::from_public(&self.a.public()).unwrap()]);
                    let adm = self
                        .table
                        .admit(h.check(&allow).unwrap(), 0, hs().timeout_ms)
                        .unwrap();
                    let mut m2 = [0u8; MESSAGE2_LEN];
                    let (r, _) = adm.respond(&hs(), &self.b, &mut self.rng, &mut m2).unwrap();
                    self.responder = Some(r);
                    self.res.send_challenge(&m2).unwrap();
                }
                PeerEvent::Proof(m3) => {
                    let (slot, est) = self.responder.take().unwrap().verify(&m3, 0);
                    self.table.release(slot);
                    self.res.establish(est.unwrap().session).unwrap();
                }
                PeerEvent::Message(m) => self.at_res.push(m),
                PeerEvent::Ended(e) => self.res_end = Some(e),
                e => panic!("responder: {e:?}"),
            }
        }
        any
    }

    fn pump_to_ini(&mut self) -> bool {
        let bytes = self.res.transmit().to_vec();
        self.res.advance(bytes.len());
        let moved = !bytes.is_empty();
        let mut input = &bytes[..];
        loop {
            let used = self.ini.handle_input(input);
            input = &input[used..];
            let had = self.ini_events();
            if input.is_empty() || (!had && used == 0) {
                break;
            }
        }
        moved || self.ini_events()
    }

    fn ini_events(&mut self) -> bool {
        let mut any = false;
        while let Some(ev) = self.ini.poll_event() {
            any = true;
            match ev {
                PeerEvent::Challenge(m2) => {
                    let mut m3 = [0u8; MESSAGE3_LEN];
                    let (est, _) = self
                        .init
                        .take()
                        .unwrap()
                        .finish(&self.a, &[self.b.public()], &m2, 0, &mut m3)
                        .unwrap();
                    self.ini.send_proof(&m3, est.session).unwrap();
                }
                PeerEvent::Message(m) => self.at_ini.push(m),
                PeerEvent::Ended(e) => self.ini_end = Some(e),
                e => panic!("initiator: {e:?}"),
            }
        }
        any
    }
}

fn message(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn link_session_tag_is_the_encoders() {
    let mut buf = [0u8; 8];
    let b = codec::encode_to_slice(&LinkFrame::Session(&[]), &mut buf).unwrap();
    assert_eq!(b, &[LINK_SESSION, 0]);
    assert_eq!(PEER_MAX_FRAME, 65_563);
    // the largest frame's length prefix takes 3 bytes, as the bound assumes
    let mut v = [0u8; 4];
    let n = crate::codec::put_varint(&mut v, (PEER_CHUNK + 23) as u64).unwrap();
    assert_eq!(n, 3);
}

#[test]
fn messages_of_every_size_around_the_chunk_boundary_go_both_ways() {
    let mut p = Pair::open();
    let sizes = [
        1,
        2,
        PEER_CHUNK - 1,
        PEER_CHUNK,
        PEER_CHUNK + 1,
        2 * PEER_CHUNK,
        3 * PEER_CHUNK + 17,
    ];
    for (i, &n) in sizes.iter().enumerate() {
        p.ini.send(message(n, i as u8)).unwrap();
        p.res.send(message(n, 100 + i as u8)).unwrap();
    }
    assert_eq!(p.ini.queued(), sizes.len());
    p.run();
    assert_eq!(p.ini.queued(), 0);
    assert_eq!(p.ini.queued_bytes(), 0);
    let want: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| message(n, i as u8))
        .collect();
    assert_eq!(p.at_res, want, "in order, whole");
    let want: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| message(n, 100 + i as u8))
        .collect();
    assert_eq!(p.at_ini, want);
    assert!(p.ini_end.is_none() && p.res_end.is_none());
    // empty and oversized messages are refused by the sender
    assert_eq!(p.ini.send(vec![]), Err(PeerConnError::BadLength));
    assert_eq!(
        p.ini.send(vec![0; PEER_MAX_MESSAGE + 1]),
        Err(PeerConnError::BadLength)
    );
}

#[test]
fn a_message_of_the_maximum_size_passes_and_one_chunk_more_closes_the_link() {
    let mut p = Pair::open();
    p.ini.send(vec![0x5a; PEER_MAX_MESSAGE]).unwrap();
    p.run();
    assert_eq!(p.at_res.len(), 1);
    assert_eq!(p.at_res[0].len(), PEER_MAX_MESSAGE);
    assert!(p.at_res[0].iter().all(|&b| b == 0x5a));
    p.at_res.clear();

    // A sender that ignores the bound: 512 full MORE chunks (32 MiB),
    // then one more byte in an END chunk.
    let mut sess = forger(&mut p);
    let chunk = vec![1u8; PEER_CHUNK];
    for _ in 0..PEER_MAX_MESSAGE / PEER_CHUNK {
        let f = session_frame(&mut sess, FRAME_PEER_MORE, &chunk);
        p.feed_res(&f);
    }
    assert!(p.res_end.is_none(), "exactly the maximum so far");
    let f = session_frame(&mut sess, FRAME_PEER_END, &[1]);
    p.feed_res(&f);
    assert_eq!(p.res_end, Some(PeerEnd::Protocol(Violation::TooLarge)));
    assert!(p.at_res.is_empty());
    assert!(p.res.is_closed());
    // nothing more is read
    let f = session_frame(&mut sess, FRAME_PEER_END, &[1]);
    assert_eq!(p.res.handle_input(&f), f.len());
    assert!(p.res.poll_event().is_none());
}

/// Takes the initiator's session out of a live pair (its connection is
/// replaced by a closed one) so a test can seal frames by hand.
fn forger(p: &mut Pair) -> Session {
    // Rebuild the initiator's sending session from a fresh handshake whose
    // keys this test holds: simplest is a new pair whose Proof the test
    // sends itself.
    let a = p.a.clone();
    let b = p.b.clone();
    let mut rng = Rng(77);
    let mut res = PeerConnection::responder(hs());
    let mut m1 = [0u8; MESSAGE1_LEN];
    let (init, _) = Initiator::start_peer(&hs(), &a, 0, &mut rng, &mut m1).unwrap();
    res.handle_input(&cobs(&LinkFrame::Hello(&m1)));
    let Some(PeerEvent::Hello(h)) = res.poll_event() else {
        panic!()
    };
    let allow = Keys(vec![VerifyingKey::from_public(&a.public()).unwrap()]);
    let adm = p
        .table
        .admit(h.check(&allow).unwrap(), 0, hs().timeout_ms)
        .unwrap();
    let mut m2 = [0u8; MESSAGE2_LEN];
    let (r, _) = adm.respond(&hs(), &b, &mut rng, &mut m2).unwrap();
    res.send_challenge(&m2).unwrap();
    let n = res.transmit().len();
    res.advance(n);
    let mut m3 = [0u8; MESSAGE3_LEN];
    let (est, _) = init.finish(&a, &[b.public()], &m2, 0, &mut m3).unwrap();
    res.handle_input(&cobs(&LinkFrame::Proof(&m3)));
    let Some(PeerEvent::Proof(m3)) = res.poll_event() else {
        panic!()
    };
    let (slot, r) = r.verify(&m3, 0);
    p.table.release(slot);
    res.establish(r.unwrap().session).unwrap();
    p.res = res;
    p.res_end = None;
    est.session
}

fn cobs(f: &LinkFrame<'_>) -> Vec<u8> {
    cobs_bytes(&codec::encode_to_vec(f))
}

fn cobs_bytes(b: &[u8]) -> Vec<u8> {
    let mut w = vec![0u8; max_encoded_len(b.len())];
    let n = cobs_encode(b, &mut w).unwrap();
    w.truncate(n);
    w
}

fn session_frame(s: &mut Session, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; payload.len() + 23];
    let n = s.seal(kind, payload, &mut out).unwrap().len();
    cobs(&LinkFrame::Session(&out[..n]))
}

#[test]
fn every_violation_closes_the_link() {
    type Forge = Box<dyn Fn(&mut Session) -> Vec<u8>>;
    let cases: Vec<(&str, Forge, Violation)> = vec![
        (
            "a device's data frame",
            Box::new(|s| session_frame(s, FRAME_DATA, &[0, 1, 9])),
            Violation::WrongKind,
        ),
        (
            "another kind",
            Box::new(|s| session_frame(s, 0x12, &[1])),
            Violation::WrongKind,
        ),
        (
            "a short MORE chunk",
            Box::new(|s| session_frame(s, FRAME_PEER_MORE, &[1; 100])),
            Violation::ChunkSize,
        ),
        (
            "a long MORE chunk",
            Box::new(|s| session_frame(s, FRAME_PEER_MORE, &vec![1; PEER_CHUNK + 1])),
            Violation::Oversized,
        ),
        (
            "an empty END chunk",
            Box::new(|s| session_frame(s, FRAME_PEER_END, &[])),
            Violation::ChunkSize,
        ),
        (
            "a replayed frame",
            Box::new(|s| {
                let mut f = session_frame(s, FRAME_PEER_MORE, &vec![1; PEER_CHUNK]);
                f.extend(f.clone());
                f
            }),
            Violation::Replayed,
        ),
        (
            "a frame of another session",
            Box::new(|_| {
                let mut other = Session::from_keys([3; 32], [4; 32]);
                session_frame(&mut other, FRAME_PEER_END, &[1])
            }),
            Violation::Undecryptable,
        ),
        (
            "a Hello inside the session",
            Box::new(|_| cobs(&LinkFrame::Hello(&[0x81; 45]))),
            Violation::Unexpected,
        ),
        (
            "a Refused from the initiator",
            Box::new(|_| cobs(&LinkFrame::Refused(Refusal::Busy))),
            Violation::Unexpected,
        ),
        (
            "not a link frame",
            Box::new(|_| cobs_bytes(&[9, 9, 9])),
            Violation::NotALinkFrame,
        ),
        ("not COBS", Box::new(|_| vec![5, 1, 0]), Violation::Framing),
    ];
    for (what, frame, want) in cases {
        let mut p = Pair::open();
        let mut s = forger(&mut p);
        let f = frame(&mut s);
        p.feed_res(&f);
        assert_eq!(
            p.res_end,
            Some(PeerEnd::Protocol(want)),
            "{what}: the link ends"
        );
        assert!(p.at_res.is_empty(), "{what}");
        assert!(p.res.transmit().is_empty(), "{what}: nothing is sent");
    }
    // A close frame ends the session quietly.
    let mut p = Pair::open();
    let mut s = forger(&mut p);
    p.feed_res(&session_frame(&mut s, FRAME_CLOSE, &[]));
    assert_eq!(p.res_end, Some(PeerEnd::PeerClosed));
    // A message cut short by a close frame is dropped.
    let mut p = Pair::open();
    let mut s = forger(&mut p);
    p.feed_res(&session_frame(
        &mut s,
        FRAME_PEER_MORE,
        &vec![1; PEER_CHUNK],
    ));
    p.feed_res(&session_frame(&mut s, FRAME_CLOSE, &[]));
    assert_eq!(p.res_end, Some(PeerEnd::PeerClosed));
    assert!(p.at_res.is_empty());
}

#[test]
fn a_device_hello_is_refused_by_a_peer_listener_and_a_peer_hello_by_a_device_listener() {
    let a = Keypair::from_seed([1; 32]);
    let mut rng = Rng(5);
    // a device's message 1 on a peer listener
    let mut m1 = [0u8; MESSAGE1_LEN];
    Initiator::start(&hs(), &a, 0, &mut rng, &mut m1).unwrap();
    let mut res = PeerConnection::responder(hs());
    res.handle_input(&cobs(&LinkFrame::Hello(&m1)));
    assert!(matches!(
        res.poll_event(),
        Some(PeerEvent::Ended(PeerEnd::HandshakeFailed(
            HandshakeError::VersionMismatch
        )))
    ));
    let sent = res.transmit().to_vec();
    assert_eq!(sent, cobs(&LinkFrame::Refused(Refusal::VersionMismatch)));

    // a peer's message 1 on a device listener
    let (_, _) = Initiator::start_peer(&hs(), &a, 0, &mut rng, &mut m1).unwrap();
    assert_eq!(m1[0], PEER_VERSION);
    let mut dev: crate::link::ResponderConnection<1280, 2048, 4> =
        crate::link::ResponderConnection::new(crate::link::ResponderConfig::new(hs()), 0);
    dev.handle_input(&cobs(&LinkFrame::Hello(&m1)), 0);
    let mut ended = None;
    while let Some(ev) = dev.poll_event() {
        if let crate::link::ResponderEvent::Ended(e) = ev {
            ended = Some(e);
        }
    }
    assert_eq!(
        ended,
        Some(crate::link::End::HandshakeFailed(
            HandshakeError::VersionMismatch
        ))
    );
    // and the byte is in the transcript: a peer's message 1 with the byte
    // changed to a device's fails the responder's signature at the
    // initiator
    let mut m1p = [0u8; MESSAGE1_LEN];
    let (init, _) = Initiator::start_peer(&hs(), &a, 0, &mut rng, &mut m1p).unwrap();
    let mut relayed = m1p;
    relayed[0] = crate::handshake::VERSION;
    let b = Keypair::from_seed([2; 32]);
    let allow = Keys(vec![VerifyingKey::from_public(&a.public()).unwrap()]);
    let mut table: ResponderTable<4, 16> = ResponderTable::new();
    let mut m2 = [0u8; MESSAGE2_LEN];
    let (_r, _) = Responder::respond(
        &hs(),
        &b,
        &mut table,
        &allow,
        &relayed,
        0,
        &mut rng,
        &mut m2,
    )
    .unwrap();
    let mut m3 = [0u8; MESSAGE3_LEN];
    assert_eq!(
        init.finish(&a, &[b.public()], &m2, 0, &mut m3).err(),
        Some(HandshakeError::BadSignature)
    );
}

#[test]
fn a_peer_chunk_on_a_device_session_ends_it() {
    // A device session (the device's handshake byte) on a device
    // connection; the test holds the device's session keys, as the device
    // does, and sends a peer chunk in it.
    use crate::link::{ResponderConfig, ResponderConnection, ResponderEvent};
    let (dev, gw) = (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]));
    let mut rng = Rng(3);
    let allow = Keys(vec![VerifyingKey::from_public(&dev.public()).unwrap()]);
    let mut table: ResponderTable<4, 16> = ResponderTable::new();
    let mut wire = [0u8; 2048];
    let mut m1 = [0u8; MESSAGE1_LEN];
    let (init, _) = Initiator::start(&hs(), &dev, 0, &mut rng, &mut m1).unwrap();
    let mut res: ResponderConnection<1280, 2048, 4> =
        ResponderConnection::new(ResponderConfig::new(hs()), 0);
    res.handle_input(&cobs(&LinkFrame::Hello(&m1)), 0);
    let Some(ResponderEvent::Hello(h)) = res.poll_event() else {
        panic!()
    };
    let a = table.admit(h.check(&allow).unwrap(), 0, 10_000).unwrap();
    res.accept(a, &gw, &mut rng, 0).unwrap();
    let n = res.poll_transmit(&mut wire).unwrap();
    let mut acc = crate::frame::FrameAccumulator::<1280>::new();
    let (_, f) = acc.feed(&wire[..n]);
    let Ok(LinkFrame::Challenge(m2)) = crate::link::decode::<LinkFrame>(f.unwrap().unwrap()) else {
        panic!()
    };
    let mut m3 = [0u8; MESSAGE3_LEN];
    let (mut est, _) = init.finish(&dev, &[gw.public()], m2, 0, &mut m3).unwrap();
    res.handle_input(&cobs(&LinkFrame::Proof(&m3)), 0);
    while let Some(ev) = res.poll_event() {
        if let ResponderEvent::ProofReceived = ev {
            res.verify_proof(0).unwrap();
        }
    }
    assert!(res.is_established());
    let chunk = PeerRequest {
        id: 1,
        body: Request::Forward(b"tx"),
    }
    .to_vec();
    res.handle_input(&session_frame(&mut est.session, FRAME_PEER_END, &chunk), 0);
    let mut evs = vec![];
    while let Some(ev) = res.poll_event() {
        evs.push(std::format!("{ev:?}"));
    }
    assert_eq!(evs, ["BadFrame(MalformedMessage)", "Ended(Protocol)"]);
    assert!(res.is_closed());
}

fn vote() -> FinalityVote {
    FinalityVote {
        validator: KeyId([3; 8]),
        signature: Signature([4; 64]),
    }
}

#[test]
fn messages_round_trip_and_decode_strictly() {
    let reqs = [
        Request::AppendEntries(b"ae"),
        Request::Vote(b""),
        Request::InstallSnapshot(&[0; 300]),
        Request::Forward(b"tx"),
        Request::FinalityVote {
            height: 7,
            hash: Hash32([9; 32]),
            vote: vote(),
        },
    ];
    for (i, body) in reqs.into_iter().enumerate() {
        let r = PeerRequest {
            id: i as u64 * 1000,
            body,
        };
        let b = r.to_vec();
        assert_eq!(PeerRequest::decode(&b), Ok(r));
        assert_eq!(message_id(&b), Some(r.id));
        let mut long = b.clone();
        long.push(0);
        assert_eq!(PeerRequest::decode(&long), Err(DecodeError::TrailingBytes));
    }
    let answers = [
        Answer::AppendEntries(b"x"),
        Answer::Vote(b"y"),
        Answer::InstallSnapshot(b"z"),
        Answer::Forward(ForwardAnswer::Queued),
        Answer::Forward(ForwardAnswer::Refused {
            reason: RejectReason::Replay,
            message: "replay".into(),
        }),
        Answer::Forward(ForwardAnswer::InBlock { height: 3 }),
        Answer::Forward(ForwardAnswer::NotLeader { leader: Some(2) }),
        Answer::Forward(ForwardAnswer::NotLeader { leader: None }),
        Answer::Forward(ForwardAnswer::Busy),
        Answer::FinalityVote(VoteAnswer::Counted),
        Answer::FinalityVote(VoteAnswer::Refused {
            reason: VoteRefusal::Equivocation,
            message: "two hashes".into(),
        }),
        Answer::FinalityVote(VoteAnswer::NotLeader { leader: Some(1) }),
        Answer::Malformed,
    ];
    for body in answers {
        let a = PeerAnswer { id: 5, body };
        let b = a.to_vec();
        assert_eq!(PeerAnswer::decode(&b), Ok(a.clone()));
    }
    // an over-long id varint is not canonical
    assert_eq!(
        PeerRequest::decode(&[0x85, 0x00, 3, 0]),
        Err(DecodeError::NonCanonical)
    );
    assert_eq!(message_id(&[0x85, 0x00, 3, 0]), None);
    // a refusal's message is bounded
    let a = PeerAnswer {
        id: 1,
        body: Answer::Forward(ForwardAnswer::Refused {
            reason: RejectReason::Invalid,
            message: "x".repeat(MAX_REASON_LEN + 1),
        }),
    };
    assert_eq!(PeerAnswer::decode(&a.to_vec()), Err(DecodeError::TooLong));
    assert_eq!(reason_text(&"é".repeat(600)).len(), 1024);
    assert_eq!(reason_text(&"x".repeat(2000)).len(), MAX_REASON_LEN);
    // kinds
    assert!(Answer::Malformed.answers(Kind::Vote));
    assert!(!Answer::Vote(b"").answers(Kind::AppendEntries));
}

#[test]
fn commands_out_of_order_are_refused_and_change_nothing() {
    let mut ini = PeerConnection::initiator(hs());
    assert_eq!(ini.send(vec![1]), Err(PeerConnError::InvalidState));
    assert_eq!(
        ini.send_challenge(&[0; MESSAGE2_LEN]),
        Err(PeerConnError::InvalidState)
    );
    assert_eq!(ini.send_hello(&[0; 3]), Err(PeerConnError::BadLength));
    let mut res = PeerConnection::responder(hs());
    assert_eq!(
        res.establish(Session::from_keys([1; 32], [2; 32])),
        Err(PeerConnError::InvalidState)
    );
    assert!(!res.has_transmit());
    // an initiator's refuse is a close
    ini.refuse(Refusal::Busy);
    assert!(ini.is_closed());
    assert!(matches!(
        ini.poll_event(),
        Some(PeerEvent::Ended(PeerEnd::Closed))
    ));
}

#[test]
fn a_refusal_ends_the_initiators_link_and_drops_what_was_queued() {
    let mut p = Pair::open();
    p.ini.send(vec![1; 10]).unwrap();
    p.res.refuse(Refusal::Revoked);
    p.run();
    assert_eq!(p.ini_end, Some(PeerEnd::Refused(Refusal::Revoked)));
    assert_eq!(p.res_end, Some(PeerEnd::Refused(Refusal::Revoked)));
    // closing mid-message: the close frame follows the frames already out
    let mut p = Pair::open();
    p.ini.send(vec![7; 3 * PEER_CHUNK]).unwrap();
    let first = p.ini.transmit().to_vec();
    p.ini.advance(first.len());
    p.ini.close();
    let rest = p.ini.transmit().to_vec();
    p.ini.advance(rest.len());
    p.feed_res(&first);
    p.feed_res(&rest);
    assert_eq!(p.res_end, Some(PeerEnd::PeerClosed));
    assert!(p.at_res.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes, before and inside a session, to either end: never
    /// a panic, and a message only ever comes from the genuine peer.
    #[test]
    fn arbitrary_input_never_panics(
        before in proptest::collection::vec(any::<u8>(), 0..300),
        after in proptest::collection::vec(any::<u8>(), 0..600),
        to_initiator in any::<bool>(),
    ) {
        let mut res = PeerConnection::responder(hs());
        let mut input = &before[..];
        for _ in 0..1000 {
            let used = res.handle_input(input);
            input = &input[used..];
            while let Some(ev) = res.poll_event() {
                prop_assert!(!matches!(ev, PeerEvent::Message(_) | PeerEvent::Proof(_)));
                if let PeerEvent::Hello(_) = ev {
                    res.refuse(Refusal::Busy);
                }
            }
            if input.is_empty() || res.is_closed() { break; }
        }
        let mut p = Pair::open();
        let target = if to_initiator { &mut p.ini } else { &mut p.res };
        let mut input = &after[..];
        for _ in 0..1000 {
            let used = target.handle_input(input);
            input = &input[used..];
            while let Some(ev) = target.poll_event() {
                prop_assert!(!matches!(ev, PeerEvent::Message(_)), "forged message");
            }
            if input.is_empty() { break; }
        }
        target.handle_eof();
    }

    /// The message decoders on arbitrary bytes: a value or an error, and a
    /// value re-encodes to exactly the input.
    #[test]
    fn decoders_are_total(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(r) = PeerRequest::decode(&bytes) {
            prop_assert_eq!(r.to_vec(), bytes.clone());
        }
        if let Ok(a) = PeerAnswer::decode(&bytes) {
            prop_assert_eq!(a.to_vec(), bytes.clone());
        }
        let _ = message_id(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Any message cut at any point in the transmit stream arrives whole.
    #[test]
    fn messages_survive_any_write_sizes(
        len in 1usize..(3 * PEER_CHUNK),
        step in 1usize..70_000,
    ) {
        let mut p = Pair::open();
        p.ini.send(message(len, 1)).unwrap();
        loop {
            let out = p.ini.transmit();
            if out.is_empty() { break; }
            let n = out.len().min(step);
            let part = out[..n].to_vec();
            p.ini.advance(n);
            p.feed_res(&part);
        }
        prop_assert_eq!(p.at_res.len(), 1);
        prop_assert_eq!(&p.at_res[0], &message(len, 1));
    }
}
