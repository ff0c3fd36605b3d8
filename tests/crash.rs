//! Crash safety: gateway processes are SIGKILLed at random points, many
//! times, and restarted: one gateway during ingest, block commits and
//! snapshot writes (a world-state snapshot every 2 blocks, a Raft snapshot
//! every 16 log entries), and a member of a three-gateway cluster under
//! load. After every kill the killed gateway's stored chain (not its logs)
//! must hold every reading it acknowledged exactly once, and `sensorchain
//! audit` must pass on it.
//!
//! The default run is short (16 kills of one gateway, 4 of a member);
//! `SENSORCHAIN_SOAK=1 cargo test -p sensorchain-gateway --test crash --
//! --nocapture` is the soak: 100 of each, the counts printed.

mod common;
#[path = "common/cluster.rs"]
#[allow(dead_code)]
mod fixture;
#[path = "common/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngExt;
use sensorchain_core::hash::Hash32;
use sensorchain_core::link::GatewayMsg;
use sensorchain_core::reading::Vital;
use sensorchain_core::tx::Transaction;
use sensorchain_gateway::config::{ClusterSection, GatewayConfig};
use sensorchain_gateway::net::client::Client;
use sensorchain_gateway::store::Store;

fn soak() -> bool {
    std::env::var_os("SENSORCHAIN_SOAK").is_some_and(|v| v != "0")
}

/// Checks the stopped gateway's store in `dir` against `acked`: each of
/// them stored exactly once (counted over every block), and `sensorchain
/// audit` passes. Returns the chain's height.
fn check_store(dir: &Path, cwd: &Path, acked: &HashSet<Hash32>, what: &str) -> u64 {
    let store =
        Store::open_read_only(dir).unwrap_or_else(|e| panic!("{what}: cannot open the store: {e}"));
    let head = store.head().unwrap().expect("a stored chain").height;
    let mut seen: HashMap<Hash32, u32> = HashMap::new();
    for h in 0..=head {
        let block = store.block(h).unwrap().expect("every block below the head");
        for tx in block.txs.iter() {
            let id = Transaction::id_of_encoded(&tx.to_vec());
            if acked.contains(&id) {
                *seen.entry(id).or_default() += 1;
            }
        }
    }
    drop(store);
    let missing = acked.iter().filter(|id| !seen.contains_key(id)).count();
    let twice = seen.values().filter(|n| **n > 1).count();
    assert_eq!(
        (missing, twice),
        (0, 0),
        "{what}: of {} acknowledged readings, {missing} missing and {twice} stored more than once",
        acked.len()
    );
    let (code, out) = common::cli(
        &["audit", "--data-dir", dir.to_str().unwrap(), "--json"],
        cwd,
    );
    assert_eq!(code, 0, "{what}: audit failed: {out}");
    head
}

/// The gateway's configuration with snapshots written as often as allowed:
/// the world state every 2 blocks, Raft's every 16 log entries.
fn snapshot_often(config: &Path) {
    let mut cfg = GatewayConfig::load(config).unwrap();
    cfg.limits.snapshot_every = 2;
    cfg.cluster = Some(
        toml::from_str::<ClusterSection>("node_id = 1\nsnapshot_every = 16\nsnapshot_keep = 0")
            .unwrap(),
    );
    std::fs::write(config, cfg.to_toml()).unwrap();
}

#[test]
fn sigkill_during_ingest_loses_no_acknowledged_reading() {
    let rounds = if soak() { 100 } else { 16 };
    let net = common::Net::new(4);
    snapshot_often(&net.config);
    let acked: Arc<Mutex<HashSet<Hash32>>> = Arc::default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rng = rand::rng();
    let mut next_seq = vec![1u64; net.devices.len()];
    let t0 = Instant::now();
    let mut height = 0;
    for round in 0..rounds {
        let mut gw = net.start();
        let kill_after = Duration::from_millis(rng.random_range(150..1200));
        let stop = Instant::now() + kill_after;
        // sensors stream until the gateway dies under them
        let handles: Vec<_> = net
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let (d, chain, addr, gwk, acked) = (
                    d.clone(),
                    net.chain,
                    net.tcp,
                    net.gateway.public(),
                    acked.clone(),
                );
                let first = next_seq[i];
                rt.spawn(async move {
                    let mut seq = first;
                    let Ok(mut c) = Client::connect(addr, &chain, &d, &[gwk]).await else {
                        return seq;
                    };
                    loop {
                        let batch: Vec<Vec<u8>> = (0..16)
                            .map(|k| {
                                sensorchain_gateway::sim::reading_tx(
                                    &d,
                                    &chain,
                                    seq + k,
                                    2_000,
                                    3,
                                    Vital::HeartRate { bpm: 70 },
                                )
                            })
                            .collect();
                        seq += 16;
                        match c.submit_pipelined(&batch, 16).await {
                            Ok(answers) => {
                                let mut a = acked.lock().unwrap();
                                for m in answers {
                                    if let GatewayMsg::Ack { tx_id, .. } = m {
                                        a.insert(tx_id);
                                    }
                                }
                            }
                            Err(_) => return seq,
                        }
                    }
                })
            })
            .collect();
        while Instant::now() < stop {
            std::thread::sleep(Duration::from_millis(10));
        }
        gw.kill();
        for (i, h) in handles.into_iter().enumerate() {
            // a killed gateway may have committed what it never acknowledged:
            // resume above everything sent
            next_seq[i] = rt.block_on(h).unwrap_or(next_seq[i]) + 1;
        }
        let acked = acked.lock().unwrap().clone();
        height = check_store(
            &net.data(),
            net.dir.path(),
            &acked,
            &format!("round {round}"),
        );
        eprintln!(
            "round {round}: killed after {kill_after:?}; height {height}, {} acknowledged so far, all stored once, audit passed",
            acked.len()
        );
    }
    let total = acked.lock().unwrap().len();
    assert!(total > 0, "no reading was ever acknowledged");
    eprintln!(
        "crash soak, one gateway: {rounds} SIGKILLs, {total} readings acknowledged, every one \
         stored exactly once after every kill, {rounds} audits passed, height {height}, {:.1?}",
        t0.elapsed()
    );
    // and the gateway restarts on the crashed store
    let mut gw = net.start();
    gw.kill();
}

/// A random member of a three-gateway cluster under load is SIGKILLed at a
/// random moment, checked (every reading it ever acknowledged stored once,
/// the audit), restarted and caught up; at the end the cluster's safety
/// check runs over every member's chain. Each round has its own short
/// load, so that the chain, and each round's check of it, stays small.
#[test]
fn sigkill_of_a_cluster_member_loses_no_acknowledged_reading() {
    let rounds = if soak() { 100 } else { 4 };
    let t0 = Instant::now();
    let opts = fixture::Options {
        snapshot_every: 16,
        snapshot_keep: 16,
        ..fixture::Options::default()
    };
    let mut c = fixture::Cluster::new_with(3, 6, opts);
    c.start_all();
    c.wait_leader(&c.all(), None, 0);
    let mut rng = rand::rng();
    let mut acked_by: Vec<HashSet<Hash32>> = vec![HashSet::new(); c.n()];
    let mut sent = Vec::new();
    for round in 0..rounds {
        let m = rng.random_range(0..c.n());
        let load = c.load(2, 4);
        load.wait_acked_since(Instant::now(), None, 10);
        std::thread::sleep(Duration::from_millis(rng.random_range(100..900)));
        c.kill(m);
        let killed = Instant::now();
        let round_sent = c.stop_load(load);
        for s in round_sent
            .iter()
            .filter(|s| s.acked() && s.answered < killed)
        {
            acked_by[s.member].insert(s.tx_id);
        }
        sent.extend(round_sent);
        let (data, root) = (c.members[m].data.clone(), c.root.clone());
        let what = format!("round {round}, member {}", m + 1);
        let height = check_store(&data, &root, &acked_by[m], &what);
        c.start_member(m);
        c.wait_caught_up(m);
        eprintln!(
            "round {round}: member {} killed at height {height}; the {} readings it ever acknowledged all stored once, audit passed",
            m + 1,
            acked_by[m].len()
        );
    }
    let load = c.load(2, 4);
    load.wait_acked_since(Instant::now(), None, 20);
    sent.extend(c.stop_load(load));
    let height = c.wait_converged();
    let report = c.stop_and_check(&sent);
    let checked: usize = acked_by.iter().map(HashSet::len).sum();
    eprintln!(
        "crash soak, cluster member: {rounds} SIGKILLs, {checked} acknowledged readings checked \
         on their members after each kill, {rounds} audits passed; converged at height {height}: \
         {report:?}; {:.1?}",
        t0.elapsed()
    );
}
