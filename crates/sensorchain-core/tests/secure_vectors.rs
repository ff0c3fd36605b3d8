//! Deterministic test vectors for the handshake, the key derivation, session
//! frames and sealed payloads: `tests/vectors/{kdf,handshake,session,sealed}.json`
//! at the workspace top.
//!
//! Regenerate with
//! `UPDATE_VECTORS=1 cargo test -p sensorchain-core --features std --test secure_vectors`;
//! without `UPDATE_VECTORS` this test checks that the files match.
//!
//! The key schedule is recomputed here from `docs/PROTOCOL.md` (tagged
//! hashes, HKDF, X25519 through the crate's wrappers) and checked against the
//! state machines' outputs, so the vectors and the spec agree.
mod secure_common;

use secure_common::*;
use sensorchain_core::codec::encode_to_heapless;
use sensorchain_core::crypto::{
    X25519Public, X25519Secret, hkdf_expand_key, hkdf_extract, open_in_place,
};
use sensorchain_core::handshake::*;
use sensorchain_core::hash::tagged_hash;
use sensorchain_core::identity::Keypair;
use sensorchain_core::sealed::{self, MAX_SEALED_ENCODED_LEN, SealedPayload};
use sensorchain_core::session::{FRAME_CLOSE, FRAME_DATA, Session};
use serde_json::{Value, json};
use std::path::PathBuf;

fn hx(b: &[u8]) -> String {
    hex::encode(b)
}

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors")
}

fn check_or_write(name: &str, v: &Value) {
    let path = vectors_dir().join(name);
    if std::env::var_os("UPDATE_VECTORS").is_some() {
        std::fs::create_dir_all(vectors_dir()).unwrap();
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

/// The first 32 bytes the test RNG with `seed` produces.
fn rng32(seed: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    rand_core::TryRng::try_fill_bytes(&mut TestRng::from_u64(seed), &mut b).unwrap();
    b
}

const T1: u64 = 1_000;
const T2: u64 = 1_040;
const T3: u64 = 1_090;
const T4: u64 = 1_120;

#[test]
fn vectors() {
    let device = device();
    let gateway = gateway();
    let cfg = HandshakeConfig::new(vector_chain_id());
    let allow = FixedAllowlist::new(&[&device]);
    let mut table: ResponderTable<4, 16> = ResponderTable::new();
    let mut dev_rng = TestRng::from_u64(1);
    let mut gw_rng = TestRng::from_u64(2);
    let (mut m1, mut m2, mut m3) = ([0u8; 45], [0u8; 104], [0u8; 64]);
    let (init, _) = Initiator::start(&cfg, &device, T1, &mut dev_rng, &mut m1).unwrap();
    let (resp, _) = Responder::respond(
        &cfg,
        &gateway,
        &mut table,
        &allow,
        &m1,
        T2,
        &mut gw_rng,
        &mut m2,
    )
    .unwrap();
    let (mut dev, _) = init
        .finish(&device, &[gateway.public()], &m2, T3, &mut m3)
        .unwrap();
    let mut gw = resp.finish(&mut table, &m3, T4).unwrap();

    // --- key schedule from the spec ---
    let e_i = rng32(1);
    let e_r = rng32(2);
    let e_i_sec = X25519Secret::from_bytes(e_i);
    let e_i_pub = e_i_sec.public();
    let e_r_pub = X25519Secret::from_bytes(e_r).public();
    assert_eq!(&m1[13..], &e_i_pub.0);
    assert_eq!(&m2[8..40], &e_r_pub.0);
    let dh = e_i_sec.diffie_hellman(&e_r_pub).unwrap();
    let th2 = tagged_hash(
        label::TH2,
        &[
            &cfg.chain.0,
            &m1,
            &device.public().0,
            &m2[..8],
            &m2[8..40],
            &gateway.public().0,
        ],
    );
    let prk = hkdf_extract(&th2.0, dh.as_bytes());
    let mac2 = hkdf_expand_key(&prk, &[label::MAC2.as_bytes(), &th2.0]);
    let th3 = tagged_hash(label::TH3, &[&th2.0, &m2[40..]]);
    let mac3 = hkdf_expand_key(&prk, &[label::MAC3.as_bytes(), &th3.0]);
    let th4 = tagged_hash(label::TH4, &[&th3.0, &m3]);
    let k_i2r = hkdf_expand_key(&prk, &[label::KEY_I2R.as_bytes(), &th4.0]);
    let k_r2i = hkdf_expand_key(&prk, &[label::KEY_R2I.as_bytes(), &th4.0]);
    assert_eq!(th4, dev.transcript);
    assert_eq!(th4, gw.transcript);
    let signed = |ctx: &str, th: &[u8; 32], mac: &[u8; 32]| {
        let mut v = vec![ctx.len() as u8];
        v.extend_from_slice(ctx.as_bytes());
        v.extend_from_slice(th);
        v.extend_from_slice(mac);
        v
    };
    let sig2_input = signed(label::SIG2, &th2.0, mac2.as_bytes());
    let sig3_input = signed(label::SIG3, &th3.0, mac3.as_bytes());
    assert_eq!(gateway.sign(&sig2_input).0[..], m2[40..]);
    assert_eq!(device.sign(&sig3_input).0[..], m3[..]);

    // --- session frames: the established sessions vs sessions from the
    // spec-derived keys ---
    let mut spec_dev = Session::from_keys(*k_i2r.as_bytes(), *k_r2i.as_bytes());
    let mut spec_gw = Session::from_keys(*k_r2i.as_bytes(), *k_i2r.as_bytes());
    let mut frames = Vec::new();
    let script: [(bool, u8, &[u8]); 4] = [
        (true, FRAME_DATA, b"\x01\x00\x8a\x0e"),
        (true, FRAME_DATA, b"temperature 37.12 C"),
        (false, FRAME_DATA, b"ack 2"),
        (true, FRAME_CLOSE, b""),
    ];
    for (from_dev, kind, payload) in script {
        let (s, spec, peer) = if from_dev {
            (&mut dev.session, &mut spec_dev, &mut spec_gw)
        } else {
            (&mut gw.session, &mut spec_gw, &mut spec_dev)
        };
        let counter = s.next_send_counter();
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        let fa = s.seal(kind, payload, &mut a).unwrap().to_vec();
        let fb = spec.seal(kind, payload, &mut b).unwrap().to_vec();
        assert_eq!(fa, fb);
        let mut c = fa.clone();
        assert_eq!(peer.open_in_place(&mut c).unwrap().payload, payload);
        frames.push(json!({
            "direction": if from_dev { "initiator->responder" } else { "responder->initiator" },
            "kind": kind,
            "counter": counter,
            "payload": hx(payload),
            "frame": hx(&fa),
        }));
    }

    // --- identity-derived X25519 keys (libsodium's conversions) ---
    let idkeys: Vec<Value> = [&device, &gateway]
        .iter()
        .map(|k| {
            json!({
                "ed25519_seed": hx(&k.seed()),
                "ed25519_public": hx(&k.public().0),
                "key_id": hx(&k.public().key_id().0),
                "x25519_secret": hx(&x25519_secret_of(k)),
                "x25519_public": hx(&X25519Public::from_identity(&k.public()).unwrap().0),
            })
        })
        .collect();

    // --- sealed payload ---
    let readers: Vec<Keypair> = (1..=2)
        .map(|i| Keypair::from_seed([0x40 + i; 32]))
        .collect();
    let binding = b"ward-7|device 11|stream 3|seq 42";
    let plaintext = b"\x01\x00\xc0\x1c";
    let mut seal_rng = TestRng::from_u64(3);
    let pks: Vec<_> = readers.iter().map(|k| k.public()).collect();
    let p = sealed::seal(plaintext, &pks, binding, &mut seal_rng).unwrap();
    let enc: heapless::Vec<u8, MAX_SEALED_ENCODED_LEN> = encode_to_heapless(&p).unwrap();
    // derivations from the spec
    let mut draws = [0u8; 64];
    rand_core::TryRng::try_fill_bytes(&mut TestRng::from_u64(3), &mut draws).unwrap();
    let content_key: [u8; 32] = draws[..32].try_into().unwrap();
    let eph_secret: [u8; 32] = draws[32..].try_into().unwrap();
    let eph = X25519Secret::from_bytes(eph_secret);
    assert_eq!(eph.public(), p.ephemeral);
    let bh = tagged_hash(sealed::label::BINDING, &[binding]);
    let mut wraps = Vec::new();
    for (r, entry) in readers.iter().zip(p.recipients.iter()) {
        let rx = X25519Public::from_identity(&r.public()).unwrap();
        let shared = eph.diffie_hellman(&rx).unwrap();
        let mut salt = p.ephemeral.0.to_vec();
        salt.extend_from_slice(&rx.0);
        let kek = hkdf_expand_key(
            &hkdf_extract(&salt, shared.as_bytes()),
            &[sealed::label::WRAP.as_bytes(), &entry.key_id.0],
        );
        let mut ck: [u8; 32] = entry.wrapped.0[..32].try_into().unwrap();
        let tag: [u8; 16] = entry.wrapped.0[32..].try_into().unwrap();
        open_in_place(&kek, &[0; 12], &bh.0, &mut ck, &tag).unwrap();
        assert_eq!(ck, content_key);
        let mut out = [0u8; 16];
        assert_eq!(p.open(r, binding, &mut out).unwrap(), plaintext);
        wraps.push(json!({
            "reader_seed": hx(&r.seed()),
            "reader_public": hx(&r.public().0),
            "key_id": hx(&entry.key_id.0),
            "reader_x25519_public": hx(&rx.0),
            "shared_secret": hx(shared.as_bytes()),
            "wrapping_key": hx(kek.as_bytes()),
            "wrapped": hx(&entry.wrapped.0),
        }));
    }
    let mut hh = sensorchain_core::hash::TaggedHasher::new(sealed::label::HEADER);
    hh.update(&[p.version])
        .update(&p.ephemeral.0)
        .update(&[p.recipients.len() as u8]);
    for r in &p.recipients {
        hh.update(&r.key_id.0).update(&r.wrapped.0);
    }
    hh.update(&bh.0);
    let header_hash = hh.finalize();
    let decoded: SealedPayload =
        sensorchain_core::codec::decode_exact(&enc, MAX_SEALED_ENCODED_LEN).unwrap();
    assert_eq!(decoded, p);

    // --- a real sealed reading: the plaintext is the postcard encoding of a
    // `Vital`, the binding is `tx::sealed_binding(chain, device, stream,
    // sequence)`, and the payload sits in a signed reading transaction ---
    let reading = sealed_reading_vector(&readers);

    let rng_doc = "test RNG: block i = tagged_hash(\"sensorchain/test-rng/v1\", seed32 || u64le(i)); seed32 = u64le(n) || 24 zero bytes";
    check_or_write(
        "handshake.json",
        &json!({
            "description": "One complete handshake (docs/PROTOCOL.md, Handshake). Initiator draws its ephemeral secret from test RNG seed 1, responder from seed 2.",
            "rng": rng_doc,
            "chain": "the chain of ledger.json (its genesis block's chain id)",
            "chain_id": hx(&cfg.chain.0),
            "chain_tag": hx(&cfg.chain.tag()),
            "initiator_seed": hx(&device.seed()),
            "initiator_public": hx(&device.public().0),
            "initiator_key_id": hx(&device.public().key_id().0),
            "responder_seed": hx(&gateway.seed()),
            "responder_public": hx(&gateway.public().0),
            "responder_key_id": hx(&gateway.public().key_id().0),
            "initiator_ephemeral_secret": hx(&e_i),
            "responder_ephemeral_secret": hx(&e_r),
            "times_ms": [T1, T2, T3, T4],
            "message1": hx(&m1),
            "message2": hx(&m2),
            "message3": hx(&m3),
            "sizes": {"message1": m1.len(), "message2": m2.len(), "message3": m3.len(), "total": m1.len() + m2.len() + m3.len()},
            "transcript_th4": hx(&th4.0),
        }),
    );
    check_or_write(
        "kdf.json",
        &json!({
            "description": "Key schedule of the handshake in handshake.json, and X25519 keys derived from Ed25519 identities (docs/PROTOCOL.md, Key derivation).",
            "identities": idkeys,
            "handshake": {
                "dh": hx(dh.as_bytes()),
                "th2": hx(&th2.0),
                "prk": hx(prk.as_bytes()),
                "mac2": hx(mac2.as_bytes()),
                "sig2_input": hx(&sig2_input),
                "th3": hx(&th3.0),
                "mac3": hx(mac3.as_bytes()),
                "sig3_input": hx(&sig3_input),
                "th4": hx(&th4.0),
                "key_i2r": hx(k_i2r.as_bytes()),
                "key_r2i": hx(k_r2i.as_bytes()),
            },
        }),
    );
    check_or_write(
        "session.json",
        &json!({
            "description": "Frames of the session established in handshake.json (docs/PROTOCOL.md, Session frames). Keys from kdf.json.",
            "key_i2r": hx(k_i2r.as_bytes()),
            "key_r2i": hx(k_r2i.as_bytes()),
            "frames": frames,
        }),
    );
    check_or_write(
        "sealed.json",
        &json!({
            "description": "A sealed payload for two readers (docs/PROTOCOL.md, Sealed payloads). The sealer draws the content key (32 bytes) then the ephemeral secret (32 bytes) from test RNG seed 3.",
            "rng": rng_doc,
            "plaintext": hx(plaintext),
            "binding": hx(binding),
            "binding_hash": hx(&bh.0),
            "content_key": hx(&content_key),
            "ephemeral_secret": hx(&eph_secret),
            "ephemeral_public": hx(&p.ephemeral.0),
            "recipients": wraps,
            "header_hash": hx(&header_hash.0),
            "sealed": hx(&enc),
            "sealed_len": enc.len(),
            "sealed_reading": reading,
        }),
    );
}

/// The X25519 secret of an identity as the spec defines it (clamped first
/// half of SHA-512(seed)), checked against the crate's conversion.
fn x25519_secret_of(k: &Keypair) -> [u8; 32] {
    use sha2::Digest;
    let h = sha2::Sha512::digest(k.seed());
    let mut s: [u8; 32] = h[..32].try_into().unwrap();
    s[0] &= 248;
    s[31] &= 63;
    s[31] |= 64;
    assert_eq!(
        X25519Secret::from_bytes(s).public(),
        X25519Secret::from_identity(k).public()
    );
    s
}

/// The `sealed_reading` vector of `sealed.json`: a body temperature reading
/// of the ledger vectors' device (seed 03*32) on the chain of `ledger.json`,
/// sealed for `readers` with test RNG seed 4, in its signed transaction.
/// The plaintext and the binding are recomputed here from docs/PROTOCOL.md
/// ("Sealed readings") with plain SHA-256.
fn sealed_reading_vector(readers: &[Keypair]) -> Value {
    use sensorchain_core::reading::Vital;
    use sensorchain_core::tx::{Payload, Transaction, TxBody, TxKind, sealed_binding};
    use sha2::Digest;

    let chain = vector_chain_id();
    let device = Keypair::from_seed([3; 32]);
    let (stream, sequence, timestamp_ms) = (0u16, 2u64, 1_700_000_003_000u64);
    let vital = Vital::BodyTemperature {
        centi_celsius: 3712,
    };
    // the plaintext: postcard of the Vital (variant 0, zigzag varint 7424)
    let plaintext = postcard::to_allocvec(&vital).unwrap();
    assert_eq!(plaintext, [0x00, 0x80, 0x3a]);
    // the binding: H("sensorchain/sealed-binding/v1"; chain id || device ||
    // stream u16 LE || sequence u64 LE), 32 bytes
    let ctx = "sensorchain/sealed-binding/v1";
    let mut h = sha2::Sha256::new();
    h.update([ctx.len() as u8]);
    h.update(ctx.as_bytes());
    h.update(chain.0);
    h.update(device.public().0);
    h.update(stream.to_le_bytes());
    h.update(sequence.to_le_bytes());
    let binding: [u8; 32] = h.finalize().into();
    assert_eq!(
        binding,
        sealed_binding(&chain, &device.public(), stream, sequence)
    );
    let binding_hash = tagged_hash(sealed::label::BINDING, &[&binding]);
    let pks: Vec<_> = readers.iter().map(|k| k.public()).collect();
    let p = sealed::seal(&plaintext, &pks, &binding, &mut TestRng::from_u64(4)).unwrap();
    let enc: heapless::Vec<u8, MAX_SEALED_ENCODED_LEN> = encode_to_heapless(&p).unwrap();
    for r in readers {
        let mut out = [0u8; sealed::MAX_SEALED_PLAINTEXT];
        let opened = p.open(r, &binding, &mut out).unwrap();
        assert_eq!(opened, &plaintext[..]);
        let v: Vital = sensorchain_core::codec::decode_exact(opened, 64).unwrap();
        assert_eq!(v, vital);
    }
    // another sequence number: another binding, the payload does not open
    let other = sealed_binding(&chain, &device.public(), stream, sequence + 1);
    let mut out = [0u8; sealed::MAX_SEALED_PLAINTEXT];
    assert!(p.open(&readers[0], &other, &mut out).is_err());
    let body = TxBody {
        signer: device.public(),
        sequence,
        timestamp_ms,
        kind: TxKind::Reading {
            stream,
            payload: Payload::Sealed(p.clone()),
        },
    };
    let tx = Transaction::sign(body.clone(), &chain, &device).unwrap();
    let tx_bytes = tx.to_vec();
    let body_bytes = postcard::to_allocvec(&body).unwrap();
    // the body: signer, sequence, timestamp, TxKind::Reading (0), stream,
    // Payload::Sealed (1), then the encoded payload exactly
    let mut prefix = device.public().0.to_vec();
    prefix.extend([0x02]); // sequence 2
    let mut t = timestamp_ms; // timestamp: LEB128 varint
    while t >= 0x80 {
        prefix.push((t as u8) | 0x80);
        t >>= 7;
    }
    prefix.push(t as u8);
    prefix.extend([0x00, 0x00, 0x01]); // Reading, stream 0, Sealed
    prefix.extend_from_slice(&enc);
    assert_eq!(prefix, body_bytes);
    assert_eq!(&tx_bytes[..body_bytes.len()], &body_bytes[..]);
    assert_eq!(Transaction::decode(&tx_bytes).unwrap(), tx);
    json!({
        "description": "A sealed body temperature reading (docs/PROTOCOL.md, Sealed readings): the plaintext is the postcard encoding of the Vital, the binding is sealed_binding(chain id, device, stream, sequence), sealed for the two readers above with test RNG seed 4 (content key, then ephemeral secret), carried by a reading transaction signed by the device.",
        "chain_id": hx(&chain.0),
        "device_seed": hx(&device.seed()),
        "device_public": hx(&device.public().0),
        "stream": stream,
        "sequence": sequence,
        "timestamp_ms": timestamp_ms,
        "vital": "BodyTemperature { centi_celsius: 3712 }",
        "plaintext": hx(&plaintext),
        "binding": hx(&binding),
        "binding_hash": hx(&binding_hash.0),
        "reader_seeds": readers.iter().map(|r| hx(&r.seed())).collect::<Vec<_>>(),
        "sealed": hx(&enc),
        "sealed_len": enc.len(),
        "tx_body": hx(&body_bytes),
        "transaction": hx(&tx_bytes),
        "tx_id": hx(&Transaction::id_of_encoded(&tx_bytes).0),
    })
}
