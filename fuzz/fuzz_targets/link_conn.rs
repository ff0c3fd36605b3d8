//! Both link connections (core::link) fed arbitrary bytes and commands,
//! mixed with a genuine handshake and session between them: never panics,
//! the responder never reports a submission the initiator did not make,
//! and every submission is answered once or reported unanswered.
#![no_main]
use std::collections::BTreeSet;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sensorchain_core::handshake::{HandshakeConfig, ResponderTable};
use sensorchain_core::link::{
    GatewayMsg, InitiatorConfig, InitiatorConnection, InitiatorEvent, ResponderConfig,
    ResponderConnection, ResponderEvent, refusal_for,
};
use sensorchain_fuzz::{Devices, FuzzRng, key};

#[derive(Arbitrary, Debug)]
enum Step {
    /// Arbitrary bytes to the responder.
    ToResponder(Vec<u8>),
    /// Arbitrary bytes to the initiator.
    ToInitiator(Vec<u8>),
    /// Move what each side transmitted to the other, maybe flipping a byte.
    Carry(Option<(u16, u8)>),
    /// The initiator submits these bytes.
    Submit(Vec<u8>),
    /// The responder answers its oldest submission.
    Answer,
    /// The initiator pings, closes, or restarts.
    Ping(u32),
    Close,
    Start,
    /// Advance time.
    Tick(u16),
}

type Ini = InitiatorConnection<256, 1200, 4>;
type Res = ResponderConnection<1280, 2048, 4>;

fuzz_target!(|steps: Vec<Step>| {
    let hs = HandshakeConfig::new(sensorchain_fuzz::chain_id());
    let device = key(2);
    let gateway = key(1);
    let trusted = [gateway.public()];
    let mut table = ResponderTable::<4, 16>::new();
    let mut rng = FuzzRng::new(3);
    let mut ini = Ini::new(InitiatorConfig::new(hs));
    let mut res = Res::new(ResponderConfig::new(hs), 0);
    let mut now = 0u64;
    let mut submitted: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut owed = Vec::new();
    let mut resolved = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let _ = ini.start(&device, &mut rng, now);
    for step in steps.into_iter().take(64) {
        let mut to_res = Vec::new();
        let mut to_ini = Vec::new();
        match step {
            Step::ToResponder(b) => to_res = b,
            Step::ToInitiator(b) => to_ini = b,
            Step::Carry(flip) => {
                let mut buf = [0u8; 256];
                while let Some(n) = ini.poll_transmit(&mut buf) {
                    to_res.extend_from_slice(&buf[..n]);
                }
                while let Some(n) = res.poll_transmit(&mut buf) {
                    to_ini.extend_from_slice(&buf[..n]);
                }
                if let Some((at, bit)) = flip
                    && !to_res.is_empty()
                {
                    let i = usize::from(at) % to_res.len();
                    to_res[i] ^= 1 << (bit % 8);
                }
            }
            Step::Submit(tx) => {
                if let Ok(id) = ini.submit(&tx, now) {
                    submitted.insert(tx);
                    ids.insert(id);
                }
            }
            Step::Answer => {
                if !owed.is_empty() {
                    let id = owed.remove(0);
                    let _ = res.answer(id, GatewayMsg::Busy { sequence: 0 });
                }
            }
            Step::Ping(n) => {
                let _ = ini.ping(n);
            }
            Step::Close => ini.close(),
            Step::Start => {
                let _ = ini.start(&device, &mut rng, now);
            }
            Step::Tick(t) => {
                now += u64::from(t) * 10;
                ini.handle_timeout(now);
                res.handle_timeout(now);
            }
        }
        let mut input = &to_res[..];
        let mut stuck = 0;
        loop {
            let used = res.handle_input(input, now);
            input = &input[used..];
            let mut any = false;
            while let Some(ev) = res.poll_event() {
                any = true;
                match ev {
                    ResponderEvent::Hello(h) => match h
                        .check(&Devices)
                        .and_then(|c| table.admit(c, now, hs.timeout_ms))
                    {
                        Ok(a) => {
                            let _ = res.accept(a, &gateway, &mut rng, now);
                        }
                        Err(e) => res.refuse(refusal_for(e)),
                    },
                    ResponderEvent::ProofReceived => {
                        let _ = res.verify_proof(now);
                    }
                    ResponderEvent::SlotFreed(s) => table.release(s),
                    ResponderEvent::Submit { id, tx } => {
                        assert!(submitted.contains(tx), "a submission nobody made");
                        owed.push(id);
                    }
                    ResponderEvent::Ended(_) => owed.clear(),
                    _ => {}
                }
            }
            if input.is_empty() || (used == 0 && !any) {
                stuck += 1;
                if stuck > 2 || input.is_empty() {
                    break;
                }
            }
        }
        let mut input = &to_ini[..];
        while !input.is_empty() {
            let used = ini.handle_input(input, now);
            input = &input[used..];
            while let Some(ev) = ini.poll_event() {
                match ev {
                    InitiatorEvent::ChallengeReceived => {
                        let _ = ini.finish_handshake(&device, &trusted, now);
                    }
                    InitiatorEvent::Answer { id, .. } | InitiatorEvent::Unanswered { id, .. } => {
                        assert!(ids.contains(&id), "an answer to nothing");
                        assert!(resolved.insert(id), "resolved twice");
                    }
                    _ => {}
                }
            }
        }
    }
});
