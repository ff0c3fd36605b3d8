//! The handshake, both ends driven in memory: success, every failure case,
//! and the security properties (mutual authentication, rogue gateways,
//! key confirmation, forward secrecy, replay, reflection, cross-session
//! messages, wrong chain, timeouts, the half-open bound).
mod secure_common;

use proptest::prelude::*;
use secure_common::*;
use sensorchain_core::crypto::{X25519Public, X25519Secret, hkdf_expand_key, hkdf_extract};
use sensorchain_core::handshake::*;
use sensorchain_core::hash::{ChainId, tagged_hash};
use sensorchain_core::identity::{Keypair, Signature};
use sensorchain_core::session::{FRAME_DATA, Session};

type Table = ResponderTable<4, 16>;

fn config() -> HandshakeConfig {
    HandshakeConfig::new(vector_chain_id())
}

/// Everything one handshake produced.
struct Run {
    m1: Vec<u8>,
    m2: Vec<u8>,
    m3: Vec<u8>,
    dev: Established,
    gw: Established,
}

fn run(seed: u64, table: &mut Table) -> Run {
    let (device, gateway) = (device(), gateway());
    let allow = FixedAllowlist::new(&[&device]);
    let mut rng = TestRng::from_u64(seed);
    let cfg = config();
    let mut b1 = [0u8; 64];
    let mut b2 = [0u8; 128];
    let mut b3 = [0u8; 64];
    let (init, n1) = Initiator::start(&cfg, &device, 0, &mut rng, &mut b1).unwrap();
    let (resp, n2) = Responder::respond(
        &cfg,
        &gateway,
        table,
        &allow,
        &b1[..n1],
        1,
        &mut rng,
        &mut b2,
    )
    .unwrap();
    let (dev, n3) = init
        .finish(&device, &[gateway.public()], &b2[..n2], 2, &mut b3)
        .unwrap();
    let gw = resp.finish(table, &b3[..n3], 3).unwrap();
    Run {
        m1: b1[..n1].to_vec(),
        m2: b2[..n2].to_vec(),
        m3: b3[..n3].to_vec(),
        dev,
        gw,
    }
}

fn roundtrip(a: &mut Session, b: &mut Session, msg: &[u8]) -> bool {
    let mut buf = [0u8; 128];
    let n = a.seal(FRAME_DATA, msg, &mut buf).unwrap().len();
    match b.open_in_place(&mut buf[..n]) {
        Ok(f) => f.payload == msg,
        Err(_) => false,
    }
}

#[test]
fn full_handshake_mutual_authentication() {
    let mut table = Table::new();
    let mut r = run(1, &mut table);
    assert_eq!(r.m1.len(), MESSAGE1_LEN);
    assert_eq!(r.m2.len(), MESSAGE2_LEN);
    assert_eq!(r.m3.len(), MESSAGE3_LEN);
    assert_eq!((MESSAGE1_LEN, MESSAGE2_LEN, MESSAGE3_LEN), (45, 104, 64));
    assert!(r.m1.len() + r.m2.len() + r.m3.len() <= 230);
    // each side learned the other's identity
    assert_eq!(r.dev.peer, gateway().public());
    assert_eq!(r.dev.peer_id, gateway().public().key_id());
    assert_eq!(r.gw.peer, device().public());
    assert_eq!(r.gw.peer_id, device().public().key_id());
    assert_eq!(r.dev.transcript, r.gw.transcript);
    // directional keys agree, and differ per direction
    assert!(roundtrip(&mut r.dev.session, &mut r.gw.session, b"37.2 C"));
    assert!(roundtrip(&mut r.gw.session, &mut r.dev.session, b"ack"));
    let mut buf = [0u8; 64];
    let n = r
        .dev
        .session
        .seal(FRAME_DATA, b"x", &mut buf)
        .unwrap()
        .len();
    assert!(r.dev.session.open_in_place(&mut buf[..n]).is_err());
    assert_eq!(table.half_open(), 0);
    // two handshakes give different transcripts and keys
    let r2 = run(2, &mut table);
    assert_ne!(r.dev.transcript, r2.dev.transcript);
}

#[test]
fn unknown_and_not_permitted_cost_no_dh_and_no_signature() {
    let (device, gateway, stranger) = (device(), gateway(), rogue());
    let mut allow = FixedAllowlist::new(&[&device]);
    allow.refused.push(stranger.public());
    let cfg = config();
    let mut table = Table::new();
    let mut m1 = [0u8; MESSAGE1_LEN];
    let mut out = [0u8; MESSAGE2_LEN];

    let (_, _) = Initiator::start(
        &cfg,
        &Keypair::from_seed([9; 32]),
        0,
        &mut TestRng::from_u64(1),
        &mut m1,
    )
    .unwrap();
    let mut gw_rng = TestRng::from_u64(99);
    let e = Responder::respond(
        &cfg,
        &gateway,
        &mut table,
        &allow,
        &m1,
        0,
        &mut gw_rng,
        &mut out,
    )
    .unwrap_err();
    assert_eq!(e, HandshakeError::UnknownIdentity);

    Initiator::start(&cfg, &stranger, 0, &mut TestRng::from_u64(2), &mut m1).unwrap();
    let e = Responder::respond(
        &cfg,
        &gateway,
        &mut table,
        &allow,
        &m1,
        0,
        &mut gw_rng,
        &mut out,
    )
    .unwrap_err();
    assert_eq!(e, HandshakeError::NotPermitted);
    // The responder drew no randomness (no ephemeral, hence no DH) and took
    // no half-open slot: the refusal happened before any expensive work.
    assert_eq!(gw_rng.drawn.get(), 0);
    assert_eq!(table.half_open(), 0);
    assert_eq!(out, [0u8; MESSAGE2_LEN]);
    assert_eq!(allow.lookups.get(), 2);
}

#[test]
fn rogue_gateway_is_refused_by_the_device() {
    let (device, gateway, rogue) = (device(), gateway(), rogue());
    let allow = FixedAllowlist::new(&[&device]);
    let cfg = config();
    let mut rng = TestRng::from_u64(5);
    let mut table = Table::new();
    let (mut m1, mut m2, mut m3) = ([0u8; 45], [0u8; 104], [0u8; 64]);

    // The rogue answers with its own identity: not in the trusted set.
    let (init, _) = Initiator::start(&cfg, &device, 0, &mut rng, &mut m1).unwrap();
    Responder::respond(&cfg, &rogue, &mut table, &allow, &m1, 0, &mut rng, &mut m2).unwrap();
    let e = init
        .finish(&device, &[gateway.public()], &m2, 1, &mut m3)
        .unwrap_err();
    assert_eq!(e, HandshakeError::UntrustedResponder);

    // The rogue claims the trusted gateway's key id: the signature fails.
    let (init, _) = Initiator::start(&cfg, &device, 0, &mut rng, &mut m1).unwrap();
    Responder::respond(&cfg, &rogue, &mut table, &allow, &m1, 0, &mut rng, &mut m2).unwrap();
    m2[..8].copy_from_slice(&gateway.public().key_id().0);
    let e = init
        .finish(&device, &[gateway.public()], &m2, 1, &mut m3)
        .unwrap_err();
    assert_eq!(e, HandshakeError::BadSignature);
    assert_eq!(m3, [0u8; 64], "nothing sent to a rogue");
}

/// The key schedule of docs/PROTOCOL.md, recomputed from the spec.
fn spec_th2(cfg: &HandshakeConfig, m1: &[u8], m2: &[u8]) -> [u8; 32] {
    tagged_hash(
        label::TH2,
        &[
            &cfg.chain.0,
            m1,
            &device().public().0,
            &m2[..8],
            &m2[8..40],
            &gateway().public().0,
        ],
    )
    .0
}

fn signed_bytes(ctx: &str, th: &[u8; 32], mac: &[u8; 32]) -> Vec<u8> {
    let mut v = vec![ctx.len() as u8];
    v.extend_from_slice(ctx.as_bytes());
    v.extend_from_slice(th);
    v.extend_from_slice(mac);
    v
}

#[test]
fn key_confirmation_signature_needs_the_mac_from_the_shared_secret() {
    let (device, gateway) = (device(), gateway());
    let allow = FixedAllowlist::new(&[&device]);
    let cfg = config();
    let mut table = Table::new();
    let mut rng = TestRng::from_u64(7);
    let (mut m1, mut m2, mut m3) = ([0u8; 45], [0u8; 104], [0u8; 64]);
    let (init, _) = Initiator::start(&cfg, &device, 0, &mut rng, &mut m1).unwrap();
    Responder::respond(
        &cfg, &gateway, &mut table, &allow, &m1, 0, &mut rng, &mut m2,
    )
    .unwrap();

    // The genuine signature is over TH2 || MAC2 with MAC2 from the DH secret.
    let th2 = spec_th2(&cfg, &m1, &m2);
    // Recompute the initiator's ephemeral from the deterministic RNG.
    let mut rng_replay = TestRng::from_u64(7);
    let e_i = X25519Secret::generate(&mut rng_replay);
    let e_r = X25519Public(m2[8..40].try_into().unwrap());
    let dh = e_i.diffie_hellman(&e_r).unwrap();
    let prk = hkdf_extract(&th2, dh.as_bytes());
    let mac2 = hkdf_expand_key(&prk, &[label::MAC2.as_bytes(), &th2]);
    let sig = Signature(m2[40..].try_into().unwrap());
    assert!(
        gateway
            .public()
            .verify_device(&signed_bytes(label::SIG2, &th2, mac2.as_bytes()), &sig)
            .is_ok()
    );

    // A signature by the real gateway key over the transcript, but without
    // knowledge of the shared secret (MAC2 guessed), is refused: a verified
    // signature proves the signer holds the session secret.
    let forged = gateway.sign(&signed_bytes(label::SIG2, &th2, &[0u8; 32]));
    m2[40..].copy_from_slice(&forged.0);
    let e = init
        .finish(&device, &[gateway.public()], &m2, 1, &mut m3)
        .unwrap_err();
    assert_eq!(e, HandshakeError::BadSignature);

    // And the initiator's signature likewise covers MAC3 (checked by the
    // responder with the strict rule).
    let mut rng = TestRng::from_u64(8);
    let (init, _) = Initiator::start(&cfg, &device, 0, &mut rng, &mut m1).unwrap();
    let (resp, _) = Responder::respond(
        &cfg, &gateway, &mut table, &allow, &m1, 0, &mut rng, &mut m2,
    )
    .unwrap();
    init.finish(&device, &[gateway.public()], &m2, 1, &mut m3)
        .unwrap();
    let th2 = spec_th2(&cfg, &m1, &m2);
    let th3 = tagged_hash(label::TH3, &[&th2, &m2[40..]]).0;
    let forged = device.sign(&signed_bytes(label::SIG3, &th3, &[0u8; 32]));
    let e = resp.finish(&mut table, &forged.0, 2).unwrap_err();
    assert_eq!(e, HandshakeError::BadSignature);
}

#[test]
fn forward_secrecy_long_term_keys_do_not_decrypt_a_recorded_session() {
    let mut table = Table::new();
    let mut r = run(11, &mut table);
    let mut frame = [0u8; 64];
    let n = r
        .dev
        .session
        .seal(FRAME_DATA, b"SpO2 97", &mut frame)
        .unwrap()
        .len();
    let frame = frame[..n].to_vec();
    let cfg = config();
    let th2 = spec_th2(&cfg, &r.m1, &r.m2);
    let th3 = tagged_hash(label::TH3, &[&th2, &r.m2[40..]]).0;
    let th4 = tagged_hash(label::TH4, &[&th3, &r.m3]).0;
    assert_eq!(th4, r.dev.transcript.0);
    let e_i_pub = X25519Public(r.m1[13..45].try_into().unwrap());
    let e_r_pub = X25519Public(r.m2[8..40].try_into().unwrap());

    let try_ikm = |ikm: &[u8; 32]| -> bool {
        let prk = hkdf_extract(&th2, ikm);
        let k = hkdf_expand_key(&prk, &[label::KEY_I2R.as_bytes(), &th4]);
        let mut rx = Session::from_keys([0; 32], *k.as_bytes());
        let mut f = frame.clone();
        rx.open_in_place(&mut f).is_ok()
    };
    // An attacker with the recorded messages and BOTH long-term secrets can
    // compute every DH that involves a long-term key; none is the secret.
    let sd = X25519Secret::from_identity(&device());
    let sg = X25519Secret::from_identity(&gateway());
    let pd = X25519Public::from_identity(&device().public()).unwrap();
    let pg = X25519Public::from_identity(&gateway().public()).unwrap();
    let candidates = [
        sd.diffie_hellman(&pg).unwrap(),
        sd.diffie_hellman(&e_r_pub).unwrap(),
        sg.diffie_hellman(&e_i_pub).unwrap(),
        sg.diffie_hellman(&pd).unwrap(),
    ];
    for c in &candidates {
        assert!(!try_ikm(c.as_bytes()));
    }
    assert!(!try_ikm(&[0; 32]));
    // Only the ephemeral–ephemeral secret (needs e_I or e_R, erased after the
    // handshake) opens it: here recovered from the test's deterministic RNG.
    let e_i = X25519Secret::generate(&mut TestRng::from_u64(11));
    assert!(try_ikm(e_i.diffie_hellman(&e_r_pub).unwrap().as_bytes()));
}

#[test]
fn replayed_message1_is_refused() {
    let (device, gateway) = (device(), gateway());
    let allow = FixedAllowlist::new(&[&device]);
    let cfg = config();
    let mut table = Table::new();
    let mut rng = TestRng::from_u64(3);
    let (mut m1, mut m2) = ([0u8; 45], [0u8; 104]);
    Initiator::start(&cfg, &device, 0, &mut rng, &mut m1).unwrap();
    let (r, _) = Responder::respond(
        &cfg, &gateway, &mut table, &allow, &m1, 0, &mut rng, &mut m2,
    )
    .unwrap();
    r.abort(&mut table);
    let mut gw_rng = TestRng::from_u64(4);
    let e = Responder::respond(
        &cfg,
        &gateway,
        &mut table,
        &allow,
        &m1,
        5,
        &mut gw_rng,
        &mut m2,
    )
    .unwrap_err();
    assert_eq!(e, HandshakeError::Replayed);
    assert_eq!(gw_rng.drawn.get(), 0);
}

#[test]
fn replayed_messages_2_and_3_fail() {
    let (device, gateway) = (device(), gateway());
    let allow = FixedAllowlist::new(&[&device]);
    let cfg = config();
    let mut table = Table::new();
    let old = run(21, &mut table);
    let mut rng = TestRng::from_u64(22);
    let (mut m1, mut m2, mut m3) = ([0u8; 45], [0u8; 104], [0u8; 64]);
    // old message 2 to a new initiator
    let (init, _) = Initiator::start(&cfg, &device, 0, &mut rng, &mut m1).unwrap();
    let e = init
        .finish(&device, &[gateway.public()], &old.m2, 1, &mut m3)
        .unwrap_err();
    assert_eq!(e, HandshakeError::BadSignature);
    // old message 3 to a new responder
    let (_, _) = Initiator::start(&cfg, &device, 0, &mut rng, &mut m1).unwrap();
    let (resp, _) = Responder::respond(
        &cfg, &gateway, &mut table, &allow, &m1, 0, &mut rng, &mut m2,
    )
    .unwrap();
    let e = resp.finish(&mut table, &old.m3, 1).unwrap_err();
    assert_eq!(e, HandshakeError::BadSignature);
    assert_eq!(table.half_open(), 0);
}

#[test]
fn reflected_signatures_fail() {
    // Gateway-to-gateway: both keys are known to both sides, so a reflected
    // message is well-formed; the role labels in what is signed refuse it.
    let (a, b) = (gateway(), device());
    let allow = FixedAllowlist::new(&[&a, &b]);
    let cfg = config();
    let mut table = Table::new();
    let mut rng = TestRng::from_u64(31);
    let (mut m1, mut m2, mut m3) = ([0u8; 45], [0u8; 104], [0u8; 64]);
    // A initiates to B.
    let (init, _) = Initiator::start(&cfg, &a, 0, &mut rng, &mut m1).unwrap();
    // Reflection of message 1: A's own message 1 answered by A itself as
    // responder gives a message 2 that A, as initiator, must not accept as
    // coming from a trusted peer other than itself (its own key is not in its
    // trusted set).
    let (_, _) = Responder::respond(
        &cfg,
        &a,
        &mut ResponderTable::<1, 1>::new(),
        &allow,
        &m1,
        0,
        &mut rng,
        &mut m2,
    )
    .unwrap();
    let e = init.finish(&a, &[b.public()], &m2, 1, &mut m3).unwrap_err();
    assert_eq!(e, HandshakeError::UntrustedResponder);
    // B's message-2 signature sent back to B as a message 3.
    let (_, _) = Initiator::start(&cfg, &a, 0, &mut rng, &mut m1).unwrap();
    let (resp, _) =
        Responder::respond(&cfg, &b, &mut table, &allow, &m1, 0, &mut rng, &mut m2).unwrap();
    let e = resp.finish(&mut table, &m2[40..], 1).unwrap_err();
    assert_eq!(e, HandshakeError::BadSignature);
}

#[test]
fn messages_of_one_session_do_not_advance_another() {
    let (device, gateway) = (device(), gateway());
    let allow = FixedAllowlist::new(&[&device]);
    let cfg = config();
    let mut table = Table::new();
    let mut rng = TestRng::from_u64(41);
    let (mut a1, mut a2, mut a3) = ([0u8; 45], [0u8; 104], [0u8; 64]);
    let (mut b1, mut b2, mut b3) = ([0u8; 45], [0u8; 104], [0u8; 64]);
    let (ia, _) = Initiator::start(&cfg, &device, 0, &mut rng, &mut a1).unwrap();
    let (ib, _) = Initiator::start(&cfg, &device, 0, &mut rng, &mut b1).unwrap();
    let (ra, _) = Responder::respond(
        &cfg, &gateway, &mut table, &allow, &a1, 0, &mut rng, &mut a2,
    )
    .unwrap();
    let (rb, _) = Responder::respond(
        &cfg, &gateway, &mut table, &allow, &b1, 0, &mut rng, &mut b2,
    )
    .unwrap();
    assert_eq!(table.half_open(), 2);
    // B's message 2 to A's initiator, A's to B's
    assert_eq!(
        ia.finish(&device, &[gateway.public()], &b2, 1, &mut a3)
            .unwrap_err(),
        HandshakeError::BadSignature
    );
    let (_, _) = ib
        .finish(&device, &[gateway.public()], &b2, 1, &mut b3)
        .unwrap();
    // B's message 3 to A's responder
    assert_eq!(
        ra.finish(&mut table, &b3, 2).unwrap_err(),
        HandshakeError::BadSignature
    );
    rb.finish(&mut table, &b3, 2).unwrap();
    assert_eq!(table.half_open(), 0);
}

#[test]
fn wrong_chain_and_version_are_named() {
    let (device, gateway) = (device(), gateway());
    let allow = FixedAllowlist::new(&[&device]);
    let mut table = Table::new();
    let mut rng = TestRng::from_u64(51);
    let (mut m1, mut m2) = ([0u8; 45], [0u8; 104]);
    let other = HandshakeConfig::new(ChainId([8; 32]));
    Initiator::start(&other, &device, 0, &mut rng, &mut m1).unwrap();
    let e = Responder::respond(
        &config(),
        &gateway,
        &mut table,
        &allow,
        &m1,
        0,
        &mut rng,
        &mut m2,
    )
    .unwrap_err();
    assert_eq!(e, HandshakeError::WrongChain);

    // Same 4-byte tag, different chain id: the full id in TH2 refuses it.
    let cfg = config();
    let mut twin = cfg;
    twin.chain.0[31] ^= 1;
    let (init, _) = Initiator::start(&twin, &device, 0, &mut rng, &mut m1).unwrap();
    Responder::respond(
        &cfg, &gateway, &mut table, &allow, &m1, 0, &mut rng, &mut m2,
    )
    .unwrap();
    let e = init
        .finish(&device, &[gateway.public()], &m2, 1, &mut [0u8; 64])
        .unwrap_err();
    assert_eq!(e, HandshakeError::BadSignature);

    Initiator::start(&cfg, &device, 0, &mut rng, &mut m1).unwrap();
    m1[0] = 2;
    let e = Responder::respond(
        &cfg, &gateway, &mut table, &allow, &m1, 0, &mut rng, &mut m2,
    )
    .unwrap_err();
    assert_eq!(e, HandshakeError::VersionMismatch);
    let e = Responder::respond(
        &cfg,
        &gateway,
        &mut table,
        &allow,
        &[],
        0,
        &mut rng,
        &mut m2,
    )
    .unwrap_err();
    assert_eq!(e, HandshakeError::Malformed);
}

#[test]
fn timeouts_refuse_to_advance() {
    let (device, gateway) = (device(), gateway());
    let allow = FixedAllowlist::new(&[&device]);
    let mut cfg = config();
    cfg.timeout_ms = 1_000;
    let mut table = Table::new();
    let mut rng = TestRng::from_u64(61);
    let (mut m1, mut m2, mut m3) = ([0u8; 45], [0u8; 104], [0u8; 64]);
    let (init, _) = Initiator::start(&cfg, &device, 100, &mut rng, &mut m1).unwrap();
    let (resp, _) = Responder::respond(
        &cfg, &gateway, &mut table, &allow, &m1, 200, &mut rng, &mut m2,
    )
    .unwrap();
    assert_eq!(
        init.finish(&device, &[gateway.public()], &m2, 1_101, &mut m3)
            .unwrap_err(),
        HandshakeError::Timeout
    );

    let (init, _) = Initiator::start(&cfg, &device, 100, &mut rng, &mut m1).unwrap();
    let (resp2, _) = Responder::respond(
        &cfg, &gateway, &mut table, &allow, &m1, 200, &mut rng, &mut m2,
    )
    .unwrap();
    init.finish(&device, &[gateway.public()], &m2, 1_100, &mut m3)
        .unwrap();
    assert_eq!(
        resp2.finish(&mut table, &m3, 1_201).unwrap_err(),
        HandshakeError::Timeout
    );
    resp.abort(&mut table);
    assert_eq!(table.half_open(), 0);
}

#[test]
fn half_open_handshakes_are_bounded_and_reclaimed() {
    let (device, gateway) = (device(), gateway());
    let allow = FixedAllowlist::new(&[&device]);
    let mut cfg = config();
    cfg.timeout_ms = 1_000;
    let mut table: ResponderTable<2, 8> = ResponderTable::new();
    let mut rng = TestRng::from_u64(71);
    let mut m1 = [0u8; 45];
    let mut m2 = [0u8; 104];
    let mut open = Vec::new();
    for _ in 0..2 {
        Initiator::start(&cfg, &device, 0, &mut rng, &mut m1).unwrap();
        open.push(
            Responder::respond(
                &cfg, &gateway, &mut table, &allow, &m1, 0, &mut rng, &mut m2,
            )
            .unwrap()
            .0,
        );
    }
    Initiator::start(&cfg, &device, 0, &mut rng, &mut m1).unwrap();
    let mut gw_rng = TestRng::from_u64(72);
    let e = Responder::respond(
        &cfg,
        &gateway,
        &mut table,
        &allow,
        &m1,
        500,
        &mut gw_rng,
        &mut m2,
    )
    .unwrap_err();
    assert_eq!(e, HandshakeError::TooManyHalfOpen);
    assert_eq!(gw_rng.drawn.get(), 0);
    // an aborted handshake frees its slot
    open.pop().unwrap().abort(&mut table);
    Initiator::start(&cfg, &device, 0, &mut rng, &mut m1).unwrap();
    let (r, _) = Responder::respond(
        &cfg, &gateway, &mut table, &allow, &m1, 500, &mut rng, &mut m2,
    )
    .unwrap();
    // expired slots are reclaimed (slot from t=0 expires after t=1000)
    Initiator::start(&cfg, &device, 0, &mut rng, &mut m1).unwrap();
    let (_r2, _) = Responder::respond(
        &cfg, &gateway, &mut table, &allow, &m1, 1_001, &mut rng, &mut m2,
    )
    .unwrap();
    assert_eq!(table.half_open(), 2);
    // the stale state cannot free a reused slot
    open.pop().unwrap().abort(&mut table);
    assert_eq!(table.half_open(), 2);
    r.abort(&mut table);
    assert_eq!(table.half_open(), 1);
}

#[test]
fn small_buffers_and_identity_mismatch_are_errors() {
    let (device, gateway) = (device(), gateway());
    let allow = FixedAllowlist::new(&[&device]);
    let cfg = config();
    let mut table = Table::new();
    let mut rng = TestRng::from_u64(81);
    let (mut m1, mut m2, mut m3) = ([0u8; 45], [0u8; 104], [0u8; 64]);
    assert_eq!(
        Initiator::start(&cfg, &device, 0, &mut rng, &mut [0u8; 44]).unwrap_err(),
        HandshakeError::BufferTooSmall
    );
    let (init, _) = Initiator::start(&cfg, &device, 0, &mut rng, &mut m1).unwrap();
    assert_eq!(
        Responder::respond(
            &cfg,
            &gateway,
            &mut table,
            &allow,
            &m1,
            0,
            &mut rng,
            &mut [0u8; 103]
        )
        .unwrap_err(),
        HandshakeError::BufferTooSmall
    );
    assert_eq!(table.half_open(), 0);
    let (resp, _) = Responder::respond(
        &cfg, &gateway, &mut table, &allow, &m1, 0, &mut rng, &mut m2,
    )
    .unwrap();
    resp.abort(&mut table);
    assert_eq!(
        init.finish(&device, &[gateway.public()], &m2, 0, &mut [0u8; 63])
            .unwrap_err(),
        HandshakeError::BufferTooSmall
    );
    let (init, _) = Initiator::start(&cfg, &device, 0, &mut rng, &mut m1).unwrap();
    let (_, _) = Responder::respond(
        &cfg, &gateway, &mut table, &allow, &m1, 0, &mut rng, &mut m2,
    )
    .unwrap();
    assert_eq!(
        init.finish(&rogue(), &[gateway.public()], &m2, 0, &mut m3)
            .unwrap_err(),
        HandshakeError::IdentityMismatch
    );
}

#[test]
fn small_order_ephemerals_are_malformed() {
    let (device, gateway) = (device(), gateway());
    let allow = FixedAllowlist::new(&[&device]);
    let cfg = config();
    let mut table = Table::new();
    let mut rng = TestRng::from_u64(91);
    let (mut m1, mut m2, mut m3) = ([0u8; 45], [0u8; 104], [0u8; 64]);
    Initiator::start(&cfg, &device, 0, &mut rng, &mut m1).unwrap();
    m1[13..].copy_from_slice(&[0u8; 32]);
    let e = Responder::respond(
        &cfg, &gateway, &mut table, &allow, &m1, 0, &mut rng, &mut m2,
    )
    .unwrap_err();
    assert_eq!(e, HandshakeError::Malformed);
    assert_eq!(table.half_open(), 0);
    let (init, _) = Initiator::start(&cfg, &device, 0, &mut rng, &mut m1).unwrap();
    Responder::respond(
        &cfg, &gateway, &mut table, &allow, &m1, 0, &mut rng, &mut m2,
    )
    .unwrap();
    m2[8..40].copy_from_slice(&[0u8; 32]);
    m2[8] = 1;
    assert_eq!(
        init.finish(&device, &[gateway.public()], &m2, 0, &mut m3)
            .unwrap_err(),
        HandshakeError::Malformed
    );
}

/// Drives a handshake where `flip` may change one bit of one message;
/// returns whether both sides established.
fn handshake_with_flip(msg: usize, bit: usize) -> bool {
    let (device, gateway) = (device(), gateway());
    let allow = FixedAllowlist::new(&[&device]);
    let cfg = config();
    let mut table = Table::new();
    let mut rng = TestRng::from_u64(1000 + bit as u64);
    let (mut m1, mut m2, mut m3) = ([0u8; 45], [0u8; 104], [0u8; 64]);
    let flip = |m: &mut [u8], which: usize| {
        if which == msg {
            m[bit / 8] ^= 1 << (bit % 8);
        }
    };
    let Ok((init, _)) = Initiator::start(&cfg, &device, 0, &mut rng, &mut m1) else {
        return false;
    };
    flip(&mut m1, 1);
    let Ok((resp, _)) = Responder::respond(
        &cfg, &gateway, &mut table, &allow, &m1, 0, &mut rng, &mut m2,
    ) else {
        return false;
    };
    flip(&mut m2, 2);
    let Ok((_, _)) = init.finish(&device, &[gateway.public()], &m2, 0, &mut m3) else {
        return false;
    };
    flip(&mut m3, 3);
    resp.finish(&mut table, &m3, 0).is_ok()
}

#[test]
fn every_flipped_bit_in_every_message_fails_the_handshake() {
    assert!(handshake_with_flip(0, 0), "unmodified handshake succeeds");
    for (msg, len) in [(1, MESSAGE1_LEN), (2, MESSAGE2_LEN), (3, MESSAGE3_LEN)] {
        for bit in 0..len * 8 {
            assert!(!handshake_with_flip(msg, bit), "message {msg} bit {bit}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes as message 1 never panic; whatever the responder
    /// answers, arbitrary bytes as message 3 never establish.
    #[test]
    fn arbitrary_message1_and_3(m1 in proptest::collection::vec(any::<u8>(), 0..80),
                                m3 in proptest::collection::vec(any::<u8>(), 0..80)) {
        let (device, gateway) = (device(), gateway());
        let allow = FixedAllowlist::new(&[&device]);
        let cfg = config();
        let mut table = Table::new();
        let mut rng = TestRng::from_u64(5);
        let mut m2 = [0u8; 104];
        // also try with a valid prefix (version, tag, known kid)
        let mut m1b = m1.clone();
        let mut prefix = vec![VERSION];
        prefix.extend_from_slice(&cfg.chain.tag());
        prefix.extend_from_slice(&device.public().key_id().0);
        for (i, b) in prefix.iter().enumerate() { if i < m1b.len() { m1b[i] = *b; } }
        for msg1 in [&m1, &m1b] {
            if let Ok((resp, _)) = Responder::respond(&cfg, &gateway, &mut table, &allow, msg1, 0, &mut rng, &mut m2) {
                prop_assert!(resp.finish(&mut table, &m3, 0).is_err());
            }
        }
    }

    /// Arbitrary bytes as message 2 never panic and never establish.
    #[test]
    fn arbitrary_message2(m2 in proptest::collection::vec(any::<u8>(), 0..160), kid_prefix in any::<bool>()) {
        let (device, gateway) = (device(), gateway());
        let cfg = config();
        let mut rng = TestRng::from_u64(6);
        let mut m1 = [0u8; 45];
        let mut m3 = [0u8; 64];
        let mut m2 = m2;
        if kid_prefix && m2.len() >= 8 { m2[..8].copy_from_slice(&gateway.public().key_id().0); }
        let (init, _) = Initiator::start(&cfg, &device, 0, &mut rng, &mut m1).unwrap();
        prop_assert!(init.finish(&device, &[gateway.public()], &m2, 0, &mut m3).is_err());
    }
}

// ---------------------------------------------------------------------------
// Admission split from cryptography (issue 12): the shared table is needed
// for bookkeeping only.

/// N admitted handshakes run their cryptography (message 2, then message 3's
/// verification) on N threads at once while the test itself holds the
/// table's lock the whole time: no step after `admit` needs the table, so a
/// gateway's lock never serialises X25519 or signatures. All N threads meet
/// at a barrier *inside* their crypto phase, which they can only pass
/// together (they overlap). The bookkeeping stays as strong: a replayed
/// message 1 is refused, the half-open bound holds, every slot comes back.
#[test]
fn admitted_handshakes_run_their_crypto_in_parallel_without_the_table() {
    const N: usize = 4;
    let devices: Vec<Keypair> = (0..N as u8)
        .map(|i| Keypair::from_seed([0x40 + i; 32]))
        .collect();
    let gateway = gateway();
    let refs: Vec<&Keypair> = devices.iter().collect();
    let allow = FixedAllowlist::new(&refs);
    let cfg = config();
    let table = std::sync::Mutex::new(Table::new());
    let mut rng = TestRng::from_u64(500);
    let mut starts = Vec::new();
    let mut admitted = Vec::new();
    for d in &devices {
        let mut m1 = [0u8; MESSAGE1_LEN];
        let (init, n) = Initiator::start(&cfg, d, 0, &mut rng, &mut m1).unwrap();
        let cand = Hello::parse(&cfg, &m1[..n]).unwrap().check(&allow).unwrap();
        assert_eq!(cand.initiator(), &d.public());
        // the only locked step: a few comparisons
        admitted.push(
            table
                .lock()
                .unwrap()
                .admit(cand, 1, cfg.timeout_ms)
                .unwrap(),
        );
        starts.push((init, m1));
    }
    {
        let mut t = table.lock().unwrap();
        assert_eq!(t.half_open(), N);
        // bounded: a fifth admission is refused, and leaves no trace
        let mut m1 = [0u8; MESSAGE1_LEN];
        let (_i, n) = Initiator::start(&cfg, &devices[0], 0, &mut rng, &mut m1).unwrap();
        let c = Hello::parse(&cfg, &m1[..n]).unwrap().check(&allow).unwrap();
        assert_eq!(
            t.admit(c.clone(), 1, cfg.timeout_ms).unwrap_err(),
            HandshakeError::TooManyHalfOpen
        );
        // replayed message 1 (an admitted one): refused before the slot count
        let replay = Hello::parse(&cfg, &starts[0].1)
            .unwrap()
            .check(&allow)
            .unwrap();
        assert_eq!(
            t.admit(replay, 1, cfg.timeout_ms).unwrap_err(),
            HandshakeError::Replayed
        );
    }

    // The test holds the lock from here until every thread is done.
    let guard = table.lock().unwrap();
    let barrier = std::sync::Barrier::new(N);
    let in_crypto = std::sync::atomic::AtomicUsize::new(0);
    let max_in_crypto = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = admitted
            .into_iter()
            .zip(starts)
            .zip(&devices)
            .enumerate()
            .map(|(i, ((adm, (init, _)), dev))| {
                let (gateway, cfg, barrier) = (&gateway, &cfg, &barrier);
                let (in_crypto, max_in_crypto) = (&in_crypto, &max_in_crypto);
                s.spawn(move || {
                    use std::sync::atomic::Ordering::SeqCst;
                    let mut rng = TestRng::from_u64(600 + i as u64);
                    let now = in_crypto.fetch_add(1, SeqCst) + 1;
                    max_in_crypto.fetch_max(now, SeqCst);
                    let mut m2 = [0u8; MESSAGE2_LEN];
                    let (resp, n2) = adm.respond(cfg, gateway, &mut rng, &mut m2).unwrap();
                    // every thread is inside its crypto phase here, together
                    barrier.wait();
                    let mut m3 = [0u8; MESSAGE3_LEN];
                    let (dev_est, n3) = init
                        .finish(dev, &[gateway.public()], &m2[..n2], 2, &mut m3)
                        .unwrap();
                    let (slot, gw_est) = resp.verify(&m3[..n3], 3);
                    in_crypto.fetch_sub(1, SeqCst);
                    (slot, gw_est.unwrap(), dev_est)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(max_in_crypto.load(std::sync::atomic::Ordering::SeqCst), N);
    // the slots are still held (the lock was never taken by the threads)
    assert_eq!(guard.half_open(), N);
    let mut t = guard;
    for (slot, gw_est, dev_est) in results {
        assert_eq!(gw_est.transcript, dev_est.transcript);
        t.release(slot);
    }
    assert_eq!(t.half_open(), 0, "every slot comes back");
}

/// A step that fails after admission (here a small-order ephemeral key,
/// found by the X25519 in `respond`) hands its slot back with the error, and
/// a message 3 that fails verification does too: no slot leaks, and the
/// failed message 1 stays refused as a replay.
#[test]
fn failures_after_admission_return_their_slot() {
    let (device, gateway) = (device(), gateway());
    let allow = FixedAllowlist::new(&[&device]);
    let cfg = config();
    let mut table = Table::new();
    let mut rng = TestRng::from_u64(700);
    let mut m1 = [0u8; MESSAGE1_LEN];
    Initiator::start(&cfg, &device, 0, &mut rng, &mut m1).unwrap();
    m1[13..].copy_from_slice(&[0u8; 32]);
    let c = Hello::parse(&cfg, &m1).unwrap().check(&allow).unwrap();
    let adm = table.admit(c.clone(), 0, cfg.timeout_ms).unwrap();
    assert_eq!(table.half_open(), 1);
    let mut m2 = [0u8; MESSAGE2_LEN];
    let failed = adm.respond(&cfg, &gateway, &mut rng, &mut m2).unwrap_err();
    assert_eq!(failed.error, HandshakeError::Malformed);
    table.release(failed.slot);
    assert_eq!(table.half_open(), 0);
    assert_eq!(
        table.admit(c, 0, cfg.timeout_ms).unwrap_err(),
        HandshakeError::Replayed
    );
    // too small an output buffer: refused after admission, slot returned
    let (_init, n) = Initiator::start(&cfg, &device, 0, &mut rng, &mut m1).unwrap();
    let c = Hello::parse(&cfg, &m1[..n]).unwrap().check(&allow).unwrap();
    let adm = table.admit(c, 0, cfg.timeout_ms).unwrap();
    let failed = adm
        .respond(&cfg, &gateway, &mut rng, &mut m2[..10])
        .unwrap_err();
    assert_eq!(failed.error, HandshakeError::BufferTooSmall);
    table.release(failed.slot);
    // a forged message 3
    let (_init, n) = Initiator::start(&cfg, &device, 0, &mut rng, &mut m1).unwrap();
    let c = Hello::parse(&cfg, &m1[..n]).unwrap().check(&allow).unwrap();
    let (resp, _) = table
        .admit(c, 0, cfg.timeout_ms)
        .unwrap()
        .respond(&cfg, &gateway, &mut rng, &mut m2)
        .unwrap();
    let (slot, r) = resp.verify(&[7u8; MESSAGE3_LEN], 1);
    assert_eq!(r.unwrap_err(), HandshakeError::BadSignature);
    assert_eq!(table.half_open(), 1);
    table.release(slot);
    assert_eq!(table.half_open(), 0);
    // the parse and the allowlist need no table and refuse as before
    assert_eq!(
        Hello::parse(&cfg, &[2u8; MESSAGE1_LEN]).unwrap_err(),
        HandshakeError::VersionMismatch
    );
    let (_init, n) = Initiator::start(&cfg, &rogue(), 0, &mut rng, &mut m1).unwrap();
    assert_eq!(
        Hello::parse(&cfg, &m1[..n])
            .unwrap()
            .check(&allow)
            .unwrap_err(),
        HandshakeError::UnknownIdentity
    );
}
