//! The security heart, in memory: a device joins a gateway through the
//! handshake, streams a sealed reading over the session, a stranger is
//! refused, a revoked device is cut off, and a doctor decrypts a reading an
//! insurer cannot.
//!
//! Run: `cargo run --example handshake`

use sensorchain_core::chain::Chain;
use sensorchain_core::handshake::{
    Allowlist, HandshakeConfig, HandshakeError, Initiator, MESSAGE1_LEN, MESSAGE2_LEN,
    MESSAGE3_LEN, Refusal, Responder, ResponderTable,
};
use sensorchain_core::identity::{KeyId, Keypair, VerifyingKey};
use sensorchain_core::link::{self, DeviceMsg};
use sensorchain_core::permissions::{Permissions, Role};
use sensorchain_core::reading::Vital;
use sensorchain_core::sealed;
use sensorchain_core::session::{FRAME_DATA, FRAME_OVERHEAD, Session};
use sensorchain_core::state::WorldState;
use sensorchain_core::tx::{
    GenesisConfig, Member, Params, Payload, Transaction, TxBody, TxKind, sealed_binding,
};

/// The gateway's allowlist: the world state (registered key with CONNECT).
struct StateAllowlist<'a>(&'a WorldState);

impl Allowlist for StateAllowlist<'_> {
    fn lookup(&self, id: &KeyId) -> Result<VerifyingKey, Refusal> {
        let pk = self.0.by_key_id(id).ok_or(Refusal::Unknown)?;
        if !self.0.has(pk, Permissions::CONNECT) {
            return Err(Refusal::NotPermitted);
        }
        self.0.verifying_key(pk).copied().ok_or(Refusal::Unknown)
    }
}

type Table = ResponderTable<16, 64>;

/// Runs the three messages between `device` and `gateway`.
fn connect(
    chain: &Chain,
    device: &Keypair,
    gateway: &Keypair,
    table: &mut Table,
    now: u64,
) -> Result<(Session, Session), HandshakeError> {
    let cfg = HandshakeConfig::new(*chain.chain_id());
    let mut rng = rand::rng();
    let (mut m1, mut m2, mut m3) = (
        [0u8; MESSAGE1_LEN],
        [0u8; MESSAGE2_LEN],
        [0u8; MESSAGE3_LEN],
    );
    let (init, n1) = Initiator::start(&cfg, device, now, &mut rng, &mut m1)?;
    let allow = StateAllowlist(chain.state());
    let (resp, n2) = Responder::respond(
        &cfg,
        gateway,
        table,
        &allow,
        &m1[..n1],
        now + 3,
        &mut rng,
        &mut m2,
    )?;
    let (dev, n3) = init.finish(device, &[gateway.public()], &m2[..n2], now + 6, &mut m3)?;
    let gw = resp.finish(table, &m3[..n3], now + 9)?;
    println!(
        "   handshake: {n1} + {n2} + {n3} = {} bytes on the wire",
        n1 + n2 + n3
    );
    Ok((dev.session, gw.session))
}

fn main() {
    let [admin, gateway, device, patient, doctor, insurer] =
        [1, 2, 3, 4, 5, 6].map(|n| Keypair::from_seed([n; 32]));
    let stranger = Keypair::from_seed([66; 32]);
    let members: Vec<Member> = [
        (&admin, Role::Admin),
        (&gateway, Role::Gateway),
        (&device, Role::Device),
        (&patient, Role::Patient),
        (&doctor, Role::Doctor),
        (&insurer, Role::Insurer),
    ]
    .into_iter()
    .map(|(k, role)| Member::of_role(k.public(), role))
    .collect();
    let mut chain = Chain::genesis(
        &admin,
        GenesisConfig::new("ward-7", Params::default(), &members).unwrap(),
        1_000,
    )
    .expect("genesis");
    let id = *chain.chain_id();
    let sign = |k: &Keypair, seq: u64, kind: TxKind| {
        Transaction::sign(
            TxBody {
                signer: k.public(),
                sequence: seq,
                timestamp_ms: 2_000,
                kind,
            },
            &id,
            k,
        )
        .unwrap()
    };
    // access rules: the device measures the patient; the patient consents to the doctor
    let setup = vec![
        sign(
            &admin,
            1,
            TxKind::AssignDevice {
                device: device.public(),
                patient: patient.public(),
            },
        ),
        sign(
            &patient,
            1,
            TxKind::Consent {
                reader: doctor.public(),
                granted: true,
            },
        ),
    ];
    let b = chain.propose(&gateway, setup, 3_000).unwrap();
    chain.add_block(b, None).unwrap();
    let readers = chain.state().authorised_readers(&device.public());
    println!(
        "access rules: the device's readings may be read by {} identities (patient, doctor)",
        readers.len()
    );

    let mut table = Table::new();
    println!("\n1. the device joins");
    let (mut dev_s, mut gw_s) =
        connect(&chain, &device, &gateway, &mut table, 10_000).expect("device joins");

    // a sealed reading for the patient and the doctor, sent over the session
    let mut rng = rand::rng();
    let vital = Vital::HeartRate { bpm: 128 };
    let plain = postcard::to_allocvec(&vital).unwrap();
    let binding = sealed_binding(&id, &device.public(), 0, 1);
    let payload = sealed::seal(&plain, &readers, &binding, &mut rng).expect("seal");
    let tx = sign(
        &device,
        1,
        TxKind::Reading {
            stream: 0,
            payload: Payload::Sealed(payload),
        },
    );
    let tx_bytes = tx.to_vec();
    let mut msg = [0u8; 1200];
    let n = link::encode(&DeviceMsg::Submit(&tx_bytes), &mut msg)
        .unwrap()
        .len();
    let mut frame = vec![0u8; n + FRAME_OVERHEAD];
    let len = dev_s.seal(FRAME_DATA, &msg[..n], &mut frame).unwrap().len();
    println!("   sealed reading sent in a {len}-byte session frame");
    let opened = gw_s
        .open_in_place(&mut frame[..len])
        .expect("gateway opens the frame");
    let DeviceMsg::Submit(received) = link::decode::<DeviceMsg>(opened.payload).unwrap() else {
        unreachable!()
    };
    let received = Transaction::decode(received).unwrap();
    let b = chain
        .propose(&gateway, vec![received.clone()], 11_000)
        .expect("valid sealed reading");
    chain.add_block(b, None).unwrap();
    println!(
        "   committed in block {}: the gateway validated it without reading it",
        chain.height().unwrap()
    );

    println!("\n2. who can read it");
    let TxKind::Reading {
        payload: Payload::Sealed(p),
        ..
    } = &received.body.kind
    else {
        unreachable!()
    };
    let mut out = [0u8; 128];
    match p.open(&doctor, &binding, &mut out) {
        Ok(pt) => println!("   doctor:  {}", postcard::from_bytes::<Vital>(pt).unwrap()),
        Err(e) => println!("   doctor:  cannot open: {e}"),
    }
    match p.open(&insurer, &binding, &mut out) {
        Ok(_) => println!("   insurer: opened (this is a bug)"),
        Err(e) => println!("   insurer: cannot open: {e}"),
    }
    let for_insurer = sealed::seal(
        &plain,
        &[insurer.public()],
        &sealed_binding(&id, &device.public(), 0, 2),
        &mut rng,
    )
    .unwrap();
    let t = sign(
        &device,
        2,
        TxKind::Reading {
            stream: 0,
            payload: Payload::Sealed(for_insurer),
        },
    );
    println!(
        "   and a reading sealed for the insurer without consent is refused: {}",
        chain.propose(&gateway, vec![t], 12_000).unwrap_err()
    );

    println!("\n3. a stranger tries to join");
    match connect(&chain, &stranger, &gateway, &mut table, 20_000) {
        Ok(_) => println!("   joined (this is a bug)"),
        Err(e) => println!("   refused before any signature or DH work: {e}"),
    }

    println!("\n4. the admin revokes the device's connect permission");
    let revoke = sign(
        &admin,
        2,
        TxKind::Revoke {
            target: device.public(),
            permissions: Permissions::CONNECT,
        },
    );
    let b = chain.propose(&gateway, vec![revoke], 30_000).unwrap();
    chain.add_block(b, None).unwrap();
    // a gateway re-checks live sessions on every permission change
    let still_allowed = chain.state().has(&device.public(), Permissions::CONNECT);
    println!(
        "   live session re-checked: {}",
        if still_allowed {
            "kept (this is a bug)"
        } else {
            "dropped"
        }
    );
    match connect(&chain, &device, &gateway, &mut table, 40_000) {
        Ok(_) => println!("   rejoined (this is a bug)"),
        Err(e) => println!("   reconnect refused: {e}"),
    }
}
