//! The device loop against an in-memory gateway: core's responder
//! connection with a world-state allowlist, and `WorldState::apply_tx`
//! deciding every submitted reading, with fault injection (link drop mid
//! handshake, lost acknowledgement, busy, gateway restart) and a fake
//! clock. Single-threaded and deterministic: the gateway runs inside the
//! link's `write_all`.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

use sensorchain_core::chain::Chain;
use sensorchain_core::handshake::{Allowlist, Denial, HandshakeConfig, ResponderTable};
use sensorchain_core::hash::ChainId;
use sensorchain_core::identity::{KeyId, Keypair, PublicKey, VerifyingKey};
use sensorchain_core::link::{
    GatewayMsg, Refusal, RejectReason, ResponderConfig, ResponderConnection, ResponderEvent,
    SubmitId, refusal_for,
};
use sensorchain_core::permissions::{Permissions, Role};
use sensorchain_core::reading::Vital;
use sensorchain_core::sealed::SealedPayload;
use sensorchain_core::state::{SigCheck, TxRuleError, WorldState};
use sensorchain_core::tx::{Payload, Transaction, TxBody, TxKind, sealed_binding};
use sensorchain_device::{
    Clock, Device, DeviceConfig, DeviceError, Drbg, MemoryStorage, Outcome, Transport,
};

#[derive(Clone)]
struct TestClock(Rc<Cell<u64>>);

impl Clock for TestClock {
    fn now_ms(&mut self) -> u64 {
        self.0.get()
    }
    fn unix_ms(&mut self) -> u64 {
        1_700_000_000_000 + self.0.get()
    }
}

struct StateAllow<'a>(&'a WorldState);

impl Allowlist for StateAllow<'_> {
    fn lookup(&self, id: &KeyId) -> Result<VerifyingKey, Denial> {
        let pk = self.0.by_key_id(id).ok_or(Denial::Unknown)?;
        if !self.0.has(pk, Permissions::CONNECT) {
            return Err(Denial::NotPermitted);
        }
        self.0.verifying_key(pk).copied().ok_or(Denial::Unknown)
    }
}

type Conn = ResponderConnection<2048, 4096, 8>;

/// The in-memory gateway, seen by the device as its link: core's responder
/// connection, driven the way a gateway drives it.
struct MemGateway {
    clock: Rc<Cell<u64>>,
    key: Keypair,
    cfg: HandshakeConfig,
    state: WorldState,
    table: ResponderTable<4, 16>,
    conn: Option<Conn>,
    peer: Option<PublicKey>,
    out: VecDeque<u8>,
    down: bool,
    height: u64,
    // fault injection
    drop_on_hello: u32,
    lose_acks: u32,
    busy: u32,
    // observations
    ephemerals: Vec<[u8; 32]>,
    committed: Vec<u64>,
    last_tx: Vec<u8>,
    submits: Vec<u64>,
    reconnects: u32,
}

const EPOCH: u64 = 1_700_000_000_000;

impl MemGateway {
    fn new(clock: Rc<Cell<u64>>, gateway: Keypair, state: WorldState) -> Self {
        MemGateway {
            clock,
            cfg: HandshakeConfig::new(*state.chain_id()),
            key: gateway,
            state,
            table: ResponderTable::new(),
            conn: None,
            peer: None,
            out: VecDeque::new(),
            down: false,
            height: 0,
            drop_on_hello: 0,
            lose_acks: 0,
            busy: 0,
            ephemerals: Vec::new(),
            committed: Vec::new(),
            last_tx: Vec::new(),
            submits: Vec::new(),
            reconnects: 0,
        }
    }

    /// A restart: every connection and handshake is lost, the ledger
    /// (durable) stays.
    fn restart(&mut self) {
        self.down = true;
        self.table = ResponderTable::new();
        self.conn = None;
    }

    /// Handles the connection's events; false once the link died.
    fn events(&mut self) -> bool {
        let now = self.clock.get();
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return false;
            };
            let Some(ev) = conn.poll_event() else {
                return true;
            };
            match ev {
                ResponderEvent::Hello(hello) => {
                    self.ephemerals.push(hello.ephemeral().0);
                    if self.drop_on_hello > 0 {
                        self.drop_on_hello -= 1;
                        self.down = true;
                        self.conn = None;
                        return false;
                    }
                    let admitted = hello
                        .check(&StateAllow(&self.state))
                        .and_then(|c| self.table.admit(c, now, self.cfg.timeout_ms));
                    match admitted {
                        Ok(a) => {
                            let mut rng = Drbg::new(&[9; 32], now, b"gateway");
                            let _ = conn.accept(a, &self.key, &mut rng, now);
                        }
                        Err(e) => conn.refuse(refusal_for(e)),
                    }
                }
                ResponderEvent::ProofReceived => {
                    let peer = conn.verify_proof(now).expect("device proof");
                    self.peer = Some(peer);
                }
                ResponderEvent::SlotFreed(slot) => self.table.release(slot),
                ResponderEvent::Submit { id, tx } => {
                    let tx = tx.to_vec();
                    self.submit(id, &tx);
                    if self.down {
                        return false;
                    }
                }
                _ => {}
            }
        }
    }

    fn answer(&mut self, id: SubmitId, m: GatewayMsg) {
        if let Some(conn) = self.conn.as_mut() {
            conn.answer(id, m).unwrap();
        }
    }

    fn submit(&mut self, id: SubmitId, bytes: &[u8]) {
        let tx = Transaction::decode(bytes).unwrap();
        let sequence = tx.body.sequence;
        self.submits.push(sequence);
        assert_eq!(
            Some(tx.body.signer),
            self.peer,
            "device submits only its own"
        );
        if self.busy > 0 {
            self.busy -= 1;
            return self.answer(id, GatewayMsg::Busy { sequence });
        }
        let now = EPOCH + self.clock.get();
        match self.state.apply_tx(&tx, bytes, now, SigCheck::Verify) {
            Ok(()) => {
                self.height += 1;
                self.committed.push(sequence);
                self.last_tx = bytes.to_vec();
                if self.lose_acks > 0 {
                    self.lose_acks -= 1;
                    self.restart();
                    return;
                }
                let ack = GatewayMsg::Ack {
                    sequence,
                    tx_id: Transaction::id_of_encoded(bytes),
                    height: self.height,
                };
                self.answer(id, ack);
            }
            Err(e) => {
                let reason = match e {
                    TxRuleError::Replay { .. } => RejectReason::Replay,
                    TxRuleError::Reading(_) => RejectReason::OutOfRange,
                    TxRuleError::NotPermitted { .. } => RejectReason::NotPermitted,
                    TxRuleError::BadSignature(_) => RejectReason::BadSignature,
                    TxRuleError::RecipientNotAuthorised | TxRuleError::UnknownRecipient => {
                        RejectReason::NotAuthorised
                    }
                    _ => RejectReason::Invalid,
                };
                self.answer(id, GatewayMsg::Reject { sequence, reason });
            }
        }
    }
}

impl Transport for MemGateway {
    type Error = &'static str;

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        if self.down {
            return Err("link down");
        }
        let now = self.clock.get();
        let cfg = ResponderConfig::new(self.cfg);
        let mut input = bytes;
        while !input.is_empty() {
            let conn = self.conn.get_or_insert_with(|| Conn::new(cfg, now));
            let used = conn.handle_input(input, now);
            input = &input[used..];
            if !self.events() {
                return Ok(()); // the bytes left, the link died after
            }
            if used == 0 && self.conn.as_ref().is_some_and(|c| c.is_closed()) {
                break;
            }
        }
        if let Some(conn) = self.conn.as_mut() {
            let mut buf = [0u8; 256];
            while let Some(n) = conn.poll_transmit(&mut buf) {
                self.out.extend(&buf[..n]);
            }
        }
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8], timeout_ms: u32) -> Result<usize, Self::Error> {
        if self.down {
            return Err("link down");
        }
        if self.out.is_empty() {
            self.clock.set(self.clock.get() + u64::from(timeout_ms));
            return Ok(0);
        }
        let n = buf.len().min(self.out.len());
        for b in buf.iter_mut().take(n) {
            *b = self.out.pop_front().unwrap();
        }
        Ok(n)
    }

    fn reconnect(&mut self) -> Result<(), Self::Error> {
        self.reconnects += 1;
        self.down = false;
        if let Some(slot) = self.conn.take().and_then(|mut c| c.take_slot()) {
            self.table.release(slot);
        }
        self.out.clear();
        Ok(())
    }
}

struct Net {
    clock: TestClock,
    gw: MemGateway,
    device: Keypair,
    patient: Keypair,
    chain: ChainId,
    gateways: [PublicKey; 1],
}

fn net() -> Net {
    let admin = Keypair::from_seed([1; 32]);
    let gateway = Keypair::from_seed([2; 32]);
    let device = Keypair::from_seed([10; 32]);
    let patient = Keypair::from_seed([20; 32]);
    let stranger = Keypair::from_seed([30; 32]);
    let m = |k: &Keypair, role: Role, p: Option<Permissions>| sensorchain_core::tx::Member {
        key: k.public(),
        permissions: p.unwrap_or(role.default_permissions()),
        role,
    };
    let members = [
        m(&admin, Role::Admin, None),
        m(&gateway, Role::Gateway, None),
        m(&device, Role::Device, None),
        m(&patient, Role::Patient, None),
        // known but may not connect
        m(&stranger, Role::Device, Some(Permissions::WRITE)),
    ];
    let cfg =
        sensorchain_core::tx::GenesisConfig::new("loop", Default::default(), &members).unwrap();
    let genesis = Chain::genesis_block(&admin, cfg, 1_000).unwrap();
    let chain = genesis.header.chain_id;
    let mut state = WorldState::new(chain);
    state.apply_block(&genesis, None, SigCheck::Verify).unwrap();
    // The device measures the patient (sealed readings need it).
    let assign = Transaction::sign(
        TxBody {
            signer: admin.public(),
            sequence: 1,
            timestamp_ms: 2_000,
            kind: TxKind::AssignDevice {
                device: device.public(),
                patient: patient.public(),
            },
        },
        &chain,
        &admin,
    )
    .unwrap();
    state
        .apply_tx(&assign, &assign.to_vec(), 2_000, SigCheck::Verify)
        .unwrap();
    let clock = Rc::new(Cell::new(0));
    Net {
        clock: TestClock(clock.clone()),
        gw: MemGateway::new(clock, gateway.clone(), state),
        device,
        patient,
        chain,
        gateways: [gateway.public()],
    }
}

fn hr(bpm: u16) -> Vital {
    Vital::HeartRate { bpm }
}

fn boot<'a>(
    device: &Keypair,
    storage: &'a mut MemoryStorage,
    cfg: DeviceConfig<'a>,
) -> (Device<'a, &'a mut MemoryStorage>, Drbg) {
    let d = Device::new(device.clone(), cfg, storage).unwrap();
    let rng = Drbg::new(&[5; 32], d.boot_count(), &[]);
    (d, rng)
}

#[test]
fn streams_readings_with_increasing_sequences() {
    let mut n = net();
    let mut st = MemoryStorage::default();
    let cfg = DeviceConfig::new(n.chain, &n.gateways);
    let (mut d, mut rng) = boot(&n.device, &mut st, cfg);
    let mut clock = n.clock.clone();
    for i in 0..5u64 {
        let o = d
            .submit(&mut n.gw, &mut clock, &mut rng, hr(70 + i as u16))
            .unwrap();
        assert!(
            matches!(o, Outcome::Committed { sequence, height, .. } if sequence == i + 1 && height == i + 1),
            "{o:?}"
        );
    }
    assert_eq!(d.stats().handshakes, 1);
    assert_eq!(n.gw.committed, [1, 2, 3, 4, 5]);
    assert_eq!(
        n.gw.state
            .identity(&n.device.public())
            .unwrap()
            .last_sequence,
        Some(5)
    );
    // one reservation per reading, plus the boot
    assert_eq!(st.saves, 6);
    assert_eq!(st.state.sequence_ceiling, 5);
}

#[test]
fn link_drop_mid_handshake_reconnects_with_a_fresh_ephemeral() {
    let mut n = net();
    n.gw.drop_on_hello = 2;
    let mut st = MemoryStorage::default();
    let cfg = DeviceConfig::new(n.chain, &n.gateways);
    let (mut d, mut rng) = boot(&n.device, &mut st, cfg);
    let mut clock = n.clock.clone();
    let o = d.submit(&mut n.gw, &mut clock, &mut rng, hr(72)).unwrap();
    assert!(matches!(o, Outcome::Committed { sequence: 1, .. }), "{o:?}");
    assert_eq!(n.gw.reconnects, 2);
    assert_eq!(n.gw.ephemerals.len(), 3);
    let mut e = n.gw.ephemerals.clone();
    e.dedup();
    assert_eq!(e.len(), 3, "every handshake draws a new ephemeral key");
    assert_eq!(d.stats().link_failures, 2);
    // the reading was signed once: one sequence number used
    assert_eq!(n.gw.submits, [1]);
}

#[test]
fn gateway_restart_between_readings_resumes_the_sequence() {
    let mut n = net();
    let mut st = MemoryStorage::default();
    let cfg = DeviceConfig::new(n.chain, &n.gateways);
    let (mut d, mut rng) = boot(&n.device, &mut st, cfg);
    let mut clock = n.clock.clone();
    for _ in 0..3 {
        d.submit(&mut n.gw, &mut clock, &mut rng, hr(72)).unwrap();
    }
    n.gw.restart();
    for _ in 0..3 {
        let o = d.submit(&mut n.gw, &mut clock, &mut rng, hr(73)).unwrap();
        assert!(matches!(o, Outcome::Committed { .. }), "{o:?}");
    }
    assert_eq!(n.gw.committed, [1, 2, 3, 4, 5, 6]);
    assert_eq!(d.stats().handshakes, 2);
}

#[test]
fn lost_ack_resend_is_reported_as_duplicate_not_resigned() {
    let mut n = net();
    let mut st = MemoryStorage::default();
    let cfg = DeviceConfig::new(n.chain, &n.gateways);
    let (mut d, mut rng) = boot(&n.device, &mut st, cfg);
    let mut clock = n.clock.clone();
    d.submit(&mut n.gw, &mut clock, &mut rng, hr(72)).unwrap();
    // the gateway commits sequence 2 and restarts before acknowledging
    n.gw.lose_acks = 1;
    let o = d.submit(&mut n.gw, &mut clock, &mut rng, hr(72)).unwrap();
    assert_eq!(o, Outcome::Duplicate { sequence: 2 });
    assert_eq!(n.gw.submits, [1, 2, 2], "the same transaction was resent");
    assert_eq!(n.gw.committed, [1, 2]);
    let o = d.submit(&mut n.gw, &mut clock, &mut rng, hr(72)).unwrap();
    assert!(matches!(o, Outcome::Committed { sequence: 3, .. }));
}

#[test]
fn busy_is_retried_in_the_same_session() {
    let mut n = net();
    n.gw.busy = 2;
    let mut st = MemoryStorage::default();
    let cfg = DeviceConfig::new(n.chain, &n.gateways);
    let (mut d, mut rng) = boot(&n.device, &mut st, cfg);
    let mut clock = n.clock.clone();
    let o = d.submit(&mut n.gw, &mut clock, &mut rng, hr(72)).unwrap();
    assert!(matches!(o, Outcome::Committed { sequence: 1, .. }));
    assert_eq!(d.stats().busy, 2);
    assert_eq!(d.stats().handshakes, 1);
    assert_eq!(n.gw.submits, [1, 1, 1]);
}

#[test]
fn rejected_reading_is_final_and_the_next_one_goes_through() {
    let mut n = net();
    let mut st = MemoryStorage::default();
    let cfg = DeviceConfig::new(n.chain, &n.gateways);
    let (mut d, mut rng) = boot(&n.device, &mut st, cfg);
    let mut clock = n.clock.clone();
    let o = d.submit(&mut n.gw, &mut clock, &mut rng, hr(999)).unwrap();
    assert_eq!(
        o,
        Outcome::Rejected {
            sequence: 1,
            reason: RejectReason::OutOfRange
        }
    );
    assert!(!d.has_pending());
    let o = d.submit(&mut n.gw, &mut clock, &mut rng, hr(72)).unwrap();
    assert!(matches!(o, Outcome::Committed { sequence: 2, .. }));
}

#[test]
fn reboot_resumes_above_the_persisted_sequence() {
    let mut n = net();
    let mut st = MemoryStorage::default();
    let mut clock = n.clock.clone();
    let first_stream;
    {
        let mut cfg = DeviceConfig::new(n.chain, &n.gateways);
        cfg.sequence_block = 4;
        let (mut d, mut rng) = boot(&n.device, &mut st, cfg);
        assert_eq!(d.boot_count(), 1);
        first_stream = rand_core::Rng::next_u64(&mut Drbg::new(&[5; 32], d.boot_count(), &[]));
        for _ in 0..3 {
            d.submit(&mut n.gw, &mut clock, &mut rng, hr(72)).unwrap();
        }
        // power lost here: 3 used, 4 reserved (one save per block of 4)
    }
    assert_eq!(st.state.sequence_ceiling, 4);
    assert_eq!(st.saves, 2);
    n.gw.restart();
    let cfg = DeviceConfig::new(n.chain, &n.gateways);
    let (mut d, mut rng) = boot(&n.device, &mut st, cfg);
    assert_eq!(d.boot_count(), 2);
    assert_eq!(d.next_sequence(), 5);
    assert_ne!(
        first_stream,
        rand_core::Rng::next_u64(&mut Drbg::new(&[5; 32], d.boot_count(), &[])),
        "a new boot draws a new random stream"
    );
    let o = d.submit(&mut n.gw, &mut clock, &mut rng, hr(72)).unwrap();
    assert!(matches!(o, Outcome::Committed { sequence: 5, .. }), "{o:?}");
    assert_eq!(n.gw.committed, [1, 2, 3, 5]);
}

#[test]
fn sequence_is_saved_before_anything_is_sent() {
    struct FailingStorage;
    impl sensorchain_device::Storage for FailingStorage {
        type Error = &'static str;
        fn load(&mut self) -> Result<sensorchain_device::PersistentState, &'static str> {
            Ok(Default::default())
        }
        fn save(&mut self, s: &sensorchain_device::PersistentState) -> Result<(), &'static str> {
            if s.sequence_ceiling > 0 {
                Err("flash worn out")
            } else {
                Ok(())
            }
        }
    }
    let mut n = net();
    let cfg = DeviceConfig::new(n.chain, &n.gateways);
    let mut d = Device::new(n.device.clone(), cfg, FailingStorage).unwrap();
    let mut rng = Drbg::new(&[5; 32], 1, &[]);
    let mut clock = n.clock.clone();
    let e = d
        .submit(&mut n.gw, &mut clock, &mut rng, hr(72))
        .unwrap_err();
    assert_eq!(e, DeviceError::Storage("flash worn out"));
    assert!(n.gw.submits.is_empty() && n.gw.ephemerals.is_empty());
}

#[test]
fn gives_up_after_max_attempts_and_resumes_the_pending_reading_later() {
    let mut n = net();
    n.gw.drop_on_hello = 100;
    let mut st = MemoryStorage::default();
    let mut cfg = DeviceConfig::new(n.chain, &n.gateways);
    cfg.max_attempts = 3;
    let (mut d, mut rng) = boot(&n.device, &mut st, cfg);
    let mut clock = n.clock.clone();
    let e = d
        .submit(&mut n.gw, &mut clock, &mut rng, hr(72))
        .unwrap_err();
    assert!(matches!(e, DeviceError::Transport(_)), "{e:?}");
    assert!(d.has_pending());
    n.gw.drop_on_hello = 0;
    // the pending reading (sequence 1) goes first, then the new one
    let o = d.submit(&mut n.gw, &mut clock, &mut rng, hr(80)).unwrap();
    assert!(matches!(o, Outcome::Committed { sequence: 2, .. }), "{o:?}");
    assert_eq!(n.gw.committed, [1, 2]);
}

#[test]
fn refusals_and_rogue_gateways_are_final() {
    let mut n = net();
    let mut st = MemoryStorage::default();
    // not allowed to connect
    let stranger = Keypair::from_seed([30; 32]);
    let cfg = DeviceConfig::new(n.chain, &n.gateways);
    let mut d = Device::new(stranger, cfg, &mut st).unwrap();
    let mut rng = Drbg::new(&[5; 32], 1, &[]);
    let mut clock = n.clock.clone();
    let e = d
        .submit(&mut n.gw, &mut clock, &mut rng, hr(72))
        .unwrap_err();
    assert_eq!(e, DeviceError::Refused(Refusal::NotPermitted));
    // a device that trusts another gateway refuses this one
    let other = [Keypair::from_seed([3; 32]).public()];
    let cfg = DeviceConfig::new(n.chain, &other);
    let mut st2 = MemoryStorage::default();
    let mut d = Device::new(n.device.clone(), cfg, &mut st2).unwrap();
    let e = d
        .submit(&mut n.gw, &mut clock, &mut rng, hr(72))
        .unwrap_err();
    assert_eq!(
        e,
        DeviceError::Handshake(sensorchain_core::handshake::HandshakeError::UntrustedResponder)
    );
    assert!(n.gw.submits.is_empty());
}

#[test]
fn sealed_readings_open_for_the_patient_only() {
    let mut n = net();
    let mut st = MemoryStorage::default();
    let readers = [n.patient.public()];
    let mut cfg = DeviceConfig::new(n.chain, &n.gateways);
    cfg.seal_for = &readers;
    cfg.stream = 3;
    let (mut d, mut rng) = boot(&n.device, &mut st, cfg);
    let mut clock = n.clock.clone();
    let o = d
        .submit(&mut n.gw, &mut clock, &mut rng, Vital::SpO2 { percent: 97 })
        .unwrap();
    assert!(matches!(o, Outcome::Committed { sequence: 1, .. }), "{o:?}");
    let tx = Transaction::decode(&n.gw.last_tx).unwrap();
    let TxKind::Reading {
        stream: 3,
        payload: Payload::Sealed(sp),
    } = tx.body.kind
    else {
        panic!("not a sealed reading on stream 3")
    };
    let binding = sealed_binding(&n.chain, &n.device.public(), 3, 1);
    let mut out = [0u8; 96];
    let plain = sp.open(&n.patient, &binding, &mut out).unwrap();
    let v: Vital = postcard::from_bytes(plain).unwrap();
    assert_eq!(v, Vital::SpO2 { percent: 97 });
    // another reader, or another binding, cannot open it
    let _: &SealedPayload = &sp;
    assert!(sp.open(&n.device, &binding, &mut out).is_err());
    let other = sealed_binding(&n.chain, &n.device.public(), 3, 2);
    assert!(sp.open(&n.patient, &other, &mut out).is_err());
}

thread_local! {
    static PROBES: std::cell::RefCell<Vec<sensorchain_device::device::Probe>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn record(p: sensorchain_device::device::Probe) {
    PROBES.with(|v| v.borrow_mut().push(p));
}

#[test]
fn probe_sees_each_step_in_order() {
    use sensorchain_device::device::Probe::*;
    let mut n = net();
    n.gw.drop_on_hello = 1;
    let mut st = MemoryStorage::default();
    let cfg = DeviceConfig::new(n.chain, &n.gateways);
    let (mut d, mut rng) = boot(&n.device, &mut st, cfg);
    d.set_probe(record);
    let mut clock = n.clock.clone();
    for _ in 0..2 {
        let o = d.submit(&mut n.gw, &mut clock, &mut rng, hr(72)).unwrap();
        assert!(matches!(o, Outcome::Committed { .. }), "{o:?}");
    }
    let seen = PROBES.with(|v| v.borrow().clone());
    assert_eq!(
        seen,
        [
            SignStart,
            Signed,
            // the first hello is dropped: message 2 never comes
            HandshakeStart,
            Message1Ready,
            HandshakeStart,
            Message1Ready,
            Message2Received,
            Message3Ready,
            SignStart,
            Signed,
        ]
    );
}
