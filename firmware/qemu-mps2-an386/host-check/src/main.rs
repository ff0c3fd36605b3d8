//! Opens a device's sealed readings in a chain export with a reader's key.
//!
//! ```text
//! sensorchain-fw-open-sealed EXPORT DEVICE READER_KEY [STRANGER_KEY [MIN_SEALED]]
//! ```
//!
//! `EXPORT`: a `sensorchain export` container; `DEVICE`: the device's
//! public key (64 hex digits) or key file; `READER_KEY`: the key file of a
//! reader the readings were sealed for (the patient); `STRANGER_KEY`: a key
//! file that must open none of them (the gateway); `MIN_SEALED`: how many
//! sealed readings there must be at least (default 1). For every sealed
//! reading the device committed, the payload is opened with the reader's
//! key and `sealed_binding(chain, device, stream, sequence)`, the way the
//! gateway's demo does. Exit status 0 when there were at least `MIN_SEALED`
//! sealed readings, every one opened for the reader and none for the
//! stranger; 1 otherwise. Readings in clear are counted, not opened.

use std::process::ExitCode;

use sensorchain_core::block::Block;
use sensorchain_core::hash::parse_hex;
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::reading::Vital;
use sensorchain_core::sealed::MAX_SEALED_PLAINTEXT;
use sensorchain_core::tx::{Payload, TxKind, sealed_binding};

fn read_seed(path: &str) -> [u8; 32] {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_else(|| panic!("{path}: no key"));
    parse_hex::<32>(line).unwrap_or_else(|| panic!("{path}: expected 64 hex digits"))
}

fn public(s: &str) -> PublicKey {
    match parse_hex::<32>(s.trim()) {
        Some(pk) => PublicKey(pk),
        None => Keypair::from_seed(read_seed(s)).public(),
    }
}

/// The blocks of an export container (`docs/PROTOCOL.md`, "Export container").
fn blocks(bytes: &[u8]) -> Vec<Block> {
    assert_eq!(
        bytes.get(..8),
        Some(&b"SCCHAIN1"[..]),
        "not an export container"
    );
    let mut at = 8;
    let u32_at = |at: &mut usize| {
        let v = u32::from_le_bytes(bytes[*at..*at + 4].try_into().unwrap()) as usize;
        *at += 4;
        v
    };
    let mut out = Vec::new();
    loop {
        let len = u32_at(&mut at);
        if len == 0 {
            break;
        }
        out.push(Block::decode(&bytes[at..at + len]).expect("block decodes"));
        at += len;
        let cert = u32_at(&mut at);
        at += cert;
    }
    out
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!(
            "usage: {} EXPORT DEVICE READER_KEY [STRANGER_KEY [MIN_SEALED]]",
            args[0]
        );
        return ExitCode::from(2);
    }
    let export = std::fs::read(&args[1]).expect("read the export");
    let device = public(&args[2]);
    let reader = Keypair::from_seed(read_seed(&args[3]));
    let stranger = args.get(4).map(|p| Keypair::from_seed(read_seed(p)));
    let min_sealed: u32 = args.get(5).map_or(1, |n| n.parse().expect("MIN_SEALED"));
    let (mut sealed, mut opened, mut plain, mut stranger_opened) = (0u32, 0u32, 0u32, 0u32);
    let mut first = None;
    for block in blocks(&export) {
        let chain = block.header.chain_id;
        for tx in &block.txs {
            if tx.body.signer != device {
                continue;
            }
            let TxKind::Reading { stream, payload } = &tx.body.kind else {
                continue;
            };
            let sp = match payload {
                Payload::Plain(_) => {
                    plain += 1;
                    continue;
                }
                Payload::Sealed(sp) => sp,
            };
            sealed += 1;
            let binding = sealed_binding(&chain, &device, *stream, tx.body.sequence);
            let mut buf = [0u8; MAX_SEALED_PLAINTEXT];
            match sp.open(&reader, &binding, &mut buf) {
                Ok(p) => match postcard::from_bytes::<Vital>(p) {
                    Ok(v) => {
                        opened += 1;
                        first.get_or_insert((tx.body.sequence, block.header.height, v));
                    }
                    Err(e) => println!("sequence {}: opened, not a vital: {e}", tx.body.sequence),
                },
                Err(e) => println!(
                    "sequence {}: the reader cannot open it: {e}",
                    tx.body.sequence
                ),
            }
            if let Some(s) = &stranger
                && sp.open(s, &binding, &mut buf).is_ok()
            {
                stranger_opened += 1;
            }
        }
    }
    println!(
        "device {device}: {sealed} sealed readings, {opened} opened with the reader's key, \
         {stranger_opened} with the stranger's, {plain} in clear"
    );
    if let Some((seq, height, v)) = first {
        println!("first: sequence {seq} at height {height}: {v:?}");
    }
    if sealed >= min_sealed.max(1) && opened == sealed && stranger_opened == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
