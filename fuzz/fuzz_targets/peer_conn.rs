//! Both ends of a peer link (core::peer::PeerConnection) after a genuine
//! handshake, fed arbitrary bytes and commands mixed with genuine messages
//! of every size around the chunk boundary: never panics, and each end
//! only ever receives a prefix, in order and whole, of the messages the
//! other sent (a violation ends the link; it never yields a message the
//! peer did not send).
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sensorchain_core::handshake::{
    HandshakeConfig, Initiator, MESSAGE1_LEN, MESSAGE2_LEN, MESSAGE3_LEN, ResponderTable,
};
use sensorchain_core::peer::{PEER_CHUNK, PeerConnection, PeerEvent};
use sensorchain_fuzz::{FuzzRng, key};

#[derive(Arbitrary, Debug)]
enum Step {
    /// Arbitrary bytes to the responder (or the initiator).
    Garbage(bool, Vec<u8>),
    /// Carry what one side transmitted to the other, in pieces of this
    /// size, maybe flipping one byte.
    Carry(bool, u16, Option<(u32, u8)>),
    /// One side sends a message of this length (mod three chunks).
    Send(bool, u32, u8),
    /// One side closes (the responder maybe with a refusal).
    Close(bool),
    /// The stream ends at one side.
    Eof(bool),
}

struct End {
    conn: PeerConnection,
    got: Vec<Vec<u8>>,
}

impl End {
    fn feed(&mut self, mut bytes: &[u8]) {
        loop {
            let used = self.conn.handle_input(bytes);
            bytes = &bytes[used..];
            let mut any = false;
            while let Some(ev) = self.conn.poll_event() {
                any = true;
                match ev {
                    PeerEvent::Message(m) => self.got.push(m),
                    PeerEvent::Ended(_) => {}
                    e => panic!("no handshake event after the handshake: {e:?}"),
                }
            }
            if bytes.is_empty() || (used == 0 && !any) {
                return;
            }
        }
    }
}

fn message(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(seed | 1).wrapping_add(seed)).collect()
}

fuzz_target!(|steps: Vec<Step>| {
    let hs = HandshakeConfig::new(sensorchain_fuzz::chain_id());
    let (a, b) = (key(1), key(2));
    let mut rng = FuzzRng::new(7);
    // A genuine handshake through both connections.
    let mut ini = PeerConnection::initiator(hs);
    let mut res = PeerConnection::responder(hs);
    let mut m1 = [0u8; MESSAGE1_LEN];
    let (init, _) = Initiator::start_peer(&hs, &a, 0, &mut rng, &mut m1).unwrap();
    ini.send_hello(&m1).unwrap();
    let w = ini.transmit().to_vec();
    ini.advance(w.len());
    res.handle_input(&w);
    let Some(PeerEvent::Hello(h)) = res.poll_event() else { panic!() };
    struct One(sensorchain_core::identity::VerifyingKey);
    impl sensorchain_core::handshake::Allowlist for One {
        fn lookup(
            &self,
            _: &sensorchain_core::identity::KeyId,
        ) -> Result<sensorchain_core::identity::VerifyingKey, sensorchain_core::handshake::Denial>
        {
            Ok(self.0)
        }
    }
    let allow = One(sensorchain_core::identity::VerifyingKey::from_public(&a.public()).unwrap());
    let mut table: ResponderTable<4, 16> = ResponderTable::new();
    let adm = table.admit(h.check(&allow).unwrap(), 0, hs.timeout_ms).unwrap();
    let mut m2 = [0u8; MESSAGE2_LEN];
    let (r, _) = adm.respond(&hs, &b, &mut rng, &mut m2).map_err(|f| f.error).unwrap();
    res.send_challenge(&m2).unwrap();
    let w = res.transmit().to_vec();
    res.advance(w.len());
    ini.handle_input(&w);
    let Some(PeerEvent::Challenge(m2)) = ini.poll_event() else { panic!() };
    let mut m3 = [0u8; MESSAGE3_LEN];
    let (est, _) = init.finish(&a, &[b.public()], &m2, 0, &mut m3).unwrap();
    ini.send_proof(&m3, est.session).unwrap();
    let w = ini.transmit().to_vec();
    ini.advance(w.len());
    res.handle_input(&w);
    let Some(PeerEvent::Proof(m3)) = res.poll_event() else { panic!() };
    let (_, est) = r.verify(&m3, 0);
    res.establish(est.unwrap().session).unwrap();

    let mut ends = [End { conn: ini, got: vec![] }, End { conn: res, got: vec![] }];
    let mut sent: [Vec<Vec<u8>>; 2] = [vec![], vec![]];
    for step in steps.into_iter().take(48) {
        match step {
            Step::Garbage(to_res, bytes) => ends[to_res as usize].feed(&bytes),
            Step::Carry(from_res, piece, flip) => {
                let (from, to) = if from_res { (1, 0) } else { (0, 1) };
                let mut out = Vec::new();
                for _ in 0..8 {
                    let b = ends[from].conn.transmit().to_vec();
                    if b.is_empty() {
                        break;
                    }
                    ends[from].conn.advance(b.len());
                    out.extend(b);
                }
                if let Some((at, x)) = flip
                    && !out.is_empty()
                {
                    let i = at as usize % out.len();
                    out[i] ^= x.max(1);
                }
                for part in out.chunks(usize::from(piece).max(1)) {
                    ends[to].feed(part);
                }
            }
            Step::Send(from_res, len, seed) => {
                let len = 1 + len as usize % (3 * PEER_CHUNK);
                let m = message(len, seed);
                if ends[from_res as usize].conn.send(m.clone()).is_ok() {
                    sent[from_res as usize].push(m);
                }
            }
            Step::Close(res_side) => {
                if res_side {
                    ends[1].conn.refuse(sensorchain_core::link::Refusal::Busy);
                } else {
                    ends[0].conn.close();
                }
            }
            Step::Eof(res_side) => ends[res_side as usize].conn.handle_eof(),
        }
        // What each end received is a prefix of what the other sent.
        for (to, from) in [(0, 1), (1, 0)] {
            let got = &ends[to].got;
            assert!(got.len() <= sent[from].len(), "more messages than sent");
            assert_eq!(got[..], sent[from][..got.len()], "a message that was not sent");
        }
    }
});
