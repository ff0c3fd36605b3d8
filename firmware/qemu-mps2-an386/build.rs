//! Provisioning at build time: the device identity, its DRBG entropy, the
//! trusted gateway key and the chain id become constants of the image.
//!
//! | variable | meaning |
//! |---|---|
//! | `SENSORCHAIN_DEVICE_KEY` | key file of the device (`sensorchain keygen --out device.key`) |
//! | `SENSORCHAIN_GATEWAY_KEY` | the gateway's public key: 64 hex digits or its key file |
//! | `SENSORCHAIN_GENESIS` | the chain's genesis block file: the chain id is the one it proves (`chain::genesis_chain_id`) |
//! | `SENSORCHAIN_CHAIN_ID` | instead of the genesis file: the chain id, 64 hex digits (the `chain id` line of `sensorchain genesis`) |
//! | `SENSORCHAIN_DEVICE_ENTROPY` | file with 64 hex digits of DRBG entropy (default: derived from the device seed under its own label) |
//! | `SENSORCHAIN_SEAL_FOR` | optional reader public key (hex or key file): readings are sealed for it |
//! | `SENSORCHAIN_READINGS` | readings to stream (default 20) |
//!
//! Without `SENSORCHAIN_DEVICE_KEY` the image gets well-known *test* keys
//! (device seed `[10; 32]`, gateway seed `[2; 32]`, chain id `f7` × 32)
//! and cargo prints a warning: good for size reports, never for a device.

use std::env;
use std::fs;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use sensorchain_core::block::Block;
use sensorchain_core::chain::genesis_chain_id;
use sensorchain_core::hash::{ChainId, parse_hex, tagged_hash};
use sensorchain_core::identity::{Keypair, PublicKey};

fn var(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    env::var(name).ok().filter(|s| !s.trim().is_empty())
}

fn read_seed(path: &str) -> [u8; 32] {
    println!("cargo:rerun-if-changed={path}");
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
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

fn arr(b: &[u8]) -> String {
    let items: Vec<String> = b.iter().map(|x| format!("0x{x:02x}")).collect();
    format!("[{}]", items.join(", "))
}

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    fs::copy("memory.x", out.join("memory.x")).unwrap();
    // cortex-m-rt's `device` feature: the firmware provides its own 32-entry
    // interrupt table (AN385/AN386 have 32 IRQs) instead of the generic 240.
    fs::write(out.join("device.x"), "").unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");

    let (seed, gateway, chain) = match var("SENSORCHAIN_DEVICE_KEY") {
        Some(dev) => {
            let seed = read_seed(&dev);
            let gw = public(&var("SENSORCHAIN_GATEWAY_KEY").expect("SENSORCHAIN_GATEWAY_KEY"));
            let chain = if let Some(g) = var("SENSORCHAIN_GENESIS") {
                println!("cargo:rerun-if-changed={g}");
                let bytes = fs::read(&g).unwrap_or_else(|e| panic!("cannot read {g}: {e}"));
                let block = Block::decode(&bytes)
                    .unwrap_or_else(|e| panic!("{g}: not a genesis block: {e:?}"));
                genesis_chain_id(&block)
                    .unwrap_or_else(|e| panic!("{g}: not a valid genesis block: {e}"))
            } else {
                let hex = var("SENSORCHAIN_CHAIN_ID").expect(
                    "set SENSORCHAIN_GENESIS (the genesis block file) or SENSORCHAIN_CHAIN_ID (64 hex digits)",
                );
                ChainId(parse_hex::<32>(hex.trim()).unwrap_or_else(|| {
                    panic!("SENSORCHAIN_CHAIN_ID {hex:?}: expected 64 hex digits")
                }))
            };
            (seed, gw, chain)
        }
        None => {
            println!(
                "cargo:warning=SENSORCHAIN_DEVICE_KEY not set: building with well-known TEST keys (not for a real device)"
            );
            (
                [10; 32],
                Keypair::from_seed([2; 32]).public(),
                ChainId([0xf7; 32]),
            )
        }
    };
    let entropy = match var("SENSORCHAIN_DEVICE_ENTROPY") {
        Some(p) => read_seed(&p),
        None => tagged_hash("sensorchain/device/provisioned-entropy/v1", &[&seed]).0,
    };
    let seal_for = var("SENSORCHAIN_SEAL_FOR").map(|s| public(&s));
    let readings: u32 = var("SENSORCHAIN_READINGS")
        .map(|s| s.parse().expect("SENSORCHAIN_READINGS"))
        .unwrap_or(20);
    let epoch_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let device_pk = Keypair::from_seed(seed).public();
    println!("cargo:warning=device public key {device_pk}");
    let src = format!(
        "// generated by build.rs: provisioned identity and trust anchors\n\
         pub const DEVICE_SEED: [u8; 32] = {};\n\
         pub const ENTROPY: [u8; 32] = {};\n\
         pub const GATEWAY_KEY: [u8; 32] = {};\n\
         pub const CHAIN_ID: [u8; 32] = {};\n\
         pub const SEAL_FOR: Option<[u8; 32]> = {};\n\
         pub const READINGS: u32 = {readings};\n\
         pub const EPOCH_MS: u64 = {epoch_ms};\n",
        arr(&seed),
        arr(&entropy),
        arr(&gateway.0),
        arr(&chain.0),
        match seal_for {
            Some(pk) => format!("Some({})", arr(&pk.0)),
            None => "None".into(),
        },
    );
    fs::write(out.join("provision.rs"), src).unwrap();
}
