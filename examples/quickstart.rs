//! The whole life of a small chain, in the order of the Medical-IoT paper's
//! simple blockchain: generate key pairs, sign and verify a transaction,
//! create a genesis block, add blocks (mined with a difficulty), validate the
//! chain, and watch a tamper being caught.
//!
//! Run: `cargo run --example quickstart`

use sensorchain_core::chain::Chain;
use sensorchain_core::identity::{Keypair, VerifyingKey};
use sensorchain_core::permissions::Role;
use sensorchain_core::reading::Vital;
use sensorchain_core::tx::{GenesisConfig, Member, Params, Payload, Transaction, TxBody, TxKind};

fn main() {
    // generate_key_pair: from a seed here so the run is reproducible; a real
    // device uses `Keypair::generate(&mut rng)`.
    let admin = Keypair::from_seed([1; 32]);
    let gateway = Keypair::from_seed([2; 32]);
    let thermometer = Keypair::from_seed([3; 32]);
    let oximeter = Keypair::from_seed([4; 32]);
    println!("1. key pairs");
    for (name, k) in [
        ("admin", &admin),
        ("gateway", &gateway),
        ("thermometer", &thermometer),
        ("oximeter", &oximeter),
    ] {
        println!(
            "   {name:<12} {}  (key id {})",
            k.public().address(),
            k.public().key_id()
        );
    }

    // create_genesis_block, with proof of work of 12 bits
    let params = Params {
        pow_difficulty: 12,
        ..Params::default()
    };
    let members: Vec<Member> = [
        (&admin, Role::Admin),
        (&gateway, Role::Gateway),
        (&thermometer, Role::Device),
        (&oximeter, Role::Device),
    ]
    .into_iter()
    .map(|(k, role)| Member::of_role(k.public(), role))
    .collect();
    let cfg = GenesisConfig::new("quickstart-ward", params, &members).expect("fits");
    let mut chain = Chain::genesis(&admin, cfg, 1_700_000_000_000).expect("valid genesis");
    let g = &chain.blocks()[0];
    println!(
        "\n2. genesis block {} (chain id {}…)",
        g.hash(),
        &chain.chain_id().to_string()[..16]
    );

    // sign and verify a transaction
    let chain_id = *chain.chain_id();
    let reading = |k: &Keypair, seq: u64, t: u64, v: Vital| {
        Transaction::sign(TxBody::reading(k.public(), seq, t, 0, v), &chain_id, k).expect("fits")
    };
    let tx = reading(
        &thermometer,
        1,
        1_700_000_001_000,
        Vital::BodyTemperature {
            centi_celsius: 3712,
        },
    );
    let vk = VerifyingKey::from_public(&thermometer.public()).expect("prime-order key");
    println!(
        "\n3. signed a reading of 37.12 °C: signature verifies = {}",
        tx.verify(chain.chain_id(), &vk).is_ok()
    );
    let mut forged = tx.clone();
    if let TxKind::Reading {
        payload: Payload::Plain(v),
        ..
    } = &mut forged.body.kind
    {
        *v = Vital::BodyTemperature {
            centi_celsius: 3500,
        };
    }
    println!(
        "   the same signature on 35.00 °C verifies = {}",
        forged.verify(chain.chain_id(), &vk).is_ok()
    );

    // add_block, mine_block
    println!("\n4. adding blocks (each mined to 12 leading zero bits)");
    let mut t = 1_700_000_002_000;
    for round in 0..3u64 {
        let txs = vec![
            if round == 0 {
                tx.clone()
            } else {
                reading(
                    &thermometer,
                    round + 1,
                    t,
                    Vital::BodyTemperature {
                        centi_celsius: 3700 + round as i16 * 15,
                    },
                )
            },
            reading(
                &oximeter,
                2 * round + 1,
                t,
                Vital::SpO2 {
                    percent: 97 - round as u8,
                },
            ),
            reading(
                &oximeter,
                2 * round + 2,
                t,
                Vital::HeartRate {
                    bpm: 72 + round as u16 * 4,
                },
            ),
        ];
        let block = chain.propose(&gateway, txs, t).expect("valid transactions");
        println!(
            "   block {} {} nonce {:>6} ({} readings)",
            block.header.height,
            block.hash(),
            block.header.nonce,
            block.txs.len()
        );
        chain.add_block(block, None).expect("valid block");
        t += 1_000;
    }

    // a replay and an implausible value are refused
    let replay = chain.propose(&gateway, vec![tx.clone()], t);
    println!(
        "\n5. replaying the first reading: {}",
        replay.err().map(|e| e.to_string()).unwrap_or_default()
    );
    let silly = chain.propose(
        &gateway,
        vec![reading(&oximeter, 500, t, Vital::HeartRate { bpm: 60000 })],
        t,
    );
    println!(
        "   a heart rate of 60000 bpm: {}",
        silly.err().map(|e| e.to_string()).unwrap_or_default()
    );

    // is_chain_valid
    println!(
        "\n6. the chain of {} blocks is valid: {:?}",
        chain.blocks().len(),
        chain.validate().map(|_| "yes")
    );

    // tamper: change one stored reading
    let mut tampered = chain.clone();
    if let TxKind::Reading {
        payload: Payload::Plain(v),
        ..
    } = &mut tampered.blocks_mut()[2].txs[1].body.kind
    {
        *v = Vital::SpO2 { percent: 99 };
    }
    match tampered.validate() {
        Ok(()) => println!("\n7. tamper NOT detected (this is a bug)"),
        Err(e) => println!("\n7. after changing one SpO2 value in block 2: tamper detected: {e}"),
    }
    // tamper and recompute the Merkle root: the proposer's signature breaks
    let b = &mut tampered.blocks_mut()[2];
    b.header.tx_root = b.compute_tx_root();
    match tampered.validate() {
        Ok(()) => println!("   tamper NOT detected (this is a bug)"),
        Err(e) => println!("   ...and after also recomputing its Merkle root: {e}"),
    }
}
