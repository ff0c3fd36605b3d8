//! `sensorchain resync` over real processes (the cluster fixture:
//! tests/common/cluster.rs): a member's chain.redb is damaged, `run`
//! refuses it, `resync` rebuilds it from the peers (moving the damaged
//! directory aside), the member starts, catches up, and the safety check
//! finds one chain on every member.

mod common;
#[path = "common/cluster.rs"]
#[allow(dead_code)]
mod fixture;
#[path = "common/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::io::Read;
use std::process::Stdio;
use std::time::Instant;

use fixture::{BOUND, Cluster, Options};

/// One cluster at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}
use sensorchain_gateway::store::Store;

/// The member catches up from the leader's Raft log (kept whole).
#[test]
fn a_damaged_member_is_refused_resynced_and_catches_up() {
    damaged_member_resynced(Options::default(), "log", false);
}

/// The leader snapshots every 16 entries and keeps none below, and the
/// load goes on: the re-synced member (no Raft state) is sent a snapshot
/// ahead of its chain and back-fills to it.
#[test]
fn a_resynced_member_back_fills_to_a_snapshot_ahead() {
    damaged_member_resynced(snapshots(), "snapshot ahead", false);
}

/// As above, but the load stops before the member does: the snapshot it
/// is sent is at or behind its re-synced head, which holds the snapshot's
/// block, so it takes the snapshot's position only.
#[test]
fn a_resynced_member_takes_a_snapshot_behind_its_chain() {
    damaged_member_resynced(snapshots(), "snapshot behind", true);
}

fn snapshots() -> Options {
    Options {
        snapshot_every: 16,
        snapshot_keep: 0,
        ..Options::default()
    }
}

/// Damage, refusal, resync, restart, catch-up, safety check (module docs);
/// `quiet`: the load stops before the member is stopped.
fn damaged_member_resynced(opts: Options, what: &str, quiet: bool) {
    let _g = serial();
    let t0 = Instant::now();
    let mut c = Cluster::new_with(3, 6, opts);
    c.start_all();
    c.wait_leader(&c.all(), None, 0);
    let load = c.load(2, 4);
    load.wait_acked_since(t0, None, 100);
    let l = c.wait_leader(&c.all(), None, 0);
    let f = (l + 1) % c.n();
    let mut load = Some(load);
    let mut sent = Vec::new();
    if quiet {
        sent = c.stop_load(load.take().unwrap());
        c.wait_converged();
    }
    assert!(c.stop(f), "member {} did not stop cleanly", f + 1);
    let data = c.members[f].data.clone();
    let config = c.members[f].config.clone();

    // One byte of the last transaction of a recent block changed.
    let damaged = {
        let store = Store::open(&data).unwrap();
        let h = store.head().unwrap().unwrap().height.max(2) - 1;
        let mut bytes = store.block_bytes(h).unwrap().unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        store.overwrite_block_bytes_unchecked(h, &bytes).unwrap();
        h
    };

    // `run` refuses it.
    let mut child = common::run_command(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = common::wait_exit(&mut child, BOUND);
    let mut err = String::new();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = status.unwrap_or_else(|| panic!("run started on a damaged store: {err}"));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("height {damaged}")), "{err}");

    // `resync` rebuilds it from the two others.
    let (code, out, err) = common::run(&["resync", "--config", config.to_str().unwrap()], &c.root);
    assert_eq!(code, 0, "resync: {out}{err}");
    assert!(err.contains("damaged"), "{err}");
    assert!(out.contains("re-synced"), "{out}");
    let aside: Vec<_> = std::fs::read_dir(&c.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("data{}.damaged-", f + 1)))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged directory is kept aside");
    assert!(!data.join("raft.redb").exists());
    let (code, out) = common::cli(
        &["audit", "--data-dir", data.to_str().unwrap(), "--json"],
        &c.root,
    );
    assert_eq!(code, 0, "{out}");
    // a second resync of a sound store does nothing
    let (code, out, err) = common::run(&["resync", "--config", config.to_str().unwrap()], &c.root);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("nothing to do"), "{out}");

    // It starts, catches up, and is a voter again.
    c.start_member(f);
    let back = Instant::now();
    let target = c.others_height(f);
    c.wait_reached(f, target);
    c.wait_voter(f);
    if let Some(load) = load {
        load.wait_acked_since(back, None, 20);
        sent = c.stop_load(load);
    }
    let height = c.wait_converged();
    let report = c.stop_and_check(&sent);
    eprintln!(
        "{what}: re-synced member {} back at height {target}, converged at {height}: {report:?}; {:.1?} in all",
        f + 1,
        t0.elapsed()
    );
}
