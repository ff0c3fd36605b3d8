//! `sensorchain backup` and `sensorchain restore` over real processes: a
//! backup of a running gateway (through its API, with its own key), its
//! restore into a new data directory (checked by `sensorchain audit`), and
//! the restored gateway started again, extending its chain; and a cluster
//! member restored from its own backup, which rejoins without its old Raft
//! state and catches up.

mod common;
#[path = "common/cluster.rs"]
#[allow(dead_code)]
mod fixture;
#[path = "common/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::path::Path;

use sensorchain_core::hash::Hash32;
use sensorchain_core::link::GatewayMsg;
use sensorchain_core::reading::Vital;
use sensorchain_gateway::net::client::Client;
use sensorchain_gateway::store::Store;

/// Sends `n` readings from every device of `net` (sequences from `first`)
/// and returns the ids of those acknowledged (final).
fn stream(net: &common::Net, first: u64, n: u64) -> Vec<Hash32> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut acked = Vec::new();
    for d in &net.devices {
        let batch: Vec<Vec<u8>> = (first..first + n)
            .map(|seq| {
                sensorchain_gateway::sim::reading_tx(
                    d,
                    &net.chain,
                    seq,
                    2_000,
                    3,
                    Vital::HeartRate { bpm: 70 },
                )
            })
            .collect();
        let answers = rt.block_on(async {
            let mut c = Client::connect(net.tcp, &net.chain, d, &[net.gateway.public()])
                .await
                .expect("connect");
            c.submit_pipelined(&batch, 16).await.expect("submit")
        });
        for m in answers {
            match m {
                GatewayMsg::Ack { tx_id, .. } => acked.push(tx_id),
                other => panic!("reading not acknowledged: {other:?}"),
            }
        }
    }
    acked
}

/// `sensorchain audit --data-dir DIR --json`: the report (asserted valid).
fn audit_valid(net: &common::Net, dir: &Path) -> serde_json::Value {
    let (code, out) = common::cli(
        &["audit", "--data-dir", dir.to_str().unwrap(), "--json"],
        net.dir.path(),
    );
    let report: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("audit of {} printed no report ({e}): {out}", dir.display()));
    assert_eq!((code, &report["valid"]), (0, &true.into()), "{report}");
    report
}

fn all_present(dir: &Path, ids: &[Hash32]) {
    let store = Store::open_read_only(dir).unwrap();
    let missing = ids
        .iter()
        .filter(|id| store.tx_location(id).unwrap().is_none())
        .count();
    assert_eq!(missing, 0, "{missing} of {} readings missing", ids.len());
}

#[test]
fn backup_of_a_running_gateway_restores_and_the_restored_gateway_extends_its_chain() {
    let net = common::Net::new(2);
    let dir = net.dir.path();
    let data = net.data();
    let mut gw = net.start();
    let before = stream(&net, 1, 40);
    assert_eq!(before.len(), 80);

    // While the gateway runs: its store is locked, the backup goes through
    // its API, found through the gateway.toml beside the data directory.
    let (code, out, err) = common::run(
        &["backup", "--data-dir", "data", "--out", "b1.scchain"],
        dir,
    );
    assert_eq!(code, 0, "backup of a running gateway: {out}{err}");
    assert!(err.contains("running"), "{err}");
    assert!(out.contains("verified"), "{out}");
    // an existing file is refused
    let (code, _, err) = common::run(
        &["backup", "--data-dir", "data", "--out", "b1.scchain"],
        dir,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("exists"), "{err}");
    let after = stream(&net, 41, 10);
    assert!(gw.terminate(std::time::Duration::from_secs(60)));

    // Restore: refused over an existing store, done into a new directory.
    let (code, _, err) = common::run(
        &["restore", "--from", "b1.scchain", "--data-dir", "data"],
        dir,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not empty"), "{err}");
    let (code, out, err) = common::run(
        &["restore", "--from", "b1.scchain", "--data-dir", "restored"],
        dir,
    );
    assert_eq!(code, 0, "restore: {out}{err}");
    let restored = dir.join("restored");
    let report = audit_valid(&net, &restored);
    assert!(report["readings"].as_u64().unwrap() >= 80, "{report}");
    all_present(&restored, &before);
    let restored_head = report["head_height"].as_u64().unwrap();

    // The backup of the stopped gateway reads its store directly and holds
    // everything acknowledged before it stopped.
    let (code, out, err) = common::run(
        &["backup", "--data-dir", "data", "--out", "b2.scchain"],
        dir,
    );
    assert_eq!(code, 0, "backup of a stopped gateway: {out}{err}");
    assert!(!err.contains("running"), "{err}");
    let (code, out, err) = common::run(
        &[
            "restore",
            "--from",
            "b2.scchain",
            "--config",
            "gateway.toml",
            "--check",
        ],
        dir,
    );
    assert_eq!(code, 0, "{out}{err}");

    // The restored directory replaces the gateway's (the old one kept
    // aside): the gateway starts a new Raft log on it and keeps extending
    // the chain.
    std::fs::rename(&data, dir.join("data.old")).unwrap();
    std::fs::rename(&restored, &data).unwrap();
    let mut gw = net.start();
    let later = stream(&net, 100, 20);
    assert_eq!(later.len(), 40);
    assert!(gw.terminate(std::time::Duration::from_secs(60)));
    let report = audit_valid(&net, &data);
    assert!(
        report["head_height"].as_u64().unwrap() > restored_head,
        "{report}"
    );
    all_present(&data, &before);
    all_present(&data, &later);
    // what was acknowledged after the backup is in the old directory only
    all_present(&dir.join("data.old"), &after);
}

#[test]
fn restore_into_a_configured_gateway_checks_the_chain() {
    let a = common::Net::new(1);
    let mut gw = a.start();
    stream(&a, 1, 5);
    assert!(gw.terminate(std::time::Duration::from_secs(60)));
    let (code, out, err) = common::run(
        &["backup", "--config", "gateway.toml", "--out", "a.scchain"],
        a.dir.path(),
    );
    assert_eq!(code, 0, "{out}{err}");
    let backup = a.dir.path().join("a.scchain");
    // another chain's gateway refuses it and writes nothing
    let b = common::Net::new(2);
    let (code, _, err) = common::run(
        &[
            "restore",
            "--from",
            backup.to_str().unwrap(),
            "--config",
            "gateway.toml",
        ],
        b.dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("another chain"), "{err}");
    assert!(!b.data().exists());
    // its own gateway takes it, and starts on it
    std::fs::rename(a.data(), a.dir.path().join("data.old")).unwrap();
    let (code, out, err) = common::run(
        &["restore", "--from", "a.scchain", "--config", "gateway.toml"],
        a.dir.path(),
    );
    assert_eq!(code, 0, "{out}{err}");
    let mut gw = a.start();
    assert_eq!(stream(&a, 6, 5).len(), 5);
    assert!(gw.terminate(std::time::Duration::from_secs(60)));
    audit_valid(&a, &a.data());
}

/// A member of a three-gateway cluster backed up through its API while it
/// runs, killed, its data directory replaced by the restore of that backup
/// (no Raft state) while the others go on: it rejoins as a learner, catches
/// up past the backup, is a voter again, and the safety check finds one
/// chain on every member.
#[test]
fn a_cluster_member_restored_from_its_backup_rejoins_and_catches_up() {
    use std::time::Instant;
    let t0 = Instant::now();
    let mut c = fixture::Cluster::new(3, 6);
    c.start_all();
    c.wait_leader(&c.all(), None, 0);
    let load = c.load(2, 4);
    load.wait_acked_since(t0, None, 100);
    let l = c.wait_leader(&c.all(), None, 0);
    let f = (l + 1) % c.n();
    let id = f + 1;
    let api = format!("http://{}", c.members[f].addrs.unwrap().api);
    let (code, out, err) = common::run(
        &[
            "backup",
            "--api",
            &api,
            "--key",
            &format!("gw{id}.key"),
            "--out",
            "member.scchain",
        ],
        &c.root,
    );
    assert_eq!(code, 0, "backup of a running member: {out}{err}");
    let after_backup = Instant::now();
    load.wait_acked_since(after_backup, None, 50);
    c.kill(f);
    let data = c.members[f].data.clone();
    std::fs::rename(&data, c.root.join(format!("data{id}.old"))).unwrap();
    let (code, out, err) = common::run(
        &[
            "restore",
            "--from",
            "member.scchain",
            "--config",
            &format!("gw{id}.toml"),
        ],
        &c.root,
    );
    assert_eq!(code, 0, "restore: {out}{err}");
    assert!(!data.join("raft.redb").exists());
    load.wait_acked_since(Instant::now(), None, 50);
    c.start_member(f);
    let back = Instant::now();
    let target = c.others_height(f);
    c.wait_reached(f, target);
    c.wait_voter(f);
    load.wait_acked_since(back, None, 20);
    let sent = c.stop_load(load);
    let height = c.wait_converged();
    let report = c.stop_and_check(&sent);
    eprintln!(
        "restored member {id} back at height {target}, converged at {height}: {report:?}; {:.1?}",
        t0.elapsed()
    );
}
