//! The crash soak: gateway processes killed with SIGKILL at exact places of
//! the write path — a Raft log append before its fsync, a block validated
//! but not stored, stored but not yet reported to Raft, a block carrying a
//! world-state snapshot, a Raft snapshot built before openraft keeps it
//! and purges the log, a certificate stored — and at random times of
//! ingest from outside, on one gateway and on a member of a three-gateway
//! cluster (the hook: `SENSORCHAIN_TEST_KILL_AT`, src/crash_point.rs).
//! After every kill the verdict comes from the stored chain, not from
//! logs: every reading ever acknowledged is in it exactly once, no
//! transaction is stored twice, and `sensorchain audit` passes.
//!
//! The default run is the short form (each kind of kill once per gateway
//! kind); `SENSORCHAIN_SOAK=1` runs 100 kills on each, the command of
//! README "Crash soak":
//! `SENSORCHAIN_SOAK=1 cargo test -p sensorchain-gateway --test crash_soak -- --nocapture`.
//! Waits are bounded generously; the counts are printed.

mod common;
#[path = "common/cluster.rs"]
#[allow(dead_code)]
mod fixture;
#[path = "common/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngExt;
use sensorchain_core::hash::Hash32;
use sensorchain_core::tx::Transaction;
use sensorchain_gateway::config::{ClusterSection, GatewayConfig};
use sensorchain_gateway::crash_point::Point;
use sensorchain_gateway::store::Store;

/// The long form (`SENSORCHAIN_SOAK=1`).
fn soak() -> bool {
    std::env::var("SENSORCHAIN_SOAK").is_ok_and(|v| v == "1")
}

/// The kinds of kill: from outside at a random time of ingest, or at one
/// of the write path's points.
fn kinds() -> Vec<Option<Point>> {
    std::iter::once(None)
        .chain(Point::ALL.into_iter().map(Some))
        .collect()
}

fn kind_name(k: Option<Point>) -> &'static str {
    k.map_or("ingest", Point::name)
}

/// Kills in all: each kind once (short), or 100.
fn rounds() -> usize {
    if soak() { 100 } else { kinds().len() }
}

/// Generous bound on a hook firing, a start, a catch-up.
const BOUND: Duration = Duration::from_secs(120);

/// One soak at a time (each is a gateway or a cluster on two cores).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the stored chain in `data` holds: each transaction id with the
/// number of times it is stored, and the head height.
fn stored(data: &Path) -> (HashMap<Hash32, u32>, u64) {
    let store = Store::open_read_only(data).expect("the killed gateway's store opens");
    let head = store.head().unwrap().map_or(0, |h| h.height);
    let mut ids = HashMap::new();
    for h in 0..=head {
        let block = store.block(h).unwrap().expect("every block below the head");
        for tx in block.txs.iter() {
            *ids.entry(Transaction::id_of_encoded(&tx.to_vec()))
                .or_insert(0) += 1;
        }
    }
    (ids, head)
}

/// The checks after a kill: every acknowledged reading stored exactly once,
/// nothing stored twice, the audit clean. Returns the head height.
fn check(data: &Path, dir: &Path, acked: &HashSet<Hash32>, what: &str) -> u64 {
    let (ids, head) = stored(data);
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{what}: stored more than once: {twice:?}");
    let missing = acked.iter().filter(|id| !ids.contains_key(*id)).count();
    assert_eq!(
        missing,
        0,
        "{what}: {missing} of {} acknowledged readings missing from the stored chain",
        acked.len()
    );
    let (code, out) = common::cli(
        &["audit", "--data-dir", data.to_str().unwrap(), "--json"],
        dir,
    );
    assert_eq!(code, 0, "{what}: audit failed: {out}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["valid"], true, "{what}: {out}");
    head
}

/// Counts per kind of kill.
#[derive(Default, Debug)]
struct Tally {
    /// Kills (by the hook, or from outside).
    kills: usize,
    /// Rounds whose armed point was not reached within the bound (killed
    /// from outside instead).
    not_reached: usize,
}

fn print_tally(what: &str, tally: &BTreeMap<&'static str, Tally>, acked: usize, head: u64) {
    eprintln!("{what}: {acked} readings acknowledged, chain at height {head}; kills by kind:");
    for (k, t) in tally {
        eprintln!(
            "  {k:<16} {:>3} kills{}",
            t.kills,
            if t.not_reached > 0 {
                format!(
                    " ({} not reached in time, killed from outside)",
                    t.not_reached
                )
            } else {
                String::new()
            }
        );
    }
}

/// One gateway (a cluster of one, state snapshots every 4 blocks, Raft
/// snapshots every 16 entries) killed again and again while four sensors
/// stream to it; after each kill its stored chain is checked.
#[test]
fn one_gateway_killed_at_every_point_of_the_write_path() {
    let _g = serial();
    let net = common::Net::new(4);
    let mut cfg = GatewayConfig::new("data".into(), "gateway.key".into(), "genesis.block".into());
    cfg.listen.tcp = Some(net.tcp.to_string());
    cfg.listen.api = Some(net.api.to_string());
    cfg.batch.timeout_ms = 5;
    cfg.limits.snapshot_every = 4;
    cfg.cluster = Some(ClusterSection {
        node_id: 1,
        listen: None,
        heartbeat_ms: 250,
        election_min_ms: 1_000,
        election_max_ms: 2_000,
        snapshot_every: 16,
        snapshot_keep: 0,
        peers: Vec::new(),
        join: false,
    });
    std::fs::write(&net.config, cfg.to_toml()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let acked: Arc<Mutex<HashSet<Hash32>>> = Arc::default();
    let mut next_seq = vec![1u64; net.devices.len()];
    let mut rng = rand::rng();
    let mut tally: BTreeMap<&'static str, Tally> = BTreeMap::new();
    let mut head = 0;
    let kinds = kinds();
    for round in 0..rounds() {
        let kind = kinds[round % kinds.len()];
        let mut cmd = common::run_command(&net.config);
        cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
        if let Some(p) = kind {
            cmd.env(
                "SENSORCHAIN_TEST_KILL_AT",
                format!("{}:{}", p.name(), rng.random_range(1..=6u32)),
            );
        }
        let mut child = cmd.spawn().expect("spawn sensorchain run");
        let gone = Arc::new(AtomicBool::new(false));
        // sensors stream while it runs (they stop when it dies)
        let handles: Vec<_> = net
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let (d, chain, addr, gwk, acked, gone) = (
                    d.clone(),
                    net.chain,
                    net.tcp,
                    net.gateway.public(),
                    acked.clone(),
                    gone.clone(),
                );
                let first = next_seq[i];
                rt.spawn(common::stream::stream(
                    d, chain, addr, gwk, acked, first, gone,
                ))
            })
            .collect();
        let bound = match kind {
            None => Duration::from_millis(rng.random_range(150..1500)),
            Some(_) => BOUND,
        };
        let t = Instant::now();
        let by_itself = common::wait_exit(&mut child, bound).is_some();
        if !by_itself {
            let _ = child.kill();
            let _ = child.wait();
        }
        gone.store(true, Ordering::Release);
        let entry = tally.entry(kind_name(kind)).or_default();
        entry.kills += 1;
        if kind.is_some() && !by_itself {
            entry.not_reached += 1;
        }
        for (i, h) in handles.into_iter().enumerate() {
            // a killed gateway may have stored what it never acknowledged:
            // go on above everything sent
            next_seq[i] = rt.block_on(h).unwrap_or(next_seq[i]).max(next_seq[i]) + 1;
        }
        let acked_now = acked.lock().unwrap().clone();
        head = check(
            &net.data(),
            net.dir.path(),
            &acked_now,
            &format!("round {round} ({})", kind_name(kind)),
        );
        eprintln!(
            "round {round}: {} kill after {:.1?}{}, {} acknowledged, height {head}",
            kind_name(kind),
            t.elapsed(),
            if kind.is_some() && !by_itself {
                " (point not reached: killed from outside)"
            } else {
                ""
            },
            acked_now.len()
        );
    }
    let acked = acked.lock().unwrap().len();
    print_tally("one gateway", &tally, acked, head);
    assert!(acked > 0, "no reading was ever acknowledged");
    // the write path's points were reached (by the short form too)
    let reached = tally
        .iter()
        .filter(|(k, t)| **k != "ingest" && t.kills > t.not_reached)
        .count();
    assert!(
        reached >= Point::ALL.len() - 1,
        "too few points reached: {tally:?}"
    );
}

/// A member of a three-gateway cluster (snapshots every 32 entries) killed
/// at the write path's points while the cluster takes readings: after each
/// kill its own stored chain holds nothing twice and passes the audit;
/// restarted, it catches up; at the end every acknowledged reading is in
/// every member's chain exactly once (the fault tests' safety check).
#[test]
fn a_cluster_member_killed_at_every_point_of_the_write_path() {
    let _g = serial();
    let t0 = Instant::now();
    let mut c = fixture::Cluster::new_with(
        3,
        6,
        fixture::Options {
            snapshot_every: 32,
            snapshot_keep: 16,
            // every check audits the member's whole chain, whose cost is
            // mostly per block (each block's certificate): in the long
            // form, fewer and fuller blocks keep the 100th check close to
            // the first (at 5 ms, blocks of 3 readings made the chain
            // 63,000 blocks tall by the 86th kill, 64 s per check)
            batch_timeout_ms: if soak() { 100 } else { 5 },
            ..Default::default()
        },
    );
    c.start_all();
    c.wait_leader(&c.all(), None, 0);
    let load = c.load(2, 4);
    load.wait_acked_since(t0, None, 20);
    let mut rng = rand::rng();
    let mut tally: BTreeMap<&'static str, Tally> = BTreeMap::new();
    let kinds = kinds();
    let none = HashSet::new();
    for round in 0..rounds() {
        let kind = kinds[round % kinds.len()];
        // the leader every third round, else a follower
        let l = c.wait_leader(&c.all(), None, 0);
        let m = if round % 3 == 0 {
            l
        } else {
            (l + 1 + round % 2) % 3
        };
        c.kill(m);
        let t = Instant::now();
        let by_itself = match kind {
            None => {
                // killed from outside at a random time after its restart
                c.start_member(m);
                std::thread::sleep(Duration::from_millis(rng.random_range(100..1500)));
                c.kill(m);
                true
            }
            Some(p) => {
                let hook = [(
                    "SENSORCHAIN_TEST_KILL_AT".to_string(),
                    format!("{}:{}", p.name(), rng.random_range(1..=4u32)),
                )];
                if c.start_member_with(m, &hook) {
                    let exited = c.wait_exited(m, BOUND);
                    if !exited {
                        c.kill(m);
                    }
                    exited
                } else {
                    true // died during its start
                }
            }
        };
        let entry = tally.entry(kind_name(kind)).or_default();
        entry.kills += 1;
        if kind.is_some() && !by_itself {
            entry.not_reached += 1;
        }
        let what = format!("round {round} ({}, member {})", kind_name(kind), m + 1);
        // its own chain: nothing twice, audit clean (what the cluster
        // acknowledged may be ahead of it: checked at the end)
        let head = check(&c.members[m].data, &c.root, &none, &what);
        c.start_member(m);
        c.wait_caught_up(m);
        eprintln!(
            "{what}: killed after {:.1?}{}, its chain at height {head}, caught up; {}",
            t.elapsed(),
            if kind.is_some() && !by_itself {
                " (point not reached: killed from outside)"
            } else {
                ""
            },
            load.summary()
        );
    }
    let sent = c.stop_load(load);
    let height = c.wait_converged();
    let report = c.stop_and_check(&sent);
    print_tally(
        "cluster member",
        &tally,
        sent.iter().filter(|s| s.acked()).count(),
        height,
    );
    eprintln!("checked {report:?} in {:.1?}", t0.elapsed());
    let reached = tally
        .iter()
        .filter(|(k, t)| **k != "ingest" && t.kills > t.not_reached)
        .count();
    assert!(
        reached >= Point::ALL.len() - 1,
        "too few points reached: {tally:?}"
    );
}
