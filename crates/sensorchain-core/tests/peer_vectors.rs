//! Known-answer vectors of peer links (`docs/PROTOCOL.md`, "Peer links"):
//! `tests/vectors/peer.json` at the workspace top — a handshake between two
//! gateways with the peer link's byte, its key schedule, the link frames
//! on the wire, requests and answers of every kind, and a message in two
//! chunks.
//!
//! Regenerate with
//! `UPDATE_VECTORS=1 cargo test -p sensorchain-core --features std,peer --test peer_vectors`;
//! without `UPDATE_VECTORS` this test checks that the file matches. The
//! key schedule and every frame are recomputed here from the spec
//! (tagged hashes, HKDF, ChaCha20-Poly1305, COBS, postcard written by hand)
//! and compared with what [`PeerConnection`] puts on the wire.
#![cfg(feature = "peer")]

mod secure_common;

use secure_common::*;
use sensorchain_core::block::FinalityVote;
use sensorchain_core::crypto::{X25519Secret, hkdf_expand_key, hkdf_extract};
use sensorchain_core::frame::{cobs_encode, max_encoded_len};
use sensorchain_core::handshake::*;
use sensorchain_core::hash::{Hash32, tagged_hash};
use sensorchain_core::identity::{KeyId, Keypair, Signature};
use sensorchain_core::link::RejectReason;
use sensorchain_core::peer::*;
use sensorchain_core::session::{FRAME_CLOSE, Session};
use serde_json::{Value, json};
use sha2::Digest;
use std::path::PathBuf;

fn hx(b: &[u8]) -> String {
    hex::encode(b)
}

fn check_or_write(name: &str, v: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/vectors")
        .join(name);
    if std::env::var_os("UPDATE_VECTORS").is_some() {
        let mut s = serde_json::to_string_pretty(v).unwrap();
        s.push('\n');
        std::fs::write(&path, s).unwrap();
    } else {
        let s = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with UPDATE_VECTORS=1 to create it",
                path.display()
            )
        });
        let stored: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(&stored, v, "{name} differs from the implementation");
    }
}

/// The second gateway of the vectors (the responder): seed 44×32.
fn peer_gateway() -> Keypair {
    Keypair::from_seed([0x44; 32])
}

/// The COBS frame of `bytes` (with its `00`).
fn cobs(bytes: &[u8]) -> Vec<u8> {
    let mut w = vec![0u8; max_encoded_len(bytes.len())];
    let n = cobs_encode(bytes, &mut w).unwrap();
    w.truncate(n);
    w
}

/// An unsigned LEB128 varint (postcard's integers and lengths).
fn varint(mut v: u64) -> Vec<u8> {
    let mut out = vec![];
    loop {
        let low = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(low);
            return out;
        }
        out.push(low | 0x80);
    }
}

/// `LinkFrame::<variant>(bytes)` by hand: variant, length, bytes.
fn link_frame(variant: u8, bytes: &[u8]) -> Vec<u8> {
    let mut f = vec![variant];
    f.extend(varint(bytes.len() as u64));
    f.extend_from_slice(bytes);
    f
}

/// Everything the initiator's connection writes until it has nothing left.
fn drain(c: &mut PeerConnection) -> Vec<u8> {
    let mut out = vec![];
    loop {
        let b = c.transmit().to_vec();
        if b.is_empty() {
            return out;
        }
        c.advance(b.len());
        out.extend(b);
    }
}

/// Feeds `bytes` to `c`, collecting its events.
fn feed(c: &mut PeerConnection, mut bytes: &[u8]) -> Vec<PeerEvent> {
    let mut evs = vec![];
    loop {
        let used = c.handle_input(bytes);
        bytes = &bytes[used..];
        let mut any = false;
        while let Some(e) = c.poll_event() {
            evs.push(e);
            any = true;
        }
        if bytes.is_empty() || (used == 0 && !any) {
            return evs;
        }
    }
}

/// The session frames of `message` (kinds 0x10 ... 0x11) sealed by the
/// spec's rule with `s`, each as a COBS-framed `LinkFrame::Session`.
fn spec_chunks(s: &mut Session, message: &[u8]) -> Vec<(u8, u64, Vec<u8>)> {
    let mut out = vec![];
    let mut rest = message;
    loop {
        let n = rest.len().min(PEER_CHUNK);
        let kind = if n < rest.len() {
            FRAME_PEER_MORE
        } else {
            FRAME_PEER_END
        };
        let counter = s.next_send_counter();
        let mut ct = vec![0u8; n + 23];
        let sealed = s.seal(kind, &rest[..n], &mut ct).unwrap().to_vec();
        out.push((kind, counter, cobs(&link_frame(3, &sealed))));
        rest = &rest[n..];
        if rest.is_empty() {
            return out;
        }
    }
}

fn sha(b: &[u8]) -> String {
    hx(&sha2::Sha256::digest(b))
}

#[test]
fn peer_vectors() {
    let a = gateway(); // the initiator (seed 22×32)
    let b = peer_gateway(); // the responder (seed 44×32)
    let cfg = HandshakeConfig::new(vector_chain_id());
    let allow = FixedAllowlist::new(&[&a]);
    let mut table: ResponderTable<4, 16> = ResponderTable::new();
    let (t1, t2, t3, t4) = (1_000, 1_040, 1_090, 1_120);

    // --- the handshake, through both connections ---
    let mut ini = PeerConnection::initiator(cfg);
    let mut res = PeerConnection::responder(cfg);
    let mut m1 = [0u8; MESSAGE1_LEN];
    let (init, _) =
        Initiator::start_peer(&cfg, &a, t1, &mut TestRng::from_u64(4), &mut m1).unwrap();
    assert_eq!(m1[0], 0x81);
    ini.send_hello(&m1).unwrap();
    let hello_wire = drain(&mut ini);
    assert_eq!(hello_wire, cobs(&link_frame(0, &m1)));
    let mut evs = feed(&mut res, &hello_wire);
    let Some(PeerEvent::Hello(h)) = evs.pop() else {
        panic!()
    };
    let adm = table
        .admit(h.check(&allow).unwrap(), t2, cfg.timeout_ms)
        .unwrap();
    let mut m2 = [0u8; MESSAGE2_LEN];
    let (resp, _) = adm
        .respond(&cfg, &b, &mut TestRng::from_u64(5), &mut m2)
        .map_err(|f| f.error)
        .unwrap();
    res.send_challenge(&m2).unwrap();
    let challenge_wire = drain(&mut res);
    assert_eq!(challenge_wire, cobs(&link_frame(1, &m2)));
    let mut evs = feed(&mut ini, &challenge_wire);
    let Some(PeerEvent::Challenge(got2)) = evs.pop() else {
        panic!()
    };
    assert_eq!(got2, m2);
    let mut m3 = [0u8; MESSAGE3_LEN];
    let (ini_est, _) = init.finish(&a, &[b.public()], &m2, t3, &mut m3).unwrap();
    let transcript = ini_est.transcript;
    ini.send_proof(&m3, ini_est.session).unwrap();
    let proof_wire = drain(&mut ini);
    assert_eq!(proof_wire, cobs(&link_frame(2, &m3)));
    let mut evs = feed(&mut res, &proof_wire);
    let Some(PeerEvent::Proof(got3)) = evs.pop() else {
        panic!()
    };
    let (slot, est) = resp.verify(&got3, t4);
    table.release(slot);
    let res_est = est.unwrap();
    assert_eq!(res_est.transcript, transcript);
    assert_eq!(res_est.peer, a.public());
    res.establish(res_est.session).unwrap();

    // --- the key schedule from the spec: the byte 0x81 is in TH2 ---
    let e_i = {
        let mut s = [0u8; 32];
        rand_core::TryRng::try_fill_bytes(&mut TestRng::from_u64(4), &mut s).unwrap();
        s
    };
    let e_r = {
        let mut s = [0u8; 32];
        rand_core::TryRng::try_fill_bytes(&mut TestRng::from_u64(5), &mut s).unwrap();
        s
    };
    let e_i_sec = X25519Secret::from_bytes(e_i);
    assert_eq!(&m1[13..], &e_i_sec.public().0);
    let e_r_pub = X25519Secret::from_bytes(e_r).public();
    let dh = e_i_sec.diffie_hellman(&e_r_pub).unwrap();
    let th2 = tagged_hash(
        label::TH2,
        &[
            &cfg.chain.0,
            &m1,
            &a.public().0,
            &m2[..8],
            &m2[8..40],
            &b.public().0,
        ],
    );
    let prk = hkdf_extract(&th2.0, dh.as_bytes());
    let th3 = tagged_hash(label::TH3, &[&th2.0, &m2[40..]]);
    let th4 = tagged_hash(label::TH4, &[&th3.0, &m3]);
    assert_eq!(th4, transcript);
    let k_i2r = hkdf_expand_key(&prk, &[label::KEY_I2R.as_bytes(), &th4.0]);
    let k_r2i = hkdf_expand_key(&prk, &[label::KEY_R2I.as_bytes(), &th4.0]);
    let mut spec_ini = Session::from_keys(*k_i2r.as_bytes(), *k_r2i.as_bytes());
    let mut spec_res = Session::from_keys(*k_r2i.as_bytes(), *k_i2r.as_bytes());

    // --- a request and its answer, each one chunk ---
    let request = PeerRequest {
        id: 1,
        body: Request::Forward(b"exact transaction bytes"),
    };
    let req_bytes = request.to_vec();
    let mut by_hand = varint(1);
    by_hand.extend([3]);
    by_hand.extend(varint(23));
    by_hand.extend_from_slice(b"exact transaction bytes");
    assert_eq!(req_bytes, by_hand, "id, variant 3 (Forward), length, bytes");
    ini.send(req_bytes.clone()).unwrap();
    let req_wire = drain(&mut ini);
    let spec = spec_chunks(&mut spec_ini, &req_bytes);
    assert_eq!(spec.len(), 1);
    assert_eq!(req_wire, spec[0].2);
    let mut evs = feed(&mut res, &req_wire);
    let Some(PeerEvent::Message(got)) = evs.pop() else {
        panic!()
    };
    assert_eq!(PeerRequest::decode(&got).unwrap(), request);

    let answer = PeerAnswer {
        id: 1,
        body: Answer::Forward(ForwardAnswer::Queued),
    };
    let ans_bytes = answer.to_vec();
    assert_eq!(ans_bytes, [1, 3, 0], "id 1, variant 3 (Forward), Queued");
    res.send(ans_bytes.clone()).unwrap();
    let ans_wire = drain(&mut res);
    assert_eq!(ans_wire, spec_chunks(&mut spec_res, &ans_bytes)[0].2);
    let mut evs = feed(&mut ini, &ans_wire);
    let Some(PeerEvent::Message(got)) = evs.pop() else {
        panic!()
    };
    assert_eq!(PeerAnswer::decode(&got).unwrap(), answer);

    // --- a message of PEER_CHUNK + 5 bytes: two chunks ---
    let long: Vec<u8> = (0..PEER_CHUNK + 5).map(|i| (i % 251) as u8).collect();
    let long_msg = PeerRequest {
        id: 2,
        body: Request::AppendEntries(&long),
    }
    .to_vec();
    ini.send(long_msg.clone()).unwrap();
    let long_wire = drain(&mut ini);
    let spec = spec_chunks(&mut spec_ini, &long_msg);
    assert_eq!(spec.len(), 2);
    assert_eq!(long_wire, [spec[0].2.clone(), spec[1].2.clone()].concat());
    let mut evs = feed(&mut res, &long_wire);
    let Some(PeerEvent::Message(got)) = evs.pop() else {
        panic!()
    };
    assert_eq!(got, long_msg);
    let chunks: Vec<Value> = spec
        .iter()
        .map(|(kind, counter, wire)| {
            json!({
                "kind": kind,
                "counter": counter,
                "wire_len": wire.len(),
                "wire_sha256": sha(wire),
                "wire_first_32": hx(&wire[..32]),
            })
        })
        .collect();

    // --- the close frame ---
    ini.close();
    let close_wire = drain(&mut ini);
    let mut ct = [0u8; 23];
    let sealed = spec_ini.seal(FRAME_CLOSE, &[], &mut ct).unwrap().to_vec();
    assert_eq!(close_wire, cobs(&link_frame(3, &sealed)));
    let evs = feed(&mut res, &close_wire);
    assert!(matches!(
        evs.last(),
        Some(PeerEvent::Ended(PeerEnd::PeerClosed))
    ));

    // --- every kind of request and answer ---
    let vote = FinalityVote {
        validator: KeyId([0xab; 8]),
        signature: Signature([0xcd; 64]),
    };
    let requests = [
        ("AppendEntries", Request::AppendEntries(b"raft")),
        ("Vote", Request::Vote(b"raft")),
        ("InstallSnapshot", Request::InstallSnapshot(b"raft")),
        ("Forward", Request::Forward(b"tx")),
        (
            "FinalityVote",
            Request::FinalityVote {
                height: 300,
                hash: Hash32([0x11; 32]),
                vote,
            },
        ),
        ("Blocks", Request::Blocks { from: 300, max: 64 }),
        ("Rejoin", Request::Rejoin),
        ("Status", Request::Status),
    ];
    let requests: Vec<Value> = requests
        .into_iter()
        .map(|(name, body)| {
            let r = PeerRequest { id: 7, body };
            let bytes = r.to_vec();
            assert_eq!(PeerRequest::decode(&bytes).unwrap(), r);
            json!({"request": name, "id": 7, "bytes": hx(&bytes)})
        })
        .collect();
    let answers = [
        ("AppendEntries", Answer::AppendEntries(b"raft")),
        ("Vote", Answer::Vote(b"raft")),
        ("InstallSnapshot", Answer::InstallSnapshot(b"raft")),
        ("Forward Queued", Answer::Forward(ForwardAnswer::Queued)),
        (
            "Forward Refused",
            Answer::Forward(ForwardAnswer::Refused {
                reason: RejectReason::Replay,
                message: "replay".into(),
            }),
        ),
        (
            "Forward InBlock",
            Answer::Forward(ForwardAnswer::InBlock { height: 300 }),
        ),
        (
            "Forward NotLeader",
            Answer::Forward(ForwardAnswer::NotLeader { leader: Some(2) }),
        ),
        (
            "Forward NotLeader unknown",
            Answer::Forward(ForwardAnswer::NotLeader { leader: None }),
        ),
        ("Forward Busy", Answer::Forward(ForwardAnswer::Busy)),
        (
            "FinalityVote Counted",
            Answer::FinalityVote(VoteAnswer::Counted),
        ),
        (
            "FinalityVote Refused",
            Answer::FinalityVote(VoteAnswer::Refused {
                reason: VoteRefusal::Equivocation,
                message: "two hashes".into(),
            }),
        ),
        (
            "FinalityVote NotLeader",
            Answer::FinalityVote(VoteAnswer::NotLeader { leader: Some(2) }),
        ),
        ("Malformed", Answer::Malformed),
        (
            "Blocks",
            Answer::Blocks(vec![
                StoredBlock {
                    block: b"block 300",
                    cert: Some(b"cert"),
                },
                StoredBlock {
                    block: b"block 301",
                    cert: None,
                },
            ]),
        ),
        ("Blocks none", Answer::Blocks(vec![])),
        ("Rejoin Fresh", Answer::Rejoin(RejoinAnswer::Fresh)),
        ("Rejoin Learner", Answer::Rejoin(RejoinAnswer::Learner)),
        (
            "Rejoin NotLeader",
            Answer::Rejoin(RejoinAnswer::NotLeader {
                leader: Some(2),
                established: true,
            }),
        ),
        (
            "Rejoin Refused",
            Answer::Rejoin(RejoinAnswer::Refused {
                message: "not a member".into(),
            }),
        ),
        (
            "Status",
            Answer::Status(PeerStatus {
                role: MemberRole::Follower,
                term: 3,
                leader: Some(2),
                applied_index: Some(300),
                height: 120,
                finalized_height: Some(119),
                health: "ok".into(),
            }),
        ),
    ];
    let answers: Vec<Value> = answers
        .into_iter()
        .map(|(name, body)| {
            let r = PeerAnswer { id: 7, body };
            let bytes = r.to_vec();
            assert_eq!(PeerAnswer::decode(&bytes).unwrap(), r);
            json!({"answer": name, "id": 7, "bytes": hx(&bytes)})
        })
        .collect();

    check_or_write(
        "peer.json",
        &json!({
            "description": "A peer link between two gateways (docs/PROTOCOL.md, Peer links): the handshake with message 1's byte 0x81, its key schedule, the wire bytes of each link frame, a request and its answer, a message of PEER_CHUNK + 5 bytes in two chunks, the close frame, and the encoding of every request and answer kind. The initiator draws its ephemeral secret from test RNG seed 4, the responder from seed 5 (the test RNG of handshake.json).",
            "chain_id": hx(&cfg.chain.0),
            "initiator_seed": hx(&a.seed()),
            "initiator_public": hx(&a.public().0),
            "responder_seed": hx(&b.seed()),
            "responder_public": hx(&b.public().0),
            "initiator_ephemeral_secret": hx(&e_i),
            "responder_ephemeral_secret": hx(&e_r),
            "times_ms": [t1, t2, t3, t4],
            "message1": hx(&m1),
            "message2": hx(&m2),
            "message3": hx(&m3),
            "th2": hx(&th2.0),
            "transcript_th4": hx(&th4.0),
            "key_i2r": hx(k_i2r.as_bytes()),
            "key_r2i": hx(k_r2i.as_bytes()),
            "wire": {
                "hello": hx(&hello_wire),
                "challenge": hx(&challenge_wire),
                "proof": hx(&proof_wire),
                "request": {"message": hx(&req_bytes), "wire": hx(&req_wire), "counter": 0},
                "answer": {"message": hx(&ans_bytes), "wire": hx(&ans_wire), "counter": 0},
                "two_chunks": {
                    "message": "PeerRequest { id: 2, body: AppendEntries(bytes i % 251 for i in 0..65541) }",
                    "message_len": long_msg.len(),
                    "message_sha256": sha(&long_msg),
                    "frames": chunks,
                },
                "close": {"wire": hx(&close_wire), "counter": 3},
            },
            "constants": {
                "PEER_VERSION": PEER_VERSION,
                "PEER_CHUNK": PEER_CHUNK,
                "PEER_MAX_FRAME": PEER_MAX_FRAME,
                "PEER_MAX_MESSAGE": PEER_MAX_MESSAGE,
                "FRAME_PEER_MORE": FRAME_PEER_MORE,
                "FRAME_PEER_END": FRAME_PEER_END,
                "MAX_REASON_LEN": MAX_REASON_LEN,
            },
            "requests": requests,
            "answers": answers,
        }),
    );
}
