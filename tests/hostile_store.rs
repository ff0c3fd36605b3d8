//! Damaged and live chain stores, with real `sensorchain` processes (issue
//! 11, findings 3, 4, 11 and 15): a tampered or overwritten store is refused
//! by `sensorchain run` and named by `sensorchain audit`, never a panic;
//! `genesis -o` and `export --out` refuse to overwrite without `--force`;
//! `audit --api` and `export --api` work on a running gateway and agree
//! with what `--data-dir` gives once it has stopped.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::run as cli;
use sensorchain_core::chain::build_block;
use sensorchain_core::link::GatewayMsg;
use sensorchain_core::reading::Vital;
use sensorchain_core::state::{SigCheck, WorldState};
use sensorchain_core::tx::Transaction;
use sensorchain_gateway::net::client::Client;
use sensorchain_gateway::store::{FILE_NAME, Store};

/// Writes the genesis and `blocks` blocks of `per_block` readings into the
/// network's store through the library, with a state snapshot after the
/// last block (as a gateway takes them), so that a start does not replay.
fn write_chain(net: &common::Net, blocks: u64, per_block: usize) {
    let store = Store::open(&net.data()).unwrap();
    let mut state = WorldState::new(net.chain);
    state
        .apply_block(&net.genesis, None, SigCheck::Verify)
        .unwrap();
    store
        .commit_block(
            &net.genesis,
            &net.genesis.encoded_txs(),
            None,
            Some(&state.snapshot()),
        )
        .unwrap();
    let n = net.devices.len();
    let mut seq = vec![0u64; n];
    for b in 1..=blocks {
        let ts = 2_000 + b * 1_000;
        let txs: Vec<Transaction> = (0..per_block)
            .map(|i| {
                let d = i % n;
                seq[d] += 1;
                let enc = sensorchain_gateway::sim::reading_tx(
                    &net.devices[d],
                    &net.chain,
                    seq[d],
                    ts,
                    0,
                    Vital::HeartRate { bpm: 70 },
                );
                Transaction::decode(&enc).unwrap()
            })
            .collect();
        let block = build_block(&state, &net.gateway, txs, ts, SigCheck::Verify).unwrap();
        state.apply_block(&block, None, SigCheck::Verify).unwrap();
        let snap = (b == blocks).then(|| state.snapshot());
        store
            .commit_block(&block, &block.encoded_txs(), None, snap.as_deref())
            .unwrap();
    }
}

/// What `sensorchain run` did.
enum Start {
    /// It listens (the process is killed on drop).
    Up(common::Gateway),
    /// It exited: (code, stderr).
    Exited(i32, String),
}

/// Starts `sensorchain run` on the network and waits until it listens or
/// exits (a generous bound, not the thing tested).
fn start(net: &common::Net) -> Start {
    let err_path = net.dir.path().join("run.stderr");
    let child = common::run_command(&net.config)
        .stdout(Stdio::null())
        .stderr(Stdio::from(File::create(&err_path).unwrap()))
        .spawn()
        .unwrap();
    let mut g = common::Gateway { child };
    let t = Instant::now();
    loop {
        if let Ok(Some(status)) = g.child.try_wait() {
            let err = std::fs::read_to_string(&err_path).unwrap_or_default();
            return Start::Exited(status.code().unwrap_or(-1), err);
        }
        if std::net::TcpStream::connect_timeout(&net.tcp, Duration::from_millis(100)).is_ok() {
            return Start::Up(g);
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the gateway neither listened nor exited"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn data(net: &common::Net) -> String {
    net.data().to_str().unwrap().to_string()
}

/// Finding 4: a store whose block 2 had one byte changed (audit: INVALID)
/// started silently, served the altered block and grew on top of it. Now
/// `run` refuses it naming the block and the table and saying what to do;
/// `audit` names the block (exit 1) in both output modes.
#[test]
fn a_tampered_block_is_refused_at_start_and_named_by_audit() {
    let net = common::Net::new(3);
    write_chain(&net, 6, 9);
    {
        let store = Store::open(&net.data()).unwrap();
        let mut bytes = store.block_bytes(2).unwrap().unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01; // a byte of the last transaction's signature
        store.overwrite_block_bytes_unchecked(2, &bytes).unwrap();
    }
    let (code, out, err) = cli(&["audit", "--data-dir", &data(&net)], net.dir.path());
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("INVALID at block 2"), "{out}");
    assert!(!err.contains("panicked"), "{err}");
    let (code, out, err) = cli(
        &["audit", "--data-dir", &data(&net), "--json"],
        net.dir.path(),
    );
    assert_eq!(code, 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (v["valid"].as_bool(), v["error"]["height"].as_u64()),
        (Some(false), Some(2))
    );

    match start(&net) {
        Start::Up(_) => panic!("the gateway started on a tampered store"),
        Start::Exited(code, err) => {
            assert_ne!(code, 0, "{err}");
            assert!(!err.contains("panicked"), "{err}");
            assert!(err.contains("integrity check"), "{err}");
            assert!(
                err.contains("height 2") && err.contains("table blocks"),
                "{err}"
            );
            assert!(err.contains("sensorchain audit --data-dir"), "{err}");
        }
    }
}

/// Findings 3 and 4: 64 overwritten bytes of the redb file made redb panic
/// inside `audit` and `run`. At each of several offsets across the file:
/// `audit` gives a verdict (exit 0 or 1, never a panic); where it finds the
/// store damaged, `run` refuses it with a message, never a panic; where the
/// damage hit no live page, the gateway may start.
#[test]
fn overwritten_file_bytes_are_refused_without_a_panic() {
    let net = common::Net::new(3);
    write_chain(&net, 12, 20);
    let file = net.data().join(FILE_NAME);
    let original = std::fs::read(&file).unwrap();
    let mut offsets: Vec<usize> = (0..8).map(|k| k * (original.len() - 64) / 7).collect();
    offsets.extend([4096, 8192 + 200, 3 * 4096 + 64]);
    offsets.retain(|&o| o + 64 <= original.len());
    let mut refused = 0;
    for &at in &offsets {
        let mut bytes = original.clone();
        for (i, b) in bytes[at..at + 64].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(0x5a);
        }
        std::fs::write(&file, &bytes).unwrap();
        let (code, out, err) = cli(&["audit", "--data-dir", &data(&net)], net.dir.path());
        assert!(!err.contains("panicked"), "offset {at}: {err}");
        assert!(
            code == 0 || code == 1,
            "offset {at}: exit {code}: {out}{err}"
        );
        if code == 1 {
            assert!(out.contains("INVALID at block"), "offset {at}: {out}");
        }
        // the audit may have recovered the file: damage it again for `run`
        std::fs::write(&file, &bytes).unwrap();
        match start(&net) {
            Start::Up(mut g) => {
                g.kill();
                assert_eq!(
                    code, 0,
                    "offset {at}: the gateway started on a damaged store: {out}"
                );
            }
            Start::Exited(c, err) => {
                assert_ne!(c, 0, "offset {at}");
                assert!(!err.contains("panicked"), "offset {at}: {err}");
                assert!(
                    err.contains("corrupt") || err.contains("integrity"),
                    "offset {at}: {err}"
                );
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "no damage was noticed at any offset");
}

/// `sensorchain ARGS` in `dir` refuses to replace `existing` (which holds
/// `keep me`) and leaves it alone; with `--force` added it succeeds.
fn refused_then_forced(args: &[&str], dir: &Path, existing: &Path) {
    let (code, out, err) = cli(args, dir);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("existing exists (use --force to overwrite)"),
        "{err}"
    );
    assert_eq!(std::fs::read(existing).unwrap(), b"keep me");
    let (code, out, err) = cli(&[args, &["--force"]].concat(), dir);
    assert_eq!(code, 0, "{out}{err}");
}

/// Finding 11: `genesis -o` and `export --out` replaced an existing file
/// silently; like keygen and provision they now refuse without `--force`.
#[test]
fn genesis_and_export_refuse_to_overwrite_without_force() {
    let net = common::Net::new(1);
    write_chain(&net, 2, 3);
    let dir = net.dir.path();
    sensorchain_gateway::keys::write_keypair(&dir.join("admin.key"), &net.admin, false).unwrap();
    let existing = dir.join("existing");
    std::fs::write(&existing, b"keep me").unwrap();
    let genesis = [
        "genesis",
        "--name",
        "other",
        "--creator",
        "admin.key",
        "--member",
        "gateway:gateway.key",
        "-o",
        "existing",
    ];
    refused_then_forced(&genesis, dir, &existing);
    assert_ne!(std::fs::read(&existing).unwrap(), b"keep me");

    std::fs::write(&existing, b"keep me").unwrap();
    let d = data(&net);
    let export = ["export", "--data-dir", d.as_str(), "--out", "existing"];
    refused_then_forced(&export, dir, &existing);
    assert_eq!(&std::fs::read(&existing).unwrap()[..8], b"SCCHAIN1");
}

/// Finding 15: `audit` and `export` failed on a running gateway ("the chain
/// store is in use by another process"), undocumented. They now read it
/// through its API (`--api`) and give the verdict and the bytes they give
/// from the directory once it has stopped; `--data-dir` on a running
/// gateway says to use `--api`.
#[test]
fn audit_and_export_of_a_running_gateway_through_its_api() {
    let net = common::Net::new(2);
    let mut gw = net.start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for d in &net.devices {
        let (d, chain, addr, gwk) = (d.clone(), net.chain, net.tcp, net.gateway.public());
        let answers = rt.block_on(async move {
            let mut c = Client::connect(addr, &chain, &d, &[gwk]).await.unwrap();
            let batch: Vec<Vec<u8>> = (1..=20)
                .map(|s| {
                    sensorchain_gateway::sim::reading_tx(
                        &d,
                        &chain,
                        s,
                        2_000,
                        1,
                        Vital::HeartRate { bpm: 60 },
                    )
                })
                .collect();
            c.submit_pipelined(&batch, 20).await.unwrap()
        });
        assert!(
            answers.iter().all(|m| matches!(m, GatewayMsg::Ack { .. })),
            "{answers:?}"
        );
    }
    let dir = net.dir.path();
    // the running gateway holds its store: the directory is refused with
    // what to do instead
    let (code, out, err) = cli(&["audit", "--data-dir", &data(&net), "--json"], dir);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("the gateway is running; use --api URL"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let (code, out, err) = cli(
        &["export", "--data-dir", &data(&net), "--out", "live.export"],
        dir,
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("the gateway is running; use --api URL"),
        "{err}"
    );
    // through the API: the same validation of the same exact bytes
    let api = format!("http://{}", net.api);
    // (logged in as a key that reads block bodies: the gateway's, `validate`)
    let key = ["--key", "gateway.key"];
    let (code, api_audit, err) = cli(
        &[&["audit", "--api", &api, "--json"][..], &key].concat(),
        dir,
    );
    assert_eq!(code, 0, "{api_audit}{err}");
    let (code, out, err) = cli(
        &[&["export", "--api", &api, "--out", "api.export"][..], &key].concat(),
        dir,
    );
    assert_eq!(code, 0, "{out}{err}");
    // without a key the command says what it needs; an admin's key may not read bodies
    let (code, _, err) = cli(&["audit", "--api", &api], dir);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--key"), "{err}");
    sensorchain_gateway::keys::write_keypair(&dir.join("admin.key"), &net.admin, false).unwrap();
    let (code, out, err) = cli(&["audit", "--api", &api, "--key", "admin.key"], dir);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("403") || err.contains("forbidden") || out.contains("403"),
        "{out}{err}"
    );
    let (code, out, _) = cli(&[&["audit", "--api", &api][..], &key].concat(), dir);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("VALID") && out.contains("through the API"),
        "{out}"
    );
    // the gateway still serves while they read
    assert!(std::net::TcpStream::connect(net.tcp).is_ok());
    assert!(
        gw.terminate(Duration::from_secs(30)),
        "gateway did not stop"
    );

    let (code, offline_audit, err) = cli(&["audit", "--data-dir", &data(&net), "--json"], dir);
    assert_eq!(code, 0, "{offline_audit}{err}");
    let (code, out, err) = cli(
        &[
            "export",
            "--data-dir",
            &data(&net),
            "--out",
            "offline.export",
        ],
        dir,
    );
    assert_eq!(code, 0, "{out}{err}");
    let field =
        |s: &str, k: &str| serde_json::from_str::<serde_json::Value>(s.trim()).unwrap()[k].clone();
    for k in ["valid", "blocks", "readings", "head_height", "head_hash"] {
        assert_eq!(field(&api_audit, k), field(&offline_audit, k), "{k}");
    }
    assert_eq!(field(&api_audit, "readings"), 40);
    let offline = std::fs::read(dir.join("offline.export")).unwrap();
    assert_eq!(std::fs::read(dir.join("api.export")).unwrap(), offline);
}
